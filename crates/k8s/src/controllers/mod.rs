//! The signer's controllers (SPEC §5): approver, signer and cleaner, plus leader election.
//!
//! Each controller watches CertificateSigningRequests through kube-rs and applies the pure
//! decisions of `kubecert-authority`. They are written against `kube::Client` only, so the same
//! code runs against a real cluster and against the embedded API of `signer serve` (reached
//! through an in-memory tower service).
//!
//! Issuing exactly once does not rest on leader election alone: the signer writes
//! `status.certificate` with a PUT that carries the object's resourceVersion, so a second writer
//! with the same stale object gets 409 Conflict, and the API refuses to change a certificate once
//! set (SPEC V-10).

mod approver;
mod backoff;
mod cleaner;
mod leader;
mod metrics;
mod signer;

pub use approver::run_approver;
pub use cleaner::{clean_once, run_cleaner};
pub use leader::{LeaderElection, LeaderElectionError, run_when_leader};
pub use metrics::{Failure, ReasonLabel, SignerLabel, SignerMetrics};
pub use signer::run_signer;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use kube::api::Api;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// Workers per controller, as kube-controller-manager runs the CSR controllers.
const WORKERS: u16 = 5;

/// A controller over every CSR (or, given `signer_name`, that signer's only: a field selector,
/// so the API filters) with [`WORKERS`] workers that stops gracefully on `shutdown`.
fn csr_controller(
    client: &kube::Client,
    signer_name: Option<&str>,
    shutdown: &CancellationToken,
) -> Controller<CertificateSigningRequest> {
    let watch = match signer_name {
        Some(name) => watcher::Config::default().fields(&format!("spec.signerName={name}")),
        None => watcher::Config::default(),
    };
    Controller::new(Api::all(client.clone()), watch)
        .with_config(Config::default().concurrency(WORKERS))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
}

/// Drives a controller's results to the end; failed steps were already logged by the error
/// policy, so they are only traced here.
async fn run_to_end<T, E: std::fmt::Display>(
    results: impl Stream<Item = Result<T, E>>,
    controller: &'static str,
) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, controller);
            }
        })
        .await;
}

/// Why a controller step failed; the step is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API call failed.
    #[error("{action} {name:?}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The CSR (or other object).
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The authority refused to work (no CA for the signer, expired CA, no randomness).
    #[error("{0}")]
    Authority(#[from] kubecert_authority::Error),
    /// Nothing is wrong, but the object should be looked at again later (upstream's
    /// "ignorable" errors, e.g. no SubjectAccessReview allowed a request yet).
    #[error("{0}")]
    Retry(String),
}

/// A copy of `csr` with `condition` appended to its status.
fn with_condition(
    csr: &CertificateSigningRequest,
    condition: CertificateSigningRequestCondition,
) -> CertificateSigningRequest {
    let mut updated = csr.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(condition);
    updated
}

fn name_of(csr: &CertificateSigningRequest) -> String {
    csr.metadata.name.clone().unwrap_or_default()
}
