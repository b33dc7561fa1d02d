//! The checks that look at the machine: directories and programs on disk (`stat`, the
//! `PATH` search) and user and group names (NSS). Validation reaches the machine only
//! through [`Host`]; [`SystemHost`] is the real one, tests give a fake.
//!
//! Everything here blocks (a `stat` of an NFS path, an LDAP lookup): callers on a tokio
//! runtime validate on a blocking thread.

use super::Validator;
use crate::config::{access, CommandSpec, ScriptConfig};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What validation needs to know of a path on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Nothing there (or it cannot be looked at).
    Missing,
    /// A directory.
    Dir,
    /// A regular file and its permission bits.
    File(u32),
    /// Something else (a socket, a device).
    Other,
}

/// The machine as validation sees it.
pub trait Host {
    /// What is at `path`, symlinks followed.
    fn stat(&mut self, path: &Path) -> Stat;
    /// The id of the user (`group == false`) or group named `name`, or a message saying
    /// what is wrong.
    fn lookup(&mut self, name: &str, group: bool) -> Result<u32, String>;
    /// The `PATH` programs are searched in when a script's `env` sets none.
    fn search_path(&self) -> Option<String>;
}

/// The real machine. Paths are looked up once per validation: a thousand scripts in one
/// directory running one program cost two `stat`s, not two thousand.
#[derive(Debug, Default)]
pub struct SystemHost {
    stats: HashMap<PathBuf, Stat>,
}

impl Host for SystemHost {
    fn stat(&mut self, path: &Path) -> Stat {
        if let Some(s) = self.stats.get(path) {
            return *s;
        }
        let s = match std::fs::metadata(path) {
            Err(_) => Stat::Missing,
            Ok(m) if m.is_dir() => Stat::Dir,
            Ok(m) if m.is_file() => Stat::File(m.permissions().mode()),
            Ok(_) => Stat::Other,
        };
        self.stats.insert(path.to_path_buf(), s);
        s
    }

    fn lookup(&mut self, name: &str, group: bool) -> Result<u32, String> {
        access::lookup(name, group)
    }

    fn search_path(&self) -> Option<String> {
        std::env::var("PATH").ok()
    }
}

/// Searched when neither the script's `env` nor the daemon's environment sets `PATH`.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl Validator<'_> {
    /// Reports a `working_dir` that is not a directory, at the key when it was written in
    /// the script, else at the script. True when it is a directory.
    pub(super) fn check_dir(&mut self, dir: &Path, script_path: &str, explicit: bool) -> bool {
        let at = format!("{script_path}.working_dir");
        let problem = match self.host.stat(dir) {
            Stat::Dir => return true,
            Stat::Missing => "does not exist",
            Stat::File(_) | Stat::Other => "is not a directory",
        };
        let msg = format!(
            "working_dir {} {problem}; create it or fix the path",
            dir.display()
        );
        if explicit {
            self.err(&at, msg);
        } else {
            self.err_key(script_path, msg);
        }
        false
    }

    /// Reports a program that cannot be run: argv[0] (searched in `PATH` when it has no
    /// `/`, else resolved against `working_dir`), or `/bin/sh` for a string command.
    pub(super) fn check_program(&mut self, script: &ScriptConfig, path: &str) {
        self.check_command(&script.command, script, &format!("{path}.command"));
    }

    /// [`Self::check_program`] for `command`, run as `script` would run it (its
    /// `working_dir` and `env.PATH`), reported at `at` (`scripts.NAME.health.exec`).
    pub(super) fn check_command(&mut self, command: &CommandSpec, script: &ScriptConfig, at: &str) {
        let (program, at) = match command {
            CommandSpec::Argv(argv) => match argv.first() {
                Some(first) => (first.clone(), format!("{at}[0]")),
                None => return, // an empty list is a parse error, reported already
            },
            CommandSpec::Shell(_) => ("/bin/sh".to_owned(), at.to_owned()),
        };
        let resolved = if program.contains('/') {
            script.working_dir.join(&program)
        } else {
            let search = script
                .env
                .get("PATH")
                .cloned()
                .or_else(|| self.host.search_path())
                .unwrap_or_else(|| FALLBACK_PATH.into());
            let found = std::env::split_paths(&search)
                .map(|d| d.join(&program))
                .find(|p| matches!(self.host.stat(p), Stat::File(_)));
            match found {
                Some(p) => p,
                None => {
                    self.err(
                        &at,
                        format!(
                            "program {program:?} not found in PATH ({search}); give its full \
                             path or install it"
                        ),
                    );
                    return;
                }
            }
        };
        match self.host.stat(&resolved) {
            Stat::Missing => self.err(
                &at,
                format!("program {} does not exist", resolved.display()),
            ),
            Stat::Dir | Stat::Other => {
                self.err(&at, format!("program {} is not a file", resolved.display()))
            }
            Stat::File(mode) if mode & 0o111 == 0 => self.err(
                &at,
                format!(
                    "program {} is not executable (mode {:o}); run `chmod +x {}`",
                    resolved.display(),
                    mode & 0o7777,
                    resolved.display()
                ),
            ),
            Stat::File(_) => {}
        }
    }
}
