//! Field-level validation shared by every resource kind.
//!
//! Validation never stops at the first problem: every check pushes into a [`Report`], and each
//! finding carries the field path a user can find in their YAML (`spec.listeners[1].tls.mode`)
//! and a message that says what to change. The same report feeds `causeway validate`, the
//! controller API's 422 answers and (later) the admission webhook.

use std::fmt;

pub mod checks;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object is refused.
    Error,
    /// The object is accepted, but probably does not do what its author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A path to a field inside an object, rendered the way `kubectl explain` users read them:
/// `spec.http[0].match[1].headers[x-version].exact`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of a top-level field such as `spec` or `metadata`.
    pub fn root(field: &str) -> Self {
        FieldPath(field.to_owned())
    }

    /// The path of `field` inside this object.
    pub fn field(&self, field: &str) -> Self {
        if self.0.is_empty() {
            return FieldPath(field.to_owned());
        }
        FieldPath(format!("{}.{field}", self.0))
    }

    /// The path of element `i` of this list.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path of the entry `key` of this map.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// The rendered path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is.
    pub path: FieldPath,
    /// What is wrong and what to do about it.
    pub message: String,
    /// Whether the object is refused.
    pub severity: Severity,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.path, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.path, self.message),
        }
    }
}

/// Collects the findings of one validation run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    findings: Vec<FieldError>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error: the object will be refused.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(FieldError {
            path: path.clone(),
            message: message.into(),
            severity: Severity::Error,
        });
    }

    /// Records a warning: the object is accepted.
    pub fn warning(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(FieldError {
            path: path.clone(),
            message: message.into(),
            severity: Severity::Warning,
        });
    }

    /// Every finding, in the order found.
    pub fn findings(&self) -> &[FieldError] {
        &self.findings
    }

    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &FieldError> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Whether the object is acceptable (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    /// Consumes the report.
    pub fn into_findings(self) -> Vec<FieldError> {
        self.findings
    }
}

/// Implemented by every resource type (and the parts of them that validate on their own).
pub trait Validate {
    /// Checks `self`, found at `path`, recording every problem in `report`.
    fn validate_at(&self, path: &FieldPath, report: &mut Report);

    /// Checks a whole object and returns its report.
    fn validate(&self) -> Report {
        let mut report = Report::new();
        self.validate_at(&FieldPath::default(), &mut report);
        report
    }
}
