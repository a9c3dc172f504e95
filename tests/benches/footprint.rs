//! `cargo xtask bench` section 3, the node agent's footprint: its resident memory once
//! bootstrapped and idle, and how often it wakes up while idle (context switches of all its
//! threads, from /proc). The baseline, measured in the same run, is `sleep`'s resident memory:
//! the floor of any process on this machine.
//!
//! `cargo bench -p kubecert-tests --bench footprint -- [--idle-seconds 60] [--json PATH]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubecert_tests::bench::{BenchArgs, context_switches, proc_status};
use kubecert_tests::{Process, SignerServe, free_local_addr, start_node_agent};
use serde_json::json;

/// Tokio's blocking-pool threads exit after 10 s idle; the agent is measured after they have.
const SETTLE: Duration = Duration::from_secs(15);

fn main() -> Result<(), String> {
    let args = BenchArgs::from_env();
    let idle = Duration::from_secs(args.get("idle-seconds", 60)?);
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let signer = SignerServe::start(&dir.path().join("signer"), &[]);
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    signer.create_token(&bootstrap);

    let agent = start_agent(dir.path())?;
    let pid = agent.id();
    std::thread::sleep(SETTLE);
    let before = context_switches(pid);
    std::thread::sleep(idle);
    let wakeups = context_switches(pid) - before;
    let rss = proc_status(pid, "VmRSS").ok_or("node-agent exited while idle")?;
    let peak = proc_status(pid, "VmHWM").unwrap_or(0);
    let threads = proc_status(pid, "Threads").unwrap_or(0);
    let baseline = sleep_rss()?;
    let per_minute = wakeups as f64 * 60.0 / idle.as_secs_f64();

    println!(
        "agent footprint: idle RSS {rss} KiB (peak {peak} KiB, {threads} threads), \
         {per_minute:.1} wakeups/min; baseline sleep RSS {baseline} KiB, ratio {:.1}",
        rss as f64 / baseline as f64
    );
    args.write_report(&json!({
        "idle_rss_kib": rss,
        "peak_rss_kib": peak,
        "threads": threads,
        "wakeups_per_minute": per_minute,
        "idle_seconds_measured": idle.as_secs(),
        "baseline_sleep_rss_kib": baseline,
        "rss_ratio_to_baseline": rss as f64 / baseline as f64,
        "note": "node-agent (release build) bootstrapped against signer serve with a one-year \
                 client certificate, 15 s settling, then context switches of all threads counted",
    }))
}

/// Starts a node agent in `dir` and waits until it has bootstrapped (its rotation is scheduled).
fn start_agent(dir: &Path) -> Result<Process, String> {
    let mut agent = start_node_agent(dir, "bench-idle", free_local_addr(), &[], &dir.join("agent.log"));
    let start = Instant::now();
    while !agent.log().contains("next rotation scheduled") {
        if let Some(status) = agent.try_wait() {
            return Err(format!("node-agent exited with {status}:\n{}", agent.log()));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("node-agent did not bootstrap within 60 s:\n{}", agent.log()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(agent)
}

/// The resident memory of an idle `sleep`.
fn sleep_rss() -> Result<u64, String> {
    let mut sleep = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting sleep: {e}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let rss = proc_status(sleep.id(), "VmRSS");
    let _ = sleep.kill();
    let _ = sleep.wait();
    rss.ok_or_else(|| "sleep exited early".to_owned())
}
