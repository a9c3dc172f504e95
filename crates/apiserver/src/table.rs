//! Server-side `meta.k8s.io/v1` Table output (SPEC KC-1…KC-3, KC-11). Pure: `now` is an
//! argument.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::resources::{CSR, LEASE, ResourceType, SECRET};

/// Upstream `HumanDuration` (KC-3) for a signed number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: SystemTime) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let now = jiff::Timestamp::try_from(now).map_or(0, |t| t.as_second());
    human_duration(now - ts.as_second())
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".into() } else { s.to_string() }
}

/// The CSR `Condition` cell (KC-2).
pub fn csr_condition(obj: &Value) -> String {
    let types: Vec<&str> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["type"].as_str()).collect())
        .unwrap_or_default();
    let has = |t: &str| types.contains(&t);
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if !str_at(obj, "/status/certificate").is_empty() {
        s.push_str(",Issued");
    }
    s
}

/// The cells of one row of `rt` (KC-2 for CSRs).
pub fn cells(rt: &ResourceType, obj: &Value, now: SystemTime) -> Vec<Value> {
    let name = json!(str_at(obj, "/metadata/name"));
    let age = json!(age(obj, now));
    if rt == &CSR {
        let duration = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map_or_else(|| "<none>".to_string(), human_duration);
        vec![
            name,
            age,
            json!(or_none(str_at(obj, "/spec/signerName"))),
            json!(str_at(obj, "/spec/username")),
            json!(duration),
            json!(csr_condition(obj)),
        ]
    } else if rt.is_trust_bundle() {
        vec![name, json!(or_none(str_at(obj, "/spec/signerName")))]
    } else if rt == &SECRET {
        let data = obj.get("data").and_then(Value::as_object).map_or(0, serde_json::Map::len);
        vec![name, json!(str_at(obj, "/type")), json!(data), age]
    } else if rt == &LEASE {
        vec![name, json!(str_at(obj, "/spec/holderIdentity")), age]
    } else {
        vec![name, json!(str_at(obj, "/metadata/creationTimestamp"))]
    }
}

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

/// Column definitions of `rt`.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = column("Name", "string", "name", "Name of the object, unique within its scope.");
    let age = column("Age", "string", "", "Time since the object was created.");
    if rt == &CSR {
        vec![
            name,
            age,
            column("SignerName", "string", "", "The signer that is asked to sign the request."),
            column("Requestor", "string", "", "The user that created the request."),
            column("RequestedDuration", "string", "", "The requested validity of the certificate."),
            column("Condition", "string", "", "Approval, failure and issuance state."),
        ]
    } else if rt.is_trust_bundle() {
        // Upstream prints no Age for bundles.
        vec![name, column("SignerName", "string", "", "The signer the bundle holds trust anchors for.")]
    } else if rt == &SECRET {
        vec![
            name,
            column("Type", "string", "", "The type of the secret."),
            column("Data", "string", "", "Number of data keys."),
            age,
        ]
    } else if rt == &LEASE {
        vec![name, column("Holder", "string", "", "Current holder of the lease."), age]
    } else {
        vec![name, column("Created At", "date", "", "Creation time.")]
    }
}

/// What to embed as each row's `object` (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn row(rt: &ResourceType, obj: &Value, now: SystemTime, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells(rt, obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = obj.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
            });
        }
    }
    row
}

/// A Table of `objects`; `list_meta` is the list's metadata (resourceVersion, continue).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    now: SystemTime,
    include: IncludeObject,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(rt),
        "rows": objects.iter().map(|o| row(rt, o, now, include)).collect::<Vec<_>>(),
    })
}

/// Whether the Accept header asks for a `meta.k8s.io/v1` Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let params: Vec<&str> = part.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
                && params.contains(&"g=meta.k8s.io")
                && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (364 * 86400, "364d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn csr_cells() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let created = jiff::Timestamp::from_second(1_000_000 - 90).unwrap().to_string();
        let obj = json!({
            "metadata": {"name": "csr-abcde", "creationTimestamp": created},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet", "username": "system:bootstrap:abcdef", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Y2VydA=="}
        });
        assert_eq!(
            cells(&CSR, &obj, now),
            vec![
                json!("csr-abcde"),
                json!("90s"),
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:bootstrap:abcdef"),
                json!("24h"),
                json!("Approved,Issued")
            ]
        );
        let pending = json!({"metadata": {"name": "x"}, "spec": {}});
        assert_eq!(
            cells(&CSR, &pending, now)[1..],
            [json!("<unknown>"), json!("<none>"), json!(""), json!("<none>"), json!("Pending")]
        );
        let denied_failed =
            json!({"status": {"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]}});
        assert_eq!(csr_condition(&denied_failed), "Denied,Failed");
    }

    #[test]
    fn trust_bundle_cells() {
        use crate::resources::CTB_V1BETA1;
        let now = SystemTime::UNIX_EPOCH;
        let linked =
            json!({"metadata": {"name": "example.com:x:v1"}, "spec": {"signerName": "example.com/x"}});
        let unlinked = json!({"metadata": {"name": "roots"}, "spec": {"trustBundle": ""}});
        assert_eq!(cells(&CTB_V1BETA1, &linked, now), [json!("example.com:x:v1"), json!("example.com/x")]);
        assert_eq!(cells(&CTB_V1BETA1, &unlinked, now), [json!("roots"), json!("<none>")]);
        let names: Vec<Value> = columns(&CTB_V1BETA1).into_iter().map(|c| c["name"].clone()).collect();
        assert_eq!(names, [json!("Name"), json!("SignerName")]);
    }

    #[test]
    fn table_accept_header() {
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }
}
