//! Spawning a script through the shim, signalling its process group, and recording the
//! groups of running scripts so that a daemon started after a crash can sweep away what a
//! dead shim left behind.

use crate::shim;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scriptd_common::config::ScriptConfig;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The daemon could not create pipes or fork.
    #[error("cannot start the shim: {0}")]
    Io(#[from] std::io::Error),
    /// The shim could not execute the program.
    #[error("{0}")]
    Exec(String),
}

/// The pipe whose write end only the daemon holds: every shim reads the other end and stops
/// its script when it sees EOF, i.e. when the daemon is gone, however it died.
#[derive(Debug)]
pub struct DeathPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl DeathPipe {
    /// Creates the pipe, both ends numbered 10 or above; the write end is close-on-exec, the
    /// read end is inherited by every process the daemon starts (only shims: each passes it
    /// on to nobody), so that no code has to run between fork and exec and the shim can be
    /// started with `posix_spawn`, without copying the daemon's address space.
    pub fn new() -> std::io::Result<Self> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let read = high_fd(r)?;
        // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
        if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            read,
            _write: high_fd(w)?,
        })
    }
}

fn high_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd returns a new fd we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a freshly created fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A started run.
pub struct Spawned {
    /// The shim; waiting on it yields the script's exit status.
    pub shim: Child,
    /// Pid of the script, which is also its process group id.
    pub pid: u32,
    /// The script's stdout.
    pub stdout: ChildStdout,
    /// The script's stderr.
    pub stderr: ChildStderr,
}

/// The shim to start: `scriptd-shim` next to the daemon's binary (or in
/// `../libexec/scriptd/`, where packages put helpers), else the daemon's own binary, which
/// has the shim built in (by its path, or by `/proc/self/exe` once an upgrade replaced the
/// file).
fn shim_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let Ok(exe) = std::env::current_exe() else {
            return PathBuf::from("/proc/self/exe");
        };
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        [
            dir.join("scriptd-shim"),
            dir.join("../libexec/scriptd/scriptd-shim"),
        ]
        .into_iter()
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            if exe.exists() {
                exe
            } else {
                PathBuf::from("/proc/self/exe")
            }
        })
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `cfg` through the shim; returns once the program is executing (or failed to).
pub async fn spawn(
    name: &str,
    run_id: u64,
    cfg: &ScriptConfig,
    death: &DeathPipe,
) -> Result<Spawned, SpawnError> {
    let exe = shim_program();
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let death_fd: RawFd = death.read.as_raw_fd();

    let grace_ms = u64::try_from(cfg.stop_grace.as_millis()).unwrap_or(u64::MAX);
    let mut cmd = tokio::process::Command::new(exe);
    // argv[0] and (set by the shim itself) comm differ from the daemon's: `pkill scriptd`,
    // `pgrep -x scriptd` and `pidof scriptd` find the daemon, not a hundred shims.
    cmd.arg0(format!("scriptd-shim {name}"))
        .arg(shim::ARG)
        .arg(cfg.stop_signal.number().to_string())
        .arg(grace_ms.to_string())
        .arg(death_fd.to_string())
        .arg("--")
        .args(cfg.argv())
        .current_dir(&cfg.working_dir)
        // For the daemon only: a script must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET")
        .envs(&cfg.env)
        .env("SCRIPTD_SCRIPT", name)
        .env("SCRIPTD_RUN_ID", run_id.to_string())
        // The shim reports on its stdin (the script's is /dev/null): stdio is the only
        // descriptor `posix_spawn` can place without code running in the child.
        .stdin(Stdio::from(report_w))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let started = std::time::Instant::now();
    // Dropped with `cmd` once spawned: only the shim holds the write end, EOF once it reported.
    let spawned = cmd.spawn();
    drop(cmd);
    let mut shim = spawned?;
    let exec = started.elapsed();
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(report_r)?;
    let mut text = String::new();
    reader.read_to_string(&mut text).await?;
    tracing::debug!(
        script = name,
        "shim started in {exec:?}, the script {:?} later",
        started.elapsed() - exec
    );
    let line = text.trim();
    let pid = match line.strip_prefix("ok ").and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid,
        None => {
            let _ = shim.wait().await;
            let msg = line.strip_prefix("err ").unwrap_or(line);
            return Err(SpawnError::Exec(if msg.is_empty() {
                "the shim exited without reporting".into()
            } else {
                msg.to_owned()
            }));
        }
    };
    let (Some(stdout), Some(stderr)) = (shim.stdout.take(), shim.stderr.take()) else {
        return Err(SpawnError::Exec("stdio pipes missing".into()));
    };
    Ok(Spawned {
        shim,
        pid,
        stdout,
        stderr,
    })
}

/// Sends `signal` to the process group `pgid`; a group already gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid) {
        if raw > 0 {
            let _ = kill(Pid::from_raw(-raw), signal);
        }
    }
}

/// Signal from its Linux number.
pub fn signal_from(number: i32) -> Signal {
    Signal::try_from(number).unwrap_or(Signal::SIGTERM)
}

/// The process groups of running scripts, one file per script under
/// `state_dir/groups/NAME`: `PGID START` (the leader's start time in clock ticks since
/// boot, from `/proc/PGID/stat`, which tells the recorded process from a later one that got
/// the same pid). Written when a run starts, removed when it ends; what is left after a crash
/// is swept at the next start.
#[derive(Debug)]
pub struct GroupRecords {
    dir: PathBuf,
}

impl GroupRecords {
    /// Uses (and creates) `state_dir/groups`.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("groups");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Records that `pgid`, the group the script `name` leads, is running; returns the
    /// leader's start time. A script that has already exited has nothing to record.
    pub fn record(&self, name: &str, pgid: u32) -> Option<u64> {
        let start = proc_stat(pgid)?.start;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = std::fs::write(&tmp, format!("{pgid} {start}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(
                script = name,
                "cannot record process group {pgid} in {}: {e}",
                path.display()
            );
        }
        Some(start)
    }

    /// The script's run ended: its group is gone.
    pub fn forget(&self, name: &str) {
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(script = name, "cannot remove the process group record: {e}");
            }
            _ => {}
        }
    }

    /// At startup, before any script runs: SIGKILLs every recorded group that still has
    /// members (left by a daemon and shims that were killed together), and clears the
    /// records. Returns the groups killed, as (script, pgid, processes).
    pub fn sweep(&self) -> Vec<(String, u32, usize)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        // (file, script, recorded group and leader start time)
        let records: Vec<(PathBuf, String, Option<Recorded>)> = entries
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let parsed = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| parse_record(&t));
                (e.path(), name, parsed)
            })
            .collect();
        let mut killed = Vec::new();
        if records.iter().any(|(_, _, r)| r.is_some()) {
            let procs = all_proc_stats();
            for (_, name, record) in &records {
                let Some((pgid, start)) = *record else {
                    continue;
                };
                let members = leftover_members(&procs, pgid, start);
                if members > 0 {
                    signal_group(pgid, Signal::SIGKILL);
                    killed.push((name.clone(), pgid, members));
                }
            }
        }
        for (path, _, _) in &records {
            let _ = std::fs::remove_file(path);
        }
        killed
    }
}

/// A recorded group: its id and its leader's start time.
type Recorded = (u32, u64);

/// After a run's shim exited: SIGKILLs what is left of the group `pgid` (leader started at
/// `start`). A shim that exits on its own has emptied the group; one that was killed could
/// not. Returns how many processes were left.
pub fn kill_leftovers(pgid: u32, start: u64) -> usize {
    let Ok(raw) = i32::try_from(pgid) else {
        return 0;
    };
    if raw <= 0 || kill(Pid::from_raw(-raw), None).is_err() {
        return 0; // the usual case: nothing left, no /proc scan
    }
    let n = leftover_members(&all_proc_stats(), pgid, start);
    if n > 0 {
        signal_group(pgid, Signal::SIGKILL);
    }
    n
}

fn parse_record(text: &str) -> Option<Recorded> {
    let mut it = text.split_whitespace();
    let pgid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pgid, start))
}

/// What the sweep needs of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Dead, not reaped yet: nothing to kill.
    zombie: bool,
    pgrp: u32,
    /// Start time, clock ticks after boot.
    start: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold anything: fields start after the
    // last ')'. Then: state ppid pgrp session ... with starttime the 20th.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some(ProcStat {
        zombie: *fields.first()? == "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn all_proc_stats() -> HashMap<u32, ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// How many processes are left of the group `pgid` recorded with leader start time
/// `start`. The leader still running is ours only if it started at that time (its pid was
/// not reused); with the leader gone, the processes still in the group are its remnants
/// (Linux does not hand out a pid that is still some group's id), started after it.
fn leftover_members(procs: &HashMap<u32, ProcStat>, pgid: u32, start: u64) -> usize {
    if procs.get(&pgid).is_some_and(|leader| leader.start != start) {
        return 0; // the pid now belongs to another process
    }
    procs
        .values()
        .filter(|p| p.pgrp == pgid && p.start >= start && !p.zombie)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_parentheses() {
        let line = "4242 (a) (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                zombie: false,
                pgrp: 4242,
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let own = proc_stat(std::process::id()).expect("own /proc stat");
        assert!(own.start > 0);
    }

    #[test]
    fn leftovers_only_of_the_recorded_group() {
        let p = |pgrp, start| ProcStat {
            zombie: false,
            pgrp,
            start,
        };
        let procs: HashMap<u32, ProcStat> = [
            (100, p(100, 50)), // leader, recorded at 50
            (101, p(100, 60)), // its child
            (200, p(300, 10)), // unrelated
        ]
        .into();
        assert_eq!(leftover_members(&procs, 100, 50), 2);
        // Recorded at another start time: pid 100 was reused, leave it alone.
        assert_eq!(leftover_members(&procs, 100, 40), 0);
        // Leader gone, a child left in its group (and a zombie, which counts for nothing).
        let zombie = ProcStat {
            zombie: true,
            ..p(100, 70)
        };
        let orphaned: HashMap<u32, ProcStat> =
            [(101, p(100, 60)), (102, zombie), (200, p(300, 10))].into();
        assert_eq!(leftover_members(&orphaned, 100, 50), 1);
        // Nothing left.
        assert_eq!(leftover_members(&orphaned, 300, 50), 0);
        assert_eq!(parse_record("100 50\n"), Some((100, 50)));
        assert_eq!(parse_record("100"), None);
    }
}
