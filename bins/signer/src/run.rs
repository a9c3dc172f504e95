//! What `serve` and `controller` share: the controller set, CA files that are re-read when they
//! change, the metrics endpoint and signal handling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse as _;
use axum::routing::get;
use kubecert_authority::{IssuancePolicy, MaterialFingerprint, Policy, Signer, SignerAuthorities};
use kubecert_k8s::controllers::{SignerMetrics, run_approver, run_cleaner, run_signer};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{CaFiles, CaSelection};
use crate::pki::load_ca;

/// The approver, signer and cleaner, until `shutdown`; with `node_identity`, a second signer for
/// `kubecert.io/node-identity` (it has a CA for that name only, the first has none for it).
pub async fn run_controllers(
    client: kube::Client,
    signer: Arc<ArcSwap<Signer>>,
    node_identity: Option<Arc<ArcSwap<Signer>>>,
    policy: Policy,
    metrics: SignerMetrics,
    cleaner_interval: Duration,
    shutdown: CancellationToken,
) {
    let identities = async {
        if let Some(signer) = node_identity {
            run_signer(client.clone(), signer, metrics.clone(), shutdown.clone()).await;
        }
    };
    tokio::join!(
        run_approver(client.clone(), policy, metrics.clone(), shutdown.clone()),
        run_signer(client.clone(), signer, metrics.clone(), shutdown.clone()),
        identities,
        run_cleaner(client.clone(), cleaner_interval, metrics.clone(), shutdown.clone()),
    );
}

/// The signer of `kubecert.io/node-identity` when `node_identity_ca` is set (its CA loaded, or
/// generated on first start), else `None`. Setting it in a build without the `ml-dsa` feature
/// is an error.
pub fn node_identity_signer(
    config: &crate::config::SignerConfig,
    issuance: IssuancePolicy,
) -> Result<Option<Arc<ArcSwap<Signer>>>> {
    let Some(dir) = &config.node_identity_ca else { return Ok(None) };
    #[cfg(feature = "ml-dsa")]
    {
        let ca = crate::pki::load_or_create_node_identity_ca(dir)?;
        let name = kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY.to_owned();
        let authorities = SignerAuthorities::per_signer([(name, ca)])?;
        tracing::info!(ca = %dir.display(), "signing kubecert.io/node-identity with ML-DSA-65");
        Ok(Some(Arc::new(ArcSwap::from_pointee(Signer::new(authorities, issuance)))))
    }
    #[cfg(not(feature = "ml-dsa"))]
    {
        let _ = issuance;
        anyhow::bail!(
            "node_identity_ca ({}): this signer was built without the ml-dsa feature \
             (cargo build --features signer/ml-dsa)",
            dir.display()
        )
    }
}

/// Reads the CA files and their fingerprint.
fn read_authorities(selection: &CaSelection) -> Result<(SignerAuthorities, Vec<MaterialFingerprint>)> {
    let load = |files: &CaFiles| load_ca(files).map(|ca| (ca.fingerprint(), ca));
    match selection {
        CaSelection::Shared(files) => {
            let (fingerprint, ca) = load(files)?;
            Ok((SignerAuthorities::shared(ca)?, vec![fingerprint]))
        }
        CaSelection::PerSigner(map) => {
            let mut cas = Vec::new();
            let mut fingerprints = Vec::new();
            for (signer, files) in map {
                let (fingerprint, ca) = load(files)?;
                fingerprints.push(fingerprint);
                cas.push((signer.clone(), ca));
            }
            Ok((SignerAuthorities::per_signer(cas)?, fingerprints))
        }
    }
}

/// A signer over the CA files, plus a task that re-reads them every `interval` and swaps the
/// signer when their content changed (SPEC SG-1 hot reload). Unreadable or broken files keep
/// the previous CA, with a warning.
pub fn reloading_signer(
    selection: CaSelection,
    issuance: IssuancePolicy,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<Arc<ArcSwap<Signer>>> {
    let (authorities, mut fingerprints) = read_authorities(&selection)?;
    let signer = Arc::new(ArcSwap::from_pointee(Signer::new(authorities, issuance)));
    let swapped = signer.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match read_authorities(&selection) {
                Ok((_, now)) if now == fingerprints => {}
                Ok((authorities, now)) => {
                    swapped.store(Arc::new(Signer::new(authorities, issuance)));
                    fingerprints = now;
                    tracing::info!("CA files changed; signing with the new CA");
                }
                Err(e) => {
                    tracing::warn!(error = %kubecert_cli::error_chain(&*e), "re-reading CA files; keeping the current CA")
                }
            }
        }
    });
    Ok(signer)
}

/// Serves `/metrics` (OpenMetrics text) and `/healthz` on `addr` until `shutdown`.
pub async fn serve_metrics(addr: SocketAddr, registry: Registry, shutdown: CancellationToken) -> Result<()> {
    let registry = Arc::new(registry);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                            text,
                        )
                            .into_response(),
                        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics").into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics address {addr}"))?;
    tracing::info!(%addr, "serving metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("metrics server")
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use kubecert_authority::CertificateAuthority;

    use super::*;

    fn write_ca(files: &CaFiles, name: &str) -> CertificateAuthority {
        let ca =
            CertificateAuthority::generate(name, SystemTime::now(), &aws_lc_rs::rand::SystemRandom::new())
                .unwrap();
        std::fs::write(&files.cert, ca.certificate_pem()).unwrap();
        std::fs::write(&files.key, ca.private_key_pem()).unwrap();
        ca
    }

    fn current_ca_subject(signer: &ArcSwap<Signer>) -> Vec<u8> {
        let signer = signer.load();
        let ca = signer.authorities().get(kubecert_csr::SIGNER_KUBELET_SERVING).unwrap();
        ca.certificate().subject.der.clone()
    }

    #[tokio::test]
    async fn changed_ca_files_are_picked_up_and_broken_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles { cert: dir.path().join("ca.crt"), key: dir.path().join("ca.key") };
        let first = write_ca(&files, "first CA");
        let shutdown = CancellationToken::new();
        let signer = reloading_signer(
            CaSelection::Shared(files.clone()),
            IssuancePolicy::default(),
            Duration::from_millis(20),
            shutdown.clone(),
        )
        .unwrap();
        assert_eq!(current_ca_subject(&signer), first.certificate().subject.der);

        // A half-written key: the current CA stays.
        std::fs::write(&files.key, "-----BEGIN EC PRIVATE KEY-----\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(current_ca_subject(&signer), first.certificate().subject.der);

        let second = write_ca(&files, "second CA");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while current_ca_subject(&signer) != second.certificate().subject.der {
            assert!(tokio::time::Instant::now() < deadline, "the new CA was not picked up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    }

    fn with_node_identity_ca(dir: &std::path::Path) -> crate::config::SignerConfig {
        crate::config::SignerConfig { node_identity_ca: Some(dir.to_path_buf()), ..Default::default() }
    }

    #[cfg(not(feature = "ml-dsa"))]
    #[test]
    fn node_identity_ca_without_the_feature_is_an_error_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = node_identity_signer(&with_node_identity_ca(dir.path()), IssuancePolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("built without the ml-dsa feature"), "{err}");
        assert!(node_identity_signer(&Default::default(), IssuancePolicy::default()).unwrap().is_none());
    }

    /// Feature `ml-dsa`: the CA is generated (key 0600) and kept, signs ML-DSA-65 node identities
    /// with an ML-DSA-65 signature, and nothing else; an ECDSA CA in the directory is refused.
    #[cfg(feature = "ml-dsa")]
    #[test]
    fn node_identity_ca_is_generated_once_and_signs_ml_dsa_65_identities_only() {
        use std::os::unix::fs::PermissionsExt as _;

        use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
        use kubecert_authority::SignOutcome;
        use kubecert_csr::{
            CertificateTemplate, KeyAlgorithm, PrivateKey, PublicKeyAlgorithm,
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBECERT_NODE_IDENTITY, build_csr_pem,
        };

        let dir = tempfile::tempdir().unwrap();
        let config = with_node_identity_ca(&dir.path().join("identity"));
        let signer = node_identity_signer(&config, IssuancePolicy::default()).unwrap().unwrap();
        let key_file = dir.path().join("identity/ca.key");
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
        let ca = signer.load().authorities().get(SIGNER_KUBECERT_NODE_IDENTITY).unwrap().clone();
        assert_eq!(ca.key_algorithm(), KeyAlgorithm::MlDsa65);
        assert_eq!(
            signer.load().authorities().signer_names().collect::<Vec<_>>(),
            [SIGNER_KUBECERT_NODE_IDENTITY]
        );
        // The second start loads the same CA.
        let again = node_identity_signer(&config, IssuancePolicy::default()).unwrap().unwrap();
        let reloaded = again.load().authorities().get(SIGNER_KUBECERT_NODE_IDENTITY).unwrap().clone();
        assert_eq!(reloaded.certificate_pem(), ca.certificate_pem());

        let node_key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
        let pem = build_csr_pem(&CertificateTemplate::node_client("a"), &node_key).unwrap();
        let csr = CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: k8s_openapi::ByteString(pem.into_bytes()),
                signer_name: SIGNER_KUBECERT_NODE_IDENTITY.into(),
                usages: Some(vec!["digital signature".into(), "client auth".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let SignOutcome::Issued(issued) = signer.load().sign(&csr, SystemTime::now(), &rng).unwrap() else {
            panic!("not issued")
        };
        assert_eq!(
            issued.certificate().unwrap().public_key.algorithm,
            PublicKeyAlgorithm::MlDsa { level: 65 }
        );
        assert_eq!(issued.certificate().unwrap().issuer_der, ca.certificate().subject.der);
        let mut kubelet = csr.clone();
        kubelet.spec.signer_name = SIGNER_KUBE_APISERVER_CLIENT_KUBELET.into();
        assert!(!signer.load().should_sign(&kubelet), "a kubernetes.io signer name has no CA here");

        let ecdsa = dir.path().join("ecdsa");
        std::fs::create_dir(&ecdsa).unwrap();
        write_ca(&CaFiles { cert: ecdsa.join("ca.crt"), key: ecdsa.join("ca.key") }, "ecdsa");
        let err = node_identity_signer(&with_node_identity_ca(&ecdsa), IssuancePolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs an ML-DSA-65 CA"), "{err}");
    }
}
