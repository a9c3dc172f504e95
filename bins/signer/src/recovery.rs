//! Recovery with an expired client certificate's key (`signer serve --recovery-max-expired D`)
//! and its deny list (`signer deny-serial`).
//!
//! `POST /apis/kubecert.io/v1/recover` on the API's own listener: the node connects with its
//! expired client certificate (the listener verifies chain, signature and clientAuth usage, not
//! the time), and sends the CertificateSigningRequest it wants, for a new key it generated. If
//! kubecert-authority's `decide_recovery` allows it (window, deny list, same identity, rate
//! limit), the request is created *as the node* — the same approver and signer then handle it as
//! a renewal — annotated `kubecert.io/recovered-from-serial: <hex>`, and the answer is the issued
//! object. A refusal is a 403 `Status` with the refusal's reason.
//!
//! It lives in the signer, not in an API server: against a real kube-apiserver (`signer
//! controller`) nothing listens for it (see the README).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubecert_apiserver::{Api, ClientCertificate, UserInfo};
use kubecert_authority::{
    DenyList, RecoveryAttempts, RecoveryPolicy, decide_recovery, node_name, normalize_serial,
};
use kubecert_csr::{Certificate, SIGNER_KUBE_APISERVER_CLIENT_KUBELET, parse_csr_pem};
use kubecert_k8s::request::{self, request_certificate, wait_for_certificate};
use serde_json::json;
use tracing::{info, warn};

/// The path of the endpoint.
pub const RECOVER_PATH: &str = "/apis/kubecert.io/v1/recover";
/// The annotation that marks a recovered CSR, with the expired certificate's serial (hex).
pub const RECOVERED_FROM_ANNOTATION: &str = "kubecert.io/recovered-from-serial";
/// How long the endpoint waits for the approver and signer.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The deny list file in a data directory: one serial (hex) per line.
pub fn deny_list_path(data_dir: &Path) -> PathBuf {
    data_dir.join("recovery-deny-list")
}

/// `signer deny-serial SERIAL --data-dir DIR`: adds `serial` to the deny list. Takes effect on
/// the next recovery attempt (the list is read on each one); returns the canonical serial.
pub fn deny_serial(data_dir: &Path, serial: &str) -> Result<String> {
    let serial = normalize_serial(serial).map_err(anyhow::Error::msg)?;
    let path = deny_list_path(data_dir);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    DenyList::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !DenyList::parse(&text).unwrap_or_default().contains(&serial) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&serial);
        text.push('\n');
        kubecert_store::write_private_file(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(serial)
}

/// The endpoint's state.
pub struct Recovery {
    policy: RecoveryPolicy,
    deny_list: PathBuf,
    api: Api,
    attempts: Mutex<RecoveryAttempts>,
}

impl Recovery {
    /// Recovery over `api` with `policy`, the deny list in `data_dir`.
    pub fn new(policy: RecoveryPolicy, data_dir: &Path, api: Api) -> Self {
        Self { policy, deny_list: deny_list_path(data_dir), api, attempts: Mutex::default() }
    }

    /// The route to add to the API's listener.
    pub fn routes(self) -> Router {
        Router::new().route(RECOVER_PATH, post(recover)).with_state(Arc::new(self))
    }

    fn deny_list(&self) -> Result<DenyList, String> {
        match std::fs::read_to_string(&self.deny_list) {
            Ok(text) => DenyList::parse(&text).map_err(|e| format!("{}: {e}", self.deny_list.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DenyList::default()),
            Err(e) => Err(format!("{}: {e}", self.deny_list.display())),
        }
    }
}

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

async fn recover(
    State(recovery): State<Arc<Recovery>>,
    presented: Option<Extension<ClientCertificate>>,
    body: Bytes,
) -> Response {
    let Some(Extension(ClientCertificate(der))) = presented else {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "recovery needs the expired client certificate, presented over TLS",
        );
    };
    let Ok(cert) = Certificate::from_der(&der) else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "the client certificate does not parse");
    };
    let wanted: CertificateSigningRequest = match serde_json::from_slice(&body) {
        Ok(csr) => csr,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the body is not a CertificateSigningRequest: {e}"),
            );
        }
    };
    if wanted.spec.signer_name != SIGNER_KUBE_APISERVER_CLIENT_KUBELET {
        let message = format!(
            "recovery issues {SIGNER_KUBE_APISERVER_CLIENT_KUBELET} certificates only, not {:?}",
            wanted.spec.signer_name
        );
        return status(StatusCode::BAD_REQUEST, "BadRequest", &message);
    }
    let requested = match parse_csr_pem(&wanted.spec.request.0) {
        Ok(info) => info.subject,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("spec.request: {e}")),
    };
    let deny_list = match recovery.deny_list() {
        Ok(list) => list,
        // Fail closed: a deny list that cannot be read might list this serial.
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("recovery deny list: {e}"),
            );
        }
    };
    let now = SystemTime::now();
    let who = cert.subject.common_name.clone().unwrap_or_default();
    let attempts = recovery.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).record(
        &who,
        now,
        recovery.policy.attempt_period,
    );
    if let Err(refusal) = decide_recovery(&recovery.policy, &cert, &requested, &deny_list, attempts, now) {
        warn!(user = %who, serial = %cert.serial_hex, reason = refusal.reason(), "recovery refused: {refusal}");
        // 403 for every refusal, the rate limit included: clients retry 429 by themselves
        // (kube-rs does), which would only spend the node's attempts.
        return status(StatusCode::FORBIDDEN, refusal.reason(), &refusal.to_string());
    }
    let node = node_name(&cert).unwrap_or_default().to_owned();
    info!(node = %node, serial = %cert.serial_hex, "recovery allowed; requesting a certificate for the node's new key");
    match issue_as_node(&recovery.api, &node, &cert.serial_hex, wanted).await {
        Ok(issued) => {
            info!(node = %node, csr = issued.metadata.name.as_deref().unwrap_or_default(), from_serial = %cert.serial_hex, "recovered");
            (StatusCode::OK, axum::Json(issued)).into_response()
        }
        Err(e) => {
            warn!(node = %node, error = %e, "recovery request not issued");
            let (code, reason) = match &e {
                request::Error::Denied { .. } => (StatusCode::FORBIDDEN, "RecoveryRequestDenied"),
                request::Error::Failed { .. } => (StatusCode::FORBIDDEN, "RecoveryRequestFailed"),
                request::Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            };
            status(code, reason, &kubecert_cli::error_chain(&e))
        }
    }
}

/// Creates the node's request as the node (so that policy treats it as a renewal), marked as a
/// recovery, and waits until it is issued; returns the issued object.
async fn issue_as_node(
    api: &Api,
    node: &str,
    serial: &str,
    wanted: CertificateSigningRequest,
) -> Result<CertificateSigningRequest, request::Error> {
    let user = UserInfo::authenticated(format!("system:node:{node}"), vec!["system:nodes".to_owned()]);
    let client = kube::Client::new(api.service_as(user), "default");
    let csrs: kube::Api<CertificateSigningRequest> = kube::Api::all(client);
    let csr = recovery_csr(wanted, serial);
    let requested = request_certificate(&csrs, &csr, SystemTime::now()).await?;
    let certificate = wait_for_certificate(csrs.clone(), &requested, ISSUE_TIMEOUT).await?;
    let mut issued = csrs
        .get(&requested.name)
        .await
        .map_err(|source| request::Error::Get { name: requested.name.clone(), source })?;
    let status = issued.status.get_or_insert_with(Default::default);
    status.certificate = Some(k8s_openapi::ByteString(certificate));
    Ok(issued)
}

/// The object to create: the node's name, request, signer, usages and lifetime, nothing else,
/// plus the recovery annotation.
fn recovery_csr(wanted: CertificateSigningRequest, serial: &str) -> CertificateSigningRequest {
    let CertificateSigningRequestSpec { request, signer_name, usages, expiration_seconds, .. } = wanted.spec;
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: wanted.metadata.name,
            generate_name: Some("recovery-".to_owned()),
            annotations: Some([(RECOVERED_FROM_ANNOTATION.to_owned(), serial.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request,
            signer_name,
            usages,
            expiration_seconds,
            ..Default::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_serial_appends_once_in_canonical_form_and_names_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(deny_serial(dir.path(), "00:AB:CD").unwrap(), "abcd");
        assert_eq!(deny_serial(dir.path(), "abcd").unwrap(), "abcd");
        assert_eq!(deny_serial(dir.path(), "7f").unwrap(), "7f");
        let text = std::fs::read_to_string(deny_list_path(dir.path())).unwrap();
        assert_eq!(text, "abcd\n7f\n");
        let error = deny_serial(dir.path(), "xyz").unwrap_err().to_string();
        assert!(error.contains("\"xyz\"") && error.contains("not hexadecimal"), "{error}");
    }

    #[test]
    fn the_recovery_request_keeps_only_what_the_node_may_choose() {
        let wanted = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("node-csr-abc".into()),
                annotations: Some([("kubecert.io/canary".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: SIGNER_KUBE_APISERVER_CLIENT_KUBELET.into(),
                username: Some("system:admin".into()),
                groups: Some(vec!["system:masters".into()]),
                ..Default::default()
            },
            status: None,
        };
        let csr = recovery_csr(wanted, "abcd");
        assert_eq!(csr.metadata.name.as_deref(), Some("node-csr-abc"));
        let annotations = csr.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations[RECOVERED_FROM_ANNOTATION], "abcd");
        assert!(csr.spec.username.is_none() && csr.spec.groups.is_none());
    }
}
