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
//! With rotation on (the default), the key is new, as the kubelet's certificate manager makes
//! it (SPEC B-1, M-9); with `--rotate-certificates=false` the stored pair's key is reused (B-10).
//! When the stored certificate has expired and bootstrap fails or is not configured, each round
//! also tries recovery with the expired certificate's key (`crate::recovery`).
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
use tracing::{error, info, warn};

use crate::api::BootstrapCredentials;
use crate::recovery::{AttemptError, recover, recovery_needed_path, recovery_needed_text};
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

/// How bootstrap chooses its key.
#[derive(Clone, Copy, Debug)]
pub struct BootstrapOptions {
    /// Reuse the key of the stored (expired) pair, as the kubelet's non-rotating bootstrap does
    /// (SPEC B-10). With rotation on, the kubelet's certificate manager obtains the first
    /// certificate with a new key (SPEC B-1, M-9): so does the agent.
    pub reuse_stored_key: bool,
}

/// SPEC B-9…B-14: returns once `paths.kubeconfig` is usable; bootstraps when it is not, and
/// recovers with the expired certificate's key when bootstrap fails or is not configured
/// (`crate::recovery`).
pub async fn ensure_client_certificate(
    paths: BootstrapPaths<'_>,
    node_name: &str,
    store: &CertificateStore,
    options: BootstrapOptions,
) -> Result<()> {
    let now = SystemTime::now();
    let kubeconfig = paths.kubeconfig;
    let why = match check_still_valid(kubeconfig, now)
        .with_context(|| format!("checking kubeconfig {}", kubeconfig.display()))?
    {
        KubeconfigValidity::Valid => {
            info!(kubeconfig = %kubeconfig.display(), "kubeconfig holds a valid client certificate; no bootstrap");
            remove_recovery_needed(paths.cert_dir);
            return Ok(());
        }
        KubeconfigValidity::Missing => None,
        KubeconfigValidity::NotValid(reason) => Some(reason.to_string()),
    };
    let expired = expired_stored_pair(store, node_name, now);
    if paths.bootstrap_kubeconfig.is_none() {
        let Some(why) = why else {
            bail!(
                "kubeconfig {} does not exist and no --bootstrap-kubeconfig is given",
                kubeconfig.display()
            );
        };
        let Some(expired) = &expired else {
            // SPEC B-3/B-6: without bootstrap credentials the kubeconfig is used as it is.
            warn!(kubeconfig = %kubeconfig.display(), reason = %why, "kubeconfig holds no valid client certificate and there is no bootstrap kubeconfig; using it as it is");
            return Ok(());
        };
        info!(kubeconfig = %kubeconfig.display(), reason = %why, serial = %expired.leaf().serial_hex, "no valid client certificate and no bootstrap kubeconfig; recovering with the expired certificate's key");
    } else {
        info!(
            kubeconfig = %kubeconfig.display(),
            reason = why.as_deref().unwrap_or("it does not exist"),
            "no valid client certificate in the kubeconfig; bootstrapping"
        );
    }

    let pair = match usable_stored_pair(store, node_name, now) {
        Some(pair) => {
            info!(serial = %pair.leaf().serial_hex, "the store already holds a valid client certificate; using it");
            pair
        }
        None => obtain(paths, node_name, store, expired.as_ref(), options).await?,
    };
    PendingKey::remove(paths.cert_dir).context("deleting the pending bootstrap key")?;
    remove_recovery_needed(paths.cert_dir);
    write_for_current_pem(kubeconfig, &cluster_of(paths)?, store.current_path())
        .with_context(|| format!("writing kubeconfig {}", kubeconfig.display()))?;
    info!(
        kubeconfig = %kubeconfig.display(),
        certificate = %store.current_path().display(),
        serial = %pair.leaf().serial_hex,
        "bootstrap complete"
    );
    Ok(())
}

/// The cluster (server, CA) for the written kubeconfig: the bootstrap kubeconfig's (SPEC B-14),
/// else, after a recovery without one, the node kubeconfig's own.
fn cluster_of(paths: BootstrapPaths<'_>) -> Result<kubecert_store::kubeconfig::ClusterEndpoint> {
    let from_bootstrap = paths.bootstrap_kubeconfig.and_then(|path| BootstrapKubeconfig::load(path).ok());
    let kubeconfig = match from_bootstrap {
        Some(kubeconfig) => kubeconfig,
        None => BootstrapKubeconfig::load(paths.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", paths.kubeconfig.display()))?,
    };
    Ok(kubeconfig.cluster)
}

/// The store's current pair if it is this node's and has expired: the key recovery proves.
fn expired_stored_pair(store: &CertificateStore, node_name: &str, now: SystemTime) -> Option<StoredPair> {
    let template = CertificateTemplate::node_client(node_name);
    match store.current() {
        Ok(Some(pair)) if pair.leaf().is_expired_at(now) && template.is_satisfied_by(pair.leaf()) => {
            Some(pair)
        }
        _ => None,
    }
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

/// Obtains a client certificate and stores it: each round tries bootstrap (when configured),
/// then recovery with the expired pair (when there is one), then waits on the backoff schedule
/// (2, 4, 8, 16 s, then every 32 s). Without an expired pair it gives up after
/// [`BOOTSTRAP_WAIT_TIMEOUT`], as before; with one it never does (the node has no other way
/// back). When no path can work without a person, RECOVERY-NEEDED says what to do.
async fn obtain(
    paths: BootstrapPaths<'_>,
    node_name: &str,
    store: &CertificateStore,
    expired: Option<&StoredPair>,
    options: BootstrapOptions,
) -> Result<StoredPair> {
    let deadline = Instant::now() + BOOTSTRAP_WAIT_TIMEOUT;
    let mut failures = 0;
    let mut fresh_key = false;
    loop {
        let mut errors = Vec::new();
        if let Some(bootstrap_path) = paths.bootstrap_kubeconfig {
            let key = bootstrap_key(store, paths.cert_dir, fresh_key || !options.reuse_stored_key)?;
            match bootstrap_once(bootstrap_path, &key, node_name, deadline).await {
                Ok(chain) => return commit(store, &chain, &key).await,
                Err((error, fresh)) => {
                    if expired.is_some() {
                        warn!(
                            error = error.message(),
                            "bootstrap failed; trying recovery with the expired certificate's key"
                        );
                    }
                    fresh_key = fresh;
                    if fresh {
                        PendingKey::remove(paths.cert_dir).context("deleting the pending bootstrap key")?;
                    }
                    errors.push(error);
                }
            }
        }
        if let Some(expired) = expired {
            let key = recovery_key(paths.cert_dir, expired)?;
            match recover(server_kubeconfig(paths), expired, &key, node_name).await {
                Ok(chain) => {
                    let pair = commit(store, &chain, &key).await?;
                    info!(from_serial = %expired.leaf().serial_hex, serial = %pair.leaf().serial_hex, "recovered with the expired certificate's key");
                    return Ok(pair);
                }
                Err(error) => {
                    warn!(error = error.message(), "recovery with the expired certificate failed");
                    errors.push(error);
                }
            }
        }
        failures += 1;
        let delay = retry_delay(failures, jitter());
        let messages: Vec<String> = errors.iter().map(|e| e.message().to_owned()).collect();
        if errors.iter().all(|e| matches!(e, AttemptError::NeedsOperator(_))) {
            let text = recovery_needed_text(node_name, paths.bootstrap_kubeconfig, expired, &messages);
            write_recovery_needed(paths.cert_dir, &text);
        }
        let error = messages.join("; ");
        if expired.is_none() && Instant::now() + delay >= deadline {
            bail!("no client certificate within {} s; last error: {error}", BOOTSTRAP_WAIT_TIMEOUT.as_secs());
        }
        warn!(%error, failures, retry_in = ?delay, new_key = fresh_key, "bootstrap attempt failed");
        tokio::time::sleep(delay).await;
    }
}

/// Where recovery finds the API server: the node's kubeconfig, or the bootstrap kubeconfig when
/// an earlier run stored its pair but stopped before writing the kubeconfig.
fn server_kubeconfig<'a>(paths: BootstrapPaths<'a>) -> &'a Path {
    match paths.bootstrap_kubeconfig {
        Some(bootstrap) if !paths.kubeconfig.exists() => bootstrap,
        _ => paths.kubeconfig,
    }
}

/// Stores an issued chain with its key.
async fn commit(store: &CertificateStore, chain: &[u8], key: &PrivateKey) -> Result<StoredPair> {
    let store = store.clone();
    let (chain, key_pem) = (chain.to_vec(), key.to_pem().to_owned());
    let pair = blocking(move || store.commit(&chain, key_pem.as_bytes(), SystemTime::now()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("storing the client certificate")?;
    log_warnings(&pair);
    Ok(pair)
}

/// One bootstrap request with the credentials of `bootstrap_path` (read again each time, so that
/// a bootstrap kubeconfig put in place by an operator is picked up). On failure: the error, and
/// whether the next attempt needs a new key (a request that can never succeed).
async fn bootstrap_once(
    bootstrap_path: &Path,
    key: &PrivateKey,
    node_name: &str,
    deadline: Instant,
) -> Result<Vec<u8>, (AttemptError, bool)> {
    let client = BootstrapCredentials::new(bootstrap_path.to_path_buf()).client().await.map_err(|e| {
        (AttemptError::NeedsOperator(format!("bootstrap: {}", kubecert_cli::error_chain(&*e))), false)
    })?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = node_bootstrap_csr(key, node_name)
        .context("building the bootstrap certificate request")
        .map_err(|e| (AttemptError::Transient(kubecert_cli::error_chain(&*e)), false))?;
    let error = match request_and_wait(&api, &csr, deadline).await {
        Ok(chain) => return Ok(chain),
        Err(error) => error,
    };
    // A request that can never succeed: start over with a new key, hence a new name.
    let fresh_key = matches!(
        error,
        request::Error::Denied { .. } | request::Error::Failed { .. } | request::Error::Incompatible { .. }
    );
    let attempt = match &error {
        request::Error::Create(e) => AttemptError::from_kube("bootstrap", e),
        // The whole chain: kube's own message stops at "client error (Connect)"; the cause
        // (connection refused, unknown issuer, …) is what an operator needs.
        other => AttemptError::Transient(kubecert_cli::error_chain(other)),
    };
    Err((attempt, fresh_key))
}

/// The key for a recovery: the pending key, never the expired certificate's own.
fn recovery_key(cert_dir: &Path, expired: &StoredPair) -> Result<PrivateKey> {
    let pending = PendingKey::load_or_create(cert_dir).context("loading the pending key")?;
    if !expired.leaf().matches_key(&pending.key) {
        return Ok(pending.key);
    }
    PendingKey::remove(cert_dir).context("deleting the pending key")?;
    Ok(PendingKey::load_or_create(cert_dir).context("creating a pending key")?.key)
}

fn write_recovery_needed(cert_dir: &Path, text: &str) {
    let path = recovery_needed_path(cert_dir);
    let old = std::fs::read_to_string(&path).ok();
    if old.as_deref() == Some(text) {
        return;
    }
    match kubecert_store::write_private_file(&path, text.as_bytes()) {
        // Said once; later rounds only refresh the file (the errors' details change).
        Ok(()) if old.is_some() => {}
        Ok(()) => {
            error!(file = %path.display(), "no way to a client certificate without an operator; see the file")
        }
        Err(e) => {
            error!(file = %path.display(), error = %e, "no way to a client certificate without an operator, and the file saying so cannot be written")
        }
    }
}

fn remove_recovery_needed(cert_dir: &Path) {
    let path = recovery_needed_path(cert_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => info!(file = %path.display(), "deleted: the node has a client certificate again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(file = %path.display(), error = %e, "cannot delete the recovery notice"),
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
    fn recovery_reaches_the_server_of_the_bootstrap_kubeconfig_until_the_node_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let (kubeconfig, bootstrap) =
            (dir.path().join("kubelet.conf"), dir.path().join("bootstrap.kubeconfig"));
        let paths = |bootstrap_kubeconfig| BootstrapPaths {
            kubeconfig: &kubeconfig,
            bootstrap_kubeconfig,
            cert_dir: dir.path(),
        };
        assert_eq!(server_kubeconfig(paths(Some(&bootstrap))), bootstrap);
        assert_eq!(server_kubeconfig(paths(None)), kubeconfig);
        std::fs::write(&kubeconfig, "").unwrap();
        assert_eq!(server_kubeconfig(paths(Some(&bootstrap))), kubeconfig);
    }

    #[test]
    fn jitter_is_a_unit_draw() {
        let r = jitter();
        assert!((0.0..1.0).contains(&r), "{r}");
    }
}
