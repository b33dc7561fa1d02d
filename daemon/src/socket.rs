//! The Unix socket and who may use it.
//!
//! Two gates. The kernel's: the socket lives in a directory of its own, mode 0700 with the
//! socket 0600 (only the daemon's user and root can connect), or, when `daemon.access`
//! grants anyone a role, 0711 with the socket 0666 (anyone can connect). And the daemon's,
//! which is the real one: every request of every service (scriptd, health, reflection) is
//! checked against the role of the peer, computed once per connection from the credentials
//! the kernel recorded at connect time (SO_PEERCRED: uid, gid, pid) and the supplementary
//! groups of the connecting process (`/proc/PID/status`).
//!
//! One daemon per socket: a lock file next to it (`SOCKET.lock`) is held for the daemon's
//! lifetime, so two daemons starting at once cannot both replace a stale socket.

use crate::lock::{self, Lock};
use crate::server::Service;
use anyhow::{bail, Context};
use scriptd_common::config::{Access, Role};
use scriptd_common::proto::scriptd_server::ScriptdServer;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::server::Connected;
use tonic::Status;

/// Modes of the socket's directory and of the socket: only the daemon's user (and root), or,
/// with `daemon.access` rules, anyone, the per-request role check deciding.
fn modes(access: &Access) -> (u32, u32) {
    if access.is_empty() {
        (0o700, 0o600)
    } else {
        (0o711, 0o666)
    }
}

/// Holds the socket for the daemon's lifetime: when dropped, removes the socket file, then
/// releases the lock (in that order, so a daemon starting meanwhile never loses its socket).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    _lock: Lock,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket: prepares its directory, takes the socket's lock, replaces a stale
/// socket and refuses to touch anything else found at `path`.
pub fn bind(path: &Path, access: &Access) -> anyhow::Result<(UnixListener, SocketGuard)> {
    let (dir_mode, socket_mode) = modes(access);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    prepare_dir(dir, dir_mode, &[path, Path::new(&lock_path)])?;
    if !access.is_empty() {
        warn_unreachable(dir);
    }
    let lock = lock::acquire(Path::new(&lock_path), |pid| {
        format!(
            "another scriptd{} is already listening on {} (it holds {}); stop it first, or give \
             this one another daemon.socket",
            lock::pid_text(pid),
            path.display(),
            Path::new(&lock_path).display()
        )
    })?;
    clear_stale(path)?;
    // Created with its final mode: no window in which others could connect.
    let mask = nix::sys::stat::Mode::from_bits_truncate(0o777 & !socket_mode);
    let old = nix::sys::stat::umask(mask);
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("cannot bind {}", path.display()))?;
    let guard = SocketGuard {
        path: path.to_path_buf(),
        _lock: lock,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))
        .with_context(|| format!("cannot set mode {socket_mode:o} on {}", path.display()))?;
    Ok((listener, guard))
}

/// The socket's directory belongs to scriptd: created with `mode` (its parents with the
/// usual mode), or, when it exists, is owned by the daemon's user and holds nothing but
/// `own` (the socket and its lock), set to `mode`. Refused rather than changed: a directory
/// owned by another user, a shared one (world-writable or sticky, such as `/tmp`), and one
/// that holds other files and has another mode (such as `/run`).
fn prepare_dir(dir: &Path, mode: u32, own: &[&Path]) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
            // The umask may have taken bits away.
            return std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set mode {mode:o} on {}", dir.display()));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot inspect socket directory {}", dir.display()))
        }
        Ok(m) => m,
    };
    let me = nix::unistd::geteuid().as_raw();
    let current = meta.mode() & 0o7777;
    if !meta.is_dir() {
        bail!(
            "the socket's directory {} is not a directory; fix daemon.socket",
            dir.display()
        );
    }
    if meta.uid() != me {
        bail!(
            "the socket's directory {} is owned by uid {}, not by scriptd's user (uid {me}): its \
             owner could replace the socket; give daemon.socket a directory of its own (e.g. \
             run/scriptd.sock next to the config, or /run/scriptd/scriptd.sock)",
            dir.display(),
            meta.uid()
        );
    }
    if current & 0o1002 != 0 {
        bail!(
            "the socket's directory {} is shared (mode {current:o}); scriptd sets the mode of \
             its socket's directory, so give daemon.socket a directory of its own (e.g. {}/\
             scriptd/scriptd.sock)",
            dir.display(),
            dir.display()
        );
    }
    if current == mode {
        return Ok(());
    }
    let others = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list socket directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| !own.contains(&p.as_path()));
    if let Some(other) = others {
        bail!(
            "the socket's directory {} has mode {current:o} and holds other files (such as \
             {}), so scriptd leaves its mode alone; give daemon.socket a directory of its own \
             (e.g. {}/scriptd/scriptd.sock), which scriptd creates with mode {mode:o}",
            dir.display(),
            other.display(),
            dir.display()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", dir.display()))?;
    tracing::info!(
        dir = %dir.display(),
        "socket directory mode {current:o} changed to {mode:o}"
    );
    Ok(())
}

/// With `daemon.access` rules, warns about a directory above the socket's that other users
/// cannot pass through: the rules would grant a role no one can use.
fn warn_unreachable(dir: &Path) {
    for above in dir.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(above) {
            if m.mode() & 0o001 == 0 {
                tracing::warn!(
                    "daemon.access grants roles, but {} (mode {:o}) does not let other users \
                     through to the socket; run `chmod o+x {}` or move daemon.socket",
                    above.display(),
                    m.mode() & 0o7777,
                    above.display()
                );
            }
        }
    }
}

/// Removes a socket left by a dead daemon (nothing accepts on it: ECONNREFUSED). Anything
/// else at `path` is an error that says what is there.
fn clear_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        Ok(m) => m,
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_file() {
            "a regular file"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        bail!(
            "{} exists and is {what}; scriptd replaces only a stale socket: remove it yourself \
             or give daemon.socket another path",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "something is already listening on {} (not a scriptd: none holds its lock); stop \
             it first, or give daemon.socket another path",
            path.display()
        ),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::info!(socket = %path.display(), "replacing stale socket from a dead daemon");
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))
        }
        Err(e) => bail!(
            "{} exists, and whether a daemon still uses it cannot be told: connecting to it \
             failed ({e}); remove it if no daemon owns it",
            path.display()
        ),
    }
}

/// The other end of a connection, as the kernel recorded it when the peer connected.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel could tell it.
    pub pid: Option<i32>,
    /// What the peer may do; `None`: nothing.
    pub role: Option<Role>,
}

/// Who gets which role: the daemon's user and root everything, others per `daemon.access`.
struct Policy {
    me: u32,
    access: Access,
}

impl Policy {
    fn peer(&self, stream: &UnixStream) -> Option<Peer> {
        let cred = stream.peer_cred().ok()?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let role = if uid == self.me || uid == 0 {
            Some(Role::Operate)
        } else {
            let mut groups = vec![gid];
            if self.access.names_groups() {
                groups.extend(
                    pid.and_then(|p| supplementary_groups(p, uid))
                        .unwrap_or_default(),
                );
            }
            self.access.role_of(uid, &groups)
        };
        Some(Peer {
            uid,
            gid,
            pid,
            role,
        })
    }
}

/// The supplementary groups of process `pid` (its `Groups:` line), provided it still runs as
/// `uid`: exactly what the connecting process holds, not what the user database says. `None`
/// when unreadable (the process is gone, or /proc hides it): then only the primary gid counts.
fn supplementary_groups(pid: i32, uid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    // Uid: real, effective, saved, fs. A different effective uid: the pid was reused.
    if field("Uid:")?.get(1) != Some(&uid) {
        return None;
    }
    field("Groups:")
}

/// An accepted connection and its peer; the peer is what handlers find in the request
/// extensions (as `Option<Peer>`).
pub struct PeerStream {
    stream: UnixStream,
    peer: Option<Peer>,
}

impl Connected for PeerStream {
    type ConnectInfo = Option<Peer>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The role a call needs, by its gRPC path. Every service is covered (health and reflection
/// need `read`: a peer with no role learns nothing, not even the schema); anything not
/// listed as read-only needs `operate`. `Rollback` passes here with `read` and its handler
/// asks for `operate` unless it is a dry run (see [`require`]).
fn needed(path: &str) -> Role {
    match path.strip_prefix("/scriptd.v1.Scriptd/") {
        Some("Status" | "Logs" | "History" | "GetVersion" | "Events" | "Diff" | "Rollback") => {
            Role::Read
        }
        Some(_) => Role::Operate,
        None if path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.v1.ServerReflection/") =>
        {
            Role::Read
        }
        None => Role::Operate,
    }
}

/// `Ok` when `peer` has at least `role`; otherwise PERMISSION_DENIED naming the uid, what it
/// has and what `call` needs.
fn check(peer: Option<&Peer>, role: Role, call: &str) -> Result<(), Status> {
    let Some(peer) = peer else {
        tracing::warn!(call, "refused a peer without credentials");
        return Err(Status::permission_denied(
            "the kernel gave no credentials for this connection (SO_PEERCRED), so it is refused",
        ));
    };
    if peer.role >= Some(role) {
        return Ok(());
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let who = match &name {
        Some(n) => format!("uid {} ({n})", peer.uid),
        None => format!("uid {}", peer.uid),
    };
    let wanted = role.as_str();
    let message = match peer.role {
        None => format!(
            "{who} has no role on this scriptd (it runs as uid {}); {call} needs the {wanted} \
             role: grant it in daemon.access, e.g. `- {{ user: {}, role: {wanted} }}`, and \
             restart the daemon",
            nix::unistd::geteuid(),
            name.unwrap_or_else(|| peer.uid.to_string())
        ),
        Some(has) => format!(
            "{who} has the {} role; {call} needs the {wanted} role in daemon.access",
            has.as_str()
        ),
    };
    tracing::warn!(uid = peer.uid, pid = peer.pid, call, "refused: {message}");
    Err(Status::permission_denied(message))
}

/// For handlers whose role depends on the request (rollback: `operate` unless a dry run).
#[allow(clippy::result_large_err)]
pub fn require<T>(request: &tonic::Request<T>, role: Role, call: &str) -> Result<(), Status> {
    check(peer_of(request), role, call)
}

/// The peer that sent `request`.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&Peer> {
    request
        .extensions()
        .get::<Option<Peer>>()
        .and_then(Option::as_ref)
}

/// Checks every request of every service before it reaches its handler.
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let call = path.rsplit('/').next().unwrap_or(path);
        let role = needed(path);
        let peer = request
            .extensions()
            .get::<Option<Peer>>()
            .and_then(Option::as_ref);
        match check(peer, role, call) {
            Ok(()) => {
                if role == Role::Operate {
                    if let Some(p) = peer {
                        tracing::info!(uid = p.uid, pid = p.pid, call, "operate request");
                    }
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// Serves the scriptd, health and reflection services until `cancel`, each request checked
/// against the peer's role.
pub async fn serve(
    listener: UnixListener,
    service: Service,
    access: Access,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScriptdServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scriptd_common::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let policy = Policy {
        me: nix::unistd::geteuid().as_raw(),
        access,
    };
    let incoming = UnixListenerStream::new(listener).map(move |accepted| {
        accepted.map(|stream| PeerStream {
            peer: policy.peer(&stream),
            stream,
        })
    });
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(|inner| Gate { inner }))
        .add_service(ScriptdServer::new(service))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .context("gRPC server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_calls_need_read_and_everything_else_operate() {
        for read in [
            "/scriptd.v1.Scriptd/Status",
            "/scriptd.v1.Scriptd/Logs",
            "/scriptd.v1.Scriptd/History",
            "/scriptd.v1.Scriptd/GetVersion",
            "/scriptd.v1.Scriptd/Events",
            "/scriptd.v1.Scriptd/Diff",
            "/scriptd.v1.Scriptd/Rollback",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(needed(read), Role::Read, "{read}");
        }
        for operate in [
            "/scriptd.v1.Scriptd/Control",
            "/scriptd.v1.Scriptd/Reload",
            "/scriptd.v1.Scriptd/SomethingNew",
            "/other.Service/Call",
        ] {
            assert_eq!(needed(operate), Role::Operate, "{operate}");
        }
    }

    #[test]
    fn denials_name_the_uid_and_the_role_needed() {
        let peer = |role| Peer {
            uid: 54321,
            gid: 54321,
            pid: None,
            role,
        };
        assert!(check(Some(&peer(Some(Role::Operate))), Role::Operate, "Control").is_ok());
        assert!(check(Some(&peer(Some(Role::Operate))), Role::Read, "Status").is_ok());
        assert!(check(Some(&peer(Some(Role::Read))), Role::Read, "Status").is_ok());

        let e = check(Some(&peer(Some(Role::Read))), Role::Operate, "Control").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "uid 54321 has the read role; Control needs the operate role in daemon.access"
        );
        let e = check(Some(&peer(None)), Role::Read, "Status").unwrap_err();
        assert!(
            e.message()
                .starts_with("uid 54321 has no role on this scriptd"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("`- { user: 54321, role: read }`"),
            "{}",
            e.message()
        );
        assert_eq!(
            check(None, Role::Read, "Status").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn supplementary_groups_of_this_process() {
        let me = nix::unistd::geteuid().as_raw();
        let pid = std::process::id() as i32;
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = supplementary_groups(pid, me).expect("own /proc status is readable");
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(
            supplementary_groups(pid, me.wrapping_add(1)),
            None,
            "other uid"
        );
    }
}
