//! Who may change and who may use the daemon: `daemon.access` validation, and the StrictModes
//! check of the config files and the directories above them.

use scriptd_common::config::{
    check_permissions, read_source, secure_source, validate, Access, AccessRule, ConfigFile,
    ConfigSource, Role, Subject,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const MAIN: &str = "scriptd.yaml";

/// Validates `yaml` as the only file of a config in `dir`; the rendered errors.
fn errors_of(dir: &Path, yaml: &str) -> Result<Access, Vec<String>> {
    let source = ConfigSource {
        main: dir.join(MAIN),
        files: vec![ConfigFile {
            name: MAIN.into(),
            content: yaml.into(),
        }],
    };
    validate(&source)
        .map(|c| c.daemon.access)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

// ---------------------------------------------------------------------------------------
// daemon.access
// ---------------------------------------------------------------------------------------

#[test]
fn access_rules_by_name_or_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let access = errors_of(
        dir.path(),
        "daemon:\n  access:\n    - { user: root, role: operate }\n    - user: 54321\n      role: \
         read\n    - { group: root, role: read }\n    - { group: \"54400\", role: operate }\n",
    )
    .expect("valid");
    let user = |uid, name: Option<&str>, role| AccessRule {
        subject: Subject::User {
            uid,
            name: name.map(Into::into),
        },
        role,
    };
    let group = |gid, name: Option<&str>, role| AccessRule {
        subject: Subject::Group {
            gid,
            name: name.map(Into::into),
        },
        role,
    };
    assert_eq!(
        access,
        Access(vec![
            user(0, Some("root"), Role::Operate),
            user(54321, None, Role::Read),
            group(0, Some("root"), Role::Read),
            group(54400, None, Role::Operate),
        ])
    );
    assert_eq!(
        errors_of(dir.path(), "daemon:\n  access: []\n"),
        Ok(Access::default())
    );
    assert_eq!(
        errors_of(dir.path(), "daemon:\n  access:\n"),
        Ok(Access::default())
    );
}

#[test]
fn access_errors_name_file_line_column_and_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "daemon:
  access:
    - { user: no-such-user-xq, role: read }
    - { group: no-such-group-xq, role: operate }
    - { user: root, rol: read }
    - { user: root, group: root, role: read }
    - { role: read }
    - { user: 54321 }
    - { user: 54321, role: admin }
    - { user: -1, role: read }
    - { user: 4294967296, role: read }
    - { user: [a], role: read }
    - just-a-name
    - { group: 7, role: read }
    - { group: \"7\", role: operate }
";
    let got = errors_of(dir.path(), yaml).expect_err("invalid");
    let want = [
        "scriptd.yaml:3:15: daemon.access[0].user: no user named \"no-such-user-xq\" on this \
         system; give an existing user name or a numeric uid",
        "scriptd.yaml:4:16: daemon.access[1].group: no group named \"no-such-group-xq\" on this \
         system; give an existing group name or a numeric gid",
        "scriptd.yaml:5:21: daemon.access[2].rol: unknown key \"rol\"; did you mean \"role\"?",
        "scriptd.yaml:6:21: daemon.access[3].group: an entry names one user, group or \
         certificate; give the other its own entry",
        "scriptd.yaml:7:7: daemon.access[4]: missing \"user\", \"group\" or \"cert\"",
        "scriptd.yaml:8:7: daemon.access[5]: missing \"role\" (read or operate)",
        "scriptd.yaml:9:28: daemon.access[6].role: invalid role \"admin\"; use read (status, \
         logs, history, events, dry runs) or operate (everything)",
        "scriptd.yaml:10:15: daemon.access[7].user: invalid uid -1",
        "scriptd.yaml:11:15: daemon.access[8].user: invalid uid 4294967296",
        "scriptd.yaml:12:15: daemon.access[9].user: expected a user name or a numeric uid, \
         found a list",
        "scriptd.yaml:13:7: daemon.access[10]: must be a mapping (key: value), found a string",
        "scriptd.yaml:15:16: daemon.access[12].group: gid 7 is already listed at \
         daemon.access[11]; give each user, group or certificate one entry",
    ];
    assert_eq!(got, want, "got:\n{}", got.join("\n"));

    let got = errors_of(dir.path(), "daemon:\n  access: { user: root }\n").expect_err("map");
    assert_eq!(
        got,
        [
            "scriptd.yaml:2:11: daemon.access: expected a list of entries such as { user: alice, \
          role: operate } or { group: ops, role: read }, found a mapping"
        ]
    );
    let got = errors_of(dir.path(), "daemon:\n  acess: []\n").expect_err("typo");
    assert_eq!(
        got,
        ["scriptd.yaml:2:3: daemon.acess: unknown key \"acess\"; did you mean \"access\"?"]
    );
}

// ---------------------------------------------------------------------------------------
// StrictModes
// ---------------------------------------------------------------------------------------

/// A config directory `conf` inside a tempdir (so its mode and owner can be changed without
/// touching the tempdir itself).
struct Conf {
    _tmp: TempDir,
    dir: PathBuf,
}

impl Conf {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).expect("mkdir conf");
        chmod(&dir, 0o755);
        let conf = Self { _tmp: tmp, dir };
        conf.write(
            MAIN,
            "include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: \"true\"\n",
            0o644,
        );
        conf.write("scripts.d/b.yaml", "scripts: {}\n", 0o600);
        conf
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, content: &str, mode: u32) {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        chmod(&path, mode);
    }

    /// The permission errors, rendered; empty when accepted.
    fn errors(&self) -> Vec<String> {
        let source = read_source(&self.path(MAIN)).expect("readable");
        match check_permissions(&source) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn d(&self) -> String {
        self.dir.display().to_string()
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    nix::unistd::chown(
        path,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .expect("chown");
}

const WHY: &str = "and whoever can write the config can run commands as the daemon's user";

#[test]
fn files_writable_by_others_are_refused_and_every_one_is_reported() {
    let c = Conf::new();
    assert_eq!(
        c.errors(),
        Vec::<String>::new(),
        "0644 and 0600 are accepted"
    );

    chmod(&c.path(MAIN), 0o646);
    chmod(&c.path("scripts.d/b.yaml"), 0o602);
    assert_eq!(
        c.errors(),
        [
            format!(
                "scriptd.yaml: refused: the file is writable by others (mode 646), {WHY}; run \
                 `chmod go-w {}/scriptd.yaml`",
                c.d()
            ),
            format!(
                "scripts.d/b.yaml: refused: the file is writable by others (mode 602), {WHY}; \
                 run `chmod go-w {}/scripts.d/b.yaml`",
                c.d()
            ),
        ]
    );
}

#[test]
fn directories_up_to_the_root_are_checked_and_sticky_ones_accepted() {
    let c = Conf::new();
    chmod(&c.dir, 0o757);
    chmod(&c.path("scripts.d"), 0o777);
    let got = c.errors();
    // Reported once each, under the first file that passes through it.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got[0],
        format!(
            "scriptd.yaml: refused: directory {} is writable by others (mode 757), {WHY}; run \
             `chmod go-w {}`",
            c.d(),
            c.d()
        )
    );
    assert!(
        got[1].starts_with(&format!(
            "scripts.d/b.yaml: refused: directory {}/scripts.d is writable by ",
            c.d()
        )),
        "{}",
        got[1]
    );

    // The sticky bit (as on /tmp): others may not replace what they do not own.
    chmod(&c.dir, 0o1777);
    chmod(&c.path("scripts.d"), 0o1777);
    assert_eq!(c.errors(), Vec::<String>::new());
}

#[test]
fn a_file_that_cannot_be_checked_is_refused_not_skipped() {
    let c = Conf::new();
    let mut source = read_source(&c.path(MAIN)).expect("readable");
    source.files.push(ConfigFile {
        name: "scripts.d/gone.yaml".into(),
        content: String::new(),
    });
    let got: Vec<String> = check_permissions(&source)
        .expect_err("missing file")
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [format!(
            "scripts.d/gone.yaml: refused: cannot check who may write {}/scripts.d/gone.yaml: No \
             such file or directory (os error 2)",
            c.d()
        )]
    );
}

#[test]
fn permission_errors_come_with_the_validation_errors() {
    let c = Conf::new();
    c.write(
        MAIN,
        "include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: \"true\"\n    interval: 5\n",
        0o646,
    );
    let source = read_source(&c.path(MAIN)).expect("readable");
    let got: Vec<String> = secure_source(source)
        .expect_err("refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("scriptd.yaml: refused: the file is writable by others"));
    assert!(
        got[1].starts_with("scriptd.yaml:5:15: scripts.a.interval: invalid duration 5"),
        "{}",
        got[1]
    );
    // Accepted files pass through untouched.
    chmod(&c.path(MAIN), 0o644);
    let source = read_source(&c.path(MAIN)).expect("readable");
    assert_eq!(secure_source(source.clone()), Ok(source));
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")] // chown
fn group_write_is_accepted_for_the_owners_private_group_only() {
    // root's primary group is root, named after it, with no other members: root's private
    // group, as alice:alice is alice's under the user-private-group convention (umask 002:
    // files 664, directories 775).
    let c = Conf::new();
    chmod(&c.path(MAIN), 0o664);
    chmod(&c.dir, 0o775);
    assert_eq!(
        c.errors(),
        Vec::<String>::new(),
        "664/775 in the private group"
    );

    // The same modes with a shared group (54399 has no entry: nobody's private group).
    chown(&c.path(MAIN), None, Some(54399));
    chown(&c.dir, None, Some(54399));
    assert_eq!(
        c.errors(),
        [
            format!(
                "scriptd.yaml: refused: the file is writable by group gid 54399, which is not \
                 the owner's private group, (mode 664), {WHY}; run `chmod go-w {}/scriptd.yaml`",
                c.d()
            ),
            format!(
                "scriptd.yaml: refused: directory {} is writable by group gid 54399, which is \
                 not the owner's private group, (mode 775), {WHY}; run `chmod go-w {}`",
                c.d(),
                c.d()
            ),
        ]
    );

    // World-writable is refused whatever the group.
    chown(&c.path(MAIN), None, Some(0));
    chown(&c.dir, None, Some(0));
    chmod(&c.path(MAIN), 0o666);
    assert_eq!(
        c.errors(),
        [format!(
            "scriptd.yaml: refused: the file is writable by others (mode 666), {WHY}; run `chmod \
             go-w {}/scriptd.yaml`",
            c.d()
        )]
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")] // chown
fn files_and_directories_owned_by_another_user_are_refused() {
    let c = Conf::new();
    chown(&c.path("scripts.d/b.yaml"), Some(65534), None);
    chown(&c.path("scripts.d"), Some(54321), None);
    let got = c.errors();
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(65534))
        .ok()
        .flatten()
        .map_or("uid 65534".to_owned(), |u| {
            format!("{} (uid 65534)", u.name)
        });
    assert_eq!(
        got,
        [
            format!(
                "scripts.d/b.yaml: refused: the file is owned by {owner}, but only root \
                 (scriptd's user) may own it, {WHY}; run `chown 0 {}/scripts.d/b.yaml`",
                c.d()
            ),
            format!(
                "scripts.d/b.yaml: refused: directory {}/scripts.d is owned by uid 54321, but \
                 only root (scriptd's user) may own it, {WHY}; run `chown 0 {}/scripts.d`",
                c.d(),
                c.d()
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// daemon.access for certificates, daemon.listen
// ---------------------------------------------------------------------------------------

#[test]
fn certificate_rules_and_their_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = |name: &str, role| AccessRule {
        subject: Subject::Cert { name: name.into() },
        role,
    };
    assert_eq!(
        errors_of(
            dir.path(),
            "daemon:\n  access:\n    - { cert: deploy-bot, role: operate }\n    - { cert: \
             spiffe://example/ci, role: read }\n"
        ),
        Ok(Access(vec![
            cert("deploy-bot", Role::Operate),
            cert("spiffe://example/ci", Role::Read),
        ]))
    );
    let got = errors_of(
        dir.path(),
        "daemon:\n  access:\n    - { cert: a, role: read }\n    - { cert: a, role: operate }\n    \
         - { cert: '', role: read }\n    - { cert: b, user: root, role: read }\n",
    )
    .expect_err("invalid");
    assert_eq!(
        got,
        [
            "scriptd.yaml:4:15: daemon.access[1].cert: certificate a is already listed at \
             daemon.access[0]; give each user, group or certificate one entry",
            "scriptd.yaml:5:15: daemon.access[2].cert: must not be empty; give the \
             certificate's CN or a DNS or URI SAN",
            "scriptd.yaml:6:18: daemon.access[3].user: an entry names one user, group or \
             certificate; give the other its own entry",
        ],
        "got:\n{}",
        got.join("\n")
    );
}

#[test]
fn listen_needs_an_address_and_all_three_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = |body: &str| {
        let source = ConfigSource {
            main: dir.path().join(MAIN),
            files: vec![ConfigFile {
                name: MAIN.into(),
                content: format!("daemon:\n  listen:\n{body}"),
            }],
        };
        validate(&source)
            .map(|c| c.daemon.listen)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    let ok = listen(
        "    tcp: 127.0.0.1:7443\n    tls: { cert: s.pem, key: s.key, client_ca: /ca.pem }\n",
    )
    .expect("valid")
    .expect("listen");
    assert_eq!(ok.tcp, "127.0.0.1:7443".parse().expect("addr"));
    assert_eq!(
        ok.tls.cert,
        dir.path().join("s.pem"),
        "relative to the config"
    );
    assert_eq!(ok.tls.client_ca, PathBuf::from("/ca.pem"));

    for (body, says) in [
        ("    tcp: 127.0.0.1:7443\n", "TLS is mandatory on TCP"),
        (
            "    tls: { cert: a, key: b, client_ca: c }\n",
            "missing \"tcp\"",
        ),
        (
            "    tcp: localhost\n    tls: { cert: a, key: b, client_ca: c }\n",
            "invalid address \"localhost\"",
        ),
        (
            "    tcp: 127.0.0.1:1\n    tls: { cert: a, key: b }\n",
            "missing \"client_ca\" (the CA that signs client certificates",
        ),
        (
            "    tcp: 127.0.0.1:1\n    tls: { cert: a, key: b, client_ca: c, ca: d }\n",
            "unknown key \"ca\"",
        ),
    ] {
        let errors = listen(body).expect_err(body);
        assert!(
            errors.iter().any(|e| e.contains(says)),
            "{body}: {errors:?}"
        );
    }
}
