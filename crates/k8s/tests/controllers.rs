//! The controllers, the node-side request/wait and the rotation loop's [`CsrSource`] against the
//! embedded API (in memory, through kube-rs exactly as against a real cluster).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, ListParams};
use kubecert_apiserver::{SIGNER_USER, UserInfo};
use kubecert_authority::{
    CertificateAuthority, IssuancePolicy, Policy, PolicyConfig, Signer, SignerAuthorities,
};
use kubecert_csr::{
    CertificatePurpose, CertificateTemplate, CsrName, KeyAlgorithm, PrivateKey,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, bootstrap_csr_name, build_csr_pem, csr_object,
    parse_certificates_pem, usages_for,
};
use kubecert_k8s::controllers::{
    Failure, LeaderElection, ReasonLabel, SignerMetrics, clean_once, run_approver, run_cleaner, run_signer,
    run_when_leader,
};
use kubecert_k8s::{CsrSource, request};
use kubecert_rotation::{CertificateRequest, CertificateSource as _};
use tokio_util::sync::CancellationToken;

struct Cluster {
    api: kubecert_apiserver::Api,
    ca: Arc<CertificateAuthority>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api = kubecert_apiserver::Api::open(&kubecert_apiserver::Config::new(dir.path())).unwrap();
        let ca = CertificateAuthority::generate(
            "kubecert test CA",
            SystemTime::now(),
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        Self { api, ca: Arc::new(ca), shutdown: CancellationToken::new(), _dir: dir }
    }

    fn client(&self, name: &str, groups: &[&str]) -> kube::Client {
        let user = UserInfo::authenticated(name, groups.iter().map(|g| g.to_string()).collect());
        kube::Client::new(self.api.service_as(user), "default")
    }

    fn controller_client(&self) -> kube::Client {
        self.client(SIGNER_USER, &[])
    }

    fn signer(&self) -> Arc<ArcSwap<Signer>> {
        let ca = CertificateAuthority::from_pem(
            self.ca.certificate_pem().as_bytes(),
            self.ca.private_key_pem().as_bytes(),
        )
        .unwrap();
        Arc::new(ArcSwap::from_pointee(Signer::new(
            SignerAuthorities::shared(ca).unwrap(),
            IssuancePolicy::default(),
        )))
    }

    /// Starts an approver and one signer; returns the signer's metrics.
    fn start_controllers(&self, policy: PolicyConfig) -> SignerMetrics {
        let metrics = SignerMetrics::default();
        let policy = Policy::new(policy).unwrap();
        tokio::spawn(run_approver(self.controller_client(), policy, metrics.clone(), self.shutdown.clone()));
        self.start_signer(metrics.clone());
        metrics
    }

    fn start_signer(&self, metrics: SignerMetrics) {
        tokio::spawn(run_signer(self.controller_client(), self.signer(), metrics, self.shutdown.clone()));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A node's client CSR with the deterministic bootstrap name, as the bootstrap path sends it.
fn bootstrap_csr(node: &str, key: &PrivateKey) -> CertificateSigningRequest {
    let template = CertificateTemplate::node_client(node);
    let usages = usages_for(key.algorithm(), CertificatePurpose::Client);
    let name =
        bootstrap_csr_name(key.public_key_der(), &template.common_name, &template.organizations, &usages);
    let pem = build_csr_pem(&template, key).unwrap();
    csr_object(CsrName::Fixed(name), SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, None)
}

async fn obtain(client: kube::Client, csr: &CertificateSigningRequest) -> Result<Vec<u8>, request::Error> {
    let api = Api::<CertificateSigningRequest>::all(client);
    let requested = request::request_certificate(&api, csr, SystemTime::now()).await?;
    request::wait_for_certificate(api, &requested, Duration::from_secs(30)).await
}

fn condition_reason(csr: &CertificateSigningRequest, type_: &str) -> Option<String> {
    let conditions = csr.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == type_).and_then(|c| c.reason.clone())
}

#[tokio::test]
async fn bootstrap_then_renewal_is_approved_and_issued() {
    let cluster = Cluster::new();
    let metrics = cluster.start_controllers(PolicyConfig::default());

    // Bootstrap: a bootstrap-token user asks for the node's first certificate.
    let bootstrapper = cluster.client("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = bootstrap_csr("n1", &key);
    let pem = obtain(bootstrapper.clone(), &csr).await.unwrap();
    let chain = parse_certificates_pem(&pem).unwrap();
    assert_eq!(chain.len(), 1, "one PEM block, no chain (SPEC SG-6)");
    let cert = &chain[0];
    assert_eq!(cert.subject.common_name.as_deref(), Some("system:node:n1"));
    assert!(cert.matches_key(&key));
    assert!(cert.issuer.contains("kubecert test CA"), "{}", cert.issuer);

    // Restarting during bootstrap: the same key and name reuse the CSR (SPEC R-3, E-3).
    let again = obtain(bootstrapper.clone(), &csr).await.unwrap();
    assert_eq!(again, pem);
    let all = Api::<CertificateSigningRequest>::all(cluster.controller_client());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 1, "no orphan CSR");

    // Renewal: the node itself asks, with a new key and a generated name.
    let node = cluster.client("system:node:n1", &["system:nodes"]);
    let new_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let template = CertificateTemplate::node_client("n1");
    let usages = usages_for(KeyAlgorithm::EcdsaP256, CertificatePurpose::Client);
    let renewal = csr_object(
        CsrName::Generate,
        SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
        &build_csr_pem(&template, &new_key).unwrap(),
        &usages,
        None,
    );
    let renewed = parse_certificates_pem(&obtain(node, &renewal).await.unwrap()).unwrap();
    assert!(renewed[0].matches_key(&new_key));
    assert_ne!(renewed[0].serial_hex, cert.serial_hex);

    let csrs = all.list(&ListParams::default()).await.unwrap().items;
    let messages: Vec<String> = csrs
        .iter()
        .filter_map(|c| c.status.as_ref()?.conditions.as_ref()?.first()?.message.clone())
        .collect();
    assert!(
        messages.contains(&"Auto approving kubelet client certificate after SubjectAccessReview.".to_owned())
    );
    assert!(
        messages.contains(
            &"Auto approving self kubelet client certificate after SubjectAccessReview.".to_owned()
        )
    );
    assert_eq!(metrics.approvals.get(), 2);
}

#[tokio::test]
async fn policy_violations_are_denied_with_a_reason_the_node_sees() {
    let cluster = Cluster::new();
    let _metrics = cluster.start_controllers(PolicyConfig::default());
    // A node asking for another node's client certificate.
    let node = cluster.client("system:node:n1", &["system:nodes"]);
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let err = obtain(node, &bootstrap_csr("n2", &key)).await.unwrap_err();
    let request::Error::Denied { reason, message, .. } = &err else { panic!("expected a denial, got {err}") };
    assert!(!reason.is_empty() && !message.is_empty(), "{err}");
}

#[tokio::test]
async fn two_signers_racing_issue_every_certificate_exactly_once() {
    let cluster = Cluster::new();
    let first = cluster.start_controllers(PolicyConfig::default());
    let second = SignerMetrics::default();
    cluster.start_signer(second.clone());

    let bootstrapper = cluster.client("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = bootstrapper.clone();
        tasks.push(tokio::spawn(async move {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
            obtain(client, &bootstrap_csr(&format!("node-{i}"), &key)).await.unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let issued = |m: &SignerMetrics| -> u64 {
        let label =
            kubecert_k8s::controllers::SignerLabel { signer: SIGNER_KUBE_APISERVER_CLIENT_KUBELET.into() };
        m.issuances.get_or_create(&label).get()
    };
    // The node may see its certificate before the signer has counted it: wait for the count, then
    // give a double issuance time to show.
    wait_until(|| issued(&first) + issued(&second) >= 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(issued(&first) + issued(&second), 12, "each CSR issued once, by one of the two signers");
}

#[tokio::test]
async fn the_cleaner_deletes_what_is_done_with() {
    let cluster = Cluster::new();
    let _metrics = cluster.start_controllers(PolicyConfig::default());
    let bootstrapper = cluster.client("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    obtain(bootstrapper, &bootstrap_csr("n1", &key)).await.unwrap();
    let api = Api::<CertificateSigningRequest>::all(cluster.controller_client());
    let issued = api.list(&ListParams::default()).await.unwrap().items.remove(0);
    assert_eq!(condition_reason(&issued, "Approved").as_deref(), Some("AutoApproved"));

    assert_eq!(clean_once(&api, SystemTime::now()).await.unwrap(), 0, "issued a moment ago: kept");
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    assert_eq!(clean_once(&api, later).await.unwrap(), 1, "approved and issued over an hour ago: deleted");
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_failed_cleaning_pass_is_counted_and_the_cleaner_keeps_going() {
    // An API that is down: a loopback port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (metrics, shutdown) = (SignerMetrics::default(), CancellationToken::new());
    let cleaner =
        tokio::spawn(run_cleaner(client, Duration::from_millis(50), metrics.clone(), shutdown.clone()));
    let failures = |failure: Failure| {
        metrics.failures.get_or_create(&ReasonLabel { reason: failure.as_str().to_owned() }).get()
    };
    wait_until(|| failures(Failure::CleanerError) >= 2).await;
    shutdown.cancel();
    cleaner.await.unwrap();
    assert_eq!(failures(Failure::SignerError) + failures(Failure::ApproverError), 0);
}

#[tokio::test]
async fn leadership_moves_when_the_leader_goes_away() {
    let cluster = Cluster::new();
    let election = |id: &str| LeaderElection {
        namespace: "kube-system".into(),
        lease_name: "kubecert-signer".into(),
        identity: id.into(),
        lease_duration_seconds: 3,
        renew_grace_seconds: 1,
    };
    let (first_metrics, second_metrics) = (SignerMetrics::default(), SignerMetrics::default());
    let first_shutdown = CancellationToken::new();
    let first = {
        let (client, metrics, shutdown) =
            (cluster.controller_client(), first_metrics.clone(), first_shutdown.clone());
        tokio::spawn(async move {
            run_when_leader(client, &election("a"), &metrics, shutdown, |term| term.cancelled_owned()).await
        })
    };
    wait_until(|| first_metrics.leader.get() == 1).await;
    let second = {
        let (client, metrics, shutdown) =
            (cluster.controller_client(), second_metrics.clone(), cluster.shutdown.clone());
        tokio::spawn(async move {
            run_when_leader(client, &election("b"), &metrics, shutdown, |term| term.cancelled_owned()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(second_metrics.leader.get(), 0, "one leader at a time");

    // Kill the leader without a goodbye: the other takes over within the lease duration.
    first.abort();
    let killed_at = tokio::time::Instant::now();
    wait_until(|| second_metrics.leader.get() == 1).await;
    assert!(killed_at.elapsed() < Duration::from_secs(3 + 3), "took {:?}", killed_at.elapsed());
    cluster.shutdown.cancel();
    second.await.unwrap().unwrap();
    drop(first_shutdown);
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not met within 20 s");
}

/// A rotation's request for node `node`'s client certificate, with a new key.
fn rotation_request(node: &str, current: Option<kubecert_csr::Certificate>) -> CertificateRequest {
    let template = CertificateTemplate::node_client(node);
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr_pem = build_csr_pem(&template, &key).unwrap();
    let usages = usages_for(KeyAlgorithm::EcdsaP256, CertificatePurpose::Client);
    CertificateRequest { template, key, csr_pem, usages, current }
}

/// Records what a [`CsrSource`] reports about the API's health.
fn health_log() -> (Arc<Mutex<Vec<bool>>>, kubecert_k8s::source::HealthObserver) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let log = log.clone();
        Arc::new(move |healthy| log.lock().unwrap().push(healthy))
    };
    (log, observer)
}

#[tokio::test]
async fn csr_source_bootstraps_then_renews_with_the_certificate_it_holds() {
    let cluster = Cluster::new();
    let _metrics = cluster.start_controllers(PolicyConfig::default());
    let bootstrapper = cluster.client("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let connects = Arc::new(AtomicUsize::new(0));
    let (health, observer) = health_log();
    let source = CsrSource::new(
        SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
        cluster.client("system:node:n1", &["system:nodes"]),
    )
    .with_health(observer)
    .with_bootstrap({
        let connects = connects.clone();
        move || {
            connects.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(bootstrapper.clone()))
        }
    });

    let first = source.obtain(&rotation_request("n1", None)).await.unwrap();
    let first = parse_certificates_pem(first.as_bytes()).unwrap().remove(0);
    assert_eq!(connects.load(Ordering::Relaxed), 1, "no certificate held: the bootstrap client asks");
    let second = source.obtain(&rotation_request("n1", Some(first.clone()))).await.unwrap();
    let second = parse_certificates_pem(second.as_bytes()).unwrap().remove(0);
    assert_eq!(connects.load(Ordering::Relaxed), 1, "a held certificate: the node's own client asks");
    assert_ne!(first.serial_hex, second.serial_hex);
    assert_eq!(*health.lock().unwrap(), [true, true]);

    let all = Api::<CertificateSigningRequest>::all(cluster.controller_client());
    let mut requestors: Vec<(String, Option<String>)> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|csr| (csr.metadata.name.unwrap_or_default(), csr.spec.username))
        .collect();
    requestors.sort_by_key(|(_, user)| user.clone());
    assert!(requestors.iter().all(|(name, _)| name.starts_with("csr-")), "{requestors:?}");
    let users: Vec<_> = requestors.into_iter().filter_map(|(_, user)| user).collect();
    assert_eq!(users, ["system:bootstrap:abcdef", "system:node:n1"]);
}

#[tokio::test]
async fn csr_source_failures_are_request_errors_and_report_the_api_health() {
    let cluster = Cluster::new();
    let (health, observer) = health_log();
    // Someone without the right to create CSRs: the API server answers 403, so it is healthy.
    let stranger = cluster.client("stranger", &[]);
    let source = CsrSource::new(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, stranger.clone()).with_health(observer);
    let err = source.obtain(&rotation_request("n1", None)).await.unwrap_err();
    assert_eq!(err.kind(), "request", "{err}");
    assert!(err.to_string().contains("cannot create certificate signing request"), "{err}");
    assert_eq!(*health.lock().unwrap(), [true]);

    // Bootstrap credentials that cannot be had fail the attempt with their message.
    let source = CsrSource::new(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, stranger)
        .with_bootstrap(|| std::future::ready(Err("bootstrap kubeconfig /x is missing".into())));
    let err = source.obtain(&rotation_request("n1", None)).await.unwrap_err();
    assert_eq!(err.to_string(), "certificate request: bootstrap kubeconfig /x is missing");
}
