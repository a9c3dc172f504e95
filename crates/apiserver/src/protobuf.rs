//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! JSON, for the types clients send that way: kubectl's typed clients and the kubelet (SPEC
//! W-13) write CSRs and Secrets as protobuf. Responses stay JSON, which those clients accept.
//!
//! The envelope is `k8s\0` + `runtime.Unknown{typeMeta, raw}`; `raw` is decoded with small
//! field tables taken from the upstream `generated.proto` files. Unknown fields are skipped, as
//! a protobuf decoder does.
//!
//! The wire-format writers at the end ([`put_varint`], [`put_tag`], [`put_len`]) serve the one
//! protobuf response, the OpenAPI v2 document (`gnostic`).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::resources::{CSR, LEASE, ResourceType, SAR, SECRET, SELF_SAR, SELF_SUBJECT_REVIEW};
use crate::status::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// How one field is read.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    MicroTime,
    Msg(&'static [Field]),
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
    MapStr,
    MapBytes,
    /// `map<string, ExtraValue>` with `ExtraValue{repeated string items = 1}`.
    MapStrList,
}

type Field = (u64, &'static str, Kind);

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (8, "creationTimestamp", Kind::Time),
    (9, "deletionTimestamp", Kind::Time),
    (10, "deletionGracePeriodSeconds", Kind::Int),
    (11, "labels", Kind::MapStr),
    (12, "annotations", Kind::MapStr),
    (14, "finalizers", Kind::RepeatedStr),
];

const CSR_SPEC: &[Field] = &[
    (1, "request", Kind::Bytes),
    (2, "username", Kind::Str),
    (3, "uid", Kind::Str),
    (4, "groups", Kind::RepeatedStr),
    (5, "usages", Kind::RepeatedStr),
    (6, "extra", Kind::MapStrList),
    (7, "signerName", Kind::Str),
    (8, "expirationSeconds", Kind::Int),
];

const CSR_CONDITION: &[Field] = &[
    (1, "type", Kind::Str),
    (2, "reason", Kind::Str),
    (3, "message", Kind::Str),
    (4, "lastUpdateTime", Kind::Time),
    (5, "lastTransitionTime", Kind::Time),
    (6, "status", Kind::Str),
];

const CSR_STATUS: &[Field] =
    &[(1, "conditions", Kind::RepeatedMsg(CSR_CONDITION)), (2, "certificate", Kind::Bytes)];

const CSR_FIELDS: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(CSR_SPEC)),
    (3, "status", Kind::Msg(CSR_STATUS)),
];

const SECRET_FIELDS: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::MapBytes),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::MapStr),
    (5, "immutable", Kind::Bool),
];

const LEASE_SPEC: &[Field] = &[
    (1, "holderIdentity", Kind::Str),
    (2, "leaseDurationSeconds", Kind::Int),
    (3, "acquireTime", Kind::MicroTime),
    (4, "renewTime", Kind::MicroTime),
    (5, "leaseTransitions", Kind::Int),
    (6, "strategy", Kind::Str),
    (7, "preferredHolder", Kind::Str),
];

const LEASE_FIELDS: &[Field] = &[(1, "metadata", Kind::Msg(OBJECT_META)), (2, "spec", Kind::Msg(LEASE_SPEC))];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    (1, "namespace", Kind::Str),
    (2, "verb", Kind::Str),
    (3, "group", Kind::Str),
    (4, "version", Kind::Str),
    (5, "resource", Kind::Str),
    (6, "subresource", Kind::Str),
    (7, "name", Kind::Str),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[(1, "path", Kind::Str), (2, "verb", Kind::Str)];

const SAR_SPEC: &[Field] = &[
    (1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
    (2, "nonResourceAttributes", Kind::Msg(NON_RESOURCE_ATTRIBUTES)),
    (3, "user", Kind::Str),
    (4, "groups", Kind::RepeatedStr),
    (5, "extra", Kind::MapStrList),
    (6, "uid", Kind::Str),
];

const SAR_FIELDS: &[Field] = &[(1, "metadata", Kind::Msg(OBJECT_META)), (2, "spec", Kind::Msg(SAR_SPEC))];

/// A SelfSubjectReview request carries metadata only; its status (field 2) is the server's.
const SELF_SUBJECT_REVIEW_FIELDS: &[Field] = &[(1, "metadata", Kind::Msg(OBJECT_META))];

const TYPE_META: &[Field] = &[(1, "apiVersion", Kind::Str), (2, "kind", Kind::Str)];
const UNKNOWN: &[Field] = &[(1, "typeMeta", Kind::Msg(TYPE_META)), (2, "raw", Kind::Bytes)];

struct Reader<'a> {
    buf: &'a [u8],
}

fn malformed(detail: &str) -> ApiError {
    ApiError::bad_request(format!("unable to decode protobuf body: {detail}"))
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> ApiResult<&'a [u8]> {
        if n > self.buf.len() {
            return Err(malformed("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, wire type, payload); varints come back as their value bytes.
    fn next(&mut self) -> ApiResult<Option<(u64, Wire<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let wire = match tag & 7 {
            VARINT => Wire::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Wire::Skip
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed("length"))?;
                Wire::Len(self.take(len)?)
            }
            FIXED32 => {
                self.take(4)?;
                Wire::Skip
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Some((tag >> 3, wire)))
    }
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Skip,
}

fn text(bytes: &[u8]) -> ApiResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not UTF-8"))
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `{seconds = 1, nanos = 2}` as RFC 3339 (whole seconds, or microseconds for MicroTime).
fn time(bytes: &[u8], micro: bool) -> ApiResult<Value> {
    let mut r = Reader { buf: bytes };
    let (mut secs, mut nanos) = (0i64, 0i64);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Varint(v)) => secs = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i64,
            _ => {}
        }
    }
    let ts = jiff::Timestamp::new(secs, if micro { (nanos / 1000 * 1000) as i32 } else { 0 })
        .map_err(|_| malformed("time out of range"))?;
    Ok(if micro {
        json!(ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    } else {
        json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
    })
}

fn map_entry(bytes: &[u8]) -> ApiResult<(String, &[u8])> {
    let mut r = Reader { buf: bytes };
    let (mut key, mut value): (String, &[u8]) = (String::new(), &[]);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Len(b)) => key = text(b)?,
            (2, Wire::Len(b)) => value = b,
            _ => {}
        }
    }
    Ok((key, value))
}

fn message(bytes: &[u8], fields: &[Field]) -> ApiResult<Value> {
    let mut out = Map::new();
    let mut r = Reader { buf: bytes };
    while let Some((n, wire)) = r.next()? {
        let Some(&(_, name, kind)) = fields.iter().find(|(f, _, _)| *f == n) else {
            continue;
        };
        match (kind, wire) {
            (Kind::Str, Wire::Len(b)) => {
                out.insert(name.into(), json!(text(b)?));
            }
            (Kind::Bytes, Wire::Len(b)) => {
                out.insert(name.into(), b64(b));
            }
            (Kind::Int, Wire::Varint(v)) => {
                out.insert(name.into(), json!(v as i64));
            }
            (Kind::Bool, Wire::Varint(v)) => {
                out.insert(name.into(), json!(v != 0));
            }
            (Kind::Time, Wire::Len(b)) => {
                out.insert(name.into(), time(b, false)?);
            }
            (Kind::MicroTime, Wire::Len(b)) => {
                out.insert(name.into(), time(b, true)?);
            }
            (Kind::Msg(sub), Wire::Len(b)) => {
                out.insert(name.into(), message(b, sub)?);
            }
            (Kind::RepeatedStr, Wire::Len(b)) => {
                push(out.entry(name).or_insert_with(|| json!([])), json!(text(b)?))
            }
            (Kind::RepeatedMsg(sub), Wire::Len(b)) => {
                let v = message(b, sub)?;
                push(out.entry(name).or_insert_with(|| json!([])), v);
            }
            (Kind::MapStr | Kind::MapBytes | Kind::MapStrList, Wire::Len(b)) => {
                let (key, value) = map_entry(b)?;
                let value = match kind {
                    Kind::MapBytes => b64(value),
                    Kind::MapStrList => message(value, &[(1, "items", Kind::RepeatedStr)])?
                        .get("items")
                        .cloned()
                        .unwrap_or_else(|| json!([])),
                    _ => json!(text(value)?),
                };
                if let Some(map) = out.entry(name).or_insert_with(|| json!({})).as_object_mut() {
                    map.insert(key, value);
                }
            }
            _ => return Err(malformed(&format!("unexpected wire type for field {name}"))),
        }
    }
    Ok(Value::Object(out))
}

fn push(list: &mut Value, v: Value) {
    if let Some(a) = list.as_array_mut() {
        a.push(v);
    }
}

/// Decodes a protobuf body of type `rt` into its JSON form.
pub(crate) fn decode(rt: &ResourceType, body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| malformed("missing k8s envelope"))?;
    let unknown = message(envelope, UNKNOWN)?;
    let fields = if rt == &CSR {
        CSR_FIELDS
    } else if rt == &SECRET {
        SECRET_FIELDS
    } else if rt == &LEASE {
        LEASE_FIELDS
    } else if rt == &SAR || rt == &SELF_SAR {
        // A self review's spec has only the attribute fields, with the same numbers.
        SAR_FIELDS
    } else if rt == &SELF_SUBJECT_REVIEW {
        SELF_SUBJECT_REVIEW_FIELDS
    } else {
        return Err(ApiError::unsupported_media_type(
            "application/vnd.kubernetes.protobuf",
            &["application/json"],
        ));
    };
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default();
    let mut obj = message(&raw, fields)?;
    obj["apiVersion"] =
        unknown.pointer("/typeMeta/apiVersion").cloned().unwrap_or_else(|| json!(rt.api_version()));
    obj["kind"] = unknown.pointer("/typeMeta/kind").cloned().unwrap_or_else(|| json!(rt.kind));
    Ok(obj)
}

/// Wire type of varint fields.
pub(crate) const VARINT: u64 = 0;
/// Wire type of `double` and other 64-bit fields.
pub(crate) const FIXED64: u64 = 1;
/// Wire type of strings, bytes and messages.
pub(crate) const LEN: u64 = 2;
/// Wire type of `float` and other 32-bit fields (skipped when decoding, never written).
const FIXED32: u64 = 5;

/// Appends `v` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the key of field `n` with wire type `wire`.
pub(crate) fn put_tag(out: &mut Vec<u8>, n: u64, wire: u64) {
    put_varint(out, n << 3 | wire);
}

/// Appends field `n` with a length-delimited payload (a string, bytes or a message).
pub(crate) fn put_len(out: &mut Vec<u8>, n: u64, payload: &[u8]) {
    put_tag(out, n, LEN);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_csr() {
        let mut meta = Vec::new();
        put_len(&mut meta, 1, b"csr-1");
        let mut labels = Vec::new();
        put_len(&mut labels, 1, b"k");
        put_len(&mut labels, 2, b"v");
        put_len(&mut meta, 11, &labels);
        let mut spec = Vec::new();
        put_len(&mut spec, 1, b"PEM");
        put_len(&mut spec, 5, b"client auth");
        put_len(&mut spec, 5, b"digital signature");
        put_len(&mut spec, 7, b"example.com/x");
        put_tag(&mut spec, 8, VARINT);
        put_varint(&mut spec, 3600);
        let mut cond = Vec::new();
        put_len(&mut cond, 1, b"Approved");
        put_len(&mut cond, 6, b"True");
        let mut ts = Vec::new();
        put_tag(&mut ts, 1, VARINT);
        put_varint(&mut ts, 1_700_000_000);
        put_len(&mut cond, 4, &ts);
        let mut status = Vec::new();
        put_len(&mut status, 1, &cond);
        let mut raw = Vec::new();
        put_len(&mut raw, 1, &meta);
        put_len(&mut raw, 2, &spec);
        put_len(&mut raw, 3, &status);
        let mut tm = Vec::new();
        put_len(&mut tm, 1, b"certificates.k8s.io/v1");
        put_len(&mut tm, 2, b"CertificateSigningRequest");
        let mut body = MAGIC.to_vec();
        put_len(&mut body, 1, &tm);
        put_len(&mut body, 2, &raw);
        let v = decode(&CSR, &body).unwrap();
        assert_eq!(v["kind"], "CertificateSigningRequest");
        assert_eq!(v["metadata"]["name"], "csr-1");
        assert_eq!(v["metadata"]["labels"]["k"], "v");
        assert_eq!(v["spec"]["request"], "UEVN");
        assert_eq!(v["spec"]["usages"], json!(["client auth", "digital signature"]));
        assert_eq!(v["spec"]["expirationSeconds"], 3600);
        assert_eq!(v["status"]["conditions"][0]["status"], "True");
        assert_eq!(v["status"]["conditions"][0]["lastUpdateTime"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(&CSR, b"nope").unwrap_err().code, 400);
        assert_eq!(decode(&CSR, b"k8s\0\x0a\xff").unwrap_err().code, 400);
    }
}
