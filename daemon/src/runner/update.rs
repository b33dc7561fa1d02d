//! A reload's new config for this script: applied in place, applied with a graceful restart,
//! or (restart-impact changes to a periodic script with a run going) scheduled for the run's
//! end.

use super::schedule::{interval_start, rescheduled, Stamp};
use super::{AfterExit, ControlError, Reply, Runner, UpdateOutcome, Waiter};
use scriptd_common::config::ScriptConfig;
use scriptd_common::diff::{apply_except_restart, diff_script, Change, Impact};
use scriptd_common::proto::ScriptEventKind;
use std::sync::Arc;

impl Runner {
    /// Takes a reload's new config with the plan's rows for this script.
    pub(super) async fn update(
        &mut self,
        new: Arc<ScriptConfig>,
        changes: Vec<Change>,
        reply: Reply<UpdateOutcome>,
    ) {
        let old = self.cfg.clone();
        // The plan diffed the config the script last got; while a change waits for the run
        // to end, that is the pending one, not the one in effect.
        let changes = match self.pending {
            Some(_) => diff_script(&self.name, &old, &new),
            None => changes,
        };
        let restart = changes.iter().any(|c| c.impact == Impact::Restart);
        let running = self.run.is_some();
        if !old.enabled && new.enabled {
            self.user_stopped = false;
        }

        if restart && running && old.is_periodic() {
            // Everything but the restart-impact changes applies now; those when the run ends
            // (DESIGN: "scheduled").
            let now_cfg = apply_except_restart(&old, &new, &changes);
            self.pending = Some(new);
            self.apply_in_place(Arc::new(now_cfg), reply, UpdateOutcome::Scheduled)
                .await;
            return;
        }
        // The newest config decides: a change an earlier reload scheduled and this one
        // reverts (or a rollback undoes) is dropped, not applied when the run ends.
        self.pending = None;
        if !restart {
            self.apply_in_place(new, reply, UpdateOutcome::Applied)
                .await;
            return;
        }
        if running {
            // Graceful restart now: stopped with the old signal and grace, started with
            // the new config.
            self.begin_stop();
            self.set_config(new);
            self.after_exit = if self.active() {
                AfterExit::Restart
            } else {
                AfterExit::Stay
            };
            self.waiters.push(Waiter::Update(reply));
            return;
        }
        self.set_config(new);
        self.apply_schedule_fields(&old);
        let result = if !self.active() {
            self.next_run = None;
            Ok(UpdateOutcome::Applied)
        } else if !self.cfg.is_periodic() {
            self.tally.restarts = 0;
            self.start_run(false).await.map(|_| UpdateOutcome::Applied)
        } else {
            if self.next_run.is_none() || !old.is_periodic() {
                // Enabled, or a service that became periodic: an interval's first run is
                // now, a schedule's at its next slot.
                self.plan_first(Stamp::now());
            }
            Ok(UpdateOutcome::Applied)
        };
        let _ = reply.send(result.map_err(ControlError::Spawn));
    }

    /// Applies a config whose restart-impact fields are the ones in effect: nothing is
    /// restarted. Disabling stops a service now; a periodic run in progress finishes.
    async fn apply_in_place(
        &mut self,
        new: Arc<ScriptConfig>,
        reply: Reply<UpdateOutcome>,
        outcome: UpdateOutcome,
    ) {
        let old = self.cfg.clone();
        let (enabling, disabling) = (!old.enabled && new.enabled, old.enabled && !new.enabled);
        self.set_config(new);
        let running = self.run.is_some();
        if disabling {
            self.next_run = None;
            if running && !old.is_periodic() {
                self.after_exit = AfterExit::Stay;
                self.event(
                    ScriptEventKind::Stopped,
                    "disabled in the config".into(),
                    None,
                );
                self.begin_stop();
                self.waiters.push(Waiter::Update(reply));
                return;
            }
            // A periodic run in progress finishes; no new runs.
            if running {
                self.after_exit = AfterExit::Stay;
            }
        } else if enabling {
            if !running && self.is_calendar() {
                self.plan_first(Stamp::now());
            } else if !running {
                let r = self.start_run(false).await;
                let _ = reply.send(r.map(|_| outcome).map_err(ControlError::Spawn));
                return;
            } else {
                self.after_exit = AfterExit::Natural;
                if self.cfg.is_periodic() {
                    self.plan_next(Stamp::now());
                }
            }
        } else {
            self.apply_schedule_fields(&old);
        }
        let _ = reply.send(Ok(outcome));
    }

    /// A changed `interval`, `schedule`, `timezone` or `jitter` of a periodic script (now in
    /// effect; `old` the config before) plans the next run again at once: an interval from
    /// the last start, a schedule at its next slot. Nothing is killed.
    fn apply_schedule_fields(&mut self, old: &ScriptConfig) {
        let timing = |c: &ScriptConfig| {
            (
                c.interval,
                c.calendar.schedule.clone(),
                c.calendar.timezone.clone(),
                c.calendar.jitter,
            )
        };
        let stays_periodic = old.is_periodic() && self.cfg.is_periodic();
        if timing(old) == timing(&self.cfg) || self.next_run.is_none() || !stays_periodic {
            return;
        }
        let now = Stamp::now();
        match self.cfg.interval {
            Some(interval) => {
                let base = self
                    .run
                    .as_ref()
                    .map(|r| r.started)
                    .or(self.last_start)
                    .unwrap_or(now);
                let first =
                    interval_start(interval, self.cfg.calendar.jitter, base, fastrand::u64(..));
                self.next_slot = None;
                self.next_run = Some(rescheduled(first, now));
            }
            None => self.plan_next(now),
        }
    }
}
