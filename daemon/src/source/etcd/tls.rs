//! TLS to etcd (`daemon.source.etcd.tls`, `https://` endpoints): the files read and checked
//! once, at start, into a rustls client config (the `ring` provider, the tree's only one,
//! see [`crate::tcp`]); the connection; and a failed handshake said in words, with what to
//! change.
//!
//! The connection is made here rather than by tonic's TLS connector, which hands it to
//! HTTP/2 as soon as the handshake ends: with TLS 1.3 etcd refuses a client certificate
//! (or its absence) only after that, and HTTP/2's first write then races etcd's alert and
//! closed socket ("connection closed" instead of the reason, about every other time in
//! the tests). So the connector waits for etcd's first bytes (its HTTP/2 settings, or the
//! alert) without consuming them (`fill_buf`) before HTTP/2 starts, as `ctl` does.

use super::access::FilesError;
use crate::credential_files;
use hyper_util::rt::TokioIo;
use scriptd_common::config::etcd::EtcdTls;
use std::io;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig};
use tonic::transport::{Channel, Endpoint};

/// The client config of `files` (blocking: reads them): etcd's certificate verified
/// against `ca` only (not the system's roots), and the client certificate when given,
/// which must match its key.
pub fn client_config(files: &EtcdTls) -> Result<Arc<ClientConfig>, FilesError> {
    let roots = credential_files::roots(&files.ca, "daemon.source.etcd.tls.ca")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FilesError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &files.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain =
                credential_files::certificates(&client.cert, "daemon.source.etcd.tls.cert")?;
            let key = credential_files::private_key(&client.key, "daemon.source.etcd.tls.key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| FilesError::Mismatch {
                    cert: client.cert.display().to_string(),
                    key: client.key.display().to_string(),
                    reason: e.to_string(),
                })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects `endpoint` (`https://HOST:PORT`, with its timeouts and keepalive set) over TLS
/// with `config`.
pub async fn connect(
    endpoint: Endpoint,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let uri = endpoint.uri().clone();
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(2379);
    let connector = tokio_rustls::TlsConnector::from(config);
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, host) = (connector.clone(), host.clone());
            async move {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                let mut tls = connector.connect(name, tcp).await?;
                if tls.fill_buf().await?.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "etcd closed the connection right after the TLS handshake",
                    ));
                }
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// What a failed connection or call comes down to: a TLS failure in its chain of causes,
/// said with what to change (`client_cert`: the connection presents one), else the
/// innermost cause.
pub fn explain(e: &(dyn std::error::Error + 'static), client_cert: bool) -> String {
    let mut source = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return hint(&tls.to_string(), Some(tls), client_cert);
        }
        last = s.to_string();
        source = s.source();
    }
    hint(&last, None, client_cert)
}

/// `text` (a status message), with what to change when it names a TLS alert.
pub fn hint_text(text: &str, client_cert: bool) -> String {
    hint(text, None, client_cert)
}

/// `text` (the innermost cause), with what to change when it is a TLS failure: `tls` when
/// its type survived, else the alert etcd sent as the HTTP/2 layer kept it, in words
/// ("received fatal alert: BadCertificate"; with TLS 1.3 a refused client certificate is
/// said after the handshake). Which alert etcd sends for a missing certificate depends on
/// the TLS version, so `client_cert` (one was presented) tells the two cases apart.
fn hint(text: &str, tls: Option<&rustls::Error>, client_cert: bool) -> String {
    use rustls::AlertDescription as Alert;
    let refused = [
        Alert::CertificateRequired,
        Alert::HandshakeFailure,
        Alert::BadCertificate,
        Alert::UnknownCA,
        Alert::DecryptError,
        Alert::AccessDenied,
        Alert::CertificateExpired,
    ]
    .iter()
    .any(|a| text.contains(&format!("received fatal alert: {a:?}")));
    if refused && !client_cert {
        format!(
            "etcd requires a client certificate and got none ({text}): give \
             daemon.source.etcd.tls.cert and key"
        )
    } else if refused {
        format!(
            "etcd refused the client certificate ({text}): is daemon.source.etcd.tls.cert \
             signed by the CA of etcd's --trusted-ca-file, and still valid?"
        )
    } else if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
        format!(
            "etcd's certificate is not accepted ({text}): is daemon.source.etcd.tls.ca the CA \
             that signed it, and does it name the endpoint's host?"
        )
    } else if matches!(
        tls,
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. })
    ) {
        format!("the endpoint does not speak TLS ({text}): does etcd serve https on it?")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_what_to_change() {
        let cases: &[(&(dyn std::error::Error + 'static), bool, &str)] = &[
            (
                &std::io::Error::other("received fatal alert: CertificateRequired"),
                false,
                "etcd requires a client certificate and got none",
            ),
            (
                &std::io::Error::other("received fatal alert: BadCertificate"),
                false,
                "etcd requires a client certificate and got none",
            ),
            (
                &std::io::Error::other("received fatal alert: UnknownCA"),
                true,
                "etcd refused the client certificate",
            ),
            (
                &std::io::Error::other(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                true,
                "etcd's certificate is not accepted (invalid peer certificate: UnknownIssuer): \
                 is daemon.source.etcd.tls.ca",
            ),
            (
                &rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                false,
                "the endpoint does not speak TLS",
            ),
            (
                &std::io::Error::other("connection refused"),
                true,
                "connection refused",
            ),
        ];
        for (e, client_cert, want) in cases {
            let got = explain(*e, *client_cert);
            assert!(got.contains(want), "{e}: {got}");
        }
    }
}
