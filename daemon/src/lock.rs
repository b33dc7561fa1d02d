//! Exclusive locks (flock) held for the daemon's lifetime, with the holder's pid inside: one
//! daemon per socket and one per state directory, even when two start at the same instant.

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; released when dropped or when the process dies (the file stays).
#[derive(Debug)]
pub struct Lock {
    _held: Flock<File>,
}

/// Takes the lock at `path` (created if missing), or fails with `held(pid)` when another
/// process holds it (`pid` as written by that process, when it could be read).
pub fn acquire(path: &Path, held: impl FnOnce(Option<u32>) -> String) -> anyhow::Result<Lock> {
    // Opened close-on-exec (std's default): scripts never inherit the lock.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let written = lock
                .set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| writeln!(lock, "{}", std::process::id()));
            written.with_context(|| format!("cannot write the lock file {}", path.display()))?;
            Ok(Lock { _held: lock })
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            anyhow::bail!(held(pid))
        }
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// ` (pid N)` when the pid is known, for messages about the holder of a lock.
pub fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let first = acquire(&path, |_| "unexpected".into()).expect("first lock");
        let err = acquire(&path, |pid| format!("held by{}", pid_text(pid)))
            .expect_err("second lock is refused");
        assert_eq!(
            err.to_string(),
            format!("held by (pid {})", std::process::id())
        );
        drop(first);
        acquire(&path, |_| "unexpected".into()).expect("free again after drop");
    }
}
