//! The command line of the built binary: flag names, `status` exit codes, configuration errors.
//! (End-to-end runs against `signer serve` are in the workspace's `tests/tests/node_agent.rs`.)

use std::process::{Command, Output};

fn node_agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_node-agent")).args(args).output().expect("run node-agent")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn help_lists_the_kubelet_flag_names() {
    let help = text(&node_agent(&["--help"]));
    for flag in [
        "--bootstrap-kubeconfig",
        "--kubeconfig",
        "--cert-dir",
        "--node-name",
        "--rotate-certificates",
        "--rotate-server-certificates",
        "--node-ip",
        "--node-dns",
        "--config",
        "--metrics-addr",
        "--log-format",
        "--feature-gates",
        "status",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn status_of_an_empty_cert_dir_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = node_agent(&["status", "--cert-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("  none in ").count(), 2, "{}", text(&out));
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let out = node_agent(&["--config", "/nonexistent/node-agent.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/node-agent.toml"), "{}", text(&out));
}

#[test]
fn feature_gates_are_accepted_with_a_notice_and_no_kubeconfig_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubelet.conf");
    let out = node_agent(&[
        "--feature-gates=RotateKubeletClientCertificate=true",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cert-dir",
        dir.path().join("pki").to_str().unwrap(),
        "--node-name",
        "n1",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let output = text(&out);
    assert!(!out.status.success(), "{output}");
    assert!(output.contains("client certificate rotation is always available"), "{output}");
    assert!(output.contains("does not exist and no --bootstrap-kubeconfig is given"), "{output}");
}
