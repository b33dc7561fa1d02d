//! Several targets: `ctl start|stop|restart|run NAME|GLOB... | --all`, one result per
//! target and the worst exit code; and `ctl status --check [NAME|GLOB...]`, exit 0 when
//! every script named is up (like `systemctl is-active`), else 6.
//!
//! Names and globs (`glob::Pattern`) are matched here against the names the daemon reports
//! in `Status`; the matching, the skipping of disabled scripts under `--all` and the check
//! of a state are pure functions. The daemon is then asked about several targets at once
//! (at most 8); each answer becomes one row, in the order named.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, NOT_FOUND, OK, OUTCOME, USAGE};
use crate::output::{self, exit_text, run_outcome, state_name};
use crate::wait;
use scriptd_common::proto::{self, ControlAction, ScriptStatus};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

/// Which scripts a command acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct Targets {
    /// Script names or globs (`'web-*'`, quoted for the shell).
    #[arg(value_name = "NAME", required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every script in the config.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
}

/// `ctl start|restart`: the targets, and whether to wait until what was started is ready.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadyArgs {
    /// Scripts.
    #[command(flatten)]
    pub targets: Targets,
    /// Return when the started run is ready (a service alive for its ready_after; a periodic
    /// script's run exited 0): 0, else 6 naming why (exited, crash-looping, timeout).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: wait at most DUR [default: the config's reload.verify].
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

impl ReadyArgs {
    /// What to wait for.
    pub fn wait(&self) -> Wait {
        if self.wait {
            Wait::Ready(self.timeout)
        } else {
            Wait::No
        }
    }
}

/// What a control command waits for after the daemon answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing.
    No,
    /// `run --wait`: the end of every run started, at most this long.
    RunEnd(Option<Duration>),
    /// `start|restart --wait`: the started run is ready (the daemon waits), at most this long.
    Ready(Option<Duration>),
}

/// The request for `action` on `script`; the daemon itself waits for readiness.
pub fn request(script: &str, action: ControlAction, wait: Wait) -> proto::ControlRequest {
    let (wait, timeout) = match wait {
        Wait::Ready(t) => (true, t),
        Wait::No | Wait::RunEnd(_) => (false, None),
    };
    proto::ControlRequest {
        script: script.to_owned(),
        action: action as i32,
        wait,
        wait_timeout_ms: timeout.map_or(0, |t| t.as_millis().try_into().unwrap_or(u64::MAX)),
    }
}

/// Whether a `--wait` outcome is a success.
pub fn ready_ok(o: &proto::ScriptVerification) -> bool {
    matches!(o.outcome.as_str(), "ready" | "succeeded")
}

/// `web: ready (alive for its ready_after)`, `web: not ready: crash-looping (…)`.
pub fn ready_text(o: &proto::ScriptVerification) -> String {
    let what = if ready_ok(o) {
        o.outcome.clone()
    } else {
        format!("not ready: {}", o.outcome)
    };
    if o.reason.is_empty() {
        format!("{}: {what}", o.script)
    } else {
        format!("{}: {what} ({})", o.script, o.reason)
    }
}

impl Targets {
    /// The one plain name when that is all that was given: such a call keeps the
    /// single-script output.
    pub fn single(&self) -> Option<&str> {
        match self.names.as_slice() {
            [name] if !self.all && !is_glob(name) => Some(name),
            _ => None,
        }
    }
}

/// `ctl start|stop|restart|run` with several targets, `--output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetsJson {
    /// Always 1.
    pub schema: u32,
    /// One result per target, in the order the targets were named.
    pub results: Vec<TargetJson>,
}

/// The result of one target.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
#[serde(deny_unknown_fields)]
pub struct TargetJson {
    /// Script name.
    pub script: String,
    /// The command did what was asked (or, under `--all`, skipped a disabled script).
    pub ok: bool,
    /// The exit code this target alone would give; ctl exits with the highest.
    pub exit_code: u8,
    /// What the daemon said, or why it refused.
    pub message: String,
    /// The run this command started, when it started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    /// With `start|restart --wait`: `ready`, `succeeded`, `exited`, `crash-looping`,
    /// `probe-failing` or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `ctl status --check --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckJson {
    /// Always 1.
    pub schema: u32,
    /// Every script checked is up: ctl exits 0 (else 6).
    pub ok: bool,
    /// The scripts checked.
    pub scripts: Vec<CheckedJson>,
}

/// One script of `status --check`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckedJson {
    /// Name.
    pub name: String,
    /// Its state (as in `ctl status`).
    pub state: String,
    /// Running, waiting, or idle after a run that succeeded (or before any run).
    pub ok: bool,
}

/// Whether a target is a glob rather than a plain name.
pub(crate) fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The scripts `names` (plain names and globs) select among `scripts`, in the order named,
/// each once; `all`: every script. Names and globs that select nothing are one error
/// (exit 4) naming each of them; a malformed glob is a usage error (exit 2).
pub fn resolve<'a>(
    names: &[String],
    all: bool,
    scripts: &'a [ScriptStatus],
) -> CtlResult<Vec<&'a ScriptStatus>> {
    if all {
        return Ok(scripts.iter().collect());
    }
    let mut chosen: Vec<&ScriptStatus> = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let pattern = glob::Pattern::new(name)
            .map_err(|e| CtlError::new(USAGE, format!("bad glob '{name}': {e}")))?;
        let mut found = false;
        for s in scripts {
            let hit = if is_glob(name) {
                pattern.matches(&s.name)
            } else {
                s.name == *name
            };
            if hit {
                found = true;
                if !chosen.iter().any(|c| c.name == s.name) {
                    chosen.push(s);
                }
            }
        }
        if !found {
            missing.push(if is_glob(name) {
                format!("no script matches '{name}'")
            } else {
                format!("no such script: {name}")
            });
        }
    }
    if missing.is_empty() {
        Ok(chosen)
    } else {
        Err(CtlError::new(
            NOT_FOUND,
            format!("{}; `ctl status` lists the scripts", missing.join("; ")),
        ))
    }
}

/// Why `--all` leaves `script` out of `action`: `start` and `restart` skip scripts disabled
/// in the config (the daemon would refuse them); `stop` and `run` take every script.
pub fn skipped(action: ControlAction, script: &ScriptStatus) -> Option<&'static str> {
    let refused = matches!(action, ControlAction::Start | ControlAction::Restart);
    (refused && !script.enabled)
        .then_some("disabled in the config (enabled: false): --all skips it")
}

/// Whether `script` counts as up for `status --check`: running, waiting, or idle after a
/// run that succeeded (or before any run).
pub fn is_up(script: &ScriptStatus) -> bool {
    script.is_up()
}

/// The scripts `status --check` looks at: those named, else every enabled one.
pub fn checked<'a>(
    names: &[String],
    scripts: &'a [ScriptStatus],
) -> CtlResult<Vec<&'a ScriptStatus>> {
    if names.is_empty() {
        return Ok(scripts.iter().filter(|s| s.enabled).collect());
    }
    resolve(names, false, scripts)
}

/// Every script the daemon reports in `Status`.
pub(crate) async fn scripts(c: &mut Client) -> CtlResult<Vec<ScriptStatus>> {
    Ok(c.status(proto::StatusRequest::default())
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner()
        .scripts)
}

/// Runs `ctl status --check [NAME...]`.
pub async fn check(
    c: &mut Client,
    out: &mut impl Write,
    json: bool,
    names: &[String],
) -> CtlResult {
    let all = scripts(c).await?;
    let chosen = checked(names, &all)?;
    let doc = CheckJson {
        schema: JSON_SCHEMA,
        ok: chosen.iter().all(|s| is_up(s)),
        scripts: chosen
            .iter()
            .map(|s| CheckedJson {
                name: s.name.clone(),
                state: state_name(s.state).into(),
                ok: is_up(s),
            })
            .collect(),
    };
    if json {
        crate::print_json(&mut *out, &doc)?;
    } else {
        for s in doc.scripts.iter().filter(|s| !s.ok) {
            writeln!(out, "{}: {}", s.name, s.state)?;
        }
    }
    Ok(if doc.ok { OK } else { OUTCOME })
}

/// Runs `action` on several targets; with `run --wait`, waits for every run started and
/// reports how each ended, giving up on the rest once `timeout` passes; with `start|restart
/// --wait`, each row says whether its run became ready.
pub async fn control(
    c: &mut Client,
    out: &mut impl Write,
    json: bool,
    targets: &Targets,
    action: ControlAction,
    wait: Wait,
) -> CtlResult {
    let all = scripts(c).await?;
    let chosen = resolve(&targets.names, targets.all, &all)?;
    let asks = chosen.iter().map(|s| {
        let skip = skipped(action, s).filter(|_| targets.all);
        let (mut c, name) = (c.clone(), s.name.clone());
        async move {
            match skip {
                Some(why) => Row {
                    result: "skipped",
                    ..row(&name, OK, why.into(), None)
                },
                None => one(&mut c, &name, action, wait).await,
            }
        }
    });
    let mut results = bounded(asks.collect()).await?;
    if let Wait::RunEnd(timeout) = wait {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let waits = results.iter().map(|r| {
            let (script, run) = (r.json.script.clone(), r.json.run_id.filter(|_| r.json.ok));
            let c = c.clone();
            async move {
                let run_id = run?;
                let end = wait::end_of(c, script.clone(), run_id);
                let exit = match deadline {
                    Some(at) => tokio::time::timeout_at(at, end).await.ok().transpose(),
                    None => end.await.map(Some),
                };
                let (code, message) = match exit {
                    Ok(Some(e)) if run_outcome(Some(&e)) == "succeeded" => {
                        (OK, format!("run {run_id} succeeded: {}", exit_text(&e)))
                    }
                    Ok(Some(e)) => (OUTCOME, format!("run {run_id} failed: {}", exit_text(&e))),
                    Ok(None) => (
                        OUTCOME,
                        format!("run {run_id} still running at the --timeout; the run goes on"),
                    ),
                    Err(e) => (e.code, e.message),
                };
                Some(row(&script, code, message, Some(run_id)))
            }
        });
        let ends = bounded(waits.collect()).await?;
        for (r, end) in results.iter_mut().zip(ends) {
            if let Some(end) = end {
                *r = end;
            }
        }
    }
    let worst = results.iter().map(|r| r.json.exit_code).max().unwrap_or(OK);
    if json {
        let doc = TargetsJson {
            schema: JSON_SCHEMA,
            results: results.into_iter().map(|r| r.json).collect(),
        };
        crate::print_json(&mut *out, &doc)?;
    } else {
        write!(out, "{}", table(&results))?;
    }
    Ok(worst)
}

/// How many calls to the daemon one `ctl` makes at a time.
const CONCURRENT: usize = 8;

/// Runs `tasks`, at most [`CONCURRENT`] at a time; their outputs in the order given.
pub(crate) async fn bounded<T, F>(tasks: Vec<F>) -> CtlResult<Vec<T>>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut done: Vec<Option<T>> = Vec::with_capacity(tasks.len());
    done.resize_with(tasks.len(), || None);
    let mut finish = |joined: Result<(usize, T), tokio::task::JoinError>| -> CtlResult<()> {
        let (i, out) = joined
            .map_err(|e| CtlError::new(FAILURE, format!("a call to the daemon failed: {e}")))?;
        done[i] = Some(out);
        Ok(())
    };
    for (i, task) in tasks.into_iter().enumerate() {
        if set.len() >= CONCURRENT {
            if let Some(joined) = set.join_next().await {
                finish(joined)?;
            }
        }
        set.spawn(async move { (i, task.await) });
    }
    while let Some(joined) = set.join_next().await {
        finish(joined)?;
    }
    Ok(done.into_iter().flatten().collect())
}

/// One target's row: its JSON, and the RESULT column of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `ok`, `skipped` or `failed`.
    pub result: &'static str,
    /// The JSON of the row.
    pub json: TargetJson,
}

fn row(script: &str, exit_code: u8, message: String, run_id: Option<u64>) -> Row {
    Row {
        result: if exit_code == OK { "ok" } else { "failed" },
        json: TargetJson {
            script: script.to_owned(),
            ok: exit_code == OK,
            exit_code,
            message,
            run_id,
            outcome: None,
        },
    }
}

/// Asks the daemon to carry out `action` on one script.
async fn one(c: &mut Client, script: &str, action: ControlAction, wait: Wait) -> Row {
    let answer = c.control(request(script, action, wait)).await;
    match answer {
        Ok(r) => {
            let r = r.into_inner();
            let run_id = (r.run_id > 0).then_some(r.run_id);
            let mut message = match run_id {
                Some(id) => format!("run {id}: {}", r.message),
                None => r.message,
            };
            let Some(o) = r.wait_outcome else {
                return row(script, OK, message, run_id);
            };
            let code = if ready_ok(&o) { OK } else { OUTCOME };
            message.push_str(&format!(
                "; {}",
                ready_text(&o)
                    .trim_start_matches(script)
                    .trim_start_matches(": ")
            ));
            let mut r = row(script, code, message, run_id);
            r.json.outcome = Some(o.outcome);
            r
        }
        Err(s) => {
            let e = CtlError::from_status(s, FAILURE);
            row(script, e.code, e.message, None)
        }
    }
}

/// NAME, RESULT (`ok`, `skipped`, `failed`), MESSAGE (cut to fit, see [`output::table`]).
pub fn table(rows: &[Row]) -> String {
    let mut cells = vec![["NAME", "RESULT", "MESSAGE"].map(String::from).to_vec()];
    for r in rows {
        cells.push(vec![
            r.json.script.clone(),
            r.result.to_owned(),
            r.json.message.clone(),
        ]);
    }
    output::table::render(cells, &[2], output::display().width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scriptd_common::proto::{ExitInfo, ScriptState};

    fn script(name: &str, enabled: bool, state: ScriptState) -> ScriptStatus {
        ScriptStatus {
            name: name.into(),
            enabled,
            state: state as i32,
            ..Default::default()
        }
    }

    fn config() -> Vec<ScriptStatus> {
        vec![
            script("web-a", true, ScriptState::Running),
            script("web-b", true, ScriptState::Running),
            script("worker", false, ScriptState::Disabled),
        ]
    }

    fn names(chosen: &[&ScriptStatus]) -> Vec<String> {
        chosen.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn names_and_globs_select_in_order_each_once() {
        let all = config();
        let table: [(&[&str], bool, &[&str]); 6] = [
            (&["worker", "web-*"], false, &["worker", "web-a", "web-b"]),
            (&["web-b", "web-*"], false, &["web-b", "web-a"]),
            (&["web-?"], false, &["web-a", "web-b"]),
            (&["[w]orker"], false, &["worker"]),
            (&[], true, &["web-a", "web-b", "worker"]),
            (&["web-a"], false, &["web-a"]),
        ];
        for (given, every, want) in table {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            let chosen = resolve(&given, every, &all).expect("resolves");
            assert_eq!(names(&chosen), want, "{given:?} all={every}");
        }
    }

    #[test]
    fn what_selects_nothing_is_named_with_exit_4() {
        let all = config();
        let given = vec!["web-a".into(), "db-*".into(), "cron".into()];
        let e = resolve(&given, false, &all).expect_err("nothing matches");
        assert_eq!(e.code, NOT_FOUND);
        assert!(e.message.contains("no script matches 'db-*'"), "{e}");
        assert!(e.message.contains("no such script: cron"), "{e}");
        // A plain name is not a glob: `web` does not select `web-a`.
        let e = resolve(&["web".into()], false, &all).expect_err("no such script");
        assert_eq!(e.code, NOT_FOUND);
        let e = resolve(&["web-[".into()], false, &all).expect_err("bad glob");
        assert_eq!(e.code, USAGE);
    }

    #[test]
    fn all_skips_disabled_scripts_only_where_the_daemon_would_refuse_them() {
        let off = script("worker", false, ScriptState::Disabled);
        let on = script("web", true, ScriptState::Stopped);
        let table = [
            (ControlAction::Start, &off, true),
            (ControlAction::Restart, &off, true),
            (ControlAction::Stop, &off, false),
            (ControlAction::Run, &off, false),
            (ControlAction::Start, &on, false),
        ];
        for (action, s, want) in table {
            assert_eq!(skipped(action, s).is_some(), want, "{action:?} {}", s.name);
        }
    }

    #[test]
    fn up_is_running_waiting_or_idle_after_success() {
        let exit = |code| ExitInfo {
            code: Some(code),
            ..Default::default()
        };
        let idle_ok = ScriptStatus {
            last_exit: Some(exit(0)),
            ..script("a", true, ScriptState::Idle)
        };
        let idle_bad = ScriptStatus {
            last_exit: Some(exit(2)),
            ..script("a", true, ScriptState::Idle)
        };
        let table = [
            (script("a", true, ScriptState::Running), true),
            (script("a", true, ScriptState::Waiting), true),
            (script("a", true, ScriptState::Idle), true),
            (idle_ok, true),
            (idle_bad, false),
            (script("a", true, ScriptState::Failed), false),
            (script("a", true, ScriptState::BackingOff), false),
            (script("a", true, ScriptState::Stopped), false),
            (script("a", false, ScriptState::Disabled), false),
            // Its process runs, but its health probe says it does not work.
            (script("a", true, ScriptState::Unhealthy), false),
        ];
        for (s, want) in table {
            assert_eq!(is_up(&s), want, "{s:?}");
        }
    }

    #[test]
    fn check_defaults_to_the_enabled_scripts() {
        let all = config();
        assert_eq!(names(&checked(&[], &all).expect("ok")), ["web-a", "web-b"]);
        let named = checked(&["worker".into()], &all).expect("ok");
        assert_eq!(names(&named), ["worker"]);
    }

    #[test]
    fn one_plain_name_keeps_the_single_output() {
        let t = |names: &[&str], all| Targets {
            names: names.iter().map(|s| s.to_string()).collect(),
            all,
        };
        assert_eq!(t(&["web"], false).single(), Some("web"));
        assert_eq!(t(&["web-*"], false).single(), None);
        assert_eq!(t(&["a", "b"], false).single(), None);
        assert_eq!(t(&[], true).single(), None);
    }

    #[test]
    fn json_round_trips_strictly() {
        let doc = TargetsJson {
            schema: JSON_SCHEMA,
            results: vec![
                row("a", OK, "run 3: started (pid 9)".into(), Some(3)).json,
                row("b", FAILURE, "b is disabled".into(), None).json,
            ],
        };
        let text = serde_json::to_string(&doc).expect("json");
        assert!(!text.contains("\"run_id\":null"), "{text}");
        let back: TargetsJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back, doc);

        let check = CheckJson {
            schema: JSON_SCHEMA,
            ok: false,
            scripts: vec![CheckedJson {
                name: "a".into(),
                state: "failed".into(),
                ok: false,
            }],
        };
        let text = serde_json::to_string(&check).expect("json");
        let back: CheckJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back, check);
    }

    #[test]
    fn the_table_has_a_row_per_target() {
        let rows = [
            row("a", OK, "started".into(), None),
            Row {
                result: "skipped",
                ..row("b", OK, "disabled".into(), None)
            },
            row("c", NOT_FOUND, "gone".into(), None),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].trim_start().starts_with("NAME"), "{text}");
        assert!(lines.iter().all(|l| l.trim_end() == *l), "{text}");
        assert!(
            lines[2].contains("skipped") && lines[3].contains("failed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bounded_keeps_the_order_given() {
        // More tasks than run at once, the first ones finishing last.
        let tasks: Vec<_> = (0..20u64)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                i
            })
            .collect();
        let out = bounded(tasks).await.expect("all join");
        assert_eq!(out, (0..20).collect::<Vec<_>>());
    }
}
