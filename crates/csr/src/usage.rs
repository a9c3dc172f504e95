//! Signer names, the node identity and the key-usage vocabulary of `certificates.k8s.io/v1`.

use std::fmt;
use std::str::FromStr;

use crate::KeyAlgorithm;

/// Signer of kubelet client certificates (auto-approved for nodes upstream).
pub const SIGNER_KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of kubelet serving certificates (never auto-approved upstream).
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// Signer of generic API client certificates.
pub const SIGNER_KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The v1beta1-only legacy signer; refused by the v1 API.
pub const SIGNER_LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";
/// kubecert's own signer of post-quantum node identities (feature `ml-dsa`): ML-DSA-65 keys,
/// the subject and usages of a kubelet client certificate, from a CA of the same algorithm.
pub const SIGNER_KUBECERT_NODE_IDENTITY: &str = "kubecert.io/node-identity";

/// The organization (group) every node certificate carries.
pub const NODE_GROUP: &str = "system:nodes";
/// Common names of node certificates are this prefix followed by the node name.
pub const NODE_USER_PREFIX: &str = "system:node:";

macro_rules! key_usages {
    ($($variant:ident => $text:literal, $doc:literal;)*) => {
        /// One of the 23 key-usage strings a CertificateSigningRequest may list (SPEC W-4).
        ///
        /// `Display`/[`KeyUsage::as_str`] give the exact API string; `FromStr` parses it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KeyUsage {
            $(#[doc = $doc] $variant,)*
        }

        impl KeyUsage {
            /// Every usage, in the order the API documents them.
            pub const ALL: [KeyUsage; 23] = [$(KeyUsage::$variant,)*];

            /// The string used in `spec.usages`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(KeyUsage::$variant => $text,)*
                }
            }
        }
    };
}

key_usages! {
    Signing => "signing", "`signing` (treated as digital signature).";
    DigitalSignature => "digital signature", "`digital signature`.";
    ContentCommitment => "content commitment", "`content commitment` (non-repudiation).";
    KeyEncipherment => "key encipherment", "`key encipherment` (RSA key transport).";
    KeyAgreement => "key agreement", "`key agreement`.";
    DataEncipherment => "data encipherment", "`data encipherment`.";
    CertSign => "cert sign", "`cert sign`.";
    CrlSign => "crl sign", "`crl sign`.";
    EncipherOnly => "encipher only", "`encipher only`.";
    DecipherOnly => "decipher only", "`decipher only`.";
    Any => "any", "`any` extended key usage.";
    ServerAuth => "server auth", "`server auth` (TLS server).";
    ClientAuth => "client auth", "`client auth` (TLS client).";
    CodeSigning => "code signing", "`code signing`.";
    EmailProtection => "email protection", "`email protection`.";
    Smime => "s/mime", "`s/mime` (same extended key usage as email protection).";
    IpsecEndSystem => "ipsec end system", "`ipsec end system`.";
    IpsecTunnel => "ipsec tunnel", "`ipsec tunnel`.";
    IpsecUser => "ipsec user", "`ipsec user`.";
    Timestamping => "timestamping", "`timestamping`.";
    OcspSigning => "ocsp signing", "`ocsp signing`.";
    MicrosoftSgc => "microsoft sgc", "`microsoft sgc`.";
    NetscapeSgc => "netscape sgc", "`netscape sgc`.";
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of the 23 usages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key usage {0:?}")]
pub struct UnknownKeyUsage(pub String);

impl FromStr for KeyUsage {
    type Err = UnknownKeyUsage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyUsage::ALL.into_iter().find(|u| u.as_str() == s).ok_or_else(|| UnknownKeyUsage(s.to_owned()))
    }
}

/// What a node certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificatePurpose {
    /// Authenticating to the API server (`client auth`).
    Client,
    /// Serving the node's own HTTPS endpoint (`server auth`).
    Serving,
}

/// The usages a kubelet requests for a key (SPEC M-10): digital signature, key encipherment for
/// RSA keys only, then client auth or server auth. The order feeds [`crate::bootstrap_csr_name`].
pub fn usages_for(key: KeyAlgorithm, purpose: CertificatePurpose) -> Vec<KeyUsage> {
    let mut usages = vec![KeyUsage::DigitalSignature];
    if key == KeyAlgorithm::Rsa {
        usages.push(KeyUsage::KeyEncipherment);
    }
    usages.push(match purpose {
        CertificatePurpose::Client => KeyUsage::ClientAuth,
        CertificatePurpose::Serving => KeyUsage::ServerAuth,
    });
    usages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_23_distinct_usages_that_round_trip() {
        let strings: std::collections::BTreeSet<_> = KeyUsage::ALL.iter().map(|u| u.as_str()).collect();
        assert_eq!(strings.len(), 23);
        for usage in KeyUsage::ALL {
            assert_eq!(usage.as_str().parse::<KeyUsage>(), Ok(usage));
            assert_eq!(usage.to_string(), usage.as_str());
        }
    }

    #[test]
    fn unknown_usage_is_an_error_naming_it() {
        let err = "Client Auth".parse::<KeyUsage>().unwrap_err();
        assert_eq!(err.to_string(), "unknown key usage \"Client Auth\"");
    }

    #[test]
    fn kubelet_usages_add_key_encipherment_for_rsa_only() {
        use KeyUsage::*;
        assert_eq!(
            usages_for(KeyAlgorithm::EcdsaP256, CertificatePurpose::Client),
            [DigitalSignature, ClientAuth]
        );
        assert_eq!(
            usages_for(KeyAlgorithm::Ed25519, CertificatePurpose::Serving),
            [DigitalSignature, ServerAuth]
        );
        assert_eq!(
            usages_for(KeyAlgorithm::Rsa, CertificatePurpose::Client),
            [DigitalSignature, KeyEncipherment, ClientAuth]
        );
        assert_eq!(
            usages_for(KeyAlgorithm::Rsa, CertificatePurpose::Serving),
            [DigitalSignature, KeyEncipherment, ServerAuth]
        );
    }
}
