//! The signer's hot path on one core, for one new node client CSR: the API server's create
//! (parse and verify, kept by `parse_csr_pem_once`), approve (policy, SubjectAccessReview
//! answered in process, the verified request reused) and issue (the verified request reused,
//! sign), next to its floor measured in the same run: one raw aws-lc-rs P-256 verify plus one sign (the crypto
//! the signer uses, without any of its parsing or policy).
//! Every iteration gets a request never seen before (made outside the timing), so the one
//! verification per request is counted.
//!
//! `cargo xtask bench` runs this and reports the ratio; `cargo bench -p kubecert-authority`
//! runs it alone.

use std::hint::black_box;
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestStatus};
use kubecert_authority::{
    ApprovalRequest, CertificateAuthority, Decision, IssuancePolicy, Policy, PolicyConfig, SignOutcome,
    Signer, SignerAuthorities,
};
use kubecert_csr::{
    CertificatePurpose, CertificateTemplate, CsrName, KeyAlgorithm, PrivateKey,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, build_csr_pem, csr_object, usages_for,
};

/// A renewal CSR from node `n1`, as the API stores it.
fn node_csr() -> CertificateSigningRequest {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key");
    let template = CertificateTemplate::node_client("n1");
    let usages = usages_for(KeyAlgorithm::EcdsaP256, CertificatePurpose::Client);
    let pem = build_csr_pem(&template, &key).expect("csr");
    let mut csr = csr_object(CsrName::Generate, SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, None);
    csr.metadata.name = Some("csr-bench".into());
    csr.spec.username = Some("system:node:n1".into());
    csr.spec.groups = Some(vec!["system:nodes".into(), "system:authenticated".into()]);
    csr
}

fn sign_path(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let now = SystemTime::now();
    let policy = Policy::new(PolicyConfig::default()).expect("policy");
    let ca = CertificateAuthority::generate("bench CA", now, &rng).expect("CA");
    let signer = Signer::new(SignerAuthorities::shared(ca).unwrap(), IssuancePolicy::default());

    let mut group = c.benchmark_group("sign_path");
    group.bench_function("approve_and_issue", |b| {
        b.iter_batched(
            node_csr,
            |csr| {
                // What the API server's create does first: the one verification of this request.
                kubecert_csr::parse_csr_pem_once(&csr.spec.request.0).expect("verify on create");
                let decision = policy.decide(&ApprovalRequest::new(black_box(&csr)), |_| true);
                let Decision::Approve { .. } = &decision else { panic!("not approved: {decision}") };
                let condition = decision.condition(now).expect("condition").expect("approve condition");
                let mut approved = csr.clone();
                approved.status = Some(CertificateSigningRequestStatus {
                    conditions: Some(vec![condition]),
                    certificate: None,
                });
                match signer.sign(&approved, now, &rng).expect("sign") {
                    SignOutcome::Issued(issued) => black_box(issued),
                    SignOutcome::Rejected(failure) => panic!("rejected: {}", failure.message()),
                }
            },
            BatchSize::SmallInput,
        );
    });

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("P-256 key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("P-256 key");
    let message = [7u8; 300];
    let signature = key.sign(&rng, &message).expect("P-256 sign");
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    group.bench_function("raw_p256_verify_and_sign", |b| {
        b.iter(|| {
            public.verify(black_box(&message), signature.as_ref()).expect("verify");
            black_box(key.sign(&rng, black_box(&message)).expect("sign"))
        });
    });
    group.finish();
}

criterion_group!(benches, sign_path);
criterion_main!(benches);
