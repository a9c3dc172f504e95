//! The running agent: the metrics endpoint, bootstrap, then the rotation loops for the client
//! and (optionally) serving certificates, the identities they feed, the T-3 watchdog and the
//! renewal canary.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result};
use kubecert_csr::{
    CertificatePurpose, CertificateTemplate, KeyAlgorithm, SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
    SIGNER_KUBECERT_NODE_IDENTITY, SIGNER_KUBELET_SERVING,
};
use kubecert_k8s::CsrSource;
use kubecert_reload::{Identity, LiveIdentity};
use kubecert_rotation::{InitialCertificate, RotationConfig, RotationStatus, Rotator, fixed_template};
use kubecert_store::kubeconfig::BootstrapKubeconfig;
use kubecert_store::{CLIENT_PREFIX, CertificateStore, SERVER_PREFIX, StoreConfig, StoredPair};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ApiHealth, BootstrapCredentials, client_for, kubeconfig_identity};
use crate::bootstrap::{BootstrapOptions, BootstrapPaths, ensure_client_certificate};
use crate::canary::{self, Canary, CanaryMetrics};
use crate::config::{AgentConfig, feature_gate_notice};
use crate::metrics::{Metrics, Which};
use crate::sink::{StoreSink, log_warnings};
use crate::trust;
use crate::watchdog;
use crate::{fleet, http};

/// Runs until `cancel` (then `Ok`) or until something fatal happens, such as the T-3 watchdog
/// deciding to exit (then `Err`, for a non-zero exit status).
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<()> {
    let node_name = config.node_name()?;
    for (gate, enabled) in &config.feature_gates {
        info!("{}", feature_gate_notice(gate, *enabled));
    }
    info!(
        node = %node_name,
        cert_dir = %config.cert_dir.display(),
        kubeconfig = %config.kubeconfig.display(),
        rotate_certificates = config.rotate_certificates,
        rotate_server_certificates = config.rotate_server_certificates,
        "node-agent starting"
    );

    let identity_algorithm = config.node_identity_key_algorithm.map(|a| a.algorithm()).transpose()?;
    let client_live = LiveIdentity::empty();
    let server_live = LiveIdentity::empty();
    let canary_interval = config.canary_interval()?;
    let canary_metrics = canary_interval.map(|_| CanaryMetrics::default());
    let mut metrics = Metrics::new(client_live.clone(), server_live.clone());
    // Before any TLS: the API clients' key exchanges, counted as they complete.
    config.tls_key_exchange.install_observed(metrics.handshakes().observer("apiserver-client"))?;
    if let Some(canary) = &canary_metrics {
        metrics = metrics.with_canary(canary.clone());
    }
    if config.trust_source.is_some() {
        metrics = metrics.with_trust();
    }
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();

    // Serve from disk first: the pairs an earlier run stored are in use before the endpoint
    // listens, so that a restarted agent answers `/healthz` (over TLS with its serving
    // certificate) from its first connection, before anything talks to the API server.
    let client_store = open_store(&config.cert_dir, CLIENT_PREFIX)?;
    if let Ok(Some(pair)) = client_store.current() {
        // Errors are reported when the pair is taken up after bootstrap.
        let _ = publish(&pair, &client_live);
    }
    let server = config
        .rotate_server_certificates
        .then(|| open_store(&config.cert_dir, SERVER_PREFIX))
        .transpose()?
        .map(|store| {
            let initial = initial_stored_certificate(&store, &server_live);
            (store, initial)
        });
    // With --trust-source the trusted roots follow the CA roll (see trust.rs).
    let trust = config.trust_source.as_ref().and_then(|_| {
        trust::initial_roots(&[
            config.client_ca_file.clone(),
            Some(config.kubeconfig.clone()),
            config.bootstrap_kubeconfig.clone(),
        ])
    });
    let roots = trust.as_ref().map(|(roots, _)| roots.clone());
    let listener = http::bind(config.metrics_addr).await?;
    let serving_tls = config.rotate_server_certificates.then(|| http::Tls {
        identity: server_live.clone(),
        key_exchange: config.tls_key_exchange,
        handshakes: metrics.handshakes().observer("serving"),
    });
    tasks.spawn(http::serve(
        listener,
        http::router(metrics.clone()),
        serving_tls,
        roots.clone(),
        cancel.clone(),
    ));

    let options = BootstrapOptions { reuse_stored_key: !config.rotate_certificates };
    let paths = BootstrapPaths {
        kubeconfig: &config.kubeconfig,
        bootstrap_kubeconfig: config.bootstrap_kubeconfig.as_deref(),
        cert_dir: &config.cert_dir,
    };
    tokio::select! {
        bootstrapped = ensure_client_certificate(paths, &node_name, &client_store, options) => bootstrapped?,
        () = cancel.cancelled() => return Ok(()),
    }

    let user_kubeconfig = BootstrapKubeconfig::load(&config.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", config.kubeconfig.display()))?;
    let initial = initial_client_certificate(&client_store, &user_kubeconfig, &client_live)?;
    let mut fleet = fleet::Sources {
        node_name: node_name.clone(),
        kubeconfig: config.kubeconfig.clone(),
        client: client_live.clone(),
        client_rotation: None,
        serving: None,
    };
    let mut loops = Loops {
        user: client_for(&config.kubeconfig, client_live.clone(), roots.as_ref()).await?,
        health: ApiHealth::default(),
        key_algorithm: config.key_algorithm.algorithm(),
        cancel: cancel.clone(),
        tasks,
    };

    if let (Some(interval), Some(canary_metrics)) = (canary_interval, canary_metrics) {
        let canary = Canary {
            kubeconfig: config.kubeconfig.clone(),
            node_name: node_name.clone(),
            live: client_live.clone(),
            user: loops.user.clone(),
            key_algorithm: loops.key_algorithm,
        };
        info!(interval = ?interval, "renewal canary on");
        let stop = cancel.clone();
        loops.tasks.spawn(async move {
            canary::run(canary, interval, canary_metrics, stop).await;
            Ok(())
        });
    }

    if let (Some(source), Some((roots, initial))) = (&config.trust_source, trust) {
        let keeper = trust::TrustKeeper {
            source: trust::TrustSource::parse(source, &config.trust_bundle_name),
            client_ca_file: config.client_ca_file.clone(),
            kubeconfig: config.kubeconfig.clone(),
            roots,
            metrics: metrics.trust.clone().unwrap_or_default(),
            current: Some(initial),
            bundles: None,
        };
        let (user, stop) = (loops.user.clone(), cancel.clone());
        loops.tasks.spawn(async move {
            keeper.run(Some(user), stop).await;
            Ok(())
        });
    } else if config.trust_source.is_some() {
        warn!(
            "--trust-source: no CA to start from (no client CA file or kubeconfig CA); trust is not followed"
        );
    }

    if config.rotate_certificates {
        let bootstrap = config.bootstrap_kubeconfig.clone().map(BootstrapCredentials::new);
        let source = loops.source(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, bootstrap);
        let sink = StoreSink::new(client_store, client_live.clone(), loops.health.clone());
        let template = fixed_template(CertificateTemplate::node_client(&node_name));
        let rotation = loops.rotation(CLIENT_PREFIX, CertificatePurpose::Client);
        let status = loops.spawn(rotation, source, sink, template, initial);
        fleet.client_rotation = Some(status.clone());
        metrics.track(Which::Client, status);
        let limit = config.exit_after_expired()?;
        loops.tasks.spawn(watchdog::run(client_live, loops.health.clone(), cancel.clone(), limit));
    } else {
        info!("client certificate rotation is off (--rotate-certificates=false)");
    }

    if let Some((server_store, initial)) = server {
        let (dns_names, ip_addresses) = config.serving_names()?;
        let (templates_tx, templates) =
            watch::channel(serving_template(&node_name, &dns_names, &ip_addresses));
        if config.node_ip.is_empty() {
            follow_serving_addresses(templates_tx, node_name.clone(), dns_names);
        }
        let source = loops.source(SIGNER_KUBELET_SERVING, None);
        let sink = StoreSink::new(server_store, server_live.clone(), loops.health.clone());
        let rotation = loops.rotation(SERVER_PREFIX, CertificatePurpose::Serving);
        let status = loops.spawn(rotation, source, sink, templates, initial);
        fleet.serving = Some((server_live, status.clone()));
        metrics.track(Which::Server, status.clone());
        let stop = cancel.clone();
        loops.tasks.spawn(async move {
            metrics.observe_server_rotations(status, stop).await;
            Ok(())
        });
    }

    if let Some(algorithm) = identity_algorithm {
        // The post-quantum identity: the client certificate's subject and usages, its own key
        // type and store (kubelet-identity-*.pem), from kubecert.io/node-identity. It
        // authenticates nothing to the API server; kubecert-aware peers verify it.
        let store = open_store(&config.cert_dir, IDENTITY_PREFIX)?;
        let live = LiveIdentity::empty();
        let initial = initial_stored_certificate(&store, &live);
        let source = loops.source(SIGNER_KUBECERT_NODE_IDENTITY, None);
        let sink = StoreSink::new(store, live, loops.health.clone());
        let template = fixed_template(CertificateTemplate::node_client(&node_name));
        let rotation = RotationConfig {
            key_algorithm: algorithm,
            ..RotationConfig::new(IDENTITY_PREFIX, CertificatePurpose::Client)
        };
        info!(algorithm = %algorithm, "node identity rotation is on");
        loops.spawn(rotation, source, sink, template, initial);
    }

    loops.tasks.spawn(fleet::run(loops.user.clone(), fleet, cancel.clone()));

    while let Some(finished) = loops.tasks.join_next().await {
        if let Err(e) = finished.context("an agent task panicked").and_then(|result| result) {
            cancel.cancel();
            return Err(e);
        }
    }
    Ok(())
}

/// File prefix of the post-quantum node identity in the cert dir.
const IDENTITY_PREFIX: &str = "kubelet-identity";

/// What the rotation loops share: the node's API client, the API health they report, and the
/// tasks they run as.
struct Loops {
    user: kube::Client,
    health: ApiHealth,
    key_algorithm: KeyAlgorithm,
    cancel: CancellationToken,
    tasks: JoinSet<Result<()>>,
}

impl Loops {
    /// A source of certificates from `signer_name`, with `bootstrap` credentials as the fallback.
    fn source(&self, signer_name: &'static str, bootstrap: Option<BootstrapCredentials>) -> CsrSource {
        let source = CsrSource::new(signer_name, self.user.clone()).with_health(self.health.observer());
        match bootstrap {
            Some(credentials) => source.with_bootstrap(move || credentials.connect()),
            None => source,
        }
    }

    /// The rotation settings of a loop named `name` with the agent's key algorithm.
    fn rotation(&self, name: &str, purpose: CertificatePurpose) -> RotationConfig {
        RotationConfig { key_algorithm: self.key_algorithm, ..RotationConfig::new(name, purpose) }
    }

    /// Starts a rotation loop; returns its status.
    fn spawn(
        &mut self,
        config: RotationConfig,
        source: CsrSource,
        sink: StoreSink,
        templates: watch::Receiver<Option<CertificateTemplate>>,
        initial: InitialCertificate,
    ) -> watch::Receiver<RotationStatus> {
        let rotator = Rotator::new(config, source, sink, templates, initial);
        let status = rotator.status();
        let stop = self.cancel.clone();
        self.tasks.spawn(async move {
            rotator.run(stop).await;
            Ok(())
        });
        status
    }
}

/// The serving template for these names; none without an IP address (SPEC SV-3).
fn serving_template(
    node_name: &str,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
) -> Option<CertificateTemplate> {
    if ip_addresses.is_empty() {
        warn!(
            "no IP address for the serving certificate (set --node-ip): none is requested until there is one"
        );
        return None;
    }
    info!(dns = ?dns_names, ip = ?ip_addresses, "serving certificate names");
    Some(CertificateTemplate::node_serving(node_name, dns_names, ip_addresses))
}

/// SPEC E-4: when the serving IPs are the host's own, a change of the host's addresses changes
/// the template; the rotation loop then requests again at once (and cancels a pending request)
/// if the certificate in use lacks a new name. Without a working notifier the names stay fixed.
fn follow_serving_addresses(
    templates: watch::Sender<Option<CertificateTemplate>>,
    node_name: String,
    dns_names: Vec<String>,
) {
    let followed = crate::addresses::follow_host_addresses(move |ip_addresses| {
        let template = serving_template(&node_name, &dns_names, &ip_addresses);
        templates.send_if_modified(|current| {
            let changed = *current != template;
            *current = template;
            changed
        });
        !templates.is_closed()
    });
    if let Err(e) = followed {
        warn!(error = %e, "cannot follow the host's addresses; the serving names stay as they are now");
    }
}

fn open_store(cert_dir: &Path, prefix: &str) -> Result<CertificateStore> {
    CertificateStore::open(StoreConfig::new(cert_dir, prefix))
        .with_context(|| format!("opening the {prefix} certificate store in {}", cert_dir.display()))
}

/// Publishes `pair` as the identity in use, unless it already is (the client pair is published
/// before bootstrap, and again after it).
fn publish(pair: &StoredPair, live: &LiveIdentity) -> Result<()> {
    let identity = Identity::new(pair.chain.clone(), &pair.key).context("loading the stored pair for TLS")?;
    if live.swap_if_changed(identity).is_some() {
        log_warnings(pair);
    }
    Ok(())
}

/// The client certificate to start with (SPEC M-2, B-5): the store's current pair; else the
/// kubeconfig's own certificate (files: in use as they are; inline data: replaced at once).
fn initial_client_certificate(
    store: &CertificateStore,
    kubeconfig: &BootstrapKubeconfig,
    live: &LiveIdentity,
) -> Result<InitialCertificate> {
    if let Some(pair) = store.current().context("reading the stored client certificate")? {
        publish(&pair, live)?;
        return Ok(InitialCertificate::Current(pair.leaf().clone()));
    }
    Ok(match kubeconfig_identity(kubeconfig)? {
        Some((identity, inline)) => {
            let leaf = identity.leaf().clone();
            live.swap(identity);
            if inline { InitialCertificate::BootstrapData(leaf) } else { InitialCertificate::Current(leaf) }
        }
        None => InitialCertificate::None,
    })
}

/// The serving certificate to start with: the store's current pair, if it loads.
fn initial_stored_certificate(store: &CertificateStore, live: &LiveIdentity) -> InitialCertificate {
    let loaded = store.current().map_err(anyhow::Error::from).and_then(|pair| match pair {
        Some(pair) => publish(&pair, live).map(|()| Some(pair)),
        None => Ok(None),
    });
    match loaded {
        Ok(Some(pair)) => InitialCertificate::Current(pair.leaf().clone()),
        Ok(None) => InitialCertificate::None,
        Err(e) => {
            warn!(error = %kubecert_cli::error_chain(&*e), "the stored serving certificate cannot be used; requesting a new one");
            InitialCertificate::None
        }
    }
}
