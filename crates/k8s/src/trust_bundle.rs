//! ClusterTrustBundles in the version the API serves: `certificates.k8s.io/v1` (GA in
//! Kubernetes 1.37) when it is served, else `v1beta1` (beta, off by default in 1.33–1.36). The
//! object is the same in both (`spec.signerName`, `spec.trustBundle`), so it is handled as JSON
//! through a dynamic API of the chosen version (the pinned k8s-openapi feature has no v1 type).
//! kubectl and client-go pick the preferred served version the same way.

use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

/// The resource's plural name.
const RESOURCE: &str = "clustertrustbundles";

/// The versions kubecert speaks, most preferred first.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// What went wrong with a ClusterTrustBundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Discovery of `certificates.k8s.io` failed.
    #[error("discovering ClusterTrustBundles in certificates.k8s.io/{version}: {source}")]
    Discovery {
        /// The group version asked.
        version: &'static str,
        /// The API error.
        source: kube::Error,
    },
    /// A read or write of a bundle failed.
    #[error("{action} ClusterTrustBundle {name} (certificates.k8s.io/{version}): {source}")]
    Api {
        /// `reading` or `writing`.
        action: &'static str,
        /// The bundle.
        name: String,
        /// The version used.
        version: &'static str,
        /// The API error.
        source: kube::Error,
    },
    /// The API returned a bundle without `spec.trustBundle`.
    #[error("ClusterTrustBundle {0} has no spec.trustBundle")]
    NoTrustBundle(String),
}

/// The version to use, given which of [`VERSIONS`] serve ClusterTrustBundles: the first served.
pub fn preferred_version(served: &[&'static str]) -> Option<&'static str> {
    VERSIONS.into_iter().find(|v| served.contains(v))
}

/// A bundle's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    /// `spec.signerName` (empty when unlinked).
    pub signer_name: Option<String>,
    /// `spec.trustBundle`: PEM certificates.
    pub trust_bundle: String,
}

impl TrustBundle {
    fn from_object(name: &str, object: &DynamicObject) -> Result<Self, Error> {
        let spec = &object.data["spec"];
        let trust_bundle =
            spec["trustBundle"].as_str().ok_or_else(|| Error::NoTrustBundle(name.to_owned()))?.to_owned();
        Ok(Self { signer_name: spec["signerName"].as_str().map(str::to_owned), trust_bundle })
    }
}

/// ClusterTrustBundles of one API, in the version it prefers.
#[derive(Clone)]
pub struct TrustBundles {
    api: Api<DynamicObject>,
    resource: ApiResource,
    version: &'static str,
}

impl TrustBundles {
    /// The bundles of `client`'s API in the [`preferred_version`] it serves; `None` when it
    /// serves neither version.
    pub async fn discover(client: &kube::Client) -> Result<Option<Self>, Error> {
        let mut served = Vec::new();
        for version in VERSIONS {
            match client.list_api_group_resources(&format!("certificates.k8s.io/{version}")).await {
                Ok(list) if list.resources.iter().any(|r| r.name == RESOURCE) => served.push(version),
                Ok(_) => {}
                // A group version the API does not serve.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(Error::Discovery { version, source }),
            }
        }
        Ok(preferred_version(&served).map(|version| Self::with_version(client, version)))
    }

    /// The bundles of `client`'s API in `version` (one of [`VERSIONS`]), without discovery.
    pub fn with_version(client: &kube::Client, version: &'static str) -> Self {
        let gvk = GroupVersionKind::gvk("certificates.k8s.io", version, "ClusterTrustBundle");
        let resource = ApiResource::from_gvk_with_plural(&gvk, RESOURCE);
        Self { api: Api::all_with(client.clone(), &resource), resource, version }
    }

    /// The version in use.
    pub fn version(&self) -> &'static str {
        self.version
    }

    fn api_error(&self, action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
        let (name, version) = (name.to_owned(), self.version);
        move |source| Error::Api { action, name, version, source }
    }

    /// The bundle `name`.
    pub async fn get(&self, name: &str) -> Result<TrustBundle, Error> {
        let object = self.api.get(name).await.map_err(self.api_error("reading", name))?;
        TrustBundle::from_object(name, &object)
    }

    /// Creates bundle `name` linked to `signer` with `pem`, or replaces its content when it
    /// differs (the update carries the resourceVersion read, so a concurrent writer makes it
    /// fail rather than be overwritten). Writing the same bundle again is a no-op.
    pub async fn apply(&self, name: &str, signer: &str, pem: &str) -> Result<(), Error> {
        let wanted = TrustBundle { signer_name: Some(signer.to_owned()), trust_bundle: pem.to_owned() };
        let mut object = DynamicObject::new(name, &self.resource)
            .data(json!({"spec": {"signerName": signer, "trustBundle": pem}}));
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(self.api_error("writing", name)(e)),
        }
        let current = self.api.get(name).await.map_err(self.api_error("reading", name))?;
        if TrustBundle::from_object(name, &current).is_ok_and(|bundle| bundle == wanted) {
            return Ok(());
        }
        object.metadata =
            ObjectMeta { resource_version: current.metadata.resource_version, ..object.metadata };
        self.api
            .replace(name, &PostParams::default(), &object)
            .await
            .map_err(self.api_error("writing", name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_preferred_and_v1beta1_is_the_fallback() {
        assert_eq!(preferred_version(&["v1beta1", "v1"]), Some("v1"));
        assert_eq!(preferred_version(&["v1"]), Some("v1"));
        assert_eq!(preferred_version(&["v1beta1"]), Some("v1beta1"));
        assert_eq!(preferred_version(&[]), None);
    }

    #[test]
    fn a_bundle_is_read_from_either_versions_json() {
        for version in VERSIONS {
            let gvk = GroupVersionKind::gvk("certificates.k8s.io", version, "ClusterTrustBundle");
            let resource = ApiResource::from_gvk_with_plural(&gvk, RESOURCE);
            let object = DynamicObject::new("a:b:live", &resource)
                .data(json!({"spec": {"signerName": "a/b", "trustBundle": "PEM"}}));
            let bundle = TrustBundle::from_object("a:b:live", &object).unwrap();
            assert_eq!(bundle.signer_name.as_deref(), Some("a/b"));
            assert_eq!(bundle.trust_bundle, "PEM");
            let empty = DynamicObject::new("x", &resource).data(json!({"spec": {}}));
            let error = TrustBundle::from_object("x", &empty).unwrap_err();
            assert_eq!(error.to_string(), "ClusterTrustBundle x has no spec.trustBundle");
        }
    }
}
