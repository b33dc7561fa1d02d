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
    let path = socket.to_path_buf();
    let unreachable = |e: &dyn std::fmt::Display| {
        CtlError::new(
            FAILURE,
            format!(
                "cannot reach scriptd at {}: {e}; is the daemon running? (start it with \
                 `scriptd --config PATH`, or point ctl at its socket with --socket or \
                 SCRIPTD_SOCKET)",
                socket.display()
            ),
        )
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
