//! Fan-out: one read command on several contexts at once (`--context a,b`, `--context
//! 'web-*'`, `--all-contexts`), in parallel, each host within `--host-timeout`. The table
//! output groups by host (a `[NAME]` line, then what the command prints there); JSON is one
//! document keyed by context. A host that cannot be reached is a group with its error; the
//! exit code is the worst of the hosts'. `logs -f` on several hosts interleaves their lines
//! as they come, each after its host's name (JSON: `{"context": NAME, "line": {...}}`).

use crate::context::{self, Context, Contexts};
use crate::error::{CtlError, CtlResult, FAILURE, NOT_FOUND, USAGE};
use crate::Command;
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// `--host-timeout`: a duration (`500ms`, `30s`, `2m`), or 0 for no limit
/// ([`Duration::MAX`], which `tokio::time::timeout` takes as never).
pub fn parse_host_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: give a duration such as 500ms, 30s or 2m (0: no limit)"))?;
    Ok(if d.is_zero() { Duration::MAX } else { d })
}

/// What a host that took longer than `limit` is told.
pub fn timed_out(limit: Duration) -> CtlError {
    CtlError::new(
        FAILURE,
        format!(
            "no answer within {} (--host-timeout)",
            humantime::format_duration(limit)
        ),
    )
}

/// The contexts named on the command line.
#[derive(Debug, Clone)]
pub struct Selection {
    names: Vec<String>,
    all: bool,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Selection {
    /// `--context` values (names and globs) and `--all-contexts`.
    pub fn new(names: &[String], all: bool) -> Self {
        Self {
            names: names.to_vec(),
            all,
        }
    }

    /// More than one daemon may be meant: several names, a glob, or every context.
    pub fn is_fan_out(&self) -> bool {
        self.all || self.names.len() > 1 || self.names.iter().any(|n| is_glob(n))
    }

    /// The one context named, when that is all (no glob, not every context).
    pub fn one(&self) -> Option<&str> {
        match self.names.as_slice() {
            [name] if !self.all && !is_glob(name) => Some(name),
            _ => None,
        }
    }

    /// The contexts selected among `file`'s, in the file's order, each once. A plain name
    /// that is not there is a usage error; a glob that matches none, or `--all-contexts`
    /// without any context, is NOT_FOUND (4).
    pub fn pick(&self, file: &Contexts) -> CtlResult<Vec<Context>> {
        if self.all {
            if file.contexts.is_empty() {
                return Err(CtlError::new(
                    NOT_FOUND,
                    "--all-contexts: there are no contexts; `ctl context add` adds one",
                ));
            }
            return Ok(file.contexts.clone());
        }
        let mut chosen = vec![false; file.contexts.len()];
        for name in &self.names {
            let pattern = glob::Pattern::new(name)
                .map_err(|e| CtlError::new(USAGE, format!("--context {name:?}: {e}")))?;
            let mut any = false;
            for (i, c) in file.contexts.iter().enumerate() {
                if pattern.matches(&c.name) {
                    chosen[i] = true;
                    any = true;
                }
            }
            if !any {
                let code = if is_glob(name) { NOT_FOUND } else { USAGE };
                return Err(CtlError::new(
                    code,
                    format!("no context matches {name:?}; `ctl context list` shows them"),
                ));
            }
        }
        Ok(file
            .contexts
            .iter()
            .zip(chosen)
            .filter(|(_, chosen)| *chosen)
            .map(|(c, _)| c.clone())
            .collect())
    }
}

/// Why `command` cannot run on several hosts at once; `None` when it can (it only reads).
pub fn not_read_only(command: &Command) -> Option<&'static str> {
    match command {
        Command::Status { .. } | Command::History { .. } | Command::Diff { .. } => None,
        Command::Reload { dry_run: true, .. } | Command::Rollback { dry_run: true, .. } => None,
        Command::Logs(_) => None,
        _ => Some(
            "this command changes a daemon or follows one: name one context (several \
             contexts take read commands: status, history, diff, reload --dry-run, rollback \
             --dry-run, logs; and reload --rolling, rollback --rolling)",
        ),
    }
}

/// What one host answered.
struct Answer {
    name: String,
    code: u8,
    output: Vec<u8>,
    error: Option<String>,
}

/// Runs `command` on every context `selection` picks and prints the answers.
/// Each host gets `limit` (connecting and the command).
pub async fn fan_out(
    selection: &Selection,
    command: Command,
    json: bool,
    limit: Duration,
) -> CtlResult {
    if let Some(why) = not_read_only(&command) {
        return Err(CtlError::new(USAGE, why));
    }
    let path = context::file().ok_or_else(|| {
        CtlError::new(
            USAGE,
            "neither XDG_CONFIG_HOME nor HOME is set: there are no contexts",
        )
    })?;
    let contexts = selection.pick(&Contexts::load(&path)?)?;
    if let Command::Logs(args) = &command {
        if args.follow {
            return follow(contexts, command, json, limit).await;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in contexts.into_iter().enumerate() {
        let command = command.clone();
        tasks.spawn(async move { (i, one(c, command, json, limit).await) });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, answer) =
            done.map_err(|e| CtlError::new(FAILURE, format!("a host's task: {e}")))?;
        answers.push((i, answer));
    }
    answers.sort_by_key(|(i, _)| *i);
    let answers: Vec<Answer> = answers.into_iter().map(|(_, a)| a).collect();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &FleetJson::new(&answers))?;
        writeln!(out)?;
    } else {
        for (n, a) in answers.iter().enumerate() {
            if n > 0 {
                writeln!(out)?;
            }
            writeln!(out, "[{}]", a.name)?;
            out.write_all(&a.output)?;
            if let Some(e) = &a.error {
                writeln!(out, "error: {e}")?;
            }
        }
    }
    Ok(answers.iter().map(|a| a.code).max().unwrap_or(0))
}

/// `command` on context `c`, within `limit`.
async fn one(c: Context, command: Command, json: bool, limit: Duration) -> Answer {
    let mut output = Vec::new();
    let name = c.name.clone();
    let result = tokio::time::timeout(limit, async {
        let target = crate::client::target_of(c)?;
        let client = crate::client::connect_target(&target).await?;
        crate::run_on(client, &mut output, json, command).await
    })
    .await
    .unwrap_or_else(|_| Err(timed_out(limit)));
    match result {
        Ok(code) => Answer {
            name,
            code,
            output,
            error: None,
        },
        Err(e) => Answer {
            name,
            code: e.code,
            output,
            error: Some(e.message),
        },
    }
}

/// `logs -f` on every context of `contexts` at once, each line after its host's name; the
/// worst exit code once every follow has ended. `limit` bounds connecting only: a follow
/// lasts as long as its host sends.
async fn follow(
    contexts: Vec<Context>,
    command: Command,
    json: bool,
    limit: Duration,
) -> CtlResult {
    let width = contexts.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut tasks = tokio::task::JoinSet::new();
    for c in contexts {
        let command = command.clone();
        tasks.spawn(async move {
            let mut out = HostLines {
                host: c.name.clone(),
                width,
                json,
                pending: Vec::new(),
            };
            let result = async {
                let target = crate::client::target_of(c)?;
                let client = tokio::time::timeout(limit, crate::client::connect_target(&target))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(limit)))?;
                crate::run_on(client, &mut out, json, command).await
            }
            .await;
            match result {
                Ok(code) => Ok(code),
                Err(e) if e.is_broken_pipe() => Err(e),
                Err(e) => {
                    eprintln!("ctl: {}: {e}", out.host);
                    Ok(e.code)
                }
            }
        });
    }
    let mut worst = 0;
    while let Some(done) = tasks.join_next().await {
        let code = done.map_err(|e| CtlError::new(FAILURE, format!("a host's task: {e}")))??;
        worst = worst.max(code);
    }
    Ok(worst)
}

/// What one host's `logs -f` prints, written to stdout a whole line at a time after the
/// host's name (JSON: each line's object under `"line"`, with `"context"`).
struct HostLines {
    host: String,
    width: usize,
    json: bool,
    pending: Vec<u8>,
}

impl Write for HostLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..end])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

impl HostLines {
    fn emit(&self, line: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value) if self.json => {
                let doc = serde_json::json!({ "context": self.host, "line": value });
                serde_json::to_writer(&mut out, &doc).map_err(std::io::Error::other)?;
            }
            _ => {
                write!(out, "{:<w$}  ", self.host, w = self.width)?;
                out.write_all(line)?;
            }
        }
        out.write_all(b"\n")
    }
}

/// `--output json` of a fan-out: one entry per context.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetJson {
    /// Always 1.
    pub schema: u32,
    /// By context name.
    pub contexts: BTreeMap<String, HostJson>,
}

/// What one context answered.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostJson {
    /// The exit code `ctl` would have had with this context alone.
    pub exit_code: u8,
    /// The command's own JSON document there (a stream's objects as a list); null when it
    /// printed nothing.
    pub output: Option<serde_json::Value>,
    /// Why it failed (unreachable, refused, timed out); null when it did not.
    pub error: Option<String>,
}

impl FleetJson {
    fn new(answers: &[Answer]) -> Self {
        let contexts = answers
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    HostJson {
                        exit_code: a.code,
                        output: document(&a.output),
                        error: a.error.clone(),
                    },
                )
            })
            .collect();
        Self {
            schema: JSON_SCHEMA,
            contexts,
        }
    }
}

/// A command's JSON output as one value: the document, or its lines' objects as a list.
fn document(output: &[u8]) -> Option<serde_json::Value> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if let Ok(v) = serde_json::from_slice(output) {
        return Some(v);
    }
    let text = String::from_utf8_lossy(output);
    let lines: Result<Vec<serde_json::Value>, _> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect();
    Some(lines.map_or_else(
        |_| serde_json::Value::String(text.into_owned()),
        serde_json::Value::Array,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(names: &[&str]) -> Contexts {
        Contexts {
            current_context: None,
            contexts: names
                .iter()
                .map(|n| Context {
                    name: (*n).into(),
                    endpoint: "unix:///s".into(),
                    ca: None,
                    cert: None,
                    key: None,
                })
                .collect(),
        }
    }

    #[test]
    fn selections() {
        let f = file(&["web-1", "web-2", "db-1"]);
        let pick = |names: &[&str], all| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            Selection::new(&names, all)
                .pick(&f)
                .map(|v| v.into_iter().map(|c| c.name).collect::<Vec<_>>())
                .map_err(|e| e.code)
        };
        assert_eq!(
            pick(&["web-*"], false),
            Ok(vec!["web-1".into(), "web-2".into()])
        );
        assert_eq!(
            pick(&["db-1", "web-1", "web-*"], false),
            Ok(vec!["web-1".into(), "web-2".into(), "db-1".into()]),
            "file order, each once"
        );
        assert_eq!(pick(&[], true).map(|v| v.len()), Ok(3));
        assert_eq!(pick(&["nope"], false), Err(USAGE));
        assert_eq!(pick(&["x-*"], false), Err(NOT_FOUND));
        assert_eq!(
            Selection::new(&[], true)
                .pick(&file(&[]))
                .map_err(|e| e.code),
            Err(NOT_FOUND),
            "--all-contexts without contexts"
        );
        assert_eq!(Selection::new(&["a".into()], false).one(), Some("a"));
        assert_eq!(Selection::new(&["a*".into()], false).one(), None);
        assert_eq!(Selection::new(&[], true).one(), None);
        assert!(Selection::new(&["a".into(), "b".into()], false).is_fan_out());
        assert!(Selection::new(&["a*".into()], false).is_fan_out());
        assert!(!Selection::new(&["a".into()], false).is_fan_out());
    }

    #[test]
    fn host_timeouts() {
        assert_eq!(parse_host_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_host_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_host_timeout("0"), Ok(Duration::MAX), "no limit");
        assert!(parse_host_timeout("soon").is_err());
        assert!(parse_host_timeout("-1s").is_err());
        let e = timed_out(Duration::from_millis(1500));
        assert_eq!(
            (e.code, e.message.as_str()),
            (FAILURE, "no answer within 1s 500ms (--host-timeout)")
        );
    }

    #[test]
    fn json_documents_and_streams() {
        assert_eq!(document(b" \n"), None);
        assert_eq!(document(b"{\"a\": 1}\n"), Some(serde_json::json!({"a": 1})));
        assert_eq!(
            document(b"{\"a\": 1}\n{\"a\": 2}\n"),
            Some(serde_json::json!([{"a": 1}, {"a": 2}]))
        );
        let doc = FleetJson::new(&[Answer {
            name: "web-1".into(),
            code: 1,
            output: Vec::new(),
            error: Some("down".into()),
        }]);
        let text = serde_json::to_string(&doc).expect("json");
        assert_eq!(
            serde_json::from_str::<FleetJson>(&text).expect("strict parse"),
            doc
        );
    }
}
