//! The agent's own endpoint: `/metrics` and `/healthz` on `--metrics-addr`, plain HTTP, or HTTPS
//! with the rotating serving certificate when `--rotate-server-certificates` is on (SPEC SV-4:
//! no certificate yet means refused handshakes, not a self-signed one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kubecert_reload::{HandshakeObserver, KeyExchange, LiveIdentity, LiveRoots, negotiated_group};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::{Metrics, encode};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes.
pub fn router(metrics: Metrics) -> Router {
    let registry = Arc::new(metrics.registry());
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    match encode(&registry) {
                        Ok(text) => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
                        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics\n").into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(move || async move { healthz(&metrics) }))
}

/// 200 while the node holds a valid client certificate, 503 otherwise (bootstrapping, or the
/// certificate expired and rotation has not caught up).
fn healthz(metrics: &Metrics) -> Response {
    if metrics.client_certificate_valid(SystemTime::now()) {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid client certificate\n").into_response()
    }
}

/// Binds `addr`; errors name the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))
}

/// HTTPS settings of the endpoint.
pub struct Tls {
    /// The serving certificate in use.
    pub identity: LiveIdentity,
    /// The key exchanges accepted (`--tls-key-exchange`).
    pub key_exchange: KeyExchange,
    /// Told the negotiated group of every handshake.
    pub handshakes: HandshakeObserver,
}

/// Serves `app` on `listener` until `cancel`: over TLS with `serving` when given (verifying the
/// client certificates clients present against `client_roots`, when given), else plain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    serving: Option<Tls>,
    client_roots: Option<LiveRoots>,
    cancel: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().context("reading the metrics address")?;
    let Some(serving) = serving else {
        info!(%addr, "serving /metrics and /healthz over HTTP");
        return axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
            .context("metrics endpoint");
    };
    let verifier = client_roots.map(|roots| roots.client_verifier());
    let mut tls = serving
        .identity
        .server_config(verifier, serving.key_exchange)
        .context("TLS configuration of the metrics endpoint")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    info!(%addr, "serving /metrics and /healthz over HTTPS with the serving certificate");
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => { debug!(error = %e, "accepting a connection"); continue }
            },
        };
        let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
        let handshakes = serving.handshakes.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            handshakes(negotiated_group(tls.get_ref().1));
            // HTTP/1.1 only, as the ALPN above offers.
            let connection =
                http1::Builder::new().serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::select! {
                () = cancel.cancelled() => {}
                served = connection => if let Err(e) = served { debug!(%peer, error = %e, "serving a connection") },
            }
        });
    }
}
