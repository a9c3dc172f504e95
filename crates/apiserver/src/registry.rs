//! Per-type rules applied on create and update after the generic metadata handling:
//! CSRs (strategy, validation, admission), ClusterTrustBundles (validation, attest admission),
//! bootstrap-token Secrets and Leases.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{BOOTSTRAP_TOKEN_NAMESPACE, BOOTSTRAP_TOKEN_SECRET_TYPE, UserInfo};
use crate::resources::{CSR, CTB_V1BETA1, LEASE, ResourceType, SAR, SECRET, SELF_SAR};
use crate::status::{ApiError, ApiResult, FieldError, quote};
use crate::validation::{self, UpdatePath};
use crate::{admission, strategy, trust_bundle};

/// Who asks, and when.
pub(crate) struct Ctx<'a> {
    pub user: &'a UserInfo,
    pub now: Time,
}

pub(crate) fn decode<T: DeserializeOwned>(rt: &ResourceType, v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("unable to decode the request body as {}: {e}", rt.kind)))
}

pub(crate) fn encode<T: Serialize>(rt: &ResourceType, obj: &T) -> ApiResult<Value> {
    let mut v = serde_json::to_value(obj).map_err(|e| ApiError::internal(e.to_string()))?;
    v["apiVersion"] = Value::String(rt.api_version());
    v["kind"] = Value::String(rt.kind.to_string());
    Ok(v)
}

/// A ClusterTrustBundle of any served version, read as the stored (v1beta1) type: the
/// versions have the same fields.
fn decode_trust_bundle(rt: &ResourceType, v: Value) -> ApiResult<ClusterTrustBundle> {
    decode(rt, CTB_V1BETA1.present(v))
}

fn forbidden(rt: &ResourceType, name: &str) -> impl FnOnce(String) -> ApiError {
    move |reason| ApiError::forbidden(&rt.subject(name), &reason)
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn invalid(rt: &ResourceType, name: &str, errs: Vec<FieldError>) -> ApiResult<()> {
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(&rt.subject(name), &errs)) }
}

/// Create rules for `rt`; `obj` has its final name and namespace.
pub(crate) fn admit_create(rt: &ResourceType, obj: Value, ctx: &Ctx<'_>) -> ApiResult<Value> {
    let name = name_of(&obj);
    if rt == &CSR {
        let mut csr: Csr = decode(rt, obj)?;
        strategy::prepare_for_create(&mut csr, ctx.user);
        invalid(rt, &name, validation::validate(&csr, &validation::options(&csr, None, None)))?;
        admission::check_subject_restriction(&csr)
            .map_err(|reason| ApiError::forbidden(&rt.subject(&name), &reason))?;
        encode(rt, &csr)
    } else if rt.is_trust_bundle() {
        let bundle = decode_trust_bundle(rt, obj)?;
        invalid(rt, &name, trust_bundle::validate(&bundle, true))?;
        admission::check_attest(ctx.user, &bundle, None).map_err(forbidden(rt, &name))?;
        encode(&CTB_V1BETA1, &bundle)
    } else if rt == &SECRET {
        let secret = admit_secret(decode(rt, obj)?, &name)?;
        encode(rt, &secret)
    } else if rt == &LEASE {
        admit_node_lease(ctx.user, &obj, &name)?;
        let lease: Lease = decode(rt, obj)?;
        let mut errs = validation::validate_subdomain_name(&name);
        errs.extend(lease_spec_errors(&lease));
        invalid(rt, &name, errs)?;
        encode(rt, &lease)
    } else {
        Err(ApiError::method_not_allowed("create", &rt.subject(&name)))
    }
}

/// Update rules for `rt` through `path` (`None` = the main resource).
pub(crate) fn admit_update(
    rt: &ResourceType,
    new: Value,
    old: &Value,
    subresource: Option<&str>,
    ctx: &Ctx<'_>,
) -> ApiResult<Value> {
    let name = name_of(old);
    if rt == &CSR {
        let path = match subresource {
            None => UpdatePath::Main,
            Some("status") => UpdatePath::Status,
            Some("approval") => UpdatePath::Approval,
            Some(_) => return Err(ApiError::path_not_found()),
        };
        let mut new_csr: Csr = decode(rt, new)?;
        let old_csr: Csr = decode(rt, old.clone())?;
        strategy::prepare_for_update(&mut new_csr, &old_csr, path, &ctx.now);
        let opts = validation::options(&new_csr, Some(&old_csr), Some(path));
        invalid(rt, &name, validation::validate_update(&new_csr, &old_csr, &opts))?;
        let admitted = match path {
            UpdatePath::Approval => admission::check_approval(ctx.user, &old_csr),
            UpdatePath::Status => admission::check_signing(ctx.user, &old_csr, &new_csr),
            UpdatePath::Main => Ok(()),
        };
        admitted.map_err(|reason| ApiError::forbidden(&rt.subject(&name), &reason))?;
        encode(rt, &new_csr)
    } else if rt.is_trust_bundle() && subresource.is_none() {
        let new_bundle = decode_trust_bundle(rt, new)?;
        let old_bundle = decode_trust_bundle(rt, old.clone())?;
        invalid(rt, &name, trust_bundle::validate_update(&new_bundle, &old_bundle))?;
        admission::check_attest(ctx.user, &new_bundle, Some(&old_bundle)).map_err(forbidden(rt, &name))?;
        encode(&CTB_V1BETA1, &new_bundle)
    } else if rt == &LEASE && subresource.is_none() {
        admit_node_lease(ctx.user, old, &name)?;
        let lease: Lease = decode(rt, new)?;
        invalid(rt, &name, lease_spec_errors(&lease))?;
        encode(rt, &lease)
    } else {
        Err(ApiError::method_not_allowed("update", &rt.subject(&name)))
    }
}

fn admit_node_lease(user: &UserInfo, lease: &Value, name: &str) -> ApiResult<()> {
    let namespace = lease.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    admission::check_node_lease(user, namespace, name)
        .map_err(|reason| ApiError::forbidden(&LEASE.subject(name), &reason))
}

/// Upstream's Lease spec rules: a positive duration, non-negative transitions.
fn lease_spec_errors(lease: &Lease) -> Vec<FieldError> {
    let spec = lease.spec.clone().unwrap_or_default();
    let mut errs = Vec::new();
    if let Some(d) = spec.lease_duration_seconds
        && d <= 0
    {
        errs.push(FieldError::invalid("spec.leaseDurationSeconds", d.to_string(), "must be greater than 0"));
    }
    if let Some(t) = spec.lease_transitions
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// Secrets: only bootstrap tokens in kube-system; `stringData` folds into `data`.
fn admit_secret(mut secret: Secret, name: &str) -> ApiResult<Secret> {
    let subject = SECRET.subject(name);
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    if namespace != BOOTSTRAP_TOKEN_NAMESPACE {
        return Err(ApiError::forbidden(
            &subject,
            &format!(
                "this server stores Secrets only in namespace {}, not in {}",
                quote(BOOTSTRAP_TOKEN_NAMESPACE),
                quote(namespace)
            ),
        ));
    }
    let mut errs = validation::validate_subdomain_name(name);
    let secret_type = secret.type_.clone().unwrap_or_default();
    if secret_type != BOOTSTRAP_TOKEN_SECRET_TYPE {
        errs.push(FieldError::not_supported("type", quote(&secret_type), &[BOOTSTRAP_TOKEN_SECRET_TYPE]));
    }
    let mut data: BTreeMap<String, ByteString> = secret.data.take().unwrap_or_default();
    for (k, v) in secret.string_data.take().unwrap_or_default() {
        data.insert(k, ByteString(v.into_bytes()));
    }
    for key in data.keys() {
        let ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            errs.push(FieldError::invalid(
                format!("data[{key}]"),
                quote(key),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
    invalid(&SECRET, name, errs)?;
    secret.data = (!data.is_empty()).then_some(data);
    Ok(secret)
}

fn round_trip<T: Serialize + DeserializeOwned>(rt: &ResourceType, v: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    encode(rt, &typed).ok()
}

/// Fields of `input` that the type does not have (for `fieldValidation`), as JSON paths.
/// Bodies that do not decode at all report nothing here; decoding reports them.
pub(crate) fn unknown_fields(rt: &ResourceType, input: &Value) -> Vec<String> {
    let typed = if rt == &CSR {
        round_trip::<Csr>(rt, input)
    } else if rt.is_trust_bundle() {
        round_trip::<ClusterTrustBundle>(&CTB_V1BETA1, &CTB_V1BETA1.present(input.clone()))
    } else if rt == &SECRET {
        round_trip::<Secret>(rt, input)
    } else if rt == &LEASE {
        round_trip::<Lease>(rt, input)
    } else if rt == &SAR {
        round_trip::<SubjectAccessReview>(rt, input)
    } else if rt == &SELF_SAR {
        round_trip::<SelfSubjectAccessReview>(rt, input)
    } else {
        None
    };
    let mut out = Vec::new();
    if let Some(typed) = typed {
        diff_fields(input, &typed, "", &mut out);
    }
    out
}

fn diff_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(tv) => diff_fields(v, tv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (idx, (a, b)) in i.iter().zip(t).enumerate() {
                diff_fields(a, b, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields() {
        let lease = json!({"metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1}, "spec": {"holderIdentity": "h", "nope": true}, "extra": null});
        assert_eq!(unknown_fields(&LEASE, &lease), ["metadata.bogus", "spec.nope"]);
        assert!(unknown_fields(&LEASE, &json!({"metadata": {"name": "a"}})).is_empty());
    }
}
