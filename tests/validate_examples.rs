//! `causeway validate` on the shipped examples, as a user runs it: every valid journey passes
//! silently, and every file under `deploy/examples/invalid/` fails naming the field its
//! `# expect: PATH: MESSAGE` comment names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn causeway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn valid_examples_pass_without_findings() {
    let out = causeway(&["validate", "-f", "deploy/examples/"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        stdout, "",
        "valid examples must produce no errors or warnings"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("0 error(s), 0 warning(s)"), "{stderr}");
    // The directory is read without descending into invalid/.
    assert!(!stderr.contains(" 0 object(s)"), "{stderr}");
}

#[test]
fn quickstart_passes_without_findings() {
    // `causeway up` applies these (built into the binary); it refuses to start if they fail.
    let out = causeway(&["validate", "-f", "deploy/quickstart/"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout, "",
        "the quickstart must produce no errors or warnings"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("validated 11 object(s) in 4 file(s): 0 error(s), 0 warning(s)"),
        "{stderr}"
    );
}

#[test]
fn each_invalid_example_fails_with_the_field_it_names() {
    let dir = repo().join("deploy/examples/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 14,
        "one invalid example per rule, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let content = std::fs::read_to_string(f).unwrap();
        let expect = content
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` comment", f.display()));
        let (path, message) = expect.split_once(": ").unwrap();
        let rel = f.strip_prefix(repo()).unwrap().to_str().unwrap().to_owned();
        let out = causeway(&["validate", "-f", &rel]);
        let stdout = text(&out.stdout);
        let hit = stdout.lines().any(|l| {
            l.starts_with(&format!("{rel}: "))
                && l.contains(&format!(": {path}: "))
                && l.contains(message)
        });
        if out.status.code() != Some(1) || !hit {
            failures.push(format!(
                "{rel}: exit {:?}, want `{path}: ...{message}...`, got:\n{stdout}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_of_an_object_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("many.yaml");
    std::fs::write(
        &f,
        "apiVersion: causeway.io/v1alpha1\nkind: AccessPoint\nmetadata: {name: shop, namespace: retail}\n\
         spec:\n  hosts: [BAD_HOST]\n  listeners:\n  - {name: a, port: 0, protocol: HTTP}\n\
         \x20 - {name: b, port: 443, protocol: HTTPS}\n  http:\n  - timeout: soon\n\
         \x20   route: [{destination: {service: shop, subset: nope}}]\n---\n\
         apiVersion: causeway.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\nspec:\n  locality: {region: us-west}\n",
    )
    .unwrap();
    let out = causeway(&["validate", "-f", f.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    for path in [
        "spec.hosts[0]",
        "spec.listeners[0].port",
        "spec.listeners[1].tls",
        "spec.http[0].timeout",
        "spec.http[0].route[0].destination.subset",
    ] {
        assert!(
            stdout.contains(&format!("AccessPoint/shop: {path}: ")),
            "{path} missing:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("Cluster/c1"),
        "the valid Cluster has no findings:\n{stdout}"
    );
}

#[test]
fn bad_yaml_and_unknown_kinds_are_reported_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nkind: [unclosed\n",
    )
    .unwrap();
    let out = causeway(&["validate", "-f", f.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ConfigMap/x: unknown kind \"ConfigMap\""),
        "{stdout}"
    );
    assert!(stdout.contains("YAML syntax error"), "{stdout}");
}

#[test]
fn missing_file_is_a_usage_error() {
    let out = causeway(&["validate", "-f", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/file.yaml: cannot read"));
}

#[test]
fn crds_subcommand_prints_the_checked_in_manifests() {
    let out = causeway(&["crds"]);
    assert!(out.status.success());
    let printed = text(&out.stdout);
    for name in [
        "causeway.io_clusters.yaml",
        "causeway.io_accesspoints.yaml",
        "causeway.io_nameservices.yaml",
        "causeway.io_externalservices.yaml",
    ] {
        let file = std::fs::read_to_string(repo().join("crds").join(name)).unwrap();
        assert!(
            printed.contains(&file),
            "{name} differs from `causeway crds` output"
        );
    }
}

#[test]
fn every_command_has_help_and_version_works() {
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["crds", "--help"],
        &["version", "--help"],
    ] {
        let out = causeway(args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage: causeway"), "{args:?}");
    }
    let out = causeway(&["version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("causeway {}", env!("CARGO_PKG_VERSION"))
    );
}
