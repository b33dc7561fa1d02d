//! Finding the daemon's socket and connecting to it.

use crate::error::{CtlError, CtlResult, FAILURE, USAGE};
use hyper_util::rt::TokioIo;
use scriptd_common::config;
use scriptd_common::proto::scriptd_client::ScriptdClient;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// The gRPC client.
pub type Client = ScriptdClient<Channel>;

/// The socket to use: `--socket`/`SCRIPTD_SOCKET`, else `daemon.socket` of the config
/// (`--config`/`SCRIPTD_CONFIG`, else [`config::default_main_file`]: `./scriptd.yaml` when
/// it exists, else the packaged `/etc/scriptd/scriptd.yaml` when it exists), else
/// `./run/scriptd.sock` (the daemon's default next to `./scriptd.yaml`). A config given by
/// name that cannot be read is a usage error: ctl says so instead of trying a socket the
/// user did not mean.
pub fn resolve_socket(socket: Option<&Path>, config: Option<&Path>) -> CtlResult<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    let given = config.is_some();
    let config = config.map_or_else(config::default_main_file, Path::to_path_buf);
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => Some(text),
        Err(e) if given => {
            return Err(CtlError::new(
                USAGE,
                format!(
                    "cannot read the config {} (--config or SCRIPTD_CONFIG): {e}; give the \
                     right path, or the daemon's socket with --socket",
                    config.display()
                ),
            ))
        }
        Err(_) => None,
    };
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let from_config = text
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .and_then(|v| {
            v.get("daemon")
                .and_then(|d| d.get("socket"))
                .and_then(|s| s.as_str().map(str::to_owned))
        });
    Ok(base.join(from_config.unwrap_or_else(|| config::builtin::SOCKET.to_owned())))
}

/// The daemon runs, but the socket's mode keeps this user out: say so, and how access is
/// granted, rather than suggest starting a daemon.
fn denied(socket: &Path) -> CtlError {
    CtlError::new(
        FAILURE,
        format!(
            "permission denied on {}: only root and the daemon's user may connect unless \
             `daemon.access` in the daemon's config grants you a role (e.g. `- {{ user: {}, \
             role: read }}`, then restart scriptd; README \"Transport and access\"), or run \
             ctl as root",
            socket.display(),
            // The uid, not the name: ctl does no NSS lookup (it is linked statically).
            nix::unistd::getuid(),
        ),
    )
}

/// Connects to the daemon at `socket`.
pub async fn connect(socket: &Path) -> CtlResult<Client> {
    connect_unix(socket, None).await
}

/// Connects to the daemon at `socket`, the endpoint of context `context` if it is one (the
/// message of a failure then names the context, not the socket flags).
async fn connect_unix(socket: &Path, context: Option<&str>) -> CtlResult<Client> {
    let path = socket.to_path_buf();
    let unreachable = |e: &dyn std::fmt::Display| {
        let message = match context {
            Some(name) => format!(
                "cannot reach scriptd at {} (context {name}): {e}; is the daemon running, and \
                 is that its socket? (`ctl context show {name}`)",
                socket.display()
            ),
            None => format!(
                "cannot reach scriptd at {}: {e}; is the daemon running? (start it with \
                 `scriptd --config PATH`, or point ctl at its socket with --socket or \
                 SCRIPTD_SOCKET)",
                socket.display()
            ),
        };
        CtlError::new(FAILURE, message)
    };
    // The URI is required by the API but unused: the connector dials the Unix socket.
    let endpoint = Endpoint::try_from("http://scriptd.invalid").map_err(|e| unreachable(&e))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            // The transport error hides the io error that says why.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            let mut last = e.to_string();
            while let Some(s) = source {
                if s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
                {
                    return denied(socket);
                }
                last = s.to_string();
                source = s.source();
            }
            unreachable(&last)
        })?;
    Ok(ScriptdClient::new(channel))
}

/// The daemon a command talks to: a Unix socket, or a context's TLS endpoint.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Unix socket.
    Socket(PathBuf),
    /// A context's daemon: its socket (`unix://`), or its TCP listener (`https://`,
    /// `daemon.listen`) with the context's files.
    Context(crate::context::Context),
}

/// Context `c`'s daemon, its endpoint checked.
pub fn target_of(c: crate::context::Context) -> CtlResult<Target> {
    endpoint_of(&c)?;
    Ok(Target::Context(c))
}

/// The endpoint of context `c`; one that does not parse (a hand-edited file) is a usage
/// error naming the context.
fn endpoint_of(c: &crate::context::Context) -> CtlResult<crate::context::Endpoint> {
    crate::context::Endpoint::parse(&c.endpoint).map_err(|e| {
        CtlError::new(
            USAGE,
            format!(
                "context {}: {e}; fix it with `ctl context add --force`",
                c.name
            ),
        )
    })
}

/// Connects to `target`.
pub async fn connect_target(target: &Target) -> CtlResult<Client> {
    use crate::context::Endpoint;
    match target {
        Target::Socket(path) => connect(path).await,
        Target::Context(c) => match endpoint_of(c)? {
            Endpoint::Unix(path) => connect_unix(&path, Some(&c.name)).await,
            Endpoint::Https(_) => connect_remote(c).await,
        },
    }
}

/// Connects to the https endpoint of context `c` with its CA and client certificate.
async fn connect_remote(c: &crate::context::Context) -> CtlResult<Client> {
    let failed = |e: &(dyn std::error::Error + 'static)| {
        CtlError::new(
            FAILURE,
            format!(
                "cannot reach scriptd at {} (context {}): {}",
                c.endpoint,
                c.name,
                explain(e)
            ),
        )
    };
    let channel = crate::tls::channel(c).await?.map_err(|e| failed(&e))?;
    Ok(ScriptdClient::new(channel))
}

/// What a transport failure comes down to: the TLS refusal, said with what to do, when
/// there is one in its chain of causes (tonic reports a refused handshake as "transport
/// error" or "operation was canceled"), else the innermost cause.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        let tls = s.downcast_ref::<tokio_rustls::rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        });
        if let Some(tls) = tls {
            return tls_hint(tls);
        }
        last = s.to_string();
        source = s.source();
    }
    // h2 keeps only the text of an I/O error: a TLS alert that ended the connection
    // reaches here as "received fatal alert: NAME".
    match alert_in(&last) {
        Some(alert) => tls_hint(&tokio_rustls::rustls::Error::AlertReceived(alert)),
        None => last,
    }
}

/// The TLS alert named in `text` (rustls's "received fatal alert: CertificateRequired").
fn alert_in(text: &str) -> Option<tokio_rustls::rustls::AlertDescription> {
    let (_, rest) = text.split_once("received fatal alert: ")?;
    let name: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (0..=u8::MAX)
        .map(tokio_rustls::rustls::AlertDescription::from)
        .find(|alert| format!("{alert:?}") == name)
}

/// A TLS failure, and what to do about it.
fn tls_hint(e: &tokio_rustls::rustls::Error) -> String {
    use tokio_rustls::rustls::AlertDescription as Alert;
    match e {
        tokio_rustls::rustls::Error::AlertReceived(
            Alert::CertificateRequired | Alert::HandshakeFailure,
        ) => {
            format!(
                "the daemon requires a client certificate and got none ({e}); give the \
                 context one: `ctl context add NAME --endpoint URL --ca FILE --cert FILE --key \
                 FILE`"
            )
        }
        tokio_rustls::rustls::Error::AlertReceived(
            Alert::UnknownCA | Alert::BadCertificate | Alert::DecryptError | Alert::AccessDenied,
        ) => format!(
            "the daemon refused this client certificate ({e}): it is not signed by the CA of \
             the daemon's daemon.listen.tls.client_ca"
        ),
        tokio_rustls::rustls::Error::AlertReceived(Alert::CertificateExpired) => {
            format!("the daemon refused this client certificate: it has expired ({e})")
        }
        tokio_rustls::rustls::Error::InvalidCertificate(_) => format!(
            "the daemon's certificate is not accepted ({e}): is the context's --ca the CA that \
             signed it, and does it name the endpoint's host?"
        ),
        tokio_rustls::rustls::Error::InvalidMessage(_)
        | tokio_rustls::rustls::Error::InappropriateMessage { .. } => {
            format!(
                "the endpoint does not speak TLS ({e}): is it the daemon's daemon.listen.tcp \
                 port?"
            )
        }
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_found_in_text() {
        use tokio_rustls::rustls::AlertDescription as Alert;
        for (text, want) in [
            (
                "transport error: received fatal alert: CertificateRequired",
                Some(Alert::CertificateRequired),
            ),
            ("received fatal alert: UnknownCA", Some(Alert::UnknownCA)),
            ("received fatal alert: Nonsense", None),
            ("connection refused", None),
        ] {
            assert_eq!(alert_in(text), want, "{text}");
        }
        let hint = explain(&std::io::Error::other(
            "received fatal alert: CertificateRequired",
        ));
        assert!(hint.contains("requires a client certificate"), "{hint}");
    }
}
