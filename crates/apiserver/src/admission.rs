//! Admission plugins for CSRs (SPEC AD-1…AD-4): who may approve, who may sign, and the
//! `system:masters` restriction; ClusterTrustBundleAttest (who may publish trust for a
//! signer); and NodeRestriction's rule for node Leases. Pure: they consult the built-in
//! authorizer.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;

use crate::auth::UserInfo;
use crate::authz::{authorize, signer_attributes};
use crate::status::quote;

/// Whether `user` may `verb` the signer, by exact name or by `<domain>/*`.
fn allowed_for_signer(user: &UserInfo, verb: &str, signer: &str) -> bool {
    if authorize(user, &signer_attributes(verb, signer)).allowed() {
        return true;
    }
    signer.split_once('/').is_some_and(|(domain, _)| {
        authorize(user, &signer_attributes(verb, &format!("{domain}/*"))).allowed()
    })
}

/// AD-1: every update of `/approval` needs `approve` on the stored signer.
pub(crate) fn check_approval(user: &UserInfo, stored: &Csr) -> Result<(), String> {
    let signer = &stored.spec.signer_name;
    if allowed_for_signer(user, "approve", signer) {
        Ok(())
    } else {
        Err(format!("user not permitted to approve requests with signerName {}", quote(signer)))
    }
}

/// AD-2: a `/status` update that changes the certificate or the conditions needs `sign`.
pub(crate) fn check_signing(user: &UserInfo, old: &Csr, new: &Csr) -> Result<(), String> {
    let (o, n) = (old.status.clone().unwrap_or_default(), new.status.clone().unwrap_or_default());
    let changed = o.certificate != n.certificate
        || o.conditions.unwrap_or_default() != n.conditions.unwrap_or_default();
    let signer = &old.spec.signer_name;
    if !changed || allowed_for_signer(user, "sign", signer) {
        Ok(())
    } else {
        Err(format!("user not permitted to sign requests with signerName {}", quote(signer)))
    }
}

/// AD-3: no `system:masters` client certificates through the kube-apiserver-client signer.
pub(crate) fn check_subject_restriction(csr: &Csr) -> Result<(), String> {
    if csr.spec.signer_name != kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT {
        return Ok(());
    }
    let info =
        kubecert_csr::parse_csr_pem(&csr.spec.request.0).map_err(|e| format!("failed to parse CSR: {e}"))?;
    if info.subject.organizations.iter().any(|o| o == crate::authz::MASTERS_GROUP) {
        return Err(format!(
            "use of {} signer with system:masters group is not allowed",
            kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT
        ));
    }
    Ok(())
}

/// ClusterTrustBundleAttest: creating or updating a bundle linked to a signer needs `attest` on
/// that signer (by name or `<domain>/*`). The signer of the new object is checked (validation
/// already refused changing it). An update that changes nothing but the fields garbage
/// collection and storage migration write (owner references, finalizers, managed fields) is
/// not checked, as upstream.
pub(crate) fn check_attest(
    user: &UserInfo,
    new: &ClusterTrustBundle,
    old: Option<&ClusterTrustBundle>,
) -> Result<(), String> {
    let signer = new.spec.signer_name.as_deref().unwrap_or_default();
    if signer.is_empty() || old.is_some_and(|old| only_collection_fields_differ(new, old)) {
        return Ok(());
    }
    if allowed_for_signer(user, "attest", signer) {
        Ok(())
    } else {
        Err(format!("user not permitted to attest for signerName {}", quote(signer)))
    }
}

/// Whether `new` equals `old` once the fields a garbage collector or a storage migration
/// writes, and those the server keeps, are taken from `old`.
fn only_collection_fields_differ(new: &ClusterTrustBundle, old: &ClusterTrustBundle) -> bool {
    let (mut new, o) = (new.clone(), &old.metadata);
    let m = &mut new.metadata;
    m.owner_references.clone_from(&o.owner_references);
    m.finalizers.clone_from(&o.finalizers);
    m.self_link.clone_from(&o.self_link);
    m.managed_fields.clone_from(&o.managed_fields);
    m.resource_version.clone_from(&o.resource_version);
    m.uid.clone_from(&o.uid);
    m.creation_timestamp.clone_from(&o.creation_timestamp);
    m.generation = o.generation;
    new == *old
}

/// NodeRestriction for Leases: a node (user `system:node:<name>` in group `system:nodes`) may
/// write only its own Lease, named after it, in `kube-node-lease`.
pub(crate) fn check_node_lease(user: &UserInfo, namespace: &str, name: &str) -> Result<(), String> {
    let node =
        user.name.strip_prefix("system:node:").filter(|_| user.groups.iter().any(|g| g == "system:nodes"));
    match node {
        None => Ok(()),
        Some(_) if namespace != NODE_LEASE_NAMESPACE => {
            Err(format!("can only access leases in the {} system namespace", quote(NODE_LEASE_NAMESPACE)))
        }
        Some(node) if node != name => {
            Err("can only access node lease with the same name as the requesting node".into())
        }
        Some(_) => Ok(()),
    }
}

/// Where nodes keep their heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::SIGNER_USER;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    fn csr(signer: &str) -> Csr {
        let mut c = Csr::default();
        c.spec.signer_name = signer.into();
        c
    }

    #[test]
    fn approval_needs_approve_on_signer() {
        let signer = UserInfo::authenticated(SIGNER_USER, vec![]);
        let node = UserInfo::authenticated("system:node:a", vec!["system:nodes".into()]);
        let c = csr(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT_KUBELET);
        assert!(check_approval(&signer, &c).is_ok());
        assert_eq!(
            check_approval(&node, &c),
            Err("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client-kubelet\"".into())
        );
        assert!(check_approval(&signer, &csr("example.com/x")).is_err());
    }

    #[test]
    fn nodes_write_only_their_own_lease() {
        let node = UserInfo::authenticated("system:node:a", vec!["system:nodes".into()]);
        assert!(check_node_lease(&node, "kube-node-lease", "a").is_ok());
        assert_eq!(
            check_node_lease(&node, "kube-node-lease", "b"),
            Err("can only access node lease with the same name as the requesting node".into())
        );
        assert_eq!(
            check_node_lease(&node, "default", "a"),
            Err("can only access leases in the \"kube-node-lease\" system namespace".into())
        );
        let not_a_node = UserInfo::authenticated("system:node:a", vec![]);
        assert!(check_node_lease(&not_a_node, "default", "b").is_ok());
    }

    #[test]
    fn signing_only_checked_on_change() {
        let node = UserInfo::authenticated("system:node:a", vec!["system:nodes".into()]);
        let old = csr("example.com/x");
        assert!(check_signing(&node, &old, &old).is_ok());
        let mut new = old.clone();
        new.status = Some(CertificateSigningRequestStatus {
            certificate: Some(ByteString(b"c".to_vec())),
            conditions: None,
        });
        assert_eq!(
            check_signing(&node, &old, &new),
            Err("user not permitted to sign requests with signerName \"example.com/x\"".into())
        );
        let admin = UserInfo::authenticated("a", vec!["system:masters".into()]);
        assert!(check_signing(&admin, &old, &new).is_ok());
    }

    fn bundle(signer: &str) -> ClusterTrustBundle {
        let mut b = ClusterTrustBundle::default();
        b.spec.signer_name = (!signer.is_empty()).then(|| signer.to_string());
        b.spec.trust_bundle = "pem".into();
        b
    }

    #[test]
    fn attest_needed_for_signer_linked_bundles() {
        let nobody = UserInfo::authenticated("jane", vec![]);
        let admin = UserInfo::authenticated("a", vec!["system:masters".into()]);
        let signer = UserInfo::authenticated(SIGNER_USER, vec![]);
        assert!(check_attest(&nobody, &bundle(""), None).is_ok());
        assert_eq!(
            check_attest(&nobody, &bundle("example.com/x"), None),
            Err("user not permitted to attest for signerName \"example.com/x\"".into())
        );
        assert!(check_attest(&admin, &bundle("example.com/x"), None).is_ok());
        assert!(
            check_attest(&signer, &bundle(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT_KUBELET), None).is_ok()
        );
        assert!(check_attest(&signer, &bundle("example.com/x"), None).is_err());

        // Updates: only owner references, finalizers and managed fields changed → no check.
        let old = bundle("example.com/x");
        let mut gc = old.clone();
        gc.metadata.finalizers = Some(vec!["f".into()]);
        gc.metadata.resource_version = Some("9".into());
        assert!(check_attest(&nobody, &gc, Some(&old)).is_ok());
        let mut relabelled = old.clone();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(check_attest(&nobody, &relabelled, Some(&old)).is_err());
        let mut rebundled = old.clone();
        rebundled.spec.trust_bundle = "other".into();
        assert!(check_attest(&nobody, &rebundled, Some(&old)).is_err());
    }

    #[test]
    fn unparseable_request_is_refused_for_client_signer() {
        let mut c = csr(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT);
        c.spec.request = ByteString(b"junk".to_vec());
        assert!(check_subject_restriction(&c).unwrap_err().starts_with("failed to parse CSR: "));
        c.spec.signer_name = "example.com/x".into();
        assert!(check_subject_restriction(&c).is_ok());
    }
}
