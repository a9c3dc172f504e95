//! The cleaner ("csrcleaner", SPEC CL-1).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, DeleteParams, ListParams};
use kubecert_authority::cleanup_reason;
use tokio_util::sync::CancellationToken;

use super::{ControllerError, Failure, SignerMetrics, name_of};

/// Deletes what [`cleanup_reason`] says is done with, now and then every `interval` (upstream:
/// one hour), until `shutdown` is cancelled. A failed pass is logged and counted in `metrics`.
pub async fn run_cleaner(
    client: kube::Client,
    interval: Duration,
    metrics: SignerMetrics,
    shutdown: CancellationToken,
) {
    let api = Api::<CertificateSigningRequest>::all(client);
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(e) = clean_once(&api, SystemTime::now()).await {
                    metrics.fail(Failure::CleanerError);
                    tracing::warn!(error = %e, "cleaning certificate signing requests");
                }
            }
        }
    }
}

/// One cleaning pass; returns how many requests were deleted.
pub async fn clean_once(
    api: &Api<CertificateSigningRequest>,
    now: SystemTime,
) -> Result<usize, ControllerError> {
    let all = api.list(&ListParams::default()).await.map_err(|source| ControllerError::Api {
        action: "listing",
        name: String::new(),
        source,
    })?;
    let mut deleted = 0;
    for csr in &all.items {
        let Some(reason) = cleanup_reason(csr, now) else { continue };
        let name = name_of(csr);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                deleted += 1;
                tracing::info!(csr = %name, %reason, "deleted");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(ControllerError::Api { action: "deleting", name, source }),
        }
    }
    Ok(deleted)
}
