//! `user`, `group`, `umask`, `limits`: a script runs as another user (created by the test),
//! with that user's groups, home and shell, the umask and the resource limits it is given;
//! its log stays the daemon's; changing `user` restarts it; and a program only root may
//! execute is refused at validation for a script that runs as someone else.

use scriptd_e2e::{proc_limit, proc_status_line, wait_for, Env, TestUser, DEADLINE};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// An [`Env`] whose directory other users may enter (a temp dir is 0700): the scripts in it
/// run as the test user.
fn open_env() -> Env {
    let env = Env::new("");
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    env
}

/// The stdout lines of `name`'s log once it has printed `ready`.
fn lines_until_ready(d: &scriptd_e2e::Daemon, name: &str) -> Vec<String> {
    wait_for(&format!("{name} to print ready"), DEADLINE, || {
        let out = d.ctl(&["logs", name, "--raw", "--stream", "stdout"]).stdout;
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.iter().any(|l| l == "ready").then_some(lines)
    })
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_script_runs_as_its_user_with_its_groups_umask_and_limits() {
    let user = TestUser::create();
    let env = open_env();
    // A directory the user may write, to see the umask on a file it creates.
    let out = env.path("out");
    fs::create_dir(&out).expect("mkdir out");
    nix::unistd::chown(
        &out,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .expect("chown out");
    let who = env.script_entry(
        "who",
        "id -u; id -g; id -G; umask\n\
         echo \"$HOME $USER $LOGNAME $SHELL\"\n\
         : > out/made; stat -c %a out/made\n\
         if (echo tampered >> logs/who.log) 2>/dev/null; then echo log-writable; else echo log-refused; fi\n\
         echo ready\nexec sleep 600",
        &format!(
            "    user: {}\n    umask: \"0027\"\n    limits: {{ nofile: \"1000:2000\", nproc: 512, core: 0 }}\n    restart: never\n",
            user.name
        ),
    );
    // `env` wins over the user's entry.
    let home = env.script_entry(
        "home",
        "echo \"$HOME $USER\"\necho ready\nexec sleep 600",
        &format!(
            "    user: {}\n    env: {{ HOME: /custom }}\n    restart: never\n",
            user.uid
        ),
    );
    env.set_body(&format!("scripts:\n{who}{home}"));
    let d = env.start();

    let lines = lines_until_ready(&d, "who");
    let groups: BTreeSet<u32> = lines[2]
        .split_whitespace()
        .map(|g| g.parse().expect("a gid"))
        .collect();
    assert_eq!(lines[0], user.uid.to_string(), "id -u: {lines:?}");
    assert_eq!(lines[1], user.gid.to_string(), "id -g: {lines:?}");
    assert_eq!(
        groups,
        BTreeSet::from([user.gid, user.extra_gid]),
        "id -G: its own group and the supplementary one from the group database: {lines:?}"
    );
    assert_eq!(lines[3], "0027", "umask: {lines:?}");
    assert_eq!(
        lines[4],
        format!("/nonexistent {0} {0} /bin/sh", user.name),
        "HOME USER LOGNAME SHELL from the user's entry: {lines:?}"
    );
    assert_eq!(
        lines[5], "640",
        "a file it creates, under umask 0027: {lines:?}"
    );
    assert_eq!(
        lines[6], "log-refused",
        "the script cannot write its log: {lines:?}"
    );

    // From the outside: the running process's ids and limits.
    let status = d.script("who");
    assert_eq!(
        (status.user.as_deref(), status.uid),
        (Some(user.name.as_str()), Some(user.uid)),
        "ctl status names the user"
    );
    let pid = status.pid.expect("who runs");
    let (uid, gid) = (user.uid, user.gid);
    assert_eq!(
        proc_status_line(pid, "Uid"),
        format!("{uid} {uid} {uid} {uid}")
    );
    assert_eq!(
        proc_status_line(pid, "Gid"),
        format!("{gid} {gid} {gid} {gid}")
    );
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("1000".into(), "2000".into())
    );
    assert_eq!(
        proc_limit(pid, "Max processes"),
        ("512".into(), "512".into())
    );
    assert_eq!(
        proc_limit(pid, "Max core file size"),
        ("0".into(), "0".into())
    );

    // The log stays the daemon's: root's, not writable by the script's user.
    let log = fs::metadata(env.path("logs/who.log")).expect("who.log");
    assert_eq!(log.uid(), 0, "the log file is root's");
    assert_eq!(log.mode() & 0o002, 0, "and not writable by others");
    assert!(
        !fs::read_to_string(env.path("logs/who.log"))
            .expect("read who.log")
            .contains("tampered"),
        "the script did not write to its log file"
    );

    let home = lines_until_ready(&d, "home");
    assert_eq!(home[0], format!("/custom {}", user.name), "{home:?}");
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_change_of_user_restarts_the_script() {
    let user = TestUser::create();
    let env = open_env();
    let entry = |settings: &str| env.script_entry("svc", "echo ready\nexec sleep 600", settings);
    env.set_manual(&format!(
        "scripts:\n{}",
        entry(&format!("    user: {}\n", user.name))
    ));
    let d = env.start();
    let first = d.wait_script("svc", "running", |s| s.pid.is_some());
    let old_pid = first.pid.expect("running");
    let uid = user.uid;
    assert_eq!(
        proc_status_line(old_pid, "Uid"),
        format!("{uid} {uid} {uid} {uid}")
    );

    env.set_manual(&format!("scripts:\n{}", entry("")));
    let (code, reload) = d.reload(&[]);
    assert_eq!(code, 0, "{reload:?}");
    let change = reload
        .changes
        .iter()
        .find(|c| c.script == "svc" && c.field == "user")
        .unwrap_or_else(|| panic!("no change of user: {:?}", reload.changes));
    assert_eq!(change.impact, "restart");
    assert_eq!(
        change.old.as_deref(),
        Some(format!("{} (uid {uid}, gid {})", user.name, user.gid).as_str())
    );
    assert_eq!(change.new, None);

    let now = d.wait_script("svc", "restarted", |s| s.pid.is_some_and(|p| p != old_pid));
    let pid = now.pid.expect("running");
    assert_eq!(
        proc_status_line(pid, "Uid"),
        "0 0 0 0",
        "runs as the daemon's user again"
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_program_only_root_may_execute_is_refused_for_another_user() {
    let user = TestUser::create();
    let env = open_env();
    let program = env.script("root-only.sh", "exit 0");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let config = |settings: &str| {
        format!(
            "scripts:\n  job:\n    command: [\"{}\"]\n    interval: 1h\n{settings}",
            program.display()
        )
    };

    env.set_body(&config(&format!("    user: {}\n", user.name)));
    let run = env.check();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "scripts.job.command[0]: program {} cannot be executed by user {} (uid {}), whom \
             the script runs as: file {} (mode 0700, owner uid 0, group gid 0) cannot be \
             executed by them",
            program.display(),
            user.name,
            user.uid,
            program.display()
        )),
        "{run:?}"
    );

    env.set_body(&config(""));
    let run = env.check();
    assert_eq!(run.code, 0, "root may run it: {run:?}");

    env.set_body(&config("    user: scriptd-no-such-user\n"));
    let run = env.check();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("scripts.job.user: no user named \"scriptd-no-such-user\" on this system"),
        "{run:?}"
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_daemon_that_is_not_root_may_name_only_its_own_user() {
    let user = TestUser::create();
    let env = open_env();
    let me = env.script_entry(
        "me",
        "id -u\necho \"$HOME $USER\"\necho ready\nexec sleep 600",
        &format!("    user: {}\n    restart: never\n", user.name),
    );
    env.set_manual(&format!("scripts:\n{me}"));
    let d = env.start_as(user.uid, user.gid);

    let lines = lines_until_ready(&d, "me");
    assert_eq!(lines[0], user.uid.to_string(), "{lines:?}");
    assert_eq!(
        lines[1],
        format!("/nonexistent {}", user.name),
        "the user's variables, not the daemon's environment: {lines:?}"
    );

    let root = env.script_entry("other", "exec sleep 600", "    user: root\n");
    env.set_manual(&format!("scripts:\n{me}{root}"));
    let (code, reload) = d.reload(&[]);
    assert_eq!((code, reload.result.as_str()), (3, "invalid"), "{reload:?}");
    let error = reload
        .errors
        .iter()
        .find(|e| e.path == "scripts.other.user")
        .unwrap_or_else(|| panic!("no error at scripts.other.user: {reload:?}"));
    assert!(
        error.message.starts_with(&format!(
            "running a script as user root (uid 0) needs a root daemon (scriptd runs as uid {})",
            user.uid
        )),
        "{error:?}"
    );
}
