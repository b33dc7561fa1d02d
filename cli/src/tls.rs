//! Connecting to a daemon's TCP listener: TLS with the context's CA and client certificate
//! (rustls with the `ring` provider, like the daemon), and the daemon's verdict on the
//! certificate waited for before the connection is used.
//!
//! With TLS 1.3 the client's handshake ends before the server has checked the client's
//! certificate; a refusal (no certificate, another CA's) arrives as an alert after it. Sent
//! straight into HTTP/2, the first call would then fail as "operation was canceled" or "broken
//! pipe", the alert lost. So the connector reads the daemon's first bytes (its HTTP/2
//! settings, or the alert) itself and hands them on with the connection.

use crate::context::Context;
use crate::error::{CtlError, CtlResult, FAILURE, USAGE};
use hyper_util::rt::TokioIo;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// How long connecting (TCP, the handshake, the daemon's first bytes) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to context `c`'s daemon. The outer error: the context's files are unusable;
/// the inner: connecting failed (its cause chain says why, see `client::explain`).
pub async fn channel(c: &Context) -> CtlResult<Result<Channel, tonic::transport::Error>> {
    let (host, port) = host_port(&c.endpoint).ok_or_else(|| {
        CtlError::new(
            USAGE,
            format!(
                "context {}: endpoint {} is not https://HOST:PORT",
                c.name, c.endpoint
            ),
        )
    })?;
    let name = ServerName::try_from(host.clone()).map_err(|e| {
        CtlError::new(
            USAGE,
            format!(
                "context {}: {host} is not a host name or address: {e}",
                c.name
            ),
        )
    })?;
    let connector = TlsConnector::from(Arc::new(config(c)?));
    // The scheme is for tonic only: the connector below speaks TLS itself.
    let endpoint = Endpoint::from_shared(format!("http://{}", authority(&host, port)))
        .map_err(|e| CtlError::new(USAGE, format!("context {}: {e}", c.name)))?
        .connect_timeout(CONNECT_TIMEOUT);
    Ok(endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                // Without it, Nagle's algorithm held each small write of the handshake and of
                // HTTP/2 for the daemon's delayed ACK: ~90 ms per host (bench/fleet.sh).
                tcp.set_nodelay(true)?;
                let mut tls = connector.connect(name, tcp).await?;
                let mut first = vec![0u8; 4096];
                let n = tls.read(&mut first).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection right after the TLS handshake",
                    ));
                }
                first.truncate(n);
                Ok::<_, io::Error>(TokioIo::new(Rewind {
                    first,
                    taken: 0,
                    inner: tls,
                }))
            }
        }))
        .await)
}

/// `HOST` and `PORT` of `https://HOST:PORT` (an IPv6 address without its brackets).
fn host_port(url: &str) -> Option<(String, u16)> {
    let authority = url.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_owned(), port.parse().ok()?))
}

/// `HOST:PORT`, an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The client config: the context's CA as the only root, its certificate and key if any.
fn config(c: &Context) -> CtlResult<ClientConfig> {
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        CtlError::new(
            FAILURE,
            format!("context {}: its {what} {}: {e}", c.name, p.display()),
        )
    };
    let read = |what: &str, p: &Path| std::fs::read(p).map_err(|e| bad(what, p, &e));
    let certs = |what: &str, p: &Path| -> CtlResult<Vec<CertificateDer<'static>>> {
        let pem = read(what, p)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(what, p, &e))?;
        if certs.is_empty() {
            return Err(bad(what, p, &"holds no certificate (BEGIN CERTIFICATE)"));
        }
        Ok(certs)
    };
    let Some(ca) = &c.ca else {
        return Err(CtlError::new(
            USAGE,
            format!(
                "context {}: an https endpoint needs the CA of the daemon's certificate: `ctl \
                 context add {} --endpoint {} --ca FILE --cert FILE --key FILE`",
                c.name, c.name, c.endpoint
            ),
        ));
    };
    let mut roots = RootCertStore::empty();
    for cert in certs("CA (--ca)", ca)? {
        roots.add(cert).map_err(|e| bad("CA (--ca)", ca, &e))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| CtlError::new(FAILURE, format!("TLS: {e}")))?
            .with_root_certificates(roots);
    let mut config = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            let chain = certs("certificate (--cert)", cert)?;
            let pem = read("key (--key)", key)?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad("key (--key)", key, &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad("certificate (--cert)", cert, &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS connection whose first bytes were read already: they are read again first.
struct Rewind {
    first: Vec<u8>,
    taken: usize,
    inner: TlsStream<TcpStream>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.taken);
            buf.put_slice(&this.first[this.taken..this.taken + n]);
            this.taken += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        for (url, want) in [
            ("https://web-1:7443", Some(("web-1", 7443))),
            ("https://127.0.0.1:1/", Some(("127.0.0.1", 1))),
            ("https://[::1]:7443", Some(("::1", 7443))),
            ("https://web-1", None),
            ("unix:///s", None),
        ] {
            let got = host_port(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
        assert_eq!(authority("::1", 7443), "[::1]:7443");
        assert_eq!(authority("web-1", 7443), "web-1:7443");
    }
}
