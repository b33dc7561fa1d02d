//! The directories the daemon writes in: `state_dir` (the history, the process-group
//! records and the lock) and `log_dir`. Created when missing; refused at startup when a user
//! other than the daemon's own and root could change what is in them, by the rules of the
//! config files (owner; group and others' write, except the owner's private group and
//! sticky directories), checked on the directory and on every directory above it.

use scriptd_common::config::{self, DaemonConfig};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why `state_dir` must be safe from other users, in its refusals.
const STATE_WHY: &str = "whoever can write there can rewrite the history (what a rollback \
                         runs) and the process-group records scriptd kills at startup";
/// Why `log_dir` must be safe from other users, in its refusals.
const LOG_WHY: &str = "whoever can write there can replace the logs or plant links in them";

/// A directory the daemon cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// It could not be created.
    #[error("cannot create {key} {}: {source}", path.display())]
    Create {
        /// The config key naming it.
        key: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Someone other than the daemon's user and root could change what is in it.
    #[error("{key} {} is refused:\n  {}", path.display(), problems.join("\n  "))]
    Untrusted {
        /// The config key naming it.
        key: &'static str,
        /// The directory.
        path: PathBuf,
        /// What is wrong, each with the command that fixes it.
        problems: Vec<String>,
    },
}

/// Creates `state_dir` (mode 0700: the history holds the full config text) and `log_dir`
/// (0755) when missing, missing parents with 0755, and checks who may write them.
pub fn prepare(daemon: &DaemonConfig) -> Result<(), DirError> {
    prepare_one("daemon.state_dir", &daemon.state_dir, 0o700, STATE_WHY)?;
    prepare_one("daemon.log_dir", &daemon.log_dir, 0o755, LOG_WHY)
}

fn prepare_one(key: &'static str, path: &Path, mode: u32, why: &str) -> Result<(), DirError> {
    create(path, mode).map_err(|source| DirError::Create {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let mut problems = config::check_trusted_dir(path, why);
    problems.extend(shared(path));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DirError::Untrusted {
            key,
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// The config's rules accept a sticky directory that others may write (such as `/tmp`) above
/// the directory, but not as the directory itself: others could create files in it, such as
/// a link where a log file or the lock will be.
fn shared(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o1002 == 0o1002).then(|| {
        format!(
            "refused: directory {} is shared (mode {mode:o}): others may create files in it; \
             give it a directory of its own, or run `chmod o-w {}`",
            path.display(),
            path.display()
        )
    })
}

/// Creates `path` with `mode` (less the umask) and its missing parents with 0755; an
/// existing directory is left as it is.
fn create(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}
