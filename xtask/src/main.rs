//! `cargo xtask`: project automation (matklad's xtask convention; the alias is in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask bench [--storm N] [--cluster [N]] [--json PATH]`: the sign path, the bootstrap
//!   storm, the agent's footprint, reload latencies and an agent's restart, reported with
//!   baselines measured in the same run, and with `--cluster` the storm side by side with the
//!   real Kubernetes (see `bench.rs`).
//! - `cargo xtask e2e [--nodes N] [--rotations R] [--seed S]`: the whole system, with seeded
//!   faults (see `e2e.rs`); `cargo xtask e2e --ca-roll [--nodes N]`: one CA roll of a probed
//!   fleet (see `e2e/ca_roll.rs`); `--bin-dir DIR` with either runs binaries already built.
//! - `cargo xtask cluster up|down|build`: the real kube-apiserver (and kube-controller-manager) on
//!   loopback, built from the pinned Go module in `tests/kubernetes/` (see `cluster.rs`).

mod bench;
mod cluster;
mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A cargo command in the workspace root. `cargo run` gave this process xtask's own
/// `CARGO_PKG_*` and friends; a nested cargo that inherits them fingerprints some build scripts
/// (C builds such as the crypto library's) differently and rebuild them on every run, so they
/// are removed.
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::Options::parse(&args[1..]).and_then(|options| bench::run(&options)),
        Some("e2e") => e2e::Options::parse(&args[1..]).and_then(|options| e2e::run(&options)),
        Some("cluster") => cluster::Options::parse(&args[1..]).and_then(|options| cluster::run(&options)),
        _ => {
            eprintln!("usage: cargo xtask <e2e|bench|cluster> [options]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", kubecert_cli::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
