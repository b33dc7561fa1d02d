//! What a script's process is started with besides its command: the user and group it runs
//! as, its umask and its resource limits (systemd's `User=`, `Group=`, `UMask=`, `LimitX=`).
//! The shim applies them just before it executes the script (see `daemon/src/shim.rs`).
//!
//! Also the permission arithmetic of "as that user would": whether a user with some uid
//! and groups may execute a file or search a directory, from the file's owner, group and
//! mode ([`permits`]), so that validation can say a program is not executable by the
//! script's user without running anything as them.

use super::resource_limits::Limits;
use serde::{Serialize, Serializer};
use std::fmt;

/// A user from the user database, as `user:` resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    /// Its name in the user database.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group: the script's group when `group` is not set.
    pub gid: u32,
}

/// `alice (uid 1000)`, for messages. A plan shows the primary gid too
/// (`alice (uid 1000, gid 1000)`): a user whose primary group changed in the user database
/// runs with another group after the reload that notices it, which restarts the script.
impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {})", self.name, self.uid)
    }
}

/// A group, as `group:` resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupId {
    /// Its name, when the config gave one (a numeric gid is taken as it is).
    pub name: Option<String>,
    /// Its gid.
    pub gid: u32,
}

/// `www-data (gid 33)`, or `gid 33` for a numeric one.
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (gid {})", self.gid),
            None => write!(f, "gid {}", self.gid),
        }
    }
}

/// A file mode creation mask (`umask: "0027"`), at most `0777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Umask {
    /// Parses 1 to 4 octal digits (`"0027"`, `"027"`, `"22"`) of at most `0777`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid umask {text:?}: write up to 4 octal digits (0-7) of at most 0777, \
                 e.g. \"0027\""
            )
        };
        if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(bad());
        }
        match u32::from_str_radix(text, 8) {
            Ok(n) if n <= 0o777 => Ok(Self(n)),
            _ => Err(bad()),
        }
    }
}

/// Four octal digits (`0027`).
impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

fn ser_user<S: Serializer>(v: &Option<UserId>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.collect_str(&format_args!("{} (uid {}, gid {})", u.name, u.uid, u.gid)),
        None => s.serialize_none(),
    }
}

fn ser_display<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// `user`, `group`, `umask` and `limits` of a script. Empty (the default): the script runs
/// as the daemon's user and group, with its umask and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecContext {
    /// `user`: run as this user (setgid, supplementary groups from the group database,
    /// setuid before exec); `HOME`, `USER`, `LOGNAME`, `SHELL` are theirs unless `env` sets
    /// them.
    #[serde(serialize_with = "ser_user")]
    pub user: Option<UserId>,
    /// `group`: run with this group; default the user's primary group.
    #[serde(serialize_with = "ser_display")]
    pub group: Option<GroupId>,
    /// `umask`; default the daemon's.
    #[serde(serialize_with = "ser_display")]
    pub umask: Option<Umask>,
    /// `limits`: set with `setrlimit` before exec.
    pub limits: Limits,
}

impl ExecContext {
    /// The gid the script runs with, when it changes: `group`, else the user's primary
    /// group.
    pub fn gid(&self) -> Option<u32> {
        self.group
            .as_ref()
            .map(|g| g.gid)
            .or(self.user.as_ref().map(|u| u.gid))
    }
}

/// Owner, group and permission bits of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perms {
    /// `st_mode` (only the permission bits are looked at).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// What a check asks of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Execute a file.
    Execute,
    /// Search (enter) a directory.
    Search,
}

/// Whether a process with `uid` and the groups `gids` (primary and supplementary) may do
/// `want` on a path with `perms`, as the kernel decides from the mode bits: the owner's bits
/// if it owns it, else the group's if one of its groups owns it, else the others'. Root
/// (uid 0) may search any directory and execute any file with an execute bit. ACLs and
/// capabilities other than root's are not looked at.
pub fn permits(perms: Perms, uid: u32, gids: &[u32], want: Want) -> bool {
    if uid == 0 {
        return want == Want::Search || perms.mode & 0o111 != 0;
    }
    let shift = if perms.uid == uid {
        6
    } else if gids.contains(&perms.gid) {
        3
    } else {
        0
    };
    (perms.mode >> shift) & 0o1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_bits_as_the_kernel_reads_them() {
        let p = |mode, uid, gid| Perms { mode, uid, gid };
        let cases: &[(Perms, u32, &[u32], Want, bool)] = &[
            // Owner bits only for the owner, even when the group bits would allow it.
            (p(0o700, 1000, 1000), 1000, &[1000], Want::Execute, true),
            (p(0o070, 1000, 1000), 1000, &[1000], Want::Execute, false),
            // Group bits for a member (primary or supplementary).
            (p(0o750, 0, 50), 1000, &[1000, 50], Want::Execute, true),
            (p(0o750, 0, 50), 1000, &[1000], Want::Execute, false),
            (p(0o705, 0, 50), 1000, &[50], Want::Execute, false),
            // Others.
            (p(0o755, 0, 0), 1000, &[1000], Want::Execute, true),
            (p(0o700, 0, 0), 1000, &[1000], Want::Execute, false),
            (p(0o700, 0, 0), 1000, &[1000], Want::Search, false),
            (p(0o711, 0, 0), 1000, &[1000], Want::Search, true),
            (p(0o4755, 0, 0), 1000, &[1000], Want::Execute, true),
            // Root: any execute bit; any directory.
            (p(0o700, 1000, 1000), 0, &[0], Want::Execute, true),
            (p(0o644, 0, 0), 0, &[0], Want::Execute, false),
            (p(0o000, 1000, 1000), 0, &[0], Want::Search, true),
        ];
        for &(perms, uid, gids, want, ok) in cases {
            assert_eq!(
                permits(perms, uid, gids, want),
                ok,
                "{perms:?} uid {uid} groups {gids:?} {want:?}"
            );
        }
    }

    #[test]
    fn umasks() {
        for (text, want) in [
            ("0027", Some(0o027)),
            ("027", Some(0o027)),
            ("22", Some(0o22)),
            ("0", Some(0)),
            ("0777", Some(0o777)),
            ("0999", None),
            ("abc", None),
            ("1777", None),
            ("00027", None),
            ("", None),
            ("-22", None),
        ] {
            assert_eq!(Umask::parse(text).ok().map(|u| u.0), want, "{text:?}");
        }
        assert_eq!(Umask(0o27).to_string(), "0027");
        assert!(Umask::parse("0999")
            .unwrap_err()
            .contains("octal digits (0-7)"));
    }

    #[test]
    fn the_group_is_the_users_primary_one_unless_set() {
        let user = UserId {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
        };
        let mut ctx = ExecContext {
            user: Some(user.clone()),
            ..ExecContext::default()
        };
        assert_eq!(ctx.gid(), Some(1000));
        ctx.group = Some(GroupId {
            name: None,
            gid: 50,
        });
        assert_eq!(ctx.gid(), Some(50));
        assert_eq!(ExecContext::default().gid(), None);
        assert_eq!(user.to_string(), "alice (uid 1000)");
        assert_eq!(
            serde_json::to_value(&ctx).expect("serializes"),
            serde_json::json!({"user": "alice (uid 1000, gid 1000)", "group": "gid 50", "umask": null,
                               "limits": {}})
        );
    }

    proptest::proptest! {
        #[test]
        fn umasks_render_as_they_parse(mask in 0u32..=0o777, text in "[0-9]{0,5}") {
            proptest::prop_assert_eq!(Umask::parse(&Umask(mask).to_string()), Ok(Umask(mask)));
            let _ = Umask::parse(&text);
        }
    }
}
