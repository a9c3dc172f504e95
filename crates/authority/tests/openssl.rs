//! Issued certificates as the real `openssl` sees them: `openssl verify` accepts them (also with
//! `-x509_strict` and the TLS purposes), and `openssl x509 -text` shows the key usage, extended
//! key usage, SANs, basic constraints and validity that were asked for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use kubecert_authority::{
    ApprovalRequest, CertificateAuthority, Decision, IssuancePolicy, Policy, PolicyConfig, SignOutcome,
    Signer, SignerAuthorities,
};

mod common;
use common::{RequestSpec, build_request, openssl, rsa_key};

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// When certificates are issued; `openssl verify -attime` checks them a minute later.
const ISSUED_AT: u64 = T0 + 86_400;

fn run(args: &[&str]) -> String {
    String::from_utf8(openssl(args)).unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn verify(ca: &Path, cert: &Path, purpose: &str) {
    let attime = (ISSUED_AT + 60).to_string();
    let out = run(&[
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-attime",
        &attime,
        "-CAfile",
        path(ca),
        path(cert),
    ]);
    assert_eq!(out.trim(), format!("{}: OK", path(cert)));
}

fn text(cert: &Path) -> String {
    run(&["x509", "-in", path(cert), "-noout", "-text"])
}

/// The line after `heading` in `openssl x509 -text` output, trimmed.
fn value_after(text: &str, heading: &str) -> String {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == heading).unwrap_or_else(|| panic!("no {heading:?} in\n{text}"));
    lines.next().unwrap_or_default().trim().to_owned()
}

/// openssl's `notBefore=`/`notAfter=` spelling of a time: `Nov 14 22:13:20 2023 GMT`.
fn openssl_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    dt.format(&format).unwrap()
}

fn csr(
    signer: &str,
    request: &RequestSpec,
    usages: &[&str],
    username: &str,
    groups: &[&str],
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: Default::default(),
        spec: CertificateSigningRequestSpec {
            request: ByteString(build_request(request).into_bytes()),
            signer_name: signer.to_owned(),
            usages: Some(usages.iter().map(|s| s.to_string()).collect()),
            username: Some(username.to_owned()),
            groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

fn approve(csr: &mut CertificateSigningRequest, decision: &Decision) {
    assert!(matches!(decision, Decision::Approve { .. }), "{decision}");
    let condition: CertificateSigningRequestCondition = decision.condition(at(ISSUED_AT)).unwrap().unwrap();
    csr.status =
        Some(CertificateSigningRequestStatus { conditions: Some(vec![condition]), certificate: None });
}

fn sign(signer: &Signer, csr: &CertificateSigningRequest) -> String {
    assert!(signer.should_sign(csr));
    match signer.sign(csr, at(ISSUED_AT), &aws_lc_rs::rand::SystemRandom::new()).unwrap() {
        SignOutcome::Issued(issued) => issued.pem().to_owned(),
        SignOutcome::Rejected(failure) => panic!("rejected: {failure}"),
    }
}

fn p256(cn: &str, o: &[&str]) -> RequestSpec {
    RequestSpec {
        key: "p256".into(),
        cn: Some(cn.into()),
        o: o.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn issued_certificates_pass_openssl_verify_and_show_what_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(
        "kubecert openssl test CA",
        at(T0),
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let ca_file = write(dir.path(), "ca.pem", ca.certificate_pem());
    let signer = Signer::new(
        SignerAuthorities::shared(
            CertificateAuthority::from_pem(ca.certificate_pem().as_bytes(), ca.private_key_pem().as_bytes())
                .unwrap(),
        )
        .unwrap(),
        IssuancePolicy::default(),
    );
    let config: PolicyConfig = toml::from_str(
        r#"
        [signers."kubernetes.io/kubelet-serving"]
        auto_approve = true
        allowed_dns_suffixes = ["nodes.example.com"]
        allowed_ip_cidrs = ["10.0.0.0/8", "fd00::/8"]
        "#,
    )
    .unwrap();
    let policy = Policy::new(config).unwrap();

    // A kubelet client certificate through the policy and a SubjectAccessReview.
    let mut client = csr(
        "kubernetes.io/kube-apiserver-client-kubelet",
        &p256("system:node:worker-1", &["system:nodes"]),
        &["digital signature", "client auth"],
        "system:bootstrap:abcdef",
        &["system:bootstrappers"],
    );
    let decision = policy.decide(&ApprovalRequest::new(&client), |r| r.subresource() == "nodeclient");
    approve(&mut client, &decision);
    let client_file = write(dir.path(), "client.pem", &sign(&signer, &client));
    verify(&ca_file, &client_file, "sslclient");
    let t = text(&client_file);
    assert_eq!(value_after(&t, "X509v3 Key Usage: critical"), "Digital Signature");
    assert_eq!(value_after(&t, "X509v3 Extended Key Usage:"), "TLS Web Client Authentication");
    assert_eq!(value_after(&t, "X509v3 Basic Constraints: critical"), "CA:FALSE");
    assert!(!t.contains("Subject Alternative Name"), "{t}");
    assert!(
        t.contains("X509v3 Subject Key Identifier:") && t.contains("X509v3 Authority Key Identifier:"),
        "{t}"
    );
    assert!(t.contains("Subject: O = system:nodes, CN = system:node:worker-1"), "{t}");
    assert!(t.contains("Issuer: CN = kubecert openssl test CA"), "{t}");
    let dates = run(&["x509", "-in", path(&client_file), "-noout", "-dates"]);
    let not_before = openssl_date(at(ISSUED_AT - 300));
    let not_after = openssl_date(at(ISSUED_AT) + kubecert_authority::DEFAULT_TTL - Duration::from_secs(300));
    assert_eq!(dates.trim(), format!("notBefore={not_before}\nnotAfter={not_after}"));

    // A serving certificate with DNS and IP SANs through the SAN policy.
    let serving_request = RequestSpec {
        key: "p384".into(),
        dns: vec!["worker-1.nodes.example.com".into()],
        ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        ..p256("system:node:worker-1", &["system:nodes"])
    };
    let mut serving = csr(
        "kubernetes.io/kubelet-serving",
        &serving_request,
        &["digital signature", "server auth"],
        "system:node:worker-1",
        &["system:nodes", "system:authenticated"],
    );
    let decision = policy.decide(&ApprovalRequest::new(&serving), |_| false);
    approve(&mut serving, &decision);
    let serving_file = write(dir.path(), "serving.pem", &sign(&signer, &serving));
    verify(&ca_file, &serving_file, "sslserver");
    let t = text(&serving_file);
    assert_eq!(value_after(&t, "X509v3 Extended Key Usage:"), "TLS Web Server Authentication");
    assert_eq!(
        value_after(&t, "X509v3 Subject Alternative Name:"),
        "DNS:worker-1.nodes.example.com, IP Address:10.0.0.5, IP Address:FD00:0:0:0:0:0:0:5"
    );

    // A human-approved request that asked for CA:TRUE, certificate signing and code signing gets
    // none of it; an RSA key with the three-usage set gets key encipherment.
    let hostile = RequestSpec {
        key: "rsa2048".into(),
        ca: true,
        key_usage: vec!["cert-sign".into(), "crl-sign".into()],
        ext_key_usage: vec!["any".into(), "code-signing".into()],
        ..p256("ci:runner", &["ci-runners", "builders"])
    };
    let mut manual = csr(
        "kubernetes.io/kube-apiserver-client",
        &hostile,
        &["digital signature", "key encipherment", "client auth"],
        "alice",
        &["system:authenticated"],
    );
    let human = Decision::Approve { reason: "KubectlApprove".into(), message: "approved by alice".into() };
    approve(&mut manual, &human);
    let manual_file = write(dir.path(), "manual.pem", &sign(&signer, &manual));
    verify(&ca_file, &manual_file, "sslclient");
    let t = text(&manual_file);
    assert_eq!(value_after(&t, "X509v3 Basic Constraints: critical"), "CA:FALSE");
    assert_eq!(value_after(&t, "X509v3 Key Usage: critical"), "Digital Signature, Key Encipherment");
    assert_eq!(value_after(&t, "X509v3 Extended Key Usage:"), "TLS Web Client Authentication");
    assert!(!t.contains("Code Signing") && !t.contains("Certificate Sign") && !t.contains("CA:TRUE"), "{t}");
    assert!(t.contains("Subject: O = ci-runners, O = builders, CN = ci:runner"), "{t}");
    assert!(t.contains("Public-Key: (2048 bit)"), "{t}");
    // It cannot act as a CA: a certificate "issued" by it does not verify.
    let refused = Command::new("openssl")
        .args([
            "verify",
            "-attime",
            &(ISSUED_AT + 60).to_string(),
            "-CAfile",
            path(&manual_file),
            path(&client_file),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn generated_ca_is_what_openssl_calls_a_ten_year_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        CertificateAuthority::generate("kubecert", at(T0), &aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let file = write(dir.path(), "ca.pem", ca.certificate_pem());
    let t = text(&file);
    assert_eq!(value_after(&t, "X509v3 Basic Constraints: critical"), "CA:TRUE");
    assert_eq!(
        value_after(&t, "X509v3 Key Usage: critical"),
        "Digital Signature, Certificate Sign, CRL Sign"
    );
    assert!(t.contains("X509v3 Subject Key Identifier:"), "{t}");
    assert!(t.contains("ASN1 OID: prime256v1"), "{t}");
    let dates = run(&["x509", "-in", path(&file), "-noout", "-dates"]);
    let end = at(T0) + kubecert_authority::GENERATED_CA_LIFETIME;
    assert_eq!(dates.trim(), format!("notBefore={}\nnotAfter={}", openssl_date(at(T0)), openssl_date(end)));
    let key = write(dir.path(), "ca.key", ca.private_key_pem());
    assert!(run(&["pkey", "-in", path(&key), "-noout", "-text"]).contains("NIST CURVE: P-256"));
}

/// A CA with a key of the given kind, self-signed by rcgen.
fn ca_with_key(key: rcgen::KeyPair) -> CertificateAuthority {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "kubecert");
    params.distinguished_name.push(rcgen::DnType::CommonName, "kubecert test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = time::OffsetDateTime::from_unix_timestamp(T0 as i64).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(T0 as i64 + 10 * 365 * 86_400).unwrap();
    let cert = params.self_signed(&key).unwrap();
    CertificateAuthority::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

#[test]
fn every_ca_key_type_signs_certificates_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cas = [
        ("p384", rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(), "ecdsa-with-SHA384"),
        ("ed25519", rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(), "ED25519"),
        ("rsa", rsa_key(2048), "sha256WithRSAEncryption"),
    ];
    for (name, key, algorithm) in cas {
        let ca = ca_with_key(key);
        let ca_file = write(dir.path(), &format!("{name}-ca.pem"), ca.certificate_pem());
        let signer = Signer::new(SignerAuthorities::shared(ca).unwrap(), IssuancePolicy::default());
        let mut request = csr(
            "kubernetes.io/kube-apiserver-client-kubelet",
            &p256("system:node:worker-1", &["system:nodes"]),
            &["digital signature", "client auth"],
            "system:node:worker-1",
            &["system:nodes"],
        );
        let human = Decision::Approve { reason: "Test".into(), message: "test".into() };
        approve(&mut request, &human);
        let cert = write(dir.path(), &format!("{name}-leaf.pem"), &sign(&signer, &request));
        verify(&ca_file, &cert, "sslclient");
        let t = text(&cert);
        assert!(t.contains(&format!("Signature Algorithm: {algorithm}")), "{name}: {t}");
        assert!(t.contains("Issuer: O = kubecert, CN = kubecert test CA"), "{name}: {t}");
    }
}
