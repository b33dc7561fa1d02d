//! The reload coordinator: the one owner of the running config.
//!
//! Every trigger (watcher, `ctl reload`, SIGHUP, dry runs) becomes a [`Request`] on one
//! queue, handled one at a time, in order: read → validate → diff → classify → reject or
//! apply → publish. Either the whole new version runs or the old one does.

use crate::events::EventBus;
use crate::history::{History, HistoryError, Record};
use crate::runner::{self, ControlError, ScriptHandle, Shared, UpdateOutcome};
use scriptd_common::config::{self, Config, ConfigErrors, ConfigSource, ScriptConfig};
use scriptd_common::diff::{self, Change, Impact, Outcome, Plan, ScriptPlan};
use scriptd_common::proto::{self, ReloadPhase, ReloadResult};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file watcher.
    Watch,
    /// `ctl reload`.
    Ctl,
    /// SIGHUP.
    Signal,
    /// `ctl rollback`.
    Rollback,
}

impl Source {
    /// Spelling in events and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Ctl => "ctl",
            Self::Signal => "signal",
            Self::Rollback => "rollback",
        }
    }
}

/// A reload (or dry run) to perform.
pub struct Request {
    /// Trigger.
    pub source: Source,
    /// Only a preview.
    pub dry_run: bool,
    /// Apply only if the plan id still matches.
    pub plan_id: Option<String>,
    /// Apply the files of this recorded version instead of the files on disk (rollback);
    /// `Some(0)` means the version before the running one.
    pub target: Option<u64>,
    /// Uid of the ctl user who asked.
    pub uid: Option<u32>,
    /// The files as the watcher validated them while its debounce window was open: used
    /// when the files read for the attempt hash the same, which takes the validation off
    /// the path from a save to the change running.
    pub prevalidated: Option<Prevalidated>,
    /// Where the result goes.
    pub reply: Option<oneshot::Sender<Report>>,
}

/// A config validated ahead of its reload (see [`Request::prevalidated`]).
#[derive(Debug)]
pub struct Prevalidated {
    /// Hash of the files validated.
    hash: String,
    config: Config,
}

impl Prevalidated {
    /// Reads and validates the config at `main` as a reload would; `None` when it is not
    /// valid (the reload then finds and reports why).
    pub fn read(main: &Path) -> Option<Self> {
        let source = config::read_source(main)
            .and_then(config::secure_source)
            .ok()?;
        let config = config::validate(&source).ok()?;
        Some(Self {
            hash: source.hash(),
            config,
        })
    }
}

impl Request {
    /// A request from `source` for the files on disk, no reply wanted.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            dry_run: false,
            plan_id: None,
            target: None,
            uid: None,
            prevalidated: None,
            reply: None,
        }
    }
}

/// The result of one attempt (or dry run).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Attempt id (0 for dry runs).
    pub attempt_id: u64,
    /// How it ended.
    pub result: Option<ReloadResult>,
    /// Version running after it.
    pub version: u64,
    /// Version the plan was computed against.
    pub base_version: u64,
    /// Plan id.
    pub plan_id: String,
    /// Changes with outcomes.
    pub changes: Vec<Change>,
    /// Validation errors.
    pub errors: ConfigErrors,
    /// Why it was rejected or failed.
    pub message: String,
    /// The requested version does not exist (rollback).
    pub not_found: bool,
    /// Rollback: the files on disk could not be rewritten to match the running version.
    pub disk_differs: bool,
}

/// What the rest of the daemon may read of the running state.
pub struct Snapshot {
    /// Running version number.
    pub version: u64,
    /// Hash of the running version's files.
    pub hash: String,
    /// Running config.
    pub config: Arc<Config>,
    /// One handle per script (shared with the coordinator until a script is added or
    /// removed: publishing a snapshot copies no map).
    pub handles: Arc<BTreeMap<String, ScriptHandle>>,
}

/// Time spent in each step of one attempt, for the debug log.
struct Steps {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends the step `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.1}ms", d.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// Plan id: the base version and the new files' hash, so a plan previewed against one
/// version and one set of files is never applied to another.
pub fn plan_id(base_version: u64, new_hash: &str) -> String {
    format!("v{base_version}-{}", &new_hash[..new_hash.len().min(16)])
}

/// The coordinator task's state.
pub struct Coordinator {
    main: PathBuf,
    version: u64,
    source: ConfigSource,
    /// `source.hash()`, computed once per version.
    hash: String,
    config: Arc<Config>,
    handles: Arc<BTreeMap<String, ScriptHandle>>,
    shared: Arc<Shared>,
    events: EventBus,
    tracker: TaskTracker,
    snapshot: watch::Sender<Arc<Snapshot>>,
    attempts: u64,
    history: History,
}

impl Coordinator {
    /// Starts every script of the startup config and returns the coordinator, the snapshot
    /// receiver, and one receiver per script that reports once its first start was tried.
    #[allow(clippy::type_complexity)]
    pub fn start(
        main: PathBuf,
        source: ConfigSource,
        config: Config,
        shared: Arc<Shared>,
        tracker: TaskTracker,
        history: History,
    ) -> Result<
        (
            Self,
            watch::Receiver<Arc<Snapshot>>,
            Vec<oneshot::Receiver<Result<(), String>>>,
        ),
        HistoryError,
    > {
        // The startup version is recorded only if it differs from the last one.
        let hash = source.hash();
        let version = match history.latest()? {
            Some((v, latest)) if latest == hash => v,
            latest => {
                let v = latest.map_or(1, |(v, _)| v + 1);
                history.record_version(
                    v,
                    &source,
                    &Record {
                        attempt_id: 0,
                        source: "startup",
                        rollback_from: None,
                        uid: None,
                        result: "applied",
                        message: "",
                        changes: &[],
                        errors: &[],
                    },
                )?;
                v
            }
        };
        let attempts = history.max_attempt()?;
        let mut started = Vec::new();
        let mut handles = BTreeMap::new();
        for (name, cfg) in &config.scripts {
            let (h, first) =
                runner::start_reporting(name.clone(), cfg.clone(), shared.clone(), &tracker);
            handles.insert(name.clone(), h);
            started.push(first);
        }
        let handles = Arc::new(handles);
        let config = Arc::new(config);
        let snap = Arc::new(Snapshot {
            version,
            hash: hash.clone(),
            config: config.clone(),
            handles: handles.clone(),
        });
        let (tx, rx) = watch::channel(snap);
        let events = shared.events.clone();
        Ok((
            Self {
                main,
                version,
                source,
                hash,
                config,
                handles,
                shared,
                events,
                tracker,
                snapshot: tx,
                attempts,
                history,
            },
            rx,
            started,
        ))
    }

    /// Handles requests one at a time until the queue closes or the daemon shuts down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let cancel = self.shared.cancel.clone();
        loop {
            let req = tokio::select! {
                _ = cancel.cancelled() => break,
                req = rx.recv() => match req { Some(r) => r, None => break },
            };
            let mut req = req;
            let report = self.handle(&mut req).await;
            if let Some(reply) = req.reply {
                let _ = reply.send(report);
            }
        }
    }

    /// Publishes the running state; returns the previous snapshot, whose config the caller
    /// may drop once nobody waits any more.
    fn publish_snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.send_replace(Arc::new(Snapshot {
            version: self.version,
            hash: self.hash.clone(),
            config: self.config.clone(),
            handles: self.handles.clone(),
        }))
    }

    fn phase(&self, id: u64, source: Source, phase: ReloadPhase, report: &Report) {
        if id == 0 {
            return;
        }
        self.events.reload(proto::ReloadEvent {
            attempt_id: id,
            phase: phase as i32,
            source: source.as_str().into(),
            version: report.version,
            changes: report.changes.iter().map(crate::convert::change).collect(),
            errors: report.errors.0.iter().map(crate::convert::error).collect(),
            message: report.message.clone(),
        });
    }

    async fn handle(&mut self, req: &mut Request) -> Report {
        let mut steps = Steps::new();
        let mut rollback_from = None;
        let loaded = match req.target {
            None => config::read_source(&self.main).and_then(config::secure_source),
            Some(wanted) => {
                let history = self.history.clone();
                let running = self.version;
                let found = tokio::task::block_in_place(|| {
                    let v = match wanted {
                        0 => history.previous(running)?,
                        v => Some(v),
                    };
                    Ok::<_, HistoryError>(match v {
                        Some(v) => history.version(v)?.map(|(_, files)| (v, files)),
                        None => None,
                    })
                });
                match found {
                    Ok(Some((v, files))) => {
                        rollback_from = Some(v);
                        Ok(ConfigSource {
                            main: self.main.clone(),
                            files,
                        })
                    }
                    Ok(None) => {
                        return Report {
                            not_found: true,
                            version: self.version,
                            message: if wanted == 0 {
                                format!("no version before {} in the history", self.version)
                            } else {
                                format!("no version {wanted} in the history (see `ctl history`)")
                            },
                            ..Default::default()
                        }
                    }
                    Err(e) => Err(ConfigErrors::file("history", e.to_string())),
                }
            }
        };
        if !req.dry_run {
            crate::notify_systemd(crate::Notify::Reloading);
        }
        steps.mark("read");
        let mut report = self.attempt(req, loaded, &mut steps).await;
        if req.dry_run {
            return report;
        }
        crate::notify_systemd(crate::Notify::Ready);
        let disk_touched = match rollback_from {
            Some(target) => self.write_back_rollback(target, &mut report),
            None => false,
        };
        self.record(req, rollback_from, disk_touched, &mut report);
        steps.mark("record");
        // Written back and recorded before anyone is told: a client that reacts to the
        // terminal event or the new snapshot finds the files and the history up to date.
        let mut retired = None;
        let terminal = match report.result {
            Some(ReloadResult::Applied) => {
                retired = Some(self.publish_snapshot());
                ReloadPhase::Applied
            }
            Some(ReloadResult::Unchanged) => ReloadPhase::Unchanged,
            Some(ReloadResult::FailedRolledBack) => ReloadPhase::FailedRolledBack,
            _ => ReloadPhase::Rejected,
        };
        self.phase(report.attempt_id, req.source, terminal, &report);
        steps.mark("publish");
        // The previous version's config is freed after everyone was told.
        drop(retired);
        tracing::debug!(attempt = report.attempt_id, "reload steps: {steps}");
        report
    }

    /// A rollback that left the target's files running (applied, or already running) writes
    /// them to disk, before anything is recorded: a `kill -9` in between leaves disk and
    /// runtime agreeing, and the next start records the files as a startup version instead
    /// of undoing the rollback. A failure sets `disk_differs` (ctl exits 3) and says what to
    /// do. Returns whether the disk was (or was to be) changed.
    fn write_back_rollback(&self, target: u64, report: &mut Report) -> bool {
        let unchanged = match report.result {
            Some(ReloadResult::Applied) => false,
            Some(ReloadResult::Unchanged) => true,
            _ => return false,
        };
        let running = self.version;
        match tokio::task::block_in_place(|| write_back(&self.main, &self.source)) {
            Ok(written) => {
                if unchanged {
                    let what = if target == running {
                        format!("version {running} is running")
                    } else {
                        format!("version {target}'s files are running (as version {running})")
                    };
                    report.message = if written {
                        format!("{what}; the files on disk were rewritten to match")
                    } else {
                        format!("{what} and on disk; nothing to do")
                    };
                }
                written
            }
            Err(e) => {
                report.disk_differs = true;
                report.message = format!(
                    "version {running} is running, but the files on disk could not be rewritten \
                     to match it ({e}): disk and runtime disagree, and the next save, `ctl \
                     reload` or daemon restart applies what is on disk; fix the cause, then run \
                     `ctl rollback {running}` to write the files again"
                );
                tracing::error!(attempt = report.attempt_id, "{}", report.message);
                true
            }
        }
    }

    /// Records the attempt: an applied version with its files, a refused one with its
    /// errors, an unchanged one only if it was a rollback that rewrote (or failed to
    /// rewrite) the files on disk. A failure to record does not undo the reload (the
    /// version is live): it is added to the message, and so to the terminal event and to
    /// ctl's output, and logged.
    fn record(
        &self,
        req: &Request,
        rollback_from: Option<u64>,
        disk_touched: bool,
        report: &mut Report,
    ) {
        let result = match report.result {
            Some(ReloadResult::Applied) => "applied",
            Some(ReloadResult::FailedRolledBack) => "failed-rolled-back",
            Some(ReloadResult::Unchanged) if disk_touched => "unchanged",
            Some(ReloadResult::Unchanged) => return,
            _ => "rejected",
        };
        let changes: Vec<_> = report.changes.iter().map(crate::convert::change).collect();
        let errors: Vec<_> = report.errors.0.iter().map(crate::convert::error).collect();
        let rec = Record {
            attempt_id: report.attempt_id,
            source: req.source.as_str(),
            rollback_from,
            uid: req.uid,
            result,
            message: &report.message,
            changes: &changes,
            errors: &errors,
        };
        let recorded = tokio::task::block_in_place(|| {
            if result == "applied" {
                self.history
                    .record_version(self.version, &self.source, &rec)
            } else {
                self.history.record_attempt(&rec)
            }
        });
        if let Err(e) = recorded {
            let note = if result == "applied" {
                format!(
                    "version {} is running but could not be recorded in the history ({e}): `ctl \
                     history` does not list it and `ctl rollback` cannot return to it; check \
                     that {} is writable and its disk not full",
                    self.version,
                    self.history.dir().display()
                )
            } else {
                format!("this attempt could not be recorded in the history ({e})")
            };
            tracing::error!(attempt = report.attempt_id, "{note}");
            report.message = if report.message.is_empty() {
                note
            } else {
                format!("{}; {note}", report.message)
            };
        }
    }

    async fn attempt(
        &mut self,
        req: &mut Request,
        loaded: Result<ConfigSource, ConfigErrors>,
        steps: &mut Steps,
    ) -> Report {
        let id = if req.dry_run {
            0
        } else {
            self.attempts += 1;
            self.attempts
        };
        let mut report = Report {
            attempt_id: id,
            version: self.version,
            base_version: self.version,
            ..Default::default()
        };
        self.phase(id, req.source, ReloadPhase::Detected, &report);

        let source = match loaded {
            Ok(s) => s,
            Err(errors) => return self.reject_invalid(id, report, errors),
        };
        let new_hash = source.hash();
        report.plan_id = plan_id(self.version, &new_hash);
        // Decided before the unchanged short cut: files that hash the same as the running
        // version do not prove that the base did not move since the plan was previewed.
        let stale = req
            .plan_id
            .as_ref()
            .filter(|wanted| **wanted != report.plan_id)
            .map(|wanted| {
                format!(
                    "plan {wanted} is stale: the running version or the files moved since it was \
                     previewed (now {}); preview again with `ctl reload --dry-run`",
                    report.plan_id
                )
            });
        if new_hash == self.hash {
            if let Some(msg) = stale {
                report.result = Some(ReloadResult::Rejected);
                report.message = msg;
                return report;
            }
            report.result = Some(ReloadResult::Unchanged);
            report.message = "the files on disk are the running version; nothing to do".into();
            if id != 0 {
                tracing::info!(
                    attempt = id,
                    source = req.source.as_str(),
                    "config unchanged, nothing to do"
                );
            }
            return report;
        }
        let prevalidated = req.prevalidated.take().filter(|p| p.hash == new_hash);
        let new = match prevalidated {
            Some(p) => p.config,
            None => match config::validate(&source) {
                Ok(c) => c,
                Err(errors) => return self.reject_invalid(id, report, errors),
            },
        };
        steps.mark("validate");
        self.phase(id, req.source, ReloadPhase::Validated, &report);

        let handles = &self.handles;
        let plan = diff::plan(&self.config, &new, &|name: &str| {
            handles
                .get(name)
                .is_some_and(ScriptHandle::periodic_running)
        });
        report.changes = plan.changes.clone();
        self.phase(id, req.source, ReloadPhase::Planned, &report);
        steps.mark("plan");

        if let Some(msg) = stale {
            report.result = Some(ReloadResult::Rejected);
            report.message = msg;
            for c in &mut report.changes {
                c.outcome = Outcome::Rejected;
            }
            return report;
        }
        if let Some(reason) = &plan.rejected {
            report.result = Some(ReloadResult::Rejected);
            report.message = reason.clone();
            if id != 0 {
                tracing::warn!(attempt = id, "reload rejected: {reason}");
            }
            return report;
        }
        if req.dry_run {
            report.result = Some(ReloadResult::Applied);
            return report;
        }

        self.phase(id, req.source, ReloadPhase::Applying, &report);
        let applied = self.apply(&plan).await;
        steps.mark("apply");
        match applied {
            Ok(outcomes) => {
                for c in &mut report.changes {
                    if c.impact == Impact::Restart {
                        if let Some(UpdateOutcome::Scheduled) = outcomes.get(&c.script) {
                            c.outcome = Outcome::Scheduled;
                            c.reason = "a run is in progress; applies when it ends".into();
                        } else {
                            c.outcome = Outcome::Applied;
                            c.reason.clear();
                        }
                    }
                }
                self.version += 1;
                self.source = source;
                self.hash = new_hash;
                self.config = Arc::new(new);
                report.version = self.version;
                report.result = Some(ReloadResult::Applied);
                tracing::info!(
                    attempt = id,
                    version = self.version,
                    changes = report.changes.len(),
                    source = req.source.as_str(),
                    "reload applied"
                );
            }
            Err(msg) => {
                report.result = Some(ReloadResult::FailedRolledBack);
                report.message = msg;
                tracing::error!(attempt = id, "reload failed: {}", report.message);
            }
        }
        report
    }

    fn reject_invalid(&self, id: u64, mut report: Report, errors: ConfigErrors) -> Report {
        report.result = Some(ReloadResult::Rejected);
        report.message = format!(
            "the config is invalid ({} error{}); the running version stays",
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        );
        if id != 0 {
            // One bounded line however many errors: `ctl reload` and `--check` list them all.
            tracing::warn!(attempt = id, "{}: {}", report.message, errors.summary(10));
        }
        report.errors = errors;
        report
    }

    /// Applies a plan; on failure puts every touched script back as it was.
    async fn apply(&mut self, plan: &Plan) -> Result<BTreeMap<String, UpdateOutcome>, String> {
        let mut set = tokio::task::JoinSet::new();
        let mut added = Vec::new();
        for (name, p) in &plan.scripts {
            match p {
                ScriptPlan::Changed(cfg) => {
                    if let Some(h) = self.handles.get(name).cloned() {
                        let (name, cfg) = (name.clone(), cfg.clone());
                        set.spawn(async move {
                            let r = h.update(cfg).await;
                            (name, r)
                        });
                    }
                }
                ScriptPlan::Added(cfg) => {
                    let (h, started) = runner::start_reporting(
                        name.clone(),
                        cfg.clone(),
                        self.shared.clone(),
                        &self.tracker,
                    );
                    added.push(name.clone());
                    Arc::make_mut(&mut self.handles).insert(name.clone(), h);
                    let name = name.clone();
                    set.spawn(async move {
                        let r = match started.await {
                            Ok(Ok(())) => Ok(UpdateOutcome::Applied),
                            Ok(Err(e)) => Err(ControlError::Spawn(e)),
                            Err(_) => Err(ControlError::Gone),
                        };
                        (name, r)
                    });
                }
                ScriptPlan::Removed => {}
            }
        }
        let mut outcomes = BTreeMap::new();
        let mut failures = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((name, Ok(o))) => {
                    outcomes.insert(name, o);
                }
                Ok((name, Err(e))) => failures.push(format!("{name}: {e}")),
                Err(e) => failures.push(format!("internal error: {e}")),
            }
        }
        if !failures.is_empty() {
            let failed_back = self.roll_back(plan, &added).await;
            return Err(if failed_back.is_empty() {
                format!(
                    "could not apply ({}); the previous version was put back",
                    failures.join("; ")
                )
            } else {
                format!(
                    "could not apply ({}); putting the previous version back failed too ({}): \
                     those scripts have their previous config but are not running it; fix the \
                     cause, then save again or `ctl restart` them",
                    failures.join("; "),
                    failed_back.join("; ")
                )
            });
        }
        let mut removals = tokio::task::JoinSet::new();
        for (name, p) in &plan.scripts {
            if matches!(p, ScriptPlan::Removed) {
                if let Some(h) = Arc::make_mut(&mut self.handles).remove(name) {
                    removals.spawn(async move { h.remove().await });
                }
            }
        }
        removals.join_all().await;
        Ok(outcomes)
    }

    /// Puts every script the failed apply touched back as it was; returns what could not be
    /// (`name: error`).
    async fn roll_back(&mut self, plan: &Plan, added: &[String]) -> Vec<String> {
        let mut set = tokio::task::JoinSet::new();
        for name in added {
            if let Some(h) = Arc::make_mut(&mut self.handles).remove(name) {
                set.spawn(async move {
                    h.remove().await;
                    Ok(())
                });
            }
        }
        for (name, p) in &plan.scripts {
            if let (ScriptPlan::Changed(_), Some(old)) = (p, self.config.scripts.get(name)) {
                if let Some(h) = self.handles.get(name).cloned() {
                    let (name, old): (String, ScriptConfig) = (name.clone(), old.clone());
                    set.spawn(
                        async move { h.update(old).await.map(|_| ()).map_err(|e| (name, e)) },
                    );
                }
            }
        }
        let mut failed = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err((name, e))) => failed.push(format!("{name}: {e}")),
                Err(e) => failed.push(format!("internal error: {e}")),
            }
        }
        failed.sort();
        failed
    }
}

/// Why a rollback's files could not be written back: the path and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct WriteBackError {
    path: PathBuf,
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteBackError + '_ {
    move |source| WriteBackError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a version's files back to disk so disk, runtime and history agree; `false` when
/// the disk already holds exactly those files. In three steps, so that a failure in the
/// first (the likely one: no space, no permission) leaves the disk as it was:
/// 1. every file is written to a temp file beside its target and fsynced;
/// 2. each temp file is renamed over its target (a symlinked file is written through its
///    link), then the directories are fsynced;
/// 3. config files the version does not have are removed: every file that an include glob of
///    the version's main file, or of the main file on disk before step 2 (best effort: its
///    globs even when the rest of it does not parse), matches.
fn write_back(main: &Path, source: &ConfigSource) -> Result<bool, WriteBackError> {
    if config::read_source(main).is_ok_and(|s| s.files == source.files) {
        return Ok(false);
    }
    let base = source.base_dir();
    let mut patterns = config::read_text(main)
        .map(|text| config::include_patterns(&text))
        .unwrap_or_default();
    if let Some(target_main) = source.files.first() {
        patterns.extend(config::include_patterns(&target_main.content));
    }
    let stale: Vec<(String, PathBuf)> = config::include_matches(main, &patterns)
        .into_iter()
        .filter(|(name, _)| !source.files.iter().any(|f| f.name == *name))
        .collect();

    let mut staged = Vec::new();
    for file in &source.files {
        match stage(base, file) {
            Ok(s) => staged.push(s),
            Err(e) => {
                discard(&staged);
                return Err(e);
            }
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (i, (tmp, path)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            discard(&staged[i..]);
            return Err(at(path)(e));
        }
        dirs.insert(path.parent().unwrap_or(base).to_path_buf());
    }
    for (name, path) in &stale {
        tracing::info!(file = %name, "rollback: removing a config file the restored version does not have");
        std::fs::remove_file(path).map_err(at(path))?;
        dirs.insert(path.parent().unwrap_or(base).to_path_buf());
    }
    for dir in &dirs {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at(dir))?;
    }
    Ok(true)
}

/// Step 1 of [`write_back`] for one file: its content in a fsynced temp file beside the file
/// it replaces; returns (temp file, target).
fn stage(base: &Path, file: &config::ConfigFile) -> Result<(PathBuf, PathBuf), WriteBackError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let link = base.join(&file.name);
    let path = std::fs::canonicalize(&link).unwrap_or(link);
    let dir = path.parent().unwrap_or(base);
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.scriptd-rollback"));
    // Keep the replaced file's mode (a private config stays private); a new file gets 0644
    // whatever the umask. Never group/other-writable: the daemon would refuse it.
    let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777) & !0o022;
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(file.content.as_bytes())?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok((tmp, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(at(&tmp)(e))
        }
    }
}

/// Removes the temp files of a write-back that stopped half-way.
fn discard(staged: &[(PathBuf, PathBuf)]) {
    for (tmp, _) in staged {
        let _ = std::fs::remove_file(tmp);
    }
}
