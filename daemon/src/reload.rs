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
use std::path::PathBuf;
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
    /// Where the result goes.
    pub reply: Option<oneshot::Sender<Report>>,
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
    /// Starts every script of the startup config and returns the coordinator with the
    /// snapshot receiver.
    pub fn start(
        main: PathBuf,
        source: ConfigSource,
        config: Config,
        shared: Arc<Shared>,
        tracker: TaskTracker,
        history: History,
    ) -> Result<(Self, watch::Receiver<Arc<Snapshot>>), HistoryError> {
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
        let handles: Arc<BTreeMap<_, _>> = Arc::new(
            config
                .scripts
                .iter()
                .map(|(name, cfg)| {
                    (
                        name.clone(),
                        runner::start(name.clone(), cfg.clone(), shared.clone(), &tracker),
                    )
                })
                .collect(),
        );
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
            let report = self.handle(&req).await;
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

    async fn handle(&mut self, req: &Request) -> Report {
        let mut steps = Steps::new();
        let mut rollback_from = None;
        let loaded = match req.target {
            None => config::read_source(&self.main).and_then(|s| {
                config::check_permissions(&s)?;
                Ok(s)
            }),
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
            crate::notify_systemd("RELOADING=1");
        }
        steps.mark("read");
        let mut report = self.attempt(req, loaded, &mut steps).await;
        if req.dry_run {
            return report;
        }
        crate::notify_systemd("READY=1");
        let rec = Record {
            attempt_id: report.attempt_id,
            source: req.source.as_str(),
            rollback_from,
            uid: req.uid,
            result: match report.result {
                Some(ReloadResult::Applied) => "applied",
                Some(ReloadResult::FailedRolledBack) => "failed-rolled-back",
                Some(ReloadResult::Unchanged) => "unchanged",
                _ => "rejected",
            },
            message: &report.message,
            changes: &report
                .changes
                .iter()
                .map(crate::convert::change)
                .collect::<Vec<_>>(),
            errors: &report
                .errors
                .0
                .iter()
                .map(crate::convert::error)
                .collect::<Vec<_>>(),
        };
        let recorded = tokio::task::block_in_place(|| match report.result {
            Some(ReloadResult::Applied) => {
                self.history
                    .record_version(self.version, &self.source, &rec)
            }
            Some(ReloadResult::Unchanged) => Ok(()),
            _ => self.history.record_attempt(&rec),
        });
        if let Err(e) = recorded {
            tracing::error!("cannot record in the history: {e}");
        }
        steps.mark("record");
        if rollback_from.is_some() && report.result == Some(ReloadResult::Applied) {
            if let Err(e) = write_back(&self.main, &self.source) {
                let msg =
                    format!("applied, but the files on disk could not be rewritten to match: {e}");
                tracing::error!("{msg}");
                report.message = msg;
            }
        }
        // Recorded (and written back) before anyone is told: a client that reacts to the
        // terminal event or the new snapshot finds the history and the files up to date.
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

    async fn attempt(
        &mut self,
        req: &Request,
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
        let new = match config::validate(&source) {
            Ok(c) => c,
            Err(errors) => return self.reject_invalid(id, report, errors),
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
            tracing::warn!(
                attempt = id,
                "config invalid, keeping the running version:\n{errors}"
            );
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

/// Writes a version's files back to disk atomically (temp file, fsync, rename, fsync of the
/// directory), and removes config files on disk that the version does not have, so disk,
/// runtime and history agree. A symlinked file is written through its link.
fn write_back(main: &std::path::Path, source: &ConfigSource) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let base = source.base_dir().to_path_buf();
    let on_disk = config::read_source(main)
        .map(|s| s.files)
        .unwrap_or_default();
    for file in &source.files {
        let link = base.join(&file.name);
        let path = std::fs::canonicalize(&link).unwrap_or(link);
        let dir = path.parent().unwrap_or(&base).to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.scriptd-rollback"));
        // Keep the replaced file's mode (a private config stays private); a new file gets
        // 0644 whatever the umask. Never group/other-writable: the daemon would refuse it.
        let mode =
            std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777) & !0o022;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(file.content.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
    }
    for stale in on_disk
        .iter()
        .filter(|f| !source.files.iter().any(|s| s.name == f.name))
    {
        tracing::info!(file = %stale.name, "rollback: removing a config file the restored version does not have");
        std::fs::remove_file(base.join(&stale.name))?;
    }
    Ok(())
}
