//! `node-agent` end to end against the real `signer serve` (issue 5, "Done when"): bootstrap with
//! a token and rotation with short lifetimes, SIGKILL during bootstrap and during rotation, a
//! signer outage, a denied request, the serving certificate on the agent's own endpoint, and a
//! restarted agent serving from disk.
//!
//! Everything listens on 127.0.0.1. Each test is bounded by the waits it makes (the longest,
//! two rotations of 60-second certificates, takes about two minutes). `KUBECERT_E2E_ROTATIONS`
//! sets how many rotations the first test waits for (default 2).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubecert_tests::probe::{Outcome, Prober};
use kubecert_tests::{
    Process, SERVING_POLICY, SignerServe, TempDir, binary, free_local_addr, kubectl, kubectls_with_minor,
    run_ok, start_node_agent, wait_for,
};

/// Certificates of one minute, not backdated: a rotation every 42–54 s.
const SHORT_LIVED: [&str; 4] = ["--cluster-signing-duration", "60s", "--backdate", "0s"];
/// Node client certificates are not approved automatically (a person approves with kubectl).
const MANUAL_CLIENT_APPROVAL: &str = "[policy.signers.\"kubernetes.io/kube-apiserver-client-kubelet\"]\n\
                                      auto_approve = false\n";

/// One test's files: the signer's data dir, the bootstrap kubeconfig, the node's files.
struct Node {
    dir: TempDir,
    name: String,
    metrics: SocketAddr,
}

impl Node {
    fn new(name: &str) -> Self {
        Self { dir: TempDir::new(name), name: name.to_owned(), metrics: free_local_addr() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pki(&self) -> PathBuf {
        self.path("pki")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path("kubelet.conf")
    }

    fn bootstrap_kubeconfig(&self) -> PathBuf {
        self.path("bootstrap.kubeconfig")
    }

    /// `signer serve` with `extra` flags and, if given, a policy file.
    fn signer(&self, extra: &[&str], policy: Option<&str>) -> SignerServe {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(policy) = policy {
            let file = self.path("signer.toml");
            std::fs::write(&file, policy).expect("write signer config");
            args.extend(["--config".to_owned(), str(&file).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        SignerServe::start(&self.path("signer"), &args)
    }

    /// Starts the agent with the bootstrap kubeconfig; `run` numbers the log file.
    fn agent(&self, run: u32, extra: &[&str]) -> Process {
        let log = self.path(&format!("agent-{run}.log"));
        start_node_agent(self.dir.path(), &self.name, self.metrics, extra, &log)
    }

    /// `node-agent status` of the node's cert dir: (exit code, output).
    fn status(&self) -> (i32, String) {
        let out = Command::new(binary("node-agent"))
            .args(["status", "--cert-dir", str(&self.pki())])
            .output()
            .expect("run node-agent status");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Serial and private key PEM of the current client pair, if there is one.
    fn client_pair(&self) -> Option<(String, String)> {
        let pem = std::fs::read_to_string(self.pki().join("kubelet-client-current.pem")).ok()?;
        let key_start = pem.find("-----BEGIN EC PRIVATE KEY-----")?;
        let (_, status) = self.status();
        let client = status.split("serving certificate").next().unwrap_or_default();
        Some((line_value(client, "serial:")?, pem[key_start..].to_owned()))
    }
}

fn str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The text after `label` on its line.
fn line_value(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|l| l.trim().strip_prefix(label)).map(|v| v.trim().to_owned())
}

/// A row of `kubectl get csr`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CsrRow {
    name: String,
    requestor: String,
    condition: String,
}

fn csrs(kubectl: &Path, kubeconfig: &Path) -> Vec<CsrRow> {
    run_ok(kubectl, &["--kubeconfig", str(kubeconfig), "get", "csr", "--no-headers"])
        .lines()
        .filter_map(|line| {
            // NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() >= 6).then(|| CsrRow {
                name: cols[0].to_owned(),
                requestor: cols[3].to_owned(),
                condition: cols[5].to_owned(),
            })
        })
        .collect()
}

fn approve(kubectl: &Path, admin: &Path, name: &str) {
    run_ok(kubectl, &["--kubeconfig", str(admin), "certificate", "approve", name]);
}

/// Lines of `process`'s log that contain every one of `needles`.
fn log_lines(process: &Process, needles: &[&str]) -> Vec<String> {
    process.log().lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_owned).collect()
}

/// Seconds since midnight UTC of a log line (`2026-01-02T03:04:05.678901Z ...`).
fn log_time(line: &str) -> f64 {
    let clock = line.get(11..26).unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let parts: Vec<f64> = clock.split(':').map(|p| p.parse().expect("clock field")).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// `GET path` over plain HTTP/1.0; the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

/// [`wait_for`] with a pause between checks: most checks run kubectl or `node-agent status`.
fn poll(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    wait_for(what, limit, || {
        let done = ready();
        if !done {
            std::thread::sleep(Duration::from_millis(200));
        }
        done
    });
}

fn assert_running(agent: &mut Process) {
    if let Some(status) = agent.try_wait() {
        panic!("node-agent exited with {status}:\n{}", agent.log());
    }
}

fn rotations_wanted() -> usize {
    std::env::var("KUBECERT_E2E_ROTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

#[test]
fn bootstraps_with_a_token_then_rotates_with_new_keys_and_serials() {
    let node = Node::new("e2e-rotate");
    let signer = node.signer(&SHORT_LIVED, None);
    signer.create_token(&node.bootstrap_kubeconfig());
    let mut agent = node.agent(1, &[]);

    poll("bootstrap", Duration::from_secs(60), || {
        node.kubeconfig().is_file() && node.client_pair().is_some()
    });
    assert!(
        !node.pki().join("kubelet-client.key.tmp").exists(),
        "the pending key is deleted after bootstrap"
    );
    let mut seen = vec![node.client_pair().expect("a client pair")];
    let (code, status) = node.status();
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("CN=system:node:e2e-rotate, O=system:nodes"), "{status}");

    for rotation in 1..=rotations_wanted() {
        poll(&format!("rotation {rotation}"), Duration::from_secs(90), || {
            node.client_pair().is_some_and(|pair| !seen.contains(&pair))
        });
        let pair = node.client_pair().expect("a client pair");
        for old in &seen {
            assert_ne!(pair.0, old.0, "rotation {rotation} reused serial {}", old.0);
            assert_ne!(pair.1, old.1, "rotation {rotation} reused a key");
        }
        seen.push(pair);
        assert_running(&mut agent);
    }

    let metrics = http_get(node.metrics, "/metrics");
    let rotations = line_value(&metrics, "kubecert_node_certificate_rotations_total{certificate=\"client\"}")
        .and_then(|v| v.parse::<usize>().ok());
    assert!(rotations >= Some(rotations_wanted()), "{metrics}");
    assert!(metrics.contains("\nkubelet_certificate_manager_client_ttl_seconds "), "{metrics}");
    assert!(http_get(node.metrics, "/healthz").ends_with("\r\n\r\nok\n"));

    let Some(kubectl) = kubectl() else { return };
    // kubectl accepts the kubeconfig the agent wrote; the API sees the node as system:node:<name>
    // (kubectl auth whoami needs SelfSubjectReview, which signer serve does not serve): the
    // rotation CSRs were made with the node's certificate and name it as their requestor.
    let rows = csrs(&kubectl, &node.kubeconfig());
    let bootstrap: Vec<_> = rows.iter().filter(|r| r.name.starts_with("node-csr-")).collect();
    assert_eq!(bootstrap.len(), 1, "{rows:?}");
    assert!(bootstrap[0].requestor.starts_with("system:bootstrap:"), "{rows:?}");
    let rotations: Vec<_> = rows.iter().filter(|r| r.name.starts_with("csr-")).collect();
    assert!(rotations.len() >= rotations_wanted(), "{rows:?}");
    for row in rotations {
        assert_eq!(row.requestor, "system:node:e2e-rotate", "{rows:?}");
        assert_eq!(row.condition, "Approved,Issued", "{rows:?}");
    }
}

#[test]
fn without_rotation_the_agent_bootstraps_and_only_serves_its_endpoint() {
    let node = Node::new("e2e-norotate");
    let signer = node.signer(&[], None);
    signer.create_token(&node.bootstrap_kubeconfig());
    let mut agent = node
        .agent(1, &["--rotate-certificates=false", "--log-format", "json", "--tls-key-exchange", "classic"]);
    poll("bootstrap", Duration::from_secs(60), || {
        !log_lines(&agent, &["client certificate rotation is off"]).is_empty()
    });
    // --tls-key-exchange reaches the API clients: no ML-KEM offered, X25519 negotiated.
    assert!(
        handshakes(node.metrics, "apiserver-client", "X25519") >= 1,
        "{}",
        http_get(node.metrics, "/metrics")
    );
    assert_eq!(handshakes(node.metrics, "apiserver-client", "X25519MLKEM768"), 0);
    assert!(node.client_pair().is_some());
    let log = agent.log();
    assert!(log.lines().all(|l| l.starts_with('{') && l.ends_with('}')), "JSON lines:\n{log}");
    let metrics = http_get(node.metrics, "/metrics");
    assert!(metrics.contains("\nkubelet_certificate_manager_client_ttl_seconds "), "{metrics}");
    assert!(!metrics.contains("kubecert_node_certificate_rotations_total"), "no rotation loop:\n{metrics}");
    assert_running(&mut agent);
}

#[test]
fn sigkill_during_bootstrap_reuses_the_same_node_csr() {
    let Some(kubectl) = kubectl() else { return };
    let node = Node::new("e2e-bootkill");
    let signer = node.signer(&[], Some(MANUAL_CLIENT_APPROVAL));
    signer.create_token(&node.bootstrap_kubeconfig());
    let admin = signer.admin_kubeconfig();

    let mut first = node.agent(1, &[]);
    let waiting = "waiting for the bootstrap certificate signing request";
    poll("first run waits for approval", Duration::from_secs(30), || {
        !log_lines(&first, &[waiting]).is_empty()
    });
    let rows = csrs(&kubectl, &admin);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let name = rows[0].name.clone();
    assert!(name.starts_with("node-csr-") && rows[0].condition == "Pending", "{rows:?}");
    first.kill();
    assert!(node.pki().join("kubelet-client.key.tmp").is_file(), "the pending key survives the kill");

    let mut second = node.agent(2, &[]);
    poll("second run waits for the same CSR", Duration::from_secs(30), || {
        !log_lines(&second, &[waiting, &name]).is_empty()
    });
    assert_eq!(csrs(&kubectl, &admin).len(), 1, "no orphan CSR");

    approve(&kubectl, &admin, &name);
    poll("bootstrap completes", Duration::from_secs(30), || {
        !log_lines(&second, &["bootstrap complete"]).is_empty()
    });
    assert!(node.client_pair().is_some());
    assert!(!node.pki().join("kubelet-client.key.tmp").exists());
    let rows = csrs(&kubectl, &admin);
    assert_eq!(rows.len(), 1, "still one CSR: {rows:?}");
    assert_eq!(rows[0].condition, "Approved,Issued", "{rows:?}");
    assert_running(&mut second);
}

#[test]
fn a_denied_bootstrap_request_is_retried_with_a_new_key_without_exiting() {
    let Some(kubectl) = kubectl() else { return };
    let node = Node::new("e2e-bootdeny");
    let signer = node.signer(&[], Some(MANUAL_CLIENT_APPROVAL));
    signer.create_token(&node.bootstrap_kubeconfig());
    let admin = signer.admin_kubeconfig();

    let mut agent = node.agent(1, &[]);
    poll("bootstrap CSR", Duration::from_secs(30), || csrs(&kubectl, &admin).len() == 1);
    let denied = csrs(&kubectl, &admin)[0].name.clone();
    run_ok(&kubectl, &["--kubeconfig", str(&admin), "certificate", "deny", &denied]);
    poll("a second request with a new key", Duration::from_secs(30), || csrs(&kubectl, &admin).len() == 2);
    let failure = log_lines(&agent, &["bootstrap attempt failed", &denied]);
    assert!(failure.iter().any(|l| l.contains("is denied") && l.contains("new_key=true")), "{}", agent.log());
    assert_running(&mut agent);

    let retry = csrs(&kubectl, &admin).into_iter().find(|r| r.name != denied).expect("the new request");
    assert!(retry.name.starts_with("node-csr-") && retry.condition == "Pending", "{retry:?}");
    approve(&kubectl, &admin, &retry.name);
    poll("bootstrap completes", Duration::from_secs(30), || node.client_pair().is_some());
    assert_running(&mut agent);
}

#[test]
fn sigkill_during_rotation_restarts_with_a_valid_pair() {
    let Some(kubectl) = kubectl() else { return };
    let node = Node::new("e2e-rotkill");
    let signer = node.signer(&SHORT_LIVED, Some(MANUAL_CLIENT_APPROVAL));
    signer.create_token(&node.bootstrap_kubeconfig());
    let admin = signer.admin_kubeconfig();
    let pending = |kubectl: &Path| -> Vec<CsrRow> {
        csrs(kubectl, &admin).into_iter().filter(|r| r.condition == "Pending").collect()
    };

    let mut first = node.agent(1, &[]);
    poll("bootstrap CSR", Duration::from_secs(30), || !pending(&kubectl).is_empty());
    for row in pending(&kubectl) {
        approve(&kubectl, &admin, &row.name);
    }
    poll("bootstrap", Duration::from_secs(30), || node.client_pair().is_some());
    let bootstrap_pair = node.client_pair().expect("a client pair");

    // The rotation request stays pending: kill the agent while it waits for it.
    poll("rotation CSR", Duration::from_secs(70), || {
        pending(&kubectl).iter().any(|r| r.requestor == "system:node:e2e-rotkill")
    });
    first.kill();
    let (_, status) = node.status();
    assert!(status.contains("ECDSA P-256, matches the certificate"), "a consistent pair on disk:\n{status}");
    assert_eq!(node.client_pair(), Some(bootstrap_pair.clone()), "the old pair is still current");

    let mut second = node.agent(2, &[]);
    poll("the restarted agent rotates", Duration::from_secs(90), || {
        for row in pending(&kubectl) {
            approve(&kubectl, &admin, &row.name);
        }
        node.client_pair().is_some_and(|pair| pair != bootstrap_pair)
    });
    let (code, status) = node.status();
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("matches the certificate"), "{status}");
    assert_running(&mut second);
}

#[test]
fn signer_outage_keeps_the_certificate_retries_on_schedule_and_rotates_after() {
    let node = Node::new("e2e-outage");
    let mut signer = node.signer(&SHORT_LIVED, None);
    signer.create_token(&node.bootstrap_kubeconfig());
    let mut agent = node.agent(1, &[]);
    poll("bootstrap", Duration::from_secs(60), || node.client_pair().is_some());
    let before = node.client_pair().expect("a client pair");
    let (data_dir, addr) = (signer.data_dir.clone(), signer.addr);
    signer.process.kill();

    let failed = "certificate rotation attempt failed";
    poll("four failed attempts", Duration::from_secs(90), || {
        !log_lines(&agent, &[failed, "failures=4"]).is_empty()
    });
    assert_eq!(node.client_pair(), Some(before.clone()), "the certificate is kept during the outage");
    assert_running(&mut agent);
    // Full warnings come for failures 1, 2 and 4: attempts at t, t+2 s, t+6 s and t+14 s, each
    // sleep stretched by up to 10 % (SPEC M-8).
    let at = |n: u32| log_time(&log_lines(&agent, &[failed, &format!("failures={n} ")])[0]);
    let (first, second, fourth) = (at(1), at(2), at(4));
    assert!((2.0..=2.2 + 0.5).contains(&(second - first)), "1→2: {} s\n{}", second - first, agent.log());
    assert!((14.0..=15.4 + 1.0).contains(&(fourth - first)), "1→4: {} s\n{}", fourth - first, agent.log());

    let _signer = SignerServe::start_at(&data_dir, addr, &SHORT_LIVED);
    poll("rotation after the outage", Duration::from_secs(60), || {
        node.client_pair().is_some_and(|pair| pair.0 != before.0)
    });
    assert_running(&mut agent);
    let metrics = http_get(node.metrics, "/metrics");
    let errors = line_value(&metrics, "kubelet_certificate_manager_client_expiration_renew_errors")
        .and_then(|v| v.parse::<u64>().ok());
    assert!(errors >= Some(4), "{metrics}");
}

#[test]
fn a_denied_request_is_reported_with_its_reason_and_retried_with_backoff() {
    let node = Node::new("e2e-denied");
    let signer = node.signer(&[], Some(SERVING_POLICY));
    signer.create_token(&node.bootstrap_kubeconfig());
    let mut agent = node.agent(
        1,
        &["--rotate-server-certificates", "--node-ip", "127.0.0.1", "--node-dns", "e2e.denied.example"],
    );

    let denied = ["certificate rotation attempt failed", "certificate request denied (SANNotAllowed)"];
    poll("four denials", Duration::from_secs(60), || {
        log_lines(&agent, &denied).iter().any(|l| l.contains("failures=4 "))
    });
    assert_running(&mut agent);
    let lines = log_lines(&agent, &denied);
    let (first, fourth) = (log_time(&lines[0]), log_time(lines.last().expect("a line")));
    assert!(fourth - first >= 14.0, "denials are retried with backoff, not in a loop:\n{}", agent.log());
    assert!(
        lines[0].contains("e2e.denied.example"),
        "the reason's message names the refused name: {}",
        lines[0]
    );
    // The client certificate is unaffected.
    assert_eq!(node.status().0, 0);

    let Some(kubectl) = kubectl() else { return };
    let rows = csrs(&kubectl, &signer.admin_kubeconfig());
    let denials = rows.iter().filter(|r| r.condition == "Denied").count();
    assert!((4..=6).contains(&denials), "one request per attempt: {rows:?}");
}

#[test]
fn the_serving_certificate_is_requested_stored_and_served() {
    let node = Node::new("e2e-serving");
    let signer = node.signer(&[], Some(SERVING_POLICY));
    signer.create_token(&node.bootstrap_kubeconfig());
    let mut agent = node.agent(
        1,
        &[
            "--rotate-server-certificates=true",
            "--node-ip=127.0.0.1",
            "--node-dns=e2e-serving.allowed.example",
        ],
    );
    poll("serving certificate", Duration::from_secs(60), || {
        node.pki().join("kubelet-server-current.pem").exists()
    });
    let (code, status) = node.status();
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("names:            DNS:e2e-serving.allowed.example, IP:127.0.0.1"), "{status}");
    assert_running(&mut agent);

    let curl = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "--cacert", str(&signer.ca_cert())])
        .arg(format!("https://{}/healthz", node.metrics))
        .output();
    match curl {
        Ok(out) => assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("NOTICE: curl not runnable ({e}); HTTPS endpoint not checked"),
    }
}

/// A restarted agent serves from the pairs on disk before anything talks to the API server
/// (issue 10): with the signer stopped, each restart's probes are refused until the new process
/// listens, and its first answered probe is a 200 over TLS with the stored serving certificate,
/// never a refused handshake or a 503 (the endpoint used to listen before the pairs were loaded).
#[test]
fn a_restarted_agent_serves_from_disk_without_the_api() {
    let node = Node::new("e2e-restart");
    let mut signer = node.signer(&[], Some(SERVING_POLICY));
    signer.create_token(&node.bootstrap_kubeconfig());
    let flags = [
        "--rotate-server-certificates=true",
        "--node-ip=127.0.0.1",
        "--node-dns=e2e-restart.allowed.example",
    ];
    let mut agent = node.agent(1, &flags);
    let _ = kubecert_reload::KeyExchange::default().install();
    let ca = std::fs::read(signer.ca_cert()).expect("read the CA certificate");
    let prober = Prober::https(node.metrics, &ca).expect("an HTTPS prober");
    poll("serving /healthz over HTTPS", Duration::from_secs(60), || prober.probe() == Outcome::Served);
    signer.process.kill();
    for run in 2..=6 {
        agent.kill();
        agent = node.agent(run, &flags);
        let mut first_answer = prober.probe();
        let start = std::time::Instant::now();
        while matches!(first_answer, Outcome::ConnectionLost(_)) && start.elapsed() < Duration::from_secs(30)
        {
            first_answer = prober.probe();
        }
        assert_eq!(first_answer, Outcome::Served, "restart {run}:\n{}", agent.log());
    }
}

/// SPEC SV-3 and E-4 with the default serving names: no serving request while the host has no
/// address but loopback, one as soon as an address appears, and another at once when a new
/// address is added. Runs in a network namespace of its own (`unshare -n`, as root), where the
/// addresses are added to `lo` and no traffic goes anywhere; skipped where that is not allowed.
#[test]
fn serving_names_follow_the_host_addresses() {
    let unshare = Command::new("unshare").args(["-n", "true"]).status();
    if !unshare.is_ok_and(|s| s.success()) {
        eprintln!("NOTICE: cannot create a network namespace here; address following not checked");
        return;
    }
    let node = Node::new("e2e-addresses");
    std::fs::write(
        node.path("signer.toml"),
        "[policy.signers.\"kubernetes.io/kubelet-serving\"]\nauto_approve = true\n\
         allowed_ip_cidrs = [\"198.18.0.0/15\"]\nallowed_dns_suffixes = [\".\"]\n",
    )
    .expect("write signer config");
    // Inside the namespace: the signer, the agent, then two addresses; each step waits (bounded)
    // for the agent to react before the next one.
    let script = r#"
        set -u
        D=$1; SIGNER=$2; AGENT=$3
        wait_until() { for _ in $(seq 300); do eval "$1" && return 0; sleep 0.1; done; echo "TIMEOUT: $1"; return 1; }
        ip link set lo up
        "$SIGNER" serve --data-dir "$D/signer" --listen 127.0.0.1:16443 --config "$D/signer.toml" \
            > "$D/signer.log" 2>&1 &
        wait_until '(echo > /dev/tcp/127.0.0.1/16443) 2>/dev/null'
        "$SIGNER" token create --kubeconfig "$D/signer/admin.kubeconfig" \
            --write-bootstrap-kubeconfig "$D/bootstrap.kubeconfig" > /dev/null 2>&1
        "$AGENT" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" --kubeconfig "$D/kubelet.conf" \
            --cert-dir "$D/pki" --node-name e2e-addresses --metrics-addr 127.0.0.1:10271 \
            --rotate-server-certificates > "$D/agent-1.log" 2>&1 &
        wait_until 'grep -q "no certificate template yet" "$D/agent-1.log"'
        ls "$D/pki" | grep -c kubelet-server | sed 's/^/SERVING FILES BEFORE AN ADDRESS: /'
        ip addr add 198.18.0.5/32 dev lo
        wait_until '"$AGENT" status --cert-dir "$D/pki" | grep -q "IP:198.18.0.5"'
        "$AGENT" status --cert-dir "$D/pki" | grep -E 'names:|serial:' | tail -2
        ip addr add 198.18.0.6/32 dev lo
        wait_until '"$AGENT" status --cert-dir "$D/pki" | grep -q "IP:198.18.0.6"'
        "$AGENT" status --cert-dir "$D/pki" | grep -E 'names:|serial:' | tail -2
        kill $(jobs -p)
        wait
    "#;
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", script, "bash", str(node.dir.path())])
        .arg(binary("signer"))
        .arg(binary("node-agent"))
        .output()
        .expect("run the namespace script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(node.path("agent-1.log")).unwrap_or_default();
    assert!(!stdout.contains("TIMEOUT"), "{stdout}{}\n{log}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SERVING FILES BEFORE AN ADDRESS: 0"), "{stdout}");
    let names: Vec<&str> = stdout.lines().filter(|l| l.contains("names:")).collect();
    assert_eq!(names.len(), 2, "{stdout}");
    assert!(names[0].ends_with("IP:198.18.0.5"), "{stdout}");
    assert!(names[1].ends_with("IP:198.18.0.5, IP:198.18.0.6"), "{stdout}");
    let serials: Vec<&str> = stdout.lines().filter(|l| l.contains("serial:")).collect();
    assert_ne!(serials[0], serials[1], "a new certificate for the new address: {stdout}");
    assert!(log.contains("reason=the certificate does not satisfy the template"), "{log}");
}

/// The value of the `kubecert_tls_handshakes_total` series of `endpoint` and `group` at
/// `metrics` (0 while it does not exist).
fn handshakes(metrics: SocketAddr, endpoint: &str, group: &str) -> u64 {
    let series = format!("kubecert_tls_handshakes_total{{endpoint=\"{endpoint}\",group=\"{group}\"}} ");
    let text = http_get(metrics, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

/// Issue 15: kubectl built with Go 1.24+ (1.33 and later) negotiates the hybrid post-quantum
/// X25519MLKEM768 with `signer serve`, as the signer's metric shows, and a kubectl without ML-KEM
/// (Go 1.23: 1.32 and older) gets X25519; under `--tls-key-exchange pq-required` the first still
/// works and the second is refused.
#[test]
fn kubectl_negotiates_x25519mlkem768_with_signer_serve() {
    let kubectls = kubectls_with_minor();
    if kubectls.is_empty() {
        return;
    }
    let modern = kubectls.iter().rev().find(|(minor, _)| *minor >= 33).map(|(_, path)| path.clone());
    let Some(modern) = modern else {
        assert!(
            std::env::var("KUBECERT_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "no kubectl 1.33+ (Go 1.24+) found next to kubectl: {kubectls:?}"
        );
        return eprintln!("NOTICE: no kubectl 1.33+ next to kubectl; nothing to check");
    };
    let classical = kubectls.iter().find(|(minor, _)| *minor <= 32).map(|(_, path)| path.clone());
    let dir = TempDir::new("pq-kubectl");
    let get_csrs = |kubectl: &Path, signer: &SignerServe| {
        let cache = dir.path().join("kubectl-cache");
        Command::new(kubectl)
            .args(["--kubeconfig", str(&signer.admin_kubeconfig()), "--cache-dir", str(&cache), "get", "csr"])
            .output()
            .expect("kubectl runs")
    };

    for (name, policy) in [("preferred", "pq-preferred"), ("required", "pq-required")] {
        let metrics = free_local_addr();
        let addr = metrics.to_string();
        let signer = SignerServe::start(
            &dir.path().join(name),
            &["--metrics-addr", &addr, "--tls-key-exchange", policy],
        );
        wait_for("the signer's metrics endpoint", Duration::from_secs(10), || {
            TcpStream::connect(metrics).is_ok()
        });

        let out = get_csrs(&modern, &signer);
        assert!(out.status.success(), "{policy}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            handshakes(metrics, "apiserver", "X25519MLKEM768") >= 1,
            "{policy}: {}",
            http_get(metrics, "/metrics")
        );
        assert_eq!(handshakes(metrics, "apiserver", "X25519"), 0, "{policy}");

        let Some(classical) = &classical else { continue };
        let out = get_csrs(classical, &signer);
        if policy == "pq-preferred" {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(handshakes(metrics, "apiserver", "X25519") >= 1, "{}", http_get(metrics, "/metrics"));
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "a classical-only kubectl was served under pq-required");
            assert!(stderr.contains("handshake failure"), "{stderr}");
            assert_eq!(handshakes(metrics, "apiserver", "X25519"), 0);
        }
    }
}
