//! OpenAPI v3 documents: the root index and one document per group-version (SPEC KC-10).
//!
//! kubectl's default `--validate=strict` looks for the `fieldValidation` query parameter on
//! the PATCH operation tagged with the object's group-version-kind; finding it, kubectl leaves
//! validation to the server and sends `fieldValidation=Strict`, which this server honours by
//! refusing unknown fields. Object schemas come from k8s-openapi's `schemars` implementations
//! (upstream's descriptions included), tagged with `x-kubernetes-group-version-kind` so that
//! `kubectl explain` finds them.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::discovery::KUBERNETES_VERSION;
use crate::resources::{ALL, CSR, LEASE, ResourceType, SAR, SECRET, SELF_SAR, SELF_SUBJECT_REVIEW};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The `/openapi/v3` root.
fn root() -> Value {
    let mut paths = Map::new();
    for r in ALL {
        let p = gv_path(r.group, r.version);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&p))}));
    }
    json!({"paths": paths})
}

/// A stable tag for the document's contents (the crate version and the path).
fn hash(path: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}{path}", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    d.as_ref()[..16].iter().map(|b| format!("{b:02X}")).collect()
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &ResourceType, action: &str, params: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params.iter().map(|p| query_param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
    })
}

fn paths_for(r: &ResourceType, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.resource)
    } else {
        format!("{base}/{}", r.resource)
    };
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let mut coll = Map::new();
    if r.verbs.contains(&"create") {
        coll.insert("post".into(), operation(r, "post", &write));
    }
    if r.verbs.contains(&"list") {
        coll.insert(
            "get".into(),
            operation(r, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]),
        );
    }
    paths.insert(collection.clone(), Value::Object(coll));
    if r.verbs.contains(&"get") {
        let mut item = Map::new();
        item.insert("get".into(), operation(r, "get", &[]));
        if r.verbs.contains(&"update") {
            item.insert("put".into(), operation(r, "put", &write));
        }
        if r.verbs.contains(&"patch") || r.verbs.contains(&"create") {
            item.insert(
                "patch".into(),
                operation(r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
            );
        }
        item.insert("delete".into(), operation(r, "delete", &["dryRun"]));
        paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
    }
    for (sub, _) in r.subresources {
        paths.insert(
            format!("{collection}/{{name}}/{sub}"),
            json!({"get": operation(r, "get", &[]), "put": operation(r, "put", &write), "patch": operation(r, "patch", &write)}),
        );
    }
}

/// Adds `T`'s schema (and those it references) to `generator`; `T`'s schema name.
fn schema_of<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> std::borrow::Cow<'static, str> {
    generator.subschema_for::<T>();
    T::schema_name()
}

/// The component schemas of the types of `group/version`, with every referenced type.
fn schemas(group: &str, version: &str) -> Map<String, Value> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut tagged = Vec::new();
    for r in ALL.iter().filter(|r| r.group == group && r.version == version) {
        let name = if *r == &CSR {
            schema_of::<CertificateSigningRequest>(&mut generator)
        } else if *r == &SECRET {
            schema_of::<Secret>(&mut generator)
        } else if *r == &LEASE {
            schema_of::<Lease>(&mut generator)
        } else if *r == &SAR {
            schema_of::<SubjectAccessReview>(&mut generator)
        } else if *r == &SELF_SUBJECT_REVIEW {
            schema_of::<SelfSubjectReview>(&mut generator)
        } else if *r == &SELF_SAR {
            schema_of::<SelfSubjectAccessReview>(&mut generator)
        } else {
            continue;
        };
        tagged.push((name.into_owned(), *r));
    }
    let mut defs = generator.take_definitions(true);
    for (name, r) in tagged {
        if let Some(Value::Object(schema)) = defs.get_mut(&name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
            );
        }
    }
    for schema in defs.values_mut() {
        if let Value::Object(m) = schema {
            m.remove("$schema");
        }
    }
    defs
}

fn group_version_document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in ALL.iter().filter(|r| r.group == group && r.version == version) {
        paths_for(r, &mut paths);
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas(group, version)},
    }))
}

/// The OpenAPI document at `path`, if it is one.
pub fn document(path: &str, _query: &HashMap<String, String>) -> Option<Value> {
    let rest = path.trim_matches('/').strip_prefix("openapi/v3")?;
    let parts: Vec<&str> = rest.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => Some(root()),
        ["api", v] => group_version_document("", v),
        ["apis", g, v] => group_version_document(g, v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_documents() {
        let q = HashMap::new();
        let root = document("/openapi/v3", &q).unwrap();
        assert!(
            root["paths"]["apis/certificates.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/certificates.k8s.io/v1?hash=")
        );
        let doc = document("/openapi/v3/apis/certificates.k8s.io/v1", &q).unwrap();
        let patch = &doc["paths"]["/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "CertificateSigningRequest");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let core = document("/openapi/v3/api/v1", &q).unwrap();
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"].is_object());
        assert!(document("/openapi/v3/apis/apps/v1", &q).is_none());
        let schemas = &doc["components"]["schemas"];
        let csr = &schemas["io.k8s.api.certificates.v1.CertificateSigningRequest"];
        assert_eq!(csr["x-kubernetes-group-version-kind"][0]["kind"], "CertificateSigningRequest");
        assert!(
            schemas["io.k8s.api.certificates.v1.CertificateSigningRequestSpec"]["properties"]["signerName"]
                .is_object()
        );
        assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert!(!doc.to_string().contains("$defs"));
        assert!(root["paths"]["apis/authentication.k8s.io/v1"].is_object());
        let whoami = document("/openapi/v3/apis/authentication.k8s.io/v1", &q).unwrap();
        let paths = whoami["paths"].as_object().unwrap();
        assert_eq!(paths.keys().collect::<Vec<_>>(), ["/apis/authentication.k8s.io/v1/selfsubjectreviews"]);
        let post = &paths["/apis/authentication.k8s.io/v1/selfsubjectreviews"]["post"];
        assert_eq!(post["x-kubernetes-group-version-kind"]["kind"], "SelfSubjectReview");
        let review = &whoami["components"]["schemas"]["io.k8s.api.authentication.v1.SelfSubjectReview"];
        assert_eq!(review["x-kubernetes-group-version-kind"][0]["group"], "authentication.k8s.io");
        assert!(whoami["components"]["schemas"]["io.k8s.api.authentication.v1.UserInfo"].is_object());
    }
}
