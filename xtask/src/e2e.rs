//! `cargo xtask e2e`: the whole system on this machine.
//!
//! Builds both binaries, starts `signer serve` in rehearsal mode (60 s certificates, no
//! backdate), creates a bootstrap token, starts N node agents in their own cert dirs (the first
//! two with serving certificates, approved with `kubectl certificate approve` because the default
//! policy does not auto-approve them), and watches every node until each has rotated its client
//! certificate R times. On the way it kills and restarts every agent once inside its rotation
//! window, and the signer once. Every certificate seen must chain to the CA with the right
//! subject and usages, every rotation must bring a new key, and a client probing each agent's
//! `/healthz` continuously (HTTPS with the serving certificate, else HTTP) must see no failure.
//!
//! Probes that meet an agent the harness killed on purpose are a planned outage, not failures;
//! the rules are in [`ledger`]. The fault timing comes from a seed, printed at the start, that
//! `--seed` replays. Every process started is stopped on the way out (Ctrl-C reaches them too:
//! they share the terminal's process group).
//!
//! `--ca-roll` runs a CA roll instead (see [`ca_roll`]).

mod ca_roll;
mod ledger;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use kubecert_tests::bench::{millis, percentile};
use kubecert_tests::probe::{Outcome, Prober};

use self::ledger::Ledger;
use crate::cargo;

/// Lifetime of issued certificates in the rehearsal.
const LIFETIME: Duration = Duration::from_secs(60);
/// Limit of the run itself (the build before it is not counted).
const LIMIT: Duration = Duration::from_secs(300);
/// The signer is killed only while every certificate has this long left: its outage plus the
/// agents' retries after it (2, 4, 8 s) plus the harness's approval of serving requests, so that
/// the planned outage cannot make a certificate expire.
const SIGNER_FAULT_MARGIN: Duration = Duration::from_secs(25);
/// Probe intervals: while the agent is up, and while it is down (finer, for the downtime).
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const PROBE_INTERVAL_DOWN: Duration = Duration::from_millis(5);

/// `--nodes`, `--rotations`, `--seed`, `--ca-roll`, `--bin-dir`.
pub struct Options {
    nodes: usize,
    /// `None`: the default (2), or not asked for with `--ca-roll`.
    rotations: Option<usize>,
    seed: Option<u64>,
    ca_roll: bool,
    /// Where built `signer` and `node-agent` binaries are; `None`: build them first.
    bin_dir: Option<PathBuf>,
}

const USAGE: &str = "usage: [--nodes N] [--rotations R] [--seed S] | --ca-roll [--nodes N]; [--bin-dir DIR]";

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self { nodes: 3, rotations: None, seed: None, ca_roll: false, bin_dir: None };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = |name: &str| -> Result<&String> {
                rest.next().with_context(|| format!("{name} needs a value"))
            };
            let number = |name: &str, v: &String| -> Result<u64> {
                v.parse().with_context(|| format!("{name}: '{v}' is not a number"))
            };
            match arg.as_str() {
                "--nodes" => options.nodes = usize::try_from(number(arg, value(arg)?)?)?,
                "--rotations" => options.rotations = Some(usize::try_from(number(arg, value(arg)?)?)?),
                "--seed" => options.seed = Some(number(arg, value(arg)?)?),
                "--ca-roll" => options.ca_roll = true,
                "--bin-dir" => options.bin_dir = Some(PathBuf::from(value(arg)?)),
                other => bail!("cargo xtask e2e: unknown argument '{other}' ({USAGE})"),
            }
        }
        if options.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if options.ca_roll && (options.rotations.is_some() || options.seed.is_some()) {
            bail!("--ca-roll injects no faults and counts no rotations: --seed and --rotations do not apply");
        }
        Ok(options)
    }

    fn rotations(&self) -> usize {
        self.rotations.unwrap_or(2)
    }
}

/// When the faults happen, drawn from the seed: the same seed gives the same faults at the same
/// points of the certificates' lives (the agents' own rotation jitter is theirs, not the seed's).
#[derive(Debug, PartialEq)]
struct FaultPlan {
    /// Per node, the age of its client certificate at which it is killed and restarted: inside
    /// the rotation window (70–90 % of the lifetime), in its first quarter (70–75 %) so that it
    /// often comes before or during the rotation; if the rotation comes first, the kill waits for
    /// the same age of the next certificate.
    kill_at_age: Vec<Duration>,
    /// How long after the first rotation seen the signer may be killed.
    signer_after_rotation: Duration,
    /// How long the signer stays down.
    signer_down: Duration,
}

impl FaultPlan {
    fn draw(seed: u64, nodes: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut between = |from: Duration, to: Duration| from + (to - from).mul_f64(rng.f64());
        let window = (LIFETIME.mul_f64(0.70), LIFETIME.mul_f64(0.75));
        Self {
            kill_at_age: (0..nodes).map(|_| between(window.0, window.1)).collect(),
            signer_after_rotation: between(Duration::ZERO, Duration::from_secs(10)),
            signer_down: between(Duration::from_secs(2), Duration::from_secs(6)),
        }
    }
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { child })
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !ready()? {
        if start.elapsed() > limit {
            bail!("{what}: not within {}", secs(limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A duration for people: seconds, one decimal.
fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// What was seen of one certificate kind on one node.
#[derive(Default)]
struct Seen {
    serials: Vec<String>,
    keys: BTreeSet<Vec<u8>>,
    /// The newest certificate's validity.
    validity: Option<(SystemTime, SystemTime)>,
    problems: Vec<String>,
}

impl Seen {
    /// Records the pair behind `<dir>/<prefix>-current.pem`, checking it the first time.
    fn observe(&mut self, file: &Path, ca: &Ca, node: &str, server: bool) {
        let Ok(pem) = std::fs::read(file) else { return };
        let (Ok(chain), Ok(key)) =
            (kubecert_csr::parse_certificates_pem(&pem), kubecert_csr::PrivateKey::from_pem(&pem))
        else {
            self.problems.push(format!("{}: does not parse", file.display()));
            return;
        };
        let leaf = &chain[0];
        if self.serials.last() == Some(&leaf.serial_hex) {
            return;
        }
        self.serials.push(leaf.serial_hex.clone());
        self.keys.insert(key.public_key_der().to_vec());
        self.validity = Some((leaf.not_before, leaf.not_after));
        let mut problem = |what: String| self.problems.push(format!("{node} {}: {what}", leaf.serial_hex));
        if !leaf.matches_key(&key) {
            problem("key does not match the certificate".into());
        }
        if let Err(e) = ca.verify(&leaf.der) {
            problem(format!("does not chain to the CA: {}", kubecert_cli::error_chain(&*e)));
        }
        let common_name = leaf.subject.common_name.as_deref().unwrap_or("(none)");
        if common_name != format!("system:node:{node}") {
            problem(format!("subject CN '{common_name}'"));
        }
        if leaf.subject.organizations != ["system:nodes"] {
            problem(format!("subject O '{}'", leaf.subject.organizations.join(", ")));
        }
        let usage =
            if server { kubecert_csr::KeyUsage::ServerAuth } else { kubecert_csr::KeyUsage::ClientAuth };
        if !leaf.key_usage.contains(&usage) || leaf.is_ca {
            let usages: Vec<&str> = leaf.key_usage.iter().map(|u| u.as_str()).collect();
            problem(format!("usages '{}', CA {}", usages.join(", "), leaf.is_ca));
        }
        let now = SystemTime::now();
        if now < leaf.not_before || leaf.is_expired_at(now) {
            problem("not valid now".into());
        }
    }

    fn rotations(&self) -> usize {
        self.serials.len().saturating_sub(1)
    }

    /// How old the newest certificate is, and how long it has left.
    fn age_and_remaining(&self, now: SystemTime) -> Option<(Duration, Duration)> {
        let (not_before, not_after) = self.validity?;
        let age = now.duration_since(not_before).unwrap_or_default();
        Some((age, not_after.duration_since(now).unwrap_or_default()))
    }
}

/// The cluster CA, for checking chains and for the HTTPS probes.
struct Ca {
    pem: Vec<u8>,
    spki_der: Vec<u8>,
}

impl Ca {
    /// The CA whose certificate (the first in `pem`) is this.
    fn from_pem(pem: Vec<u8>) -> Result<Self> {
        let cert = kubecert_csr::parse_certificates_pem(&pem)?.remove(0);
        Ok(Self { pem, spki_der: cert.public_key.spki_der })
    }

    /// Whether `der` is signed by this CA's key.
    fn verify(&self, der: &[u8]) -> Result<()> {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).context("parse")?;
        let (_, spki) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki_der).context("CA key")?;
        cert.verify_signature(Some(&spki)).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// An agent's ledger, shared by the harness and the agent's probe thread. The harness wakes the
/// thread when it kills or respawns the agent, so that the downtime is measured from the kill,
/// not from whenever the next probe was due.
#[derive(Default)]
struct Probed {
    ledger: Mutex<Ledger>,
    wake: Condvar,
}

impl Probed {
    /// The ledger, also when a probe thread panicked while holding it.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the ledger and wakes the probe thread.
    fn update(&self, change: impl FnOnce(&mut Ledger)) {
        change(&mut self.lock());
        self.wake.notify_all();
    }
}

/// Calls `probe` until `stop`, recording every outcome in the ledger (`None`: nothing to
/// probe yet, e.g. no certificate to present).
fn start_probing(
    mut probe: impl FnMut() -> Option<Outcome> + Send + 'static,
    probed: Arc<Probed>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let outcome = probe();
            let finished = Instant::now();
            let mut ledger = probed.lock();
            if let Some(outcome) = outcome {
                ledger.record(started, finished, outcome);
            }
            let interval = if ledger.is_down() { PROBE_INTERVAL_DOWN } else { PROBE_INTERVAL };
            // Woken early by a kill or a respawn; a spurious wakeup is one more probe.
            drop(probed.wake.wait_timeout(ledger, interval));
        }
    });
}

struct Node {
    name: String,
    dir: PathBuf,
    serving: bool,
    args: Vec<String>,
    process: Proc,
    client: Seen,
    server: Seen,
    probed: Arc<Probed>,
    kill_at_age: Duration,
    restarted: bool,
}

impl Node {
    /// Kills the agent and starts it again, telling its ledger when each happens.
    fn restart(&mut self, agent: &Path) -> Result<()> {
        self.probed.update(|ledger| ledger.killed(Instant::now()));
        self.process.kill();
        self.probed.update(|ledger| ledger.respawning(Instant::now()));
        self.process = Proc::spawn(&self.name, agent, &self.args, &self.dir.join("agent-2.log"))?;
        self.restarted = true;
        Ok(())
    }

    fn log(&self) -> PathBuf {
        self.dir.join(if self.restarted { "agent-2.log" } else { "agent.log" })
    }

    /// Whether every certificate it holds has at least `margin` left.
    fn certificates_last(&self, now: SystemTime, margin: Duration) -> bool {
        [&self.client, &self.server]
            .into_iter()
            .filter_map(|seen| seen.age_and_remaining(now))
            .all(|(_, remaining)| remaining >= margin)
    }
}

/// The signer fault, step by step.
enum SignerFault {
    /// Until the first rotation.
    Waiting,
    /// From then on, once every certificate has [`SIGNER_FAULT_MARGIN`] left.
    Due(Instant),
    /// Killed; started again at the instant.
    Down(Instant),
    Done,
}

pub fn run(options: &Options) -> Result<()> {
    // Short enough to type back.
    let seed = options.seed.unwrap_or_else(|| u64::from(fastrand::u32(..)));
    if !options.ca_roll {
        println!("seed: {seed} (replay with --seed {seed})");
    }
    let bin = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            // The workspace's feature set, as the tests build them: `-p signer -p node-agent`
            // would build their dependencies a second time with other features.
            println!("building signer and node-agent (cargo build --workspace --bins)…");
            let build = Instant::now();
            let status = cargo().args(["build", "--workspace", "--bins"]).status().context("cargo build")?;
            if !status.success() {
                bail!("cargo build --workspace --bins failed");
            }
            println!("built in {}", secs(build.elapsed()));
            kubecert_tests::kubernetes::target_dir().join("debug")
        }
    };
    let bins = Binaries { signer: bin.join("signer"), agent: bin.join("node-agent") };
    let given = if options.bin_dir.is_some() { "--bin-dir: " } else { "" };
    for binary in [&bins.signer, &bins.agent] {
        if !binary.is_file() {
            bail!("{given}{} is not a file (build with `cargo build --workspace --bins`)", binary.display());
        }
    }
    let started = Instant::now();
    let root = std::env::temp_dir().join(format!("kubecert-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    println!("working in {}", root.display());
    // The probes' TLS clients need the process's crypto provider.
    let _ = kubecert_reload::KeyExchange::default().install();
    let result = if options.ca_roll {
        ca_roll::run_in(options.nodes, &root, &bins, started)
    } else {
        println!("the run itself has {}", secs(LIMIT));
        let plan = FaultPlan::draw(seed, options.nodes);
        run_in(options, &plan, &root, &bins, started)
    };
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(_) if options.ca_roll => println!("logs kept in {}", root.display()),
        Err(_) => println!("logs kept in {}; replay with --seed {seed}", root.display()),
    }
    result
}

/// The binaries a run starts.
struct Binaries {
    signer: PathBuf,
    agent: PathBuf,
}

fn run_in(options: &Options, plan: &FaultPlan, root: &Path, bins: &Binaries, started: Instant) -> Result<()> {
    let (signer_bin, agent_bin) = (bins.signer.as_path(), bins.agent.as_path());
    let data = root.join("signer");
    let listen = free_addr()?;
    let lifetime = format!("{}s", LIFETIME.as_secs());
    let signer_args: Vec<String> = [
        "serve",
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        &listen.to_string(),
        "--cluster-signing-duration",
        &lifetime,
        "--backdate",
        "0s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut signer = start_signer(signer_bin, &signer_args, root, listen)?;
    let admin = data.join("admin.kubeconfig");
    let ca = Ca::from_pem(std::fs::read(data.join("pki/ca.crt"))?)?;
    println!("signer serve on {listen} ({})", secs(started.elapsed()));
    let kills: Vec<String> =
        plan.kill_at_age.iter().enumerate().map(|(i, age)| format!("node-{i} at {}", secs(*age))).collect();
    println!(
        "faults: agents killed when their client certificate is {}; signer down for {}, {} after the first rotation",
        kills.join(", "),
        secs(plan.signer_down),
        secs(plan.signer_after_rotation)
    );

    let bootstrap = create_bootstrap_kubeconfig(signer_bin, &admin, root)?;

    let stop_probes = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop_probes.clone());
    let mut nodes = Vec::new();
    for (i, kill_at_age) in plan.kill_at_age.iter().enumerate() {
        let name = format!("node-{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let metrics = free_addr()?;
        let serving = i < 2;
        let args = agent_args(&bootstrap, &dir, &name, metrics, serving);
        let prober = if serving {
            Prober::https(metrics, &ca.pem).map_err(anyhow::Error::msg)?
        } else {
            Prober::http(metrics)
        };
        let process = Proc::spawn(&name, agent_bin, &args, &dir.join("agent.log"))?;
        let probed = Arc::new(Probed::default());
        start_probing(move || Some(prober.probe()), probed.clone(), stop_probes.clone());
        nodes.push(Node {
            name,
            dir,
            serving,
            args,
            process,
            client: Seen::default(),
            server: Seen::default(),
            probed,
            kill_at_age: *kill_at_age,
            restarted: false,
        });
    }

    let kc = admin.display().to_string();
    let mut signer_fault = SignerFault::Waiting;
    let mut last_report = String::new();
    let mut last_approve = Instant::now() - Duration::from_secs(10);
    loop {
        if started.elapsed() > LIMIT {
            print_summary(&nodes);
            bail!("not done within {}: {}", secs(LIMIT), pending(&nodes, &signer_fault, options.rotations()));
        }
        let now = SystemTime::now();
        for node in &mut nodes {
            if let Some(status) = node.process.exited() {
                bail!("{} exited with {status}; see {}", node.name, node.log().display());
            }
            let pki = node.dir.join("pki");
            node.client.observe(&pki.join("kubelet-client-current.pem"), &ca, &node.name, false);
            if node.serving {
                node.server.observe(&pki.join("kubelet-server-current.pem"), &ca, &node.name, true);
            }
            // Fault 1: kill each agent once inside its rotation window, and restart it at once.
            let age = node.client.age_and_remaining(now).map(|(age, _)| age);
            if !node.restarted && age.is_some_and(|age| age >= node.kill_at_age) {
                println!(
                    "fault: killing {} (client certificate {} old, inside its rotation window), restarting it",
                    node.name,
                    secs(age.unwrap_or_default())
                );
                node.restart(agent_bin)?;
            }
        }
        // Serving CSRs wait for a human (SPEC SV-5): approve them as one would.
        if last_approve.elapsed() > Duration::from_secs(2) {
            last_approve = Instant::now();
            approve_pending_serving_csrs(&kc)?;
        }
        // Fault 2: the signer, killed once after the first rotation, when no certificate can
        // expire because of it, and started again after the planned outage.
        signer_fault =
            match signer_fault {
                SignerFault::Waiting if nodes.iter().any(|n| n.client.rotations() >= 1) => {
                    SignerFault::Due(Instant::now() + plan.signer_after_rotation)
                }
                SignerFault::Due(at)
                    if Instant::now() >= at
                        && nodes.iter().all(|n| n.certificates_last(now, SIGNER_FAULT_MARGIN)) =>
                {
                    println!("fault: killing the signer for {}", secs(plan.signer_down));
                    signer.kill();
                    SignerFault::Down(Instant::now() + plan.signer_down)
                }
                SignerFault::Down(until) if Instant::now() >= until => {
                    signer = Proc::spawn("signer", signer_bin, &signer_args, &root.join("signer-2.log"))?;
                    wait_until("signer back", Duration::from_secs(30), || {
                        Ok(TcpStream::connect(listen).is_ok())
                    })?;
                    println!("signer back");
                    SignerFault::Done
                }
                unchanged => unchanged,
            };
        let report = progress(&nodes);
        if report != last_report {
            println!("[{:>6}] {report}", secs(started.elapsed()));
            last_report = report;
        }
        let done = nodes.iter().all(|n| {
            n.client.rotations() >= options.rotations() && n.restarted && n.probed.lock().is_serving()
        });
        if done && matches!(signer_fault, SignerFault::Done) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Let the probes run a little past the last rotation.
    std::thread::sleep(Duration::from_secs(2));
    stop_probes.store(true, Ordering::Relaxed);
    print_summary(&nodes);
    let mut failures = Vec::new();
    for node in &nodes {
        failures.extend(node.client.problems.iter().cloned());
        failures.extend(node.server.problems.iter().cloned());
        for (kind, seen) in [("client", &node.client), ("serving", &node.server)] {
            if seen.keys.len() != seen.serials.len() {
                failures.push(format!(
                    "{} {kind}: {} certificates but {} keys",
                    node.name,
                    seen.serials.len(),
                    seen.keys.len()
                ));
            }
        }
        failures.extend(node.probed.lock().failures().into_iter().map(|f| format!("{}: {f}", node.name)));
    }
    verdict(&failures, "e2e", started)
}

/// Prints each failure and fails the run if there is one; else prints that `run` passed.
fn verdict(failures: &[String], run: &str, started: Instant) -> Result<()> {
    if !failures.is_empty() {
        for failure in failures {
            println!("FAILED: {failure}");
        }
        bail!("{} check(s) failed", failures.len());
    }
    println!("{run} passed in {}", secs(started.elapsed()));
    Ok(())
}

/// Starts `signer serve` with `args` (logging to ROOT/signer.log) and waits until it listens on
/// `listen` and has written its `admin.kubeconfig` (the `--data-dir` in `args`).
fn start_signer(signer_bin: &Path, args: &[String], root: &Path, listen: SocketAddr) -> Result<Proc> {
    let log = root.join("signer.log");
    let mut signer = Proc::spawn("signer", signer_bin, args, &log)?;
    let data = args.iter().skip_while(|a| *a != "--data-dir").nth(1).context("signer args: no --data-dir")?;
    let admin = Path::new(data).join("admin.kubeconfig");
    wait_until("signer serve listening", Duration::from_secs(30), || {
        if let Some(status) = signer.exited() {
            bail!("signer serve exited with {status}; see {}", log.display());
        }
        Ok(admin.is_file() && TcpStream::connect(listen).is_ok())
    })?;
    Ok(signer)
}

/// A bootstrap token, written as ROOT/bootstrap.kubeconfig (its path is returned).
fn create_bootstrap_kubeconfig(signer_bin: &Path, admin: &Path, root: &Path) -> Result<PathBuf> {
    let bootstrap = root.join("bootstrap.kubeconfig");
    let token = Command::new(signer_bin)
        .args(["token", "create", "--kubeconfig"])
        .arg(admin)
        .arg("--write-bootstrap-kubeconfig")
        .arg(&bootstrap)
        .output()?;
    if !token.status.success() {
        bail!("signer token create: {}", String::from_utf8_lossy(&token.stderr));
    }
    Ok(bootstrap)
}

/// A node agent's flags: its files under `dir`, `/healthz` and metrics on `metrics`, and with
/// `serving` a serving certificate for 127.0.0.1 and `<name>.e2e.local`.
fn agent_args(bootstrap: &Path, dir: &Path, name: &str, metrics: SocketAddr, serving: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--bootstrap-kubeconfig".into(),
        bootstrap.display().to_string(),
        "--kubeconfig".into(),
        dir.join("kubelet.conf").display().to_string(),
        "--cert-dir".into(),
        dir.join("pki").display().to_string(),
        "--node-name".into(),
        name.to_owned(),
        "--metrics-addr".into(),
        metrics.to_string(),
    ];
    if serving {
        args.extend(["--rotate-server-certificates".into(), "--node-ip".into(), "127.0.0.1".into()]);
        args.extend(["--node-dns".into(), format!("{name}.e2e.local")]);
    }
    args
}

/// Sets the flag when dropped, so probe threads stop on every way out.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the run still waits for, when it runs out of time.
fn pending(nodes: &[Node], signer_fault: &SignerFault, rotations: usize) -> String {
    let mut waiting: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let mut what = Vec::new();
            if n.client.rotations() < rotations {
                what.push(format!("{} of {rotations} rotations", n.client.rotations()));
            }
            if !n.restarted {
                what.push(format!("its restart at certificate age {}", secs(n.kill_at_age)));
            }
            if !n.probed.lock().is_serving() {
                what.push("serving /healthz".to_owned());
            }
            (!what.is_empty()).then(|| format!("{}: {}", n.name, what.join(", ")))
        })
        .collect();
    match signer_fault {
        SignerFault::Waiting => waiting.push("signer fault: no rotation yet".into()),
        SignerFault::Due(_) => waiting.push(format!(
            "signer fault: no moment yet when every certificate had {} left",
            secs(SIGNER_FAULT_MARGIN)
        )),
        SignerFault::Down(_) => waiting.push("signer fault: the signer is down".into()),
        SignerFault::Done => {}
    }
    waiting.join("; ")
}

fn approve_pending_serving_csrs(kubeconfig: &str) -> Result<()> {
    let out = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig, "get", "csr", "-o"])
        .arg("jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name} {.status.conditions[*].type}{\"\\n\"}{end}")
        .output()
        .context("running kubectl (it must be on PATH)")?;
    if !out.status.success() {
        // The signer may be down during the fault; try again later.
        return Ok(());
    }
    let pending: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            parts.next().is_none().then(|| name.to_owned())
        })
        .collect();
    if !pending.is_empty() {
        let status = Command::new("kubectl")
            .args(["--kubeconfig", kubeconfig, "certificate", "approve"])
            .args(&pending)
            .stdout(Stdio::null())
            .status()?;
        if status.success() {
            println!("approved serving CSRs with kubectl: {}", pending.join(", "));
        }
    }
    Ok(())
}

fn progress(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let client = if n.client.serials.is_empty() {
                "bootstrapping".to_owned()
            } else {
                format!("client rotations {}", n.client.rotations())
            };
            let serving = match (n.serving, n.server.serials.len()) {
                (false, _) => String::new(),
                (true, 0) => ", serving pending".into(),
                (true, k) => format!(", serving issued ({k})"),
            };
            format!("{}: {client}{serving}", n.name)
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn print_summary(nodes: &[Node]) {
    let header = ["node", "client rotations", "new keys", "serving certs", "probes ok"];
    let more = ["refused while down (planned)", "downtime", "failed"];
    println!();
    println!(
        "{:<8} {:>16} {:>9} {:>13} {:>10} {:>28} {:>10} {:>7}",
        header[0], header[1], header[2], header[3], header[4], more[0], more[1], more[2]
    );
    let mut downtimes = Vec::new();
    for n in nodes {
        let ledger = n.probed.lock();
        let new_keys = n.client.keys.len().saturating_sub(1) + n.server.keys.len().saturating_sub(1);
        let down: Vec<String> = ledger.downtimes().iter().map(|d| format!("{:.0} ms", millis(*d))).collect();
        downtimes.extend_from_slice(ledger.downtimes());
        println!(
            "{:<8} {:>16} {:>9} {:>13} {:>10} {:>28} {:>10} {:>7}",
            n.name,
            n.client.rotations(),
            new_keys,
            n.server.serials.len(),
            ledger.served(),
            ledger.planned_refusals(),
            if down.is_empty() { "-".to_owned() } else { down.join(", ") },
            ledger.failed_probes()
        );
    }
    println!();
    if !downtimes.is_empty() {
        println!(
            "agent restarts: {}; downtime (kill -> first successful probe) p50 {:.0} ms, max {:.0} ms (target: 200 ms)",
            downtimes.len(),
            millis(percentile(&mut downtimes, 0.5)),
            millis(percentile(&mut downtimes, 1.0))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_take_a_seed_and_say_what_is_wrong_without_debug_output() {
        let options = Options::parse(&args("--nodes 2 --seed 1234")).unwrap();
        assert_eq!((options.nodes, options.rotations(), options.seed), (2, 2, Some(1234)));
        assert!(!options.ca_roll && options.bin_dir.is_none());
        assert_eq!(Options::parse(&[]).unwrap().seed, None);
        let error = |text| format!("{:#}", Options::parse(&args(text)).err().unwrap());
        assert_eq!(error("--seed x"), "--seed: 'x' is not a number: invalid digit found in string");
        assert_eq!(error("--nodes"), "--nodes needs a value");
        assert_eq!(
            error("--fast"),
            "cargo xtask e2e: unknown argument '--fast' (usage: [--nodes N] [--rotations R] [--seed S] | --ca-roll [--nodes N]; [--bin-dir DIR])"
        );
        assert_eq!(error("--nodes 0"), "--nodes must be at least 1");
    }

    #[test]
    fn ca_roll_takes_nodes_and_a_bin_dir_but_no_faults() {
        let options = Options::parse(&args("--ca-roll --nodes 5 --bin-dir target/debug")).unwrap();
        assert!(options.ca_roll);
        assert_eq!(options.nodes, 5);
        assert_eq!(options.bin_dir.as_deref(), Some(Path::new("target/debug")));
        assert_eq!(Options::parse(&args("--ca-roll")).unwrap().nodes, 3);
        let error = |text| format!("{:#}", Options::parse(&args(text)).err().unwrap());
        let no_faults =
            "--ca-roll injects no faults and counts no rotations: --seed and --rotations do not apply";
        assert_eq!(error("--ca-roll --seed 3"), no_faults);
        assert_eq!(error("--rotations 1 --ca-roll"), no_faults);
        assert_eq!(error("--ca-roll --bin-dir"), "--bin-dir needs a value");
        assert_eq!(error("--ca-roll --nodes 0"), "--nodes must be at least 1");
    }

    #[test]
    fn a_seed_gives_the_same_faults_inside_the_rotation_window() {
        let plan = FaultPlan::draw(1234, 3);
        assert_eq!(plan, FaultPlan::draw(1234, 3));
        assert_ne!(plan, FaultPlan::draw(1235, 3));
        for age in &plan.kill_at_age {
            assert!((Duration::from_secs(42)..Duration::from_secs(45)).contains(age), "{age:?}");
        }
        assert!(plan.signer_after_rotation < Duration::from_secs(10));
        assert!((Duration::from_secs(2)..Duration::from_secs(6)).contains(&plan.signer_down));
    }
}
