//! `ctl history`, `ctl history --actions`, `ctl history show V`, `ctl diff V1 [V2]`,
//! `ctl rollback [V]`.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, CHANGES, CONFIG, OK};
use crate::output::time::Precision;
use crate::output::{self, table, ChangeJson, ErrorJson};
use scriptd_common::proto;
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// `ctl history --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryJson {
    /// Always 1.
    pub schema: u32,
    /// Version running now.
    pub running_version: u64,
    /// Newest first.
    pub entries: Vec<HistoryEntryJson>,
}

/// One version or refused attempt.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntryJson {
    /// Version number; absent for a refused attempt.
    pub version: Option<u64>,
    /// True for the running version.
    pub running: bool,
    /// Reload attempt id (0 for startup).
    pub attempt_id: u64,
    /// When, RFC 3339.
    pub time: Option<String>,
    /// startup, watch, ctl, signal, rollback, etcd, auto-rollback.
    pub source: String,
    /// For a rollback: the version it rolled back to (whose files it restored).
    pub rollback_to: Option<u64>,
    /// Uid of who asked (ctl); absent for watch, signal, startup.
    pub uid: Option<u32>,
    /// The user name of `uid` on the daemon's host; null when it has none.
    pub user: Option<String>,
    /// The client certificate name of a remote caller (over TCP), who has no uid; null
    /// otherwise.
    pub cert: Option<String>,
    /// applied, rejected, failed-rolled-back; unchanged: a rollback to the running files (or a
    /// candidate that is the running version) that rewrote the files on disk.
    pub result: String,
    /// `+1 ~2 -0 scripts`.
    pub summary: String,
    /// Why refused.
    pub message: Option<String>,
    /// Content hash of the files.
    pub hash: Option<String>,
    /// The changes.
    pub changes: Vec<ChangeJson>,
    /// Validation errors.
    pub errors: Vec<ErrorJson>,
    /// The etcd mod revision of the value this entry came from (etcd mode); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
}

/// `ctl history --actions --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionsJson {
    /// Always 1.
    pub schema: u32,
    /// Newest first.
    pub actions: Vec<ActionJson>,
}

/// One control action (start, stop, restart, run) and how it ended.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionJson {
    /// When, RFC 3339.
    pub time: Option<String>,
    /// Uid of who asked.
    pub uid: Option<u32>,
    /// The user name of `uid` on the daemon's host; null when it has none.
    pub user: Option<String>,
    /// The client certificate name of a remote caller (over TCP), who has no uid; null
    /// otherwise.
    pub cert: Option<String>,
    /// start, stop, restart, run.
    pub action: String,
    /// The script named.
    pub script: String,
    /// ok, not-found, refused, failed, invalid, error.
    pub result: String,
    /// What the daemon answered.
    pub message: Option<String>,
}

/// `ctl history show V --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionJson {
    /// Always 1.
    pub schema: u32,
    /// The version.
    pub entry: HistoryEntryJson,
    /// Its files, main file first.
    pub files: Vec<FileJson>,
}

/// One file of a version.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileJson {
    /// Path relative to the main file's directory.
    pub name: String,
    /// Full text.
    pub content: String,
}

/// `ctl diff --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiffJson {
    /// Always 1.
    pub schema: u32,
    /// From this version.
    pub from: u64,
    /// To this version.
    pub to: u64,
    /// Unified diff of the files (empty when identical).
    pub unified: String,
    /// Field-level changes from `from` to `to`.
    pub changes: Vec<ChangeJson>,
    /// Validation errors that prevented the field-level plan.
    pub errors: Vec<ErrorJson>,
}

fn entry_json(e: &proto::HistoryEntry, running: u64) -> HistoryEntryJson {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    HistoryEntryJson {
        version: (e.version > 0).then_some(e.version),
        running: e.version > 0 && e.version == running,
        attempt_id: e.attempt_id,
        time: output::time(e.time_ms),
        source: e.source.clone(),
        rollback_to: (e.rollback_from > 0).then_some(e.rollback_from),
        uid: e.uid,
        user: user_name(e.uid, &e.user),
        cert: opt(&e.cert),
        result: e.result.clone(),
        summary: e.summary.clone(),
        message: opt(&e.message),
        hash: opt(&e.hash),
        changes: e.changes.iter().map(ChangeJson::from).collect(),
        errors: e.errors.iter().map(ErrorJson::from).collect(),
        etcd_revision: (e.etcd_revision > 0).then_some(e.etcd_revision),
    }
}

/// The user name next to a uid in JSON: null without a uid or a name.
fn user_name(uid: Option<u32>, user: &str) -> Option<String> {
    uid.and(Some(user))
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

/// Who asked: the user name the daemon found for the uid, else the uid; a remote caller's
/// certificate name.
fn who(uid: Option<u32>, user: &str, cert: &str) -> String {
    match uid {
        None if !cert.is_empty() => format!("cert {cert}"),
        None => "-".into(),
        Some(_) if !user.is_empty() => user.to_owned(),
        Some(uid) => format!("uid {uid}"),
    }
}

/// `rollback-to-N` for a rollback to version N, `auto-rollback-to-N` for the daemon's own,
/// else the source; one word, so the SOURCE column splits on spaces.
fn source_text(e: &proto::HistoryEntry) -> String {
    if e.source == "auto-rollback" {
        format!("auto-rollback-to-{}", e.rollback_from)
    } else if e.rollback_from > 0 {
        format!("rollback-to-{}", e.rollback_from)
    } else {
        e.source.clone()
    }
}

fn status_err(s: tonic::Status) -> CtlError {
    CtlError::from_status(s, CONFIG)
}

/// `ctl history [--limit N]`.
pub async fn list(c: &mut Client, out: &mut impl Write, json: bool, limit: u32) -> CtlResult {
    let r = c
        .history(proto::HistoryRequest {
            limit,
            actions: false,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if json {
        let doc = HistoryJson {
            schema: JSON_SCHEMA,
            running_version: r.running_version,
            entries: r
                .entries
                .iter()
                .map(|e| entry_json(e, r.running_version))
                .collect(),
        };
        crate::print_json(&mut *out, &doc)?;
        return Ok(OK);
    }
    let mut rows = vec![["VERSION", "TIME", "SOURCE", "WHO", "RESULT", "SUMMARY"]
        .map(String::from)
        .to_vec()];
    for e in &r.entries {
        let version = match e.version {
            0 => format!("- (#{})", e.attempt_id),
            v if v == r.running_version => format!("{v} *"),
            v => v.to_string(),
        };
        let mut summary = e.summary.clone();
        if !e.message.is_empty() {
            summary = format!("{summary}: {}", first_line(&e.message));
        }
        rows.push(vec![
            version,
            output::shown_time(e.time_ms, Precision::Seconds),
            source_text(e),
            who(e.uid, &e.user, &e.cert),
            e.result.clone(),
            summary,
        ]);
    }
    write!(
        out,
        "{}",
        table::render(rows, &[5], output::display().width)
    )?;
    writeln!(
        out,
        "(* = running; refused attempts have no version; \
         start/stop/restart/run: ctl history --actions)"
    )?;
    Ok(OK)
}

/// `ctl history --actions [--limit N]`: who started, stopped, restarted or ran what.
pub async fn actions(c: &mut Client, out: &mut impl Write, json: bool, limit: u32) -> CtlResult {
    let r = c
        .history(proto::HistoryRequest {
            limit,
            actions: true,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if json {
        let doc = ActionsJson {
            schema: JSON_SCHEMA,
            actions: r
                .actions
                .iter()
                .map(|a| ActionJson {
                    time: output::time(a.time_ms),
                    uid: a.uid,
                    user: user_name(a.uid, &a.user),
                    cert: (!a.cert.is_empty()).then(|| a.cert.clone()),
                    action: a.action.clone(),
                    script: a.script.clone(),
                    result: a.result.clone(),
                    message: (!a.message.is_empty()).then(|| a.message.clone()),
                })
                .collect(),
        };
        crate::print_json(&mut *out, &doc)?;
        return Ok(OK);
    }
    let mut rows = vec![["TIME", "WHO", "ACTION", "SCRIPT", "RESULT", "MESSAGE"]
        .map(String::from)
        .to_vec()];
    for a in &r.actions {
        rows.push(vec![
            output::shown_time(a.time_ms, Precision::Seconds),
            who(a.uid, &a.user, &a.cert),
            a.action.clone(),
            a.script.clone(),
            a.result.clone(),
            first_line(&a.message).to_owned(),
        ]);
    }
    write!(
        out,
        "{}",
        table::render(rows, &[5], output::display().width)
    )?;
    Ok(OK)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A version named on the command line: 0 is not one (the API's "0 = the running one" is
/// not offered to people, who would get a version they did not name).
fn named(version: u64) -> CtlResult<u64> {
    if version == 0 {
        return Err(crate::error::CtlError::new(
            crate::error::NOT_FOUND,
            "no version 0: versions start at 1 (`ctl history` lists them)",
        ));
    }
    Ok(version)
}

async fn get(c: &mut Client, version: u64) -> CtlResult<proto::GetVersionResponse> {
    Ok(c.get_version(proto::GetVersionRequest { version })
        .await
        .map_err(status_err)?
        .into_inner())
}

/// `ctl history show V`.
pub async fn show(c: &mut Client, out: &mut impl Write, json: bool, version: u64) -> CtlResult {
    let r = get(c, named(version)?).await?;
    let entry = r.entry.unwrap_or_default();
    if json {
        let doc = VersionJson {
            schema: JSON_SCHEMA,
            entry: entry_json(&entry, r.running_version),
            files: r
                .files
                .iter()
                .map(|f| FileJson {
                    name: f.name.clone(),
                    content: f.content.clone(),
                })
                .collect(),
        };
        crate::print_json(&mut *out, &doc)?;
        return Ok(OK);
    }
    writeln!(
        out,
        "# version {}{} · {} · {} · by {} · {}",
        entry.version,
        if entry.version == r.running_version {
            " (running)"
        } else {
            ""
        },
        output::shown_time(entry.time_ms, Precision::Millis),
        source_text(&entry),
        who(entry.uid, &entry.user, &entry.cert),
        entry.hash
    )?;
    if !entry.message.is_empty() {
        writeln!(out, "# {}", first_line(&entry.message))?;
    }
    for f in &r.files {
        writeln!(out, "\n==> {} <==", f.name)?;
        write!(out, "{}", f.content)?;
        if !f.content.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(OK)
}

/// Unified diff of two versions' files.
fn unified(
    from: &proto::GetVersionResponse,
    to: &proto::GetVersionResponse,
    a: u64,
    b: u64,
) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut text = String::new();
    // Every file name of either version, once, in order of appearance.
    for name in from.files.iter().chain(&to.files).map(|f| f.name.as_str()) {
        if !seen.insert(name) {
            continue;
        }
        let find = |r: &proto::GetVersionResponse| {
            r.files
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.content.clone())
                .unwrap_or_default()
        };
        let (old, new) = (find(from), find(to));
        if old == new {
            continue;
        }
        let diff = similar::TextDiff::from_lines(&old, &new);
        text.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("v{a}/{name}"), &format!("v{b}/{name}"))
                .to_string(),
        );
    }
    text
}

/// `ctl diff V1 [V2]`: unified diff of the files and the field-level plan.
pub async fn diff(
    c: &mut Client,
    out: &mut impl Write,
    json: bool,
    v1: u64,
    v2: Option<u64>,
) -> CtlResult {
    let v2 = v2.map(named).transpose()?;
    let from = get(c, named(v1)?).await?;
    let to = get(c, v2.unwrap_or(0)).await?;
    let (a, b) = (
        from.entry.as_ref().map_or(v1, |e| e.version),
        to.entry.as_ref().map_or(0, |e| e.version),
    );
    let plan = c
        .diff(proto::DiffRequest {
            from_version: a,
            to_version: b,
            ..Default::default()
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let text = unified(&from, &to, a, b);
    if json {
        let doc = DiffJson {
            schema: JSON_SCHEMA,
            from: a,
            to: b,
            unified: text,
            changes: plan.changes.iter().map(ChangeJson::from).collect(),
            errors: plan.errors.iter().map(ErrorJson::from).collect(),
        };
        crate::print_json(&mut *out, &doc)?;
        return Ok(OK);
    }
    if text.is_empty() {
        writeln!(out, "versions {a} and {b} have the same files")?;
        return Ok(OK);
    }
    let colour = output::colour_enabled();
    for line in text.lines() {
        let painted = match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => output::paint(line, "32", colour),
            Some(b'-') if !line.starts_with("---") => output::paint(line, "31", colour),
            Some(b'@') => output::paint(line, "36", colour),
            _ => line.to_owned(),
        };
        writeln!(out, "{painted}")?;
    }
    if !plan.changes.is_empty() {
        writeln!(out, "\nchanges from version {a} to {b}:")?;
        write!(out, "{}", output::changes_table(&plan.changes))?;
    }
    for e in &plan.errors {
        writeln!(
            out,
            "cannot compute field changes: {}",
            output::error_text(e)
        )?;
    }
    Ok(OK)
}

/// `ctl rollback [V] [--dry-run [--exit-code]] [--plan ID]`.
pub async fn rollback(
    c: &mut Client,
    out: &mut impl Write,
    json: bool,
    version: Option<u64>,
    (dry_run, exit_code): (bool, bool),
    plan: Option<String>,
) -> CtlResult {
    let version = version.map(named).transpose()?;
    let r = c
        .rollback(proto::RollbackRequest {
            version: version.unwrap_or(0),
            dry_run,
            plan_id: plan.unwrap_or_default(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let result =
        proto::ReloadResult::try_from(r.result).unwrap_or(proto::ReloadResult::Unspecified);
    crate::print_reload(out, json, &r, dry_run)?;
    if !json && result == proto::ReloadResult::Unchanged && !r.message.is_empty() {
        // Whether the files on disk were rewritten to match the running version.
        writeln!(out, "{}", r.message)?;
    }
    Ok(match result {
        _ if r.disk_differs => CONFIG,
        _ if dry_run && exit_code && !r.changes.is_empty() => CHANGES,
        _ => crate::verify::reload_exit(r.result),
    })
}
