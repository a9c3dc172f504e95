//! Test helpers: a throwaway CA that signs our own CSRs with chosen validity, and a fixed epoch.

use std::time::{Duration, SystemTime};

use kubecert_csr::{
    Certificate, CertificateTemplate, KeyAlgorithm, PrivateKey, build_csr_pem, parse_certificates_pem,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DistinguishedName,
    DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A whole-second wall-clock origin for tests (X.509 validity has one-second resolution).
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + secs(1_700_000_000)
}

/// Shorthand for `Duration::from_secs`.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A certificate with its chain PEM and private key.
pub struct Minted {
    pub leaf: Certificate,
    pub chain_pem: String,
    pub key: PrivateKey,
}

/// A CA that signs certificate requests.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new() -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "kubecert-rotation test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// Signs `csr_pem` for `[not_before, not_after]`; returns the leaf and the CA as PEM.
    pub fn sign(&self, csr_pem: &str, not_before: SystemTime, not_after: SystemTime) -> String {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        request.params.not_before = not_before.into();
        request.params.not_after = not_after.into();
        request.params.is_ca = IsCa::ExplicitNoCa;
        let leaf = request.signed_by(&self.issuer).unwrap();
        format!("{}{}", leaf.pem(), self.issuer.pem())
    }

    /// A new P-256 key and a certificate for it that carries `template`.
    pub fn mint(
        &self,
        template: &CertificateTemplate,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Minted {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let chain_pem = self.sign(&build_csr_pem(template, &key).unwrap(), not_before, not_after);
        let leaf = parse_certificates_pem(chain_pem.as_bytes()).unwrap().remove(0);
        Minted { leaf, chain_pem, key }
    }
}

/// [`Ca::mint`] with a fresh CA.
pub fn mint(template: &CertificateTemplate, not_before: SystemTime, not_after: SystemTime) -> Minted {
    Ca::new().mint(template, not_before, not_after)
}
