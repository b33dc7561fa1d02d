//! Finding the daemon's socket and connecting to it.

use crate::error::{CtlError, CtlResult, FAILURE};
use hyper_util::rt::TokioIo;
use scriptd_common::proto::scriptd_client::ScriptdClient;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// The gRPC client.
pub type Client = ScriptdClient<Channel>;

/// The packaged install's config, tried when no config is given and `./scriptd.yaml` does
/// not exist.
pub const SYSTEM_CONFIG: &str = "/etc/scriptd/scriptd.yaml";

/// The socket to use: `--socket`/`SCRIPTD_SOCKET`, else `daemon.socket` of the config
/// (`--config`/`SCRIPTD_CONFIG`, else `./scriptd.yaml` when it exists, else
/// [`SYSTEM_CONFIG`] when it exists), else `./run/scriptd.sock` (the daemon's default next
/// to `./scriptd.yaml`).
pub fn resolve_socket(socket: Option<&Path>, config: Option<&Path>) -> PathBuf {
    if let Some(s) = socket {
        return s.to_path_buf();
    }
    let config = config.map(Path::to_path_buf).unwrap_or_else(|| {
        let local = PathBuf::from("scriptd.yaml");
        let system = PathBuf::from(SYSTEM_CONFIG);
        if !local.exists() && system.exists() {
            system
        } else {
            local
        }
    });
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let from_config = std::fs::read_to_string(&config)
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .and_then(|v| {
            v.get("daemon")
                .and_then(|d| d.get("socket"))
                .and_then(|s| s.as_str().map(str::to_owned))
        });
    base.join(from_config.unwrap_or_else(|| scriptd_common::config::builtin::SOCKET.to_owned()))
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
                last = s.to_string();
                source = s.source();
            }
            unreachable(&last)
        })?;
    Ok(ScriptdClient::new(channel))
}
