//! The runner's task: one loop takes commands, the ends of runs and its timers, in order,
//! until the script is removed or the daemon shuts down.

use super::{health, AfterExit, ControlError, Exited, Run, Runner, RunnerCmd, SpawnError, Waiter};
use crate::health::ProbeResult;
use futures_channel::mpsc;
use scriptd_common::config::ScriptConfig;
use scriptd_common::proto::{self, ExitInfo, ScriptEventKind};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::StreamExt;

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The end of the current run, once its waiter task reports it; never without a run.
async fn run_ended(run: &mut Option<Box<Run>>) -> Exited {
    match run {
        Some(run) => Exited {
            run_id: run.id,
            status: (&mut run.ended).await.ok().flatten(),
        },
        None => std::future::pending().await,
    }
}

/// The next result of the current run's probe; never without a probe.
async fn probe_result(probing: &mut Option<health::Probing>) -> Option<Box<ProbeResult>> {
    match probing {
        Some(p) => p.results.recv().await,
        None => std::future::pending().await,
    }
}

impl Runner {
    /// The task: runs until the script is removed or the daemon shuts down.
    ///
    /// The task lives as long as its script, so its future is memory per script: the
    /// runner is boxed (an async fn's state holds its arguments twice), and the work each
    /// wake-up does (a start, a command, an exit, a timer) is boxed while it runs instead
    /// of being laid out inline in every idle script's future. The task's allocation went
    /// from 3,840 bytes to under 512 plus the runner (`valgrind --tool=massif`, issue 16;
    /// now 640 bytes, a calendar script's first start boxed too, and the runner 384:
    /// heaptrack). The ends of runs and the probe results come on channels that live as
    /// long as the run or the probe, so an idle script's task waits on its commands, the
    /// shutdown and its timer only.
    pub(super) async fn run(
        mut self: Box<Self>,
        mut rx: mpsc::UnboundedReceiver<RunnerCmd>,
        initial: oneshot::Sender<Result<(), SpawnError>>,
    ) {
        let first = if !self.active() {
            Ok(())
        } else if self.is_calendar() {
            Box::pin(self.begin_calendar()).await;
            Ok(())
        } else {
            Box::pin(self.start_run(false)).await.map(|_| ())
        };
        let _ = initial.send(first);
        let cancel = self.shared.cancel.clone();
        let mut shutting_down = false;
        loop {
            self.publish();
            if self.after_exit == AfterExit::Forget && self.run.is_none() {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                _ = cancel.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    self.next_run = None;
                    self.after_exit = AfterExit::Forget;
                    self.begin_stop();
                }
                cmd = rx.next(), if !shutting_down => match cmd {
                    Some(cmd) => Box::pin(self.handle(cmd)).await,
                    None => {
                        self.after_exit = AfterExit::Forget;
                        self.begin_stop();
                    }
                },
                exited = run_ended(&mut self.run) => Box::pin(self.on_exit(exited)).await,
                Some(result) = probe_result(&mut self.probing) => self.on_probe(*result),
                _ = sleep_until(wake) => Box::pin(self.on_timer()).await,
            }
        }
        // Removed or shutting down: `ctl logs -f` followers get the last lines and end.
        self.logs.close();
        for w in self.waiters.drain(..) {
            match w {
                Waiter::Removed(tx) => {
                    let _ = tx.send(());
                }
                Waiter::Control(tx) => {
                    let _ = tx.send(Err(ControlError::Gone));
                }
                Waiter::Update(tx) => {
                    let _ = tx.send(Err(ControlError::Gone));
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let run = self.run.as_ref();
        [
            self.next_start_wake(),
            run.and_then(|r| if r.stopping { None } else { r.deadline }),
            run.and_then(|r| r.kill_at),
            run.and_then(|r| if r.stopping { None } else { r.ready_at }),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Neither disabled nor stopped by `ctl stop`.
    pub(super) fn active(&self) -> bool {
        self.cfg.enabled && !self.user_stopped
    }

    /// Publishes an event about this script.
    pub(super) fn event(&self, kind: ScriptEventKind, message: String, exit: Option<ExitInfo>) {
        self.shared.events.script(proto::ScriptEvent {
            script: self.name.clone(),
            kind: kind as i32,
            run_id: self.tally.run_id,
            pid: self.run.as_ref().map_or(0, |r| r.pid),
            exit,
            message,
        });
    }

    /// The end of a run: the last exit of the status, and in the record `WaitRun` reads
    /// (before the status without the run is published, see [`crate::runs::state_of`]).
    pub(super) fn record_exit(&mut self, info: ExitInfo) {
        self.tally.last_exit = Some(info);
        self.runs.ended(&info);
        self.recent.send_modify(|r| r.push(info));
    }

    /// The config in effect from now on (log settings and the health probe included).
    pub(super) fn set_config(&mut self, cfg: Arc<ScriptConfig>) {
        self.logs.set_config(cfg.max_log_lines, cfg.log);
        let old = std::mem::replace(&mut self.cfg, cfg);
        self.probe_config_changed(&old.health);
    }

    async fn handle(&mut self, cmd: RunnerCmd) {
        match cmd {
            RunnerCmd::Control(action, reply) => self.control(action, reply).await,
            RunnerCmd::Update(cfg, changes, reply) => self.update(cfg, changes, reply).await,
            RunnerCmd::Remove(reply) => {
                self.next_run = None;
                self.after_exit = AfterExit::Forget;
                if self.run.is_some() {
                    self.event(
                        ScriptEventKind::Stopped,
                        "removed from the config".into(),
                        None,
                    );
                    self.begin_stop();
                    self.waiters.push(Waiter::Removed(reply));
                } else {
                    let _ = reply.send(());
                }
            }
        }
    }
}
