//! Readiness, the one place of the runner's state machine that knows `starting`: a service's
//! run is `starting` from its spawn until it has lived for `ready_after`, then `running`
//! (event `ready`, a `sys` line). A service's run that ends before, on its own, is a failed
//! start: it counts as a failure for the restart policy and the backoff, whatever its exit
//! code (like supervisord's `startsecs`). A periodic run, and a run of `ctl run` (run once,
//! judged by its exit code), is ready when it ends with exit 0. With `ready_after: 0s` a
//! service is ready at its spawn: no `starting` state, so no `sys` line for it.
//!
//! What happened is kept in a [`Readiness`] record on a `watch` channel: monotonic counters
//! and run ids, so a verification that looks late still sees every run that became ready or
//! failed since the run it waits for.

use super::schedule::{human, later};
use super::{Run, Runner};
use scriptd_common::proto::{ScriptEventKind, ScriptState};
use tokio::time::Instant;

/// What verifications and `ctl start|restart --wait` read of a script's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The latest run that became ready (a service alive for `ready_after`, a periodic run
    /// that ended with exit 0); 0 when none did.
    pub ready_run: u64,
    /// The latest run that failed before it was ready (a service's failed start, a periodic
    /// run that did not exit 0); 0 when none did.
    pub failed_run: u64,
    /// How that run failed (`exit code 1 after 20ms`).
    pub failure: String,
    /// Failed starts in a row; a ready run sets it back to 0.
    pub failed_starts: u32,
}

impl Runner {
    /// When a service's run started at `start` becomes ready; `None` for periodic runs and
    /// `ctl run`'s (`one_off`).
    pub(super) fn ready_deadline(&self, start: Instant, one_off: bool) -> Option<Instant> {
        (!self.cfg.is_periodic() && !one_off).then(|| later(start, self.cfg.ready_after))
    }

    /// The state of the script while `run` is alive.
    pub(super) fn alive_state(run: &Run) -> ScriptState {
        if !run.ready && run.ready_at.is_some() {
            ScriptState::Starting
        } else {
            ScriptState::Running
        }
    }

    /// Marks the current run ready if its `ready_after` has passed by `now` (and it is not
    /// being stopped).
    pub(super) fn check_ready(&mut self, now: Instant) {
        let due = self
            .run
            .as_ref()
            .is_some_and(|r| !r.ready && !r.stopping && r.ready_at.is_some_and(|at| at <= now));
        if !due {
            return;
        }
        let Some(run) = self.run.as_mut() else { return };
        run.ready = true;
        run.ready_at = None;
        let (id, pid) = (run.id, run.pid);
        let after = human(self.cfg.ready_after);
        if !self.cfg.ready_after.is_zero() {
            self.logs.system(
                id,
                format!("run {id} ready: alive for {after} (ready_after); starting → running"),
            );
        }
        self.event(
            ScriptEventKind::Ready,
            format!("pid {pid}, alive for {after}"),
            None,
        );
        self.readiness.send_modify(|r| {
            r.ready_run = id;
            r.failed_starts = 0;
        });
    }

    /// Records the end of `run` (`succeeded`: exit 0 in time; `how`: for people). Returns
    /// true when the end was a failed start: a service's run that ended on its own before it
    /// was ready (the caller's `run ended` line says so).
    pub(super) fn readiness_at_end(&mut self, run: &Run, succeeded: bool, how: &str) -> bool {
        // A service's run has (or had) a ready time; a periodic run is ready when it succeeds.
        let service_run = run.ready || run.ready_at.is_some();
        if !service_run {
            self.readiness.send_modify(|r| {
                if succeeded {
                    r.ready_run = run.id;
                    r.failed_starts = 0;
                } else {
                    r.failed_run = run.id;
                    r.failure = how.to_owned();
                    r.failed_starts = r.failed_starts.saturating_add(1);
                }
            });
            return false;
        }
        if run.ready || run.stopping {
            // Ready before it ended, or stopped by the daemon while starting: not a failed start.
            return false;
        }
        self.start_failed(run.id, how);
        true
    }

    /// What the `run ended` line adds for a failed start.
    pub(super) fn failed_start_note(&self) -> String {
        format!(
            "; a failed start: it ended before ready_after ({})",
            human(self.cfg.ready_after)
        )
    }

    /// A start of run `run_id` failed (`how`).
    pub(super) fn start_failed(&mut self, run_id: u64, how: &str) {
        self.readiness.send_modify(|r| {
            r.failed_run = run_id;
            r.failure = how.to_owned();
            r.failed_starts = r.failed_starts.saturating_add(1);
        });
    }
}
