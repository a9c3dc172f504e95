//! `cargo xtask bench` section 3, the node agent's footprint: its resident memory once
//! bootstrapped and idle, and how often it wakes up while idle (context switches of all its
//! threads, from /proc). The baseline, measured in the same run, is `sleep`'s resident memory:
//! the floor of any process on this machine. Side by side in the same run: certmonger
//! (Debian's `certmonger`), idle with no tracked certificates, under its own session bus
//! (`dbus-run-session`) and with its state directories in a temporary directory, started with
//! the agent and measured after the same settling and idle time. Without certmonger the section
//! says how to install it and leaves its figures out.
//!
//! `cargo bench -p kubecert-tests --bench footprint -- [--idle-seconds 60] [--json PATH]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubecert_tests::bench::{BenchArgs, context_switches, find_program, proc_status};
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
    let certmonger = Certmonger::start(&dir.path().join("certmonger"))?;
    std::thread::sleep(SETTLE);
    let before = context_switches(pid);
    std::thread::sleep(idle);
    let wakeups = context_switches(pid) - before;
    let rss = proc_status(pid, "VmRSS").ok_or("node-agent exited while idle")?;
    let peak = proc_status(pid, "VmHWM").unwrap_or(0);
    let threads = proc_status(pid, "Threads").unwrap_or(0);
    let baseline = sleep_rss()?;
    let certmonger_rss = match certmonger {
        Some(certmonger) => Some(certmonger.rss()?),
        None => None,
    };
    let per_minute = wakeups as f64 * 60.0 / idle.as_secs_f64();

    println!(
        "agent footprint: idle RSS {rss} KiB (peak {peak} KiB, {threads} threads), \
         {per_minute:.1} wakeups/min; baseline sleep RSS {baseline} KiB, ratio {:.1}",
        rss as f64 / baseline as f64
    );
    match certmonger_rss {
        Some(theirs) => println!(
            "certmonger idle RSS {theirs} KiB; node agent / certmonger {:.2}",
            rss as f64 / theirs as f64
        ),
        None => {
            println!("certmonger: not found; its row is left out (install it with `{CERTMONGER_INSTALL}`)")
        }
    }
    args.write_report(&json!({
        "idle_rss_kib": rss,
        "peak_rss_kib": peak,
        "threads": threads,
        "wakeups_per_minute": per_minute,
        "idle_seconds_measured": idle.as_secs(),
        "baseline_sleep_rss_kib": baseline,
        "rss_ratio_to_baseline": rss as f64 / baseline as f64,
        "certmonger_idle_rss_kib": certmonger_rss,
        "rss_ratio_to_certmonger": certmonger_rss.map(|theirs| rss as f64 / theirs as f64),
        "note": "node-agent (as shipped: profile agent) bootstrapped against signer serve with a one-year \
                 client certificate, 15 s settling, then context switches of all threads counted; \
                 certmonger -s -n -B under dbus-run-session, no tracked certificates, started with \
                 the agent and measured at the same moment",
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

/// What to run when certmonger is missing.
const CERTMONGER_INSTALL: &str = "apt-get install -y certmonger dbus";

/// certmonger, idle, on a session bus of its own: `dbus-run-session` runs it and ends the bus
/// when it exits.
struct Certmonger {
    session: Process,
    pid_file: std::path::PathBuf,
}

impl Certmonger {
    /// Starts it with its state in `dir`; `None` when certmonger or dbus-run-session is missing.
    fn start(dir: &Path) -> Result<Option<Self>, String> {
        let (Some(certmonger), Some(session)) =
            (find_program("certmonger"), find_program("dbus-run-session"))
        else {
            return Ok(None);
        };
        let mut command = Command::new(session);
        for (var, sub) in [
            ("CERTMONGER_REQUESTS_DIR", "requests"),
            ("CERTMONGER_CAS_DIR", "cas"),
            ("CERTMONGER_TMPDIR", "tmp"),
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            command.env(var, path);
        }
        let pid_file = dir.join("certmonger.pid");
        let log = std::fs::File::create(dir.join("log")).map_err(|e| format!("certmonger log: {e}"))?;
        // -s: the session bus; -n: in the foreground; -B: no idle exit.
        let child = command
            .arg("--")
            .arg(certmonger)
            .args(["-s", "-n", "-B", "-p"])
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dbus-run-session certmonger: {e}"))?;
        Ok(Some(Self { session: Process::from_child(child, &dir.join("log")), pid_file }))
    }

    /// certmonger's resident memory now (not the bus daemon's, not dbus-run-session's).
    fn rss(&self) -> Result<u64, String> {
        let pid = self.pid().ok_or_else(|| format!("certmonger did not start:\n{}", self.session.log()))?;
        proc_status(pid, "VmRSS").ok_or_else(|| format!("certmonger exited:\n{}", self.session.log()))
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }
}

impl Drop for Certmonger {
    /// SIGTERM to certmonger by its id; dbus-run-session then stops the bus and exits.
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let start = Instant::now();
        while self.session.try_wait().is_none() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
