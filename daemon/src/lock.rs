//! Exclusive locks (flock) held for the daemon's lifetime, with the holder's pid inside: one
//! daemon per socket and one per state directory, even when two start at the same instant.

use crate::nofollow::{self, OpenError};
use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// A held lock; released when dropped or when the process dies (the file stays).
#[derive(Debug)]
pub struct Lock {
    _held: Flock<File>,
}

/// Takes the lock at `path` (created if missing), or fails with `held(pid)` when another
/// process holds it (`pid` as written by that process, when it could be read).
///
/// The lock file is written (truncated to the daemon's pid), so it must be a plain file of
/// its own: a symlink there is not followed (it could point at any file root can write), and
/// anything but a regular file with one link is refused, each with what to do.
pub fn acquire(path: &Path, held: impl FnOnce(Option<u32>) -> String) -> anyhow::Result<Lock> {
    // Close-on-exec (std's default): scripts never inherit the lock. Non-blocking: a FIFO
    // planted there does not hang the open.
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644);
    let not_own = |what: String| {
        anyhow::anyhow!(
            "the lock file {} is not a plain file of its own ({what}); scriptd would overwrite \
             it: remove it",
            path.display()
        )
    };
    let file = nofollow::open_regular(path, &opts).map_err(|e| match e {
        OpenError::Symlink(_) => anyhow::anyhow!(
            "the lock file {} is a symbolic link; scriptd does not follow it (it would \
             overwrite the file it points to): remove it",
            path.display()
        ),
        OpenError::NotRegular { .. } => not_own("not a regular file".to_owned()),
        OpenError::Io { source, .. } => anyhow::Error::new(source)
            .context(format!("cannot open the lock file {}", path.display())),
    })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect the lock file {}", path.display()))?;
    if meta.nlink() > 1 {
        return Err(not_own(format!("{} hard links", meta.nlink())));
    }
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The flock is what keeps a second daemon out; the pid only names the holder in
            // its message, so a full disk costs that, not the start.
            if let Err(e) = write_pid(&mut lock) {
                tracing::warn!(
                    "cannot write the pid into the lock file {}: {e}; the lock is held all the \
                     same (a second daemon is refused without this one's pid)",
                    path.display()
                );
            }
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

/// Replaces the file's content with this process's pid.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
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

    #[test]
    fn a_symlink_or_a_shared_file_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let link = dir.path().join("via-symlink.lock");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let err = acquire(&link, |_| "unexpected".into()).expect_err("symlink refused");
        assert_eq!(
            err.to_string(),
            format!(
                "the lock file {} is a symbolic link; scriptd does not follow it (it would \
                 overwrite the file it points to): remove it",
                link.display()
            )
        );
        let hard = dir.path().join("via-hardlink.lock");
        std::fs::hard_link(&victim, &hard).expect("hard link");
        let err = acquire(&hard, |_| "unexpected".into()).expect_err("hard link refused");
        assert!(err.to_string().contains("2 hard links"), "{err:#}");
        let fifo = dir.path().join("fifo.lock");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = acquire(&fifo, |_| "unexpected".into()).expect_err("FIFO refused");
        assert!(err.to_string().contains("not a regular file"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious\n"
        );
    }
}
