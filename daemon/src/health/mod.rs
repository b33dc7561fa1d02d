//! Health probes of services (`health:`): one probe task per running run, owned by the
//! script's runner, which starts it when the run starts and drops it when the run ends.
//! The task only probes and reports: every [`ProbeResult`] goes to the runner, which owns
//! the verdict (healthy, unhealthy), its events and log lines, and the restart.
//!
//! | file | what lives there |
//! | --- | --- |
//! | `mod.rs` | the probe task: its timer and what one probe of each kind reports |
//! | `http.rs` | `http:` a `GET` with hyper (HTTP/1.1, plain TCP), healthy on 2xx/3xx |
//! | `tcp.rs` | `tcp:` a connection accepted |
//! | `exec.rs` | `exec:` a command started through the shim like the script, healthy on exit 0 |

mod exec;
mod http;
mod tcp;

use crate::now_ms;
use crate::runner::Shared;
use scriptd_common::config::{HealthConfig, Probe, ScriptConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// What one probe found, sent to the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The run it probed.
    pub run_id: u64,
    /// Healthy.
    pub ok: bool,
    /// What it said ("HTTP 200 OK", "connect 127.0.0.1:8080: Connection refused ...").
    pub message: String,
    /// When it ended (Unix ms).
    pub at_ms: i64,
}

/// The longest message kept of a probe (its output's first line, an error).
const MAX_MESSAGE_CHARS: usize = 200;

/// What a probe needs to know of the run it probes.
pub struct Target {
    /// The script's name.
    pub name: String,
    /// The run.
    pub run_id: u64,
    /// The script's config: an `exec` probe runs in its directory with its environment.
    pub script: Arc<ScriptConfig>,
    /// The probe.
    pub health: HealthConfig,
    /// The shims an `exec` probe is started through.
    pub shared: Arc<Shared>,
}

/// Starts probing `target` every `health.interval`, the first time one interval after
/// `started` (the run's start), and sends each result to `results`. Probing stops when
/// the returned guard is dropped (an `exec` probe in progress is killed) or the receiver
/// is gone.
///
/// Results travel boxed: the runner's channel allocates its first block of 32 slots with
/// the script, whether it ever has a probe or not (8 bytes a slot instead of 48).
pub fn start(
    target: Target,
    started: Instant,
    results: mpsc::Sender<Box<ProbeResult>>,
) -> DropGuard {
    let cancel = CancellationToken::new();
    let guard = cancel.clone().drop_guard();
    tokio::spawn(async move {
        let interval = target.health.interval;
        let mut next = after(started, interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            let began = Instant::now();
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = probe(&target) => outcome,
            };
            let (ok, message) = match outcome {
                Ok(m) => (true, m),
                Err(m) => (false, m),
            };
            let result = Box::new(ProbeResult {
                run_id: target.run_id,
                ok,
                message: bounded(&message),
                at_ms: now_ms(),
            });
            if results.send(result).await.is_err() {
                return;
            }
            // Every interval from the start of the previous probe; at once after one that
            // took longer than that.
            next = after(began, interval).max(Instant::now());
        }
    });
    guard
}

/// `at + d`; durations are at most 100 years (validation), so the fallback is never.
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at)
}

/// One probe within `health.timeout`: `Ok(what it said)` healthy, `Err(why)` not.
async fn probe(target: &Target) -> Result<String, String> {
    let timeout = target.health.timeout;
    let timed_out = || format!("timed out after {}", humantime::format_duration(timeout));
    match &target.health.probe {
        Probe::Http(url) => tokio::time::timeout(timeout, http::probe(url))
            .await
            .unwrap_or_else(|_| Err(timed_out())),
        Probe::Tcp(addr) => tokio::time::timeout(timeout, tcp::probe(addr))
            .await
            .unwrap_or_else(|_| Err(timed_out())),
        // It kills what it started when the time is up.
        Probe::Exec(command) => exec::probe(target, command, timeout)
            .await
            .map_err(|e| e.unwrap_or_else(timed_out)),
    }
}

/// `text` on one line, cut to [`MAX_MESSAGE_CHARS`] characters.
fn bounded(text: &str) -> String {
    let line = text.trim().replace(['\n', '\r'], " ");
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_bounded_line() {
        assert_eq!(bounded("  HTTP 200 OK\n"), "HTTP 200 OK");
        assert_eq!(bounded("a\r\nb"), "a  b");
        let long = "é".repeat(500);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
