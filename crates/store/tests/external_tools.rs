//! Files we write, read by the tools of the Kubernetes world: `kubectl` parses our kubeconfig
//! and `openssl` reads the certificate chain and the SEC1 key from our pair file (the same PEM
//! types Go's `tls.X509KeyPair` reads in the kubelet).
//!
//! A missing tool prints a notice and the test passes, unless `KUBECERT_REQUIRE_KUBECTL=1` (set
//! by CI), when it fails.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use jiff::tz::TimeZone;
use kubecert_store::kubeconfig::{self, ClusterEndpoint, PemSource};
use kubecert_store::{CertificateStore, PairSource, StoreConfig};
use support::{TestCa, now};

/// Runs `tool args…`; `None` when the tool is not installed and that is allowed.
fn run(tool: &str, args: &[&str]) -> Option<Output> {
    match Command::new(tool).args(args).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{tool} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(output)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("KUBECERT_REQUIRE_KUBECTL").as_deref() != Ok("1"),
                "{tool} is required (KUBECERT_REQUIRE_KUBECTL=1) but not on PATH"
            );
            println!("notice: {tool} not on PATH; skipping this check");
            None
        }
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn kubectl_reads_our_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubelet.conf");
    let current = dir.path().join("pki/kubelet-client-current.pem");
    let endpoint = ClusterEndpoint {
        server: "https://10.1.2.3:6443".to_owned(),
        certificate_authority: Some(PemSource::File(dir.path().join("ca.crt"))),
        insecure_skip_tls_verify: false,
    };
    kubeconfig::write_for_current_pem(&path, &endpoint, &current).unwrap();
    let path_arg = path.to_str().unwrap();
    let jsonpath = "{.current-context}|{.clusters[0].name}|{.clusters[0].cluster.server}|\
                    {.clusters[0].cluster.certificate-authority}|{.users[0].name}|\
                    {.users[0].user.client-certificate}|{.users[0].user.client-key}|\
                    {.contexts[0].context.namespace}";
    let Some(output) =
        run("kubectl", &["config", "view", "--kubeconfig", path_arg, "-o", &format!("jsonpath={jsonpath}")])
    else {
        return;
    };
    let current = current.to_str().unwrap();
    let ca = dir.path().join("ca.crt");
    let expected = format!(
        "default-context|default-cluster|https://10.1.2.3:6443|{}|default-auth|{current}|{current}|default",
        ca.display()
    );
    assert_eq!(text(&output), expected);
}

#[test]
fn openssl_reads_our_pair_file_and_the_key_matches() {
    let ca = TestCa::new();
    let pair = ca.issue("n1");
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path(), kubecert_store::CLIENT_PREFIX);
    config.time_zone = TimeZone::UTC;
    let store = CertificateStore::open(config).unwrap();
    let committed = store.commit(pair.chain_pem.as_bytes(), pair.key_pem.as_bytes(), now()).unwrap();
    let PairSource::Current { link, .. } = &committed.source else {
        panic!("a commit makes the pair current");
    };
    let file = link.to_str().unwrap();
    let from_cert = run("openssl", &["x509", "-in", file, "-noout", "-pubkey"]);
    let from_key = run("openssl", &["ec", "-in", file, "-pubout"]);
    let subject = run("openssl", &["x509", "-in", file, "-noout", "-subject"]);
    let (Some(from_cert), Some(from_key), Some(subject)) = (from_cert, from_key, subject) else {
        return;
    };
    assert_eq!(text(&from_cert), text(&from_key), "the key in the file belongs to its first certificate");
    assert!(text(&subject).contains("system:node:n1"), "{}", text(&subject));
    assert!(Path::new(file).exists());
}
