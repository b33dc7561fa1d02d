//! Verifications in `ctl`: `reload --wait` and `start|restart --wait` outcomes, the status
//! lines of a verification in progress and of the last automatic rollback, and their JSON
//! types (tested by parsing them back strictly).

use crate::error::{CONFIG, FAILURE, OK, OUTCOME};
use crate::output::{relative, time};
use scriptd_common::proto::{self, ReloadResult};
use serde::{Deserialize, Serialize};

/// How one script did in a verification.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
#[serde(deny_unknown_fields)]
pub struct VerificationJson {
    /// Script name.
    pub script: String,
    /// `ready`, `succeeded`, `exited`, `crash-looping`, `probe-failing`, `timeout`,
    /// `removed`, or `pending`.
    pub outcome: String,
    /// Why, for people.
    pub reason: Option<String>,
    /// The first run that counted.
    pub run_id: Option<u64>,
}

impl From<&proto::ScriptVerification> for VerificationJson {
    fn from(v: &proto::ScriptVerification) -> Self {
        Self {
            script: v.script.clone(),
            outcome: v.outcome.clone(),
            reason: (!v.reason.is_empty()).then(|| v.reason.clone()),
            run_id: (v.run_id > 0).then_some(v.run_id),
        }
    }
}

/// A verification in progress (`ctl status`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerifyingJson {
    /// The attempt whose version is verified.
    pub attempt_id: u64,
    /// That version.
    pub version: u64,
    /// Scripts not verified yet.
    pub pending: Vec<String>,
    /// When the window ends, RFC 3339.
    pub deadline: Option<String>,
    /// `rollback` or `keep`.
    pub on_failure: String,
}

impl From<&proto::VerifyProgress> for VerifyingJson {
    fn from(v: &proto::VerifyProgress) -> Self {
        Self {
            attempt_id: v.attempt_id,
            version: v.version,
            pending: v.pending.clone(),
            deadline: time(v.deadline_ms),
            on_failure: v.on_failure.clone(),
        }
    }
}

/// The last automatic rollback (`ctl status`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AutoRollbackJson {
    /// The attempt whose version was not verified.
    pub attempt_id: u64,
    /// That version.
    pub failed_version: u64,
    /// The version the rollback applied.
    pub version: u64,
    /// The version whose files it restored.
    pub restored_version: u64,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub time: Option<String>,
}

impl From<&proto::AutoRollback> for AutoRollbackJson {
    fn from(a: &proto::AutoRollback) -> Self {
        Self {
            attempt_id: a.attempt_id,
            failed_version: a.failed_version,
            version: a.version,
            restored_version: a.restored_version,
            reason: a.reason.clone(),
            time: time(a.time_ms),
        }
    }
}

/// The exit code of a reload (or rollback) result: 0 applied (and verified) or unchanged,
/// 3 rejected, failed or rolled back automatically, 6 applied but not verified.
pub fn reload_exit(result: i32) -> u8 {
    match ReloadResult::try_from(result).unwrap_or(ReloadResult::Unspecified) {
        ReloadResult::Applied | ReloadResult::Unchanged => OK,
        ReloadResult::Rejected | ReloadResult::FailedRolledBack | ReloadResult::AutoRolledBack => {
            CONFIG
        }
        ReloadResult::NotVerified => OUTCOME,
        ReloadResult::Unspecified => FAILURE,
    }
}

/// One line per verified script: `  web: ready (alive for its ready_after)`.
pub fn lines(list: &[proto::ScriptVerification]) -> String {
    list.iter()
        .map(|v| {
            let mut s = format!("  {}: {}", v.script, v.outcome);
            if !v.reason.is_empty() {
                s.push_str(&format!(" ({})", v.reason));
            }
            s.push('\n');
            s
        })
        .collect()
}

/// The status header lines about verification: one in progress, the last auto-rollback.
pub fn status_lines(r: &proto::StatusResponse) -> String {
    let mut out = String::new();
    if let Some(v) = &r.verifying {
        let left = relative(v.deadline_ms);
        out.push_str(&format!(
            "verifying version {} (reload #{}): waiting for {}; window ends {left} (on failure: {})\n",
            v.version,
            v.attempt_id,
            if v.pending.is_empty() {
                "nothing".to_owned()
            } else {
                v.pending.join(", ")
            },
            v.on_failure
        ));
    }
    if let Some(a) = &r.last_auto_rollback {
        out.push_str(&format!(
            "auto-rollback {}: version {} (reload #{}) was {}; version {}'s files run again as \
             version {}\n",
            relative(a.time_ms),
            a.failed_version,
            a.attempt_id,
            a.reason,
            a.restored_version,
            a.version,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_strictly() {
        let v = proto::ScriptVerification {
            script: "web".into(),
            outcome: "crash-looping".into(),
            reason: "3 failed starts".into(),
            run_id: 7,
        };
        let text = serde_json::to_string(&VerificationJson::from(&v)).expect("json");
        let back: VerificationJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(
            (back.outcome.as_str(), back.run_id),
            ("crash-looping", Some(7))
        );

        let p = proto::VerifyProgress {
            attempt_id: 3,
            version: 4,
            pending: vec!["web".into()],
            deadline_ms: 1_700_000_000_000,
            on_failure: "rollback".into(),
        };
        let text = serde_json::to_string(&VerifyingJson::from(&p)).expect("json");
        let back: VerifyingJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back.pending, ["web"]);

        let a = proto::AutoRollback {
            attempt_id: 3,
            failed_version: 4,
            version: 5,
            restored_version: 3,
            reason: "web crash-looping".into(),
            time_ms: 1_700_000_000_000,
        };
        let text = serde_json::to_string(&AutoRollbackJson::from(&a)).expect("json");
        let back: AutoRollbackJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!((back.version, back.restored_version), (5, 3));
    }

    #[test]
    fn exit_codes() {
        let table = [
            (ReloadResult::Applied, OK),
            (ReloadResult::Unchanged, OK),
            (ReloadResult::Rejected, CONFIG),
            (ReloadResult::FailedRolledBack, CONFIG),
            (ReloadResult::AutoRolledBack, CONFIG),
            (ReloadResult::NotVerified, OUTCOME),
            (ReloadResult::Unspecified, FAILURE),
        ];
        for (r, code) in table {
            assert_eq!(reload_exit(r as i32), code, "{r:?}");
        }
    }
}
