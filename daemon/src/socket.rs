//! The Unix socket: created with mode 0600 in a directory only the daemon's user can enter,
//! a stale socket from a dead daemon replaced, a live one refused; every request checked
//! against the peer's uid (SO_PEERCRED).

use crate::server::Service;
use anyhow::{bail, Context};
use scriptd_common::proto::scriptd_server::ScriptdServer;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// Binds the socket, replacing a stale one and refusing to steal a live one.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
        }
    }
    if path.exists() {
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => bail!(
                "another scriptd is already listening on {}; stop it first (or use another \
                 daemon.socket)",
                path.display()
            ),
            Err(_) => {
                tracing::info!(socket = %path.display(), "replacing stale socket from a dead daemon");
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            }
        }
    }
    // Created 0600 from the start: no window in which others could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    Ok(listener)
}

/// Refuses peers other than the daemon's own user and root.
#[allow(clippy::result_large_err)]
fn check_peer(req: Request<()>) -> Result<Request<()>, Status> {
    let me = nix::unistd::getuid().as_raw();
    let uid = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map(|c| c.uid());
    match uid {
        Some(uid) if uid == me || uid == 0 => Ok(req),
        Some(uid) => Err(Status::permission_denied(format!(
            "uid {uid} may not use this daemon (it runs as uid {me}); run ctl as that user or root"
        ))),
        None => Err(Status::permission_denied("cannot identify the peer")),
    }
}

/// Serves the scriptd, health and reflection services until `cancel`.
pub async fn serve(
    listener: UnixListener,
    service: Service,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScriptdServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scriptd_common::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ScriptdServer::new(service),
            check_peer,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), cancel.cancelled_owned())
        .await
        .context("gRPC server failed")
}
