//! `ctl reload [--dry-run] --file TARGET=CANDIDATE [--plan ID]`: reading the candidate files
//! to send (a path, or `-` for stdin), and refusing a malformed plan id before the daemon is
//! called. The daemon checks the targets (relative, inside the main file's directory, part
//! of the config) and validates the config they make.

use crate::error::{CtlError, CtlResult, CONFIG, USAGE};
use scriptd_common::config::limits::MAX_FILE_BYTES;
use scriptd_common::plan_id::PlanId;
use scriptd_common::proto;
use std::io::Read;

/// What one call can carry in all (the gRPC message limit is 4 MiB; the rest is room for
/// the names and framing).
const MAX_TOTAL_BYTES: usize = (4 << 20) - (64 << 10);

/// One `--file TARGET=CANDIDATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    /// The config file to replace or add, relative to the main file's directory.
    pub target: String,
    /// Where its new content is: a path, or `-` for stdin.
    pub candidate: String,
}

impl FileArg {
    /// As given on the command line.
    fn shown(&self) -> String {
        format!("{}={}", self.target, self.candidate)
    }
}

/// Parses `TARGET=CANDIDATE` (split at the first `=`: a candidate path may hold one).
pub fn parse_file_arg(text: &str) -> Result<FileArg, String> {
    match text.split_once('=') {
        Some((target, candidate)) if !target.is_empty() && !candidate.is_empty() => Ok(FileArg {
            target: target.to_owned(),
            candidate: candidate.to_owned(),
        }),
        _ => Err(format!(
            "expected TARGET=CANDIDATE (a config file relative to the main file's directory, \
             `=`, then a path or `-` for stdin), got {text:?}"
        )),
    }
}

/// Refuses a plan id that is not of the plan-id syntax (exit 2), before any call.
pub fn check_plan(plan: Option<&str>) -> CtlResult<()> {
    match plan {
        Some(p) => PlanId::parse(p)
            .map(drop)
            .map_err(|e| CtlError::new(USAGE, e.to_string())),
        None => Ok(()),
    }
}

/// The `--file` arguments as the request's files: each candidate read (stdin at most once),
/// at most 1 MiB each (the limit of a config file: exit 3, as the daemon would refuse it)
/// and 4 MiB in all; a candidate that cannot be read is a usage error (2).
pub fn read_all(files: &[FileArg]) -> CtlResult<Vec<proto::CandidateFile>> {
    if files.iter().filter(|f| f.candidate == "-").count() > 1 {
        return Err(CtlError::new(
            USAGE,
            "only one --file may read stdin (`-`); give the others as paths",
        ));
    }
    let mut out = Vec::new();
    let mut total = 0;
    for f in files {
        let content = if f.candidate == "-" {
            read_capped(std::io::stdin().lock())
        } else {
            std::fs::File::open(&f.candidate).and_then(read_capped)
        }
        .map_err(|e| {
            let from = if f.candidate == "-" {
                "stdin".to_owned()
            } else {
                f.candidate.clone()
            };
            CtlError::new(
                USAGE,
                format!("--file {}: cannot read {from}: {e}", f.shown()),
            )
        })?;
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(CtlError::new(
                CONFIG,
                format!(
                    "--file {}: larger than {} MiB, the limit for one config file; split it",
                    f.shown(),
                    MAX_FILE_BYTES >> 20
                ),
            ));
        }
        total += content.len();
        if total > MAX_TOTAL_BYTES {
            return Err(CtlError::new(
                CONFIG,
                "the --file candidates together are larger than 4 MiB, what one call can \
                 carry; write the files in place yourself and run `ctl reload`",
            ));
        }
        out.push(proto::CandidateFile {
            path: f.target.clone(),
            content,
        });
    }
    Ok(out)
}

/// At most one byte past the limit of a config file (enough to tell that it is too large).
fn read_capped(r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    r.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The `--file` arguments as they were given, to repeat in a hint.
pub fn shown(files: &[FileArg]) -> String {
    files
        .iter()
        .map(|f| format!(" --file {}", f.shown()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_args() {
        let ok = |t: &str, c: &str| {
            Ok(FileArg {
                target: t.into(),
                candidate: c.into(),
            })
        };
        assert_eq!(
            parse_file_arg("scriptd.yaml=new.yaml"),
            ok("scriptd.yaml", "new.yaml")
        );
        assert_eq!(parse_file_arg("conf.d/a.yaml=-"), ok("conf.d/a.yaml", "-"));
        assert_eq!(
            parse_file_arg("a.yaml=/tmp/x=y.yaml"),
            ok("a.yaml", "/tmp/x=y.yaml")
        );
        for bad in ["a.yaml", "=x", "a.yaml=", ""] {
            assert!(parse_file_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stdin_once_and_unreadable_candidates_are_usage_errors() {
        let arg = |c: &str| FileArg {
            target: "a.yaml".into(),
            candidate: c.into(),
        };
        let e = read_all(&[arg("-"), arg("-")]).expect_err("twice");
        assert_eq!(e.code, USAGE);
        let e = read_all(&[arg("/nonexistent/candidate.yaml")]).expect_err("missing");
        assert_eq!(e.code, USAGE);
        assert!(e.message.contains("/nonexistent/candidate.yaml"), "{e}");
        assert!(check_plan(Some("v1-0123456789abcdef")).is_ok());
        assert_eq!(check_plan(Some("latest")).expect_err("bad").code, USAGE);
    }
}
