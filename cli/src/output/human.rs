//! The tables and lines people read: `ctl status`, plans (reload, rollback, diff), events.

use super::names::{
    impact_name, outcome_name, phase_name, script_event_name, signal_name, state_colour,
    state_name, sync_name,
};
use super::time::{now_ms, push_duration, relative, relative_at, shown_time, Precision};
use super::{display, paint, table};
use crate::resources::{wide_cells, WIDE_HEADERS};
use scriptd_common::proto::{self, event::Kind, ExitInfo, ReloadPhase};
use std::borrow::Cow;
use std::time::Duration;

/// "exit 0 (1.2s)", "SIGKILL, timed out (2m)": the duration as
/// [`duration_text`](super::time::duration_text) rounds.
pub fn exit_text(e: &ExitInfo) -> String {
    let mut s = String::with_capacity(24);
    match (e.code, e.signal) {
        (Some(c), _) => {
            s.push_str("exit ");
            s.push_str(itoa::Buffer::new().format(c));
        }
        (None, Some(sig)) => s.push_str(&signal_name(sig)),
        _ => s.push('?'),
    }
    if e.timed_out {
        s.push_str(", timed out");
    }
    s.push_str(" (");
    push_duration(&mut s, Duration::from_millis(e.duration_ms));
    s.push(')');
    s
}

/// The etcd source in the status header: `etcd KEY at REVISION (connected to ENDPOINT)`.
fn etcd_line(e: &proto::EtcdSourceStatus) -> String {
    let at = match e.running_revision {
        0 => "not read from etcd".to_owned(),
        r => format!("revision {r}"),
    };
    let link = if e.connected {
        format!("connected to {}", e.endpoint)
    } else {
        format!(
            "DISCONNECTED from {} for {}",
            e.endpoint,
            relative(e.since_ms).trim_end_matches(" ago")
        )
    };
    let mut s = format!(
        "etcd {} at {at} ({link}, last seen {})",
        e.key, e.last_revision_seen
    );
    if !e.problem.is_empty() {
        s.push_str(&format!("\n{}", e.problem));
    }
    s
}

/// The status table.
pub fn status_table(r: &proto::StatusResponse, colour: bool, wide: bool) -> String {
    let mut out = String::new();
    let sync = sync_name(r.sync);
    let sync_shown = match sync {
        "in-sync" => "files in sync".to_owned(),
        "changed" => "files changed on disk, not applied (`ctl reload`)".to_owned(),
        "invalid" => format!("files on disk invalid: {}", r.sync_error),
        _ => match &r.etcd {
            Some(e) => etcd_line(e),
            None => sync.to_owned(),
        },
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
    // Cells borrow from the response where they can: 1,000 rows are 8,000 cells.
    let mut header: Vec<Cow<str>> = [
        "NAME",
        "KIND",
        "STATE",
        "PID",
        "RUNS",
        "LAST START",
        "LAST EXIT",
        "NEXT RUN",
    ]
    .map(Cow::Borrowed)
    .to_vec();
    if wide {
        header.extend(WIDE_HEADERS.map(Cow::Borrowed));
    }
    let mut rows = Vec::with_capacity(r.scripts.len() + 1);
    rows.push(header);
    // One moment for every row's relative times.
    let now = now_ms();
    let mut number = itoa::Buffer::new();
    for s in &r.scripts {
        let state = state_name(s.state);
        let state_text = if colour || !s.pending_changes.is_empty() {
            let mut text = paint(state, state_colour(state), colour);
            if !s.pending_changes.is_empty() {
                text.push_str(" (pending: ");
                text.push_str(&s.pending_changes.join(", "));
                text.push(')');
            }
            Cow::Owned(text)
        } else {
            Cow::Borrowed(state)
        };
        let mut row = Vec::with_capacity(header_len(wide));
        row.extend([
            Cow::Borrowed(s.name.as_str()),
            Cow::Borrowed(s.kind.as_str()),
            state_text,
            if s.pid > 0 {
                Cow::Owned(number.format(s.pid).to_owned())
            } else {
                Cow::Borrowed("-")
            },
            Cow::Owned(number.format(s.run_count).to_owned()),
            Cow::Owned(relative_at(s.last_start_ms, now)),
            s.last_exit
                .as_ref()
                .map_or(Cow::Borrowed("-"), |e| Cow::Owned(exit_text(e))),
            Cow::Owned(relative_at(s.next_run_ms, now)),
        ]);
        if wide {
            row.extend(wide_cells(s.resources.as_ref()).map(Cow::Owned));
        }
        rows.push(row);
    }
    // STATE may be cut only after its state word (no state is longer than the floor), and
    // LAST EXIT after its first 11 columns (`exit 0 (5s)`, `SIGKILL, ti…`).
    out.push_str(&table::render(rows, &[2, 6], display().width));
    out.push_str(&crate::health::health_lines(&r.scripts));
    out
}

/// Columns of the status table.
fn header_len(wide: bool) -> usize {
    8 + if wide { WIDE_HEADERS.len() } else { 0 }
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
    let mut rows = vec![["SCRIPT", "FIELD", "OLD → NEW", "IMPACT", "OUTCOME"]
        .map(String::from)
        .to_vec()];
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
        rows.push(vec![
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
    // The values and the reason after the outcome word may be cut (no outcome word is
    // longer than the floor).
    table::render(rows, &[2, 4], display().width)
}

/// One line per event for `ctl events`.
pub fn event_line(e: &proto::Event) -> String {
    let t = shown_time(e.time_ms, Precision::Millis);
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
