//! Runs the hostile-CSR corpus in `tests/corpus/cases.toml` (its header documents the format):
//! every case gets its documented decision, and nothing outside policy is ever issued.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use kubecert_authority::{
    ApprovalRequest, CertificateAuthority, Decision, DenyReason, IgnoreReason, IssuancePolicy,
    IssuedCertificate, Policy, PolicyConfig, SignOutcome, Signer, SignerAuthorities,
};
use kubecert_csr::{KeyUsage, NODE_GROUP, NODE_USER_PREFIX};
use serde::Deserialize;

mod common;
use common::{RequestSpec, build_request};
use x509_parser::prelude::{FromDer, X509Certificate};

const T0: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + 86_400)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    policies: BTreeMap<String, PolicyConfig>,
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    why: String,
    #[serde(default = "default_policy")]
    policy: String,
    signer: String,
    #[serde(default = "default_usages")]
    usages: Vec<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    sar_allows: Vec<String>,
    #[serde(default)]
    pending_before: usize,
    node_addresses: Option<Vec<String>>,
    expiration_seconds: Option<i32>,
    #[serde(default)]
    approved_by_human: bool,
    request: Option<RequestSpec>,
    raw_request: Option<String>,
    expect: Expect,
}

fn default_policy() -> String {
    "default".to_owned()
}

fn default_usages() -> Vec<String> {
    vec!["digital signature".to_owned(), "client auth".to_owned()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: String,
    reason: Option<String>,
    message: Option<String>,
    message_contains: Option<String>,
    lifetime_seconds: Option<u64>,
}

fn load() -> Corpus {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cases.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn condition(type_: &str) -> CertificateSigningRequestCondition {
    CertificateSigningRequestCondition { type_: type_.into(), status: "True".into(), ..Default::default() }
}

fn csr_object(case: &Case) -> CertificateSigningRequest {
    let request = match (&case.request, &case.raw_request) {
        (Some(spec), None) => build_request(spec),
        (None, Some(raw)) => raw.clone(),
        _ => panic!("{}: give exactly one of request and raw_request", case.name),
    };
    let mut csr = CertificateSigningRequest {
        metadata: Default::default(),
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: case.signer.clone(),
            usages: Some(case.usages.clone()),
            username: Some(case.username.clone()),
            groups: Some(case.groups.clone()),
            expiration_seconds: case.expiration_seconds,
            ..Default::default()
        },
        status: None,
    };
    csr.metadata.name = Some(case.name.clone());
    if case.approved_by_human {
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![condition("Approved")]),
            certificate: None,
        });
    }
    csr
}

// ---- running a case ---------------------------------------------------------------------------

/// What happened to a request, end to end.
#[derive(Debug)]
enum Outcome {
    Approved(Box<IssuedCertificate>),
    Denied(DenyReason, String),
    Ignored(IgnoreReason),
    Failed(String),
    IssuedAfterHuman(Box<IssuedCertificate>),
}

struct World {
    ca: CertificateAuthority,
    signer: Signer,
    policies: BTreeMap<String, (PolicyConfig, Policy)>,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl World {
    fn new(policies: BTreeMap<String, PolicyConfig>) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let generate = || {
            CertificateAuthority::generate("kubecert corpus CA", UNIX_EPOCH + Duration::from_secs(T0), &rng)
                .unwrap()
        };
        let ca = generate();
        let shared =
            CertificateAuthority::from_pem(ca.certificate_pem().as_bytes(), ca.private_key_pem().as_bytes())
                .unwrap();
        let signer = Signer::new(SignerAuthorities::shared(shared).unwrap(), IssuancePolicy::default());
        let policies = policies
            .into_iter()
            .map(|(name, config)| {
                let policy = Policy::new(config.clone()).unwrap_or_else(|e| panic!("policy {name}: {e}"));
                (name, (config, policy))
            })
            .collect();
        Self { ca, signer, policies, rng }
    }

    /// Runs a case: the request object as it ended up, and what happened.
    fn run(&self, case: &Case) -> (CertificateSigningRequest, Outcome) {
        let (_, policy) =
            self.policies.get(&case.policy).unwrap_or_else(|| panic!("no policy {}", case.policy));
        let mut csr = csr_object(case);
        let request = ApprovalRequest {
            csr: &csr,
            pending_before: case.pending_before,
            node_addresses: case.node_addresses.as_deref(),
        };
        let decision =
            policy.decide(&request, |review| case.sar_allows.iter().any(|s| s == review.subresource()));
        if case.approved_by_human {
            assert_eq!(decision, Decision::Ignore { why: IgnoreReason::AlreadyDecided }, "{}", case.name);
        }
        if let Some(condition) = decision.condition(now()).unwrap() {
            let status = csr.status.get_or_insert_with(Default::default);
            status.conditions.get_or_insert_with(Vec::new).push(condition);
        }
        let approved_by_policy = matches!(decision, Decision::Approve { .. });
        // The invariant at the heart of the corpus: the signer acts on nothing that neither the
        // policy nor a human approved.
        let should_sign = self.signer.should_sign(&csr);
        assert_eq!(should_sign, approved_by_policy || case.approved_by_human, "{}: should_sign", case.name);
        if !should_sign {
            let outcome = match decision {
                Decision::Deny { reason, message } => Outcome::Denied(reason, message),
                Decision::Ignore { why } => Outcome::Ignored(why),
                Decision::Approve { .. } => unreachable!("approved requests are signed"),
            };
            return (csr, outcome);
        }
        let outcome =
            match self.signer.sign(&csr, now(), &self.rng).unwrap_or_else(|e| panic!("{}: {e}", case.name)) {
                SignOutcome::Issued(issued) if approved_by_policy => Outcome::Approved(issued),
                SignOutcome::Issued(issued) => Outcome::IssuedAfterHuman(issued),
                SignOutcome::Rejected(failure) => {
                    assert!(
                        !approved_by_policy,
                        "{}: the policy approved what the signer refuses: {failure}",
                        case.name
                    );
                    Outcome::Failed(failure.message().to_owned())
                }
            };
        (csr, outcome)
    }
}

fn check_message(case: &Case, got: &str) {
    if let Some(expected) = &case.expect.message {
        assert_eq!(got, expected, "{}: message", case.name);
    }
    if let Some(part) = &case.expect.message_contains {
        assert!(got.contains(part.as_str()), "{}: message {got:?} lacks {part:?}", case.name);
    }
}

fn ignore_variant(why: &IgnoreReason) -> &'static str {
    match why {
        IgnoreReason::AlreadyDecided => "AlreadyDecided",
        IgnoreReason::NoPolicyForSigner => "NoPolicyForSigner",
        IgnoreReason::PolicyDisabled => "PolicyDisabled",
        IgnoreReason::AutoApproveDisabled => "AutoApproveDisabled",
        IgnoreReason::NotAuthorized => "NotAuthorized",
        IgnoreReason::NodeAddressesUnknown => "NodeAddressesUnknown",
        IgnoreReason::ViolationNotDenied { .. } => "ViolationNotDenied",
    }
}

fn check_outcome(world: &World, case: &Case, csr: &CertificateSigningRequest, outcome: &Outcome) {
    let expect = &case.expect;
    match (expect.decision.as_str(), outcome) {
        ("approve", Outcome::Approved(issued)) => {
            check_issued(world, case, csr, issued);
            check_within_policy(world, case, issued);
        }
        ("issue", Outcome::IssuedAfterHuman(issued)) => check_issued(world, case, csr, issued),
        ("deny", Outcome::Denied(reason, message)) => {
            assert_eq!(Some(reason.as_str()), expect.reason.as_deref(), "{}: reason", case.name);
            check_message(case, message);
        }
        ("ignore", Outcome::Ignored(why)) => {
            assert_eq!(
                Some(ignore_variant(why)),
                expect.reason.as_deref(),
                "{}: ignore reason ({why})",
                case.name
            );
        }
        ("failed", Outcome::Failed(message)) => check_message(case, message),
        (expected, got) => panic!("{}: expected {expected}, got {got:?}", case.name),
    }
}

/// What every issued certificate must be, whoever approved it.
fn check_issued(world: &World, case: &Case, csr: &CertificateSigningRequest, issued: &IssuedCertificate) {
    let name = &case.name;
    let cert = issued.certificate().unwrap();
    let info = kubecert_csr::parse_csr_pem(&csr.spec.request.0).unwrap();
    assert!(!cert.is_ca, "{name}: CA:TRUE issued");
    let expected_usages: BTreeSet<KeyUsage> = case
        .usages
        .iter()
        .map(|u| match u.parse::<KeyUsage>().unwrap() {
            KeyUsage::Signing => KeyUsage::DigitalSignature,
            KeyUsage::Smime => KeyUsage::EmailProtection,
            other => other,
        })
        .collect();
    assert_eq!(cert.key_usage.iter().copied().collect::<BTreeSet<_>>(), expected_usages, "{name}: usages");
    assert_eq!(cert.subject.der, info.subject.der, "{name}: subject");
    assert_eq!(cert.public_key.spki_der, info.public_key.spki_der, "{name}: key");
    assert_eq!(cert.dns_names, info.dns_names, "{name}: DNS SANs");
    assert_eq!(cert.ip_addresses, info.ip_addresses, "{name}: IP SANs");
    assert_eq!(cert.email_addresses, info.email_addresses, "{name}: email SANs");
    assert_eq!(cert.uris, info.uris, "{name}: URI SANs");
    assert_eq!(cert.not_before, now() - Duration::from_secs(300), "{name}: NotBefore");
    assert!(cert.not_after <= world.ca.certificate().not_after, "{name}: outlives the CA");
    if let Some(lifetime) = case.expect.lifetime_seconds {
        assert_eq!(
            cert.not_after.duration_since(cert.not_before).unwrap().as_secs(),
            lifetime,
            "{name}: lifetime"
        );
    }
    let (_, parsed) = X509Certificate::from_der(&cert.der).unwrap();
    let (_, ca) = X509Certificate::from_der(&world.ca.certificate().der).unwrap();
    parsed.verify_signature(Some(ca.public_key())).unwrap_or_else(|e| panic!("{name}: signature: {e}"));
    assert_eq!(issued.pem().matches("-----BEGIN CERTIFICATE-----").count(), 1, "{name}: one PEM block");
}

/// What a certificate approved by the policy must also be: checked here independently of the
/// policy's own code, from the case's policy configuration.
fn check_within_policy(world: &World, case: &Case, issued: &IssuedCertificate) {
    let name = &case.name;
    let cert = issued.certificate().unwrap();
    let (config, _) = &world.policies[&case.policy];
    let rules = &config.signers[&case.signer];
    let cn = cert.subject.common_name.clone().unwrap_or_default();
    match case.signer.as_str() {
        "kubernetes.io/kube-apiserver-client-kubelet" => {
            assert_eq!(cert.subject.organizations, [NODE_GROUP], "{name}");
            assert!(cn.starts_with(NODE_USER_PREFIX), "{name}");
            assert!(cert.dns_names.is_empty() && cert.ip_addresses.is_empty(), "{name}");
            assert!(cert.email_addresses.is_empty() && cert.uris.is_empty(), "{name}");
            assert!(
                cert.key_usage.contains(&KeyUsage::ClientAuth)
                    && !cert.key_usage.contains(&KeyUsage::ServerAuth)
            );
            if case.username.starts_with(NODE_USER_PREFIX) {
                assert_eq!(cn, case.username, "{name}: a node only gets its own name");
            }
        }
        "kubernetes.io/kubelet-serving" => {
            assert_eq!(cert.subject.organizations, [NODE_GROUP], "{name}");
            assert_eq!(cn, case.username, "{name}: only the node itself");
            assert!(cert.email_addresses.is_empty() && cert.uris.is_empty(), "{name}");
            for dns in &cert.dns_names {
                let dns = dns.to_ascii_lowercase();
                let allowed = rules.allowed_dns_suffixes.iter().any(|s| {
                    let s = s.trim_matches('.');
                    s.is_empty() || dns == s || dns.ends_with(&format!(".{s}"))
                });
                assert!(allowed, "{name}: {dns} outside the allowed domains");
                if let Some(addresses) = &case.node_addresses {
                    assert!(
                        addresses.iter().any(|a| a.eq_ignore_ascii_case(&dns)),
                        "{name}: {dns} not a node address"
                    );
                }
            }
            for ip in &cert.ip_addresses {
                let allowed =
                    rules.allowed_ip_cidrs.iter().any(|c| ipnet::IpNet::from_str(c).unwrap().contains(ip));
                assert!(allowed, "{name}: {ip} outside the allowed networks");
                if let Some(addresses) = &case.node_addresses {
                    assert!(addresses.iter().any(|a| a.parse::<IpAddr>().ok() == Some(*ip)), "{name}: {ip}");
                }
            }
        }
        "kubernetes.io/kube-apiserver-client" => {
            assert!(!cert.subject.organizations.iter().any(|o| o == "system:masters"), "{name}");
            assert!(
                cert.subject.organizations.iter().all(|o| rules.allowed_organizations.contains(o)),
                "{name}"
            );
            assert!(rules.allowed_common_name_prefixes.iter().any(|p| cn.starts_with(p.as_str())), "{name}");
        }
        other => panic!("{name}: the policy approved a request for {other}"),
    }
}

#[test]
fn hostile_csr_corpus_gets_its_documented_decisions() {
    let corpus = load();
    assert!(corpus.case.len() >= 40, "the corpus has {} cases", corpus.case.len());
    let names: BTreeSet<&str> = corpus.case.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), corpus.case.len(), "case names must be unique");

    let world = World::new(corpus.policies);
    let mut decisions = BTreeSet::new();
    let mut deny_reasons = BTreeSet::new();
    let mut issued = 0;
    for case in &corpus.case {
        assert!(!case.why.trim().is_empty(), "{}: say why", case.name);
        let (csr, outcome) = world.run(case);
        check_outcome(&world, case, &csr, &outcome);
        decisions.insert(case.expect.decision.clone());
        if let Outcome::Denied(reason, _) = &outcome {
            deny_reasons.insert(*reason);
        }
        issued += usize::from(matches!(outcome, Outcome::Approved(_) | Outcome::IssuedAfterHuman(_)));
    }
    let all_decisions: BTreeSet<String> =
        ["approve", "deny", "ignore", "failed", "issue"].into_iter().map(String::from).collect();
    assert_eq!(decisions, all_decisions, "every kind of decision is exercised");
    let all_reasons: BTreeSet<DenyReason> = DenyReason::ALL.into_iter().collect();
    assert_eq!(deny_reasons, all_reasons, "every deny reason is exercised");
    assert!(issued > 0);
}
