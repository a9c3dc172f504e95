//! `signer`: kubecert's control-plane half. It approves the node CSRs that policy allows, denies
//! the rest with a reason, signs approved ones with the cluster CA and cleans up old ones, as
//! kube-controller-manager's csrapproving, csrsigning and csrcleaner controllers do.
//!
//! - `signer serve`: one process with the embedded Kubernetes-compatible API (kubectl works
//!   against it unchanged) and the controllers.
//! - `signer controller`: the controllers against any Kubernetes API, with optional leader
//!   election so that several replicas can run.
//! - `signer token create`: a bootstrap token for nodes, as `kubeadm token create` makes it.
//! - `signer fleet`: every node's certificates, riskiest first, from their Leases.

mod cli;
mod config;
mod controller;
mod fleet;
mod metrics;
mod pki;
mod run;
mod serve;
mod token;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use kubecert_k8s::controllers::SignerMetrics;
use tokio_util::sync::CancellationToken;

use kubecert_cli::{LogFormat, TlsHandshakes, cancel_on_signals, init_logging};
use kubecert_reload::KeyExchange;

use crate::cli::{Cli, Command, TokenCommand};

/// Which long-running mode was asked for.
enum Mode {
    Serve,
    Controller,
}

async fn run(cli: Cli) -> Result<()> {
    let (mode, used_deprecated_alias, config) = match cli.command {
        Command::Token(TokenCommand::Create(args)) => {
            init_logging(LogFormat::Text);
            KeyExchange::default().install()?;
            return token::create(args).await;
        }
        Command::Fleet(args) => {
            init_logging(LogFormat::Text);
            return fleet::run(args).await;
        }
        Command::Serve(mut args) => {
            let alias = config::apply_deprecated_alias(&mut args.common);
            (Mode::Serve, alias, config::load(&args.common, &args)?)
        }
        Command::Controller(mut args) => {
            let alias = config::apply_deprecated_alias(&mut args.common);
            (Mode::Controller, alias, config::load(&args.common, &args)?)
        }
    };
    init_logging(config.log_format);
    // Before any TLS: the API client's key exchanges (`controller`), counted as they complete.
    let handshakes = TlsHandshakes::default();
    config.tls_key_exchange.install_observed(handshakes.observer("apiserver-client"))?;
    if used_deprecated_alias {
        tracing::warn!(
            "--experimental-cluster-signing-duration is deprecated; use --cluster-signing-duration"
        );
    }

    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let metrics = SignerMetrics::default();
    if let Some(addr) = config.metrics_addr {
        let registry = metrics::registry(&metrics, &handshakes);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = run::serve_metrics(addr, registry, stop.clone()).await {
                tracing::error!(error = %kubecert_cli::error_chain(&*e), "metrics endpoint");
                stop.cancel();
            }
        });
    }
    match mode {
        Mode::Serve => serve::serve(config, metrics, handshakes, shutdown).await,
        Mode::Controller => controller::controller(config, metrics, shutdown).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signer: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signer: {}", kubecert_cli::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
