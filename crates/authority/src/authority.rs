//! CA material: one certificate authority, and which one serves which signer name (SPEC SG-1).
//!
//! Reading the files and noticing that they changed is the signer binary's job; here material is
//! built from bytes, and [`MaterialFingerprint`] tells cheaply whether re-read bytes differ.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubecert_csr::{
    Certificate, KeyAlgorithm, PrivateKey, SIGNER_KUBE_APISERVER_CLIENT,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING, SIGNER_LEGACY_UNKNOWN,
    parse_certificates_pem,
};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::issue::{
    CertificateContents, IssuancePolicy, IssuedCertificate, Randomness, key_identifier, random_serial,
};
use crate::usages::CertificateUsages;
use crate::validation::ValidatedRequest;

/// The signer names a CA can be configured for (SPEC SG-1).
pub const CA_SIGNERS: [&str; 4] = [
    SIGNER_KUBELET_SERVING,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
    SIGNER_KUBE_APISERVER_CLIENT,
    SIGNER_LEGACY_UNKNOWN,
];

/// Lifetime of a CA made by [`CertificateAuthority::generate`]: ten years.
pub const GENERATED_CA_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

/// A SHA-256 over CA certificate and key bytes, to tell whether re-read files changed without
/// parsing them. Not a secret, but it says nothing useful to log either.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaterialFingerprint([u8; 32]);

impl MaterialFingerprint {
    /// The fingerprint of a certificate file's and a key file's bytes.
    pub fn of(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [cert_pem, key_pem] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        Self(out)
    }
}

impl fmt::Debug for MaterialFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = kubecert_csr::hex(&self.0[..8]);
        write!(f, "MaterialFingerprint({hex}…)")
    }
}

/// A CA certificate and its private key, checked to belong together.
///
/// `Debug` never shows the key.
pub struct CertificateAuthority {
    certificate: Certificate,
    certificate_pem: String,
    key: PrivateKey,
    issuer_der: Vec<u8>,
    key_id: Vec<u8>,
    fingerprint: MaterialFingerprint,
    chain: Vec<Certificate>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.certificate.subject.common_name)
            .field("not_after", &self.certificate.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads a CA from the contents of its certificate file (exactly one `CERTIFICATE` block,
    /// which must be a CA certificate) and its key file (the private half of that certificate).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let fingerprint = MaterialFingerprint::of(cert_pem, key_pem);
        let mut certificates =
            parse_certificates_pem(cert_pem).map_err(|e| Error::ca(format!("CA certificate: {e}")))?;
        if certificates.len() != 1 {
            return Err(Error::ca(format!(
                "the CA certificate file must hold exactly one certificate, it holds {}",
                certificates.len()
            )));
        }
        let certificate = certificates.remove(0);
        if !certificate.is_ca {
            return Err(Error::ca(
                "the CA certificate is not a CA certificate (basic constraints CA:TRUE missing)",
            ));
        }
        let key = PrivateKey::from_pem(key_pem).map_err(|e| Error::ca(format!("CA key: {e}")))?;
        if !certificate.matches_key(&key) {
            return Err(Error::ca("the CA key does not belong to the CA certificate"));
        }
        let (_, parsed) = X509Certificate::from_der(&certificate.der)
            .map_err(|e| Error::ca(format!("CA certificate: {e}")))?;
        let subject_key_id = parsed.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
        let key_id = match subject_key_id {
            Some(id) => id,
            None => key_identifier(&certificate.public_key.spki_der).map_err(Error::ca)?,
        };
        let issuer_der = parsed.subject().as_raw().to_vec();
        Ok(Self {
            certificate_pem: certificate.to_pem(),
            certificate,
            key,
            issuer_der,
            key_id,
            fingerprint,
            chain: Vec::new(),
        })
    }

    /// A new self-signed CA for a first start: ECDSA P-256 key, common name `common_name`,
    /// CA:TRUE, key usages certificate signing, CRL signing and digital signature, valid from
    /// `now` for ten years, random serial.
    pub fn generate(common_name: &str, now: SystemTime, rng: &dyn Randomness) -> Result<Self, Error> {
        Self::generate_with(KeyAlgorithm::EcdsaP256, common_name, now, rng)
    }

    /// [`generate`](Self::generate) with a key of `algorithm` (e.g. ML-DSA-65 for
    /// `kubecert.io/node-identity`, feature `ml-dsa`).
    pub fn generate_with(
        algorithm: KeyAlgorithm,
        common_name: &str,
        now: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<Self, Error> {
        Self::generate_root_with(algorithm, common_name, now, now + GENERATED_CA_LIFETIME, rng)
    }

    /// A new self-signed CA as [`CertificateAuthority::generate`] makes it, valid
    /// `not_before..not_after`.
    pub fn generate_root(
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<Self, Error> {
        Self::generate_root_with(KeyAlgorithm::EcdsaP256, common_name, not_before, not_after, rng)
    }

    fn generate_root_with(
        algorithm: KeyAlgorithm,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<Self, Error> {
        let key = PrivateKey::generate(algorithm).map_err(|e| Error::ca(format!("CA key: {e}")))?;
        let params = root_params(common_name, not_before, not_after, &key, rng)?;
        let certificate = params
            .self_signed(key.rcgen_key_pair())
            .map_err(|e| Error::Signing(format!("self-signing the CA: {e}")))?;
        Self::from_pem(certificate.pem().as_bytes(), key.to_pem().as_bytes())
    }

    /// The next CA generation: a new key and self-signed root valid `not_before..not_after`
    /// named `common_name`, and a cross-certificate of that root signed by this CA (same subject,
    /// key and key identifier as the new root; valid until `cross_not_after`, which must not be
    /// after this CA's NotAfter). A client that trusts only this CA verifies the new CA's leaves
    /// through the cross-certificate. Returns the new CA and the cross-certificate.
    pub fn successor(
        &self,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
        cross_not_after: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<(Self, Certificate), Error> {
        if cross_not_after > self.certificate.not_after {
            return Err(Error::ca("the cross-certificate would outlive the CA that signs it"));
        }
        let successor = Self::generate_root(common_name, not_before, not_after, rng)?;
        let mut params = root_params(common_name, not_before, cross_not_after, &successor.key, rng)?;
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(successor.key_id.clone());
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &rustls_pki_types::CertificateDer::from(self.certificate.der.as_slice()),
            self.key.rcgen_key_pair(),
        )
        .map_err(|e| Error::Signing(format!("reading the signing CA: {e}")))?;
        let cross = params
            .signed_by(successor.key.rcgen_key_pair(), &issuer)
            .map_err(|e| Error::Signing(format!("cross-signing the new CA: {e}")))?;
        let cross = Certificate::from_der(cross.der())
            .map_err(|e| Error::Signing(format!("the cross-certificate does not parse back: {e}")))?;
        // Verifiers match names byte for byte: the re-encoded issuer name must be this CA's.
        if cross.issuer_der != self.certificate.subject.der
            || cross.subject.der != successor.certificate.subject.der
        {
            return Err(Error::ca(
                "the CA's subject name does not re-encode to the same bytes; cannot cross-sign with it",
            ));
        }
        Ok((successor, cross))
    }

    /// This CA, sending `chain` (e.g. its cross-certificate) after every leaf it issues.
    pub fn with_chain(mut self, chain: Vec<Certificate>) -> Self {
        self.chain = chain;
        self
    }

    /// The certificates sent after every leaf (none unless [`CertificateAuthority::with_chain`]).
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The CA certificate, parsed.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The CA certificate as one PEM block (what a `ca.crt` file or kubeconfig holds).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The algorithm of the CA key (what its signatures are).
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }

    /// The CA key as PEM, for writing the key file of a generated CA. Never log it.
    pub fn private_key_pem(&self) -> &str {
        self.key.to_pem()
    }

    /// The fingerprint of the bytes this CA was loaded from (or, for a generated CA, of its PEM
    /// encodings).
    pub fn fingerprint(&self) -> MaterialFingerprint {
        self.fingerprint
    }

    /// Issues a certificate for a validated request (SPEC SG-4…SG-6): lifetime from
    /// `expiration_seconds` and `policy`, random serial, the request's subject, SANs and public
    /// key, nothing else from the request; CA:FALSE; key usage and extended key usage from the
    /// usages; subject and authority key identifiers; NotAfter capped at the CA's.
    pub fn issue(
        &self,
        request: &ValidatedRequest<'_>,
        expiration_seconds: Option<i32>,
        policy: &IssuancePolicy,
        now: SystemTime,
        rng: &dyn Randomness,
    ) -> Result<IssuedCertificate, Error> {
        let validity =
            policy.validity(now, policy.duration(expiration_seconds), self.certificate.not_after)?;
        let info = request.info;
        let contents = CertificateContents {
            serial: random_serial(rng)?,
            validity,
            issuer_der: &self.issuer_der,
            authority_key_id: &self.key_id,
            subject: &request.subject,
            spki_der: &info.public_key.spki_der,
            usages: CertificateUsages::from_usages(&request.usages),
            dns_names: &info.dns_names,
            email_addresses: &info.email_addresses,
            ip_addresses: &info.ip_addresses,
            uris: &info.uris,
        };
        let der = contents.sign(self.key.rcgen_key_pair())?;
        Ok(IssuedCertificate::new(der, &contents, &self.chain))
    }
}

/// A root CA's parameters: CA:TRUE, certificate and CRL signing plus digital signature, the
/// given validity, random serial.
fn root_params(
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    key: &PrivateKey,
    rng: &dyn Randomness,
) -> Result<rcgen::CertificateParams, Error> {
    let datetime = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or_else(|| Error::TimeOutOfRange(format!("CA validity {t:?}")))
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = datetime(not_before)?;
    params.not_after = datetime(not_after)?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial(rng)?));
    params.key_identifier_method =
        rcgen::KeyIdMethod::PreSpecified(key_identifier(key.public_key_der()).map_err(Error::ca)?);
    Ok(params)
}

/// Refuses an ML-DSA CA for a `kubernetes.io/*` signer name: the Kubernetes components could
/// not verify what it signs (the signer refuses ML-DSA leaves for those names too).
fn for_kubernetes(signer: &str, ca: &CertificateAuthority) -> Result<(), Error> {
    #[cfg(feature = "ml-dsa")]
    if ca.key_algorithm() == KeyAlgorithm::MlDsa65 {
        return Err(Error::CaMaterial {
            detail: "an ML-DSA-65 CA; Kubernetes components cannot verify ML-DSA signatures yet, so \
                     kubernetes.io signer names need an ECDSA, Ed25519 or RSA CA"
                .into(),
            signer: Some(signer.to_owned()),
        });
    }
    #[cfg(not(feature = "ml-dsa"))]
    let _ = (signer, ca);
    Ok(())
}

/// Which CA signs for which signer name (SPEC SG-1): one CA for every name in [`CA_SIGNERS`], or
/// one per signer name for those that have one.
#[derive(Clone, Debug, Default)]
pub struct SignerAuthorities {
    by_signer: BTreeMap<String, Arc<CertificateAuthority>>,
}

impl SignerAuthorities {
    /// One CA for all four signer names (not an ML-DSA one: see [`for_kubernetes`]).
    pub fn shared(ca: CertificateAuthority) -> Result<Self, Error> {
        for_kubernetes(CA_SIGNERS[0], &ca)?;
        let ca = Arc::new(ca);
        Ok(Self { by_signer: CA_SIGNERS.iter().map(|s| (s.to_string(), ca.clone())).collect() })
    }

    /// A CA per signer name; names not listed have no signer. Each name must be in [`CA_SIGNERS`]
    /// or, with feature `ml-dsa`, be `kubecert.io/node-identity` with an ML-DSA-65 CA.
    pub fn per_signer(cas: impl IntoIterator<Item = (String, CertificateAuthority)>) -> Result<Self, Error> {
        let mut by_signer = BTreeMap::new();
        for (signer, ca) in cas {
            #[cfg(feature = "ml-dsa")]
            if signer == kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY {
                if ca.key_algorithm() != KeyAlgorithm::MlDsa65 {
                    return Err(Error::CaMaterial {
                        detail: format!(
                            "an {} CA; this signer name needs an ML-DSA-65 CA",
                            ca.key_algorithm()
                        ),
                        signer: Some(signer),
                    });
                }
                by_signer.insert(signer, Arc::new(ca));
                continue;
            }
            if !CA_SIGNERS.contains(&signer.as_str()) {
                return Err(Error::CaMaterial {
                    detail: format!("no such signer; CA files can be given for {}", CA_SIGNERS.join(", ")),
                    signer: Some(signer),
                });
            }
            for_kubernetes(&signer, &ca)?;
            by_signer.insert(signer, Arc::new(ca));
        }
        Ok(Self { by_signer })
    }

    /// SPEC SG-1 as configured: a shared CA, or per-signer CAs, but not both. Neither gives an
    /// empty set (no signer runs).
    pub fn from_parts(
        shared: Option<CertificateAuthority>,
        per_signer: impl IntoIterator<Item = (String, CertificateAuthority)>,
    ) -> Result<Self, Error> {
        let per_signer = Self::per_signer(per_signer)?;
        match shared {
            None => Ok(per_signer),
            Some(_) if !per_signer.is_empty() => {
                Err(Error::MixedCaConfiguration(per_signer.signer_names().collect::<Vec<_>>().join(", ")))
            }
            Some(ca) => Self::shared(ca),
        }
    }

    /// The CA for `signer_name`, if this signer handles it.
    pub fn get(&self, signer_name: &str) -> Option<&Arc<CertificateAuthority>> {
        self.by_signer.get(signer_name)
    }

    /// The signer names that have a CA.
    pub fn signer_names(&self) -> impl Iterator<Item = &str> {
        self.by_signer.keys().map(String::as_str)
    }

    /// Whether no signer name has a CA.
    pub fn is_empty(&self) -> bool {
        self.by_signer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use kubecert_csr::KeyUsage;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    use super::*;
    use crate::test_support::{node_client, request, strings};
    use crate::validation::validate_for_signer;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rng() -> aws_lc_rs::rand::SystemRandom {
        aws_lc_rs::rand::SystemRandom::new()
    }

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("kubecert-test-ca", at(T0), &rng()).unwrap()
    }

    fn ca_error(cert: &[u8], key: &[u8]) -> String {
        CertificateAuthority::from_pem(cert, key).unwrap_err().to_string()
    }

    #[test]
    fn generated_ca_is_a_ten_year_p256_ca_that_reloads_from_its_pem() {
        let ca = ca();
        let cert = ca.certificate();
        assert!(cert.is_ca);
        assert_eq!(cert.subject.common_name.as_deref(), Some("kubecert-test-ca"));
        assert_eq!(cert.not_before, at(T0));
        assert_eq!(cert.not_after, at(T0) + GENERATED_CA_LIFETIME);
        assert_eq!(cert.public_key.algorithm, kubecert_csr::PublicKeyAlgorithm::EcdsaP256);
        for usage in [KeyUsage::CertSign, KeyUsage::CrlSign, KeyUsage::DigitalSignature] {
            assert!(cert.key_usage.contains(&usage), "{usage} missing");
        }
        let reloaded =
            CertificateAuthority::from_pem(ca.certificate_pem().as_bytes(), ca.private_key_pem().as_bytes())
                .unwrap();
        assert_eq!(reloaded.fingerprint(), ca.fingerprint());
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn ca_material_errors_say_what_is_wrong() {
        let a = ca();
        let b = ca();
        let (cert, key) = (a.certificate_pem().as_bytes(), a.private_key_pem().as_bytes());
        assert!(
            ca_error(cert, b.private_key_pem().as_bytes()).contains("does not belong to the CA certificate")
        );
        let two = format!("{}{}", a.certificate_pem(), b.certificate_pem());
        assert!(ca_error(two.as_bytes(), key).contains("exactly one certificate, it holds 2"));
        assert!(ca_error(b"garbage", key).contains("CA certificate"));
        assert!(ca_error(cert, b"garbage").contains("CA key"));
        // A leaf issued by the CA is not a CA certificate.
        let request = node_client("a");
        let info = request.info();
        let validated =
            validate_for_signer(kubecert_csr::SIGNER_LEGACY_UNKNOWN, &info, &strings(&["client auth"]))
                .unwrap();
        let leaf = a.issue(&validated, None, &IssuancePolicy::default(), at(T0 + 60), &rng()).unwrap();
        assert!(ca_error(leaf.pem().as_bytes(), key).contains("not a CA certificate"));
    }

    fn verifies_under(cert_der: &[u8], issuer_der: &[u8]) -> bool {
        let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
        let (_, issuer) = X509Certificate::from_der(issuer_der).unwrap();
        cert.verify_signature(Some(issuer.public_key())).is_ok()
    }

    #[test]
    fn a_successor_is_cross_signed_and_its_leaves_chain_to_either_root() {
        let old = ca();
        let (start, end) = (at(T0 + 1000), at(T0 + 1000) + GENERATED_CA_LIFETIME);
        let cross_end = old.certificate().not_after;
        let (new, cross) = old.successor("kubecert-ca generation 2", start, end, cross_end, &rng()).unwrap();
        let root = new.certificate().clone();
        assert!(root.is_ca && cross.is_ca);
        assert_eq!((root.not_before, root.not_after), (start, end));
        assert_eq!((cross.not_before, cross.not_after), (start, cross_end));
        assert_eq!(cross.subject.der, root.subject.der, "same subject as the new root");
        assert_eq!(cross.public_key.spki_der, root.public_key.spki_der, "same key");
        assert_eq!(cross.issuer_der, old.certificate().subject.der);
        let ski = |der: &[u8]| {
            extensions_of(der).into_iter().find_map(|(_, _, e)| match e {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
        };
        assert_eq!(ski(&cross.der), Some(new.key_id.clone()), "same key id as the new root");
        assert!(verifies_under(&cross.der, &old.certificate().der), "signed by the old key");
        assert!(verifies_under(&root.der, &root.der), "the new root is self-signed");

        let new = new.with_chain(vec![cross.clone()]);
        let info = node_client("a").info();
        let validated =
            validate_for_signer(SIGNER_LEGACY_UNKNOWN, &info, &strings(&["client auth"])).unwrap();
        let issued = new.issue(&validated, None, &IssuancePolicy::default(), at(T0 + 2000), &rng()).unwrap();
        let blocks = parse_certificates_pem(issued.pem().as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2, "leaf + cross-certificate");
        assert_eq!(blocks[1].der, cross.der);
        let leaf = issued.certificate().unwrap();
        assert_eq!(leaf.issuer_der, cross.subject.der);
        assert!(verifies_under(&leaf.der, &cross.der) && verifies_under(&leaf.der, &root.der));

        // A cross-certificate may not outlive its signer.
        let err = old.successor("x", start, end, cross_end + Duration::from_secs(1), &rng()).unwrap_err();
        assert!(err.to_string().contains("would outlive"), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_either_file() {
        let f = MaterialFingerprint::of(b"cert", b"key");
        assert_eq!(f, MaterialFingerprint::of(b"cert", b"key"));
        assert_ne!(f, MaterialFingerprint::of(b"cert2", b"key"));
        assert_ne!(f, MaterialFingerprint::of(b"cert", b"key2"));
        assert_ne!(MaterialFingerprint::of(b"ab", b"c"), MaterialFingerprint::of(b"a", b"bc"));
    }

    #[test]
    fn signer_authorities_follow_sg1() {
        let shared = SignerAuthorities::shared(ca()).unwrap();
        assert_eq!(shared.signer_names().count(), 4);
        assert!(Arc::ptr_eq(
            shared.get(SIGNER_KUBELET_SERVING).unwrap(),
            shared.get(SIGNER_LEGACY_UNKNOWN).unwrap()
        ));

        let per = SignerAuthorities::from_parts(None, [(SIGNER_KUBELET_SERVING.to_string(), ca())]).unwrap();
        assert_eq!(per.signer_names().collect::<Vec<_>>(), [SIGNER_KUBELET_SERVING]);
        assert!(per.get(SIGNER_KUBE_APISERVER_CLIENT_KUBELET).is_none(), "signers without files are skipped");

        let mixed = SignerAuthorities::from_parts(Some(ca()), [(SIGNER_KUBELET_SERVING.to_string(), ca())]);
        assert!(matches!(mixed, Err(Error::MixedCaConfiguration(_))));
        let unknown = SignerAuthorities::per_signer([("example.com/x".to_string(), ca())]).unwrap_err();
        assert!(unknown.to_string().contains("\"example.com/x\""));
        assert!(SignerAuthorities::from_parts(None, []).unwrap().is_empty());
        assert_eq!(SignerAuthorities::from_parts(Some(ca()), []).unwrap().signer_names().count(), 4);
    }

    fn extensions_of(der: &[u8]) -> Vec<(String, bool, ParsedExtension<'_>)> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.critical, e.parsed_extension().clone()))
            .collect()
    }

    #[test]
    fn issued_certificate_takes_nothing_from_the_request_but_subject_sans_and_key() {
        let ca = ca();
        let request = request(kubecert_csr::KeyAlgorithm::EcdsaP384, "alice", &["devs", "ops"])
            .dns(&["a.example"])
            .ips(&["10.0.0.1", "fd00::1"])
            .emails(&["alice@example.com"])
            .uris(&["spiffe://cluster/alice"])
            .hostile_extensions();
        let info = request.info();
        assert!(info.requested_basic_constraints.is_some_and(|bc| bc.ca));
        let usages = strings(&[
            "client auth",
            "digital signature",
            "s/mime",
            "any",
            "email protection",
            "server auth",
        ]);
        let validated = validate_for_signer(SIGNER_LEGACY_UNKNOWN, &info, &usages).unwrap();
        let issued =
            ca.issue(&validated, Some(3600), &IssuancePolicy::default(), at(T0 + 60), &rng()).unwrap();
        let cert = issued.certificate().unwrap();

        assert!(!cert.is_ca);
        assert_eq!(
            cert.key_usage,
            [
                KeyUsage::DigitalSignature,
                KeyUsage::Any,
                KeyUsage::ServerAuth,
                KeyUsage::ClientAuth,
                KeyUsage::EmailProtection
            ]
        );
        assert_eq!(cert.subject.der, info.subject.der, "whole subject copied");
        assert_eq!(cert.subject.organizations, ["devs", "ops"]);
        let (_, parsed) = X509Certificate::from_der(&cert.der).unwrap();
        assert_eq!(parsed.issuer().as_raw(), &ca.issuer_der[..], "issuer is the CA's subject, byte for byte");
        assert_eq!(cert.public_key.spki_der, info.public_key.spki_der);
        assert_eq!(cert.dns_names, ["a.example"]);
        assert_eq!(cert.ip_addresses, info.ip_addresses);
        assert_eq!(cert.email_addresses, ["alice@example.com"]);
        assert_eq!(cert.uris, ["spiffe://cluster/alice"]);
        assert_eq!(cert.not_before, at(T0 + 60 - 300));
        assert_eq!(cert.not_after, at(T0 + 60 + 3600));
        assert_eq!(cert.serial_hex.len(), 32, "16 bytes, positive without padding");
        assert!(u8::from_str_radix(&cert.serial_hex[..2], 16).unwrap() < 0x80);
        assert!(issued.pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(issued.pem().matches("BEGIN").count(), 1);
        assert_eq!(
            kubecert_csr::parse_certificates_pem(issued.pem().as_bytes()).unwrap(),
            std::slice::from_ref(&cert),
            "the PEM holds the DER"
        );
        // What the signer reports without parsing is what the certificate says.
        assert_eq!(issued.der(), cert.der);
        assert_eq!(issued.serial_hex(), cert.serial_hex);
        assert_eq!(issued.not_after(), cert.not_after);
        assert_eq!(Some(issued.common_name()), cert.subject.common_name.as_deref());

        let extensions = extensions_of(&cert.der);
        let oids: Vec<&str> = extensions.iter().map(|(oid, _, _)| oid.as_str()).collect();
        assert_eq!(oids, ["2.5.29.15", "2.5.29.37", "2.5.29.19", "2.5.29.14", "2.5.29.35", "2.5.29.17"]);
        for (oid, critical, parsed) in &extensions {
            match parsed {
                ParsedExtension::KeyUsage(ku) => {
                    assert!(*critical);
                    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    assert!(eku.any && eku.server_auth && eku.client_auth && eku.email_protection);
                    assert!(!eku.code_signing);
                }
                ParsedExtension::BasicConstraints(bc) => {
                    assert!(*critical && !bc.ca && bc.path_len_constraint.is_none())
                }
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    assert_eq!(id.0, crate::issue::key_identifier(&info.public_key.spki_der).unwrap());
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    assert_eq!(aki.key_identifier.as_ref().unwrap().0, &ca.key_id[..]);
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    assert!(!critical);
                    assert!(matches!(san.general_names[0], GeneralName::DNSName("a.example")));
                    assert!(matches!(san.general_names[1], GeneralName::RFC822Name("alice@example.com")));
                }
                other => panic!("unexpected extension {oid}: {other:?}"),
            }
        }
        // EKUs are written in Go's enum order.
        let eku = parsed.extensions().iter().find(|e| e.oid.to_id_string() == "2.5.29.37").unwrap();
        let expected = yasna::construct_der(|w| {
            w.write_sequence(|s| {
                for arcs in [
                    &[2u64, 5, 29, 37, 0][..],
                    &[1, 3, 6, 1, 5, 5, 7, 3, 1],
                    &[1, 3, 6, 1, 5, 5, 7, 3, 2],
                    &[1, 3, 6, 1, 5, 5, 7, 3, 4],
                ] {
                    s.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(arcs));
                }
            })
        });
        assert_eq!(eku.value, &expected[..]);
    }

    #[test]
    fn serials_differ_and_an_empty_subject_makes_sans_critical() {
        let ca = ca();
        let info = node_client("a").ips(&["10.0.0.1"]).info();
        let validated =
            validate_for_signer(SIGNER_LEGACY_UNKNOWN, &info, &strings(&["server auth"])).unwrap();
        let policy = IssuancePolicy::default();
        let one = ca.issue(&validated, None, &policy, at(T0 + 60), &rng()).unwrap();
        let two = ca.issue(&validated, None, &policy, at(T0 + 60), &rng()).unwrap();
        assert_ne!(one.serial_hex(), two.serial_hex());
        assert_eq!(one.not_after(), at(T0 + 60) + crate::DEFAULT_TTL - crate::DEFAULT_BACKDATE);

        let anonymous = request(kubecert_csr::KeyAlgorithm::Ed25519, "x", &[]).ips(&["10.0.0.2"]);
        let mut info = anonymous.info();
        info.subject.der = yasna::construct_der(|w| w.write_sequence(|_| {}));
        let validated =
            validate_for_signer(SIGNER_LEGACY_UNKNOWN, &info, &strings(&["server auth"])).unwrap();
        let issued = ca.issue(&validated, None, &policy, at(T0 + 60), &rng()).unwrap();
        let san = extensions_of(issued.der()).into_iter().find(|(oid, _, _)| oid == "2.5.29.17").unwrap();
        assert!(san.1, "SAN is critical when the subject is empty");
    }

    #[test]
    fn issuing_past_the_ca_is_refused_and_near_it_is_capped() {
        let ca = ca();
        let info = node_client("a").info();
        let validated =
            validate_for_signer(SIGNER_LEGACY_UNKNOWN, &info, &strings(&["client auth"])).unwrap();
        let policy = IssuancePolicy::default();
        let end = ca.certificate().not_after;
        let capped = ca.issue(&validated, None, &policy, end - Duration::from_secs(3600), &rng()).unwrap();
        assert_eq!(capped.not_after(), end);
        assert!(matches!(ca.issue(&validated, None, &policy, end, &rng()), Err(Error::CaExpired { .. })));
    }
}
