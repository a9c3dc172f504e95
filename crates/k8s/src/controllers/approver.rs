//! The approver ("csrapproving", SPEC AP-1…AP-4, plus kubecert's policy).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kubecert_authority::{
    AccessReview, ApprovalRequest, Decision, Evaluation, Policy, is_approved, is_issued, is_pending,
    pending_before, requesting_node,
};
use kubecert_csr::SIGNER_KUBELET_SERVING;
use tokio_util::sync::CancellationToken;

use super::backoff::ItemBackoff;
use super::{ControllerError, Failure, SignerMetrics, csr_controller, name_of, run_to_end, with_condition};

/// How often the queue-depth gauge is recomputed from the cache. Counting every cached request
/// on each reconcile instead made a bootstrap storm of N requests cost N² steps.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(1);

/// What the approver needs for every request.
struct ApproverContext {
    client: kube::Client,
    policy: Policy,
    metrics: SignerMetrics,
    backoff: ItemBackoff,
    cache: Store<CertificateSigningRequest>,
}

/// Runs the approver with 5 workers until `shutdown` is cancelled.
pub async fn run_approver(
    client: kube::Client,
    policy: Policy,
    metrics: SignerMetrics,
    shutdown: CancellationToken,
) {
    let controller = csr_controller(&client, None, &shutdown);
    let cache = controller.store();
    let depth = track_queue_depth(cache.clone(), metrics.clone());
    let context =
        Arc::new(ApproverContext { client, policy, metrics, backoff: ItemBackoff::default(), cache });
    tokio::select! {
        () = run_to_end(controller.run(reconcile, error_policy, context), "approver") => {}
        () = depth => {}
    }
}

/// Keeps the queue-depth gauge up to date, every [`QUEUE_DEPTH_INTERVAL`]; never returns.
async fn track_queue_depth(cache: Store<CertificateSigningRequest>, metrics: SignerMetrics) {
    let mut tick = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.queue_depth.set(awaiting_work(cache.state().iter().map(Arc::as_ref)));
    }
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<ApproverContext>,
) -> Result<Action, ControllerError> {
    let name = name_of(&csr);
    let node_addresses = node_addresses(&ctx.client, &csr).await?;
    let request = ApprovalRequest {
        csr: &csr,
        pending_before: match ctx.policy.pending_cap(&csr) {
            Some(_) => pending_before(&csr, ctx.cache.state().iter().map(Arc::as_ref)),
            None => 0,
        },
        node_addresses: node_addresses.as_deref(),
    };
    let decision = match ctx.policy.evaluate(&request) {
        Evaluation::Decided(decision) => decision,
        Evaluation::NeedsAccessReview(pending) => {
            let mut allowed_subresource = None;
            for review in pending.reviews() {
                if access_allowed(&ctx.client, review, &name).await? {
                    allowed_subresource = Some(review.subresource());
                    break;
                }
            }
            pending.finish(|review| Some(review.subresource()) == allowed_subresource)
        }
    };
    match &decision {
        Decision::Approve { .. } | Decision::Deny { .. } => {
            let condition = decision.condition(SystemTime::now())?.into_iter().next();
            let Some(condition) = condition else { return Ok(Action::await_change()) };
            let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
            api.replace_subresource(
                "approval",
                &name,
                &PostParams::default(),
                &with_condition(&csr, condition),
            )
            .await
            .map_err(|source| ControllerError::Api {
                action: "updating approval of",
                name: name.clone(),
                source,
            })?;
            match &decision {
                Decision::Deny { reason, .. } => {
                    let label = super::metrics::ReasonLabel { reason: reason.as_str().to_owned() };
                    ctx.metrics.denials.get_or_create(&label).inc();
                }
                _ => {
                    ctx.metrics.approvals.inc();
                }
            }
            tracing::info!(csr = %name, requester = ?csr.spec.username, %decision, "decided");
            ctx.backoff.forget(&name);
            Ok(Action::await_change())
        }
        Decision::Ignore { why } if why.should_retry() => {
            Err(ControllerError::Retry(format!("{name}: {why}")))
        }
        Decision::Ignore { why } => {
            tracing::debug!(csr = %name, %why, "not deciding");
            ctx.backoff.forget(&name);
            Ok(Action::await_change())
        }
    }
}

fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &ControllerError,
    ctx: Arc<ApproverContext>,
) -> Action {
    let name = name_of(&csr);
    let delay = ctx.backoff.next_delay(&name);
    match error {
        ControllerError::Retry(why) => tracing::debug!(csr = %name, %why, ?delay, "will look again"),
        other => {
            ctx.metrics.fail(Failure::ApproverError);
            tracing::warn!(csr = %name, error = %other, ?delay, "approver step failed; retrying");
        }
    }
    Action::requeue(delay)
}

/// Requests that still await a decision or a certificate.
pub(crate) fn awaiting_work<'a>(csrs: impl Iterator<Item = &'a CertificateSigningRequest>) -> i64 {
    let count = csrs.filter(|c| is_pending(c) || (is_approved(c) && !is_issued(c))).count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

async fn access_allowed(
    client: &kube::Client,
    review: &AccessReview,
    name: &str,
) -> Result<bool, ControllerError> {
    let api = Api::<SubjectAccessReview>::all(client.clone());
    let answer =
        api.create(&PostParams::default(), &review.to_subject_access_review()).await.map_err(|source| {
            ControllerError::Api { action: "reviewing access for", name: name.to_owned(), source }
        })?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The requesting node's addresses, for serving certificates, when the API has Node objects.
/// The embedded API has none (404): then the policy's static rules alone apply.
async fn node_addresses(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<Option<Vec<String>>, ControllerError> {
    let node = match requesting_node(csr) {
        Some(node) if csr.spec.signer_name == SIGNER_KUBELET_SERVING => node,
        _ => return Ok(None),
    };
    let found = match Api::<Node>::all(client.clone()).get_opt(node).await {
        Ok(found) => found,
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(source) => {
            return Err(ControllerError::Api { action: "reading node", name: node.to_owned(), source });
        }
    };
    Ok(found.map(|n| {
        let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
        addresses.into_iter().map(|a| a.address).collect()
    }))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    fn csr(name: &str, conditions: &[&str], issued: bool) -> CertificateSigningRequest {
        let mut csr = CertificateSigningRequest::default();
        csr.metadata.name = Some(name.to_owned());
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|c| CertificateSigningRequestCondition {
                        type_: (*c).to_owned(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            certificate: issued.then(|| k8s_openapi::ByteString(b"PEM".to_vec())),
        });
        csr
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_depth_follows_the_cache_every_interval() {
        let (cache, mut writer) = reflector::store::<CertificateSigningRequest>();
        let metrics = SignerMetrics::default();
        let tracker = tokio::spawn(track_queue_depth(cache, metrics.clone()));
        for object in [
            csr("pending", &[], false),
            csr("approved", &["Approved"], false),
            csr("issued", &["Approved"], true),
            csr("denied", &["Denied"], false),
        ] {
            writer.apply_watcher_event(&Event::Apply(object));
        }
        tokio::time::sleep(QUEUE_DEPTH_INTERVAL / 2).await;
        assert_eq!(metrics.queue_depth.get(), 2, "pending, and approved but not issued");
        writer.apply_watcher_event(&Event::Apply(csr("approved", &["Approved"], true)));
        tokio::time::sleep(QUEUE_DEPTH_INTERVAL).await;
        assert_eq!(metrics.queue_depth.get(), 1);
        tracker.abort();
    }
}
