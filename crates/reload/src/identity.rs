//! A certificate chain with its private key, checked and turned into what rustls signs with.

use std::fmt;
use std::sync::Arc;

use kubecert_csr::{Certificate, PrivateKey, parse_certificates_pem};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, KeyExchange};

/// A TLS identity: a certificate chain (leaf first) and the private key of the leaf, ready for
/// rustls.
///
/// Construction refuses a key that does not belong to the leaf, so an `Identity` that exists can
/// always complete a handshake. `Debug` shows the leaf's subject and serial, never the key.
#[derive(Clone)]
pub struct Identity {
    leaf: Certificate,
    certified: Arc<CertifiedKey>,
}

impl Identity {
    /// An identity from a parsed chain (leaf first) and its key.
    pub fn new(chain: Vec<Certificate>, key: &PrivateKey) -> Result<Self, Error> {
        let leaf = chain.first().cloned().ok_or_else(|| {
            Error::Certificate(kubecert_csr::Error::Pem {
                what: "certificate",
                detail: "the chain is empty".into(),
            })
        })?;
        if !leaf.matches_key(key) {
            return Err(Error::KeyMismatch {
                subject: leaf.subject.common_name.clone().unwrap_or_default(),
                serial: leaf.serial_hex.clone(),
            });
        }
        let chain_der: Vec<CertificateDer<'static>> =
            chain.into_iter().map(|c| CertificateDer::from(c.der)).collect();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der()));
        // `from_der` loads the key with the provider and compares it with the leaf once more.
        let certified = CertifiedKey::from_der(chain_der, key_der, &KeyExchange::default().provider())
            .map_err(Error::Tls)?;
        Ok(Self { leaf, certified: Arc::new(certified) })
    }

    /// An identity from a PEM certificate chain (`CERTIFICATE` blocks, leaf first) and a PEM
    /// private key (SEC1, PKCS#8 or PKCS#1). Other blocks in either input are ignored.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = parse_certificates_pem(chain_pem).map_err(Error::Certificate)?;
        let key = PrivateKey::from_pem(key_pem).map_err(Error::Key)?;
        Self::new(chain, &key)
    }

    /// An identity from a kubelet-style pair file: the chain's `CERTIFICATE` blocks and the
    /// private key in one PEM document.
    pub fn from_pair_pem(pair_pem: &[u8]) -> Result<Self, Error> {
        Self::from_pem(pair_pem, pair_pem)
    }

    /// The leaf certificate, parsed (subject, serial, validity, SANs).
    pub fn leaf(&self) -> &Certificate {
        &self.leaf
    }

    /// The chain and signing key in the form rustls resolvers hand out.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// Whether `other` presents exactly the same certificate chain. The key need not be compared:
    /// both keys match the same leaf.
    pub fn same_certificates(&self, other: &Identity) -> bool {
        self.certified.cert == other.certified.cert
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.leaf.subject.common_name)
            .field("serial", &self.leaf.serial_hex)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use kubecert_csr::KeyAlgorithm;
    use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};

    use super::*;

    /// A CA and leaf certificates signed by it, for unit tests.
    pub(crate) struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        pub(crate) pem: String,
    }

    impl TestCa {
        pub(crate) fn new() -> Self {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, "unit-test-ca");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let pem = params.self_signed(&key).unwrap().pem();
            Self { issuer: Issuer::new(params, key), pem }
        }

        /// A leaf for `cn` and a fresh key; returns (certificate PEM, key).
        pub(crate) fn leaf(&self, cn: &str) -> (String, PrivateKey) {
            self.leaf_with(cn, |_| {})
        }

        /// A leaf for `cn` that expires at `not_after` (and starts a day before).
        pub(crate) fn leaf_until(&self, cn: &str, not_after: std::time::SystemTime) -> (String, PrivateKey) {
            self.leaf_with(cn, |params| {
                params.not_after = not_after.into();
                params.not_before = (not_after - std::time::Duration::from_secs(86_400)).into();
            })
        }

        fn leaf_with(&self, cn: &str, adjust: impl FnOnce(&mut CertificateParams)) -> (String, PrivateKey) {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            adjust(&mut params);
            let cert = params.signed_by(key.rcgen_key_pair(), &self.issuer).unwrap();
            (cert.pem(), key)
        }

        pub(crate) fn identity(&self, cn: &str) -> Identity {
            let (cert, key) = self.leaf(cn);
            Identity::from_pem(cert.as_bytes(), key.to_pem().as_bytes()).unwrap()
        }
    }

    #[test]
    fn pair_file_with_chain_and_key_loads() {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("system:node:a");
        let pair = format!("{cert}{}{}", ca.pem, key.to_pem());
        let identity = Identity::from_pair_pem(pair.as_bytes()).unwrap();
        assert_eq!(identity.leaf().subject.common_name.as_deref(), Some("system:node:a"));
        assert_eq!(identity.certified_key().cert.len(), 2);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = TestCa::new();
        let (cert, _) = ca.leaf("system:node:a");
        let (_, other_key) = ca.leaf("system:node:b");
        let err = Identity::from_pem(cert.as_bytes(), other_key.to_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("system:node:a"), "{err}");
    }

    #[test]
    fn truncated_or_keyless_input_is_a_typed_error() {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("system:node:a");
        let pair = format!("{cert}{}", key.to_pem());
        let half = &pair.as_bytes()[..pair.len() / 3];
        assert!(matches!(Identity::from_pair_pem(half), Err(Error::Certificate(_) | Error::Key(_))));
        assert!(matches!(Identity::from_pair_pem(cert.as_bytes()), Err(Error::Key(_))));
        assert!(matches!(Identity::from_pair_pem(b""), Err(Error::Certificate(_))));
        assert!(matches!(Identity::new(Vec::new(), &key), Err(Error::Certificate(_))));
    }

    #[test]
    fn same_certificates_compares_chains() {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("system:node:a");
        let a1 = Identity::from_pem(cert.as_bytes(), key.to_pem().as_bytes()).unwrap();
        let a2 = Identity::from_pem(cert.as_bytes(), key.to_pem().as_bytes()).unwrap();
        assert!(a1.same_certificates(&a2));
        assert!(!a1.same_certificates(&ca.identity("system:node:a")));
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("system:node:a");
        let identity = Identity::from_pem(cert.as_bytes(), key.to_pem().as_bytes()).unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.starts_with("Identity { subject: Some(\"system:node:a\")"), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
