//! kubecert against the real Kubernetes, both ways (the Go programs of `tests/kubernetes/`, built
//! once per machine; see `kubecert_tests::kubernetes`):
//!
//! - a. kubecert's `node-agent` against the real kube-apiserver and kube-controller-manager;
//! - b. kubecert's `signer controller` (two leader-elected replicas) against the real
//!   kube-apiserver, serving the kubelet's own certificate code and kubecert node agents;
//! - c. the kubelet's own certificate code against `signer serve`;
//! - d. a CA roll by `signer controller` and `signer ca` against the real kube-apiserver, with a
//!   kubecert node agent following the ClusterTrustBundles.
//!
//! Everything listens on 127.0.0.1. Without Go these tests print a notice and check nothing,
//! unless `KUBECERT_REQUIRE_KUBERNETES=1` (CI) makes that a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubecert_csr::parse_certificates_pem;
use kubecert_reload::{KeyExchange, LiveIdentity, negotiated_group};
use kubecert_tests::kubernetes::{BOOTSTRAP_GROUP, Cluster, ClusterOptions, go_or_skip, program};
use kubecert_tests::trust::{assert_bundles_hold, bundles_in_api, pem_blocks};
use kubecert_tests::{
    Process, SignerServe, TempDir, binary, create_bootstrap_token, free_local_addr, kubectl, run_ok,
    start_node_agent,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Serving certificates are approved by kubecert's signer when they name 127.0.0.0/8 and any
/// valid DNS name (the kubelet's code asks for the node's host name).
const SERVING_POLICY: &str = "[policy.signers.\"kubernetes.io/kubelet-serving\"]\nauto_approve = true\n\
                              allowed_ip_cidrs = [\"127.0.0.0/8\"]\nallowed_dns_suffixes = [\".\"]\n";

/// Nodes of the kubelet's own code in scenarios b and c.
const KUBELETS: usize = 20;

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Polls `ready` every 250 ms until it holds; fails with `context()` after `limit`.
fn poll(what: &str, limit: Duration, mut ready: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A certificate as a node used it: serial and public key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    serial: String,
    key: Vec<u8>,
}

/// The certificate of a kubelet-layout `*-current.pem` (certificate and key in one file).
fn current(pki: &Path, kind: &str) -> Option<Seen> {
    let pem = std::fs::read(pki.join(format!("kubelet-{kind}-current.pem"))).ok()?;
    let cert = parse_certificates_pem(&pem).ok()?.into_iter().next()?;
    Some(Seen { serial: cert.serial_hex, key: cert.public_key.spki_der })
}

/// `openssl verify -CAfile ca` of every `kubelet-*.pem` under `root` (the stores keep each
/// issued certificate in a file of its own); returns how many were verified.
fn openssl_verify_all(ca: &Path, root: &Path) -> usize {
    let mut files = vec![];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if name.starts_with("kubelet-")
                && name.ends_with(".pem")
                && !name.ends_with("-current.pem")
            {
                files.push(path);
            }
        }
    }
    for file in &files {
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", s(ca), s(file)])
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl verify {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    files.len()
}

/// What `kubelet-certs` printed: per node and certificate kind, the certificates in the order
/// the kubelet's managers started using them.
fn kubelet_events(log: &str) -> BTreeMap<(String, String), Vec<Seen>> {
    let mut seen: BTreeMap<(String, String), Vec<Seen>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let kind = event["event"].as_str().unwrap_or_default();
        if let Some(kind) = kind.strip_suffix("-certificate") {
            let node = event["node"].as_str().unwrap_or_default().to_owned();
            let serial = event["serial"].as_str().unwrap_or_default().to_owned();
            let key = event["publicKeySha256"].as_str().unwrap_or_default().as_bytes().to_vec();
            seen.entry((node, kind.to_owned())).or_default().push(Seen { serial, key });
        }
    }
    seen
}

/// Starts [`KUBELETS`] nodes of the kubelet's own certificate code (`kubelet-1` …) with client
/// and serving certificates, in `dir/kubelets`, output into `dir/kubelet-certs.log`.
fn start_kubelets(dir: &Path, bootstrap: &Path) -> Process {
    let count = KUBELETS.to_string();
    let nodes = dir.join("kubelets");
    let args = [
        "nodes",
        "-count",
        &count,
        "-prefix",
        "kubelet-",
        "-dir",
        s(&nodes),
        "-bootstrap-kubeconfig",
        s(bootstrap),
        "-serving",
    ];
    Process::spawn(&program("kubelet-certs"), &args, &dir.join("kubelet-certs.log"))
}

/// How many of the kubelets have a serving certificate and a client certificate rotated
/// `rotations` times, each time with a new key.
fn kubelets_done(log: &str, rotations: usize) -> usize {
    let events = kubelet_events(log);
    (1..=KUBELETS)
        .filter(|i| {
            let node = format!("kubelet-{i}");
            let client = events.get(&(node.clone(), "client".into())).map_or(0, |certs| distinct_keys(certs));
            let serving = events.get(&(node, "serving".into())).map_or(0, Vec::len);
            client > rotations && serving > 0
        })
        .count()
}

fn distinct_keys(certs: &[Seen]) -> usize {
    certs.iter().map(|c| &c.key).collect::<BTreeSet<_>>().len()
}

/// The current certificates of a kubecert node agent's cert dir, as they change.
struct AgentWatch {
    pki: PathBuf,
    client: Vec<Seen>,
}

impl AgentWatch {
    fn new(node_dir: &Path) -> Self {
        Self { pki: node_dir.join("pki"), client: vec![] }
    }

    fn observe(&mut self) {
        if let Some(now) = current(&self.pki, "client")
            && self.client.last() != Some(&now)
        {
            self.client.push(now);
        }
    }
}

/// The key-exchange group kubecert's client side negotiates with the cluster's kube-apiserver
/// when it offers only X25519MLKEM768 (`--tls-key-exchange pq-required`).
fn post_quantum_handshake(cluster: &Cluster) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cluster.ca_cert()).expect("the cluster CA") {
        roots.add(cert.expect("a CA certificate")).expect("trust the cluster CA");
    }
    let config = LiveIdentity::empty().client_config(roots, KeyExchange::PqRequired).expect("client config");
    let name = cluster.api.ip().into();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut tcp = TcpStream::connect(cluster.api).expect("connect to kube-apiserver");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).expect("kube-apiserver completes an X25519MLKEM768 handshake");
    }
    negotiated_group(&connection).to_owned()
}

/// a. kubecert `node-agent` against the real kube-apiserver and kube-controller-manager (its CSR
/// controllers, 60-second certificates backdated five minutes as KCM does): bootstrap, two
/// rotations with new keys, a serving certificate approved with kubectl, and the agent's
/// kubeconfig authenticates as `system:node:NAME`.
#[test]
fn node_agent_against_kube_apiserver_and_kube_controller_manager() {
    if !go_or_skip() {
        return;
    }
    let Some(kubectl) = kubectl() else { return };
    let dir = TempDir::new("k8s-node-agent");
    let options = ClusterOptions {
        controller_manager: true,
        signing_duration: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(&dir.path().join("cluster"), &options);
    // Issue 15: Go 1.24+ speaks the hybrid post-quantum key exchange with kubecert's client.
    assert_eq!(post_quantum_handshake(&cluster), "X25519MLKEM768");
    let node = dir.path().join("node");
    std::fs::create_dir_all(&node).expect("node dir");
    cluster.create_token(&node.join("bootstrap.kubeconfig"));
    let name = "kc-node-a";
    let agent = start_node_agent(
        &node,
        name,
        free_local_addr(),
        &["--rotate-server-certificates", "--node-ip", "127.0.0.1"],
        &dir.path().join("agent.log"),
    );

    let mut watch = AgentWatch::new(&node);
    poll(
        "bootstrap and two client rotations against KCM",
        Duration::from_secs(300),
        || {
            watch.observe();
            distinct_keys(&watch.client) >= 3
        },
        || agent.log(),
    );
    let serials: BTreeSet<_> = watch.client.iter().map(|c| &c.serial).collect();
    assert_eq!(serials.len(), watch.client.len(), "every rotation brought a new serial");

    // The serving CSR waits for a person, as upstream: approve it with kubectl.
    let serving_csr = || {
        cluster
            .kubectl(&["get", "csr", "-o", "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name}{\"\\n\"}{end}"])
            .lines()
            .next()
            .map(str::to_owned)
    };
    poll(
        "a kubelet-serving CSR from the agent",
        Duration::from_secs(60),
        || serving_csr().is_some(),
        || agent.log(),
    );
    let csr = serving_csr().expect("serving CSR");
    cluster.kubectl(&["certificate", "approve", &csr]);
    poll(
        "the serving certificate signed by KCM",
        Duration::from_secs(60),
        || current(&node.join("pki"), "server").is_some(),
        || agent.log(),
    );

    let whoami = run_ok(
        &kubectl,
        &[
            "--kubeconfig",
            s(&node.join("kubelet.conf")),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(whoami, format!("system:node:{name}"));
    assert!(openssl_verify_all(&cluster.ca_cert(), &node) >= 4, "client and serving certificates on disk");
    drop(agent);
}

/// The leader's identity as the Lease names it.
fn lease_holder(cluster: &Cluster) -> String {
    cluster.kubectl(&[
        "get",
        "lease",
        "kubecert-signer",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

/// b. kubecert `signer controller`, two replicas with leader election, against the real
/// kube-apiserver without KCM's CSR controllers: 20 nodes of the kubelet's own certificate code and
/// two kubecert node agents bootstrap and rotate; the leader is killed mid-run; no CSR is signed
/// twice (kube-apiserver's audit log); every certificate verifies with openssl; a denied CSR is
/// seen as denied by client-go.
#[test]
fn signer_controller_against_kube_apiserver_serves_the_kubelets_code_and_node_agents() {
    if !go_or_skip() {
        return;
    }
    let Some(_) = kubectl() else { return };
    let dir = TempDir::new("k8s-signer");
    let cluster = Cluster::start(&dir.path().join("cluster"), &ClusterOptions::default());
    let config = dir.path().join("signer.toml");
    std::fs::write(&config, format!("lease_duration = \"6s\"\n{SERVING_POLICY}")).expect("write signer.toml");
    let replica = |i: usize| {
        let flags = [
            "--leader-elect",
            "--config",
            s(&config),
            "--cluster-signing-duration",
            "60s",
            "--backdate",
            "0s",
        ];
        cluster.signer_controller(&flags, &dir.path().join(format!("signer-{i}.log")))
    };
    let mut replicas = [replica(1), replica(2)];

    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    cluster.create_token(&bootstrap);
    let kubelets = start_kubelets(dir.path(), &bootstrap);
    let agents: Vec<(PathBuf, Process)> = (1..=2)
        .map(|i| {
            let node = dir.path().join(format!("kc-node-{i}"));
            std::fs::create_dir_all(&node).expect("node dir");
            std::fs::copy(&bootstrap, node.join("bootstrap.kubeconfig")).expect("copy bootstrap kubeconfig");
            let agent = start_node_agent(
                &node,
                &format!("kc-node-{i}"),
                free_local_addr(),
                &["--rotate-server-certificates", "--node-ip", "127.0.0.1"],
                &dir.path().join(format!("agent-{i}.log")),
            );
            (node, agent)
        })
        .collect();
    let context = || format!("{}\n{}\n{}", kubelets.log(), replicas[0].log(), replicas[1].log());

    poll(
        "every kubelet bootstrapped with both certificates",
        Duration::from_secs(120),
        || kubelets_done(&kubelets.log(), 0) == KUBELETS,
        context,
    );
    let mut watches: Vec<AgentWatch> = agents.iter().map(|(node, _)| AgentWatch::new(node)).collect();
    poll(
        "both node agents bootstrapped",
        Duration::from_secs(60),
        || {
            watches.iter_mut().all(|w| {
                w.observe();
                !w.client.is_empty()
            })
        },
        context,
    );

    // Kill the leader in the middle of the rotations (a few kubelets have rotated, the others'
    // requests are on their way); the other replica takes over and everyone rotates.
    poll(
        "the first kubelets rotated",
        Duration::from_secs(120),
        || kubelets_done(&kubelets.log(), 1) >= 3,
        context,
    );
    let holder = lease_holder(&cluster);
    let leader = replicas
        .iter()
        .position(|r| r.log().contains(&holder))
        .unwrap_or_else(|| panic!("no replica logged the Lease holder {holder:?}:\n{}", context()));
    replicas[leader].kill();
    let killed_at = Instant::now();
    let rotated_before_kill = kubelets_done(&kubelets.log(), 1);
    poll(
        "every kubelet rotated its client certificate",
        Duration::from_secs(180),
        || kubelets_done(&kubelets.log(), 1) == KUBELETS,
        || replicas[1 - leader].log(),
    );
    assert!(rotated_before_kill < KUBELETS, "the leader was killed before every kubelet had rotated");
    poll(
        "both node agents rotated",
        Duration::from_secs(120),
        || {
            watches.iter_mut().all(|w| {
                w.observe();
                distinct_keys(&w.client) >= 2
            })
        },
        || replicas[1 - leader].log(),
    );
    assert_ne!(lease_holder(&cluster), holder, "the surviving replica holds the Lease");
    eprintln!(
        "leader killed after {rotated_before_kill} of {KUBELETS} kubelets rotated; all rotated {:.0?} later",
        killed_at.elapsed()
    );

    // A serving request from a bootstrap token is no node's: denied, and client-go says so.
    let out = Command::new(program("kubelet-certs"))
        .args([
            "request",
            "-kubeconfig",
            s(&bootstrap),
            "-signer",
            "kubernetes.io/kubelet-serving",
            "-cn",
            "system:node:intruder",
            "-org",
            "system:nodes",
            "-dns",
            "intruder",
            "-usages",
            "digital signature,server auth",
            "-timeout",
            "60s",
        ])
        .output()
        .expect("run kubelet-certs request");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "denied: {printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("is denied"), "{printed}");

    // No CSR signed twice: at most one successful status update each, across both replicas.
    let audit = std::fs::read_to_string(cluster.dir.join("audit.log")).expect("read the audit log");
    let mut signed: BTreeMap<String, usize> = BTreeMap::new();
    for event in audit.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let ok = event["responseStatus"]["code"].as_i64() == Some(200);
        if ok && event["verb"] == "update" && event["objectRef"]["subresource"] == "status" {
            *signed.entry(event["objectRef"]["name"].as_str().unwrap_or_default().to_owned()).or_default() +=
                1;
        }
    }
    let twice: Vec<_> = signed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "CSRs whose status was written more than once: {twice:?}");
    assert!(signed.len() >= KUBELETS * 3, "status writes seen in the audit log: {}", signed.len());

    let verified = openssl_verify_all(&cluster.ca_cert(), dir.path());
    assert!(verified >= KUBELETS * 3 + 4, "certificates verified with openssl: {verified}");
    drop((kubelets, agents));
}

/// c. the kubelet's own certificate code against `signer serve`, unchanged: 20 nodes bootstrap,
/// get serving certificates and rotate their client certificates with new keys.
#[test]
fn the_kubelets_certificate_code_against_signer_serve() {
    if !go_or_skip() {
        return;
    }
    let dir = TempDir::new("k8s-kubelets-serve");
    let config = dir.path().join("signer.toml");
    std::fs::write(&config, SERVING_POLICY).expect("write signer.toml");
    let signer = SignerServe::start(
        &dir.path().join("signer"),
        &["--cluster-signing-duration", "60s", "--backdate", "0s", "--config", s(&config)],
    );
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    create_bootstrap_token(&signer.admin_kubeconfig(), &bootstrap, &["--groups", BOOTSTRAP_GROUP]);
    let kubelets = start_kubelets(dir.path(), &bootstrap);
    poll(
        "every kubelet rotated its client certificate",
        Duration::from_secs(180),
        || kubelets_done(&kubelets.log(), 1) == KUBELETS,
        || format!("{}\n{}", kubelets.log(), signer.process.log()),
    );
    let verified = openssl_verify_all(&signer.ca_cert(), dir.path());
    assert!(verified >= KUBELETS * 3, "certificates verified with openssl: {verified}");
}

/// d. A CA roll by hand (`signer ca prepare|publish|activate|retire`) with `signer controller`
/// (`--ca-state-dir`, generation 1 imported from the cluster CA, 60-second certificates)
/// against the real kube-apiserver, with a kubecert node agent following the signer-linked
/// ClusterTrustBundles (`--trust-source bundles --client-ca-file`), with kube-apiserver serving
/// them in `certificates.k8s.io/v1` only (v1beta1 off), so both use v1:
///
/// - after publish, kubectl lists every signer-linked canary and live bundle with both roots, and
///   the node's client CA file holds both;
/// - after activate, the node's next client certificate is leaf + cross-certificate, and
///   kube-apiserver, whose `--client-ca-file` still holds only the old root, accepts it (the
///   chain the client presents gets it to the old root): `kubectl auth whoami` with the node's
///   kubeconfig says `system:node:NAME`;
/// - after retire, the bundles and the node's client CA file hold only the new root.
///
/// What kube-apiserver needs from whoever runs it, as a kubeadm cluster rolling its CA would do:
/// its serving certificate re-issued by the new generation before retire (presented with the
/// cross-certificate, so clients that trust only the old root still verify it; the node trusts
/// only the new root after retire), and, for certificates issued after retire (leaf only, no
/// cross-certificate), the new root in its `--client-ca-file`. The harness writes both files,
/// which kube-apiserver reloads without a restart, and a node request with a certificate issued
/// after retire succeeds.
#[test]
fn a_ca_roll_by_signer_controller_against_kube_apiserver() {
    if !go_or_skip() {
        return;
    }
    let Some(kubectl) = kubectl() else { return };
    let dir = TempDir::new("k8s-ca-roll");
    // Only v1 ClusterTrustBundles: the signer and the node agent use the version served.
    let options = ClusterOptions { beta_trust_bundles: false, ..ClusterOptions::default() };
    let cluster = Cluster::start(&dir.path().join("cluster"), &options);
    let config = dir.path().join("signer.toml");
    std::fs::write(&config, "ca_reload_interval = \"1s\"\n").expect("write signer.toml");
    let state = dir.path().join("ca-state");
    let signer = cluster.signer_controller(
        &[
            "--config",
            s(&config),
            "--ca-state-dir",
            s(&state),
            "--cluster-signing-duration",
            "60s",
            "--backdate",
            "0s",
        ],
        &dir.path().join("signer.log"),
    );
    // `signer ca` writes the bundles as the controller's service account (verb attest).
    let (ca_cert, ca_key) = (cluster.ca_cert(), cluster.ca_key());
    let identity = cluster.dir.join("kubecert-signer.kubeconfig");
    let ca_flags = [
        "--ca-state-dir",
        s(&state),
        "--ca-cert",
        s(&ca_cert),
        "--ca-key",
        s(&ca_key),
        "--kubeconfig",
        s(&identity),
    ];
    let signer_ca = |args: &[&str]| {
        Command::new(binary("signer")).arg("ca").args(args).args(ca_flags).output().expect("run signer ca")
    };
    let ca_ok = |args: &[&str]| {
        let out = signer_ca(args);
        assert!(out.status.success(), "signer ca {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };

    let node = dir.path().join("node");
    std::fs::create_dir_all(&node).expect("node dir");
    cluster.create_token(&node.join("bootstrap.kubeconfig"));
    let client_ca = node.join("client-ca.crt");
    let name = "kc-roll-node";
    let agent = start_node_agent(
        &node,
        name,
        free_local_addr(),
        &["--trust-source", "bundles", "--client-ca-file", s(&client_ca)],
        &dir.path().join("agent.log"),
    );
    let context = || format!("{}\n{}", agent.log(), signer.log());
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let current = node.join("pki/kubelet-client-current.pem");
    let whoami = || {
        Command::new(&kubectl)
            .args(["--kubeconfig", s(&node.join("kubelet.conf")), "auth", "whoami"])
            .args(["-o", "jsonpath={.status.userInfo.username}"])
            .output()
            .expect("run kubectl")
    };
    let node_user = format!("system:node:{name}");
    let node_works = || {
        let out = whoami();
        out.status.success() && String::from_utf8_lossy(&out.stdout) == node_user
    };
    poll("the node's first certificate", Duration::from_secs(60), || current.exists(), context);
    let old_root = read(&state.join("1/ca.crt"));
    poll("the node's kubeconfig to work", Duration::from_secs(30), node_works, context);

    ca_ok(&["prepare", "--ca-lifetime", "3600s"]);
    ca_ok(&["publish"]);
    let (new_root, cross) = (read(&state.join("2/ca.crt")), read(&state.join("2/cross.crt")));
    let both = format!("{old_root}{new_root}");
    assert_bundles_hold(&bundles_in_api(&kubectl, &cluster.admin_kubeconfig()), &both);
    poll("the node to trust both roots", Duration::from_secs(30), || read(&client_ca) == both, context);

    ca_ok(&["activate", "--ca-min-publish-age", "0s"]);
    // kube-apiserver serves with a certificate of generation 2 + cross-certificate: clients of
    // either root verify it.
    cluster.reissue_serving_certificate(&state.join("2/ca.crt"), &state.join("2/ca.key"), &cross);
    let new_root_only = cluster.admin_kubeconfig_trusting("admin-new-root", &state.join("2/ca.crt"));
    let kubectl_works = |kubeconfig: &Path| {
        Command::new(&kubectl)
            .args(["--kubeconfig", s(kubeconfig), "get", "--raw", "/readyz"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    poll(
        "kube-apiserver to serve a certificate of generation 2",
        Duration::from_secs(90),
        || kubectl_works(&new_root_only),
        || cluster.processes[1].log(),
    );
    assert!(kubectl_works(&cluster.admin_kubeconfig()), "a client of the old root verifies it too");

    let blocks = || pem_blocks(&read(&current), "CERTIFICATE");
    poll(
        "a client certificate from generation 2, with the cross-certificate",
        Duration::from_secs(90),
        || blocks().get(1) == Some(&cross),
        context,
    );
    assert_eq!(
        read(&cluster.client_ca()),
        read(&cluster.ca_cert()),
        "kube-apiserver trusts the old root only"
    );
    let out = whoami();
    assert!(
        out.status.success(),
        "leaf + cross-certificate accepted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), node_user);
    let crossed_leaf = blocks()[0].clone();

    // Retire is refused until generation 1's last leaf (60 seconds) has expired.
    poll(
        "generation 1 to retire",
        Duration::from_secs(90),
        || {
            let out = signer_ca(&["retire"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() || stderr.contains("retire refused"), "retire: {stderr}");
            out.status.success()
        },
        context,
    );
    assert_bundles_hold(&bundles_in_api(&kubectl, &cluster.admin_kubeconfig()), &new_root);
    poll(
        "the node to trust only the new root",
        Duration::from_secs(30),
        || read(&client_ca) == new_root,
        context,
    );
    // Leaves from now on come without the cross-certificate: kube-apiserver gets the new root.
    cluster.set_client_roots(&format!("{}{new_root}", read(&cluster.ca_cert())));
    poll(
        "a client certificate issued after retire (leaf only)",
        Duration::from_secs(90),
        || {
            let now = blocks();
            now.len() == 1 && now[0] != crossed_leaf
        },
        context,
    );
    poll("a node request with it to succeed", Duration::from_secs(90), node_works, || {
        format!("{}\n{}", String::from_utf8_lossy(&whoami().stderr), cluster.processes[1].log())
    });
    drop(agent);
}
