//! A full `state_dir` keeps no script down: the daemon starts on a config whose version the
//! history cannot record, runs every script, and records the version once space returns;
//! the pid it cannot write into its lock file and the process groups it cannot record are
//! warned about once, not at every run.
//! Needs root (it mounts a tiny tmpfs as `state_dir`): ignored ("needs root") otherwise.

use ctl::history::HistoryJson;
use scriptd_e2e::{fill, wait_for, Daemon, Env, Tmpfs, DEADLINE};

fn history(d: &Daemon) -> HistoryJson {
    let r = d.ctl(&["history", "-o", "json"]);
    assert_eq!(r.code, 0, "ctl history failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("history JSON parses")
}

fn versions(h: &HistoryJson) -> Vec<u64> {
    h.entries.iter().filter_map(|e| e.version).collect()
}

fn body(with_added: bool) -> String {
    let mut body = String::from(
        "scripts:\n  tick:\n    command: [\"/bin/true\"]\n    interval: 100ms\n  \
         svc:\n    command: \"sleep 1000\"\n",
    );
    if with_added {
        body.push_str("  added:\n    command: [\"/bin/true\"]\n    interval: 100ms\n");
    }
    body
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_full_state_dir_keeps_no_script_down_and_the_version_is_recorded_later_as_root() {
    let env = Env::new(&body(false));
    let _tmpfs = Tmpfs::mount(&env.path("state"), "1m", "0700");
    let mut d = env.start();
    assert_eq!(versions(&history(&d)), vec![1]);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), Some(0));

    // Edited while the daemon is down, then the state directory fills up.
    env.set_body(&body(true));
    fill(&env.path("state/filler"));

    let d = env.start();
    assert_eq!(
        d.status().running_version,
        2,
        "the new config runs as version 2"
    );
    for name in ["tick", "added"] {
        d.wait_script(name, "two runs", |s| s.run_count >= 2);
    }
    d.wait_script("svc", "running", |s| s.state == "running");
    let log = d.log_text();
    assert!(
        log.contains("startup version 2 cannot be recorded in the history yet"),
        "the daemon log says so:\n{log}"
    );
    assert_eq!(versions(&history(&d)), vec![1], "not recorded while full");

    // Space returns: the next history call finds version 2 recorded.
    std::fs::remove_file(env.path("state/filler")).expect("free the space");
    let h = history(&d);
    assert_eq!(versions(&h), vec![2, 1], "{h:?}");
    let v2 = &h.entries[0];
    assert_eq!(
        (v2.source.as_str(), v2.result.as_str()),
        ("startup", "applied")
    );
    assert_eq!(h.running_version, 2);
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_full_state_dir_is_warned_about_once_and_the_lock_holds_without_a_pid_as_root() {
    let env = Env::new("scripts:\n  tick:\n    command: [\"/bin/true\"]\n    interval: 50ms\n");
    let _tmpfs = Tmpfs::mount(&env.path("state"), "1m", "0700");
    let mut d = env.start();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), Some(0));

    // A new lock file needs space for the pid, and there is none.
    std::fs::remove_file(env.path("state/scriptd.lock")).expect("remove the lock file");
    fill(&env.path("state/filler"));
    let d = env.start();
    // Starting may free a little (SQLite drops the previous run's files): take that too,
    // so that the runs from here on find no room for their group records.
    fill(&env.path("state/filler2"));
    let from = d.script("tick").run_count;
    d.wait_script("tick", "ten more runs", |s| s.run_count >= from + 10);
    let log = d.log_text();
    assert!(
        log.contains("cannot write the pid into the lock file"),
        "the daemon runs and says why the lock file has no pid:\n{log}"
    );
    let failures = log
        .lines()
        .filter(|l| l.contains("cannot record process group") && !l.contains("still"))
        .count();
    assert_eq!(failures, 1, "said once, not at every run:\n{log}");

    std::fs::remove_file(env.path("state/filler")).expect("free the space");
    std::fs::remove_file(env.path("state/filler2")).expect("free the space");
    wait_for(
        "the daemon to say groups are recorded again",
        DEADLINE,
        || {
            d.log_text()
                .contains("process groups are recorded again")
                .then_some(())
        },
    );
}
