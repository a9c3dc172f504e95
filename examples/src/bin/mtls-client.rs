//! `mtls-client`: an HTTPS client of the Kubernetes API that keeps its own mTLS client
//! certificate fresh, reusing kubecert's crates the way any agent (not only a kubelet) can.
//!
//! It reads a bootstrap kubeconfig (`signer token create --write-bootstrap-kubeconfig PATH`),
//! obtains a client certificate for `system:node:<NAME>` with the bootstrap token, and from then
//! on authenticates with that certificate only. A `Rotator` renews it at 70–90 % of its lifetime
//! through a `CsrSource`; the new certificate is swapped into a `LiveIdentity` (in memory only),
//! so new connections present it while old ones drain. Meanwhile it lists CSRs (something a node
//! may read) every 200 ms and prints one line per request with the serial of the certificate in
//! use. It exits 0 after `--rotations` renewals without a failed request, non-zero otherwise.
//!
//! Try it against `signer serve --cluster-signing-duration 15s --backdate 0s`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::Parser;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecert_csr::{CertificatePurpose, CertificateTemplate, SIGNER_KUBE_APISERVER_CLIENT_KUBELET};
use kubecert_k8s::CsrSource;
use kubecert_reload::{DEFAULT_DRAIN_GRACE, LiveIdentity, kube_client};
use kubecert_rotation::{
    BoxError, CredentialsSink, Identity, InitialCertificate, RotationConfig, Rotator, fixed_template,
};
use tokio_util::sync::CancellationToken;

/// Time between two authenticated requests.
const REQUEST_PERIOD: Duration = Duration::from_millis(200);

/// Keeps an mTLS client certificate fresh while using it, and reports every request.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The name to get a certificate for: subject `system:node:<NAME>`, organization `system:nodes`.
    name: String,
    /// Kubeconfig with the server, its CA and a bootstrap token.
    #[arg(long, value_name = "PATH")]
    bootstrap_kubeconfig: PathBuf,
    /// Exit after the certificate has been renewed this many times.
    #[arg(long, default_value_t = 2)]
    rotations: u64,
    /// Give up (non-zero exit) if the renewals take longer than this.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Where renewed certificates go: straight into the identity new TLS connections present.
struct MemorySink(LiveIdentity);

impl CredentialsSink for MemorySink {
    async fn publish(&self, identity: Identity) -> Result<(), BoxError> {
        let chain = std::iter::once(identity.leaf()).chain(identity.intermediates()).cloned().collect();
        self.0.swap(kubecert_reload::Identity::new(chain, identity.key())?);
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtls-client: {}", kubecert_cli::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let _ = kubecert_reload::KeyExchange::default().install();
    kubecert_cli::init_logging(kubecert_cli::LogFormat::Text);

    let path = &args.bootstrap_kubeconfig;
    let read = || format!("reading bootstrap kubeconfig {}", path.display());
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(path).with_context(read)?,
        &KubeConfigOptions::default(),
    )
    .await
    .with_context(read)?;
    // The token serves the first request only; after that the certificate alone authenticates.
    let bootstrap = kube_client(&config, LiveIdentity::empty(), DEFAULT_DRAIN_GRACE)?;
    let mut certificate_only = config;
    certificate_only.auth_info = Default::default();
    let live = LiveIdentity::empty();
    let client = kube_client(&certificate_only, live.clone(), DEFAULT_DRAIN_GRACE)?;

    let source = CsrSource::new(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, client.clone())
        .with_bootstrap(move || std::future::ready(Ok(bootstrap.clone())));
    let rotator = Rotator::new(
        RotationConfig::new("mtls-client", CertificatePurpose::Client),
        source,
        MemorySink(live.clone()),
        fixed_template(CertificateTemplate::node_client(&args.name)),
        InitialCertificate::None,
    );
    let status = rotator.status();
    let stop = CancellationToken::new();
    let rotation = tokio::spawn(rotator.run(stop.clone()));

    // The first certificate is not a renewal: wait for `rotations + 1` of them.
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let (mut requests, mut failures) = (0_u64, 0_u64);
    let mut ticks = tokio::time::interval(REQUEST_PERIOD);
    let used = tokio::time::timeout(args.timeout, async {
        while status.borrow().rotations <= args.rotations {
            ticks.tick().await;
            let Some(identity) = live.current() else { continue };
            let serial = &identity.leaf().serial_hex;
            requests += 1;
            match csrs.list(&ListParams::default().limit(1)).await {
                Ok(_) => println!("request {requests}: ok, client certificate serial {serial}"),
                Err(e) => {
                    failures += 1;
                    println!("request {requests}: FAILED, client certificate serial {serial}: {e}");
                }
            }
        }
    })
    .await;
    stop.cancel();
    rotation.await.context("the rotation task panicked")?;

    let done = status.borrow().rotations.saturating_sub(1);
    let last_error = status.borrow().last_error.as_ref().map_or("none".into(), |e| e.to_string());
    ensure!(
        used.is_ok() && failures == 0,
        "{done} of {} renewals within {:?}, {failures} of {requests} requests failed \
         (last rotation error: {last_error})",
        args.rotations,
        args.timeout
    );
    println!("{done} renewals, {requests} requests, none failed");
    Ok(())
}
