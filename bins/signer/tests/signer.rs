//! The `signer` binary end to end: `serve` with the real `kubectl` and `openssl`, `token create`,
//! and two `controller --leader-elect` replicas against one `serve`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kubecert_tests::{Process, SignerServe, binary, kubectl, run_ok, wait_for};

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node client CSR made by openssl, as a manifest for `kubectl create -f`.
fn node_csr_manifest(dir: &Path, name: &str, node: &str) -> std::path::PathBuf {
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{name}.key")]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/O=system:nodes/CN=system:node:{node}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    use base64::Engine as _;
    let request = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(dir.join(format!("{name}.csr"))).unwrap());
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [\"digital signature\", \"client auth\"]\n"
        ),
    )
    .unwrap();
    manifest
}

fn condition(kubectl: &Path, kubeconfig: &Path, name: &str) -> String {
    let kc = kubeconfig.to_str().unwrap();
    let table = run_ok(kubectl, &["--kubeconfig", kc, "get", "csr", name, "--no-headers"]);
    table.split_whitespace().last().unwrap_or_default().to_owned()
}

#[test]
fn bootstrap_token_csr_is_approved_and_issued_and_openssl_agrees() {
    let Some(kubectl) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let serve = SignerServe::start(&dir.path().join("data"), &[]);
    let admin = serve.admin_kubeconfig();

    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    let token = serve.create_token(&bootstrap);
    assert_eq!(token.len(), 23, "{token}");
    assert!(token.chars().all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()), "{token}");
    assert_eq!(token.find('.'), Some(6), "{token}");

    let manifest = node_csr_manifest(dir.path(), "n1-client", "n1");
    let created = run_ok(
        &kubectl,
        &["--kubeconfig", bootstrap.to_str().unwrap(), "create", "-f", manifest.to_str().unwrap()],
    );
    assert_eq!(created.trim(), "certificatesigningrequest.certificates.k8s.io/n1-client created");
    wait_for("Approved,Issued", Duration::from_secs(20), || {
        condition(&kubectl, &admin, "n1-client") == "Approved,Issued"
    });
    let table = run_ok(&kubectl, &["--kubeconfig", admin.to_str().unwrap(), "get", "csr", "n1-client"]);
    assert!(
        table.contains(&format!("system:bootstrap:{}", &token[..6])),
        "requestor is the token user:\n{table}"
    );

    let cert = run_ok(
        &kubectl,
        &[
            "--kubeconfig",
            admin.to_str().unwrap(),
            "get",
            "csr",
            "n1-client",
            "-o",
            "jsonpath={.status.certificate}",
        ],
    );
    use base64::Engine as _;
    std::fs::write(
        dir.path().join("n1.crt"),
        base64::engine::general_purpose::STANDARD.decode(cert.trim()).unwrap(),
    )
    .unwrap();
    let ca = serve.ca_cert();
    let verified =
        openssl(dir.path(), &["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslclient", "n1.crt"]);
    assert_eq!(verified.trim(), "n1.crt: OK");
    let text = openssl(dir.path(), &["x509", "-in", "n1.crt", "-noout", "-text"]);
    for expected in [
        "TLS Web Client Authentication",
        "Digital Signature",
        "CA:FALSE",
        "CN=system:node:n1",
        "O=system:nodes",
    ] {
        assert!(text.replace(" = ", "=").contains(expected), "{expected} missing:\n{text}");
    }
    assert!(!text.contains("Subject Alternative Name"), "no SANs on a client certificate:\n{text}");
    let dates = openssl(dir.path(), &["x509", "-in", "n1.crt", "-noout", "-startdate", "-enddate"]);
    assert!(dates.contains("notBefore=") && dates.contains("notAfter="), "{dates}");
}

#[test]
fn a_second_start_reuses_the_ca_and_the_state() {
    let Some(kubectl) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = SignerServe::start(&data, &[]);
    let ca = std::fs::read(first.ca_cert()).unwrap();
    let admin = std::fs::read(first.admin_kubeconfig()).unwrap();
    let manifest = node_csr_manifest(dir.path(), "kept", "n2");
    let admin_path = first.admin_kubeconfig();
    run_ok(
        &kubectl,
        &["--kubeconfig", admin_path.to_str().unwrap(), "create", "-f", manifest.to_str().unwrap()],
    );
    let addr = first.addr;
    first.process.kill();

    let second = SignerServe::start_at(&data, addr, &[]);
    assert_eq!(std::fs::read(second.ca_cert()).unwrap(), ca, "same CA");
    assert_eq!(std::fs::read(second.admin_kubeconfig()).unwrap(), admin, "same admin kubeconfig");
    let names = run_ok(&kubectl, &["--kubeconfig", admin_path.to_str().unwrap(), "get", "csr", "-o", "name"]);
    assert_eq!(names.trim(), "certificatesigningrequest.certificates.k8s.io/kept");
}

#[test]
fn sigterm_shuts_serve_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = SignerServe::start(&dir.path().join("data"), &[]);
    run_ok(Path::new("kill"), &["-TERM", &serve.process.id().to_string()]);
    let mut status = None;
    wait_for("exit after SIGTERM", Duration::from_secs(10), || {
        status = serve.process.try_wait();
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}:\n{}", serve.process.log());
    assert!(serve.process.log().contains("SIGTERM: shutting down"), "{}", serve.process.log());
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["serve", "--data-dir", data, "--config", "/nonexistent/signer.toml"],
            "/nonexistent/signer.toml",
        ),
        (vec!["serve", "--data-dir", data, "--cluster-signing-duration", "soon"], "cluster_signing_duration"),
        (vec!["controller", "--ca-cert", "/x"], "ca_cert and ca_key must be given together"),
        (vec!["token", "create", "--kubeconfig", "/nonexistent", "--groups", "admins"], "--groups"),
    ] {
        let out = Command::new(binary("signer")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {expected:?} not in {stderr}");
    }
    let out = Command::new(binary("signer"))
        .args(["serve", "--data-dir", data, "--experimental-cluster-signing-duration", "bogus"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deprecated") && stderr.contains("cluster_signing_duration"), "{stderr}");
}

/// `GET /metrics` over plain HTTP; the value of the first sample whose line starts with `name`.
fn metric(addr: &str, name: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return f64::NAN };
    let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn two_leader_elected_controllers_hand_over_and_issue_once() {
    let Some(kubectl) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The embedded approver leaves node client CSRs alone, so only a leading replica approves.
    let serve_config = dir.path().join("serve.toml");
    std::fs::write(
        &serve_config,
        "[policy.signers.\"kubernetes.io/kube-apiserver-client-kubelet\"]\nenabled = false\n",
    )
    .unwrap();
    let serve_metrics = kubecert_tests::free_local_addr().to_string();
    let serve = SignerServe::start(
        &dir.path().join("data"),
        &["--config", serve_config.to_str().unwrap(), "--metrics-addr", &serve_metrics],
    );
    let admin = serve.admin_kubeconfig();
    let controller_config = dir.path().join("controller.toml");
    std::fs::write(&controller_config, "lease_duration = \"3s\"\n").unwrap();
    let (ca_cert, ca_key) = (serve.ca_cert(), serve.data_dir.join("pki/ca.key"));
    let start_replica = |name: &str, metrics: &str| {
        let args = [
            "controller",
            "--config",
            controller_config.to_str().unwrap(),
            "--kubeconfig",
            admin.to_str().unwrap(),
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
            "--leader-elect",
            "--lease-namespace",
            "kube-system",
            "--metrics-addr",
            metrics,
        ];
        Process::spawn(&binary("signer"), &args, &dir.path().join(format!("{name}.log")))
    };
    let (a_metrics, b_metrics) =
        (kubecert_tests::free_local_addr().to_string(), kubecert_tests::free_local_addr().to_string());
    let mut a = start_replica("a", &a_metrics);
    let mut b = start_replica("b", &b_metrics);
    let leaders =
        || (metric(&a_metrics, "kubecert_signer_leader"), metric(&b_metrics, "kubecert_signer_leader"));
    wait_for("one leader", Duration::from_secs(20), || matches!(leaders(), (l1, l2) if l1 + l2 == 1.0));
    std::thread::sleep(Duration::from_secs(2));
    let (la, lb) = leaders();
    assert_eq!(la + lb, 1.0, "exactly one leader: a={la} b={lb}");

    let kc = admin.to_str().unwrap();
    let issued = |name: &str| condition(&kubectl, &admin, name) == "Approved,Issued";
    let first = node_csr_manifest(dir.path(), "before", "n1");
    run_ok(&kubectl, &["--kubeconfig", kc, "create", "-f", first.to_str().unwrap()]);
    wait_for("issued by the leader", Duration::from_secs(20), || issued("before"));

    // Kill the leader without a goodbye: the other takes over within the lease duration.
    let (leader, follower_metrics) = if la == 1.0 { (&mut a, &b_metrics) } else { (&mut b, &a_metrics) };
    leader.kill();
    let killed = std::time::Instant::now();
    wait_for("the follower leads", Duration::from_secs(15), || {
        metric(follower_metrics, "kubecert_signer_leader") == 1.0
    });
    assert!(killed.elapsed() < Duration::from_secs(3 + 4), "handover took {:?}", killed.elapsed());
    let second = node_csr_manifest(dir.path(), "after", "n2");
    run_ok(&kubectl, &["--kubeconfig", kc, "create", "-f", second.to_str().unwrap()]);
    wait_for("issued by the new leader", Duration::from_secs(20), || issued("after"));

    // Two CSRs, two issuances in all, across the embedded signer and both replicas.
    std::thread::sleep(Duration::from_millis(500));
    let total: f64 = [&serve_metrics, &a_metrics, &b_metrics]
        .iter()
        .map(|addr| metric(addr, "kubecert_signer_issuances_total"))
        .filter(|v| !v.is_nan())
        .sum();
    // The killed replica's count is gone with it; it can only have issued "before".
    assert!(total <= 2.0, "no CSR issued twice (saw {total})");
}
