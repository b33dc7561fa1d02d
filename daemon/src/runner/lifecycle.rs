//! A run's life: started through the shim with its output pumped into the log, timed out,
//! stopped with the stop signal and SIGKILL after the grace, and its end recorded and acted
//! on (scheduled config, restart, waiters answered).

use super::schedule::{later, next_tick_after, Stamp};
use super::{
    AfterExit, ControlError, Controlled, Exited, Run, Runner, SpawnError, UpdateOutcome, Waiter,
};
use crate::logs::{self, Stream};
use crate::now_ms;
use crate::process;
use nix::sys::signal::Signal;
use scriptd_common::config::RestartPolicy;
use scriptd_common::diff::diff_script;
use scriptd_common::proto::{self, ExitInfo, ScriptEventKind};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to wait for a run's output pipes to drain after it exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Runner {
    /// Starts a run now. `one_off`: `ctl run`, which leaves the schedule alone.
    pub(super) async fn start_run(&mut self, one_off: bool) -> Result<u32, SpawnError> {
        let run_id = self.tally.run_id + 1;
        self.tally.run_id = run_id;
        self.last_failed = false;
        // One moment is the run's start and the base of its schedule and deadline.
        let now = Stamp::now();
        if self.cfg.is_periodic() && !one_off && self.active() {
            self.plan_next(now);
        } else if !self.cfg.is_periodic() {
            self.next_run = None;
        }
        match process::spawn(&self.name, run_id, &self.cfg, &self.shared.shims).await {
            Ok(spawned) => {
                let pid = spawned.pid;
                self.descriptors_reported = false;
                self.tally.run_count += 1;
                self.tally.last_start_ms = now.wall_ms;
                self.last_start = Some(now);
                let group_start = self
                    .shared
                    .groups
                    .record(&self.name, pid, spawned.shim_pid, run_id)
                    .await;
                let (ended_tx, ended) = oneshot::channel();
                self.run = Some(Box::new(Run {
                    id: run_id,
                    pid,
                    group_start,
                    started: now,
                    deadline: if self.cfg.is_periodic() {
                        self.cfg.timeout.map(|t| later(now.at, t))
                    } else {
                        None
                    },
                    kill_at: None,
                    stopping: false,
                    timed_out: false,
                    one_off,
                    unhealthy: false,
                    ready_at: self.ready_deadline(now.at, one_off),
                    ready: false,
                    ended,
                }));
                self.logs
                    .system(run_id, format!("run {run_id} started (pid {pid})"));
                self.event(ScriptEventKind::Started, format!("pid {pid}"), None);
                self.start_probe();
                // `ready_after: 0s`: ready at once.
                self.check_ready(now.at);
                let sink = self.logs.clone();
                tokio::spawn(async move {
                    let drained = CancellationToken::new();
                    let out = tokio::spawn(logs::pump(
                        spawned.stdout,
                        sink.clone(),
                        run_id,
                        Stream::Stdout,
                        drained.clone(),
                    ));
                    let err = tokio::spawn(logs::pump(
                        spawned.stderr,
                        sink,
                        run_id,
                        Stream::Stderr,
                        drained.clone(),
                    ));
                    let status = spawned.exit.await.ok();
                    // The shim has stopped the whole group; the pipes close with it, unless
                    // something escaped the group with the pipes still open.
                    let pumps = async {
                        let _ = out.await;
                        let _ = err.await;
                    };
                    tokio::pin!(pumps);
                    if tokio::time::timeout(DRAIN_TIMEOUT, &mut pumps)
                        .await
                        .is_err()
                    {
                        drained.cancel(); // they read what is there, then stop
                        pumps.await;
                    }
                    let _ = ended_tx.send(status);
                });
                self.publish();
                Ok(pid)
            }
            Err(e) => {
                if matches!(e, SpawnError::ShuttingDown) {
                    // A start that was waiting for its turn when SIGTERM came.
                    tracing::debug!(script = %self.name, "not started: {e}");
                } else if !e.is_descriptor_limit() {
                    tracing::warn!(script = %self.name, "cannot start: {e}");
                } else if !self.descriptors_reported {
                    // Once per script until a start succeeds: every retry would say the same.
                    self.descriptors_reported = true;
                    tracing::warn!(
                        script = %self.name,
                        "cannot start: {e} (retried with the restart backoff; said once for this script)"
                    );
                } else {
                    tracing::debug!(script = %self.name, "cannot start: {e}");
                }
                self.logs
                    .system(run_id, format!("run {run_id} failed to start: {e}"));
                let info = ExitInfo {
                    code: Some(127),
                    ended_at_ms: now_ms(),
                    run_id,
                    ..Default::default()
                };
                self.record_exit(info);
                self.start_failed(run_id, &format!("failed to start: {e}"));
                self.event(
                    ScriptEventKind::Exited,
                    format!("failed to start: {e}"),
                    Some(info),
                );
                self.last_failed = true;
                if !self.cfg.is_periodic() && !one_off {
                    self.schedule_restart(run_id, true, false, Duration::ZERO);
                }
                self.publish();
                Err(e)
            }
        }
    }

    /// Sends the stop signal to the run's group; SIGKILL follows after `stop_grace`.
    pub(super) fn begin_stop(&mut self) {
        let (signal, grace) = (self.cfg.stop_signal, self.cfg.stop_grace);
        if let Some(run) = self.run.as_mut() {
            if run.stopping {
                return;
            }
            run.stopping = true;
            process::signal_group(run.pid, process::signal_from(signal.number()));
            run.kill_at = Some(later(Instant::now(), grace));
        }
    }

    /// A timer came due: SIGKILL after the grace, a timeout, a periodic tick or a backoff
    /// restart.
    pub(super) async fn on_timer(&mut self) {
        let now = Instant::now();
        self.check_ready(now);
        if let Some(run) = self.run.as_mut() {
            if run.kill_at.is_some_and(|t| t <= now) {
                run.kill_at = None;
                process::signal_group(run.pid, Signal::SIGKILL);
                let pid = run.pid;
                self.logs.system(
                    self.tally.run_id,
                    format!("still running after stop_grace: SIGKILL to process group {pid}"),
                );
            }
            let run = self.run.as_mut();
            if let Some(run) = run.filter(|r| !r.stopping && r.deadline.is_some_and(|t| t <= now)) {
                run.timed_out = true;
                let timeout = self.cfg.timeout.unwrap_or_default();
                self.logs.system(
                    self.tally.run_id,
                    format!(
                        "run {} timed out after {}",
                        self.tally.run_id,
                        humantime::format_duration(timeout)
                    ),
                );
                self.event(ScriptEventKind::TimedOut, String::new(), None);
                self.begin_stop();
            }
        }
        self.follow_the_clock();
        if self.next_run.is_some_and(|t| t.at <= now) {
            if self.run.is_some() {
                // A periodic tick while the previous run is still going: skipped, counted.
                if self.cfg.is_periodic() {
                    match self.cfg.interval {
                        Some(interval) if !self.is_calendar() => {
                            let next = self.next_run.unwrap_or_else(Stamp::now);
                            self.next_run = Some(next_tick_after(next, interval, now));
                        }
                        _ => self.skip_slot(Stamp::now()),
                    }
                    self.tally.skipped_ticks += 1;
                    self.event(
                        ScriptEventKind::TickSkipped,
                        "previous run still going".into(),
                        None,
                    );
                } else {
                    self.next_run = None;
                }
            } else if let Some(slot) = self.next_slot.filter(|_| self.active()) {
                self.run_slot(slot).await;
            } else if self.active() {
                self.next_run = None;
                let restart = !self.cfg.is_periodic() && self.tally.run_count > 0;
                if self.start_run(false).await.is_ok() && restart {
                    self.event(
                        ScriptEventKind::Restarted,
                        format!("restart {} after backoff", self.tally.restarts),
                        None,
                    );
                }
            } else {
                // Stopped or disabled since this was scheduled: nothing starts.
                self.next_run = None;
            }
        }
    }

    /// A run ended: records how, applies a scheduled config, starts again when it should and
    /// answers whoever waited for the end.
    pub(super) async fn on_exit(&mut self, exited: Exited) {
        let Some(run) = self.run.take_if(|r| r.id == exited.run_id) else {
            return;
        };
        let ran_for = run.started.at.elapsed();
        self.probing = None;
        let mut info = ExitInfo {
            timed_out: run.timed_out,
            ended_at_ms: now_ms(),
            duration_ms: ran_for.as_millis() as u64,
            run_id: run.id,
            started_at_ms: run.started.wall_ms,
            ..Default::default()
        };
        match exited.status {
            Some(st) => {
                info.code = st.code();
                info.signal = st.signal();
            }
            None => tracing::error!(script = %self.name, "the run's end was not seen (shutdown)"),
        }
        if let Some(start) = run.group_start {
            let left = process::kill_leftovers(run.pid, start).await;
            if left > 0 {
                let msg = format!(
                    "the shim was killed and left {left} process(es) in group {}: SIGKILL",
                    run.pid
                );
                tracing::warn!(script = %self.name, "{msg}");
                self.logs.system(run.id, msg);
            }
        }
        self.shared.groups.forget(&self.name).await;
        let succeeded = !run.timed_out && !run.unhealthy && info.code == Some(0);
        let how = match (info.code, info.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {}", signal_name(s)),
            _ => "unknown status".into(),
        };
        let how = if run.timed_out {
            format!("{how}, timed out")
        } else if run.unhealthy {
            format!("{how}, stopped as unhealthy")
        } else {
            how
        };
        let lasted = humantime::format_duration(Duration::from_millis(info.duration_ms));
        let failed_start = self.readiness_at_end(&run, succeeded, &format!("{how} after {lasted}"));
        let note = if failed_start {
            self.failed_start_note()
        } else {
            String::new()
        };
        self.logs.system(
            run.id,
            format!("run {} ended: {how} after {lasted}{note}", run.id),
        );
        let failed = !succeeded || failed_start;
        self.last_failed = failed;
        self.record_exit(info);
        self.shared.events.script(proto::ScriptEvent {
            script: self.name.clone(),
            kind: ScriptEventKind::Exited as i32,
            run_id: run.id,
            pid: run.pid,
            exit: Some(info),
            message: how.clone(),
        });

        if let Some(next) = self.pending.take() {
            let fields: Vec<String> = diff_script(&self.name, &self.cfg, &next)
                .into_iter()
                .map(|c| c.field)
                .collect();
            let became_service = self.cfg.is_periodic() && !next.is_periodic();
            self.set_config(next);
            self.event(
                ScriptEventKind::ScheduledChangeApplied,
                format!("applied after run {}: {}", run.id, fields.join(", ")),
                None,
            );
            if became_service {
                // The periodic schedule is gone; a service starts at once (as if added).
                self.next_run = None;
                if self.after_exit == AfterExit::Natural && self.active() {
                    self.after_exit = AfterExit::Restart;
                }
            }
        }

        let after = std::mem::replace(&mut self.after_exit, AfterExit::Natural);
        let mut start_result = None;
        match after {
            AfterExit::Forget => self.after_exit = AfterExit::Forget,
            AfterExit::Stay => {}
            AfterExit::Restart => {
                self.tally.restarts = 0;
                let r = self.start_run(false).await;
                if r.is_ok() {
                    self.event(ScriptEventKind::Restarted, String::new(), None);
                }
                start_result = Some(r);
            }
            AfterExit::Natural => {
                if run.unhealthy {
                    // `health.restart` asked for it, whatever `restart` says.
                    self.schedule_restart_with(
                        RestartPolicy::Always,
                        run.id,
                        true,
                        run.ready,
                        ran_for,
                    );
                } else if !self.cfg.is_periodic() && !run.one_off {
                    self.schedule_restart(run.id, failed, run.ready, ran_for);
                }
            }
        }
        for w in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::Removed(tx) => {
                    let _ = tx.send(());
                }
                Waiter::Control(tx) => {
                    let _ = tx.send(match &start_result {
                        Some(Ok(pid)) => Ok(Controlled {
                            message: format!("restarted (pid {pid})"),
                            run_id: self.tally.run_id,
                        }),
                        Some(Err(e)) => Err(ControlError::Spawn(e.clone())),
                        None => Ok(Controlled {
                            message: format!("stopped ({how})"),
                            run_id: 0,
                        }),
                    });
                }
                Waiter::Update(tx) => {
                    let _ = tx.send(match &start_result {
                        Some(Err(e)) => Err(ControlError::Spawn(e.clone())),
                        _ => Ok(UpdateOutcome::Applied),
                    });
                }
            }
        }
    }
}

fn signal_name(sig: i32) -> String {
    scriptd_common::signals::describe(sig, "")
}
