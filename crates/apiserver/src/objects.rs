//! Generic object metadata handling (what upstream's generic registry does for every type):
//! names and generateName, uid, creationTimestamp, resourceVersion, preconditions; and the
//! wire envelopes (lists, continue tokens, success Status).

use std::time::SystemTime;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult};

/// Alphabet of generated name suffixes (upstream `util/rand`).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of generated name suffixes.
const NAME_SUFFIX_LEN: usize = 5;

fn random_bytes<const N: usize>() -> ApiResult<[u8; N]> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| ApiError::internal("system random number generator failed"))?;
    Ok(buf)
}

/// `prefix` + 5 random characters from upstream's alphabet.
pub(crate) fn generate_name(prefix: &str) -> ApiResult<String> {
    let bytes: [u8; NAME_SUFFIX_LEN] = random_bytes()?;
    let suffix: String =
        bytes.iter().map(|b| char::from(NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()])).collect();
    Ok(format!("{prefix}{suffix}"))
}

/// A random version-4 UUID.
pub(crate) fn new_uid() -> ApiResult<String> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = kubecert_csr::hex(&b);
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

/// Whole-second `Time` for `now`.
pub(crate) fn time(now: SystemTime) -> Time {
    let secs = jiff::Timestamp::try_from(now).map_or(0, |t| t.as_second());
    Time(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// `metadata` of an object as a map (created if missing). Errors when it is not an object.
pub(crate) fn metadata_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let map =
        obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    map.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a JSON object"))
}

/// A string field of `metadata`.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// Checks `apiVersion`/`kind` of a body when present (400 otherwise).
pub(crate) fn check_type(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(rt.kind);
    let api_version =
        obj.get("apiVersion").and_then(Value::as_str).map_or_else(|| rt.api_version(), str::to_string);
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) is not {}",
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

/// Namespace of a body versus the URL (upstream's rules): cluster-scoped objects lose any
/// namespace; namespaced ones must match the URL or be empty.
pub(crate) fn check_namespace(rt: &ResourceType, obj: &mut Value, url_ns: Option<&str>) -> ApiResult<()> {
    let meta = metadata_mut(obj)?;
    if !rt.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = url_ns.unwrap_or_default();
    let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or_default();
    if !body_ns.is_empty() && body_ns != url_ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta.insert("namespace".into(), json!(url_ns));
    Ok(())
}

/// Fields the server owns, set on create.
pub(crate) fn set_create_fields(obj: &mut Value, now: SystemTime) -> ApiResult<()> {
    let uid = new_uid()?;
    let created = serde_json::to_value(time(now)).map_err(|e| ApiError::internal(e.to_string()))?;
    let meta = metadata_mut(obj)?;
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), created);
    for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(f);
    }
    Ok(())
}

/// Keeps the server-owned fields of `old` on an update.
pub(crate) fn keep_system_fields(new: &mut Value, old: &Value) -> ApiResult<()> {
    let meta = metadata_mut(new)?;
    for f in ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"] {
        match old.get("metadata").and_then(|m| m.get(f)) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    Ok(())
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_rv(obj: &mut Value, rv: u64) -> ApiResult<()> {
    metadata_mut(obj)?.insert("resourceVersion".into(), json!(rv.to_string()));
    Ok(())
}

/// Equal apart from `metadata.resourceVersion` (and managedFields), i.e. a no-op update.
pub(crate) fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// The 422 of an update without `metadata.resourceVersion` of a type that needs one. As
/// upstream's generic registry, it names the resource where the kind usually is.
pub(crate) fn resource_version_required(rt: &ResourceType, name: &str) -> ApiError {
    let mut subject = rt.subject(name);
    subject.kind = rt.resource.to_string();
    ApiError::invalid(
        &subject,
        &[crate::status::FieldError::invalid(
            "metadata.resourceVersion",
            "0".into(),
            "must be specified for an update",
        )],
    )
}

/// `{"kind": "<Kind>List", ...}`.
pub(crate) fn list_object(rt: &ResourceType, mut items: Vec<Value>, meta: Value) -> Value {
    // Upstream's list items carry no apiVersion and kind: the list says them once.
    for item in &mut items {
        if let Some(fields) = item.as_object_mut() {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
    }
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// List metadata: resourceVersion plus continue/remainingItemCount when cut.
pub(crate) fn list_meta(rv: u64, next: Option<&str>, remaining: u64) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(key) = next {
        meta["continue"] = json!(encode_continue(rv, key));
        meta["remainingItemCount"] = json!(remaining);
    }
    meta
}

fn encode_continue(rv: u64, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}:{key}"))
}

/// The key to continue after, from a continue token; it must lie under `prefix`.
pub(crate) fn decode_continue(token: &str, prefix: &str) -> ApiResult<String> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (_, key) = text.split_once(':').ok_or_else(bad)?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    Ok(key.to_string())
}

/// The success Status answered to a delete.
pub(crate) fn deleted_status(rt: &ResourceType, obj: &Value) -> Value {
    let mut details = crate::status::details(meta_str(obj, "name"), rt.group, rt.resource);
    details["uid"] = json!(meta_str(obj, "uid"));
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CSR, SECRET};

    #[test]
    fn generated_names_use_upstream_alphabet() {
        let n = generate_name("csr-").unwrap();
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn continue_tokens_round_trip_and_are_scoped() {
        let token = encode_continue(7, "r//b");
        assert_eq!(decode_continue(&token, "r//").unwrap(), "r//b");
        assert_eq!(decode_continue(&token, "q//").unwrap_err().code, 400);
        assert_eq!(decode_continue("%%%", "r//").unwrap_err().code, 400);
    }

    #[test]
    fn namespace_rules() {
        let mut v = json!({"metadata": {"namespace": "x"}});
        check_namespace(&CSR, &mut v, None).unwrap();
        assert!(v["metadata"].get("namespace").is_none());
        let mut v = json!({"metadata": {"namespace": "x"}});
        assert_eq!(check_namespace(&SECRET, &mut v, Some("y")).unwrap_err().code, 400);
        let mut v = json!({});
        check_namespace(&SECRET, &mut v, Some("y")).unwrap();
        assert_eq!(v["metadata"]["namespace"], "y");
    }

    #[test]
    fn type_check() {
        assert!(check_type(&CSR, &json!({})).is_ok());
        assert!(check_type(&CSR, &json!({"kind": "Secret"})).is_err());
        assert!(check_type(&SECRET, &json!({"apiVersion": "v1", "kind": "Secret"})).is_ok());
    }
}
