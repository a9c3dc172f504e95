//! The renewal canary: prove, before it is needed, that renewal works end to end.
//!
//! Every `--canary-interval` (and once with `node-agent canary --once`) the agent runs the real
//! renewal path with a throwaway key: a CSR with the live certificate's subject and usages, a
//! 600 s lifetime (`spec.expirationSeconds`, the API's minimum) and the annotation
//! `kubecert.io/canary: "true"`, created with the live client certificate → approved by the
//! cluster's approver → issued by its signer → the certificate verified against the CA bundle of
//! the node's kubeconfig → used to authenticate (a SelfSubjectReview must answer
//! `system:node:<name>`) → the CSR deleted. The live key, certificate and files are never
//! touched; the signer does not count canary issuances as renewals.
//!
//! Each run ends at its first failing [`Stage`]; the CSR is deleted in any case. Deleting needs
//! a permission nodes lack in upstream RBAC: `signer serve` lets a node delete its own canary
//! CSRs; against kube-apiserver the cleanup stage fails and the cleaner removes the CSR once its
//! 10-minute certificate has expired (SPEC CL-1).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kubecert_csr::{
    CertificatePurpose, CertificateTemplate, CsrName, KeyAlgorithm, KeyUsage, PrivateKey,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, build_csr_pem, csr_object, parse_certificates_pem, usages_for,
};
use kubecert_reload::{Identity, LiveIdentity, verify_client_certificate};
use kubecert_store::kubeconfig::BootstrapKubeconfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{client_for, kubeconfig_identity};
use crate::cli::CanaryArgs;

/// The annotation that marks a canary CSR.
pub const CANARY_ANNOTATION: &str = "kubecert.io/canary";
/// The canary certificate's requested lifetime: the API's minimum.
pub const CANARY_LIFETIME_SECONDS: i32 = 600;
/// How long the canary waits for approval and signature.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it looks at its CSR while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The stages of a canary run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Creating the CSR with the live certificate.
    Create,
    /// Waiting for the approver (a denial fails here).
    Approve,
    /// Waiting for the signer (a `Failed` condition fails here).
    Sign,
    /// Checking the issued certificate: the throwaway key, the subject, and the chain to the CA
    /// bundle of the node's kubeconfig.
    Verify,
    /// Authenticating with it: SelfSubjectReview must say `system:node:<name>`.
    Authenticate,
    /// Deleting the CSR.
    Cleanup,
}

impl Stage {
    /// Every stage, in order (for metrics).
    pub const ALL: [Stage; 6] =
        [Stage::Create, Stage::Approve, Stage::Sign, Stage::Verify, Stage::Authenticate, Stage::Cleanup];

    /// The stage's name (metric label, JSON, messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Create => "create",
            Stage::Approve => "approve",
            Stage::Sign => "sign",
            Stage::Verify => "verify",
            Stage::Authenticate => "authenticate",
            Stage::Cleanup => "cleanup",
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryReport {
    /// Whether every stage passed.
    pub ok: bool,
    /// The first failing stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The canary CSR's name, once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// How long the run took, in seconds.
    pub duration_seconds: f64,
}

/// A failure: its stage and message.
type Failure = (Stage, String);

/// What a canary run needs.
pub struct Canary {
    /// The node's kubeconfig (server, CA bundle).
    pub kubeconfig: PathBuf,
    /// The node name.
    pub node_name: String,
    /// The live client identity (read only).
    pub live: LiveIdentity,
    /// The node's API client (authenticates with the live identity).
    pub user: kube::Client,
    /// The key type of renewals.
    pub key_algorithm: KeyAlgorithm,
}

impl Canary {
    /// Runs every stage once.
    pub async fn run_once(&self) -> CanaryReport {
        let started = Instant::now();
        let csrs: Api<CertificateSigningRequest> = Api::all(self.user.clone());
        let mut name = None;
        let mut result = self.issue_and_use(&csrs, &mut name).await;
        if let Some(created) = &name {
            let deleted = csrs.delete(created, &DeleteParams::default()).await;
            if let (Ok(()), Err(e)) = (&result, deleted) {
                result =
                    Err((Stage::Cleanup, format!("deleting {created}: {}", kubecert_cli::error_chain(&e))));
            }
        }
        let (stage, error) = match result {
            Ok(()) => (None, None),
            Err((stage, error)) => (Some(stage), Some(error)),
        };
        CanaryReport {
            ok: stage.is_none(),
            stage,
            error,
            csr: name,
            duration_seconds: started.elapsed().as_secs_f64(),
        }
    }

    async fn issue_and_use(
        &self,
        csrs: &Api<CertificateSigningRequest>,
        name: &mut Option<String>,
    ) -> Result<(), Failure> {
        let create = |e: String| (Stage::Create, e);
        let live = self.live.current().ok_or_else(|| create("no client certificate in use".into()))?;
        if live.leaf().is_expired_at(SystemTime::now()) {
            return Err(create("the client certificate in use has expired".into()));
        }
        let template = CertificateTemplate::node_client(&self.node_name);
        if !template.is_satisfied_by(live.leaf()) {
            return Err(create(format!(
                "the client certificate in use is not system:node:{}",
                self.node_name
            )));
        }
        let key = PrivateKey::generate(self.key_algorithm).map_err(|e| create(e.to_string()))?;
        let usages = usages_for(self.key_algorithm, CertificatePurpose::Client);
        let csr = canary_csr(&template, &key, &usages).map_err(|e| create(e.to_string()))?;
        let created = csrs
            .create(&PostParams::default(), &csr)
            .await
            .map_err(|e| create(kubecert_cli::error_chain(&e)))?;
        let created_name = created.metadata.name.clone().unwrap_or_default();
        *name = Some(created_name.clone());
        let chain = wait_issued(csrs, &created_name).await?;
        let verify = |e: String| (Stage::Verify, e);
        let certificate = parse_certificates_pem(&chain).map_err(|e| verify(e.to_string()))?;
        let leaf = &certificate[0];
        if !leaf.matches_key(&key) {
            return Err(verify("the issued certificate is not for the canary's key".into()));
        }
        if !template.is_satisfied_by(leaf) || !leaf.key_usage.contains(&KeyUsage::ClientAuth) {
            return Err(verify(format!(
                "the issued certificate is not a node client certificate: {:?}",
                leaf.subject
            )));
        }
        let trust = self.trust().map_err(|e| verify(kubecert_cli::error_chain(&*e)))?;
        verify_client_certificate(&trust, &leaf.der, SystemTime::now()).map_err(|e| {
            verify(format!("the issued certificate does not chain to the kubeconfig's CA bundle: {e}"))
        })?;
        self.authenticate(&chain, &key).await.map_err(|e| (Stage::Authenticate, e))
    }

    /// The CA bundle of the node's kubeconfig: the trust the cluster's certificates chain to.
    fn trust(&self) -> anyhow::Result<Vec<u8>> {
        let kubeconfig = BootstrapKubeconfig::load(&self.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", self.kubeconfig.display()))?;
        let ca = kubeconfig
            .cluster
            .certificate_authority
            .with_context(|| format!("kubeconfig {} names no CA bundle", self.kubeconfig.display()))?;
        Ok(ca.read()?)
    }

    async fn authenticate(&self, chain: &[u8], key: &PrivateKey) -> Result<(), String> {
        let identity = Identity::from_pem(chain, key.to_pem().as_bytes()).map_err(|e| e.to_string())?;
        let client = client_for(&self.kubeconfig, LiveIdentity::new(identity), None)
            .await
            .map_err(|e| kubecert_cli::error_chain(&*e))?;
        let review = Api::<SelfSubjectReview>::all(client)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| format!("SelfSubjectReview: {}", kubecert_cli::error_chain(&e)))?;
        let username = review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default();
        let expected = format!("system:node:{}", self.node_name);
        if username == expected {
            Ok(())
        } else {
            Err(format!("SelfSubjectReview says {username:?}, not {expected:?}"))
        }
    }
}

/// The canary's CSR: the template's subject, the renewal usages, 600 s, the canary annotation.
fn canary_csr(
    template: &CertificateTemplate,
    key: &PrivateKey,
    usages: &[KeyUsage],
) -> Result<CertificateSigningRequest, kubecert_csr::Error> {
    let pem = build_csr_pem(template, key)?;
    let mut csr = csr_object(
        CsrName::Generate,
        SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
        &pem,
        usages,
        Some(CANARY_LIFETIME_SECONDS),
    );
    csr.metadata.generate_name = Some("canary-".to_owned());
    csr.metadata.annotations = Some([(CANARY_ANNOTATION.to_owned(), "true".to_owned())].into());
    Ok(csr)
}

/// Waits for `name` to be approved and issued; a denial fails the approve stage, a `Failed`
/// condition (or no signature in time once approved) the sign stage.
async fn wait_issued(csrs: &Api<CertificateSigningRequest>, name: &str) -> Result<Vec<u8>, Failure> {
    let deadline = Instant::now() + ISSUE_TIMEOUT;
    let mut approved = false;
    loop {
        let stage = if approved { Stage::Sign } else { Stage::Approve };
        let csr = csrs.get(name).await.map_err(|e| (stage, kubecert_cli::error_chain(&e)))?;
        let status = csr.status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
        if let Some(denied) = find("Denied") {
            let reason = denied.reason.clone().unwrap_or_default();
            let message = denied.message.clone().unwrap_or_default();
            return Err((Stage::Approve, format!("denied ({reason}): {message}")));
        }
        if let Some(failed) = find("Failed") {
            let reason = failed.reason.clone().unwrap_or_default();
            let message = failed.message.clone().unwrap_or_default();
            return Err((Stage::Sign, format!("failed ({reason}): {message}")));
        }
        approved = find("Approved").is_some();
        if let (true, Some(certificate)) = (approved, status.certificate) {
            return Ok(certificate.0);
        }
        if Instant::now() >= deadline {
            let what = if approved { "signed" } else { "approved" };
            return Err((stage, format!("not {what} within {} s", ISSUE_TIMEOUT.as_secs())));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The canary's metrics (registered only when the canary runs).
#[derive(Clone, Debug, Default)]
pub struct CanaryMetrics {
    successes: Counter,
    failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    duration: Gauge<f64, AtomicU64>,
    headroom: Gauge<f64, AtomicU64>,
}

impl CanaryMetrics {
    /// Registers every series (each stage's failure counter starts at 0).
    pub fn register(&self, registry: &mut Registry) {
        for stage in Stage::ALL {
            let _ = self.failures.get_or_create(&stage_label(stage));
        }
        let canary = registry.sub_registry_with_prefix("kubecert_node_canary");
        canary.register("successes", "Renewal canary runs that passed every stage", self.successes.clone());
        canary.register(
            "failures",
            "Renewal canary runs that failed, by the failing stage",
            self.failures.clone(),
        );
        canary.register(
            "last_success_timestamp_seconds",
            "Unix time of the last renewal canary run that passed every stage (0: none yet)",
            self.last_success.clone(),
        );
        canary.register(
            "duration_seconds",
            "How long the last renewal canary run took",
            self.duration.clone(),
        );
        canary.register(
            "renewal_headroom_seconds",
            "At the last canary run: seconds until the client certificate in use expires, i.e. how long renewal may \
             keep failing before the node is locked out",
            self.headroom.clone(),
        );
    }

    /// Records a run, with the client certificate in use's NotAfter.
    pub fn observe(&self, report: &CanaryReport, not_after: Option<SystemTime>, now: SystemTime) {
        self.duration.set(report.duration_seconds);
        match report.stage {
            None => {
                self.successes.inc();
                self.last_success.set(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
            }
            Some(stage) => {
                self.failures.get_or_create(&stage_label(stage)).inc();
            }
        }
        let headroom = not_after.map_or(0.0, |t| match t.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        });
        self.headroom.set(headroom);
    }
}

fn stage_label(stage: Stage) -> Vec<(&'static str, &'static str)> {
    vec![("stage", stage.as_str())]
}

/// Runs the canary every `interval` (first at once) until `cancel`.
pub async fn run(canary: Canary, interval: Duration, metrics: CanaryMetrics, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let report = canary.run_once().await;
        let not_after = canary.live.current().map(|identity| identity.leaf().not_after);
        metrics.observe(&report, not_after, SystemTime::now());
        match (report.stage, &report.error) {
            (None, _) => info!(
                csr = report.csr.as_deref().unwrap_or_default(),
                duration = report.duration_seconds,
                "renewal canary passed"
            ),
            (Some(stage), error) => warn!(
                stage = stage.as_str(),
                error = error.as_deref().unwrap_or_default(),
                "renewal canary failed"
            ),
        }
    }
}

/// `node-agent canary --once [--json]`: one run with the node's kubeconfig; exit status 1 when
/// a stage fails, and the output names it.
pub fn run_cli(args: &CanaryArgs) -> u8 {
    if let Err(e) = args.tls_key_exchange.install() {
        eprintln!("node-agent canary: {e}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("node-agent canary: starting the runtime: {e}");
            return 1;
        }
    };
    let report = runtime.block_on(async {
        let canary = from_kubeconfig(args).await?;
        anyhow::Ok(canary.run_once().await)
    });
    let report = report.unwrap_or_else(|e| CanaryReport {
        ok: false,
        stage: Some(Stage::Create),
        error: Some(kubecert_cli::error_chain(&*e)),
        csr: None,
        duration_seconds: 0.0,
    });
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        match (report.stage, &report.error) {
            (None, _) => println!("renewal canary passed in {:.2} s", report.duration_seconds),
            (Some(stage), error) => {
                println!(
                    "renewal canary failed at stage {}: {}",
                    stage.as_str(),
                    error.as_deref().unwrap_or_default()
                )
            }
        }
    }
    u8::from(!report.ok)
}

/// A canary over the client certificate that `args.kubeconfig` names.
async fn from_kubeconfig(args: &CanaryArgs) -> anyhow::Result<Canary> {
    let kubeconfig = BootstrapKubeconfig::load(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let (identity, _) = kubeconfig_identity(&kubeconfig)?
        .with_context(|| format!("kubeconfig {} names no client certificate", args.kubeconfig.display()))?;
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => identity
            .leaf()
            .subject
            .common_name
            .as_deref()
            .and_then(|cn| cn.strip_prefix("system:node:"))
            .context("the client certificate is not system:node:<name>; give --node-name")?
            .to_owned(),
    };
    let live = LiveIdentity::new(identity);
    let user = client_for(&args.kubeconfig, live.clone(), None).await?;
    Ok(Canary {
        kubeconfig: args.kubeconfig.clone(),
        node_name,
        live,
        user,
        key_algorithm: KeyAlgorithm::EcdsaP256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_request_is_a_short_renewal_marked_as_canary() {
        let template = CertificateTemplate::node_client("n1");
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let usages = usages_for(KeyAlgorithm::EcdsaP256, CertificatePurpose::Client);
        let csr = canary_csr(&template, &key, &usages).unwrap();
        assert_eq!(csr.metadata.annotations.unwrap()[CANARY_ANNOTATION], "true");
        assert_eq!(csr.metadata.generate_name.as_deref(), Some("canary-"));
        assert_eq!(csr.spec.expiration_seconds, Some(600));
        assert_eq!(csr.spec.signer_name, SIGNER_KUBE_APISERVER_CLIENT_KUBELET);
        assert_eq!(csr.spec.usages.unwrap(), ["digital signature", "client auth"]);
        let request = kubecert_csr::parse_csr_pem(&csr.spec.request.0).unwrap();
        assert_eq!(request.subject.common_name.as_deref(), Some("system:node:n1"));
        assert_eq!(request.public_key.spki_der, key.public_key_der());
    }

    #[test]
    fn stages_are_named_in_order() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["create", "approve", "sign", "verify", "authenticate", "cleanup"]);
        let report = CanaryReport {
            ok: false,
            stage: Some(Stage::Approve),
            error: Some("denied".into()),
            csr: None,
            duration_seconds: 0.5,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"ok":false,"stage":"approve","error":"denied","duration_seconds":0.5}"#);
    }
}
