//! Exit codes (stable, documented in the README) and the error that carries one.

use std::fmt;

/// Everything went as asked.
pub const OK: u8 = 0;
/// The daemon is unreachable, or an internal error.
pub const FAILURE: u8 = 1;
/// Bad usage (clap also exits 2).
pub const USAGE: u8 = 2;
/// The config is invalid, or the reload was rejected or failed.
pub const CONFIG: u8 = 3;
/// No such script or version.
pub const NOT_FOUND: u8 = 4;
/// `--dry-run --exit-code`: the plan has changes.
pub const CHANGES: u8 = 5;
/// An outcome `ctl` waited for did not happen: the run failed (non-zero exit, killed, timed
/// out), the pattern did not appear, or `--timeout` passed.
pub const OUTCOME: u8 = 6;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CtlError {
    /// Exit code.
    pub code: u8,
    /// Message for stderr.
    pub message: String,
    broken_pipe: bool,
}

impl CtlError {
    /// An error with an explicit exit code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            broken_pipe: false,
        }
    }

    /// The reader of stdout went away (`| head`), seen before a write failed.
    pub fn reader_gone() -> Self {
        std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()
    }

    /// True when stdout was closed by the reader (`| head`): not an error for the user.
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }

    /// Maps a gRPC status; `precondition` is the exit code FAILED_PRECONDITION means for the
    /// command at hand (3 for reloads, 1 for control commands).
    pub fn from_status(status: tonic::Status, precondition: u8) -> Self {
        use tonic::Code;
        let code = match status.code() {
            Code::NotFound => NOT_FOUND,
            Code::InvalidArgument => USAGE,
            Code::FailedPrecondition => precondition,
            _ => FAILURE,
        };
        let msg = status.message();
        // A transport failure (a refused TLS handshake shows here on the first call):
        // its cause, not tonic's "transport error" or "operation was canceled".
        let cause = std::error::Error::source(&status).map(crate::client::explain);
        let message = match (status.code(), cause) {
            (Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal, Some(cause)) => {
                format!("{msg}: {cause}")
            }
            (Code::Unavailable, None) if msg.is_empty() => "the daemon is not available".to_owned(),
            (Code::PermissionDenied, _) => format!("permission denied: {msg}"),
            _ => msg.to_owned(),
        };
        Self::new(code, message)
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}

impl From<std::io::Error> for CtlError {
    fn from(e: std::io::Error) -> Self {
        Self {
            code: FAILURE,
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
            message: format!("cannot write output: {e}"),
        }
    }
}

impl From<serde_json::Error> for CtlError {
    fn from(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(kind) => std::io::Error::from(kind).into(),
            None => Self::new(FAILURE, format!("cannot encode JSON: {e}")),
        }
    }
}

/// Result of a command: the exit code on success.
pub type CtlResult<T = u8> = Result<T, CtlError>;
