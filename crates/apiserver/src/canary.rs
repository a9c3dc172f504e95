//! One exception to upstream's RBAC, for kubecert's renewal canary: a node may delete a CSR it
//! requested itself when the CSR is marked `kubecert.io/canary: "true"`. Nodes cannot delete
//! CSRs upstream (SPEC AD-7 gives delete to the controller only), so without this the canary's
//! throwaway requests would stay until the cleaner's next run.

use serde_json::Value;

use crate::auth::UserInfo;
use crate::request::ResourceRequest;
use crate::resources::CSR;
use crate::status::ApiResult;
use crate::store::{Store, object_key};

/// The annotation of canary CSRs (set by node-agent's canary).
pub(crate) const CANARY_ANNOTATION: &str = "kubecert.io/canary";

/// Whether `rr` is `user` (a node) deleting one of its own canary CSRs.
pub(crate) fn may_delete_own_canary(store: &Store, user: &UserInfo, rr: &ResourceRequest) -> ApiResult<bool> {
    let (Some(name), None) = (&rr.name, &rr.subresource) else { return Ok(false) };
    let is_csr = rr.rt.group == CSR.group && rr.rt.resource == CSR.resource;
    if rr.verb != "delete" || !is_csr || !user.groups.iter().any(|g| g == "system:nodes") {
        return Ok(false);
    }
    let Some(csr) = store.get(&object_key(&CSR.qualified(), "", name))? else { return Ok(false) };
    Ok(is_own_canary(&csr, &user.name))
}

/// Whether `csr` is marked as a canary and was requested by `username`.
fn is_own_canary(csr: &Value, username: &str) -> bool {
    csr["metadata"]["annotations"][CANARY_ANNOTATION] == "true" && csr["spec"]["username"] == username
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_requesters_own_marked_requests_count() {
        let csr = |annotation: &str, username: &str| json!({"metadata": {"annotations": {CANARY_ANNOTATION: annotation}}, "spec": {"username": username}});
        assert!(is_own_canary(&csr("true", "system:node:n1"), "system:node:n1"));
        assert!(!is_own_canary(&csr("true", "system:node:n2"), "system:node:n1"));
        assert!(!is_own_canary(&csr("false", "system:node:n1"), "system:node:n1"));
        assert!(!is_own_canary(&json!({"spec": {"username": "system:node:n1"}}), "system:node:n1"));
    }
}
