//! `ctl events`: reload phases and script lifecycle events as they happen, filtered by the
//! daemon (`--script`, `--kind`), resumable after an event id (`--after-id`). Like
//! `ctl logs -f`, it ends quietly (exit 0) once the reader of stdout is gone.
//!
//! Script names and globs are checked against the daemon's scripts with
//! [`crate::targets::resolve`] (one that selects nothing: exit 4) and sent as given: the
//! daemon matches them as events come, so a script added later that a glob matches is
//! followed too. The kinds are the script event kinds of the API, spelled as in the output
//! (`started`, `timed-out`, …, derived from the proto enum, so a new kind needs no second
//! list), and `reload` for every reload phase.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, OK};
use crate::output::{event_line, time, EventJson};
use clap::Args;
use scriptd_common::proto::{self, event::Kind, ScriptEventKind};
use std::io::Write;
use tokio_stream::StreamExt;

/// Flags of `ctl events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only the events of this script (repeatable; globs like 'web-*' too). Reload events
    /// belong to no script: with --script they come only with --kind reload.
    #[arg(long = "script", value_name = "NAME")]
    pub scripts: Vec<String>,
    /// Only events of this kind (repeatable): reload (every reload phase) or a script event
    /// kind: started, exited, timed-out, restarted, scheduled-change-applied, tick-skipped,
    /// stopped, ...
    #[arg(long = "kind", value_name = "KIND", value_parser = parse_kind)]
    pub kinds: Vec<EventKind>,
    /// Resume: first the events after this id that the daemon still keeps (its last 4,096,
    /// at most 4 MiB; 0: all of them), then live ones, none twice. Ids are the `id` of
    /// `--output json` and the first column of the table.
    #[arg(long, value_name = "ID")]
    pub after_id: Option<u64>,
    /// Exit 0 after N events (missed markers not counted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// A kind `--kind` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Every reload phase.
    Reload,
    /// One script event kind.
    Script(ScriptEventKind),
}

/// Every script event kind the API knows, in order.
fn script_kinds() -> impl Iterator<Item = ScriptEventKind> {
    (1..).map_while(|k| ScriptEventKind::try_from(k).ok())
}

/// The spelling of a script event kind: its API name, lower case, `-` for `_`.
pub fn kind_name(k: ScriptEventKind) -> String {
    k.as_str_name()
        .trim_start_matches("SCRIPT_EVENT_KIND_")
        .to_lowercase()
        .replace('_', "-")
}

/// Parses a `--kind` value; an unknown one lists those there are.
pub fn parse_kind(s: &str) -> Result<EventKind, String> {
    if s == "reload" {
        return Ok(EventKind::Reload);
    }
    script_kinds()
        .find(|k| kind_name(*k) == s)
        .map(EventKind::Script)
        .ok_or_else(|| {
            let known: Vec<String> = std::iter::once("reload".to_owned())
                .chain(script_kinds().map(kind_name))
                .collect();
            format!("unknown event kind; the kinds are: {}", known.join(", "))
        })
}

impl EventsArgs {
    /// The request these flags make.
    pub fn request(&self) -> proto::EventsRequest {
        proto::EventsRequest {
            after_id: self.after_id,
            scripts: self.scripts.clone(),
            kinds: self
                .kinds
                .iter()
                .filter_map(|k| match k {
                    EventKind::Script(k) => Some(*k as i32),
                    EventKind::Reload => None,
                })
                .collect(),
            reload: self.kinds.contains(&EventKind::Reload),
        }
    }
}

/// One line of the table: the id, then the event; a resume's first `missed` marker says
/// what it means for the id asked for.
pub fn line(e: &proto::Event, resumed_after: Option<u64>) -> String {
    let t = time(e.time_ms).unwrap_or_default();
    match (&e.kind, resumed_after) {
        (Some(Kind::Missed(n)), Some(id)) if e.earlier_daemon => format!(
            "- {t} … event {id} is from an earlier daemon process: its later events are gone, \
             and {n} of this daemon's are no longer kept"
        ),
        (Some(Kind::Missed(n)), Some(id)) => {
            format!("- {t} … missed {n} events after {id}: no longer kept")
        }
        (Some(Kind::Missed(_)), None) => format!("- {}", event_line(e)),
        _ => format!("{} {}", e.id, event_line(e)),
    }
}

/// Runs `ctl events`.
pub async fn run(c: &mut Client, out: &mut impl Write, json: bool, args: EventsArgs) -> CtlResult {
    if !args.scripts.is_empty() {
        let scripts = crate::targets::scripts(c).await?;
        crate::targets::resolve(&args.scripts, false, &scripts)?;
    }
    let mut stream = c
        .events(args.request())
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    // Like `ctl logs -f`: a follower whose reader went away (`| head`) ends at once, also
    // when no event comes.
    let gone = crate::reader::gone();
    tokio::pin!(gone);
    let mut first = true;
    let mut printed = 0;
    while args.count.is_none_or(|n| printed < n) {
        let item = tokio::select! {
            item = stream.next() => item,
            () = &mut gone => return Err(CtlError::reader_gone()),
        };
        let Some(item) = item else {
            break;
        };
        let ev = item.map_err(|s| CtlError::from_status(s, FAILURE))?;
        if json {
            serde_json::to_writer(&mut *out, &EventJson::from(&ev))?;
            writeln!(out)?;
        } else {
            // Only the first marker of a resume is about the id asked for.
            writeln!(out, "{}", line(&ev, args.after_id.filter(|_| first)))?;
        }
        out.flush()?;
        first = false;
        if !matches!(ev.kind, Some(Kind::Missed(_))) {
            printed += 1;
        }
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spelled_as_in_the_output() {
        let table = [
            ("reload", Ok(EventKind::Reload)),
            ("started", Ok(EventKind::Script(ScriptEventKind::Started))),
            (
                "timed-out",
                Ok(EventKind::Script(ScriptEventKind::TimedOut)),
            ),
            (
                "scheduled-change-applied",
                Ok(EventKind::Script(ScriptEventKind::ScheduledChangeApplied)),
            ),
        ];
        for (text, want) in table {
            assert_eq!(parse_kind(text), want, "{text}");
        }
        for bad in ["", "unspecified", "Started", "exit", "timed_out"] {
            let err = parse_kind(bad).expect_err(bad);
            assert!(
                err.contains("reload, started, exited, timed-out"),
                "{bad}: {err}"
            );
        }
        // Every kind's spelling is the one `ctl events` prints.
        for k in script_kinds() {
            assert_eq!(
                kind_name(k),
                crate::output::script_event_name(k as i32),
                "{k:?}"
            );
        }
    }

    #[test]
    fn the_request_splits_reload_from_script_kinds() {
        let args = EventsArgs {
            scripts: vec!["web-*".into()],
            kinds: vec![
                EventKind::Reload,
                EventKind::Script(ScriptEventKind::Exited),
            ],
            after_id: Some(0),
            count: None,
        };
        assert_eq!(
            args.request(),
            proto::EventsRequest {
                after_id: Some(0),
                scripts: vec!["web-*".into()],
                kinds: vec![ScriptEventKind::Exited as i32],
                reload: true,
            }
        );
    }

    #[test]
    fn lines_carry_the_id_and_resume_markers_say_what_they_mean() {
        let missed = |earlier_daemon| proto::Event {
            time_ms: 1_700_000_000_000,
            kind: Some(Kind::Missed(3)),
            earlier_daemon,
            ..Default::default()
        };
        let started = proto::Event {
            time_ms: 1_700_000_000_000,
            id: 42,
            kind: Some(Kind::Script(proto::ScriptEvent {
                script: "web".into(),
                kind: ScriptEventKind::Started as i32,
                run_id: 2,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            line(&started, None),
            "42 2023-11-14T22:13:20.000Z web started run 2"
        );
        assert_eq!(
            line(&missed(false), Some(7)),
            "- 2023-11-14T22:13:20.000Z … missed 3 events after 7: no longer kept"
        );
        assert!(line(&missed(true), Some(7)).contains("earlier daemon process"));
        assert!(line(&missed(false), None).contains("too slow"));
    }
}
