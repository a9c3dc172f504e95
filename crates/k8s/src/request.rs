//! Requesting a certificate and waiting for it (SPEC R-1…R-5, M-15).

use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kubecert_csr::{parse_certificates_pem, parse_csr_pem};

/// Why requesting or waiting for a certificate ended without one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused to create the CSR (the Status is kept in the source).
    #[error("cannot create certificate signing request: {0}")]
    Create(#[source] kube::Error),
    /// Reading back an existing CSR after a name conflict failed.
    #[error("cannot read existing certificate signing request {name:?}: {source}")]
    Get {
        /// The CSR.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// A CSR with our fixed name exists but was not made by us for this request (SPEC R-3).
    #[error("certificate signing request {name:?} already exists and cannot be reused: {why}")]
    Incompatible {
        /// The CSR.
        name: String,
        /// Which check failed.
        why: String,
    },
    /// The API answered with an object lacking a name or UID.
    #[error("the API returned a certificate signing request without {0}")]
    MissingMetadata(&'static str),
    /// An approver denied the CSR.
    #[error("certificate signing request {name:?} is denied, reason: {reason}, message: {message}")]
    Denied {
        /// The CSR.
        name: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The signer failed the CSR.
    #[error("certificate signing request {name:?} has failed, reason: {reason}, message: {message}")]
    Failed {
        /// The CSR.
        name: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The CSR was deleted while we waited.
    #[error("csr {0:?} was deleted")]
    Deleted(String),
    /// The CSR was deleted and re-created by someone else while we waited.
    #[error("csr {0:?} changed UIDs")]
    ChangedUid(String),
    /// Nothing decisive happened within the time limit.
    #[error("timed out after {timeout:?} waiting for certificate signing request {name:?}")]
    Timeout {
        /// The CSR.
        name: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A CSR the API accepted (or one of ours it already had).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: waiting stops if the name comes to mean another object.
    pub uid: String,
}

/// Creates `csr` (SPEC ). When it has a fixed name and that name is taken, the existing
/// object is reused if it is the same request from the same key and not expired (SPEC R-3): a
/// node restarted during bootstrap finds its own pending CSR instead of making another.
pub async fn request_certificate(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    now: SystemTime,
) -> Result<Requested, Error> {
    let created = match api.create(&PostParams::default(), csr).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.is_already_exists() && csr.metadata.name.is_some() => {
            let name = csr.metadata.name.clone().unwrap_or_default();
            let existing =
                api.get(&name).await.map_err(|source| Error::Get { name: name.clone(), source })?;
            check_reusable(&existing, csr, now).map_err(|why| Error::Incompatible { name, why })?;
            existing
        }
        Err(e) => return Err(Error::Create(e)),
    };
    requested(&created)
}

fn requested(csr: &CertificateSigningRequest) -> Result<Requested, Error> {
    Ok(Requested {
        name: csr.metadata.name.clone().ok_or(Error::MissingMetadata("a name"))?,
        uid: csr.metadata.uid.clone().ok_or(Error::MissingMetadata("a uid"))?,
    })
}

/// Whether `existing` is our own earlier submission of `ours` (SPEC R-3): same subject, same
/// signer when both name one, signed by our key, and any certificate it carries not expired.
pub fn check_reusable(
    existing: &CertificateSigningRequest,
    ours: &CertificateSigningRequest,
    now: SystemTime,
) -> Result<(), String> {
    let parse = |csr: &CertificateSigningRequest, whose: &str| {
        parse_csr_pem(&csr.spec.request.0).map_err(|e| format!("{whose} request does not parse: {e}"))
    };
    let (theirs, mine) = (parse(existing, "its")?, parse(ours, "our")?);
    if theirs.subject.der != mine.subject.der {
        return Err("it requests another subject".into());
    }
    let (a, b) = (&existing.spec.signer_name, &ours.spec.signer_name);
    if !a.is_empty() && !b.is_empty() && a != b {
        return Err(format!("it names signer {a:?}, we asked {b:?}"));
    }
    if theirs.public_key.spki_der != mine.public_key.spki_der {
        return Err("it was signed by another key".into());
    }
    if let Some(issued) = issued_certificate(existing) {
        let certs =
            parse_certificates_pem(issued).map_err(|e| format!("its certificate does not parse: {e}"))?;
        if certs.iter().any(|c| c.is_expired_at(now)) {
            return Err("its certificate has expired".into());
        }
    }
    Ok(())
}

fn issued_certificate(csr: &CertificateSigningRequest) -> Option<&[u8]> {
    let cert = &csr.status.as_ref()?.certificate.as_ref()?.0;
    (!cert.is_empty()).then_some(cert.as_slice())
}

/// What one observed state of the CSR means for the waiter (SPEC R-5): the certificate, an
/// error that ends the wait, or `None` to keep waiting (pending, or approved but not issued).
pub fn evaluate(csr: &CertificateSigningRequest, expected: &Requested) -> Result<Option<Vec<u8>>, Error> {
    if csr.metadata.uid.as_deref() != Some(expected.uid.as_str()) {
        return Err(Error::ChangedUid(expected.name.clone()));
    }
    let conditions = csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let details = |c: &k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition| {
        (expected.name.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())
    };
    if let Some(c) = conditions.iter().find(|c| c.type_ == "Denied") {
        let (name, reason, message) = details(c);
        return Err(Error::Denied { name, reason, message });
    }
    if let Some(c) = conditions.iter().find(|c| c.type_ == "Failed") {
        let (name, reason, message) = details(c);
        return Err(Error::Failed { name, reason, message });
    }
    let approved = conditions.iter().any(|c| c.type_ == "Approved");
    Ok(issued_certificate(csr).filter(|_| approved).map(<[u8]>::to_vec))
}

/// Waits until the CSR is issued (returns the certificate PEM bytes), denied, failed, deleted
/// or replaced, or until `timeout` (SPEC R-4: list, then watch by `metadata.name`; API errors
/// are retried with backoff until the time limit).
pub async fn wait_for_certificate(
    api: Api<CertificateSigningRequest>,
    requested: &Requested,
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let selector = format!("metadata.name={}", requested.name);
    let events = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    let wait = async {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr)) => {
                    if let Some(certificate) = evaluate(&csr, requested)? {
                        return Ok(certificate);
                    }
                }
                Ok(watcher::Event::Delete(_)) => return Err(Error::Deleted(requested.name.clone())),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => tracing::debug!(csr = %requested.name, error = %e, "watching CSR; retrying"),
            }
        }
        Err(Error::Timeout { name: requested.name.clone(), timeout })
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| Err(Error::Timeout { name: requested.name.clone(), timeout }))
}

/// Whether a failed create still shows a healthy API server (SPEC M-15): it answered as an API
/// server would (401, 403 or 404). Anything else (a proxy's error page, a refused connection)
/// counts as unhealthy. The node agent exits after its client certificate has been missing for a
/// while only when the server is healthy (SPEC T-3), so that a supervisor restarts it into
/// bootstrap rather than looping while the network is down.
pub fn server_healthy_after(error: &Error) -> bool {
    match error {
        Error::Create(kube::Error::Api(status)) => matches!(status.code, 401 | 403 | 404),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use kube::core::Status;
    use kubecert_csr::{
        CertificateTemplate, CsrName, KeyAlgorithm, KeyUsage, PrivateKey,
        SIGNER_KUBE_APISERVER_CLIENT_KUBELET, build_csr_pem, csr_object,
    };

    use super::*;

    fn csr_for(key: &PrivateKey, node: &str) -> CertificateSigningRequest {
        let pem = build_csr_pem(&CertificateTemplate::node_client(node), key).unwrap();
        let usages = [KeyUsage::DigitalSignature, KeyUsage::ClientAuth];
        let mut csr = csr_object(
            CsrName::Fixed("node-csr-x".into()),
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            &pem,
            &usages,
            None,
        );
        csr.metadata.uid = Some("uid-1".into());
        csr
    }

    fn condition(type_: &str, reason: &str) -> CertificateSigningRequestCondition {
        CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(format!("{reason} message")),
            ..Default::default()
        }
    }

    fn with_status(
        mut csr: CertificateSigningRequest,
        conditions: Vec<CertificateSigningRequestCondition>,
        cert: &[u8],
    ) -> CertificateSigningRequest {
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(conditions),
            certificate: Some(ByteString(cert.to_vec())),
        });
        csr
    }

    fn expected() -> Requested {
        Requested { name: "node-csr-x".into(), uid: "uid-1".into() }
    }

    #[test]
    fn pending_and_approved_without_certificate_keep_waiting() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = csr_for(&key, "n");
        assert_eq!(evaluate(&csr, &expected()).unwrap(), None);
        let approved = with_status(csr.clone(), vec![condition("Approved", "AutoApproved")], b"");
        assert_eq!(evaluate(&approved, &expected()).unwrap(), None);
        // A certificate without approval is not accepted either.
        let unapproved = with_status(csr, vec![], b"CERT");
        assert_eq!(evaluate(&unapproved, &expected()).unwrap(), None);
    }

    #[test]
    fn approved_and_issued_returns_the_certificate() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = with_status(csr_for(&key, "n"), vec![condition("Approved", "AutoApproved")], b"CERT");
        assert_eq!(evaluate(&issued, &expected()).unwrap().as_deref(), Some(&b"CERT"[..]));
    }

    #[test]
    fn denied_failed_and_replaced_end_the_wait_with_their_reason() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = csr_for(&key, "n");
        let denied = with_status(csr.clone(), vec![condition("Denied", "SANNotAllowed")], b"");
        let err = evaluate(&denied, &expected()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate signing request \"node-csr-x\" is denied, reason: SANNotAllowed, message: SANNotAllowed message"
        );
        let failed = with_status(csr.clone(), vec![condition("Failed", "SignerValidationFailure")], b"");
        assert!(
            matches!(evaluate(&failed, &expected()), Err(Error::Failed { reason, .. }) if reason == "SignerValidationFailure")
        );
        // Denied wins even next to an Approved condition and a certificate.
        let both =
            with_status(csr.clone(), vec![condition("Approved", "A"), condition("Denied", "D")], b"CERT");
        assert!(matches!(evaluate(&both, &expected()), Err(Error::Denied { .. })));
        let mut replaced = csr;
        replaced.metadata.uid = Some("uid-2".into());
        assert_eq!(
            evaluate(&replaced, &expected()).unwrap_err().to_string(),
            "csr \"node-csr-x\" changed UIDs"
        );
    }

    #[test]
    fn our_own_pending_request_is_reusable() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ours = csr_for(&key, "n");
        // The server's copy may lose our signer name in an old API; still ours.
        let mut existing = ours.clone();
        existing.spec.signer_name = String::new();
        assert_eq!(check_reusable(&existing, &ours, SystemTime::now()), Ok(()));
    }

    #[test]
    fn someone_elses_request_is_not_reusable() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ours = csr_for(&key, "n");
        let now = SystemTime::now();
        let why = |existing: &CertificateSigningRequest| check_reusable(existing, &ours, now).unwrap_err();
        assert_eq!(why(&csr_for(&other_key, "n")), "it was signed by another key");
        assert_eq!(why(&csr_for(&key, "m")), "it requests another subject");
        let mut other_signer = ours.clone();
        other_signer.spec.signer_name = "example.com/other".into();
        assert!(why(&other_signer).starts_with("it names signer \"example.com/other\""));
        let mut garbage = ours.clone();
        garbage.spec.request = ByteString(b"not a csr".to_vec());
        assert!(why(&garbage).starts_with("its request does not parse"));
    }

    #[test]
    fn an_issued_but_expired_request_is_not_reusable() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ours = csr_for(&key, "n");
        let mut params = cert_params_from_1999();
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(key.rcgen_key_pair()).unwrap().pem();
        let existing = with_status(ours.clone(), vec![condition("Approved", "A")], cert.as_bytes());
        assert_eq!(
            check_reusable(&existing, &ours, SystemTime::now()).unwrap_err(),
            "its certificate has expired"
        );
        let now_2000 = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(check_reusable(&existing, &ours, now_2000), Ok(()));
    }

    fn cert_params_from_1999() -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(1999, 1, 1);
        params
    }

    #[test]
    fn only_api_answers_count_as_a_healthy_server() {
        let api = |code| Error::Create(kube::Error::Api(Status::failure("x", "y").with_code(code).boxed()));
        for code in [401, 403, 404] {
            assert!(server_healthy_after(&api(code)), "{code}");
        }
        for code in [409, 422, 500, 503] {
            assert!(!server_healthy_after(&api(code)), "{code}");
        }
        assert!(!server_healthy_after(&Error::Deleted("x".into())));
    }
}
