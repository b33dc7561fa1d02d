//! The status snapshot a runner publishes on its `watch` channel after every step: what
//! `ctl status` shows, read without asking the task.
//!
//! The snapshot lives in the `watch` channel only: the runner keeps its counts in a
//! [`Tally`] and writes the snapshot in place when it publishes, instead of keeping a
//! second `ScriptStatus` of its own (name, kind and the rest twice) and cloning it into the
//! channel each time (issue 16).

use super::schedule::millis;
use super::Runner;
use scriptd_common::config::ScriptConfig;
use scriptd_common::diff::{diff_script, Impact};
use scriptd_common::proto::{ExitInfo, HealthStatus, ScriptState};

/// `periodic` or `service`, as status shows it.
pub(super) fn kind(cfg: &ScriptConfig) -> &'static str {
    if cfg.is_periodic() {
        "periodic"
    } else {
        "service"
    }
}

/// What the runner counts of its runs; the rest of the status follows from its config and
/// its current run when it publishes.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// The current or last run (0 before the first); continues from the log files' last.
    pub(super) run_id: u64,
    /// Runs started since the daemon started.
    pub(super) run_count: u64,
    /// Unix ms of the last start.
    pub(super) last_start_ms: i64,
    /// Restarts in a row since the last stable run (services).
    pub(super) restarts: u32,
    /// Periodic ticks skipped because a run was still going.
    pub(super) skipped_ticks: u64,
    /// How the last run ended.
    pub(super) last_exit: Option<ExitInfo>,
    /// The current run's probe verdict (scripts with a health probe; boxed, like the run:
    /// an idle script's runner is smaller without room for them).
    pub(super) health: Option<Box<HealthStatus>>,
}

/// Sets `to` to `from` without allocating when they are equal already.
fn set(to: &mut String, from: &str) {
    if to != from {
        from.clone_into(to);
    }
}

impl Runner {
    /// Publishes what the runner is doing now.
    pub(super) fn publish(&mut self) {
        let unhealthy = self.unhealthy();
        let state = if unhealthy {
            ScriptState::Unhealthy
        } else if let Some(run) = &self.run {
            Self::alive_state(run)
        } else if self.next_run.is_some() {
            if self.cfg.is_periodic() {
                ScriptState::Waiting
            } else {
                ScriptState::BackingOff
            }
        } else if !self.cfg.enabled {
            ScriptState::Disabled
        } else if self.user_stopped {
            ScriptState::Stopped
        } else if self.last_failed {
            ScriptState::Failed
        } else {
            ScriptState::Idle
        } as i32;
        let pending_changes = match &self.pending {
            Some(p) => diff_script(&self.name, &self.cfg, p)
                .into_iter()
                .filter(|c| c.impact == Impact::Restart)
                .map(|c| c.field)
                .collect(),
            None => Vec::new(),
        };
        let (cfg, t) = (&self.cfg, &self.tally);
        let next_run_ms = self.next_run.map_or(0, |n| n.wall_ms);
        let pid = self.run.as_ref().map_or(0, |r| r.pid);
        self.status_tx.send_modify(|s| {
            set(&mut s.kind, kind(cfg));
            s.enabled = cfg.enabled;
            s.interval_ms = cfg.interval.map_or(0, millis);
            let calendar = &cfg.calendar;
            set(
                &mut s.schedule,
                calendar.schedule.as_ref().map_or("", |c| c.as_str()),
            );
            set(
                &mut s.timezone,
                calendar.timezone.as_ref().map_or("", |z| z.name()),
            );
            s.jitter_ms = calendar.jitter.map_or(0, millis);
            s.catch_up = calendar.catch_up.unwrap_or(false);
            let user = cfg.exec.user.as_ref();
            set(&mut s.user, user.map_or("", |u| u.name.as_str()));
            s.uid = user.map(|u| u.uid);
            s.next_run_ms = next_run_ms;
            s.pid = pid;
            s.pending_changes = pending_changes;
            s.state = state;
            s.run_id = t.run_id;
            s.run_count = t.run_count;
            s.last_start_ms = t.last_start_ms;
            s.restarts = t.restarts;
            s.skipped_ticks = t.skipped_ticks;
            s.last_exit = t.last_exit;
            match (&mut s.health, t.health.as_deref()) {
                (Some(to), Some(from)) => to.clone_from(from),
                (to, from) => *to = from.cloned(),
            }
        });
    }
}
