//! Untrusted bytes never panic the parsers: random bytes, truncations, bit flips, wrong PEM
//! labels, broken signatures and a megabyte of junk all come back as typed errors.

use kubecert_csr::{
    CertificateTemplate, Error, KeyAlgorithm, PrivateKey, build_csr_pem, parse_certificates_pem,
    parse_csr_der, parse_csr_pem,
};
use proptest::prelude::*;

fn valid_csr_der() -> Vec<u8> {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let template =
        CertificateTemplate::node_serving("n", &["n.example".into()], &["192.0.2.1".parse().unwrap()]);
    let pem = build_csr_pem(&template, &key).unwrap();
    parse_csr_pem(pem.as_bytes()).unwrap().der
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_csr_der(&bytes);
        let _ = parse_csr_pem(&bytes);
        let _ = parse_certificates_pem(&bytes);
        let _ = PrivateKey::from_pem(&bytes);
        prop_assert!(parse_csr_pem(pem("CERTIFICATE REQUEST", &bytes).as_bytes()).is_err() || !bytes.is_empty());
    }

    #[test]
    fn truncated_requests_are_errors(cut in 0usize..10_000) {
        let der = valid_csr_der();
        let cut = cut % der.len();
        prop_assert!(parse_csr_der(&der[..cut]).is_err());
        prop_assert!(parse_csr_pem(pem("CERTIFICATE REQUEST", &der[..cut]).as_bytes()).is_err());
    }

    #[test]
    fn flipped_bits_never_change_what_is_accepted(position in 0usize..10_000, bit in 0u8..8) {
        let original = valid_csr_der();
        let expected = parse_csr_der(&original).unwrap();
        let mut der = original.clone();
        let position = position % der.len();
        der[position] ^= 1 << bit;
        // The parser tolerates a few wrong tag bytes in the unsigned outer envelope (the outer
        // SEQUENCE and AlgorithmIdentifier tags). What it accepts must still be exactly the
        // signed request: same subject, names and key. Anything else must be an error.
        if let Ok(accepted) = parse_csr_der(&der) {
            prop_assert_eq!(accepted.subject, expected.subject);
            prop_assert_eq!(accepted.dns_names, expected.dns_names);
            prop_assert_eq!(accepted.ip_addresses, expected.ip_addresses);
            prop_assert_eq!(accepted.public_key, expected.public_key);
        }
    }
}

#[test]
fn broken_signature_is_a_signature_error() {
    let mut der = valid_csr_der();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = parse_csr_der(&der).unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err:?}");
    assert!(err.to_string().contains("signature does not verify"), "{err}");
}

#[test]
fn wrong_pem_label_is_named() {
    let der = valid_csr_der();
    let err = parse_csr_pem(pem("CERTIFICATE", &der).as_bytes()).unwrap_err().to_string();
    assert!(err.contains("expected a CERTIFICATE REQUEST block"), "{err}");
    let err = parse_csr_pem(b"just some text").unwrap_err().to_string();
    assert!(err.contains("no PEM block found"), "{err}");
    let err = parse_certificates_pem(pem("CERTIFICATE REQUEST", &der).as_bytes()).unwrap_err().to_string();
    assert!(err.contains("no CERTIFICATE block found"), "{err}");
    let err = parse_certificates_pem(pem("CERTIFICATE", &der).as_bytes()).unwrap_err().to_string();
    assert!(err.starts_with("certificate #0: not DER X.509"), "{err}");
}

#[test]
fn a_megabyte_of_junk_is_an_error() {
    let junk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    assert!(parse_csr_der(&junk).is_err());
    assert!(parse_csr_pem(&junk).is_err());
    assert!(parse_csr_pem(pem("CERTIFICATE REQUEST", &junk).as_bytes()).is_err());
    assert!(parse_certificates_pem(pem("CERTIFICATE", &junk).as_bytes()).is_err());
    assert!(PrivateKey::from_pem(pem("EC PRIVATE KEY", &junk).as_bytes()).is_err());
    assert!(PrivateKey::from_pem(pem("PRIVATE KEY", &junk).as_bytes()).is_err());
    assert!(PrivateKey::from_pem(pem("RSA PRIVATE KEY", &junk).as_bytes()).is_err());
}

#[test]
fn trailing_bytes_after_a_request_are_refused() {
    let mut der = valid_csr_der();
    der.push(0);
    assert!(parse_csr_der(&der).unwrap_err().to_string().contains("trailing bytes"));
}
