//! `cargo xtask bench` section 5, agent restart: how long a node agent with its certificates on
//! disk is unavailable when it is killed and started again. Measured for each restart: SIGKILL →
//! the first `GET /healthz` over HTTPS (verifying its serving certificate against the CA) that
//! returns 200 and was sent after the new process was spawned; the p50, p99 and max over
//! `--restarts` restarts (default 20). The signer is stopped before the first restart, so
//! nothing the agent does before serving can wait for the API server. A TLS or HTTP error during
//! a restart fails the benchmark: a restart may refuse connections, nothing else.
//!
//! The baseline, measured in the same run, is the same binary started to print its version and
//! exit (`node-agent --version`, spawn → exit): the floor of starting this executable at all
//! (exec, loading, argument parsing), which every restart pays before the agent's own work.
//! The target is a downtime of 200 ms or less; the report says whether p50 and max meet
//! it (a figure, not an assertion).
//!
//! `cargo bench -p kubecert-tests --bench restart -- [--restarts 20] [--json PATH]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubecert_tests::bench::{BenchArgs, millis, percentile};
use kubecert_tests::probe::{Outcome, Prober};
use kubecert_tests::{Process, SERVING_POLICY, SignerServe, binary, free_local_addr, start_node_agent};
use serde_json::json;

/// The target of the issue: restart → serving again.
const TARGET: Duration = Duration::from_millis(200);
/// How long one restart may take before the benchmark gives up on it.
const RESTART_LIMIT: Duration = Duration::from_secs(30);
const NODE: &str = "bench-restart";
const SERVING: [&str; 3] =
    ["--rotate-server-certificates=true", "--node-ip=127.0.0.1", "--node-dns=bench-restart.allowed.example"];

fn main() -> Result<(), String> {
    let args = BenchArgs::from_env();
    let restarts = args.count("restarts", 20)?;
    let _ = kubecert_reload::KeyExchange::default().install();
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let policy = dir.path().join("signer.toml");
    std::fs::write(&policy, SERVING_POLICY).map_err(|e| format!("writing {}: {e}", policy.display()))?;
    let policy = policy.to_string_lossy().into_owned();
    let mut signer = SignerServe::start(&dir.path().join("signer"), &["--config", &policy]);
    signer.create_token(&dir.path().join("bootstrap.kubeconfig"));
    let ca = std::fs::read(signer.ca_cert()).map_err(|e| format!("reading the CA certificate: {e}"))?;
    let metrics = free_local_addr();
    let prober = Prober::https(metrics, &ca)?;

    let log = |run: usize| dir.path().join(format!("agent-{run}.log"));
    let mut agent = start_node_agent(dir.path(), NODE, metrics, &SERVING, &log(0));
    let start = Instant::now();
    serving(&prober, &mut agent, start, Duration::from_secs(60), Bootstrap::Yes)?;
    signer.process.kill();

    let mut downtimes = Vec::with_capacity(restarts);
    let mut starts = Vec::with_capacity(restarts);
    let mut refusals = 0;
    for run in 1..=restarts {
        // Let the agent finish starting (its rotation loops, the file watcher) before the kill.
        std::thread::sleep(Duration::from_millis(300));
        let killed = Instant::now();
        agent.kill();
        let spawned = Instant::now();
        agent = start_node_agent(dir.path(), NODE, metrics, &SERVING, &log(run));
        let (served, refused) = serving(&prober, &mut agent, spawned, RESTART_LIMIT, Bootstrap::No)?;
        downtimes.push(served - killed);
        starts.push(served - spawned);
        refusals += refused;
    }
    let mut baseline = version_runs(restarts)?;

    let ms = |samples: &mut [Duration], q: f64| millis(percentile(samples, q));
    let (p50, p99, max) = (ms(&mut downtimes, 0.5), ms(&mut downtimes, 0.99), ms(&mut downtimes, 1.0));
    let start_p50 = ms(&mut starts, 0.5);
    let baseline_p50 = ms(&mut baseline, 0.5);
    let target = millis(TARGET);
    println!(
        "agent restart: {restarts} restarts, downtime (kill -> served) p50 {p50:.1} ms p99 {p99:.1} ms max \
         {max:.1} ms (spawn -> served p50 {start_p50:.1} ms, {refusals} refused probes); baseline \
         `node-agent --version` p50 {baseline_p50:.1} ms, ratio {:.1}; target {target:.0} ms",
        p50 / baseline_p50
    );
    args.write_report(&json!({
        "restarts": restarts,
        "downtime_ms_p50": p50,
        "downtime_ms_p99": p99,
        "downtime_ms_max": max,
        "spawn_to_serving_ms_p50": start_p50,
        "refused_probes": refusals,
        "baseline_version_ms_p50": baseline_p50,
        "ratio_p50": p50 / baseline_p50,
        "target_ms": target,
        "p50_within_target": p50 <= target,
        "max_within_target": max <= target,
        "note": "node-agent as shipped (profile agent) with client and serving certificates on disk and the signer \
                 stopped; downtime = SIGKILL -> first 200 from /healthz over HTTPS sent after the \
                 spawn; baseline = spawn -> exit of `node-agent --version`",
    }))
}

/// Whether the agent is bootstrapping: it then refuses TLS handshakes until its serving
/// certificate is issued (SPEC SV-4), and answers 503 until its client certificate is.
#[derive(Clone, Copy, PartialEq)]
enum Bootstrap {
    Yes,
    No,
}

/// Probes until `/healthz` is served by a probe sent after `since`; the instant it was and the
/// refused probes before it. Refusals are expected while the agent starts; any other error is
/// returned unless it is bootstrapping, as is the agent exiting or not serving within `limit`.
fn serving(
    prober: &Prober,
    agent: &mut Process,
    since: Instant,
    limit: Duration,
    bootstrap: Bootstrap,
) -> Result<(Instant, u64), String> {
    let mut refused = 0;
    loop {
        match prober.probe() {
            Outcome::Served => return Ok((Instant::now(), refused)),
            Outcome::ConnectionLost(_) => refused += 1,
            Outcome::Failed(_) if bootstrap == Bootstrap::Yes => {}
            Outcome::Failed(error) => {
                return Err(format!("a probe of {} failed: {error}\n{}", prober.addr(), agent.log()));
            }
        }
        if let Some(status) = agent.try_wait() {
            return Err(format!("node-agent exited with {status}:\n{}", agent.log()));
        }
        if since.elapsed() > limit {
            return Err(format!("node-agent did not serve within {} s:\n{}", limit.as_secs(), agent.log()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Spawn → exit of `node-agent --version`, `runs` times.
fn version_runs(runs: usize) -> Result<Vec<Duration>, String> {
    let agent = binary("node-agent");
    (0..runs).map(|_| version_run(&agent)).collect()
}

fn version_run(agent: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let status = Command::new(agent)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running node-agent --version: {e}"))?;
    let took = start.elapsed();
    if !status.success() {
        return Err(format!("node-agent --version: {status}"));
    }
    Ok(took)
}
