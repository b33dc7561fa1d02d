//! One accepted connection: who is at the other end, whether a call is in flight, and the
//! stream that ends itself once no call has been in flight for the idle timeout. A long
//! stream (`ctl logs -f`, `ctl events`) is a call in flight however quiet it is, so
//! followers are never dropped; a connection that only holds a descriptor is.

use super::accept::{Slot, SpareBack};
use super::access::{Peer, Refusals};
use super::authority::AuthorityFix;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};
use tonic::codegen::Bytes;
use tonic::transport::server::Connected;
use tonic::Status;

/// The connections open now, for the metrics: each is counted while its `Counted` guard
/// lives (from its accept to its close). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clients(Arc<AtomicUsize>);

impl Clients {
    /// Connections open now.
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more connection until the guard is dropped.
    pub(super) fn enter(&self) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self.0.clone())
    }
}

/// One connection counted in [`Clients`].
pub(super) struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What handlers find in a request's extensions (as `Arc<Connection>`).
pub struct Connection {
    peer: Peer,
    activity: Mutex<Activity>,
    refusals: Arc<Refusals>,
}

/// Calls in flight on a connection, and since when there has been none.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    idle_since: Instant,
}

impl Connection {
    pub(crate) fn new(peer: Peer, refusals: Arc<Refusals>) -> Arc<Self> {
        Arc::new(Self {
            peer,
            activity: Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            refusals,
        })
    }

    /// The peer, as the kernel recorded it at connect time.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    pub(super) fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call starts; it is in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.activity().in_flight += 1;
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `idle`; `None` while a call is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let a = *self.activity();
        (a.in_flight == 0).then(|| a.idle_since + idle)
    }
}

/// A call in flight on a connection.
pub(super) struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
        }
    }
}

/// A response body that keeps its call in flight until it is dropped: when the response
/// has been sent in full, or its client went away.
pub(super) struct Tracked {
    body: tonic::body::Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(super) fn new(body: tonic::body::Body, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

/// An accepted connection as the gRPC server reads and writes it. Reading reports the end
/// of the stream once the connection has been idle for `idle`, and the server closes it.
/// What the client sends goes through the `:authority` mending of `socket/authority.rs`
/// (what the server sends does not).
pub struct PeerStream {
    stream: UnixStream,
    fix: AuthorityFix,
    /// Bytes from `fix` the server has not read yet (from `taken` on).
    fixed: Vec<u8>,
    taken: usize,
    conn: Arc<Connection>,
    idle: IdleTimer,
    /// The connection's place under the caps (none for root and the daemon's user); given
    /// back when the connection is dropped.
    _slot: Option<Slot>,
    /// Counted among the open connections until dropped.
    _counted: Counted,
    /// For a connection accepted in place of the spare descriptor: takes the spare again
    /// once `stream` (declared first, so dropped first) has closed.
    _spare_back: Option<SpareBack>,
}

impl PeerStream {
    pub(super) fn new(
        stream: UnixStream,
        conn: Arc<Connection>,
        idle: Duration,
        slot: Option<Slot>,
        counted: Counted,
        spare_back: Option<SpareBack>,
    ) -> Self {
        Self {
            stream,
            fix: AuthorityFix::new(),
            fixed: Vec::new(),
            taken: 0,
            conn,
            idle: IdleTimer::new(idle),
            _slot: slot,
            _counted: counted,
            _spare_back: spare_back,
        }
    }
}

/// The idle timeout of one connection (the socket's and the TCP listener's): ready once no
/// call has been in flight on it for the timeout.
pub(crate) struct IdleTimer {
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// A timer for connections idle for `idle`.
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The timeout.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Whether `conn` has been idle for the timeout; otherwise the timer is set to wake the
    /// reader when it may have.
    pub(crate) fn poll(&mut self, conn: &Connection, cx: &mut TaskContext<'_>) -> Poll<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match conn.idle_deadline(self.idle) {
                Some(deadline) if deadline <= now => return Poll::Ready(()),
                Some(deadline) => self.timer.as_mut().reset(deadline),
                // Busy: look again one timeout later.
                None => self.timer.as_mut().reset(now + self.idle),
            }
        }
        Poll::Pending
    }
}

impl Connected for PeerStream {
    type ConnectInfo = Arc<Connection>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken == this.fixed.len() && this.fix.passing_through() {
                // Nothing to mend on this connection: read straight into the server's buffer.
                match Pin::new(&mut this.stream).poll_read(cx, buf) {
                    Poll::Pending => break,
                    ready => return ready,
                }
            }
            if this.taken < this.fixed.len() {
                let n = buf.remaining().min(this.fixed.len() - this.taken);
                buf.put_slice(&this.fixed[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.fixed.len() {
                    this.fixed.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Err(e) = this.fix.feed(read.filled(), &mut this.fixed) {
                        let peer = this.conn.peer();
                        tracing::debug!(
                            uid = peer.uid,
                            pid = peer.pid,
                            "closing a connection: {e}"
                        );
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        match this.idle.poll(&this.conn, cx) {
            Poll::Ready(()) => {
                let peer = this.conn.peer();
                tracing::debug!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "closing a connection idle for {:?}",
                    this.idle.idle()
                );
                // End of stream: nothing read.
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `AsyncWrite` for a connection type whose writes go straight to its `stream` field (what
/// the server sends is never touched): the Unix socket's [`PeerStream`] and the TCP
/// listener's connections.
macro_rules! write_through_stream {
    ($ty:ty) => {
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.stream.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through_stream;

write_through_stream!(PeerStream);
