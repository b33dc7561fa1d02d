//! The checks that look at the machine: directories and programs on disk (`stat`, the
//! `PATH` search) and user and group names (NSS). Validation reaches the machine only
//! through [`Host`]; [`SystemHost`] is the real one, tests give a fake.
//!
//! Everything here blocks (a `stat` of an NFS path, an LDAP lookup): callers on a tokio
//! runtime validate on a blocking thread.

use super::Validator;
use crate::config::resource_limits::Limit;
use crate::config::{access, permits, CommandSpec, Perms, ScriptConfig, Want};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What validation needs to know of a path on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    // -- `user`, `group`, `limits`. The defaults describe a root daemon on a machine that
    // -- knows no users and no owners, which is what most test hosts need; `SystemHost`
    // -- answers each from the real machine.
    /// Owner, group and mode of `path` (symlinks followed); `None` when it cannot be
    /// looked at (the checks as a script's user would then pass: nothing to go on).
    fn perms(&mut self, _path: &Path) -> Option<Perms> {
        None
    }
    /// The user `spec` names in the user database (a name, or a numeric uid), or a message
    /// saying what is wrong.
    fn user(&mut self, spec: &str) -> Result<Account, String> {
        Err(format!("no user named {spec:?} on this system"))
    }
    /// The groups of user `name` when it runs with group `gid`: `gid` and every group the
    /// group database lists it in (what `initgroups(3)` gives it).
    fn groups_of(&mut self, _name: &str, gid: u32) -> Vec<u32> {
        vec![gid]
    }
    /// The daemon's effective uid and gid (validation runs in the daemon, or in `scriptd
    /// --check` run as the daemon's user).
    fn daemon_ids(&self) -> (u32, u32) {
        (0, 0)
    }
    /// The daemon's own hard limit of `limit` (`None`: unknown); a daemon that is not root
    /// cannot give a script more.
    fn hard_limit(&mut self, _limit: Limit) -> Option<u64> {
        None
    }
    /// The kernel's ceiling for `RLIMIT_NOFILE` (`fs.nr_open`), which root cannot pass
    /// either (`None`: unknown).
    fn nr_open(&mut self) -> Option<u64> {
        None
    }
}

/// A user of the user database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The real machine. Paths, users and groups are looked up once per validation: a thousand
/// scripts in one directory running one program as one user cost two `stat`s and one user
/// look-up, not thousands.
#[derive(Debug, Default)]
pub struct SystemHost {
    stats: HashMap<PathBuf, (Stat, Option<Perms>)>,
    users: HashMap<String, Result<Account, String>>,
    groups: HashMap<(String, u32), Vec<u32>>,
    nr_open: Option<Option<u64>>,
}

impl SystemHost {
    fn metadata(&mut self, path: &Path) -> (Stat, Option<Perms>) {
        if let Some(s) = self.stats.get(path) {
            return *s;
        }
        let s = match std::fs::metadata(path) {
            Err(_) => (Stat::Missing, None),
            Ok(m) => {
                let stat = if m.is_dir() {
                    Stat::Dir
                } else if m.is_file() {
                    Stat::File(m.permissions().mode())
                } else {
                    Stat::Other
                };
                let perms = Perms {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                };
                (stat, Some(perms))
            }
        };
        self.stats.insert(path.to_path_buf(), s);
        s
    }
}

impl Host for SystemHost {
    fn stat(&mut self, path: &Path) -> Stat {
        self.metadata(path).0
    }

    fn perms(&mut self, path: &Path) -> Option<Perms> {
        self.metadata(path).1
    }

    fn user(&mut self, spec: &str) -> Result<Account, String> {
        self.users
            .entry(spec.to_owned())
            .or_insert_with(|| find_user(spec))
            .clone()
    }

    fn groups_of(&mut self, name: &str, gid: u32) -> Vec<u32> {
        self.groups
            .entry((name.to_owned(), gid))
            .or_insert_with(|| find_groups(name, gid))
            .clone()
    }

    fn daemon_ids(&self) -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    fn hard_limit(&mut self, limit: Limit) -> Option<u64> {
        nix::sys::resource::getrlimit(limit.resource())
            .ok()
            .map(|(_, hard)| hard)
    }

    fn nr_open(&mut self) -> Option<u64> {
        *self.nr_open.get_or_insert_with(|| {
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
    }

    fn lookup(&mut self, name: &str, group: bool) -> Result<u32, String> {
        access::lookup(name, group)
    }

    fn search_path(&self) -> Option<String> {
        std::env::var("PATH").ok()
    }
}

/// The user `spec` (a name or a uid) in the user database.
fn find_user(spec: &str) -> Result<Account, String> {
    use nix::unistd::{Uid, User};
    let numeric = !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit());
    let found = if numeric {
        let uid = spec
            .parse::<u32>()
            .map_err(|_| format!("invalid uid {spec}"))?;
        User::from_uid(Uid::from_raw(uid))
    } else {
        User::from_name(spec)
    };
    match found {
        Ok(Some(u)) => Ok(Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        Ok(None) if numeric => Err(format!(
            "no user with uid {spec} in the user database; a script's user needs an entry \
             there (its primary group, home and shell): create it (useradd) or name an \
             existing user"
        )),
        Ok(None) => Err(format!(
            "no user named {spec:?} on this system; create it (useradd) or name an existing \
             user"
        )),
        Err(e) => Err(format!("cannot look up user {spec:?}: {e}")),
    }
}

/// `gid` and the groups the group database lists user `name` in.
fn find_groups(name: &str, gid: u32) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(name) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}

/// Searched when neither the script's `env` nor the daemon's environment sets `PATH`.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl Validator<'_> {
    /// Reports a `working_dir` that is not a directory, at the key when it was written in
    /// the script, else at the script. True when it is a directory.
    /// With a `user` (`who`), the directory and those above it must be searchable by them.
    pub(super) fn check_dir(
        &mut self,
        dir: &Path,
        script_path: &str,
        explicit: bool,
        who: Option<&Who>,
    ) -> bool {
        let problem = match self.host.stat(dir) {
            Stat::Dir => match who.and_then(|who| self.blocked(dir, who, Want::Search)) {
                None => return true,
                Some(why) => {
                    let who = who.map(|w| w.label.as_str()).unwrap_or_default();
                    format!(
                        "is not accessible to {who}, whom the script runs as: {why}; give \
                         them access or pick another directory"
                    )
                }
            },
            Stat::Missing => "does not exist; create it or fix the path".into(),
            Stat::File(_) | Stat::Other => "is not a directory; create it or fix the path".into(),
        };
        let msg = format!("working_dir {} {problem}", dir.display());
        if explicit {
            self.err(&format!("{script_path}.working_dir"), msg);
        } else {
            self.err_key(script_path, msg);
        }
        false
    }

    /// Reports a program that cannot be run: argv[0] (searched in `PATH` when it has no
    /// `/`, else resolved against `working_dir`), or `/bin/sh` for a string command; with a
    /// `user` (`who`), one they cannot execute.
    pub(super) fn check_program(&mut self, script: &ScriptConfig, path: &str, who: Option<&Who>) {
        self.check_command(&script.command, script, &format!("{path}.command"), who);
    }

    /// [`Self::check_program`] for `command`, run as `script` would run it (its
    /// `working_dir`, `env.PATH` and `user`), reported at `at` (`scripts.NAME.health.exec`).
    pub(super) fn check_command(
        &mut self,
        command: &CommandSpec,
        script: &ScriptConfig,
        at: &str,
        who: Option<&Who>,
    ) {
        let (program, argv) = match command {
            CommandSpec::Argv(argv) => match argv.first() {
                Some(first) => (first.clone(), true),
                None => return, // an empty list is a parse error, reported already
            },
            CommandSpec::Shell(_) => ("/bin/sh".to_owned(), false),
        };
        // Where an error is reported: the program's place, built only for an error.
        let place = || {
            if argv {
                format!("{at}[0]")
            } else {
                at.to_owned()
            }
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
                        &place(),
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
                &place(),
                format!("program {} does not exist", resolved.display()),
            ),
            Stat::Dir | Stat::Other => self.err(
                &place(),
                format!("program {} is not a file", resolved.display()),
            ),
            Stat::File(mode) if mode & 0o111 == 0 => self.err(
                &place(),
                format!(
                    "program {} is not executable (mode {:o}); run `chmod +x {}`",
                    resolved.display(),
                    mode & 0o7777,
                    resolved.display()
                ),
            ),
            Stat::File(_) => {
                if let Some(who) = who {
                    if let Some(why) = self.blocked(&resolved, who, Want::Execute) {
                        self.err(
                            &place(),
                            format!(
                                "program {} cannot be executed by {}, whom the script runs as: \
                                 {why}",
                                resolved.display(),
                                who.label
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Why `who` cannot reach `path` (search every directory above it) and do `want` on
    /// it, from the owners and modes ([`permits`]); `None` when they can (or a path cannot
    /// be looked at: the checks above report what is missing).
    fn blocked(&mut self, path: &Path, who: &Who, want: Want) -> Option<String> {
        let mut chain: Vec<(&Path, Want)> = path
            .ancestors()
            .skip(1)
            .map(|dir| (dir, Want::Search))
            .collect();
        chain.reverse();
        chain.push((path, want));
        for (p, want) in chain {
            let Some(perms) = self.host.perms(p) else {
                continue;
            };
            if !permits(perms, who.uid, &who.gids, want) {
                let (what, verb) = match want {
                    Want::Search => ("directory", "searched"),
                    Want::Execute => ("file", "executed"),
                };
                return Some(format!(
                    "{what} {} (mode {:04o}, owner uid {}, group gid {}) cannot be {verb} by \
                     them",
                    p.display(),
                    perms.mode & 0o7777,
                    perms.uid,
                    perms.gid
                ));
            }
        }
        None
    }
}

/// The user a script runs as, for the checks made as they would be: their uid and every
/// group they will have.
#[derive(Debug)]
pub(super) struct Who {
    /// Their uid (never 0: root needs no such check).
    pub(super) uid: u32,
    /// Their primary and supplementary gids.
    pub(super) gids: Vec<u32>,
    /// `user alice (uid 1000)`, for messages.
    pub(super) label: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_or_uid_from_the_real_database() {
        let mut host = SystemHost::default();
        let root = host.user("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(host.user("0"), Ok(root));
        let missing = host.user("scriptd-no-such-user").expect_err("no such user");
        assert!(
            missing.contains("no user named \"scriptd-no-such-user\""),
            "{missing}"
        );
        assert!(host.groups_of("root", 0).contains(&0));
    }
}
