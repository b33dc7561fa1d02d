//! Binding the socket: its directory (created, or checked and tightened), what may be found
//! at its path (only a stale socket is replaced), its mode, and the lock that makes one
//! daemon per socket (`SOCKET.lock`, held for the daemon's lifetime, so two daemons starting
//! at once cannot both replace a stale socket).

use crate::lock::{self, Lock};
use anyhow::{bail, Context};
use scriptd_common::config::Access;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
/// Modes of the socket's directory and of the socket: only the daemon's user (and root), or,
/// with `daemon.access` rules, anyone, the per-request role check deciding.
/// Rules for client certificates concern the TCP listener only and leave the socket closed.
fn modes(access: &Access) -> (u32, u32) {
    if !access.names_local() {
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
    if access.names_local() {
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
            match std::fs::DirBuilder::new().mode(mode).create(dir) {
                // Another daemon starting at the same instant made it: check it like any
                // existing directory (its lock decides which daemon runs).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return prepare_dir(dir, mode, own)
                }
                created => created
                    .with_context(|| format!("cannot create socket directory {}", dir.display()))?,
            }
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
