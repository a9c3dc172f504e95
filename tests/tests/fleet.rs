//! The fleet view end to end: two node agents against `signer serve` publish their
//! certificates' status on their own Leases, and `signer fleet` shows both, as a table and as
//! JSON, judged against the CA that issued them or against another one (`--ca-cert`).

use std::path::Path;
use std::time::Duration;

use kubecert_tests::{
    SERVING_POLICY, SignerServe, TempDir, binary, free_local_addr, run_ok, start_node_agent, wait_for,
};
use serde_json::Value;

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `signer fleet --kubeconfig <admin> -o json <extra…>` as JSON.
fn fleet_json(serve: &SignerServe, extra: &[&str]) -> Value {
    let admin = serve.admin_kubeconfig();
    let mut args = vec!["fleet", "--kubeconfig", s(&admin), "-o", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&run_ok(&binary("signer"), &args)).expect("signer fleet -o json prints JSON")
}

/// The key id `signer fleet` gives a CA certificate file: its subject key identifier.
fn ski_of(pem_file: &Path) -> String {
    let out =
        run_ok(Path::new("openssl"), &["x509", "-in", s(pem_file), "-noout", "-ext", "subjectKeyIdentifier"]);
    out.lines().nth(1).expect("an SKI line").trim().replace(':', "").to_lowercase()
}

#[test]
fn signer_fleet_shows_two_agents_from_their_leases() {
    let dir = TempDir::new("fleet");
    let config = dir.path().join("signer.toml");
    std::fs::write(&config, SERVING_POLICY).expect("write signer.toml");
    let serve = SignerServe::start(&dir.path().join("signer"), &["--config", s(&config)]);
    let nodes = [
        ("fleet-a", vec![]),
        (
            "fleet-b",
            vec![
                "--rotate-server-certificates=true",
                "--node-ip=127.0.0.1",
                "--node-dns=fleet-b.allowed.example",
            ],
        ),
    ];
    let _agents: Vec<_> = nodes
        .iter()
        .map(|(name, extra)| {
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir).expect("node dir");
            serve.create_token(&node_dir.join("bootstrap.kubeconfig"));
            start_node_agent(
                &node_dir,
                name,
                free_local_addr(),
                extra,
                &dir.path().join(format!("{name}.log")),
            )
        })
        .collect();

    // Both publish once they hold their certificates (fleet-b also its serving one).
    let mut view = Value::Null;
    wait_for("both nodes in signer fleet", Duration::from_secs(60), || {
        let seen = fleet_json(&serve, &[]);
        if seen != view {
            eprintln!("signer fleet: {seen}");
            view = seen;
        }
        let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
        nodes.len() == 2
            && nodes.iter().all(|n| n["clientExpires"].is_string())
            && nodes.iter().any(|n| n["servingExpires"].is_string())
    });
    let ca = ski_of(&serve.ca_cert());
    assert_eq!(view["currentCa"], ca, "{view:#}");
    for node in view["nodes"].as_array().expect("nodes") {
        assert_eq!(node["risks"], serde_json::json!([]), "{view:#}");
        assert_eq!(node["issuers"], serde_json::json!([ca]), "{view:#}");
        assert_eq!(node["trusts"], serde_json::json!([ca]), "{view:#}");
    }

    // The table: the header, then a row per node, all well.
    let admin = serve.admin_kubeconfig();
    let table = run_ok(&binary("signer"), &["fleet", "--kubeconfig", s(&admin)]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NODE", "CLIENT-EXPIRES", "SERVING-EXPIRES", "CA", "TRUSTS", "STATUS"], "{table}");
    assert_eq!(rows.len(), 3, "{table}");
    let short = &ca[..8];
    for row in &rows[1..] {
        assert_eq!(&row[3..], [short, short, "OK"], "{table}");
        assert!(row[1].ends_with('d'), "a year's certificate: {table}");
    }
    let b = rows.iter().find(|r| r[0] == "fleet-b").expect("fleet-b row");
    assert!(b[2].ends_with('d'), "{table}");
    let a = rows.iter().find(|r| r[0] == "fleet-a").expect("fleet-a row");
    assert_eq!(a[2], "<none>", "{table}");

    // Against another CA, both are on an old one and do not trust the new one.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = dir.path().join("other-ca.crt");
    std::fs::write(&other, params.self_signed(&key).expect("self-sign").pem()).expect("write the other CA");
    let view = fleet_json(&serve, &["--ca-cert", s(&other)]);
    assert_eq!(view["currentCa"], ski_of(&other), "{view:#}");
    for node in view["nodes"].as_array().expect("nodes") {
        assert_eq!(node["risks"], serde_json::json!(["OldCA", "NotTrustingCA"]), "{view:#}");
    }
    let out = std::process::Command::new(binary("signer"))
        .args(["fleet", "--kubeconfig", s(&admin), "--ca-cert", s(&dir.path().join("missing.crt"))])
        .output()
        .expect("run signer fleet");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.crt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
