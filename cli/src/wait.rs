//! `ctl run NAME --wait [--timeout DUR] [--follow]`: start a run and return when that run
//! ends, with its exit as the exit code (0, else 6), like `systemd-run --wait`.
//!
//! The end comes from the daemon's `WaitRun`, which also answers for a run that ended
//! before the wait began, so a short run is never missed. `--timeout` ends the wait, never
//! the run. With `--follow` the run's lines are printed meanwhile (as `ctl logs` prints
//! them); the daemon ends that stream after the run's last line. With `--raw`, stdout holds
//! only the run's output and ctl's own lines (run started, how it ended) go to stderr.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, OK, OUTCOME};
use crate::logs;
use crate::output::{exit_text, run_outcome, RunWaitJson};
use scriptd_common::proto::{self, ControlAction, ExitInfo};
use std::io::Write;
use std::time::Duration;

/// Runs `ctl run SCRIPT --wait`.
pub async fn run(
    c: &mut Client,
    out: &mut impl Write,
    json: bool,
    script: String,
    timeout: Option<Duration>,
    follow: bool,
    raw: bool,
) -> CtlResult {
    let format = logs::format_of(json, raw)?;
    let r = c
        .control(crate::targets::request(
            &script,
            ControlAction::Run,
            crate::targets::Wait::No,
        ))
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    let run_id = r.run_id;
    if run_id == 0 {
        return Err(CtlError::new(
            FAILURE,
            format!(
                "{script}: {}; the daemon did not say which run it started (is it older than \
                 this ctl?), so there is nothing to wait for",
                r.message
            ),
        ));
    }
    let started_ms = r.status.as_ref().map_or(0, |s| s.last_start_ms);
    if !json {
        note(out, raw, &format!("{script}: run {run_id}: {}", r.message))?;
    }
    let follow = follow.then_some(format);
    let waiting = follow_and_wait(c, &mut *out, &script, run_id, follow);
    let exit = match timeout {
        Some(limit) => tokio::time::timeout(limit, waiting)
            .await
            .ok()
            .transpose()?,
        None => Some(waiting.await?),
    };
    let doc = RunWaitJson::new(&script, run_id, started_ms, exit.as_ref());
    if json && follow.is_some() {
        // One object per line, like the log lines before it.
        serde_json::to_writer(&mut *out, &doc)?;
        writeln!(out)?;
    } else if json {
        crate::print_json(&mut *out, &doc)?;
    } else {
        let text = match &exit {
            Some(e) => format!(
                "{script}: run {run_id} {}: {}",
                if doc.outcome == "succeeded" {
                    "succeeded"
                } else {
                    "failed"
                },
                exit_text(e)
            ),
            None => format!(
                "{script}: run {run_id} still running after {} (--timeout); the run goes on: \
                 `ctl logs -f {script} --run {run_id}` follows it to its end",
                humantime::format_duration(timeout.unwrap_or_default())
            ),
        };
        note(out, raw, &text)?;
    }
    out.flush()?;
    Ok(match run_outcome(exit.as_ref()) {
        "succeeded" => OK,
        _ => OUTCOME,
    })
}

/// One of ctl's own lines: on stdout, or with `raw` (stdout holds only the run's output) on
/// stderr.
fn note(out: &mut impl Write, raw: bool, text: &str) -> CtlResult<()> {
    if raw {
        out.flush()?;
        let mut err = std::io::stderr();
        writeln!(err, "{text}")?;
    } else {
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(())
}

/// Waits for the end of run `run_id`; with `follow`, prints its lines meanwhile in that
/// format.
async fn follow_and_wait(
    c: &mut Client,
    out: &mut impl Write,
    script: &str,
    run_id: u64,
    follow: Option<logs::Format>,
) -> CtlResult<ExitInfo> {
    let end = end_of(c.clone(), script.to_owned(), run_id);
    let Some(format) = follow else {
        return end.await;
    };
    let mut stream = c
        .logs(proto::LogsRequest {
            script: script.to_owned(),
            // Every line of the run: the daemon reads back no further than its start.
            lines: u64::MAX,
            follow: true,
            run_id,
            ..Default::default()
        })
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    let printing = logs::print_stream(&mut stream, out, format, None, true);
    let (_, exit) = tokio::try_join!(printing, end)?;
    Ok(exit)
}

/// Waits for the end of run `run_id` of `script` (`WaitRun`: also answered for a run that
/// has already ended).
pub(crate) async fn end_of(mut c: Client, script: String, run_id: u64) -> CtlResult<ExitInfo> {
    let r = c
        .wait_run(proto::WaitRunRequest { script, run_id })
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    r.exit
        .ok_or_else(|| CtlError::new(FAILURE, "the daemon sent no exit for the run"))
}
