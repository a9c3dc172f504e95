//! The signer's decision for one approved request (SPEC SG-2…SG-6), without the API calls.

use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};

use crate::Error;
use crate::authority::SignerAuthorities;
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

/// Signs approved requests for the signer names that have a CA.
#[derive(Clone, Debug)]
pub struct Signer {
    authorities: SignerAuthorities,
    policy: IssuancePolicy,
}

impl Signer {
    /// A signer with these CAs and lifetime rules.
    pub fn new(authorities: SignerAuthorities, policy: IssuancePolicy) -> Self {
        Self { authorities, policy }
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
        let info = match kubecert_csr::parse_csr_pem(&spec.request.0) {
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
        ca.issue(&validated, spec.expiration_seconds, &self.policy, now, rng)
            .map(|issued| SignOutcome::Issued(Box::new(issued)))
    }
}
