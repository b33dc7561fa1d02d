//! When the next periodic run starts: planned from the `interval` or the calendar
//! `schedule` (with `jitter`), the first start of a calendar script (its next slot, or a
//! `catch_up` run for a slot missed while the daemon was down), and a calendar start kept on
//! its wall-clock time when the clock is stepped.

use super::last_slot::LastSlot;
use super::schedule::{calendar_start, interval_start, realigned, Stamp};
use super::Runner;
use scriptd_common::proto::ScriptEventKind;
use scriptd_common::schedule::missed_slot;
use std::time::Duration;
use tokio::time::Instant;

/// How often a calendar script's timer looks at the wall clock again: a step of the clock
/// (NTP, an operator) moves its next start at most this late.
pub(super) const CLOCK_RECHECK: Duration = Duration::from_secs(60);

impl Runner {
    /// True for a script with a calendar `schedule`.
    pub(super) fn is_calendar(&self) -> bool {
        self.cfg.calendar.schedule.is_some()
    }

    /// Plans the next periodic start as of `now` (a run starting, a tick skipped, a changed
    /// schedule): `interval` (plus jitter) after `now`, or the next slot after `now` and after
    /// the last slot run or skipped (plus jitter).
    pub(super) fn plan_next(&mut self, now: Stamp) {
        let draw = fastrand::u64(..);
        self.next_slot = None;
        if self.is_calendar() {
            match calendar_start(&self.cfg.calendar, now, self.last_slot, draw) {
                Some((at, slot)) => {
                    self.next_run = Some(at);
                    self.next_slot = Some(slot);
                }
                None => {
                    self.next_run = None;
                    tracing::warn!(script = %self.name, "its schedule has no next slot");
                }
            }
        } else if let Some(interval) = self.cfg.interval {
            self.next_run = Some(interval_start(
                interval,
                self.cfg.calendar.jitter,
                now,
                draw,
            ));
        }
    }

    /// The first periodic start of an enabled script (started, added, enabled, or a service
    /// turned periodic): an interval script runs now, a calendar script at its next slot.
    pub(super) fn plan_first(&mut self, now: Stamp) {
        if self.is_calendar() {
            self.plan_next(now);
        } else {
            self.next_slot = None;
            self.next_run = Some(now);
        }
    }

    /// The runner's first step for an active calendar script: the slot it last ran is read
    /// back; with `catch_up`, a slot that passed since then runs now, once; otherwise the
    /// next slot is planned.
    pub(super) async fn begin_calendar(&mut self) {
        let record = self.shared.slots.read(&self.name).await;
        let now = Stamp::now();
        // A slot recorded in the future was run while the clock was ahead: going by it
        // would hold the script back until the clock gets there again.
        self.last_slot = record.map(|r| r.slot_ms).filter(|&slot| {
            let past = slot <= now.wall_ms;
            if !past {
                tracing::warn!(
                    script = %self.name,
                    "its last slot run is recorded in the future ({slot} ms); was the clock \
                     set back? planning from now"
                );
            }
            past
        });
        let missed = match (&self.cfg.calendar.schedule, &self.cfg.calendar.timezone) {
            (Some(pattern), Some(zone)) if self.cfg.calendar.catch_up == Some(true) => {
                missed_slot(pattern, zone, self.last_slot, now.wall_ms)
            }
            _ => None,
        };
        let Some(slot) = missed else {
            self.plan_next(now);
            return;
        };
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(slot).unwrap_or(0)),
        );
        let why = format!("slot {when} passed while the daemon was down (catch_up)");
        if self.run_slot(slot).await {
            let run_id = self.tally.run_id;
            self.logs
                .system(run_id, format!("run {run_id} makes up for {why}"));
            self.event(ScriptEventKind::CaughtUp, why, None);
        }
    }

    /// Starts the run of `slot` (due, or caught up) and records it for `catch_up`; true
    /// when it started.
    pub(super) async fn run_slot(&mut self, slot: i64) -> bool {
        self.last_slot = Some(slot);
        self.next_slot = None;
        self.next_run = None;
        if self.start_run(false).await.is_err() {
            return false;
        }
        let record = LastSlot {
            slot_ms: slot,
            started_ms: self.tally.last_start_ms,
        };
        self.shared.slots.write(&self.name, record).await;
        true
    }

    /// A calendar slot came while the previous run was still going: skipped, and the next one
    /// planned.
    pub(super) fn skip_slot(&mut self, now: Stamp) {
        if let Some(slot) = self.next_slot.take() {
            self.last_slot = Some(slot);
        }
        self.plan_next(now);
    }

    /// When the task's timer should look at the planned start: the start itself, or for a
    /// calendar script at most [`CLOCK_RECHECK`] from now.
    pub(super) fn next_start_wake(&self) -> Option<Instant> {
        let at = self.next_run?.at;
        Some(if self.is_calendar() {
            at.min(Instant::now() + CLOCK_RECHECK)
        } else {
            at
        })
    }

    /// A calendar start not yet due by the timer is moved to where the wall clock puts it
    /// now (a no-op unless the clock was stepped).
    pub(super) fn follow_the_clock(&mut self) {
        if !self.is_calendar() {
            return;
        }
        let now = Stamp::now();
        if let Some(next) = self.next_run.filter(|n| n.at > now.at) {
            self.next_run = Some(realigned(next, now));
        }
    }
}
