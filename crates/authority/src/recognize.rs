//! Upstream's recognizers (SPEC AP-2) and the SubjectAccessReviews they call for (SPEC AP-3).
//!
//! The reviews themselves are API calls and happen in the controllers; this module only says
//! which ones to make and what an allowed one means.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
use kubecert_csr::{CsrInfo, SIGNER_KUBE_APISERVER_CLIENT_KUBELET};

use crate::subject::SubjectName;
use crate::validation::validate_kubelet_client;

/// A kind of request the upstream approver knows how to authorize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recognized {
    /// A node renewing its own client certificate: the requester is the common name.
    SelfNodeClient,
    /// A kubelet client certificate requested by anyone (typically a bootstrap token).
    NodeClient,
}

impl Recognized {
    /// The `certificatesigningrequests` subresource the requester must be allowed to `create`.
    pub fn subresource(self) -> &'static str {
        match self {
            Recognized::SelfNodeClient => "selfnodeclient",
            Recognized::NodeClient => "nodeclient",
        }
    }

    /// The message of the `Approved` condition when the review allows it (SPEC AP-3).
    pub fn approval_message(self) -> &'static str {
        match self {
            Recognized::SelfNodeClient => {
                "Auto approving self kubelet client certificate after SubjectAccessReview."
            }
            Recognized::NodeClient => "Auto approving kubelet client certificate after SubjectAccessReview.",
        }
    }
}

/// The recognizers that match, in the order upstream tries them (SPEC AP-2): `SelfNodeClient`
/// when the requester's username equals the request's common name and the `NodeClient` test
/// holds; `NodeClient` when the signer is `kubernetes.io/kube-apiserver-client-kubelet` and the
/// request passes the kubelet-client rules (SPEC AP-4).
pub fn recognize(spec: &CertificateSigningRequestSpec, info: &CsrInfo) -> Vec<Recognized> {
    let usages = spec.usages.as_deref().unwrap_or_default();
    let node_client = spec.signer_name == SIGNER_KUBE_APISERVER_CLIENT_KUBELET
        && validate_kubelet_client(info, usages).is_ok();
    if !node_client {
        return Vec::new();
    }
    let common_name =
        SubjectName::from_der(&info.subject.der).map(|s| s.common_name().to_owned()).unwrap_or_default();
    recognized_kinds(spec.username.as_deref().unwrap_or_default(), &common_name)
}

/// The recognizers matching a request that passed the kubelet-client rules.
pub(crate) fn recognized_kinds(username: &str, common_name: &str) -> Vec<Recognized> {
    if username == common_name {
        vec![Recognized::SelfNodeClient, Recognized::NodeClient]
    } else {
        vec![Recognized::NodeClient]
    }
}

/// One SubjectAccessReview to make: may the requester of a CSR `create` the given
/// `certificatesigningrequests` subresource in group `certificates.k8s.io`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessReview {
    /// Which recognizer asks.
    pub recognized: Recognized,
    /// `spec.username` of the CSR.
    pub user: String,
    /// `spec.uid` of the CSR.
    pub uid: Option<String>,
    /// `spec.groups` of the CSR.
    pub groups: Vec<String>,
    /// `spec.extra` of the CSR.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl AccessReview {
    /// The review for `recognized`, for the requester recorded in `spec`.
    pub fn for_request(recognized: Recognized, spec: &CertificateSigningRequestSpec) -> Self {
        Self {
            recognized,
            user: spec.username.clone().unwrap_or_default(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone().unwrap_or_default(),
            extra: spec.extra.clone().unwrap_or_default(),
        }
    }

    /// The subresource asked about (`selfnodeclient` or `nodeclient`).
    pub fn subresource(&self) -> &'static str {
        self.recognized.subresource()
    }

    /// The API object to create (`authorization.k8s.io/v1`); `status.allowed` of the answer says
    /// whether the review allows the approval.
    pub fn to_subject_access_review(&self) -> SubjectAccessReview {
        SubjectAccessReview {
            metadata: Default::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(self.user.clone()),
                uid: self.uid.clone(),
                groups: Some(self.groups.clone()),
                extra: Some(self.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("certificates.k8s.io".to_owned()),
                    resource: Some("certificatesigningrequests".to_owned()),
                    verb: Some("create".to_owned()),
                    subresource: Some(self.subresource().to_owned()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use kubecert_csr::{KeyAlgorithm, SIGNER_KUBELET_SERVING};

    use super::*;
    use crate::test_support::{node_client, object, request};

    #[test]
    fn self_node_client_comes_first_when_the_requester_is_the_node() {
        let pem = node_client("a").pem();
        let info = kubecert_csr::parse_csr_pem(pem.as_bytes()).unwrap();
        let usages = ["digital signature", "client auth"];
        let own =
            object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, "system:node:a", &["system:nodes"]);
        assert_eq!(recognize(&own.spec, &info), [Recognized::SelfNodeClient, Recognized::NodeClient]);
        let bootstrap =
            object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, "system:bootstrap:abcdef", &[]);
        assert_eq!(recognize(&bootstrap.spec, &info), [Recognized::NodeClient]);
    }

    #[test]
    fn nothing_is_recognized_for_other_signers_or_invalid_requests() {
        let usages = ["digital signature", "client auth"];
        let pem = node_client("a").pem();
        let info = kubecert_csr::parse_csr_pem(pem.as_bytes()).unwrap();
        let serving = object(SIGNER_KUBELET_SERVING, &pem, &usages, "system:node:a", &[]);
        assert!(recognize(&serving.spec, &info).is_empty());
        let wrong_o = request(KeyAlgorithm::EcdsaP256, "system:node:a", &["system:masters"]).info();
        let csr = object(SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, "system:node:a", &[]);
        assert!(recognize(&csr.spec, &wrong_o).is_empty());
    }

    #[test]
    fn access_review_asks_what_upstream_asks_for_the_recorded_requester() {
        let mut csr = object(
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            "",
            &[],
            "system:node:a",
            &["system:nodes", "system:authenticated"],
        );
        csr.spec.uid = Some("uid-1".into());
        csr.spec.extra = Some([("k".to_string(), vec!["v".to_string()])].into());
        let review = AccessReview::for_request(Recognized::SelfNodeClient, &csr.spec);
        assert_eq!(review.subresource(), "selfnodeclient");
        let sar = review.to_subject_access_review();
        assert_eq!(sar.spec.user.as_deref(), Some("system:node:a"));
        assert_eq!(sar.spec.uid.as_deref(), Some("uid-1"));
        assert_eq!(
            sar.spec.groups.as_deref(),
            Some(&["system:nodes".to_string(), "system:authenticated".to_string()][..])
        );
        assert_eq!(sar.spec.extra.as_ref().and_then(|e| e.get("k")), Some(&vec!["v".to_string()]));
        let attributes = sar.spec.resource_attributes.unwrap();
        assert_eq!(attributes.group.as_deref(), Some("certificates.k8s.io"));
        assert_eq!(attributes.resource.as_deref(), Some("certificatesigningrequests"));
        assert_eq!(attributes.verb.as_deref(), Some("create"));
        assert_eq!(attributes.subresource.as_deref(), Some("selfnodeclient"));
        assert_eq!(
            Recognized::NodeClient.approval_message(),
            "Auto approving kubelet client certificate after SubjectAccessReview."
        );
    }
}
