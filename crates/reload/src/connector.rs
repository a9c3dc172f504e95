//! Connections grouped by the identity generation they were made for, each knowing whether a
//! request is in flight on it.
//!
//! # How a connection knows it is busy
//!
//! hyper gives no hook when the pool hands a connection to a request, so the two ends of a request
//! are observed where they can be:
//!
//! * **start**, in the connection: with HTTP/1.1 (kube's protocol) a client writes a request, then
//!   reads its response, then writes the next request, so the first write after a read (or the
//!   first write at all) starts a request (HTTP/2 connections, whose requests overlap, are never
//!   closed as idle);
//! * **end**, in the response body: [`RotatingClient`](crate::RotatingClient) wraps every response
//!   body in a [`ResponseBody`], found through hyper-util's connection "extras", which counts the
//!   response as finished when it reaches its end or is dropped.
//!
//! A connection is idle when every started request has finished. Both counters only err on the
//! busy side (an interim `100 Continue`, or a response that arrives while a body is still being
//! sent, count an extra start), so an error here can only delay a close, never cut a request.
//!
//! # Closing
//!
//! When its generation is retired the cohort is *drained*: each connection is woken and, as soon as
//! it is idle, answers hyper's keep-alive read with end-of-file. hyper closes an idle connection
//! that sees EOF without an error, and if a request had just been queued on it, hyper hands that
//! request back unsent and hyper-util retries it on another connection. A connection that never
//! carried a request is left alone (closing it under a request hyper is about to write would fail
//! that request, because hyper-util only retries on reused connections); the pool drops it. When the
//! grace period ends the cohort is *aborted*: reads and writes fail, which ends a watch with an
//! error (kube's watcher then re-watches from its resourceVersion).
//!
//! hyper-util's own `Connected::poison` was not used: it is reachable only through
//! `capture_connection` after a request has been given a connection, and it only stops reuse; it
//! closes nothing. Reuse is stopped by the per-generation pools of
//! [`RotatingClient`](crate::RotatingClient) instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use http::Uri;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{BoxError, Service};

use crate::client::{BoxFuture, Connector};

/// The connections made for one identity generation.
#[derive(Debug)]
pub(crate) struct Cohort {
    generation: u64,
    open: AtomicUsize,
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Cohort {
    pub(crate) fn new(generation: u64) -> Arc<Self> {
        Arc::new(Self {
            generation,
            open: AtomicUsize::new(0),
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
        })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Connections of this cohort that are still open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Closes idle connections now and busy ones when their request finishes.
    pub(crate) fn drain(&self) {
        self.drain.cancel();
    }

    /// Fails every remaining connection of this cohort (and any made later).
    pub(crate) fn abort(&self) {
        self.drain.cancel();
        self.abort.cancel();
    }
}

/// Wraps a connector; every connection it makes belongs to `cohort`.
#[derive(Clone, Debug)]
pub(crate) struct TrackingConnector<C> {
    inner: C,
    cohort: Arc<Cohort>,
}

impl<C> TrackingConnector<C> {
    pub(crate) fn new(inner: C, cohort: Arc<Cohort>) -> Self {
        Self { inner, cohort }
    }
}

impl<C: Connector> Service<Uri> for TrackingConnector<C> {
    type Response = TrackedConnection<C::Io>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready_to_connect(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.connect(dst);
        let cohort = Arc::clone(&self.cohort);
        Box::pin(async move {
            let io = connecting.await?;
            let multiplexed = io.connected().is_negotiated_h2();
            let mut connection = TrackedConnection::new(io, cohort);
            connection.multiplexed = multiplexed;
            Ok(connection)
        })
    }
}

/// What a connection and the bodies of its responses share.
#[derive(Debug, Default)]
struct Requests {
    finished: AtomicU64,
    /// The connection's reader, woken when a response finishes.
    reader: AtomicWaker,
}

impl Requests {
    /// One response is over; wake the connection in case it waits to close.
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
        self.reader.wake();
    }
}

/// Put in every response's extensions by hyper-util (via [`Connected::extra`]).
#[derive(Clone, Debug)]
struct ConnectionExtra(Arc<Requests>);

/// A connection that counts itself in its cohort and its requests, closes when drained and idle,
/// and fails once its cohort is aborted.
pub(crate) struct TrackedConnection<T> {
    io: T,
    cohort: Arc<Cohort>,
    requests: Arc<Requests>,
    /// Requests started (written) on this connection; only this connection's task touches it.
    started: u64,
    /// Whether the last completed operation was a read, so the next write starts a request.
    read_since_write: bool,
    drained: Signal,
    aborted: Signal,
    closed: bool,
    /// HTTP/2: requests overlap, so the counts say nothing and the connection is never closed as
    /// idle (only aborted).
    multiplexed: bool,
}

/// A cancellation future that is polled until it fires once, then remembered.
struct Signal {
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    fired: bool,
}

impl Signal {
    fn new(token: &CancellationToken) -> Self {
        Self { wait: Box::pin(token.clone().cancelled_owned()), fired: false }
    }

    /// Whether the token was cancelled; registers `cx`'s waker if not.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.fired && self.wait.as_mut().poll(cx).is_ready() {
            self.fired = true;
        }
        self.fired
    }
}

impl<T> TrackedConnection<T> {
    fn new(io: T, cohort: Arc<Cohort>) -> Self {
        cohort.open.fetch_add(1, Ordering::AcqRel);
        Self {
            io,
            drained: Signal::new(&cohort.drain),
            aborted: Signal::new(&cohort.abort),
            cohort,
            requests: Arc::default(),
            started: 0,
            read_since_write: true,
            closed: false,
            multiplexed: false,
        }
    }

    fn check_aborted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.aborted.poll(cx) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "connection closed: TLS identity generation {} was replaced and the drain grace \
                     period is over",
                    self.cohort.generation
                ),
            ));
        }
        Ok(())
    }

    /// Whether to end this connection now: drained, and every request it started has finished.
    /// Registers the waker for both conditions first, so neither change is missed.
    fn should_close(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        if self.multiplexed || !self.drained.poll(cx) || self.started == 0 {
            return false;
        }
        self.requests.reader.register(cx.waker());
        self.closed = self.requests.finished.load(Ordering::Acquire) >= self.started;
        if self.closed {
            tracing::debug!(
                generation = self.cohort.generation,
                "closing an idle connection of a replaced identity"
            );
        }
        self.closed
    }
}

impl<T> Drop for TrackedConnection<T> {
    fn drop(&mut self) {
        self.cohort.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T: Read + Unpin> Read for TrackedConnection<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_aborted(cx)?;
        if this.should_close(cx) {
            // End-of-file, without touching `buf`.
            return Poll::Ready(Ok(()));
        }
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) {
            this.read_since_write = true;
        }
        read
    }
}

impl<T: Write + Unpin> TrackedConnection<T> {
    fn before_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.check_aborted(cx)?;
        if self.read_since_write {
            self.read_since_write = false;
            self.started += 1;
        }
        Ok(())
    }
}

impl<T: Write + Unpin> Write for TrackedConnection<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write(cx)?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_aborted(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for TrackedConnection<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(ConnectionExtra(Arc::clone(&self.requests)))
    }
}

/// The body of a response from a [`RotatingClient`](crate::RotatingClient): hyper's body, plus a
/// note to its connection when the response is over (fully read, failed, or dropped), which is what
/// lets a draining connection close right after its last request.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
    connection: Option<Arc<Requests>>,
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, extensions: &http::Extensions) -> Self {
        let connection = extensions.get::<ConnectionExtra>().map(|extra| Arc::clone(&extra.0));
        Self { inner, connection }
    }

    fn finish(&mut self) {
        if let Some(requests) = self.connection.take() {
            requests.finish();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ResponseBody {
    type Data = <Incoming as Body>::Data;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.finish();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use hyper::rt::ReadBuf;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    type Conn = TrackedConnection<TokioIo<DuplexStream>>;

    fn pair(cohort: &Arc<Cohort>) -> (Conn, DuplexStream) {
        let (client, server) = tokio::io::duplex(4096);
        (TrackedConnection::new(TokioIo::new(client), Arc::clone(cohort)), server)
    }

    /// One poll of a read: `None` if pending, else the bytes read (empty at end-of-file).
    fn try_read(conn: &mut Conn) -> Option<io::Result<Vec<u8>>> {
        let mut storage = [0u8; 256];
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(conn).poll_read(&mut Context::from_waker(Waker::noop()), buf.unfilled()) {
            Poll::Pending => None,
            Poll::Ready(result) => Some(result.map(|()| buf.filled().to_vec())),
        }
    }

    fn write(conn: &mut Conn, bytes: &[u8]) -> io::Result<usize> {
        match Pin::new(conn).poll_write(&mut Context::from_waker(Waker::noop()), bytes) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("duplex write pending"),
        }
    }

    /// Lets the duplex deliver what the peer wrote.
    async fn read_when_ready(conn: &mut Conn) -> io::Result<Vec<u8>> {
        loop {
            if let Some(result) = try_read(conn) {
                return result;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_drained_connection_closes_once_its_last_response_is_over() {
        let cohort = Cohort::new(3);
        let (mut conn, mut server) = pair(&cohort);
        assert_eq!(cohort.open(), 1);

        // Two writes of one request, then its response.
        write(&mut conn, b"GET / HTTP/1.1\r\n").unwrap();
        write(&mut conn, b"\r\n").unwrap();
        let mut request = [0u8; 18];
        server.read_exact(&mut request).await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert_eq!(read_when_ready(&mut conn).await.unwrap(), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(conn.started, 1);

        // Drained while the response body is still with the caller: the connection stays.
        cohort.drain();
        assert!(try_read(&mut conn).is_none(), "busy connection must not close");
        conn.requests.finish();
        // Now idle: end-of-file, and it stays that way.
        assert_eq!(try_read(&mut conn).unwrap().unwrap(), b"");
        assert_eq!(try_read(&mut conn).unwrap().unwrap(), b"");
        drop(conn);
        assert_eq!(cohort.open(), 0);
    }

    #[tokio::test]
    async fn a_request_started_after_the_previous_response_keeps_the_connection_busy() {
        let cohort = Cohort::new(0);
        let (mut conn, mut server) = pair(&cohort);
        write(&mut conn, b"first").unwrap();
        server.write_all(b"response-1").await.unwrap();
        read_when_ready(&mut conn).await.unwrap();
        // The pool reuses the connection before the caller finished reading the first body.
        write(&mut conn, b"second").unwrap();
        assert_eq!(conn.started, 2);
        cohort.drain();
        conn.requests.finish();
        assert!(try_read(&mut conn).is_none(), "second request still in flight");
        conn.requests.finish();
        assert_eq!(try_read(&mut conn).unwrap().unwrap(), b"");
    }

    #[tokio::test]
    async fn a_connection_that_never_carried_a_request_is_not_closed_by_a_drain() {
        let cohort = Cohort::new(0);
        let (mut conn, _server) = pair(&cohort);
        cohort.drain();
        assert!(try_read(&mut conn).is_none());
        write(&mut conn, b"GET").unwrap();
    }

    #[tokio::test]
    async fn an_aborted_cohort_fails_reads_and_writes() {
        let cohort = Cohort::new(7);
        let (mut conn, _server) = pair(&cohort);
        write(&mut conn, b"GET").unwrap();
        cohort.abort();
        let error = try_read(&mut conn).unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert!(error.to_string().contains("generation 7"), "{error}");
        assert_eq!(write(&mut conn, b"more").unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }
}
