//! `ctl`: the command-line client of scriptd. Tables for people, `--output json` for
//! scripts, stable exit codes (see [`error`]).

pub mod client;
pub mod error;
pub mod history;
pub mod logs;
pub mod output;
pub mod reader;
pub mod targets;
pub mod verify;
pub mod wait;

use clap::{Parser, Subcommand, ValueEnum};
use error::{CtlError, CtlResult, CHANGES, CONFIG, FAILURE, OK, OUTCOME, USAGE};
use output::{ControlJson, ReloadJson, ScriptJson, StatusJson};
use scriptd_common::proto::{self, ControlAction, ReloadResult};
use scriptd_common::JSON_SCHEMA;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and lines for people.
    Table,
    /// One JSON document (streams: one object per line), each with `"schema": 1`.
    Json,
}

/// `ctl` command line.
#[derive(Debug, Parser)]
#[command(
    name = "ctl",
    version,
    about = "Drive scriptd: status, reload, events, start/stop/restart/run",
    after_help = "Exit codes: 0 ok · 1 daemon unreachable or internal error · 2 usage · \
                  3 config invalid or reload rejected/failed · 4 no such script or version, or a \
                  glob matching none · \
                  5 with --dry-run --exit-code: the plan has changes · 6 an outcome waited \
                  for did not happen (run --wait: the run failed; --timeout passed; \
                  logs --until-match: no match; status --check: a script is not up). With several \
                  targets (names, globs, --all): the highest code of them"
)]
pub struct Cli {
    /// Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock].
    #[arg(long, global = true, env = "SCRIPTD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Config file to read the socket path from [default: ./scriptd.yaml, else
    /// /etc/scriptd/scriptd.yaml].
    #[arg(long, global = true, env = "SCRIPTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon, running version, disk vs runtime, and a row per script.
    Status {
        /// Only this script (with --check: these scripts, names or globs).
        #[arg(value_name = "SCRIPT")]
        scripts: Vec<String>,
        /// Exit 0 when every script named (default: every enabled one) is running, waiting
        /// or idle after a run that succeeded; else 6, printing each one that is not.
        #[arg(long)]
        check: bool,
    },
    /// Apply (or preview) what is on disk; prints the plan.
    Reload {
        /// Preview only: print the plan and its id, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if this plan (from --dry-run) is still what would be applied.
        #[arg(long, value_name = "ID", conflicts_with = "dry_run")]
        plan: Option<String>,
        /// With --dry-run: exit 5 when the plan has changes, 0 when it has none.
        #[arg(long, requires = "dry_run")]
        exit_code: bool,
        /// Return once the new version is verified (reload.verify): 0 when every script it
        /// started or restarted is ready, 3 when it was rolled back, 6 when it was not
        /// verified and kept.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// With --wait: stop waiting after DUR (exit 6); the verification goes on.
        #[arg(long, value_name = "DUR", requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Follow reload and lifecycle events.
    Events,
    /// Start a stopped script (services) or resume its schedule (periodic). Several names,
    /// globs or --all: a row per script; --all skips disabled scripts.
    Start(targets::ReadyArgs),
    /// Stop a script gracefully and keep it stopped (several: a row per script).
    Stop(targets::Targets),
    /// Stop then start a script (several: a row per script; --all skips disabled ones).
    Restart(targets::ReadyArgs),
    /// Run a script once now, also when disabled or between intervals; prints the run id.
    /// A script that is already running is not run again (exit 1, naming its run).
    Run {
        /// Scripts.
        #[command(flatten)]
        targets: targets::Targets,
        /// Return when this run ends (with several: every run): exit 0 if it exited 0, else 6.
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after DUR (exit 6); the run goes on.
        #[arg(long, value_name = "DUR", requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// With --wait: print the run's lines meanwhile (as `ctl logs` does).
        #[arg(long, requires = "wait")]
        follow: bool,
        /// With --follow: stdout holds only the run's output (as `ctl logs --raw`); ctl's
        /// own lines go to stderr.
        #[arg(long, requires = "follow")]
        raw: bool,
    },
    /// Versions and refused attempts, newest first; `history show V` prints V's files;
    /// `history --actions` lists who started, stopped, restarted or ran which script.
    #[command(args_conflicts_with_subcommands = true)]
    History {
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// List the control actions (start, stop, restart, run: time, uid, script, result)
        /// instead of the config versions.
        #[arg(long)]
        actions: bool,
        /// `show V`.
        #[command(subcommand)]
        show: Option<HistoryCommand>,
    },
    /// Difference between two versions: unified diff of the files and the field-level plan.
    Diff {
        /// From this version.
        v1: u64,
        /// To this version [default: the running version].
        v2: Option<u64>,
    },
    /// Go back to VERSION [default: the version before the running one], as a new version;
    /// the files on disk are rewritten to match.
    Rollback {
        /// Version to restore.
        version: Option<u64>,
        /// Preview the plan only.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: exit 5 when the plan has changes.
        #[arg(long, requires = "dry_run")]
        exit_code: bool,
    },
    /// A script's output: the last lines, then with -f live lines.
    Logs(logs::LogsArgs),
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Man,
}

/// `ctl history` subcommands.
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// The files of one version.
    Show {
        /// Version number.
        version: u64,
    },
}

/// Runs one `ctl` invocation; returns the exit code.
pub fn run(cli: Cli) -> CtlResult {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "ctl", &mut std::io::stdout());
        return Ok(OK);
    }
    if let Command::Man = cli.command {
        let cmd = <Cli as clap::CommandFactory>::command();
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(OK);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(FAILURE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> CtlResult {
    let socket = client::resolve_socket(cli.socket.as_deref(), cli.config.as_deref());
    let mut c = client::connect(&socket).await?;
    let json = cli.output == OutputFormat::Json;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Status {
            scripts,
            check: true,
        } => targets::check(&mut c, &mut out, json, &scripts).await,
        Command::Status { scripts, .. } => {
            let script =
                match scripts.as_slice() {
                    [] => String::new(),
                    [one] => one.clone(),
                    _ => return Err(CtlError::new(
                        USAGE,
                        "`ctl status` shows one script or all of them; several names need --check",
                    )),
                };
            let r = c
                .status(proto::StatusRequest { script })
                .await
                .map_err(|s| CtlError::from_status(s, FAILURE))?
                .into_inner();
            if json {
                serde_json::to_writer_pretty(&mut out, &StatusJson::from(&r))?;
                writeln!(out)?;
            } else {
                write!(
                    out,
                    "{}",
                    output::status_table(&r, output::colour_enabled())
                )?;
            }
            Ok(OK)
        }
        Command::Start(t) => {
            let wait = t.wait();
            control(
                &mut c,
                &mut out,
                json,
                &t.targets,
                ControlAction::Start,
                wait,
            )
            .await
        }
        Command::Stop(t) => {
            let wait = targets::Wait::No;
            control(&mut c, &mut out, json, &t, ControlAction::Stop, wait).await
        }
        Command::Restart(t) => {
            let wait = t.wait();
            control(
                &mut c,
                &mut out,
                json,
                &t.targets,
                ControlAction::Restart,
                wait,
            )
            .await
        }
        Command::Run {
            targets: t,
            wait: true,
            timeout,
            follow,
            raw,
        } => match t.single() {
            Some(script) => {
                wait::run(
                    &mut c,
                    &mut out,
                    json,
                    script.to_owned(),
                    timeout,
                    follow,
                    raw,
                )
                .await
            }
            None if follow => Err(CtlError::new(
                USAGE,
                "--follow follows one run: name one script (or use `ctl logs -f` for several)",
            )),
            None => {
                targets::control(
                    &mut c,
                    &mut out,
                    json,
                    &t,
                    ControlAction::Run,
                    targets::Wait::RunEnd(timeout),
                )
                .await
            }
        },
        Command::Run { targets: t, .. } => {
            let wait = targets::Wait::No;
            control(&mut c, &mut out, json, &t, ControlAction::Run, wait).await
        }
        Command::Reload {
            dry_run: true,
            exit_code,
            ..
        } => {
            let r = c
                .diff(proto::DiffRequest::default())
                .await
                .map_err(|s| CtlError::from_status(s, CONFIG))?
                .into_inner();
            print_dry_run(&mut out, json, &r)?;
            Ok(if !r.errors.is_empty() || r.rejected {
                CONFIG
            } else if exit_code && !r.changes.is_empty() {
                CHANGES
            } else {
                OK
            })
        }
        Command::Reload {
            plan,
            wait,
            timeout,
            ..
        } => {
            let call = c.reload(proto::ReloadRequest {
                plan_id: plan.unwrap_or_default(),
                wait,
            });
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, call).await.map_err(|_| {
                    CtlError::new(
                        OUTCOME,
                        format!(
                            "waited {} for the reload to be verified; the verification goes                              on (`ctl status` shows it, `ctl events` follows it)",
                            humantime::format_duration(t)
                        ),
                    )
                })?,
                None => call.await,
            };
            let r = answer
                .map_err(|s| CtlError::from_status(s, CONFIG))?
                .into_inner();
            print_reload(&mut out, json, &r, false)?;
            Ok(verify::reload_exit(r.result))
        }
        Command::Events => {
            let mut stream = c
                .events(proto::EventsRequest {})
                .await
                .map_err(|s| CtlError::from_status(s, FAILURE))?
                .into_inner();
            while let Some(item) = stream.next().await {
                let ev = item.map_err(|s| CtlError::from_status(s, FAILURE))?;
                if json {
                    serde_json::to_writer(&mut out, &output::EventJson::from(&ev))?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}", output::event_line(&ev))?;
                }
                out.flush()?;
            }
            Ok(OK)
        }
        Command::History {
            show: Some(HistoryCommand::Show { version }),
            ..
        } => history::show(&mut c, &mut out, json, version).await,
        Command::History {
            limit,
            actions: true,
            show: None,
        } => history::actions(&mut c, &mut out, json, limit).await,
        Command::History {
            limit, show: None, ..
        } => history::list(&mut c, &mut out, json, limit).await,
        Command::Diff { v1, v2 } => history::diff(&mut c, &mut out, json, v1, v2).await,
        Command::Rollback {
            version,
            dry_run,
            exit_code,
        } => history::rollback(&mut c, &mut out, json, version, dry_run, exit_code).await,
        Command::Logs(args) => logs::run(&mut c, &mut out, json, args).await,
        Command::Completions { .. } | Command::Man => Ok(OK),
    }
}

/// `start|stop|restart|run`: one plain name keeps the single-script output (a line, or
/// `ControlJson`); several names, globs or `--all` give one row per target.
async fn control(
    c: &mut client::Client,
    out: &mut impl Write,
    json: bool,
    targets: &targets::Targets,
    action: ControlAction,
    wait: targets::Wait,
) -> CtlResult {
    let Some(script) = targets.single() else {
        return targets::control(c, out, json, targets, action, wait).await;
    };
    let r = c
        .control(targets::request(script, action, wait))
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    let status = r.status.unwrap_or_default();
    let outcome = r.wait_outcome.as_ref();
    let code = match outcome {
        Some(o) if !targets::ready_ok(o) => OUTCOME,
        _ => OK,
    };
    if json {
        let doc = ControlJson {
            schema: JSON_SCHEMA,
            action: action
                .as_str_name()
                .trim_start_matches("CONTROL_ACTION_")
                .to_lowercase(),
            message: r.message,
            run_id: (r.run_id > 0).then_some(r.run_id),
            script: ScriptJson::from(&status),
            outcome: outcome.map(Into::into),
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else if r.run_id > 0 {
        writeln!(out, "{script}: run {}: {}", r.run_id, r.message)?;
    } else {
        writeln!(out, "{script}: {}", r.message)?;
    }
    if let (false, Some(o)) = (json, outcome) {
        writeln!(out, "{}", targets::ready_text(o))?;
    }
    Ok(code)
}

fn errors_json(errors: &[proto::ConfigError]) -> Vec<output::ErrorJson> {
    errors.iter().map(output::ErrorJson::from).collect()
}

fn print_dry_run(out: &mut impl Write, json: bool, r: &proto::DiffResponse) -> CtlResult<()> {
    let result = if !r.errors.is_empty() {
        "invalid"
    } else if r.unchanged {
        "unchanged"
    } else if r.rejected {
        "rejected"
    } else {
        "would-apply"
    };
    if json {
        let doc = ReloadJson {
            schema: JSON_SCHEMA,
            dry_run: true,
            result: result.into(),
            attempt_id: None,
            version: r.base_version,
            plan_id: (!r.plan_id.is_empty()).then(|| r.plan_id.clone()),
            changes: r.changes.iter().map(output::ChangeJson::from).collect(),
            errors: errors_json(&r.errors),
            message: None,
            verification: Vec::new(),
            rollback_version: None,
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    match result {
        "invalid" => {
            writeln!(
                out,
                "the config on disk is invalid; nothing would be applied:"
            )?;
            for e in &r.errors {
                writeln!(out, "  {}", output::error_text(e))?;
            }
        }
        "unchanged" => writeln!(
            out,
            "no changes: the files on disk are running as version {}",
            r.base_version
        )?,
        _ => {
            write!(out, "{}", output::changes_table(&r.changes))?;
            if r.rejected {
                writeln!(out, "\nthis reload would be rejected: only a daemon restart can apply a daemon.* change")?;
            } else {
                writeln!(
                    out,
                    "\nplan {} against version {}: {} change(s)\napply exactly this plan with: ctl reload --plan {}",
                    r.plan_id,
                    r.base_version,
                    r.changes.len(),
                    r.plan_id
                )?;
            }
        }
    }
    Ok(())
}

/// Prints a reload (or rollback) result; `dry_run`: a preview.
pub(crate) fn print_reload(
    out: &mut impl Write,
    json: bool,
    r: &proto::ReloadResponse,
    dry_run: bool,
) -> CtlResult<()> {
    let result = if !r.errors.is_empty() {
        "invalid"
    } else if dry_run && r.result == ReloadResult::Applied as i32 {
        "would-apply"
    } else {
        output::result_name(r.result)
    };
    if json {
        let doc = ReloadJson {
            schema: JSON_SCHEMA,
            dry_run,
            result: result.into(),
            attempt_id: (!dry_run).then_some(r.attempt_id),
            version: r.version,
            plan_id: (!r.plan_id.is_empty()).then(|| r.plan_id.clone()),
            changes: r.changes.iter().map(output::ChangeJson::from).collect(),
            errors: errors_json(&r.errors),
            message: (!r.message.is_empty()).then(|| r.message.clone()),
            verification: r.verification.iter().map(Into::into).collect(),
            rollback_version: (r.rollback_version > 0).then_some(r.rollback_version),
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    if !r.changes.is_empty() {
        write!(out, "{}", output::changes_table(&r.changes))?;
        writeln!(out)?;
    }
    match result {
        "applied" => {
            writeln!(
                out,
                "reload #{} applied: version {} is running",
                r.attempt_id, r.version
            )?;
            // What went wrong after the apply: the history record, a rollback's write-back.
            if !r.message.is_empty() {
                writeln!(out, "warning: {}", r.message)?;
            }
            if !r.verification.is_empty() {
                writeln!(
                    out,
                    "verified:\n{}",
                    verify::lines(&r.verification).trim_end()
                )?;
            }
        }
        "auto-rolled-back" | "not-verified" => {
            writeln!(
                out,
                "reload #{} applied version {} but it was not verified:\n{}{}",
                r.attempt_id,
                r.version,
                verify::lines(&r.verification),
                r.message
            )?;
        }
        "unchanged" => writeln!(out, "no changes: version {} is running", r.version)?,
        "would-apply" => writeln!(
            out,
            "preview: {} change(s) against version {}; nothing was applied",
            r.changes.len(),
            r.version
        )?,
        "invalid" => {
            writeln!(out, "reload #{} rejected: {}", r.attempt_id, r.message)?;
            for e in &r.errors {
                writeln!(out, "  {}", output::error_text(e))?;
            }
        }
        other => writeln!(
            out,
            "reload #{} {other}: {}\nversion {} is still running",
            r.attempt_id, r.message, r.version
        )?,
    }
    Ok(())
}
