//! Issue 15, feature `ml-dsa`, end to end: `signer serve --node-identity-ca` and a node agent
//! with `--node-identity-key-algorithm ml-dsa-65` leave the node with an ML-DSA-65 identity
//! from `kubecert.io/node-identity` that webpki verifies against the ML-DSA CA; an ML-DSA key
//! is never certified by a `kubernetes.io/` signer: the approver denies it with its reason and,
//! approved by hand with kubectl, the signer fails it with its reason.
//!
//! Needs the binaries built with the feature:
//! `cargo build --workspace --bins --features signer/ml-dsa,node-agent/ml-dsa`, then
//! `cargo test --workspace --features kubecert-tests/ml-dsa,signer/ml-dsa,node-agent/ml-dsa --test ml_dsa_identity`.

#![cfg(feature = "ml-dsa")]

use std::path::Path;
use std::time::{Duration, SystemTime};

use kubecert_csr::parse_certificates_pem;
use kubecert_tests::{SignerServe, TempDir, free_local_addr, kubectl, run_ok, start_node_agent, wait_for};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The only certificate of a PEM file, as DER.
fn der(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let certs = parse_certificates_pem(&pem).expect("PEM certificates");
    CertificateDer::from(certs[0].der.clone())
}

/// A CSR object with a fresh ML-DSA-65 key for `signer`, as JSON for `kubectl create -f`.
fn ml_dsa_csr(name: &str, signer: &str, usages: &[&str]) -> Value {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ML_DSA_65).expect("ML-DSA-65 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:pq-a");
    let pem = params.serialize_request(&key).expect("CSR").pem().expect("PEM");
    use base64::Engine as _;
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer,
            "usages": usages,
        }
    })
}

/// The condition of `type_` on CSR `name`, once it has one.
fn condition(kubectl: &Path, admin: &Path, name: &str, type_: &str) -> Value {
    let mut found = Value::Null;
    wait_for(&format!("{type_} on {name}"), Duration::from_secs(30), || {
        let out = run_ok(kubectl, &["--kubeconfig", s(admin), "get", "csr", name, "-o", "json"]);
        let csr: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
        let conditions = csr["status"]["conditions"].as_array().cloned().unwrap_or_default();
        found = conditions.into_iter().find(|c| c["type"] == type_).unwrap_or(Value::Null);
        !found.is_null()
    });
    found
}

#[test]
fn a_node_gets_an_ml_dsa_65_identity_and_kubernetes_signers_never_certify_ml_dsa() {
    let Some(kubectl) = kubectl() else { return };
    let dir = TempDir::new("ml-dsa");
    let config = dir.path().join("signer.toml");
    // Nothing approves kube-apiserver-client requests here: a person does, below.
    std::fs::write(&config, "[policy.signers.\"kubernetes.io/kube-apiserver-client\"]\nenabled = false\n")
        .expect("write signer.toml");
    let identity_ca = dir.path().join("identity-ca");
    let serve = SignerServe::start(
        &dir.path().join("signer"),
        &["--config", s(&config), "--node-identity-ca", s(&identity_ca)],
    );
    let node = dir.path().join("pq-a");
    std::fs::create_dir_all(&node).expect("node dir");
    serve.create_token(&node.join("bootstrap.kubeconfig"));
    let mut agent = start_node_agent(
        &node,
        "pq-a",
        free_local_addr(),
        &["--node-identity-key-algorithm", "ml-dsa-65"],
        &dir.path().join("pq-a.log"),
    );

    let identity = node.join("pki/kubelet-identity-current.pem");
    wait_for("the node's ML-DSA-65 identity", Duration::from_secs(60), || identity.exists());
    assert!(node.join("pki/kubelet-client-current.pem").exists(), "the normal client certificate too");
    let ca = der(&identity_ca.join("ca.crt"));
    let anchors = [anchor_from_trusted_cert(&ca).expect("trust anchor")];
    let leaf_der = der(&identity);
    let leaf = EndEntityCert::try_from(&leaf_der).expect("end-entity certificate");
    let now = UnixTime::since_unix_epoch(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970"),
    );
    let verify = |algorithm| {
        leaf.verify_for_usage(&[algorithm], &anchors, &[], now, KeyUsage::client_auth(), None, None)
            .map(|_| ())
    };
    verify(webpki::aws_lc_rs::ML_DSA_65).expect("webpki verifies the identity against the ML-DSA-65 CA");
    assert!(verify(webpki::aws_lc_rs::ECDSA_P256_SHA256).is_err(), "the signature is ML-DSA");
    let admin = serve.admin_kubeconfig();
    let csrs = run_ok(&kubectl, &["--kubeconfig", s(&admin), "get", "csr", "-o", "json"]);
    let csrs: Value = serde_json::from_str(&csrs).expect("kubectl prints JSON");
    let issued = csrs["items"].as_array().expect("items").iter().any(|c| {
        c["spec"]["signerName"] == "kubecert.io/node-identity"
            && c["spec"]["username"] == "system:node:pq-a"
            && c["status"]["certificate"].is_string()
    });
    assert!(issued, "the identity came from kubecert.io/node-identity: {csrs:#}");

    // ML-DSA to a kubernetes.io signer: denied by the approver, with the reason.
    let request = dir.path().join("kubelet.json");
    let kubelet = ml_dsa_csr(
        "pq-kubelet",
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    std::fs::write(&request, kubelet.to_string()).expect("write the CSR");
    run_ok(&kubectl, &["--kubeconfig", s(&admin), "create", "-f", s(&request)]);
    let denied = condition(&kubectl, &admin, "pq-kubelet", "Denied");
    assert_eq!(denied["reason"], "KeyNotAllowed", "{denied:#}");
    let message = denied["message"].as_str().expect("a message");
    assert!(message.contains("cannot verify ML-DSA yet"), "{message}");

    // Approved by hand: the signer refuses it (Failed, with the reason) and issues nothing.
    let client =
        ml_dsa_csr("pq-client", "kubernetes.io/kube-apiserver-client", &["digital signature", "client auth"]);
    std::fs::write(&request, client.to_string()).expect("write the CSR");
    run_ok(&kubectl, &["--kubeconfig", s(&admin), "create", "-f", s(&request)]);
    run_ok(&kubectl, &["--kubeconfig", s(&admin), "certificate", "approve", "pq-client"]);
    let failed = condition(&kubectl, &admin, "pq-client", "Failed");
    assert_eq!(failed["reason"], "SignerValidationFailure", "{failed:#}");
    let message = failed["message"].as_str().expect("a message");
    assert!(
        message.starts_with("ML-DSA-65 keys are not certified by kubernetes.io/kube-apiserver-client:"),
        "{message}"
    );
    let out = run_ok(&kubectl, &["--kubeconfig", s(&admin), "get", "csr", "pq-client", "-o", "json"]);
    let csr: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    assert!(csr["status"]["certificate"].is_null(), "nothing issued: {csr:#}");
    agent.kill();
}
