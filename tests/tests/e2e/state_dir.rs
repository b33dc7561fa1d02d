//! What the daemon keeps in `state_dir` besides the history: the lock and the process group
//! records. Nothing there is followed through a symlink, and the startup sweep signals only
//! groups it can prove a shim of its own started.

use scriptd_e2e::*;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Start time (clock ticks after boot) and parent of `pid`, from `/proc/PID/stat`.
fn start_and_parent(pid: u32) -> (u64, u32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command")
        .1
        .split_whitespace()
        .collect();
    (
        fields[19].parse().expect("start time"),
        fields[1].parse().expect("ppid"),
    )
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_owned()
}

/// A `sleep` leading a process group of its own: a process that is not the daemon's.
fn stranger(marker: &str) -> Child {
    Command::new("sleep")
        .arg(marker)
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

/// A group whose leader is gone: `sh` started a `sleep` in its group and exited. Returns
/// (the group id, the group's leader start time, the sleep's pid).
fn leaderless_group(marker: &str) -> (u32, u64, u32) {
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep {marker} >/dev/null 2>&1 & echo $!"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pgid = sh.id();
    let (start, _) = start_and_parent(pgid);
    let out = sh.wait_with_output().expect("sh output");
    let sleep: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("sleep pid");
    (pgid, start, sleep)
}

#[test]
fn the_sweep_signals_no_group_it_cannot_prove_is_its_own() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2401\"\n");
    let boot = boot_id();
    let me = std::process::id();
    let (my_start, _) = start_and_parent(me);
    let mut sleeper = stranger("1000.2402");
    let sleeper_pid = sleeper.id();
    let (sleeper_start, _) = start_and_parent(sleeper_pid);
    let (orphan_pgid, orphan_start, orphan) = leaderless_group("1000.2403");
    let (init_start, _) = start_and_parent(1);
    // The daemon runs in this test's process group.
    let own_pgid = nix::unistd::getpgrp().as_raw();
    let records = [
        ("pgid-one", format!("v2 1 {init_start} {boot} 0 0 1\n")),
        ("own-group", format!("v2 {own_pgid} 0 {boot} 0 0 1\n")),
        // Right start time, and its parent is the recorded "shim", but that is no shim.
        (
            "stranger",
            format!("v2 {sleeper_pid} {sleeper_start} {boot} {me} {my_start} 1\n"),
        ),
        (
            "other-boot",
            format!(
                "v2 {sleeper_pid} {sleeper_start} 00000000-0000-0000-0000-000000000000 {me} \
                 {my_start} 1\n"
            ),
        ),
        (
            "leaderless",
            format!("v2 {orphan_pgid} {orphan_start} {boot} {me} {my_start} 1\n"),
        ),
        ("garbage", "kill everything\n".to_owned()),
    ];
    for (name, text) in &records {
        env.write(&format!("state/groups/{name}"), text);
    }

    // The sweep is over once the daemon answers.
    let d = env.start();
    assert!(alive(sleeper_pid), "the unrelated process was killed");
    assert!(alive(orphan), "the leaderless group's process was killed");
    let log = d.log_text();
    for (name, why) in [
        ("pgid-one", "process group 1 is not one a script can lead"),
        ("own-group", "is the daemon's own"),
        ("stranger", "not a shim of scriptd"),
        ("other-boot", "from an earlier boot: nothing of it runs"),
        ("leaderless", "carries the run's environment"),
        ("garbage", "the record is unreadable"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("groups/{name}")) && l.contains(why)),
            "no line saying why {name} was left alone ({why}):\n{log}"
        );
    }
    assert!(!log.contains("left behind by a previous daemon"), "{log}");
    for (name, _) in &records {
        assert!(
            !env.path(&format!("state/groups/{name}")).exists(),
            "{name} was not cleared"
        );
    }
    // The daemon's own script still runs and is recorded as its own.
    let pid = d
        .wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid");
    let record = fs::read_to_string(env.path("state/groups/svc")).expect("svc record");
    assert!(record.starts_with(&format!("v2 {pid} ")), "{record:?}");
    drop(d);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(orphan as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2404\"\n");
    let victim = env.path("victim.txt");
    fs::write(&victim, "precious\n").expect("victim");
    fs::create_dir_all(env.path("state")).expect("state dir");
    std::os::unix::fs::symlink(&victim, env.path("state/scriptd.lock")).expect("symlink");
    let r = scriptd_exits(&env.config());
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("scriptd.lock is a symbolic link") && r.stderr.contains("remove it"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert!(pids_with_marker("1000.2404").is_empty(), "a script ran");
}

#[test]
fn a_symlinked_groups_directory_is_refused_and_its_target_untouched() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2405\"\n");
    let victim = env.path("victim-dir");
    fs::create_dir_all(&victim).expect("victim dir");
    fs::write(victim.join("file"), "precious\n").expect("victim file");
    fs::create_dir_all(env.path("state")).expect("state dir");
    std::os::unix::fs::symlink(&victim, env.path("state/groups")).expect("symlink");
    let r = scriptd_exits(&env.config());
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("groups") && r.stderr.contains("symbolic link"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(victim.join("file")).expect("the victim's file is still there"),
        "precious\n"
    );
    assert!(pids_with_marker("1000.2405").is_empty(), "a script ran");
}
