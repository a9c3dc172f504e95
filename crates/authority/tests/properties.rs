//! Properties over many inputs: untrusted request bytes never panic and are never approved or
//! signed unless intact, and the validity period rules hold for any clock, TTL and backdate.

use std::time::{Duration, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use kubecert_authority::{
    ApprovalRequest, CertificateAuthority, Decision, DenyReason, IssuancePolicy, MIN_DURATION, Policy,
    PolicyConfig, SignOutcome, Signer, SignerAuthorities,
};
use proptest::prelude::*;

mod common;
use common::{RequestSpec, build_request};

const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const T0: u64 = 1_700_000_000;

fn object(request: Vec<u8>, approved: bool) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: Default::default(),
        spec: CertificateSigningRequestSpec {
            request: ByteString(request),
            signer_name: SIGNER.to_owned(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            username: Some("system:node:worker-1".into()),
            groups: Some(vec!["system:nodes".into()]),
            ..Default::default()
        },
        status: approved.then(|| CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            certificate: None,
        }),
    }
}

fn valid_request() -> String {
    let spec = RequestSpec {
        key: "p256".into(),
        cn: Some("system:node:worker-1".into()),
        o: vec!["system:nodes".into()],
        ..Default::default()
    };
    build_request(&spec)
}

fn signer() -> Signer {
    let ca = CertificateAuthority::generate(
        "ca",
        UNIX_EPOCH + Duration::from_secs(T0),
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    Signer::new(SignerAuthorities::shared(ca).unwrap(), IssuancePolicy::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_denied_as_invalid_and_never_signed(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let csr = object(bytes.clone(), false);
        let decision = policy.decide(&ApprovalRequest::new(&csr), |_| true);
        prop_assert!(matches!(decision, Decision::Deny { reason: DenyReason::InvalidRequest, .. }), "{decision}");
        let now = UNIX_EPOCH + Duration::from_secs(T0 + 60);
        let outcome = signer().sign(&object(bytes, true), now, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
        prop_assert!(matches!(outcome, SignOutcome::Rejected(_)));
    }

    #[test]
    fn a_changed_byte_never_gets_a_request_approved(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let pem = valid_request();
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let original = kubecert_csr::parse_csr_pem(pem.as_bytes()).unwrap();
        let mut bytes = pem.into_bytes();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        let csr = object(bytes.clone(), false);
        let decision = policy.decide(&ApprovalRequest::new(&csr), |_| true);
        if matches!(decision, Decision::Approve { .. }) {
            // Only a change outside the signed content (PEM whitespace, say) may still pass.
            let parsed = kubecert_csr::parse_csr_pem(&bytes).unwrap();
            prop_assert_eq!(parsed.subject, original.subject);
            prop_assert_eq!(parsed.public_key, original.public_key);
        }
    }

    #[test]
    fn validity_stays_inside_the_ca_and_the_requested_lifetime(
        now in T0..T0 + 20 * 365 * 86_400,
        ttl in 1u64..3 * 365 * 86_400,
        backdate in 0u64..3600,
        expiration in proptest::option::of(any::<i32>()),
        ca_left in 1u64..5 * 365 * 86_400,
    ) {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let policy = IssuancePolicy { ttl: Duration::from_secs(ttl), backdate: Duration::from_secs(backdate) };
        let duration = policy.duration(expiration);
        prop_assert!(duration <= policy.ttl.max(MIN_DURATION));
        let ca_not_after = at(now + ca_left);
        let validity = policy.validity(at(now), duration, ca_not_after);
        let v = validity.unwrap();
        prop_assert_eq!(v.not_before, at(now - backdate));
        prop_assert!(v.not_before < v.not_after);
        prop_assert!(v.not_after <= ca_not_after);
        prop_assert!(v.not_after <= at(now) + duration);
        prop_assert!(v.not_after > at(now) || v.not_after == ca_not_after);
    }
}
