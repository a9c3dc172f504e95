//! `node-agent`: kubecert's node half, what the kubelet's certificate manager does, as its own
//! process.
//!
//! - bootstrap: with a bootstrap token, obtain the node's client certificate through a
//!   `node-csr-…` CertificateSigningRequest and write the kubeconfig that uses it (SPEC B-6…B-14);
//! - rotation: replace the client certificate, and the serving certificate when asked, at 70–90 %
//!   of their lifetime, with a new key each time (SPEC §3.5), storing them the kubelet's way and
//!   swapping them into live TLS connections without failing a request;
//! - `/metrics` (the kubelet's certificate metrics, plus rotation-overdue and last-rotation) and
//!   `/healthz`;
//! - the fleet view: its certificates' status on the node's own Lease, for `signer fleet`;
//! - `node-agent status`: what is in a cert dir.
//!
//! It owns configuration (figment over clap), wiring and signals; the logic lives in the
//! `kubecert-*` crates (CSRs, store, rotation, reload, kube glue).

mod addresses;
mod agent;
mod api;
mod bootstrap;
mod cli;
mod config;
mod fleet;
mod http;
mod metrics;
mod sink;
mod status;
mod watchdog;

use std::process::ExitCode;

use clap::Parser as _;
use tokio_util::sync::CancellationToken;

use kubecert_cli::{cancel_on_signals, init_logging};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Status(args)) = &cli.command {
        return ExitCode::from(status::run(&args.cert_dir));
    }
    let config = match config::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("node-agent: {}", kubecert_cli::error_chain(&*e));
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    // One thread: the agent waits almost all the time, and file writes go to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("node-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone())?;
        agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", kubecert_cli::error_chain(&*e));
            eprintln!("node-agent: {}", kubecert_cli::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
