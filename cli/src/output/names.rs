//! How each API enum is spelled in tables and JSON (`backing-off`, `next-run`, `planned`).

use scriptd_common::proto::{
    ConfigSync, Impact, Outcome, ReloadPhase, ReloadResult, ScriptEventKind, ScriptState,
};

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
        ScriptState::Unhealthy => "unhealthy",
        ScriptState::Unspecified => "unknown",
    }
}

/// ANSI colour of a state in tables.
pub fn state_colour(s: &str) -> &'static str {
    match s {
        "running" => "32",
        "failed" | "backing-off" | "unhealthy" => "31",
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

/// `SIGTERM` for 15 (the number when it has no name).
pub fn signal_name(sig: i32) -> String {
    scriptd_common::signals::describe(sig, "signal ")
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
        Outcome::Planned => "planned",
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
        ScriptEventKind::Unhealthy => "unhealthy",
        ScriptEventKind::Healthy => "healthy",
        ScriptEventKind::CaughtUp => "caught-up",
        ScriptEventKind::Ready => "ready",
        ScriptEventKind::Unspecified => "unknown",
    }
}
