//! Where rotated certificates go: the certificate store first, then the live TLS identity (whose
//! clients drain their old connections), in that order, so that a crash after the swap never
//! leaves the files behind what is in use.

use std::time::SystemTime;

use kubecert_reload::LiveIdentity;
use kubecert_rotation::{BoxError, CredentialsSink, Identity};
use kubecert_store::{CertificateStore, StoredPair};
use tracing::{info, warn};

use crate::api::ApiHealth;

/// Commits to a [`CertificateStore`], then swaps a [`LiveIdentity`].
pub struct StoreSink {
    store: CertificateStore,
    live: LiveIdentity,
    health: ApiHealth,
}

impl StoreSink {
    /// A sink for `store` and `live`; a publish also records a healthy API (SPEC M-9 g).
    pub fn new(store: CertificateStore, live: LiveIdentity, health: ApiHealth) -> Self {
        Self { store, live, health }
    }
}

impl CredentialsSink for StoreSink {
    async fn publish(&self, identity: Identity) -> Result<(), BoxError> {
        let chain = identity.chain_pem();
        let key = identity.key().to_pem().to_owned();
        let store = self.store.clone();
        let stored =
            blocking(move || store.commit(chain.as_bytes(), key.as_bytes(), SystemTime::now())).await??;
        log_warnings(&stored);
        let tls = kubecert_reload::Identity::new(stored.chain.clone(), &stored.key)?;
        let generation = self.live.swap(tls);
        self.health.set(true);
        info!(
            file = %stored.source.key_file().display(),
            serial = %stored.leaf().serial_hex,
            generation,
            "new certificate stored and in use; connections made with the old one are draining"
        );
        Ok(())
    }
}

/// Runs file-system work off the async threads.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await.map_err(BoxError::from)
}

/// Logs what the store noticed without failing (e.g. a key file readable by others).
pub fn log_warnings(pair: &StoredPair) {
    for warning in &pair.warnings {
        warn!("{warning}");
    }
}
