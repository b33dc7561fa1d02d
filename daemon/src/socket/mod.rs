//! The Unix socket and who may use it.
//!
//! Two gates. The kernel's: the socket lives in a directory of its own, mode 0700 with the
//! socket 0600 (only the daemon's user and root can connect), or, when `daemon.access`
//! grants anyone a role, 0711 with the socket 0666 (anyone can connect). And the daemon's,
//! which is the real one: every request is checked against the role of its peer.
//!
//! - [`bind`]: the socket's directory, what may be found at its path, its lock;
//! - `accept`: the accept loop, the connection caps per uid and for everyone but root and
//!   the daemon's user, backing off at the descriptor limit;
//! - `conn`: one connection, its calls in flight and its idle timeout;
//! - `authority`: the `:authority` of Unix-socket clients that send the socket path mended
//!   before the HTTP/2 server sees it (`huffman`: HPACK's Huffman code, decoded with a table
//!   built once);
//! - `access`: roles, the per-request check, refusals logged rate-limited.

mod accept;
mod access;
mod authority;
mod bind;
mod conn;
mod huffman;

pub use accept::{BadIdleTimeout, Limits, IDLE_TIMEOUT, PER_UID};
pub(crate) use access::Refusals;
pub use access::{peer_of, require, Gate, Peer, NO_ID};
pub use bind::{bind, SocketGuard};
pub(crate) use conn::{write_through_stream, IdleTimer};
pub use conn::{Clients, Connection, PeerStream};

use crate::server::Service;
use anyhow::Context;
use scriptd_common::config::Access;
use scriptd_common::proto::scriptd_server::ScriptdServer;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Serves the scriptd, health and reflection services until `cancel`, each request checked
/// against the peer's role, each connection under `limits`.
pub async fn serve(
    listener: UnixListener,
    service: Arc<Service>,
    access: Access,
    limits: Limits,
    clients: Clients,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let policy = Arc::new(access::Policy::new(nix::unistd::geteuid().as_raw(), access));
    let refusals = Refusals::start(cancel.clone());
    let incoming = accept::spawn(listener, policy, refusals, limits, clients)
        .map(Ok::<_, std::convert::Infallible>);
    serve_incoming(incoming, service, cancel).await
}

/// Serves the scriptd, health and reflection services on the connections of `incoming`
/// (each with its `Arc<Connection>`) until `cancel`, every request through the [`Gate`]:
/// the Unix socket's and the TCP listener's (`crate::tcp`).
pub(crate) async fn serve_incoming<I, IO>(
    incoming: I,
    service: Arc<Service>,
    cancel: CancellationToken,
) -> anyhow::Result<()>
where
    I: tokio_stream::Stream<Item = Result<IO, std::convert::Infallible>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected<ConnectInfo = Arc<Connection>>
        + Unpin
        + Send
        + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScriptdServer<Service>>().await;
    // Reflection in both versions (grpcurl 1.8 and Python's reflection client ask for
    // v1alpha), describing every service served here, health included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(scriptd_common::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("cannot build the reflection service (v1)")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build the reflection service (v1alpha)")?;
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(Gate::new))
        .add_service(ScriptdServer::from_arc(service))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .context("gRPC server failed")
}
