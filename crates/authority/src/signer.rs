//! The signer's decision for one approved request (SPEC SG-2…SG-6), without the API calls.

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};

use crate::Error;
use crate::authority::{CertificateAuthority, SignerAuthorities};
use crate::conditions::{
    CONDITION_FAILED, REASON_SIGNER_VALIDATION_FAILURE, awaits_signature, true_condition,
};
use crate::issue::{IssuancePolicy, IssuedCertificate, Randomness};
use crate::validation::{FailureKind, ValidationFailure, validate_for_signer};

/// What signing an approved request came to.
#[derive(Clone, Debug)]
pub enum SignOutcome {
    /// Store [`IssuedCertificate::pem`] in `status.certificate` (SPEC SG-6).
    Issued(Box<IssuedCertificate>),
    /// The request fails its signer's validation: append [`SignOutcome::failed_condition`] and do
    /// not retry (SPEC SG-3).
    Rejected(ValidationFailure),
}

impl SignOutcome {
    /// For [`SignOutcome::Rejected`]: the `Failed` condition, reason `SignerValidationFailure`,
    /// the validation message as message.
    pub fn failed_condition(
        &self,
        now: SystemTime,
    ) -> Result<Option<CertificateSigningRequestCondition>, Error> {
        match self {
            SignOutcome::Issued(_) => Ok(None),
            SignOutcome::Rejected(failure) => {
                true_condition(CONDITION_FAILED, REASON_SIGNER_VALIDATION_FAILURE, failure.message(), now)
                    .map(Some)
            }
        }
    }
}

/// Where a signer records what it issued, before the certificate is handed out: the latest
/// NotAfter per signing key tells when that key's last leaf expires (a CA generation may retire
/// only then). A failure to record fails the signing attempt, which is retried.
pub trait IssuanceLedger: Send + Sync {
    /// Records that `ca` issued a certificate valid until `not_after`.
    fn record(&self, ca: &CertificateAuthority, not_after: SystemTime) -> Result<(), String>;
}

/// Signs approved requests for the signer names that have a CA.
#[derive(Clone)]
pub struct Signer {
    authorities: SignerAuthorities,
    policy: IssuancePolicy,
    ledger: Option<Arc<dyn IssuanceLedger>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("authorities", &self.authorities)
            .field("policy", &self.policy)
            .field("ledger", &self.ledger.is_some())
            .finish()
    }
}

impl Signer {
    /// A signer with these CAs and lifetime rules.
    pub fn new(authorities: SignerAuthorities, policy: IssuancePolicy) -> Self {
        Self { authorities, policy, ledger: None }
    }

    /// This signer, recording every issued certificate in `ledger` before handing it out.
    pub fn with_ledger(mut self, ledger: Arc<dyn IssuanceLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The CAs.
    pub fn authorities(&self) -> &SignerAuthorities {
        &self.authorities
    }

    /// The lifetime rules.
    pub fn policy(&self) -> &IssuancePolicy {
        &self.policy
    }

    /// Whether this signer should sign `csr` now (SPEC SG-2, C-1): it has a CA for the signer
    /// name, the request is approved, has no true `Failed` condition and no certificate.
    pub fn should_sign(&self, csr: &CertificateSigningRequest) -> bool {
        self.authorities.get(&csr.spec.signer_name).is_some() && awaits_signature(csr, &csr.spec.signer_name)
    }

    /// Signs an approved request: parses `spec.request` (verifying its self-signature again),
    /// validates it for its signer name (SPEC SG-3), and issues (SPEC SG-4…SG-6).
    ///
    /// A request that cannot be signed on its merits gives [`SignOutcome::Rejected`], including
    /// one that does not parse (upstream would retry such a request forever; the API server
    /// never stores one). `Err` is for what may heal: no CA for the signer name, an expired CA, a
    /// failing random source. This does not check approval: call [`Signer::should_sign`] first.
    pub fn sign(
        &self,
        csr: &CertificateSigningRequest,
        now: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<SignOutcome, Error> {
        let spec = &csr.spec;
        let ca = self.authorities.get(&spec.signer_name).ok_or_else(|| Error::CaMaterial {
            signer: Some(spec.signer_name.clone()),
            detail: "no CA is configured for this signer name".to_owned(),
        })?;
        let info = match kubecert_csr::parse_csr_pem_once(&spec.request.0) {
            Ok(info) => info,
            Err(e) => {
                let failure =
                    ValidationFailure::new(FailureKind::Request, format!("unable to parse csr: {e}"));
                return Ok(SignOutcome::Rejected(failure));
            }
        };
        let validated =
            match validate_for_signer(&spec.signer_name, &info, spec.usages.as_deref().unwrap_or_default()) {
                Ok(validated) => validated,
                Err(failure) => return Ok(SignOutcome::Rejected(failure)),
            };
        let issued = ca.issue(&validated, spec.expiration_seconds, &self.policy, now, rng)?;
        if let Some(ledger) = &self.ledger {
            ledger.record(ca, issued.not_after()).map_err(Error::Ledger)?;
        }
        Ok(SignOutcome::Issued(Box::new(issued)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use kubecert_csr::{SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING};

    use super::*;
    use crate::conditions::tests::with_conditions;
    use crate::test_support::{node_client, object};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn signer(signers: &[&str]) -> Signer {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let cas = signers
            .iter()
            .map(|s| (s.to_string(), CertificateAuthority::generate("ca", at(T0), &rng).unwrap()));
        Signer::new(SignerAuthorities::per_signer(cas).unwrap(), IssuancePolicy::default())
    }

    fn approved(signer_name: &str, pem: &str, usages: &[&str]) -> CertificateSigningRequest {
        let mut csr = object(signer_name, pem, usages, "system:node:a", &["system:nodes"]);
        csr.status = with_conditions(&[("Approved", "True")]).status;
        csr
    }

    #[test]
    fn signs_only_approved_requests_of_signers_it_has_a_ca_for() {
        let signer = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET]);
        let pem = node_client("a").pem();
        let usages = ["digital signature", "client auth"];
        assert!(signer.should_sign(&approved(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages)));
        assert!(!signer.should_sign(&approved(SIGNER_KUBELET_SERVING, &pem, &usages)), "no CA for it");
        let pending = object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, "system:node:a", &[]);
        assert!(!signer.should_sign(&pending));
        let err = signer.sign(
            &approved(SIGNER_KUBELET_SERVING, &pem, &usages),
            at(T0),
            &aws_lc_rs::rand::SystemRandom::new(),
        );
        assert!(err.unwrap_err().to_string().contains("no CA is configured"));
    }

    #[test]
    fn issues_valid_requests_and_fails_invalid_ones_without_retry() {
        let signer = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET]);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pem = node_client("a").pem();
        let mut csr =
            approved(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &["digital signature", "client auth"]);
        csr.spec.expiration_seconds = Some(3600);
        let outcome = signer.sign(&csr, at(T0 + 60), &rng).unwrap();
        assert_eq!(outcome.failed_condition(at(T0)).unwrap(), None);
        let SignOutcome::Issued(issued) = outcome else { panic!("{outcome:?}") };
        assert_eq!(issued.not_after(), at(T0 + 60 + 3600));

        let wrong =
            approved(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &["digital signature", "server auth"]);
        let outcome = signer.sign(&wrong, at(T0 + 60), &rng).unwrap();
        let condition = outcome.failed_condition(at(T0 + 60)).unwrap().unwrap();
        assert_eq!(condition.type_, "Failed");
        assert_eq!(condition.reason.as_deref(), Some("SignerValidationFailure"));
        assert_eq!(
            condition.message.as_deref(),
            Some("usages did not match [client auth digital signature key encipherment]")
        );

        let garbage = approved(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, "not a pem", &["client auth"]);
        let SignOutcome::Rejected(failure) = signer.sign(&garbage, at(T0 + 60), &rng).unwrap() else {
            panic!()
        };
        assert_eq!(failure.kind(), FailureKind::Request);
        assert!(failure.message().starts_with("unable to parse csr: "), "{failure}");
    }

    #[test]
    fn ml_dsa_keys_are_never_signed_for_kubernetes_signers_even_when_approved_by_hand() {
        let signer = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET]);
        let pem = crate::policy::tests::ml_dsa_pem("system:nodes", "system:node:a");
        let csr = approved(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &["digital signature", "client auth"]);
        assert!(signer.should_sign(&csr));
        let outcome = signer.sign(&csr, at(T0), &aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let condition = outcome.failed_condition(at(T0)).unwrap().unwrap();
        assert_eq!(condition.type_, "Failed");
        assert_eq!(condition.reason.as_deref(), Some("SignerValidationFailure"));
        let message = condition.message.unwrap();
        assert!(
            message.starts_with(
                "ML-DSA-65 keys are not certified by kubernetes.io/kube-apiserver-client-kubelet: \
                 the Kubernetes components"
            ),
            "{message}"
        );
    }

    #[derive(Default)]
    struct Ledger {
        records: std::sync::Mutex<Vec<SystemTime>>,
        fail: bool,
    }

    impl IssuanceLedger for Ledger {
        fn record(&self, _: &CertificateAuthority, not_after: SystemTime) -> Result<(), String> {
            if self.fail {
                return Err("disk full".into());
            }
            self.records.lock().unwrap().push(not_after);
            Ok(())
        }
    }

    #[test]
    fn issued_certificates_are_recorded_first_and_a_failed_record_fails_the_attempt() {
        let csr = approved(
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            &node_client("a").pem(),
            &["digital signature", "client auth"],
        );
        let ledger = Arc::new(Ledger::default());
        let recording = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET]).with_ledger(ledger.clone());
        let SignOutcome::Issued(issued) =
            recording.sign(&csr, at(T0 + 60), &aws_lc_rs::rand::SystemRandom::new()).unwrap()
        else {
            panic!()
        };
        assert_eq!(*ledger.records.lock().unwrap(), [issued.not_after()]);

        let failing = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET])
            .with_ledger(Arc::new(Ledger { fail: true, ..Ledger::default() }));
        let err = failing.sign(&csr, at(T0 + 60), &aws_lc_rs::rand::SystemRandom::new()).unwrap_err();
        assert_eq!(err.to_string(), "recording the issued certificate: disk full");
    }

    #[test]
    fn an_expired_ca_is_an_error_to_retry_not_a_failure() {
        let signer = signer(&[SIGNER_KUBE_APISERVER_CLIENT_KUBELET]);
        let csr = approved(
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            &node_client("a").pem(),
            &["digital signature", "client auth"],
        );
        let late = at(T0) + crate::GENERATED_CA_LIFETIME;
        let result = signer.sign(&csr, late, &aws_lc_rs::rand::SystemRandom::new());
        assert!(matches!(result, Err(Error::CaExpired { .. })), "{result:?}");
    }
}
