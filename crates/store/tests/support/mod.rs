//! Test helpers shared by the unit tests (via `#[path]` in lib.rs) and the integration tests:
//! an rcgen CA issuing leaf certificates for fresh kubecert keys.

#![allow(dead_code, missing_docs)]

use std::time::{Duration, SystemTime};

use kubecert_csr::{KeyAlgorithm, PrivateKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// 2024-03-05T06:07:08Z: a fixed "now" for deterministic file names.
pub const NOW_SECS: u64 = 1_709_618_828;

pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

pub const DAY: Duration = Duration::from_secs(86_400);

/// A certificate chain (leaf, then the CA) and the leaf's key, as PEM.
#[derive(Clone)]
pub struct IssuedPair {
    pub chain_pem: String,
    pub leaf_pem: String,
    pub key_pem: String,
    pub key: PrivateKey,
}

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kubecert test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert_pem = params.self_signed(&key).expect("CA cert").pem();
        Self { issuer: Issuer::new(params, key), cert_pem }
    }

    /// A node client certificate for a fresh P-256 key, valid `not_before..not_after`.
    pub fn issue_valid(&self, node: &str, not_before: SystemTime, not_after: SystemTime) -> IssuedPair {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        params.distinguished_name = dn;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let leaf_pem = params.signed_by(key.rcgen_key_pair(), &self.issuer).expect("sign leaf").pem();
        IssuedPair {
            chain_pem: format!("{leaf_pem}{}", self.cert_pem),
            leaf_pem,
            key_pem: key.to_pem().to_string(),
            key,
        }
    }

    /// Valid from a day before [`now`] to a year after it.
    pub fn issue(&self, node: &str) -> IssuedPair {
        self.issue_valid(node, now() - DAY, now() + 365 * DAY)
    }
}
