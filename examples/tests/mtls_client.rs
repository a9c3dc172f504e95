//! `mtls-client` against `signer serve`: renewals while requests keep succeeding, and a clear
//! error for an unusable bootstrap kubeconfig.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kubecert_tests::SignerServe;

/// Certificates live 12 s, so renewals come every 8.4–10.8 s.
const SHORT_LIVED: [&str; 4] = ["--cluster-signing-duration", "12s", "--backdate", "0s"];

fn mtls_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtls-client")).args(args).output().expect("run mtls-client")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn renews_twice_while_every_request_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let signer = SignerServe::start(&dir.path().join("data"), &SHORT_LIVED);
    let kubeconfig = dir.path().join("bootstrap.kubeconfig");
    signer.create_token(&kubeconfig);

    let started = Instant::now();
    let out = mtls_client(&["worker-7", "--bootstrap-kubeconfig", path_str(&kubeconfig), "--rotations", "2"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "mtls-client failed:\n{stdout}\n{stderr}\nsigner:\n{}",
        signer.process.log()
    );
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());

    let requests: Vec<&str> = stdout.lines().filter(|l| l.starts_with("request ")).collect();
    assert!(requests.iter().all(|l| l.contains(": ok, ")), "{stdout}");
    let serials: BTreeSet<&str> =
        requests.iter().filter_map(|l| l.split("client certificate serial ").nth(1)).collect();
    assert!(serials.len() >= 3, "first certificate and two renewals: {serials:?}\n{stdout}");
    assert!(stdout.contains("2 renewals") && stdout.contains("none failed"), "{stdout}");
}

#[test]
fn an_unusable_bootstrap_kubeconfig_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.kubeconfig");
    let garbled = dir.path().join("garbled.kubeconfig");
    std::fs::write(&garbled, "apiVersion: v1\nclusters: [this is not\n").unwrap();
    for path in [&missing, &garbled] {
        let out = mtls_client(&["worker-7", "--bootstrap-kubeconfig", path_str(path)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: exit 0", path.display());
        assert!(
            stderr.contains(&format!("reading bootstrap kubeconfig {}", path.display())),
            "{}: {stderr}",
            path.display()
        );
    }
}

#[test]
fn no_server_means_no_renewals_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("bootstrap.kubeconfig");
    let server = kubecert_tests::free_local_addr();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: k, cluster: {{server: 'https://{server}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: abcdef.0123456789abcdef}}}}]\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let out = mtls_client(&["worker-7", "--bootstrap-kubeconfig", path_str(&kubeconfig), "--timeout", "2s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 without a server");
    assert!(stderr.contains("mtls-client: 0 of 2 renewals within 2s"), "{stderr}");
    assert!(stderr.contains("last rotation error: certificate request"), "{stderr}");
}
