//! The real Kubernetes on loopback: etcd, kube-apiserver and kube-controller-manager built from
//! their Go modules (the pinned module in `tests/kubernetes/`), configured for node certificates
//! as a kubeadm cluster is, plus `kubelet-certs`, the kubelet's own certificate code.
//!
//! [`binaries`] builds the Go programs once per machine into `target/kubernetes/bin` and skips the
//! build while the module's files and the Go version are unchanged. [`Cluster::start`] runs
//! etcd and kube-apiserver (and, when asked, kube-controller-manager with only its CSR
//! controllers) in a directory of their own; `cargo xtask cluster up|down` uses the same code.
//!
//! Tests that need the real cluster call [`go_or_skip`] first: without a Go toolchain they print a
//! notice and check nothing, unless `KUBECERT_REQUIRE_KUBERNETES=1` (CI) makes that a failure.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Process, binary, create_bootstrap_token, free_local_addr, run_ok, workspace_root};

/// The Go programs of `tests/kubernetes/`.
pub const PROGRAMS: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "etcd", "kubelet-certs"];

/// Packages built into `target/kubernetes/bin`, in the order of [`PROGRAMS`].
const PACKAGES: [&str; 4] = [
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "./cmd/etcd",
    "./cmd/kubelet-certs",
];

/// The group kubeadm gives its default node bootstrap token, and binds for node bootstrap.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The Go module's directory.
pub fn module_dir() -> PathBuf {
    workspace_root().join("tests/kubernetes")
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `target/` in the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Whether the Go toolchain is here. Without it, a test of the real cluster prints a notice and
/// returns `false` (checks nothing); with `KUBECERT_REQUIRE_KUBERNETES=1` its absence fails.
pub fn go_or_skip() -> bool {
    let found = Command::new("go").arg("version").output().is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var("KUBECERT_REQUIRE_KUBERNETES").as_deref() != Ok("1"),
            "go is not on PATH and KUBECERT_REQUIRE_KUBERNETES=1"
        );
        eprintln!("NOTICE: go not on PATH; this test of the real Kubernetes checks nothing without it");
    }
    found
}

/// What a build depends on: the Go version, the linker flags and every file of the module. The build is skipped
/// while this is byte-for-byte what the last successful build recorded.
fn build_inputs() -> Result<Vec<u8>, String> {
    let go = Command::new("go").arg("version").output().map_err(|e| format!("running go version: {e}"))?;
    let mut inputs = go.stdout;
    inputs.extend(version_flags()?.into_bytes());
    let mut files = vec![];
    let mut dirs = vec![module_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
            let path = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        inputs.extend_from_slice(file.to_string_lossy().as_bytes());
        inputs.extend(fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?);
    }
    Ok(inputs)
}

/// The Kubernetes release that `go.mod` pins (`v1.37.2`).
pub fn pinned_release() -> Result<String, String> {
    let go_mod = module_dir().join("go.mod");
    let text = fs::read_to_string(&go_mod).map_err(|e| format!("reading {}: {e}", go_mod.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes ").map(|v| v.trim().to_owned()))
        .ok_or_else(|| format!("{} requires no k8s.io/kubernetes", go_mod.display()))
}

/// Linker flags that stamp the release into the binaries, as Kubernetes' own build does (a
/// module build leaves `v0.0.0-master`): `/version` and `kubectl version` then name it.
fn version_flags() -> Result<String, String> {
    let release = pinned_release()?;
    let mut parts = release.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let mut flags = String::new();
    for package in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
        let _ = write!(
            flags,
            "-X {package}.gitVersion={release} -X {package}.gitMajor={major} -X {package}.gitMinor={minor} \
             -X {package}.gitTreeState=clean "
        );
    }
    Ok(flags.trim_end().to_owned())
}

/// Builds the Go programs into `target/kubernetes/bin` unless they are up to date, and returns
/// that directory. One build at a time across processes (a file lock); the Go build cache makes a
/// rebuild after a small change quick, the first build takes several minutes on two cores.
pub fn binaries() -> Result<PathBuf, String> {
    let root = target_dir().join("kubernetes");
    let bin = root.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    let lock =
        fs::File::create(root.join("build.lock")).map_err(|e| format!("creating the build lock: {e}"))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", root.join("build.lock").display()))?;
    let stamp = root.join("build.stamp");
    let inputs = build_inputs()?;
    let built = PROGRAMS.iter().all(|program| bin.join(program).is_file());
    if built && fs::read(&stamp).is_ok_and(|recorded| recorded == inputs) {
        return Ok(bin);
    }
    eprintln!("building {} from {} (cached per machine)", PROGRAMS.join(", "), module_dir().display());
    let started = Instant::now();
    let out = Command::new("go")
        .arg("build")
        .arg(format!("-ldflags={}", version_flags()?))
        .arg("-o")
        .arg(format!("{}/", bin.display()))
        .args(PACKAGES)
        .current_dir(module_dir())
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("running go build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build in {} failed:\n{}",
            module_dir().display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!("built in {:.0?}", started.elapsed());
    fs::write(&stamp, inputs).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(bin)
}

/// [`binaries`], failing the test when the build fails.
pub fn program(name: &str) -> PathBuf {
    binaries().unwrap_or_else(|e| panic!("{e}")).join(name)
}

/// How to run a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Run kube-controller-manager with only its CSR controllers (csrapproving, csrsigning,
    /// csrcleaner), signing with the cluster CA.
    pub controller_manager: bool,
    /// kube-controller-manager's `--cluster-signing-duration`.
    pub signing_duration: Duration,
    /// Serve ClusterTrustBundles in `certificates.k8s.io/v1beta1` too (beta, off unless asked
    /// for); `v1` is served either way.
    pub beta_trust_bundles: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            controller_manager: false,
            signing_duration: Duration::from_secs(8760 * 3600),
            beta_trust_bundles: true,
        }
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager), killed when dropped.
pub struct Cluster {
    /// The cluster directory: `pki/`, `etcd/`, kubeconfigs, logs.
    pub dir: PathBuf,
    /// kube-apiserver's secure address.
    pub api: SocketAddr,
    /// etcd, kube-apiserver and (when asked) kube-controller-manager.
    pub processes: Vec<Process>,
}

/// A certificate and its key, PEM.
struct Pair {
    cert: String,
    key: KeyPair,
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn ca() -> (Pair, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("generate the CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, "kubernetes");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("self-sign the CA").pem();
    let issuer_key = KeyPair::from_pem(&key.serialize_pem()).expect("reload the CA key");
    (Pair { cert, key }, Issuer::new(params, issuer_key))
}

/// A leaf for `cn`/`orgs` signed by `issuer`; `adjust` changes its parameters last (validity).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    adjust: impl FnOnce(&mut CertificateParams),
) -> Pair {
    let key = KeyPair::generate().expect("generate a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *org);
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    adjust(&mut params);
    let cert = params.signed_by(&key, issuer).expect("sign a leaf").pem();
    Pair { cert, key }
}

/// kube-apiserver's serving certificate (127.0.0.1 and the in-cluster names) signed by `issuer`.
fn serving_leaf(issuer: &Issuer<'_, KeyPair>) -> Pair {
    let localhost = |name: &str| SanType::DnsName(name.try_into().expect("a DNS name"));
    let sans = vec![
        SanType::IpAddress([127, 0, 0, 1].into()),
        localhost("localhost"),
        localhost("kubernetes"),
        localhost("kubernetes.default.svc"),
    ];
    leaf(issuer, "kube-apiserver", &[], sans, ExtendedKeyUsagePurpose::ServerAuth, |_| {})
}

/// Writes `contents` to `path` through a temporary file and a rename, so that a process
/// reloading the file (kube-apiserver) never reads half of it.
fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    write(&tmp, contents);
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

/// The CA of `ca_cert` and `ca_key` (PEM files) as an rcgen issuer.
fn issuer_from_files(ca_cert: &Path, ca_key: &Path) -> Issuer<'static, KeyPair> {
    let ca_pem = fs::read_to_string(ca_cert).unwrap_or_else(|e| panic!("read {}: {e}", ca_cert.display()));
    let ca_key_pem = fs::read_to_string(ca_key).unwrap_or_else(|e| panic!("read {}: {e}", ca_key.display()));
    let key = KeyPair::from_pem(&ca_key_pem).unwrap_or_else(|e| panic!("CA key {}: {e}", ca_key.display()));
    Issuer::from_ca_cert_pem(&ca_pem, key).unwrap_or_else(|e| panic!("CA {}: {e}", ca_cert.display()))
}

/// A kubeconfig that refers to the CA, certificate and key by path.
fn kubeconfig(path: &Path, api: SocketAddr, ca: &Path, user: &str, cert: &Path, key: &Path) {
    let mut text = String::new();
    let _ = write!(
        text,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: https://{api}\n    \
         certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\ncontexts:\n- name: {user}@kubernetes\n  context:\n    cluster: kubernetes\n    \
         user: {user}\ncurrent-context: {user}@kubernetes\n",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    write(path, text);
}

/// Writes a client certificate (common name `cn`, organizations `orgs`) signed by the CA of
/// `ca_cert` and `ca_key` (PEM files) to `crt`, and its key to `key`: an identity for any API
/// server that trusts that CA, the real one or `signer serve` (DATA_DIR/pki/ca.{crt,key}).
/// With `expired`, the certificate expired a day ago.
pub fn write_client_certificate(
    ca_cert: &Path,
    ca_key: &Path,
    cn: &str,
    orgs: &[&str],
    (crt, key): (&Path, &Path),
    expired: bool,
) {
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let adjust = |params: &mut CertificateParams| {
        if expired {
            params.not_before = (now - 2 * day).into();
            params.not_after = (now - day).into();
        }
    };
    let issuer = issuer_from_files(ca_cert, ca_key);
    let pair = leaf(&issuer, cn, orgs, vec![], ExtendedKeyUsagePurpose::ClientAuth, adjust);
    write(crt, &pair.cert);
    write(key, pair.key.serialize_pem());
}

/// kube-apiserver's audit log (`audit.log`, JSON lines) records every write to a CSR's status,
/// where a signer puts the certificate: tests count them.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [update, patch]
  resources: [{group: certificates.k8s.io, resources: [certificatesigningrequests/status]}]
- level: None
";

/// The objects kubeadm creates for node certificates (besides what kube-apiserver bootstraps):
/// the bindings that let bootstrap tokens create node CSRs and have them auto-approved, and let
/// nodes renew their own client certificates.
const KUBEADM_BINDINGS: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'kubeadm:kubelet-bootstrap'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:node-bootstrapper'}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: 'BOOTSTRAP_GROUP'}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'kubeadm:node-autoapprove-bootstrap'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:certificates.k8s.io:certificatesigningrequests:nodeclient'}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: 'BOOTSTRAP_GROUP'}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'kubeadm:node-autoapprove-certificate-rotation'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient'}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: 'system:nodes'}]
";

impl Cluster {
    /// Starts etcd and kube-apiserver in `dir` (created) on free loopback ports, waits until the
    /// API is ready and creates kubeadm's node-certificate bindings; then kube-controller-manager
    /// when `options` asks for it.
    pub fn start(dir: &Path, options: &ClusterOptions) -> Self {
        let bin = binaries().unwrap_or_else(|e| panic!("{e}"));
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).expect("create the cluster directory");
        let path = |name: &str| pki.join(name);

        // PKI as kubeadm lays it out (one CA for the cluster and the kubelet signers).
        let (ca, issuer) = ca();
        write(&path("ca.crt"), &ca.cert);
        write(&path("ca.key"), ca.key.serialize_pem());
        // kube-apiserver verifies client certificates with a file of its own (at first the
        // cluster CA), so that a CA roll can add a root to it without touching `ca.crt`.
        write(&path("client-ca.crt"), &ca.cert);
        let serving = serving_leaf(&issuer);
        let clients = [
            ("admin", "kubernetes-admin", vec!["system:masters"]),
            ("controller-manager", "system:kube-controller-manager", vec![]),
        ];
        write(&path("apiserver.crt"), &serving.cert);
        write(&path("apiserver.key"), serving.key.serialize_pem());
        let sa = KeyPair::generate().expect("generate the service-account key");
        write(&path("sa.key"), sa.serialize_pem());
        write(&path("sa.pub"), sa.public_key_pem());

        let etcd_client = free_local_addr();
        let etcd_peer = free_local_addr();
        let api = free_local_addr();
        for (file, cn, orgs) in &clients {
            let pair = leaf(&issuer, cn, orgs, vec![], ExtendedKeyUsagePurpose::ClientAuth, |_| {});
            let (crt, key) = (path(&format!("{file}.crt")), path(&format!("{file}.key")));
            write(&crt, &pair.cert);
            write(&key, pair.key.serialize_pem());
            kubeconfig(&dir.join(format!("{file}.kubeconfig")), api, &path("ca.crt"), cn, &crt, &key);
        }

        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let audit_policy = dir.join("audit-policy.yaml");
        write(&audit_policy, AUDIT_POLICY);
        let etcd_data = s(dir.join("etcd"));
        let etcd_url = format!("http://{etcd_client}");
        let peer_url = format!("http://{etcd_peer}");
        let etcd = Process::spawn(
            &bin.join("etcd"),
            &[
                "--name=kubecert",
                &format!("--data-dir={etcd_data}"),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=kubecert={peer_url}"),
                "--log-level=warn",
            ],
            &dir.join("etcd.log"),
        );
        let apiserver = Process::spawn(
            &bin.join("kube-apiserver"),
            &[
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={}", api.port()),
                &format!("--tls-cert-file={}", s(path("apiserver.crt"))),
                &format!("--tls-private-key-file={}", s(path("apiserver.key"))),
                &format!("--client-ca-file={}", s(path("client-ca.crt"))),
                "--enable-bootstrap-token-auth=true",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                // ClusterTrustBundles are GA (v1, on by default) in 1.37; v1beta1, which
                // kubecert serves too, is a beta API and off unless asked for.
                &format!(
                    "--runtime-config=certificates.k8s.io/v1beta1/clustertrustbundles={}",
                    options.beta_trust_bundles
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                &format!("--service-account-key-file={}", s(path("sa.pub"))),
                &format!("--service-account-signing-key-file={}", s(path("sa.key"))),
                // Address ranges are configuration only here: nothing routes to them.
                "--service-cluster-ip-range=10.96.0.0/12",
                // The kubernetes Service's endpoints would have to be a non-loopback address.
                "--endpoint-reconciler-type=none",
                &format!("--cert-dir={}", s(pki.clone())),
                &format!("--audit-policy-file={}", s(audit_policy)),
                &format!("--audit-log-path={}", s(dir.join("audit.log"))),
            ],
            &dir.join("kube-apiserver.log"),
        );
        let mut cluster = Self { dir: dir.to_path_buf(), api, processes: vec![etcd, apiserver] };
        cluster.wait_ready();
        let bindings = dir.join("kubeadm-bindings.yaml");
        write(&bindings, KUBEADM_BINDINGS.replace("BOOTSTRAP_GROUP", BOOTSTRAP_GROUP));
        cluster.kubectl(&["apply", "-f", &s(bindings)]);
        if options.controller_manager {
            let kcm = Process::spawn(
                &bin.join("kube-controller-manager"),
                &[
                    &format!("--kubeconfig={}", s(dir.join("controller-manager.kubeconfig"))),
                    "--controllers=csrapproving,csrsigning,csrcleaner",
                    &format!("--cluster-signing-cert-file={}", s(path("ca.crt"))),
                    &format!("--cluster-signing-key-file={}", s(path("ca.key"))),
                    &format!("--cluster-signing-duration={}s", options.signing_duration.as_secs()),
                    "--use-service-account-credentials=true",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    &format!("--secure-port={}", free_local_addr().port()),
                ],
                &dir.join("kube-controller-manager.log"),
            );
            cluster.processes.push(kcm);
        }
        cluster
    }

    /// Waits until kube-apiserver's `/readyz` says ok, failing with the logs when a process exits
    /// or a minute passes.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        let kubectl = crate::kubectl().expect("kubectl is needed to talk to the cluster");
        loop {
            let ready = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(self.admin_kubeconfig())
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|out| out.status.success());
            if ready {
                return;
            }
            for process in &mut self.processes {
                if let Some(status) = process.try_wait() {
                    panic!("a cluster process exited with {status}:\n{}", process.log());
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "kube-apiserver not ready within 120 s:\n{}",
                self.processes[1].log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `admin.kubeconfig` (`kubernetes-admin`, group `system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The cluster CA certificate (`pki/ca.crt`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The cluster CA key (`pki/ca.key`).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("pki/ca.key")
    }

    /// The roots kube-apiserver verifies client certificates with (`--client-ca-file`,
    /// `pki/client-ca.crt`): at start the cluster CA.
    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("pki/client-ca.crt")
    }

    /// Replaces the roots kube-apiserver verifies client certificates with (PEM); it reloads the
    /// file without a restart.
    pub fn set_client_roots(&self, pem: &str) {
        write_atomic(&self.client_ca(), pem);
    }

    /// Re-issues kube-apiserver's serving certificate from the CA of `ca_cert` and `ca_key` (PEM
    /// files), presenting `chain` (PEM certificates, e.g. a cross-certificate to the old root)
    /// after the leaf; kube-apiserver reloads it without a restart.
    pub fn reissue_serving_certificate(&self, ca_cert: &Path, ca_key: &Path, chain: &str) {
        let serving = serving_leaf(&issuer_from_files(ca_cert, ca_key));
        write_atomic(&self.dir.join("pki/apiserver.key"), serving.key.serialize_pem());
        write_atomic(&self.dir.join("pki/apiserver.crt"), format!("{}{chain}", serving.cert));
    }

    /// A copy of `admin.kubeconfig` at `dir/NAME.kubeconfig` that verifies kube-apiserver with
    /// the roots of `ca` (a PEM file) instead of the cluster CA.
    pub fn admin_kubeconfig_trusting(&self, name: &str, ca: &Path) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let (crt, key) = (self.dir.join("pki/admin.crt"), self.dir.join("pki/admin.key"));
        kubeconfig(&path, self.api, ca, "kubernetes-admin", &crt, &key);
        path
    }

    /// Runs `kubectl --kubeconfig admin.kubeconfig ARGS`, failing the test when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let kubectl = crate::kubectl().expect("kubectl is needed to talk to the cluster");
        let admin = self.admin_kubeconfig().to_string_lossy().into_owned();
        let mut all = vec!["--kubeconfig", &admin];
        all.extend_from_slice(args);
        run_ok(&kubectl, &all)
    }

    /// A kubeconfig at `dir/NAME.kubeconfig` for a client certificate with common name `cn` and
    /// organizations `orgs`, signed by the cluster CA.
    pub fn client_kubeconfig(&self, name: &str, cn: &str, orgs: &[&str]) -> PathBuf {
        let (crt, key) = (self.dir.join(format!("pki/{name}.crt")), self.dir.join(format!("pki/{name}.key")));
        write_client_certificate(&self.ca_cert(), &self.ca_key(), cn, orgs, (&crt, &key), false);
        let path = self.dir.join(format!("{name}.kubeconfig"));
        kubeconfig(&path, self.api, &self.ca_cert(), cn, &crt, &key);
        path
    }

    /// `signer token create` against this cluster with kubeadm's node-token group
    /// ([`BOOTSTRAP_GROUP`]), writing the bootstrap kubeconfig `bootstrap`; returns the token.
    pub fn create_token(&self, bootstrap: &Path) -> String {
        create_bootstrap_token(&self.admin_kubeconfig(), bootstrap, &["--groups", BOOTSTRAP_GROUP])
    }

    /// Starts kubecert's `signer controller` against this cluster as `deploy/signer/` runs it:
    /// the RBAC of `deploy/signer/rbac.yaml` applied, the identity of its service account (a
    /// client certificate with that user name), the cluster CA; `extra` flags appended, output
    /// into `log`.
    pub fn signer_controller(&self, extra: &[&str], log: &Path) -> Process {
        let rbac = workspace_root().join("deploy/signer/rbac.yaml");
        self.kubectl(&["apply", "-f", &rbac.to_string_lossy()]);
        let kubeconfig = self.client_kubeconfig(
            "kubecert-signer",
            "system:serviceaccount:kube-system:kubecert-signer",
            &["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        );
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let (kubeconfig, ca_cert, ca_key) = (s(kubeconfig), s(self.ca_cert()), s(self.ca_key()));
        let mut args =
            vec!["controller", "--kubeconfig", &kubeconfig, "--ca-cert", &ca_cert, "--ca-key", &ca_key];
        args.extend_from_slice(extra);
        Process::spawn(&binary("signer"), &args, log)
    }

    /// The ids of the cluster's processes (etcd, kube-apiserver, kube-controller-manager).
    pub fn process_ids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::id).collect()
    }

    /// Leaves the processes running (for `cargo xtask cluster up`) and returns their ids.
    pub fn detach(self) -> Vec<u32> {
        self.processes.into_iter().map(Process::detach).collect()
    }
}
