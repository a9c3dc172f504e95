//! Private keys: generation, loading from any of the PEM encodings a node may hold, and writing
//! in the encoding the kubelet writes.
//!
//! The crypto provider (aws-lc-rs, through rcgen) is given PKCS#8 alone, so SEC1 and PKCS#1 inputs are
//! re-wrapped as PKCS#8 on the way in, and EC keys are unwrapped to SEC1 (with the curve named, as
//! Go's `x509.MarshalECPrivateKey` writes them) on the way out.
//!
//! With the `ml-dsa` feature, ML-DSA-65 keys (FIPS 204) too, for kubecert's own signer names:
//! generated and loaded with aws-lc-rs directly (rcgen generates them but does not load them).

use std::fmt;
use std::sync::Arc;

use pkcs8::der::asn1::OctetString;
use pkcs8::der::pem::LineEnding;
use pkcs8::der::{Any, Decode, Encode, SecretDocument};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoOwned, PrivateKeyInfoRef};
use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PublicKeyData, SignatureAlgorithm,
    SigningKey,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use sec1::{EcParameters, EcPrivateKey};

use crate::Error;

pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ml-dsa-65 (RFC 9881): the key's and the signature's algorithm.
#[cfg(feature = "ml-dsa")]
const OID_ML_DSA_65: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.18");

/// The kind of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256: the kubelet's default, and ours.
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA (load only: node keys are generated as ECDSA, as the kubelet's). Signs with SHA-256, or SHA-384 from 3072
    /// bits, or SHA-512 from 4096 bits, as Go does for CSRs (SPEC M-11).
    Rsa,
    /// ML-DSA-65 (post-quantum, FIPS 204), feature `ml-dsa`: for kubecert's own signer names
    /// only, since the Kubernetes components cannot verify it yet.
    #[cfg(feature = "ml-dsa")]
    MlDsa65,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::EcdsaP384 => "ECDSA P-384",
            KeyAlgorithm::Ed25519 => "Ed25519",
            KeyAlgorithm::Rsa => "RSA",
            #[cfg(feature = "ml-dsa")]
            KeyAlgorithm::MlDsa65 => "ML-DSA-65",
        })
    }
}

/// A private key that can sign CSRs and TLS handshakes.
///
/// `Debug` shows the algorithm only; the secret never appears in logs.
#[derive(Clone)]
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    material: Arc<Material>,
    public_key_der: Vec<u8>,
    pem: Arc<str>,
}

/// What signs.
enum Material {
    /// Every classical key, through rcgen.
    Rcgen(KeyPair),
    /// An ML-DSA-65 key and its PKCS#8 encoding.
    #[cfg(feature = "ml-dsa")]
    MlDsa(aws_lc_rs::signature::PqdsaKeyPair, Vec<u8>),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A fresh key of the given algorithm. RSA is refused: nodes generate ECDSA or Ed25519 keys.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, Error> {
        let signature_algorithm: &'static SignatureAlgorithm = match algorithm {
            #[cfg(feature = "ml-dsa")]
            KeyAlgorithm::MlDsa65 => {
                let pair =
                    aws_lc_rs::signature::PqdsaKeyPair::generate(&aws_lc_rs::signature::ML_DSA_65_SIGNING)
                        .map_err(|_| Error::key("generating an ML-DSA-65 key failed"))?;
                return Self::ml_dsa(pair);
            }
            KeyAlgorithm::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &PKCS_ED25519,
            KeyAlgorithm::Rsa => {
                return Err(Error::Unsupported(
                    "generating RSA keys (load an existing RSA key, or use ECDSA P-256)".into(),
                ));
            }
        };
        let key_pair = KeyPair::generate_for(signature_algorithm).map_err(Error::key)?;
        Self::from_parts(algorithm, key_pair)
    }

    /// Loads the first private key in `pem`: SEC1 (`EC PRIVATE KEY`, as the kubelet writes),
    /// PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`). Other blocks (certificates, EC
    /// parameters) before or after it are skipped.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Pem {
            what: "private key",
            detail: match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no EC PRIVATE KEY, PRIVATE KEY or RSA PRIVATE KEY block found".to_owned()
                }
                other => other.to_string(),
            },
        })?;
        match der {
            PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8_der(k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => Self::from_pkcs8_der(&sec1_to_pkcs8(k.secret_sec1_der())?),
            PrivateKeyDer::Pkcs1(k) => Self::from_pkcs8_der(&pkcs1_to_pkcs8(k.secret_pkcs1_der())?),
            _ => Err(Error::key("unsupported private key encoding")),
        }
    }

    /// Loads a PKCS#8 DER key, detecting its algorithm.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let info =
            PrivateKeyInfoRef::try_from(der).map_err(|e| Error::key(format!("not PKCS#8 DER: {e}")))?;
        let (algorithm, signature_algorithm): (KeyAlgorithm, &'static SignatureAlgorithm) =
            match info.algorithm.oid {
                OID_EC_PUBLIC_KEY => match named_curve(info.algorithm.parameters.as_ref())? {
                    OID_P256 => (KeyAlgorithm::EcdsaP256, &PKCS_ECDSA_P256_SHA256),
                    OID_P384 => (KeyAlgorithm::EcdsaP384, &PKCS_ECDSA_P384_SHA384),
                    other => return Err(Error::key(format!("unsupported elliptic curve {other}"))),
                },
                ED25519_OID => (KeyAlgorithm::Ed25519, &PKCS_ED25519),
                OID_RSA_ENCRYPTION => (KeyAlgorithm::Rsa, rsa_signature_algorithm(der)?),
                #[cfg(feature = "ml-dsa")]
                OID_ML_DSA_65 => {
                    let pair = aws_lc_rs::signature::PqdsaKeyPair::from_pkcs8(
                        &aws_lc_rs::signature::ML_DSA_65_SIGNING,
                        der,
                    )
                    .map_err(|e| Error::key(format!("ML-DSA-65 key rejected: {e}")))?;
                    return Self::ml_dsa(pair);
                }
                other => return Err(Error::key(format!("unsupported key algorithm {other}"))),
            };
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&der.into(), signature_algorithm)
            .map_err(|e| Error::key(format!("{algorithm} key rejected: {e}")))?;
        Self::from_parts(algorithm, key_pair)
    }

    fn from_parts(algorithm: KeyAlgorithm, key_pair: KeyPair) -> Result<Self, Error> {
        let pkcs8 = key_pair.serialize_der();
        let (document, label) = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => (pkcs8_to_sec1(&pkcs8)?, "EC PRIVATE KEY"),
            _ => (pkcs8_v1(&pkcs8)?, "PRIVATE KEY"),
        };
        let pem = document.to_pem(label, LineEnding::LF).map_err(Error::key)?;
        Ok(Self::with(algorithm, Material::Rcgen(key_pair), pem))
    }

    /// An ML-DSA-65 key, written as PKCS#8 `PRIVATE KEY`.
    #[cfg(feature = "ml-dsa")]
    fn ml_dsa(pair: aws_lc_rs::signature::PqdsaKeyPair) -> Result<Self, Error> {
        let pkcs8 =
            pair.to_pkcs8v1().map_err(|_| Error::key("encoding the ML-DSA-65 key failed"))?.as_ref().to_vec();
        let document = SecretDocument::try_from(pkcs8.as_slice()).map_err(Error::key)?;
        let pem = document.to_pem("PRIVATE KEY", LineEnding::LF).map_err(Error::key)?;
        Ok(Self::with(KeyAlgorithm::MlDsa65, Material::MlDsa(pair, pkcs8), pem))
    }

    fn with(algorithm: KeyAlgorithm, material: Material, pem: impl AsRef<str>) -> Self {
        let material = Arc::new(material);
        let public_key_der = material.subject_public_key_info();
        Self { algorithm, material, public_key_der, pem: Arc::from(pem.as_ref()) }
    }

    /// PEM in the encoding the kubelet writes: SEC1 `EC PRIVATE KEY` (curve named, public key
    /// included) for EC keys; PKCS#8 `PRIVATE KEY` for the others.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as DER `SubjectPublicKeyInfo`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// The key as PKCS#8 DER (for rustls' `PrivateKeyDer::Pkcs8`).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        match &*self.material {
            Material::Rcgen(pair) => pair.serialize_der(),
            #[cfg(feature = "ml-dsa")]
            Material::MlDsa(_, pkcs8) => pkcs8.clone(),
        }
    }

    /// The key as rcgen signs certificates and requests with it (the key itself, whatever its
    /// algorithm: an ML-DSA key is no rcgen `KeyPair`).
    pub fn rcgen_key_pair(&self) -> &impl SigningKey {
        self
    }
}

/// What rcgen signs certificates and requests with (`&key` wherever rcgen asks for a signing
/// key).
impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.material.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&*self.material)
    }
}

impl SigningKey for PrivateKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.material.sign(message)
    }
}

impl PublicKeyData for Material {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Material::Rcgen(pair) => pair.der_bytes(),
            #[cfg(feature = "ml-dsa")]
            Material::MlDsa(pair, _) => aws_lc_rs::signature::KeyPair::public_key(pair).as_ref(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            Material::Rcgen(pair) => pair.algorithm(),
            #[cfg(feature = "ml-dsa")]
            Material::MlDsa(..) => &rcgen::PKCS_ML_DSA_65,
        }
    }
}

impl SigningKey for Material {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Material::Rcgen(pair) => pair.sign(message),
            #[cfg(feature = "ml-dsa")]
            Material::MlDsa(pair, _) => {
                let mut signature = vec![0; pair.algorithm().signature_len()];
                pair.sign(message, &mut signature).map_err(|_| rcgen::Error::RingUnspecified)?;
                Ok(signature)
            }
        }
    }
}

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

fn named_curve(parameters: Option<&pkcs8::der::AnyRef<'_>>) -> Result<ObjectIdentifier, Error> {
    parameters
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| Error::key("EC key without a named curve"))
}

fn rsa_signature_algorithm(pkcs8: &[u8]) -> Result<&'static SignatureAlgorithm, Error> {
    let rsa = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8)
        .map_err(|e| Error::key(format!("RSA key rejected: {e}")))?;
    let bits = rsa.public_modulus_len() * 8;
    Ok(if bits >= 4096 {
        &rcgen::PKCS_RSA_SHA512
    } else if bits >= 3072 {
        &rcgen::PKCS_RSA_SHA384
    } else {
        &rcgen::PKCS_RSA_SHA256
    })
}

/// SEC1 `ECPrivateKey` → PKCS#8, naming the curve from the key's parameters or, when absent,
/// from the scalar's length.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, Error> {
    let key = EcPrivateKey::from_der(sec1).map_err(|e| Error::key(format!("not SEC1 DER: {e}")))?;
    let curve = match key.parameters {
        Some(EcParameters::NamedCurve(oid)) => oid,
        None => match key.private_key.len() {
            32 => OID_P256,
            48 => OID_P384,
            n => return Err(Error::key(format!("EC key of {n} bytes without a named curve"))),
        },
    };
    if key.public_key.is_none() {
        return Err(Error::key("EC key without its public key is not supported"));
    }
    let inner = EcPrivateKey { parameters: None, ..key };
    let info = PrivateKeyInfoOwned {
        algorithm: pkcs8::spki::AlgorithmIdentifier {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve).map_err(Error::key)?),
        },
        private_key: OctetString::new(inner.to_der().map_err(Error::key)?).map_err(Error::key)?,
        public_key: None,
    };
    info.to_der().map_err(Error::key)
}

/// PKCS#1 `RSAPrivateKey` → PKCS#8.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Result<Vec<u8>, Error> {
    let info = PrivateKeyInfoOwned {
        algorithm: pkcs8::spki::AlgorithmIdentifier {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        private_key: OctetString::new(pkcs1.to_vec()).map_err(Error::key)?,
        public_key: None,
    };
    info.to_der().map_err(Error::key)
}

/// PKCS#8 without the optional public key (version 1), the form Go and OpenSSL write; OpenSSL
/// refuses the version-2 Ed25519 documents the crypto library writes.
fn pkcs8_v1(pkcs8: &[u8]) -> Result<SecretDocument, Error> {
    let info = PrivateKeyInfoRef::try_from(pkcs8).map_err(Error::key)?;
    SecretDocument::encode_msg(&PrivateKeyInfoRef { public_key: None, ..info }).map_err(Error::key)
}

/// PKCS#8 EC key → SEC1 with the curve named.
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Result<SecretDocument, Error> {
    let info = PrivateKeyInfoRef::try_from(pkcs8).map_err(Error::key)?;
    let curve = named_curve(info.algorithm.parameters.as_ref())?;
    let inner = EcPrivateKey::from_der(info.private_key.as_bytes()).map_err(Error::key)?;
    let named = EcPrivateKey { parameters: Some(EcParameters::NamedCurve(curve)), ..inner };
    SecretDocument::try_from(&named).map_err(Error::key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: [KeyAlgorithm; 3] =
        [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519];

    #[test]
    fn generated_keys_round_trip_through_pem() {
        for algorithm in GENERATED {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = key.to_pem();
            let again = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(again.algorithm(), algorithm);
            assert_eq!(again.public_key_der(), key.public_key_der(), "{algorithm}");
        }
    }

    #[test]
    fn ec_keys_are_written_as_sec1_with_the_curve_named() {
        for (algorithm, curve) in [(KeyAlgorithm::EcdsaP256, OID_P256), (KeyAlgorithm::EcdsaP384, OID_P384)] {
            let pem = PrivateKey::generate(algorithm).unwrap().to_pem().to_owned();
            assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "{pem}");
            let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap() {
                PrivateKeyDer::Sec1(der) => der.secret_sec1_der().to_vec(),
                other => panic!("expected SEC1, got {other:?}"),
            };
            let parsed = EcPrivateKey::from_der(&der).unwrap();
            assert_eq!(parsed.parameters, Some(EcParameters::NamedCurve(curve)));
            assert!(parsed.public_key.is_some());
        }
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8() {
        let pem = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap().to_pem().to_owned();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn rsa_generation_is_refused_with_a_reason() {
        let err = PrivateKey::generate(KeyAlgorithm::Rsa).unwrap_err();
        assert!(err.to_string().contains("generating RSA keys"), "{err}");
    }

    #[test]
    fn debug_output_has_no_secret() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey { algorithm: EcdsaP256, .. }");
    }

    #[test]
    fn clone_keeps_the_same_key() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP384).unwrap();
        assert_eq!(key.clone().public_key_der(), key.public_key_der());
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for (input, expected) in [
            (&b""[..], "no EC PRIVATE KEY"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "no EC PRIVATE KEY"),
            (b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "not SEC1 DER"),
            (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not PKCS#8 DER"),
            (b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "RSA key rejected"),
        ] {
            let err = PrivateKey::from_pem(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
