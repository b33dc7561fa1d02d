//! `tcp:` healthy when a connection to `host:port` is accepted (then closed at once).

use scriptd_common::config::health::tcp_target;
use tokio::net::TcpStream;

/// Connects to `addr` (checked by validation); the caller bounds the time. Name resolution
/// runs on tokio's blocking pool, never on a runtime thread.
pub(super) async fn probe(addr: &str) -> Result<String, String> {
    let (host, port) = tcp_target(addr)?;
    connect(&host, port).await?;
    Ok(format!("connected to {addr}"))
}

/// A TCP connection to `host:port`, with an error that names both.
pub(super) async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port)).await.map_err(|e| {
        if host.contains(':') {
            format!("connect [{host}]:{port}: {e}")
        } else {
            format!("connect {host}:{port}: {e}")
        }
    })
}
