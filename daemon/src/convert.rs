//! Internal types → gRPC messages.

use crate::history::{ActionResult, ResultKind};
use scriptd_common::config::ConfigError;
use scriptd_common::diff::{self, Impact, Outcome};
use scriptd_common::proto;

/// A plan change as sent on the wire.
pub fn change(c: &diff::Change) -> proto::Change {
    proto::Change {
        script: c.script.clone(),
        field: c.field.clone(),
        old_value: c.old.clone(),
        new_value: c.new.clone(),
        impact: match c.impact {
            Impact::Live => proto::Impact::Live,
            Impact::NextRun => proto::Impact::NextRun,
            Impact::Restart => proto::Impact::Restart,
            Impact::Start => proto::Impact::Start,
            Impact::Stop => proto::Impact::Stop,
            Impact::DaemonRestart => proto::Impact::DaemonRestart,
        } as i32,
        outcome: match c.outcome {
            Outcome::Applied => proto::Outcome::Applied,
            Outcome::Scheduled => proto::Outcome::Scheduled,
            Outcome::Rejected => proto::Outcome::Rejected,
        } as i32,
        reason: c.reason.clone(),
    }
}

/// `changes` as a preview says them (a dry run, a diff of two versions): what would be done
/// at once is `planned`, not `applied`; scheduled and rejected changes stay as they are.
pub fn as_planned(changes: &mut [proto::Change]) {
    for c in changes {
        if c.outcome == proto::Outcome::Applied as i32 {
            c.outcome = proto::Outcome::Planned as i32;
        }
    }
}

/// A validation error as sent on the wire.
pub fn error(e: &ConfigError) -> proto::ConfigError {
    proto::ConfigError {
        file: e.file.clone(),
        line: e.line,
        column: e.column,
        path: e.path.clone(),
        message: e.message.clone(),
    }
}

/// How a reload ended, as sent in responses.
pub fn result(r: ResultKind) -> proto::ReloadResult {
    match r {
        ResultKind::Applied => proto::ReloadResult::Applied,
        ResultKind::Unchanged => proto::ReloadResult::Unchanged,
        ResultKind::Rejected => proto::ReloadResult::Rejected,
        ResultKind::FailedRolledBack => proto::ReloadResult::FailedRolledBack,
    }
}

/// The terminal reload phase of an attempt that ended with `r`.
pub fn terminal_phase(r: ResultKind) -> proto::ReloadPhase {
    match r {
        ResultKind::Applied => proto::ReloadPhase::Applied,
        ResultKind::Unchanged => proto::ReloadPhase::Unchanged,
        ResultKind::Rejected => proto::ReloadPhase::Rejected,
        ResultKind::FailedRolledBack => proto::ReloadPhase::FailedRolledBack,
    }
}

/// How a control call that failed with the gRPC `code` ended, in the audit trail.
pub fn action_result(code: tonic::Code) -> ActionResult {
    match code {
        tonic::Code::NotFound => ActionResult::NotFound,
        tonic::Code::FailedPrecondition => ActionResult::Refused,
        tonic::Code::Aborted => ActionResult::Failed,
        tonic::Code::InvalidArgument => ActionResult::Invalid,
        _ => ActionResult::Error,
    }
}

/// A script state as `ctl` spells it (for messages the daemon writes).
pub fn state_word(s: proto::ScriptState) -> &'static str {
    use proto::ScriptState as S;
    match s {
        S::Running => "running",
        S::Starting => "starting",
        S::Waiting => "waiting",
        S::Idle => "idle",
        S::Disabled => "disabled",
        S::BackingOff => "backing-off",
        S::Failed => "failed",
        S::Stopped => "stopped",
        S::Unhealthy => "unhealthy",
        S::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_plans_what_would_apply_and_keeps_the_rest() {
        let table = [
            (proto::Outcome::Applied, proto::Outcome::Planned),
            (proto::Outcome::Scheduled, proto::Outcome::Scheduled),
            (proto::Outcome::Rejected, proto::Outcome::Rejected),
        ];
        let mut changes: Vec<proto::Change> = table
            .iter()
            .map(|(from, _)| proto::Change {
                outcome: *from as i32,
                ..Default::default()
            })
            .collect();
        as_planned(&mut changes);
        for (c, (from, want)) in changes.iter().zip(table) {
            assert_eq!(c.outcome, want as i32, "{from:?}");
        }
    }
}
