//! gRPC handlers: validate, forward to the owner of the state, map failures to precise
//! status codes. No state lives here.

use crate::convert;
use crate::events::EventBus;
use crate::reload::{self, Report, Request, Snapshot, Source};
use crate::runner::ControlError;
use scriptd_common::config;
use scriptd_common::proto::scriptd_server::Scriptd;
use scriptd_common::proto::{self, event::Kind, ConfigSync, ControlAction};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
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
    ) -> Self {
        Self {
            info,
            snapshot,
            reloads,
            events,
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
                let v = config::check_permissions(&source)
                    .and_then(|_| config::validate(&source))
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

    async fn reload(&self, dry_run: bool, plan_id: Option<String>) -> Result<Report, Status> {
        let (tx, rx) = oneshot::channel();
        self.reloads
            .send(Request {
                source: Source::Ctl,
                dry_run,
                plan_id,
                reply: Some(tx),
            })
            .await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))
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
        let req = request.into_inner();
        let action = ControlAction::try_from(req.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified)
            .ok_or_else(|| Status::invalid_argument("action must be start, stop, restart or run"))?;
        let handle = self
            .snapshot
            .borrow()
            .handles
            .get(&req.script)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no script named {:?}", req.script)))?;
        let message = handle.control(action).await.map_err(|e| match e {
            ControlError::Precondition(m) => Status::failed_precondition(m),
            ControlError::Spawn(m) => Status::aborted(format!("cannot start {}: {m}", req.script)),
            ControlError::Gone => Status::unavailable(e.to_string()),
        })?;
        let status = handle.status.borrow().clone();
        Ok(Response::new(proto::ControlResponse {
            status: Some(status),
            message,
        }))
    }

    async fn diff(
        &self,
        _request: Req<proto::DiffRequest>,
    ) -> Result<Response<proto::DiffResponse>, Status> {
        let r = self.reload(true, None).await?;
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
        let plan = request.into_inner().plan_id;
        let r = self
            .reload(false, (!plan.is_empty()).then_some(plan))
            .await?;
        Ok(Response::new(report_to_proto(r)))
    }

    type EventsStream = BoxStream<proto::Event>;

    async fn events(
        &self,
        _request: Req<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let mut sub = self.events.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let item = match sub.recv().await {
                    Ok(ev) => (*ev).clone(),
                    Err(broadcast::error::RecvError::Lagged(n)) => proto::Event {
                        time_ms: crate::now_ms(),
                        seq: 0,
                        kind: Some(Kind::Missed(n)),
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if tx.send(Ok(item)).await.is_err() {
                    break; // the client left
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn history(
        &self,
        _request: Req<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        Err(Status::unimplemented("history is not implemented yet"))
    }

    async fn get_version(
        &self,
        _request: Req<proto::GetVersionRequest>,
    ) -> Result<Response<proto::GetVersionResponse>, Status> {
        Err(Status::unimplemented("history is not implemented yet"))
    }

    async fn rollback(
        &self,
        _request: Req<proto::RollbackRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        Err(Status::unimplemented("rollback is not implemented yet"))
    }

    type LogsStream = BoxStream<proto::LogLine>;

    async fn logs(
        &self,
        _request: Req<proto::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("logs are not implemented yet"))
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
    }
}

/// Re-export for the plan id of dry runs.
pub use reload::plan_id;
