//! Publishing this node's certificate status for the fleet view (`signer fleet`): client and
//! serving expiry, the key id of the CA that issued each, the key ids of the CAs the node
//! trusts (its kubeconfig's certificate authority), and whether a rotation is overdue. It goes
//! on the node's own Lease in `kube-node-lease` (see `kubecert_k8s::fleet`), which the Node
//! authorizer and NodeRestriction let a node write, as the kubelet writes its heartbeat there.
//!
//! The status is written when it changes (looked at whenever a certificate or rotation status
//! changes, and every [`POLL`] for the trust in the kubeconfig), and every [`REFRESH`] anyway,
//! so that an old `updated` time tells a reader the agent is gone. A failed write is logged and
//! retried after [`RETRY`]; it never stops the agent.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use kubecert_k8s::fleet::{self, NodeStatus};
use kubecert_reload::LiveIdentity;
use kubecert_rotation::RotationStatus;
use kubecert_store::kubeconfig::BootstrapKubeconfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the status is written when nothing changed.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// How often the status is looked at without a notification (the kubeconfig's trust).
pub const POLL: Duration = Duration::from_secs(30);
/// How long after a failed write the next try comes.
pub const RETRY: Duration = Duration::from_secs(10);

/// Where the status comes from.
pub struct Sources {
    /// This node.
    pub node_name: String,
    /// The kubeconfig whose certificate authority the node trusts.
    pub kubeconfig: PathBuf,
    /// The client identity in use.
    pub client: LiveIdentity,
    /// The client rotation loop, when rotation is on.
    pub client_rotation: Option<watch::Receiver<RotationStatus>>,
    /// The serving identity and its rotation loop, when the node has one.
    pub serving: Option<(LiveIdentity, watch::Receiver<RotationStatus>)>,
}

impl Sources {
    /// The status now.
    fn snapshot(&self) -> NodeStatus {
        let leaf =
            |live: &LiveIdentity| live.current().and_then(|id| fleet::certificate_status(&id.leaf().der));
        let overdue = |rx: &watch::Receiver<RotationStatus>| rx.borrow().overdue;
        let trusted = BootstrapKubeconfig::load(&self.kubeconfig)
            .ok()
            .and_then(|k| k.cluster.certificate_authority)
            .and_then(|ca| ca.read().ok())
            .map(|pem| fleet::ca_key_ids(&pem))
            .unwrap_or_default();
        NodeStatus {
            client: leaf(&self.client),
            serving: self.serving.as_ref().and_then(|(live, _)| leaf(live)),
            trusted_key_ids: trusted,
            overdue: self.client_rotation.as_ref().is_some_and(overdue)
                || self.serving.as_ref().is_some_and(|(_, rx)| overdue(rx)),
            updated: String::new(),
        }
    }

    /// Resolves when a rotation status changes (never, without any).
    async fn changed(&mut self) {
        let serving = self.serving.as_mut().map(|(_, rx)| rx);
        tokio::select! {
            () = next_change(self.client_rotation.as_mut()) => {}
            () = next_change(serving) => {}
        }
    }
}

/// Resolves when `rx` sees a new value; never when there is none or its sender is gone.
async fn next_change(rx: Option<&mut watch::Receiver<RotationStatus>>) {
    let changed = match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// What was last written, and when.
struct Written {
    status: NodeStatus,
    at: Instant,
}

/// Whether to write `current` now, given what was last written.
fn due(last: Option<&Written>, current: &NodeStatus, now: Instant) -> bool {
    last.is_none_or(|w| w.status != *current || now.duration_since(w.at) >= REFRESH)
}

/// Publishes until `cancel`.
pub async fn run(client: kube::Client, mut sources: Sources, cancel: CancellationToken) -> Result<()> {
    let mut last: Option<Written> = None;
    loop {
        let status = sources.snapshot();
        let mut wait = POLL;
        if due(last.as_ref(), &status, Instant::now()) {
            match fleet::publish(&client, &sources.node_name, &status, SystemTime::now()).await {
                Ok(()) => {
                    debug!(node = %sources.node_name, "published the certificate status on the node Lease");
                    last = Some(Written { status, at: Instant::now() });
                }
                Err(e) => {
                    warn!(error = %e, "cannot publish the certificate status on the node Lease; retrying");
                    wait = RETRY;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            () = sources.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn written_on_change_and_every_refresh() {
        let status = NodeStatus { overdue: false, ..NodeStatus::default() };
        let start = Instant::now();
        assert!(due(None, &status, start));
        let last = Written { status: status.clone(), at: start };
        assert!(!due(Some(&last), &status, start + POLL));
        let changed = NodeStatus { overdue: true, ..status.clone() };
        assert!(due(Some(&last), &changed, start + Duration::from_secs(1)));
        tokio::time::advance(REFRESH).await;
        assert!(due(Some(&last), &status, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_reads_the_trust_and_the_overdue_signal() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let kubeconfig = dir.path().join("kubelet.conf");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n",
                ca_file.display()
            ),
        )
        .unwrap();
        let (tx, rx) = watch::channel(RotationStatus {
            phase: Default::default(),
            updated_at: SystemTime::UNIX_EPOCH,
            current_not_before: None,
            current_not_after: None,
            current_serial: None,
            expired: false,
            deadline: None,
            due_since: None,
            overdue_threshold: Duration::ZERO,
            overdue_by: None,
            overdue: false,
            last_success: None,
            last_error: None,
            last_error_at: None,
            consecutive_failures: 0,
            renew_errors: 0,
            rotations: 0,
            last_replaced_age: None,
        });
        let mut sources = Sources {
            node_name: "n1".into(),
            kubeconfig,
            client: LiveIdentity::empty(),
            client_rotation: Some(rx),
            serving: None,
        };
        let status = sources.snapshot();
        assert_eq!(status.trusted_key_ids, fleet::ca_key_ids(ca.pem().as_bytes()));
        assert_eq!((status.client, status.overdue), (None, false));
        tx.send_modify(|s| s.overdue = true);
        tokio::time::timeout(Duration::from_secs(1), sources.changed())
            .await
            .expect("a change wakes the loop");
        assert!(sources.snapshot().overdue);
    }
}
