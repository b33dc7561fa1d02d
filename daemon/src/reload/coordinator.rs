//! The reload coordinator: the one owner of the running config. It takes [`Request`]s from
//! one queue, one at a time, in order, and answers each with a [`Report`]. Reading the
//! files, validating them and writing a rollback back to disk run on blocking threads; the
//! history answers from its own thread.

use super::apply::{self, Scripts};
use super::candidate::{self, Candidate};
use super::disk::{first_error, DiskSync};
use super::etcd::{EtcdMode, Write};
use super::verify::{self, Decided, VerifyView, Verifying};
use super::write_back::{write_back, Written};
use super::{Report, Request, RequestError, ResultKind, Snapshot, Source, Validations};
use crate::events::EventBus;
use crate::history::{History, HistoryError, Record};
use crate::runner::{self, ScriptHandle, Shared, UpdateOutcome};
use scriptd_common::config::{self, Config, ConfigErrors, ConfigSource};
use scriptd_common::diff::{self, Change, Impact, Outcome};
use scriptd_common::plan_id::PlanId;
use scriptd_common::proto::{self, ReloadPhase};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

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

/// An attempt in progress: everything a [`Report`] holds but how it ended.
struct Draft {
    attempt_id: u64,
    version: u64,
    base_version: u64,
    plan_id: String,
    changes: Vec<Change>,
    errors: ConfigErrors,
    message: String,
}

impl Draft {
    /// The report of the attempt, ended with `result`.
    fn finish(self, result: ResultKind) -> Report {
        Report {
            attempt_id: self.attempt_id,
            result,
            version: self.version,
            base_version: self.base_version,
            plan_id: self.plan_id,
            changes: self.changes,
            errors: self.errors,
            message: self.message,
            disk_differs: false,
            verification: None,
        }
    }

    /// Rejected with `message`; every change in the plan is rejected too.
    fn reject(mut self, message: String) -> Report {
        self.message = message;
        for c in &mut self.changes {
            c.outcome = Outcome::Rejected;
        }
        self.finish(ResultKind::Rejected)
    }
}

/// A reload event of attempt `id` (none for dry runs, whose id is 0).
fn publish_phase(
    events: &EventBus,
    id: u64,
    source: Source,
    phase: ReloadPhase,
    (version, changes, errors, message): (u64, &[Change], &ConfigErrors, &str),
) {
    if id == 0 {
        return;
    }
    events.reload(proto::ReloadEvent {
        attempt_id: id,
        phase: phase as i32,
        source: source.as_str().into(),
        version,
        changes: changes.iter().map(crate::convert::change).collect(),
        errors: errors.0.iter().map(crate::convert::error).collect(),
        message: message.to_owned(),
        ..Default::default()
    });
}

/// Runs blocking `f` on a blocking thread; a panic in it becomes an error message.
async fn off_runtime<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("{what} failed unexpectedly: {e}"))
}

/// The coordinator task's state.
pub struct Coordinator {
    main: PathBuf,
    version: u64,
    source: ConfigSource,
    /// `source.hash()`, computed once per version.
    hash: String,
    pub(super) config: Arc<Config>,
    pub(super) handles: Arc<BTreeMap<String, ScriptHandle>>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: EventBus,
    tracker: TaskTracker,
    snapshot: watch::Sender<Arc<Snapshot>>,
    attempts: u64,
    history: History,
    disk: Arc<DiskSync>,
    /// Etcd mode (`daemon.source.etcd`).
    etcd: Option<EtcdMode>,
    /// The validation cache, shared with the watcher's validation ahead.
    validations: Validations,
    /// Where verifications post each script's outcome (see [`verify`]).
    pub(super) decided: mpsc::Sender<Decided>,
    decided_rx: Option<mpsc::Receiver<Decided>>,
    /// The verification in progress: at most one, of the latest applied attempt.
    pub(super) verifying: Option<Verifying>,
    /// The last automatic rollback, until the next applied version.
    pub(super) last_auto_rollback: Option<proto::AutoRollback>,
    /// What `ctl status` shows of both.
    pub(super) view: watch::Sender<VerifyView>,
}

/// What [`Coordinator::start`] hands back besides the coordinator.
pub struct Started {
    /// The running state, republished after every applied reload.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// How the files on disk relate to the running version.
    pub disk: Arc<DiskSync>,
    /// One receiver per script, reporting once its first start was tried.
    pub first_starts: Vec<oneshot::Receiver<Result<(), runner::SpawnError>>>,
    /// The verification in progress and the last automatic rollback.
    pub verify_view: watch::Receiver<VerifyView>,
}

impl Coordinator {
    /// Records the startup version (if it differs from the last one) and starts every
    /// script of the startup config. `watching`: the file watcher runs, so every save ends
    /// in a reload (see [`DiskSync`]).
    ///
    /// A startup version that cannot be recorded (a full disk) does not stop anything: it
    /// is logged, and the history writes it as soon as it can. Only a history that cannot
    /// be read is an error. `etcd`: etcd mode, running the value its revision names.
    /// `validations`: the cache that validated `config` (shared with the watcher).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        main: PathBuf,
        (source, config, validations): (ConfigSource, Config, Validations),
        shared: Arc<Shared>,
        tracker: TaskTracker,
        history: History,
        watching: bool,
        etcd: Option<EtcdMode>,
    ) -> Result<(Self, Started), HistoryError> {
        let etcd_revision = etcd.as_ref().and_then(|e| e.revision);
        let hash = source.hash();
        let version = match history.latest().await? {
            Some((v, latest)) if latest == hash => v,
            latest => {
                let v = latest.map_or(1, |(v, _)| v + 1);
                let record = Record::startup(crate::now_ms(), etcd_revision);
                if let Err(e) = history.record_startup(v, source.clone(), record).await {
                    tracing::warn!(
                        "startup version {v} cannot be recorded in the history yet ({e}); every \
                         script starts anyway, and the version is recorded once {} can be \
                         written again (retried every {}s and before every history call)",
                        history.dir().display(),
                        crate::history::RETRY.as_secs()
                    );
                }
                v
            }
        };
        let attempts = history.max_attempt().await?;
        let mut first_starts = Vec::new();
        let mut handles = BTreeMap::new();
        for (name, cfg) in &config.scripts {
            let (h, first) =
                runner::start_reporting(name.clone(), cfg.clone(), shared.clone(), &tracker);
            handles.insert(name.clone(), h);
            first_starts.push(first);
        }
        let handles = Arc::new(handles);
        let config = Arc::new(config);
        let (snapshot, rx) = watch::channel(Arc::new(Snapshot {
            version,
            hash: hash.clone(),
            etcd_revision,
            config: config.clone(),
            handles: handles.clone(),
        }));
        let disk = DiskSync::new(main.clone(), &hash, watching);
        let events = shared.events.clone();
        let (view, verify_view) = watch::channel(VerifyView::default());
        let (decided, decided_rx) = mpsc::channel(64);
        let started = Started {
            snapshot: rx,
            disk: disk.clone(),
            first_starts,
            verify_view,
        };
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
                snapshot,
                attempts,
                history,
                disk,
                etcd,
                validations,
                decided,
                decided_rx: Some(decided_rx),
                verifying: None,
                last_auto_rollback: None,
                view,
            },
            started,
        ))
    }

    /// Handles requests one at a time until the queue closes or the daemon shuts down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let cancel = self.shared.cancel.clone();
        let Some(mut decided) = self.decided_rx.take() else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                req = rx.recv() => match req {
                    Some(req) => { self.serve(req).await; }
                    None => break,
                },
                Some(d) = decided.recv() => self.on_decided(d).await,
            }
            // The reload's transient memory back to the system, or the RSS keeps its peak.
            drop(tokio::task::spawn_blocking(crate::heap::trim));
        }
    }

    /// Handles one request and, once it applied, starts verifying it; the reply waits for
    /// the verification when the request asks to ([`Request::wait`]).
    pub(super) async fn serve(&mut self, mut req: Request) -> Option<Report> {
        let before = (!req.dry_run).then(|| verify::run_ids(&self.handles));
        let report = self.handle(&mut req).await;
        let applied = matches!(&report, Ok(r) if r.result == ResultKind::Applied);
        if let (Ok(r), Some(before), true) = (&report, &before, applied) {
            self.begin_verification(req.source, r, before);
        }
        let parked = match (req.reply, &report) {
            (Some(reply), Ok(r)) if req.wait && applied => self.park(r.clone(), reply),
            (Some(reply), _) => {
                let _ = reply.send(report.clone());
                None
            }
            (None, _) => None,
        };
        if let Some((r, reply)) = parked {
            // Nothing to verify: verified at once.
            let _ = reply.send(Ok(r));
        }
        report.ok()
    }

    /// Publishes the running state; returns the previous snapshot, whose config the caller
    /// may drop once nobody waits any more.
    fn publish_snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.send_replace(Arc::new(Snapshot {
            version: self.version,
            hash: self.hash.clone(),
            etcd_revision: self.etcd.as_ref().and_then(|e| e.revision),
            config: self.config.clone(),
            handles: self.handles.clone(),
        }))
    }

    fn phase(&self, source: Source, phase: ReloadPhase, d: &Draft) {
        let parts = (
            d.version,
            d.changes.as_slice(),
            &d.errors,
            d.message.as_str(),
        );
        publish_phase(&self.events, d.attempt_id, source, phase, parts);
    }

    /// The files on disk, read and permission-checked on a blocking thread.
    async fn read_disk(&self) -> Result<ConfigSource, ConfigErrors> {
        let main = self.main.clone();
        off_runtime("reading the config", move || {
            config::read_source(&main).and_then(config::secure_source)
        })
        .await
        .unwrap_or_else(|e| Err(ConfigErrors::file("config", e)))
    }

    /// The config as it would be with `candidate`'s files in place, read and
    /// permission-checked on a blocking thread.
    async fn read_candidate(&self, candidate: Candidate) -> Result<ConfigSource, ConfigErrors> {
        let main = self.main.clone();
        off_runtime("reading the candidate", move || candidate.read(&main))
            .await
            .unwrap_or_else(|e| Err(ConfigErrors::file("config", e)))
    }

    /// The files of the version a rollback asks for (0: the one before the running one).
    async fn rollback_target(
        &self,
        wanted: u64,
    ) -> Result<Option<(u64, ConfigSource)>, HistoryError> {
        let v = match wanted {
            0 => self.history.previous(self.version).await?,
            v => Some(v),
        };
        let Some(v) = v else { return Ok(None) };
        Ok(self.history.version(v).await?.map(|(_, files)| {
            let source = ConfigSource {
                main: self.main.clone(),
                files,
            };
            (v, source)
        }))
    }

    async fn handle(&mut self, req: &mut Request) -> Result<Report, RequestError> {
        let mut steps = Steps::new();
        let mut rollback_from = None;
        let candidate = req.candidate.take();
        let etcd_value = req.etcd.take();
        // Etcd mode: the revision the config comes from (`None` until written, for a
        // rollback or a candidate, which `etcd_write` writes first).
        let mut etcd_revision = etcd_value.as_ref().map(|v| v.revision);
        let mut etcd_write: Option<Write> = None;
        // Etcd mode writes nothing to disk: a candidate is the key's value.
        let targets = candidate
            .as_ref()
            .filter(|_| self.etcd.is_none())
            .map(Candidate::targets);
        let loaded = match (req.target, candidate, &self.etcd) {
            // Etcd mode: a value from the watch, or (`ctl reload`, SIGHUP) the key read now.
            (None, None, Some(mode)) => {
                let (loaded, revision) = mode.load(&self.source, etcd_value).await;
                etcd_revision = revision;
                loaded
            }
            (None, None, None) => self.read_disk().await,
            (None, Some(candidate), Some(mode)) => mode.with_candidate(&self.source, candidate),
            (None, Some(candidate), None) => self.read_candidate(candidate).await,
            (Some(wanted), _, _) => match self.rollback_target(wanted).await {
                Ok(Some((v, source))) => {
                    rollback_from = Some(v);
                    match &self.etcd {
                        Some(mode) => mode.with_recorded(&self.source, &source),
                        None => Ok(source),
                    }
                }
                Ok(None) => {
                    return Err(RequestError::NoSuchVersion(if wanted == 0 {
                        format!("no version before {} in the history", self.version)
                    } else {
                        format!("no version {wanted} in the history (see `ctl history`)")
                    }))
                }
                Err(e) => Err(ConfigErrors::file("history", e.to_string())),
            },
        };
        if !req.dry_run {
            crate::notify_systemd(crate::Notify::Reloading);
        }
        steps.mark("read");
        if let (Some(mode), Ok(source), None) = (&self.etcd, &loaded, etcd_revision) {
            etcd_write = mode.write_for(source, req.etcd_base);
        }
        let mut report = self
            .attempt(
                req,
                loaded,
                (targets.as_ref(), etcd_write),
                &mut etcd_revision,
                &mut steps,
            )
            .await;
        if req.dry_run {
            return Ok(report);
        }
        let mut revision_moved = false;
        if let (Some(mode), Some(revision)) = (&mut self.etcd, etcd_revision) {
            let running = matches!(report.result, ResultKind::Applied | ResultKind::Unchanged);
            if running && mode.revision != Some(revision) {
                mode.revision = Some(revision);
                revision_moved = true;
            }
        }
        if let Some(note) = &req.note {
            report.message = if report.message.is_empty() {
                note.clone()
            } else {
                format!("{note}; {}", report.message)
            };
        }
        crate::notify_systemd(crate::Notify::Ready);
        let disk_touched = match (rollback_from, &targets) {
            // Etcd mode: the key was written (and is the record); the disk never is.
            (Some(_), _) if self.etcd.is_some() => false,
            (Some(target), _) => self.write_back_rollback(target, &mut report).await,
            (None, Some(targets)) if report.result == ResultKind::Unchanged => {
                self.write_unchanged_candidate(targets, &mut report).await
            }
            _ => false,
        };
        let recorded = (rollback_from, etcd_revision);
        self.record(req, recorded, disk_touched, &mut report).await;
        steps.mark("record");
        self.disk.refresh(&self.hash).await;
        steps.mark("check disk");
        // Written back, recorded and the disk checked before anyone is told: a client that
        // reacts to the terminal event or the new snapshot finds the files, the history and
        // `ctl status` up to date.
        let retired = (report.result == ResultKind::Applied || revision_moved)
            .then(|| self.publish_snapshot());
        let parts = (
            report.version,
            report.changes.as_slice(),
            &report.errors,
            report.message.as_str(),
        );
        self.shared
            .metrics
            .reload_ended(req.source, report.result, req.since.elapsed());
        let terminal = crate::convert::terminal_phase(report.result);
        publish_phase(&self.events, report.attempt_id, req.source, terminal, parts);
        steps.mark("publish");
        // The previous version's config is freed after everyone was told.
        drop(retired);
        self.shared.metrics.reload_steps(&steps.done);
        tracing::debug!(attempt = report.attempt_id, "reload steps: {steps}");
        Ok(report)
    }

    /// A rollback that left the target's files running (applied, or already running) writes
    /// them to disk (on a blocking thread), before anything is recorded: a `kill -9` in
    /// between leaves disk and runtime agreeing, and the next start records the files as a
    /// startup version instead of undoing the rollback. A failure sets `disk_differs` (ctl
    /// exits 3) and says what to do. Returns whether the disk was (or was to be) changed.
    async fn write_back_rollback(&self, target: u64, report: &mut Report) -> bool {
        let unchanged = match report.result {
            ResultKind::Applied => false,
            ResultKind::Unchanged => true,
            ResultKind::Rejected | ResultKind::FailedRolledBack => return false,
        };
        let running = self.version;
        let (main, source) = (self.main.clone(), self.source.clone());
        let written = off_runtime("writing the files back", move || {
            write_back(&main, &source).map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        match written {
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

    /// A candidate whose files are already running is written to disk where the files
    /// there differ, like a rollback to the running version (disk and runtime then agree).
    /// A failure sets `disk_differs` (ctl exits 3). Returns whether the disk was (or was to
    /// be) changed.
    async fn write_unchanged_candidate(
        &self,
        targets: &BTreeSet<String>,
        report: &mut Report,
    ) -> bool {
        let running = self.version;
        match write_files(&self.source, targets).await {
            Ok(written) if written.is_empty() => false,
            Ok(_) => {
                report.message = format!(
                    "{}; the candidate files on disk were rewritten to match",
                    report.message
                );
                true
            }
            Err(e) => {
                report.disk_differs = true;
                report.message = format!(
                    "version {running} is running, but the candidate files could not be \
                     written to disk ({e}): disk and runtime disagree; fix the cause and run \
                     the same `ctl reload --file` again"
                );
                tracing::error!(attempt = report.attempt_id, "{}", report.message);
                true
            }
        }
    }

    /// Records the attempt: an applied version with its files, a refused one with its
    /// errors, an unchanged one only if it was a rollback or a candidate that rewrote (or
    /// failed to rewrite) the files on disk. A failure to record does not undo the reload (the
    /// version is live): it is added to the message, and so to the terminal event and to
    /// ctl's output, and logged.
    async fn record(
        &self,
        req: &Request,
        (rollback_from, etcd_revision): (Option<u64>, Option<i64>),
        disk_touched: bool,
        report: &mut Report,
    ) {
        if report.result == ResultKind::Unchanged && !disk_touched {
            return;
        }
        let record = Record {
            attempt_id: report.attempt_id,
            time_ms: crate::now_ms(),
            source: req.source,
            rollback_from,
            uid: req.uid,
            cert: req.cert.clone(),
            result: report.result,
            message: report.message.clone(),
            changes: report.changes.iter().map(crate::convert::change).collect(),
            errors: report.errors.0.iter().map(crate::convert::error).collect(),
            etcd_revision,
        };
        let applied = report.result == ResultKind::Applied;
        let recorded = if applied {
            self.history
                .record_version(self.version, self.source.clone(), record)
                .await
        } else {
            self.history.record_attempt(record).await
        };
        if let Err(e) = recorded {
            let note = if applied {
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

    /// One attempt (or dry run) on `loaded`; `targets`: the files of a candidate, which are
    /// written into place before the apply (and put back if it fails); `etcd_write`: the
    /// value written to the etcd key before the apply (a refused write applies nothing),
    /// whose new mod revision goes to `etcd_revision`.
    async fn attempt(
        &mut self,
        req: &mut Request,
        loaded: Result<ConfigSource, ConfigErrors>,
        (targets, etcd_write): (Option<&BTreeSet<String>>, Option<Write>),
        etcd_revision: &mut Option<i64>,
        steps: &mut Steps,
    ) -> Report {
        let id = if req.dry_run {
            0
        } else {
            self.attempts += 1;
            self.attempts
        };
        let mut draft = Draft {
            attempt_id: id,
            version: self.version,
            base_version: self.version,
            plan_id: String::new(),
            changes: Vec::new(),
            errors: ConfigErrors::default(),
            message: String::new(),
        };
        self.phase(req.source, ReloadPhase::Detected, &draft);

        let source = match loaded {
            Ok(s) => s,
            Err(errors) => return self.reject_invalid(draft, errors),
        };
        let new_hash = match req.prevalidated.as_ref().and_then(|p| p.hash_of(&source)) {
            Some(hash) => hash.to_owned(),
            None => source.hash(),
        };
        draft.plan_id = PlanId::new(self.version, &new_hash).to_string();
        let stale = req
            .plan_id
            .as_ref()
            .filter(|wanted| wanted.to_string() != draft.plan_id)
            .map(|wanted| {
                format!(
                    "plan {wanted} is stale: the running version or the files moved since it was \
                     previewed (now {}); preview again with `ctl reload --dry-run`",
                    draft.plan_id
                )
            });
        if new_hash == self.hash {
            // A plan whose files are the running ones is done, whatever its base: only a plan
            // for other files (the files moved since the preview) is stale.
            draft.message = match &req.plan_id {
                Some(wanted) if !wanted.applies(&new_hash) => {
                    return draft.reject(stale.unwrap_or_default());
                }
                Some(wanted) => format!(
                    "plan {wanted} is already running (version {}); nothing to do",
                    self.version
                ),
                None if targets.is_some() => format!(
                    "the candidate is the running version ({}); nothing to do",
                    self.version
                ),
                None => "the files on disk are the running version; nothing to do".into(),
            };
            if id != 0 {
                tracing::info!(
                    attempt = id,
                    source = req.source.as_str(),
                    "config unchanged, nothing to do"
                );
            }
            return draft.finish(ResultKind::Unchanged);
        }
        let prevalidated = req.prevalidated.take().filter(|p| p.hash == new_hash);
        let (source, validated) = match prevalidated {
            Some(p) => (source, Ok(p.config)),
            None => {
                let validations = self.validations.clone();
                let checked = off_runtime("validation", move || {
                    let validated = super::validate(&source, &validations);
                    (source, validated)
                })
                .await;
                match checked {
                    Ok(checked) => checked,
                    Err(e) => return self.reject_invalid(draft, ConfigErrors::file("config", e)),
                }
            }
        };
        if req.target.is_none() && targets.is_none() {
            // The files on disk: `ctl status` need not validate them again.
            let verdict = validated.as_ref().map(drop).map_err(first_error);
            self.disk.remember(&new_hash, verdict);
        }
        let new = match validated {
            Ok(c) => c,
            Err(errors) => return self.reject_invalid(draft, errors),
        };
        steps.mark("validate");
        self.phase(req.source, ReloadPhase::Validated, &draft);

        let handles = &self.handles;
        let plan = diff::plan(&self.config, &new, &|name: &str| {
            handles
                .get(name)
                .is_some_and(ScriptHandle::periodic_running)
        });
        draft.changes = plan.changes.clone();
        self.phase(req.source, ReloadPhase::Planned, &draft);
        steps.mark("plan");

        if let Some(msg) = stale {
            return draft.reject(msg);
        }
        if let Some(reason) = &plan.rejected {
            if id != 0 {
                tracing::warn!(attempt = id, "reload rejected: {reason}");
            }
            draft.message = reason.clone();
            return draft.finish(ResultKind::Rejected);
        }
        if req.dry_run {
            return draft.finish(ResultKind::Applied);
        }

        // A candidate's files go into place before the apply: nothing runs that is not on
        // disk, and a failure to write them applies nothing.
        let written = match targets {
            Some(targets) => match write_files(&source, targets).await {
                Ok(written) => Some(written),
                Err(e) => {
                    draft.message = format!(
                        "the candidate files could not be written ({e}); nothing was applied and \
                         the files on disk are as they were"
                    );
                    tracing::error!(attempt = id, "reload failed: {}", draft.message);
                    return draft.finish(ResultKind::FailedRolledBack);
                }
            },
            None => None,
        };
        if let (Some(mode), Some(write)) = (&self.etcd, etcd_write) {
            match mode.swap(write).await {
                Ok(revision) => *etcd_revision = Some(revision),
                Err(message) => {
                    tracing::warn!(attempt = id, "reload rejected: {message}");
                    return draft.reject(message);
                }
            }
        }
        steps.mark("write");
        self.phase(req.source, ReloadPhase::Applying, &draft);
        let scripts = Scripts {
            handles: &mut self.handles,
            shared: &self.shared,
            tracker: &self.tracker,
        };
        let applied = apply::apply(scripts, &self.config, &plan).await;
        steps.mark("apply");
        match applied {
            Ok(outcomes) => {
                for c in &mut draft.changes {
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
                let mut new = new;
                new.share_unchanged(&self.config);
                self.config = Arc::new(new);
                draft.version = self.version;
                tracing::info!(
                    attempt = id,
                    version = self.version,
                    changes = draft.changes.len(),
                    source = req.source.as_str(),
                    "reload applied"
                );
                draft.finish(ResultKind::Applied)
            }
            Err(e) => {
                draft.message = e.to_string();
                if let Some(written) = written {
                    draft.message.push_str(&put_back(written).await);
                }
                tracing::error!(attempt = id, "reload failed: {}", draft.message);
                draft.finish(ResultKind::FailedRolledBack)
            }
        }
    }

    fn reject_invalid(&self, mut draft: Draft, errors: ConfigErrors) -> Report {
        draft.message = format!(
            "the config is invalid ({} error{}); the running version stays",
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        );
        if draft.attempt_id != 0 {
            // One bounded line however many errors: `ctl reload` and `--check` list them all.
            tracing::warn!(
                attempt = draft.attempt_id,
                "{}: {}",
                draft.message,
                errors.summary(10)
            );
        }
        draft.errors = errors;
        draft.finish(ResultKind::Rejected)
    }
}

/// Writes the files of `source` named `targets` into place, on a blocking thread.
async fn write_files(source: &ConfigSource, targets: &BTreeSet<String>) -> Result<Written, String> {
    let (source, targets) = (source.clone(), targets.clone());
    off_runtime("writing the candidate files", move || {
        candidate::write(&source, &targets).map_err(|e| e.to_string())
    })
    .await
    .and_then(|r| r)
}

/// Puts back the files a candidate whose apply failed wrote (on a blocking thread), so that
/// disk and runtime agree again; returns what to add to the attempt's message.
async fn put_back(written: Written) -> String {
    match off_runtime("putting the files back", move || written.undo()).await {
        Ok(Ok(())) => "; the candidate files on disk were put back as they were".into(),
        Ok(Err(e)) => format!(
            "; putting the candidate files on disk back failed too ({e}): disk and runtime \
             disagree, and the next save, `ctl reload` or daemon restart applies what is on disk"
        ),
        Err(e) => format!("; {e}"),
    }
}
