//! OpenAPI documents (SPEC KC-10): v3, the root index and one document per group-version; and
//! v2, one document of every served type at `/openapi/v2`, in JSON or in the protobuf form
//! kubectl before 1.29 reads for `explain`, validation and `apply` (`gnostic`).
//!
//! kubectl's default `--validate=strict` looks for the `fieldValidation` query parameter on
//! the PATCH operation tagged with the object's group-version-kind; finding it, kubectl leaves
//! validation to the server and sends `fieldValidation=Strict`, which this server honours by
//! refusing unknown fields. Object schemas come from k8s-openapi's `schemars` implementations
//! (upstream's descriptions included), tagged with `x-kubernetes-group-version-kind` so that
//! `kubectl explain` finds them; both versions are generated from them, and differ only where
//! the formats do (parameters, `$ref` targets, `nullable`).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::discovery::KUBERNETES_VERSION;
use crate::gnostic;
use crate::resources::{ALL, CSR, LEASE, ResourceType, SAR, SECRET, SELF_SAR, SELF_SUBJECT_REVIEW};
use crate::status::{ApiError, ApiResult};

/// The format a document is written in.
#[derive(Clone, Copy)]
enum Spec {
    /// Swagger 2.0, `/openapi/v2`.
    V2,
    /// OpenAPI 3.0, `/openapi/v3/…`.
    V3,
}

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
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}{path}", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    upper_hex(&d.as_ref()[..16])
}

fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn query_param(name: &str, spec: Spec) -> Value {
    match spec {
        Spec::V2 => json!({"name": name, "in": "query", "type": "string", "uniqueItems": true}),
        Spec::V3 => {
            json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
        }
    }
}

fn operation(r: &ResourceType, action: &str, params: &[&str], spec: Spec) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params.iter().map(|p| query_param(p, spec)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
    })
}

/// The path of the collection of `r`.
fn collection_path(r: &ResourceType) -> String {
    let base = format!("/{}", gv_path(r.group, r.version));
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.resource)
    } else {
        format!("{base}/{}", r.resource)
    }
}

fn paths_for(r: &ResourceType, paths: &mut Map<String, Value>, spec: Spec) {
    let operation = |action: &str, params: &[&str]| operation(r, action, params, spec);
    let collection = collection_path(r);
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let mut coll = Map::new();
    if r.verbs.contains(&"create") {
        coll.insert("post".into(), operation("post", &write));
    }
    if r.verbs.contains(&"list") {
        coll.insert(
            "get".into(),
            operation("list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]),
        );
    }
    paths.insert(collection.clone(), Value::Object(coll));
    if r.verbs.contains(&"get") {
        let mut item = Map::new();
        item.insert("get".into(), operation("get", &[]));
        if r.verbs.contains(&"update") {
            item.insert("put".into(), operation("put", &write));
        }
        if r.verbs.contains(&"patch") || r.verbs.contains(&"create") {
            item.insert(
                "patch".into(),
                operation("patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
            );
        }
        item.insert("delete".into(), operation("delete", &["dryRun"]));
        paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
    }
    for (sub, _) in r.subresources {
        paths.insert(
            format!("{collection}/{{name}}/{sub}"),
            json!({"get": operation("get", &[]), "put": operation("put", &write), "patch": operation("patch", &write)}),
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

/// The schemas of the types of `resources`, with every referenced type, by name.
fn schemas<'a>(resources: impl Iterator<Item = &'a &'static ResourceType>, spec: Spec) -> Map<String, Value> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    use schemars::generate::SchemaSettings;
    let settings = match spec {
        // Swagger 2.0 has neither `nullable` nor type lists, and keeps the siblings of a `$ref`
        // (kubectl explain shows a field's description from them), as upstream's document does.
        Spec::V2 => SchemaSettings::draft07().with(|s| {
            s.meta_schema = None;
            s.transforms.clear();
        }),
        Spec::V3 => SchemaSettings::openapi3(),
    };
    let mut generator = settings.into_generator();
    let mut tagged = Vec::new();
    let (mut bundle_v1, mut bundle_v1beta1) = (false, false);
    for r in resources {
        let name = if *r == &CSR {
            schema_of::<CertificateSigningRequest>(&mut generator)
        } else if r.is_trust_bundle() {
            let name = schema_of::<ClusterTrustBundle>(&mut generator);
            if r.version == BUNDLE_SCHEMA_VERSION {
                bundle_v1beta1 = true;
                name
            } else {
                bundle_v1 = true;
                name.replace(BUNDLE_SCHEMA_VERSION, r.version).into()
            }
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
    if bundle_v1 {
        copy_bundle_schemas(&mut defs, "v1", !bundle_v1beta1);
    }
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
            // k8s-openapi's `metadata` fields are not `Option`s, so schemars lists them as
            // required; kube-apiserver's schemas never do (the differential suite compares them).
            if let Some(Value::Array(required)) = m.get_mut("required") {
                required.retain(|field| field != "metadata");
                if required.is_empty() {
                    m.remove("required");
                }
            }
        }
    }
    defs
}

/// The version k8s-openapi (built for the 1.33 API) has ClusterTrustBundle in.
const BUNDLE_SCHEMA_VERSION: &str = "v1beta1";

/// Adds the ClusterTrustBundle schemas as `version` (same fields, the names and references
/// changed); `move_them` drops the v1beta1 originals.
fn copy_bundle_schemas(defs: &mut Map<String, Value>, version: &str, move_them: bool) {
    let from = format!("io.k8s.api.certificates.{BUNDLE_SCHEMA_VERSION}.ClusterTrustBundle");
    let to = format!("io.k8s.api.certificates.{version}.ClusterTrustBundle");
    let names: Vec<String> = defs.keys().filter(|k| k.starts_with(&from)).cloned().collect();
    for name in names {
        let schema = if move_them { defs.remove(&name) } else { defs.get(&name).cloned() };
        let renamed = schema.and_then(|v| serde_json::from_str(&v.to_string().replace(&from, &to)).ok());
        if let Some(renamed) = renamed {
            defs.insert(name.replace(&from, &to), renamed);
        }
    }
}

fn group_version_document(group: &str, version: &str) -> Option<Value> {
    let in_group_version = || ALL.iter().filter(|r| r.group == group && r.version == version);
    let mut paths = Map::new();
    for r in in_group_version() {
        paths_for(r, &mut paths, Spec::V3);
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas(in_group_version(), Spec::V3)},
    }))
}

/// The `/openapi/v2` document: the paths and definitions of every served type.
fn swagger() -> Value {
    let mut paths = Map::new();
    for r in ALL {
        paths_for(r, &mut paths, Spec::V2);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": schemas(ALL.iter(), Spec::V2),
    })
}

/// The OpenAPI v3 document at `path`, if it is one.
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

/// The media type kubectl asks for (client-go's `openapiV2mimePb`)…
const PROTOBUF_REQUESTED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// …and the one kube-openapi answers with (also accepted).
const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` as served, made once: the two forms and their entity tag.
struct SwaggerForms {
    json: Bytes,
    protobuf: Bytes,
    /// As kube-openapi: the SHA-512 of the JSON in upper-case hex, quoted, for both forms.
    etag: HeaderValue,
}

static SWAGGER: LazyLock<Result<SwaggerForms, String>> = LazyLock::new(|| {
    let document = swagger();
    let json = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
    let protobuf = gnostic::encode(&document)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &json);
    let etag =
        HeaderValue::from_str(&format!("\"{}\"", upper_hex(digest.as_ref()))).map_err(|e| e.to_string())?;
    Ok(SwaggerForms { json: json.into(), protobuf: protobuf.into(), etag })
});

/// The media types of `accept` in order of preference: quality, then the more specific.
/// Ranges with `q=0` are refused ones and left out.
fn preferences(accept: &str) -> Vec<(&str, &str)> {
    let mut ranges: Vec<(f32, u8, &str, &str)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let (kind, subtype) = parts.next()?.split_once('/')?;
            let q =
                parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            let specificity = u8::from(kind != "*") + u8::from(subtype != "*");
            (q > 0.0).then_some((q, specificity, kind, subtype))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    ranges.into_iter().map(|(_, _, kind, subtype)| (kind, subtype)).collect()
}

/// `GET /openapi/v2` as kube-openapi's handler answers it: JSON, or protobuf when asked for,
/// with an `ETag`, and `304 Not Modified` for a matching `If-None-Match`.
pub fn v2(headers: &HeaderMap) -> ApiResult<Response> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let accept = header(header::ACCEPT).filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    let offers = [("application/json", false), (PROTOBUF_REQUESTED, true), (PROTOBUF, true)];
    let chosen = preferences(accept).into_iter().find_map(|(kind, subtype)| {
        offers.into_iter().find(|(offer, _)| {
            let (offer_kind, offer_subtype) = offer.split_once('/').unwrap_or_default();
            (kind == "*" || kind == offer_kind) && (subtype == "*" || subtype == offer_subtype)
        })
    });
    let Some((_, protobuf)) = chosen else {
        return Err(ApiError::not_acceptable(&format!("application/json, {PROTOBUF_REQUESTED}")));
    };
    let forms = SWAGGER.as_ref().map_err(|e| ApiError::internal(format!("building /openapi/v2: {e}")))?;
    let vary = (header::VARY, HeaderValue::from_static("Accept"));
    let etag = (header::ETAG, forms.etag.clone());
    let unchanged = header(header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == forms.etag.as_bytes())
    });
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [vary, etag]).into_response());
    }
    let (content_type, body) =
        if protobuf { (PROTOBUF, &forms.protobuf) } else { ("application/json", &forms.json) };
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok((StatusCode::OK, [content_type, vary, etag], body.clone()).into_response())
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

    #[test]
    fn trust_bundles_in_both_versions() {
        let q = HashMap::new();
        for version in ["v1", "v1beta1"] {
            let doc = document(&format!("/openapi/v3/apis/certificates.k8s.io/{version}"), &q).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let bundle = &schemas[&format!("io.k8s.api.certificates.{version}.ClusterTrustBundle")];
            assert_eq!(
                bundle["x-kubernetes-group-version-kind"],
                json!([{"group": "certificates.k8s.io", "version": version, "kind": "ClusterTrustBundle"}])
            );
            assert_eq!(
                bundle["properties"]["spec"]["allOf"][0]["$ref"],
                format!("#/components/schemas/io.k8s.api.certificates.{version}.ClusterTrustBundleSpec")
            );
            let other = if version == "v1" { "v1beta1" } else { "v1" };
            assert!(!schemas.keys().any(|k| k.contains(&format!("{other}.ClusterTrustBundle"))), "{version}");
            let path = format!("/apis/certificates.k8s.io/{version}/clustertrustbundles/{{name}}");
            assert_eq!(doc["paths"][&path]["put"]["x-kubernetes-group-version-kind"]["version"], version);
        }
        let v1 = document("/openapi/v3/apis/certificates.k8s.io/v1", &q).unwrap();
        assert!(
            v1["components"]["schemas"]["io.k8s.api.certificates.v1.CertificateSigningRequest"].is_object()
        );
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                out.extend(m.get("$ref").and_then(Value::as_str));
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn v2_document_has_every_served_type() {
        let doc = swagger();
        assert_eq!(doc["swagger"], "2.0");
        let definitions = doc["definitions"].as_object().unwrap();
        for r in ALL {
            let tagged = definitions.values().any(|d| {
                d["x-kubernetes-group-version-kind"]
                    == json!([{"group": r.group, "version": r.version, "kind": r.kind}])
            });
            assert!(tagged, "no definition of {}", r.kind);
            let post = &doc["paths"][collection_path(r)]["post"];
            assert_eq!(post["x-kubernetes-group-version-kind"]["kind"], r.kind, "{}", r.kind);
            assert_eq!(
                post["parameters"][0],
                json!({"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true})
            );
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("{r}"));
            assert!(definitions.contains_key(name), "{r} does not resolve");
        }
        // A field's description stays next to its `$ref`, where kubectl explain reads it.
        let spec = &definitions["io.k8s.api.certificates.v1.CertificateSigningRequest"]["properties"]["spec"];
        assert_eq!(spec["$ref"], "#/definitions/io.k8s.api.certificates.v1.CertificateSigningRequestSpec");
        assert!(spec["description"].as_str().unwrap().starts_with("spec contains the certificate request"));
        let text = doc.to_string();
        assert!(!text.contains("nullable") && !text.contains("allOf") && !text.contains("$schema"));
    }

    async fn body(response: Response) -> Bytes {
        axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()
    }

    fn get_v2(headers: &[(header::HeaderName, &str)]) -> ApiResult<Response> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name, HeaderValue::from_str(value).unwrap());
        }
        v2(&map)
    }

    #[tokio::test]
    async fn v2_in_json_or_protobuf_with_an_etag() {
        let json = get_v2(&[]).unwrap();
        assert_eq!(json.status(), StatusCode::OK);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(json.headers()[header::VARY], "Accept");
        let etag = json.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(etag.len(), 2 + 128, "{etag}");
        assert!(etag.starts_with('"') && !etag.contains(|c: char| c.is_ascii_lowercase()), "{etag}");
        let doc: Value = serde_json::from_slice(&body(json).await).unwrap();
        assert_eq!(doc, swagger());

        let proto = get_v2(&[(header::ACCEPT, PROTOBUF_REQUESTED)]).unwrap();
        assert_eq!(proto.headers()[header::CONTENT_TYPE], PROTOBUF);
        assert_eq!(proto.headers()[header::ETAG], etag.as_str());
        assert_eq!(body(proto).await, gnostic::encode(&doc).unwrap());

        // Preference by quality, then by specificity.
        for (accept, expected) in [
            ("application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf", PROTOBUF),
            (PROTOBUF, PROTOBUF),
            ("*/*", "application/json"),
            ("application/*;q=0.9, application/com.github.proto-openapi.spec.v2.v1.0+protobuf", PROTOBUF),
            ("text/plain, application/json", "application/json"),
        ] {
            let r = get_v2(&[(header::ACCEPT, accept)]).unwrap();
            assert_eq!(r.headers()[header::CONTENT_TYPE], expected, "{accept}");
        }
        for accept in ["text/html", "application/json;q=0", "application/yaml"] {
            let err = get_v2(&[(header::ACCEPT, accept)]).unwrap_err();
            assert_eq!(err.code, 406, "{accept}");
        }

        // Revalidation, with either form's request.
        for tags in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".into()] {
            let r = get_v2(&[(header::ACCEPT, PROTOBUF_REQUESTED), (header::IF_NONE_MATCH, &tags)]).unwrap();
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{tags}");
            assert_eq!(r.headers()[header::ETAG], etag.as_str());
            assert!(body(r).await.is_empty());
        }
        let r = get_v2(&[(header::IF_NONE_MATCH, "\"other\"")]).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
