//! The seam between obtaining a certificate and using one (linkerd's `Credentials` idea): the
//! loop asks a [`CertificateSource`] for a certificate and hands the result to a
//! [`CredentialsSink`]. Both are one-method traits so that decorators (metrics, readiness) and
//! fakes are a few lines each.

use std::future::Future;

use kubecert_csr::{Certificate, CertificateTemplate, KeyUsage, PrivateKey, parse_certificates_pem};

use crate::{BoxError, Error};

/// One rotation's request: everything a source needs to ask a signer for a certificate.
///
/// `Debug` is safe to log: [`PrivateKey`] prints its algorithm only.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    /// What the certificate must carry (SPEC M-12).
    pub template: CertificateTemplate,
    /// The key generated for this rotation; never reused (SPEC M-9 a).
    pub key: PrivateKey,
    /// PKCS#10 request for `template`, signed by `key`, as a `CERTIFICATE REQUEST` PEM block.
    pub csr_pem: String,
    /// The key usages to ask for (`spec.usages`), chosen from the key type (SPEC M-10).
    pub usages: Vec<KeyUsage>,
    /// The certificate currently held, if it has not expired: a source authenticates with it,
    /// and with bootstrap credentials when it is `None` (SPEC B-4, M-9 b).
    pub current: Option<Certificate>,
}

/// Obtains a certificate: creates the CSR object and waits until it is issued.
///
/// The loop bounds the wait (15 minutes by default) and may drop the future to cancel a
/// pending request (SPEC M-13, M-14), so an implementation must be cancel-safe: dropping it
/// abandons the wait, nothing more.
pub trait CertificateSource: Send + Sync {
    /// The issued chain as PEM, leaf first; or why there is none. Use [`Error::Denied`],
    /// [`Error::Failed`] and [`Error::TimedOut`] for those outcomes and [`Error::request`] for
    /// anything else.
    fn obtain(&self, request: &CertificateRequest) -> impl Future<Output = Result<String, Error>> + Send;
}

/// Makes a new identity the one in use: typically commit it to the store, swap the in-memory
/// identity used by TLS, and drain connections made with the old one.
///
/// The loop never interrupts a publish once it has begun, and never asks to unpublish: the old
/// identity stays in use until a new one has been published.
pub trait CredentialsSink: Send + Sync {
    /// Publishes `identity`. An error counts as a failed rotation attempt and is retried.
    fn publish(&self, identity: Identity) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone, Debug)]
pub struct Identity {
    leaf: Certificate,
    intermediates: Vec<Certificate>,
    key: PrivateKey,
}

impl Identity {
    /// Parses `chain_pem` (leaf first; blocks other than `CERTIFICATE` are skipped) and checks
    /// that the leaf certifies `key`.
    pub fn new(chain_pem: &str, key: PrivateKey) -> Result<Self, Error> {
        let mut chain = parse_certificates_pem(chain_pem.as_bytes())
            .map_err(|e| Error::Issued(format!("issued chain: {e}")))?
            .into_iter();
        let leaf = chain.next().ok_or_else(|| Error::Issued("issued chain holds no certificate".into()))?;
        if !leaf.matches_key(&key) {
            return Err(Error::Issued(format!(
                "leaf certificate (serial {}) is not for the key generated for this request",
                leaf.serial_hex
            )));
        }
        Ok(Self { leaf, intermediates: chain.collect(), key })
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &Certificate {
        &self.leaf
    }

    /// The certificates after the leaf, in issued order.
    pub fn intermediates(&self) -> &[Certificate] {
        &self.intermediates
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The chain as `CERTIFICATE` PEM blocks, leaf first, re-encoded from the parsed DER.
    pub fn chain_pem(&self) -> String {
        std::iter::once(&self.leaf).chain(&self.intermediates).map(Certificate::to_pem).collect()
    }
}

#[cfg(test)]
mod tests {
    use kubecert_csr::KeyAlgorithm;

    use super::*;
    use crate::testutil::{mint, secs, t0};

    #[test]
    fn identity_checks_the_key_and_keeps_the_chain() {
        let minted = mint(&CertificateTemplate::node_client("n1"), t0(), t0() + secs(60));
        let identity = Identity::new(&minted.chain_pem, minted.key.clone()).unwrap();
        assert_eq!(identity.leaf(), &minted.leaf);
        assert_eq!(identity.intermediates().len(), 1);
        assert_eq!(identity.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(
            parse_certificates_pem(identity.chain_pem().as_bytes()).unwrap()[0],
            minted.leaf,
            "re-encoded chain parses to the same leaf"
        );

        let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let err = Identity::new(&minted.chain_pem, other_key).unwrap_err();
        assert!(matches!(&err, Error::Issued(m) if m.contains("not for the key")), "{err}");

        let err = Identity::new("no pem here", minted.key).unwrap_err();
        assert!(matches!(&err, Error::Issued(m) if m.contains("no CERTIFICATE block")), "{err}");
    }
}
