//! The TCP listener (`daemon.listen`): the same services, roles and audit as on the Unix
//! socket, for remote callers known by their client certificates.
//!
//! TLS is mandatory and a client certificate signed by `daemon.listen.tls.client_ca` is
//! required (a client without one, or with another CA's, fails the handshake). A verified
//! certificate gets the highest role the `daemon.access` rules `{ cert: NAME, role }` grant
//! to its CN or a DNS or URI SAN; one that matches no rule gets `PERMISSION_DENIED`, like an
//! unknown uid on the socket.
//!
//! Its own connection limits: at most [`MAX_CONNECTIONS`] at once (a connection over it is
//! closed before its handshake), a handshake that has not finished after
//! [`HANDSHAKE_TIMEOUT`] is dropped, and a connection with no call in flight for the idle
//! timeout of the socket (`SCRIPTD_IDLE_TIMEOUT`, 60 s) is closed; followers never are.
//!
//! - `tls`: the server config from `daemon.listen.tls`, the names of a client certificate.

mod tls;

pub use tls::{names, server_config, TlsError};

use crate::server::Service;
use crate::socket::{Connection, IdleTimer, Peer, Refusals};
use anyhow::Context;
use scriptd_common::config::Access;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// TCP connections open at once, handshakes included.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client has to close its end (see `drain`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the accept loop waits after a failed accept (e.g. at the descriptor limit).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `addr`. At start, before anything is served: a port in use is an error that says
/// so.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on daemon.listen.tcp {addr}: is another process using the port? \
             give another address or port"
        )
    })
}

/// Serves the scriptd, health and reflection services on `listener` over TLS with `tls`
/// until `cancel`, each request checked against the role of its certificate.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: Arc<Service>,
    access: Access,
    idle: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let refusals = Refusals::start(cancel.clone());
    let (tx, rx) = mpsc::channel(64);
    let acceptor = Acceptor {
        listener,
        tls: TlsAcceptor::from(tls),
        access: Arc::new(access),
        refusals,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        idle,
        tx,
    };
    tokio::spawn(acceptor.run());
    let incoming = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    crate::socket::serve_incoming(incoming, service, cancel).await
}

/// The accept loop: the only owner of the listener.
struct Acceptor {
    listener: TcpListener,
    tls: TlsAcceptor,
    access: Arc<Access>,
    refusals: Arc<Refusals>,
    slots: Arc<Semaphore>,
    idle: Duration,
    tx: mpsc::Sender<RemoteStream>,
}

impl Acceptor {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                _ = self.tx.closed() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => self.admit(stream, addr),
                Err(e) => {
                    tracing::warn!("cannot accept a TCP connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Takes a slot (or closes the connection at once), then runs the handshake in a task
    /// of its own and hands the connection to the server with its certificate's role.
    fn admit(&self, stream: TcpStream, addr: SocketAddr) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "closed a TCP connection: {MAX_CONNECTIONS} are open");
            return;
        };
        // Small writes (handshake flights, HTTP/2 frames) go out at once: with Nagle's
        // algorithm each waited for the peer's delayed ACK, ~40 ms a time (bench/fleet.sh).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
        }
        let (tls, access, refusals, tx, idle) = (
            self.tls.clone(),
            self.access.clone(),
            self.refusals.clone(),
            self.tx.clone(),
            self.idle,
        );
        tokio::spawn(async move {
            let handshake = tls.accept(stream).into_fallible();
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err((e, tcp))) => {
                    refusals.handshake_failed(addr.ip(), &e);
                    drain(tcp).await;
                    return;
                }
                Err(_) => {
                    let why = format!("not finished in {HANDSHAKE_TIMEOUT:?}");
                    refusals.handshake_failed(addr.ip(), &why);
                    return;
                }
            };
            let names = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|der| names(der))
                .unwrap_or_default();
            let peer = peer_of(&access, &names);
            tracing::debug!(%addr, cert = peer.cert, "TLS connection");
            let conn = Connection::new(peer, refusals);
            let _ = tx
                .send(RemoteStream {
                    stream,
                    conn,
                    idle: IdleTimer::new(idle),
                    _slot: slot,
                })
                .await;
        });
    }
}

/// After a refused handshake, reads what the client still sends (its first request, sent
/// before it read the refusal) until it closes, for at most [`DRAIN_TIMEOUT`]: closing with
/// unread input would reset the connection, and the client would see a broken pipe instead
/// of the TLS alert that says why it was refused.
async fn drain(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The peer whose certificate goes by `names`: named after the rule that matched, else
/// after its first name (for the refusal message).
fn peer_of(access: &Access, names: &[String]) -> Peer {
    match access.role_of_cert(names) {
        Some((role, name)) => Peer::remote(name.to_owned(), Some(role)),
        None => Peer::remote(
            names
                .first()
                .cloned()
                .unwrap_or_else(|| "(no CN or SAN)".into()),
            None,
        ),
    }
}

/// A TLS connection as the gRPC server reads and writes it, with its peer.
struct RemoteStream {
    stream: TlsStream<TcpStream>,
    conn: Arc<Connection>,
    idle: IdleTimer,
    /// Given back when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

impl Connected for RemoteStream {
    type ConnectInfo = Arc<Connection>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.clone()
    }
}

impl AsyncRead for RemoteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(read) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        match this.idle.poll(&this.conn, cx) {
            Poll::Ready(()) => {
                tracing::debug!(
                    cert = this.conn.peer().cert,
                    "closing a TCP connection idle for {:?}",
                    this.idle.idle()
                );
                // End of stream: nothing read.
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

crate::socket::write_through_stream!(RemoteStream);

#[cfg(test)]
mod tests {
    use super::*;
    use scriptd_common::config::{AccessRule, Role, Subject};

    #[test]
    fn a_certificate_gets_the_highest_role_of_its_names() {
        let rule = |name: &str, role| AccessRule {
            subject: Subject::Cert { name: name.into() },
            role,
        };
        let access = Access(vec![
            rule("reader", Role::Read),
            rule("deploy.example", Role::Operate),
            AccessRule {
                subject: Subject::User { uid: 0, name: None },
                role: Role::Read,
            },
        ]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], Option<Role>, &str)] = &[
            (&["reader"], Some(Role::Read), "reader"),
            (
                &["reader", "deploy.example"],
                Some(Role::Operate),
                "deploy.example",
            ),
            (&["stranger", "other"], None, "stranger"),
            (&[], None, "(no CN or SAN)"),
        ];
        for (n, role, who) in cases {
            let peer = peer_of(&access, &names(n));
            assert_eq!(peer.role, *role, "{n:?}");
            assert_eq!(peer.cert.as_deref(), Some(*who), "{n:?}");
            assert_eq!(peer.local_uid(), None);
        }
    }
}
