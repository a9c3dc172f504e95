//! `cargo xtask e2e`: the whole system on this machine.
//!
//! Builds both binaries, starts `signer serve` in rehearsal mode (60 s certificates, no
//! backdate), creates a bootstrap token, starts N node agents in their own cert dirs (the first
//! two with serving certificates, approved with `kubectl certificate approve` because the default
//! policy does not auto-approve them), and watches every node until each has rotated its client
//! certificate R times. On the way it kills and restarts one agent inside its rotation window
//! and the signer once. Every certificate seen must chain to the CA with the right subject and
//! usages, every rotation must bring a new key, and an HTTPS client hitting each serving agent
//! continuously must see no failure. Every process started is stopped on the way out (Ctrl-C
//! reaches them too: they share the terminal's process group).

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, workspace_root};

/// Lifetime of issued certificates in the rehearsal.
const LIFETIME: &str = "60s";
/// Limit of the run itself (the build before it is not counted).
const LIMIT: Duration = Duration::from_secs(300);

/// `--nodes`, `--rotations`.
pub struct Options {
    nodes: usize,
    rotations: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self { nodes: 3, rotations: 2 };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = |name: &str| -> Result<usize> {
                let v = rest.next().with_context(|| format!("{name} needs a number"))?;
                v.parse().with_context(|| format!("{name}: {v:?} is not a number"))
            };
            match arg.as_str() {
                "--nodes" => options.nodes = value("--nodes")?,
                "--rotations" => options.rotations = value("--rotations")?,
                other => {
                    bail!("cargo xtask e2e: unknown argument {other:?} (usage: [--nodes N] [--rotations R])")
                }
            }
        }
        if options.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        Ok(options)
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
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// What was seen of one certificate kind on one node.
#[derive(Default)]
struct Seen {
    serials: Vec<String>,
    keys: BTreeSet<Vec<u8>>,
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
        let mut problem = |what: String| self.problems.push(format!("{node} {}: {what}", leaf.serial_hex));
        if !leaf.matches_key(&key) {
            problem("key does not match the certificate".into());
        }
        if let Err(e) = ca.verify(&leaf.der) {
            problem(format!("does not chain to the CA: {e}"));
        }
        if leaf.subject.common_name.as_deref() != Some(&format!("system:node:{node}")) {
            problem(format!("subject CN {:?}", leaf.subject.common_name));
        }
        if leaf.subject.organizations != ["system:nodes"] {
            problem(format!("subject O {:?}", leaf.subject.organizations));
        }
        let usage =
            if server { kubecert_csr::KeyUsage::ServerAuth } else { kubecert_csr::KeyUsage::ClientAuth };
        if !leaf.key_usage.contains(&usage) || leaf.is_ca {
            problem(format!("usages {:?}, CA {}", leaf.key_usage, leaf.is_ca));
        }
        let now = SystemTime::now();
        if now < leaf.not_before || leaf.is_expired_at(now) {
            problem("not valid now".into());
        }
    }

    fn rotations(&self) -> usize {
        self.serials.len().saturating_sub(1)
    }
}

/// The cluster CA, for checking chains and for the HTTPS probes.
struct Ca {
    pem: Vec<u8>,
    spki_der: Vec<u8>,
}

impl Ca {
    fn verify(&self, der: &[u8]) -> Result<()> {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).context("parse")?;
        let (_, spki) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki_der).context("CA key")?;
        cert.verify_signature(Some(&spki)).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Counts of the HTTPS probes of one agent.
#[derive(Default)]
struct Probes {
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// `GET /healthz` over TLS, verifying the agent's serving certificate against the CA.
fn probe_once(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<()> {
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let connection = rustls::ClientConnection::new(config.clone(), name)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // Some servers close without close_notify after Connection: close.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    if !response.starts_with(b"HTTP/1.1 200") {
        bail!("{}", String::from_utf8_lossy(&response[..response.len().min(80)]));
    }
    Ok(())
}

fn start_probing(ca: &Ca, addr: SocketAddr, stop: Arc<AtomicBool>) -> Result<Arc<Probes>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca.pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let probes = Arc::new(Probes::default());
    let counts = probes.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match probe_once(&config, addr) {
                Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    *counts.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                    counts.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    Ok(probes)
}

use rustls::pki_types::pem::PemObject as _;

struct Node {
    name: String,
    dir: PathBuf,
    serving: bool,
    metrics: SocketAddr,
    args: Vec<String>,
    process: Proc,
    client: Seen,
    server: Seen,
    probes: Option<Arc<Probes>>,
    restarted: bool,
}

impl Node {
    fn start(&mut self, agent: &Path) -> Result<()> {
        let log = self.dir.join(if self.restarted { "agent-2.log" } else { "agent.log" });
        self.process = Proc::spawn(&self.name, agent, &self.args, &log)?;
        Ok(())
    }
}

pub fn run(options: &Options) -> Result<()> {
    println!("building signer and node-agent…");
    let build = Instant::now();
    let status =
        cargo().args(["build", "-p", "signer", "-p", "node-agent"]).status().context("cargo build")?;
    if !status.success() {
        bail!("cargo build -p signer -p node-agent failed");
    }
    println!("built in {:.0?}; the run itself has {LIMIT:?}", build.elapsed());
    let started = Instant::now();
    let bin = workspace_root().join("target/debug");
    let (signer_bin, agent_bin) = (bin.join("signer"), bin.join("node-agent"));
    let root = std::env::temp_dir().join(format!("kubecert-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    println!("working in {}", root.display());
    let result = run_in(options, &root, &signer_bin, &agent_bin, started);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(_) => println!("logs kept in {}", root.display()),
    }
    result
}

fn run_in(
    options: &Options,
    root: &Path,
    signer_bin: &Path,
    agent_bin: &Path,
    started: Instant,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = root.join("signer");
    let listen = free_addr()?;
    let signer_args: Vec<String> = [
        "serve",
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        &listen.to_string(),
        "--cluster-signing-duration",
        LIFETIME,
        "--backdate",
        "0s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut signer = Proc::spawn("signer", signer_bin, &signer_args, &root.join("signer.log"))?;
    let admin = data.join("admin.kubeconfig");
    wait_until("signer serve listening", Duration::from_secs(30), || {
        if let Some(status) = signer.exited() {
            bail!("signer serve exited with {status}; see {}", root.join("signer.log").display());
        }
        Ok(admin.is_file() && TcpStream::connect(listen).is_ok())
    })?;
    let ca_pem = std::fs::read(data.join("pki/ca.crt"))?;
    let ca_cert = kubecert_csr::parse_certificates_pem(&ca_pem)?.remove(0);
    let ca = Ca { pem: ca_pem, spki_der: ca_cert.public_key.spki_der };
    println!("signer serve on {listen} ({:.0?})", started.elapsed());

    let bootstrap = root.join("bootstrap.kubeconfig");
    let token = Command::new(signer_bin)
        .args(["token", "create", "--kubeconfig"])
        .arg(&admin)
        .arg("--write-bootstrap-kubeconfig")
        .arg(&bootstrap)
        .output()?;
    if !token.status.success() {
        bail!("signer token create: {}", String::from_utf8_lossy(&token.stderr));
    }

    let mut nodes = Vec::new();
    for i in 0..options.nodes {
        let name = format!("node-{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let metrics = free_addr()?;
        let serving = i < 2;
        let mut args: Vec<String> = vec![
            "--bootstrap-kubeconfig".into(),
            bootstrap.display().to_string(),
            "--kubeconfig".into(),
            dir.join("kubelet.conf").display().to_string(),
            "--cert-dir".into(),
            dir.join("pki").display().to_string(),
            "--node-name".into(),
            name.clone(),
            "--metrics-addr".into(),
            metrics.to_string(),
        ];
        if serving {
            args.extend(["--rotate-server-certificates".into(), "--node-ip".into(), "127.0.0.1".into()]);
            args.extend(["--node-dns".into(), format!("{name}.e2e.local")]);
        }
        let process = Proc::spawn(&name, agent_bin, &args, &dir.join("agent.log"))?;
        nodes.push(Node {
            name,
            dir,
            serving,
            metrics,
            args,
            process,
            client: Seen::default(),
            server: Seen::default(),
            probes: None,
            restarted: false,
        });
    }

    let stop_probes = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop_probes.clone());
    let kc = admin.display().to_string();
    let mut signer_restarted = false;
    let mut last_report = String::new();
    let mut last_approve = Instant::now() - Duration::from_secs(10);
    loop {
        if started.elapsed() > LIMIT {
            print_summary(&nodes);
            bail!("not done within {LIMIT:?}");
        }
        for node in &mut nodes {
            if let Some(status) = node.process.exited() {
                bail!("{} exited with {status}; see {}", node.name, node.dir.join("agent.log").display());
            }
            let pki = node.dir.join("pki");
            node.client.observe(&pki.join("kubelet-client-current.pem"), &ca, &node.name, false);
            if node.serving {
                node.server.observe(&pki.join("kubelet-server-current.pem"), &ca, &node.name, true);
                if node.probes.is_none() && !node.server.serials.is_empty() {
                    node.probes = Some(start_probing(&ca, node.metrics, stop_probes.clone())?);
                }
            }
        }
        // Serving CSRs wait for a human (SPEC SV-5): approve them as one would.
        if last_approve.elapsed() > Duration::from_secs(2) {
            last_approve = Instant::now();
            approve_pending_serving_csrs(&kc)?;
        }
        // Fault 1: kill the last agent inside its rotation window (70–90 % of 60 s), restart it.
        if let Some(node) = nodes.last_mut() {
            let in_window = node_pair_age(&node.dir.join("pki/kubelet-client-current.pem"))
                .is_some_and(|age| age > Duration::from_secs(43));
            if !node.restarted && node.client.rotations() == 0 && in_window {
                println!("fault: killing {} inside its rotation window, restarting it", node.name);
                node.process.kill();
                node.restarted = true;
                node.start(agent_bin)?;
            }
        }
        // Fault 2: once every node has bootstrapped and one has rotated, kill the signer for 5 s.
        let all_bootstrapped = nodes.iter().all(|n| !n.client.serials.is_empty());
        if !signer_restarted && all_bootstrapped && nodes.iter().any(|n| n.client.rotations() >= 1) {
            println!("fault: killing the signer for 5 s");
            signer.kill();
            std::thread::sleep(Duration::from_secs(5));
            signer = Proc::spawn("signer", signer_bin, &signer_args, &root.join("signer-2.log"))?;
            wait_until("signer back", Duration::from_secs(30), || Ok(TcpStream::connect(listen).is_ok()))?;
            signer_restarted = true;
        }
        let report = progress(&nodes);
        if report != last_report {
            println!("[{:>4.0?}] {report}", started.elapsed());
            last_report = report;
        }
        let done = nodes
            .iter()
            .all(|n| n.client.rotations() >= options.rotations && (!n.serving || n.probes.is_some()));
        if done && signer_restarted {
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
        if let Some(probes) = &node.probes {
            let failed = probes.failed.load(Ordering::Relaxed);
            if failed > 0 {
                let last = probes.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
                failures.push(format!("{}: {failed} failed HTTPS requests (last: {last:?})", node.name));
            }
        }
    }
    if !failures.is_empty() {
        for failure in &failures {
            println!("FAILED: {failure}");
        }
        bail!("{} check(s) failed", failures.len());
    }
    println!("e2e passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Sets the flag when dropped, so probe threads stop on every way out.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn node_pair_age(current: &Path) -> Option<Duration> {
    let pem = std::fs::read(current).ok()?;
    let leaf = kubecert_csr::parse_certificates_pem(&pem).ok()?.remove(0);
    SystemTime::now().duration_since(leaf.not_before).ok()
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
    println!();
    println!(
        "{:<8} {:>16} {:>9} {:>16} {:>10} {:>15}",
        "node", "client rotations", "new keys", "serving certs", "probes ok", "failed requests"
    );
    for n in nodes {
        let (ok, failed) = n
            .probes
            .as_ref()
            .map_or((0, 0), |p| (p.ok.load(Ordering::Relaxed), p.failed.load(Ordering::Relaxed)));
        let new_keys = n.client.keys.len().saturating_sub(1) + n.server.keys.len().saturating_sub(1);
        println!(
            "{:<8} {:>16} {:>9} {:>16} {:>10} {:>15}",
            n.name,
            n.client.rotations(),
            new_keys,
            n.server.serials.len(),
            ok,
            failed
        );
    }
    println!();
}
