//! Transport and access end to end: `daemon.access` roles for other uids and groups (ctl and
//! the health and reflection services run as those uids), the socket's directory and mode,
//! what is found at the socket path, one daemon per socket and per state directory, and the
//! StrictModes check reported with the validation errors.
//!
//! Running as another uid needs root: those tests are ignored ("needs root") unless built as
//! root (`cfg(as_root)`, set by the build script).

use scriptd_e2e::{
    copy_executable, ctl_bin, exits, scriptd_bin, scriptd_exits, wait_for, Daemon, Env, Follower,
    Run, DAEMON_SECTION, DEADLINE,
};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

// ------------------------------------------------------------------ helpers

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

/// A uid with its primary gid and supplementary groups.
#[derive(Clone)]
pub(crate) struct Who {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

pub(crate) fn user(uid: u32) -> Who {
    Who {
        uid,
        gid: uid,
        groups: Vec::new(),
    }
}

/// Copies of `ctl` and `grpc-probe` in a directory every uid can reach and execute (the
/// target directory may sit under a home directory others cannot enter).
pub(crate) struct Clients {
    _dir: tempfile::TempDir,
    ctl: PathBuf,
    probe: PathBuf,
}

impl Clients {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("scriptd-e2e-bin")
            .tempdir()
            .expect("tempdir for clients");
        chmod(dir.path(), 0o755);
        let copy = |from: PathBuf, name: &str| {
            let to = dir.path().join(name);
            copy_executable(&from, &to);
            to
        };
        let ctl = copy(ctl_bin(), "ctl");
        let probe = copy(
            PathBuf::from(env!("CARGO_BIN_EXE_grpc-probe")),
            "grpc-probe",
        );
        Self {
            _dir: dir,
            ctl,
            probe,
        }
    }

    /// `ctl --socket S ARGS` as `who`, not started.
    pub(crate) fn ctl_command(&self, d: &Daemon, who: &Who, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ctl);
        cmd.arg("--socket").arg(&d.socket).args(args);
        as_user(&mut cmd, who);
        cmd
    }

    pub(crate) fn ctl(&self, d: &Daemon, who: &Who, args: &[&str]) -> Run {
        self.ctl_command(d, who, args)
            .output()
            .expect("run ctl")
            .into()
    }

    /// `grpc-probe S health|reflection` as `who`.
    fn probe(&self, d: &Daemon, who: &Who, what: &str) -> Run {
        let mut cmd = Command::new(&self.probe);
        cmd.arg(&d.socket).arg(what);
        as_user(&mut cmd, who);
        cmd.output().expect("run grpc-probe").into()
    }
}

/// Makes `cmd` run as `who`, supplementary groups included (std's `uid()` would clear them).
fn as_user(cmd: &mut Command, who: &Who) {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let Who { uid, gid, groups } = who.clone();
    let groups: Vec<Gid> = groups.into_iter().map(Gid::from_raw).collect();
    cmd.current_dir("/")
        .env_remove("SCRIPTD_SOCKET")
        .env_remove("SCRIPTD_CONFIG");
    // SAFETY: between fork and exec only async-signal-safe calls are made (setgroups,
    // setgid, setuid); the vector was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            setgroups(&groups)?;
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
}

/// A config whose `daemon:` section grants `access` (list items, one per line) and holds
/// the scripts of `body`, in a temp dir other uids may pass through (0711).
pub(crate) fn access_env(access: &[&str], body: &str) -> Env {
    let env = Env::new(body);
    let items: String = access.iter().map(|a| format!("    - {a}\n")).collect();
    env.write(
        "scriptd.yaml",
        &format!("{DAEMON_SECTION}  access:\n{items}{body}"),
    );
    chmod(env.dir.path(), 0o711);
    env
}

const SVC: &str = "scripts:\n  svc:\n    command: \"sleep 1000.9111\"\n";

fn pid_of(d: &Daemon) -> u32 {
    d.wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid")
}

/// Stops a daemon the test spawned itself (SIGTERM) and checks it exits 0.
fn stop(daemon: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the daemon");
    let status = wait_for("the daemon to stop", DEADLINE, || {
        daemon.try_wait().expect("wait for the daemon")
    });
    assert!(status.success(), "the daemon exits 0 on SIGTERM: {status}");
}

fn assert_denied(r: &Run, needle: &str) {
    assert_eq!(r.code, 1, "denied: exit 1: {r:?}");
    assert!(
        r.stderr.contains("permission denied: ") && r.stderr.contains(needle),
        "stderr should say {needle:?}: {r:?}"
    );
}

// ------------------------------------------------------------------ roles

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn without_access_rules_other_uids_cannot_even_connect() {
    let env = Env::new(SVC);
    chmod(env.dir.path(), 0o711);
    let d = env.start();
    let clients = Clients::new();
    assert_eq!(mode(env.socket().parent().expect("socket dir")), 0o700);
    assert_eq!(mode(&env.socket()), 0o600);

    let r = clients.ctl(&d, &user(65534), &["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("permission denied on ")
            && r.stderr.contains("daemon.access")
            && r.stderr.contains("{ user: 65534, role: read }")
            && !r.stderr.contains("is the daemon running"),
        "the kernel refuses the connection, and ctl says how access is granted: {r:?}"
    );
    let r = clients.probe(&d, &user(65534), "health");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.starts_with("unreachable"), "{r:?}");
    // Root and the daemon's own user (root here) get through.
    assert_eq!(clients.ctl(&d, &user(0), &["status"]).code, 0);
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_uid_without_a_role_is_refused_by_every_service() {
    let env = access_env(&["{ user: 54321, role: read }"], SVC);
    let d = env.start();
    let clients = Clients::new();
    // With access rules anyone can connect; the daemon decides per request.
    assert_eq!(mode(env.socket().parent().expect("socket dir")), 0o711);
    assert_eq!(mode(&env.socket()), 0o666);

    let stranger = user(54320);
    let r = clients.ctl(&d, &stranger, &["status"]);
    assert_denied(
        &r,
        "uid 54320 has no role on this scriptd (it runs as uid 0); Status needs the read role: \
         grant it in daemon.access, e.g. `- { user: 54320, role: read }`",
    );
    assert_denied(
        &clients.ctl(&d, &stranger, &["logs", "svc"]),
        "Logs needs the read role",
    );
    assert_denied(
        &clients.ctl(&d, &stranger, &["events"]),
        "Events needs the read role",
    );
    assert_denied(
        &clients.ctl(&d, &stranger, &["stop", "svc"]),
        "Control needs the operate role",
    );
    for what in ["health", "reflection"] {
        let r = clients.probe(&d, &stranger, what);
        assert_eq!(r.code, 1, "{what}: {r:?}");
        assert!(
            r.stdout
                .starts_with("PermissionDenied uid 54320 has no role"),
            "{what}: {r:?}"
        );
    }
    // The reader gets health and reflection.
    let reader = user(54321);
    let r = clients.probe(&d, &reader, "health");
    assert_eq!((r.code, r.stdout.trim()), (0, "ok Serving"), "{r:?}");
    let r = clients.probe(&d, &reader, "reflection");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("scriptd.v1.Scriptd"), "{r:?}");

    assert!(
        d.log_text().contains("refused: uid 54320 has no role"),
        "refusals are logged: {}",
        d.log_text()
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn read_role_sees_everything_and_changes_nothing() {
    let env = access_env(&["{ user: 54321, role: read }"], SVC);
    let d = env.start();
    let clients = Clients::new();
    let pid = pid_of(&d);
    // A second version, so that there is something to diff and roll back to.
    env.write(
        "scriptd.yaml",
        &format!(
            "{DAEMON_SECTION}  access:\n    - {{ user: 54321, role: read }}\n{SVC}  other:\n    \
             command: \"sleep 1000.9102\"\n"
        ),
    );
    assert_eq!(d.ctl(&["reload"]).code, 0);

    let reader = user(54321);
    for args in [
        &["status"][..],
        &["status", "--output", "json"],
        &["logs", "svc"],
        &["history"],
        &["history", "show", "1"],
        &["diff", "1"],
        &["reload", "--dry-run"],
        &["rollback", "--dry-run"],
    ] {
        let r = clients.ctl(&d, &reader, args);
        assert_eq!(r.code, 0, "`ctl {}` as a reader: {r:?}", args.join(" "));
    }

    // Events: the reader follows them.
    let follower =
        Follower::spawn(&mut clients.ctl_command(&d, &reader, &["events", "--output", "json"]));
    let line = wait_for("the reader to receive an event", DEADLINE, || {
        assert_eq!(d.ctl(&["reload"]).code, 0);
        follower.next_line(Duration::from_millis(300)).ok()
    });
    assert!(line.contains("\"schema\":1"), "{line}");
    drop(follower);

    for (args, call) in [
        (&["stop", "svc"][..], "Control"),
        (&["restart", "svc"], "Control"),
        (&["run", "svc"], "Control"),
        (&["reload"], "Reload"),
        (&["rollback"], "Rollback"),
    ] {
        let r = clients.ctl(&d, &reader, args);
        assert_denied(
            &r,
            &format!("uid 54321 has the read role; {call} needs the operate role in daemon.access"),
        );
    }
    // Nothing was touched.
    let st = d.status();
    assert_eq!(st.running_version, 2);
    let svc = st
        .scripts
        .iter()
        .find(|s| s.name == "svc")
        .expect("svc in status");
    assert_eq!((svc.pid, svc.run_count), (Some(pid), 1));
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn operate_role_controls_and_is_recorded_in_the_history() {
    let env = access_env(&["{ user: 54321, role: operate }"], SVC);
    let d = env.start();
    let clients = Clients::new();
    let first = pid_of(&d);
    let operator = user(54321);

    let r = clients.ctl(&d, &operator, &["stop", "svc"]);
    assert_eq!(r.code, 0, "{r:?}");
    d.wait_script("svc", "stopped", |s| s.state == "stopped");
    let r = clients.ctl(&d, &operator, &["start", "svc"]);
    assert_eq!(r.code, 0, "{r:?}");
    let second = pid_of(&d);
    assert_ne!(first, second);

    env.write(
        "scriptd.yaml",
        &format!(
            "{DAEMON_SECTION}  watch: false\n  access:\n    - {{ user: 54321, role: operate \
             }}\n{SVC}"
        ),
    );
    // `watch` is read at start only: the reload is refused, and recorded as the operator's.
    let r = clients.ctl(&d, &operator, &["reload"]);
    assert_eq!(r.code, 3, "{r:?}");
    let r = clients.ctl(&d, &operator, &["history", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let h: serde_json::Value = serde_json::from_str(&r.stdout).expect("history JSON");
    let uids: Vec<&serde_json::Value> = h["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["uid"])
        .collect();
    assert!(
        uids.contains(&&serde_json::json!(54321)),
        "the operator's attempt is recorded with its uid: {h}"
    );
    assert!(
        d.log_text().contains("operate request") && d.log_text().contains("uid=54321"),
        "operate requests are logged with the uid: {}",
        d.log_text()
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn group_roles_count_primary_and_supplementary_groups() {
    let env = access_env(
        &[
            "{ group: 54400, role: operate }",
            "{ group: 54401, role: read }",
        ],
        SVC,
    );
    let d = env.start();
    let clients = Clients::new();
    pid_of(&d);

    // Primary gid 54400: operate.
    let primary = Who {
        uid: 54322,
        gid: 54400,
        groups: Vec::new(),
    };
    let r = clients.ctl(&d, &primary, &["stop", "svc"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Supplementary group 54401 (read from /proc/PID/status of the connecting ctl): read.
    let member = Who {
        uid: 54323,
        gid: 54323,
        groups: vec![54402, 54401],
    };
    assert_eq!(clients.ctl(&d, &member, &["status"]).code, 0);
    assert_denied(
        &clients.ctl(&d, &member, &["start", "svc"]),
        "uid 54323 has the read role; Control needs the operate role",
    );
    // Supplementary operate beats primary read.
    let both = Who {
        uid: 54324,
        gid: 54401,
        groups: vec![54400],
    };
    assert_eq!(clients.ctl(&d, &both, &["start", "svc"]).code, 0);

    // In neither group: nothing.
    let outsider = Who {
        uid: 54325,
        gid: 54325,
        groups: vec![54402],
    };
    assert_denied(
        &clients.ctl(&d, &outsider, &["status"]),
        "uid 54325 has no role",
    );
}

// ------------------------------------------------------------------ the socket path

/// A config with its own `daemon.socket` (relative to the config directory).
fn socket_env(socket: &str) -> Env {
    let env = Env::new("");
    env.write(
        "scriptd.yaml",
        &format!("daemon:\n  socket: {socket}\n  state_dir: state\n  log_dir: logs\n"),
    );
    env
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let env = Env::new(SVC);
    fs::create_dir(env.path("run")).expect("mkdir run");
    chmod(&env.path("run"), 0o700);
    fs::write(env.socket(), "precious\n").expect("write file");
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{} exists and is a regular file; scriptd replaces only a stale socket",
            env.socket().display()
        )),
        "{r:?}"
    );
    assert_eq!(
        fs::read_to_string(env.socket()).expect("still there"),
        "precious\n"
    );
}

#[test]
fn an_existing_socket_directory_is_tightened() {
    let env = Env::new(SVC);
    fs::create_dir(env.path("run")).expect("mkdir run");
    chmod(&env.path("run"), 0o755);
    let d = env.start();
    assert_eq!(mode(&env.path("run")), 0o700);
    assert!(
        d.log_text()
            .contains("socket directory mode 755 changed to 700"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_socket_directory_holding_other_files_keeps_its_mode_and_is_refused() {
    // Like `socket: /run/scriptd.sock`: scriptd must not chmod /run.
    let env = socket_env("scriptd.sock");
    chmod(env.dir.path(), 0o755);
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "the socket's directory {} has mode 755 and holds other files (such as {}/",
            env.dir.path().display(),
            env.dir.path().display()
        )),
        "{r:?}"
    );
    assert_eq!(mode(env.dir.path()), 0o755, "left as it was");

    // At the mode scriptd wants, such a directory is fine.
    chmod(env.dir.path(), 0o700);
    let mut daemon = Command::new(scriptd_bin())
        .arg("--config")
        .arg(env.config())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn scriptd");
    let socket = env.path("scriptd.sock");
    wait_for("the daemon to answer on scriptd.sock", DEADLINE, || {
        let r = Command::new(ctl_bin())
            .arg("--socket")
            .arg(&socket)
            .arg("status")
            .output()
            .expect("ctl status");
        r.status.success().then_some(())
    });
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(env.dir.path()), 0o700);
    stop(&mut daemon);
}

#[test]
fn a_shared_socket_directory_is_refused() {
    let env = socket_env("shared/scriptd.sock");
    fs::create_dir(env.path("shared")).expect("mkdir shared");
    chmod(&env.path("shared"), 0o1777);
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "the socket's directory {} is shared (mode 1777)",
            env.path("shared").display()
        )),
        "{r:?}"
    );
    assert_eq!(mode(&env.path("shared")), 0o1777, "left as it was");
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_socket_directory_owned_by_another_user_is_refused() {
    let env = socket_env("theirs/scriptd.sock");
    let dir = env.path("theirs");
    fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o700);
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "the socket's directory {} is owned by uid 65534, not by scriptd's user (uid 0)",
            dir.display()
        )),
        "{r:?}"
    );
}

// ------------------------------------------------------------------ one daemon

#[test]
fn two_daemons_started_at_once_exactly_one_wins() {
    let env = Env::new(SVC);
    for round in 0..5 {
        let spawn = || {
            Command::new(scriptd_bin())
                .arg("--config")
                .arg(env.config())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn scriptd")
        };
        let (mut a, mut b) = (spawn(), spawn());
        // Exactly one exits (the loser); the winner keeps serving.
        let a_lost = wait_for("one of the two daemons to give up", DEADLINE, || {
            match (a.try_wait().expect("wait a"), b.try_wait().expect("wait b")) {
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (Some(sa), Some(sb)) => panic!("round {round}: both exited: {sa} {sb}"),
                (None, None) => None,
            }
        });
        let (lost, mut won) = if a_lost { (a, b) } else { (b, a) };
        let r = exits(lost, "the losing daemon");
        assert_eq!(r.code, 1, "round {round}: {r:?}");
        assert!(
            r.stderr.contains("another scriptd") && r.stderr.contains("is already listening on"),
            "round {round}: {r:?}"
        );
        if r.stderr.contains("(pid ") {
            assert!(
                r.stderr.contains(&format!("(pid {})", won.id())),
                "round {round}: names the winner {}: {r:?}",
                won.id()
            );
        }
        let st = wait_for("the winner to answer", DEADLINE, || {
            let r = Command::new(ctl_bin())
                .arg("--socket")
                .arg(env.socket())
                .args(["status", "--output", "json"])
                .output()
                .expect("ctl status");
            r.status
                .success()
                .then(|| serde_json::from_slice::<serde_json::Value>(&r.stdout).expect("JSON"))
        });
        assert_eq!(
            st["daemon"]["pid"],
            serde_json::json!(won.id()),
            "round {round}"
        );
        stop(&mut won);
    }
}

#[test]
fn daemons_sharing_a_state_directory_are_refused() {
    let env = Env::new(SVC);
    let d = env.start();
    env.write(
        "other.yaml",
        "daemon:\n  socket: run2/scriptd.sock\n  state_dir: state\n  log_dir: logs2\n",
    );
    let r = scriptd_exits(&env.path("other.yaml"));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "another scriptd (pid {}) already uses the state directory {}",
            d.pid(),
            env.path("state").display()
        )),
        "{r:?}"
    );
    // The first daemon is untouched.
    assert_eq!(d.status().daemon.pid, d.pid());
}

// ------------------------------------------------------------------ StrictModes

#[test]
fn permission_errors_are_reported_with_the_validation_errors() {
    let env = Env::new("scripts:\n  a:\n    command: \"true\"\n    intervall: 5s\n");
    chmod(&env.config(), 0o666);
    let r = env.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("scriptd.yaml: refused: the file is writable by others (mode 666)")
            || r.stderr
                .contains("scriptd.yaml: refused: the file is writable by group"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("scripts.a.intervall: unknown key \"intervall\"; did you mean \"interval\"?"),
        "{r:?}"
    );
    assert!(r.stderr.contains("is invalid (2 errors)"), "{r:?}");
}
