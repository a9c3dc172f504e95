//! Shared by the proof tests: an rcgen CA, an HTTPS echo server on 127.0.0.1:0, and figures.

#![allow(dead_code)] // each test binary uses a different part

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kubecert_csr::{KeyAlgorithm, PrivateKey};
use kubecert_reload::{Identity, KeyExchange, LiveIdentity};
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub fn install_provider() {
    let _ = KeyExchange::default().install();
}

/// A test CA that issues client and serving certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "kubecert-reload-test-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().clone();
        Self { issuer: Issuer::new(params, key), der }
    }

    pub fn der(&self) -> Vec<u8> {
        self.der.to_vec()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    /// (leaf PEM, key) for `cn`, valid for 127.0.0.1 and localhost.
    pub fn leaf(&self, cn: &str) -> (String, PrivateKey) {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(key.rcgen_key_pair(), &self.issuer).unwrap();
        (cert.pem(), key)
    }

    /// A kubelet-style pair file: certificate then key.
    pub fn pair_pem(&self, cn: &str) -> String {
        let (cert, key) = self.leaf(cn);
        format!("{cert}{}", key.to_pem())
    }

    pub fn identity(&self, cn: &str) -> Identity {
        Identity::from_pair_pem(self.pair_pem(cn).as_bytes()).unwrap()
    }
}

/// Who may connect to an [`EchoServer`].
pub enum ClientAuth {
    /// Anyone (server-side tests).
    None,
    /// Client certificate required, verified against the roots.
    Required(RootCertStore),
    /// Client certificate verified if sent; a bearer token may stand in.
    Optional(RootCertStore),
}

/// A request an [`EchoServer`] answered: the client certificate's CN and the path with query.
pub type Served = (Option<String>, String);

/// One completed server-side handshake.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub at: Instant,
    pub client_cn: Option<String>,
}

/// An HTTPS server on 127.0.0.1 that answers every request with `cn=<client CN>` and
/// `auth=<Authorization header>` lines. `?delay_ms=N` delays the response head; `/stream` sends
/// a `cn=` chunk every 20 ms forever, like a watch.
pub struct EchoServer {
    pub addr: SocketAddr,
    /// Client CNs of the requests served, in order (`None` without a client certificate), with
    /// their paths and queries.
    requests: Arc<Mutex<Vec<Served>>>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(serving: &LiveIdentity, client_auth: ClientAuth) -> Self {
        let echo: Handler = Arc::new(|request, cn| Box::pin(respond(request, cn)));
        Self::start_with(serving, client_auth, echo).await
    }

    /// A server answering with `handler` (given the request and the client CN).
    pub async fn start_with(serving: &LiveIdentity, client_auth: ClientAuth, handler: Handler) -> Self {
        let verifier = match client_auth {
            ClientAuth::None => None,
            ClientAuth::Required(roots) => {
                Some(WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap())
            }
            ClientAuth::Optional(roots) => {
                Some(WebPkiClientVerifier::builder(Arc::new(roots)).allow_unauthenticated().build().unwrap())
            }
        };
        let acceptor =
            TlsAcceptor::from(Arc::new(serving.server_config(verifier, KeyExchange::default()).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let handler: Handler = Arc::new(move |request: Request<Incoming>, cn: Option<String>| {
            let target = request.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
            log.lock().unwrap().push((cn.clone(), target));
            handler(request, cn)
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&handshakes), handler));
        Self { addr, requests, handshakes, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Served> {
        self.requests.lock().unwrap().clone()
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    /// When the server first completed a handshake with a client presenting `cn`.
    pub fn first_handshake_with(&self, cn: &str) -> Option<Instant> {
        self.handshakes.lock().unwrap().iter().find(|h| h.client_cn.as_deref() == Some(cn)).map(|h| h.at)
    }

    /// Waits (bounded) until a client presenting `cn` has shaken hands; returns when that was.
    pub async fn wait_for_client(&self, cn: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.first_handshake_with(cn) {
                return at;
            }
            assert!(Instant::now() < deadline, "no handshake with {cn} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers a request, given the client certificate's CN.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Option<String>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    handler: Handler,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handshakes = Arc::clone(&handshakes);
        let handler = Arc::clone(&handler);
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let client_cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|der| kubecert_csr::Certificate::from_der(der).ok())
                .and_then(|cert| cert.subject.common_name);
            handshakes.lock().unwrap().push(Handshake { at: Instant::now(), client_cn: client_cn.clone() });
            let service = service_fn(move |request| {
                let response = handler(request, client_cn.clone());
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn respond(request: Request<Incoming>, client_cn: Option<String>) -> Response<TestBody> {
    let auth = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let line = format!("cn={}\nauth={}\n", client_cn.as_deref().unwrap_or("-"), auth.unwrap_or("-"));
    if request.uri().path() == "/stream" {
        return Response::new(TestBody::Stream { line: Bytes::from(line), tick: None });
    }
    let delay = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("delay_ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    Response::new(TestBody::Once(Full::new(Bytes::from(line))))
}

/// A test server's response body.
pub enum TestBody {
    /// All at once.
    Once(Full<Bytes>),
    /// `line` every 20 ms, forever.
    Stream { line: Bytes, tick: Option<Pin<Box<tokio::time::Sleep>>> },
    /// Whatever the sender sends, until it is dropped.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Once(full) => Pin::new(full).poll_frame(cx),
            TestBody::Channel(receiver) => {
                receiver.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
            }
            TestBody::Stream { line, tick } => {
                let sleep = tick.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
                std::task::ready!(sleep.as_mut().poll(cx));
                sleep.as_mut().reset(Instant::now() + Duration::from_millis(20));
                Poll::Ready(Some(Ok(Frame::data(line.clone()))))
            }
        }
    }
}

/// The `cn=` value of an echo response.
pub fn echoed_cn(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("cn="))
}

/// Reads a whole response body as text.
pub async fn body_text<B>(body: B) -> Result<String, String>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

/// `n` as the generation number in a CN like `client-7`.
pub fn generation_of(cn: &str) -> u64 {
    cn.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no generation in {cn:?}"))
}

/// p50 and p99 (nearest rank) of durations, and the maximum.
pub fn percentiles(samples: &[Duration]) -> (Duration, Duration, Duration) {
    assert!(!samples.is_empty());
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    (rank(0.50), rank(0.99), sorted[sorted.len() - 1])
}

/// Prints a figure line that the test report quotes.
pub fn report(what: &str, samples: &[Duration]) {
    let (p50, p99, max) = percentiles(samples);
    eprintln!(
        "FIGURE (debug build) {what}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        p50,
        p99,
        max
    );
}
