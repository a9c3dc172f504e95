//! Connections grouped by the identity generation they were made for, with a kill switch per
//! group.
//!
//! Whether a connection is busy is not tracked here: that is the pool's job (see
//! [`RotatingClient`](crate::RotatingClient)). This wrapper only counts open connections and, when
//! the drain grace period of a retired generation runs out, fails their reads and writes so that
//! hyper closes them (the watch that was streaming on them ends with an error and is re-opened).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{BoxError, Service};

use crate::client::{BoxFuture, TlsConnector};

/// The connections made for one identity generation.
#[derive(Debug)]
pub(crate) struct Cohort {
    generation: u64,
    open: AtomicUsize,
    abort: CancellationToken,
}

impl Cohort {
    pub(crate) fn new(generation: u64) -> Arc<Self> {
        Arc::new(Self { generation, open: AtomicUsize::new(0), abort: CancellationToken::new() })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Connections of this cohort that are still open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Fails every remaining connection of this cohort (and any made later).
    pub(crate) fn abort(&self) {
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

impl<C: TlsConnector> Service<Uri> for TrackingConnector<C> {
    type Response = TrackedConnection<C::Io>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready_to_connect(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.connect(dst);
        let cohort = Arc::clone(&self.cohort);
        Box::pin(async move { Ok(TrackedConnection::new(connecting.await?, cohort)) })
    }
}

/// A connection that counts itself in its cohort and fails once the cohort is aborted.
pub(crate) struct TrackedConnection<T> {
    io: T,
    cohort: Arc<Cohort>,
    aborted: Pin<Box<WaitForCancellationFutureOwned>>,
    fired: bool,
}

impl<T> TrackedConnection<T> {
    fn new(io: T, cohort: Arc<Cohort>) -> Self {
        cohort.open.fetch_add(1, Ordering::AcqRel);
        let aborted = Box::pin(cohort.abort.clone().cancelled_owned());
        Self { io, cohort, aborted, fired: false }
    }

    /// Polling the cancellation future registers the waker, so a connection parked in a read (an
    /// idle keep-alive or a quiet watch) is woken and torn down when its cohort is aborted.
    fn check_aborted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.fired && self.aborted.as_mut().poll(cx).is_ready() {
            self.fired = true;
        }
        if self.fired {
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
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for TrackedConnection<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_aborted(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_aborted(cx)?;
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
        self.io.connected()
    }
}
