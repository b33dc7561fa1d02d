//! The process groups of running scripts, one file per script under
//! `state_dir/groups/NAME`, written when a run starts and removed when it ends; what is left
//! after a crash is swept at the next start.
//!
//! A record names the group and what proves it is ours: the boot, the leader's start time,
//! the shim that started it (pid and start time) and the run (`SCRIPTD_SCRIPT` and
//! `SCRIPTD_RUN_ID` in the environment of its processes). The sweep never signals group 1 or
//! below, the daemon's own group, or a group it cannot prove was started by a shim of ours.
//!
//! Every file is opened relative to the directory, without following symlinks.

use super::group_record::{judge, leftover_members, GroupRecord, Refusal, System, Verdict};
use super::procfs;
use crate::throttle::{self, Failure, Streak};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::oneshot;

/// Largest record file read.
const MAX_RECORD: u64 = 4096;

/// Why the records cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the process group records in {}: {source}", dir.display())]
pub struct RecordsError {
    dir: PathBuf,
    source: std::io::Error,
}

/// The directory of records (`state_dir/groups`), held open by the one thread that reads
/// and writes it (requests in order: a run's record is never removed by the end of the run
/// before it).
#[derive(Debug, Clone)]
pub struct GroupRecords {
    tx: std::sync::mpsc::Sender<Op>,
}

/// A request to the records' thread.
enum Op {
    Record {
        name: String,
        pgid: u32,
        shim_pid: u32,
        run_id: u64,
        reply: oneshot::Sender<Option<u64>>,
    },
    Forget(String, oneshot::Sender<()>),
    Sweep(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Records {
    path: PathBuf,
    dir: OwnedFd,
    boot_id: String,
    /// Failed writes (a full `state_dir`): logged once, then counted.
    unwritable: Streak,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl GroupRecords {
    /// Uses (and creates, mode 0700) `state_dir/groups`, refusing a symlink there.
    pub fn open(state_dir: &Path) -> Result<Self, RecordsError> {
        let path = state_dir.join("groups");
        let err = |source| RecordsError {
            dir: path.clone(),
            source,
        };
        let state = nix::fcntl::open(
            state_dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(io(e)))?;
        match mkdirat(&state, "groups", Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(io(e))),
        }
        let dir = openat(
            &state,
            "groups",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => err(std::io::Error::other(
                "it is a symbolic link or not a directory; remove it (the daemon recreates it)",
            )),
            e => err(io(e)),
        })?;
        let boot_id = procfs::boot_id().ok_or_else(|| {
            err(std::io::Error::other(
                "cannot read /proc/sys/kernel/random/boot_id",
            ))
        })?;
        let records = Records {
            path: path.clone(),
            dir,
            boot_id,
            unwritable: Streak::new(throttle::WINDOW),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("group-records".into())
            .spawn(move || records.serve(rx))
            .map_err(err)?;
        Ok(Self { tx })
    }

    /// Records that `pgid`, the group the script `name` leads, started by the shim
    /// `shim_pid` for run `run_id`, is running; returns the leader's start time. A script
    /// that has already exited has nothing to record.
    pub async fn record(&self, name: &str, pgid: u32, shim_pid: u32, run_id: u64) -> Option<u64> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Record {
            name: name.to_owned(),
            pgid,
            shim_pid,
            run_id,
            reply,
        };
        self.tx.send(op).ok()?;
        rx.await.ok().flatten()
    }

    /// The script's run ended: its group is gone.
    pub async fn forget(&self, name: &str) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Forget(name.to_owned(), reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// At startup, before any script runs: SIGKILLs every recorded group that still has
    /// processes of ours (left by a daemon and shims that were killed together), logs what it
    /// did and what it refused to do, and clears the records.
    pub async fn sweep(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Sweep(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Records {
    /// Serves requests until every [`GroupRecords`] is dropped.
    fn serve(mut self, rx: std::sync::mpsc::Receiver<Op>) {
        for op in rx {
            match op {
                Op::Record {
                    name,
                    pgid,
                    shim_pid,
                    run_id,
                    reply,
                } => {
                    let _ = reply.send(self.record(&name, pgid, shim_pid, run_id));
                }
                Op::Forget(name, reply) => {
                    if let Err(e) = self.remove(&name) {
                        tracing::warn!(
                            script = %name,
                            "cannot remove the process group record: {e}"
                        );
                    }
                    let _ = reply.send(());
                }
                Op::Sweep(reply) => {
                    self.sweep();
                    let _ = reply.send(());
                }
            }
        }
    }

    fn record(&mut self, name: &str, pgid: u32, shim_pid: u32, run_id: u64) -> Option<u64> {
        let start = procfs::proc_stat(pgid)?.start;
        let shim_start = procfs::proc_stat(shim_pid).map_or(0, |s| s.start);
        let rec = GroupRecord {
            pgid,
            start,
            boot_id: self.boot_id.clone(),
            shim_pid,
            shim_start,
            run_id,
        };
        let written = self.write(name, &rec.to_line());
        self.note(name, pgid, written);
        Some(start)
    }

    /// Logs a failed write of a record once, then a count at most once a minute (a fast
    /// periodic script on a full `state_dir` fails at every run), and that records are
    /// written again after a success.
    fn note(&mut self, name: &str, pgid: u32, written: std::io::Result<()>) {
        let dir = self.path.display();
        match written {
            Ok(()) => {
                if let Some(failed) = self.unwritable.succeeded() {
                    tracing::info!(
                        "process groups are recorded again in {dir} ({failed} more failed since \
                         the last report)"
                    );
                }
            }
            Err(e) => match self.unwritable.failed(Instant::now()) {
                None => {}
                Some(Failure::First) => tracing::warn!(
                    script = name,
                    "cannot record process group {pgid} in {}: {e}; a daemon started after a \
                     crash could not sweep what the run leaves behind (further failures are \
                     counted once a minute)",
                    self.path.join(name).display()
                ),
                Some(Failure::Summary { failed }) => tracing::warn!(
                    "still cannot record process groups in {dir}: {failed} failed since the \
                     last report (last: {e})"
                ),
            },
        }
    }

    /// Writes `NAME` by a fresh temp file (created exclusively: never a planted one) renamed
    /// over it.
    fn write(&self, name: &str, text: &str) -> std::io::Result<()> {
        let tmp = format!(".{name}.tmp");
        match unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io(e)),
        }
        let fd = openat(
            &self.dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io)?;
        std::fs::File::from(fd).write_all(text.as_bytes())?;
        renameat(&self.dir, tmp.as_str(), &self.dir, name).map_err(io)
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        match unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Reads a record: a regular file, not followed if a symlink, bounded.
    fn read(&self, name: &str) -> std::io::Result<String> {
        let fd = openat(
            &self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let st = fstat(&fd).map_err(io)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_RECORD)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    fn names(&self) -> std::io::Result<Vec<String>> {
        let mut dir = nix::dir::Dir::openat(
            &self.dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sweep(&self) {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.path.display());
                return;
            }
        };
        if names.is_empty() {
            return;
        }
        let procs = procfs::all_proc_stats();
        let own_pgid = u32::try_from(nix::unistd::getpgrp().as_raw()).unwrap_or(0);
        let sys = System {
            boot_id: &self.boot_id,
            own_pgid,
            procs: &procs,
            environ_has: &procfs::environ_has,
        };
        for name in names {
            // A temp file of a write cut short.
            if name.starts_with('.') {
                let _ = self.remove(&name);
                continue;
            }
            let file = self.path.join(&name);
            let verdict = match self.read(&name) {
                Ok(text) => match GroupRecord::parse(&text) {
                    Some(rec) => (Some(rec.pgid), judge(&name, &rec, &sys)),
                    None => (None, Verdict::Refused(Refusal::Unreadable)),
                },
                Err(e) => {
                    tracing::warn!(
                        script = %name,
                        "not reading {}: {e}; removing it, nothing signalled",
                        file.display()
                    );
                    (None, Verdict::Refused(Refusal::Unreadable))
                }
            };
            match verdict {
                (Some(pgid), Verdict::Kill { members }) => {
                    super::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    tracing::warn!(
                        script = %name,
                        "killed process group {pgid} ({members} process{}) left behind by a \
                         previous daemon",
                        if members == 1 { "" } else { "es" }
                    );
                }
                (_, Verdict::Refused(why)) => tracing::warn!(
                    script = %name,
                    "not signalling the process group recorded in {}: {why}",
                    file.display()
                ),
                (_, Verdict::OtherBoot) => tracing::info!(
                    script = %name,
                    "{} is from an earlier boot: nothing of it runs",
                    file.display()
                ),
                _ => {}
            }
            if let Err(e) = self.remove(&name) {
                tracing::warn!("cannot remove {}: {e}", file.display());
            }
        }
    }
}

/// After a run's shim exited: SIGKILLs what is left of the group `pgid` (leader started at
/// `start`). A shim that exits on its own has emptied the group; one that was killed could
/// not. Returns how many processes were left. Reads `/proc` on a blocking thread.
pub async fn kill_leftovers(pgid: u32, start: u64) -> usize {
    let Ok(raw) = i32::try_from(pgid) else {
        return 0;
    };
    if raw <= 1 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(-raw), None).is_err() {
        return 0; // the usual case: nothing left, no /proc scan
    }
    tokio::task::spawn_blocking(move || {
        let n = leftover_members(&procfs::all_proc_stats(), pgid, start);
        if n > 0 {
            super::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        n
    })
    .await
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_record_starts_a_streak_that_the_next_written_one_ends() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir_path = state.path().join("groups");
        std::fs::create_dir(&dir_path).expect("groups dir");
        let dir = nix::fcntl::open(
            &dir_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open groups dir");
        let mut records = Records {
            path: dir_path.clone(),
            dir,
            boot_id: "boot".into(),
            unwritable: Streak::new(throttle::WINDOW),
        };
        let me = std::process::id();
        // A directory where the temp file goes: the write fails (as on a full disk).
        let blocker = dir_path.join(".job.tmp");
        std::fs::create_dir(&blocker).expect("blocker");
        for run in 1..=3 {
            assert!(records.record("job", me, me, run).is_some());
            assert!(records.unwritable.is_failing(), "run {run}");
        }
        assert!(!dir_path.join("job").exists());
        std::fs::remove_dir(&blocker).expect("unblock");
        assert!(records.record("job", me, me, 4).is_some());
        assert!(
            !records.unwritable.is_failing(),
            "a written record ends the streak"
        );
        let text = std::fs::read_to_string(dir_path.join("job")).expect("record");
        assert_eq!(
            GroupRecord::parse(&text).map(|r| r.run_id),
            Some(4),
            "{text}"
        );
    }
}
