//! Discovery documents (`/api`, `/apis`, group and group-version resource lists) and
//! `/version` (SPEC KC-8). Plain `APIVersions`/`APIGroupList` answers; kubectl accepts them
//! when aggregated discovery is not offered.

use serde_json::{Value, json};

use crate::resources::{ALL, ResourceType};

/// The Kubernetes API version this server presents itself as.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// The `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("{KUBERNETES_VERSION}+kubecert-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// The served groups in the order kube-apiserver lists them (its group priorities happen to
/// sort these four by name).
fn groups() -> Vec<&'static str> {
    let mut gs: Vec<&'static str> = Vec::new();
    for r in ALL {
        if !r.group.is_empty() && !gs.contains(&r.group) {
            gs.push(r.group);
        }
    }
    gs.sort_unstable();
    gs
}

/// Upstream's `storageVersionHash`: base64 of the first 8 bytes of SHA-256 over
/// `group/version/kind` of the storage version. Reviews are not stored and have none.
fn storage_version_hash(r: &'static ResourceType) -> Option<String> {
    use base64::Engine as _;
    if r.is_review() {
        return None;
    }
    let stored = r.storage();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}/{}/{}", stored.group, stored.version, stored.kind).as_bytes(),
    );
    Some(base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8]))
}

/// The versions served of `group`, preferred (the first served: GA before beta) first.
fn versions(group: &str) -> Vec<&'static str> {
    let mut vs: Vec<&'static str> = Vec::new();
    for r in ALL.iter().filter(|r| r.group == group) {
        if !vs.contains(&r.version) {
            vs.push(r.version);
        }
    }
    vs
}

fn group_version(group: &str, version: &str) -> Value {
    json!({"groupVersion": format!("{group}/{version}"), "version": version})
}

fn api_group(group: &str) -> Value {
    let versions = versions(group);
    let preferred = versions.first().copied().unwrap_or("v1");
    json!({
        "name": group,
        "versions": versions.iter().map(|v| group_version(group, v)).collect::<Vec<_>>(),
        "preferredVersion": group_version(group, preferred),
    })
}

fn resource_entries(r: &'static ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": r.resource,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if let Some(hash) = storage_version_hash(r) {
        main["storageVersionHash"] = json!(hash);
    }
    let mut entries = vec![main];
    for (sub, verbs) in r.subresources {
        entries.push(json!({
            "name": format!("{}/{sub}", r.resource),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        }));
    }
    entries
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !ResourceType::serves_group_version(group, version) {
        return None;
    }
    let resources: Vec<Value> = ALL
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| resource_entries(r))
        .collect();
    if group.is_empty() {
        // Upstream's core list has no apiVersion.
        return Some(json!({"kind": "APIResourceList", "groupVersion": version, "resources": resources}));
    }
    let gv = format!("{group}/{version}");
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// The discovery document at `path`, if it is one.
pub fn document(path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis"] => Some(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups().into_iter().map(api_group).collect::<Vec<_>>(),
        })),
        ["apis", g] if groups().contains(g) => {
            let mut doc = api_group(g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Some(doc)
        }
        ["apis", g, v] => resource_list(g, v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let csr = document("/apis/certificates.k8s.io/v1").unwrap();
        let names: Vec<&str> =
            csr["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "certificatesigningrequests",
                "certificatesigningrequests/approval",
                "certificatesigningrequests/status",
                "clustertrustbundles"
            ]
        );
        assert_eq!(csr["resources"][0]["shortNames"][0], "csr");
        assert_eq!(names.len(), 4);
        assert_eq!(csr["resources"][3]["name"], "clustertrustbundles");
        let beta = document("/apis/certificates.k8s.io/v1beta1").unwrap();
        assert_eq!(beta["resources"].as_array().unwrap().len(), 1);
        // Both versions show the hash of the storage version, v1beta1 (as kube-apiserver 1.37).
        assert_eq!(beta["resources"][0]["storageVersionHash"], "v5yhuVertL4=");
        assert_eq!(csr["resources"][3]["storageVersionHash"], "v5yhuVertL4=");
        let group = document("/apis/certificates.k8s.io").unwrap();
        assert_eq!(group["versions"][1]["groupVersion"], "certificates.k8s.io/v1beta1");
        assert_eq!(group["preferredVersion"]["version"], "v1");
        assert!(document("/apis/apps").is_none());
        assert_eq!(document("/api/v1").unwrap()["resources"][0]["name"], "secrets");
        let groups: Vec<String> = document("/apis").unwrap()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["preferredVersion"]["groupVersion"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            groups,
            [
                "authentication.k8s.io/v1",
                "authorization.k8s.io/v1",
                "certificates.k8s.io/v1",
                "coordination.k8s.io/v1"
            ]
        );
        let whoami = document("/apis/authentication.k8s.io/v1").unwrap();
        assert_eq!(
            whoami["resources"],
            serde_json::json!([{"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
                "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"]}])
        );
        assert_eq!(document("/apis/authentication.k8s.io").unwrap()["kind"], "APIGroup");
        // The value kube-apiserver v1.37 shows for the same resource.
        assert_eq!(csr["resources"][0]["storageVersionHash"], "95fRKMXA+00=");
    }
}
