//! Leader election through a `coordination.k8s.io/v1` Lease (kube-lease-manager), so that
//! several signer replicas can run and one works at a time.

use std::future::Future;

use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SignerMetrics;

/// Which Lease to hold, and as whom.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease (upstream controllers use `kube-system`).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (unique per replica: hostname plus a random suffix).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal: how long a dead leader blocks the others.
    pub lease_duration_seconds: u64,
    /// Seconds before expiry at which the leader renews.
    pub renew_grace_seconds: u64,
}

/// The Lease could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderElectionError {
    namespace: String,
    name: String,
    source: kube_lease_manager::LeaseManagerError,
}

/// Runs `work` while this replica holds the Lease, until `shutdown` is cancelled. `work` gets a
/// token that is cancelled when leadership is lost; it is started again if leadership returns.
/// On shutdown the Lease is released so another replica takes over at once.
pub async fn run_when_leader<W, F>(
    client: kube::Client,
    election: &LeaderElection,
    metrics: &SignerMetrics,
    shutdown: CancellationToken,
    mut work: W,
) -> Result<(), LeaderElectionError>
where
    W: FnMut(CancellationToken) -> F,
    F: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration_seconds)
        .with_grace(election.renew_grace_seconds)
        .build()
        .await
        .map_err(|source| LeaderElectionError {
            namespace: election.namespace.clone(),
            name: election.lease_name.clone(),
            source,
        })?;
    let (mut leading, lease_task) = manager.watch().await;
    while !shutdown.is_cancelled() {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = until(&mut leading, true) => if !changed { break },
        }
        metrics.leader.set(1);
        tracing::info!(identity = %election.identity, "became the leader");
        let term = shutdown.child_token();
        tokio::select! {
            () = work(term.clone()) => {},
            _ = until(&mut leading, false) => tracing::warn!(identity = %election.identity, "lost the lease"),
            () = shutdown.cancelled() => {},
        }
        term.cancel();
        metrics.leader.set(0);
    }
    // Dropping the receiver makes the manager release the Lease and end.
    drop(leading);
    if let Ok(Err(e)) = lease_task.await {
        tracing::warn!(error = %e, "releasing the lease");
    }
    Ok(())
}

/// Waits until the leadership flag equals `wanted`; false if the manager went away.
async fn until(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    leading.wait_for(|is| *is == wanted).await.is_ok()
}
