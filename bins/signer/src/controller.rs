//! `signer controller`: the controllers against any Kubernetes API, optionally as one of several
//! replicas with leader election.

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecert_k8s::controllers::{LeaderElection, SignerMetrics, run_when_leader};
use tokio_util::sync::CancellationToken;

use crate::ca::runtime::{CaMetrics, CaRuntime};
use crate::config::{SignerConfig, duration};
use crate::pki::host_name;
use crate::run::{node_identity_signer, reloading_signer, run_controllers};

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("using kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

pub async fn controller(
    config: SignerConfig,
    metrics: SignerMetrics,
    ca_metrics: CaMetrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let selection = config
        .ca_files()?
        .context("controller needs --ca-cert and --ca-key (or signer_cas in the config)")?;
    let ca_settings = config.ca_settings()?;
    let issuance = config.issuance()?;
    let policy = config.approval_policy()?;
    let cleaner_interval = duration("cleaner_interval", &config.cleaner_interval)?;
    let reload = duration("ca_reload_interval", &config.ca_reload_interval)?;
    let client = match &config.kubeconfig {
        Some(path) => client_from_kubeconfig(path).await?,
        // In a Pod: the service account; elsewhere KUBECONFIG or ~/.kube/config.
        None => kube::Client::try_default()
            .await
            .context("no --kubeconfig, and no in-cluster or default kubeconfig")?,
    };
    // With --ca-state-dir the CA generations decide which key signs; else the CA files do.
    let node_identity = node_identity_signer(&config, config.issuance()?)?;
    let signer = match ca_settings {
        Some(settings) => {
            let runtime = CaRuntime::connect(settings, &config, client.clone(), ca_metrics)?;
            let (state, signer) = runtime.start()?;
            tokio::spawn(runtime.run(state, signer.clone(), shutdown.clone()));
            signer
        }
        None => reloading_signer(selection, issuance, reload, shutdown.clone())?,
    };

    if !config.leader_elect {
        metrics.leader.set(1);
        run_controllers(client, signer, node_identity, policy, metrics, cleaner_interval, shutdown).await;
        return Ok(());
    }
    let lease_duration = duration("lease_duration", &config.lease_duration)?.as_secs().max(3);
    let suffix: String = crate::token::random_chars(5)?;
    let election = LeaderElection {
        namespace: config.lease_namespace.clone(),
        lease_name: config.lease_name.clone(),
        identity: format!("{}_{suffix}", host_name().unwrap_or_else(|| "signer".into())),
        lease_duration_seconds: lease_duration,
        renew_grace_seconds: lease_duration / 3,
    };
    tracing::info!(identity = %election.identity, lease = %format!("{}/{}", election.namespace, election.lease_name), "leader election");
    let work_client = client.clone();
    let work_metrics = metrics.clone();
    run_when_leader(client, &election, &metrics, shutdown, move |term| {
        run_controllers(
            work_client.clone(),
            signer.clone(),
            node_identity.clone(),
            policy.clone(),
            work_metrics.clone(),
            cleaner_interval,
            term,
        )
    })
    .await?;
    Ok(())
}
