//! `cargo xtask`: project automation (matklad's xtask convention; the alias is in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask bench [--json PATH]`: measures and reports ratios against baselines measured
//!   in the same run (machines are shared and noisy; absolute numbers travel badly). Today: the
//!   signer's sign path against raw ring P-256. The bootstrap storm, the agent's footprint and
//!   reload latencies join it with the node-agent.
//! - `cargo xtask e2e [--nodes N] [--rotations R]`: the whole system, with faults (see `e2e.rs`).

mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A cargo command in the workspace root. `cargo run` gave this process xtask's own
/// `CARGO_PKG_*` and friends; a nested cargo that inherits them fingerprints some build scripts
/// (ring's) differently and rebuilds them on every run, so they are removed.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            command.env_remove(&key);
        }
    }
    command
}

/// Criterion's mean estimate for `group/bench`, in nanoseconds.
fn criterion_mean_ns(group: &str, bench: &str) -> Result<f64> {
    let path = workspace_root().join("target/criterion").join(group).join(bench).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let estimates: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    estimates["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{}: no mean.point_estimate", path.display()))
}

/// Section 1: approve + issue per second on one core, and raw ring P-256 verify + sign per
/// second in the same run.
fn bench_sign_path() -> Result<Value> {
    let status = cargo()
        .args(["bench", "-p", "kubecert-authority", "--bench", "sign_path", "--"])
        .args(["--warm-up-time", "2", "--measurement-time", "5", "--noplot"])
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p kubecert-authority --bench sign_path failed");
    }
    let signer = 1e9 / criterion_mean_ns("sign_path", "approve_and_issue")?;
    let ring = 1e9 / criterion_mean_ns("sign_path", "ring_p256_verify_and_sign")?;
    println!();
    println!("{:<40} {:>14} {:>14} {:>8}", "section", "measured/s", "baseline/s", "ratio");
    println!(
        "{:<40} {:>14.0} {:>14.0} {:>8.2}",
        "sign path: approve+issue vs ring P-256",
        signer,
        ring,
        signer / ring
    );
    Ok(json!({
        "approve_and_issue_per_second": signer,
        "ring_p256_verify_and_sign_per_second": ring,
        "ratio": signer / ring,
        "note": "one core (criterion runs one thread); approve+issue parses and verifies the CSR twice and signs once, the baseline verifies once and signs once"
    }))
}

fn bench(args: &[String]) -> Result<()> {
    let mut json_path = workspace_root().join("target/bench/report.json");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--json" => json_path = PathBuf::from(rest.next().context("--json needs a path")?),
            other => bail!(
                "cargo xtask bench: unknown argument {other:?} (usage: cargo xtask bench [--json PATH])"
            ),
        }
    }
    let report = json!({ "sign_path": bench_sign_path()? });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("report: {}", json_path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some("e2e") => e2e::Options::parse(&args[1..]).and_then(|options| e2e::run(&options)),
        _ => {
            eprintln!("usage: cargo xtask <e2e|bench> [options]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
