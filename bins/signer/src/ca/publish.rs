//! Where trust bundles go: signer-linked ClusterTrustBundles (`certificates.k8s.io/v1beta1`)
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
use k8s_openapi::api::certificates::v1beta1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kubecert_authority::CA_SIGNERS;

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
    pub api: Option<kube::Client>,
    /// `--trust-bundle-out`.
    pub file: Option<PathBuf>,
}

impl Publication {
    /// Bundles to `api` if it serves ClusterTrustBundle (`certificates.k8s.io/v1beta1`; an API
    /// without it gets none, with a warning), and to `file`.
    pub async fn connect(api: Option<kube::Client>, file: Option<PathBuf>) -> Self {
        let api = match api {
            Some(client) => match client.list_api_group_resources("certificates.k8s.io/v1beta1").await {
                Ok(list) if list.resources.iter().any(|r| r.name == "clustertrustbundles") => Some(client),
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        "the API does not serve certificates.k8s.io/v1beta1 ClusterTrustBundles: trust bundles go to --trust-bundle-out only"
                    );
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
        if let Some(client) = &self.api {
            for signer in CA_SIGNERS {
                apply_bundle(client, &bundle_name(signer, stage), signer, pem).await?;
            }
        }
        if let (Stage::Live, Some(path)) = (stage, &self.file) {
            kubecert_store::write_private_file(path, pem.as_bytes())
                .with_context(|| format!("writing the trust bundle {}", path.display()))?;
        }
        Ok(())
    }
}

/// Creates the bundle, or replaces its content when it differs (the update carries the
/// resourceVersion read, so a concurrent writer makes it fail rather than be overwritten).
async fn apply_bundle(client: &kube::Client, name: &str, signer: &str, pem: &str) -> Result<()> {
    let api = Api::<ClusterTrustBundle>::all(client.clone());
    let context = || format!("writing ClusterTrustBundle {name}");
    let mut bundle = ClusterTrustBundle {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        spec: ClusterTrustBundleSpec { signer_name: Some(signer.to_owned()), trust_bundle: pem.to_owned() },
    };
    match api.create(&PostParams::default(), &bundle).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e).with_context(context),
    }
    let current = api.get(name).await.with_context(context)?;
    if current.spec.trust_bundle == pem && current.spec.signer_name.as_deref() == Some(signer) {
        return Ok(());
    }
    bundle.metadata.resource_version = current.metadata.resource_version;
    api.replace(name, &PostParams::default(), &bundle).await.with_context(context)?;
    Ok(())
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
