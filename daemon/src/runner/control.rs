//! `ctl start|stop|restart|run`: answered at once, or when the run they stop has ended.

use super::schedule::human;
use super::{AfterExit, ControlError, Controlled, Reply, Runner, Waiter};
use scriptd_common::proto::{ControlAction, ScriptEventKind};
use tokio::time::Instant;

impl Runner {
    /// Carries out a `ctl` command; answers now, or once the run it stops has ended.
    pub(super) async fn control(&mut self, action: ControlAction, reply: Reply<Controlled>) {
        let running_pid = self.run.as_ref().map(|r| r.pid);
        let last_run = self.tally.run_id;
        let answer = match action {
            ControlAction::Start | ControlAction::Restart if !self.cfg.enabled => {
                Err(ControlError::Precondition(format!(
                    "{} is disabled in the config (enabled: false); enable it there, or use \
                     `ctl run {}` to run it once",
                    self.name, self.name
                )))
            }
            ControlAction::Start if running_pid.is_some() => {
                self.user_stopped = false;
                Ok(format!(
                    "already running (pid {})",
                    running_pid.unwrap_or_default()
                ))
            }
            ControlAction::Restart if running_pid.is_some() => {
                self.user_stopped = false;
                self.after_exit = AfterExit::Restart;
                self.begin_stop();
                self.waiters.push(Waiter::Control(reply));
                return;
            }
            ControlAction::Start | ControlAction::Restart => {
                self.user_stopped = false;
                self.tally.restarts = 0;
                self.start_run(false)
                    .await
                    .map(|pid| format!("started (pid {pid})"))
                    .map_err(ControlError::Spawn)
            }
            ControlAction::Stop => {
                let was_stopped = self.user_stopped;
                self.user_stopped = true;
                let due = self.next_run.take();
                if running_pid.is_some() {
                    self.after_exit = AfterExit::Stay;
                    self.event(ScriptEventKind::Stopped, "ctl stop".into(), None);
                    self.begin_stop();
                    self.waiters.push(Waiter::Control(reply));
                    return;
                }
                let until = "; it stays stopped until `ctl start`";
                Ok(match due {
                    Some(at) => {
                        let what = if self.cfg.is_periodic() {
                            "the next run"
                        } else {
                            "the pending restart"
                        };
                        let msg = format!(
                            "not running; cancelled {what} (due in {}){until}",
                            human(at.at.saturating_duration_since(Instant::now()))
                        );
                        self.event(ScriptEventKind::Stopped, format!("ctl stop: {msg}"), None);
                        msg
                    }
                    None if was_stopped => "already stopped".into(),
                    None if !self.cfg.enabled => "not running (disabled in the config)".into(),
                    None => format!("not running{until}"),
                })
            }
            // Refused, not "ok": a caller must never take the running run for its own.
            ControlAction::Run => match running_pid {
                Some(pid) => Err(ControlError::Precondition(format!(
                    "{name} is already running as run {id} (pid {pid}); follow it with `ctl \
                     logs -f {name} --run {id}`",
                    name = self.name,
                    id = self.tally.run_id
                ))),
                None => self
                    .start_run(true)
                    .await
                    .map(|pid| format!("started (pid {pid})"))
                    .map_err(ControlError::Spawn),
            },
            ControlAction::Unspecified => Err(ControlError::Precondition("no action given".into())),
        };
        let run_id = self.tally.run_id;
        let _ = reply.send(answer.map(|message| Controlled {
            message,
            run_id: if run_id == last_run { 0 } else { run_id },
        }));
    }
}
