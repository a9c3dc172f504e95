//! Admission plugins for CSRs (SPEC AD-1…AD-4): who may approve, who may sign, and the
//! `system:masters` restriction; and NodeRestriction's rule for node Leases. Pure: they consult
//! the built-in authorizer.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;

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

    #[test]
    fn unparseable_request_is_refused_for_client_signer() {
        let mut c = csr(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT);
        c.spec.request = ByteString(b"junk".to_vec());
        assert!(check_subject_restriction(&c).unwrap_err().starts_with("failed to parse CSR: "));
        c.spec.signer_name = "example.com/x".into();
        assert!(check_subject_restriction(&c).is_ok());
    }
}
