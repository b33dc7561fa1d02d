//! Spawning a script through the shim, and signalling its process group.

use crate::shim;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scriptd_common::config::ScriptConfig;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;
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
    /// Creates the pipe, both ends close-on-exec and numbered 10 or above so that moving the
    /// read end to fd 3 in a child cannot clobber anything.
    pub fn new() -> std::io::Result<Self> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        Ok(Self {
            read: high_fd(r)?,
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

/// Starts `cfg` through the shim; returns once the program is executing (or failed to).
pub async fn spawn(
    name: &str,
    run_id: u64,
    cfg: &ScriptConfig,
    death: &DeathPipe,
) -> Result<Spawned, SpawnError> {
    let exe = std::env::current_exe()?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let report_w = high_fd(report_w)?;
    let death_fd: RawFd = death.read.as_raw_fd();
    let report_fd: RawFd = report_w.as_raw_fd();

    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(shim::ARG)
        .arg(cfg.stop_signal.number().to_string())
        .arg(cfg.stop_grace.as_millis().to_string())
        .arg("--")
        .args(cfg.argv())
        .current_dir(&cfg.working_dir)
        .envs(&cfg.env)
        .env("SCRIPTD_SCRIPT", name)
        .env("SCRIPTD_RUN_ID", run_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(death_fd, shim::DEATH_FD) < 0
                || libc::dup2(report_fd, shim::REPORT_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(report_w); // only the shim holds the write end now: EOF once it reported
    let mut shim = spawned?;
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(report_r)?;
    let mut text = String::new();
    reader.read_to_string(&mut text).await?;
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
