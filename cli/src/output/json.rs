//! `--output json` documents: their own serialisable types, each with `"schema": 1`, parsed
//! back strictly (`deny_unknown_fields`) by the tests and by scripts. Times are RFC 3339 in
//! UTC (also with `--local`, which is for people), durations `*_ms` integers.

use super::human::error_text;
use super::names::{impact_name, outcome_name, phase_name, script_event_name, signal_name};
use super::names::{state_name, sync_name};
use super::time::time;
use crate::health::HealthJson;
use crate::resources::ResourcesJson;
use scriptd_common::proto::{self, event::Kind, ExitInfo, ScriptStatus};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------ JSON documents

/// `ctl status --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatusJson {
    /// Always 1.
    pub schema: u32,
    /// The daemon.
    pub daemon: DaemonJson,
    /// Running config version.
    pub running_version: u64,
    /// `in-sync`, `changed` or `invalid`: the files on disk against the running version.
    pub sync: String,
    /// First validation error when `sync` is `invalid`.
    pub sync_error: Option<String>,
    /// One object per script.
    pub scripts: Vec<ScriptJson>,
    /// When the config comes from etcd: the source's state (absent otherwise; `sync` is then
    /// `unknown`, the files on disk being only the bootstrap file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdJson>,
    /// A verification of an applied reload in progress; null when none.
    pub verifying: Option<crate::verify::VerifyingJson>,
    /// The last automatic rollback, until the next applied version; null when none.
    pub last_auto_rollback: Option<crate::verify::AutoRollbackJson>,
}

/// The etcd source of a status (`daemon.source.etcd`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdJson {
    /// The endpoint connected to, or last tried.
    pub endpoint: String,
    /// The key whose value is the config.
    pub key: String,
    /// Whether a watch on the key is established.
    pub connected: bool,
    /// Since when connected, or disconnected (RFC 3339).
    pub since: Option<String>,
    /// The newest etcd revision seen; null before any.
    pub last_revision_seen: Option<i64>,
    /// The mod revision of the value the running version holds; null when the running
    /// version was not read from etcd in this daemon's life (etcd away at start).
    pub running_revision: Option<i64>,
    /// Why not connected, or the last problem with the key.
    pub problem: Option<String>,
}

impl From<&proto::EtcdSourceStatus> for EtcdJson {
    fn from(e: &proto::EtcdSourceStatus) -> Self {
        Self {
            endpoint: e.endpoint.clone(),
            key: e.key.clone(),
            connected: e.connected,
            since: time(e.since_ms),
            last_revision_seen: (e.last_revision_seen > 0).then_some(e.last_revision_seen),
            running_revision: (e.running_revision > 0).then_some(e.running_revision),
            problem: (!e.problem.is_empty()).then(|| e.problem.clone()),
        }
    }
}

/// The daemon part of a status.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonJson {
    /// Process id.
    pub pid: u32,
    /// Version.
    pub version: String,
    /// Start time, RFC 3339.
    pub started_at: Option<String>,
    /// Main config file.
    pub config: String,
    /// Socket path.
    pub socket: String,
    /// The daemon's own CPU, memory and descriptors (`processes` is 1).
    pub resources: Option<ResourcesJson>,
}

/// One script in JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptJson {
    /// Name.
    pub name: String,
    /// `periodic` or `service`.
    pub kind: String,
    /// running, waiting, idle, disabled, backing-off, failed, stopped, unhealthy.
    pub state: String,
    /// `enabled` in the config.
    pub enabled: bool,
    /// Pid of the running process (group leader).
    pub pid: Option<u32>,
    /// Runs started since the daemon started.
    pub run_count: u64,
    /// Id of the current or last run.
    pub run_id: u64,
    /// Last start, RFC 3339.
    pub last_start: Option<String>,
    /// How the last run ended.
    pub last_exit: Option<ExitJson>,
    /// Next scheduled start, RFC 3339.
    pub next_run: Option<String>,
    /// Interval of a periodic script, ms.
    pub interval_ms: Option<u64>,
    /// Ticks skipped because a run was still going.
    pub skipped_ticks: u64,
    /// Consecutive restarts since the last stable run.
    pub restarts: u32,
    /// Fields whose change waits for the current run to end.
    pub pending_changes: Vec<String>,
    /// The health probe of a service with `health:`; null without one.
    pub health: Option<HealthJson>,
    /// Cron expression of a script with a `schedule`.
    pub schedule: Option<String>,
    /// Time zone of the schedule (`local`: the daemon's).
    pub timezone: Option<String>,
    /// `jitter` of a periodic script, ms.
    pub jitter_ms: Option<u64>,
    /// `catch_up` of a script with a schedule.
    pub catch_up: Option<bool>,
    /// The user it runs as (`user:`); null: the daemon's.
    pub user: Option<String>,
    /// That user's uid; null: the daemon's.
    pub uid: Option<u32>,
    /// What its process group uses; null when it does not run (or the daemon was not
    /// asked, as in the answer to a control command).
    pub resources: Option<ResourcesJson>,
}

/// How a run ended.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExitJson {
    /// The run this is the end of (null from a daemon that did not say).
    pub run_id: Option<u64>,
    /// Exit code.
    pub code: Option<i32>,
    /// Signal name (`SIGTERM`).
    pub signal: Option<String>,
    /// Stopped for passing its timeout.
    pub timed_out: bool,
    /// End time, RFC 3339.
    pub ended_at: Option<String>,
    /// Duration in ms.
    pub duration_ms: u64,
}

impl From<&ExitInfo> for ExitJson {
    fn from(e: &ExitInfo) -> Self {
        Self {
            run_id: (e.run_id > 0).then_some(e.run_id),
            code: e.code,
            signal: e.signal.map(signal_name),
            timed_out: e.timed_out,
            ended_at: time(e.ended_at_ms),
            duration_ms: e.duration_ms,
        }
    }
}

impl From<&ScriptStatus> for ScriptJson {
    fn from(s: &ScriptStatus) -> Self {
        Self {
            name: s.name.clone(),
            kind: s.kind.clone(),
            state: state_name(s.state).into(),
            enabled: s.enabled,
            pid: (s.pid > 0).then_some(s.pid),
            run_count: s.run_count,
            run_id: s.run_id,
            last_start: time(s.last_start_ms),
            last_exit: s.last_exit.as_ref().map(ExitJson::from),
            next_run: time(s.next_run_ms),
            interval_ms: (s.interval_ms > 0).then_some(s.interval_ms),
            skipped_ticks: s.skipped_ticks,
            restarts: s.restarts,
            pending_changes: s.pending_changes.clone(),
            health: s.health.as_ref().map(HealthJson::from),
            schedule: (!s.schedule.is_empty()).then(|| s.schedule.clone()),
            timezone: (!s.timezone.is_empty()).then(|| s.timezone.clone()),
            jitter_ms: (s.jitter_ms > 0).then_some(s.jitter_ms),
            catch_up: (!s.schedule.is_empty()).then_some(s.catch_up),
            user: (!s.user.is_empty()).then(|| s.user.clone()),
            uid: s.uid,
            resources: s.resources.as_ref().map(ResourcesJson::from),
        }
    }
}

impl From<&proto::StatusResponse> for StatusJson {
    fn from(r: &proto::StatusResponse) -> Self {
        Self {
            schema: JSON_SCHEMA,
            daemon: DaemonJson {
                pid: r.daemon_pid,
                version: r.daemon_version.clone(),
                started_at: time(r.started_at_ms),
                config: r.config_path.clone(),
                socket: r.socket_path.clone(),
                resources: r.daemon_resources.as_ref().map(ResourcesJson::from),
            },
            running_version: r.running_version,
            sync: sync_name(r.sync).into(),
            sync_error: (!r.sync_error.is_empty()).then(|| r.sync_error.clone()),
            scripts: r.scripts.iter().map(ScriptJson::from).collect(),
            etcd: r.etcd.as_ref().map(EtcdJson::from),
            verifying: r.verifying.as_ref().map(Into::into),
            last_auto_rollback: r.last_auto_rollback.as_ref().map(Into::into),
        }
    }
}

/// `ctl start|stop|restart|run --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlJson {
    /// Always 1.
    pub schema: u32,
    /// What was asked.
    pub action: String,
    /// What the daemon said.
    pub message: String,
    /// The run this command started (`run`, `start`, `restart`); null when none.
    pub run_id: Option<u64>,
    /// The script afterwards.
    pub script: ScriptJson,
    /// With `--wait`: how the started run did (`ready`, `succeeded`, `exited`,
    /// `crash-looping`, `probe-failing`, `timeout`); absent without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::verify::VerificationJson>,
}

/// `ctl run --wait --output json`: how the run this command started ended, or that the
/// wait's `--timeout` passed first.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunWaitJson {
    /// Always 1.
    pub schema: u32,
    /// Script name.
    pub script: String,
    /// The run.
    pub run_id: u64,
    /// `succeeded` (exit 0, ctl exits 0); `run-failed` (non-zero exit, killed or timed out)
    /// or `timeout` (the wait's `--timeout` passed; the run goes on): ctl exits 6.
    pub outcome: String,
    /// Exit code, when the run exited.
    pub exit_code: Option<i32>,
    /// Signal name (`SIGKILL`), when the run was killed by one.
    pub signal: Option<String>,
    /// The run was stopped for passing its own `timeout`.
    pub timed_out: bool,
    /// Start time, RFC 3339.
    pub started_at: Option<String>,
    /// End time, RFC 3339; null while it runs.
    pub ended_at: Option<String>,
    /// How long it ran (ms); null while it runs.
    pub duration_ms: Option<u64>,
}

/// The outcome of a wait for a run: `exit` is its end, `None` when the wait timed out.
pub fn run_outcome(exit: Option<&ExitInfo>) -> &'static str {
    match exit {
        None => "timeout",
        Some(e) if e.code == Some(0) && !e.timed_out => "succeeded",
        Some(_) => "run-failed",
    }
}

impl RunWaitJson {
    /// The document for run `run_id` of `script`, started at `started_ms`, ended as `exit`
    /// (`None`: still running when the wait gave up).
    pub fn new(script: &str, run_id: u64, started_ms: i64, exit: Option<&ExitInfo>) -> Self {
        Self {
            schema: JSON_SCHEMA,
            script: script.to_owned(),
            run_id,
            outcome: run_outcome(exit).into(),
            exit_code: exit.and_then(|e| e.code),
            signal: exit.and_then(|e| e.signal).map(signal_name),
            timed_out: exit.is_some_and(|e| e.timed_out),
            started_at: time(exit.map_or(started_ms, |e| e.started_at_ms)),
            ended_at: exit.and_then(|e| time(e.ended_at_ms)),
            duration_ms: exit.map(|e| e.duration_ms),
        }
    }
}

/// One change of a plan.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeJson {
    /// Script; empty for daemon keys.
    pub script: String,
    /// Field, `*` for a whole script.
    pub field: String,
    /// Old value; null when the field or script is added ("" is an empty value).
    pub old: Option<String>,
    /// New value; null when the field or script is removed ("" is an empty value).
    pub new: Option<String>,
    /// live, next-run, restart, start, stop, daemon-restart.
    pub impact: String,
    /// applied, scheduled (waits for a run to end), rejected; in a preview (dry run, `ctl
    /// diff`) planned instead of applied.
    pub outcome: String,
    /// Why scheduled or rejected.
    pub reason: Option<String>,
}

/// One validation error.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorJson {
    /// File.
    pub file: String,
    /// Line (1-based, 0 unknown).
    pub line: u32,
    /// Column (1-based, 0 unknown).
    pub column: u32,
    /// Key path.
    pub path: String,
    /// Message.
    pub message: String,
    /// `file:line:col: path: message`.
    pub text: String,
}

/// `ctl reload [--dry-run] --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReloadJson {
    /// Always 1.
    pub schema: u32,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// applied, unchanged, rejected, failed-rolled-back, invalid; with `--wait` also
    /// auto-rolled-back and not-verified; dry run: would-apply, unchanged, rejected, invalid.
    pub result: String,
    /// Attempt id (absent for dry runs).
    pub attempt_id: Option<u64>,
    /// Running version after the attempt (dry run: the base version).
    pub version: u64,
    /// Plan id: pass it to `ctl reload --plan`.
    pub plan_id: Option<String>,
    /// Changes.
    pub changes: Vec<ChangeJson>,
    /// Validation errors.
    pub errors: Vec<ErrorJson>,
    /// Why rejected or failed.
    pub message: Option<String>,
    /// With `--wait`: how each script the reload started or restarted did.
    #[serde(default)]
    pub verification: Vec<crate::verify::VerificationJson>,
    /// `auto-rolled-back`: the version the daemon's rollback applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_version: Option<u64>,
}

impl From<&proto::Change> for ChangeJson {
    fn from(c: &proto::Change) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            script: c.script.clone(),
            field: c.field.clone(),
            old: c.old_value.clone(),
            new: c.new_value.clone(),
            impact: impact_name(c.impact).into(),
            outcome: outcome_name(c.outcome).into(),
            reason: opt(&c.reason),
        }
    }
}

impl From<&proto::ConfigError> for ErrorJson {
    fn from(e: &proto::ConfigError) -> Self {
        Self {
            file: e.file.clone(),
            line: e.line,
            column: e.column,
            path: e.path.clone(),
            message: e.message.clone(),
            text: error_text(e),
        }
    }
}

/// `ctl events --output json`: one object per line.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventJson {
    /// Always 1.
    pub schema: u32,
    /// Event sequence number (0 for a missed marker).
    pub seq: u64,
    /// Event id, for `ctl events --after-id` (0 for a missed marker); grows across daemon
    /// restarts.
    pub id: u64,
    /// When, RFC 3339.
    pub time: Option<String>,
    /// `reload`, `script` or `missed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Reload attempt id.
    pub attempt_id: Option<u64>,
    /// Reload phase: detected, validated, planned, applying, applied, rejected,
    /// failed-rolled-back, unchanged; after an apply: verifying, verified, verify-failed,
    /// auto-rolled-back.
    pub phase: Option<String>,
    /// Reload trigger.
    pub source: Option<String>,
    /// Version after the phase.
    pub version: Option<u64>,
    /// Reload plan.
    pub changes: Option<Vec<ChangeJson>>,
    /// Validation errors.
    pub errors: Option<Vec<ErrorJson>>,
    /// Script name.
    pub script: Option<String>,
    /// started, ready, exited, timed-out, restarted, scheduled-change-applied, tick-skipped,
    /// stopped, unhealthy, healthy, caught-up.
    pub event: Option<String>,
    /// Run id.
    pub run_id: Option<u64>,
    /// Pid.
    pub pid: Option<u32>,
    /// How a run ended.
    pub exit: Option<ExitJson>,
    /// Number of events this follower missed.
    pub missed: Option<u64>,
    /// On a missed marker answering `--after-id`: the id is of an earlier daemon process,
    /// whose later events are gone too (not counted in `missed`).
    pub earlier_daemon: Option<bool>,
    /// Detail.
    pub message: Option<String>,
    /// verifying, verified, verify-failed, auto-rolled-back: each script's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Vec<crate::verify::VerificationJson>>,
    /// auto-rolled-back: the attempt id of the daemon's rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_attempt_id: Option<u64>,
}

impl From<&proto::Event> for EventJson {
    fn from(e: &proto::Event) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut j = EventJson {
            schema: JSON_SCHEMA,
            seq: e.seq,
            id: e.id,
            time: time(e.time_ms),
            kind: String::new(),
            attempt_id: None,
            phase: None,
            source: None,
            version: None,
            changes: None,
            errors: None,
            script: None,
            event: None,
            run_id: None,
            pid: None,
            exit: None,
            missed: None,
            earlier_daemon: None,
            message: None,
            verification: None,
            rollback_attempt_id: None,
        };
        match &e.kind {
            Some(Kind::Reload(r)) => {
                j.kind = "reload".into();
                j.attempt_id = Some(r.attempt_id);
                j.phase = Some(phase_name(r.phase).into());
                j.source = opt(&r.source);
                j.version = (r.version > 0).then_some(r.version);
                j.changes = Some(r.changes.iter().map(ChangeJson::from).collect());
                j.errors = Some(r.errors.iter().map(ErrorJson::from).collect());
                j.message = opt(&r.message);
                if !r.verification.is_empty() {
                    j.verification = Some(r.verification.iter().map(Into::into).collect());
                }
                j.rollback_attempt_id =
                    (r.rollback_attempt_id > 0).then_some(r.rollback_attempt_id);
            }
            Some(Kind::Script(s)) => {
                j.kind = "script".into();
                j.script = Some(s.script.clone());
                j.event = Some(script_event_name(s.kind).into());
                j.run_id = Some(s.run_id);
                j.pid = (s.pid > 0).then_some(s.pid);
                j.exit = s.exit.as_ref().map(ExitJson::from);
                j.message = opt(&s.message);
            }
            Some(Kind::Missed(n)) => {
                j.kind = "missed".into();
                j.missed = Some(*n);
                j.earlier_daemon = Some(e.earlier_daemon);
            }
            None => j.kind = "unknown".into(),
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExitInfo {
        ExitInfo {
            code,
            signal,
            timed_out,
            ended_at_ms: 1_700_000_001_000,
            duration_ms: 1000,
            run_id: 4,
            started_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn run_outcomes() {
        let table = [
            (Some(exit(Some(0), None, false)), "succeeded"),
            (Some(exit(Some(3), None, false)), "run-failed"),
            (Some(exit(None, Some(9), false)), "run-failed"),
            (Some(exit(None, Some(15), true)), "run-failed"),
            (Some(exit(Some(0), None, true)), "run-failed"),
            (None, "timeout"),
        ];
        for (e, want) in table {
            assert_eq!(run_outcome(e.as_ref()), want, "{e:?}");
        }
    }

    #[test]
    fn run_wait_json_round_trips_strictly() {
        let e = exit(None, Some(9), true);
        let text = serde_json::to_string(&RunWaitJson::new("job", 4, 0, Some(&e))).expect("json");
        let doc: RunWaitJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(doc.outcome, "run-failed");
        assert_eq!(doc.signal.as_deref(), Some("SIGKILL"));
        assert_eq!(doc.started_at.as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(doc.duration_ms, Some(1000));

        let waiting = RunWaitJson::new("job", 4, 1_700_000_000_000, None);
        let text = serde_json::to_string(&waiting).expect("json");
        let doc: RunWaitJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!((doc.outcome.as_str(), doc.ended_at), ("timeout", None));
        assert_eq!(doc.started_at.as_deref(), Some("2023-11-14T22:13:20.000Z"));
    }

    #[test]
    fn a_last_exit_names_its_run() {
        let j = ExitJson::from(&exit(Some(0), None, false));
        let text = serde_json::to_string(&j).expect("json");
        let back: ExitJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back.run_id, Some(4));
    }

    #[test]
    fn a_script_names_its_user_or_null() {
        let mut status = ScriptStatus {
            name: "web".into(),
            user: "www-data".into(),
            uid: Some(33),
            ..Default::default()
        };
        let text = serde_json::to_string(&ScriptJson::from(&status)).expect("json");
        let back: ScriptJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(
            (back.user.as_deref(), back.uid),
            (Some("www-data"), Some(33))
        );
        status.user.clear();
        status.uid = None;
        let json = serde_json::to_value(ScriptJson::from(&status)).expect("json");
        assert_eq!(
            (&json["user"], &json["uid"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
    }

    #[test]
    fn a_calendar_script_round_trips_strictly() {
        let status = ScriptStatus {
            name: "nightly".into(),
            kind: "periodic".into(),
            next_run_ms: 1_700_000_000_000,
            schedule: "30 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            jitter_ms: 600_000,
            catch_up: true,
            ..Default::default()
        };
        let text = serde_json::to_string(&ScriptJson::from(&status)).expect("json");
        let back: ScriptJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back.schedule.as_deref(), Some("30 3 * * *"));
        assert_eq!(back.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!((back.jitter_ms, back.catch_up), (Some(600_000), Some(true)));
        assert_eq!(back.next_run.as_deref(), Some("2023-11-14T22:13:20.000Z"));

        // An interval script: no calendar keys, no jitter.
        let every = ScriptStatus {
            interval_ms: 60_000,
            ..Default::default()
        };
        let back = ScriptJson::from(&every);
        assert_eq!(
            (back.schedule, back.timezone, back.jitter_ms, back.catch_up),
            (None, None, None, None)
        );
    }
}
