//! Starting a run: the shim, started with `posix_spawn` (std's `Command` without code to run
//! between fork and exec), leads the script's process group and reports on the shared report
//! socket. The daemon keeps two descriptors per running script: its stdout and stderr. A
//! start takes its turn at the shims' start gate first ([`Shims::start_turn`]).

use super::shims::{Report, ShimExit, Shims};
use crate::shim;
use scriptd_common::config::ScriptConfig;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// Why a run could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    /// The daemon has as many descriptors open as `RLIMIT_NOFILE` allows (`EMFILE`).
    #[error(
        "out of file descriptors: the daemon reached its RLIMIT_NOFILE (soft {soft}, hard \
         {hard}); raise the limit (LimitNOFILE= in the systemd unit, `ulimit -n` in a shell) \
         or run fewer scripts"
    )]
    ProcessDescriptors {
        /// The soft limit in force.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The system's file table is full (`ENFILE`).
    #[error(
        "the system is out of file descriptors (ENFILE: the kernel's file table, fs.file-max, \
         is full)"
    )]
    SystemDescriptors,
    /// The shim could not be started (pipes, `posix_spawn`).
    #[error("cannot start the shim {}: {source}", program.display())]
    Shim {
        /// The shim's path.
        program: PathBuf,
        /// What failed.
        source: Arc<std::io::Error>,
    },
    /// The shim started but could not start the script (its report).
    #[error("{0}")]
    Exec(String),
    /// The shim exited without saying whether the script started.
    #[error("the shim exited ({0}) before starting the script")]
    ShimExited(ShimExit),
    /// The daemon is shutting down: no shim reaper runs any more.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl SpawnError {
    /// True when the daemon or the system ran out of file descriptors.
    pub fn is_descriptor_limit(&self) -> bool {
        matches!(
            self,
            Self::ProcessDescriptors { .. } | Self::SystemDescriptors
        )
    }

    fn from_io(program: &Path, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE) => {
                let (soft, hard) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                        .unwrap_or((0, 0));
                Self::ProcessDescriptors { soft, hard }
            }
            Some(libc::ENFILE) => Self::SystemDescriptors,
            _ => Self::Shim {
                program: program.to_owned(),
                source: Arc::new(e),
            },
        }
    }
}

/// The variables a script with a `user` gets from that user's entry, not the daemon's
/// environment.
const USER_VARS: [&str; 4] = ["HOME", "USER", "LOGNAME", "SHELL"];

/// A started run.
pub struct Spawned {
    /// Pid of the shim.
    pub shim_pid: u32,
    /// Pid of the script, which is also its process group id.
    pub pid: u32,
    /// The script's stdout (read end).
    pub stdout: OwnedFd,
    /// The script's stderr (read end).
    pub stderr: OwnedFd,
    /// Resolves when the shim exits, with the script's status.
    pub exit: tokio::sync::oneshot::Receiver<ShimExit>,
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
    shims: &Shims,
) -> Result<Spawned, SpawnError> {
    // Until the shim reported: a start storm waits here, out of the runtime's queue.
    let _turn = shims
        .start_turn()
        .await
        .map_err(|_| SpawnError::ShuttingDown)?;
    let exe = shim_program();
    let (death_fd, report_fd) = shims.inherited_fds();
    let (token, report) = shims.expect_report();

    let grace_ms = u64::try_from(cfg.stop_grace.as_millis()).unwrap_or(u64::MAX);
    let [ids, umask, limits] = shim::exec_args(&cfg.exec);
    let mut cmd = Command::new(exe);
    // argv[0] and (set by the shim itself) comm differ from the daemon's: `pkill scriptd`,
    // `pgrep -x scriptd` and `pidof scriptd` find the daemon, not a hundred shims.
    std::os::unix::process::CommandExt::arg0(&mut cmd, format!("scriptd-shim {name}"));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg(shim::ARG)
        .arg(cfg.stop_signal.number().to_string())
        .arg(grace_ms.to_string())
        .arg(death_fd.to_string())
        .arg(report_fd.to_string())
        .arg(token.to_string())
        .arg(shim::nofile_arg(shims.script_nofile()))
        .args([ids, umask, limits])
        .arg("--")
        .args(cfg.argv())
        .current_dir(&cfg.working_dir)
        // For the daemon only: a script must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET");
    if cfg.exec.user.is_some() {
        // The shim sets the user's own (from the user database) unless `env` sets them.
        for var in USER_VARS.iter().filter(|v| !cfg.env.contains_key(**v)) {
            cmd.env_remove(var);
        }
    }
    cmd.envs(&cfg.env)
        .env("SCRIPTD_SCRIPT", name)
        .env("SCRIPTD_RUN_ID", run_id.to_string())
        // The script's stdin too (the shim passes it on).
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = std::time::Instant::now();
    // The pipes' write ends and /dev/null are closed here once the shim has them: `cmd` and
    // the `Child` hold nothing else.
    let spawned = cmd.spawn();
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            shims.forget_report(token);
            return Err(SpawnError::from_io(exe, e));
        }
    };
    let exec = started.elapsed();
    let shim_pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Dropping a std `Child` neither waits nor kills: the reaper reaps the shim by pid.
    drop(child);
    let mut exit = shims.watch_exit(shim_pid);
    // A shim reports before it exits, and its report is delivered first.
    let report = tokio::select! {
        biased;
        r = report => r.ok(),
        e = &mut exit => {
            shims.forget_report(token);
            return Err(match e {
                Ok(status) => SpawnError::ShimExited(status),
                Err(_) => SpawnError::ShuttingDown,
            });
        }
    };
    tracing::debug!(
        script = name,
        "shim started in {exec:?}, the script {:?} later",
        started.elapsed() - exec
    );
    let pid = match report {
        Some(Report::Running(pid)) => pid,
        Some(Report::Failed(msg)) => {
            return Err(SpawnError::Exec(if msg.is_empty() {
                "the shim could not start the script".into()
            } else {
                msg
            }))
        }
        None => return Err(SpawnError::ShuttingDown),
    };
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err(SpawnError::Exec("stdio pipes missing".into()));
    };
    Ok(Spawned {
        shim_pid,
        pid,
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit,
    })
}
