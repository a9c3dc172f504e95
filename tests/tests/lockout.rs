//! Nodes never stay locked out (issue 14), end to end: the built `node-agent` against the built
//! `signer serve` with rehearsal lifetimes.
//!
//! - an expired client certificate at start with a valid bootstrap kubeconfig: re-bootstrap with
//!   a new key (kubelet parity);
//! - a running agent past expiry follows SPEC T-3 (exits only while the API answers);
//! - an agent off past its certificate's expiry *and* its bootstrap token's lifetime recovers with
//!   the expired certificate's key (`--recovery-max-expired`): new key, same identity, recorded;
//! - a refused recovery (deny-listed serial) is logged with its reason, the agent reports not
//!   ready and writes RECOVERY-NEEDED, and the command the file names fixes it; outside the
//!   window (and without a bootstrap kubeconfig) it is refused, and then rate limited;
//! - the renewal canary passes every 5 s without touching the live certificate or leaving CSRs,
//!   and fails at the approve stage under a deny-all policy.
//!
//! Lifetimes: the recovery test runs the scenario as written: 60 s certificates, a 30 s
//! token and 150 s off; when the agent comes back, its certificate has expired and the token too
//! (checked with kubectl: the token is refused). The other tests only need a certificate to
//! expire, so they use 20 s certificates and 10 s tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use kubecert_csr::{Certificate, parse_certificates_pem};
use kubecert_tests::{
    Process, SignerServe, TempDir, binary, create_bootstrap_token, free_local_addr, http_get, kubectl,
    run_ok, start_node_agent, wait_for,
};

/// Certificate lifetime of the tests that only need one to expire.
const LIFETIME: &str = "20s";
/// Bootstrap token lifetime of those tests.
const TOKEN_TTL: &str = "10s";
/// The recovery scenario of the issue: certificate lifetime, token lifetime, time off.
const RECOVERY_LIFETIME: &str = "60s";
const RECOVERY_TOKEN_TTL: &str = "30s";
const RECOVERY_OFF: Duration = Duration::from_secs(150);

/// One test's files and its signer.
struct Lockout {
    dir: TempDir,
    name: String,
    metrics: std::net::SocketAddr,
    signer: SignerServe,
}

impl Lockout {
    /// `signer serve` with short certificates and `extra` flags, and a bootstrap token of `ttl`.
    fn new(name: &str, extra: &[&str], ttl: &str) -> Self {
        Self::with_lifetime(name, LIFETIME, extra, ttl)
    }

    /// [`Lockout::new`] with certificates of `lifetime`.
    fn with_lifetime(name: &str, lifetime: &str, extra: &[&str], ttl: &str) -> Self {
        let dir = TempDir::new(name);
        let mut args = vec!["--cluster-signing-duration", lifetime, "--backdate", "0s"];
        args.extend_from_slice(extra);
        let signer = SignerServe::start(&dir.path().join("signer"), &args);
        let node = Self { dir, name: name.to_owned(), metrics: free_local_addr(), signer };
        node.new_token(ttl);
        node
    }

    /// A new bootstrap token, written to the node's bootstrap kubeconfig (what an operator does).
    fn new_token(&self, ttl: &str) {
        create_bootstrap_token(
            &self.signer.admin_kubeconfig(),
            &self.path("bootstrap.kubeconfig"),
            &["--ttl", ttl],
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn agent(&self, run: u32, extra: &[&str]) -> Process {
        start_node_agent(
            self.dir.path(),
            &self.name,
            self.metrics,
            extra,
            &self.path(&format!("agent-{run}.log")),
        )
    }

    /// Runs the agent until it has bootstrapped (certificate stored, kubeconfig written), then
    /// kills it; returns its certificate.
    fn bootstrap_then_stop(&self, limit: Duration) -> Certificate {
        let mut first = self.agent(1, &[]);
        let leaf = self.wait_for_new_leaf(None, limit);
        wait_for("the kubeconfig", limit, || self.path("kubelet.conf").exists());
        first.kill();
        leaf
    }

    /// The leaf of the current client pair, if there is one.
    fn leaf(&self) -> Option<Certificate> {
        let pem = std::fs::read(self.path("pki/kubelet-client-current.pem")).ok()?;
        parse_certificates_pem(&pem).ok()?.into_iter().next()
    }

    /// Waits for a client certificate other than `old`; returns it.
    fn wait_for_new_leaf(&self, old: Option<&Certificate>, limit: Duration) -> Certificate {
        wait_for("a new client certificate", limit, || {
            self.leaf().is_some_and(|leaf| Some(&leaf.serial_hex) != old.map(|o| &o.serial_hex))
        });
        self.leaf().expect("a client certificate")
    }

    fn recovery_needed(&self) -> Option<String> {
        std::fs::read_to_string(self.path("pki/RECOVERY-NEEDED")).ok()
    }

    fn healthz(&self) -> String {
        http_get(self.metrics, "/healthz")
    }
}

fn str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Sleeps until `leaf` has expired (plus a second).
fn sleep_past_expiry(leaf: &Certificate) {
    let left = leaf.not_after.duration_since(SystemTime::now()).unwrap_or_default();
    std::thread::sleep(left + Duration::from_secs(1));
}

fn assert_node_identity(leaf: &Certificate, node: &str) {
    assert_eq!(leaf.subject.common_name.as_deref(), Some(format!("system:node:{node}").as_str()));
    assert_eq!(leaf.subject.organizations, ["system:nodes"]);
    assert!(!leaf.is_expired_at(SystemTime::now()), "{leaf:?}");
}

/// Asserts that `kubectl get csr` with the bootstrap kubeconfig is refused with 401.
fn assert_token_refused(kubectl: &Path, bootstrap: &Path) {
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig", str(bootstrap), "get", "csr"])
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("You must be logged in"),
        "the token has expired too: {stderr}"
    );
}

fn assert_running(agent: &mut Process) {
    if let Some(status) = agent.try_wait() {
        panic!("node-agent exited with {status}:\n{}", agent.log());
    }
}

#[test]
fn an_expired_certificate_at_start_rebootstraps_with_a_new_key() {
    let node = Lockout::new("lockout-rebootstrap", &[], "1h");
    let old = node.bootstrap_then_stop(Duration::from_secs(30));
    sleep_past_expiry(&old);

    let mut second = node.agent(2, &[]);
    let new = node.wait_for_new_leaf(Some(&old), Duration::from_secs(10));
    assert_node_identity(&new, &node.name);
    assert_ne!(new.public_key, old.public_key, "re-bootstrap with a new key");
    let log = second.log();
    assert!(log.contains("no valid client certificate in the kubeconfig; bootstrapping"), "{log}");
    assert_running(&mut second);

    let Some(kubectl) = kubectl() else { return };
    let admin = node.signer.admin_kubeconfig();
    let requestors = run_ok(
        &kubectl,
        &["--kubeconfig", str(&admin), "get", "csr", "-o", "jsonpath={.items[*].spec.username}"],
    );
    let bootstraps = requestors.split_whitespace().filter(|u| u.starts_with("system:bootstrap:")).count();
    assert_eq!(bootstraps, 2, "two bootstrap requests, with two keys: {requestors}");
}

#[test]
fn a_running_agent_past_expiry_exits_only_while_the_api_answers() {
    let mut node = Lockout::new("lockout-t3", &[], TOKEN_TTL);
    let mut agent = node.agent(1, &["--exit-after-expired", "5s"]);
    let leaf = node.wait_for_new_leaf(None, Duration::from_secs(10));
    let (data_dir, addr) = (node.signer.data_dir.clone(), node.signer.addr);
    node.signer.process.kill();

    // Past expiry + the limit with the API unreachable: an error, no exit (SPEC T-3).
    sleep_past_expiry(&leaf);
    std::thread::sleep(Duration::from_secs(8));
    assert_running(&mut agent);
    assert!(
        agent.log().contains("not exiting because the API server is not known to be reachable"),
        "{}",
        agent.log()
    );
    assert!(node.healthz().starts_with("HTTP/1.0 503"), "not ready without a valid certificate");

    // The API answers again (401: the certificate and the token have expired): exit.
    node.signer =
        SignerServe::start_at(&data_dir, addr, &["--cluster-signing-duration", LIFETIME, "--backdate", "0s"]);
    wait_for("the agent exits", Duration::from_secs(60), || agent.try_wait().is_some());
    let status = agent.try_wait().expect("exited");
    assert!(!status.success(), "{status}");
    assert!(
        agent.log().contains("while the API server answers; exiting so that a restart bootstraps again"),
        "{}",
        agent.log()
    );
}

#[test]
fn an_agent_off_past_expiry_and_its_token_recovers_with_a_new_key() {
    let node = Lockout::with_lifetime(
        "lockout-recover",
        RECOVERY_LIFETIME,
        &["--recovery-max-expired", "1h"],
        RECOVERY_TOKEN_TTL,
    );
    let old = node.bootstrap_then_stop(Duration::from_secs(10));
    let off = Instant::now();
    std::thread::sleep(RECOVERY_OFF);
    assert!(old.is_expired_at(SystemTime::now()));
    let kubectl = kubectl();
    if let Some(kubectl) = &kubectl {
        assert_token_refused(kubectl, &node.path("bootstrap.kubeconfig"));
    }

    let mut second = node.agent(2, &[]);
    let restarted = Instant::now();
    let new = node.wait_for_new_leaf(Some(&old), Duration::from_secs(10));
    eprintln!("off for {:?}; certificate {:?} after the restart", restarted - off, restarted.elapsed());
    assert_node_identity(&new, &node.name);
    assert_ne!(new.public_key, old.public_key, "a new key");
    let log = second.log();
    assert!(log.contains("bootstrap: 401"), "bootstrap was tried first and refused:\n{log}");
    assert!(log.contains("recovered with the expired certificate's key"), "{log}");
    assert!(node.recovery_needed().is_none());
    let (code, _) = status(&node);
    assert_eq!(code, 0);
    assert_running(&mut second);

    // Recorded: a CSR by the node, marked with the old serial, holding the new certificate.
    let Some(kubectl) = kubectl else { return };
    let admin = node.signer.admin_kubeconfig();
    let jsonpath = "jsonpath={range .items[*]}{.metadata.annotations.kubecert\\.io/recovered-from-serial} {.spec.username} {.status.certificate}{\"\\n\"}{end}";
    let rows = run_ok(&kubectl, &["--kubeconfig", str(&admin), "get", "csr", "-o", jsonpath]);
    let recovered: Vec<&str> = rows.lines().filter(|l| l.starts_with(&old.serial_hex)).collect();
    assert_eq!(recovered.len(), 1, "{rows}");
    let fields: Vec<&str> = recovered[0].split_whitespace().collect();
    assert_eq!(fields[1], format!("system:node:{}", node.name));
    let issued = base64_decode(fields[2]);
    assert_eq!(parse_certificates_pem(&issued).expect("a certificate")[0].serial_hex, new.serial_hex);
}

#[test]
fn a_denied_serial_is_refused_with_its_reason_until_an_operator_gives_a_new_token() {
    let node = Lockout::new("lockout-denied", &["--recovery-max-expired", "1h"], TOKEN_TTL);
    let old = node.bootstrap_then_stop(Duration::from_secs(10));
    let data_dir = str(&node.signer.data_dir).to_owned();
    let said =
        run_ok(&binary("signer"), &["deny-serial", &old.serial_hex.to_uppercase(), "--data-dir", &data_dir]);
    assert!(said.contains(old.serial_hex.trim_start_matches('0')), "{said}");
    sleep_past_expiry(&old);

    let mut second = node.agent(2, &[]);
    wait_for("RECOVERY-NEEDED", Duration::from_secs(10), || node.recovery_needed().is_some());
    let log = second.log();
    assert!(log.contains("RecoverySerialDenied"), "the reason is logged:\n{log}");
    let notice = node.recovery_needed().expect("the notice");
    assert!(notice.contains("RecoverySerialDenied") && notice.contains("bootstrap: 401"), "{notice}");
    assert!(
        notice.contains("signer token create --kubeconfig ADMIN_KUBECONFIG --write-bootstrap-kubeconfig"),
        "{notice}"
    );
    assert!(notice.contains(str(&node.path("bootstrap.kubeconfig"))), "{notice}");
    assert!(node.healthz().starts_with("HTTP/1.0 503"), "not ready");
    assert_running(&mut second);

    // The fix the file names: a new token in the bootstrap kubeconfig, picked up on a retry.
    node.new_token("1h");
    let new = node.wait_for_new_leaf(Some(&old), Duration::from_secs(40));
    assert_node_identity(&new, &node.name);
    assert_ne!(new.public_key, old.public_key);
    wait_for("the notice is deleted", Duration::from_secs(5), || node.recovery_needed().is_none());
    wait_for("ready", Duration::from_secs(5), || node.healthz().starts_with("HTTP/1.0 200"));
    assert_running(&mut second);
}

/// `node-agent status` of the node's cert dir: (exit code, output).
fn status(node: &Lockout) -> (i32, String) {
    let out = std::process::Command::new(binary("node-agent"))
        .args(["status", "--cert-dir", str(&node.path("pki"))])
        .output()
        .expect("run node-agent status");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

#[test]
fn recovery_outside_its_window_is_refused_then_rate_limited() {
    let node = Lockout::new("lockout-window", &["--recovery-max-expired", "2s"], "1h");
    let old = node.bootstrap_then_stop(Duration::from_secs(30));
    // As kubeadm leaves a node: no bootstrap kubeconfig any more.
    std::fs::remove_file(node.path("bootstrap.kubeconfig")).expect("delete the bootstrap kubeconfig");
    sleep_past_expiry(&old);
    std::thread::sleep(Duration::from_secs(3));

    let mut agent = node.agent(2, &[]);
    wait_for("RECOVERY-NEEDED", Duration::from_secs(10), || node.recovery_needed().is_some());
    let notice = node.recovery_needed().expect("the notice");
    assert!(
        notice.contains("RecoveryWindowExceeded") && notice.contains("recovery window of 2 s"),
        "{notice}"
    );
    assert!(
        notice.contains("reading bootstrap kubeconfig"),
        "the missing bootstrap kubeconfig is named:\n{notice}"
    );
    // Attempts at 0, 2, 6, 14, 30 s (each backoff stretched by up to 10 %), then 62 s: the sixth
    // in ten minutes is over the signer's limit of five.
    wait_for("the rate limit", Duration::from_secs(80), || agent.log().contains("RecoveryRateLimited"));
    assert!(node.healthz().starts_with("HTTP/1.0 503"), "not ready");
    assert_eq!(node.leaf().map(|l| l.serial_hex), Some(old.serial_hex), "nothing was issued");
    assert_running(&mut agent);
}

/// A value of an OpenMetrics sample line (`name{labels} value`), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Canary CSRs in the API (by their annotation).
fn canary_csrs(kubectl: &Path, admin: &Path) -> usize {
    let jsonpath = "jsonpath={range .items[*]}{.metadata.annotations.kubecert\\.io/canary}{\"\\n\"}{end}";
    run_ok(kubectl, &["--kubeconfig", str(admin), "get", "csr", "-o", jsonpath])
        .lines()
        .filter(|l| *l == "true")
        .count()
}

fn canary_once(node: &Lockout) -> (i32, String) {
    let kubeconfig = node.path("kubelet.conf");
    let out = std::process::Command::new(binary("node-agent"))
        .args(["canary", "--once", "--json", "--kubeconfig", str(&kubeconfig)])
        .output()
        .expect("run node-agent canary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_canary_passes_every_5_s_without_touching_the_live_certificate() {
    let signer_metrics = free_local_addr().to_string();
    let node = Lockout::with_lifetime("lockout-canary", "24h", &["--metrics-addr", &signer_metrics], "1h");
    let mut agent = node.agent(1, &["--canary-interval", "5s"]);
    let live = node.wait_for_new_leaf(None, Duration::from_secs(30));
    let live_pem = std::fs::read(node.path("pki/kubelet-client-current.pem")).expect("the live pair");
    std::thread::sleep(Duration::from_secs(30));

    let metrics = http_get(node.metrics, "/metrics");
    let successes = sample(&metrics, "kubecert_node_canary_successes_total").unwrap_or_default();
    eprintln!("canary runs passed in 30 s: {successes}");
    assert!(successes >= 5.0, "at least 5 runs passed in 30 s:\n{metrics}");
    for stage in ["create", "approve", "sign", "verify", "authenticate", "cleanup"] {
        let failures = sample(&metrics, &format!("kubecert_node_canary_failures_total{{stage=\"{stage}\"}}"));
        assert_eq!(failures, Some(0.0), "{stage}:\n{metrics}");
    }
    assert!(
        sample(&metrics, "kubecert_node_canary_last_success_timestamp_seconds").unwrap_or_default() > 0.0
    );
    assert!(sample(&metrics, "kubecert_node_canary_renewal_headroom_seconds").unwrap_or_default() > 0.0);
    assert_eq!(
        node.leaf().map(|l| l.serial_hex),
        Some(live.serial_hex.clone()),
        "the live serial is unchanged"
    );
    assert_eq!(std::fs::read(node.path("pki/kubelet-client-current.pem")).ok(), Some(live_pem));

    let (code, out) = canary_once(&node);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"ok\":true"), "{out}");

    // The signer does not count canaries as renewals: one issuance (the bootstrap).
    let signer = http_get(signer_metrics.parse().expect("address"), "/metrics");
    let issued = "kubecert_signer_issuances_total{signer=\"kubernetes.io/kube-apiserver-client-kubelet\"}";
    assert_eq!(sample(&signer, issued), Some(1.0), "{signer}");
    assert!(sample(&signer, "kubecert_signer_canary_issuances_total").unwrap_or_default() >= 6.0, "{signer}");
    assert_running(&mut agent);

    let Some(kubectl) = kubectl() else { return };
    assert_eq!(canary_csrs(&kubectl, &node.signer.admin_kubeconfig()), 0, "no canary CSR is left");
}

#[test]
fn a_deny_all_policy_fails_the_canary_at_approve_and_leaves_the_live_certificate() {
    let mut node = Lockout::with_lifetime("lockout-canary-denied", "24h", &[], "1h");
    let mut agent = node.agent(1, &["--canary-interval", "2s"]);
    let live = node.wait_for_new_leaf(None, Duration::from_secs(30));
    let live_pem = std::fs::read(node.path("pki/kubelet-client-current.pem")).expect("the live pair");

    // The same signer, now denying every node client request (only RSA keys allowed).
    let (data_dir, addr) = (node.signer.data_dir.clone(), node.signer.addr);
    node.signer.process.kill();
    let policy = node.path("deny-all.toml");
    std::fs::write(
        &policy,
        "[policy.signers.\"kubernetes.io/kube-apiserver-client-kubelet\"]\nallowed_key_types = [\"rsa\"]\n",
    )
    .expect("write the policy");
    let restarted = Instant::now();
    node.signer = SignerServe::start_at(
        &data_dir,
        addr,
        &["--config", str(&policy), "--cluster-signing-duration", "24h"],
    );
    let approve = "kubecert_node_canary_failures_total{stage=\"approve\"}";
    wait_for("a canary failure at the approve stage", Duration::from_secs(10), || {
        sample(&http_get(node.metrics, "/metrics"), approve).unwrap_or_default() >= 1.0
    });
    eprintln!("first approve-stage failure {:?} after the deny-all signer started", restarted.elapsed());
    let log = agent.log();
    assert!(log.contains("renewal canary failed") && log.contains("KeyNotAllowed"), "{log}");

    let (code, out) = canary_once(&node);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"stage\":\"approve\""), "{out}");
    assert_eq!(
        node.leaf().map(|l| l.serial_hex),
        Some(live.serial_hex.clone()),
        "the live serial is unchanged"
    );
    assert_eq!(std::fs::read(node.path("pki/kubelet-client-current.pem")).ok(), Some(live_pem));
    assert!(node.healthz().starts_with("HTTP/1.0 200"), "the node stays ready");
    assert_running(&mut agent);
}
