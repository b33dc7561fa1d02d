//! `user`, `group`, `umask` and `limits`: their values, the "needs a root daemon" rule, the
//! hard-limit ceilings, the program and working directory checked as the script's user
//! would reach them, inheritance from `defaults`, and the impact of a change. The machine is
//! a fake [`Host`]: users, groups, owners and modes, the daemon's ids and limits as each
//! case says.

use scriptd_common::config::resource_limits::{Limit, LimitValue};
use scriptd_common::config::{
    validate_with, Account, Config, ConfigFile, ConfigSource, Host, Perms, Stat,
};
use scriptd_common::diff::{diff_script, Impact};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// alice (uid 1000, group 1000, also in `ops` 50), root; directories `/srv`, `/srv/app`,
/// `/root`; programs: `/bin/true` (0755 root), `/srv/root-only` (0700 root),
/// `/srv/ops-only` (0750 root:ops), `/root/tool` (0755, in the 0700 `/root`).
struct Machine {
    daemon: (u32, u32),
    perms: HashMap<PathBuf, (bool, Perms)>,
}

impl Machine {
    fn new() -> Self {
        let mut perms = HashMap::new();
        let p = |mode, uid, gid| Perms { mode, uid, gid };
        for (path, dir, perm) in [
            ("/", true, p(0o755, 0, 0)),
            ("/srv", true, p(0o755, 0, 0)),
            ("/srv/app", true, p(0o750, 0, 0)),
            ("/root", true, p(0o700, 0, 0)),
            ("/bin", true, p(0o755, 0, 0)),
            ("/bin/true", false, p(0o755, 0, 0)),
            ("/bin/sh", false, p(0o755, 0, 0)),
            ("/srv/root-only", false, p(0o700, 0, 0)),
            ("/srv/ops-only", false, p(0o750, 0, 50)),
            ("/root/tool", false, p(0o755, 0, 0)),
        ] {
            perms.insert(PathBuf::from(path), (dir, perm));
        }
        Self {
            daemon: (0, 0),
            perms,
        }
    }

    fn not_root() -> Self {
        Self {
            daemon: (1000, 1000),
            ..Self::new()
        }
    }
}

impl Host for Machine {
    fn stat(&mut self, path: &Path) -> Stat {
        match self.perms.get(path) {
            Some((true, _)) => Stat::Dir,
            Some((false, p)) => Stat::File(p.mode),
            None => Stat::Missing,
        }
    }

    fn lookup(&mut self, name: &str, group: bool) -> Result<u32, String> {
        match (name, group) {
            ("ops", true) => Ok(50),
            ("alice", true) => Ok(1000),
            _ => Err(format!(
                "no such {}: {name}",
                if group { "group" } else { "user" }
            )),
        }
    }

    fn search_path(&self) -> Option<String> {
        Some("/bin".into())
    }

    fn perms(&mut self, path: &Path) -> Option<Perms> {
        self.perms.get(path).map(|(_, p)| *p)
    }

    fn user(&mut self, spec: &str) -> Result<Account, String> {
        let (name, uid) = match spec {
            "alice" | "1000" => ("alice", 1000),
            "root" | "0" => ("root", 0),
            _ => return Err(format!("no user named {spec:?} on this system")),
        };
        Ok(Account {
            name: name.into(),
            uid,
            gid: uid,
        })
    }

    fn groups_of(&mut self, name: &str, gid: u32) -> Vec<u32> {
        match name {
            "alice" => vec![gid, 50],
            _ => vec![gid],
        }
    }

    fn daemon_ids(&self) -> (u32, u32) {
        self.daemon
    }

    fn hard_limit(&mut self, limit: Limit) -> Option<u64> {
        (limit == Limit::Nofile).then_some(4096)
    }

    fn nr_open(&mut self) -> Option<u64> {
        Some(1 << 20)
    }
}

fn check(host: &mut Machine, yaml: &str) -> Result<Config, Vec<String>> {
    let source = ConfigSource {
        main: PathBuf::from("/srv/scriptd.yaml"),
        files: vec![ConfigFile {
            name: "scriptd.yaml".into(),
            content: yaml.into(),
        }],
    };
    validate_with(&source, host).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// One script `s` running `/bin/true` with `keys` (YAML lines under it).
fn script(keys: &str) -> String {
    format!("scripts:\n  s:\n    command: [\"/bin/true\"]\n{keys}")
}

/// `(case, host, yaml, the one error expected as a prefix, or None for valid)`.
type Case = (&'static str, fn() -> Machine, String, Option<&'static str>);

#[test]
fn values_and_checks() {
    let cases: Vec<Case> = vec![
        ("a user by name", Machine::new, script("    user: alice\n"), None),
        ("a user by uid", Machine::new, script("    user: 1000\n"), None),
        (
            "an unknown user",
            Machine::new,
            script("    user: mallory\n"),
            Some("scriptd.yaml:4:11: scripts.s.user: no user named \"mallory\" on this system"),
        ),
        (
            "a user that is a list",
            Machine::new,
            script("    user: [alice]\n"),
            Some("scriptd.yaml:4:11: scripts.s.user: expected a user name or a numeric uid, found a list"),
        ),
        ("a group by name", Machine::new, script("    group: ops\n"), None),
        ("a group by gid", Machine::new, script("    group: 4242\n"), None),
        (
            "an unknown group",
            Machine::new,
            script("    group: nogroup-here\n"),
            Some("scriptd.yaml:4:12: scripts.s.group: no such group: nogroup-here"),
        ),
        ("a umask", Machine::new, script("    umask: \"0027\"\n"), None),
        (
            "a umask with a digit past 7",
            Machine::new,
            script("    umask: \"0999\"\n"),
            Some("scriptd.yaml:4:12: scripts.s.umask: invalid umask \"0999\": write up to 4 octal digits"),
        ),
        (
            "a umask that is not a number",
            Machine::new,
            script("    umask: abc\n"),
            Some("scriptd.yaml:4:12: scripts.s.umask: invalid umask \"abc\""),
        ),
        ("an unquoted umask", Machine::new, script("    umask: 0027\n"), None),
        (
            "a umask that YAML reads as a number",
            Machine::new,
            script("    umask: 22\n"),
            Some("scriptd.yaml:4:12: scripts.s.umask: umask 22 is a YAML number, which cannot say whether it was octal"),
        ),
        (
            "a umask in YAML's octal notation",
            Machine::new,
            script("    umask: 0o22\n"),
            Some("scriptd.yaml:4:12: scripts.s.umask: umask 18 is a YAML number"),
        ),
        (
            "a umask past 0777",
            Machine::new,
            script("    umask: \"1777\"\n"),
            Some("scriptd.yaml:4:12: scripts.s.umask: invalid umask \"1777\""),
        ),
        (
            "limits",
            Machine::new,
            script("    limits: { nofile: 4096, nproc: 512, core: 0, as: 1GiB, cpu: \"1h\" }\n"),
            None,
        ),
        (
            "an unknown limit",
            Machine::new,
            script("    limits: { nofiles: 10 }\n"),
            Some("scriptd.yaml:4:15: scripts.s.limits.nofiles: unknown key \"nofiles\"; did you mean \"nofile\"?"),
        ),
        (
            "a negative limit",
            Machine::new,
            script("    limits:\n      nproc: -1\n"),
            Some("scriptd.yaml:5:14: scripts.s.limits.nproc: invalid limit \"-1\": must not be negative"),
        ),
        (
            "a bad size",
            Machine::new,
            script("    limits:\n      as: 12 parsecs\n"),
            Some("scriptd.yaml:5:11: scripts.s.limits.as: invalid limit \"12 parsecs\"; use a number of bytes or a size"),
        ),
        (
            "a soft limit above the hard one",
            Machine::new,
            script("    limits:\n      nofile: \"4096:1024\"\n"),
            Some("scriptd.yaml:5:15: scripts.s.limits.nofile: soft limit 4096 is above the hard limit 1024"),
        ),
        (
            "limits that are not a map",
            Machine::new,
            script("    limits: 4096\n"),
            Some("scriptd.yaml:4:13: scripts.s.limits: must be a mapping"),
        ),
        (
            "nofile past fs.nr_open, even as root",
            Machine::new,
            script("    limits: { nofile: infinity }\n"),
            Some("scriptd.yaml:4:23: scripts.s.limits.nofile: hard limit infinity is above the kernel's ceiling fs.nr_open (1048576)"),
        ),
        // A daemon that is not root.
        ("its own user", Machine::not_root, script("    user: alice\n"), None),
        ("its own group", Machine::not_root, script("    group: alice\n"), None),
        (
            "another user",
            Machine::not_root,
            script("    user: root\n"),
            Some("scriptd.yaml:4:11: scripts.s.user: running a script as user root (uid 0) needs a root daemon (scriptd runs as uid 1000)"),
        ),
        (
            "another group",
            Machine::not_root,
            script("    group: ops\n"),
            Some("scriptd.yaml:4:12: scripts.s.group: running a script with group ops (gid 50) needs a root daemon"),
        ),
        (
            "a hard limit above its own",
            Machine::not_root,
            script("    limits: { nofile: 8192 }\n"),
            Some("scriptd.yaml:4:23: scripts.s.limits.nofile: hard limit 8192 is above the daemon's own (4096)"),
        ),
        ("a soft limit within its own", Machine::not_root, script("    limits: { nofile: \"1024:4096\" }\n"), None),
        (
            "another user in defaults",
            Machine::not_root,
            format!("defaults:\n  user: root\n{}", script("")),
            Some("scriptd.yaml:2:9: defaults.user: running a script as user root (uid 0) needs a root daemon"),
        ),
        // The program and the working directory, as the user would reach them.
        (
            "a program only root may execute",
            Machine::new,
            "scripts:\n  s:\n    command: [\"/srv/root-only\"]\n    user: alice\n".into(),
            Some("scriptd.yaml:3:15: scripts.s.command[0]: program /srv/root-only cannot be executed by user alice (uid 1000), whom the script runs as: file /srv/root-only (mode 0700, owner uid 0, group gid 0) cannot be executed by them"),
        ),
        (
            "the same program as root",
            Machine::new,
            "scripts:\n  s:\n    command: [\"/srv/root-only\"]\n".into(),
            None,
        ),
        (
            "a program of a supplementary group",
            Machine::new,
            "scripts:\n  s:\n    command: [\"/srv/ops-only\"]\n    user: alice\n".into(),
            None,
        ),
        (
            "a program in a directory the user cannot enter",
            Machine::new,
            "scripts:\n  s:\n    command: [\"/root/tool\"]\n    user: 1000\n".into(),
            Some("scriptd.yaml:3:15: scripts.s.command[0]: program /root/tool cannot be executed by user alice (uid 1000), whom the script runs as: directory /root (mode 0700, owner uid 0, group gid 0) cannot be searched by them"),
        ),
        (
            "a working directory the user cannot enter",
            Machine::new,
            script("    user: alice\n    working_dir: /srv/app\n"),
            Some("scriptd.yaml:5:18: scripts.s.working_dir: working_dir /srv/app is not accessible to user alice (uid 1000), whom the script runs as: directory /srv/app (mode 0750, owner uid 0, group gid 0) cannot be searched by them"),
        ),
        (
            "the working directory for its group",
            Machine::new,
            script("    user: alice\n    group: 0\n    working_dir: /srv/app\n"),
            None,
        ),
    ];
    for (case, host, yaml, want) in cases {
        let got = check(&mut host(), &yaml);
        match (want, &got) {
            (None, Ok(_)) => {}
            (Some(want), Err(errors)) => {
                assert_eq!(errors.len(), 1, "{case}: {errors:#?}");
                assert!(
                    errors[0].starts_with(want),
                    "{case}:\n  got:    {}\n  wanted: {want}...",
                    errors[0]
                );
            }
            _ => panic!("{case}: {got:?}\n{yaml}"),
        }
    }
}

#[test]
fn defaults_are_inherited_and_limits_merged() {
    let yaml = "defaults:\n  user: alice\n  umask: \"0077\"\n  limits: { nofile: 1024, core: 0 }\n\
                scripts:\n  a:\n    command: [\"/bin/true\"]\n    limits: { nofile: \"512:1024\" }\n  \
                b:\n    command: [\"/bin/true\"]\n    user: root\n    group: ops\n";
    let cfg = check(&mut Machine::new(), yaml).unwrap_or_else(|e| panic!("{e:#?}"));
    let (a, b) = (&cfg.scripts["a"].exec, &cfg.scripts["b"].exec);
    assert_eq!(a.user.as_ref().map(|u| u.uid), Some(1000));
    assert_eq!(a.gid(), Some(1000), "the user's primary group");
    assert_eq!(a.umask.map(|u| u.0), Some(0o077));
    assert_eq!(
        a.limits.0.get(&Limit::Nofile),
        Some(&LimitValue {
            soft: 512,
            hard: 1024
        }),
        "the script's own value wins"
    );
    assert_eq!(
        a.limits.0.get(&Limit::Core),
        Some(&LimitValue { soft: 0, hard: 0 }),
        "the others come from defaults"
    );
    assert_eq!(b.user.as_ref().map(|u| u.uid), Some(0));
    assert_eq!(b.gid(), Some(50));
}

#[test]
fn a_change_of_any_of_them_restarts_the_script() {
    let base = check(
        &mut Machine::new(),
        &script("    user: alice\n    limits: { nofile: 64 }\n"),
    )
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let changed = check(
        &mut Machine::new(),
        &script("    user: root\n    group: ops\n    umask: \"0022\"\n    limits: { nofile: 128, core: 0 }\n"),
    )
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let rows: Vec<(String, Option<String>, Option<String>, Impact)> =
        diff_script("s", &base.scripts["s"], &changed.scripts["s"])
            .into_iter()
            .map(|c| (c.field, c.old, c.new, c.impact))
            .collect();
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        [
            ("group".into(), None, text("ops (gid 50)"), Impact::Restart),
            ("limits.core".into(), None, text("0"), Impact::Restart),
            (
                "limits.nofile".into(),
                text("64"),
                text("128"),
                Impact::Restart
            ),
            ("umask".into(), None, text("0022"), Impact::Restart),
            (
                "user".into(),
                text("alice (uid 1000, gid 1000)"),
                text("root (uid 0, gid 0)"),
                Impact::Restart
            ),
        ]
    );
}
