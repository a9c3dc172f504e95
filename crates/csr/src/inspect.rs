//! Reading certificates and certificate requests from untrusted bytes.
//!
//! Everything here returns owned values (no borrowed parser types leak out) and reports bad input
//! as [`Error`]; the property tests below feed it random and mutated bytes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey as ParsedPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{Error, KeyUsage, PrivateKey};

/// The subject (or issuer) name of a certificate or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The common name as Go's `pkix.Name` reads it: the last CN attribute, if any. (Policy code
    /// should refuse names with several CNs; `kubecert-authority` does.)
    pub common_name: Option<String>,
    /// Every organization that decodes as a string, in order. Attributes in other encodings are
    /// left out here; `kubecert-authority` refuses such subjects outright.
    pub organizations: Vec<String>,
    /// The name as DER, for exact comparison.
    pub der: Vec<u8>,
}

/// The algorithm of a public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKeyAlgorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size.
        bits: usize,
    },
    /// ML-DSA (FIPS 204, post-quantum) at one of its parameter sets: 44, 65 or 87.
    MlDsa {
        /// The parameter set.
        level: u16,
    },
    /// Anything else (another curve, DSA, …), by OID (and curve OID for EC keys).
    Other {
        /// Dotted algorithm OID, e.g. `1.2.840.10045.2.1/1.3.132.0.35` for P-521.
        oid: String,
    },
}

/// A public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// Its algorithm.
    pub algorithm: PublicKeyAlgorithm,
    /// DER `SubjectPublicKeyInfo`.
    pub spki_der: Vec<u8>,
}

/// A basic-constraints extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BasicConstraints {
    /// `cA`.
    pub ca: bool,
    /// `pathLenConstraint`.
    pub path_len: Option<u32>,
}

/// Subject alternative names, sorted by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AltNames {
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    email_addresses: Vec<String>,
    uris: Vec<String>,
}

/// The extensions this crate interprets, from a certificate or a request.
#[derive(Default)]
struct Extensions {
    alt_names: AltNames,
    basic_constraints: Option<BasicConstraints>,
    key_usage: Vec<KeyUsage>,
}

/// A parsed X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The certificate as DER.
    pub der: Vec<u8>,
    /// Its subject.
    pub subject: Subject,
    /// Its issuer, as a display string.
    pub issuer: String,
    /// Its issuer name as DER (compare with the CA's `subject.der`).
    pub issuer_der: Vec<u8>,
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email subject alternative names.
    pub email_addresses: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// The certified public key.
    pub public_key: PublicKey,
    /// Whether basic constraints say `CA:TRUE`.
    pub is_ca: bool,
    /// Key usage and extended key usage, in Kubernetes vocabulary.
    pub key_usage: Vec<KeyUsage>,
}

impl Certificate {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        Self::parse(der, 0)
    }

    fn parse(der: &[u8], index: usize) -> Result<Self, Error> {
        let bad = |detail: String| Error::Certificate { index, detail };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(format!("not DER X.509: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes after the certificate", rest.len())));
        }
        let extensions =
            interpret_extensions(cert.extensions().iter().map(|e| e.parsed_extension())).map_err(bad)?;
        let validity = cert.validity();
        Ok(Self {
            der: der.to_vec(),
            subject: subject(cert.subject()),
            issuer: cert.issuer().to_string(),
            issuer_der: cert.issuer().as_raw().to_vec(),
            serial_hex: hex(cert.tbs_certificate.raw_serial()),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            dns_names: extensions.alt_names.dns_names,
            ip_addresses: extensions.alt_names.ip_addresses,
            email_addresses: extensions.alt_names.email_addresses,
            uris: extensions.alt_names.uris,
            public_key: public_key(cert.public_key()),
            is_ca: extensions.basic_constraints.is_some_and(|b| b.ca),
            key_usage: extensions.key_usage,
        })
    }

    /// Whether `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &PrivateKey) -> bool {
        self.public_key.spki_der == key.public_key_der()
    }

    /// The certificate as one `CERTIFICATE` PEM block.
    pub fn to_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }

    /// Whether `now` is past the end of validity (the kubelet's notion of expired).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }
}

/// Every `CERTIFICATE` block of `pem`, in order (leaf first in a chain). Other blocks, such as
/// the private key of a combined pair file, are skipped. No certificate at all is an error.
pub fn parse_certificates_pem(pem: &[u8]) -> Result<Vec<Certificate>, Error> {
    let mut certificates = Vec::new();
    for (index, der) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = der.map_err(|e| Error::Pem { what: "certificate", detail: e.to_string() })?;
        certificates.push(Certificate::parse(&der, index)?);
    }
    if certificates.is_empty() {
        return Err(Error::Pem { what: "certificate", detail: "no CERTIFICATE block found".into() });
    }
    Ok(certificates)
}

/// A parsed PKCS#10 request whose self-signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrInfo {
    /// The request as DER.
    pub der: Vec<u8>,
    /// The requested subject.
    pub subject: Subject,
    /// Requested DNS names.
    pub dns_names: Vec<String>,
    /// Requested IP addresses.
    pub ip_addresses: Vec<IpAddr>,
    /// Requested email addresses.
    pub email_addresses: Vec<String>,
    /// Requested URIs.
    pub uris: Vec<String>,
    /// The public key to certify.
    pub public_key: PublicKey,
    /// Basic constraints the requester asked for (a signer must ignore them).
    pub requested_basic_constraints: Option<BasicConstraints>,
    /// Key usages the requester put in the request's extensions (a signer must ignore them:
    /// `spec.usages` is what counts).
    pub requested_key_usage: Vec<KeyUsage>,
}

/// Parses the first PEM block of `pem`, which must be a `CERTIFICATE REQUEST`, and verifies its
/// self-signature (as the API server does for `spec.request`).
pub fn parse_csr_pem(pem: &[u8]) -> Result<CsrInfo, Error> {
    let bad_pem = |detail: String| Error::Pem { what: "certificate request", detail };
    match <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).next() {
        Some(Ok((SectionKind::Csr, der))) => parse_csr_der(&der),
        Some(Ok((kind, _))) => Err(bad_pem(format!("expected a CERTIFICATE REQUEST block, found {kind:?}"))),
        Some(Err(e)) => Err(bad_pem(e.to_string())),
        None => Err(bad_pem("no PEM block found".into())),
    }
}

/// Parses a DER PKCS#10 request and verifies its self-signature.
pub fn parse_csr_der(der: &[u8]) -> Result<CsrInfo, Error> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| Error::csr(format!("not DER PKCS#10: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::csr(format!("{} trailing bytes after the request", rest.len())));
    }
    let info = &csr.certification_request_info;
    match ml_dsa_level(&csr.signature_algorithm.algorithm) {
        // x509-parser verifies the classical algorithms only.
        Some(level) => verify_ml_dsa(level, &info.subject_pki, info.raw, &csr.signature_value.data)?,
        None => csr
            .verify_signature()
            .map_err(|e| Error::Signature { what: "certificate request", detail: e.to_string() })?,
    }
    let extensions = match csr.requested_extensions() {
        Some(requested) => interpret_extensions(requested).map_err(Error::csr)?,
        None => Extensions::default(),
    };
    Ok(CsrInfo {
        der: der.to_vec(),
        subject: subject(&info.subject),
        dns_names: extensions.alt_names.dns_names,
        ip_addresses: extensions.alt_names.ip_addresses,
        email_addresses: extensions.alt_names.email_addresses,
        uris: extensions.alt_names.uris,
        public_key: public_key(&info.subject_pki),
        requested_basic_constraints: extensions.basic_constraints,
        requested_key_usage: extensions.key_usage,
    })
}

fn subject(name: &X509Name<'_>) -> Subject {
    let strings = |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        iter.filter_map(|attr| attr.as_str().ok().map(str::to_owned)).collect::<Vec<_>>()
    };
    Subject {
        common_name: strings(&mut name.iter_common_name()).pop(),
        organizations: strings(&mut name.iter_organization()),
        der: name.as_raw().to_vec(),
    }
}

fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> PublicKey {
    let oid = &spki.algorithm.algorithm;
    let algorithm = if *oid == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == oid_registry::OID_EC_P256 => PublicKeyAlgorithm::EcdsaP256,
            Some(c) if c == oid_registry::OID_NIST_EC_P384 => PublicKeyAlgorithm::EcdsaP384,
            other => PublicKeyAlgorithm::Other {
                oid: format!("{oid}/{}", other.map(|c| c.to_id_string()).unwrap_or_default()),
            },
        }
    } else if *oid == oid_registry::OID_SIG_ED25519 {
        PublicKeyAlgorithm::Ed25519
    } else if let Some(level) = ml_dsa_level(oid) {
        PublicKeyAlgorithm::MlDsa { level }
    } else {
        match spki.parsed() {
            Ok(ParsedPublicKey::RSA(rsa)) => PublicKeyAlgorithm::Rsa { bits: rsa.key_size() },
            _ => PublicKeyAlgorithm::Other { oid: oid.to_id_string() },
        }
    };
    PublicKey { algorithm, spki_der: spki.raw.to_vec() }
}

/// The ML-DSA parameter set an algorithm OID names (id-ml-dsa-44/65/87, RFC 9881; the same OID
/// names the key and the signature), if it is one.
fn ml_dsa_level(oid: &oid_registry::Oid<'_>) -> Option<u16> {
    const ML_DSA: [(oid_registry::Oid<'static>, u16); 3] = [
        (x509_parser::der_parser::oid!(2.16.840.1.101.3.4.3.17), 44),
        (x509_parser::der_parser::oid!(2.16.840.1.101.3.4.3.18), 65),
        (x509_parser::der_parser::oid!(2.16.840.1.101.3.4.3.19), 87),
    ];
    ML_DSA.iter().find(|(known, _)| known == oid).map(|(_, level)| *level)
}

/// Verifies an ML-DSA self-signature: the key must be of the signature's parameter set.
fn verify_ml_dsa(
    level: u16,
    spki: &SubjectPublicKeyInfo<'_>,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let bad = |detail: String| Error::Signature { what: "certificate request", detail };
    if ml_dsa_level(&spki.algorithm.algorithm) != Some(level) {
        return Err(bad(format!("an ML-DSA-{level} signature over a key of another algorithm")));
    }
    let algorithm = match level {
        44 => &aws_lc_rs::signature::ML_DSA_44,
        65 => &aws_lc_rs::signature::ML_DSA_65,
        _ => &aws_lc_rs::signature::ML_DSA_87,
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(signed, signature)
        .map_err(|_| bad(format!("the ML-DSA-{level} signature does not verify")))
}

fn interpret_extensions<'a>(
    extensions: impl Iterator<Item = &'a ParsedExtension<'a>>,
) -> Result<Extensions, String> {
    let mut out = Extensions::default();
    for extension in extensions {
        match extension {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    add_alt_name(&mut out.alt_names, name)?;
                }
            }
            ParsedExtension::BasicConstraints(bc) => {
                out.basic_constraints =
                    Some(BasicConstraints { ca: bc.ca, path_len: bc.path_len_constraint });
            }
            ParsedExtension::KeyUsage(ku) => out.key_usage.extend(key_usage_bits(ku)),
            ParsedExtension::ExtendedKeyUsage(eku) => out.key_usage.extend(extended_key_usage(eku)),
            ParsedExtension::ParseError { error } => return Err(format!("malformed extension: {error}")),
            _ => {}
        }
    }
    Ok(out)
}

fn add_alt_name(names: &mut AltNames, name: &GeneralName<'_>) -> Result<(), String> {
    match name {
        GeneralName::DNSName(dns) => names.dns_names.push((*dns).to_owned()),
        GeneralName::RFC822Name(email) => names.email_addresses.push((*email).to_owned()),
        GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
        GeneralName::IPAddress(bytes) => names.ip_addresses.push(match bytes.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|e| e.to_string())?),
            16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(|e| e.to_string())?),
            n => return Err(format!("IP address subjectAltName of {n} bytes")),
        }),
        GeneralName::Invalid(_, _) => return Err("invalid subjectAltName entry".into()),
        // Other name forms carry nothing Kubernetes inspects.
        _ => {}
    }
    Ok(())
}

fn key_usage_bits(ku: &x509_parser::extensions::KeyUsage) -> Vec<KeyUsage> {
    [
        (ku.digital_signature(), KeyUsage::DigitalSignature),
        (ku.non_repudiation(), KeyUsage::ContentCommitment),
        (ku.key_encipherment(), KeyUsage::KeyEncipherment),
        (ku.data_encipherment(), KeyUsage::DataEncipherment),
        (ku.key_agreement(), KeyUsage::KeyAgreement),
        (ku.key_cert_sign(), KeyUsage::CertSign),
        (ku.crl_sign(), KeyUsage::CrlSign),
        (ku.encipher_only(), KeyUsage::EncipherOnly),
        (ku.decipher_only(), KeyUsage::DecipherOnly),
    ]
    .into_iter()
    .filter_map(|(set, usage)| set.then_some(usage))
    .collect()
}

/// Extended key usage OIDs that have no named field in x509-parser.
const OTHER_EKUS: [(&str, KeyUsage); 5] = [
    ("1.3.6.1.5.5.7.3.5", KeyUsage::IpsecEndSystem),
    ("1.3.6.1.5.5.7.3.6", KeyUsage::IpsecTunnel),
    ("1.3.6.1.5.5.7.3.7", KeyUsage::IpsecUser),
    ("1.3.6.1.4.1.311.10.3.3", KeyUsage::MicrosoftSgc),
    ("2.16.840.1.113730.4.1", KeyUsage::NetscapeSgc),
];

fn extended_key_usage(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<KeyUsage> {
    let mut usages: Vec<KeyUsage> = [
        (eku.any, KeyUsage::Any),
        (eku.server_auth, KeyUsage::ServerAuth),
        (eku.client_auth, KeyUsage::ClientAuth),
        (eku.code_signing, KeyUsage::CodeSigning),
        (eku.email_protection, KeyUsage::EmailProtection),
        (eku.time_stamping, KeyUsage::Timestamping),
        (eku.ocsp_signing, KeyUsage::OcspSigning),
    ]
    .into_iter()
    .filter_map(|(set, usage)| set.then_some(usage))
    .collect();
    for oid in &eku.other {
        let dotted = oid.to_id_string();
        usages.extend(OTHER_EKUS.iter().filter(|(o, _)| *o == dotted).map(|(_, usage)| *usage));
    }
    usages
}

/// Lowercase hex without separators, as certificates' serial numbers are shown.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

/// One PEM block of `der` under `label` (`CERTIFICATE`, …), 64 base64 characters a line.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
