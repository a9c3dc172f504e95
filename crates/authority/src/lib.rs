//! Approval policy for Kubernetes CertificateSigningRequests, and issuing certificates for them
//! with a CA: the decisions of kube-controller-manager's `csrapproving`, `csrsigning` and
//! `csrcleaner` controllers, as pure functions.
//!
//! What this crate owns:
//!
//! - upstream's recognizers and validity rules with upstream's messages ([`recognize`],
//!   [`validate_for_signer`], SPEC AP-1…AP-4 and SG-3) and the condition helpers of SPEC C-3
//!   ([`is_approved`], [`has_true_condition`], …);
//! - a configurable [`Policy`] that goes further than upstream: explicit [`Decision::Deny`] with a
//!   machine-readable [`DenyReason`] where upstream silently ignores, SAN checks for serving
//!   certificates (allowed domains and networks, the Node's addresses), key rules, and a cap on
//!   pending requests per requester (storm control). Nothing outside the policy is approved;
//! - issuing (SPEC SG-4…SG-6): lifetime clamp, backdate, random serial, only the subject, SANs
//!   and public key of the request, CA:FALSE, usages from `spec.usages`, key identifiers, NotAfter
//!   capped at the CA's ([`CertificateAuthority::issue`], [`Signer`]);
//! - CA material from bytes, one CA for all signers or one per signer ([`SignerAuthorities`],
//!   SPEC SG-1), a [`MaterialFingerprint`] to notice changed files, and a fresh self-signed CA for
//!   a first start ([`CertificateAuthority::generate`]);
//! - which requests the cleaner deletes ([`cleanup_reason`], SPEC CL-1);
//! - whether a node may recover with its expired certificate's key ([`decide_recovery`]: the
//!   window, the deny list, same identity, a per-node rate limit).
//! - CA generations for rolling the CA with overlap ([`CaGenerations`]): the phases, the
//!   preconditions of each step, the automatic schedule, which chain goes with a leaf; a
//!   successor CA with its cross-certificate ([`CertificateAuthority::successor`]); and the
//!   [`IssuanceLedger`] seam through which a signer records what each key issued.
//!
//! What it does not do: no API calls (SubjectAccessReviews are described by [`AccessReview`] and
//! answered by the caller), no files (the signer binary reads and watches CA files), no clock
//! (every function takes `now`) and no hidden randomness for serial numbers (a [`Randomness`]
//! is passed in). The controllers that apply these decisions live with the kube-rs glue.
//!
//! A typical approver step:
//!
//! ```no_run
//! # use kubecert_authority::*;
//! # fn step(csr: &k8s_openapi::api::certificates::v1::CertificateSigningRequest) -> Result<(), Error> {
//! let policy = Policy::new(PolicyConfig::default())?;
//! let decision = match policy.evaluate(&ApprovalRequest::new(csr)) {
//!     Evaluation::Decided(decision) => decision,
//!     // Create each review's `to_subject_access_review()` through the API, then:
//!     Evaluation::NeedsAccessReview(pending) => pending.finish(|review| false /* status.allowed */),
//! };
//! if let Some(condition) = decision.condition(std::time::SystemTime::now())? {
//!     // append it and PUT /approval
//! }
//! # Ok(()) }
//! ```

mod authority;
mod cleanup;
mod conditions;
mod config;
mod error;
mod generations;
mod issue;
mod policy;
mod recognize;
mod recovery;
mod signer;
mod subject;
#[cfg(test)]
mod test_support;
mod usages;
mod validation;

pub use authority::{
    CA_SIGNERS, CertificateAuthority, GENERATED_CA_LIFETIME, MaterialFingerprint, SignerAuthorities,
};
pub use cleanup::{
    APPROVED_RETENTION, CLEANUP_INTERVAL, CleanupReason, DENIED_RETENTION, FAILED_RETENTION,
    PENDING_RETENTION, cleanup_reason,
};
pub use conditions::{
    CONDITION_APPROVED, CONDITION_DENIED, CONDITION_FAILED, REASON_AUTO_APPROVED,
    REASON_SIGNER_VALIDATION_FAILURE, awaits_signature, has_true_condition, is_approved, is_decided,
    is_denied, is_issued, is_pending, kube_time, true_condition,
};
pub use config::{KeyType, POLICY_SIGNERS, PolicyConfig, SignerPolicy};
pub use error::Error;
pub use generations::{
    ActivationRules, CaGenerations, DEFAULT_ACTIVATE_AT, DEFAULT_PREPARE_AT, Generation, Phase, PhaseTimes,
    PreparePlan, Schedule, SigningChain, Step, Transition, TrustingShare, from_unix_seconds, unix_seconds,
};
pub use issue::{
    DEFAULT_BACKDATE, DEFAULT_TTL, IssuancePolicy, IssuedCertificate, MIN_DURATION, Randomness,
    SHORT_LIVED_THRESHOLD, Validity,
};
pub use policy::{
    ApprovalRequest, Decision, DenyReason, Evaluation, IgnoreReason, PendingApproval, Policy, pending_before,
    requesting_node,
};
pub use recognize::{AccessReview, Recognized, recognize};
pub use recovery::{
    DenyList, RecoveryAttempts, RecoveryPolicy, RecoveryRefusal, decide_recovery, node_name, normalize_serial,
};
pub use signer::{IssuanceLedger, SignOutcome, Signer};
pub use validation::{FailureKind, ValidatedRequest, ValidationFailure, validate_for_signer};
