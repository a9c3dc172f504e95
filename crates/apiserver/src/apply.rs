//! Server-side apply, reduced to what leader election needs: an apply merges the applied
//! configuration into the object and records which fields its field manager set
//! (`metadata.managedFields`, FieldsV1); applying a different value to a field another
//! manager set is a `409 Conflict` unless `force=true`. Lists are atomic fields. Fields that
//! a later write removed are no longer owned by anyone. Pure: `now` is an argument.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::status::{ApiError, ApiResult, Subject, quote};

type Path = Vec<String>;

/// Server-owned or identifying fields that nobody owns through apply.
fn ignored(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [meta, field, ..] if meta == "metadata" => matches!(
            field.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "creationTimestamp"
                | "managedFields"
                | "generation"
                | "deletionTimestamp"
        ),
        _ => false,
    }
}

/// Leaf paths of an object: maps recurse, everything else (lists included) is a leaf.
fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() && !ignored(prefix) && !v.is_null() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

fn leaf_set(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(v, &mut Vec::new(), &mut out);
    out
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn encode_fields(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for seg in path {
            let entry = node.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

fn decode_fields(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let children: Vec<(&String, &Value)> =
        v.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k[2..].to_string());
        decode_fields(child, prefix, out);
        prefix.pop();
    }
}

/// One manager's entry.
struct Entry {
    manager: String,
    operation: String,
    fields: BTreeSet<Path>,
    raw: Value,
}

fn entries(obj: &Value) -> Vec<Entry> {
    let list = obj.pointer("/metadata/managedFields").and_then(Value::as_array);
    list.map(|l| {
        l.iter()
            .map(|e| {
                let mut fields = BTreeSet::new();
                if let Some(f) = e.get("fieldsV1") {
                    decode_fields(f, &mut Vec::new(), &mut fields);
                }
                Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or_default().to_string(),
                    fields,
                    raw: e.clone(),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

fn dotted(path: &[String]) -> String {
    format!(".{}", path.join("."))
}

/// Applies `config` as `manager` to `current` (absent for a create) and returns the merged
/// object with updated `managedFields`.
pub(crate) fn apply(
    subject: &Subject,
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    now: &Time,
) -> ApiResult<Value> {
    let empty = json!({});
    let current = current.unwrap_or(&empty);
    let applied = leaf_set(config);
    let mut others = entries(current);
    others.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    let mut conflicts = Vec::new();
    for path in &applied {
        if at(current, path) == at(config, path) {
            continue;
        }
        for e in &others {
            if e.fields.iter().any(|f| f.starts_with(path) || path.starts_with(f)) {
                conflicts.push((e.manager.clone(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict(subject, &conflicts));
    }
    let mut merged = current.clone();
    json_patch::merge(&mut merged, config);
    let present = leaf_set(&merged);
    let mut list: Vec<Value> = Vec::new();
    for mut e in others {
        // Forced or changed fields move to the applier; removed fields belong to nobody.
        e.fields.retain(|f| present.contains(f) && !(applied.contains(f) && at(current, f) != at(config, f)));
        if e.fields.is_empty() {
            continue;
        }
        let mut raw = e.raw;
        raw["fieldsV1"] = encode_fields(&e.fields);
        list.push(raw);
    }
    let api_version = merged.get("apiVersion").cloned().unwrap_or(Value::Null);
    list.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": serde_json::to_value(now).unwrap_or(Value::Null),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode_fields(&applied),
    }));
    let meta = merged
        .as_object_mut()
        .map(|m| m.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("the applied configuration must be a JSON object"))?;
    meta.insert("managedFields".into(), Value::Array(list));
    Ok(merged)
}

/// Drops ownership of fields that no longer exist (after a non-apply write).
pub(crate) fn prune(obj: &mut Value) {
    let present = leaf_set(obj);
    let Some(list) = obj.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) else {
        return;
    };
    let mut kept = Vec::new();
    for e in list.drain(..) {
        let mut fields = BTreeSet::new();
        if let Some(f) = e.get("fieldsV1") {
            decode_fields(f, &mut Vec::new(), &mut fields);
        }
        fields.retain(|f| present.contains(f));
        if !fields.is_empty() {
            let mut e = e;
            e["fieldsV1"] = encode_fields(&fields);
            kept.push(e);
        }
    }
    *list = kept;
}

fn conflict(subject: &Subject, conflicts: &[(String, Path)]) -> ApiError {
    let n = conflicts.len();
    let summary = if let [(manager, path)] = conflicts {
        format!("conflict with {}: {}", quote(manager), dotted(path))
    } else {
        conflicts
            .iter()
            .map(|(m, p)| format!("conflict with {}: {}", quote(m), dotted(p)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", quote(m)), "field": dotted(p)})
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Apply failed with {n} conflict{}: {summary}", if n == 1 { "" } else { "s" }),
        details: Some(json!({
            "name": subject.name, "group": subject.group, "kind": subject.resource, "causes": causes
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            kind: "Lease".into(),
            name: "l".into(),
        }
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn holder(h: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": h, "leaseDurationSeconds": 15}})
    }

    #[test]
    fn a_second_manager_conflicts_unless_forced_or_equal() {
        let base = json!({"metadata": {"name": "l"}, "spec": {}});
        let a = apply(&subject(), Some(&base), &holder("a"), "mgr-a", false, &now()).unwrap();
        assert_eq!(a["spec"]["holderIdentity"], "a");
        let err = apply(&subject(), Some(&a), &holder("b"), "mgr-b", false, &now()).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"mgr-a\": .spec.holderIdentity"
        );
        // Same values: shared ownership, no conflict.
        let shared = apply(&subject(), Some(&a), &holder("a"), "mgr-b", false, &now()).unwrap();
        assert_eq!(shared["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        // The owner itself may change its fields.
        assert!(apply(&subject(), Some(&a), &holder("a2"), "mgr-a", false, &now()).is_ok());
        let forced = apply(&subject(), Some(&a), &holder("b"), "mgr-b", true, &now()).unwrap();
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["mgr-a", "mgr-b"], "mgr-a keeps leaseDurationSeconds only");
        assert_eq!(
            forced["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:leaseDurationSeconds": {}}})
        );
    }

    #[test]
    fn removed_fields_are_released() {
        let a = apply(&subject(), None, &holder("a"), "mgr-a", false, &now()).unwrap();
        let mut released = a.clone();
        json_patch::merge(
            &mut released,
            &json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": null}}),
        );
        prune(&mut released);
        assert_eq!(released["metadata"]["managedFields"], json!([]));
        assert!(apply(&subject(), Some(&released), &holder("b"), "mgr-b", false, &now()).is_ok());
    }
}
