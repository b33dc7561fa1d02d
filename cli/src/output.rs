//! `--output json` documents (their own serialisable types, each with `"schema": 1`) and the
//! tables and lines people read.

use scriptd_common::proto::{
    self, event::Kind, ConfigSync, ExitInfo, Impact, Outcome, ReloadPhase, ReloadResult,
    ScriptEventKind, ScriptState, ScriptStatus,
};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 time of Unix ms; `None` for 0.
pub fn time(ms: i64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// "5s ago" / "in 4m 10s", to the second.
pub fn relative(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let delta = ms - now_ms();
    let secs = Duration::from_secs(delta.unsigned_abs() / 1000);
    let text = if secs.is_zero() {
        "now".to_owned()
    } else {
        humantime::format_duration(secs).to_string()
    };
    match (delta >= 0, secs.is_zero()) {
        (_, true) => text,
        (true, false) => format!("in {text}"),
        (false, false) => format!("{text} ago"),
    }
}

/// Whether to colour: a terminal, and no `NO_COLOR`.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Wraps `text` in an ANSI colour when `on`.
pub fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Spelling of a state.
pub fn state_name(s: i32) -> &'static str {
    match ScriptState::try_from(s).unwrap_or(ScriptState::Unspecified) {
        ScriptState::Running => "running",
        ScriptState::Starting => "starting",
        ScriptState::Waiting => "waiting",
        ScriptState::Idle => "idle",
        ScriptState::Disabled => "disabled",
        ScriptState::BackingOff => "backing-off",
        ScriptState::Failed => "failed",
        ScriptState::Stopped => "stopped",
        ScriptState::Unspecified => "unknown",
    }
}

fn state_colour(s: &str) -> &'static str {
    match s {
        "running" => "32",
        "failed" | "backing-off" => "31",
        "waiting" => "36",
        "starting" => "33",
        _ => "2",
    }
}

/// Spelling of a sync state.
pub fn sync_name(s: i32) -> &'static str {
    match ConfigSync::try_from(s).unwrap_or(ConfigSync::Unspecified) {
        ConfigSync::InSync => "in-sync",
        ConfigSync::Changed => "changed",
        ConfigSync::Invalid => "invalid",
        ConfigSync::Unspecified => "unknown",
    }
}

fn signal_name(sig: i32) -> String {
    scriptd_common::signals::describe(sig, "signal ")
}

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
    /// A verification of an applied reload in progress; null when none.
    pub verifying: Option<crate::verify::VerifyingJson>,
    /// The last automatic rollback, until the next applied version; null when none.
    pub last_auto_rollback: Option<crate::verify::AutoRollbackJson>,
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
}

/// One script in JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptJson {
    /// Name.
    pub name: String,
    /// `periodic` or `service`.
    pub kind: String,
    /// running, waiting, idle, disabled, backing-off, failed, stopped.
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
            },
            running_version: r.running_version,
            sync: sync_name(r.sync).into(),
            sync_error: (!r.sync_error.is_empty()).then(|| r.sync_error.clone()),
            scripts: r.scripts.iter().map(ScriptJson::from).collect(),
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
    /// applied, scheduled, rejected.
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

/// Spelling of an impact.
pub fn impact_name(i: i32) -> &'static str {
    match Impact::try_from(i).unwrap_or(Impact::Unspecified) {
        Impact::Live => "live",
        Impact::NextRun => "next-run",
        Impact::Restart => "restart",
        Impact::Start => "start",
        Impact::Stop => "stop",
        Impact::DaemonRestart => "daemon-restart",
        Impact::Unspecified => "unknown",
    }
}

/// Spelling of an outcome.
pub fn outcome_name(o: i32) -> &'static str {
    match Outcome::try_from(o).unwrap_or(Outcome::Unspecified) {
        Outcome::Applied => "applied",
        Outcome::Scheduled => "scheduled",
        Outcome::Rejected => "rejected",
        Outcome::Unspecified => "unknown",
    }
}

/// Spelling of a reload result.
pub fn result_name(r: i32) -> &'static str {
    match ReloadResult::try_from(r).unwrap_or(ReloadResult::Unspecified) {
        ReloadResult::Applied => "applied",
        ReloadResult::Unchanged => "unchanged",
        ReloadResult::Rejected => "rejected",
        ReloadResult::FailedRolledBack => "failed-rolled-back",
        ReloadResult::AutoRolledBack => "auto-rolled-back",
        ReloadResult::NotVerified => "not-verified",
        ReloadResult::Unspecified => "unknown",
    }
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

/// `file:line:col: path: message`, as the daemon prints it.
pub fn error_text(e: &proto::ConfigError) -> String {
    let mut s = e.file.clone();
    if e.line > 0 {
        s.push_str(&format!(":{}:{}", e.line, e.column));
    }
    if !e.path.is_empty() {
        s.push_str(&format!(": {}", e.path));
    }
    s.push_str(&format!(": {}", e.message));
    s
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
    /// stopped.
    pub event: Option<String>,
    /// Run id.
    pub run_id: Option<u64>,
    /// Pid.
    pub pid: Option<u32>,
    /// How a run ended.
    pub exit: Option<ExitJson>,
    /// Number of events this follower missed.
    pub missed: Option<u64>,
    /// Detail.
    pub message: Option<String>,
    /// verifying, verified, verify-failed, auto-rolled-back: each script's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Vec<crate::verify::VerificationJson>>,
    /// auto-rolled-back: the attempt id of the daemon's rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_attempt_id: Option<u64>,
}

/// Spelling of a reload phase.
pub fn phase_name(p: i32) -> &'static str {
    match ReloadPhase::try_from(p).unwrap_or(ReloadPhase::Unspecified) {
        ReloadPhase::Detected => "detected",
        ReloadPhase::Validated => "validated",
        ReloadPhase::Planned => "planned",
        ReloadPhase::Applying => "applying",
        ReloadPhase::Applied => "applied",
        ReloadPhase::Rejected => "rejected",
        ReloadPhase::FailedRolledBack => "failed-rolled-back",
        ReloadPhase::Unchanged => "unchanged",
        ReloadPhase::Verifying => "verifying",
        ReloadPhase::Verified => "verified",
        ReloadPhase::VerifyFailed => "verify-failed",
        ReloadPhase::AutoRolledBack => "auto-rolled-back",
        ReloadPhase::Unspecified => "unknown",
    }
}

/// Spelling of a script event.
pub fn script_event_name(k: i32) -> &'static str {
    match ScriptEventKind::try_from(k).unwrap_or(ScriptEventKind::Unspecified) {
        ScriptEventKind::Started => "started",
        ScriptEventKind::Exited => "exited",
        ScriptEventKind::TimedOut => "timed-out",
        ScriptEventKind::Restarted => "restarted",
        ScriptEventKind::ScheduledChangeApplied => "scheduled-change-applied",
        ScriptEventKind::TickSkipped => "tick-skipped",
        ScriptEventKind::Stopped => "stopped",
        ScriptEventKind::Ready => "ready",
        ScriptEventKind::Unspecified => "unknown",
    }
}

impl From<&proto::Event> for EventJson {
    fn from(e: &proto::Event) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut j = EventJson {
            schema: JSON_SCHEMA,
            seq: e.seq,
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
            }
            None => j.kind = "unknown".into(),
        }
        j
    }
}

// ------------------------------------------------------------------ people

/// "exit 0 (1.2s)", "SIGKILL, timed out (2m)".
pub fn exit_text(e: &ExitInfo) -> String {
    let mut s = match (e.code, e.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => signal_name(sig),
        _ => "?".into(),
    };
    if e.timed_out {
        s.push_str(", timed out");
    }
    let d = Duration::from_millis(e.duration_ms);
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        d
    };
    format!("{s} ({})", humantime::format_duration(d))
}

/// The status table.
pub fn status_table(r: &proto::StatusResponse, colour: bool) -> String {
    let mut out = String::new();
    let sync = sync_name(r.sync);
    let sync_shown = match sync {
        "in-sync" => "files in sync".to_owned(),
        "changed" => "files changed on disk, not applied (`ctl reload`)".to_owned(),
        "invalid" => format!("files on disk invalid: {}", r.sync_error),
        other => other.to_owned(),
    };
    out.push_str(&format!(
        "scriptd {} · pid {} · up {} · {}\nconfig {} · version {} · {}\n\n",
        r.daemon_version,
        r.daemon_pid,
        relative(r.started_at_ms).trim_end_matches(" ago"),
        r.socket_path,
        r.config_path,
        r.running_version,
        sync_shown,
    ));
    let verifying = crate::verify::status_lines(r);
    if !verifying.is_empty() {
        // Above the blank line that ends the header.
        out.pop();
        out.push_str(&verifying);
        out.push('\n');
    }
    let mut builder = tabled::builder::Builder::default();
    builder.push_record([
        "NAME",
        "KIND",
        "STATE",
        "PID",
        "RUNS",
        "LAST START",
        "LAST EXIT",
        "NEXT RUN",
    ]);
    for s in &r.scripts {
        let state = state_name(s.state);
        let mut state_text = paint(state, state_colour(state), colour);
        if !s.pending_changes.is_empty() {
            state_text.push_str(&format!(" (pending: {})", s.pending_changes.join(", ")));
        }
        builder.push_record([
            s.name.clone(),
            s.kind.clone(),
            state_text,
            if s.pid > 0 {
                s.pid.to_string()
            } else {
                "-".into()
            },
            s.run_count.to_string(),
            relative(s.last_start_ms),
            s.last_exit.as_ref().map_or("-".into(), exit_text),
            relative(s.next_run_ms),
        ]);
    }
    let mut table = builder.build();
    table.with(tabled::settings::Style::blank());
    out.push_str(&table.to_string());
    out.push('\n');
    out
}

/// A value in the plan table; the empty string shows as `""`, so a value changed from ""
/// (`"" → x`) differs from an added one (`+ x`).
fn value_text(v: &str) -> &str {
    if v.is_empty() {
        "\"\""
    } else {
        v
    }
}

/// The plan table.
pub fn changes_table(changes: &[proto::Change]) -> String {
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(["SCRIPT", "FIELD", "OLD → NEW", "IMPACT", "OUTCOME"]);
    for c in changes {
        let arrow = match (&c.old_value, &c.new_value) {
            (None, new) => format!("+ {}", value_text(new.as_deref().unwrap_or_default())),
            (Some(old), None) => format!("- {}", value_text(old)),
            (Some(old), Some(new)) => format!("{} → {}", value_text(old), value_text(new)),
        };
        let mut outcome = outcome_name(c.outcome).to_owned();
        if !c.reason.is_empty() {
            outcome.push_str(&format!(" ({})", c.reason));
        }
        builder.push_record([
            if c.script.is_empty() {
                "(daemon)".into()
            } else {
                c.script.clone()
            },
            c.field.clone(),
            arrow,
            impact_name(c.impact).into(),
            outcome,
        ]);
    }
    let mut table = builder.build();
    table.with(tabled::settings::Style::blank());
    format!("{table}\n")
}

/// One line per event for `ctl events`.
pub fn event_line(e: &proto::Event) -> String {
    let t = time(e.time_ms).unwrap_or_default();
    match &e.kind {
        Some(Kind::Reload(r)) => {
            let mut s = format!(
                "{t} reload #{} {} ({})",
                r.attempt_id,
                phase_name(r.phase),
                r.source
            );
            if r.version > 0 && r.phase == ReloadPhase::Applied as i32 {
                s.push_str(&format!(" → version {}", r.version));
            }
            if !r.changes.is_empty() && r.phase == ReloadPhase::Planned as i32 {
                s.push_str(&format!(" {} change(s)", r.changes.len()));
            }
            if !r.message.is_empty() {
                s.push_str(&format!(": {}", r.message));
            }
            for err in &r.errors {
                s.push_str(&format!("\n    {}", error_text(err)));
            }
            s
        }
        Some(Kind::Script(ev)) => {
            let mut s = format!(
                "{t} {} {} run {}",
                ev.script,
                script_event_name(ev.kind),
                ev.run_id
            );
            if ev.pid > 0 {
                s.push_str(&format!(" pid {}", ev.pid));
            }
            if let Some(x) = &ev.exit {
                s.push_str(&format!(" {}", exit_text(x)));
            }
            if !ev.message.is_empty() && ev.exit.is_none() {
                s.push_str(&format!(": {}", ev.message));
            }
            s
        }
        Some(Kind::Missed(n)) => format!("{t} … missed {n} events (this follower was too slow)"),
        None => format!("{t} (unknown event)"),
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
}
