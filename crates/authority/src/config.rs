//! The approval policy as configured (deserialized from the signer's TOML file).

use std::collections::BTreeMap;

use kubecert_csr::{
    SIGNER_KUBE_APISERVER_CLIENT, SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING,
};
use serde::{Deserialize, Deserializer, Serialize};

/// The signer names the policy has rules for (with feature `ml-dsa`, kubecert's own
/// `kubecert.io/node-identity` too).
pub const POLICY_SIGNERS: &[&str] = &[
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
    SIGNER_KUBELET_SERVING,
    SIGNER_KUBE_APISERVER_CLIENT,
    #[cfg(feature = "ml-dsa")]
    kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY,
];

/// The approval policy: one [`SignerPolicy`] per signer name.
///
/// In TOML (every key optional; a signer left out keeps all its defaults, a key left out keeps
/// its default):
///
/// ```toml
/// [signers."kubernetes.io/kube-apiserver-client-kubelet"]
/// max_pending_per_requester = 5
///
/// [signers."kubernetes.io/kubelet-serving"]
/// auto_approve = true
/// allowed_dns_suffixes = ["nodes.example.com"]
/// allowed_ip_cidrs = ["10.0.0.0/8", "fd00::/8"]
/// require_node_addresses = true
/// ```
///
/// Only the signers in [`POLICY_SIGNERS`] may be listed; [`crate::Policy::new`] rejects
/// other names and settings given to a signer they do not apply to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rules per signer name.
    #[serde(default = "default_signers", deserialize_with = "signers_with_defaults")]
    pub signers: BTreeMap<String, SignerPolicy>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { signers: default_signers() }
    }
}

fn default_signers() -> BTreeMap<String, SignerPolicy> {
    POLICY_SIGNERS.iter().map(|s| (s.to_string(), SignerPolicy::default())).collect()
}

fn signers_with_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SignerPolicy>, D::Error> {
    let mut signers = BTreeMap::<String, SignerPolicy>::deserialize(d)?;
    for (name, policy) in default_signers() {
        signers.entry(name).or_insert(policy);
    }
    Ok(signers)
}

/// A key type that a policy may allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 (the kubelet's default).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA of at least [`SignerPolicy::min_rsa_bits`] bits.
    Rsa,
}

impl KeyType {
    /// The configuration spelling: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rules for one signer name. Defaults are those of [`SignerPolicy::default`]; the signer's
/// configuration reference (docs/configuration/signer.md) lists them, generated from this code.
///
/// It serializes to the TOML table it is read from, so a program can show the policy in effect.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignerPolicy {
    /// Act on this signer's requests at all. When false the approver leaves them alone.
    pub enabled: bool,
    /// Approve requests that pass every rule. Unset means the signer's built-in default: on for
    /// `kubernetes.io/kube-apiserver-client-kubelet` (upstream auto-approves node client
    /// certificates after a SubjectAccessReview) and, with feature `ml-dsa`, for kubecert's own
    /// `kubecert.io/node-identity` when this signer signs it; off for the others (upstream never
    /// auto-approves them).
    pub auto_approve: Option<bool>,
    /// Deny policy violations with a `Denied` condition and a machine-readable reason. When
    /// false a violation leaves the request pending, as upstream does.
    pub deny_violations: bool,
    /// Larger `spec.request` values (in bytes) are denied without being parsed.
    pub max_request_bytes: usize,
    /// More subject alternative names than this are denied.
    pub max_subject_alt_names: usize,
    /// Storm control: a request is denied when its requester already has this many older
    /// requests pending for the same signer (0 = no cap). Does not apply to bootstrap-token
    /// users, see the next field.
    pub max_pending_per_requester: u32,
    /// The same cap for requesters named `system:bootstrap:<token-id>` (0 = no cap). No cap by
    /// default: one bootstrap token is often shared by a whole fleet joining at once.
    pub max_pending_per_bootstrap_token: u32,
    /// Key types accepted.
    pub allowed_key_types: Vec<KeyType>,
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: usize,
    /// Deny `key encipherment` for keys other than RSA. It means nothing for EC and
    /// Ed25519 keys, but kubelets before the key-type-aware usages always asked for it, and
    /// upstream accepts it.
    pub key_encipherment_only_for_rsa: bool,
    /// `kubernetes.io/kubelet-serving` only: every DNS name must equal one of these domains or
    /// lie below it (`nodes.example.com` allows `a.nodes.example.com`); `.` allows any valid name.
    /// Empty: no DNS name is allowed.
    pub allowed_dns_suffixes: Vec<String>,
    /// `kubernetes.io/kubelet-serving` only: every IP address must lie in one of these CIDRs.
    /// Empty: no IP address is allowed.
    pub allowed_ip_cidrs: Vec<String>,
    /// `kubernetes.io/kubelet-serving` only: approve only when the caller supplied the Node's
    /// `status.addresses`. Whenever the caller supplies them, every SAN must be one of
    /// them, whatever this setting says.
    pub require_node_addresses: bool,
    /// `kubernetes.io/kubelet-serving` only: at most this many DNS names (unset: no limit).
    pub max_dns_names: Option<usize>,
    /// `kubernetes.io/kube-apiserver-client` only: organizations (groups) a request may carry.
    /// Empty: none. `system:masters` is refused regardless.
    pub allowed_organizations: Vec<String>,
    /// `kubernetes.io/kube-apiserver-client` only: the common name (user name) must start with
    /// one of these. Empty: nothing is auto-approved.
    pub allowed_common_name_prefixes: Vec<String>,
}

impl Default for SignerPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_approve: None,
            deny_violations: true,
            max_request_bytes: 64 * 1024,
            max_subject_alt_names: 64,
            max_pending_per_requester: 10,
            max_pending_per_bootstrap_token: 0,
            allowed_key_types: vec![KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519, KeyType::Rsa],
            min_rsa_bits: 2048,
            key_encipherment_only_for_rsa: false,
            allowed_dns_suffixes: Vec::new(),
            allowed_ip_cidrs: Vec::new(),
            require_node_addresses: false,
            max_dns_names: None,
            allowed_organizations: Vec::new(),
            allowed_common_name_prefixes: Vec::new(),
        }
    }
}
