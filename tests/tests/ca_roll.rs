//! A CA roll by hand with `signer ca` against a running `signer serve` (issue 13, part 2): a node
//! agent bootstraps on generation 1; generation 2 is prepared, published (trust bundle file) and
//! activated, with each step refused while its precondition does not hold; the agent's next
//! rotation gets leaf + cross-certificate, which `openssl verify` accepts against the old root
//! alone and against the new root alone; generation 1 retires once its last leaf has expired.
//! The agent follows the trust bundle file (`--trust-source FILE --client-ca-file`): its client
//! CA file, kubeconfig CA data and trusted-root metrics show both roots after publish and only
//! the new one after retire. A second test runs the same roll through the ClusterTrustBundles of
//! the embedded API (`kubectl get clustertrustbundles`, `--trust-source bundles`); a third lets
//! `--ca-auto-roll` roll a one-minute CA by itself. A fourth SIGKILLs `signer ca` steps at random
//! moments (`KUBECERT_CA_KILLS`, default 20) and checks that each re-run resumes to a consistent
//! journal whose signing root the trust bundle holds. A fifth runs `cargo xtask e2e --ca-roll
//! --nodes 2` (the xtask binary): a probed two-node fleet through a whole roll. A sixth SIGKILLs
//! the running `signer serve --ca-auto-roll` at random moments (`KUBECERT_CA_SERVE_KILLS`,
//! default 20) and checks that no certificate is ever issued that the node's trust cannot verify.
//!
//! 127.0.0.1 only; bounded by the agent's first rotation (60-second certificates) plus the
//! expiry of the last generation-1 leaf (about 70 seconds), and by the one-minute CA's schedule.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use kubecert_tests::trust::{assert_bundles_hold, bundles_in_api, pem_blocks};
use kubecert_tests::{
    SignerServe, TempDir, binary, free_local_addr, http_get, kubectl, run_ok, start_node_agent, wait_for,
};

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `signer ca ARGS --data-dir DATA --trust-bundle-out BUNDLE`.
fn ca(data: &Path, bundle: &Path, args: &[&str]) -> Output {
    Command::new(binary("signer"))
        .arg("ca")
        .args(args)
        .args(["--data-dir", s(data), "--trust-bundle-out", s(bundle)])
        .output()
        .expect("run signer ca")
}

fn ca_ok(data: &Path, bundle: &Path, args: &[&str]) -> String {
    let out = ca(data, bundle, args);
    assert!(out.status.success(), "signer ca {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ca_refused(data: &Path, bundle: &Path, args: &[&str], reason: &str) {
    let out = ca(data, bundle, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "signer ca {args:?} should be refused");
    assert!(stderr.contains(reason), "signer ca {args:?}: expected {reason:?} in {stderr}");
}

fn status(data: &Path, bundle: &Path) -> serde_json::Value {
    serde_json::from_str(&ca_ok(data, bundle, &["status", "-o", "json"])).expect("status JSON")
}

fn openssl_verify(dir: &Path, name: &str, ca_file: &str, untrusted: Option<&str>, leaf: &Path) -> bool {
    let root = dir.join(format!("{name}.pem"));
    std::fs::write(&root, ca_file).expect("write root");
    let mut command = Command::new("openssl");
    command.args(["verify", "-CAfile", s(&root)]);
    if let Some(chain) = untrusted {
        let path = dir.join(format!("{name}-untrusted.pem"));
        std::fs::write(&path, chain).expect("write chain");
        command.args(["-untrusted", s(&path)]);
    }
    let out = command.arg(leaf).output().expect("run openssl");
    out.status.success()
}

/// A test's files and `signer serve`: DATA_DIR, the trust bundle file, the metrics address,
/// and the flags it was started with (to restart it).
struct Roll {
    dir: TempDir,
    data: std::path::PathBuf,
    bundle: std::path::PathBuf,
    metrics: std::net::SocketAddr,
    signer: SignerServe,
    args: Vec<String>,
}

impl Roll {
    /// Starts `signer serve` again (after a kill) with the same flags, data directory and address.
    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.signer = SignerServe::start_at(&self.data, self.signer.addr, &args);
    }
}

/// Starts `signer serve` re-reading the CA journal every second, writing the trust bundle file,
/// with metrics, and `extra` flags.
fn start_roll(tag: &str, extra: &[&str]) -> Roll {
    let dir = TempDir::new(tag);
    let (data, bundle) = (dir.path().join("signer"), dir.path().join("trust-bundle.pem"));
    let config = dir.path().join("signer.toml");
    std::fs::write(&config, "ca_reload_interval = \"1s\"\n").expect("write config");
    let metrics = free_local_addr();
    let metrics_flag = metrics.to_string();
    let mut args =
        vec!["--metrics-addr", &metrics_flag, "--config", s(&config), "--trust-bundle-out", s(&bundle)];
    args.extend_from_slice(extra);
    let signer = SignerServe::start(&data, &args);
    let args = args.into_iter().map(str::to_owned).collect();
    Roll { dir, data, bundle, metrics, signer, args }
}

#[test]
fn a_manual_roll_chains_new_leaves_to_both_roots_and_retires_the_old_one_after_its_leaves() {
    let roll = start_roll("ca-roll", &["--cluster-signing-duration", "60s", "--backdate", "0s"]);
    let Roll { dir, data, bundle, metrics, signer, .. } = &roll;
    let (data, bundle, metrics) = (data.clone(), bundle.clone(), *metrics);
    let node = dir.path().join("node");
    std::fs::create_dir_all(&node).expect("node dir");
    signer.create_token(&node.join("bootstrap.kubeconfig"));
    // The agent follows the trust bundle file (part 3) into its client CA file and kubeconfig.
    let client_ca = node.join("client-ca.crt");
    let agent_metrics = free_local_addr();
    let trust_flags = ["--trust-source", s(&bundle), "--client-ca-file", s(&client_ca)];
    let _agent =
        start_node_agent(&node, "node-1", agent_metrics, &trust_flags, &dir.path().join("agent.log"));
    let current = node.join("pki/kubelet-client-current.pem");
    wait_for("the agent's first certificate", Duration::from_secs(30), || current.exists());
    let first_leaf = std::fs::read_to_string(&current).expect("read pair");

    let state = status(&data, &bundle);
    assert_eq!(state["signing"]["generation"], 1);
    assert_eq!(state["generations"][0]["phase"], "active");
    let old_root = std::fs::read_to_string(data.join("pki/generations/1/ca.crt")).expect("old root");
    assert_eq!(old_root, std::fs::read_to_string(data.join("pki/ca.crt")).expect("pki/ca.crt"));

    // Out of order: refused, saying what to do first.
    ca_refused(&data, &bundle, &["publish"], "publish refused: no generation is prepared; run prepare first");
    ca_refused(&data, &bundle, &["retire"], "retire refused: no generation is retiring");
    assert!(ca_ok(&data, &bundle, &["prepare", "--ca-lifetime", "3600s"]).contains("generation 2 prepared"));
    assert!(ca_ok(&data, &bundle, &["prepare"]).starts_with("unchanged: generation 2 is already prepared"));
    ca_refused(&data, &bundle, &["activate"], "generation 2 is prepared but not published");
    let new_root = std::fs::read_to_string(data.join("pki/generations/2/ca.crt")).expect("new root");
    let cross = std::fs::read_to_string(data.join("pki/generations/2/cross.crt")).expect("cross");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("pki/generations/2/ca.key")).expect("key").permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    ca_ok(&data, &bundle, &["publish"]);
    let published = std::fs::read_to_string(&bundle).expect("trust bundle");
    assert_eq!(published, format!("{old_root}{new_root}"), "old and new roots");
    let node_trusts = |pem: &str| {
        let kubeconfig = std::fs::read_to_string(node.join("kubelet.conf")).unwrap_or_default();
        let ca_data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem);
        std::fs::read_to_string(&client_ca).is_ok_and(|file| file == pem) && kubeconfig.contains(&ca_data)
    };
    let metric_new = "kubecert_node_trusted_root{subject=\"kubecert-ca generation 2\"} 1";
    wait_for("the node to trust both roots", Duration::from_secs(30), || {
        node_trusts(&published) && http_get(agent_metrics, "/metrics").contains(metric_new)
    });
    ca_refused(
        &data,
        &bundle,
        &["activate", "--ca-min-publish-age", "1h"],
        "less than the minimum publish age of 3600s",
    );
    ca_refused(
        &data,
        &bundle,
        &["activate", "--ca-min-publish-age", "0s", "--ca-min-trusting-share", "0.5"],
        "no source of node trust reports is configured",
    );
    assert!(
        ca_ok(&data, &bundle, &["activate", "--ca-min-publish-age", "0s"]).contains("generation 2 active")
    );
    ca_refused(
        &data,
        &bundle,
        &["retire"],
        "retire refused: generation 1 may have signed certificates valid until",
    );

    wait_for("the signer to sign with generation 2", Duration::from_secs(20), || {
        http_get(metrics, "/metrics").contains("kubecert_signer_ca_active_generation 2")
    });
    // The API follows: its serving certificate now comes from generation 2, with the
    // cross-certificate, so clients that trust only the old root still verify it.
    let serving = || std::fs::read_to_string(data.join("pki/apiserver.crt")).unwrap_or_default();
    wait_for("the API's serving certificate from generation 2", Duration::from_secs(20), || {
        pem_blocks(&serving(), "CERTIFICATE").get(1) == Some(&cross)
    });
    // The agent's next rotation (42–54 s into its 60-second certificate) is signed by generation 2.
    let renewed = || std::fs::read_to_string(&current).unwrap_or_default();
    wait_for("a certificate from generation 2", Duration::from_secs(75), || {
        let pair = renewed();
        pair != first_leaf && pem_blocks(&pair, "CERTIFICATE").len() == 2
    });
    let blocks = pem_blocks(&renewed(), "CERTIFICATE");
    assert_eq!(blocks[1], cross, "leaf + cross-certificate");
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &blocks[0]).expect("write leaf");
    assert!(
        openssl_verify(dir.path(), "old", &old_root, Some(&cross), &leaf),
        "the renewed leaf verifies against the old root alone (through the cross-certificate)"
    );
    assert!(openssl_verify(dir.path(), "new", &new_root, None, &leaf), "and against the new root alone");
    assert!(
        !openssl_verify(dir.path(), "old-bare", &old_root, None, &leaf),
        "not without the cross-certificate"
    );
    if let Some(kubectl) = kubectl() {
        // The API still trusts only the old root for clients: the chain gets the agent in.
        run_ok(&kubectl, &["--kubeconfig", s(&node.join("kubelet.conf")), "get", "csr"]);
    }

    // Generation 1's last leaf expires within its 60 seconds (the ledger rounds up to 3 s).
    let state = status(&data, &bundle);
    let until = state["generations"][0]["issued_until"].as_u64().expect("generation 1 issued something");
    wait_for("generation 1's last leaf to expire", Duration::from_secs(90), || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() > until
    });
    assert!(ca_ok(&data, &bundle, &["retire"]).contains("generation 1 retired"));
    assert_eq!(
        std::fs::read_to_string(&bundle).expect("trust bundle"),
        new_root,
        "the old root left the bundle"
    );
    let state = status(&data, &bundle);
    assert_eq!(state["trusted"], serde_json::json!([2]));
    assert_eq!(state["signing"]["with_cross_certificate"], false);
    let text = ca_ok(&data, &bundle, &["status"]);
    assert!(text.contains("signing: generation 2\n"), "{text}");
    wait_for("the node to trust only the new root", Duration::from_secs(30), || {
        let metrics = http_get(agent_metrics, "/metrics");
        node_trusts(&new_root)
            && metrics.contains(metric_new)
            && !metrics.contains("kubecert_node_trusted_root{subject=\"kubecert-ca\"}")
    });
    // Without a restart, the API trusts only the new root for clients and admin.kubeconfig
    // follows (a new client certificate); the node, which trusts only the new root, still works.
    let admin = data.join("admin.kubeconfig");
    let new_data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &new_root);
    wait_for("admin.kubeconfig to trust only the new root", Duration::from_secs(20), || {
        std::fs::read_to_string(&admin).is_ok_and(|k| k.contains(&new_data))
    });
    if let Some(kubectl) = kubectl() {
        run_ok(&kubectl, &["--kubeconfig", s(&admin), "get", "csr"]);
        run_ok(&kubectl, &["--kubeconfig", s(&node.join("kubelet.conf")), "get", "csr"]);
    }
}

#[test]
fn the_automatic_schedule_rolls_a_rehearsal_ca_by_itself() {
    // A one-minute CA: prepare and publish at 30 s, activate at 50 s (after 10 s published),
    // retire as soon as nothing the old key signed can still be valid.
    let roll = start_roll("ca-auto-roll", &["--ca-lifetime", "60s", "--ca-auto-roll"]);
    let (data, metrics, bundle) = (roll.data.clone(), roll.metrics, roll.bundle.clone());
    wait_for("generation 2 to be published", Duration::from_secs(45), || {
        std::fs::read_to_string(&bundle).is_ok_and(|pem| pem.matches("BEGIN CERTIFICATE").count() == 2)
    });
    let state = status(&data, &bundle);
    assert_eq!(state["generations"][1]["phase"], "published", "{state}");
    wait_for("generation 1 to be retired", Duration::from_secs(45), || {
        status(&data, &bundle)["generations"][0]["phase"] == "retired"
    });
    let state = status(&data, &bundle);
    assert_eq!(state["signing"]["generation"], 2);
    let entered = &state["generations"][1]["entered"];
    let (prepared, active) = (entered["prepared"].as_u64().unwrap(), entered["active"].as_u64().unwrap());
    let root = state["generations"][0]["root_not_before"].as_u64().unwrap();
    assert!((root + 30..root + 33).contains(&prepared), "prepared at 1/2 of the root's lifetime: {state}");
    assert!(active >= root + 50, "activated at 5/6 of the root's lifetime: {state}");
    let new_root = std::fs::read_to_string(data.join("pki/generations/2/ca.crt")).expect("new root");
    assert_eq!(std::fs::read_to_string(&bundle).expect("bundle"), new_root);
    if let Some(kubectl) = kubectl() {
        // The signer's in-process API user attests for every signer its CA signs for.
        assert_bundles_hold(&bundles_in_api(&kubectl, &data.join("admin.kubeconfig")), &new_root);
    }
    let exposition = http_get(metrics, "/metrics");
    assert!(
        exposition.contains("kubecert_signer_ca_generation_phase{generation=\"1\",phase=\"retired\"} 1"),
        "{exposition}"
    );
    assert!(
        exposition.contains(&format!(
            "kubecert_signer_ca_transition_timestamp_seconds{{generation=\"2\",phase=\"active\"}} {active}"
        )),
        "{exposition}"
    );
}

#[test]
fn a_roll_publishes_cluster_trust_bundles_that_nodes_follow() {
    let Some(kubectl) = kubectl() else { return };
    let roll = start_roll("ca-roll-bundles", &["--cluster-signing-duration", "60s", "--backdate", "0s"]);
    let Roll { dir, data, bundle, signer, .. } = &roll;
    let admin = data.join("admin.kubeconfig");
    let node = dir.path().join("node");
    std::fs::create_dir_all(&node).expect("node dir");
    signer.create_token(&node.join("bootstrap.kubeconfig"));
    let client_ca = node.join("client-ca.crt");
    let trust_flags = ["--trust-source", "bundles", "--client-ca-file", s(&client_ca)];
    let _agent =
        start_node_agent(&node, "node-1", free_local_addr(), &trust_flags, &dir.path().join("agent.log"));
    let current = node.join("pki/kubelet-client-current.pem");
    wait_for("the agent's first certificate", Duration::from_secs(30), || current.exists());
    let old_root = std::fs::read_to_string(data.join("pki/generations/1/ca.crt")).expect("old root");

    ca_ok(data, bundle, &["prepare", "--ca-lifetime", "3600s"]);
    ca_ok(data, bundle, &["publish"]);
    let new_root = std::fs::read_to_string(data.join("pki/generations/2/ca.crt")).expect("new root");
    let both = format!("{old_root}{new_root}");
    assert_bundles_hold(&bundles_in_api(&kubectl, &admin), &both);
    let node_trusts = |pem: &str| {
        let kubeconfig = std::fs::read_to_string(node.join("kubelet.conf")).unwrap_or_default();
        let ca_data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem);
        std::fs::read_to_string(&client_ca).is_ok_and(|file| file == pem) && kubeconfig.contains(&ca_data)
    };
    // The agent reads its bundle every 10 seconds.
    wait_for("the node to trust both roots from the bundle", Duration::from_secs(30), || node_trusts(&both));

    ca_ok(data, bundle, &["activate", "--ca-min-publish-age", "0s"]);
    let until =
        status(data, bundle)["generations"][0]["issued_until"].as_u64().expect("issued by generation 1");
    wait_for("generation 1's last leaf to expire", Duration::from_secs(90), || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() > until
    });
    assert!(ca_ok(data, bundle, &["retire"]).contains("generation 1 retired"));
    assert_bundles_hold(&bundles_in_api(&kubectl, &admin), &new_root);
    wait_for("the node to trust only the new root", Duration::from_secs(30), || node_trusts(&new_root));
    // The node, trusting only the new root, still reads its bundle through the API.
    run_ok(&kubectl, &["--kubeconfig", s(&node.join("kubelet.conf")), "get", "clustertrustbundles"]);
}

/// A small deterministic generator for kill delays (xorshift), seeded from the clock and printed.
struct Delays(u64);

impl Delays {
    fn below(&mut self, max: u128) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros((u128::from(self.0) % max.max(1)) as u64)
    }
}

/// Checks the state a killed or finished step left: `status -o json` parses, every phase is
/// one of the five, one generation is active, and the bundle file holds the root of the
/// generation that signs (so nothing issued is unverifiable). Returns the trusted generations.
fn check_consistent(state_dir: &Path, status: &serde_json::Value, bundle: &Path) -> Vec<u64> {
    let generations = status["generations"].as_array().expect("generations");
    let phases: Vec<&str> = generations.iter().map(|g| g["phase"].as_str().expect("phase")).collect();
    for phase in &phases {
        assert!(["prepared", "published", "active", "retiring", "retired"].contains(phase), "{status}");
    }
    assert_eq!(phases.iter().filter(|p| **p == "active").count(), 1, "{status}");
    let signing = status["signing"]["generation"].as_u64().expect("signing generation");
    let root = std::fs::read_to_string(state_dir.join(format!("{signing}/ca.crt"))).expect("signing root");
    // `signer ca` alone writes the file first on publish (a running signer writes it at start).
    let Ok(published) = std::fs::read_to_string(bundle) else {
        assert_eq!(
            status["trusted"],
            serde_json::json!([1]),
            "published without writing the bundle: {status}"
        );
        return vec![1];
    };
    assert!(
        published.contains(&root),
        "generation {signing} signs but its root is not in the bundle: {status}"
    );
    status["trusted"].as_array().expect("trusted").iter().map(|g| g.as_u64().expect("id")).collect()
}

#[test]
fn killing_ca_steps_at_random_moments_always_resumes_to_a_consistent_state() {
    // KUBECERT_CA_KILLS kills (default 20), five per step, across prepare, publish, activate
    // and retire, roll after roll; each killed step is run again to completion.
    let kills: usize = std::env::var("KUBECERT_CA_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = TempDir::new("ca-kill");
    let (ca_crt, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    run_ok(
        Path::new("openssl"),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&ca_key),
            "-out",
            s(&ca_crt),
            "-subj",
            "/CN=kubecert-ca",
            "-days",
            "1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let (state_dir, bundle) = (dir.path().join("state"), dir.path().join("bundle.pem"));
    let flags = [
        "--ca-state-dir",
        s(&state_dir),
        "--ca-cert",
        s(&ca_crt),
        "--ca-key",
        s(&ca_key),
        "--trust-bundle-out",
        s(&bundle),
    ];
    let run = |args: &[&str]| {
        Command::new(binary("signer")).arg("ca").args(args).args(flags).output().expect("run")
    };
    let status = || {
        let out = run(&["status", "-o", "json"]);
        assert!(out.status.success(), "status after a kill: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(&out.stdout)).expect("status JSON")
    };
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    eprintln!("kill delays seeded with {seed}");
    let mut delays = Delays(seed | 1);
    let steps: [&[&str]; 4] =
        [&["prepare"], &["publish"], &["activate", "--ca-min-publish-age", "0s"], &["retire"]];
    let mut took = [Duration::from_millis(30); 4];
    let started = std::time::Instant::now();
    let (mut done, mut finished) = (0, 0);
    while done < kills {
        for (i, step) in steps.iter().enumerate() {
            if step[0] == "retire" {
                // Retire is refused until 10 s after activation (the old key's last possible leaf):
                // kill it when it has work to do.
                let state = status();
                let active = state["generations"]
                    .as_array()
                    .expect("generations")
                    .iter()
                    .find(|g| g["phase"] == "active");
                let since = active.and_then(|g| g["entered"]["active"].as_u64()).expect("activation time");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                std::thread::sleep(Duration::from_secs((since + 12).saturating_sub(now)));
            }
            for _ in 0..5 {
                let mut child = Command::new(binary("signer"))
                    .arg("ca")
                    .args(*step)
                    .args(flags)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn signer ca");
                std::thread::sleep(delays.below(took[i].as_micros()));
                finished += usize::from(child.try_wait().expect("try_wait").is_some());
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                done += 1;
                check_consistent(&state_dir, &status(), &bundle);
            }
            // Run to completion; retire waits until the old key's last possible leaf expired.
            let t0 = std::time::Instant::now();
            wait_for("the step to complete", Duration::from_secs(30), || {
                let out = run(step);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success() || stderr.contains("retire refused"), "{step:?}: {stderr}");
                out.status.success()
            });
            took[i] = t0.elapsed().min(Duration::from_millis(200));
            let state = status();
            let trusted = check_consistent(&state_dir, &state, &bundle);
            let roots: String = trusted
                .iter()
                .map(|g| std::fs::read_to_string(state_dir.join(format!("{g}/ca.crt"))).expect("root"))
                .collect();
            if bundle.exists() {
                assert_eq!(
                    std::fs::read_to_string(&bundle).expect("bundle"),
                    roots,
                    "after {step:?}: {state}"
                );
            }
        }
    }
    eprintln!("{done} kills ({finished} after the step had already exited) in {:.1?}", started.elapsed());
}

#[test]
fn xtask_e2e_ca_roll_rolls_a_probed_fleet_without_a_failed_request() {
    use std::os::unix::process::CommandExt as _;
    if kubectl().is_none() {
        return;
    }
    let dir = TempDir::new("xtask-ca-roll");
    let bin_dir = binary("signer").parent().expect("target/<profile>").to_path_buf();
    binary("node-agent");
    let log = dir.path().join("xtask.log");
    let out = std::fs::File::create(&log).expect("create log");
    // Its own process group, so that a run over time is stopped with every process it started;
    // its working files (kept when it fails) go under the test's directory.
    let mut child = Command::new(binary("xtask"))
        .args(["e2e", "--ca-roll", "--nodes", "2", "--bin-dir", s(&bin_dir)])
        .env("TMPDIR", dir.path())
        .stdout(out.try_clone().expect("clone log"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start xtask");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!(
                "cargo xtask e2e --ca-roll: not done within 240 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log).expect("read log");
    assert!(status.success(), "cargo xtask e2e --ca-roll failed: {output}");
    assert!(output.contains("failed: 0 "), "{output}");
    for node in ["node-0", "node-1"] {
        let row = output
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no row for {node}: {output}"));
        assert!(row.ends_with(" 2, 2"), "{node} must end with client and serving from generation 2: {row}");
        assert!(row.contains("retire + "), "{node}: the old-root-only client must stop after retire: {row}");
    }
    assert!(output.contains("e2e --ca-roll passed"), "{output}");
}

/// The trust a node held over time: its client CA file (PEM) from the moment it was seen.
struct TrustHistory(Vec<(SystemTime, String)>);

impl TrustHistory {
    /// Records `pem` when it differs from the last trust seen.
    fn observe(&mut self, pem: String) {
        if !pem.is_empty() && self.0.last().is_none_or(|(_, last)| *last != pem) {
            self.0.push((SystemTime::now(), pem));
        }
    }

    /// The trust held at `at`: the last seen at or before it (the node may have taken up a change
    /// earlier than it was seen, so this is the older trust, the stricter check).
    fn at(&self, at: SystemTime) -> &str {
        let held = self.0.iter().take_while(|(seen, _)| *seen <= at).last().or(self.0.first());
        held.map_or("", |(_, pem)| pem.as_str())
    }
}

/// Whether the chain `pem` (leaf first, then what the signer sent with it) verifies with
/// openssl against the roots `trust`, at `at` (Unix seconds) when given.
fn chain_verifies(dir: &Path, trust: &str, pem: &str, at: Option<u64>) -> Result<(), String> {
    let blocks = pem_blocks(pem, "CERTIFICATE");
    let (roots, leaf, chain) = (dir.join("trust.pem"), dir.join("leaf.pem"), dir.join("chain.pem"));
    std::fs::write(&roots, trust).expect("write roots");
    std::fs::write(&leaf, blocks.first().ok_or("no certificate")?).expect("write leaf");
    std::fs::write(&chain, blocks[1..].concat()).expect("write chain");
    let mut command = Command::new("openssl");
    command.args(["verify", "-CAfile", s(&roots)]);
    if blocks.len() > 1 {
        command.args(["-untrusted", s(&chain)]);
    }
    if let Some(at) = at {
        command.args(["-attime", &at.to_string()]);
    }
    let out = command.arg(&leaf).output().expect("run openssl");
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

#[test]
fn killing_the_running_signer_at_random_moments_never_issues_what_the_node_cannot_verify() {
    // `signer serve --ca-auto-roll` with a one-minute CA (prepare and publish at 30 s, activate
    // at 50 s, retire once the old key's 30-second leaves have expired, then the next roll) and
    // a node agent following the ClusterTrustBundles. KUBECERT_CA_SERVE_KILLS times (default
    // 20), and until generation 1 has retired, the serve process is SIGKILLed after a random
    // uptime (seeded from the clock, printed) below 3 s and started again on the same data
    // directory and address. After each kill the journal resumes: status parses, one generation
    // is active and the trust bundle file holds its root. Every certificate the node held (its
    // pair file, read as the run goes) verifies against the node's client CA file at that
    // moment, and every certificate issued (every CSR's status.certificate, with kubectl at the
    // end) against the client CA file the node held when it was issued: no leaf ever comes from
    // a generation the node did not trust yet.
    let Some(kubectl) = kubectl() else { return };
    let kills: usize =
        std::env::var("KUBECERT_CA_SERVE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let limit = Duration::from_secs(150).max(Duration::from_secs(3) * kills as u32);
    let mut roll = start_roll(
        "ca-serve-kill",
        &["--ca-lifetime", "60s", "--ca-auto-roll", "--cluster-signing-duration", "30s", "--backdate", "0s"],
    );
    let (data, bundle) = (roll.data.clone(), roll.bundle.clone());
    let state_dir = data.join("pki/generations");
    let node = roll.dir.path().join("node");
    std::fs::create_dir_all(&node).expect("node dir");
    roll.signer.create_token(&node.join("bootstrap.kubeconfig"));
    let client_ca = node.join("client-ca.crt");
    let trust_flags = ["--trust-source", "bundles", "--client-ca-file", s(&client_ca)];
    let agent = start_node_agent(
        &node,
        "node-1",
        free_local_addr(),
        &trust_flags,
        &roll.dir.path().join("agent.log"),
    );
    // The node starts from its bootstrap kubeconfig's CA, the signer's.
    let mut trust = TrustHistory(vec![]);
    trust.observe(std::fs::read_to_string(roll.signer.ca_cert()).expect("the CA"));
    let current = node.join("pki/kubelet-client-current.pem");
    let mut held: Vec<String> = vec![];
    let work = roll.dir.path().join("verify");
    std::fs::create_dir_all(&work).expect("verify dir");
    let mut observe_node = |trust: &mut TrustHistory| {
        trust.observe(std::fs::read_to_string(&client_ca).unwrap_or_default());
        let pair = std::fs::read_to_string(&current).unwrap_or_default();
        let chain = pem_blocks(&pair, "CERTIFICATE").concat();
        if !chain.is_empty() && held.last() != Some(&chain) {
            let now = trust.at(SystemTime::now()).to_owned();
            if let Err(e) = chain_verifies(&work, &now, &chain, None) {
                panic!("the node holds a certificate its trust does not verify: {e}\n{chain}\ntrust:\n{now}");
            }
            held.push(chain);
        }
    };

    // Every CSR's certificate, read with kubectl before each kill and at the end.
    let mut csrs = std::collections::BTreeMap::new();
    let admin = data.join("admin.kubeconfig");
    // admin.kubeconfig's certificate ends with its root: between a one-minute root's expiry and
    // the retire that re-issues it, the signer refuses it, so a refused read is retried.
    let read_csrs = |csrs: &mut std::collections::BTreeMap<String, String>| {
        let mut out = None;
        wait_for("admin.kubeconfig to list the CSRs", Duration::from_secs(30), || {
            let run = Command::new(&kubectl)
                .args(["--kubeconfig", s(&admin), "get", "csr", "-o", "json"])
                .output()
                .expect("run kubectl");
            out = run.status.success().then(|| String::from_utf8_lossy(&run.stdout).into_owned());
            if out.is_none() {
                std::thread::sleep(Duration::from_millis(250));
            }
            out.is_some()
        });
        let list: serde_json::Value = serde_json::from_str(&out.unwrap_or_default()).expect("kubectl JSON");
        for csr in list["items"].as_array().expect("items") {
            let Some(encoded) = csr["status"]["certificate"].as_str() else { continue };
            let pem =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).expect("base64");
            let name = csr["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            csrs.insert(name, String::from_utf8(pem).expect("PEM"));
        }
    };
    let seed = unix(SystemTime::now()) ^ u64::from(std::process::id()) << 32;
    eprintln!("kill moments seeded with {seed}");
    let mut delays = Delays(seed | 1);
    let started = std::time::Instant::now();
    let (mut done, mut retired, mut most_active) = (0, false, 1);
    let mut phases_seen = std::collections::BTreeSet::new();
    while done < kills || !retired {
        assert!(
            started.elapsed() < limit,
            "{done} kills in {limit:?}, generation 1 retired: {retired}, phases seen: {phases_seen:?}\n{}",
            agent.log()
        );
        let up = delays.below(3_000_000);
        let until = std::time::Instant::now() + up;
        while std::time::Instant::now() < until {
            observe_node(&mut trust);
            std::thread::sleep(Duration::from_millis(100).min(until - std::time::Instant::now()));
        }
        read_csrs(&mut csrs);
        roll.signer.process.kill();
        done += 1;
        let state = status(&data, &bundle);
        check_consistent(&state_dir, &state, &bundle);
        for g in state["generations"].as_array().expect("generations") {
            phases_seen
                .insert((g["id"].as_u64().expect("id"), g["phase"].as_str().expect("phase").to_owned()));
        }
        retired |= state["generations"][0]["phase"] == "retired";
        most_active = most_active.max(state["signing"]["generation"].as_u64().expect("signing"));
        roll.restart();
    }
    // Once more without kills, long enough for the node's trust sync to see the last change.
    let calm = std::time::Instant::now();
    while calm.elapsed() < Duration::from_secs(12) {
        observe_node(&mut trust);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(most_active >= 2, "a new generation signed during the run: {phases_seen:?}");
    read_csrs(&mut csrs);

    let mut issued = 0;
    let mut by_new_generations = 0;
    for (name, pem) in &csrs {
        let leaf = kubecert_csr::parse_certificates_pem(pem.as_bytes()).expect("certificate")[0].clone();
        let at = leaf.not_before;
        if let Err(e) = chain_verifies(&work, trust.at(at), pem, Some(unix(at) + 1)) {
            panic!(
                "CSR {name} was issued a certificate the node's trust did not verify: {e}\n{pem}\ntrust:\n{}",
                trust.at(at)
            );
        }
        issued += 1;
        by_new_generations += usize::from(leaf.issuer.contains("generation"));
    }
    assert!(
        issued >= held.len() && held.len() >= 2,
        "CSRs issued: {issued}, certificates the node held: {}",
        held.len()
    );
    assert!(by_new_generations >= 1, "a certificate from a new generation was issued");
    eprintln!(
        "{done} kills of signer serve in {:.1?}; {issued} certificates issued ({by_new_generations} by a new generation), {} held by the node, {} trust changes; phases seen: {phases_seen:?}",
        started.elapsed(),
        held.len(),
        trust.0.len() - 1
    );
}
