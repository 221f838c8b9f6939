//! Kubernetes label selectors: the string form of `?labelSelector=` (`app=shop,env in
//! (prod,staging),!canary`) and the structured `matchLabels`/`matchExpressions` form, with the
//! same semantics as Kubernetes: requirements are ANDed; `!=` and `notin` also match objects
//! without the label; `in`, `=` and `==` need it.

use std::collections::BTreeSet;
use std::fmt;

use causeway_crds::validation::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value};

/// A label selector that does not parse, with the path of the offending requirement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SelectorError {
    /// Where: `labelSelector[2]` (the third requirement of a string selector) or
    /// `spec.placement.clusterSelector.matchExpressions[0].operator`.
    pub path: FieldPath,
    /// What is wrong and what is expected instead.
    pub message: String,
}

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` / `key==value`.
    Equals,
    /// `key!=value`.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values compared with (one for `=`/`!=`, none for existence).
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Whether labels satisfy this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, values()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, values()),
            Operator::In => write!(f, "{} in ({})", self.key, values()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, values()),
            Operator::Exists => f.write_str(&self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A label selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Its requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether it matches everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object (its `metadata.labels`) matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = super::labels(object);
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the string form; errors are reported under the path `labelSelector`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Self::parse_at(text, &FieldPath::root("labelSelector"))
    }

    /// Parses the string form; errors name `path[i]` for the i-th requirement.
    pub fn parse_at(text: &str, path: &FieldPath) -> Result<Self, SelectorError> {
        Parser::new(text, path).parse()
    }

    /// The structured form, as in `spec.placement.clusterSelector`.
    pub fn from_label_selector(
        selector: &LabelSelector,
        path: &FieldPath,
    ) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let at = path.field("matchLabels").key(key);
            check_key(key).map_err(|m| err(&at, m))?;
            check_value(value).map_err(|m| err(&at, m))?;
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: BTreeSet::from([value.clone()]),
            });
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = path.field("matchExpressions").index(i);
            check_key(&expr.key).map_err(|m| err(&at.field("key"), m))?;
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            for (j, v) in expr.values.iter().flatten().enumerate() {
                check_value(v).map_err(|m| err(&at.field("values").index(j), m))?;
            }
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(err(
                        &at.field("operator"),
                        format!(
                            "{other:?} is not an operator: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ));
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(err(
                        &at.field("values"),
                        format!("{} needs at least one value", expr.operator),
                    ));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(err(
                        &at.field("values"),
                        format!("{} takes no values", expr.operator),
                    ));
                }
                _ => {}
            }
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
                values,
            });
        }
        Ok(Selector { requirements })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn err(path: &FieldPath, message: impl Into<String>) -> SelectorError {
    SelectorError {
        path: path.clone(),
        message: message.into(),
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (Kubernetes' qualified name).
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "label key {key:?}: the prefix before '/' must be a DNS subdomain such as example.com"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    check_name(name).map_err(|m| format!("label key {key:?}: {m}"))
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|m| format!("label value {value:?}: {m}"))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "is {} characters long; the limit is 63",
            name.len()
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must start and end with a letter or digit".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Unsupported(char),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Not => f.write_str("\"!\""),
            Token::Eq => f.write_str("\"=\""),
            Token::DoubleEq => f.write_str("\"==\""),
            Token::NotEq => f.write_str("\"!=\""),
            Token::In => f.write_str("\"in\""),
            Token::NotIn => f.write_str("\"notin\""),
            Token::Open => f.write_str("\"(\""),
            Token::Close => f.write_str("\")\""),
            Token::Comma => f.write_str("\",\""),
            Token::Unsupported(c) => write!(f, "{c:?}"),
            Token::End => f.write_str("the end"),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    path: &'a FieldPath,
    index: usize,
    peeked: Option<(Token, usize)>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, path: &'a FieldPath) -> Self {
        Parser {
            text,
            pos: 0,
            path,
            index: 0,
            peeked: None,
        }
    }

    fn lex(&mut self) -> (Token, usize) {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (Token::End, start);
        };
        let next = chars.next();
        let (token, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEq, 2),
            ('!', _) => (Token::Not, 1),
            ('=', Some('=')) => (Token::DoubleEq, 2),
            ('=', _) => (Token::Eq, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            ('<' | '>', _) => (Token::Unsupported(c), 1),
            _ => {
                let len = trimmed
                    .find(|c: char| c.is_whitespace() || "!=(),<>".contains(c))
                    .unwrap_or(trimmed.len());
                let word = &trimmed[..len];
                let token = match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word.to_owned()),
                };
                (token, len)
            }
        };
        self.pos += len;
        (token, start)
    }

    fn next(&mut self) -> (Token, usize) {
        match self.peeked.take() {
            Some(t) => t,
            None => self.lex(),
        }
    }

    fn peek(&mut self) -> &Token {
        if self.peeked.is_none() {
            let t = self.lex();
            self.peeked = Some(t);
        }
        match &self.peeked {
            Some((t, _)) => t,
            None => &Token::End,
        }
    }

    fn error(&self, at: usize, message: impl fmt::Display) -> SelectorError {
        err(
            &self.path.index(self.index),
            format!("{message} (at character {} of {:?})", at + 1, self.text),
        )
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.text.trim().is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (Token::End, _) => break,
                (Token::Comma, _) => self.index += 1,
                (t, at) => {
                    return Err(self.error(at, format!("expected \",\" or the end, found {t}")));
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            (Token::Ident(key), at) => {
                check_key(&key).map_err(|m| self.error(at, m))?;
                Ok(key)
            }
            (t, at) => Err(self.error(at, format!("expected a label key, found {t}"))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Not {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let key = self.key()?;
        let (op, at) = match self.peek() {
            Token::End | Token::Comma => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: BTreeSet::new(),
                });
            }
            _ => self.next(),
        };
        let (operator, values) = match op {
            Token::Eq | Token::DoubleEq => (Operator::Equals, BTreeSet::from([self.value()?])),
            Token::NotEq => (Operator::NotEquals, BTreeSet::from([self.value()?])),
            Token::In => (Operator::In, self.set()?),
            Token::NotIn => (Operator::NotIn, self.set()?),
            Token::Unsupported(c) => {
                return Err(self.error(
                    at,
                    format!("operator {c:?} is not supported: use =, ==, !=, in, notin or !key"),
                ));
            }
            t => {
                return Err(self.error(
                    at,
                    format!("expected an operator (=, ==, !=, in, notin) after {key:?}, found {t}"),
                ));
            }
        };
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// A single value; may be empty (`env=` selects objects whose `env` label is empty).
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Token::End | Token::Comma => Ok(String::new()),
            _ => match self.next() {
                (Token::Ident(v), at) => {
                    check_value(&v).map_err(|m| self.error(at, m))?;
                    Ok(v)
                }
                (t, at) => Err(self.error(at, format!("expected a label value, found {t}"))),
            },
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            (Token::Open, _) => {}
            (t, at) => {
                return Err(self.error(
                    at,
                    format!("expected \"(\" to start the value list, found {t}"),
                ));
            }
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.peek() {
                Token::Comma | Token::Close => String::new(),
                _ => match self.next() {
                    (Token::Ident(v), at) => {
                        check_value(&v).map_err(|m| self.error(at, m))?;
                        v
                    }
                    (t, at) => {
                        return Err(self.error(at, format!("expected a value or \")\", found {t}")));
                    }
                },
            };
            values.insert(value);
            match self.next() {
                (Token::Comma, _) => continue,
                (Token::Close, _) => return Ok(values),
                (t, at) => {
                    return Err(self.error(
                        at,
                        format!("expected \",\" or \")\" in the value list, found {t}"),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn parses_and_matches_the_kubernetes_forms() {
        let s = Selector::parse("app=shop, env in (prod,staging),!canary").unwrap();
        assert_eq!(s.to_string(), "app=shop,env in (prod,staging),!canary");
        assert!(s.matches(&obj(json!({"app": "shop", "env": "prod"}))));
        assert!(!s.matches(&obj(json!({"app": "shop", "env": "dev"}))));
        assert!(!s.matches(&obj(
            json!({"app": "shop", "env": "prod", "canary": "true"})
        )));
        assert!(!s.matches(&obj(json!({"env": "prod"}))));

        let s = Selector::parse("tier!=web,zone notin (a, b),version,app==x").unwrap();
        assert!(s.matches(&obj(json!({"version": "1", "app": "x"}))));
        assert!(!s.matches(&obj(json!({"version": "1", "app": "x", "zone": "a"}))));
        assert!(!s.matches(&obj(json!({"app": "x"}))));

        assert!(
            Selector::parse("")
                .unwrap()
                .matches(&json!({"metadata": {}}))
        );
        assert!(Selector::parse("  ").unwrap().is_everything());
        let empty = Selector::parse("env=").unwrap();
        assert!(empty.matches(&obj(json!({"env": ""}))));
        assert!(Selector::parse("example.com/team=a").is_ok());
    }

    #[test]
    fn errors_name_the_requirement() {
        let cases = [
            ("app=shop,env in prod", "labelSelector[1]", "expected \"(\""),
            ("app=shop,,x", "labelSelector[1]", "expected a label key"),
            ("a=b c", "labelSelector[0]", "expected \",\" or the end"),
            ("app>3", "labelSelector[0]", "not supported"),
            ("a,b,-x=1", "labelSelector[2]", "start and end"),
            ("env in (a,b", "labelSelector[0]", "expected \",\" or \")\""),
            ("x=(", "labelSelector[0]", "expected a label value"),
            ("x=a=b", "labelSelector[0]", "expected \",\" or the end"),
            ("Foo_/x=1", "labelSelector[0]", "DNS subdomain"),
        ];
        for (text, path, message) in cases {
            let e = Selector::parse(text).unwrap_err();
            assert_eq!(e.path.as_str(), path, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn structured_form_with_field_paths() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                 {"key": "x", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap();
        let e =
            Selector::from_label_selector(&sel, &FieldPath::root("spec").field("sel")).unwrap_err();
        assert_eq!(e.path.as_str(), "spec.sel.matchExpressions[1].operator");
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(&sel, &FieldPath::root("s")).unwrap();
        assert!(s.matches(&obj(json!({"env": "prod"}))));
        assert!(!s.matches(&obj(json!({"env": "prod", "zone": "a"}))));
    }
}
