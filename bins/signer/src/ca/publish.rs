//! Where trust bundles go: signer-linked ClusterTrustBundles (`certificates.k8s.io/v1` when the
//! API serves it, else `v1beta1`; see `kubecert_k8s::trust_bundle`)
//! and, for consumers outside the API, a PEM file.
//!
//! Canary, then live: for every signer name the CA signs for, two bundles,
//! `<signer name with / as :>:canary` and `…:live` (e.g.
//! `kubernetes.io:kube-apiserver-client-kubelet:live`), each with `spec.signerName` set. Every
//! change is written to the canary bundles first, then to the live ones, so that consumers
//! pointed at the canary (a few nodes) see a new root before the rest; `signer ca publish
//! --canary` stops after the canary. The `--trust-bundle-out` file follows the live bundles.

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use kubecert_authority::CA_SIGNERS;
use kubecert_k8s::trust_bundle::TrustBundles;

/// Which bundles a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The `…:canary` bundles.
    Canary,
    /// The `…:live` bundles and the `--trust-bundle-out` file.
    Live,
}

impl Stage {
    /// The bundle name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Stage::Canary => "canary",
            Stage::Live => "live",
        }
    }
}

/// The name of `signer`'s bundle for `stage`.
pub fn bundle_name(signer: &str, stage: Stage) -> String {
    format!("{}:{}", signer.replace('/', ":"), stage.suffix())
}

/// Writes a trust bundle (PEM roots) for one stage. Writing the same bundle again is a no-op.
pub trait TrustPublisher: Sync {
    /// Writes `pem` as the bundle of `stage`.
    fn write(&self, stage: Stage, pem: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The bundles in the API (when a client is given) and the file (when a path is given).
pub struct Publication {
    /// The API to write ClusterTrustBundles to.
    api: Option<kube::Client>,
    /// The API's ClusterTrustBundles in the version it serves (`None`: it serves none),
    /// discovered at the first write.
    bundles: tokio::sync::OnceCell<Option<TrustBundles>>,
    /// `--trust-bundle-out`.
    file: Option<PathBuf>,
}

impl Publication {
    /// Bundles to `api` in the version of ClusterTrustBundle it serves (`v1`, else `v1beta1`),
    /// and to `file`. The version is discovered at the first write: a failed discovery (the
    /// API down, refused credentials) fails that write, to be retried, rather than dropping the
    /// API's bundles; an API that serves neither version gets none, with a warning.
    pub fn new(api: Option<kube::Client>, file: Option<PathBuf>) -> Self {
        Self { api, bundles: tokio::sync::OnceCell::new(), file }
    }

    async fn bundles(&self) -> Result<Option<&TrustBundles>> {
        let Some(client) = &self.api else { return Ok(None) };
        let bundles = self
            .bundles
            .get_or_try_init(|| async {
                let found = TrustBundles::discover(client)
                    .await
                    .context("finding which ClusterTrustBundle version the API serves")?;
                match &found {
                    Some(bundles) => tracing::info!(
                        version = bundles.version(),
                        "writing ClusterTrustBundles of certificates.k8s.io"
                    ),
                    None => tracing::warn!(
                        "the API serves no ClusterTrustBundles (certificates.k8s.io v1 or v1beta1): trust bundles go to --trust-bundle-out only"
                    ),
                }
                anyhow::Ok(found)
            })
            .await?;
        Ok(bundles.as_ref())
    }
}

impl TrustPublisher for Publication {
    async fn write(&self, stage: Stage, pem: &str) -> Result<()> {
        if let Some(bundles) = self.bundles().await? {
            for signer in CA_SIGNERS {
                bundles.apply(&bundle_name(signer, stage), signer, pem).await?;
            }
        }
        if let (Stage::Live, Some(path)) = (stage, &self.file) {
            kubecert_store::write_private_file(path, pem.as_bytes())
                .with_context(|| format!("writing the trust bundle {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_are_signer_linked() {
        assert_eq!(
            bundle_name("kubernetes.io/kube-apiserver-client-kubelet", Stage::Live),
            "kubernetes.io:kube-apiserver-client-kubelet:live"
        );
        assert_eq!(
            bundle_name("kubernetes.io/kubelet-serving", Stage::Canary),
            "kubernetes.io:kubelet-serving:canary"
        );
    }

    #[tokio::test]
    async fn the_file_follows_the_live_stage_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust/bundle.pem");
        let publication = Publication::new(None, Some(path.clone()));
        publication.write(Stage::Canary, "canary").await.unwrap();
        assert!(!path.exists());
        publication.write(Stage::Live, "live").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "live");
    }

    #[tokio::test]
    async fn an_api_that_cannot_be_reached_fails_the_write_rather_than_losing_its_bundles() {
        kubecert_reload::KeyExchange::default().install().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        // Nothing listens on port 1: discovery fails.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let publication = Publication::new(Some(client), Some(path.clone()));
        let err = format!("{:#}", publication.write(Stage::Live, "live").await.unwrap_err());
        assert!(err.contains("finding which ClusterTrustBundle version the API serves"), "{err}");
        assert!(!path.exists(), "the file waits for the API's bundles");
    }
}
