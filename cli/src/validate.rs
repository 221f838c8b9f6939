//! `causeway validate -f FILE|DIR...`: decode and validate resource files offline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use causeway_crds::Severity;
use causeway_crds::document::{self, LoadError, Loaded};

/// Extensions read from directories, as kubectl does.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Lists the files to read: files as given, directories expanded (sorted, so output is stable).
pub fn collect(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("{}: cannot read", p.display()))?;
        if meta.is_dir() {
            expand_dir(p, recursive, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn expand_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list directory", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: cannot list directory", dir.display()))?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            if recursive {
                expand_dir(&e, recursive, out)?;
            }
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXTENSIONS.contains(&x))
        {
            out.push(e);
        }
    }
    Ok(())
}

/// Reads a file, or standard input for `-`.
pub fn read(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// How a path is named in messages (`<stdin>` for `-`).
pub fn display(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Formats the findings of one document, one line each.
pub fn format_findings(file: &str, doc: &Loaded, quiet: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let who = match (&doc.kind, &doc.name) {
        (None, None) => format!("document {}", doc.index + 1),
        _ => doc.display_name(),
    };
    match &doc.resource {
        Err(LoadError::Decode(e)) if !e.path.as_str().is_empty() => {
            lines.push(format!("{file}: {who}: {}: {}", e.path, e.message));
        }
        Err(e) => lines.push(format!("{file}: {who}: {e}")),
        Ok(_) => {}
    }
    for f in doc.report.findings() {
        if quiet && f.severity == Severity::Warning {
            continue;
        }
        lines.push(format!("{file}: {who}: {f}"));
    }
    lines
}

/// Runs the command; exit 1 when any object has an error.
pub fn run(paths: &[PathBuf], recursive: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    let files = collect(paths, recursive)?;
    let (mut objects, mut errors, mut warnings) = (0usize, 0usize, 0usize);
    for path in &files {
        let text = read(path)?;
        let name = display(path);
        let docs = document::load_yaml(&text);
        if docs.is_empty() {
            eprintln!("{name}: warning: no resources in this file");
        }
        for doc in &docs {
            objects += 1;
            if doc.resource.is_err() {
                errors += 1;
            }
            errors += doc.report.errors().count();
            warnings += doc.report.findings().len() - doc.report.errors().count();
            for line in format_findings(&name, doc, quiet) {
                println!("{line}");
            }
        }
    }
    eprintln!(
        "validated {objects} object(s) in {} file(s): {errors} error(s), {warnings} warning(s)",
        files.len()
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
