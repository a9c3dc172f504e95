//! Reading and writing the conditions of a CertificateSigningRequest (SPEC C-1, C-3, SG-2, SG-3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::Error;

/// Condition type set by whoever approves a request.
pub const CONDITION_APPROVED: &str = "Approved";
/// Condition type set by whoever denies a request.
pub const CONDITION_DENIED: &str = "Denied";
/// Condition type set by a signer that will not issue.
pub const CONDITION_FAILED: &str = "Failed";
/// Reason of the `Failed` condition a signer sets when validation fails (SPEC SG-3).
pub const REASON_SIGNER_VALIDATION_FAILURE: &str = "SignerValidationFailure";
/// Reason of the `Approved` condition of an automatic approval (SPEC AP-3).
pub const REASON_AUTO_APPROVED: &str = "AutoApproved";

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default()
}

fn has_condition_type(csr: &CertificateSigningRequest, type_: &str) -> bool {
    conditions(csr).iter().any(|c| c.type_ == type_)
}

/// Upstream's notion of approved (SPEC C-3): some condition has type `Approved` and none has
/// type `Denied`. The condition status is not examined.
pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    has_condition_type(csr, CONDITION_APPROVED) && !is_denied(csr)
}

/// Whether some condition has type `Denied` (status not examined, as upstream).
pub fn is_denied(csr: &CertificateSigningRequest) -> bool {
    has_condition_type(csr, CONDITION_DENIED)
}

/// Upstream's `HasTrueCondition` (SPEC C-3): a condition of this type whose status is `True` or
/// empty.
pub fn has_true_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    conditions(csr).iter().any(|c| c.type_ == type_ && (c.status == "True" || c.status.is_empty()))
}

/// Whether a signer gave up on the request: a `Failed` condition with status `True` or empty.
pub fn is_failed(csr: &CertificateSigningRequest) -> bool {
    has_true_condition(csr, CONDITION_FAILED)
}

/// Whether `status.certificate` is non-empty (SPEC C-1: nothing left to do).
pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty())
}

/// Whether the approver has already been answered (SPEC AP-1): a certificate is present, or an
/// `Approved` or `Denied` condition exists.
pub fn is_decided(csr: &CertificateSigningRequest) -> bool {
    is_issued(csr) || has_condition_type(csr, CONDITION_APPROVED) || is_denied(csr)
}

/// Still waiting for anyone: no certificate and no `Approved`, `Denied` or `Failed` condition.
/// This is what storm control counts.
pub fn is_pending(csr: &CertificateSigningRequest) -> bool {
    !is_decided(csr) && !has_condition_type(csr, CONDITION_FAILED)
}

/// Whether a signer for `signer_name` should act on `csr` (SPEC SG-2 and C-1): the signer name
/// matches, it is approved, no true `Failed` condition, and no certificate yet.
pub fn awaits_signature(csr: &CertificateSigningRequest, signer_name: &str) -> bool {
    csr.spec.signer_name == signer_name && is_approved(csr) && !is_failed(csr) && !is_issued(csr)
}

/// A Kubernetes timestamp for `at` (the API keeps whole seconds).
pub fn kube_time(at: SystemTime) -> Result<Time, Error> {
    let out_of_range = || Error::TimeOutOfRange(format!("{at:?}"));
    let seconds = at.duration_since(UNIX_EPOCH).map_err(|_| out_of_range())?.as_secs();
    let seconds = i64::try_from(seconds).map_err(|_| out_of_range())?;
    Timestamp::from_second(seconds).map(Time).map_err(|_| out_of_range())
}

/// The instant a Kubernetes timestamp names, if it is after 1970.
pub(crate) fn system_time(t: &Time) -> Option<SystemTime> {
    let seconds = u64::try_from(t.0.as_second()).ok()?;
    let nanos = u32::try_from(t.0.subsec_nanosecond()).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// A condition of the given type with status `True`, both timestamps `now`.
pub fn true_condition(
    type_: &str,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> Result<CertificateSigningRequestCondition, Error> {
    let now = kube_time(now)?;
    Ok(CertificateSigningRequestCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    use super::*;

    pub(crate) fn with_conditions(types: &[(&str, &str)]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(
                    types
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                certificate: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn approved_means_approved_and_not_denied_whatever_the_status() {
        assert!(is_approved(&with_conditions(&[("Approved", "False")])));
        assert!(!is_approved(&with_conditions(&[("Approved", "True"), ("Denied", "True")])));
        assert!(!is_approved(&with_conditions(&[])));
        assert!(!is_approved(&CertificateSigningRequest::default()));
    }

    #[test]
    fn true_condition_accepts_true_or_empty_status() {
        assert!(has_true_condition(&with_conditions(&[("Failed", "True")]), "Failed"));
        assert!(has_true_condition(&with_conditions(&[("Failed", "")]), "Failed"));
        assert!(!has_true_condition(&with_conditions(&[("Failed", "False")]), "Failed"));
    }

    #[test]
    fn signer_acts_only_on_approved_unfailed_unissued_requests_of_its_name() {
        let signer = "kubernetes.io/kubelet-serving";
        let mut csr = with_conditions(&[("Approved", "True")]);
        csr.spec.signer_name = signer.to_owned();
        assert!(awaits_signature(&csr, signer));
        assert!(!awaits_signature(&csr, "kubernetes.io/kube-apiserver-client"));

        let mut failed = with_conditions(&[("Approved", "True"), ("Failed", "True")]);
        failed.spec.signer_name = signer.to_owned();
        assert!(!awaits_signature(&failed, signer));

        let mut issued = csr.clone();
        if let Some(status) = issued.status.as_mut() {
            status.certificate = Some(ByteString(b"x".to_vec()));
        }
        assert!(!awaits_signature(&issued, signer));
        assert!(is_decided(&issued));
    }

    #[test]
    fn pending_means_no_decision_no_failure_no_certificate() {
        assert!(is_pending(&CertificateSigningRequest::default()));
        assert!(!is_pending(&with_conditions(&[("Failed", "True")])));
        assert!(!is_pending(&with_conditions(&[("Denied", "True")])));
    }

    #[test]
    fn conditions_carry_reason_message_and_both_timestamps() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let c = true_condition("Failed", REASON_SIGNER_VALIDATION_FAILURE, "nope", now).unwrap();
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("SignerValidationFailure"));
        assert_eq!(c.last_update_time, c.last_transition_time);
        assert_eq!(c.last_update_time.unwrap().0.as_second(), 1_700_000_000);
    }
}
