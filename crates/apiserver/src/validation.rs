//! CSR validation (SPEC V-1…V-12) and the name rules shared by other types. Pure.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest as Csr, CertificateSigningRequestCondition as Condition,
};
use kubecert_csr::KeyUsage;

use crate::status::{FieldError, quote};

/// `kubernetes.io/legacy-unknown`, rejected via v1 (V-4).
const LEGACY_SIGNER: &str = kubecert_csr::SIGNER_LEGACY_UNKNOWN;
const APPROVED: &str = "Approved";
const DENIED: &str = "Denied";
const FAILED: &str = "Failed";
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// SPEC §1: 253 domain + 1 + 253+63+1 path + 1.
const SIGNER_NAME_MAX: usize = 571;

/// Which relaxations apply (V-11) and what the request path may change (V-9, V-10, V-12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub allow_legacy_signer: bool,
    pub allow_duplicate_condition_types: bool,
    pub allow_empty_condition_type: bool,
    pub allow_both_approved_and_denied: bool,
    pub allow_arbitrary_certificate: bool,
    pub allow_duplicate_usages: bool,
    pub allow_unknown_usages: bool,
    pub allow_setting_certificate: bool,
    pub allow_setting_approval_conditions: bool,
}

/// Which path an update came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpdatePath {
    Main,
    Status,
    Approval,
}

fn conditions(csr: &Csr) -> &[Condition] {
    csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

fn certificate(csr: &Csr) -> &[u8] {
    csr.status.as_ref().and_then(|s| s.certificate.as_ref()).map_or(&[], |c| c.0.as_slice())
}

fn usages(csr: &Csr) -> &[String] {
    csr.spec.usages.as_deref().unwrap_or(&[])
}

fn of_type<'a>(csr: &'a Csr, t: &str) -> Vec<&'a Condition> {
    conditions(csr).iter().filter(|c| c.type_ == t).collect()
}

/// Options for a create or an update through `path` (V-11 relaxations from the stored object).
pub(crate) fn options(new: &Csr, old: Option<&Csr>, path: Option<UpdatePath>) -> Options {
    let Some(old) = old else {
        return Options::default();
    };
    let old_conditions = conditions(old);
    let mut seen = std::collections::BTreeSet::new();
    let dup_types = old_conditions.iter().any(|c| !seen.insert(c.type_.as_str()));
    let old_usages = usages(old);
    let mut seen_usages = std::collections::BTreeSet::new();
    Options {
        allow_legacy_signer: old.spec.signer_name == LEGACY_SIGNER,
        allow_duplicate_condition_types: dup_types,
        allow_empty_condition_type: old_conditions.iter().any(|c| c.type_.is_empty()),
        allow_both_approved_and_denied: !of_type(old, APPROVED).is_empty()
            && !of_type(old, DENIED).is_empty(),
        allow_arbitrary_certificate: certificate(new) == certificate(old)
            || validate_certificate(certificate(old)).is_err(),
        allow_duplicate_usages: old_usages.iter().any(|u| !seen_usages.insert(u.as_str())),
        allow_unknown_usages: old_usages.iter().any(|u| u.parse::<KeyUsage>().is_err()),
        allow_setting_certificate: path == Some(UpdatePath::Status),
        allow_setting_approval_conditions: path == Some(UpdatePath::Approval),
    }
}

/// Validates a CSR object on create.
pub(crate) fn validate(csr: &Csr, opts: &Options) -> Vec<FieldError> {
    let mut errs = validate_object(csr, opts);
    errs.extend(approval_union(csr, opts));
    errs
}

/// V-6's exclusivity of Approved and Denied. Upstream checks it declaratively, after every
/// hand-written rule, and reports it once for the whole list.
fn approval_union(csr: &Csr, opts: &Options) -> Option<FieldError> {
    let present = |t: &str| conditions(csr).iter().any(|c| c.type_ == t);
    (!opts.allow_both_approved_and_denied && present(APPROVED) && present(DENIED)).then(|| {
        let members = [APPROVED, DENIED].map(|t| format!("conditions[{{\"type\": {}}}]", quote(t)));
        FieldError::invalid(
            "status.conditions",
            quote(&format!("{{{}}}", members.join(", "))),
            format!("must specify at most one of: `{}`", members.join("`, `")),
        )
    })
}

/// The rules on the object itself (create, and the object half of every update).
fn validate_object(csr: &Csr, opts: &Options) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if csr.metadata.name.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    }
    if let Err(e) = kubecert_csr::parse_csr_pem_once(&csr.spec.request.0) {
        // Upstream shows the bytes as JSON does (base64), and one sentence for any PEM problem.
        let detail = match e {
            kubecert_csr::Error::Pem { .. } => "PEM block type must be CERTIFICATE REQUEST".to_owned(),
            other => other.to_string(),
        };
        let shown = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &csr.spec.request.0);
        errs.push(FieldError::invalid("spec.request", quote(&shown), detail));
    }
    let usages = usages(csr);
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", ""));
    }
    if !opts.allow_unknown_usages {
        let supported: Vec<&str> = KeyUsage::ALL.iter().map(|u| u.as_str()).collect();
        let mut sorted = supported.clone();
        sorted.sort_unstable();
        for (i, u) in usages.iter().enumerate() {
            if !supported.contains(&u.as_str()) {
                errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), quote(u), &sorted));
            }
        }
    }
    if !opts.allow_duplicate_usages {
        for (i, u) in usages.iter().enumerate() {
            if usages[..i].contains(u) {
                errs.push(FieldError::duplicate(format!("spec.usages[{i}]"), quote(u)));
            }
        }
    }
    let signer = &csr.spec.signer_name;
    if !opts.allow_legacy_signer && signer == LEGACY_SIGNER {
        errs.push(FieldError::invalid(
            "spec.signerName",
            quote(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(validate_signer_name("spec.signerName", signer));
    }
    if let Some(secs) = csr.spec.expiration_seconds
        && secs < 600
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            secs.to_string(),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs.extend(validate_conditions(csr, opts));
    if !opts.allow_arbitrary_certificate
        && let Err(detail) = validate_certificate(certificate(csr))
    {
        errs.push(FieldError::invalid("status.certificate", quote("<certificate data>"), detail));
    }
    errs
}

fn validate_conditions(csr: &Csr, opts: &Options) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions(csr).iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        if !opts.allow_empty_condition_type && c.type_.is_empty() {
            errs.push(FieldError::required(format!("{path}.type"), ""));
        }
        let only_true = [APPROVED, DENIED, FAILED].contains(&c.type_.as_str());
        let allowed: &[&str] = if only_true { &["True"] } else { &["False", "True", "Unknown"] };
        if c.status.is_empty() {
            errs.push(FieldError::required(format!("{path}.status"), ""));
        } else if !allowed.contains(&c.status.as_str()) {
            errs.push(FieldError::not_supported(format!("{path}.status"), quote(&c.status), allowed));
        }
        if !opts.allow_duplicate_condition_types {
            if seen.contains(&c.type_.as_str()) {
                errs.push(FieldError::duplicate(format!("{path}.type"), quote(&c.type_)));
            }
            seen.push(&c.type_);
        }
    }
    errs
}

/// V-7: empty, or PEM `CERTIFICATE` blocks without headers whose DER parses.
pub(crate) fn validate_certificate(pem: &[u8]) -> Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    let text = std::str::from_utf8(pem).map_err(|_| "certificate data is not text".to_string())?;
    let mut blocks = 0;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after.find("-----").ok_or("malformed PEM block")?;
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            break;
        };
        if label != "CERTIFICATE" {
            return Err(format!("only CERTIFICATE PEM blocks are allowed, found {}", quote(label)));
        }
        let body = &body_start[..end];
        if body.contains(':') {
            return Err("no PEM block headers are permitted".into());
        }
        let b64: String = body.split_whitespace().collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .map_err(|e| format!("invalid base64 in CERTIFICATE block: {e}"))?;
        parse_certificates(&der)?;
        blocks += 1;
        rest = &body_start[end + end_marker.len()..];
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// A DER blob holding one or more concatenated certificates.
fn parse_certificates(mut der: &[u8]) -> Result<(), String> {
    if der.is_empty() {
        return Err("found CERTIFICATE PEM block containing 0 certificates".into());
    }
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        der = rest;
    }
    Ok(())
}

/// Update rules (V-8…V-10) on top of [`validate`].
pub(crate) fn validate_update(new: &Csr, old: &Csr, opts: &Options) -> Vec<FieldError> {
    let mut errs = validate_object(new, opts);
    for t in [APPROVED, DENIED, FAILED] {
        if of_type(new, t).len() < of_type(old, t).len() {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {}", quote(t)),
            ));
        }
    }
    if !opts.allow_setting_approval_conditions {
        for t in [APPROVED, DENIED] {
            let (o, n) = (of_type(old, t), of_type(new, t));
            if n.len() > o.len() {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not add a condition of type {}", quote(t)),
                ));
            } else if n.len() == o.len() && n != o {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not modify a condition of type {}", quote(t)),
                ));
            }
        }
    }
    if certificate(new) != certificate(old) {
        if !certificate(old).is_empty() {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
        if !opts.allow_setting_certificate {
            errs.push(FieldError::forbidden("status.certificate", "updates may not set certificate content"));
        }
    }
    errs.extend(approval_union(new, opts));
    errs
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label_shape(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&f), Some(&l)) => alnum(f) && alnum(l) && bytes.iter().all(|&b| alnum(b) || b == b'-'),
        _ => false,
    }
}

/// Errors of upstream `IsDNS1123Label`.
pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !is_label_shape(s) {
        errs.push(LABEL_MSG.to_string());
    }
    errs
}

/// Errors of upstream `IsDNS1123Subdomain`.
pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(is_label_shape) {
        errs.push(SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// Upstream `ValidateSignerName` (V-4).
pub(crate) fn validate_signer_name(field: &str, signer: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if signer.is_empty() {
        errs.push(FieldError::required(field, ""));
        return errs;
    }
    let segments: Vec<&str> = signer.split('/').collect();
    let [domain, path] = segments.as_slice() else {
        errs.push(FieldError::invalid(
            field,
            quote(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return errs;
    };
    if domain.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(FieldError::too_long(field, DNS1123_SUBDOMAIN_MAX));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some((label, label_errs)) =
        labels.iter().map(|l| (l, dns1123_label_errors(l))).find(|(_, e)| !e.is_empty())
    {
        for e in label_errs {
            errs.push(FieldError::invalid(
                field,
                quote(domain),
                format!("validating label {}: {e}", quote(label)),
            ));
        }
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            field,
            quote(domain),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if let Some((part, part_errs)) =
        path.split('.').map(|p| (p, dns1123_subdomain_errors(p))).find(|(_, e)| !e.is_empty())
    {
        for e in part_errs {
            errs.push(FieldError::invalid(
                field,
                quote(path),
                format!("validating component {}: {e}", quote(part)),
            ));
        }
    }
    if signer.len() > SIGNER_NAME_MAX {
        errs.push(FieldError::too_long(field, SIGNER_NAME_MAX));
    }
    errs
}

/// Name rule of Secrets and Leases: a DNS-1123 subdomain.
pub(crate) fn validate_subdomain_name(name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required("metadata.name", "name or generateName is required")];
    }
    dns1123_subdomain_errors(name)
        .into_iter()
        .map(|e| FieldError::invalid("metadata.name", quote(name), e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_names() {
        let ok = ["kubernetes.io/kube-apiserver-client-kubelet", "example.com/a.b-c"];
        for s in ok {
            assert!(validate_signer_name("f", s).is_empty(), "{s}");
        }
        let bad = [
            ("", "FieldValueRequired"),
            ("example.com", "FieldValueInvalid"),
            ("a/b/c", "FieldValueInvalid"),
            ("example/x", "FieldValueInvalid"),
            ("Example.com/x", "FieldValueInvalid"),
            ("example.com/X", "FieldValueInvalid"),
            ("example.com/", "FieldValueInvalid"),
        ];
        for (s, reason) in bad {
            let errs = validate_signer_name("f", s);
            assert_eq!(errs.first().map(FieldError::reason), Some(reason), "{s}");
        }
        let long = format!("{}.com/x", "a".repeat(250));
        assert!(validate_signer_name("f", &long).iter().any(|e| e.reason() == "FieldValueTooLong"));
        let label_msg = &validate_signer_name("spec.signerName", "example/x")[0];
        assert_eq!(
            label_msg.to_string(),
            "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots"
        );
    }

    #[test]
    fn certificates() {
        assert!(validate_certificate(b"").is_ok());
        assert_eq!(
            validate_certificate(b"garbage"),
            Err("must contain at least one CERTIFICATE PEM block".into())
        );
        assert_eq!(
            validate_certificate(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err("only CERTIFICATE PEM blocks are allowed, found \"PRIVATE KEY\"".into())
        );
        assert_eq!(
            validate_certificate(
                b"-----BEGIN CERTIFICATE-----\nProc-Type: 4\n\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err("no PEM block headers are permitted".into())
        );
        assert!(
            validate_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn subdomain_names() {
        assert!(validate_subdomain_name("bootstrap-token-abcdef").is_empty());
        assert_eq!(validate_subdomain_name("Bad_Name")[0].reason(), "FieldValueInvalid");
        assert_eq!(validate_subdomain_name("")[0].reason(), "FieldValueRequired");
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    fn csr(signer: &str, conditions: Vec<(&str, &str)>, usages: &[&str]) -> Csr {
        let mut c = Csr::default();
        c.metadata.name = Some("c".into());
        c.spec.signer_name = signer.into();
        c.spec.usages = Some(usages.iter().map(|u| (*u).to_string()).collect());
        c.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .into_iter()
                    .map(|(t, reason)| Condition {
                        type_: t.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        ..Condition::default()
                    })
                    .collect(),
            ),
            certificate: None,
        });
        c
    }

    #[test]
    fn v9_modifying_an_approval_condition_outside_approval_is_forbidden() {
        let old = csr("example.com/x", vec![("Approved", "A")], &["client auth"]);
        let new = csr("example.com/x", vec![("Approved", "B")], &["client auth"]);
        let status = options(&new, Some(&old), Some(UpdatePath::Status));
        let errs = validate_update(&new, &old, &status);
        assert!(
            errs.iter()
                .any(|e| e.to_string().contains("updates may not modify a condition of type \"Approved\""))
        );
        let approval = options(&new, Some(&old), Some(UpdatePath::Approval));
        assert!(!validate_update(&new, &old, &approval).iter().any(|e| e.reason() == "FieldValueForbidden"));
    }

    #[test]
    fn v11_stored_violations_relax_the_rules() {
        let old = csr(
            LEGACY_SIGNER,
            vec![("Approved", "A"), ("Denied", "B"), ("Approved", "C"), ("", "D")],
            &["flying", "flying"],
        );
        let opts = options(&old, Some(&old), Some(UpdatePath::Main));
        assert!(opts.allow_legacy_signer);
        assert!(opts.allow_both_approved_and_denied);
        assert!(opts.allow_duplicate_condition_types);
        assert!(opts.allow_empty_condition_type);
        assert!(opts.allow_unknown_usages);
        assert!(opts.allow_duplicate_usages);
        assert!(opts.allow_arbitrary_certificate);
        let errs = validate_update(&old, &old, &opts);
        assert!(errs.iter().all(|e| e.field == "spec.request"), "{errs:?}");
        let fresh = options(&old, None, None);
        assert!(validate(&old, &fresh).len() > 5);
    }
}
