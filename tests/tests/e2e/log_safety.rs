//! The log files' safety end to end: symlinks planted in `log_dir` (at `NAME.log`, at the
//! rotated names, at a rotated file a backlog reads) are never followed, and the daemon
//! says what it refused; a script without a run holds no descriptor for its log file; a
//! full `log_dir` is reported once, not once per record or rotation, and "writable again"
//! only once a write succeeded.
//!
//! The full-disk test mounts a tmpfs, which needs root: it says SKIPPED (stderr) and passes
//! otherwise (`..._as_root`).

use scriptd_e2e::{wait_for, Daemon, Env, DEADLINE};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Deadline for a chatty script to print thousands of lines on a loaded machine.
const LONG: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ helpers

/// Waits until the script's run `runs` has ended.
fn wait_ended(d: &Daemon, script: &str, runs: u64) {
    d.wait_script(script, &format!("run {runs} ended"), |s| {
        s.run_count >= runs && s.last_exit.is_some() && s.pid.is_none()
    });
}

/// Runs `ctl ARGS` and asserts it succeeded.
fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let r = d.ctl(args);
    assert_eq!(r.code, 0, "ctl {args:?} failed: {r:?}");
    r.stdout
}

/// `ctl logs SCRIPT --raw -n N`: the bare text of the last N lines.
fn last_lines(d: &Daemon, script: &str, n: u64) -> String {
    ctl_ok(d, &["logs", script, "--raw", "-n", &n.to_string()])
}

/// How many descriptors of the daemon point at `file`.
fn fds_on(d: &Daemon, file: &Path) -> usize {
    let want = file
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.join(file.file_name().unwrap_or_default()))
        .unwrap_or_else(|| file.to_path_buf());
    fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .expect("list the daemon's descriptors")
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| *target == want)
        .count()
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

// ------------------------------------------------------------------ symlinks

#[test]
fn symlinks_at_log_names_are_never_written_through() {
    let env = Env::new(
        "scripts:\n  evil:\n    command: \"echo one; echo two\"\n    restart: never\n  rot:\n    command: \"seq 1 2000\"\n    restart: never\n    log: { max_bytes: 4KiB, keep: 2 }\n",
    );
    fs::create_dir_all(env.path("logs")).expect("log dir");
    env.write("victim", "precious\n");
    // At the log file's name; at the rotated names (rotation renames onto them), and
    // beyond `keep` (rotation removes it).
    let plant = ["evil.log", "rot.log.1", "rot.log.2", "rot.log.3"];
    for name in plant {
        let link = env.path(&format!("logs/{name}"));
        std::os::unix::fs::symlink(env.path("victim"), link).expect("plant");
    }
    let d = env.start();
    wait_ended(&d, "evil", 1);
    wait_ended(&d, "rot", 1);

    assert_eq!(
        fs::read_to_string(env.path("victim")).expect("read"),
        "precious\n"
    );
    let log = d.log_text();
    assert!(
        log.contains("refusing to open") && log.contains("evil.log: it is a symbolic link"),
        "the daemon log says what it refused:\n{log}"
    );
    // The lines are not lost to readers: memory still has them.
    let text = last_lines(&d, "evil", 10);
    assert!(text.contains("one\ntwo\n"), "{text}");

    for name in ["logs/rot.log", "logs/rot.log.1", "logs/rot.log.2"] {
        let meta = env.path(name).symlink_metadata().expect("exists");
        assert!(meta.is_file(), "{name} is a file the daemon made: {meta:?}");
    }
    assert!(
        env.path("logs/rot.log.3").symlink_metadata().is_err(),
        "the link beyond `keep` is removed (not its target)"
    );
}

#[test]
fn a_backlog_never_reads_through_a_symlink() {
    let env = Env::new(
        "scripts:\n  peek:\n    command: \"seq 1 50\"\n    restart: never\n    max_log_lines: 10\n",
    );
    fs::create_dir_all(env.path("logs")).expect("log dir");
    // A file only root can read, shaped like a log so a reader would take its lines.
    env.write("victim", "2023-11-14T22:13:20.123Z 500 9 out SECRET-LINE\n");
    std::os::unix::fs::symlink(env.path("victim"), env.path("logs/peek.log.1")).expect("plant");
    let d = env.start();
    wait_ended(&d, "peek", 1);

    // Beyond the ring: the files are read.
    let text = last_lines(&d, "peek", 1000);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"1") && lines.contains(&"50"), "{text}");
    assert!(
        !text.contains("SECRET"),
        "a backlog read through the link:\n{text}"
    );
    let recs = ctl_ok(&d, &["logs", "peek", "-n", "1000", "--output", "json"]);
    for line in recs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let seq = v["seq"].as_u64().expect("seq");
        assert!(
            seq < 100,
            "the sequence resumed from the link's target: {line}"
        );
    }
    let log = d.log_text();
    assert!(
        log.contains("peek.log.1") && log.contains("symbolic link"),
        "the daemon log says what it refused:\n{log}"
    );
}

// ------------------------------------------------------------------ descriptors

#[test]
fn only_a_script_with_a_run_holds_its_log_file_open() {
    let env = Env::new(
        "scripts:\n  once:\n    command: \"echo once\"\n    restart: never\n  off:\n    command: \"echo off\"\n    enabled: false\n  tick:\n    command: \"echo tick\"\n    interval: 1h\n  svc:\n    command: \"echo up; exec sleep 1000\"\n",
    );
    // A disabled script whose log file exists from an earlier daemon.
    fs::create_dir_all(env.path("logs")).expect("log dir");
    env.write("logs/off.log", "2023-11-14T22:13:20.123Z 1 1 out earlier\n");
    let d = env.start();
    wait_ended(&d, "once", 1);
    wait_ended(&d, "tick", 1);
    d.wait_script("svc", "running", |s| s.pid.is_some());
    wait_for("svc's first line in its log file", DEADLINE, || {
        fs::read_to_string(env.path("logs/svc.log"))
            .ok()
            .filter(|t| t.contains(" out up"))
    });

    let log = |name: &str| env.path(&format!("logs/{name}.log"));
    assert_eq!(fds_on(&d, &log("once")), 0, "idle");
    assert_eq!(fds_on(&d, &log("tick")), 0, "waiting for its next run");
    assert_eq!(fds_on(&d, &log("off")), 0, "disabled");
    assert_eq!(fds_on(&d, &log("svc")), 1, "running: one descriptor");

    ctl_ok(&d, &["run", "off"]);
    wait_ended(&d, "off", 1);
    assert_eq!(fds_on(&d, &log("off")), 0, "disabled, after a one-off run");

    ctl_ok(&d, &["stop", "svc"]);
    d.wait_script("svc", "stopped", |s| s.pid.is_none());
    assert_eq!(fds_on(&d, &log("svc")), 0, "stopped");
    // Closing the file lost nothing: every line is in it.
    let text = fs::read_to_string(log("svc")).expect("read");
    assert!(text.contains(" out up") && text.contains("ended"), "{text}");
}

// ------------------------------------------------------------------ full disk

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`; `None` when mounting is not allowed here.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the daemon may still be closing its files.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).expect("create filler");
    let block = vec![0u8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// The newest seq `ctl logs` has for `script` (the ring keeps going while the file fails).
fn newest_seq(d: &Daemon, script: &str) -> u64 {
    let out = ctl_ok(d, &["logs", script, "-n", "1", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON line");
    v["seq"].as_u64().expect("seq")
}

// needs root (mount)
#[test]
fn a_full_log_dir_is_reported_once_and_recovery_after_a_write_as_root() {
    let test = "a_full_log_dir_is_reported_once_and_recovery_after_a_write_as_root";
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED {test}: needs root to mount a tmpfs");
        return;
    }
    let env = Env::new("");
    let go = env.path("go");
    env.set_body(&format!(
        "scripts:\n  chatty:\n    command: \"echo start; while [ ! -e {} ]; do sleep 0.05; done; while true; do seq 1 200; sleep 0.02; done\"\n    log: {{ max_bytes: 4KiB, keep: 1 }}\n",
        go.display()
    ));
    // Bigger than what the daemon keeps for a retry (4 MiB), so the retry fits once freed.
    let Some(_tmpfs) = Tmpfs::mount(&env.path("logs"), "16m") else {
        eprintln!("SKIPPED {test}: cannot mount a tmpfs here");
        return;
    };
    let d = env.start();
    wait_for("chatty's first line in its log file", DEADLINE, || {
        fs::read_to_string(env.path("logs/chatty.log"))
            .ok()
            .filter(|t| t.contains(" out start"))
    });
    fill(&env.path("logs/filler"));
    env.write("go", "");

    wait_for("the daemon to say it cannot write", DEADLINE, || {
        d.log_text().contains("cannot write log file").then_some(())
    });
    // Thousands of records (what used to be a report and a rotation each) later:
    let from = newest_seq(&d, "chatty");
    wait_for("chatty to print 5000 more lines", LONG, || {
        (newest_seq(&d, "chatty") > from + 5_000).then_some(())
    });
    let log = d.log_text();
    assert_eq!(
        count(&log, "cannot write log file"),
        1,
        "reported once:\n{log}"
    );
    assert_eq!(
        count(&log, "writable again"),
        0,
        "no write succeeded:\n{log}"
    );
    assert!(
        log.contains("No space left on device"),
        "the report says why:\n{log}"
    );

    fs::remove_file(env.path("logs/filler")).expect("free the space");
    wait_for(
        "the daemon to say the log file is writable again",
        DEADLINE,
        || d.log_text().contains("writable again").then_some(()),
    );
    let text = fs::read_to_string(env.path("logs/chatty.log")).unwrap_or_default()
        + &fs::read_to_string(env.path("logs/chatty.log.1")).unwrap_or_default();
    assert!(
        text.lines().count() > 10,
        "records were written when it said so:\n{text}"
    );
    let log = d.log_text();
    assert_eq!(count(&log, "writable again"), 1, "{log}");
    assert_eq!(count(&log, "cannot write log file"), 1, "{log}");
}
