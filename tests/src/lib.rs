//! Workspace-level test support for kubecert.
//!
//! `tests/workspace.rs` checks the rules every crate keeps (crate docs, workspace lints, one
//! crypto provider, the README's quick start). This library holds what the end-to-end tests of
//! the built binaries share: finding the binaries, running `signer serve` in a temporary data
//! directory, and finding the real `kubectl` (mandatory when `KUBECERT_REQUIRE_KUBECTL=1`).
//! The system benchmarks in `benches/` (the bootstrap storm and the agent's idle footprint, run
//! by `cargo xtask bench`) use the same helpers plus [`bench`]; [`probe`] is the `/healthz`
//! probe of a node agent that the restart benchmark and `cargo xtask e2e` share; [`trust`] holds
//! the checks of the CA-roll tests.

pub mod bench;
pub mod kubernetes;
pub mod probe;
pub mod trust;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workspace root (the directory of the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The path of a workspace binary (`signer`, `node-agent`).
///
/// `cargo test --workspace` builds every binary whose package has integration tests before any
/// test runs, next to the test executables' `deps/` directory; that build is used. When it is
/// missing (e.g. `cargo test -p kubecert-tests` alone), the binary is built once with cargo, in
/// the profile of the running executable. Benchmarks (release) measure the node agent as
/// shipped: built with the `agent` profile (Cargo.toml), in `target/agent/`.
pub fn binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut profile_dir =
        exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
    let mut profile = profile_dir.file_name().and_then(|dir| dir.to_str()).unwrap_or("dev").to_owned();
    if profile == "release" && name == "node-agent" {
        profile = "agent".to_owned();
        profile_dir.set_file_name("agent");
    }
    let path = profile_dir.join(name);
    let _one_build_at_a_time = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if profile == "debug" { "dev" } else { profile.as_str() };
        let status = Command::new(cargo)
            .args(["build", "-p", name, "--profile", profile])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name} --profile {profile} failed");
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The real `kubectl`, or `None` (with a notice) when it is absent. With
/// `KUBECERT_REQUIRE_KUBECTL=1` (CI) absence is a failure instead.
pub fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("KUBECERT_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is not on PATH and KUBECERT_REQUIRE_KUBECTL=1"
        );
        eprintln!("NOTICE: kubectl not on PATH; this test checks nothing without it");
    }
    found
}

/// Every kubectl on the machine with its minor version: the `kubectl.1.<minor>` files next to
/// the resolved `kubectl` (symlinks followed; the machine image carries 1.27 … 1.33 there),
/// oldest first, then `kubectl` itself. Empty without kubectl (see [`kubectl`]).
pub fn kubectls_with_minor() -> Vec<(u32, PathBuf)> {
    let Some(kubectl) = kubectl() else { return Vec::new() };
    let resolved = std::fs::canonicalize(&kubectl).expect("kubectl resolves");
    let dir = resolved.parent().expect("kubectl is in a directory");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .expect("kubectl's directory is readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let minor = path.file_name()?.to_str()?.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, path))
        })
        .collect();
    found.sort();
    let version = run_ok(&kubectl, &["version", "--client", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).expect("kubectl version is JSON");
    let minor = version["clientVersion"]["minor"].as_str().unwrap_or_default().trim_end_matches('+');
    found.push((minor.parse().expect("kubectl's minor version is a number"), kubectl));
    found
}

/// A free TCP port on 127.0.0.1 (bound, then released for the process under test).
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed when dropped.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr into `log`.
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create log file");
        let err = file.try_clone().expect("clone log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self { child, log: log.to_path_buf() }
    }

    /// Takes over a child started elsewhere (with its own environment, say), its output in `log`.
    pub fn from_child(child: Child, log: &Path) -> Self {
        Self { child, log: log.to_path_buf() }
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Leaves the process running when this handle goes away, and returns its id.
    pub fn detach(self) -> u32 {
        let process = std::mem::ManuallyDrop::new(self);
        process.child.id()
    }

    /// Whether it has exited (and its status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's directory under the system temp dir, removed when dropped, except when the test
/// failed or `KUBECERT_E2E_KEEP=1`: then its logs are left for reading.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name starts with `tag`.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{tag}-{}-{}", std::process::id(), nanos.as_nanos()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("KUBECERT_E2E_KEEP").as_deref() == Ok("1") {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `signer serve` on a free loopback port with its own data directory.
pub struct SignerServe {
    /// The process.
    pub process: Process,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen`.
    pub addr: SocketAddr,
}

impl SignerServe {
    /// Starts `signer serve --data-dir <dir> --listen <free port> <extra…>` and waits until it
    /// accepts connections.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(data_dir, free_local_addr(), extra)
    }

    /// Like [`SignerServe::start`] on a given address (to restart on the same one).
    pub fn start_at(data_dir: &Path, addr: SocketAddr, extra: &[&str]) -> Self {
        let listen = addr.to_string();
        let dir = data_dir.to_str().expect("UTF-8 path");
        let mut args = vec!["serve", "--data-dir", dir, "--listen", &listen];
        args.extend_from_slice(extra);
        let log = data_dir.with_extension(format!("{}.log", addr.port()));
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let mut process = Process::spawn(&binary("signer"), &args, &log);
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = process.try_wait() {
                panic!("signer serve exited with {status}:\n{}", process.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "signer serve did not listen:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { process, data_dir: data_dir.to_path_buf(), addr }
    }

    /// DATA_DIR/admin.kubeconfig.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// DATA_DIR/pki/ca.crt.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// Runs `signer token create --kubeconfig admin.kubeconfig --write-bootstrap-kubeconfig
    /// <path>` and returns the token.
    pub fn create_token(&self, bootstrap_kubeconfig: &Path) -> String {
        create_bootstrap_token(&self.admin_kubeconfig(), bootstrap_kubeconfig, &[])
    }
}

/// Runs `signer token create --kubeconfig <admin> --write-bootstrap-kubeconfig <bootstrap>
/// <extra…>` against any API (`signer serve` or a real kube-apiserver) and returns the token.
pub fn create_bootstrap_token(admin: &Path, bootstrap_kubeconfig: &Path, extra: &[&str]) -> String {
    let out = Command::new(binary("signer"))
        .args(["token", "create", "--kubeconfig"])
        .arg(admin)
        .arg("--write-bootstrap-kubeconfig")
        .arg(bootstrap_kubeconfig)
        .args(extra)
        .output()
        .expect("run signer token create");
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8").trim().to_owned()
}

/// A `signer serve` configuration (for `--config`) that approves serving certificates when they
/// name 127.0.0.0/8 and `*.allowed.example` only.
pub const SERVING_POLICY: &str = "[policy.signers.\"kubernetes.io/kubelet-serving\"]\nauto_approve = true\n\
                                  allowed_ip_cidrs = [\"127.0.0.0/8\"]\nallowed_dns_suffixes = [\"allowed.example\"]\n";

/// Starts `node-agent` for node `node_name` in the node directory `dir`, laid out as the tests
/// and benchmarks use it: `dir/bootstrap.kubeconfig` (from [`SignerServe::create_token`]),
/// `dir/kubelet.conf`, the cert dir `dir/pki`; metrics on `metrics`; `extra` flags appended;
/// output into `log`.
pub fn start_node_agent(
    dir: &Path,
    node_name: &str,
    metrics: SocketAddr,
    extra: &[&str],
    log: &Path,
) -> Process {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (bootstrap, kubeconfig, pki) = (path("bootstrap.kubeconfig"), path("kubelet.conf"), path("pki"));
    let metrics = metrics.to_string();
    let mut args = vec![
        "--bootstrap-kubeconfig",
        &bootstrap,
        "--kubeconfig",
        &kubeconfig,
        "--cert-dir",
        &pki,
        "--node-name",
        node_name,
        "--metrics-addr",
        &metrics,
    ];
    args.extend_from_slice(extra);
    Process::spawn(&binary("node-agent"), &args, log)
}

/// `GET path` over plain HTTP/1.0 (a node agent's `/healthz` or `/metrics`); the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

/// Runs a command and returns its stdout, failing the test with its stderr when it fails.
pub fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
