//! `daemon.access`: which users and groups, besides the daemon's own user and root, may use
//! the socket, and with which role.

use serde::{Serialize, Serializer};
use std::fmt;

/// What a peer may do over the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, logs, history, versions, events and dry runs (`reload --dry-run`, `diff`,
    /// `rollback --dry-run`).
    Read,
    /// Everything: also reload, rollback and start/stop/restart/run.
    Operate,
}

impl Role {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
        }
    }

    /// Parses the config spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "operate" => Some(Self::Operate),
            _ => None,
        }
    }
}

/// Who an access rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user, by uid; `name` when the config gave a name.
    User {
        /// Numeric uid.
        uid: u32,
        /// The name as written, if it was a name.
        name: Option<String>,
    },
    /// Members of a group (primary or supplementary), by gid; `name` as for users.
    Group {
        /// Numeric gid.
        gid: u32,
        /// The name as written, if it was a name.
        name: Option<String>,
    },
    /// A remote caller over TCP whose client certificate (signed by `daemon.listen.tls.
    /// client_ca`) has this name as its subject CN or as a DNS or URI SAN.
    Cert {
        /// The name, as written.
        name: String,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { uid, name: Some(n) } => write!(f, "user {n} (uid {uid})"),
            Self::User { uid, name: None } => write!(f, "uid {uid}"),
            Self::Group { gid, name: Some(n) } => write!(f, "group {n} (gid {gid})"),
            Self::Group { gid, name: None } => write!(f, "gid {gid}"),
            Self::Cert { name } => write!(f, "certificate {name}"),
        }
    }
}

/// One entry of `daemon.access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// Who.
    pub subject: Subject,
    /// What they may do.
    pub role: Role,
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.role.as_str())
    }
}

/// Serialized as its one-line text (`user alice (uid 1000): operate`), which is how a change
/// of `daemon.access` shows in a plan.
impl Serialize for AccessRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Every `daemon.access` rule. The daemon's own user and root always have every right and
/// need no rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Access(pub Vec<AccessRule>);

impl Access {
    /// True when no one besides the daemon's user and root is granted anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when some rule names a local user or group (so the Unix socket must be open to
    /// other users); rules for certificates concern the TCP listener only.
    pub fn names_local(&self) -> bool {
        self.0
            .iter()
            .any(|r| !matches!(r.subject, Subject::Cert { .. }))
    }

    /// The highest role granted to a client certificate with these `names` (its CN, DNS and
    /// URI SANs), with the name that granted it; `None` when no rule names any of them.
    pub fn role_of_cert<'a>(&self, names: &'a [String]) -> Option<(Role, &'a str)> {
        self.0
            .iter()
            .filter_map(|r| match &r.subject {
                Subject::Cert { name } => names
                    .iter()
                    .find(|n| *n == name)
                    .map(|n| (r.role, n.as_str())),
                _ => None,
            })
            .max_by_key(|(role, _)| *role)
    }

    /// True when some rule names a group (so a peer's groups matter).
    pub fn names_groups(&self) -> bool {
        self.0
            .iter()
            .any(|r| matches!(r.subject, Subject::Group { .. }))
    }

    /// The highest role granted to a peer with `uid` who is a member of `groups` (primary
    /// and supplementary gids); `None` when no rule names it.
    pub fn role_of(&self, uid: u32, groups: &[u32]) -> Option<Role> {
        self.0
            .iter()
            .filter(|r| match r.subject {
                Subject::User { uid: u, .. } => u == uid,
                Subject::Group { gid, .. } => groups.contains(&gid),
                Subject::Cert { .. } => false,
            })
            .map(|r| r.role)
            .max()
    }
}

/// Looks up a user (`group == false`) or group by name in the system's databases: its id, or
/// a message saying what is wrong.
pub(crate) fn lookup(name: &str, group: bool) -> Result<u32, String> {
    let (what, found) = if group {
        (
            "group",
            nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
        )
    } else {
        (
            "user",
            nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
        )
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!(
            "no {what} named {name:?} on this system; give an existing {what} name or a \
             numeric {}",
            if group { "gid" } else { "uid" }
        )),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, role: Role) -> AccessRule {
        AccessRule {
            subject: Subject::User { uid, name: None },
            role,
        }
    }

    fn group(gid: u32, role: Role) -> AccessRule {
        AccessRule {
            subject: Subject::Group { gid, name: None },
            role,
        }
    }

    #[test]
    fn highest_matching_role_wins() {
        let access = Access(vec![
            user(1000, Role::Read),
            group(50, Role::Operate),
            group(60, Role::Read),
        ]);
        assert_eq!(access.role_of(1000, &[1000]), Some(Role::Read));
        assert_eq!(access.role_of(1000, &[1000, 50]), Some(Role::Operate));
        assert_eq!(access.role_of(2000, &[60]), Some(Role::Read));
        assert_eq!(access.role_of(2000, &[2000, 61]), None);
        assert_eq!(
            Access::default().role_of(0, &[0]),
            None,
            "no implicit rights"
        );
        assert!(access.names_groups());
        assert!(!Access(vec![user(1, Role::Read)]).names_groups());
    }

    #[test]
    fn rules_read_as_one_line() {
        let named = AccessRule {
            subject: Subject::User {
                uid: 1000,
                name: Some("alice".into()),
            },
            role: Role::Operate,
        };
        assert_eq!(named.to_string(), "user alice (uid 1000): operate");
        assert_eq!(group(50, Role::Read).to_string(), "gid 50: read");
        assert_eq!(
            serde_json::to_value(Access(vec![named])).expect("serializes"),
            serde_json::json!(["user alice (uid 1000): operate"])
        );
    }
}
