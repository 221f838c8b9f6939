#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every Istio example of the seed documents round-trips through the typed structs, and every
//! invalid one is refused (or warned about) with the expected field path and message.
//!
//! Fixtures live in `tests/fixtures/istio/{valid,invalid}/*.yaml`. Leading comments carry the
//! expectations:
//! - `# warn: <path>: <substring>`: a warning a valid fixture must produce (every warning of a
//!   valid fixture must be declared this way);
//! - `# expect: <path>: <substring>`: a problem an invalid fixture must produce. The path is the
//!   field path of a validation finding, a decode error or an unknown (dropped) field, whose
//!   message is `unknown field`; `(yaml)` stands for a YAML syntax error.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use causeway_crds::istio::{
    self, DestinationRule, Gateway, IstioObject, ServiceEntry, VirtualService, WorkloadEntry,
    decode_value, validate_together,
};
use causeway_crds::strict::{self, value_differences};
use causeway_crds::{FieldPath, Severity};
use serde::Deserialize;
use serde_json::Value;

fn fixture_files(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A `# tag: path: substring` line of a fixture's header.
#[derive(Debug)]
struct Directive {
    path: String,
    needle: String,
}

impl Directive {
    fn matches(&self, path: &str, message: &str) -> bool {
        self.path == path && message.contains(&self.needle)
    }
}

fn directives(text: &str, tag: &str) -> Vec<Directive> {
    let prefix = format!("# {tag}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (path, needle) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("malformed directive {rest:?}"));
            Directive {
                path: path.trim().to_owned(),
                needle: needle.trim().to_owned(),
            }
        })
        .collect()
}

/// The non-empty documents of a (multi-document) YAML file, as JSON values.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(de).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn without_api_version(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("apiVersion");
    }
    v
}

/// Decodes `doc` as the typed struct its `kind` names, with `strict::decode`, and returns the
/// re-serialized value and the dropped fields.
fn typed_round_trip(doc: &Value) -> (Value, Vec<FieldPath>) {
    fn go<T: serde::de::DeserializeOwned + serde::Serialize>(
        doc: &Value,
    ) -> (Value, Vec<FieldPath>) {
        let (typed, dropped) = strict::decode::<T>(doc.clone()).unwrap();
        (serde_json::to_value(&typed).unwrap(), dropped)
    }
    match doc["kind"].as_str().unwrap() {
        "VirtualService" => go::<VirtualService>(doc),
        "DestinationRule" => go::<DestinationRule>(doc),
        "Gateway" => go::<Gateway>(doc),
        "ServiceEntry" => go::<ServiceEntry>(doc),
        "WorkloadEntry" => go::<WorkloadEntry>(doc),
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn valid_fixtures_round_trip_and_validate() {
    let files = fixture_files("valid");
    assert!(
        files.len() >= 40,
        "expected at least 40 valid Istio fixtures, found {}",
        files.len()
    );
    let mut kinds = BTreeSet::new();
    let mut documents_seen = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with("# "),
            "{name}: start with a comment naming the source"
        );
        let declared = directives(&text, "warn");
        let docs = documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!docs.is_empty(), "{name}: no documents");
        let mut objects = Vec::new();
        let mut warnings: Vec<(String, String)> = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let at = format!("{name} document {i}");
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            assert!(
                istio::ACCEPTED_API_VERSIONS.contains(&api_version),
                "{at}: apiVersion {api_version:?}"
            );

            let (out, dropped) = typed_round_trip(&doc);
            assert!(dropped.is_empty(), "{at}: dropped fields {dropped:?}");
            assert_eq!(out["apiVersion"], istio::API_VERSION, "{at}");
            assert_eq!(out["kind"], doc["kind"], "{at}");
            let diffs = value_differences(
                &without_api_version(doc.clone()),
                &without_api_version(out.clone()),
            );
            assert!(
                diffs.is_empty(),
                "{at}: round trip changed {diffs:?}\nin:  {doc}\nout: {out}"
            );

            let (obj, dropped) = decode_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert!(dropped.is_empty(), "{at}: dropped fields {dropped:?}");
            assert_eq!(
                serde_json::to_value(&obj).unwrap(),
                out,
                "{at}: decode_value differs"
            );
            kinds.insert(obj.kind());

            let report = obj.validate();
            let errors: Vec<String> = report.errors().map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{at}: validation errors {errors:#?}");
            warnings.extend(
                report
                    .findings()
                    .iter()
                    .map(|f| (f.path.to_string(), f.message.clone())),
            );
            objects.push(obj);
            documents_seen += 1;
        }
        for (_, f) in validate_together(&objects) {
            assert_eq!(f.severity, Severity::Warning, "{name}: {f}");
            warnings.push((f.path.to_string(), f.message));
        }
        for (path, message) in &warnings {
            assert!(
                declared.iter().any(|d| d.matches(path, message)),
                "{name}: undeclared warning (add `# warn: {path}: ...`): {path}: {message}"
            );
        }
        for d in &declared {
            assert!(
                warnings.iter().any(|(p, m)| d.matches(p, m)),
                "{name}: expected warning {d:?} not produced; got {warnings:#?}"
            );
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        istio::KINDS
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "every kind needs a valid fixture"
    );
    assert!(documents_seen >= files.len());
}

#[test]
fn invalid_fixtures_are_refused_with_the_expected_message() {
    let files = fixture_files("invalid");
    assert!(
        files.len() >= 30,
        "expected at least 30 invalid Istio fixtures, found {}",
        files.len()
    );
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(file).unwrap();
        let expected = directives(&text, "expect");
        assert!(!expected.is_empty(), "{name}: no `# expect:` line");

        let mut problems: Vec<(String, String)> = Vec::new();
        let mut objects: Vec<IstioObject> = Vec::new();
        match documents(&text) {
            Err(e) => problems.push(("(yaml)".to_owned(), e)),
            Ok(docs) => {
                assert!(!docs.is_empty(), "{name}: no documents");
                for doc in docs {
                    match decode_value(doc) {
                        Err(e) => problems.push((
                            e.path()
                                .map_or_else(|| "(decode)".to_owned(), |p| p.to_string()),
                            e.to_string(),
                        )),
                        Ok((obj, dropped)) => {
                            problems.extend(
                                dropped
                                    .iter()
                                    .map(|p| (p.to_string(), "unknown field".to_owned())),
                            );
                            problems.extend(
                                obj.validate()
                                    .findings()
                                    .iter()
                                    .map(|f| (f.path.to_string(), f.message.clone())),
                            );
                            objects.push(obj);
                        }
                    }
                }
            }
        }
        problems.extend(
            validate_together(&objects)
                .into_iter()
                .map(|(_, f)| (f.path.to_string(), f.message)),
        );
        for d in &expected {
            assert!(
                problems.iter().any(|(p, m)| d.matches(p, m)),
                "{name}: expected `{}: {}` not found among {problems:#?}",
                d.path,
                d.needle
            );
        }
    }
}
