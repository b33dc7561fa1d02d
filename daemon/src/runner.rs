//! One task per script owns its process and takes commands from a queue.
//!
//! The runner is the only code that starts, signals or reaps the script's runs. Reloads,
//! `ctl` commands and shutdown reach it as [`RunnerCmd`]s; what it is doing is published
//! on a `watch` channel that `Status` reads without asking the task.

use crate::events::EventBus;
use crate::logs::{self, LogSink, Stream};
use crate::now_ms;
pub use crate::process::SpawnError;
use crate::process::{self, GroupRecords, ShimExit, Shims};
use crate::runs::RecentRuns;
use nix::sys::signal::Signal;
use scriptd_common::config::{RestartPolicy, ScriptConfig};
use scriptd_common::diff::{apply_except_restart, diff_script, Change, Impact};
use scriptd_common::proto::{
    self, ControlAction, ExitInfo, ScriptEventKind, ScriptState, ScriptStatus,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to wait for a run's output pipes to drain after it exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The command does not apply in the script's current state.
    #[error("{0}")]
    Precondition(String),
    /// Starting the process failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The runner is gone (daemon shutting down).
    #[error("the script's runner has stopped (daemon shutting down?)")]
    Gone,
}

/// How a config update was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// In effect now.
    Applied,
    /// Restart-impact changes wait for the current run to end.
    Scheduled,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// The answer to a control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controlled {
    /// What happened, for people.
    pub message: String,
    /// The run the command started; 0 when it started none.
    pub run_id: u64,
}

/// Commands a runner takes.
pub enum RunnerCmd {
    /// `ctl start|stop|restart|run`.
    Control(ControlAction, Reply<Controlled>),
    /// A reload changed this script's config: the new config and the plan's rows for this
    /// script (their impacts decide what is restarted).
    Update(Box<ScriptConfig>, Vec<Change>, Reply<UpdateOutcome>),
    /// The script was removed: stop it and end the task.
    Remove(oneshot::Sender<()>),
}

/// What the rest of the daemon holds of a runner.
#[derive(Clone)]
pub struct ScriptHandle {
    /// Command queue.
    pub tx: mpsc::Sender<RunnerCmd>,
    /// Latest status.
    pub status: watch::Receiver<ScriptStatus>,
    /// The script's log pipeline.
    pub logs: Arc<LogSink>,
    /// The ends of its recent runs.
    pub recent: watch::Receiver<RecentRuns>,
}

impl ScriptHandle {
    /// Sends a control command and waits for its answer.
    pub async fn control(&self, action: ControlAction) -> Result<Controlled, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RunnerCmd::Control(action, tx))
            .await
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    /// Sends a new config with the plan's change rows for this script (diffed against the
    /// config the script last got) and waits until it is applied or scheduled.
    pub async fn update(
        &self,
        cfg: ScriptConfig,
        changes: Vec<Change>,
    ) -> Result<UpdateOutcome, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RunnerCmd::Update(Box::new(cfg), changes, tx))
            .await
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    /// Stops the script and ends its runner; returns once the process is gone.
    pub async fn remove(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(RunnerCmd::Remove(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// True when a periodic script has a run in progress.
    pub fn periodic_running(&self) -> bool {
        let s = self.status.borrow();
        s.kind == "periodic" && s.state == ScriptState::Running as i32
    }
}

/// What the daemon shares with every runner.
pub struct Shared {
    /// What every shim shares with the daemon: liveness pipe, report socket, reaper.
    pub shims: Shims,
    /// Event bus.
    pub events: EventBus,
    /// Directory of the log files.
    pub log_dir: std::path::PathBuf,
    /// Where the process group of every running script is recorded, for the startup sweep
    /// after a crash.
    pub groups: GroupRecords,
    /// Daemon shutdown.
    pub cancel: CancellationToken,
}

/// Starts the runner task of a script, which starts the script as its config says; the
/// receiver reports whether that first start succeeded (a disabled script counts as
/// started) once it has been attempted.
pub fn start_reporting(
    name: String,
    cfg: ScriptConfig,
    shared: Arc<Shared>,
    tracker: &tokio_util::task::TaskTracker,
) -> (ScriptHandle, oneshot::Receiver<Result<(), SpawnError>>) {
    let (initial, started) = oneshot::channel();
    let logs = LogSink::open(&shared.log_dir, &name, cfg.max_log_lines, cfg.log);
    let (tx, rx) = mpsc::channel(16);
    let status = ScriptStatus {
        run_id: logs.last_run_id(),
        name: name.clone(),
        kind: kind(&cfg).into(),
        enabled: cfg.enabled,
        interval_ms: cfg.interval.map_or(0, millis),
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (internal_tx, internal_rx) = mpsc::channel(4);
    let (recent_tx, recent_rx) = watch::channel(RecentRuns::default());
    let runner = Runner {
        name,
        cfg,
        pending: None,
        shared,
        logs: logs.clone(),
        status,
        status_tx,
        run: None,
        user_stopped: false,
        next_run: None,
        last_start: None,
        descriptors_reported: false,
        after_exit: AfterExit::Natural,
        waiters: Vec::new(),
        internal_tx,
        last_failed: false,
        recent: recent_tx,
    };
    tracker.spawn(runner.run(rx, internal_rx, initial));
    let handle = ScriptHandle {
        tx,
        status: status_rx,
        logs,
        recent: recent_rx,
    };
    (handle, started)
}

fn kind(cfg: &ScriptConfig) -> &'static str {
    if cfg.is_periodic() {
        "periodic"
    } else {
        "service"
    }
}

/// What to do when the current run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    /// Whatever the script's kind and policy say.
    Natural,
    /// Stay stopped (ctl stop, disabled).
    Stay,
    /// Start again at once (ctl restart, restart-impact change).
    Restart,
    /// End the task (removed, shutdown).
    Forget,
}

/// Someone waiting for the current run to end.
enum Waiter {
    Control(Reply<Controlled>),
    Update(Reply<UpdateOutcome>),
    Removed(oneshot::Sender<()>),
}

struct Run {
    id: u64,
    /// Pid of the script, the id of its process group.
    pid: u32,
    /// Start time of the script (clock ticks after boot), which tells its group from a later
    /// one with the same id.
    group_start: Option<u64>,
    started: Stamp,
    /// Timeout deadline, fixed when the run started.
    deadline: Option<Instant>,
    /// SIGKILL time once a stop began.
    kill_at: Option<Instant>,
    stopping: bool,
    timed_out: bool,
    /// The run was started by `ctl run` and does not move the schedule.
    one_off: bool,
}

/// From the per-run waiter task.
struct Exited {
    run_id: u64,
    /// `None` when the daemon stopped reaping (shutting down).
    status: Option<ShimExit>,
}

struct Runner {
    name: String,
    cfg: ScriptConfig,
    /// Config waiting for the current (periodic) run to end.
    pending: Option<ScriptConfig>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
    status: ScriptStatus,
    status_tx: watch::Sender<ScriptStatus>,
    run: Option<Run>,
    user_stopped: bool,
    /// Next periodic tick or backoff restart.
    next_run: Option<Stamp>,
    /// Start of the latest run.
    last_start: Option<Stamp>,
    /// Running out of descriptors was logged (once until a start succeeds).
    descriptors_reported: bool,
    after_exit: AfterExit,
    waiters: Vec<Waiter>,
    internal_tx: mpsc::Sender<Exited>,
    last_failed: bool,
    /// The ends of the latest runs, for `WaitRun`.
    recent: watch::Sender<RecentRuns>,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A moment as a monotonic instant (what timers use) and as wall-clock milliseconds (what
/// status shows), read together once: a time derived from another (the next run from the
/// last start) is shown exactly that far from it, and does not move between two `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    at: Instant,
    wall_ms: i64,
}

impl Stamp {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    /// `d` later.
    fn after(self, d: Duration) -> Self {
        let at = later(self.at, d);
        Self {
            at,
            wall_ms: self
                .wall_ms
                .saturating_add(i64::try_from(millis(at - self.at)).unwrap_or(i64::MAX)),
        }
    }
}

/// `at + d`, without the panic of `+` on overflow: validation caps durations at 100 years,
/// and a far future is as good as never.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(scriptd_common::units::MAX_DURATION))
        .unwrap_or(at)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people, to the millisecond.
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(millis(d))).to_string()
}

impl Runner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<RunnerCmd>,
        mut internal: mpsc::Receiver<Exited>,
        initial: oneshot::Sender<Result<(), SpawnError>>,
    ) {
        let first = if self.active() {
            self.start_run(false).await.map(|_| ())
        } else {
            Ok(())
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
                cmd = rx.recv(), if !shutting_down => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => {
                        self.after_exit = AfterExit::Forget;
                        self.begin_stop();
                    }
                },
                Some(exited) = internal.recv() => self.on_exit(exited).await,
                _ = sleep_until(wake) => self.on_timer().await,
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
            self.next_run.map(|n| n.at),
            run.and_then(|r| if r.stopping { None } else { r.deadline }),
            run.and_then(|r| r.kill_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn active(&self) -> bool {
        self.cfg.enabled && !self.user_stopped
    }

    fn publish(&mut self) {
        let s = &mut self.status;
        s.kind = kind(&self.cfg).into();
        s.enabled = self.cfg.enabled;
        s.interval_ms = self.cfg.interval.map_or(0, millis);
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
        s.state = if self.run.is_some() {
            ScriptState::Running
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

    fn event(&self, kind: ScriptEventKind, message: String, exit: Option<ExitInfo>) {
        self.shared.events.script(proto::ScriptEvent {
            script: self.name.clone(),
            kind: kind as i32,
            run_id: self.status.run_id,
            pid: self.run.as_ref().map_or(0, |r| r.pid),
            exit,
            message,
        });
    }

    /// Starts a run now. `one_off`: `ctl run`, which leaves the schedule alone.
    async fn start_run(&mut self, one_off: bool) -> Result<u32, SpawnError> {
        let run_id = self.status.run_id + 1;
        self.status.run_id = run_id;
        self.last_failed = false;
        // One moment is the run's start and the base of its schedule and deadline.
        let now = Stamp::now();
        if self.cfg.is_periodic() && !one_off && self.active() {
            self.next_run = self.cfg.interval.map(|i| now.after(i));
        } else if !self.cfg.is_periodic() {
            self.next_run = None;
        }
        match process::spawn(&self.name, run_id, &self.cfg, &self.shared.shims).await {
            Ok(spawned) => {
                let pid = spawned.pid;
                self.descriptors_reported = false;
                self.status.run_count += 1;
                self.status.last_start_ms = now.wall_ms;
                self.last_start = Some(now);
                let group_start = self
                    .shared
                    .groups
                    .record(&self.name, pid, spawned.shim_pid, run_id)
                    .await;
                self.run = Some(Run {
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
                });
                self.logs
                    .system(run_id, format!("run {run_id} started (pid {pid})"));
                self.event(ScriptEventKind::Started, format!("pid {pid}"), None);
                let tx = self.internal_tx.clone();
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
                    let _ = tx.send(Exited { run_id, status }).await;
                });
                self.publish();
                Ok(pid)
            }
            Err(e) => {
                if !e.is_descriptor_limit() {
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
                self.event(
                    ScriptEventKind::Exited,
                    format!("failed to start: {e}"),
                    Some(info),
                );
                self.last_failed = true;
                if !self.cfg.is_periodic() && !one_off {
                    self.schedule_restart(run_id, true, Duration::ZERO);
                }
                self.publish();
                Err(e)
            }
        }
    }

    /// Sends the stop signal to the run's group; SIGKILL follows after `stop_grace`.
    fn begin_stop(&mut self) {
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

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(run) = self.run.as_mut() {
            if run.kill_at.is_some_and(|t| t <= now) {
                run.kill_at = None;
                process::signal_group(run.pid, Signal::SIGKILL);
                let pid = run.pid;
                self.logs.system(
                    self.status.run_id,
                    format!("still running after stop_grace: SIGKILL to process group {pid}"),
                );
            }
            let run = self.run.as_mut();
            if let Some(run) = run.filter(|r| !r.stopping && r.deadline.is_some_and(|t| t <= now)) {
                run.timed_out = true;
                let timeout = self.cfg.timeout.unwrap_or_default();
                self.logs.system(
                    self.status.run_id,
                    format!(
                        "run {} timed out after {}",
                        self.status.run_id,
                        humantime::format_duration(timeout)
                    ),
                );
                self.event(ScriptEventKind::TimedOut, String::new(), None);
                self.begin_stop();
            }
        }
        if self.next_run.is_some_and(|t| t.at <= now) {
            if self.run.is_some() {
                // A periodic tick while the previous run is still going: skipped, counted.
                if let Some(interval) = self.cfg.interval {
                    let mut next = self.next_run.unwrap_or_else(Stamp::now);
                    while next.at <= now {
                        next = next.after(interval);
                    }
                    self.next_run = Some(next);
                    self.status.skipped_ticks += 1;
                    self.event(
                        ScriptEventKind::TickSkipped,
                        "previous run still going".into(),
                        None,
                    );
                } else {
                    self.next_run = None;
                }
            } else if self.active() {
                self.next_run = None;
                let restart = !self.cfg.is_periodic() && self.status.run_count > 0;
                if self.start_run(false).await.is_ok() && restart {
                    self.event(
                        ScriptEventKind::Restarted,
                        format!("restart {} after backoff", self.status.restarts),
                        None,
                    );
                }
            } else {
                // Stopped or disabled since this was scheduled: nothing starts.
                self.next_run = None;
            }
        }
    }

    /// Schedules the next start of a service that ended, if its policy wants one: after
    /// `restart_delay`, doubling with each consecutive restart up to `restart_delay_max`; a
    /// run that lasted `restart_reset_after` starts over. The delay goes to the script's log.
    fn schedule_restart(&mut self, run_id: u64, failed: bool, ran_for: Duration) {
        let wants = match self.cfg.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !wants || !self.active() {
            return;
        }
        let backoff = self.cfg.backoff;
        if ran_for >= backoff.reset_after {
            self.status.restarts = 0;
        }
        let delay = backoff.delay_for(self.status.restarts);
        self.status.restarts = self.status.restarts.saturating_add(1);
        self.next_run = Some(Stamp::now().after(delay));
        self.logs.system(
            run_id,
            format!(
                "restarting in {} (restart {} since the last stable run)",
                human(delay),
                self.status.restarts
            ),
        );
    }

    async fn on_exit(&mut self, exited: Exited) {
        let Some(run) = self.run.take_if(|r| r.id == exited.run_id) else {
            return;
        };
        let ran_for = run.started.at.elapsed();
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
        let failed = run.timed_out || info.code != Some(0);
        self.last_failed = failed;
        let how = match (info.code, info.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {}", signal_name(s)),
            _ => "unknown status".into(),
        };
        let how = if run.timed_out {
            format!("{how}, timed out")
        } else {
            how
        };
        self.logs.system(
            run.id,
            format!(
                "run {} ended: {how} after {}",
                run.id,
                humantime::format_duration(Duration::from_millis(info.duration_ms))
            ),
        );
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
                self.status.restarts = 0;
                let r = self.start_run(false).await;
                if r.is_ok() {
                    self.event(ScriptEventKind::Restarted, String::new(), None);
                }
                start_result = Some(r);
            }
            AfterExit::Natural => {
                if !self.cfg.is_periodic() && !run.one_off {
                    self.schedule_restart(run.id, failed, ran_for);
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
                            run_id: self.status.run_id,
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

    /// The end of a run: the last exit of the status, and in the record `WaitRun` reads
    /// (before the status without the run is published, see [`crate::runs::state_of`]).
    fn record_exit(&mut self, info: ExitInfo) {
        self.status.last_exit = Some(info);
        self.recent.send_modify(|r| r.push(info));
    }

    fn set_config(&mut self, cfg: ScriptConfig) {
        self.logs.set_config(cfg.max_log_lines, cfg.log);
        self.cfg = cfg;
    }

    async fn handle(&mut self, cmd: RunnerCmd) {
        match cmd {
            RunnerCmd::Control(action, reply) => self.control(action, reply).await,
            RunnerCmd::Update(cfg, changes, reply) => self.update(*cfg, changes, reply).await,
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

    async fn control(&mut self, action: ControlAction, reply: Reply<Controlled>) {
        let running_pid = self.run.as_ref().map(|r| r.pid);
        let last_run = self.status.run_id;
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
                self.status.restarts = 0;
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
                    id = self.status.run_id
                ))),
                None => self
                    .start_run(true)
                    .await
                    .map(|pid| format!("started (pid {pid})"))
                    .map_err(ControlError::Spawn),
            },
            ControlAction::Unspecified => Err(ControlError::Precondition("no action given".into())),
        };
        let run_id = self.status.run_id;
        let _ = reply.send(answer.map(|message| Controlled {
            message,
            run_id: if run_id == last_run { 0 } else { run_id },
        }));
    }

    async fn update(
        &mut self,
        new: ScriptConfig,
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
            self.apply_in_place(now_cfg, reply, UpdateOutcome::Scheduled)
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
        self.apply_schedule_fields(&old, &new);
        self.set_config(new);
        let result = if !self.active() {
            self.next_run = None;
            Ok(UpdateOutcome::Applied)
        } else if !self.cfg.is_periodic() {
            self.status.restarts = 0;
            self.start_run(false).await.map(|_| UpdateOutcome::Applied)
        } else {
            if self.next_run.is_none() || !old.is_periodic() {
                // Enabled, or a service that became periodic: its first run is now.
                self.next_run = Some(Stamp::now());
            }
            Ok(UpdateOutcome::Applied)
        };
        let _ = reply.send(result.map_err(ControlError::Spawn));
    }

    /// Applies a config whose restart-impact fields are the ones in effect: nothing is
    /// restarted. Disabling stops a service now; a periodic run in progress finishes.
    async fn apply_in_place(
        &mut self,
        new: ScriptConfig,
        reply: Reply<UpdateOutcome>,
        outcome: UpdateOutcome,
    ) {
        let old = self.cfg.clone();
        let (enabling, disabling) = (!old.enabled && new.enabled, old.enabled && !new.enabled);
        let interval = new.interval;
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
            if !running {
                let r = self.start_run(false).await;
                let _ = reply.send(r.map(|_| outcome).map_err(ControlError::Spawn));
                return;
            }
            self.after_exit = AfterExit::Natural;
            if let Some(interval) = interval {
                self.next_run = Some(Stamp::now().after(interval));
            }
        } else {
            let new = self.cfg.clone();
            self.apply_schedule_fields(&old, &new);
        }
        let _ = reply.send(Ok(outcome));
    }

    /// A changed interval reschedules the next run from the last start; nothing is killed.
    fn apply_schedule_fields(&mut self, old: &ScriptConfig, new: &ScriptConfig) {
        if old.interval == new.interval || self.next_run.is_none() {
            return;
        }
        if let (Some(_), Some(interval)) = (old.interval, new.interval) {
            let now = Stamp::now();
            let base = self
                .run
                .as_ref()
                .map(|r| r.started)
                .or(self.last_start)
                .unwrap_or(now);
            let next = base.after(interval);
            self.next_run = Some(if next.at > now.at { next } else { now });
        }
    }
}

fn signal_name(sig: i32) -> String {
    scriptd_common::signals::describe(sig, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_stamp_later_shows_exactly_that_much_later(ms in 0u64..3_153_600_000_000) {
            let now = Stamp::now();
            let next = now.after(Duration::from_millis(ms));
            proptest::prop_assert_eq!(next.wall_ms - now.wall_ms, ms as i64);
            proptest::prop_assert_eq!(next.at - now.at, Duration::from_millis(ms));
        }
    }
}
