//! What the storm-shaped benchmarks (storm, cfssl, watches) share: the node requests made before
//! the clock starts, and the runtime that drives their clients.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kubecert_csr::{KeyAlgorithm, PrivateKey, node_bootstrap_csr};

/// `count` bootstrap CSRs of nodes `<prefix>-0`…, each with a new P-256 key.
pub fn node_requests(count: usize, prefix: &str) -> Result<Vec<CertificateSigningRequest>, String> {
    (0..count)
        .map(|i| {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(|e| e.to_string())?;
            node_bootstrap_csr(&key, &format!("{prefix}-{i}")).map_err(|e| e.to_string())
        })
        .collect()
}

/// A multi-threaded tokio runtime for the clients.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))
}
