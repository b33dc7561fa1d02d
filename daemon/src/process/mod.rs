//! The processes the daemon starts: each run goes through a shim that leads the script's
//! process group ([`spawn`](mod@spawn)), every shim shares a liveness pipe and a report socket
//! with the daemon and is reaped by pid ([`shims`]), and the groups of running scripts are
//! recorded so that a daemon started after a crash can sweep away what a dead shim left
//! behind ([`groups`], judged by [`group_record`]), from what `/proc` says ([`procfs`]).

pub mod group_record;
pub mod groups;
pub mod procfs;
pub mod shims;
pub mod spawn;

pub use groups::{kill_leftovers, GroupRecords};
pub use shims::{ShimExit, Shims};
pub use spawn::{spawn, SpawnError, Spawned};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Sends `signal` to the process group `pgid`; a group already gone is not an error.
/// Group 1 and below (`kill(-1)` is every process) and the daemon's own group are never
/// signalled.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw <= 1 || raw == nix::unistd::getpgrp().as_raw() {
        tracing::error!("refusing to send {signal} to process group {pgid}");
        return;
    }
    let _ = kill(Pid::from_raw(-raw), signal);
}

/// Signal from its Linux number.
pub fn signal_from(number: i32) -> Signal {
    Signal::try_from(number).unwrap_or(Signal::SIGTERM)
}
