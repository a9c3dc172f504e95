//! Feature `ml-dsa` (issue 15): an ML-DSA-65 CA issues an ML-DSA-65 node identity for
//! `kubecert.io/node-identity`, and rustls-webpki (what rustls verifies with) accepts the chain
//! for client authentication. Runs with `cargo test -p kubecert-authority --features ml-dsa`.

#![cfg(feature = "ml-dsa")]

use std::time::{Duration, SystemTime};

use kubecert_authority::{CertificateAuthority, IssuancePolicy, SignerAuthorities, validate_for_signer};
use kubecert_csr::{
    CertificatePurpose, CertificateTemplate, KeyAlgorithm, PrivateKey, PublicKeyAlgorithm,
    SIGNER_KUBECERT_NODE_IDENTITY, SIGNER_KUBELET_SERVING, build_csr_pem, parse_csr_pem, usages_for,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

fn node_identity_request(key: &PrivateKey) -> (Vec<u8>, Vec<String>) {
    let template = CertificateTemplate::node_client("n1");
    let pem = build_csr_pem(&template, key).unwrap();
    let usages =
        usages_for(key.algorithm(), CertificatePurpose::Client).iter().map(|u| u.to_string()).collect();
    (pem.into_bytes(), usages)
}

#[test]
fn an_ml_dsa_65_node_identity_is_issued_and_verifies_with_webpki() {
    let now = SystemTime::now();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ca =
        CertificateAuthority::generate_with(KeyAlgorithm::MlDsa65, "kubecert node identities", now, &rng)
            .unwrap();
    assert_eq!(ca.certificate().public_key.algorithm, PublicKeyAlgorithm::MlDsa { level: 65 });
    // The CA's key file loads back (aws-lc-rs reads the PKCS#8 that rcgen cannot).
    let again =
        CertificateAuthority::from_pem(ca.certificate_pem().as_bytes(), ca.private_key_pem().as_bytes());
    assert!(again.is_ok(), "{again:?}");

    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    assert_eq!(PrivateKey::from_pem(key.to_pem().as_bytes()).unwrap().public_key_der(), key.public_key_der());
    let (pem, usages) = node_identity_request(&key);
    let info = parse_csr_pem(&pem).unwrap();
    let validated = validate_for_signer(SIGNER_KUBECERT_NODE_IDENTITY, &info, &usages).unwrap();
    let policy = IssuancePolicy { ttl: Duration::from_secs(3600), backdate: Duration::ZERO };
    let issued = ca.issue(&validated, None, &policy, now, &rng).unwrap();
    assert_eq!(issued.certificate().unwrap().public_key.algorithm, PublicKeyAlgorithm::MlDsa { level: 65 });

    let ca_der = CertificateDer::from(ca.certificate().der.clone());
    let anchors = [anchor_from_trusted_cert(&ca_der).unwrap()];
    let leaf_der = CertificateDer::from(issued.certificate().unwrap().der.clone());
    let leaf = EndEntityCert::try_from(&leaf_der).unwrap();
    let at = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH).unwrap() + Duration::from_secs(60),
    );
    let verify = |algorithm| {
        leaf.verify_for_usage(&[algorithm], &anchors, &[], at, KeyUsage::client_auth(), None, None)
            .map(|_| ())
    };
    verify(webpki::aws_lc_rs::ML_DSA_65)
        .expect("webpki verifies the ML-DSA-65 chain for client authentication");
    // An ECDSA-only verifier does not: the signature really is ML-DSA.
    assert!(verify(webpki::aws_lc_rs::ECDSA_P256_SHA256).is_err());
}

#[test]
fn the_node_identity_signer_takes_ml_dsa_65_keys_only() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let (pem, usages) = node_identity_request(&key);
    let info = parse_csr_pem(&pem).unwrap();
    let failure = validate_for_signer(SIGNER_KUBECERT_NODE_IDENTITY, &info, &usages).unwrap_err();
    assert!(failure.message().contains("ML-DSA-65 keys only"), "{}", failure.message());
}

#[test]
fn an_ml_dsa_ca_is_refused_for_kubernetes_signer_names() {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ca = || {
        CertificateAuthority::generate_with(
            KeyAlgorithm::MlDsa65,
            "not for kubelets",
            SystemTime::now(),
            &rng,
        )
        .unwrap()
    };
    let shared = SignerAuthorities::shared(ca()).unwrap_err().to_string();
    assert!(shared.contains("Kubernetes components cannot verify ML-DSA signatures yet"), "{shared}");
    let per_signer = SignerAuthorities::per_signer([(SIGNER_KUBELET_SERVING.to_owned(), ca())]).unwrap_err();
    assert!(per_signer.to_string().contains(SIGNER_KUBELET_SERVING), "{per_signer}");
    assert!(SignerAuthorities::per_signer([(SIGNER_KUBECERT_NODE_IDENTITY.to_owned(), ca())]).is_ok());
}
