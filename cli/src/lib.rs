//! `ctl`: the command-line client of scriptd. Tables for people, `--output json` for
//! scripts, stable exit codes (see [`error`]).

pub mod candidate;
pub mod client;
pub mod completion;
pub mod context;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod history;
pub mod logs;
pub mod logs_many;
pub mod output;
pub mod reader;
pub mod resources;
pub mod rolling;
pub mod route;
pub mod targets;
pub mod tls;
pub mod top;
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

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and lines for people.
    Table,
    /// One JSON document (streams: one object per line), each with `"schema": 1`.
    Json,
}

/// The help heading of the options every subcommand takes: a subcommand's `--help` lists
/// its own options first, these after.
const GLOBAL: &str = "Global options";

/// `ctl` command line.
#[derive(Debug, Parser)]
#[command(
    name = "ctl",
    version,
    about = "Drive scriptd: status, reload, events, start/stop/restart/run",
    after_help = "Exit codes: 0 ok · 1 daemon unreachable or internal error · 2 usage · \
                  3 config invalid or reload rejected/failed · 4 no such script, version, run or \
                  event id, or a glob matching none · \
                  5 with --dry-run --exit-code: the plan has changes · 6 an outcome waited \
                  for did not happen (run --wait: the run failed; --timeout passed; \
                  logs --until-match: no match; status --check: a script is not up). With several \
                  targets (names, globs, --all): the highest code of them"
)]
pub struct Cli {
    /// Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]. Which
    /// daemon: a flag wins over every variable, --socket over --context over --config, and
    /// any of them over the current context.
    #[arg(long, global = true, env = "SCRIPTD_SOCKET", help_heading = GLOBAL)]
    pub socket: Option<PathBuf>,
    /// Config file to read the socket path from [default: ./scriptd.yaml, else
    /// /etc/scriptd/scriptd.yaml].
    #[arg(long, global = true, env = "SCRIPTD_CONFIG", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Context to talk to (`ctl context list`) [default: the current context, else the
    /// socket rules]. Several (repeated, or NAME,NAME) or globs (`'web-*'`): read commands
    /// run on each, in parallel.
    #[arg(long, global = true, env = "SCRIPTD_CONTEXT", value_name = "NAME", value_delimiter = ',', help_heading = GLOBAL)]
    pub context: Vec<String>,
    /// Read commands on every context, in parallel (SCRIPTD_CONTEXT is then ignored).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub all_contexts: bool,
    /// With several contexts (and --rolling): how long each host may take, connecting and
    /// the command (`500ms`, `30s`, `2m`; 0: no limit); a host past it is an error row.
    #[arg(long, global = true, env = "SCRIPTD_HOST_TIMEOUT", value_name = "DUR", default_value = "10s", value_parser = fleet::parse_host_timeout, help_heading = GLOBAL)]
    pub host_timeout: Duration,
    /// Which of --socket, --context and --config came from the environment rather than the
    /// command line (set by [`Cli::from_matches`]).
    #[arg(skip)]
    pub from_env: route::FromEnv,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = OutputFormat::Table, help_heading = GLOBAL)]
    pub output: OutputFormat,
    /// Tables as wide as their cells: do not cut long commands, values and messages with `…`
    /// to fit the terminal ($COLUMNS, else its width) or, on a pipe, 80 columns; `status`
    /// adds each running script's CPU %, memory and processes.
    #[arg(long, global = true)]
    pub wide: bool,
    /// Times in history, events and logs in the local time zone (TZ, else /etc/localtime)
    /// with their offset, instead of UTC; JSON stays UTC.
    #[arg(long, global = true)]
    pub local: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line parsed from `matches`, knowing which options came from the
    /// environment (a flag wins over a variable: `--context` over `SCRIPTD_SOCKET`).
    pub fn from_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = <Self as clap::FromArgMatches>::from_arg_matches(matches)?;
        let env =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        cli.from_env = route::FromEnv {
            socket: env("socket"),
            context: env("context"),
            config: env("config"),
        };
        Ok(cli)
    }
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
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
    /// CPU, memory, processes and descriptors of each running script, refreshed every second
    /// (q quits); one snapshot when stdout is not a terminal.
    Top(top::TopArgs),
    /// Apply (or preview) what is on disk, or a candidate (--file); prints the plan.
    Reload {
        /// Preview only: print the plan and its id, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if this plan (from --dry-run) is still what would be applied; a plan
        /// whose files already run is done (exit 0).
        #[arg(long, value_name = "ID", conflicts_with = "dry_run")]
        plan: Option<String>,
        /// With --dry-run: exit 5 when the plan has changes, 0 when it has none.
        #[arg(long, requires = "dry_run")]
        exit_code: bool,
        /// The config as it would be with TARGET (a config file relative to the main file's
        /// directory, new or existing) holding CANDIDATE (a path, or - for stdin); repeat for
        /// several. Without --dry-run the files are written into place and applied in one
        /// call (put back if the apply fails).
        #[arg(long = "file", value_name = "TARGET=CANDIDATE", value_parser = candidate::parse_file_arg)]
        files: Vec<candidate::FileArg>,
        #[command(flatten)]
        rolling: rolling::RollingArgs,
        /// Return once the new version is verified (reload.verify): 0 when every script it
        /// started or restarted is ready, 3 when it was rolled back, 6 when it was not
        /// verified and kept.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// With --wait: stop waiting after DUR (exit 6); the verification goes on.
        #[arg(long, value_name = "DUR", requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Follow reload and lifecycle events; --script and --kind filter them, --after-id
    /// resumes after an event id.
    Events(events::EventsArgs),
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
        /// Roll back only if this plan (from --dry-run) is still what would be applied.
        #[arg(long, value_name = "ID", conflicts_with = "dry_run")]
        plan: Option<String>,
        /// With --dry-run: exit 5 when the plan has changes.
        #[arg(long, requires = "dry_run")]
        exit_code: bool,
        #[command(flatten)]
        rolling: rolling::RollingArgs,
    },
    /// A script's output: the last lines, then with -f live lines; several names or globs
    /// interleave the scripts' lines in order of time, with a name column.
    Logs(logs::LogsArgs),
    /// Named daemons (contexts), kept in $XDG_CONFIG_HOME/scriptd/contexts.yaml.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Print the shell completion script (it calls ctl back for script names and versions).
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write ctl.1 and a page per subcommand there.
    #[command(hide = true)]
    Man {
        /// Write the pages into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `ctl history` subcommands.
#[derive(Debug, Clone, Subcommand)]
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
        completion::registration(shell, &mut std::io::stdout())?;
        return Ok(OK);
    }
    if let Command::Man { dir } = &cli.command {
        let cmd = <Cli as clap::CommandFactory>::command();
        match dir {
            Some(dir) => clap_mangen::generate_to(cmd, dir)?,
            None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        }
        return Ok(OK);
    }
    output::set_display(output::Display::from_flags(cli.wide, cli.local)?);
    if let Command::Context(cmd) = cli.command {
        let json = cli.output == OutputFormat::Json;
        return context::run(cmd, json, &mut std::io::stdout().lock());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(FAILURE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> CtlResult {
    // Refused before any call: a malformed plan id is a usage error, not an attempt.
    if let Command::Reload { plan, .. } | Command::Rollback { plan, .. } = &cli.command {
        candidate::check_plan(plan.as_deref())?;
    }
    let json = cli.output == OutputFormat::Json;
    let rolling = matches!(&cli.command,
        Command::Reload { rolling, .. } | Command::Rollback { rolling, .. } if rolling.rolling);
    let route = route::choose(&cli)?;
    let target = match route {
        route::Route::Contexts(selection) if rolling => {
            return rolling::run(&selection, cli.command, json, cli.host_timeout).await;
        }
        _ if rolling => return Err(route::not_rolled(&cli)),
        route::Route::Contexts(selection) if selection.is_fan_out() => {
            return fleet::fan_out(&selection, cli.command, json, cli.host_timeout).await;
        }
        route => route.target()?,
    };
    let c = client::connect_target(&target).await?;
    run_on(c, std::io::stdout().lock(), json, cli.command).await
}

/// Runs `command` on the daemon behind `c`, printing to `out`.
async fn run_on<W: Write>(
    mut c: client::Client,
    mut out: W,
    json: bool,
    command: Command,
) -> CtlResult {
    match command {
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
            // JSON always carries the resources; the table shows them with --wide.
            let wide = output::display().width.is_none();
            let resources = json || wide;
            let r = c
                .status(proto::StatusRequest { script, resources })
                .await
                .map_err(|s| CtlError::from_status(s, FAILURE))?
                .into_inner();
            if json {
                print_json(&mut out, &StatusJson::from(&r))?;
            } else {
                write!(
                    out,
                    "{}",
                    output::status_table(&r, output::colour_enabled(), wide)
                )?;
            }
            Ok(OK)
        }
        Command::Top(args) => top::run(&mut c, &mut out, json, &args).await,
        Command::Start(t) => ready_control(&mut c, &mut out, json, &t, ControlAction::Start).await,
        Command::Stop(t) => {
            let wait = targets::Wait::No;
            control(&mut c, &mut out, json, &t, ControlAction::Stop, wait).await
        }
        Command::Restart(t) => {
            ready_control(&mut c, &mut out, json, &t, ControlAction::Restart).await
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
            files,
            ..
        } => {
            let request = proto::DiffRequest {
                files: candidate::read_all(&files)?,
                ..Default::default()
            };
            let r = c
                .diff(request)
                .await
                .map_err(|s| CtlError::from_status(s, CONFIG))?
                .into_inner();
            let applied_with = (!files.is_empty()).then(|| candidate::shown(&files));
            print_dry_run(&mut out, json, &r, applied_with.as_deref())?;
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
            files,
            wait,
            timeout,
            ..
        } => {
            // The files on disk that run need no more words than "no changes".
            let explain_unchanged = plan.is_some() || !files.is_empty();
            let call = c.reload(proto::ReloadRequest {
                plan_id: plan.unwrap_or_default(),
                files: candidate::read_all(&files)?,
                wait,
            });
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, call).await.map_err(|_| {
                    CtlError::new(
                        OUTCOME,
                        format!(
                            "waited {} for the reload to be verified; the verification goes \
                             on (`ctl status` shows it, `ctl events` follows it)",
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
            let result = ReloadResult::try_from(r.result).unwrap_or(ReloadResult::Unspecified);
            if !json && explain_unchanged && result == ReloadResult::Unchanged {
                // The plan or candidate that is already running; candidate files rewritten.
                writeln!(out, "{}", r.message)?;
            }
            Ok(if r.disk_differs {
                CONFIG
            } else {
                verify::reload_exit(r.result)
            })
        }
        Command::Events(args) => events::run(&mut c, &mut out, json, args).await,
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
            plan,
            exit_code,
            ..
        } => history::rollback(&mut c, &mut out, json, version, (dry_run, exit_code), plan).await,
        Command::Logs(args) => logs::run(&mut c, &mut out, json, args).await,
        Command::Completions { .. } | Command::Man { .. } | Command::Context(_) => Ok(OK),
    }
}

/// `ctl start|restart`, which may `--wait` for what they started to be ready.
async fn ready_control(
    c: &mut client::Client,
    out: &mut impl Write,
    json: bool,
    args: &targets::ReadyArgs,
    action: ControlAction,
) -> CtlResult {
    control(c, out, json, &args.targets, action, args.wait()).await
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
        print_json(&mut *out, &doc)?;
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

/// Writes one `--output json` document and its newline in one `write(2)`. Stdout is
/// line-buffered, so serialising straight into it wrote each line of a pretty document on
/// its own: 23,009 `write(2)` calls for `ctl -o json status` with 1,000 scripts, which made
/// the JSON cost 3× the table (issue 16).
pub(crate) fn print_json(out: &mut impl Write, doc: &impl serde::Serialize) -> CtlResult<()> {
    let mut text = output::pretty::Pretty::to_vec(doc)?;
    text.push(b'\n');
    out.write_all(&text)?;
    Ok(())
}

fn errors_json(errors: &[proto::ConfigError]) -> Vec<output::ErrorJson> {
    errors.iter().map(output::ErrorJson::from).collect()
}

/// Prints a dry run; `candidate`: the `--file` arguments of a candidate's preview.
fn print_dry_run(
    out: &mut impl Write,
    json: bool,
    r: &proto::DiffResponse,
    candidate: Option<&str>,
) -> CtlResult<()> {
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
        print_json(&mut *out, &doc)?;
        return Ok(());
    }
    match result {
        "invalid" => {
            let what = candidate.map_or("the config on disk", |_| "the candidate config");
            writeln!(out, "{what} is invalid; nothing would be applied:")?;
            for e in &r.errors {
                writeln!(out, "  {}", output::error_text(e))?;
            }
        }
        "unchanged" => writeln!(
            out,
            "no changes: {} running as version {}",
            candidate.map_or("the files on disk are", |_| "the candidate is"),
            r.base_version
        )?,
        _ => {
            write!(out, "{}", output::changes_table(&r.changes))?;
            if r.rejected {
                writeln!(out, "\nthis reload would be rejected: only a daemon restart can apply a daemon.* change")?;
            } else {
                writeln!(
                    out,
                    "\nplan {} against version {}: {} change(s)\napply exactly this plan with: ctl reload{} --plan {}",
                    r.plan_id,
                    r.base_version,
                    r.changes.len(),
                    candidate.unwrap_or_default(),
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
        print_json(&mut *out, &doc)?;
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
