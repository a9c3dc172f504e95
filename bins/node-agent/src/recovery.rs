//! Recovery with the expired client certificate's key, and what the agent says when no path to
//! a certificate is left.
//!
//! When the client certificate has expired and bootstrap failed or is not configured, the agent
//! connects to the API server with the expired certificate (proving it holds its key) and posts
//! the request for a new key to `POST /apis/kubecert.io/v1/recover` (`signer serve
//! --recovery-max-expired`). The signer answers with the issued object, or refuses with a reason
//! (outside the window, serial denied, identity changed, too many tries), which is logged.
//!
//! When neither bootstrap nor recovery can work without a person, the agent writes
//! `<cert-dir>/RECOVERY-NEEDED` naming what failed and the command that fixes it, keeps retrying
//! on the capped backoff, and answers `/healthz` with 503 (it has no valid certificate). The file
//! is deleted once a certificate is stored.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kubecert_csr::{PrivateKey, node_bootstrap_csr};
use kubecert_reload::{Identity, LiveIdentity};
use kubecert_store::StoredPair;

use crate::api::client_for;

/// The signer's recovery endpoint (on the API server's address).
pub const RECOVER_PATH: &str = "/apis/kubecert.io/v1/recover";
/// The file written into the cert dir when an operator must act.
pub const RECOVERY_NEEDED_FILE: &str = "RECOVERY-NEEDED";

/// How an attempt to obtain a certificate (by bootstrap or by recovery) failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Trying again cannot help until someone acts: credentials absent or rejected, recovery
    /// refused or not offered.
    NeedsOperator(String),
    /// It may work next time (server unreachable, timeouts, server errors).
    Transient(String),
}

impl AttemptError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::NeedsOperator(m) | Self::Transient(m) => m,
        }
    }

    /// Classifies a kube error: 401/403/404/429 from the API need an operator (the agent keeps
    /// retrying on its backoff anyway).
    pub fn from_kube(context: &str, error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let message = format!("{context}: {} {}: {}", status.code, status.reason, status.message);
                if [401, 403, 404, 429].contains(&status.code) {
                    Self::NeedsOperator(message)
                } else {
                    Self::Transient(message)
                }
            }
            _ => Self::Transient(format!("{context}: {}", kubecert_cli::error_chain(error))),
        }
    }
}

/// Asks the signer at the server of `kubeconfig` for a certificate for `key`, authenticating with
/// the expired pair `expired` (any other credentials of the kubeconfig are sent too, and ignored
/// by the endpoint). Returns the issued chain (PEM).
pub async fn recover(
    kubeconfig: &Path,
    expired: &StoredPair,
    key: &PrivateKey,
    node_name: &str,
) -> Result<Vec<u8>, AttemptError> {
    let transient = |e: anyhow::Error| AttemptError::Transient(kubecert_cli::error_chain(&*e));
    if !kubeconfig.exists() {
        return Err(AttemptError::NeedsOperator(format!(
            "recovery: no kubeconfig names the API server ({} does not exist)",
            kubeconfig.display()
        )));
    }
    let identity = Identity::new(expired.chain.clone(), &expired.key)
        .context("loading the expired client certificate for TLS")
        .map_err(transient)?;
    let client = client_for(kubeconfig, LiveIdentity::new(identity), None).await.map_err(transient)?;
    let csr = node_bootstrap_csr(key, node_name)
        .context("building the recovery certificate request")
        .map_err(transient)?;
    let body = serde_json::to_vec(&csr).map_err(|e| AttemptError::Transient(e.to_string()))?;
    let request = axum::http::Request::post(RECOVER_PATH)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| AttemptError::Transient(e.to_string()))?;
    let issued: CertificateSigningRequest =
        client.request(request).await.map_err(|e| AttemptError::from_kube("recovery", &e))?;
    issued
        .status
        .and_then(|status| status.certificate)
        .map(|certificate| certificate.0)
        .ok_or_else(|| AttemptError::Transient("the recovery answer carries no certificate".into()))
}

/// What the RECOVERY-NEEDED file says: what failed and the command that fixes it.
pub fn recovery_needed_text(
    node_name: &str,
    bootstrap_kubeconfig: Option<&Path>,
    expired: Option<&StoredPair>,
    failures: &[String],
) -> String {
    let mut text = format!(
        "node-agent for node {node_name} has no valid client certificate and cannot get one by itself.\n\n"
    );
    for failure in failures {
        text.push_str(&format!("- {failure}\n"));
    }
    if let Some(pair) = expired {
        text.push_str(&format!(
            "\nThe expired certificate has serial {} (`node-agent status` shows it).\n",
            pair.leaf().serial_hex
        ));
    }
    let target = bootstrap_kubeconfig.map_or_else(
        || "a path of your choice, then restart node-agent with --bootstrap-kubeconfig PATH".to_owned(),
        |path| format!("{} on this node (read again on the next retry; no restart needed)", path.display()),
    );
    text.push_str(&format!(
        "\nTo fix it, make a new bootstrap token where the signer's admin kubeconfig is:\n\n    \
         signer token create --kubeconfig ADMIN_KUBECONFIG --write-bootstrap-kubeconfig bootstrap.kubeconfig\n\n\
         and copy bootstrap.kubeconfig to {target}.\n\
         Or, if the certificate expired recently, start the signer with --recovery-max-expired (e.g. 720h): the\n\
         agent then recovers with its expired certificate's key on the next retry.\n\
         The agent retries every 32 s at most and deletes this file once it has a certificate.\n"
    ));
    text
}

/// `<cert_dir>/RECOVERY-NEEDED`.
pub fn recovery_needed_path(cert_dir: &Path) -> PathBuf {
    cert_dir.join(RECOVERY_NEEDED_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_failures_and_the_command() {
        let failures =
            vec!["bootstrap: 401 Unauthorized".to_owned(), "recovery: RecoveryWindowExceeded".to_owned()];
        let text = recovery_needed_text(
            "n1",
            Some(Path::new("/etc/kubecert/bootstrap.kubeconfig")),
            None,
            &failures,
        );
        assert!(text.contains("node n1"), "{text}");
        assert!(text.contains("- bootstrap: 401 Unauthorized\n- recovery: RecoveryWindowExceeded"), "{text}");
        assert!(
            text.contains("signer token create --kubeconfig ADMIN_KUBECONFIG --write-bootstrap-kubeconfig"),
            "{text}"
        );
        assert!(text.contains("/etc/kubecert/bootstrap.kubeconfig on this node"), "{text}");
        let without = recovery_needed_text("n1", None, None, &failures);
        assert!(without.contains("restart node-agent with --bootstrap-kubeconfig"), "{without}");
    }

    #[test]
    fn only_refusals_and_rejected_credentials_need_an_operator() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status { code, message: "m".into(), reason: "r".into(), ..Default::default() }
                    .boxed(),
            )
        };
        for code in [401, 403, 404, 429] {
            assert!(
                matches!(AttemptError::from_kube("x", &api(code)), AttemptError::NeedsOperator(_)),
                "{code}"
            );
        }
        for code in [500, 503, 504] {
            assert!(matches!(AttemptError::from_kube("x", &api(code)), AttemptError::Transient(_)), "{code}");
        }
    }
}
