//! `signer serve`: the embedded API and the controllers in one process.
//!
//! The controllers reach the API through the in-memory tower service as the built-in signer
//! identity: the same kube-rs code as against a cluster, without a loopback hop. They start
//! before the listener opens, so `/readyz` answering 200 means both are up.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use kubecert_apiserver::{SIGNER_USER, TlsConfig, UserInfo};
use kubecert_authority::CertificateAuthority;
use kubecert_cli::TlsHandshakes;
use kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT_KUBELET;
use kubecert_k8s::controllers::SignerMetrics;
use tokio_util::sync::CancellationToken;

use crate::ca::runtime::{CaMetrics, CaRuntime};
use crate::config::{SignerConfig, duration};
use crate::pki::{self, DataDir};
use crate::recovery::Recovery;
use crate::run::{node_identity_signer, reloading_signer, run_controllers};

pub async fn serve(
    config: SignerConfig,
    metrics: SignerMetrics,
    ca_metrics: CaMetrics,
    handshakes: TlsHandshakes,
    shutdown: CancellationToken,
) -> Result<()> {
    let root = config.data_dir.clone().context("serve needs --data-dir")?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating data dir {}", root.display()))?;
    let dir = DataDir::new(&root);
    let issuance = config.issuance()?;
    let policy = config.approval_policy()?;
    let cleaner_interval = duration("cleaner_interval", &config.cleaner_interval)?;
    let mut api = kubecert_apiserver::Api::open(&kubecert_apiserver::Config::new(dir.api_state()))
        .context("opening the API state")?;
    if let Some(window) = &config.recovery_max_expired {
        let policy = kubecert_authority::RecoveryPolicy::new(duration("recovery_max_expired", window)?);
        tracing::info!(window = ?policy.max_expired, "recovery with expired client certificates is on");
        api = api.clone().with_routes(Recovery::new(policy, &root, api).routes());
    }
    let client = kube::Client::new(api.service_as(UserInfo::authenticated(SIGNER_USER, vec![])), "default");

    // The cluster CA: CA generations (DATA_DIR/pki, or --ca-state-dir), else configured files
    // (re-read when they change). The API trusts every trusted generation's root for clients.
    let (ca, signer, client_ca_pem, generations) = match config.ca_settings()? {
        Some(settings) => {
            if config.ca_files()?.is_none() {
                pki::load_or_create_ca(&dir, duration("ca_lifetime", &config.ca_lifetime)?)?;
            }
            let runtime = CaRuntime::connect(settings, &config, client.clone(), ca_metrics)?;
            let (state, signer) = runtime.start()?;
            let active = signer.load().authorities().get(SIGNER_KUBE_APISERVER_CLIENT_KUBELET).cloned();
            let trusted = runtime.trusted_roots(&state)?;
            (active.context("no active CA generation")?, signer, trusted, Some((runtime, state)))
        }
        None => {
            let selection = config.ca_files()?.context("serve needs a CA")?;
            let reload = duration("ca_reload_interval", &config.ca_reload_interval)?;
            let signer = reloading_signer(selection.clone(), issuance, reload, shutdown.clone())?;
            let client_ca = match &selection {
                crate::config::CaSelection::Shared(files) => pki::load_ca(files)?,
                crate::config::CaSelection::PerSigner(map) => {
                    let files = map
                        .get(SIGNER_KUBE_APISERVER_CLIENT_KUBELET)
                        .context("signer_cas needs a CA for kubernetes.io/kube-apiserver-client-kubelet: it also authenticates node clients")?;
                    pki::load_ca(files)?
                }
            };
            let pem = client_ca.certificate_pem().to_owned();
            (Arc::new(client_ca), signer, pem, None)
        }
    };
    let (cert_chain_pem, key_pem) = pki::serving_certificate(&dir, &ca, config.listen)?;
    let admin = pki::admin_kubeconfig(&dir, &ca, client_ca_pem.as_bytes(), &pki::server_url(config.listen))?;
    let (key_exchange, observer) = (config.tls_key_exchange, handshakes.observer("apiserver"));
    let tls_config = move |cert_chain_pem, key_pem, client_ca_pem| TlsConfig {
        cert_chain_pem,
        key_pem,
        client_ca_pem,
        key_exchange,
        handshakes: Some(observer.clone()),
    };
    let tls = tls_config(cert_chain_pem, key_pem, client_ca_pem.into_bytes());
    let (tls_updates, tls) = tokio::sync::watch::channel(tls);

    let node_identity = node_identity_signer(&config, config.issuance()?)?;
    let controllers = tokio::spawn(run_controllers(
        client,
        signer.clone(),
        node_identity,
        policy,
        metrics.clone(),
        cleaner_interval,
        shutdown.clone(),
    ));
    metrics.leader.set(1);
    if let Some((mut runtime, state)) = generations {
        // The API follows the roll: a serving certificate from the signing generation, every
        // trusted root for clients, and an admin.kubeconfig that fits both.
        let (listen, server) = (config.listen, pki::server_url(config.listen));
        runtime.follower = Some(Box::new(move |trusted: &str, ca: &CertificateAuthority| {
            let dir = DataDir::new(&root);
            let (cert_chain_pem, key_pem) = pki::serving_certificate(&dir, ca, listen)?;
            pki::admin_kubeconfig(&dir, ca, trusted.as_bytes(), &server)?;
            let client_ca_pem = trusted.as_bytes().to_vec();
            tls_updates.send_replace(tls_config(cert_chain_pem, key_pem, client_ca_pem));
            Ok(())
        }));
        tokio::spawn(runtime.run(state, signer, shutdown.clone()));
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        admin_kubeconfig = %admin.display(),
        "serving the Kubernetes-compatible API"
    );
    api.serve_reloading(listener, tls, shutdown.clone().cancelled_owned()).await.context("API server")?;
    shutdown.cancel();
    controllers.await.context("controllers")?;
    Ok(())
}
