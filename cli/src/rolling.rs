//! Rolling changes: `ctl --context 'web-*' reload --rolling [--parallel N] [--file T=C]
//! [--undo-on-failure]` (and `rollback --rolling`) applies host by host, N at a time, in the
//! contexts file's order; each host's change must be done (`settled`) before the next
//! batch starts. The first host that fails (rejected, failed, unreachable) stops the roll:
//! later hosts are not touched, and with `--undo-on-failure` the hosts already changed are
//! rolled back to the version they ran before.

use crate::client::{self, Client};
use crate::context::{self, Context, Contexts};
use crate::error::{CtlError, CtlResult, CONFIG, FAILURE, OK, OUTCOME, USAGE};
use crate::fleet::{timed_out, Selection};
use crate::output::table;
use crate::Command;
use scriptd_common::proto::{self, ReloadResult};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, Instant};

/// The longest one host's change may take, its verification included (a daemon's
/// `reload.verify` window is 30 s by default); reaching the host is bounded by
/// `--host-timeout`.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// `--rolling` and its options, on `reload` and `rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollingArgs {
    /// Apply on the selected contexts host by host (see --parallel), each change done
    /// before the next; stop at the first host that fails.
    #[arg(long, conflicts_with_all = ["dry_run", "plan"])]
    pub rolling: bool,
    /// With --rolling: how many hosts at once.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "rolling",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
    /// With --rolling: when a host fails, roll the hosts already changed back to the version
    /// they ran before.
    #[arg(long, requires = "rolling")]
    pub undo_on_failure: bool,
}

/// What each host is asked to do.
#[derive(Debug, Clone)]
enum Change {
    /// `reload` (with candidate files, if any).
    Reload(Vec<proto::CandidateFile>),
    /// `rollback` to this version (0: the one before the running one).
    Rollback(u64),
}

/// How one host went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Unchanged,
    Rejected,
    Failed,
    /// Applied, but what it started was not ready within the host's `reload.verify`; the
    /// host's daemon kept it (`reload.on_failure: keep`).
    NotVerified,
    /// Applied, not verified, and put back by the host's daemon itself
    /// (`reload.on_failure: rollback`).
    RolledBack,
    Unreachable,
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::NotVerified => "not-verified",
            Self::RolledBack => "auto-rolled-back",
            Self::Unreachable => "unreachable",
            Self::Skipped => "skipped",
        }
    }

    fn ok(self) -> bool {
        matches!(self, Self::Applied | Self::Unchanged)
    }

    /// The exit code it stands for.
    fn code(self) -> u8 {
        match self {
            Self::Applied | Self::Unchanged | Self::Skipped => OK,
            Self::Rejected | Self::Failed | Self::RolledBack => CONFIG,
            Self::NotVerified => OUTCOME,
            Self::Unreachable => FAILURE,
        }
    }
}

/// One host's row.
#[derive(Debug, Clone)]
struct Row {
    context: Context,
    before: Option<u64>,
    after: Option<u64>,
    outcome: Outcome,
    message: String,
    time_ms: u64,
    /// With --undo-on-failure: the version the undo made, or why it failed.
    undo: Option<Result<u64, String>>,
}

/// `reload --rolling` / `rollback --rolling` on the contexts `selection` picks; each host's
/// status, change and undo within `limit` (`--host-timeout`).
pub async fn run(
    selection: &Selection,
    command: Command,
    json: bool,
    limit: Duration,
) -> CtlResult {
    let (change, args) = match command {
        Command::Reload { files, rolling, .. } => {
            (Change::Reload(crate::candidate::read_all(&files)?), rolling)
        }
        Command::Rollback {
            version, rolling, ..
        } => (Change::Rollback(version.unwrap_or(0)), rolling),
        _ => return Err(CtlError::new(USAGE, "--rolling is for reload and rollback")),
    };
    let path = context::file().ok_or_else(|| {
        CtlError::new(
            USAGE,
            "--rolling goes over contexts, and neither XDG_CONFIG_HOME nor HOME is set",
        )
    })?;
    let contexts = selection.pick(&Contexts::load(&path)?)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut stopped = false;
    for batch in contexts.chunks(args.parallel as usize) {
        if stopped {
            rows.extend(batch.iter().map(|c| skipped(c.clone())));
            continue;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in batch.iter().cloned().enumerate() {
            let change = change.clone();
            tasks.spawn(async move { (i, apply(c, change, limit).await) });
        }
        let mut done = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            done.push(joined.map_err(|e| CtlError::new(FAILURE, format!("a host's task: {e}")))?);
        }
        done.sort_by_key(|(i, _)| *i);
        stopped = done.iter().any(|(_, r)| !r.outcome.ok());
        rows.extend(done.into_iter().map(|(_, r)| r));
    }
    if stopped && args.undo_on_failure {
        for row in rows.iter_mut() {
            // The hosts done, and a host whose change runs unverified (kept by its daemon).
            let changed = matches!(row.outcome, Outcome::Applied | Outcome::NotVerified);
            if let (true, Some(before)) = (changed, row.before) {
                row.undo = Some(undo(&row.context, before, limit).await);
            }
        }
    }
    print(&rows, json)?;
    Ok(rows.iter().map(|r| r.outcome.code()).max().unwrap_or(OK))
}

fn skipped(context: Context) -> Row {
    Row {
        context,
        before: None,
        after: None,
        outcome: Outcome::Skipped,
        message: "not touched: an earlier host failed".into(),
        time_ms: 0,
        undo: None,
    }
}

/// `change` on context `c`: its version before, the change, and whether it is done. Reaching
/// the host is bounded by `limit` (`--host-timeout`); the change itself, which waits for the
/// host's verification, by [`CHANGE_TIMEOUT`] (or `limit`, when that is longer).
async fn apply(c: Context, change: Change, limit: Duration) -> Row {
    let started = Instant::now();
    let mut row = Row {
        context: c.clone(),
        before: None,
        after: None,
        outcome: Outcome::Unreachable,
        message: String::new(),
        time_ms: 0,
        undo: None,
    };
    let result = async {
        let reached = tokio::time::timeout(limit, async {
            let mut client = connect(&c).await?;
            let before = client
                .status(proto::StatusRequest::default())
                .await
                .map_err(|s| CtlError::from_status(s, FAILURE))?
                .into_inner()
                .running_version;
            Ok::<_, CtlError>((client, before))
        })
        .await;
        let (mut client, before) = match reached {
            Ok(r) => r.map_err(|e| (Outcome::Unreachable, e.message))?,
            Err(_) => return Err((Outcome::Unreachable, timed_out(limit).message)),
        };
        let call = async {
            match change {
                // Waits for the daemon's verification (`reload --wait`).
                Change::Reload(files) => {
                    client
                        .reload(proto::ReloadRequest {
                            plan_id: String::new(),
                            files,
                            wait: true,
                        })
                        .await
                }
                Change::Rollback(version) => {
                    client
                        .rollback(proto::RollbackRequest {
                            version,
                            dry_run: false,
                            plan_id: String::new(),
                        })
                        .await
                }
            }
        };
        let bound = CHANGE_TIMEOUT.max(limit);
        let response = tokio::time::timeout(bound, call)
            .await
            .map_err(|_| {
                let why = format!(
                    "the change was not done within {} (its verification goes on on the host)",
                    humantime::format_duration(bound)
                );
                (Outcome::Failed, why)
            })?
            .map_err(|s| (Outcome::Failed, CtlError::from_status(s, CONFIG).message))?
            .into_inner();
        Ok::<_, (Outcome, String)>((before, response))
    }
    .await;
    match result {
        Ok((before, response)) => {
            row.before = Some(before);
            row.after = Some(response.version);
            let (outcome, message) = settled(&response);
            row.outcome = outcome;
            row.message = message;
        }
        Err((outcome, message)) => {
            row.outcome = outcome;
            row.message = message;
        }
    }
    row.time_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    row
}

/// Whether a host's change is done, and what to say about it: applied and verified (the
/// reload waited for the daemon's verification, `reload --wait`), or nothing to change. A
/// version the host's daemon rolled back itself, or kept unverified, is a failure: the
/// rolling stops there. This is the one place that decides.
fn settled(r: &proto::ReloadResponse) -> (Outcome, String) {
    let first_error = r.errors.first().map(crate::output::human::error_text);
    match ReloadResult::try_from(r.result).unwrap_or(ReloadResult::Unspecified) {
        ReloadResult::Applied => (Outcome::Applied, String::new()),
        ReloadResult::Unchanged => (Outcome::Unchanged, String::new()),
        ReloadResult::Rejected => (
            Outcome::Rejected,
            first_error.unwrap_or_else(|| r.message.clone()),
        ),
        ReloadResult::NotVerified => (Outcome::NotVerified, r.message.clone()),
        ReloadResult::AutoRolledBack => (Outcome::RolledBack, r.message.clone()),
        ReloadResult::FailedRolledBack | ReloadResult::Unspecified => (
            Outcome::Failed,
            first_error.unwrap_or_else(|| r.message.clone()),
        ),
    }
}

async fn connect(c: &Context) -> CtlResult<Client> {
    let target = client::target_of(c.clone())?;
    client::connect_target(&target).await
}

/// Rolls context `c` back to `version`: the version that made, or why it could not.
async fn undo(c: &Context, version: u64, limit: Duration) -> Result<u64, String> {
    let work = async {
        let mut client = connect(c).await.map_err(|e| e.message)?;
        let r = client
            .rollback(proto::RollbackRequest {
                version,
                dry_run: false,
                plan_id: String::new(),
            })
            .await
            .map_err(|s| CtlError::from_status(s, CONFIG).message)?
            .into_inner();
        match settled(&r) {
            (o, _) if o.ok() => Ok(r.version),
            (_, message) => Err(message),
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit).message))
}

/// `reload --rolling --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollingJson {
    /// Always 1.
    pub schema: u32,
    /// One entry per host, in the order rolled.
    pub hosts: Vec<RollingHostJson>,
}

/// One host of a rolling change.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollingHostJson {
    /// Context name.
    pub context: String,
    /// Running version before; absent when the host was not reached or not touched.
    pub before: Option<u64>,
    /// Running version after.
    pub after: Option<u64>,
    /// applied, unchanged, rejected, failed, not-verified, auto-rolled-back, unreachable,
    /// skipped.
    pub result: String,
    /// Why it failed, or why it was skipped.
    pub message: String,
    /// How long the host took.
    pub time_ms: u64,
    /// With --undo-on-failure, for a host that was changed: the version the rollback made.
    pub undone_to: Option<u64>,
    /// ... or why the rollback failed.
    pub undo_error: Option<String>,
}

impl From<&Row> for RollingHostJson {
    fn from(r: &Row) -> Self {
        Self {
            context: r.context.name.clone(),
            before: r.before,
            after: r.after,
            result: r.outcome.as_str().into(),
            message: r.message.clone(),
            time_ms: r.time_ms,
            undone_to: r.undo.as_ref().and_then(|u| u.as_ref().ok().copied()),
            undo_error: r.undo.as_ref().and_then(|u| u.as_ref().err().cloned()),
        }
    }
}

fn print(rows: &[Row], json: bool) -> CtlResult<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let doc = RollingJson {
            schema: JSON_SCHEMA,
            hosts: rows.iter().map(RollingHostJson::from).collect(),
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    let version = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("v{v}"));
    let mut lines = vec![["HOST", "BEFORE", "AFTER", "RESULT", "TIME", "MESSAGE"]
        .map(String::from)
        .to_vec()];
    for r in rows {
        let mut message = r.message.clone();
        match &r.undo {
            Some(Ok(v)) => message = format!("undone: v{v} (as v{})", r.before.unwrap_or(0)),
            Some(Err(e)) => message = format!("undo failed: {e}"),
            None => {}
        }
        lines.push(vec![
            r.context.name.clone(),
            version(r.before),
            version(r.after),
            r.outcome.as_str().into(),
            format!("{}ms", r.time_ms),
            message,
        ]);
    }
    write!(
        out,
        "{}",
        table::render(lines, &[5], crate::output::display().width)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_done() {
        let response = |result: ReloadResult| proto::ReloadResponse {
            result: result as i32,
            message: "why".into(),
            ..Default::default()
        };
        for (result, want) in [
            (ReloadResult::Applied, Outcome::Applied),
            (ReloadResult::Unchanged, Outcome::Unchanged),
            (ReloadResult::Rejected, Outcome::Rejected),
            (ReloadResult::FailedRolledBack, Outcome::Failed),
            (ReloadResult::NotVerified, Outcome::NotVerified),
            (ReloadResult::AutoRolledBack, Outcome::RolledBack),
            (ReloadResult::Unspecified, Outcome::Failed),
        ] {
            assert_eq!(settled(&response(result)).0, want, "{result:?}");
        }
        assert_eq!(Outcome::Rejected.code(), CONFIG);
        assert_eq!(Outcome::NotVerified.code(), OUTCOME);
        assert_eq!(Outcome::RolledBack.code(), CONFIG);
        assert_eq!(Outcome::Unreachable.code(), FAILURE);
        assert!(!Outcome::Skipped.ok());
    }
}
