//! The approval policy: upstream's auto-approver (SPEC AP-1…AP-4) plus explicit denials, SAN
//! checks for serving certificates, key rules and storm control.
//!
//! Evaluation order (first hit wins):
//!
//! 1. already approved, denied or issued → ignore (SPEC AP-1); no rules for the signer name, or
//!    its policy disabled → ignore;
//! 2. `spec.request` larger than `max_request_bytes` → `RequestTooLarge`;
//! 3. storm control: too many older pending requests from the requester → `TooManyPendingRequests`;
//! 4. the request does not parse or its signature does not verify → `InvalidRequest`;
//! 5. the signer's validation (SPEC SG-3, upstream messages) → `SubjectNotAllowed`,
//!    `SANNotAllowed` or `UsagesNotAllowed`;
//! 6. hardening beyond upstream: duplicate usages, too many SANs, key type and size, `key
//!    encipherment` for non-RSA keys (if configured), a requested `CA:TRUE`, and
//!    `system:masters` through `kubernetes.io/kube-apiserver-client` (upstream's admission rule);
//! 7. `auto_approve` off → ignore (a human may approve);
//! 8. the signer's approval rules: SubjectAccessReviews for kubelet client certificates, the
//!    requester and SAN rules for serving certificates, allow-lists for generic clients.
//!
//! Steps 2–6 and the rule checks of step 8 are *violations*: denied when `deny_violations` is on
//! (the default), otherwise left pending like upstream. Steps 2–6 apply even when auto-approval
//! is off: they catch requests no signer here would issue, or that no one should approve. Nothing
//! is approved unless every step passed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use ipnet::IpNet;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use kubecert_csr::{
    CsrInfo, NODE_GROUP, NODE_USER_PREFIX, PublicKeyAlgorithm, SIGNER_KUBE_APISERVER_CLIENT,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING,
};

use crate::Error;
use crate::conditions::{
    CONDITION_APPROVED, CONDITION_DENIED, REASON_AUTO_APPROVED, is_decided, is_pending, true_condition,
};
use crate::config::{KeyType, POLICY_SIGNERS, PolicyConfig, SignerPolicy};
use crate::recognize::AccessReview;
use crate::usages::first_duplicate;
use crate::validation::{FailureKind, ValidatedRequest, ml_dsa_for_kubernetes, validate_for_signer};

/// Machine-readable reason of a `Denied` condition written by this policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    /// `spec.request` is not a PEM `CERTIFICATE REQUEST`, does not parse, or its self-signature
    /// does not verify.
    InvalidRequest,
    /// `spec.request` is larger than `max_request_bytes`.
    RequestTooLarge,
    /// The requester already has `max_pending_per_requester` older requests pending for this
    /// signer (storm control).
    TooManyPendingRequests,
    /// The subject: organization, common name, an ambiguous attribute, or a group the signer
    /// may not certify.
    SubjectNotAllowed,
    /// The subject alternative names: a kind the signer does not allow, too many, a value
    /// outside the allowed domains or networks, or not one of the node's addresses.
    SANNotAllowed,
    /// `spec.usages`: not the signer's set, unknown, duplicated, or `key encipherment` for a
    /// non-RSA key when that is configured.
    UsagesNotAllowed,
    /// The public key type or size (ML-DSA keys to a `kubernetes.io/` signer: the Kubernetes
    /// components cannot verify them yet).
    KeyNotAllowed,
    /// The request asks for extensions that are never granted (`CA:TRUE`).
    ExtensionsNotAllowed,
    /// The requester may not ask for this certificate (a node asking for another node's name).
    RequesterNotAllowed,
}

impl DenyReason {
    /// Every reason.
    pub const ALL: [DenyReason; 9] = [
        DenyReason::InvalidRequest,
        DenyReason::RequestTooLarge,
        DenyReason::TooManyPendingRequests,
        DenyReason::SubjectNotAllowed,
        DenyReason::SANNotAllowed,
        DenyReason::UsagesNotAllowed,
        DenyReason::KeyNotAllowed,
        DenyReason::ExtensionsNotAllowed,
        DenyReason::RequesterNotAllowed,
    ];

    /// The CamelCase string used as the condition's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidRequest => "InvalidRequest",
            DenyReason::RequestTooLarge => "RequestTooLarge",
            DenyReason::TooManyPendingRequests => "TooManyPendingRequests",
            DenyReason::SubjectNotAllowed => "SubjectNotAllowed",
            DenyReason::SANNotAllowed => "SANNotAllowed",
            DenyReason::UsagesNotAllowed => "UsagesNotAllowed",
            DenyReason::KeyNotAllowed => "KeyNotAllowed",
            DenyReason::ExtensionsNotAllowed => "ExtensionsNotAllowed",
            DenyReason::RequesterNotAllowed => "RequesterNotAllowed",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DenyReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DenyReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown deny reason {s:?}"))
    }
}

/// Why the policy leaves a request alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A certificate is present, or an `Approved` or `Denied` condition exists.
    AlreadyDecided,
    /// The policy has no rules for this signer name.
    NoPolicyForSigner,
    /// The signer's policy is disabled (`enabled = false`).
    PolicyDisabled,
    /// The request passed every check, but auto-approval is off for its signer: a human decides.
    AutoApproveDisabled,
    /// Recognized, but no SubjectAccessReview allowed it. As upstream, the request stays pending
    /// and is retried with backoff (RBAC may change, or a human approves).
    NotAuthorized,
    /// The policy requires the Node's addresses and the caller did not supply them (retry later).
    NodeAddressesUnknown,
    /// A violation, left pending because `deny_violations` is off.
    ViolationNotDenied {
        /// What would have been the deny reason.
        reason: DenyReason,
        /// What was wrong.
        message: String,
    },
}

impl IgnoreReason {
    /// Whether the controller should look at the request again later (with backoff): the answer
    /// may change without the request changing.
    pub fn should_retry(&self) -> bool {
        matches!(self, IgnoreReason::NotAuthorized | IgnoreReason::NodeAddressesUnknown)
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::AlreadyDecided => f.write_str("already approved, denied or issued"),
            IgnoreReason::NoPolicyForSigner => f.write_str("no approval policy for this signer"),
            IgnoreReason::PolicyDisabled => f.write_str("the approval policy for this signer is disabled"),
            IgnoreReason::AutoApproveDisabled => f.write_str("auto-approval is off for this signer"),
            IgnoreReason::NotAuthorized => f.write_str("no SubjectAccessReview allowed the request"),
            IgnoreReason::NodeAddressesUnknown => f.write_str("the node's addresses are not known yet"),
            IgnoreReason::ViolationNotDenied { reason, message } => {
                write!(f, "{reason} (not denied): {message}")
            }
        }
    }
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Add an `Approved` condition.
    Approve {
        /// The condition's reason (`AutoApproved`).
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// Add a `Denied` condition.
    Deny {
        /// The condition's reason.
        reason: DenyReason,
        /// The condition's message.
        message: String,
    },
    /// Write nothing.
    Ignore {
        /// Why.
        why: IgnoreReason,
    },
}

impl Decision {
    fn approve(message: &str) -> Self {
        Decision::Approve { reason: REASON_AUTO_APPROVED.to_owned(), message: message.to_owned() }
    }

    fn ignore(why: IgnoreReason) -> Self {
        Decision::Ignore { why }
    }

    /// The condition to append through `/approval`, if any.
    pub fn condition(&self, now: SystemTime) -> Result<Option<CertificateSigningRequestCondition>, Error> {
        match self {
            Decision::Approve { reason, message } => {
                true_condition(CONDITION_APPROVED, reason, message, now).map(Some)
            }
            Decision::Deny { reason, message } => {
                true_condition(CONDITION_DENIED, reason.as_str(), message, now).map(Some)
            }
            Decision::Ignore { .. } => Ok(None),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Approve { reason, message } => write!(f, "approve ({reason}): {message}"),
            Decision::Deny { reason, message } => write!(f, "deny ({reason}): {message}"),
            Decision::Ignore { why } => write!(f, "ignore: {why}"),
        }
    }
}

/// One request to evaluate, with what the caller knows about its context.
#[derive(Clone, Copy, Debug)]
pub struct ApprovalRequest<'a> {
    /// The CertificateSigningRequest object.
    pub csr: &'a CertificateSigningRequest,
    /// How many requests of the same requester for the same signer were pending before this one
    /// ([`pending_before`] computes it from a cache).
    pub pending_before: usize,
    /// For serving certificates: the Node's `status.addresses` values, when the caller looked the
    /// Node up ([`requesting_node`] names it).
    pub node_addresses: Option<&'a [String]>,
}

impl<'a> ApprovalRequest<'a> {
    /// A request with no pending siblings and no node addresses.
    pub fn new(csr: &'a CertificateSigningRequest) -> Self {
        Self { csr, pending_before: 0, node_addresses: None }
    }
}

/// The outcome of [`Policy::evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evaluation {
    /// The policy decided without asking the API.
    Decided(Decision),
    /// Everything but authorization passed; make the reviews and call [`PendingApproval::finish`].
    NeedsAccessReview(PendingApproval),
}

/// A kubelet client request that passed every check and now needs a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingApproval {
    reviews: Vec<AccessReview>,
}

impl PendingApproval {
    /// The reviews to make, in upstream's order (self node client first).
    pub fn reviews(&self) -> &[AccessReview] {
        &self.reviews
    }

    /// The decision given which reviews allowed: the first allowed one approves with its message;
    /// none allowed leaves the request pending ([`IgnoreReason::NotAuthorized`]).
    pub fn finish(self, mut allowed: impl FnMut(&AccessReview) -> bool) -> Decision {
        self.reviews
            .iter()
            .find(|review| allowed(review))
            .map(|review| Decision::approve(review.recognized.approval_message()))
            .unwrap_or(Decision::ignore(IgnoreReason::NotAuthorized))
    }
}

/// The name of the node that asked, if the requester is a node (`system:node:<name>`).
pub fn requesting_node(csr: &CertificateSigningRequest) -> Option<&str> {
    csr.spec.username.as_deref()?.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())
}

/// How many requests in `others` are pending, from the same requester (`spec.username`) for the
/// same signer, and older than `csr` (by creation time, then name). `csr` itself may be among
/// `others`. Counting only older requests lets the oldest ones through under a cap.
pub fn pending_before<'a>(
    csr: &CertificateSigningRequest,
    others: impl IntoIterator<Item = &'a CertificateSigningRequest>,
) -> usize {
    let order = |c: &'a CertificateSigningRequest| {
        (c.metadata.creation_timestamp.as_ref().map(|t| t.0), c.metadata.name.clone())
    };
    let mine = (csr.metadata.creation_timestamp.as_ref().map(|t| t.0), csr.metadata.name.clone());
    others
        .into_iter()
        .filter(|o| {
            o.spec.username == csr.spec.username
                && o.spec.signer_name == csr.spec.signer_name
                && is_pending(o)
                && order(o) < mine
        })
        .count()
}

/// A policy violation: the reason and message of a `Denied` condition.
struct Violation {
    reason: DenyReason,
    message: String,
}

fn violation<T>(reason: DenyReason, message: impl Into<String>) -> Result<T, Violation> {
    Err(Violation { reason, message: message.into() })
}

/// The compiled approval policy.
#[derive(Clone, Debug)]
pub struct Policy {
    signers: Vec<(String, Rules)>,
}

#[derive(Clone, Debug)]
struct Rules {
    signer: &'static str,
    config: SignerPolicy,
    auto_approve: bool,
    /// Lower-case domains without leading or trailing dot; "" stands for "any name".
    dns_suffixes: Vec<String>,
    cidrs: Vec<IpNet>,
}

impl Policy {
    /// Checks and compiles a configuration: signer names must be in [`POLICY_SIGNERS`],
    /// signer-specific settings must be given to their signer only, suffixes must be domain
    /// names and CIDRs must parse.
    pub fn new(config: PolicyConfig) -> Result<Self, Error> {
        let signers = config
            .signers
            .into_iter()
            .map(|(name, policy)| Rules::compile(&name, policy).map(|rules| (name, rules)))
            .collect::<Result<_, _>>()?;
        Ok(Self { signers })
    }

    fn rules(&self, signer: &str) -> Option<&Rules> {
        self.signers.iter().find(|(name, _)| name == signer).map(|(_, rules)| rules)
    }

    /// The cap on older pending requests that applies to `csr` (its signer's
    /// `max_pending_per_requester`, or `max_pending_per_bootstrap_token` for a bootstrap token),
    /// or `None` without one: [`ApprovalRequest::pending_before`] matters only then, and
    /// counting it means a pass over every cached request, so callers skip it otherwise.
    pub fn pending_cap(&self, csr: &CertificateSigningRequest) -> Option<u32> {
        let cap = self.rules(&csr.spec.signer_name)?.pending_cap(csr);
        (cap > 0).then_some(cap)
    }

    /// Evaluates a request up to the point where a SubjectAccessReview is needed.
    pub fn evaluate(&self, request: &ApprovalRequest<'_>) -> Evaluation {
        if is_decided(request.csr) {
            return Evaluation::Decided(Decision::ignore(IgnoreReason::AlreadyDecided));
        }
        let Some(rules) = self.rules(&request.csr.spec.signer_name) else {
            return Evaluation::Decided(Decision::ignore(IgnoreReason::NoPolicyForSigner));
        };
        if !rules.config.enabled {
            return Evaluation::Decided(Decision::ignore(IgnoreReason::PolicyDisabled));
        }
        match rules.evaluate(request) {
            Ok(evaluation) => evaluation,
            Err(Violation { reason, message }) if rules.config.deny_violations => {
                Evaluation::Decided(Decision::Deny { reason, message })
            }
            Err(Violation { reason, message }) => {
                Evaluation::Decided(Decision::ignore(IgnoreReason::ViolationNotDenied { reason, message }))
            }
        }
    }

    /// [`Policy::evaluate`] and, if reviews are needed, [`PendingApproval::finish`] with `allowed`
    /// answering them: for callers that can answer synchronously (tests, benchmarks, a built-in
    /// authorizer).
    pub fn decide(
        &self,
        request: &ApprovalRequest<'_>,
        allowed: impl FnMut(&AccessReview) -> bool,
    ) -> Decision {
        match self.evaluate(request) {
            Evaluation::Decided(decision) => decision,
            Evaluation::NeedsAccessReview(pending) => pending.finish(allowed),
        }
    }
}

fn only_for(signer: &str, owner: &str, setting: &str, is_set: bool) -> Result<(), Error> {
    if is_set && signer != owner {
        return Err(Error::Config(format!("signer {signer:?}: {setting} applies only to {owner}")));
    }
    Ok(())
}

impl Rules {
    fn compile(name: &str, config: SignerPolicy) -> Result<Self, Error> {
        let signer = POLICY_SIGNERS.iter().copied().find(|s| *s == name).ok_or_else(|| {
            Error::Config(format!(
                "no policy rules exist for signer {name:?}; known signers: {}",
                POLICY_SIGNERS.join(", ")
            ))
        })?;
        for (setting, is_set) in [
            ("allowed_dns_suffixes", !config.allowed_dns_suffixes.is_empty()),
            ("allowed_ip_cidrs", !config.allowed_ip_cidrs.is_empty()),
            ("require_node_addresses", config.require_node_addresses),
            ("max_dns_names", config.max_dns_names.is_some()),
        ] {
            only_for(signer, SIGNER_KUBELET_SERVING, setting, is_set)?;
        }
        for (setting, is_set) in [
            ("allowed_organizations", !config.allowed_organizations.is_empty()),
            ("allowed_common_name_prefixes", !config.allowed_common_name_prefixes.is_empty()),
        ] {
            only_for(signer, SIGNER_KUBE_APISERVER_CLIENT, setting, is_set)?;
        }
        let dns_suffixes = config
            .allowed_dns_suffixes
            .iter()
            .map(|s| normalize_suffix(s).ok_or_else(|| {
                Error::Config(format!("signer {signer:?}: allowed_dns_suffixes: {s:?} is not a domain name (use \".\" for any name)"))
            }))
            .collect::<Result<_, _>>()?;
        let cidrs = config
            .allowed_ip_cidrs
            .iter()
            .map(|c| {
                IpNet::from_str(c.trim()).map(|net| net.trunc()).map_err(|e| {
                    Error::Config(format!(
                        "signer {signer:?}: allowed_ip_cidrs: {c:?} is not a CIDR such as 10.0.0.0/8: {e}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let auto_approve = config
            .auto_approve
            .unwrap_or(signer == SIGNER_KUBE_APISERVER_CLIENT_KUBELET || is_node_identity(signer));
        Ok(Self { signer, config, auto_approve, dns_suffixes, cidrs })
    }

    fn evaluate(&self, request: &ApprovalRequest<'_>) -> Result<Evaluation, Violation> {
        let spec = &request.csr.spec;
        let config = &self.config;
        let bytes = &spec.request.0;
        if bytes.len() > config.max_request_bytes {
            return violation(
                DenyReason::RequestTooLarge,
                format!(
                    "the request is {} bytes, more than the {} allowed",
                    bytes.len(),
                    config.max_request_bytes
                ),
            );
        }
        self.storm_control(request)?;
        let info = kubecert_csr::parse_csr_pem_once(bytes)
            .map_err(|e| Violation { reason: DenyReason::InvalidRequest, message: e.to_string() })?;
        post_quantum_key_for_kubernetes(self.signer, &info)?;
        let usages = spec.usages.as_deref().unwrap_or_default();
        let validated = validate_for_signer(self.signer, &info, usages).map_err(|f| Violation {
            reason: match f.kind() {
                FailureKind::Subject => DenyReason::SubjectNotAllowed,
                FailureKind::SubjectAltNames => DenyReason::SANNotAllowed,
                FailureKind::Usages => DenyReason::UsagesNotAllowed,
                FailureKind::Request | FailureKind::Signer => DenyReason::InvalidRequest,
            },
            message: f.message().to_owned(),
        })?;
        self.hardening(&info, &validated, usages)?;
        if !self.auto_approve {
            return Ok(Evaluation::Decided(Decision::ignore(IgnoreReason::AutoApproveDisabled)));
        }
        match self.signer {
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET => self.kubelet_client(request, &validated),
            SIGNER_KUBELET_SERVING => self.kubelet_serving(request, &validated),
            signer if is_node_identity(signer) => node_identity(request.csr, validated.common_name()),
            _ => self.kube_apiserver_client(&validated),
        }
    }

    /// The cap on older pending requests of `csr`'s requester (0: none).
    fn pending_cap(&self, csr: &CertificateSigningRequest) -> u32 {
        let username = csr.spec.username.as_deref().unwrap_or_default();
        if username.starts_with("system:bootstrap:") {
            self.config.max_pending_per_bootstrap_token
        } else {
            self.config.max_pending_per_requester
        }
    }

    fn storm_control(&self, request: &ApprovalRequest<'_>) -> Result<(), Violation> {
        let username = request.csr.spec.username.as_deref().unwrap_or_default();
        let cap = self.pending_cap(request.csr);
        if cap > 0 && request.pending_before >= cap as usize {
            return violation(
                DenyReason::TooManyPendingRequests,
                format!(
                    "requester {username:?} already has {} pending requests for signer {} (the limit is {cap}); \
                     wait for them to be decided or cleaned up",
                    request.pending_before, self.signer
                ),
            );
        }
        Ok(())
    }

    fn hardening(
        &self,
        info: &CsrInfo,
        validated: &ValidatedRequest<'_>,
        usages: &[String],
    ) -> Result<(), Violation> {
        let config = &self.config;
        if let Some(duplicate) = first_duplicate(usages) {
            return violation(
                DenyReason::UsagesNotAllowed,
                format!("usage {duplicate:?} is listed more than once"),
            );
        }
        let sans =
            info.dns_names.len() + info.ip_addresses.len() + info.email_addresses.len() + info.uris.len();
        if sans > config.max_subject_alt_names {
            return violation(
                DenyReason::SANNotAllowed,
                format!(
                    "the request has {sans} subjectAltNames, more than the {} allowed",
                    config.max_subject_alt_names
                ),
            );
        }
        let (key_type, rsa_bits) = match &info.public_key.algorithm {
            PublicKeyAlgorithm::EcdsaP256 => (Some(KeyType::EcdsaP256), None),
            PublicKeyAlgorithm::EcdsaP384 => (Some(KeyType::EcdsaP384), None),
            PublicKeyAlgorithm::Ed25519 => (Some(KeyType::Ed25519), None),
            PublicKeyAlgorithm::Rsa { bits } => (Some(KeyType::Rsa), Some(*bits)),
            // Validation admitted ML-DSA-65 only for kubecert.io/node-identity.
            PublicKeyAlgorithm::MlDsa { .. } if is_node_identity(self.signer) => (None, None),
            PublicKeyAlgorithm::MlDsa { level } => {
                return violation(
                    DenyReason::KeyNotAllowed,
                    format!("ML-DSA-{level} keys are not allowed for this signer"),
                );
            }
            PublicKeyAlgorithm::Other { oid } => {
                return violation(
                    DenyReason::KeyNotAllowed,
                    format!("public key algorithm {oid} is not allowed"),
                );
            }
        };
        if let Some(key_type) = key_type.filter(|k| !config.allowed_key_types.contains(k)) {
            let allowed: Vec<&str> = config.allowed_key_types.iter().map(|k| k.as_str()).collect();
            return violation(
                DenyReason::KeyNotAllowed,
                format!("{key_type} keys are not allowed for this signer (allowed: {})", allowed.join(", ")),
            );
        }
        if let Some(bits) = rsa_bits.filter(|bits| *bits < config.min_rsa_bits) {
            return violation(
                DenyReason::KeyNotAllowed,
                format!("RSA keys must have at least {} bits; this one has {bits}", config.min_rsa_bits),
            );
        }
        if config.key_encipherment_only_for_rsa
            && rsa_bits.is_none()
            && usages.iter().any(|u| u == "key encipherment")
        {
            return violation(DenyReason::UsagesNotAllowed, "key encipherment is only allowed for RSA keys");
        }
        if info.requested_basic_constraints.is_some_and(|bc| bc.ca) {
            return violation(
                DenyReason::ExtensionsNotAllowed,
                "the request asks for CA:TRUE; this signer only issues end-entity certificates",
            );
        }
        if self.signer == SIGNER_KUBE_APISERVER_CLIENT
            && validated.subject.organizations().contains(&"system:masters")
        {
            return violation(
                DenyReason::SubjectNotAllowed,
                "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
            );
        }
        Ok(())
    }

    fn kubelet_client(
        &self,
        request: &ApprovalRequest<'_>,
        validated: &ValidatedRequest<'_>,
    ) -> Result<Evaluation, Violation> {
        let spec = &request.csr.spec;
        let username = spec.username.as_deref().unwrap_or_default();
        let common_name = validated.common_name();
        if username.starts_with(NODE_USER_PREFIX) && username != common_name {
            return violation(
                DenyReason::RequesterNotAllowed,
                format!(
                    "node {username:?} may only request a client certificate for itself, not for {common_name:?}"
                ),
            );
        }
        let reviews = crate::recognize::recognized_kinds(username, common_name)
            .into_iter()
            .map(|kind| AccessReview::for_request(kind, spec))
            .collect();
        Ok(Evaluation::NeedsAccessReview(PendingApproval { reviews }))
    }

    fn kubelet_serving(
        &self,
        request: &ApprovalRequest<'_>,
        validated: &ValidatedRequest<'_>,
    ) -> Result<Evaluation, Violation> {
        let spec = &request.csr.spec;
        let username = spec.username.as_deref().unwrap_or_default();
        let common_name = validated.common_name();
        if username != common_name {
            return violation(
                DenyReason::RequesterNotAllowed,
                format!("requester {username:?} is not the node {common_name:?} named in the request"),
            );
        }
        if !spec.groups.as_deref().unwrap_or_default().iter().any(|g| g == NODE_GROUP) {
            return violation(
                DenyReason::RequesterNotAllowed,
                format!("requester {username:?} is not in group {NODE_GROUP}"),
            );
        }
        let info = validated.info();
        if let Some(max) = self.config.max_dns_names.filter(|max| info.dns_names.len() > *max) {
            return violation(
                DenyReason::SANNotAllowed,
                format!(
                    "the request has {} DNS subjectAltNames, more than the {max} allowed",
                    info.dns_names.len()
                ),
            );
        }
        for name in &info.dns_names {
            self.check_dns_name(name, request.node_addresses)?;
        }
        for ip in &info.ip_addresses {
            self.check_ip(*ip, request.node_addresses)?;
        }
        if self.config.require_node_addresses && request.node_addresses.is_none() {
            return Ok(Evaluation::Decided(Decision::ignore(IgnoreReason::NodeAddressesUnknown)));
        }
        Ok(Evaluation::Decided(Decision::approve(
            "Auto approving kubelet serving certificate after policy checks.",
        )))
    }

    fn check_dns_name(&self, name: &str, node_addresses: Option<&[String]>) -> Result<(), Violation> {
        let lower = name.to_ascii_lowercase();
        if !is_dns_name(&lower) {
            return violation(
                DenyReason::SANNotAllowed,
                format!("DNS subjectAltName {name:?} is not a valid DNS name"),
            );
        }
        let allowed = self
            .dns_suffixes
            .iter()
            .any(|suffix| suffix.is_empty() || lower == *suffix || lower.ends_with(&format!(".{suffix}")));
        if !allowed {
            return violation(
                DenyReason::SANNotAllowed,
                format!("DNS subjectAltName {name:?} is not within an allowed domain"),
            );
        }
        if node_addresses.is_some_and(|addresses| {
            !addresses.iter().any(|a| a.trim_end_matches('.').eq_ignore_ascii_case(&lower))
        }) {
            return violation(
                DenyReason::SANNotAllowed,
                format!("DNS subjectAltName {name:?} is not one of the node's addresses"),
            );
        }
        Ok(())
    }

    fn check_ip(&self, ip: IpAddr, node_addresses: Option<&[String]>) -> Result<(), Violation> {
        if !self.cidrs.iter().any(|net| net.contains(&ip)) {
            return violation(
                DenyReason::SANNotAllowed,
                format!("IP subjectAltName {ip} is not within an allowed network"),
            );
        }
        if node_addresses.is_some_and(|addresses| {
            !addresses.iter().any(|a| a.trim().parse::<IpAddr>().is_ok_and(|a| a == ip))
        }) {
            return violation(
                DenyReason::SANNotAllowed,
                format!("IP subjectAltName {ip} is not one of the node's addresses"),
            );
        }
        Ok(())
    }

    fn kube_apiserver_client(&self, validated: &ValidatedRequest<'_>) -> Result<Evaluation, Violation> {
        let info = validated.info();
        if !(info.dns_names.is_empty()
            && info.ip_addresses.is_empty()
            && info.email_addresses.is_empty()
            && info.uris.is_empty())
        {
            return violation(
                DenyReason::SANNotAllowed,
                "subjectAltNames are not allowed on auto-approved client certificates",
            );
        }
        let common_name = validated.common_name();
        if !self.config.allowed_common_name_prefixes.iter().any(|p| common_name.starts_with(p.as_str())) {
            return violation(
                DenyReason::SubjectNotAllowed,
                format!("common name {common_name:?} does not start with an allowed prefix"),
            );
        }
        let allowed: BTreeSet<&str> = self.config.allowed_organizations.iter().map(String::as_str).collect();
        if let Some(organization) =
            validated.subject.organizations().into_iter().find(|o| !allowed.contains(o))
        {
            return violation(
                DenyReason::SubjectNotAllowed,
                format!("organization {organization:?} is not allowed"),
            );
        }
        Ok(Evaluation::Decided(Decision::approve("Auto approving client certificate after policy checks.")))
    }
}

/// ML-DSA keys are never certified by the `kubernetes.io/` signers (denied with
/// [`DenyReason::KeyNotAllowed`]); kubecert's own signer names may certify them (feature `ml-dsa`).
fn post_quantum_key_for_kubernetes(signer: &str, info: &CsrInfo) -> Result<(), Violation> {
    match ml_dsa_for_kubernetes(signer, info) {
        Some(message) => violation(DenyReason::KeyNotAllowed, message),
        None => Ok(()),
    }
}

/// Whether `signer` is kubecert's own `kubecert.io/node-identity` (always false without the
/// `ml-dsa` feature, which is the only way it has policy rules).
fn is_node_identity(signer: &str) -> bool {
    cfg!(feature = "ml-dsa") && signer == kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY
}

/// `kubecert.io/node-identity` (validation already required an ML-DSA-65 key, subject
/// `CN=system:node:NAME, O=system:nodes` and usages digital signature + client auth): approved
/// when the requester is that node itself, authenticated as `system:node:NAME` in group
/// `system:nodes`. A node credential is all it takes (no SubjectAccessReview, unlike the kubelet
/// client signer): the identity certifies nothing the node's client certificate does not.
fn node_identity(csr: &CertificateSigningRequest, common_name: &str) -> Result<Evaluation, Violation> {
    let username = csr.spec.username.as_deref().unwrap_or_default();
    if !username.starts_with(NODE_USER_PREFIX) {
        return violation(
            DenyReason::RequesterNotAllowed,
            format!("only a node may request its identity; the requester is {username:?}"),
        );
    }
    if !csr.spec.groups.iter().flatten().any(|g| g == NODE_GROUP) {
        return violation(
            DenyReason::RequesterNotAllowed,
            format!("the requester {username:?} is not in group {NODE_GROUP}"),
        );
    }
    if username != common_name {
        return violation(
            DenyReason::RequesterNotAllowed,
            format!("node {username:?} may only request its own identity, not one for {common_name:?}"),
        );
    }
    Ok(Evaluation::Decided(Decision::approve(
        "Auto approving node identity certificate for the node itself.",
    )))
}

/// A configured suffix in canonical form: lower case, no leading or trailing dot; "." (the root)
/// becomes "" and allows every name. `None` when it is not a domain name.
fn normalize_suffix(suffix: &str) -> Option<String> {
    let trimmed = suffix.trim();
    if trimmed == "." {
        return Some(String::new());
    }
    let canonical = trimmed.strip_prefix('.').unwrap_or(trimmed);
    let canonical = canonical.strip_suffix('.').unwrap_or(canonical).to_ascii_lowercase();
    is_dns_name(&canonical).then_some(canonical)
}

/// A host name per RFC 1123: dot-separated labels of letters, digits and inner hyphens, 1–63
/// characters each, 253 in all. No wildcard, no trailing dot.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::conditions::tests::with_conditions;
    use crate::test_support::{node_client, object};

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const SERVING: &[&str] = &["digital signature", "server auth"];

    fn policy(toml_text: &str) -> Result<Policy, Error> {
        Policy::new(toml::from_str(toml_text).map_err(|e| Error::Config(e.to_string()))?)
    }

    #[test]
    fn a_signer_policy_serializes_to_the_toml_it_is_read_from() {
        let mut serving = SignerPolicy {
            auto_approve: Some(true),
            allowed_key_types: vec![KeyType::EcdsaP256, KeyType::Rsa],
            ..SignerPolicy::default()
        };
        for policy in [SignerPolicy::default(), serving.clone()] {
            let text = toml::to_string(&policy).unwrap();
            assert_eq!(toml::from_str::<SignerPolicy>(&text).unwrap(), policy, "{text}");
        }
        serving.max_dns_names = Some(3);
        let text = toml::to_string(&serving).unwrap();
        assert!(text.contains("allowed_key_types = [\"ecdsa-p256\", \"rsa\"]"), "{text}");
        assert!(text.contains("max_dns_names = 3"), "{text}");
    }

    #[test]
    fn toml_keeps_defaults_for_what_it_does_not_mention() {
        let config: PolicyConfig = toml::from_str(
            r#"
            [signers."kubernetes.io/kubelet-serving"]
            auto_approve = true
            allowed_ip_cidrs = ["10.0.0.0/8"]
            "#,
        )
        .unwrap();
        assert_eq!(config.signers.len(), POLICY_SIGNERS.len());
        assert_eq!(config.signers[SIGNER_KUBE_APISERVER_CLIENT_KUBELET], SignerPolicy::default());
        let serving = &config.signers[SIGNER_KUBELET_SERVING];
        assert_eq!(serving.auto_approve, Some(true));
        assert_eq!(serving.max_pending_per_requester, 10);
        assert_eq!(toml::from_str::<PolicyConfig>("").unwrap(), PolicyConfig::default());
        let policy = Policy::new(config).unwrap();
        assert!(policy.rules(SIGNER_KUBE_APISERVER_CLIENT_KUBELET).unwrap().auto_approve);
        assert!(policy.rules(SIGNER_KUBELET_SERVING).unwrap().auto_approve);
        assert!(!policy.rules(SIGNER_KUBE_APISERVER_CLIENT).unwrap().auto_approve);
    }

    #[test]
    fn configuration_mistakes_are_errors_naming_the_setting() {
        let err = |text: &str| policy(text).unwrap_err().to_string();
        assert!(
            err(r#"[signers."example.com/x"]"#)
                .contains("no policy rules exist for signer \"example.com/x\"")
        );
        assert!(err("[signers.\"kubernetes.io/kube-apiserver-client-kubelet\"]\nallowed_ip_cidrs = [\"10.0.0.0/8\"]")
            .contains("allowed_ip_cidrs applies only to kubernetes.io/kubelet-serving"));
        assert!(
            err("[signers.\"kubernetes.io/kubelet-serving\"]\nallowed_organizations = [\"x\"]")
                .contains("allowed_organizations applies only to kubernetes.io/kube-apiserver-client")
        );
        assert!(
            err("[signers.\"kubernetes.io/kubelet-serving\"]\nallowed_ip_cidrs = [\"10.0.0.0\"]")
                .contains("\"10.0.0.0\" is not a CIDR")
        );
        assert!(
            err("[signers.\"kubernetes.io/kubelet-serving\"]\nallowed_dns_suffixes = [\"*.example.com\"]")
                .contains("\"*.example.com\" is not a domain name")
        );
        assert!(
            err("[signers.\"kubernetes.io/kubelet-serving\"]\nauto_aprove = true").contains("unknown field")
        );
        assert!(
            err("[signers.\"kubernetes.io/kubelet-serving\"]\nallowed_key_types = [\"dsa\"]")
                .contains("unknown variant")
        );
    }

    #[test]
    fn suffixes_and_dns_names() {
        assert_eq!(normalize_suffix(".Example.COM."), Some("example.com".into()));
        assert_eq!(normalize_suffix("."), Some(String::new()));
        assert_eq!(normalize_suffix(""), None);
        assert_eq!(normalize_suffix("a..b"), None);
        assert!(is_dns_name("node-1.example.com"));
        for bad in ["", "-a", "a-", "a_b", "*.example.com", "a.", &"a".repeat(64), "é.example"] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    fn pending(name: &str, username: &str, created: i64) -> CertificateSigningRequest {
        let mut csr = object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, "", CLIENT, username, &[]);
        csr.metadata.name = Some(name.into());
        csr.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        csr
    }

    #[test]
    fn pending_before_counts_older_pending_requests_of_the_same_requester_and_signer() {
        let me = pending("c", "system:node:a", 300);
        let mut decided = pending("d", "system:node:a", 100);
        decided.status = with_conditions(&[("Denied", "True")]).status;
        let mut other_signer = pending("e", "system:node:a", 100);
        other_signer.spec.signer_name = SIGNER_KUBELET_SERVING.into();
        let all = [
            pending("a", "system:node:a", 100),
            pending("b", "system:node:a", 300), // same time, earlier name
            me.clone(),
            pending("z", "system:node:a", 400), // newer
            pending("x", "system:node:b", 100), // other requester
            decided,
            other_signer,
        ];
        assert_eq!(pending_before(&me, &all), 2);
        assert_eq!(pending_before(&all[0], &all), 0);
    }

    #[test]
    fn requesting_node_is_the_name_after_the_node_prefix() {
        let csr = |user: &str| object(SIGNER_KUBELET_SERVING, "", SERVING, user, &[]);
        assert_eq!(requesting_node(&csr("system:node:worker-1")), Some("worker-1"));
        assert_eq!(requesting_node(&csr("system:node:")), None);
        assert_eq!(requesting_node(&csr("system:bootstrap:abcdef")), None);
    }

    fn client_request(username: &str) -> CertificateSigningRequest {
        object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &node_client("a").pem(), CLIENT, username, &[])
    }

    #[test]
    fn reviews_are_answered_in_order_and_a_refusal_is_retried() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let csr = client_request("system:node:a");
        let Evaluation::NeedsAccessReview(pending) = policy.evaluate(&ApprovalRequest::new(&csr)) else {
            panic!("expected reviews")
        };
        let subresources: Vec<_> = pending.reviews().iter().map(AccessReview::subresource).collect();
        assert_eq!(subresources, ["selfnodeclient", "nodeclient"]);
        let mut asked = Vec::new();
        let decision = pending.clone().finish(|r| {
            asked.push(r.subresource());
            r.subresource() == "nodeclient"
        });
        assert_eq!(asked, ["selfnodeclient", "nodeclient"]);
        assert_eq!(
            decision,
            Decision::Approve {
                reason: "AutoApproved".into(),
                message: "Auto approving kubelet client certificate after SubjectAccessReview.".into()
            }
        );
        let refused = pending.finish(|_| false);
        let Decision::Ignore { why } = refused else { panic!("{refused:?}") };
        assert_eq!(why, IgnoreReason::NotAuthorized);
        assert!(why.should_retry());
    }

    /// A node client request with an ML-DSA-65 key, as rcgen (aws-lc-rs) signs it.
    fn ml_dsa_request(signer: &str, usages: &[&str]) -> CertificateSigningRequest {
        object(signer, &ml_dsa_pem("system:nodes", "system:node:a"), usages, "system:node:a", &[])
    }

    /// A PEM request with an ML-DSA-65 key and subject `CN=common_name, O=organization`.
    pub(crate) fn ml_dsa_pem(organization: &str, common_name: &str) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ML_DSA_65).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, organization);
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    /// The node identity signer's rules, each with its reason (feature `ml-dsa`).
    #[cfg(feature = "ml-dsa")]
    #[test]
    fn node_identity_requests_are_approved_for_the_node_itself_only() {
        use kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY as IDENTITY;
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let nodes: &[&str] = &["system:nodes", "system:authenticated"];
        let own = ml_dsa_pem("system:nodes", "system:node:a");
        let decide = |pem: &str, usages: &[&str], user: &str, groups: &[&str]| {
            policy.decide(&ApprovalRequest::new(&object(IDENTITY, pem, usages, user, groups)), |_| {
                panic!("no SubjectAccessReview is asked")
            })
        };
        assert_eq!(
            decide(&own, CLIENT, "system:node:a", nodes),
            Decision::Approve {
                reason: "AutoApproved".into(),
                message: "Auto approving node identity certificate for the node itself.".into()
            }
        );
        let ecdsa = node_client("a").pem();
        let other_org = ml_dsa_pem("system:masters", "system:node:a");
        let not_a_node = ml_dsa_pem("system:nodes", "alice");
        /// (request PEM, usages, user, groups, reason, message)
        type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a [&'a str], DenyReason, &'a str);
        let denied: [Case<'_>; 8] = [
            (
                &own,
                CLIENT,
                "alice",
                &["system:authenticated"],
                DenyReason::RequesterNotAllowed,
                "only a node may request its identity; the requester is \"alice\"",
            ),
            (
                &own,
                CLIENT,
                "system:node:a",
                &["system:authenticated"],
                DenyReason::RequesterNotAllowed,
                "the requester \"system:node:a\" is not in group system:nodes",
            ),
            (
                &own,
                CLIENT,
                "system:node:b",
                nodes,
                DenyReason::RequesterNotAllowed,
                "node \"system:node:b\" may only request its own identity, not one for \"system:node:a\"",
            ),
            (
                &ecdsa,
                CLIENT,
                "system:node:a",
                nodes,
                DenyReason::InvalidRequest,
                "kubecert.io/node-identity certifies ML-DSA-65 keys only",
            ),
            (
                &own,
                &["digital signature", "key encipherment", "client auth"],
                "system:node:a",
                nodes,
                DenyReason::UsagesNotAllowed,
                "ML-DSA keys cannot encipher keys: usage key encipherment",
            ),
            (
                &own,
                SERVING,
                "system:node:a",
                nodes,
                DenyReason::UsagesNotAllowed,
                "usages did not match [client auth digital signature key encipherment]",
            ),
            (
                &other_org,
                CLIENT,
                "system:node:a",
                nodes,
                DenyReason::SubjectNotAllowed,
                "subject organization is not system:nodes",
            ),
            (
                &not_a_node,
                CLIENT,
                "system:node:a",
                nodes,
                DenyReason::SubjectNotAllowed,
                "subject common name does not begin with system:node:",
            ),
        ];
        for (pem, usages, user, groups, want_reason, want_message) in denied {
            let Decision::Deny { reason, message } = decide(pem, usages, user, groups) else {
                panic!("{want_message}: not denied")
            };
            assert_eq!((reason, message.as_str()), (want_reason, want_message));
        }
    }

    #[test]
    fn ml_dsa_requests_to_kubernetes_signers_are_denied_with_the_reason() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        for (signer, usages) in
            [(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, CLIENT), (SIGNER_KUBELET_SERVING, SERVING)]
        {
            let csr = ml_dsa_request(signer, usages);
            let info = kubecert_csr::parse_csr_pem(&csr.spec.request.0).unwrap();
            assert_eq!(
                info.public_key.algorithm,
                PublicKeyAlgorithm::MlDsa { level: 65 },
                "the signature verified"
            );
            let Decision::Deny { reason, message } = policy.decide(&ApprovalRequest::new(&csr), |_| true)
            else {
                panic!("{signer}: not denied")
            };
            assert_eq!(reason, DenyReason::KeyNotAllowed, "{signer}");
            assert!(
                message.contains("ML-DSA-65 keys are not certified by kubernetes.io/")
                    && message.contains("cannot verify ML-DSA yet"),
                "{message}"
            );
        }
    }

    #[test]
    fn storm_control_spares_bootstrap_tokens_unless_configured() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let node = client_request("system:node:a");
        let Decision::Deny { reason, message } = policy.decide(&over(&node, 10), |_| true) else { panic!() };
        assert_eq!(reason, DenyReason::TooManyPendingRequests);
        assert!(message.contains("already has 10 pending requests"), "{message}");
        assert!(matches!(policy.decide(&over(&node, 9), |_| true), Decision::Approve { .. }));
        let bootstrap = client_request("system:bootstrap:abcdef");
        assert!(matches!(policy.decide(&over(&bootstrap, 1000), |_| true), Decision::Approve { .. }));
        let capped = policy_with("max_pending_per_bootstrap_token = 5");
        assert!(matches!(capped.decide(&over(&bootstrap, 5), |_| true), Decision::Deny { .. }));
        // Callers count pending siblings only where a cap applies.
        assert_eq!(policy.pending_cap(&node), Some(10));
        assert_eq!(policy.pending_cap(&bootstrap), None);
        assert_eq!(capped.pending_cap(&bootstrap), Some(5));
        let mut foreign = node.clone();
        foreign.spec.signer_name = "example.com/unknown".into();
        assert_eq!(policy.pending_cap(&foreign), None);
    }

    fn over(csr: &CertificateSigningRequest, pending_before: usize) -> ApprovalRequest<'_> {
        ApprovalRequest { pending_before, ..ApprovalRequest::new(csr) }
    }

    fn policy_with(client_kubelet_settings: &str) -> Policy {
        policy(&format!(
            "[signers.\"kubernetes.io/kube-apiserver-client-kubelet\"]\n{client_kubelet_settings}"
        ))
        .unwrap()
    }

    #[test]
    fn violations_are_left_pending_when_denying_is_off_and_nothing_happens_when_disabled() {
        let mut csr = client_request("system:node:a");
        csr.spec.usages = Some(vec!["server auth".into()]);
        let quiet = policy_with("deny_violations = false");
        let Decision::Ignore { why } = quiet.decide(&ApprovalRequest::new(&csr), |_| true) else { panic!() };
        assert_eq!(
            why,
            IgnoreReason::ViolationNotDenied {
                reason: DenyReason::UsagesNotAllowed,
                message: "usages did not match [client auth digital signature key encipherment]".into()
            }
        );
        assert!(!why.should_retry());
        let disabled = policy_with("enabled = false");
        assert_eq!(
            disabled.decide(&ApprovalRequest::new(&csr), |_| true),
            Decision::Ignore { why: IgnoreReason::PolicyDisabled }
        );
        let manual = policy_with("auto_approve = false");
        assert_eq!(
            manual.decide(&ApprovalRequest::new(&client_request("system:node:a")), |_| true),
            Decision::Ignore { why: IgnoreReason::AutoApproveDisabled }
        );
    }

    #[test]
    fn decided_and_foreign_requests_are_ignored() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut approved = client_request("system:node:a");
        approved.status = with_conditions(&[("Approved", "True")]).status;
        assert_eq!(
            policy.decide(&ApprovalRequest::new(&approved), |_| true),
            Decision::Ignore { why: IgnoreReason::AlreadyDecided }
        );
        let mut foreign = client_request("system:node:a");
        foreign.spec.signer_name = "example.com/custom".into();
        assert_eq!(
            policy.decide(&ApprovalRequest::new(&foreign), |_| true),
            Decision::Ignore { why: IgnoreReason::NoPolicyForSigner }
        );
    }

    #[test]
    fn decisions_become_conditions() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let deny = Decision::Deny { reason: DenyReason::SANNotAllowed, message: "m".into() };
        let condition = deny.condition(now).unwrap().unwrap();
        assert_eq!(
            (condition.type_.as_str(), condition.reason.as_deref()),
            ("Denied", Some("SANNotAllowed"))
        );
        let approve = Decision::approve("ok");
        assert_eq!(approve.condition(now).unwrap().unwrap().type_, "Approved");
        assert_eq!(Decision::ignore(IgnoreReason::NotAuthorized).condition(now).unwrap(), None);
        for reason in DenyReason::ALL {
            assert_eq!(reason.as_str().parse::<DenyReason>(), Ok(reason));
        }
    }
}
