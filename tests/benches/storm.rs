//! `cargo xtask bench` section 2, the bootstrap storm: N simulated node agents bootstrap at
//! once against `signer serve` running in another process, or (`--target`, the side-by-side
//! section of `cargo xtask bench --cluster`) against the real kube-apiserver with
//! kube-controller-manager's CSR controllers (`kcm`) or with kubecert's `signer controller`
//! (`controller`). Each does what a node agent does
//! when it first starts, over real TLS and HTTP: authenticate with the bootstrap token, create
//! its `node-csr-…` request, list and watch it until it is approved and issued, and check the
//! certificate it gets. Keys and requests are made before the clock starts, so the client's
//! own cryptography does not count against the server.
//!
//! `cargo bench -p kubecert-tests --bench storm -- [--storm 5000] [--target serve|kcm|controller] [--json PATH]`

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use kubecert_csr::parse_certificates_pem;
use kubecert_k8s::request::{Error as RequestError, request_certificate, wait_for_certificate};
use kubecert_rotation::retry_delay;
use kubecert_tests::bench::{BenchArgs, cpu_time, millis, own_cpu_time, percentile, proc_status};
use kubecert_tests::kubernetes::{Cluster, ClusterOptions};
use kubecert_tests::{Process, SignerServe};
use serde_json::json;
use tokio::task::JoinSet;

/// How long one agent waits for its certificate before it counts as failed.
const AGENT_TIMEOUT: Duration = Duration::from_secs(600);

/// How many unanswered creates one agent retries before it counts as failed (with the agent's
/// backoff, about five minutes).
const MAX_CREATE_RETRIES: u32 = 12;

fn main() -> Result<(), String> {
    let args = BenchArgs::from_env();
    let agents = args.count("storm", 5000)?;
    let target: String = args.get("target", "serve".to_owned())?;
    let _ = kubecert_reload::KeyExchange::default().install();
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let server = Server::start(&target, dir.path())?;
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    server.create_token(&bootstrap);
    let pids = server.process_ids();

    let requests = support::node_requests(agents, "storm")?;
    let runtime = support::runtime()?;
    let cpu = || pids.iter().map(|pid| cpu_time(*pid).unwrap_or_default()).sum::<Duration>();
    let (cpu_before, client_cpu_before) = (cpu(), own_cpu_time());
    let storm = runtime.block_on(storm(&bootstrap, requests))?;
    let server_cpu = cpu().saturating_sub(cpu_before);
    let client_cpu = own_cpu_time().saturating_sub(client_cpu_before);
    // The sum of each process's own peak: an upper bound of their peak together.
    let peak_rss = pids
        .iter()
        .map(|pid| {
            proc_status(*pid, "VmHWM").ok_or_else(|| format!("server process {pid} exited during the storm"))
        })
        .sum::<Result<u64, String>>()?;

    let Storm { mut latencies, total, failures, retries } = storm;
    let issued = latencies.len();
    let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
    let rate = issued as f64 / total.as_secs_f64();
    println!(
        "storm ({}): {issued}/{agents} issued in {:.1} s ({rate:.0} CSRs/s), latency p50 {:.0} ms p99 {:.0} ms, \
         server peak RSS {} MiB, server CPU {:.1} s, client CPU {:.1} s, {retries} creates retried",
        server.describe(),
        total.as_secs_f64(),
        millis(p50),
        millis(p99),
        peak_rss / 1024,
        server_cpu.as_secs_f64(),
        client_cpu.as_secs_f64()
    );
    args.write_report(&json!({
        "target": target,
        "server": server.describe(),
        "agents": agents,
        "issued": issued,
        "failed": failures.len(),
        "create_retries": retries,
        "seconds_until_all_issued": total.as_secs_f64(),
        "csrs_per_second": rate,
        "latency_ms_p50": millis(p50),
        "latency_ms_p99": millis(p99),
        "server_peak_rss_kib": peak_rss,
        "server_cpu_seconds": server_cpu.as_secs_f64(),
        "client_cpu_seconds": client_cpu.as_secs_f64(),
        "note": "the server (signer serve in release, or etcd + kube-apiserver + the signing \
                 controller) in their own processes on the same 2 cores as the agents; each agent has \
                 its own TLS connection, token auth, create + list/watch until issued; latency from \
                 the agent's start to its certificate; server CPU and peak RSS summed over the \
                 server's processes; client CPU is this process's (the agents')",
    }))?;
    match failures.first() {
        Some(first) => Err(format!("{} of {agents} agents failed; the first: {first}", failures.len())),
        None => Ok(()),
    }
}

/// What the agents storm.
enum Server {
    /// `signer serve`.
    Serve(SignerServe),
    /// etcd + kube-apiserver, with kube-controller-manager's CSR controllers inside, or with
    /// kubecert's `signer controller` beside it.
    Cluster(Cluster, Option<Process>),
}

impl Server {
    fn start(target: &str, dir: &Path) -> Result<Self, String> {
        let cluster = |controller_manager| {
            let options = ClusterOptions { controller_manager, ..ClusterOptions::default() };
            Cluster::start(&dir.join("cluster"), &options)
        };
        Ok(match target {
            "serve" => Self::Serve(SignerServe::start(&dir.join("signer"), &[])),
            "kcm" => Self::Cluster(cluster(true), None),
            "controller" => {
                let cluster = cluster(false);
                let signer = cluster.signer_controller(&[], &dir.join("signer-controller.log"));
                Self::Cluster(cluster, Some(signer))
            }
            other => return Err(format!("--target: {other:?} is not serve, kcm or controller")),
        })
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Serve(_) => "signer serve",
            Self::Cluster(_, None) => "kube-apiserver + kube-controller-manager",
            Self::Cluster(_, Some(_)) => "kube-apiserver + signer controller",
        }
    }

    fn create_token(&self, bootstrap: &Path) {
        match self {
            Self::Serve(signer) => signer.create_token(bootstrap),
            Self::Cluster(cluster, _) => cluster.create_token(bootstrap),
        };
    }

    fn process_ids(&self) -> Vec<u32> {
        match self {
            Self::Serve(signer) => vec![signer.process.id()],
            Self::Cluster(cluster, signer) => {
                cluster.process_ids().into_iter().chain(signer.as_ref().map(Process::id)).collect()
            }
        }
    }
}

struct Storm {
    latencies: Vec<Duration>,
    total: Duration,
    failures: Vec<String>,
    /// Creates retried because no answer came (see [`bootstrap_one`]).
    retries: u64,
}

/// Starts every agent at once and waits for all of them.
async fn storm(bootstrap: &Path, requests: Vec<CertificateSigningRequest>) -> Result<Storm, String> {
    let kubeconfig = Kubeconfig::read_from(bootstrap).map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut agents = JoinSet::new();
    for (i, csr) in requests.into_iter().enumerate() {
        let (config, retries) = (config.clone(), retries.clone());
        agents.spawn(async move {
            let started = Instant::now();
            bootstrap_one(config, &csr, i, &retries).await.map(|()| started.elapsed())
        });
    }
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    while let Some(joined) = agents.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|outcome| outcome) {
            Ok(latency) => latencies.push(latency),
            Err(e) => failures.push(e),
        }
    }
    Ok(Storm { latencies, total: start.elapsed(), failures, retries: retries.load(Ordering::Relaxed) })
}

/// One agent: its own client (own connection), create, wait, check the certificate's subject.
/// A create the server never answered (no connection: the server or this process out of file
/// descriptors, a full accept queue) is retried on the node agent's own backoff (2, 4, 8, 16 s,
/// then every 32 s), as a real agent would; the bootstrap name makes the retry idempotent. Each
/// retry is counted in `retries`; an answer from the API that is an error fails the agent.
async fn bootstrap_one(
    config: kube::Config,
    csr: &CertificateSigningRequest,
    i: usize,
    retries: &AtomicU64,
) -> Result<(), String> {
    let client = Client::try_from(config).map_err(|e| format!("agent {i}: building a client: {e}"))?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let mut failures = 0;
    let requested = loop {
        match request_certificate(&api, csr, SystemTime::now()).await {
            Ok(requested) => break requested,
            Err(RequestError::Create(kube::Error::Api(status))) => {
                return Err(format!("agent {i}: creating its CSR: {}", status.message));
            }
            Err(_) if failures < MAX_CREATE_RETRIES => {
                failures += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(retry_delay(failures, fastrand::f64())).await;
            }
            Err(e) => return Err(format!("agent {i}: creating its CSR ({failures} retries): {e}")),
        }
    };
    let pem = wait_for_certificate(api, &requested, AGENT_TIMEOUT)
        .await
        .map_err(|e| format!("agent {i}: waiting for {}: {e}", requested.name))?;
    let chain = parse_certificates_pem(&pem).map_err(|e| format!("agent {i}: the certificate: {e}"))?;
    let expected = format!("system:node:storm-{i}");
    match chain.first().and_then(|leaf| leaf.subject.common_name.as_deref()) {
        Some(cn) if cn == expected => Ok(()),
        other => Err(format!("agent {i}: issued for {other:?}, expected {expected}")),
    }
}
