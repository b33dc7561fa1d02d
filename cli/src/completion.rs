//! Shell completion. `ctl completions SHELL` prints a small registration script (what the
//! package installs) that calls `ctl` back at each TAB with the words typed so far
//! (`COMPLETE=SHELL ctl -- WORDS`; clap_complete's dynamic engine). So completion follows
//! the command definitions of the `ctl` that answers (hidden commands are never offered),
//! and it can offer what only the running daemon knows: script names wherever a script is
//! named, version numbers wherever a version is. Those are asked of the daemon found as
//! `ctl` finds it without flags (`SCRIPTD_SOCKET`, `SCRIPTD_CONTEXT`, `SCRIPTD_CONFIG`, the
//! current context, `./scriptd.yaml`, `/etc/scriptd/scriptd.yaml`: `route::from_variables`),
//! with a short timeout; when it cannot be reached (or several contexts are named) there are
//! simply no candidates, and nothing is printed to the terminal.

use crate::client;
use clap::CommandFactory;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};
use scriptd_common::proto::{HistoryRequest, StatusRequest};
use std::ffi::OsStr;
use std::io::Write;
use std::time::Duration;

/// The name the registration scripts call back (`ctl` on `PATH`).
const BIN: &str = "ctl";

/// How long a TAB may wait for the daemon.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Argument ids that name scripts, and those that name versions.
const SCRIPT_ARGS: &[&str] = &["script", "scripts", "names"];
const VERSION_ARGS: &[&str] = &["version", "v1", "v2"];

/// `ctl`'s command with the daemon-backed completers attached to every argument that names
/// a script or a version, in every subcommand.
pub fn command() -> clap::Command {
    attach(crate::Cli::command())
}

fn attach(mut cmd: clap::Command) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .collect();
    for id in ids {
        if SCRIPT_ARGS.contains(&id.as_str()) {
            cmd = cmd.mut_arg(&id, |a| a.add(ArgValueCompleter::new(script_names)));
        } else if VERSION_ARGS.contains(&id.as_str()) {
            cmd = cmd.mut_arg(&id, |a| a.add(ArgValueCompleter::new(versions)));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(&name, attach);
    }
    cmd
}

/// Answers a completion request when the shell made one (`COMPLETE` set); `Ok(false)` for
/// an ordinary run.
pub fn complete_if_asked() -> clap::error::Result<bool> {
    let cwd = std::env::current_dir().ok();
    CompleteEnv::with_factory(command)
        .bin(BIN)
        .completer(BIN)
        .try_complete(std::env::args_os(), cwd.as_deref())
}

/// The registration script for `shell` (`ctl completions SHELL`).
pub fn registration(shell: clap_complete::Shell, out: &mut impl Write) -> std::io::Result<()> {
    let name = shell.to_string();
    let shells = Shells::builtins();
    let Some(completer) = shells.completer(&name) else {
        return Err(std::io::Error::other(format!(
            "no completion support for {name}"
        )));
    };
    let mut buf = Vec::new();
    completer.write_registration("COMPLETE", BIN, BIN, BIN, &mut buf)?;
    out.write_all(&buf)
}

/// Asks the daemon `f`, quietly: nothing on any failure or after [`ASK_TIMEOUT`].
fn ask<T>(f: impl AsyncFnOnce(&mut client::Client) -> Option<T>) -> Option<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(ASK_TIMEOUT, async {
            let target = crate::route::from_variables().target().ok()?;
            let mut c = client::connect_target(&target).await.ok()?;
            f(&mut c).await
        })
        .await
        .ok()
        .flatten()
    })
}

fn script_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    ask(async |c: &mut client::Client| {
        let status = c.status(StatusRequest::default()).await.ok()?.into_inner();
        Some(
            status
                .scripts
                .into_iter()
                .filter(|s| s.name.starts_with(prefix.as_ref()))
                .map(|s| CompletionCandidate::new(s.name).help(Some(s.kind.into())))
                .collect(),
        )
    })
    .unwrap_or_default()
}

fn versions(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    ask(async |c: &mut client::Client| {
        let request = HistoryRequest {
            limit: 1000,
            ..Default::default()
        };
        let history = c.history(request).await.ok()?.into_inner();
        Some(
            history
                .entries
                .into_iter()
                .filter(|e| e.version > 0)
                .map(|e| (e.version.to_string(), e.source))
                .filter(|(v, _)| v.starts_with(prefix.as_ref()))
                .map(|(v, source)| CompletionCandidate::new(v).help(Some(source.into())))
                .collect(),
        )
    })
    .unwrap_or_default()
}
