//! `exec:` a command, healthy when it exits 0. It is started through the shim exactly as
//! the script's runs are ([`process::spawn`] with the script's config and the probe's
//! command): its own process group led by the command, whatever it forks stopped when it
//! exits, killed if the daemon dies, reaped by the shim reaper (no zombies), in the
//! script's `working_dir` with its `env` — and, once scripts can run as another user, as
//! that user, since that is decided where [`process::spawn`] starts the shim. Its output
//! never reaches the script's log: the first line is kept as the probe's message, the rest
//! is read and dropped (a chatty probe never blocks on a full pipe).

use super::Target;
use crate::process;
use nix::sys::signal::Signal;
use scriptd_common::config::{CommandSpec, ScriptConfig, StopSignal};
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Bytes of each stream kept for the message.
const KEPT: usize = 4096;

/// Runs `command` for `target` within `timeout`: `Ok(message)` on exit 0, `Err(Some(why))`
/// on any other end, `Err(None)` when it was killed at the timeout.
pub(super) async fn probe(
    target: &Target,
    command: &CommandSpec,
    timeout: Duration,
) -> Result<String, Option<String>> {
    let mut cfg = ScriptConfig::clone(&target.script);
    cfg.command = command.clone();
    // What the shim sends if the daemon dies meanwhile: a probe needs no grace.
    cfg.stop_signal = StopSignal::KILL;
    cfg.stop_grace = Duration::ZERO;
    let spawned = process::spawn(&target.name, target.run_id, &cfg, &target.shared.shims)
        .await
        .map_err(|e| Some(format!("cannot start the probe: {e}")))?;
    // Until its end is seen, dropping this (the time is up, or probing stopped) kills the
    // probe's group while its shim, which has not reaped the command, still holds it.
    let mut group = KillGroup(Some(spawned.pid));
    let output = async {
        let (out, err) = tokio::join!(first_line(spawned.stdout), first_line(spawned.stderr));
        if out.is_empty() {
            err
        } else {
            out
        }
    };
    let (exit, line) = tokio::join!(
        tokio::time::timeout(timeout, spawned.exit),
        tokio::time::timeout(timeout, output)
    );
    let exit = match exit {
        Err(_) => return Err(None),
        Ok(Err(_)) => return Err(Some("the daemon is shutting down".into())),
        Ok(Ok(exit)) => exit,
    };
    group.0 = None; // the shim has stopped the group and exited
    let line = line.unwrap_or_default();
    match (exit.code(), line.is_empty()) {
        (Some(0), true) => Ok("exit code 0".into()),
        (Some(0), false) => Ok(line),
        (_, true) => Err(Some(exit.to_string())),
        (_, false) => Err(Some(format!("{exit}: {line}"))),
    }
}

/// SIGKILL to the probe's process group on drop, unless its end was seen.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            process::signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// The first non-empty line of what the probe writes to `fd` (at most [`KEPT`] bytes
/// looked at); reads to the end.
async fn first_line(fd: OwnedFd) -> String {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}
