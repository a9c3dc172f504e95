//! An HTTP client whose connections never outlive the identity they were made with, and whose
//! drain after a swap fails no request.
//!
//! The client keeps one hyper-util connection pool per identity generation. A request goes to the
//! pool of the generation current when it starts, so nothing that starts after
//! [`LiveIdentity::swap`] returns can reuse an older connection; with resumption off, every new
//! handshake presents the new certificate. When the swap is seen (at once, by a task subscribed to
//! the identity, or by the next request, whichever is first) the old pool is retired:
//!
//! * its connections are drained ([`crate::connector`]): idle ones close at once, busy ones as soon
//!   as their response is over;
//! * the pool itself is dropped when the requests still waiting on it have their response heads,
//!   which closes whatever is left idle in it;
//! * after the grace period whatever is still open (a watch) is cut, and the watcher re-establishes
//!   on a new connection with the new identity.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, Uri};
use hyper::body::Body;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::{BoxError, Service};

use crate::LiveIdentity;
use crate::connector::{Cohort, ResponseBody, TrackingConnector};

/// How long connections of a replaced identity may keep a request in flight before they are cut:
/// long enough for an ordinary API request, short enough that a watch re-establishes with the new
/// certificate soon after a rotation.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Open connections of a [`RotatingClient`], by generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Generation of the identity the current pool was made for.
    pub generation: u64,
    /// Open connections of the current pool.
    pub current: usize,
    /// Open connections of replaced generations, still finishing a request (or a watch, until the
    /// grace period ends).
    pub draining: usize,
}

/// A [`tower::Service`] for HTTP requests whose connections follow a [`LiveIdentity`] (module docs
/// explain the drain). `C` is the TLS connector (its TLS config must resolve client certificates
/// from the same `LiveIdentity`, with resumption off; see
/// [`LiveIdentity::apply_to_client_config`]); `B` the request body.
///
/// Clones share the pools. Build it inside a Tokio runtime: it spawns a task that retires the pool
/// as soon as the identity changes, and grace timers.
///
/// Meant for HTTP/1.1 connectors (kube's default). A connection that negotiates HTTP/2 carries
/// several requests at once, which the in-flight tracking cannot follow; such a connection is not
/// closed early but only when its pool is dropped or the grace period ends.
pub struct RotatingClient<C, B> {
    shared: Arc<Shared<C, B>>,
}

impl<C, B> Clone for RotatingClient<C, B> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

struct Shared<C, B> {
    identity: LiveIdentity,
    connector: C,
    grace: Duration,
    runtime: Handle,
    current: ArcSwap<Pool<C, B>>,
    /// Cohorts of replaced pools that still have open connections; its lock also serialises pool
    /// replacement.
    retired: Mutex<Vec<Arc<Cohort>>>,
    _retire_task: DropGuard,
}

struct Pool<C, B> {
    cohort: Arc<Cohort>,
    client: Client<TrackingConnector<C>, B>,
}

impl<C, B> RotatingClient<C, B>
where
    C: Connector,
    B: Body + Send + 'static,
    B::Data: Send,
{
    /// A client presenting `identity` through `connector`, cutting requests of replaced
    /// generations that are still running `drain_grace` after the swap.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (like `tokio::spawn`).
    pub fn new(identity: LiveIdentity, connector: C, drain_grace: Duration) -> Self {
        let runtime = Handle::current();
        let stop = CancellationToken::new();
        // Subscribe before reading the generation, so a swap in between is not missed.
        let updates = identity.subscribe();
        let generation = identity.generation();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared<C, B>>| {
            runtime.spawn(retire_on_swap(weak.clone(), updates, stop.clone()));
            Shared {
                current: ArcSwap::from_pointee(Pool::new(&connector, generation)),
                identity,
                connector,
                grace: drain_grace,
                runtime: runtime.clone(),
                retired: Mutex::new(Vec::new()),
                _retire_task: stop.drop_guard(),
            }
        });
        Self { shared }
    }
}

impl<C, B> RotatingClient<C, B> {
    /// The identity this client presents.
    pub fn identity(&self) -> &LiveIdentity {
        &self.shared.identity
    }

    /// Open connections by generation.
    pub fn connections(&self) -> ConnectionCounts {
        let current = self.shared.current.load();
        let mut retired = self.shared.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|cohort| cohort.open() > 0);
        ConnectionCounts {
            generation: current.cohort.generation(),
            current: current.cohort.open(),
            draining: retired.iter().map(|cohort| cohort.open()).sum(),
        }
    }
}

impl<C, B> Shared<C, B>
where
    C: Connector,
    B: Body + Send,
    B::Data: Send,
{
    /// The pool for requests starting now: one made for `generation` or later.
    fn pool_for(&self, generation: u64) -> Arc<Pool<C, B>> {
        let current = self.current.load_full();
        if current.cohort.generation() >= generation {
            return current;
        }
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        if current.cohort.generation() >= generation {
            return current;
        }
        // Read again under the lock: the pool is made for the newest generation published.
        let next = Arc::new(Pool::new(&self.connector, self.identity.generation().max(generation)));
        self.current.store(Arc::clone(&next));
        tracing::debug!(
            from = current.cohort.generation(),
            to = next.cohort.generation(),
            open = current.cohort.open(),
            "identity changed: new connection pool, draining the old one"
        );
        retired.retain(|cohort| cohort.open() > 0);
        retired.push(Arc::clone(&current.cohort));
        current.cohort.drain();
        let cohort = Arc::clone(&current.cohort);
        let grace = self.grace;
        self.runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            if cohort.open() > 0 {
                tracing::info!(
                    generation = cohort.generation(),
                    open = cohort.open(),
                    "drain grace period over: closing connections of the replaced identity"
                );
            }
            cohort.abort();
        });
        // Dropping `current` here leaves the old pool to the requests still holding it.
        next
    }
}

impl<C: Connector, B> Pool<C, B>
where
    B: Body + Send,
    B::Data: Send,
{
    fn new(connector: &C, generation: u64) -> Self {
        let cohort = Cohort::new(generation);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(TrackingConnector::new(connector.clone(), Arc::clone(&cohort)));
        Self { cohort, client }
    }
}

/// Retires the pool as soon as the identity changes, so idle connections close even if no request
/// comes; ends when the client is dropped.
async fn retire_on_swap<C, B>(
    shared: Weak<Shared<C, B>>,
    mut updates: tokio::sync::watch::Receiver<crate::Snapshot>,
    stop: CancellationToken,
) where
    C: Connector,
    B: Body + Send,
    B::Data: Send,
{
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
        let generation = updates.borrow_and_update().generation;
        match shared.upgrade() {
            Some(shared) => drop(shared.pool_for(generation)),
            None => return,
        }
    }
}

impl<C, B> Service<Request<B>> for RotatingClient<C, B>
where
    C: Connector,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = hyper_util::client::legacy::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let pool = self.shared.pool_for(self.shared.identity.generation());
        let response = pool.client.request(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let body = ResponseBody::new(body, &parts.extensions);
            Ok(Response::from_parts(parts, body))
        })
    }
}

impl<C, B> fmt::Debug for RotatingClient<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingClient")
            .field("identity", &self.shared.identity)
            .field("grace", &self.shared.grace)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

/// What [`RotatingClient`] needs from a connector: a cloneable `tower::Service<Uri>` whose
/// connections hyper can drive, such as `hyper_rustls::HttpsConnector` (optionally wrapped in
/// `hyper_timeout::TimeoutConnector`). Implemented for every such type; not meant to be implemented
/// by hand.
pub trait Connector: Clone + Send + Sync + 'static {
    /// The connection type.
    type Io: Read + Write + Connection + Unpin + Send + 'static;

    /// Whether the connector can take a connection request.
    fn poll_ready_to_connect(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;

    /// Connects to `dst`.
    fn connect(&mut self, dst: Uri) -> BoxFuture<Self::Io>;
}

/// A boxed connection future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<C> Connector for C
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Io = C::Response;

    fn poll_ready_to_connect(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::poll_ready(self, cx).map_err(Into::into)
    }

    fn connect(&mut self, dst: Uri) -> BoxFuture<Self::Io> {
        let connecting = Service::call(self, dst);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}
