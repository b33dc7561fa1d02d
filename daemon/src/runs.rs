//! The ends of a script's recent runs, and waiting for one run to end.
//!
//! The runner owns the record and publishes it on a `watch` channel next to its status; a
//! `WaitRun` call or a `Logs --run ID -f` follower reads both and never asks the runner
//! task. A run that ended before the client started waiting is still answered from the
//! record, so waiting never races the run.

use scriptd_common::proto::{ExitInfo, ScriptState, ScriptStatus};
use std::collections::VecDeque;
use tokio::sync::watch;

/// How many ended runs of one script are remembered.
pub const KEEP: usize = 64;

/// The ends of a script's latest [`KEEP`] runs, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentRuns(VecDeque<ExitInfo>);

impl RecentRuns {
    /// Records the end of a run; the oldest is forgotten past [`KEEP`].
    ///
    /// The record grows one run at a time (a `VecDeque` would take room for four at the
    /// first run and double from there): most scripts end few runs between restarts of the
    /// daemon (a periodic script of `interval: 1h`), and every script has a record (issue
    /// 16). Growing is a copy of at most [`KEEP`] ends, once per run until the record is
    /// full.
    pub fn push(&mut self, exit: ExitInfo) {
        if self.0.len() >= KEEP {
            self.0.pop_front();
        } else {
            self.0.reserve_exact(1);
        }
        self.0.push_back(exit);
    }

    /// The end of run `run_id`, if it is remembered.
    pub fn get(&self, run_id: u64) -> Option<&ExitInfo> {
        self.0.iter().rev().find(|e| e.run_id == run_id)
    }
}

/// What is known of one run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// 0, or a run id the script has not reached.
    Unknown,
    /// The script's current run.
    Running,
    /// It ended like this.
    Ended(ExitInfo),
    /// Over (or never started), and its end is not remembered.
    Forgotten,
}

/// What `status` and `recent` say of run `run_id`. The runner records a run's end before it
/// publishes a status without that run, so reading the status first and the record second
/// never misses an end.
pub fn state_of(run_id: u64, status: &ScriptStatus, recent: &RecentRuns) -> RunState {
    if run_id == 0 || run_id > status.run_id {
        return RunState::Unknown;
    }
    if let Some(exit) = recent.get(run_id) {
        return RunState::Ended(*exit);
    }
    let alive = [
        ScriptState::Running,
        ScriptState::Starting,
        ScriptState::Unhealthy,
    ]
    .map(|s| s as i32);
    if run_id == status.run_id && alive.contains(&status.state) {
        RunState::Running
    } else {
        RunState::Forgotten
    }
}

/// Why a wait has no end to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No such run, or its end is not remembered.
    #[error("{0}")]
    NotFound(String),
    /// The runner stopped before the run ended (cannot happen: it records every end first).
    #[error("the script's runner stopped before run {0} ended (daemon shutting down?)")]
    Gone(u64),
}

/// The state of run `run_id` now.
pub fn state_now(
    run_id: u64,
    status: &watch::Receiver<ScriptStatus>,
    recent: &watch::Receiver<RecentRuns>,
) -> RunState {
    let status = status.borrow().clone();
    let recent = recent.borrow();
    state_of(run_id, &status, &recent)
}

/// Waits until run `run_id` of `script` has ended and returns how.
pub async fn wait(
    script: &str,
    run_id: u64,
    mut status: watch::Receiver<ScriptStatus>,
    mut recent: watch::Receiver<RecentRuns>,
) -> Result<ExitInfo, WaitError> {
    loop {
        status.mark_unchanged();
        recent.mark_unchanged();
        match state_now(run_id, &status, &recent) {
            RunState::Ended(exit) => return Ok(exit),
            RunState::Unknown => {
                let latest = status.borrow().run_id;
                return Err(WaitError::NotFound(if run_id == 0 {
                    format!("no run 0 of {script}: run ids start at 1 (the latest is {latest})")
                } else {
                    format!("no run {run_id} of {script} yet (the latest is run {latest})")
                }));
            }
            RunState::Forgotten => {
                return Err(WaitError::NotFound(format!(
                    "run {run_id} of {script} is not running and its end is not remembered \
                     (it failed to start, ended before the daemon started, or is older than \
                     the last {KEEP} runs); `ctl logs {script} --run {run_id}` shows its lines"
                )))
            }
            RunState::Running => {}
        }
        let changed = tokio::select! {
            r = status.changed() => r,
            r = recent.changed() => r,
        };
        if changed.is_err() {
            // The runner is gone: its last word is in the record, or the run never ended.
            return match state_now(run_id, &status, &recent) {
                RunState::Ended(exit) => Ok(exit),
                _ => Err(WaitError::Gone(run_id)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(run_id: u64, state: ScriptState) -> ScriptStatus {
        ScriptStatus {
            run_id,
            state: state as i32,
            ..Default::default()
        }
    }

    fn ended(run_id: u64, code: i32) -> ExitInfo {
        ExitInfo {
            run_id,
            code: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn states() {
        let mut recent = RecentRuns::default();
        recent.push(ended(3, 1));
        let running = status(4, ScriptState::Running);
        let waiting = status(4, ScriptState::Waiting);
        let table = [
            (0, &running, RunState::Unknown),
            (5, &running, RunState::Unknown),
            (4, &running, RunState::Running),
            (4, &waiting, RunState::Forgotten),
            (3, &running, RunState::Ended(ended(3, 1))),
            (2, &running, RunState::Forgotten),
        ];
        for (id, st, want) in table {
            assert_eq!(state_of(id, st, &recent), want, "run {id} in {st:?}");
        }
    }

    #[test]
    fn keeps_the_latest_runs() {
        let mut recent = RecentRuns::default();
        for id in 1..=(KEEP as u64 + 10) {
            recent.push(ended(id, 0));
        }
        assert!(recent.get(10).is_none());
        assert!(recent.get(11).is_some());
        assert!(recent.get(KEEP as u64 + 10).is_some());
    }

    #[test]
    fn a_record_takes_room_for_the_runs_it_holds() {
        let mut recent = RecentRuns::default();
        for id in 1..=(KEEP as u64 + 10) {
            recent.push(ended(id, 0));
            let held = recent.0.len();
            assert_eq!((held, recent.0.capacity()), (held, held), "after run {id}");
        }
        assert_eq!(recent.0.len(), KEEP);
    }

    #[tokio::test]
    async fn a_wait_sees_an_end_recorded_before_it_started_and_one_after() {
        let (status_tx, status_rx) = watch::channel(status(2, ScriptState::Running));
        let (recent_tx, recent_rx) = watch::channel(RecentRuns::default());
        recent_tx.send_modify(|r| r.push(ended(1, 0)));
        let got = wait("x", 1, status_rx.clone(), recent_rx.clone()).await;
        assert_eq!(got, Ok(ended(1, 0)));
        let waiter = tokio::spawn(wait("x", 2, status_rx, recent_rx));
        tokio::task::yield_now().await;
        recent_tx.send_modify(|r| r.push(ended(2, 7)));
        status_tx.send_replace(status(2, ScriptState::Failed));
        assert_eq!(waiter.await.expect("join"), Ok(ended(2, 7)));
    }
}
