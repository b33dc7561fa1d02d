//! gRPC handlers: validate, forward to the owner of the state, map failures to precise
//! status codes. No state lives here.

use crate::convert;
use crate::events::{EventBus, Filter};
use crate::history::{ActionResult, History, HistoryError};
use crate::metrics::Metrics;
use crate::reload::disk::DiskSync;
use crate::reload::verify::{self, VerifyView};
use crate::reload::{
    Candidate, Report, Request, RequestError, ResultKind, Snapshot, Source, VerifyEnd,
};
use crate::runner::{ControlError, ScriptHandle};
use crate::runs::{self, RunState, WaitError};
use crate::source::etcd::state::SourceState;
use scriptd_common::config;
use scriptd_common::config::ConfigFile;
use scriptd_common::diff;
use scriptd_common::plan_id::PlanId;
use scriptd_common::proto::scriptd_server::Scriptd;
use scriptd_common::proto::{self, ControlAction};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request as Req, Response, Status};

/// Facts about the daemon process reported by `Status`.
pub struct DaemonInfo {
    /// Absolute main config path.
    pub config_path: PathBuf,
    /// Socket path.
    pub socket_path: PathBuf,
    /// Start time (Unix ms).
    pub started_at_ms: i64,
}

/// The `scriptd.v1.Scriptd` service.
pub struct Service {
    info: DaemonInfo,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    reloads: mpsc::Sender<Request>,
    events: EventBus,
    history: History,
    disk: Arc<DiskSync>,
    metrics: Metrics,
    /// Etcd mode: the source's state.
    etcd: Option<watch::Receiver<SourceState>>,
    verify_view: watch::Receiver<VerifyView>,
}

impl Service {
    /// A service reading `snapshot` and `disk`, and sending reloads to the coordinator.
    pub fn new(
        info: DaemonInfo,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        disk: Arc<DiskSync>,
        reloads: mpsc::Sender<Request>,
        events: EventBus,
        history: History,
        metrics: Metrics,
    ) -> Self {
        Self {
            info,
            snapshot,
            reloads,
            events,
            history,
            disk,
            metrics,
            etcd: None,
            verify_view: watch::channel(VerifyView::default()).1,
        }
    }

    /// The service of a daemon whose config comes from etcd, whose source publishes `state`.
    pub fn with_etcd(self, state: watch::Receiver<SourceState>) -> Self {
        Self {
            etcd: Some(state),
            ..self
        }
    }

    /// Reads the verification in progress and the last automatic rollback from `view`.
    pub fn with_verify_view(mut self, view: watch::Receiver<VerifyView>) -> Self {
        self.verify_view = view;
        self
    }

    async fn load_version(
        &self,
        version: u64,
    ) -> Result<(proto::HistoryEntry, Vec<ConfigFile>), Status> {
        self.history
            .version(version)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no version {version} in the history (see `ctl history`)"
                ))
            })
    }

    /// The field-level plan from one recorded version to another (0 = running).
    async fn diff_versions(&self, from: u64, to: u64) -> Result<proto::DiffResponse, Status> {
        let running = self.snapshot.borrow().version;
        let (from, to) = (
            if from == 0 { running } else { from },
            if to == 0 { running } else { to },
        );
        let mut sources = Vec::new();
        for v in [from, to] {
            let (_, files) = self.load_version(v).await?;
            sources.push(config::ConfigSource {
                main: self.info.config_path.clone(),
                files,
            });
        }
        // Validation reads the disk (programs, directories): not on the runtime.
        let (changes, errors) = tokio::task::spawn_blocking(move || {
            let mut configs = Vec::new();
            let mut errors = Vec::new();
            for source in &sources {
                match config::validate(source) {
                    Ok(c) => configs.push(c),
                    Err(e) => errors.extend(e.0.iter().map(convert::error)),
                }
            }
            let mut changes: Vec<_> = match configs.as_slice() {
                [a, b] => diff::plan(a, b, &|_| false)
                    .changes
                    .iter()
                    .map(convert::change)
                    .collect(),
                _ => Vec::new(),
            };
            convert::as_planned(&mut changes);
            (changes, errors)
        })
        .await
        .map_err(|e| Status::internal(format!("validating the versions failed: {e}")))?;
        Ok(proto::DiffResponse {
            base_version: from,
            plan_id: String::new(),
            unchanged: changes.is_empty() && errors.is_empty(),
            rejected: false,
            changes,
            errors,
        })
    }

    /// Forwards a control action to the script's runner.
    async fn control_script(
        &self,
        req: &proto::ControlRequest,
        action: ControlAction,
    ) -> Result<proto::ControlResponse, Status> {
        let script = req.script.as_str();
        let handle = self.handle(script)?;
        let wait = req.wait && matches!(action, ControlAction::Start | ControlAction::Restart);
        // Read before the action: a start that finds the script running waits for that run.
        let current = handle.status.borrow().run_id;
        let done = handle.control(action).await.map_err(|e| match e {
            ControlError::Precondition(m) => Status::failed_precondition(m),
            ControlError::Spawn(m) => Status::aborted(format!("cannot start {script}: {m}")),
            ControlError::Gone => Status::unavailable(e.to_string()),
        })?;
        let wait_outcome = if wait {
            let since = if done.run_id == 0 {
                current
            } else {
                done.run_id
            };
            Some(
                self.wait_ready(script, &handle, since, req.wait_timeout_ms)
                    .await,
            )
        } else {
            None
        };
        let status = handle.status.borrow().clone();
        Ok(proto::ControlResponse {
            status: Some(status),
            message: done.message,
            run_id: done.run_id,
            wait_outcome,
        })
    }

    /// `ctl start|restart --wait`: waits until run `since` (or a later one) of `script` is
    /// ready, or failed, or `timeout_ms` (0: the config's `reload.verify`) passed.
    async fn wait_ready(
        &self,
        script: &str,
        handle: &ScriptHandle,
        since: u64,
        timeout_ms: u64,
    ) -> proto::ScriptVerification {
        let (window, cfg) = {
            let snap = self.snapshot.borrow();
            (
                snap.config.reload.verify,
                snap.config.scripts.get(script).cloned(),
            )
        };
        let window = match timeout_ms {
            0 => window,
            ms => std::time::Duration::from_millis(ms),
        };
        let target = verify::Target {
            name: script.to_owned(),
            handle: handle.clone(),
            since,
            periodic: cfg.as_ref().is_some_and(|c| c.is_periodic()),
            needs_health: cfg.as_ref().is_some_and(|c| verify::needs_health(c)),
        };
        let deadline = tokio::time::Instant::now() + window;
        let outcome = verify::watch_one(&target, deadline).await;
        verify::to_proto(script, since, Some(&outcome))
    }

    /// The handle of `script`, or NOT_FOUND.
    fn handle(&self, script: &str) -> Result<ScriptHandle, Status> {
        self.snapshot
            .borrow()
            .handles
            .get(script)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no script named {script:?}")))
    }

    /// Records a Control call and its outcome in the history's audit trail (and counts it
    /// in the metrics).
    async fn audit(
        &self,
        (uid, cert): (Option<u32>, Option<String>),
        req: &proto::ControlRequest,
        action: Option<ControlAction>,
        outcome: &Result<proto::ControlResponse, Status>,
    ) -> Result<(), Status> {
        let (result, message) = match outcome {
            Ok(r) => (ActionResult::Ok, r.message.clone()),
            Err(s) => (convert::action_result(s.code()), s.message().to_owned()),
        };
        self.metrics.control_ended(action, result);
        let action = action.map_or_else(
            || format!("action {}", req.action),
            |a| {
                a.as_str_name()
                    .trim_start_matches("CONTROL_ACTION_")
                    .to_lowercase()
            },
        );
        self.history
            .record_action(crate::history::Action {
                uid,
                cert,
                action,
                script: req.script.clone(),
                result,
                message,
            })
            .await
            .map_err(internal)
    }

    /// Queues a reload request with the caller's uid and waits for its report; a request
    /// for something that does not exist is NOT_FOUND.
    async fn submit<T>(&self, request: &Req<T>, mut req: Request) -> Result<Report, Status> {
        let (tx, rx) = oneshot::channel();
        req.uid = crate::socket::peer_of(request).and_then(|p| p.local_uid());
        req.cert = crate::socket::peer_of(request).and_then(|p| p.cert.clone());
        req.reply = Some(tx);
        self.reloads
            .send(req)
            .await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))?;
        match rx.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(RequestError::NoSuchVersion(m))) => Err(Status::not_found(m)),
            Err(_) => Err(Status::unavailable("the daemon is shutting down")),
        }
    }
}

/// A request's plan id (empty: none); one not of the plan-id syntax is the caller's mistake
/// (INVALID_ARGUMENT), not an attempt.
#[allow(clippy::result_large_err)]
fn plan_id(text: &str) -> Result<Option<PlanId>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    PlanId::parse(text)
        .map(Some)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A request's candidate files (none: `None`); a malformed target is INVALID_ARGUMENT.
#[allow(clippy::result_large_err)]
fn candidate(files: Vec<proto::CandidateFile>) -> Result<Option<Candidate>, Status> {
    Candidate::from_proto(files).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A history failure as the gRPC status INTERNAL.
fn internal(e: HistoryError) -> Status {
    Status::internal(e.to_string())
}

/// User names of uids, each looked up once (the user database can be slow: NSS, LDAP).
#[derive(Default)]
struct UserNames(std::collections::HashMap<u32, String>);

impl UserNames {
    /// `items` with the user name of each one's uid filled in (`field`: its uid and where
    /// the name goes), looked up on a blocking thread.
    async fn name_all<T: Send + 'static>(
        mut items: Vec<T>,
        field: impl Fn(&mut T) -> (Option<u32>, &mut String) + Send + 'static,
    ) -> Result<Vec<T>, Status> {
        tokio::task::spawn_blocking(move || {
            let mut names = Self::default();
            for item in &mut items {
                let (uid, user) = field(item);
                *user = names.of(uid);
            }
            items
        })
        .await
        .map_err(|e| Status::internal(format!("looking up user names failed: {e}")))
    }

    /// The name of `uid`; empty for none or an unknown uid.
    fn of(&mut self, uid: Option<u32>) -> String {
        let Some(uid) = uid else {
            return String::new();
        };
        self.0
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// Uid of the peer that sent `request` (SO_PEERCRED, recorded at connect); `None` for a
/// remote caller.
fn peer_uid<T>(request: &Req<T>) -> Option<u32> {
    crate::socket::peer_of(request).and_then(|p| p.local_uid())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Scriptd for Service {
    async fn status(
        &self,
        request: Req<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let req = request.into_inner();
        let want = req.script;
        let snap = self.snapshot.borrow().clone();
        // One script is one map lookup: `ctl status NAME` costs the same with 10 or 10,000.
        let mut scripts: Vec<proto::ScriptStatus> = if want.is_empty() {
            snap.handles
                .values()
                .map(|h| h.status.borrow().clone())
                .collect()
        } else {
            match snap.handles.get(&want) {
                Some(h) => vec![h.status.borrow().clone()],
                None => return Err(Status::not_found(format!("no script named {want:?}"))),
            }
        };
        let mut daemon_resources = None;
        if req.resources {
            // One /proc sample for every running script (shared for a second).
            let groups = scripts.iter().map(|s| s.pid).filter(|p| *p != 0).collect();
            let sample = self.metrics.sampler.sample(groups).await;
            for s in scripts.iter_mut().filter(|s| s.pid != 0) {
                s.resources = sample.groups.get(&s.pid).map(|u| u.to_proto());
            }
            daemon_resources = sample.daemon.map(|u| u.to_proto());
        }
        // Etcd mode: the files on disk are only the bootstrap file, not the config.
        let (sync, sync_error, etcd) = match &self.etcd {
            Some(state) => {
                let etcd = state.borrow().to_proto(snap.etcd_revision);
                (proto::ConfigSync::Unspecified, String::new(), Some(etcd))
            }
            None => {
                let (sync, error) = self.disk.state(&snap.hash).await.to_proto();
                (sync, error, None)
            }
        };
        let view = self.verify_view.borrow().clone();
        Ok(Response::new(proto::StatusResponse {
            daemon_pid: std::process::id(),
            daemon_version: scriptd_common::VERSION.into(),
            started_at_ms: self.info.started_at_ms,
            config_path: self.info.config_path.display().to_string(),
            running_version: snap.version,
            sync: sync as i32,
            sync_error,
            scripts,
            socket_path: self.info.socket_path.display().to_string(),
            daemon_resources,
            etcd,
            verifying: view.verifying,
            last_auto_rollback: view.last_auto_rollback,
        }))
    }

    async fn control(
        &self,
        request: Req<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, Status> {
        let caller = (
            peer_uid(&request),
            crate::socket::peer_of(&request).and_then(|p| p.cert.clone()),
        );
        let req = request.into_inner();
        let action = ControlAction::try_from(req.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified);
        let mut outcome = match action {
            Some(action) => self.control_script(&req, action).await,
            None => Err(Status::invalid_argument(
                "action must be start, stop, restart or run",
            )),
        };
        // Every call is in the audit trail, whatever its outcome.
        if let Err(e) = self.audit(caller, &req, action, &outcome).await {
            let e = e.message();
            tracing::error!("cannot record a control action in the history: {e}");
            if let Ok(r) = &mut outcome {
                r.message = format!("{} (not recorded in the history: {e})", r.message);
            }
        }
        outcome.map(Response::new)
    }

    async fn diff(
        &self,
        mut request: Req<proto::DiffRequest>,
    ) -> Result<Response<proto::DiffResponse>, Status> {
        let (from, to) = (request.get_ref().from_version, request.get_ref().to_version);
        let candidate = candidate(std::mem::take(&mut request.get_mut().files))?;
        if from != 0 || to != 0 {
            if candidate.is_some() {
                return Err(Status::invalid_argument(
                    "candidate files are previewed against the running version, not between \
                     two recorded versions",
                ));
            }
            return self.diff_versions(from, to).await.map(Response::new);
        }
        if candidate.is_some() {
            // The daemon reads and checks, as root, what the candidate names.
            crate::socket::require(&request, config::Role::Operate, "Diff of candidate files")?;
        }
        let req = Request {
            dry_run: true,
            candidate,
            ..Request::new(Source::Ctl)
        };
        let r = self.submit(&request, req).await?;
        let mut changes: Vec<_> = r.changes.iter().map(convert::change).collect();
        convert::as_planned(&mut changes);
        Ok(Response::new(proto::DiffResponse {
            base_version: r.base_version,
            plan_id: r.plan_id,
            unchanged: r.result == ResultKind::Unchanged,
            rejected: r.result == ResultKind::Rejected,
            changes,
            errors: r.errors.0.iter().map(convert::error).collect(),
        }))
    }

    async fn reload(
        &self,
        mut request: Req<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let plan_id = plan_id(&request.get_ref().plan_id)?;
        let candidate = candidate(std::mem::take(&mut request.get_mut().files))?;
        let req = Request {
            plan_id,
            candidate,
            etcd_base: self.snapshot.borrow().etcd_revision,
            wait: request.get_ref().wait,
            ..Request::new(Source::Ctl)
        };
        let r = self.submit(&request, req).await?;
        Ok(Response::new(report_to_proto(r)))
    }

    type EventsStream = BoxStream<proto::Event>;

    async fn events(
        &self,
        request: Req<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let req = request.into_inner();
        let filter =
            Filter::from_request(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stream = self
            .events
            .follow(filter, req.after_id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn history(
        &self,
        request: Req<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => 20,
            n => n,
        };
        // Read before the entries: a version is recorded before it is published, so the
        // running version is always among the entries listed after it.
        let running_version = self.snapshot.borrow().version;
        let (entries, actions) = if request.get_ref().actions {
            let actions = self.history.actions(limit).await.map_err(internal)?;
            let actions = UserNames::name_all(actions, |a| (a.uid, &mut a.user)).await?;
            (Vec::new(), actions)
        } else {
            let entries = self.history.list(limit).await.map_err(internal)?;
            let entries = UserNames::name_all(entries, |e| (e.uid, &mut e.user)).await?;
            (entries, Vec::new())
        };
        Ok(Response::new(proto::HistoryResponse {
            running_version,
            entries,
            actions,
        }))
    }

    async fn get_version(
        &self,
        request: Req<proto::GetVersionRequest>,
    ) -> Result<Response<proto::GetVersionResponse>, Status> {
        let running_version = self.snapshot.borrow().version;
        let version = match request.get_ref().version {
            0 => running_version,
            v => v,
        };
        let (mut entry, files) = self.load_version(version).await?;
        let uid = entry.uid;
        entry.user = tokio::task::spawn_blocking(move || UserNames::default().of(uid))
            .await
            .map_err(|e| Status::internal(format!("looking up a user name failed: {e}")))?;
        Ok(Response::new(proto::GetVersionResponse {
            entry: Some(entry),
            files: files
                .into_iter()
                .map(|f| proto::VersionFile {
                    name: f.name,
                    content: f.content,
                })
                .collect(),
            running_version,
        }))
    }

    async fn rollback(
        &self,
        request: Req<proto::RollbackRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let r = request.get_ref();
        if !r.dry_run {
            crate::socket::require(&request, config::Role::Operate, "Rollback")?;
        }
        let req = Request {
            dry_run: r.dry_run,
            target: Some(r.version),
            plan_id: plan_id(&r.plan_id)?,
            etcd_base: self.snapshot.borrow().etcd_revision,
            ..Request::new(Source::Rollback)
        };
        let dry_run = req.dry_run;
        let report = self.submit(&request, req).await?;
        let mut response = report_to_proto(report);
        if dry_run {
            convert::as_planned(&mut response.changes);
        }
        Ok(Response::new(response))
    }

    type LogsStream = BoxStream<proto::LogLine>;

    async fn logs(
        &self,
        request: Req<proto::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let query = crate::logs::Query::from_request(&req, crate::now_ms())?;
        let handle = self.handle(&req.script)?;
        let run_end = match req.run_id {
            0 => None,
            id => {
                if runs::state_now(id, &handle.status, &handle.recent) == RunState::Unknown {
                    let latest = handle.status.borrow().run_id;
                    return Err(Status::not_found(format!(
                        "no run {id} of {} yet (the latest is run {latest})",
                        req.script
                    )));
                }
                // A follower of one run ends after its last line once it has ended.
                let (status, recent) = (handle.status.clone(), handle.recent.clone());
                let script = req.script.clone();
                req.follow.then(|| -> crate::logs::RunEnd {
                    Box::pin(async move {
                        let _ = runs::wait(&script, id, status, recent).await;
                    })
                })
            }
        };
        Ok(Response::new(Box::pin(crate::logs::stream(
            handle.logs,
            query,
            run_end,
        ))))
    }

    async fn wait_run(
        &self,
        request: Req<proto::WaitRunRequest>,
    ) -> Result<Response<proto::WaitRunResponse>, Status> {
        let req = request.into_inner();
        let handle = self.handle(&req.script)?;
        let exit = runs::wait(&req.script, req.run_id, handle.status, handle.recent)
            .await
            .map_err(|e| match e {
                WaitError::NotFound(m) => Status::not_found(m),
                WaitError::Gone(_) => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(proto::WaitRunResponse { exit: Some(exit) }))
    }
}

/// A reload report as the `Reload` response.
pub fn report_to_proto(r: Report) -> proto::ReloadResponse {
    let mut result = convert::result(r.result);
    let (mut verification, mut rollback_version) = (Vec::new(), 0);
    if let Some(v) = r.verification {
        verification = v.scripts;
        match v.end {
            VerifyEnd::Verified => {}
            VerifyEnd::NotVerified => result = proto::ReloadResult::NotVerified,
            VerifyEnd::AutoRolledBack(version) => {
                result = proto::ReloadResult::AutoRolledBack;
                rollback_version = version;
            }
        }
    }
    proto::ReloadResponse {
        attempt_id: r.attempt_id,
        result: result as i32,
        verification,
        rollback_version,
        version: r.version,
        changes: r.changes.iter().map(convert::change).collect(),
        errors: r.errors.0.iter().map(convert::error).collect(),
        message: r.message,
        plan_id: r.plan_id,
        disk_differs: r.disk_differs,
    }
}
