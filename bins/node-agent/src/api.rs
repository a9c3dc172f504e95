//! Talking to the API server: clients built from kubeconfig files, the certificate source the
//! rotation loops use, and what the agent knows about the server's health (SPEC M-15).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecert_k8s::source::HealthObserver;
use kubecert_reload::{DEFAULT_DRAIN_GRACE, Identity, LiveIdentity, LiveRoots, kube_client_with_roots};
use kubecert_rotation::BoxError;
use kubecert_store::kubeconfig::{BootstrapKubeconfig, PemSource};

/// The kube-rs configuration of a kubeconfig file (server, CA, token, …). Its client
/// certificate, if any, is ignored by [`client_for`]: TLS identities come from a
/// [`LiveIdentity`].
pub async fn kube_config(kubeconfig: &Path) -> Result<kube::Config> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))
}

/// A client for the server of `kubeconfig` presenting whatever `identity` holds, with the
/// kubeconfig's other credentials (a bootstrap token) added to every request; it verifies the
/// server against `roots` when given (`--trust-source`), else the kubeconfig's CA.
pub async fn client_for(
    kubeconfig: &Path,
    identity: LiveIdentity,
    roots: Option<&LiveRoots>,
) -> Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube_client_with_roots(&config, identity, roots, DEFAULT_DRAIN_GRACE)
        .with_context(|| format!("building an API client from {}", kubeconfig.display()))
}

/// The client certificate and key a kubeconfig names (files or inline data), if it names both.
pub fn kubeconfig_identity(kubeconfig: &BootstrapKubeconfig) -> Result<Option<(Identity, bool)>> {
    let (Some(cert), Some(key)) = (&kubeconfig.client_certificate, &kubeconfig.client_key) else {
        return Ok(None);
    };
    let origin = || format!("client certificate of {}", kubeconfig.path.display());
    let identity = Identity::from_pem(&cert.read().with_context(origin)?, &key.read().with_context(origin)?)
        .with_context(origin)?;
    let inline = matches!(cert, PemSource::Inline(_));
    Ok(Some((identity, inline)))
}

/// The bootstrap credentials, read when needed: operators often delete the bootstrap
/// kubeconfig once a node has its certificate, so its absence is an error only when it is used.
#[derive(Clone, Debug)]
pub struct BootstrapCredentials {
    path: PathBuf,
}

impl BootstrapCredentials {
    /// Credentials from the kubeconfig at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// A client authenticating with the bootstrap kubeconfig's credentials: its token, or its
    /// client certificate when it has one.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = BootstrapKubeconfig::load(&self.path)
            .with_context(|| format!("reading bootstrap kubeconfig {}", self.path.display()))?;
        let identity = match kubeconfig_identity(&kubeconfig)? {
            Some((identity, _)) => LiveIdentity::new(identity),
            None => LiveIdentity::empty(),
        };
        client_for(&self.path, identity, None).await
    }

    /// [`BootstrapCredentials::client`] as a `CsrSource` fallback wants it: owned, with the
    /// error's whole chain as its message.
    pub fn connect(&self) -> impl Future<Output = Result<kube::Client, BoxError>> + Send + use<> {
        let credentials = self.clone();
        async move { credentials.client().await.map_err(|e| kubecert_cli::error_chain(&*e).into()) }
    }
}

/// Whether the API server answered like an API server the last time we could tell (SPEC M-4,
/// M-15): false at start, set by failed CSR creations and successful rotations. The agent exits
/// for a restart into bootstrap only when it is true (SPEC T-3).
#[derive(Clone, Debug, Default)]
pub struct ApiHealth(Arc<AtomicBool>);

impl ApiHealth {
    /// Records what the latest observation says.
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Relaxed);
    }

    /// The latest observation.
    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// An observer for `CsrSource::with_health` that records here.
    pub fn observer(&self) -> HealthObserver {
        let health = self.clone();
        Arc::new(move |healthy| health.set(healthy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_health_starts_unknown() {
        let health = ApiHealth::default();
        assert!(!health.is_healthy());
        health.clone().set(true);
        assert!(health.is_healthy());
    }
}
