//! Serving: the [`Api`] (store + router), the in-memory service with a fixed identity, and
//! the HTTPS accept loop (tokio-rustls with kubecert-reload's provider and key-exchange policy,
//! hyper-util auto HTTP/1+2).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use kubecert_reload::{HandshakeObserver, KeyExchange, negotiated_group};

use crate::Error;
use crate::auth::{PeerCertificate, UserInfo};
use crate::handlers::{self, AppState, Limits, PeerIdentity};
use crate::store::Store;

/// Settings of the API (not of TLS).
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory holding the database file (created if missing).
    pub data_dir: PathBuf,
    /// Request bodies larger than this are refused with 413 (default 3 MiB, as kube-apiserver).
    pub max_body_bytes: usize,
    /// How many past events are kept for watch resumption (default 4096).
    pub event_log_capacity: usize,
    /// Watch duration when the client gives no `timeoutSeconds` (default 30 min).
    pub default_watch_timeout: Duration,
    /// Interval of BOOKMARK events for watches that allow them (default 1 min).
    pub bookmark_interval: Duration,
}

impl Config {
    /// Defaults with state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            max_body_bytes: 3 * 1024 * 1024,
            event_log_capacity: 4096,
            default_watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// TLS material in PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// Serving certificate chain, leaf first.
    pub cert_chain_pem: Vec<u8>,
    /// Serving private key.
    pub key_pem: Vec<u8>,
    /// CA(s) that sign client certificates (the cluster CA).
    pub client_ca_pem: Vec<u8>,
    /// The key exchanges the listener accepts.
    pub key_exchange: KeyExchange,
    /// Told the key-exchange group of every completed handshake.
    pub handshakes: Option<HandshakeObserver>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// The opened API: state plus the router. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    state: AppState,
    routes: Option<Router>,
}

/// The leaf client certificate (DER) a TLS connection presented, attached to each of its requests
/// for routes added with [`Api::with_routes`]. It chained to the client CA with the clientAuth
/// usage, but it may have expired: the TLS layer does not check the time (the API's own
/// authentication does, per request). A route that accepts expired certificates decides itself
/// how long after expiry it still trusts one.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Vec<u8>);

impl Api {
    /// Opens (or creates) the state in `config.data_dir`.
    pub fn open(config: &Config) -> Result<Self, Error> {
        let store = Store::open(&config.data_dir, config.event_log_capacity)?;
        Ok(Self {
            state: AppState {
                store: Arc::new(store),
                limits: Limits {
                    max_body_bytes: config.max_body_bytes,
                    default_watch_timeout: config.default_watch_timeout,
                    bookmark_interval: config.bookmark_interval,
                },
            },
            routes: None,
        })
    }

    /// Adds `routes` in front of the Kubernetes API (paths they match are theirs; every other
    /// path is the API's). Requests reach them without the API's authentication: they get the
    /// connection's [`ClientCertificate`] extension, if any, and authenticate as they need.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = Some(match self.routes.take() {
            Some(existing) => existing.merge(routes),
            None => routes,
        });
        self
    }

    /// The router. Requests are authenticated from a [`UserInfo`] extension when present,
    /// else from the TLS peer certificate, else from a bearer token.
    pub fn router(&self) -> Router {
        let api = Router::new().fallback(handlers::dispatch).with_state(self.state.clone());
        match &self.routes {
            Some(routes) => api.merge(routes.clone()),
            None => api,
        }
    }

    /// The same API as an in-memory tower service whose every request runs as `user`
    /// (for in-process controllers: `kube::Client::new(api.service_as(user), "default")`).
    pub fn service_as(&self, user: UserInfo) -> Router {
        self.router().layer(axum::Extension(user))
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.resource_version()
    }

    /// Serves HTTPS on `listener` until `shutdown` completes; then every connection is closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: &TlsConfig,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let (_keep, tls) = tokio::sync::watch::channel(tls.clone());
        self.serve_reloading(listener, tls, shutdown).await
    }

    /// [`Api::serve`] with TLS material that may change while serving (a CA roll): every
    /// handshake after a change uses the latest [`TlsConfig`]; established connections keep
    /// theirs. Material that does not load is refused at start, and later keeps the previous.
    pub async fn serve_reloading(
        self,
        listener: TcpListener,
        mut tls: tokio::sync::watch::Receiver<TlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&tls.borrow_and_update())?));
        let router = self.router();
        drop(self);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Ok(()) = tls.changed() => match server_config(&tls.borrow_and_update()) {
                    Ok(config) => acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                    Err(e) => tracing::warn!(error = %e, "new TLS material refused; keeping the current"),
                },
                accepted = listener.accept() => {
                    let tcp = match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let handshakes = tls.borrow().handshakes.clone();
                    connections.spawn(serve_connection(acceptor.clone(), tcp, router.clone(), handshakes));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        Ok(())
    }
}

/// hyper's read buffer per connection, and so the largest request head served (see
/// [`serve_connection`]).
pub const READ_BUFFER: usize = 8192;

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    router: Router,
    handshakes: Option<HandshakeObserver>,
) {
    // Each phase is boxed: the connection's task then keeps only the phase it is in, not room
    // for the largest of a handshake, an HTTP/1 and an HTTP/2 connection at once.
    let tls = match tokio::time::timeout(Duration::from_secs(10), Box::pin(acceptor.accept(tcp))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let connection = tls.get_ref().1;
    if let Some(observe) = &handshakes {
        observe(negotiated_group(connection));
    }
    // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.2); everything else is HTTP/1.1.
    let h2 = connection.alpn_protocol() == Some(b"h2");
    let leaf = connection.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.to_vec());
    let identity = PeerIdentity(leaf.as_deref().and_then(PeerCertificate::from_der));
    let presented = leaf.map(ClientCertificate);
    let service = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(identity.clone());
        if let Some(presented) = &presented {
            req.extensions_mut().insert(presented.clone());
        }
        router.clone().oneshot(req.map(Body::new))
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = TokioIo::new(tls);
    let served: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = if h2 {
        Box::pin(http2::Builder::new(TokioExecutor::new()).serve_connection(io, service))
    } else {
        // Clients that never finish sending headers do not hold a connection forever. The
        // read buffer stays at hyper's smallest (8 KiB): left to grow, it doubles to 16 KiB on
        // the second read of every connection, and ten thousand nodes waiting on their
        // watches each hold one. A request head (request line and headers) must fit in it:
        // larger ones are answered 431 (a node's or kubectl's are a few hundred bytes; bodies
        // are not limited by it).
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(READ_BUFFER);
        Box::pin(builder.serve_connection(io, service).with_upgrades())
    };
    if let Err(e) = served.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn pem_error(what: &'static str) -> impl Fn(rustls_pki_types::pem::Error) -> Error {
    move |e| Error::Pem { what, detail: e.to_string() }
}

/// The rustls server config: our cert, client certs optional but verified against the CA
/// (with the clientAuth usage) when presented, so bearer tokens work too. Their expiry is
/// checked per request, not here (kubecert-reload's `ExpiryTolerantClientVerifier`).
fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, Error> {
    let provider = tls.key_exchange.provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(pem_error("serving certificate"))?;
    if chain.is_empty() {
        return Err(Error::Pem { what: "serving certificate", detail: "no CERTIFICATE block".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(pem_error("serving key"))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&tls.client_ca_pem) {
        roots.add(ca.map_err(pem_error("client CA"))?).map_err(Error::Tls)?;
    }
    if roots.is_empty() {
        return Err(Error::Pem { what: "client CA", detail: "no CERTIFICATE block".into() });
    }
    let verifier = kubecert_reload::ExpiryTolerantClientVerifier::new(Arc::new(roots), provider.clone())
        .map_err(|e| Error::Pem { what: "client CA", detail: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(Error::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A server started by [`start`].
pub struct RunningServer {
    local_addr: SocketAddr,
    store: std::sync::Weak<Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    api: Api,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The API behind the server (e.g. for in-memory services).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Stops accepting, closes every connection and releases the database (waiting up to
    /// 5 s for writes still running; in-memory services obtained from [`Self::api`] keep it
    /// open until they are dropped).
    pub async fn shutdown(self) -> Result<(), Error> {
        let Self { stop, task, api, store, .. } = self;
        drop(api);
        // The receiver is gone only if the task already ended; its result says why.
        let _ = stop.send(());
        let result = task.await.map_err(|e| Error::Task(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result
    }
}

/// Opens the API in `config.data_dir` and serves HTTPS on `addr` in a background task.
pub async fn start(addr: SocketAddr, tls: TlsConfig, config: &Config) -> Result<RunningServer, Error> {
    let api = Api::open(config)?;
    server_config(&tls)?;
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = api.clone();
    let task = tokio::spawn(async move {
        serving
            .serve(listener, &tls, async {
                let _ = stopped.await;
            })
            .await
    });
    let store = Arc::downgrade(&api.state.store);
    Ok(RunningServer { local_addr, store, stop, task, api })
}
