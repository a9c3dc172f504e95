//! The resource types this server serves: one descriptor each, used by dispatch,
//! discovery, OpenAPI and error messages.

use crate::status::Subject;

/// A served resource type.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural name as in the URL.
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// Subresources with their verbs.
    pub subresources: &'static [(&'static str, &'static [&'static str])],
    pub short_names: &'static [&'static str],
}

const CRUD: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub(crate) const CSR: ResourceType = ResourceType {
    group: "certificates.k8s.io",
    version: "v1",
    resource: "certificatesigningrequests",
    singular: "certificatesigningrequest",
    kind: "CertificateSigningRequest",
    namespaced: false,
    verbs: CRUD,
    subresources: &[("approval", &["get", "patch", "update"]), ("status", &["get", "patch", "update"])],
    short_names: &["csr"],
};

/// `certificates.k8s.io/v1` ClusterTrustBundle (GA in Kubernetes 1.37).
pub(crate) const CTB: ResourceType = ResourceType {
    group: "certificates.k8s.io",
    version: "v1",
    resource: "clustertrustbundles",
    singular: "clustertrustbundle",
    kind: "ClusterTrustBundle",
    namespaced: false,
    verbs: CRUD,
    subresources: &[],
    short_names: &[],
};

/// `certificates.k8s.io/v1beta1` ClusterTrustBundle: the same object as [`CTB`], and its
/// storage version (kube-apiserver 1.37 still stores v1beta1).
pub(crate) const CTB_V1BETA1: ResourceType = ResourceType { version: "v1beta1", ..CTB };

pub(crate) const SECRET: ResourceType = ResourceType {
    group: "",
    version: "v1",
    resource: "secrets",
    singular: "secret",
    kind: "Secret",
    namespaced: true,
    verbs: &["create", "delete", "get", "list", "watch"],
    subresources: &[],
    short_names: &[],
};

pub(crate) const LEASE: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    resource: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    verbs: CRUD,
    subresources: &[],
    short_names: &[],
};

pub(crate) const SAR: ResourceType = ResourceType {
    group: "authorization.k8s.io",
    version: "v1",
    resource: "subjectaccessreviews",
    singular: "subjectaccessreview",
    kind: "SubjectAccessReview",
    namespaced: false,
    verbs: &["create"],
    subresources: &[],
    short_names: &[],
};

/// `authentication.k8s.io/v1` SelfSubjectReview: who the requester is (`kubectl auth whoami`).
pub(crate) const SELF_SUBJECT_REVIEW: ResourceType = ResourceType {
    group: "authentication.k8s.io",
    version: "v1",
    resource: "selfsubjectreviews",
    singular: "selfsubjectreview",
    kind: "SelfSubjectReview",
    namespaced: false,
    verbs: &["create"],
    subresources: &[],
    short_names: &[],
};

pub(crate) const SELF_SAR: ResourceType = ResourceType {
    group: "authorization.k8s.io",
    version: "v1",
    resource: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    kind: "SelfSubjectAccessReview",
    namespaced: false,
    verbs: &["create"],
    subresources: &[],
    short_names: &[],
};

/// Every served type, in discovery order.
pub(crate) const ALL: [&ResourceType; 8] =
    [&SECRET, &CSR, &CTB, &CTB_V1BETA1, &LEASE, &SELF_SUBJECT_REVIEW, &SELF_SAR, &SAR];

/// The review types: create-only, answered from the request and never stored.
pub(crate) const REVIEWS: [&ResourceType; 3] = [&SELF_SUBJECT_REVIEW, &SELF_SAR, &SAR];

impl ResourceType {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `resource.group`: the storage prefix and the name in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Whether `self` and `other` are versions of the same resource (one store, one kind).
    pub fn same_resource(&self, other: &ResourceType) -> bool {
        self.group == other.group && self.resource == other.resource
    }

    /// Whether this is a ClusterTrustBundle, in any version.
    pub fn is_trust_bundle(&self) -> bool {
        self.same_resource(&CTB)
    }

    /// The version objects of this resource are stored (and hashed in discovery) as.
    pub fn storage(&'static self) -> &'static ResourceType {
        if self.is_trust_bundle() { &CTB_V1BETA1 } else { self }
    }

    /// `obj` as a response of this version: the stored object with this `apiVersion` (the
    /// versions served of one resource have the same fields).
    pub fn present(&self, mut obj: serde_json::Value) -> serde_json::Value {
        if let Some(fields) = obj.as_object_mut()
            && fields.contains_key("apiVersion")
        {
            fields.insert("apiVersion".into(), serde_json::Value::String(self.api_version()));
        }
        obj
    }

    /// Whether an update may leave out `metadata.resourceVersion` (upstream's
    /// `AllowUnconditionalUpdate`): every type here but ClusterTrustBundles.
    pub fn allows_unconditional_update(&self) -> bool {
        !self.is_trust_bundle()
    }

    /// Whether this is a review type (see [`REVIEWS`]).
    pub fn is_review(&self) -> bool {
        REVIEWS.contains(&self)
    }

    /// An error subject for an object of this type.
    pub fn subject(&self, name: &str) -> Subject {
        Subject {
            group: self.group.to_string(),
            resource: self.resource.to_string(),
            kind: self.kind.to_string(),
            name: name.to_string(),
        }
    }

    /// Finds a served type by group, version and plural name.
    pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceType> {
        ALL.into_iter().find(|r| r.group == group && r.version == version && r.resource == resource)
    }

    /// Whether the group/version is served at all.
    pub fn serves_group_version(group: &str, version: &str) -> bool {
        ALL.iter().any(|r| r.group == group && r.version == version)
    }
}
