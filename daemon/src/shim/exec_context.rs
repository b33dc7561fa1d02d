//! What the script starts with besides its argv: its user and group, umask and resource
//! limits (`IDS`, `UMASK`, `LIMITS` of the shim's arguments, from the script's
//! [`ExecContext`]), and the privilege drop that applies them in the forked child just
//! before exec, in this order: setrlimit, umask, setgroups, setgid, setuid.
//!
//! The shim itself stays root: it must still report, stop the script's group and reap. What
//! the child needs is looked up in the shim before the fork ([`ExecArgs::prepare`]: the
//! user's entry and groups, as `initgroups(3)` would, at every start); the child then only
//! makes system calls ([`InChild::apply`]).

use nix::sys::resource::Resource;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use scriptd_common::config::resource_limits::{self, Limit, LimitValue};
use scriptd_common::config::ExecContext;
use std::ffi::CString;
use std::process::Command;

/// Who the script runs as (`IDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ids {
    /// The shim's own (`-`).
    Keep,
    /// `user`: this uid with group `gid` (`UID:GID`), and the user's groups.
    User {
        /// uid
        uid: u32,
        /// `group`, or the user's primary group
        gid: u32,
    },
    /// Only `group` (`:GID`): the shim's uid, this group as its only one.
    Group {
        /// gid
        gid: u32,
    },
}

/// `IDS`, `UMASK` and `LIMITS`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExecArgs {
    pub(super) ids: Ids,
    pub(super) umask: Option<u32>,
    pub(super) limits: Vec<(Limit, LimitValue)>,
}

fn limits_text(limits: &[(Limit, LimitValue)]) -> String {
    let parts: Vec<String> = limits
        .iter()
        .map(|(l, v)| format!("{}={v}", l.name()))
        .collect();
    parts.join(",")
}

/// The `IDS`, `UMASK` and `LIMITS` arguments for a script's [`ExecContext`] (`-` for each
/// one it does not set).
pub fn exec_args(ctx: &ExecContext) -> [String; 3] {
    let ids = match (&ctx.user, ctx.gid()) {
        (Some(user), gid) => format!("{}:{}", user.uid, gid.unwrap_or(user.gid)),
        (None, Some(gid)) => format!(":{gid}"),
        (None, None) => "-".into(),
    };
    let umask = ctx
        .umask
        .map_or_else(|| "-".into(), |m| format!("{:04o}", m.0));
    let limits: Vec<_> = ctx.limits.0.iter().map(|(l, v)| (*l, *v)).collect();
    let limits = if limits.is_empty() {
        "-".into()
    } else {
        limits_text(&limits)
    };
    [ids, umask, limits]
}

impl ExecArgs {
    /// Parses what [`exec_args`] wrote.
    pub(super) fn parse(ids: &str, umask: &str, limits: &str) -> Result<Self, String> {
        let id = |s: &str| s.parse::<u32>().map_err(|_| format!("invalid id {s:?}"));
        let ids = match ids.split_once(':') {
            None if ids == "-" => Ids::Keep,
            Some(("", gid)) => Ids::Group { gid: id(gid)? },
            Some((uid, gid)) => Ids::User {
                uid: id(uid)?,
                gid: id(gid)?,
            },
            None => return Err(format!("invalid IDS {ids:?}")),
        };
        let umask = match umask {
            "-" => None,
            m => Some(u32::from_str_radix(m, 8).map_err(|_| format!("invalid UMASK {m:?}"))?),
        };
        let mut parsed = Vec::new();
        if limits != "-" {
            for item in limits.split(',') {
                let (name, value) = item
                    .split_once('=')
                    .ok_or_else(|| format!("invalid LIMITS item {item:?}"))?;
                let limit = Limit::parse(name).ok_or_else(|| format!("unknown limit {name:?}"))?;
                parsed.push((limit, resource_limits::parse_value(limit, value)?));
            }
        }
        Ok(Self {
            ids,
            umask,
            limits: parsed,
        })
    }

    /// ` as uid 33 gid 33 with limits nofile=4096 with umask 0027`, for an error: what the
    /// exec was attempted with.
    pub(super) fn describe(&self) -> String {
        let mut out = String::new();
        match self.ids {
            Ids::Keep => {}
            Ids::User { uid, gid } => out += &format!(" as uid {uid} gid {gid}"),
            Ids::Group { gid } => out += &format!(" with gid {gid}"),
        }
        if !self.limits.is_empty() {
            out += &format!(" with limits {}", limits_text(&self.limits));
        }
        if let Some(mask) = self.umask {
            out += &format!(" with umask {mask:04o}");
        }
        out
    }

    /// What the child will do, looked up now, before the fork: the user's entry (sets
    /// `HOME`, `USER`, `LOGNAME`, `SHELL` on `cmd` when the shim's environment lacks them:
    /// the daemon leaves them out unless the script's `env` sets them) and groups. A shim
    /// that is not root can change nothing, and may only keep its own ids (validation
    /// refuses others).
    pub(super) fn prepare(&self, cmd: &mut Command) -> Result<InChild, String> {
        let drop_to = match self.ids {
            Ids::Keep => None,
            Ids::User { uid, gid } => {
                let groups = user_groups(uid, gid, cmd)?;
                DropTo::unless_kept(groups, Gid::from_raw(gid), Some(Uid::from_raw(uid)))?
            }
            Ids::Group { gid } => {
                let gid = Gid::from_raw(gid);
                DropTo::unless_kept(vec![gid], gid, None)?
            }
        };
        Ok(InChild {
            limits: self
                .limits
                .iter()
                .map(|(l, v)| (l.resource(), v.soft, v.hard))
                .collect(),
            umask: self.umask.map(Mode::from_bits_truncate),
            drop_to,
        })
    }
}

/// The groups user `uid` runs with when its group is `gid` (`gid` and every group the group
/// database lists it in); sets its variables on `cmd` where the environment lacks them.
fn user_groups(uid: u32, gid: u32, cmd: &mut Command) -> Result<Vec<Gid>, String> {
    let user = match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(format!(
                "the script's user (uid {uid}) is no longer in the user database; fix the \
                 config's user or create the user"
            ))
        }
        Err(e) => return Err(format!("cannot look up uid {uid}: {e}")),
    };
    let shell = if user.shell.as_os_str().is_empty() {
        std::path::PathBuf::from("/bin/sh")
    } else {
        user.shell.clone()
    };
    let vars = [
        ("HOME", user.dir.as_os_str()),
        ("USER", user.name.as_ref()),
        ("LOGNAME", user.name.as_ref()),
        ("SHELL", shell.as_os_str()),
    ];
    for (var, value) in vars {
        if std::env::var_os(var).is_none() {
            cmd.env(var, value);
        }
    }
    let name = CString::new(user.name.clone())
        .map_err(|_| format!("the name of uid {uid} has a NUL byte"))?;
    nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .map_err(|e| format!("cannot look up the groups of user {}: {e}", user.name))
}

/// The credentials the child takes before exec.
#[derive(Debug)]
struct DropTo {
    groups: Vec<Gid>,
    gid: Gid,
    uid: Option<Uid>,
}

impl DropTo {
    /// The change to make, `None` for a shim that is not root and is asked to keep its own
    /// user (which keeps its groups: nothing can change without root) or group.
    fn unless_kept(groups: Vec<Gid>, gid: Gid, uid: Option<Uid>) -> Result<Option<Self>, String> {
        if nix::unistd::geteuid().is_root() {
            return Ok(Some(Self { groups, gid, uid }));
        }
        let kept = match uid {
            Some(uid) => uid == nix::unistd::geteuid(),
            None => gid == nix::unistd::getegid(),
        };
        if kept {
            Ok(None)
        } else {
            Err("running a script as another user or group needs a root daemon".into())
        }
    }

    /// setgroups, setgid, setuid, then checks that each took (a setuid that silently
    /// failed must not run the script as root).
    fn apply(&self) -> std::io::Result<()> {
        use nix::unistd::{getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};
        setgroups(&self.groups)?;
        setgid(self.gid)?;
        if let Some(uid) = self.uid {
            setuid(uid)?;
        }
        let gid_took = getgid() == self.gid && getegid() == self.gid;
        let uid_took = self.uid.is_none_or(|u| getuid() == u && geteuid() == u);
        if gid_took && uid_took {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
    }
}

/// What the forked child does just before exec.
#[derive(Debug)]
pub(super) struct InChild {
    limits: Vec<(Resource, u64, u64)>,
    umask: Option<Mode>,
    drop_to: Option<DropTo>,
}

impl InChild {
    /// setrlimit, umask, then the credentials. Only async-signal-safe system calls, nothing
    /// allocates: runs between fork and exec.
    pub(super) fn apply(&self) -> std::io::Result<()> {
        for &(resource, soft, hard) in &self.limits {
            nix::sys::resource::setrlimit(resource, soft, hard)?;
        }
        if let Some(mask) = self.umask {
            nix::sys::stat::umask(mask);
        }
        if let Some(to) = &self.drop_to {
            to.apply()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scriptd_common::config::resource_limits::{Limits, INFINITY};
    use scriptd_common::config::{GroupId, Umask, UserId};

    #[test]
    fn the_arguments_round_trip() {
        let user = UserId {
            name: "www-data".into(),
            uid: 33,
            gid: 33,
        };
        let group = GroupId { name: None, gid: 4 };
        let limits = Limits(
            [
                (
                    Limit::Nofile,
                    LimitValue {
                        soft: 1024,
                        hard: 4096,
                    },
                ),
                (Limit::Core, LimitValue { soft: 0, hard: 0 }),
                (
                    Limit::As,
                    LimitValue {
                        soft: INFINITY,
                        hard: INFINITY,
                    },
                ),
            ]
            .into(),
        );
        let with = |user: Option<&UserId>, group: Option<&GroupId>| ExecContext {
            user: user.cloned(),
            group: group.cloned(),
            umask: Some(Umask(0o027)),
            limits: limits.clone(),
        };
        let cases = [
            (ExecContext::default(), Ids::Keep),
            (with(Some(&user), None), Ids::User { uid: 33, gid: 33 }),
            (
                with(Some(&user), Some(&group)),
                Ids::User { uid: 33, gid: 4 },
            ),
            (with(None, Some(&group)), Ids::Group { gid: 4 }),
        ];
        for (ctx, ids) in cases {
            let [i, u, l] = exec_args(&ctx);
            let parsed = ExecArgs::parse(&i, &u, &l).unwrap_or_else(|e| panic!("{i} {u} {l}: {e}"));
            assert_eq!(parsed.ids, ids, "{i}");
            assert_eq!(parsed.umask, ctx.umask.map(|m| m.0), "{u}");
            let want: Vec<_> = ctx.limits.0.iter().map(|(l, v)| (*l, *v)).collect();
            assert_eq!(parsed.limits, want, "{l}");
        }
        assert_eq!(
            exec_args(&with(None, Some(&group))),
            [":4", "0027", "core=0,nofile=1024:4096,as=infinity"]
        );
        assert_eq!(
            ExecArgs::parse(":4", "0027", "nofile=8").map(|a| a.describe()),
            Ok(" with gid 4 with limits nofile=8 with umask 0027".to_owned())
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for (ids, umask, limits) in [
            ("alice", "-", "-"),
            ("1:x", "-", "-"),
            ("1:", "-", "-"),
            ("-", "9", "-"),
            ("-", "-", "nofile"),
            ("-", "-", "files=1"),
            ("-", "-", "nofile=-1"),
            ("-", "-", "nofile=8,"),
        ] {
            assert!(
                ExecArgs::parse(ids, umask, limits).is_err(),
                "{ids} {umask} {limits}"
            );
        }
    }
}
