//! The status snapshot a runner publishes on its `watch` channel after every step: what
//! `ctl status` shows, read without asking the task.

use super::schedule::millis;
use super::Runner;
use scriptd_common::config::ScriptConfig;
use scriptd_common::diff::{diff_script, Impact};
use scriptd_common::proto::ScriptState;

/// `periodic` or `service`, as status shows it.
pub(super) fn kind(cfg: &ScriptConfig) -> &'static str {
    if cfg.is_periodic() {
        "periodic"
    } else {
        "service"
    }
}

impl Runner {
    /// Publishes what the runner is doing now.
    pub(super) fn publish(&mut self) {
        let unhealthy = self.unhealthy();
        let s = &mut self.status;
        s.kind = kind(&self.cfg).into();
        s.enabled = self.cfg.enabled;
        s.interval_ms = self.cfg.interval.map_or(0, millis);
        let calendar = &self.cfg.calendar;
        s.schedule = calendar
            .schedule
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_owned());
        s.timezone = calendar
            .timezone
            .as_ref()
            .map_or_else(String::new, |z| z.name().to_owned());
        s.jitter_ms = calendar.jitter.map_or(0, millis);
        s.catch_up = calendar.catch_up.unwrap_or(false);
        let user = self.cfg.exec.user.as_ref();
        s.user = user.map(|u| u.name.clone()).unwrap_or_default();
        s.uid = user.map(|u| u.uid);
        s.next_run_ms = self.next_run.map_or(0, |n| n.wall_ms);
        s.pid = self.run.as_ref().map_or(0, |r| r.pid);
        s.pending_changes = match &self.pending {
            Some(p) => diff_script(&self.name, &self.cfg, p)
                .into_iter()
                .filter(|c| c.impact == Impact::Restart)
                .map(|c| c.field)
                .collect(),
            None => Vec::new(),
        };
        s.state = if unhealthy {
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
        self.status_tx.send_replace(s.clone());
    }
}
