//! Request dispatch: authenticate, resolve the target, authorize, then run the verb.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};

use crate::auth::{self, UserInfo};
use crate::authz::{Attributes, Decision, authorize};
use crate::registry::{self, Ctx};
use crate::request::{self, ResourceRequest, Target};
use crate::resources::{ResourceType, SELF_SAR, SELF_SUBJECT_REVIEW};
use crate::selector::Selector;
use crate::status::{ApiError, ApiResult};
use crate::store::{Mutation, Store, object_key};
use crate::table::{self, IncludeObject};
use crate::{apply, discovery, objects, openapi, watch};

/// Settings of a running API.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_body_bytes: usize,
    pub default_watch_timeout: std::time::Duration,
    pub bookmark_interval: std::time::Duration,
}

/// Shared state of the router.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<Store>,
    pub limits: Limits,
}

/// The identity a TLS connection authenticated with (AU-2), attached per request. Its
/// certificate chained to the client CA but may have expired since (the TLS layer does not check
/// expiry): [`authenticate`] checks the time on every request, as kube-apiserver does.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerIdentity(pub Option<crate::auth::PeerCertificate>);

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Every request enters here.
pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    match serve(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn authenticate(state: &AppState, req: &Request) -> ApiResult<UserInfo> {
    if let Some(user) = req.extensions().get::<UserInfo>() {
        return Ok(user.clone());
    }
    if let Some(PeerIdentity(Some(peer))) = req.extensions().get::<PeerIdentity>() {
        // An expired (or not yet valid) certificate is a 401, never a fall-back to a token.
        return peer.user_at(SystemTime::now()).cloned().ok_or_else(ApiError::unauthorized);
    }
    if let Some(value) = header_str(req.headers(), header::AUTHORIZATION) {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim();
        let secret = match auth::parse_bootstrap_token(token) {
            Some((id, _)) => state.store.get(&object_key(
                &crate::resources::SECRET.qualified(),
                auth::BOOTSTRAP_TOKEN_NAMESPACE,
                &format!("{}{id}", auth::BOOTSTRAP_TOKEN_SECRET_PREFIX),
            ))?,
            None => None,
        };
        return auth::authenticate_bootstrap_token(token, secret.as_ref(), SystemTime::now())
            .ok_or_else(ApiError::unauthorized);
    }
    Ok(UserInfo::anonymous())
}

fn accepts_json(headers: &HeaderMap) -> ApiResult<()> {
    let Some(accept) = header_str(headers, header::ACCEPT) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or_default().trim();
        media.is_empty() || media == "*/*" || media == "application/*" || media.contains("json")
    });
    if ok { Ok(()) } else { Err(ApiError::not_acceptable("application/json, application/yaml")) }
}

async fn serve(state: AppState, req: Request) -> ApiResult<Response> {
    let user = authenticate(&state, &req)?;
    let path = req.uri().path().to_string();
    let query = request::parse_query(req.uri().query());
    let method = req.method().clone();
    match request::parse(&method, &path, &query) {
        Target::NonResource => {
            let attrs =
                Attributes { verb: request::non_resource_verb(&method), resource: None, path: path.clone() };
            if let Decision::Deny(reason) = authorize(&user, &attrs) {
                return Err(ApiError::forbidden_path(&reason));
            }
            if method != Method::GET && method != Method::HEAD {
                return Err(ApiError::path_not_found());
            }
            non_resource(&path, &query, req.headers())
        }
        Target::UnknownResource => Err(ApiError::path_not_found()),
        Target::Resource(rr) => {
            let name = rr.name.clone().unwrap_or_default();
            if let Decision::Deny(reason) = authorize(&user, &rr.attributes())
                && !crate::canary::may_delete_own_canary(&state.store, &user, &rr)?
            {
                return Err(ApiError::forbidden(&rr.rt.subject(&name), &reason));
            }
            accepts_json(req.headers())?;
            resource(state, rr, user, query, req).await
        }
    }
}

fn non_resource(path: &str, query: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<Response> {
    let ok_text = |text: &'static str| {
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
    };
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => ok_text("ok"),
        "/version" => Ok(json_response(StatusCode::OK, &discovery::version())),
        "/openapi/v2" => openapi::v2(headers),
        _ => {
            if let Some(doc) = discovery::document(path) {
                return Ok(json_response(StatusCode::OK, &doc));
            }
            if let Some(doc) = openapi::document(path, query) {
                return Ok(json_response(StatusCode::OK, &doc));
            }
            Err(ApiError::path_not_found())
        }
    }
}

/// Where the objects of a request live in the store.
fn prefix(rr: &ResourceRequest) -> String {
    let q = rr.rt.qualified();
    match (&rr.namespace, rr.rt.namespaced) {
        (Some(ns), true) => format!("{q}/{ns}/"),
        (None, true) => format!("{q}/"),
        _ => format!("{q}//"),
    }
}

fn key(rr: &ResourceRequest, name: &str) -> String {
    object_key(&rr.rt.qualified(), rr.namespace.as_deref().unwrap_or_default(), name)
}

async fn resource(
    state: AppState,
    rr: ResourceRequest,
    user: UserInfo,
    query: HashMap<String, String>,
    req: Request,
) -> ApiResult<Response> {
    let accept = header_str(req.headers(), header::ACCEPT).map(str::to_string);
    let as_table = table::wants_table(accept.as_deref())
        .then(|| IncludeObject::parse(query.get("includeObject").map(String::as_str)));
    if rr.rt.is_review() {
        if rr.verb != "create" {
            return Err(ApiError::method_not_allowed(rr.verb, &rr.rt.subject("")));
        }
        let body = read_review(&state, rr.rt, req).await?;
        return if rr.rt == &SELF_SUBJECT_REVIEW {
            self_subject_review(&user)
        } else {
            access_review(rr.rt, (rr.rt == &SELF_SAR).then_some(user), body)
        };
    }
    if !rr.rt.verbs.contains(&rr.verb) {
        return Err(ApiError::method_not_allowed(
            rr.verb,
            &rr.rt.subject(rr.name.as_deref().unwrap_or_default()),
        ));
    }
    let opts = WriteOptions::parse(&query)?;
    match rr.verb {
        "get" => get(&state, &rr, as_table),
        "list" => list(&state, &rr, &query, as_table),
        "watch" => {
            let selector = selector(&rr, &query)?;
            Ok(watch::serve(state, rr.rt, prefix(&rr), selector, &query, as_table))
        }
        "create" => {
            let content_type = header_str(req.headers(), header::CONTENT_TYPE).map(str::to_string);
            let body = read_json(&state, rr.rt, content_type.as_deref(), req.into_body()).await?;
            create(&state, rr, user, body, &opts).await
        }
        "update" => {
            let content_type = header_str(req.headers(), header::CONTENT_TYPE).map(str::to_string);
            let body = read_json(&state, rr.rt, content_type.as_deref(), req.into_body()).await?;
            update(&state, rr, user, Change::Replace(body), &opts).await
        }
        "patch" => {
            let content_type =
                header_str(req.headers(), header::CONTENT_TYPE).unwrap_or_default().to_string();
            let bytes = read_body(&state, req.into_body()).await?;
            let patch = Patch::parse(&content_type, &bytes, &query)?;
            update(&state, rr, user, Change::Patch(patch), &opts).await
        }
        "delete" => {
            let json_body = is_json_content_type(header_str(req.headers(), header::CONTENT_TYPE));
            let bytes = read_body(&state, req.into_body()).await?;
            // DeleteOptions in protobuf carry nothing we act on but preconditions; those are
            // honoured for JSON bodies only.
            let options: Value = if bytes.is_empty() || !json_body { json!({}) } else { parse_json(&bytes)? };
            let name = rr.name.clone().unwrap_or_default();
            let deleted = delete(&state, &rr, &name, &options, opts.dry_run).await?;
            Ok(json_response(StatusCode::OK, &objects::deleted_status(rr.rt, &deleted)))
        }
        "deletecollection" => delete_collection(&state, &rr, &query, opts.dry_run).await,
        _ => Err(ApiError::method_not_allowed(rr.verb, &rr.rt.subject(""))),
    }
}

fn selector(rr: &ResourceRequest, query: &HashMap<String, String>) -> ApiResult<Selector> {
    Selector::parse(
        rr.rt,
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    )
}

fn respond_object(
    rt: &ResourceType,
    code: StatusCode,
    obj: &Value,
    as_table: Option<IncludeObject>,
) -> Response {
    let obj = rt.present(obj.clone());
    match as_table {
        Some(include) => {
            let meta = json!({"resourceVersion": objects::meta_str(&obj, "resourceVersion")});
            let t = table::table(rt, std::slice::from_ref(&obj), meta, SystemTime::now(), include);
            json_response(code, &t)
        }
        None => json_response(code, &obj),
    }
}

fn get(state: &AppState, rr: &ResourceRequest, as_table: Option<IncludeObject>) -> ApiResult<Response> {
    let name = rr.name.clone().unwrap_or_default();
    let obj = state.store.get(&key(rr, &name))?.ok_or_else(|| ApiError::not_found(&rr.rt.subject(&name)))?;
    Ok(respond_object(rr.rt, StatusCode::OK, &obj, as_table))
}

fn list(
    state: &AppState,
    rr: &ResourceRequest,
    query: &HashMap<String, String>,
    as_table: Option<IncludeObject>,
) -> ApiResult<Response> {
    let selector = selector(rr, query)?;
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
    };
    let prefix = prefix(rr);
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(objects::decode_continue(token, &prefix)?),
        None => None,
    };
    let listing = state
        .store
        .list(&prefix, selector.pinned_name(), after.as_deref(), limit, &|o| selector.matches(o))?;
    let meta = objects::list_meta(listing.rv, listing.next.as_deref(), listing.remaining);
    let items: Vec<Value> = listing.items.into_iter().map(|(_, v)| rr.rt.present(v)).collect();
    let body = match as_table {
        Some(include) => table::table(rr.rt, &items, meta, SystemTime::now(), include),
        None => objects::list_object(rr.rt, items, meta),
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn is_json_content_type(ct: Option<&str>) -> bool {
    ct.is_none_or(|ct| {
        let media = ct.split(';').next().unwrap_or_default().trim();
        media.is_empty() || media == "application/json" || media == "*/*"
    })
}

async fn read_body(state: &AppState, body: Body) -> ApiResult<Bytes> {
    let limit = state.limits.max_body_bytes;
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!("failed to read the request body: {e}"))),
    }
}

fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn is_protobuf(ct: Option<&str>) -> bool {
    ct.is_some_and(|ct| ct.split(';').next().unwrap_or_default().trim() == PROTOBUF)
}

/// Reads a JSON (or, for the types clients send that way, protobuf) object body.
async fn read_json(
    state: &AppState,
    rt: &ResourceType,
    content_type: Option<&str>,
    body: Body,
) -> ApiResult<Value> {
    if is_protobuf(content_type) {
        let bytes = read_body(state, body).await?;
        return crate::protobuf::decode(rt, &bytes);
    }
    if !is_json_content_type(content_type) {
        return Err(ApiError::unsupported_media_type(
            content_type.unwrap_or_default(),
            &["application/json", PROTOBUF],
        ));
    }
    let bytes = read_body(state, body).await?;
    parse_json(&bytes)
}

/// Runs a store write off the async runtime.
async fn write<F>(
    state: &AppState,
    key: String,
    dry_run: bool,
    decide: F,
) -> ApiResult<(crate::store::EventOutcome, Value)>
where
    F: FnOnce(Option<Value>, u64) -> ApiResult<Mutation> + Send + 'static,
{
    let store = state.store.clone();
    if dry_run {
        return tokio::task::spawn_blocking(move || store.mutate(&key, true, decide))
            .await
            .map_err(|e| ApiError::internal(format!("write task failed: {e}")))?;
    }
    let answer = store.enqueue(&key, decide);
    // One blocking thread commits whatever is queued; the others return at once and their
    // writers wait here without a thread.
    drop(tokio::task::spawn_blocking(move || store.commit_queued()));
    answer.await.map_err(|_| crate::store::lost())?
}

/// Names the object (name or generateName) and checks its type and namespace.
fn prepare_new(rt: &ResourceType, obj: &mut Value, url_ns: Option<&str>) -> ApiResult<String> {
    objects::check_type(rt, obj)?;
    objects::check_namespace(rt, obj, url_ns)?;
    let meta = objects::metadata_mut(obj)?;
    let mut name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let generate = meta.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() && !generate.is_empty() {
        name = objects::generate_name(&generate)?;
        meta.insert("name".into(), json!(name));
    }
    Ok(name)
}

/// Create rules, server fields and the new rv, for an object that does not exist yet.
fn admit_new(rt: &'static ResourceType, obj: Value, user: &UserInfo, rv: u64) -> ApiResult<Value> {
    let now = SystemTime::now();
    let ctx = Ctx { user, now: objects::time(now) };
    let mut obj = registry::admit_create(rt, obj, &ctx)?;
    objects::set_create_fields(&mut obj, now)?;
    objects::set_rv(&mut obj, rv)?;
    Ok(obj)
}

async fn create(
    state: &AppState,
    rr: ResourceRequest,
    user: UserInfo,
    mut obj: Value,
    opts: &WriteOptions,
) -> ApiResult<Response> {
    let rt = rr.rt;
    let warnings = opts.check_fields(rt, &obj)?;
    let name = prepare_new(rt, &mut obj, rr.namespace.as_deref())?;
    let (_, stored) = write(state, key(&rr, &name), opts.dry_run, move |current, rv| {
        let admitted = admit_new(rt, obj, &user, rv)?;
        if current.is_some() {
            return Err(ApiError::already_exists(&rt.subject(&name)));
        }
        Ok(Mutation::Put(admitted))
    })
    .await?;
    let mut stored = stored;
    if opts.dry_run
        && let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut)
    {
        // Nothing was stored, so there is no version of it (upstream leaves it out too).
        meta.remove("resourceVersion");
    }
    Ok(with_warnings(respond_object(rt, StatusCode::CREATED, &stored, None), &warnings))
}

/// `fieldValidation` (unknown fields) of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Query options of writes: `dryRun` and `fieldValidation`.
#[derive(Clone, Copy, Debug)]
struct WriteOptions {
    dry_run: bool,
    validation: FieldValidation,
}

impl WriteOptions {
    fn parse(query: &HashMap<String, String>) -> ApiResult<Self> {
        let dry_run = match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other}; supported values: \"All\""
                )));
            }
        };
        let validation = match query.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation parameter unsupported: {other}; supported values: \"Ignore\", \"Warn\", \"Strict\""
                )));
            }
        };
        Ok(Self { dry_run, validation })
    }

    /// Unknown fields: an error when Strict, warnings when Warn.
    fn check_fields(&self, rt: &ResourceType, obj: &Value) -> ApiResult<Vec<String>> {
        if self.validation == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let unknown: Vec<String> = registry::unknown_fields(rt, obj)
            .into_iter()
            .map(|f| format!("unknown field {}", crate::status::quote(&f)))
            .collect();
        if self.validation == FieldValidation::Strict && !unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{kind} in version {version} cannot be handled as a {kind}: strict decoding error: {}",
                unknown.join(", "),
                kind = rt.kind,
                version = crate::status::quote(rt.version),
            )));
        }
        Ok(unknown)
    }
}

/// Adds `Warning: 299 - "..."` headers.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - {}", crate::status::quote(w))) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// A parsed PATCH body.
pub(crate) enum Patch {
    Merge(Value),
    Json(json_patch::Patch),
    /// Server-side apply: the configuration, its field manager and `force`.
    Apply {
        config: Value,
        manager: String,
        force: bool,
    },
}

impl Patch {
    fn parse(content_type: &str, bytes: &[u8], query: &HashMap<String, String>) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let json = || -> ApiResult<Value> {
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
        };
        match media {
            "application/merge-patch+json" => Ok(Patch::Merge(json()?)),
            // Strategic merge is a merge for these types; its `$` directives carry no data.
            "application/strategic-merge-patch+json" => {
                let mut p = json()?;
                strip_directives(&mut p);
                Ok(Patch::Merge(p))
            }
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                if manager.is_empty() {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let force = matches!(query.get("force").map(String::as_str), Some("true"));
                Ok(Patch::Apply { config: json()?, manager, force })
            }
            "application/json-patch+json" => serde_json::from_slice(bytes)
                .map(Patch::Json)
                .map_err(|e| ApiError::bad_request(format!("error decoding json patch: {e}"))),
            _ => Err(ApiError::unsupported_patch_type()),
        }
    }

    fn apply(&self, current: &Value) -> ApiResult<Value> {
        let mut doc = current.clone();
        match self {
            Patch::Merge(p) | Patch::Apply { config: p, .. } => json_patch::merge(&mut doc, p),
            Patch::Json(p) => json_patch::patch(&mut doc, p).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the server rejected our request due to an error in our request: {e}"),
                details: None,
            })?,
        }
        Ok(doc)
    }
}

/// Removes strategic-merge-patch directives (`$patch`, `$setElementOrder/…`, `$retainKeys`, …).
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

enum Change {
    Replace(Value),
    Patch(Patch),
}

async fn update(
    state: &AppState,
    rr: ResourceRequest,
    user: UserInfo,
    change: Change,
    opts: &WriteOptions,
) -> ApiResult<Response> {
    let rt = rr.rt;
    let name = rr.name.clone().unwrap_or_default();
    let subject = rt.subject(&name);
    let mut warnings = Vec::new();
    if let Change::Replace(body) = &change {
        warnings = opts.check_fields(rt, body)?;
        objects::check_type(rt, body)?;
        let body_name = objects::meta_str(body, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    let namespace = rr.namespace.clone();
    let subresource = rr.subresource.clone();
    let opts = *opts;
    let (outcome, stored) = write(state, key(&rr, &name), opts.dry_run, move |current, rv| {
        let now = objects::time(SystemTime::now());
        let Some(current) = current else {
            return match change {
                Change::Patch(Patch::Apply { config, manager, force }) => {
                    let mut obj = apply::apply(&subject, None, &config, &manager, force, &now)?;
                    objects::metadata_mut(&mut obj)?.insert("name".into(), json!(subject.name));
                    prepare_new(rt, &mut obj, namespace.as_deref())?;
                    Ok(Mutation::Put(admit_new(rt, obj, &user, rv)?))
                }
                _ => Err(ApiError::not_found(&subject)),
            };
        };
        let mut new = match change {
            Change::Replace(body) => body,
            Change::Patch(Patch::Apply { config, manager, force }) => {
                apply::apply(&subject, Some(&current), &config, &manager, force, &now)?
            }
            Change::Patch(p) => p.apply(&current)?,
        };
        if opts.validation == FieldValidation::Strict {
            opts.check_fields(rt, &new)?;
        }
        if new.pointer("/metadata/managedFields").is_none()
            && let Some(owned) = current.pointer("/metadata/managedFields")
        {
            objects::metadata_mut(&mut new)?.insert("managedFields".into(), owned.clone());
        }
        apply::prune(&mut new);
        objects::check_namespace(rt, &mut new, namespace.as_deref())?;
        let wanted_rv = objects::meta_str(&new, "resourceVersion");
        if wanted_rv.is_empty() && !rt.allows_unconditional_update() {
            return Err(objects::resource_version_required(rt, &subject.name));
        }
        if !wanted_rv.is_empty() && wanted_rv != objects::meta_str(&current, "resourceVersion") {
            return Err(ApiError::conflict(&subject));
        }
        let ctx = Ctx { user: &user, now };
        let mut new = registry::admit_update(rt, new, &current, subresource.as_deref(), &ctx)?;
        objects::keep_system_fields(&mut new, &current)?;
        objects::set_rv(&mut new, objects::meta_str(&current, "resourceVersion").parse().unwrap_or(0))?;
        if objects::same_content(&new, &current) {
            return Ok(Mutation::Unchanged(current));
        }
        objects::set_rv(&mut new, rv)?;
        Ok(Mutation::Put(new))
    })
    .await?;
    let code =
        if outcome == crate::store::EventOutcome::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(with_warnings(respond_object(rt, code, &stored, None), &warnings))
}

async fn delete(
    state: &AppState,
    rr: &ResourceRequest,
    name: &str,
    options: &Value,
    dry_run: bool,
) -> ApiResult<Value> {
    let subject = rr.rt.subject(name);
    let want_uid = options.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
    let want_rv =
        options.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
    let (_, deleted) = write(state, key(rr, name), dry_run, move |current, rv| {
        let mut current = current.ok_or_else(|| ApiError::not_found(&subject))?;
        for (field, wanted, stored) in
            [("UID", &want_uid, "uid"), ("ResourceVersion", &want_rv, "resourceVersion")]
        {
            let stored = objects::meta_str(&current, stored);
            if let Some(wanted) = wanted.as_deref().filter(|w| *w != stored) {
                return Err(ApiError::precondition_failed(&subject, field, wanted, stored));
            }
        }
        objects::set_rv(&mut current, rv)?;
        Ok(Mutation::Delete(current))
    })
    .await?;
    Ok(deleted)
}

async fn delete_collection(
    state: &AppState,
    rr: &ResourceRequest,
    query: &HashMap<String, String>,
    dry_run: bool,
) -> ApiResult<Response> {
    let selector = selector(rr, query)?;
    let listing = state.store.list(&prefix(rr), selector.pinned_name(), None, 0, &|o| selector.matches(o))?;
    let mut deleted = Vec::new();
    for (_, obj) in listing.items {
        let name = objects::meta_str(&obj, "name").to_string();
        match delete(state, rr, &name, &json!({}), dry_run).await {
            Ok(gone) => deleted.push(gone),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let meta = objects::list_meta(state.store.resource_version(), None, 0);
    Ok(json_response(StatusCode::OK, &objects::list_object(rr.rt, deleted, meta)))
}

/// The body of a review: an object of the review's kind (400 naming the expected
/// apiVersion and kind otherwise).
async fn read_review(state: &AppState, rt: &ResourceType, req: Request) -> ApiResult<Value> {
    let content_type = header_str(req.headers(), header::CONTENT_TYPE).map(str::to_string);
    let body = read_json(state, rt, content_type.as_deref(), req.into_body()).await?;
    objects::check_type(rt, &body)?;
    Ok(body)
}

/// `POST .../selfsubjectreviews`: the requester as this server authenticated it. As upstream,
/// the answer is a new object (only `creationTimestamp` in its metadata), whatever the body
/// held besides its kind.
fn self_subject_review(user: &UserInfo) -> ApiResult<Response> {
    use k8s_openapi::api::authentication::v1 as authn;
    let review = authn::SelfSubjectReview {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            creation_timestamp: Some(objects::time(SystemTime::now())),
            ..Default::default()
        },
        status: Some(authn::SelfSubjectReviewStatus {
            user_info: Some(authn::UserInfo {
                username: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            }),
        }),
    };
    Ok(json_response(StatusCode::CREATED, &registry::encode(&SELF_SUBJECT_REVIEW, &review)?))
}

/// `POST .../subjectaccessreviews` (about `spec.user`) and `.../selfsubjectaccessreviews`
/// (about the requester), answered by the built-in authorizer.
fn access_review(rt: &ResourceType, requester: Option<UserInfo>, mut body: Value) -> ApiResult<Response> {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let user = requester.unwrap_or_else(|| UserInfo {
        name: spec.get("user").and_then(Value::as_str).unwrap_or_default().to_string(),
        uid: spec.get("uid").and_then(Value::as_str).unwrap_or_default().to_string(),
        groups: serde_json::from_value(spec.get("groups").cloned().unwrap_or(json!([]))).unwrap_or_default(),
        extra: serde_json::from_value(spec.get("extra").cloned().unwrap_or(json!({}))).unwrap_or_default(),
    });
    let mut errs = Vec::new();
    let (res, non_res) = (spec.get("resourceAttributes"), spec.get("nonResourceAttributes"));
    if res.is_some() == non_res.is_some() {
        errs.push(crate::status::FieldError::invalid(
            "spec.resourceAttributes",
            "null".into(),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if user.name.is_empty() && user.groups.is_empty() {
        errs.push(crate::status::FieldError::invalid(
            "spec.user",
            "\"\"".into(),
            "at least one of user or group must be specified",
        ));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(&rt.subject(""), &errs));
    }
    let field = |v: Option<&Value>, k: &str| {
        v.and_then(|a| a.get(k)).and_then(Value::as_str).unwrap_or_default().to_string()
    };
    let attrs = match res {
        Some(_) => Attributes {
            verb: field(res, "verb"),
            resource: Some(crate::authz::ResourceAttributes {
                group: field(res, "group"),
                resource: field(res, "resource"),
                subresource: field(res, "subresource"),
                namespace: field(res, "namespace"),
                name: field(res, "name"),
            }),
            path: String::new(),
        },
        None => Attributes { verb: field(non_res, "verb"), resource: None, path: field(non_res, "path") },
    };
    let status = match authorize(&user, &attrs) {
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(_) => json!({"allowed": false}),
    };
    body["status"] = status;
    body["apiVersion"] = json!(rt.api_version());
    body["kind"] = json!(rt.kind);
    match body.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.insert("creationTimestamp".into(), Value::Null);
        }
        // Upstream answers with the empty metadata of the object it decoded.
        None => body["metadata"] = json!({}),
    }
    Ok(json_response(StatusCode::CREATED, &body))
}
