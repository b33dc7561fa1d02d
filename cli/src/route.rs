//! Which daemon (or daemons) a command goes to. Three options name one: `--socket`,
//! `--context` (or `--all-contexts`) and `--config`, each also a variable
//! (`SCRIPTD_SOCKET`, `SCRIPTD_CONTEXT`, `SCRIPTD_CONFIG`). A flag on the command line
//! wins over every variable (`ctl --context web-1` in a shell that exports
//! `SCRIPTD_SOCKET` goes to web-1, as `docker --context` wins over `DOCKER_HOST`); among
//! flags, and among variables, the order is socket, context, config. With none of them, the
//! current context; with no current context, the socket of `./scriptd.yaml` (else
//! `/etc/scriptd/scriptd.yaml`).

use crate::client::{self, Target};
use crate::error::{CtlError, CtlResult, USAGE};
use crate::fleet::Selection;
use crate::Cli;
use std::path::{Path, PathBuf};

/// Which of the options came from the environment rather than the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FromEnv {
    /// `SCRIPTD_SOCKET`, not `--socket`.
    pub socket: bool,
    /// `SCRIPTD_CONTEXT`, not `--context`.
    pub context: bool,
    /// `SCRIPTD_CONFIG`, not `--config`.
    pub config: bool,
}

/// Where a command goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// This socket (`--socket`, `SCRIPTD_SOCKET`).
    Socket(PathBuf),
    /// These contexts: one name, several, globs, or every one.
    Contexts(Selection),
    /// The socket named by this config (`--config`, `SCRIPTD_CONFIG`).
    Config(PathBuf),
    /// The current context, else the socket of the default config.
    Current,
}

/// The route `cli`'s options and variables choose (see the module's rules). `--socket` and
/// several contexts on the same command line are a usage error: neither can win without
/// dropping what the other asked for.
pub fn choose(cli: &Cli) -> CtlResult<Route> {
    let contexts = !cli.context.is_empty() || cli.all_contexts;
    let selection = || Selection::new(&cli.context, cli.all_contexts);
    let context_from_env = cli.from_env.context && !cli.all_contexts;
    if cli.all_contexts && !cli.context.is_empty() && !cli.from_env.context {
        return Err(CtlError::new(
            USAGE,
            "--all-contexts and --context: give one or the other",
        ));
    }
    let socket_flag = cli.socket.is_some() && !cli.from_env.socket;
    if socket_flag && contexts && !context_from_env && selection().is_fan_out() {
        return Err(CtlError::new(
            USAGE,
            "--socket names one daemon and --context several: give one or the other",
        ));
    }
    // (from the environment, socket 0 / context 1 / config 2): the lowest wins.
    let mut candidates: Vec<((bool, u8), Route)> = Vec::new();
    if let Some(socket) = &cli.socket {
        candidates.push(((cli.from_env.socket, 0), Route::Socket(socket.clone())));
    }
    if contexts {
        candidates.push(((context_from_env, 1), Route::Contexts(selection())));
    }
    if let Some(config) = &cli.config {
        candidates.push(((cli.from_env.config, 2), Route::Config(config.clone())));
    }
    Ok(candidates
        .into_iter()
        .min_by_key(|(rank, _)| *rank)
        .map_or(Route::Current, |(_, route)| route))
}

impl Route {
    /// The one daemon of this route (a [`Route::Contexts`] of one plain name).
    pub fn target(self) -> CtlResult<Target> {
        match self {
            Self::Socket(path) => Ok(Target::Socket(path)),
            Self::Config(config) => client::resolve_socket(None, Some(&config)).map(Target::Socket),
            Self::Contexts(selection) => {
                let name = selection.one().ok_or_else(|| {
                    CtlError::new(USAGE, "this command goes to one daemon: name one context")
                })?;
                match crate::context::selected(Some(name))? {
                    Some(c) => client::target_of(c),
                    None => Err(CtlError::new(USAGE, format!("no context named {name:?}"))),
                }
            }
            Self::Current => match crate::context::selected(None)? {
                Some(c) => client::target_of(c),
                None => client::resolve_socket(None, None::<&Path>).map(Target::Socket),
            },
        }
    }
}

/// The route the variables alone choose: what shell completion asks (it sees no flags).
pub fn from_variables() -> Route {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(socket) = var("SCRIPTD_SOCKET") {
        return Route::Socket(socket.into());
    }
    if let Some(names) = var("SCRIPTD_CONTEXT") {
        let names: Vec<String> = names
            .to_string_lossy()
            .split(',')
            .map(String::from)
            .collect();
        return Route::Contexts(Selection::new(&names, false));
    }
    var("SCRIPTD_CONFIG").map_or(Route::Current, |config| Route::Config(config.into()))
}

/// `--rolling` without contexts: what was named instead.
pub fn not_rolled(cli: &Cli) -> CtlError {
    let named = match choose(cli) {
        Ok(Route::Socket(_)) if cli.from_env.socket => "SCRIPTD_SOCKET names one socket",
        Ok(Route::Socket(_)) => "--socket names one socket",
        Ok(Route::Config(_)) if cli.from_env.config => "SCRIPTD_CONFIG names one daemon",
        Ok(Route::Config(_)) => "--config names one daemon",
        _ => "no context was named",
    };
    CtlError::new(
        USAGE,
        format!(
            "--rolling goes over contexts and {named}: name them with --context or --all-contexts"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The route of `ctl ARGS status` with `env` as the variables that are set.
    fn route(args: &[&str], env: &[(&str, &str)]) -> Result<String, u8> {
        let mut argv = vec!["ctl"];
        argv.extend_from_slice(args);
        argv.push("status");
        let mut cli = Cli::try_parse_from(&argv).expect("parses");
        for (var, value) in env {
            match *var {
                "SCRIPTD_SOCKET" => {
                    cli.socket.get_or_insert_with(|| value.into());
                    cli.from_env.socket |= !args.contains(&"--socket");
                }
                "SCRIPTD_CONTEXT" if cli.context.is_empty() => {
                    cli.context = value.split(',').map(String::from).collect();
                    cli.from_env.context = true;
                }
                "SCRIPTD_CONFIG" => {
                    cli.config.get_or_insert_with(|| value.into());
                    cli.from_env.config |= !args.contains(&"--config");
                }
                _ => {}
            }
        }
        choose(&cli)
            .map(|r| match r {
                Route::Socket(p) => format!("socket {}", p.display()),
                Route::Contexts(s) => format!("contexts {}", s.one().unwrap_or("*")),
                Route::Config(p) => format!("config {}", p.display()),
                Route::Current => "current".into(),
            })
            .map_err(|e| e.code)
    }

    /// Flags, variables, and the route they choose (or the exit code).
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], Result<&'a str, u8>);

    #[test]
    fn flags_win_over_variables_then_socket_context_config() {
        let s = ("SCRIPTD_SOCKET", "/env.sock");
        let c = ("SCRIPTD_CONTEXT", "env-ctx");
        let f = ("SCRIPTD_CONFIG", "/env.yaml");
        let table: &[Case] = &[
            (&[], &[], Ok("current")),
            (&[], &[f], Ok("config /env.yaml")),
            (&[], &[c, f], Ok("contexts env-ctx")),
            (&[], &[s, c, f], Ok("socket /env.sock")),
            (&["--config", "/f.yaml"], &[s, c], Ok("config /f.yaml")),
            (&["--context", "a"], &[s, c, f], Ok("contexts a")),
            (
                &["--context", "a", "--config", "/f.yaml"],
                &[s],
                Ok("contexts a"),
            ),
            (
                &["--socket", "/f.sock", "--context", "a"],
                &[],
                Ok("socket /f.sock"),
            ),
            (&["--socket", "/f.sock"], &[c], Ok("socket /f.sock")),
            (&["--all-contexts"], &[s], Ok("contexts *")),
            (&["--all-contexts"], &[c], Ok("contexts *")),
            (&["--all-contexts", "--context", "a"], &[], Err(USAGE)),
            (
                &["--socket", "/f.sock", "--context", "a,b"],
                &[],
                Err(USAGE),
            ),
            (&["--socket", "/f.sock", "--all-contexts"], &[], Err(USAGE)),
            (
                &["--socket", "/f.sock"],
                &[("SCRIPTD_CONTEXT", "web-*")],
                Ok("socket /f.sock"),
            ),
        ];
        for (args, env, want) in table {
            let want = want.map(String::from);
            assert_eq!(route(args, env), want, "ctl {args:?} with {env:?}");
        }
    }
}
