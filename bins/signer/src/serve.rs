//! `signer serve`: the embedded API and the controllers in one process.
//!
//! The controllers reach the API through the in-memory tower service as the built-in signer
//! identity: the same kube-rs code as against a cluster, without a loopback hop. They start
//! before the listener opens, so `/readyz` answering 200 means both are up.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use kubecert_apiserver::{SIGNER_USER, TlsConfig, UserInfo};
use kubecert_authority::{Policy, Signer, SignerAuthorities};
use kubecert_cli::TlsHandshakes;
use kubecert_k8s::controllers::SignerMetrics;
use tokio_util::sync::CancellationToken;

use crate::config::{SignerConfig, duration};
use crate::pki::{self, DataDir};
use crate::run::{reloading_signer, run_controllers};

pub async fn serve(
    config: SignerConfig,
    metrics: SignerMetrics,
    handshakes: TlsHandshakes,
    shutdown: CancellationToken,
) -> Result<()> {
    let root = config.data_dir.clone().context("serve needs --data-dir")?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating data dir {}", root.display()))?;
    let dir = DataDir::new(&root);
    let issuance = config.issuance()?;
    let policy = Policy::new(config.policy.clone())?;
    let cleaner_interval = duration("cleaner_interval", &config.cleaner_interval)?;

    // The cluster CA: configured files (re-read when they change), or DATA_DIR/pki.
    let (ca, signer) = match config.ca_files()? {
        Some(selection) => {
            let reload = duration("ca_reload_interval", &config.ca_reload_interval)?;
            let signer = reloading_signer(selection.clone(), issuance, reload, shutdown.clone())?;
            let client_ca = match &selection {
                crate::config::CaSelection::Shared(files) => pki::load_ca(files)?,
                crate::config::CaSelection::PerSigner(map) => {
                    let files = map
                        .get(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT_KUBELET)
                        .context("signer_cas needs a CA for kubernetes.io/kube-apiserver-client-kubelet: it also authenticates node clients")?;
                    pki::load_ca(files)?
                }
            };
            (client_ca, signer)
        }
        None => {
            let ca = pki::load_or_create_ca(&dir)?;
            let again = pki::load_ca(&dir.ca_files())?;
            let signer =
                Arc::new(ArcSwap::from_pointee(Signer::new(SignerAuthorities::shared(again), issuance)));
            (ca, signer)
        }
    };
    let (cert_chain_pem, key_pem) = pki::serving_certificate(&dir, &ca, config.listen)?;
    let admin = pki::admin_kubeconfig(&dir, &ca, &pki::server_url(config.listen))?;

    let api = kubecert_apiserver::Api::open(&kubecert_apiserver::Config::new(dir.api_state()))
        .context("opening the API state")?;
    let client = kube::Client::new(api.service_as(UserInfo::authenticated(SIGNER_USER, vec![])), "default");
    let controllers = tokio::spawn(run_controllers(
        client,
        signer,
        policy,
        metrics.clone(),
        cleaner_interval,
        shutdown.clone(),
    ));
    metrics.leader.set(1);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tls = TlsConfig {
        cert_chain_pem,
        key_pem,
        client_ca_pem: ca.certificate_pem().as_bytes().to_vec(),
        key_exchange: config.tls_key_exchange,
        handshakes: Some(handshakes.observer("apiserver")),
    };
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        admin_kubeconfig = %admin.display(),
        "serving the Kubernetes-compatible API"
    );
    api.serve(listener, &tls, shutdown.clone().cancelled_owned()).await.context("API server")?;
    shutdown.cancel();
    controllers.await.context("controllers")?;
    Ok(())
}
