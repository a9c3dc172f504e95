//! Bootstrap (SPEC B-9…B-14): make sure the node's kubeconfig holds a valid client certificate,
//! obtaining one with the bootstrap credentials when it does not.
//!
//! Steps: a still-valid kubeconfig is used as it is (B-12); otherwise the key is the stored
//! pair's (B-10) or the pending `kubelet-client.key.tmp`, the CSR carries `system:node:<name>` /
//! `system:nodes` and the kubelet's usages for the key, its name is the deterministic
//! `node-csr-…` digest (B-13), so that a restarted agent finds its own pending request again
//! the issued pair is committed to the store, the pending key deleted, and the kubeconfig
//! written to point at `<cert-dir>/kubelet-client-current.pem` (B-14).
//!
//! Unlike the kubelet, a failed attempt is retried here on the rotation backoff (2, 4, 8, 16 s,
//! then every 32 s) until the 3600 s bootstrap limit, instead of exiting for the supervisor to
//! restart us; a denied or failed request, or a name taken by an unrelated request, is retried
//! with a fresh key (and so a new name), so that it cannot turn into a crash loop.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kubecert_csr::{CertificateTemplate, PrivateKey, node_bootstrap_csr};
use kubecert_k8s::request::{self, request_certificate, wait_for_certificate};
use kubecert_rotation::{BOOTSTRAP_WAIT_TIMEOUT, retry_delay};
use kubecert_store::kubeconfig::{
    BootstrapKubeconfig, KubeconfigValidity, check_still_valid, write_for_current_pem,
};
use kubecert_store::{CertificateStore, PendingKey, PendingKeyOrigin, StoredPair};
use tracing::{info, warn};

use crate::api::BootstrapCredentials;
use crate::sink::{blocking, log_warnings};

/// Where bootstrap reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct BootstrapPaths<'a> {
    /// The node's kubeconfig (read, and written after bootstrap).
    pub kubeconfig: &'a Path,
    /// The bootstrap kubeconfig, if configured.
    pub bootstrap_kubeconfig: Option<&'a Path>,
    /// The certificate directory (pending key).
    pub cert_dir: &'a Path,
}

/// SPEC B-9…B-14: returns once `paths.kubeconfig` is usable; bootstraps when it is not.
pub async fn ensure_client_certificate(
    paths: BootstrapPaths<'_>,
    node_name: &str,
    store: &CertificateStore,
) -> Result<()> {
    let now = SystemTime::now();
    let kubeconfig = paths.kubeconfig;
    let why = match check_still_valid(kubeconfig, now)
        .with_context(|| format!("checking kubeconfig {}", kubeconfig.display()))?
    {
        KubeconfigValidity::Valid => {
            info!(kubeconfig = %kubeconfig.display(), "kubeconfig holds a valid client certificate; no bootstrap");
            return Ok(());
        }
        KubeconfigValidity::Missing => None,
        KubeconfigValidity::NotValid(reason) => Some(reason.to_string()),
    };
    let Some(bootstrap_path) = paths.bootstrap_kubeconfig else {
        let Some(why) = why else {
            bail!(
                "kubeconfig {} does not exist and no --bootstrap-kubeconfig is given",
                kubeconfig.display()
            );
        };
        // SPEC B-3/B-6: without bootstrap credentials the kubeconfig is used as it is.
        warn!(kubeconfig = %kubeconfig.display(), reason = %why, "kubeconfig holds no valid client certificate and there is no bootstrap kubeconfig; using it as it is");
        return Ok(());
    };
    info!(
        kubeconfig = %kubeconfig.display(),
        reason = why.as_deref().unwrap_or("it does not exist"),
        "no valid client certificate in the kubeconfig; bootstrapping"
    );
    let bootstrap = BootstrapKubeconfig::load(bootstrap_path)
        .with_context(|| format!("reading bootstrap kubeconfig {}", bootstrap_path.display()))?;

    let pair = match usable_stored_pair(store, node_name, now) {
        Some(pair) => {
            info!(serial = %pair.leaf().serial_hex, "the store already holds a valid client certificate; using it");
            pair
        }
        None => request_until_issued(store, paths.cert_dir, node_name, bootstrap_path).await?,
    };
    PendingKey::remove(paths.cert_dir).context("deleting the pending bootstrap key")?;
    write_for_current_pem(kubeconfig, &bootstrap.cluster, store.current_path())
        .with_context(|| format!("writing kubeconfig {}", kubeconfig.display()))?;
    info!(
        kubeconfig = %kubeconfig.display(),
        certificate = %store.current_path().display(),
        serial = %pair.leaf().serial_hex,
        "bootstrap complete"
    );
    Ok(())
}

/// The store's current pair if it is for this node and has not expired: a bootstrap that
/// stopped after committing but before writing the kubeconfig left it.
fn usable_stored_pair(store: &CertificateStore, node_name: &str, now: SystemTime) -> Option<StoredPair> {
    let template = CertificateTemplate::node_client(node_name);
    match store.current() {
        Ok(Some(pair)) if !pair.leaf().is_expired_at(now) && template.is_satisfied_by(pair.leaf()) => {
            Some(pair)
        }
        Ok(_) => None,
        Err(e) => {
            warn!(error = %e, "the stored client certificate cannot be used; bootstrapping a new one");
            None
        }
    }
}

/// Requests with the bootstrap credentials until a certificate is issued and stored, retrying on
/// the backoff schedule, within [`BOOTSTRAP_WAIT_TIMEOUT`].
async fn request_until_issued(
    store: &CertificateStore,
    cert_dir: &Path,
    node_name: &str,
    bootstrap_path: &Path,
) -> Result<StoredPair> {
    let client = BootstrapCredentials::new(bootstrap_path.to_path_buf()).client().await?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let deadline = Instant::now() + BOOTSTRAP_WAIT_TIMEOUT;
    let mut failures = 0;
    let mut fresh_key = false;
    loop {
        let key = bootstrap_key(store, cert_dir, fresh_key)?;
        let csr =
            node_bootstrap_csr(&key, node_name).context("building the bootstrap certificate request")?;
        let error = match request_and_wait(&api, &csr, deadline).await {
            Ok(chain) => {
                let store = store.clone();
                let key_pem = key.to_pem().to_owned();
                let pair = blocking(move || store.commit(&chain, key_pem.as_bytes(), SystemTime::now()))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .context("storing the bootstrap certificate")?;
                log_warnings(&pair);
                return Ok(pair);
            }
            Err(error) => error,
        };
        if let request::Error::Timeout { .. } = error {
            bail!("no client certificate within {} s: {error}", BOOTSTRAP_WAIT_TIMEOUT.as_secs());
        }
        // A request that can never succeed: start over with a new key, hence a new name.
        fresh_key = matches!(
            error,
            request::Error::Denied { .. }
                | request::Error::Failed { .. }
                | request::Error::Incompatible { .. }
        );
        if fresh_key {
            PendingKey::remove(cert_dir).context("deleting the pending bootstrap key")?;
        }
        failures += 1;
        let delay = retry_delay(failures, jitter());
        // The whole chain: kube's own message stops at "client error (Connect)"; the cause
        // (connection refused, unknown issuer, …) is what an operator needs.
        let error = kubecert_cli::error_chain(&error);
        if Instant::now() + delay >= deadline {
            bail!("no client certificate within {} s; last error: {error}", BOOTSTRAP_WAIT_TIMEOUT.as_secs());
        }
        warn!(%error, failures, retry_in = ?delay, new_key = fresh_key, "bootstrap attempt failed");
        tokio::time::sleep(delay).await;
    }
}

/// SPEC B-10: the stored pair's key when there is one (even an expired pair's), else the pending
/// key file, created when missing.
fn bootstrap_key(store: &CertificateStore, cert_dir: &Path, fresh: bool) -> Result<PrivateKey> {
    if !fresh && let Ok(Some(pair)) = store.current() {
        info!("reusing the key of the stored client certificate");
        return Ok(pair.key);
    }
    let pending = PendingKey::load_or_create(cert_dir).context("loading the pending bootstrap key")?;
    for warning in &pending.warnings {
        warn!("{warning}");
    }
    match pending.origin {
        PendingKeyOrigin::Loaded => {
            info!(path = %pending.path.display(), "reusing the pending bootstrap key")
        }
        PendingKeyOrigin::Created | PendingKeyOrigin::Replaced => {
            info!(path = %pending.path.display(), "generated a new bootstrap key")
        }
    }
    Ok(pending.key)
}

/// Creates `csr` (or finds our own earlier submission) and waits for it until `deadline`.
async fn request_and_wait(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    deadline: Instant,
) -> Result<Vec<u8>, request::Error> {
    let name = csr.metadata.name.as_deref().unwrap_or_default();
    info!(
        csr = name,
        "submitting the bootstrap certificate signing request (or finding it from an earlier run)"
    );
    let requested = request_certificate(api, csr, SystemTime::now()).await?;
    info!(csr = %requested.name, uid = %requested.uid, "waiting for the bootstrap certificate signing request to be approved and issued");
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    wait_for_certificate(api.clone(), &requested, left).await
}

/// A draw in `[0, 1)` for backoff jitter. Jitter only spreads retries; it need not be random
/// in any strong sense.
fn jitter() -> f64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    f64::from(nanos) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_key_survives_until_a_fresh_one_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            CertificateStore::open(kubecert_store::StoreConfig::new(dir.path(), "kubelet-client")).unwrap();
        let first = bootstrap_key(&store, dir.path(), false).unwrap();
        let again = bootstrap_key(&store, dir.path(), false).unwrap();
        assert_eq!(first.public_key_der(), again.public_key_der());
        PendingKey::remove(dir.path()).unwrap();
        let fresh = bootstrap_key(&store, dir.path(), true).unwrap();
        assert_ne!(first.public_key_der(), fresh.public_key_der());
    }

    #[test]
    fn jitter_is_a_unit_draw() {
        let r = jitter();
        assert!((0.0..1.0).contains(&r), "{r}");
    }
}
