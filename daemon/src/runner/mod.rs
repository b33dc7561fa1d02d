//! One task per script owns its process and takes commands from a queue.
//!
//! The runner is the only code that starts, signals or reaps the script's runs. Reloads,
//! `ctl` commands and shutdown reach it as [`RunnerCmd`]s; what it is doing is published
//! on a `watch` channel that `Status` reads without asking the task.
//!
//! | file | what lives there |
//! | --- | --- |
//! | `mod.rs` | what the rest of the daemon uses ([`ScriptHandle`], [`Shared`], [`start_reporting`]) and the runner's state |
//! | `task.rs` | the task: its loop over commands, run ends and timers |
//! | `lifecycle.rs` | a run's life: spawn, timeout, stop with grace, exit |
//! | `backoff.rs` | when a service that ended restarts (pure, with the method that applies it) |
//! | `schedule.rs` | moments (`Stamp`) and the periodic schedule's math, interval and calendar (pure) |
//! | `timer.rs` | planning the next periodic start, a calendar script's first start and `catch_up` |
//! | `last_slot.rs` | the latest slot each calendar script ran, in `state_dir/schedule/` |
//! | `control.rs` | `ctl start|stop|restart|run` |
//! | `update.rs` | a reload's new config: applied now or scheduled for the run's end |
//! | `health.rs` | the verdict of the run's health probe: healthy, unhealthy, restart |
//! | `status.rs` | the status snapshot published for `ctl status` |
//! | `ready.rs` | readiness: `starting` → `running` after `ready_after`, failed starts, and the [`Readiness`] record verifications read |

mod backoff;
mod control;
mod health;
mod last_slot;
mod lifecycle;
mod ready;
mod schedule;
mod status;
mod task;
mod timer;
mod update;

use crate::events::EventBus;
use crate::logs::LogSink;
use crate::metrics::RunCounters;
pub use crate::process::SpawnError;
use crate::process::{GroupRecords, ShimExit, Shims};
use crate::runs::RecentRuns;
use futures_channel::mpsc;
pub use last_slot::SlotRecords;
pub use ready::Readiness;
use schedule::{millis, Stamp};
use scriptd_common::config::ScriptConfig;
use scriptd_common::diff::Change;
use scriptd_common::proto::{ControlAction, ScriptState, ScriptStatus};
use status::{kind, Tally};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    Update(Arc<ScriptConfig>, Vec<Change>, Reply<UpdateOutcome>),
    /// The script was removed: stop it and end the task.
    Remove(oneshot::Sender<()>),
}

/// What the rest of the daemon holds of a runner.
#[derive(Clone)]
pub struct ScriptHandle {
    /// Command queue. Unbounded, and no backpressure is lost: every sender awaits the
    /// answer to its command, so the queue holds at most one command per request or reload
    /// in flight. `futures-channel`'s queue rather than tokio's: tokio allocates a channel's
    /// shared state (cache-padded, ~500 bytes) and its first block of 32 slots up front,
    /// ~1 KB for every script whether or not it ever gets a command; this one allocates
    /// ~120 bytes, then a node per command (issue 16).
    pub tx: mpsc::UnboundedSender<RunnerCmd>,
    /// Latest status.
    pub status: watch::Receiver<ScriptStatus>,
    /// The script's log pipeline.
    pub logs: Arc<LogSink>,
    /// The ends of its recent runs.
    pub recent: watch::Receiver<RecentRuns>,
    /// Its ended runs, counted for the metrics.
    pub runs: Arc<RunCounters>,
    /// Which runs became ready or failed to (what verifications and `--wait` read).
    pub readiness: watch::Receiver<Readiness>,
}

impl ScriptHandle {
    /// Sends a control command and waits for its answer.
    pub async fn control(&self, action: ControlAction) -> Result<Controlled, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .unbounded_send(RunnerCmd::Control(action, tx))
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    /// Sends a new config with the plan's change rows for this script (diffed against the
    /// config the script last got) and waits until it is applied or scheduled.
    pub async fn update(
        &self,
        cfg: Arc<ScriptConfig>,
        changes: Vec<Change>,
    ) -> Result<UpdateOutcome, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .unbounded_send(RunnerCmd::Update(cfg, changes, tx))
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    /// Stops the script and ends its runner; returns once the process is gone.
    pub async fn remove(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.unbounded_send(RunnerCmd::Remove(tx)).is_ok() {
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
    /// The latest slot each calendar script ran (`catch_up`).
    pub slots: SlotRecords,
    /// The daemon-wide event counters (reloads).
    pub metrics: crate::metrics::Metrics,
}

/// Starts the runner task of a script, which starts the script as its config says; the
/// receiver reports whether that first start succeeded (a disabled script counts as
/// started) once it has been attempted.
pub fn start_reporting(
    name: String,
    cfg: Arc<ScriptConfig>,
    shared: Arc<Shared>,
    tracker: &tokio_util::task::TaskTracker,
) -> (ScriptHandle, oneshot::Receiver<Result<(), SpawnError>>) {
    let (initial, started) = oneshot::channel();
    let logs = LogSink::open(&shared.log_dir, &name, cfg.max_log_lines, cfg.log);
    let (tx, rx) = mpsc::unbounded();
    let tally = Tally {
        run_id: logs.last_run_id(),
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(ScriptStatus {
        run_id: tally.run_id,
        name: name.clone(),
        kind: kind(&cfg).into(),
        enabled: cfg.enabled,
        interval_ms: cfg.interval.map_or(0, millis),
        ..Default::default()
    });
    let (recent_tx, recent_rx) = watch::channel(RecentRuns::default());
    let runs = Arc::new(RunCounters::default());
    let (readiness_tx, readiness_rx) = watch::channel(Readiness::default());
    let runner = Runner {
        name,
        cfg,
        pending: None,
        shared,
        logs: logs.clone(),
        tally,
        status_tx,
        run: None,
        user_stopped: false,
        next_run: None,
        next_slot: None,
        last_slot: None,
        last_start: None,
        descriptors_reported: false,
        after_exit: AfterExit::Natural,
        waiters: Vec::new(),
        last_failed: false,
        recent: recent_tx,
        probing: None,
        runs: runs.clone(),
        readiness: readiness_tx,
    };
    tracker.spawn(Box::new(runner).run(rx, initial));
    let handle = ScriptHandle {
        tx,
        status: status_rx,
        logs,
        recent: recent_rx,
        runs,
        readiness: readiness_rx,
    };
    (handle, started)
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
    /// Stopped because its health probe said unhealthy (`health.restart`).
    unhealthy: bool,
    /// When a service's run becomes ready (`ready_after` after its start); `None` once it is
    /// ready, and for periodic runs (ready when they succeed).
    ready_at: Option<Instant>,
    /// A service's run that lived for its `ready_after`.
    ready: bool,
    /// The run's end, from its waiter task (a channel per run, not one per script: an idle
    /// script holds none).
    ended: oneshot::Receiver<Option<ShimExit>>,
}

/// The end of a run, as its waiter task saw it.
struct Exited {
    run_id: u64,
    /// `None` when the daemon stopped reaping (shutting down).
    status: Option<ShimExit>,
}

struct Runner {
    name: String,
    cfg: Arc<ScriptConfig>,
    /// Config waiting for the current (periodic) run to end (boxed: rarely there, and the
    /// runner is part of every idle script's task).
    pending: Option<Arc<ScriptConfig>>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
    /// Its runs' counts, published in the status.
    tally: Tally,
    /// The status `ctl status` reads: the only copy, written in place by
    /// [`publish`](Runner::publish).
    status_tx: watch::Sender<ScriptStatus>,
    /// The current run (boxed: an idle script's runner holds no room for one).
    run: Option<Box<Run>>,
    user_stopped: bool,
    /// Next periodic tick or backoff restart.
    next_run: Option<Stamp>,
    /// The calendar slot (Unix ms) `next_run` is for.
    next_slot: Option<i64>,
    /// The latest calendar slot run or skipped: never planned again.
    last_slot: Option<i64>,
    /// Start of the latest run.
    last_start: Option<Stamp>,
    /// Running out of descriptors was logged (once until a start succeeds).
    descriptors_reported: bool,
    after_exit: AfterExit,
    waiters: Vec<Waiter>,
    last_failed: bool,
    /// The ends of the latest runs, for `WaitRun`.
    recent: watch::Sender<RecentRuns>,
    /// The health probe of the current run, with the channel of its results.
    probing: Option<health::Probing>,
    /// Runs ended, by result, and their durations (metrics).
    runs: Arc<RunCounters>,
    /// Which runs became ready or failed to.
    readiness: watch::Sender<Readiness>,
}
