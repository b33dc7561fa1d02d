//! When a service that ended starts again: its restart policy decides whether, the backoff
//! how long after (pure, [`next_restart`]); [`Runner::schedule_restart`] applies it.

use super::schedule::{human, Stamp};
use super::Runner;
use scriptd_common::config::{Backoff, RestartPolicy};
use std::time::Duration;

/// A restart to schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Restart {
    /// How long after the end.
    pub(super) delay: Duration,
    /// Restarts since the last stable run, this one included.
    pub(super) count: u32,
}

/// Whether a service whose run ended (`failed`, after `ran_for`; `ready`: it became ready
/// first) restarts, and when: after `restart_delay`, doubling with each of the `restarts`
/// consecutive restarts so far up to `restart_delay_max`; a stable run, one that became ready
/// and lasted `restart_reset_after`, starts over. A failed start (never ready) never does.
pub(super) fn next_restart(
    policy: RestartPolicy,
    backoff: Backoff,
    (failed, ready): (bool, bool),
    ran_for: Duration,
    restarts: u32,
) -> Option<Restart> {
    let wants = match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if !wants {
        return None;
    }
    let restarts = if ready && ran_for >= backoff.reset_after {
        0
    } else {
        restarts
    };
    Some(Restart {
        delay: backoff.delay_for(restarts),
        count: restarts.saturating_add(1),
    })
}

impl Runner {
    /// Schedules the next start of a service that ended, if its policy wants one and it is
    /// neither stopped nor disabled ([`next_restart`]). The delay goes to the script's log.
    pub(super) fn schedule_restart(
        &mut self,
        run_id: u64,
        failed: bool,
        ready: bool,
        ran_for: Duration,
    ) {
        self.schedule_restart_with(self.cfg.restart, run_id, failed, ready, ran_for);
    }

    /// [`Self::schedule_restart`] with `policy` instead of the script's (`Always` for a
    /// service stopped as unhealthy with `health.restart`).
    pub(super) fn schedule_restart_with(
        &mut self,
        policy: RestartPolicy,
        run_id: u64,
        failed: bool,
        ready: bool,
        ran_for: Duration,
    ) {
        if !self.active() {
            return;
        }
        let Some(restart) = next_restart(
            policy,
            self.cfg.backoff,
            (failed, ready),
            ran_for,
            self.tally.restarts,
        ) else {
            return;
        };
        self.tally.restarts = restart.count;
        self.next_run = Some(Stamp::now().after(restart.delay));
        self.logs.system(
            run_id,
            format!(
                "restarting in {} (restart {} since the last stable run)",
                human(restart.delay),
                self.tally.restarts
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicy::{Always, Never, OnFailure};

    #[test]
    fn policy_backoff_and_reset() {
        let backoff = Backoff {
            delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            reset_after: Duration::from_secs(10),
        };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let (failed, ok, start_failed) = ((true, true), (false, true), (true, false));
        // (policy, (failed, ready), ran for, restarts so far, expected (delay, count))
        let table = [
            (Never, failed, s(1), 0, None),
            (Never, ok, s(1), 0, None),
            (Never, start_failed, s(1), 0, None),
            (OnFailure, ok, s(1), 0, None),
            (OnFailure, failed, s(1), 0, Some((ms(500), 1))),
            (OnFailure, start_failed, ms(10), 0, Some((ms(500), 1))),
            (Always, ok, s(1), 0, Some((ms(500), 1))),
            (Always, failed, s(1), 1, Some((s(1), 2))),
            (Always, failed, s(1), 2, Some((s(2), 3))),
            (Always, failed, s(1), 3, Some((s(4), 4))),
            (Always, failed, s(1), 4, Some((s(4), 5))),
            (Always, failed, s(1), u32::MAX, Some((s(4), u32::MAX))),
            // A stable run (ready, and lasted restart_reset_after) starts the backoff over.
            (Always, failed, s(10), 7, Some((ms(500), 1))),
            (OnFailure, failed, s(3600), 3, Some((ms(500), 1))),
            (Always, failed, ms(9_999), 3, Some((s(4), 4))),
            // A failed start never does, however long it took (ready_after > reset_after).
            (Always, start_failed, s(3600), 3, Some((s(4), 4))),
        ];
        for (policy, how, ran_for, restarts, want) in table {
            let got =
                next_restart(policy, backoff, how, ran_for, restarts).map(|r| (r.delay, r.count));
            assert_eq!(
                got, want,
                "{policy:?} (failed, ready)={how:?} ran {ran_for:?} after {restarts} restarts"
            );
        }
    }
}
