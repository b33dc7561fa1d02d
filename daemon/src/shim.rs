//! The process-group shim: `scriptd-shim __shim SIGNAL GRACE_MS DEATH_FD REPORT_FD TOKEN
//! NOFILE IDS UMASK LIMITS -- PROGRAM ARGS...` (or the daemon's own binary in this hidden
//! mode, when `scriptd-shim` is not installed next to it).
//!
//! The daemon never spawns a script directly. It spawns the shim, a single-threaded process
//! that waits on one `poll` for both the script's exit and the daemon's death, and:
//! - names itself `shim:SCRIPT` (comm), so `pkill scriptd` / `pgrep -x scriptd` find the
//!   daemon only;
//! - starts the script as the leader of a new process group (the group the daemon signals),
//!   with PR_SET_PDEATHSIG(SIGKILL): should the shim itself be killed, the script dies with
//!   it (what the script forked is swept by the next daemon start, see
//!   [`crate::process::GroupRecords`]);
//! - reports the script's pid, or why it could not be started, in one datagram
//!   `TOKEN ok PID` / `TOKEN err MESSAGE` on the report socket every shim shares
//!   (`REPORT_FD`, see [`crate::process::Shims`]);
//! - sets the soft descriptor limit (`RLIMIT_NOFILE`) the script starts with to `NOFILE`,
//!   the one the daemon was started with (the daemon raised its own; `-` keeps it), so a
//!   program that uses `select()` is not handed descriptors past 1,023;
//! - starts the script with the script's `limits` (`LIMITS`, `setrlimit`), `umask` (`UMASK`)
//!   and as its `user`/`group` (`IDS`): in the forked child, in that order, just before
//!   exec: setrlimit, umask, setgroups (the user's groups from the group database, looked
//!   up by the shim at each start, as `initgroups(3)` would), setgid, setuid, each checked
//!   to have taken. The shim itself stays root, so it can still stop the group and report;
//!   `HOME`, `USER`, `LOGNAME` and `SHELL` come from the user's entry when the daemon left
//!   them out, which it does unless the script's `env` sets them (`shim/exec_context.rs`);
//! - becomes a child subreaper, so the script's orphaned children are reaped, not zombies;
//! - watches the read end of a pipe whose write end only the daemon holds (`DEATH_FD`): when
//!   the daemon dies, even by `kill -9`, the read returns EOF and the shim stops the whole
//!   group (stop signal, then SIGKILL after the grace). PR_SET_PDEATHSIG alone would reach
//!   only the direct child and is cleared on fork;
//! - when the script exits, stops whatever it left behind in its group, then exits with the
//!   script's status (re-raising its signal) so the daemon sees the real outcome.
//!
//! The script inherits the shim's stdin, stdout and stderr, and no other descriptor.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, raise, signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod exec_context;

pub use exec_context::exec_args;
use exec_context::ExecArgs;

/// First argument that selects shim mode.
pub const ARG: &str = "__shim";
/// The largest report sent (a longer message is cut).
const MAX_REPORT: usize = crate::process::shims::MAX_REPORT;

/// Sends the one report of this shim.
fn report(socket: &UnixDatagram, token: u64, what: &str) {
    let mut msg = format!("{token} {what}").into_bytes();
    msg.truncate(MAX_REPORT);
    // Blocks while the daemon's queue is full; fails only once the daemon is gone.
    let _ = socket.send(&msg);
}

/// Runs the shim with the arguments after [`ARG`]. Never returns normally when the script is
/// killed by a signal: the shim re-raises it.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let Parsed {
        stop,
        grace,
        death_fd,
        report_fd,
        token,
        nofile,
        exec,
        argv,
    } = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            // No report socket to use: the script's stderr is the shim's.
            eprintln!("scriptd-shim: {e}");
            return ExitCode::from(127);
        }
    };
    // SAFETY: the daemon started us with these two descriptors open (numbers from our
    // arguments, checked above 2); nothing else in this process owns them.
    let (death, socket) = unsafe {
        (
            OwnedFd::from_raw_fd(death_fd),
            UnixDatagram::from_raw_fd(report_fd),
        )
    };
    for fd in [death.as_fd(), socket.as_fd()] {
        // The script must not inherit them.
        if let Err(e) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            report(
                &socket,
                token,
                &format!("err cannot set close-on-exec: {e}"),
            );
            return ExitCode::from(127);
        }
    }
    set_name(&std::env::var("SCRIPTD_SCRIPT").unwrap_or_default());
    if let Some(soft) = nofile {
        if let Err(e) = set_soft_nofile(soft) {
            report(
                &socket,
                token,
                &format!(
                    "err cannot set the script's descriptor limit (RLIMIT_NOFILE) to {soft}: {e}"
                ),
            );
            return ExitCode::from(127);
        }
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        report(
            &socket,
            token,
            &format!("err cannot become a subreaper: {e}"),
        );
        return ExitCode::from(127);
    }

    // SIGCHLD is read from a signalfd: blocked from now on, so none is lost (the script
    // starts with an empty signal mask: std resets it in the child).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sigchld = match mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC))
    {
        Ok(fd) => fd,
        Err(e) => {
            report(
                &socket,
                token,
                &format!("err cannot wait for the script: {e}"),
            );
            return ExitCode::from(127);
        }
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).process_group(0);
    let in_child = match exec.prepare(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            report(&socket, token, &format!("err {e}"));
            return ExitCode::from(127);
        }
    };
    let shim_pid = nix::unistd::getpid();
    // SAFETY: only async-signal-safe calls (setrlimit, umask, setgroups, setgid, setuid,
    // their getters, prctl, getppid) between fork and exec; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            in_child.apply()?;
            // After the credentials change, which clears it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The shim died before the line above: no signal will come, so stop here.
            if nix::unistd::getppid() != shim_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let program = argv[0].to_string_lossy();
            let how = exec.describe();
            report(
                &socket,
                token,
                &format!("err cannot execute {program}{how}: {e}"),
            );
            return ExitCode::from(127);
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    report(&socket, token, &format!("ok {pid}"));
    drop(socket);
    // The std handle is not used to wait: waitpid(-1) reaps the script and adopted orphans
    // alike.
    drop(child);

    let status = supervise(pid, stop, grace, &sigchld, death);
    // Whatever the script left in its group gets the same treatment as a stop.
    if kill(Pid::from_raw(-pid.as_raw()), None).is_ok() {
        stop_group(pid, stop, grace);
    }
    reap_all(Instant::now() + Duration::from_millis(200));
    exit_like(status)
}

/// One thread waits for everything: the script's exit (SIGCHLD, through a signalfd) and the
/// daemon's death (EOF on the liveness pipe), after which the group gets `stop`, then SIGKILL
/// once `grace` has passed. Returns the script's status.
fn supervise(
    script: Pid,
    stop: Signal,
    grace: Duration,
    sigchld: &SignalFd,
    death: OwnedFd,
) -> WaitStatus {
    let group = Pid::from_raw(-script.as_raw());
    let mut daemon_alive = true;
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(status) = reap_until(script) {
            return status;
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            let _ = kill(group, Signal::SIGKILL);
            kill_at = None;
        }
        let timeout = kill_at.map_or(PollTimeout::NONE, |at| {
            let left = at.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(left.saturating_add(1)).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(sigchld.as_fd(), PollFlags::POLLIN)];
        if daemon_alive {
            fds.push(PollFd::new(death.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return WaitStatus::Exited(script, 127),
        }
        let death_ready = daemon_alive
            && fds
                .get(1)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty());
        while matches!(sigchld.read_signal(), Ok(Some(_))) {}
        if death_ready {
            let mut buf = [0u8; 64];
            // 0 (EOF) only when every write end is closed: the daemon is gone.
            if matches!(nix::unistd::read(&death, &mut buf), Ok(0) | Err(_)) {
                daemon_alive = false;
                if kill(group, stop).is_ok() {
                    // A grace past the clock's range waits as long as the group lives.
                    kill_at = Instant::now().checked_add(grace).or(Some(far_future()));
                }
            }
        }
    }
}

/// A time no grace reaches.
fn far_future() -> Instant {
    let mut at = Instant::now();
    for years in [100u64, 10, 1] {
        if let Some(t) = at.checked_add(Duration::from_secs(years * 365 * 24 * 3600)) {
            at = t;
        }
    }
    at
}

/// Reaps whatever has exited; the script's status once it is among them.
fn reap_until(script: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(s) if s.pid() == Some(script) => return Some(s),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // ECHILD: the script is gone without a status we could read.
            Err(_) => return Some(WaitStatus::Exited(script, 127)),
        }
    }
}

/// The `NOFILE` argument: the soft descriptor limit for the script, or `-` to keep the
/// daemon's.
pub fn nofile_arg(soft: Option<u64>) -> String {
    soft.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Sets the soft descriptor limit, which the script inherits, to `soft` (at most the hard
/// limit, which stays).
fn set_soft_nofile(soft: u64) -> nix::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (current, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let soft = soft.min(hard);
    if soft == current {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)
}

/// Sets the thread's (and so the process's) comm to `shim:NAME`, cut to the kernel's 15
/// bytes.
fn set_name(script: &str) {
    let prefix = crate::process::procfs::SHIM_COMM_PREFIX;
    let mut name = format!("{prefix}{script}").into_bytes();
    name.truncate(15);
    name.retain(|&b| b != 0);
    if let Ok(name) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

/// The shim's arguments.
#[derive(Debug, PartialEq)]
struct Parsed {
    stop: Signal,
    grace: Duration,
    /// The inherited read end of the daemon's liveness pipe.
    death_fd: i32,
    /// The inherited report socket.
    report_fd: i32,
    /// What the report starts with: which spawn it answers.
    token: u64,
    /// The script's soft descriptor limit (`None`: the shim's own).
    nofile: Option<u64>,
    /// Its user and group, umask and limits.
    exec: ExecArgs,
    argv: Vec<OsString>,
}

fn parse(args: &[OsString]) -> Result<Parsed, String> {
    let usage = "usage: scriptd-shim __shim SIGNUM GRACE_MS DEATH_FD REPORT_FD TOKEN NOFILE \
                 IDS UMASK LIMITS -- PROGRAM [ARGS...] (started by scriptd, not by hand)";
    let [sig, grace, death, report, token, nofile, ids, umask, limits, sep, argv @ ..] = args
    else {
        return Err(usage.into());
    };
    if sep != "--" || argv.is_empty() {
        return Err(usage.into());
    }
    let number = |s: &OsString| s.to_str().and_then(|s| s.parse::<u64>().ok()).ok_or(usage);
    let fd = |s: &OsString| {
        i32::try_from(number(s)?)
            .ok()
            .filter(|&fd| fd > 2)
            .ok_or(usage)
    };
    let sig = i32::try_from(number(sig)?).map_err(|e| e.to_string())?;
    Ok(Parsed {
        stop: Signal::try_from(sig).map_err(|e| e.to_string())?,
        grace: Duration::from_millis(number(grace)?),
        death_fd: fd(death)?,
        report_fd: fd(report)?,
        token: number(token)?,
        nofile: if nofile == "-" {
            None
        } else {
            Some(number(nofile)?)
        },
        exec: match (ids.to_str(), umask.to_str(), limits.to_str()) {
            (Some(ids), Some(umask), Some(limits)) => {
                ExecArgs::parse(ids, umask, limits).map_err(|e| format!("{e}; {usage}"))?
            }
            _ => return Err(usage.into()),
        },
        argv: argv.to_vec(),
    })
}

/// Signals the group, waits up to `grace` for it to empty, then SIGKILLs it, reaping dead
/// children while waiting: an unreaped zombie still counts as a member of the group, so
/// without it a group whose processes all died would be waited on for the whole grace.
fn stop_group(pgid: Pid, stop: Signal, grace: Duration) {
    let group = Pid::from_raw(-pgid.as_raw());
    if kill(group, stop).is_err() {
        return;
    }
    // A grace past the clock's range waits as long as the group lives.
    let deadline = Instant::now().checked_add(grace);
    while deadline.is_none_or(|d| Instant::now() < d) {
        while matches!(
            waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)),
            Ok(s) if s != WaitStatus::StillAlive
        ) {}
        if kill(group, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(group, Signal::SIGKILL);
}

/// Reaps adopted orphans until none is left or the deadline passes.
fn reap_all(deadline: Instant) {
    while Instant::now() < deadline {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => {}
            Err(_) => return, // ECHILD: nothing left
        }
    }
}

fn exit_like(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(code as u8),
        WaitStatus::Signaled(_, sig, _) => {
            // No core file for the shim's own re-raise.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            // SAFETY: restoring the default disposition before re-raising.
            unsafe {
                let _ = signal(sig, SigHandler::SigDfl);
            }
            let _ = raise(sig);
            ExitCode::from(128 + sig as u8)
        }
        _ => ExitCode::from(127),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments() {
        let good = [
            "15", "2500", "11", "12", "7", "1024", "-", "-", "-", "--", "/bin/sh", "-c", "x",
        ];
        assert_eq!(
            parse(&args(&good)),
            Ok(Parsed {
                stop: Signal::SIGTERM,
                grace: Duration::from_millis(2500),
                death_fd: 11,
                report_fd: 12,
                token: 7,
                nofile: Some(1024),
                exec: ExecArgs::parse("-", "-", "-").expect("no exec context"),
                argv: args(&["/bin/sh", "-c", "x"]),
            })
        );
        let with = |i: usize, value: &'static str| {
            let mut a = good.to_vec();
            a[i] = value;
            a
        };
        assert_eq!(parse(&args(&with(5, "-"))).map(|p| p.nofile), Ok(None));
        let exec = parse(&args(&with(6, "33:33"))).map(|p| p.exec.describe());
        assert_eq!(exec.as_deref(), Ok(" as uid 33 gid 33"));
        assert_eq!(nofile_arg(Some(1024)), "1024");
        assert_eq!(nofile_arg(None), "-");
        let mut bad = vec![
            good[..4]
                .iter()
                .chain(&good[5..])
                .copied()
                .collect::<Vec<_>>(), // no token
            good.iter().filter(|a| **a != "--").copied().collect(),
            good[..10].to_vec(), // no program
        ];
        for (i, value) in [
            (2, "1"),
            (3, "2"),
            (0, "99"),
            (1, "-1"),
            (4, "x"),
            (5, "many"),
            (5, "-5"),
            (6, "alice"),
            (7, "9"),
            (8, "files=1"),
        ] {
            bad.push(with(i, value));
        }
        for bad in bad {
            assert!(parse(&args(&bad)).is_err(), "{bad:?}");
        }
    }
}
