//! `user`, `group`, `umask` and `limits` of a script (or `defaults:`): their values, looked
//! up through the [`Host`](super::Host) (users and groups, the daemon's ids and limits), and
//! whom the "as that user would" checks of `host.rs` are made for.

use super::host::Who;
use super::{kind, Validator};
use crate::config::resource_limits::{self, Limit, Limits, INFINITY};
use crate::config::{ExecContext, GroupId, Umask, UserId};
use serde_yaml::Value;
use std::collections::BTreeMap;

/// A user or group as written: a name, or a numeric id (YAML number or digits).
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_numeric(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

impl Validator<'_> {
    /// `user:` — a user name or uid of the user database. A daemon that is not root may
    /// only name its own user.
    pub(super) fn user(&mut self, value: &Value, path: &str) -> Option<UserId> {
        let Some(spec) = id_text(value).filter(|s| !s.is_empty()) else {
            self.err(
                path,
                format!(
                    "expected a user name or a numeric uid, found {}",
                    kind(value)
                ),
            );
            return None;
        };
        let account = match self.host.user(&spec) {
            Ok(a) => a,
            Err(e) => {
                self.err(path, e);
                return None;
            }
        };
        let user = UserId {
            name: account.name,
            uid: account.uid,
            gid: account.gid,
        };
        let (uid, _) = self.host.daemon_ids();
        if uid != 0 && uid != user.uid {
            self.err(
                path,
                format!(
                    "running a script as user {user} needs a root daemon (scriptd runs as uid \
                     {uid}); remove `user` or start scriptd as root"
                ),
            );
            return None;
        }
        Some(user)
    }

    /// `group:` — a group name of the group database, or a numeric gid (taken as it is). A
    /// daemon that is not root may only name its own group.
    pub(super) fn group(&mut self, value: &Value, path: &str) -> Option<GroupId> {
        let Some(spec) = id_text(value).filter(|s| !s.is_empty()) else {
            self.err(
                path,
                format!(
                    "expected a group name or a numeric gid, found {}",
                    kind(value)
                ),
            );
            return None;
        };
        let group = if is_numeric(&spec) {
            match spec.parse::<u32>() {
                Ok(gid) => GroupId { name: None, gid },
                Err(_) => {
                    self.err(path, format!("invalid gid {spec}"));
                    return None;
                }
            }
        } else {
            match self.host.lookup(&spec, true) {
                Ok(gid) => GroupId {
                    name: Some(spec),
                    gid,
                },
                Err(e) => {
                    self.err(path, e);
                    return None;
                }
            }
        };
        let (uid, gid) = self.host.daemon_ids();
        if uid != 0 && gid != group.gid {
            self.err(
                path,
                format!(
                    "running a script with group {group} needs a root daemon (scriptd runs as \
                     uid {uid}, gid {gid}); remove `group` or start scriptd as root"
                ),
            );
            return None;
        }
        Some(group)
    }

    /// `umask:` — octal digits as a string: `"0027"`, or `0027` unquoted (YAML keeps a
    /// leading zero as a string). A YAML number is refused: `22` and `0o22` both reach us as
    /// numbers, decimal 22 and 18, and which the author meant cannot be told.
    pub(super) fn umask(&mut self, value: &Value, path: &str) -> Option<Umask> {
        let parsed = match value {
            Value::String(s) => Umask::parse(s.trim()),
            Value::Number(n) => Err(format!(
                "umask {n} is a YAML number, which cannot say whether it was octal; write the \
                 octal digits with a leading 0 or quoted, e.g. umask: \"0022\""
            )),
            other => Err(format!(
                "expected an octal umask such as \"0027\", found {}",
                kind(other)
            )),
        };
        parsed.map_err(|e| self.err(path, e)).ok()
    }

    /// `limits:` — a map from systemd's `LimitX=` names in lower case to values
    /// ([`resource_limits::parse_value`]). A hard limit above what the daemon can give is an
    /// error: above its own when it is not root, above `fs.nr_open` for `nofile`.
    pub(super) fn limits(&mut self, value: &Value, path: &str) -> Option<Limits> {
        let names = Limit::names();
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, val) in self.entries(value, path, &names) {
            let at = format!("{path}.{key}");
            let Some(limit) = Limit::parse(&key) else {
                continue; // reported by `entries`
            };
            let text = match val {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    self.err(
                        &at,
                        format!(
                            "expected a limit such as 4096, \"1024:4096\" or \"infinity\", found \
                             {}",
                            kind(other)
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            let parsed = resource_limits::parse_value(limit, &text)
                .and_then(|v| self.limit_ceiling(limit, v.hard).map(|()| v));
            match parsed {
                Ok(v) => {
                    out.insert(limit, v);
                }
                Err(e) => {
                    self.err(&at, e);
                    ok = false;
                }
            }
        }
        ok.then_some(Limits(out))
    }

    /// Whether the daemon can set a hard limit of `hard` for `limit`.
    fn limit_ceiling(&mut self, limit: Limit, hard: u64) -> Result<(), String> {
        let shown = |n: u64| {
            if n == INFINITY {
                "infinity".to_owned()
            } else {
                n.to_string()
            }
        };
        let (uid, _) = self.host.daemon_ids();
        if uid != 0 {
            if let Some(max) = self.host.hard_limit(limit).filter(|&max| hard > max) {
                return Err(format!(
                    "hard limit {} is above the daemon's own ({}), which a daemon that is not \
                     root cannot raise; lower it or start scriptd as root",
                    shown(hard),
                    shown(max)
                ));
            }
        }
        if limit == Limit::Nofile {
            if let Some(max) = self.host.nr_open().filter(|&max| hard > max) {
                return Err(format!(
                    "hard limit {} is above the kernel's ceiling fs.nr_open ({max}); lower it \
                     (or raise sysctl fs.nr_open)",
                    shown(hard)
                ));
            }
        }
        Ok(())
    }

    /// Whom the checks "as that user would" are made for: the script's `user`, with the
    /// groups it will run with; `None` without a `user`, or for root.
    pub(super) fn who(&mut self, exec: &ExecContext) -> Option<Who> {
        let user = exec.user.as_ref().filter(|u| u.uid != 0)?;
        let gid = exec.gid().unwrap_or(user.gid);
        let mut gids = self.host.groups_of(&user.name, gid);
        if !gids.contains(&gid) {
            gids.push(gid);
        }
        Some(Who {
            uid: user.uid,
            gids,
            label: format!("user {user}"),
        })
    }
}
