//! Trust delivered to the node during a CA roll (`--trust-source`): the roots the node trusts
//! follow a signer-linked ClusterTrustBundle (`bundles`) or a PEM file. On every change the
//! union of roots is written atomically to the kubelet-style client CA file
//! (`--client-ca-file`), to `certificate-authority-data` of the kubeconfig the agent owns, and
//! swapped into the roots its API clients verify the server with and its endpoint verifies client
//! certificates with, without a restart. The roots held are shown as
//! `kubecert_node_trusted_root{subject}` and `kubecert_node_trust_updates_total`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kubecert_k8s::trust_bundle::TrustBundles;
use kubecert_reload::LiveRoots;
use kubecert_store::kubeconfig::{
    BootstrapKubeconfig, ClusterEndpoint, Credentials, PemSource, write_kubeconfig,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How often the source is read.
pub const TRUST_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// The bundle `--trust-source bundles` follows unless `--trust-bundle-name` says otherwise: the
/// live bundle of the signer of API clients (what the kubelet's client CA verifies).
pub const DEFAULT_TRUST_BUNDLE: &str = "kubernetes.io:kube-apiserver-client:live";

/// Where the roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustSource {
    /// The ClusterTrustBundle with this name (`certificates.k8s.io/v1` when served, else
    /// `v1beta1`).
    Bundle(String),
    /// A PEM file (e.g. the signer's `--trust-bundle-out`).
    File(PathBuf),
}

impl TrustSource {
    /// `bundles` (with `bundle_name`) or a file path.
    pub fn parse(value: &str, bundle_name: &str) -> Self {
        match value {
            "bundles" => TrustSource::Bundle(bundle_name.to_owned()),
            path => TrustSource::File(PathBuf::from(path)),
        }
    }
}

/// Label of a trusted root.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RootLabel {
    /// The root's common name (kubecert's say their generation).
    pub subject: String,
}

/// The trust series.
#[derive(Clone, Debug, Default)]
pub struct TrustMetrics {
    /// 1 per root held.
    pub roots: Family<RootLabel, Gauge>,
    /// Changes of the roots taken up.
    pub updates: Counter,
}

impl TrustMetrics {
    /// Adds the series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubecert_node_trusted_root",
            "1 for each root the node trusts",
            self.roots.clone(),
        );
        registry.register(
            "kubecert_node_trust_updates",
            "Changes of the trusted roots taken up",
            self.updates.clone(),
        );
    }
}

/// Certificates of a bundle, checked (each a CA, at least one), deduplicated, as PEM.
pub fn normalize(pem: &[u8], origin: &str) -> Result<(String, Vec<String>)> {
    let certificates =
        kubecert_csr::parse_certificates_pem(pem).with_context(|| format!("trust bundle {origin}"))?;
    let mut seen = Vec::new();
    let mut out = String::new();
    let mut subjects = Vec::new();
    for certificate in certificates {
        if !certificate.is_ca {
            bail!("trust bundle {origin}: {:?} is not a CA certificate", certificate.subject.common_name);
        }
        if seen.contains(&certificate.der) {
            continue;
        }
        out.push_str(&certificate.to_pem());
        subjects.push(certificate.subject.common_name.clone().unwrap_or_default());
        seen.push(certificate.der);
    }
    if out.is_empty() {
        bail!("trust bundle {origin}: no certificates");
    }
    Ok((out, subjects))
}

/// Keeps the node's trust in step with its source.
pub struct TrustKeeper {
    /// Where roots come from.
    pub source: TrustSource,
    /// `--client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// The kubeconfig the agent owns.
    pub kubeconfig: PathBuf,
    /// The roots in use.
    pub roots: LiveRoots,
    /// Series.
    pub metrics: TrustMetrics,
    /// The bundle taken up last.
    pub current: Option<String>,
    /// The ClusterTrustBundles of the API in the version it serves, once discovered.
    pub bundles: Option<TrustBundles>,
}

impl TrustKeeper {
    /// Reads the source.
    pub async fn read(&mut self, client: Option<&kube::Client>) -> Result<(String, Vec<String>)> {
        match &self.source {
            TrustSource::File(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                normalize(&bytes, &path.display().to_string())
            }
            TrustSource::Bundle(name) => {
                let client = client.context("no API client yet")?;
                // Discovered at the first read and again after a failed one, so that a node
                // follows an API that starts serving v1 without a restart.
                let bundles = match self.bundles.clone() {
                    Some(bundles) => bundles,
                    None => TrustBundles::discover(client).await?.context(
                        "the API serves no ClusterTrustBundles (certificates.k8s.io v1 or v1beta1)",
                    )?,
                };
                let read = bundles.get(name).await;
                self.bundles = read.is_ok().then_some(bundles);
                let bundle = read?;
                normalize(bundle.trust_bundle.as_bytes(), &format!("ClusterTrustBundle {name}"))
            }
        }
    }

    /// Takes `bundle` up when it differs from the current one: client CA file, kubeconfig, live
    /// roots, in that order (each write atomic; a failure is retried at the next sync). Returns
    /// whether the roots changed. The client CA file is written whenever it does not hold the
    /// bundle, even when the roots stay: a kubelet pointed at it finds it from the first sync
    /// (the source may equal the roots the agent started with), and a deleted file comes back.
    pub fn apply(&mut self, bundle: &str, subjects: &[String]) -> Result<bool> {
        if let Some(path) = &self.client_ca_file
            && std::fs::read(path).ok().as_deref() != Some(bundle.as_bytes())
        {
            kubecert_store::write_private_file(path, bundle.as_bytes())
                .with_context(|| format!("writing the client CA file {}", path.display()))?;
        }
        if self.current.as_deref() == Some(bundle) {
            return Ok(false);
        }
        if self.kubeconfig.exists() {
            update_kubeconfig_ca(&self.kubeconfig, bundle)?;
        }
        self.roots.swap_pem(bundle.as_bytes()).context("taking up the new roots")?;
        self.metrics.roots.clear();
        for subject in subjects {
            self.metrics.roots.get_or_create(&RootLabel { subject: subject.clone() }).set(1);
        }
        self.metrics.updates.inc();
        self.current = Some(bundle.to_owned());
        tracing::info!(roots = ?subjects, "trusted roots changed");
        Ok(true)
    }

    /// Syncs every [`TRUST_SYNC_INTERVAL`] until `cancel`.
    pub async fn run(mut self, client: Option<kube::Client>, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(TRUST_SYNC_INTERVAL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let synced = match self.read(client.as_ref()).await {
                Ok((bundle, subjects)) => self.apply(&bundle, &subjects),
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                tracing::warn!(error = %kubecert_cli::error_chain(&*e), "syncing trusted roots");
            }
        }
    }
}

/// Rewrites `certificate-authority-data` of a kubeconfig written by the agent (a pair-file
/// user), atomically.
fn update_kubeconfig_ca(path: &std::path::Path, bundle: &str) -> Result<()> {
    let kubeconfig =
        BootstrapKubeconfig::load(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let pair = match (&kubeconfig.client_certificate, &kubeconfig.client_key) {
        (Some(PemSource::File(cert)), Some(PemSource::File(key))) if cert == key => cert.clone(),
        _ => bail!("kubeconfig {}: not one node-agent wrote (no client pair file)", path.display()),
    };
    let cluster = ClusterEndpoint {
        server: kubeconfig.cluster.server.clone(),
        certificate_authority: Some(PemSource::Inline(bundle.as_bytes().to_vec())),
        insecure_skip_tls_verify: kubeconfig.cluster.insecure_skip_tls_verify,
    };
    write_kubeconfig(path, &cluster, &Credentials::PairFile(pair))
        .with_context(|| format!("writing kubeconfig {}", path.display()))
}

/// The roots to start with: the client CA file, else the CA of the kubeconfig, else that of the
/// bootstrap kubeconfig (`None` when none has one).
pub fn initial_roots(candidates: &[Option<PathBuf>]) -> Option<(LiveRoots, String)> {
    for path in candidates.iter().flatten() {
        let pem = match BootstrapKubeconfig::load(path) {
            Ok(kubeconfig) => kubeconfig.cluster.certificate_authority.and_then(|ca| ca.read().ok()),
            Err(_) => std::fs::read(path).ok(),
        };
        if let Some(pem) = pem
            && let Ok((bundle, _)) = normalize(&pem, "")
            && let Ok(roots) = LiveRoots::from_pem(bundle.as_bytes())
        {
            return Some((roots, bundle));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use kubecert_store::kubeconfig::write_for_current_pem;

    use super::*;

    fn certificate(name: &str, ca: bool) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn root(name: &str) -> String {
        // Re-encoded as the agent writes PEM, so that bundles compare byte for byte.
        normalize(certificate(name, true).as_bytes(), "test").unwrap().0
    }

    #[tokio::test]
    async fn a_file_source_updates_the_client_ca_file_the_kubeconfig_and_the_live_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (root("kubecert-ca"), root("kubecert-ca generation 2"));
        let kubeconfig = dir.path().join("kubelet.conf");
        let pair = dir.path().join("pki/kubelet-client-current.pem");
        let cluster = ClusterEndpoint {
            server: "https://127.0.0.1:6443".into(),
            certificate_authority: Some(PemSource::Inline(old.clone().into_bytes())),
            insecure_skip_tls_verify: false,
        };
        write_for_current_pem(&kubeconfig, &cluster, &pair).unwrap();
        let source = dir.path().join("bundle.pem");
        std::fs::write(&source, format!("{old}{new}{old}")).unwrap();
        let client_ca = dir.path().join("ca/client-ca.crt");
        let (roots, initial) = initial_roots(&[Some(client_ca.clone()), Some(kubeconfig.clone())]).unwrap();
        assert_eq!(initial, old, "the kubeconfig's CA when there is no client CA file yet");
        let mut keeper = TrustKeeper {
            source: TrustSource::parse(source.to_str().unwrap(), DEFAULT_TRUST_BUNDLE),
            client_ca_file: Some(client_ca.clone()),
            kubeconfig: kubeconfig.clone(),
            roots: roots.clone(),
            metrics: TrustMetrics::default(),
            current: Some(initial),
            bundles: None,
        };
        let (bundle, subjects) = keeper.read(None).await.unwrap();
        assert_eq!(bundle, format!("{old}{new}"), "deduplicated");
        assert_eq!(subjects, ["kubecert-ca", "kubecert-ca generation 2"]);
        assert!(keeper.apply(&bundle, &subjects).unwrap());
        assert!(!keeper.apply(&bundle, &subjects).unwrap(), "same bundle: nothing to do");
        assert_eq!(std::fs::read_to_string(&client_ca).unwrap(), bundle);
        std::fs::remove_file(&client_ca).unwrap();
        assert!(!keeper.apply(&bundle, &subjects).unwrap(), "the roots stay");
        assert_eq!(std::fs::read_to_string(&client_ca).unwrap(), bundle, "a deleted file comes back");
        let written = BootstrapKubeconfig::load(&kubeconfig).unwrap();
        assert_eq!(written.cluster.certificate_authority.unwrap().read().unwrap(), bundle.as_bytes());
        assert_eq!(written.client_certificate, Some(PemSource::File(pair)), "credentials kept");
        assert_eq!(written.cluster.server, "https://127.0.0.1:6443");
        assert_eq!(roots.generation(), 1, "the live roots were swapped");
        assert_eq!(keeper.metrics.updates.get(), 1);
        let label = RootLabel { subject: "kubecert-ca generation 2".into() };
        assert_eq!(keeper.metrics.roots.get_or_create(&label).get(), 1);
    }

    #[tokio::test]
    async fn the_client_ca_file_is_written_when_the_source_equals_the_starting_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = root("kubecert-ca");
        let source = dir.path().join("bundle.pem");
        std::fs::write(&source, &ca).unwrap();
        let client_ca = dir.path().join("client-ca.crt");
        let mut keeper = TrustKeeper {
            source: TrustSource::parse(source.to_str().unwrap(), DEFAULT_TRUST_BUNDLE),
            client_ca_file: Some(client_ca.clone()),
            kubeconfig: dir.path().join("kubelet.conf"),
            roots: LiveRoots::from_pem(ca.as_bytes()).unwrap(),
            metrics: TrustMetrics::default(),
            current: Some(ca.clone()),
            bundles: None,
        };
        let (bundle, subjects) = keeper.read(None).await.unwrap();
        assert!(!keeper.apply(&bundle, &subjects).unwrap(), "the roots are the starting ones");
        assert_eq!(std::fs::read_to_string(&client_ca).unwrap(), ca);
        assert_eq!(keeper.metrics.updates.get(), 0);
    }

    #[test]
    fn bad_bundles_are_errors_naming_the_source() {
        let err = normalize(b"", "x.pem").unwrap_err().to_string();
        assert!(err.contains("trust bundle x.pem"), "{err}");
        let bundle = format!("{}{}", root("ca"), certificate("leaf", false));
        let err = normalize(bundle.as_bytes(), "y").unwrap_err().to_string();
        assert!(err.contains("is not a CA certificate"), "{err}");
        assert_eq!(TrustSource::parse("bundles", "b:live"), TrustSource::Bundle("b:live".into()));
    }
}
