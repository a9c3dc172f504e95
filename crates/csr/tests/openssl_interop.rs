//! Keys and requests made by the real `openssl` binary (as a kubelet-managed node or an operator
//! would have them) load and verify; our keys and requests are accepted by openssl.

use std::path::Path;
use std::process::Command;

use kubecert_csr::{
    CertificateTemplate, KeyAlgorithm, PrivateKey, PublicKeyAlgorithm, build_csr_pem, parse_certificates_pem,
    parse_csr_pem,
};

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn loads_every_key_encoding_openssl_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // SEC1 preceded by an EC PARAMETERS block (plain `openssl ecparam -genkey`).
    openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-out", "sec1-params.pem"]);
    // SEC1 alone, as Go's x509.MarshalECPrivateKey (the kubelet) writes it.
    openssl(d, &["ec", "-in", "sec1-params.pem", "-out", "sec1.pem"]);
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "p384.pem"]);
    openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "ed25519.pem"]);
    openssl(
        d,
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa-pkcs8.pem"],
    );
    openssl(d, &["rsa", "-in", "rsa-pkcs8.pem", "-traditional", "-out", "rsa-pkcs1.pem"]);

    for (file, algorithm) in [
        ("sec1-params.pem", KeyAlgorithm::EcdsaP256),
        ("sec1.pem", KeyAlgorithm::EcdsaP256),
        ("p384.pem", KeyAlgorithm::EcdsaP384),
        ("ed25519.pem", KeyAlgorithm::Ed25519),
        ("rsa-pkcs8.pem", KeyAlgorithm::Rsa),
        ("rsa-pkcs1.pem", KeyAlgorithm::Rsa),
    ] {
        let key = PrivateKey::from_pem(&read(d, file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(key.algorithm(), algorithm, "{file}");
        // The public key we derive is the one openssl derives.
        let public = openssl(d, &["pkey", "-in", file, "-pubout", "-outform", "DER"]);
        assert_eq!(key.public_key_der(), public.as_slice(), "{file}");
    }
    assert!(String::from_utf8(read(d, "sec1.pem")).unwrap().starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(
        String::from_utf8(read(d, "rsa-pkcs1.pem")).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
}

#[test]
fn openssl_reads_our_keys_and_verifies_our_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let template =
        CertificateTemplate::node_serving("n1", &["n1.example".into()], &["192.0.2.1".parse().unwrap()]);
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(algorithm).unwrap();
        std::fs::write(d.join("key.pem"), key.to_pem()).unwrap();
        let public = openssl(d, &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"]);
        assert_eq!(public.as_slice(), key.public_key_der(), "{algorithm}");

        std::fs::write(d.join("req.pem"), build_csr_pem(&template, &key).unwrap()).unwrap();
        let text = String::from_utf8(openssl(
            d,
            &["req", "-in", "req.pem", "-noout", "-verify", "-subject", "-text"],
        ))
        .unwrap();
        assert!(text.contains("O=system:nodes") || text.contains("O = system:nodes"), "{text}");
        assert!(text.contains("system:node:n1"), "{text}");
        assert!(text.contains("DNS:n1.example") && text.contains("IP Address:192.0.2.1"), "{text}");
    }
}

#[test]
fn rsa_requests_use_the_digest_go_picks_for_the_modulus() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (bits, digest) in [("2048", "sha256WithRSAEncryption"), ("3072", "sha384WithRSAEncryption")] {
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                "rsa.pem",
            ],
        );
        let key = PrivateKey::from_pem(&read(d, "rsa.pem")).unwrap();
        let pem = build_csr_pem(&CertificateTemplate::node_client("n"), &key).unwrap();
        let info = parse_csr_pem(pem.as_bytes()).unwrap();
        assert_eq!(info.public_key.algorithm, PublicKeyAlgorithm::Rsa { bits: bits.parse().unwrap() });
        std::fs::write(d.join("req.pem"), pem).unwrap();
        let text = String::from_utf8(openssl(d, &["req", "-in", "req.pem", "-noout", "-text"])).unwrap();
        assert!(text.contains(digest), "{bits}: {text}");
    }
}

#[test]
fn parses_requests_and_certificates_openssl_makes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"]);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "k.pem",
            "-out",
            "req.pem",
            "-subj",
            "/O=system:nodes/O=extra/CN=system:node:w",
            "-addext",
            "subjectAltName=DNS:w.example,IP:10.1.2.3,IP:2001:db8::1,email:a@b.example,URI:spiffe://x/y",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:2",
            "-addext",
            "keyUsage=digitalSignature,keyCertSign",
            "-addext",
            "extendedKeyUsage=clientAuth,1.3.6.1.5.5.7.3.5",
        ],
    );
    let csr = parse_csr_pem(&read(d, "req.pem")).unwrap();
    assert_eq!(csr.subject.common_name.as_deref(), Some("system:node:w"));
    assert_eq!(csr.subject.organizations, ["system:nodes", "extra"]);
    assert_eq!(csr.dns_names, ["w.example"]);
    assert_eq!(csr.ip_addresses.len(), 2);
    assert_eq!(csr.email_addresses, ["a@b.example"]);
    assert_eq!(csr.uris, ["spiffe://x/y"]);
    assert_eq!(
        csr.requested_basic_constraints,
        Some(kubecert_csr::BasicConstraints { ca: true, path_len: Some(2) })
    );
    use kubecert_csr::KeyUsage::*;
    assert_eq!(csr.requested_key_usage, [DigitalSignature, CertSign, ClientAuth, IpsecEndSystem]);

    // A self-signed certificate from the same request.
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "req.pem",
            "-key",
            "k.pem",
            "-days",
            "2",
            "-out",
            "cert.pem",
            "-copy_extensions",
            "copy",
        ],
    );
    let mut bundle = read(d, "cert.pem");
    bundle.extend(read(d, "k.pem"));
    bundle.extend(read(d, "cert.pem"));
    let certs = parse_certificates_pem(&bundle).unwrap();
    assert_eq!(certs.len(), 2, "the key block is skipped");
    let cert = &certs[0];
    assert!(cert.is_ca);
    assert_eq!(cert.dns_names, ["w.example"]);
    assert!(cert.matches_key(&PrivateKey::from_pem(&read(d, "k.pem")).unwrap()));
    let serial = String::from_utf8(openssl(d, &["x509", "-in", "cert.pem", "-noout", "-serial"])).unwrap();
    assert_eq!(
        serial.trim().trim_start_matches("serial=").to_lowercase().trim_start_matches('0'),
        cert.serial_hex.trim_start_matches('0')
    );
    let lifetime = cert.not_after.duration_since(cert.not_before).unwrap();
    assert_eq!(lifetime.as_secs(), 2 * 86400);
    assert!(!cert.is_expired_at(cert.not_after));
    assert!(cert.is_expired_at(cert.not_after + std::time::Duration::from_secs(1)));
    assert_eq!(parse_certificates_pem(cert.to_pem().as_bytes()).unwrap()[0], *cert);
}
