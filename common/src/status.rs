//! What a script's status means, shared by the daemon (its metrics) and `ctl` (`status
//! --check`), so both call the same script up.

use crate::proto::{ScriptState, ScriptStatus};

impl ScriptStatus {
    /// Up: running, waiting for its next run, or idle after a run that succeeded (exit 0,
    /// not timed out) or before any run ended.
    pub fn is_up(&self) -> bool {
        match ScriptState::try_from(self.state).unwrap_or(ScriptState::Unspecified) {
            ScriptState::Running | ScriptState::Waiting => true,
            ScriptState::Idle => self
                .last_exit
                .is_none_or(|e| e.code == Some(0) && !e.timed_out),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{ExitInfo, ScriptState, ScriptStatus};

    #[test]
    fn up_states() {
        let s = |state: ScriptState, code: Option<i32>, timed_out: bool| ScriptStatus {
            state: state as i32,
            last_exit: code.map(|c| ExitInfo {
                code: Some(c),
                timed_out,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            (s(ScriptState::Running, None, false), true),
            (s(ScriptState::Waiting, Some(1), false), true),
            (s(ScriptState::Idle, Some(0), false), true),
            (s(ScriptState::Idle, None, false), true),
            (s(ScriptState::Idle, Some(0), true), false),
            (s(ScriptState::Idle, Some(1), false), false),
            (s(ScriptState::Failed, Some(1), false), false),
            (s(ScriptState::BackingOff, Some(1), false), false),
            (s(ScriptState::Stopped, None, false), false),
            (s(ScriptState::Disabled, None, false), false),
            (s(ScriptState::Unspecified, None, false), false),
        ];
        for (status, want) in cases {
            assert_eq!(status.is_up(), want, "{status:?}");
        }
    }
}
