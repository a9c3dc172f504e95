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
    /// The API's ClusterTrustBundles to write.
    pub api: Option<TrustBundles>,
    /// `--trust-bundle-out`.
    pub file: Option<PathBuf>,
}

impl Publication {
    /// Bundles to `api` in the version of ClusterTrustBundle it serves (`v1`, else `v1beta1`; an
    /// API with neither gets none, with a warning), and to `file`.
    pub async fn connect(api: Option<kube::Client>, file: Option<PathBuf>) -> Self {
        let api = match api {
            Some(client) => match TrustBundles::discover(&client).await {
                Ok(Some(bundles)) => {
                    tracing::info!(
                        version = bundles.version(),
                        "writing ClusterTrustBundles of certificates.k8s.io"
                    );
                    Some(bundles)
                }
                Ok(None) => {
                    tracing::warn!(
                        "the API serves no ClusterTrustBundles (certificates.k8s.io v1 or v1beta1): trust bundles go to --trust-bundle-out only"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "trust bundles go to --trust-bundle-out only");
                    None
                }
            },
            None => None,
        };
        Self { api, file }
    }
}

impl TrustPublisher for Publication {
    async fn write(&self, stage: Stage, pem: &str) -> Result<()> {
        if let Some(bundles) = &self.api {
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
        let publication = Publication { api: None, file: Some(path.clone()) };
        publication.write(Stage::Canary, "canary").await.unwrap();
        assert!(!path.exists());
        publication.write(Stage::Live, "live").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "live");
    }
}
