//! File descriptors per running script: two in the daemon (the script's stdout and stderr
//! pipes) besides its log file, so hundreds of services fit in a 1024 limit.

use ctl::output::{ScriptJson, StatusJson};
use scriptd_e2e::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `count` services running `sleep`, named `s0`...
fn sleepers(count: usize, tag: &str) -> String {
    let mut body = String::from("scripts:\n");
    for i in 0..count {
        body.push_str(&format!(
            "  s{i}:\n    command: [\"/bin/sleep\", \"1000.{tag}{i}\"]\n"
        ));
    }
    body
}

/// A wrapper that starts the daemon with `RLIMIT_NOFILE` at `limit` (soft and hard).
fn limited_daemon(env: &Env, limit: u32) -> PathBuf {
    env.script(
        "limited-scriptd",
        &format!(
            "ulimit -Sn {limit} && ulimit -Hn {limit} && exec '{}' \"$@\"",
            scriptd_bin().display()
        ),
    )
}

/// Where each of the daemon's descriptors points.
fn descriptors(pid: u32) -> Vec<PathBuf> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The daemon's descriptors that are not log files.
fn non_log(pid: u32, log_dir: &Path) -> usize {
    descriptors(pid)
        .iter()
        .filter(|p| !p.starts_with(log_dir))
        .count()
}

fn running_count(d: &Daemon) -> usize {
    d.status()
        .scripts
        .iter()
        .filter(|s| s.state == "running")
        .count()
}

#[test]
fn three_hundred_services_run_under_a_1024_descriptor_limit() {
    let env = Env::new(&sleepers(300, "21"));
    let d = env.start_binary(&limited_daemon(&env, 1024), &[]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "the daemon does not run under the 1024 limit:\n{limits}"
    );
    wait_for(
        "all 300 services to be running",
        Duration::from_secs(60),
        || (running_count(&d) == 300).then_some(()),
    );
    let log = d.log_text();
    assert!(!log.contains("out of file descriptors"), "{log}");
}

#[test]
fn a_running_script_costs_the_daemon_two_descriptors_besides_its_log() {
    const N: usize = 20;
    let env = Env::new(&sleepers(N, "22"));
    let d = env.start();
    wait_for("all services to be running", DEADLINE, || {
        (running_count(&d) == N).then_some(())
    });
    let pid = d.pid();
    let log_dir = env.path("logs");
    let fds = descriptors(pid);
    assert!(
        !fds.iter().any(|p| p.to_string_lossy().contains("pidfd")),
        "{fds:?}"
    );
    let pipes = |pid| {
        descriptors(pid)
            .iter()
            .filter(|p| p.to_string_lossy().starts_with("pipe:"))
            .count()
    };
    // Counted once two reads in a row agree (a `ctl` connection may be closing).
    let mut last = None;
    let (running, running_pipes) = wait_for("the descriptor count to settle", DEADLINE, || {
        let now = (non_log(pid, &log_dir), pipes(pid));
        (last.replace(now) == Some(now)).then_some(now)
    });

    // A restart of each leaves as many as before: nothing made for a spawn stays open.
    for i in 0..N {
        let r = d.ctl(&["restart", &format!("s{i}")]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    wait_for(
        "the same descriptors after restarting each",
        DEADLINE,
        || (non_log(pid, &log_dir) == running).then_some(()),
    );

    for i in 0..N {
        let r = d.ctl(&["stop", &format!("s{i}")]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    wait_for(
        "two descriptors fewer per stopped script (its log aside), both pipes",
        DEADLINE,
        || {
            (non_log(pid, &log_dir) + 2 * N == running && pipes(pid) + 2 * N == running_pipes)
                .then_some(())
        },
    );
}

/// `ctl status` of the daemon, retried while it fails (a daemon out of descriptors may not
/// accept at once).
fn status_when_answered(d: &Daemon) -> Vec<ScriptJson> {
    wait_for("`ctl status` to answer", DEADLINE, || {
        let r = d.ctl(&["status", "--output", "json"]);
        let st: StatusJson = serde_json::from_str(&r.stdout).ok()?;
        (r.code == 0).then_some(st.scripts)
    })
}

#[test]
fn running_out_of_descriptors_is_said_once_per_script_and_retried() {
    // 60 services under a limit of 128: some cannot start. A service may fail once during
    // the start storm (when every spawn holds extra descriptors for a moment) and start on
    // its first retry, so the one followed is one still refused after three retries.
    let env = Env::new(&sleepers(60, "23"));
    let d = env.start_binary(&limited_daemon(&env, 128), &[]);
    let stuck = wait_for(
        "a service refused for want of descriptors three times over",
        Duration::from_secs(60),
        || {
            status_when_answered(&d)
                .into_iter()
                .find(|s| s.restarts >= 3 && s.state == "backing-off")
        },
    );
    let name = stuck.name.clone();
    let log = d.log_text();
    let tag = format!("script={name}");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("out of file descriptors"))
        .filter(|l| l.split_whitespace().any(|w| w == tag))
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("RLIMIT_NOFILE (soft 128, hard 128)"),
        "{}",
        said[0]
    );
}
