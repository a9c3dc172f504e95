//! `cargo xtask e2e --ca-roll`: one CA roll of a running fleet, probed the whole way.
//!
//! `signer serve` (30-second certificates, the CA journal re-read every second) and N node agents,
//! each with a serving certificate and following the signer-linked ClusterTrustBundles
//! (`--trust-source bundles --client-ca-file`). The harness rolls the CA by hand with
//! `signer ca prepare|publish|activate|retire` against the serve's data directory, as an operator
//! would, moving on only when the fleet is ready: activate once every node's client CA file holds
//! both roots, retire as soon as the signer allows it (generation 1's last leaf has expired), and
//! the run ends once every node trusts only generation 2. Manual steps rather than
//! `--ca-auto-roll`: the schedule only knows time, while the harness can wait for what it checks
//! and time each phase by itself; the automatic schedule has its own test
//! (`tests/tests/ca_roll.rs`).
//!
//! Each node is probed continuously from the first moment it serves, three ways:
//! - **serving, current trust**: HTTPS to its `/healthz`, verifying the serving certificate
//!   against the trust bundle as published now (`--trust-bundle-out`, re-read at every probe);
//! - **client**: its client certificate and key (`kubelet-client-current.pem`, re-read at every
//!   probe) presented to the API (`GET` of the CSR list, which needs an authenticated node),
//!   verifying the API against the current trust;
//! - **old root only**: HTTPS to its `/healthz` trusting generation 1's root alone. Through
//!   activate this works because chains are leaf + cross-certificate; it must keep working until
//!   retire, and the run reports when it stops (at each node's first serving certificate issued
//!   after retire, which carries no cross-certificate).
//!
//! A failed request of the first two kinds at any time, or of the third before retire, fails
//! the run; so does a node whose client or serving certificate is not signed by generation 2's
//! key at the end, or an old root left in the trust bundle file, the ClusterTrustBundles or a
//! node's client CA file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kubecert_tests::probe::{Outcome, Prober};

use super::{
    Binaries, Ca, Probed, Proc, StopOnDrop, agent_args, approve_pending_serving_csrs,
    create_bootstrap_kubeconfig, free_addr, secs, start_probing, start_signer, verdict,
};

/// Lifetime of issued certificates: short, so that generation 1's last leaf expires soon after
/// activate (retire waits for it) and every node rotates onto generation 2 before that.
const LIFETIME: Duration = Duration::from_secs(30);
/// Limit of each wait for the fleet.
const PHASE_LIMIT: Duration = Duration::from_secs(90);
/// What the client probe asks the API for: the CSR list, which a node may read and an
/// unauthenticated client may not.
const CLIENT_PROBE_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
/// How often the old-root-only client probes.
const OLD_ROOT_INTERVAL: Duration = Duration::from_millis(50);

/// What a client that trusts only generation 1's root met at one node, judged against the
/// moment of retire: before it, every failure counts; after it, the first failure is where the
/// old root stopped working (expected: the node's next certificate has no cross-certificate).
#[derive(Debug, Default)]
struct OldRootProbes {
    served: u64,
    /// Failures of probes started before retire (after the node first served), and the last.
    failed_before_retire: u64,
    last_failure: Option<String>,
    /// When the first probe started after retire failed, and what it met.
    stopped: Option<(Instant, String)>,
}

impl OldRootProbes {
    /// Records one probe that started at `started`; `retired_at` is when retire succeeded, if it
    /// has. Before the node first served it is bootstrapping and not judged.
    fn record(&mut self, started: Instant, outcome: Outcome, retired_at: Option<Instant>) {
        let error = match outcome {
            Outcome::Served => {
                if self.stopped.is_none() {
                    self.served += 1;
                }
                return;
            }
            Outcome::ConnectionLost(error) | Outcome::Failed(error) => error,
        };
        if self.served == 0 {
            return;
        }
        match retired_at {
            Some(retired) if started >= retired => {
                self.stopped.get_or_insert((started, error));
            }
            _ => {
                self.failed_before_retire += 1;
                self.last_failure = Some(error);
            }
        }
    }
}

/// A generation's root: its PEM text and the key that signs under it.
struct Generation {
    id: u32,
    root: String,
    ca: Ca,
}

impl Generation {
    fn load(data: &Path, id: u32) -> Result<Self> {
        let path = data.join(format!("pki/generations/{id}/ca.crt"));
        let root = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ca = Ca::from_pem(root.clone().into_bytes())?;
        Ok(Self { id, root, ca })
    }
}

/// Which of `generations` signed the leaf of the certificate file `file`, if any.
fn issuer(file: &Path, generations: &[&Generation]) -> Option<u32> {
    let pem = std::fs::read(file).ok()?;
    let leaf = kubecert_csr::parse_certificates_pem(&pem).ok()?.into_iter().next()?;
    generations.iter().find(|g| g.ca.verify(&leaf.der).is_ok()).map(|g| g.id)
}

/// A prober rebuilt only when what it is built from changes.
struct Cached {
    inputs: Vec<Vec<u8>>,
    prober: Option<Prober>,
}

impl Cached {
    fn new() -> Self {
        Self { inputs: Vec::new(), prober: None }
    }

    /// Probes with the prober built from `inputs` (read now); a build error is a failed probe.
    fn probe(
        &mut self,
        inputs: Vec<Vec<u8>>,
        build: impl FnOnce(&[Vec<u8>]) -> Result<Prober, String>,
    ) -> Outcome {
        if self.prober.is_none() || self.inputs != inputs {
            self.prober = None;
            match build(&inputs) {
                Ok(prober) => self.prober = Some(prober),
                Err(error) => return Outcome::Failed(error),
            }
            self.inputs = inputs;
        }
        self.prober.as_ref().map_or_else(|| Outcome::Failed("no prober".into()), Prober::probe)
    }
}

struct Node {
    name: String,
    dir: PathBuf,
    process: Proc,
    serving: Arc<Probed>,
    client: Arc<Probed>,
    old_root: Arc<Mutex<OldRootProbes>>,
}

impl Node {
    fn client_pair(&self) -> PathBuf {
        self.dir.join("pki/kubelet-client-current.pem")
    }

    fn serving_pair(&self) -> PathBuf {
        self.dir.join("pki/kubelet-server-current.pem")
    }

    fn client_ca(&self) -> PathBuf {
        self.dir.join("client-ca.crt")
    }

    /// Whether its client CA file holds exactly `pem`.
    fn trusts_exactly(&self, pem: &str) -> bool {
        std::fs::read_to_string(self.client_ca()).is_ok_and(|file| file == pem)
    }

    /// The generation that signed its client and its serving certificate.
    fn issuers(&self, generations: &[&Generation]) -> (Option<u32>, Option<u32>) {
        (issuer(&self.client_pair(), generations), issuer(&self.serving_pair(), generations))
    }
}

/// The fleet and what the harness does while it waits for it: check that every agent runs and
/// approve serving CSRs as they come (SPEC SV-5: they wait for a human).
struct Fleet {
    nodes: Vec<Node>,
    admin: String,
    last_approve: Option<Instant>,
}

impl Fleet {
    /// Polls `ready` until it holds, at most [`PHASE_LIMIT`]; how long it took.
    fn wait(&mut self, what: &str, mut ready: impl FnMut(&Self) -> Result<bool>) -> Result<Duration> {
        let start = Instant::now();
        loop {
            for node in &mut self.nodes {
                if let Some(status) = node.process.exited() {
                    bail!("{} exited with {status}; see {}", node.name, node.dir.join("agent.log").display());
                }
            }
            if self.last_approve.is_none_or(|at| at.elapsed() > Duration::from_secs(2)) {
                self.last_approve = Some(Instant::now());
                approve_pending_serving_csrs(&self.admin)?;
            }
            if ready(self)? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > PHASE_LIMIT {
                bail!("{what}: not within {}", secs(PHASE_LIMIT));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// `signer ca ARGS` against the serve's data directory.
fn signer_ca(signer_bin: &Path, data: &Path, bundle: &Path, args: &[&str]) -> Result<Output> {
    Command::new(signer_bin)
        .arg("ca")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--trust-bundle-out")
        .arg(bundle)
        .output()
        .with_context(|| format!("running signer ca {}", args.join(" ")))
}

fn signer_ca_ok(signer_bin: &Path, data: &Path, bundle: &Path, args: &[&str]) -> Result<String> {
    let out = signer_ca(signer_bin, data, bundle, args)?;
    if !out.status.success() {
        bail!("signer ca {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The trust bundles of every signer in the API, as `kubectl get clustertrustbundles` lists
/// them (`spec.trustBundle` of each).
fn bundles_in_api(admin: &str) -> Result<Vec<String>> {
    let out = Command::new("kubectl")
        .args(["--kubeconfig", admin, "get", "clustertrustbundles", "-o", "json"])
        .output()
        .context("running kubectl (it must be on PATH)")?;
    if !out.status.success() {
        bail!("kubectl get clustertrustbundles: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).context("kubectl's JSON")?;
    let items = list["items"].as_array().context("kubectl's JSON: no items")?;
    Ok(items.iter().map(|b| b["spec"]["trustBundle"].as_str().unwrap_or_default().to_owned()).collect())
}

/// `signer fleet --ca-cert ROOT` (the fleet view from the status nodes publish on their Leases),
/// with `json` as JSON.
fn signer_fleet(signer_bin: &Path, admin: &str, root: &Path, json: bool) -> Result<String> {
    let mut command = Command::new(signer_bin);
    command.args(["fleet", "--kubeconfig", admin, "--ca-cert"]).arg(root);
    if json {
        command.args(["-o", "json"]);
    }
    let out = command.output().context("running signer fleet")?;
    if !out.status.success() {
        bail!("signer fleet: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the fleet view (JSON) shows `nodes` nodes, each without a risk, its certificates
/// issued by the current CA (`--ca-cert`) and trusting that one alone.
fn fleet_on_one_ca(view: &str, nodes: usize) -> Result<bool> {
    let view: serde_json::Value = serde_json::from_str(view).context("signer fleet's JSON")?;
    let rows = view["nodes"].as_array().context("signer fleet's JSON: no nodes")?;
    let current = serde_json::json!([view["currentCa"]]);
    Ok(rows.len() == nodes
        && rows.iter().all(|row| {
            row["risks"].as_array().is_some_and(Vec::is_empty)
                && row["issuers"] == current
                && row["trusts"] == current
        }))
}

/// Phases of the roll and how long each took, in order.
type Phases = Vec<(&'static str, Duration)>;

/// The roll with `nodes` node agents, working in `root`.
pub(super) fn run_in(nodes: usize, root: &Path, bins: &Binaries, started: Instant) -> Result<()> {
    let (signer_bin, agent_bin) = (bins.signer.as_path(), bins.agent.as_path());
    let data = root.join("signer");
    let bundle = root.join("trust-bundle.pem");
    let config = root.join("signer.toml");
    std::fs::write(&config, "ca_reload_interval = \"1s\"\n")?;
    let listen = free_addr()?;
    let s = |path: &Path| path.display().to_string();
    let signer_args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        s(&data),
        "--listen".into(),
        listen.to_string(),
        "--cluster-signing-duration".into(),
        format!("{}s", LIFETIME.as_secs()),
        "--backdate".into(),
        "0s".into(),
        "--config".into(),
        s(&config),
        "--trust-bundle-out".into(),
        s(&bundle),
    ];
    let _signer = start_signer(signer_bin, &signer_args, root, listen)?;
    let admin = data.join("admin.kubeconfig");
    let gen1 = Generation::load(&data, 1)?;
    println!("signer serve on {listen} ({}), certificates for {}", secs(started.elapsed()), secs(LIFETIME));
    let bootstrap = create_bootstrap_kubeconfig(signer_bin, &admin, root)?;

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop.clone());
    let retired_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut fleet = Fleet { nodes: Vec::new(), admin: s(&admin), last_approve: None };
    for i in 0..nodes {
        let name = format!("node-{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let addr = free_addr()?;
        let mut args = agent_args(&bootstrap, &dir, &name, addr, true);
        args.extend(["--trust-source".into(), "bundles".into(), "--client-ca-file".into()]);
        args.push(s(&dir.join("client-ca.crt")));
        let process = Proc::spawn(&name, agent_bin, &args, &dir.join("agent.log"))?;
        let node = Node {
            name,
            dir,
            process,
            serving: Arc::default(),
            client: Arc::default(),
            old_root: Arc::default(),
        };
        start_node_probes(&node, addr, listen, &bundle, &gen1, &retired_at, &stop)?;
        fleet.nodes.push(node);
    }

    let mut phases: Phases = Vec::new();
    let took = fleet.wait("every node serving with its certificates", |fleet| {
        Ok(fleet.nodes.iter().all(|n| {
            n.serving.lock().is_serving()
                && n.client.lock().is_serving()
                && n.old_root.lock().is_ok_and(|o| o.served > 0)
        }))
    })?;
    phases.push(("bootstrap: every node serving, probed 3 ways", took));
    println!("[{:>6}] {} nodes up, each probed 3 ways; rolling the CA", secs(started.elapsed()), nodes);

    let ca = |args: &[&str]| signer_ca_ok(signer_bin, &data, &bundle, args);
    let roll_started = Instant::now();
    let step = Instant::now();
    println!("signer ca prepare: {}", ca(&["prepare"])?);
    phases.push(("prepare (new key, root, cross-certificate)", step.elapsed()));
    let gen2 = Generation::load(&data, 2)?;
    let both = format!("{}{}", gen1.root, gen2.root);

    let step = Instant::now();
    println!("signer ca publish: {}", ca(&["publish"])?);
    fleet.wait("every node trusting both roots", |fleet| {
        Ok(fleet.nodes.iter().all(|n| n.trusts_exactly(&both)))
    })?;
    phases.push(("publish -> every node's client CA file holds both roots", step.elapsed()));
    println!("[{:>6}] every node trusts generations 1 and 2", secs(started.elapsed()));

    let step = Instant::now();
    println!("signer ca activate: {}", ca(&["activate", "--ca-min-publish-age", "0s"])?);
    let generations = [&gen1, &gen2];
    fleet.wait("every node on generation 2", |fleet| {
        Ok(fleet.nodes.iter().all(|n| n.issuers(&generations) == (Some(2), Some(2))))
    })?;
    phases
        .push(("activate -> every node's client and serving certificate from generation 2", step.elapsed()));
    println!("[{:>6}] every node holds certificates from generation 2", secs(started.elapsed()));

    let retire_reason = "retire refused: generation 1 may have signed certificates valid until";
    fleet.wait("retire allowed", |_| {
        // The attempt's start: the journal (which the running signer follows) changes before
        // the command exits, so the old root may stop working before then.
        let attempt = Instant::now();
        let out = signer_ca(signer_bin, &data, &bundle, &["retire"])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            *retired_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt);
            println!("signer ca retire: {}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(true)
        } else if stderr.contains(retire_reason) {
            Ok(false)
        } else {
            bail!("signer ca retire: {}", stderr.trim())
        }
    })?;
    phases.push(("activate -> retire allowed (generation 1's last leaf expired)", step.elapsed()));
    let retired = retired_at.lock().unwrap_or_else(|p| p.into_inner()).context("retire time")?;
    fleet.wait("every node trusting only generation 2", |fleet| {
        Ok(fleet.nodes.iter().all(|n| n.trusts_exactly(&gen2.root)))
    })?;
    phases.push(("retire -> every node's client CA file holds only generation 2", retired.elapsed()));
    let roll = roll_started.elapsed();
    println!("[{:>6}] every node trusts only generation 2", secs(started.elapsed()));

    fleet.wait("the old-root-only client to be refused by every node", |fleet| {
        Ok(fleet.nodes.iter().all(|n| n.old_root.lock().is_ok_and(|o| o.stopped.is_some())))
    })?;
    phases.push(("retire -> the old-root-only client refused by every node", retired.elapsed()));
    let gen2_root = data.join("pki/generations/2/ca.crt");
    let mut view = String::new();
    fleet
        .wait("the fleet view to show every node on generation 2 alone", |fleet| {
            view = signer_fleet(signer_bin, &fleet.admin, &gen2_root, true)?;
            fleet_on_one_ca(&view, fleet.nodes.len())
        })
        .with_context(|| format!("the last fleet view: {view}"))?;
    phases.push(("retire -> the fleet view shows every node on generation 2 alone", retired.elapsed()));
    // A little more probing on the final state.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut failures = Vec::new();
    let bundle_file = std::fs::read_to_string(&bundle).unwrap_or_default();
    if bundle_file != gen2.root {
        failures.push(format!("{}: not generation 2's root alone", bundle.display()));
    }
    let in_api = bundles_in_api(&fleet.admin)?;
    if in_api.is_empty() || in_api.iter().any(|b| *b != gen2.root) {
        failures.push(format!(
            "ClusterTrustBundles: {} of {} hold more than generation 2's root",
            in_api.iter().filter(|b| **b != gen2.root).count(),
            in_api.len()
        ));
    }
    print_summary(&fleet, &generations, &phases, roll, retired);
    println!("signer fleet --ca-cert <generation 2's root>:");
    print!("{}", signer_fleet(signer_bin, &fleet.admin, &gen2_root, false)?);
    for node in &fleet.nodes {
        let mut fail = |what: String| failures.push(format!("{}: {what}", node.name));
        match node.issuers(&generations) {
            (Some(2), Some(2)) => {}
            (client, serving) => fail(format!("ends with client from {client:?}, serving from {serving:?}")),
        }
        if !node.trusts_exactly(&gen2.root) {
            fail("its client CA file is not generation 2's root alone".into());
        }
        for (kind, probed) in [("serving", &node.serving), ("client", &node.client)] {
            for failure in probed.lock().failures() {
                fail(format!("{kind}: {failure}"));
            }
        }
        let old = node.old_root.lock().unwrap_or_else(|p| p.into_inner());
        if old.failed_before_retire > 0 {
            fail(format!(
                "old-root-only client: {} failed before retire (last: {})",
                old.failed_before_retire,
                old.last_failure.as_deref().unwrap_or_default()
            ));
        }
    }
    verdict(&failures, "e2e --ca-roll", started)
}

/// Starts the three probes of one node (see the module's documentation).
fn start_node_probes(
    node: &Node,
    addr: SocketAddr,
    api: SocketAddr,
    bundle: &Path,
    gen1: &Generation,
    retired_at: &Arc<Mutex<Option<Instant>>>,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let read = |path: &Path| std::fs::read(path).unwrap_or_default();
    let (trust, mut serving) = (bundle.to_path_buf(), Cached::new());
    start_probing(
        move || Some(serving.probe(vec![read(&trust)], |inputs| Prober::https(addr, &inputs[0]))),
        node.serving.clone(),
        stop.clone(),
    );
    let (trust, pair, mut client) = (bundle.to_path_buf(), node.client_pair(), Cached::new());
    start_probing(
        move || {
            let pem = std::fs::read(&pair).ok()?;
            Some(client.probe(vec![read(&trust), pem], |inputs| {
                Prober::https_as_client(api, &inputs[0], &inputs[1], CLIENT_PROBE_PATH)
            }))
        },
        node.client.clone(),
        stop.clone(),
    );
    let old_only = Prober::https(addr, gen1.root.as_bytes()).map_err(anyhow::Error::msg)?;
    let (probes, retired_at, stop) = (node.old_root.clone(), retired_at.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            let outcome = old_only.probe();
            let retired = *retired_at.lock().unwrap_or_else(|p| p.into_inner());
            probes.lock().unwrap_or_else(|p| p.into_inner()).record(started, outcome, retired);
            std::thread::sleep(OLD_ROOT_INTERVAL);
        }
    });
    Ok(())
}

fn print_summary(
    fleet: &Fleet,
    generations: &[&Generation],
    phases: &Phases,
    roll: Duration,
    retired: Instant,
) {
    println!();
    println!("{:<76} {:>8}", "phase", "took");
    for (phase, took) in phases {
        println!("{phase:<76} {:>8}", secs(*took));
    }
    println!("{:<76} {:>8}", "roll: prepare -> every node trusts only generation 2", secs(roll));
    println!();
    let header = [
        "node",
        "serving ok/failed",
        "client ok/failed",
        "old-root-only ok/failed",
        "old root stopped",
        "final gen (client, serving)",
    ];
    println!(
        "{:<8} {:>18} {:>17} {:>24} {:>17} {:>28}",
        header[0], header[1], header[2], header[3], header[4], header[5]
    );
    let (mut requests, mut failed) = (0, 0);
    for node in &fleet.nodes {
        let (serving, client) = (node.serving.lock(), node.client.lock());
        let old = node.old_root.lock().unwrap_or_else(|p| p.into_inner());
        requests += serving.served() + serving.failed_probes() + client.served() + client.failed_probes();
        requests += old.served + old.failed_before_retire;
        failed += serving.failed_probes() + client.failed_probes() + old.failed_before_retire;
        let stopped = old.stopped.as_ref().map_or("never".to_owned(), |(at, _)| {
            format!("retire + {}", secs(at.saturating_duration_since(retired)))
        });
        let generation = |g: Option<u32>| g.map_or("?".to_owned(), |g| g.to_string());
        let (c, s) = node.issuers(generations);
        println!(
            "{:<8} {:>18} {:>17} {:>24} {:>17} {:>28}",
            node.name,
            format!("{}/{}", serving.served(), serving.failed_probes()),
            format!("{}/{}", client.served(), client.failed_probes()),
            format!("{}/{}", old.served, old.failed_before_retire),
            stopped,
            format!("{}, {}", generation(c), generation(s)),
        );
    }
    println!();
    println!(
        "requests probed: {requests}; failed: {failed} (old-root-only requests after retire are not counted)"
    );
    if let Some((_, error)) = fleet.nodes.iter().find_map(|n| n.old_root.lock().ok()?.stopped.clone()) {
        println!("the old-root-only client, after retire, met: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Outcome {
        Outcome::Failed("invalid peer certificate: UnknownIssuer".into())
    }

    #[test]
    fn old_root_failures_count_before_retire_and_mark_the_stop_after_it() {
        let origin = Instant::now();
        let at = |s: u64| origin + Duration::from_secs(s);
        let mut probes = OldRootProbes::default();
        probes.record(at(0), tls(), None);
        assert_eq!(probes.failed_before_retire, 0, "bootstrapping is not judged");
        probes.record(at(1), Outcome::Served, None);
        probes.record(at(2), tls(), None);
        assert_eq!((probes.served, probes.failed_before_retire), (1, 1));
        // A probe started before retire and judged after it still counts as a failure.
        probes.record(at(3), tls(), Some(at(4)));
        assert_eq!(probes.failed_before_retire, 2);
        probes.record(at(5), Outcome::Served, Some(at(4)));
        probes.record(at(6), tls(), Some(at(4)));
        probes.record(at(7), Outcome::ConnectionLost("reset".into()), Some(at(4)));
        assert_eq!(probes.failed_before_retire, 2);
        assert_eq!(probes.served, 2);
        let (stopped, error) = probes.stopped.clone().unwrap();
        assert_eq!((stopped, error.as_str()), (at(6), "invalid peer certificate: UnknownIssuer"));
        probes.record(at(8), Outcome::Served, Some(at(4)));
        assert_eq!(probes.served, 2, "served after the stop is not counted");
    }

    #[test]
    fn the_fleet_view_is_on_one_ca_when_every_node_is_issued_by_and_trusts_it_alone() {
        let row = |issuers: &str, trusts: &str, risks: &str| {
            format!(r#"{{"node":"n","issuers":{issuers},"trusts":{trusts},"risks":{risks}}}"#)
        };
        let view = |rows: &[String]| format!(r#"{{"currentCa":"bb","nodes":[{}]}}"#, rows.join(","));
        let good = row(r#"["bb"]"#, r#"["bb"]"#, "[]");
        assert!(fleet_on_one_ca(&view(&[good.clone(), good.clone()]), 2).unwrap());
        assert!(!fleet_on_one_ca(&view(std::slice::from_ref(&good)), 2).unwrap(), "a node missing");
        let still_trusting_old = row(r#"["bb"]"#, r#"["aa","bb"]"#, "[]");
        assert!(!fleet_on_one_ca(&view(&[good.clone(), still_trusting_old]), 2).unwrap());
        let old_serving = row(r#"["bb","aa"]"#, r#"["bb"]"#, r#"["OldCA"]"#);
        assert!(!fleet_on_one_ca(&view(&[good.clone(), old_serving]), 2).unwrap());
        let overdue = row(r#"["bb"]"#, r#"["bb"]"#, r#"["Overdue"]"#);
        let other_ca = row(r#"["cc"]"#, r#"["cc"]"#, "[]");
        assert!(!fleet_on_one_ca(&view(&[good.clone(), other_ca]), 2).unwrap());
        assert!(!fleet_on_one_ca(&view(&[good, overdue]), 2).unwrap());
        let error = fleet_on_one_ca("[]", 1).unwrap_err();
        assert_eq!(format!("{error:#}"), "signer fleet's JSON: no nodes");
    }
}
