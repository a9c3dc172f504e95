//! Label and field selectors for list, watch and deletecollection. Pure.

use serde_json::Value;

use crate::resources::{CSR, ResourceType, SECRET};
use crate::status::{ApiError, ApiResult};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// Parsed label and field selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    labels: Vec<(String, Op)>,
    /// (JSON pointer, wanted, equal?)
    fields: Vec<(String, String, bool)>,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn bad(what: &str, detail: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {what}: {detail}"))
}

fn parse_set(s: &str, requirement: &str) -> ApiResult<Vec<String>> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(requirement, "expected a set in parentheses"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn parse_requirement(req: &str) -> ApiResult<(String, Op)> {
    if let Some(key) = req.strip_prefix('!') {
        return Ok((key.trim().to_string(), Op::NotExists));
    }
    for (word, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = req.split_once(word) {
            let values = parse_set(set, req)?;
            let op = if negate { Op::NotIn(values) } else { Op::In(values) };
            return Ok((key.trim().to_string(), op));
        }
    }
    for (sep, ctor) in [
        ("!=", Op::NotEq as fn(String) -> Op),
        ("==", Op::Eq as fn(String) -> Op),
        ("=", Op::Eq as fn(String) -> Op),
    ] {
        if let Some((key, value)) = req.split_once(sep) {
            return Ok((key.trim().to_string(), ctor(value.trim().to_string())));
        }
    }
    if req.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
        return Err(bad(req, "unknown operator"));
    }
    Ok((req.to_string(), Op::Exists))
}

/// The tokens of upstream's label-selector lexer that are not identifiers, longest first.
const LABEL_OPERATORS: [&str; 9] = ["==", "!=", "=", "!", "(", ")", ",", "<", ">"];

/// The field paths each type supports in field selectors (W-6).
fn field_pointer(rt: &ResourceType, field: &str) -> Option<&'static str> {
    match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        "spec.signerName" if rt.same_resource(&CSR) || rt.is_trust_bundle() => Some("/spec/signerName"),
        "type" if rt == &SECRET => Some("/type"),
        _ => None,
    }
}

impl Selector {
    /// Parses `labelSelector` and `fieldSelector` for type `rt`.
    pub fn parse(rt: &ResourceType, labels: Option<&str>, fields: Option<&str>) -> ApiResult<Self> {
        let mut sel = Selector::default();
        for req in split_top_level(labels.unwrap_or_default()) {
            let (key, op) = parse_requirement(req)?;
            if let Op::Eq(value) | Op::NotEq(value) = &op
                && let Some(operator) = LABEL_OPERATORS.iter().find(|o| value.starts_with(**o))
            {
                // What upstream's lexer says when it meets an operator where a value must be.
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: found '{operator}', expected: identifier"
                )));
            }
            if key.is_empty() {
                return Err(bad(req, "empty key"));
            }
            sel.labels.push((key, op));
        }
        for req in split_top_level(fields.unwrap_or_default()) {
            let (key, op) = parse_requirement(req)?;
            let (value, equal) = match op {
                Op::Eq(v) => (v, true),
                Op::NotEq(v) => (v, false),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: {req}: only =, == and != are supported"
                    )));
                }
            };
            let pointer = field_pointer(rt, &key)
                .ok_or_else(|| ApiError::bad_request(format!("field label not supported: {key}")))?;
            sel.fields.push((pointer.to_string(), value, equal));
        }
        Ok(sel)
    }

    /// Whether the object matches every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_with_labels(obj, obj.pointer("/metadata/labels"))
    }

    /// The one object name the selector allows (`metadata.name=<name>`), if it pins one.
    pub fn pinned_name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(pointer, _, equal)| pointer == "/metadata/name" && *equal)
            .map(|f| f.1.as_str())
    }

    /// Whether the selector has label requirements (label changes can move objects in or out).
    pub fn has_labels(&self) -> bool {
        !self.labels.is_empty()
    }

    /// Field requirements against `obj`, label requirements against `labels`.
    pub fn matches_with_labels(&self, obj: &Value, labels: Option<&Value>) -> bool {
        let fields_ok = self.fields.iter().all(|(pointer, want, equal)| {
            let got = obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
            (got == want) == *equal
        });
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        fields_ok
            && self.labels.iter().all(|(key, op)| match op {
                Op::Exists => label(key).is_some(),
                Op::NotExists => label(key).is_none(),
                Op::Eq(v) => label(key) == Some(v.as_str()),
                Op::NotEq(v) => label(key) != Some(v.as_str()),
                Op::In(vs) => label(key).is_some_and(|l| vs.iter().any(|v| v == l)),
                Op::NotIn(vs) => label(key).is_none_or(|l| vs.iter().all(|v| v != l)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CTB, LEASE};
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "a", "labels": {"env": "prod", "tier": "web"}}, "spec": {"signerName": "x.io/y"}})
    }

    #[test]
    fn label_selectors() {
        let cases = [
            ("env=prod", true),
            ("env==prod", true),
            ("env!=prod", false),
            ("env in (dev, prod)", true),
            ("env notin (prod)", false),
            ("missing notin (prod)", true),
            ("tier", true),
            ("!tier", false),
            ("env=prod,tier=web", true),
            ("env=prod,tier=db", false),
            ("", true),
        ];
        for (s, want) in cases {
            let sel = Selector::parse(&CSR, Some(s), None).unwrap();
            assert_eq!(sel.matches(&obj()), want, "{s}");
        }
    }

    #[test]
    fn field_selectors() {
        let sel = Selector::parse(&CSR, None, Some("metadata.name=a,spec.signerName=x.io/y")).unwrap();
        assert!(sel.matches(&obj()));
        assert_eq!(sel.pinned_name(), Some("a"));
        let sel = Selector::parse(&CSR, None, Some("metadata.name!=a")).unwrap();
        assert!(!sel.matches(&obj()));
        assert_eq!(sel.pinned_name(), None);
        assert_eq!(Selector::parse(&CSR, Some("env=prod"), None).unwrap().pinned_name(), None);
        let bundles = Selector::parse(&CTB, None, Some("spec.signerName=x.io/y")).unwrap();
        assert!(bundles.matches(&obj()));
        assert!(!bundles.matches(&json!({"metadata": {"name": "b"}, "spec": {}})));
        assert_eq!(Selector::parse(&LEASE, None, Some("spec.signerName=x")).unwrap_err().code, 400);
        let err = Selector::parse(&CSR, None, Some("spec.username=a")).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "field label not supported: spec.username"));
    }
}
