//! Talking to the API server: clients built from kubeconfig files, the certificate source the
//! rotation loops use, and what the agent knows about the server's health (SPEC M-15).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecert_csr::{CsrName, csr_object};
use kubecert_k8s::request::{
    self, Requested, request_certificate, server_healthy_after, wait_for_certificate,
};
use kubecert_reload::{DEFAULT_DRAIN_GRACE, Identity, LiveIdentity, kube_client};
use kubecert_rotation::{CertificateRequest, CertificateSource, ROTATION_WAIT_TIMEOUT};
use kubecert_store::kubeconfig::{BootstrapKubeconfig, PemSource};
use tracing::info;

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
/// kubeconfig's other credentials (a bootstrap token) added to every request.
pub async fn client_for(kubeconfig: &Path, identity: LiveIdentity) -> Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube_client(&config, identity, DEFAULT_DRAIN_GRACE)
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
        client_for(&self.path, identity).await
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
}

/// Obtains certificates by creating `csr-…` CertificateSigningRequests and waiting for them
/// (SPEC M-9 b–e, R-1…R-5).
pub struct CsrSource {
    signer_name: &'static str,
    user: kube::Client,
    bootstrap: Option<BootstrapCredentials>,
    health: ApiHealth,
}

impl CsrSource {
    /// Requests for `signer_name`, authenticated with the node's client certificate (`user`),
    /// or with `bootstrap` credentials when the node holds no valid certificate (SPEC B-4).
    pub fn new(
        signer_name: &'static str,
        user: kube::Client,
        bootstrap: Option<BootstrapCredentials>,
        health: ApiHealth,
    ) -> Self {
        Self { signer_name, user, bootstrap, health }
    }

    async fn client(&self, request: &CertificateRequest) -> Result<kube::Client, kubecert_rotation::Error> {
        match (&request.current, &self.bootstrap) {
            (None, Some(bootstrap)) => {
                info!("no valid certificate is held; requesting with the bootstrap credentials");
                bootstrap.client().await.map_err(|e| kubecert_rotation::Error::request(format!("{e:#}")))
            }
            _ => Ok(self.user.clone()),
        }
    }
}

impl CertificateSource for CsrSource {
    async fn obtain(&self, request: &CertificateRequest) -> Result<String, kubecert_rotation::Error> {
        let api: Api<CertificateSigningRequest> = Api::all(self.client(request).await?);
        let csr = csr_object(CsrName::Generate, self.signer_name, &request.csr_pem, &request.usages, None);
        let requested = match request_certificate(&api, &csr, SystemTime::now()).await {
            Ok(requested) => requested,
            Err(error) => {
                self.health.set(server_healthy_after(&error));
                return Err(rotation_error(error));
            }
        };
        self.health.set(true);
        info!(csr = %requested.name, signer = self.signer_name, "certificate signing request created; waiting for it");
        let pem =
            wait_for_certificate(api, &requested, ROTATION_WAIT_TIMEOUT).await.map_err(rotation_error)?;
        String::from_utf8(pem).map_err(|_| issued_not_utf8(&requested))
    }
}

fn issued_not_utf8(requested: &Requested) -> kubecert_rotation::Error {
    kubecert_rotation::Error::Issued(format!("the certificate of {} is not PEM text", requested.name))
}

/// The rotation loop's view of a request error: denials and failures keep their reason (the
/// CSR's name goes into the message), a timeout is a timeout, the rest is a request error.
pub fn rotation_error(error: request::Error) -> kubecert_rotation::Error {
    use kubecert_rotation::Error as E;
    match error {
        request::Error::Denied { name, reason, message } => {
            E::Denied { reason, message: format!("{message} (certificate signing request {name})") }
        }
        request::Error::Failed { name, reason, message } => {
            E::Failed { reason, message: format!("{message} (certificate signing request {name})") }
        }
        request::Error::Timeout { timeout, .. } => E::TimedOut(timeout),
        other => E::request(other),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn denials_keep_their_reason_and_name_the_request() {
        let denied = rotation_error(request::Error::Denied {
            name: "csr-abcde".into(),
            reason: "SANNotAllowed".into(),
            message: "DNS name x.example is not allowed".into(),
        });
        assert_eq!(denied.kind(), "denied");
        assert_eq!(
            denied.to_string(),
            "certificate request denied (SANNotAllowed): DNS name x.example is not allowed \
             (certificate signing request csr-abcde)"
        );
        let failed = rotation_error(request::Error::Failed {
            name: "n".into(),
            reason: "R".into(),
            message: "m".into(),
        });
        assert_eq!(failed.kind(), "failed");
        let timeout =
            rotation_error(request::Error::Timeout { name: "n".into(), timeout: Duration::from_secs(9) });
        assert!(matches!(timeout, kubecert_rotation::Error::TimedOut(d) if d == Duration::from_secs(9)));
        assert_eq!(rotation_error(request::Error::Deleted("n".into())).kind(), "request");
    }

    #[test]
    fn api_health_starts_unknown() {
        let health = ApiHealth::default();
        assert!(!health.is_healthy());
        health.clone().set(true);
        assert!(health.is_healthy());
    }
}
