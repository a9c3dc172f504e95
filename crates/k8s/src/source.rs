//! A [`CertificateSource`] over the API: each rotation creates a `csr-…`
//! CertificateSigningRequest and waits for it (SPEC M-9 b–e, R-1…R-5). Any agent that rotates a
//! certificate with `kubecert-rotation` can use it as it is.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kubecert_csr::{CsrName, csr_object};
use kubecert_rotation::{BoxError, CertificateRequest, CertificateSource, ROTATION_WAIT_TIMEOUT};
use tracing::info;

use crate::request::{self, Requested, request_certificate, server_healthy_after, wait_for_certificate};

/// Makes the client used while no valid certificate is held (see [`CsrSource::with_bootstrap`]).
type BootstrapConnect = Box<dyn Fn() -> BoxFuture<'static, Result<kube::Client, BoxError>> + Send + Sync>;

/// Told whether the API server answered like one (SPEC M-15; see [`CsrSource::with_health`]).
pub type HealthObserver = Arc<dyn Fn(bool) + Send + Sync>;

/// Obtains certificates from `signer_name` by creating `csr-…` CertificateSigningRequests and
/// waiting until they are issued, denied or failed.
///
/// Requests are authenticated with the client given to [`CsrSource::new`], which normally
/// presents the certificate being rotated. When a request carries no current certificate (it
/// expired, or there never was one) and bootstrap credentials are configured, those are used
/// instead (SPEC B-4).
pub struct CsrSource {
    signer_name: &'static str,
    user: kube::Client,
    bootstrap: Option<BootstrapConnect>,
    health: Option<HealthObserver>,
}

impl CsrSource {
    /// Requests for `signer_name`, authenticated by `user`.
    pub fn new(signer_name: &'static str, user: kube::Client) -> Self {
        Self { signer_name, user, bootstrap: None, health: None }
    }

    /// Falls back to a client from `connect` when no valid certificate is held. `connect` runs
    /// for each such request, so it may read credentials that appear or change later (a
    /// bootstrap kubeconfig file); its error fails the attempt as a request error.
    pub fn with_bootstrap<F, Fut>(mut self, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<kube::Client, BoxError>> + Send + 'static,
    {
        self.bootstrap = Some(Box::new(move || Box::pin(connect())));
        self
    }

    /// Tells `observer` after each CSR creation whether the API server answered like an API
    /// server: `true` when the CSR was created, otherwise as [`server_healthy_after`] judges the
    /// error.
    pub fn with_health(mut self, observer: HealthObserver) -> Self {
        self.health = Some(observer);
        self
    }

    async fn client(&self, request: &CertificateRequest) -> Result<kube::Client, kubecert_rotation::Error> {
        match (&request.current, &self.bootstrap) {
            (None, Some(connect)) => {
                info!("no valid certificate is held; requesting with the bootstrap credentials");
                connect().await.map_err(kubecert_rotation::Error::Request)
            }
            _ => Ok(self.user.clone()),
        }
    }

    fn observe_health(&self, healthy: bool) {
        if let Some(observer) = &self.health {
            observer(healthy);
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
                self.observe_health(server_healthy_after(&error));
                return Err(rotation_error(error));
            }
        };
        self.observe_health(true);
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
}
