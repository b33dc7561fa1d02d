//! gRPC handlers: validate, forward to the owner of the state, map failures to precise
//! status codes. No state lives here.

use crate::convert;
use crate::events::EventBus;
use crate::history::{History, HistoryError};
use crate::reload::{Report, Request, Snapshot, Source};
use crate::runner::ControlError;
use scriptd_common::config;
use scriptd_common::config::ConfigFile;
use scriptd_common::diff;
use scriptd_common::proto::scriptd_server::Scriptd;
use scriptd_common::proto::{self, ConfigSync, ControlAction};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
    /// Last disk check: (files hash, first validation error if invalid).
    sync_cache: Mutex<Option<(String, Option<String>)>>,
}

impl Service {
    /// A service reading `snapshot` and sending reloads to the coordinator.
    pub fn new(
        info: DaemonInfo,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        reloads: mpsc::Sender<Request>,
        events: EventBus,
        history: History,
    ) -> Self {
        Self {
            info,
            snapshot,
            reloads,
            events,
            history,
            sync_cache: Mutex::new(None),
        }
    }

    /// How the files on disk relate to the running version.
    fn disk_sync(&self, running_hash: &str) -> (ConfigSync, String) {
        let source = match config::read_source(&self.info.config_path) {
            Ok(s) => s,
            Err(e) => {
                let first = e.first().map(ToString::to_string).unwrap_or_default();
                return (ConfigSync::Invalid, first);
            }
        };
        let hash = source.hash();
        if hash == running_hash {
            return (ConfigSync::InSync, String::new());
        }
        let mut cache = self.sync_cache.lock().unwrap_or_else(|p| p.into_inner());
        let verdict = match cache.as_ref() {
            Some((h, v)) if *h == hash => v.clone(),
            _ => {
                let v = config::secure_source(source)
                    .and_then(|s| config::validate(&s))
                    .err()
                    .map(|e| e.first().map(ToString::to_string).unwrap_or_default());
                *cache = Some((hash, v.clone()));
                v
            }
        };
        match verdict {
            None => (ConfigSync::Changed, String::new()),
            Some(e) => (ConfigSync::Invalid, e),
        }
    }

    async fn load_version(
        &self,
        version: u64,
    ) -> Result<(proto::HistoryEntry, Vec<ConfigFile>), Status> {
        let history = self.history.clone();
        blocking(move || history.version(version))
            .await?
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
        let mut configs = Vec::new();
        let mut errors = Vec::new();
        for v in [from, to] {
            let (_, files) = self.load_version(v).await?;
            let source = config::ConfigSource {
                main: self.info.config_path.clone(),
                files,
            };
            match config::validate(&source) {
                Ok(c) => configs.push(c),
                Err(e) => errors.extend(e.0.iter().map(convert::error)),
            }
        }
        let changes = match configs.as_slice() {
            [a, b] => diff::plan(a, b, &|_| false)
                .changes
                .iter()
                .map(convert::change)
                .collect(),
            _ => Vec::new(),
        };
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
        script: &str,
        action: ControlAction,
    ) -> Result<proto::ControlResponse, Status> {
        let handle = self
            .snapshot
            .borrow()
            .handles
            .get(script)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no script named {script:?}")))?;
        let message = handle.control(action).await.map_err(|e| match e {
            ControlError::Precondition(m) => Status::failed_precondition(m),
            ControlError::Spawn(m) => Status::aborted(format!("cannot start {script}: {m}")),
            ControlError::Gone => Status::unavailable(e.to_string()),
        })?;
        let status = handle.status.borrow().clone();
        Ok(proto::ControlResponse {
            status: Some(status),
            message,
        })
    }

    /// Records a Control call and its outcome in the history's audit trail.
    async fn audit(
        &self,
        uid: Option<u32>,
        req: &proto::ControlRequest,
        action: Option<ControlAction>,
        outcome: &Result<proto::ControlResponse, Status>,
    ) -> Result<(), Status> {
        let action = action.map_or_else(
            || format!("action {}", req.action),
            |a| {
                a.as_str_name()
                    .trim_start_matches("CONTROL_ACTION_")
                    .to_lowercase()
            },
        );
        let (result, message) = match outcome {
            Ok(r) => ("ok", r.message.clone()),
            Err(s) => (audit_result(s.code()), s.message().to_owned()),
        };
        let history = self.history.clone();
        let script = req.script.clone();
        blocking(move || {
            history.record_action(&crate::history::Action {
                uid,
                action: &action,
                script: &script,
                result,
                message: &message,
            })
        })
        .await
    }

    /// Queues a reload request with the caller's uid and waits for its report.
    async fn submit<T>(&self, request: &Req<T>, mut req: Request) -> Result<Report, Status> {
        let (tx, rx) = oneshot::channel();
        req.uid = crate::socket::peer_of(request).map(|p| p.uid);
        req.reply = Some(tx);
        self.reloads
            .send(req)
            .await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))
    }
}

/// Runs a blocking history call off the async workers; errors become INTERNAL.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("history task failed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))
}

/// User names of uids, each looked up once (the user database can be slow: NSS, LDAP).
#[derive(Default)]
struct UserNames(std::collections::HashMap<u32, String>);

impl UserNames {
    /// `items` with the user name of each one's uid filled in (`field`: its uid and where
    /// the name goes).
    fn name_all<T>(
        mut items: Vec<T>,
        field: impl Fn(&mut T) -> (Option<u32>, &mut String),
    ) -> Vec<T> {
        let mut names = Self::default();
        for item in &mut items {
            let (uid, user) = field(item);
            *user = names.of(uid);
        }
        items
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

/// Uid of the peer that sent `request` (SO_PEERCRED, recorded at connect).
fn peer_uid<T>(request: &Req<T>) -> Option<u32> {
    crate::socket::peer_of(request).map(|p| p.uid)
}

/// The `result` of a failed control action in the audit trail.
fn audit_result(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::NotFound => "not-found",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Aborted => "failed",
        tonic::Code::InvalidArgument => "invalid",
        _ => "error",
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Scriptd for Service {
    async fn status(
        &self,
        request: Req<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let want = request.into_inner().script;
        let snap = self.snapshot.borrow().clone();
        if !want.is_empty() && !snap.handles.contains_key(&want) {
            return Err(Status::not_found(format!("no script named {want:?}")));
        }
        let scripts = snap
            .handles
            .iter()
            .filter(|(name, _)| want.is_empty() || **name == want)
            .map(|(_, h)| h.status.borrow().clone())
            .collect();
        let (sync, sync_error) = self.disk_sync(&snap.hash);
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
        }))
    }

    async fn control(
        &self,
        request: Req<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, Status> {
        let uid = peer_uid(&request);
        let req = request.into_inner();
        let action = ControlAction::try_from(req.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified);
        let mut outcome = match action {
            Some(action) => self.control_script(&req.script, action).await,
            None => Err(Status::invalid_argument(
                "action must be start, stop, restart or run",
            )),
        };
        // Every call is in the audit trail, whatever its outcome.
        if let Err(e) = self.audit(uid, &req, action, &outcome).await {
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
        request: Req<proto::DiffRequest>,
    ) -> Result<Response<proto::DiffResponse>, Status> {
        let (from, to) = (request.get_ref().from_version, request.get_ref().to_version);
        if from != 0 || to != 0 {
            return self.diff_versions(from, to).await.map(Response::new);
        }
        let req = Request {
            dry_run: true,
            ..Request::new(Source::Ctl)
        };
        let r = self.submit(&request, req).await?;
        Ok(Response::new(proto::DiffResponse {
            base_version: r.base_version,
            plan_id: r.plan_id,
            unchanged: r.result == Some(proto::ReloadResult::Unchanged),
            rejected: r.result == Some(proto::ReloadResult::Rejected),
            changes: r.changes.iter().map(convert::change).collect(),
            errors: r.errors.0.iter().map(convert::error).collect(),
        }))
    }

    async fn reload(
        &self,
        request: Req<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let plan = request.get_ref().plan_id.clone();
        let req = Request {
            plan_id: (!plan.is_empty()).then_some(plan),
            ..Request::new(Source::Ctl)
        };
        let r = self.submit(&request, req).await?;
        Ok(Response::new(report_to_proto(r)))
    }

    type EventsStream = BoxStream<proto::Event>;

    async fn events(
        &self,
        _request: Req<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Ok(Response::new(Box::pin(self.events.follow())))
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
        let history = self.history.clone();
        let (entries, actions) = if request.get_ref().actions {
            let actions = blocking(move || {
                history
                    .actions(limit)
                    .map(|a| UserNames::name_all(a, |a| (a.uid, &mut a.user)))
            })
            .await?;
            (Vec::new(), actions)
        } else {
            let entries = blocking(move || {
                history
                    .list(limit)
                    .map(|e| UserNames::name_all(e, |e| (e.uid, &mut e.user)))
            })
            .await?;
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
        entry.user = UserNames::default().of(entry.uid);
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
            ..Request::new(Source::Rollback)
        };
        let report = self.submit(&request, req).await?;
        if report.not_found {
            return Err(Status::not_found(report.message));
        }
        Ok(Response::new(report_to_proto(report)))
    }

    type LogsStream = BoxStream<proto::LogLine>;

    async fn logs(
        &self,
        request: Req<proto::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let query = crate::logs::Query::from_request(&req, crate::now_ms())?;
        let sink = self
            .snapshot
            .borrow()
            .handles
            .get(&req.script)
            .map(|h| h.logs.clone())
            .ok_or_else(|| Status::not_found(format!("no script named {:?}", req.script)))?;
        Ok(Response::new(Box::pin(crate::logs::stream(sink, query))))
    }
}

/// A reload report as the `Reload` response.
pub fn report_to_proto(r: Report) -> proto::ReloadResponse {
    proto::ReloadResponse {
        attempt_id: r.attempt_id,
        result: r.result.unwrap_or(proto::ReloadResult::Unspecified) as i32,
        version: r.version,
        changes: r.changes.iter().map(convert::change).collect(),
        errors: r.errors.0.iter().map(convert::error).collect(),
        message: r.message,
        plan_id: r.plan_id,
        disk_differs: r.disk_differs,
    }
}
