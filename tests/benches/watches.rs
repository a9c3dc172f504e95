//! `cargo xtask bench` section: many waiting nodes. N watches (default 10,000) pinned by name
//! (`fieldSelector=metadata.name=…`, what a node waiting for its certificate sends) are opened
//! on `signer serve`, each on its own TLS connection as waiting kubelets each have their own,
//! before their CSRs exist. Then the CSRs are created in waves (default 200 at once, the next
//! wave when every watcher of this one has its certificate); the signer approves and issues
//! each, and each watcher's latency runs from its CSR's create to the watch event carrying the
//! certificate. Reported: the server's resident memory growth from the open watches (and per
//! watch), its peak, and the latency p50/p99.
//!
//! `cargo bench -p kubecert-tests --bench watches -- [--watches 10000] [--wave 200] [--json PATH]`

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use kubecert_tests::SignerServe;
use kubecert_tests::bench::{BenchArgs, millis, own_cpu_time, percentile, proc_status};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections being opened at once (more overflow the listen backlog and wait on SYN retries).
const OPENING_AT_ONCE: usize = 256;
/// How long one wave may take before the run fails.
const WAVE_LIMIT: Duration = Duration::from_secs(120);

fn main() -> Result<(), String> {
    let args = BenchArgs::from_env();
    let watches = args.count("watches", 10_000)?;
    let wave = args.count("wave", 200)?;
    check_fd_limit(watches)?;
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let signer = SignerServe::start(&dir.path().join("signer"), &[]);
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    signer.create_token(&bootstrap);
    let pid = signer.process.id();
    let csrs = support::node_requests(watches, "waiting")?;
    let runtime = support::runtime()?;
    let rss = || proc_status(pid, "VmRSS").ok_or("signer serve exited");
    let run = runtime.block_on(run(&bootstrap, csrs, wave, rss))?;
    let peak = proc_status(pid, "VmHWM").ok_or("signer serve exited")?;
    let Run { mut latencies, rss_before, rss_open, open_seconds } = run;
    let growth = rss_open.saturating_sub(rss_before);
    let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
    println!(
        "watches: {watches} open (own TLS connection each) in {open_seconds:.1} s; server RSS {} -> {} MiB \
         (+{} MiB, {:.1} KiB per watch), peak {} MiB; create -> certificate at its watcher p50 {:.0} ms \
         p99 {:.0} ms (waves of {wave})",
        rss_before / 1024,
        rss_open / 1024,
        growth / 1024,
        growth as f64 / watches as f64,
        peak / 1024,
        millis(p50),
        millis(p99)
    );
    args.write_report(&json!({
        "watches": watches,
        "wave": wave,
        "seconds_to_open": open_seconds,
        "server_rss_before_kib": rss_before,
        "server_rss_open_kib": rss_open,
        "server_rss_growth_kib": growth,
        "server_rss_growth_per_watch_kib": growth as f64 / watches as f64,
        "server_peak_rss_kib": peak,
        "latency_ms_p50": millis(p50),
        "latency_ms_p99": millis(p99),
        "note": "signer serve (release); every watch on its own TLS connection with bootstrap-token \
                 authentication, pinned by fieldSelector=metadata.name, opened before its CSR exists; \
                 CSRs created in waves, latency from the create's start to the watch event with the \
                 certificate (approve + issue + delivery); RSS growth measured with every watch open",
    }))
}

struct Run {
    latencies: Vec<Duration>,
    rss_before: u64,
    rss_open: u64,
    open_seconds: f64,
}

async fn run(
    bootstrap: &Path,
    csrs: Vec<CertificateSigningRequest>,
    wave: usize,
    rss: impl Fn() -> Result<u64, &'static str>,
) -> Result<Run, String> {
    let kubeconfig = Kubeconfig::read_from(bootstrap).map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let rss_before = rss()?;

    // Open every watch; each watcher then waits for its certificate and reports when it saw it.
    let started = Instant::now();
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let issued = Arc::new(Semaphore::new(0));
    let mut watchers = JoinSet::new();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, csr) in csrs.iter().enumerate() {
        let name = csr.metadata.name.clone().ok_or("a bootstrap CSR without a name")?;
        let (config, opening, issued, open_tx) =
            (config.clone(), opening.clone(), issued.clone(), open_tx.clone());
        watchers.spawn(async move {
            let permit = opening.acquire_owned().await.map_err(|e| e.to_string())?;
            let outcome = watch_until_issued(config, &name, || {
                drop(permit);
                let _ = open_tx.send(());
            })
            .await;
            issued.add_permits(1);
            outcome.map(|seen| (i, seen)).map_err(|e| format!("watcher {i} ({name}): {e}"))
        });
    }
    drop(open_tx);
    for opened in 0..csrs.len() {
        if open_rx.recv().await.is_none() {
            let failure = watchers.join_next().await.map(|j| j.map_err(|e| e.to_string()).and_then(|o| o));
            return Err(format!("only {opened} watches opened: {failure:?}"));
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = rss()?;

    // Create the CSRs wave by wave, as their nodes would.
    let client = Client::try_from(config).map_err(|e| format!("building a client: {e}"))?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let mut created_at = vec![None; csrs.len()];
    for (w, chunk) in csrs.chunks(wave).enumerate() {
        let mut creates = JoinSet::new();
        for (j, csr) in chunk.iter().enumerate() {
            let (api, csr, i) = (api.clone(), csr.clone(), w * wave + j);
            creates.spawn(async move {
                let at = Instant::now();
                api.create(&PostParams::default(), &csr)
                    .await
                    .map(|_| (i, at))
                    .map_err(|e| format!("create {i}: {e}"))
            });
        }
        while let Some(joined) = creates.join_next().await {
            let (i, at) = joined.map_err(|e| e.to_string())??;
            created_at[i] = Some(at);
        }
        let all = u32::try_from(chunk.len()).map_err(|_| "--wave is too large")?;
        // The permits are the wave's certificates: taken for good, not handed back.
        tokio::time::timeout(WAVE_LIMIT, issued.acquire_many(all))
            .await
            .map_err(|_| format!("wave {w}: not every watcher saw its certificate within {WAVE_LIMIT:?}"))?
            .map_err(|e| e.to_string())?
            .forget();
    }
    let mut latencies = Vec::with_capacity(csrs.len());
    while let Some(joined) = watchers.join_next().await {
        let (i, seen) = joined.map_err(|e| e.to_string())??;
        let at = created_at[i].ok_or_else(|| format!("watcher {i} finished before its CSR was created"))?;
        latencies.push(seen.saturating_duration_since(at));
    }
    println!("watches: client CPU {:.1} s", own_cpu_time().as_secs_f64());
    Ok(Run { latencies, rss_before, rss_open, open_seconds })
}

/// One waiting node: its own client and connection, a watch pinned to `name`, `opened` once the
/// server has answered it, and the instant the certificate arrived.
async fn watch_until_issued(
    config: kube::Config,
    name: &str,
    opened: impl FnOnce(),
) -> Result<Instant, String> {
    let client = Client::try_from(config).map_err(|e| format!("building a client: {e}"))?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(290);
    let stream = api.watch(&params, "0").await.map_err(|e| format!("opening the watch: {e}"))?;
    opened();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.try_next().await.map_err(|e| format!("watching: {e}"))? {
        match event {
            WatchEvent::Added(csr) | WatchEvent::Modified(csr)
                if csr.status.as_ref().is_some_and(|s| s.certificate.is_some()) =>
            {
                return Ok(Instant::now());
            }
            WatchEvent::Error(e) => return Err(format!("watch error: {e:?}")),
            _ => {}
        }
    }
    Err("the watch ended before the certificate came".to_owned())
}

/// Every watch holds a socket in this process (and one in the server, which inherits the limit).
fn check_fd_limit(watches: usize) -> Result<(), String> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").map_err(|e| format!("/proc/self/limits: {e}"))?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < watches + 1024 => Err(format!(
            "--watches {watches}: the open-file limit is {soft}; raise it (ulimit -n {}) or ask for fewer",
            watches + 1024
        )),
        _ => Ok(()),
    }
}
