//! The signer ("csrsigning", SPEC SG-2…SG-6).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kubecert_authority::{CONDITION_APPROVED, SignOutcome, Signer};
use tokio_util::sync::CancellationToken;

use super::backoff::ItemBackoff;
use super::metrics::SignerLabel;
use super::{ControllerError, Failure, SignerMetrics, csr_controller, name_of, run_to_end, with_condition};

/// What the signer needs for every request.
struct SignerContext {
    client: kube::Client,
    signer: Arc<ArcSwap<Signer>>,
    metrics: SignerMetrics,
    backoff: ItemBackoff,
    rng: aws_lc_rs::rand::SystemRandom,
}

/// Runs the signer with 5 workers until `shutdown` is cancelled. `signer` may be swapped at
/// any time (new CA files, for the same signer names); each request uses the one current when
/// it is signed. A signer for a single name watches only that name's requests.
pub async fn run_signer(
    client: kube::Client,
    signer: Arc<ArcSwap<Signer>>,
    metrics: SignerMetrics,
    shutdown: CancellationToken,
) {
    // A signer for one name (kubecert.io/node-identity's) watches that name's requests only.
    let names: Vec<String> = signer.load().authorities().signer_names().map(str::to_owned).collect();
    let only = match names.as_slice() {
        [name] => Some(name.as_str()),
        _ => None,
    };
    let controller = csr_controller(&client, only, &shutdown);
    let context = Arc::new(SignerContext {
        client,
        signer,
        metrics,
        backoff: ItemBackoff::default(),
        rng: aws_lc_rs::rand::SystemRandom::new(),
    });
    run_to_end(controller.run(reconcile, error_policy, context), "signer").await;
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<SignerContext>,
) -> Result<Action, ControllerError> {
    let signer = ctx.signer.load_full();
    if !signer.should_sign(&csr) {
        return Ok(Action::await_change());
    }
    let name = name_of(&csr);
    let now = SystemTime::now();
    let outcome = signer.sign(&csr, now, &ctx.rng)?;
    let updated = match &outcome {
        SignOutcome::Issued(issued) => {
            let mut updated = (*csr).clone();
            let status = updated.status.get_or_insert_with(Default::default);
            status.certificate = Some(ByteString(issued.pem().as_bytes().to_vec()));
            updated
        }
        SignOutcome::Rejected(_) => match outcome.failed_condition(now)? {
            Some(condition) => with_condition(&csr, condition),
            None => return Ok(Action::await_change()),
        },
    };
    // The PUT carries the resourceVersion we saw: a concurrent writer makes it fail with 409
    // instead of issuing twice.
    Api::<CertificateSigningRequest>::all(ctx.client.clone())
        .replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(|source| ControllerError::Api { action: "writing status of", name: name.clone(), source })?;
    match &outcome {
        SignOutcome::Issued(issued) => {
            if is_canary(&csr) {
                ctx.metrics.canary_issuances.inc();
            } else {
                let signer_name = csr.spec.signer_name.clone();
                ctx.metrics.issuances.get_or_create(&SignerLabel { signer: signer_name }).inc();
            }
            if let Some(seconds) = seconds_since_approval(&csr, now) {
                ctx.metrics.approve_to_issue_seconds.observe(seconds);
            }
            tracing::info!(csr = %name, serial = %issued.serial_hex(), subject = %issued.common_name(), "issued");
        }
        SignOutcome::Rejected(failure) => {
            ctx.metrics.fail(Failure::SignerValidationFailure);
            tracing::warn!(csr = %name, reason = %failure.message(), "failed: signer validation");
        }
    }
    ctx.backoff.forget(&name);
    Ok(Action::await_change())
}

fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &ControllerError,
    ctx: Arc<SignerContext>,
) -> Action {
    let name = name_of(&csr);
    let delay = ctx.backoff.next_delay(&name);
    ctx.metrics.fail(Failure::SignerError);
    tracing::warn!(csr = %name, %error, ?delay, "signing step failed; retrying");
    Action::requeue(delay)
}

fn seconds_since_approval(csr: &CertificateSigningRequest, now: SystemTime) -> Option<f64> {
    let conditions = csr.status.as_ref()?.conditions.as_ref()?;
    let approved = conditions.iter().find(|c| c.type_ == CONDITION_APPROVED)?;
    let approved_at = SystemTime::from(approved.last_update_time.as_ref()?.0);
    now.duration_since(approved_at).ok().map(|d| d.as_secs_f64())
}

/// Whether `csr` is node-agent's renewal canary (annotation `kubecert.io/canary: "true"`): it
/// goes through the same approval and signing, but is not a renewal.
fn is_canary(csr: &CertificateSigningRequest) -> bool {
    csr.metadata.annotations.as_ref().and_then(|a| a.get("kubecert.io/canary")).is_some_and(|v| v == "true")
}
