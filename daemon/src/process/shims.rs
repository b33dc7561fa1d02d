//! What the daemon shares with every shim, and how it learns what became of one, with no
//! descriptor per shim:
//!
//! - the liveness pipe: every shim inherits the read end, only the daemon holds the write end,
//!   so every shim sees EOF when the daemon is gone, however it died;
//! - the report socket: every shim inherits one end of a datagram socket pair and sends one
//!   datagram on it, `TOKEN ok PID` once its script runs or `TOKEN err MESSAGE`; the daemon
//!   reads the other end;
//! - the reaper: shims are reaped on SIGCHLD by pid (not with a pidfd each);
//! - the soft descriptor limit every shim sets for its script: the one the daemon was
//!   started with (see [`crate::rlimit`]);
//! - the start gate: at most [`STARTS_IN_FLIGHT`] shims being started at once, the other
//!   starts waiting their turn in order, so a start storm (10,000 scripts at startup, a
//!   reload adding thousands) does not fill the runtime's queue and `ctl` keeps answering.
//!
//! A shim reports before it exits, so a report is always delivered before the exit of the
//! shim that sent it: every exit seen is held back until the reports queued so far have been
//! read.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

/// The largest report a shim sends (longer messages are cut).
pub const MAX_REPORT: usize = 2048;

/// Most shims being started at once (from `posix_spawn` to the shim's report): enough to
/// keep two cores busy with the shims' and the scripts' `exec`s, few enough that the
/// runtime's queue holds a few dozen starts and not thousands. At startup with 10,000
/// periodic scripts, the first `ctl status` waited for every first run without it
/// (BENCHMARKS.md, "Scale").
pub const STARTS_IN_FLIGHT: usize = 32;

/// How a shim ended: the script's exit, which the shim repeats as its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ShimExit {
    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Code(c) => Some(c),
            Self::Signal(_) => None,
        }
    }

    /// The signal, if it was killed by one.
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal(s) => Some(s),
        }
    }

    fn from_wait(status: WaitStatus) -> Option<(u32, Self)> {
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (pid, Self::Code(code)),
            WaitStatus::Signaled(pid, sig, _) => (pid, Self::Signal(sig as i32)),
            _ => return None,
        };
        Some((u32::try_from(pid.as_raw()).ok()?, exit))
    }
}

impl std::fmt::Display for ShimExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// What a shim reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The script runs with this pid (which is also its process group id).
    Running(u32),
    /// The script could not be started: the shim's message.
    Failed(String),
}

/// Parses one report datagram: `TOKEN ok PID` or `TOKEN err MESSAGE`.
pub fn parse_report(bytes: &[u8]) -> Option<(u64, Report)> {
    let text = String::from_utf8_lossy(bytes);
    let (token, rest) = text.trim_end().split_once(' ')?;
    let token = token.parse().ok()?;
    let report = match rest.split_once(' ').unwrap_or((rest, "")) {
        ("ok", pid) => Report::Running(pid.parse().ok().filter(|&p| p > 1)?),
        ("err", msg) => Report::Failed(msg.to_owned()),
        _ => return None,
    };
    Some((token, report))
}

/// The daemon is shutting down: no more starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuttingDown;

/// Who waits for what.
#[derive(Default)]
struct Waiting {
    /// Report awaited, by the token given to the shim.
    reports: HashMap<u64, oneshot::Sender<Report>>,
    /// Exit awaited, by the shim's pid.
    exits: HashMap<u32, oneshot::Sender<ShimExit>>,
}

/// The descriptors every shim shares and the bookkeeping of shims not yet reaped.
pub struct Shims {
    /// Read end of the liveness pipe, inherited by every shim.
    death_read: OwnedFd,
    /// Write end: only the daemon has it (close-on-exec).
    _death_write: OwnedFd,
    /// The shims' end of the report socket, inherited by every shim.
    report_send: UnixDatagram,
    /// The daemon's end (close-on-exec, non-blocking).
    report_recv: tokio::net::UnixDatagram,
    waiting: Mutex<Waiting>,
    next_token: AtomicU64,
    /// The soft `RLIMIT_NOFILE` scripts get (`None`: the daemon's own).
    script_nofile: Option<u64>,
    /// SIGCHLD, installed with the rest (a daemon that cannot see its shims exit must not
    /// start); taken by [`Shims::run`].
    sigchld: Mutex<Option<tokio::signal::unix::Signal>>,
    /// [`STARTS_IN_FLIGHT`] permits, taken in order.
    starts: Semaphore,
    /// The daemon is shutting down: starts still waiting for a turn give up.
    shutdown: CancellationToken,
}

/// Clears close-on-exec: every process the daemon starts (only shims, each of which sets it
/// again before starting its script) inherits `fd`.
fn inherited(fd: impl AsFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

impl Shims {
    /// Creates the liveness pipe and the report socket, and installs the SIGCHLD handler
    /// (must run inside the runtime). Scripts get `script_nofile` as their soft descriptor
    /// limit (`None`: the daemon's own); once `shutdown` is cancelled, starts waiting for
    /// their turn give up.
    pub fn new(script_nofile: Option<u64>, shutdown: CancellationToken) -> std::io::Result<Self> {
        let sigchld = signal(SignalKind::child())?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        inherited(&r)?;
        let (send, recv) = UnixDatagram::pair()?;
        inherited(&send)?;
        recv.set_nonblocking(true)?;
        Ok(Self {
            death_read: r,
            _death_write: w,
            report_send: send,
            report_recv: tokio::net::UnixDatagram::from_std(recv)?,
            waiting: Mutex::new(Waiting::default()),
            next_token: AtomicU64::new(1),
            script_nofile,
            sigchld: Mutex::new(Some(sigchld)),
            starts: Semaphore::new(STARTS_IN_FLIGHT),
            shutdown,
        })
    }

    /// A turn to start a shim, held until the shim reported (or failed to start): waited
    /// for in order (tokio's semaphore is fair) behind at most [`STARTS_IN_FLIGHT`] starts.
    /// `Err` once the daemon is shutting down: a SIGTERM during a start storm does not
    /// start the thousands still waiting only to stop them. The semaphore is never closed,
    /// so there is always a turn (`Ok(None)` would only mean an ungated start).
    pub async fn start_turn(&self) -> Result<Option<SemaphorePermit<'_>>, ShuttingDown> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(ShuttingDown),
            turn = self.starts.acquire() => Ok(turn.ok()),
        }
    }

    /// The descriptor numbers a shim inherits: (liveness pipe, report socket).
    pub fn inherited_fds(&self) -> (RawFd, RawFd) {
        (self.death_read.as_raw_fd(), self.report_send.as_raw_fd())
    }

    /// The soft descriptor limit scripts get (`None`: the daemon's own).
    pub fn script_nofile(&self) -> Option<u64> {
        self.script_nofile
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new token for a shim about to start, and the report it will send.
    pub fn expect_report(&self) -> (u64, oneshot::Receiver<Report>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().reports.insert(token, tx);
        (token, rx)
    }

    /// No report will come for `token` (the shim did not start, or exited without one).
    pub fn forget_report(&self, token: u64) {
        self.lock().reports.remove(&token);
    }

    /// The exit of the shim `pid`, just started. Checked at once too: it may have exited
    /// already, before the reaper knew it.
    pub fn watch_exit(&self, pid: u32) -> oneshot::Receiver<ShimExit> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        waiting.exits.insert(pid, tx);
        let exited = i32::try_from(pid).ok().and_then(|raw| {
            ShimExit::from_wait(waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)).ok()?)
        });
        if let Some((pid, exit)) = exited {
            self.deliver(&mut waiting, vec![(pid, exit)]);
        }
        rx
    }

    /// Reads every queued report, then hands out `exits` (whose reports, sent before they
    /// exited, are among those read).
    fn deliver(&self, waiting: &mut Waiting, exits: Vec<(u32, ShimExit)>) {
        let mut buf = [0u8; MAX_REPORT + 64];
        loop {
            // Read directly, whatever the reactor has seen so far.
            let got = nix::sys::socket::recv(
                self.report_recv.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from);
            match got {
                Ok(n) => match parse_report(&buf[..n]) {
                    Some((token, report)) => {
                        if let Some(tx) = waiting.reports.remove(&token) {
                            let _ = tx.send(report);
                        }
                    }
                    None => tracing::warn!(
                        "unreadable shim report: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::warn!("cannot read shim reports: {e}");
                    }
                    break;
                }
            }
        }
        for (pid, exit) in exits {
            if let Some(tx) = waiting.exits.remove(&pid) {
                let _ = tx.send(exit);
            }
        }
    }

    /// Reaps the shims that exited. The usual way costs one call per exit: peek at whichever
    /// child exited (`waitid` with `WNOWAIT`) and reap it if it is a shim. A child that is
    /// not a known shim (started by other code, or a shim whose exit is not watched yet) is
    /// left to its owner, and each watched shim is then checked by pid.
    fn reap(&self) {
        let mut waiting = self.lock();
        let mut exits = Vec::new();
        let mut scan = false;
        loop {
            let peek = waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            );
            let pid = match peek {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Ok(status) => status.pid(),
                Err(e) => {
                    tracing::warn!("waitid: {e}");
                    scan = true;
                    break;
                }
            };
            let ours = pid
                .and_then(|p| u32::try_from(p.as_raw()).ok())
                .filter(|p| waiting.exits.contains_key(p) && !exits.iter().any(|(q, _)| q == p));
            let Some(pid) = ours else {
                scan = true;
                break;
            };
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => exits.extend(ShimExit::from_wait(status)),
                Err(e) => {
                    tracing::warn!("waitpid({pid}): {e}");
                    scan = true;
                    break;
                }
            }
        }
        if scan {
            for &pid in waiting.exits.keys() {
                if exits.iter().any(|&(q, _)| q == pid) {
                    continue;
                }
                let status = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
                if let Ok(status) = status {
                    exits.extend(ShimExit::from_wait(status));
                }
            }
        }
        self.deliver(&mut waiting, exits);
    }

    /// Reads reports and reaps exited shims until `cancel` (the daemon's last step): one
    /// task for every shim.
    pub async fn run(&self, cancel: CancellationToken) {
        let taken = self
            .sigchld
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut sigchld) = taken else {
            tracing::error!("the shim reaper was started twice");
            return;
        };
        // A shim may have exited before the handler was installed.
        self.reap();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sigchld.recv() => self.reap(),
                ready = self.report_recv.readable() => match ready {
                    Ok(()) => {
                        // Readiness is cleared unless a datagram came in meanwhile.
                        let _ = self.report_recv.try_io(Interest::READABLE, || {
                            self.deliver(&mut self.lock(), Vec::new());
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                    }
                    Err(e) => {
                        tracing::error!("cannot wait for shim reports: {e}");
                        return;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};

    /// Polls `f` once: its output when it is ready now.
    fn now<F: Future>(f: Pin<&mut F>) -> Option<F::Output> {
        match f.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn starts_take_turns_in_the_order_they_asked() {
        let shutdown = CancellationToken::new();
        let shims = Shims::new(None, shutdown.clone()).expect("shims");
        let mut held: Vec<_> = (0..STARTS_IN_FLIGHT)
            .map(|_| {
                now(pin!(shims.start_turn()))
                    .and_then(Result::ok)
                    .flatten()
                    .expect("a turn at once")
            })
            .collect();
        let mut first = pin!(shims.start_turn());
        let mut second = pin!(shims.start_turn());
        let mut third = pin!(shims.start_turn());
        assert!(now(first.as_mut()).is_none(), "every turn is taken");
        assert!(now(second.as_mut()).is_none());
        assert!(now(third.as_mut()).is_none());
        // A turn given back goes to the first in line, not to whoever looks first.
        drop(held.pop());
        assert!(
            now(second.as_mut()).is_none(),
            "the second waits behind the first"
        );
        let turn = now(first.as_mut())
            .and_then(Result::ok)
            .flatten()
            .expect("the first gets the freed turn");
        drop(turn);
        let turn = now(second.as_mut()).and_then(Result::ok).flatten();
        assert!(turn.is_some(), "then the second");
        // Shutting down: whoever still waits for a turn gives up.
        shutdown.cancel();
        let gave_up = now(third.as_mut()).map(|r| r.map(drop));
        assert_eq!(gave_up, Some(Err(ShuttingDown)));
    }

    proptest::proptest! {
        #[test]
        fn what_a_shim_sends_is_what_the_daemon_reads(token: u64, pid in 2u32.., msg in "[^\n]{0,100}") {
            let ok = format!("{token} ok {pid}");
            proptest::prop_assert_eq!(parse_report(ok.as_bytes()), Some((token, Report::Running(pid))));
            let err = format!("{token} err {msg}");
            let want = Report::Failed(msg.trim_end().to_owned());
            proptest::prop_assert_eq!(parse_report(err.as_bytes()), Some((token, want)));
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_report(&bytes);
        }
    }

    #[test]
    fn reports() {
        let table: &[(&str, Option<(u64, Report)>)] = &[
            ("7 ok 4242", Some((7, Report::Running(4242)))),
            ("7 ok 4242\n", Some((7, Report::Running(4242)))),
            (
                "12 err cannot execute /x: No such file",
                Some((12, Report::Failed("cannot execute /x: No such file".into()))),
            ),
            ("12 err", Some((12, Report::Failed(String::new())))),
            // A pid that no script can have.
            ("7 ok 1", None),
            ("7 ok 0", None),
            ("7 ok -5", None),
            ("7 ok x", None),
            ("x ok 5", None),
            ("7 maybe 5", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(&parse_report(text.as_bytes()), want, "{text:?}");
        }
    }
}
