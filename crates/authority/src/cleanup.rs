//! Which CertificateSigningRequests the cleaner deletes (SPEC CL-1).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{CONDITION_APPROVED, CONDITION_DENIED, CONDITION_FAILED, is_issued, system_time};

/// How long an approved and issued request is kept after approval.
pub const APPROVED_RETENTION: Duration = Duration::from_secs(60 * 60);
/// How long a denied request is kept.
pub const DENIED_RETENTION: Duration = Duration::from_secs(60 * 60);
/// How long a failed request is kept.
pub const FAILED_RETENTION: Duration = Duration::from_secs(60 * 60);
/// How long a request without any condition is kept.
pub const PENDING_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the cleaner runs (the first run is at start).
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Why a request is due for deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupReason {
    /// Approved and issued, approved more than an hour ago.
    Issued,
    /// Denied more than an hour ago.
    Denied,
    /// Failed more than an hour ago.
    Failed,
    /// No condition at all, created more than a day ago.
    Pending,
    /// Approved and issued, and the (first) issued certificate has expired.
    CertificateExpired,
}

impl fmt::Display for CleanupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupReason::Issued => "approved and issued more than 1h ago",
            CleanupReason::Denied => "denied more than 1h ago",
            CleanupReason::Failed => "failed more than 1h ago",
            CleanupReason::Pending => "pending for more than 24h",
            CleanupReason::CertificateExpired => "its certificate has expired",
        })
    }
}

/// Whether the cleaner deletes `csr` at `now`, and why (SPEC CL-1, checked in upstream's order).
/// Missing or zero timestamps never count as old; a certificate that does not parse does not
/// count as expired.
pub fn cleanup_reason(csr: &CertificateSigningRequest, now: SystemTime) -> Option<CleanupReason> {
    let conditions = csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let updated_before = |type_: &str, retention: Duration| {
        conditions
            .iter()
            .filter(|c| c.type_ == type_)
            .any(|c| is_older_than(c.last_update_time.as_ref(), retention, now))
    };
    let issued = is_issued(csr);
    if issued && updated_before(CONDITION_APPROVED, APPROVED_RETENTION) {
        return Some(CleanupReason::Issued);
    }
    if updated_before(CONDITION_DENIED, DENIED_RETENTION) {
        return Some(CleanupReason::Denied);
    }
    if updated_before(CONDITION_FAILED, FAILED_RETENTION) {
        return Some(CleanupReason::Failed);
    }
    if conditions.is_empty()
        && is_older_than(csr.metadata.creation_timestamp.as_ref(), PENDING_RETENTION, now)
    {
        return Some(CleanupReason::Pending);
    }
    let approved = conditions.iter().any(|c| c.type_ == CONDITION_APPROVED);
    if approved && issued && certificate_expired(csr, now) {
        return Some(CleanupReason::CertificateExpired);
    }
    None
}

fn is_older_than(at: Option<&Time>, age: Duration, now: SystemTime) -> bool {
    let Some(at) = at else { return false };
    // Zero (the epoch) and earlier never count, as upstream ignores zero timestamps.
    system_time(at).filter(|at| *at > UNIX_EPOCH).is_some_and(|at| at + age < now)
}

fn certificate_expired(csr: &CertificateSigningRequest, now: SystemTime) -> bool {
    let Some(pem) = csr.status.as_ref().and_then(|s| s.certificate.as_ref()) else { return false };
    kubecert_csr::parse_certificates_pem(&pem.0)
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .is_some_and(|cert| cert.not_after < now)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn time(secs: u64) -> Time {
        Time(Timestamp::from_second(secs as i64).unwrap())
    }

    fn csr(
        conditions: &[(&str, u64)],
        certificate: Option<&[u8]>,
        created: Option<u64>,
    ) -> CertificateSigningRequest {
        let mut csr = CertificateSigningRequest::default();
        csr.metadata.creation_timestamp = created.map(time);
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(t, updated)| CertificateSigningRequestCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        last_update_time: Some(time(*updated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            certificate: certificate.map(|c| ByteString(c.to_vec())),
        });
        csr
    }

    #[test]
    fn retention_periods_per_state() {
        let now = at(T0 + 3601);
        assert_eq!(
            cleanup_reason(&csr(&[("Approved", T0)], Some(b"junk"), None), now),
            Some(CleanupReason::Issued)
        );
        assert_eq!(cleanup_reason(&csr(&[("Approved", T0)], None, None), now), None, "approved, not issued");
        assert_eq!(cleanup_reason(&csr(&[("Denied", T0)], None, None), now), Some(CleanupReason::Denied));
        assert_eq!(cleanup_reason(&csr(&[("Failed", T0)], None, None), now), Some(CleanupReason::Failed));
        assert_eq!(cleanup_reason(&csr(&[("Denied", T0)], None, None), at(T0 + 3599)), None);
        assert_eq!(cleanup_reason(&csr(&[], None, Some(T0)), at(T0 + 86_401)), Some(CleanupReason::Pending));
        assert_eq!(cleanup_reason(&csr(&[], None, Some(T0)), at(T0 + 86_399)), None);
    }

    #[test]
    fn zero_or_missing_timestamps_never_count_as_old() {
        let now = at(T0);
        assert_eq!(cleanup_reason(&csr(&[("Denied", 0)], None, None), now), None);
        assert_eq!(cleanup_reason(&csr(&[], None, None), now), None);
        let mut no_time = csr(&[("Denied", T0)], None, None);
        if let Some(c) = no_time.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].last_update_time = None;
        }
        assert_eq!(cleanup_reason(&no_time, at(T0 + 10 * 3600)), None);
    }

    #[test]
    fn expired_certificate_is_cleaned_at_once_and_garbage_is_not_expired() {
        let ca = crate::CertificateAuthority::generate("test", at(T0), &aws_lc_rs::rand::SystemRandom::new())
            .unwrap();
        let pem = ca.certificate_pem().as_bytes();
        let fresh = csr(&[("Approved", T0)], Some(pem), None);
        assert_eq!(cleanup_reason(&fresh, at(T0 + 60)), None);
        assert_eq!(
            cleanup_reason(&fresh, ca.certificate().not_after + Duration::from_secs(1)),
            Some(CleanupReason::Issued),
            "the approval-age rule comes first"
        );
        let recent = csr(&[("Approved", T0 + 20 * 365 * 86_400)], Some(pem), None);
        assert_eq!(
            cleanup_reason(&recent, at(T0 + 20 * 365 * 86_400 + 60)),
            Some(CleanupReason::CertificateExpired)
        );
        let garbage = csr(&[("Approved", T0 + 20 * 365 * 86_400)], Some(b"garbage"), None);
        assert_eq!(cleanup_reason(&garbage, at(T0 + 20 * 365 * 86_400 + 60)), None);
    }
}
