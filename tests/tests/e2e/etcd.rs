//! The etcd source (`daemon.source.etcd`) against a real single-node etcd ([`Etcd`]): a put
//! goes through the one reload pipeline (only the changed script restarted, the revision in
//! the history), an invalid value is refused and recorded, and the source going away (a
//! frozen server, a restart, a compaction past the watch, a daemon started while etcd is
//! down) never stops supervision and never applies a value twice. Rollbacks write the value
//! back with a compare-and-swap: of two concurrent ones exactly one wins.

use ctl::history::{HistoryEntryJson, HistoryJson};
use nix::sys::signal::Signal;
use scriptd_e2e::{
    etcd_status, is_phase, running_sleep as running, wait_for, Daemon, Env, Etcd, Events, DEADLINE,
};
use std::process::Stdio;

const KEY: &str = "/scriptd/hosts/test/config";

/// A value running services `a` and `b` (`b` sleeping `b_secs`).
fn value(b_secs: u32) -> String {
    format!(
        "defaults:\n  stop_grace: 1s\nscripts:\n  a:\n    command: \"sleep 1000\"\n  b:\n    command: \"sleep {b_secs}\"\n"
    )
}

/// A daemon whose config is the value of [`KEY`] on `etcd` (which holds `first`).
fn start(etcd: &Etcd, first: &str) -> (Env, Daemon, i64) {
    let revision = etcd.put(KEY, first);
    let env = Env::new(&etcd.source_lines(KEY));
    let d = env.start();
    (env, d, revision)
}

fn history(d: &Daemon) -> HistoryJson {
    let r = d.ctl(&["history", "--limit", "100", "-o", "json"]);
    assert_eq!(r.code, 0, "ctl history: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("history JSON parses strictly")
}

/// The history entries of etcd revision `revision`.
fn entries_of(d: &Daemon, revision: i64) -> Vec<HistoryEntryJson> {
    history(d)
        .entries
        .into_iter()
        .filter(|e| e.etcd_revision == Some(revision))
        .collect()
}

/// Waits until the value of revision `revision` is the running one.
fn wait_running_revision(d: &Daemon, revision: i64) {
    wait_for(&format!("revision {revision} running"), DEADLINE, || {
        (etcd_status(d).running_revision == Some(revision)).then_some(())
    });
}

#[test]
fn a_put_restarts_only_the_changed_script_and_an_invalid_value_is_refused_and_recorded() {
    let etcd = Etcd::start();
    let (_env, d, r1) = start(&etcd, &value(1001));
    let a = running(&d, "a", 1000);
    let b = running(&d, "b", 1001);
    // The watch is set up after the first read: wait for it.
    let s = wait_for("the watch connected", DEADLINE, || {
        let s = etcd_status(&d);
        s.connected.then_some(s)
    });
    assert_eq!(
        (s.key.as_str(), s.endpoint.as_str()),
        (KEY, etcd.url.as_str())
    );
    assert_eq!(s.running_revision, Some(r1));
    assert_eq!(
        d.status().sync,
        "unknown",
        "the disk holds only the bootstrap file"
    );
    let table = d.ctl_ok(&["status"]);
    let header = format!("etcd {KEY} at revision {r1} (connected to {}", etcd.url);
    assert!(table.contains(&header), "{table}");
    let startup = entries_of(&d, r1);
    assert_eq!(startup.len(), 1, "{startup:?}");
    assert_eq!(startup[0].source, "startup");

    let r2 = etcd.put(KEY, &value(1002));
    let b2 = running(&d, "b", 1002);
    assert_ne!(b, b2);
    assert_eq!(
        d.script("a").pid,
        Some(a),
        "the unchanged script was not touched"
    );
    wait_running_revision(&d, r2);
    let applied = entries_of(&d, r2);
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(
        (applied[0].source.as_str(), applied[0].result.as_str()),
        ("etcd", "applied")
    );

    let r3 = etcd.put(KEY, "scripts:\n  a:\n    comand: \"sleep 5\"\n");
    let rejected = wait_for("the invalid value to be recorded", DEADLINE, || {
        entries_of(&d, r3).into_iter().next()
    });
    assert_eq!(
        (rejected.source.as_str(), rejected.result.as_str()),
        ("etcd", "rejected")
    );
    assert!(
        rejected
            .errors
            .iter()
            .any(|e| e.file == format!("etcd:{KEY}")),
        "the error names the key: {rejected:?}"
    );
    let s = etcd_status(&d);
    assert_eq!(s.running_revision, Some(r2), "the running version stays");
    assert!(s
        .problem
        .unwrap_or_default()
        .contains(&format!("revision {r3}")));
    assert_eq!((d.script("a").pid, d.script("b").pid), (Some(a), Some(b2)));
}

#[test]
fn a_frozen_etcd_is_noticed_supervision_goes_on_and_the_next_put_applies() {
    let etcd = Etcd::start();
    let (_env, d, _) = start(&etcd, &value(1001));
    let a = running(&d, "a", 1000);
    etcd.signal(Signal::SIGSTOP);
    let s = wait_for("status to say disconnected", DEADLINE, || {
        let s = etcd_status(&d);
        (!s.connected).then_some(s)
    });
    assert!(s.problem.is_some(), "it says why: {s:?}");
    assert!(scriptd_e2e::alive(a), "supervision goes on");
    assert_eq!(d.script("a").pid, Some(a));
    etcd.signal(Signal::SIGCONT);
    let r2 = etcd.put(KEY, &value(1002));
    running(&d, "b", 1002);
    wait_running_revision(&d, r2);
    wait_for("connected again", DEADLINE, || {
        etcd_status(&d).connected.then_some(())
    });
    assert_eq!(entries_of(&d, r2).len(), 1);
}

#[test]
fn after_an_etcd_restart_the_next_put_applies_once() {
    let mut etcd = Etcd::start();
    let (_env, d, _) = start(&etcd, &value(1001));
    running(&d, "b", 1001);
    etcd.restart();
    let r2 = etcd.put(KEY, &value(1002));
    running(&d, "b", 1002);
    wait_running_revision(&d, r2);
    wait_for("connected again", DEADLINE, || {
        etcd_status(&d).connected.then_some(())
    });
    assert_eq!(entries_of(&d, r2).len(), 1, "applied once");
}

#[test]
fn a_watch_compacted_away_reads_the_key_again_and_applies_the_latest_value_once() {
    let mut etcd = Etcd::start();
    let (_env, d, _) = start(&etcd, &value(1001));
    running(&d, "b", 1001);
    // The daemon misses two puts and a compaction past them, then finds its connection gone:
    // its watch resumes at a revision etcd no longer has.
    d.signal(Signal::SIGSTOP);
    etcd.restart();
    let r2 = etcd.put(KEY, &value(1002));
    let r3 = etcd.put(KEY, &value(1003));
    etcd.compact(r3);
    d.signal(Signal::SIGCONT);
    running(&d, "b", 1003);
    wait_running_revision(&d, r3);
    assert!(
        entries_of(&d, r2).is_empty(),
        "the compacted value never applied"
    );
    assert_eq!(entries_of(&d, r3).len(), 1, "applied once");
    let log = d.log_text();
    assert!(log.contains("reading the key again"), "{log}");
}

#[test]
fn a_daemon_started_while_etcd_is_down_runs_the_last_version_in_its_history() {
    let mut etcd = Etcd::start();
    let (env, d, r1) = start(&etcd, &value(1001));
    running(&d, "b", 1001);
    drop(d);
    etcd.stop();
    let d = env.start();
    running(&d, "a", 1000);
    running(&d, "b", 1001);
    let s = etcd_status(&d);
    assert!(!s.connected);
    let problem = s.problem.unwrap_or_default();
    assert!(
        problem.contains("the last version in the history (1)"),
        "{problem}"
    );
    assert!(d
        .log_text()
        .contains("running the last version in the history"));
    // Once etcd is back, the value it holds is the running one: nothing new is recorded.
    etcd.restart();
    wait_for("connected", DEADLINE, || {
        etcd_status(&d).connected.then_some(())
    });
    wait_running_revision(&d, r1);
    assert_eq!(entries_of(&d, r1).len(), 1, "no duplicate history entry");
}

#[test]
fn of_two_concurrent_rollbacks_exactly_one_writes_the_key_and_applies() {
    let etcd = Etcd::start();
    // `a` ignores SIGTERM: every restart of it waits out its stop_grace, which holds the
    // first rollback in `applying` while the second arrives.
    let slow = |secs: u32| {
        format!(
            "defaults:\n  stop_grace: 1s\nscripts:\n  a:\n    command: \"trap '' TERM; exec sleep {secs}\"\n"
        )
    };
    let (_env, d, _) = start(&etcd, &slow(1000));
    running(&d, "a", 1000);
    let r2 = etcd.put(KEY, &slow(1001));
    running(&d, "a", 1001);
    wait_running_revision(&d, r2);

    let mut events = Events::follow(&d);
    let spawn = || {
        d.ctl_command(&["rollback"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctl rollback")
    };
    let first = spawn();
    events.wait("the first rollback applying", |e| {
        is_phase(e, "applying") && e.source.as_deref() == Some("rollback")
    });
    let second = spawn();
    let outcomes: Vec<_> = [first, second]
        .into_iter()
        .map(|c| c.wait_with_output().expect("ctl rollback"))
        .collect();
    let codes: Vec<_> = outcomes.iter().map(|o| o.status.code()).collect();
    assert_eq!(codes, [Some(0), Some(3)], "{outcomes:?}");
    let loser = format!(
        "{}{}",
        String::from_utf8_lossy(&outcomes[1].stdout),
        String::from_utf8_lossy(&outcomes[1].stderr)
    );
    assert!(loser.contains("changed since"), "{loser}");
    // The winner's value is in etcd and running, at the revision it wrote.
    let (stored, revision) = etcd.get(KEY).expect("the key");
    assert_eq!(stored, slow(1000));
    running(&d, "a", 1000);
    wait_running_revision(&d, revision);
    let written = entries_of(&d, revision);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].source, "rollback");
}

#[test]
fn reload_file_writes_the_key_with_a_compare_and_swap_and_a_concurrent_writer_makes_it_fail() {
    let etcd = Etcd::start();
    let slow = |secs: u32| {
        format!(
            "defaults:\n  stop_grace: 1s\nscripts:\n  a:\n    command: \"trap '' TERM; exec sleep {secs}\"\n"
        )
    };
    let (env, d, _) = start(&etcd, &slow(1000));
    running(&d, "a", 1000);
    env.write("candidate.yaml", &slow(1002));
    let file = format!("etcd:{KEY}={}", env.path("candidate.yaml").display());

    // Another writer puts a value; while the daemon applies it (`a` waits out its grace),
    // a candidate arrives as of the revision running before that put.
    let mut events = Events::follow(&d);
    let w = etcd.put(KEY, &slow(1001));
    events.wait("the writer's value applying", |e| {
        is_phase(e, "applying") && e.source.as_deref() == Some("etcd")
    });
    let r = d.ctl(&["reload", "--file", &file]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("changed since"),
        "{r:?}"
    );
    assert_eq!(etcd.get(KEY), Some((slow(1001), w)), "nothing was written");
    running(&d, "a", 1001);
    wait_running_revision(&d, w);

    // As of the running revision, the candidate is written to the key and applied.
    let r = d.ctl(&["reload", "--file", &file]);
    assert_eq!(r.code, 0, "{r:?}");
    let (stored, revision) = etcd.get(KEY).expect("the key");
    assert_eq!(stored, slow(1002));
    running(&d, "a", 1002);
    wait_running_revision(&d, revision);
    let written = entries_of(&d, revision);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(
        (written[0].source.as_str(), written[0].result.as_str()),
        ("ctl", "applied")
    );

    // A dry run previews a value against what runs and writes nothing.
    env.write("candidate.yaml", &slow(1003));
    let (code, plan) = d.reload(&["--dry-run", "--file", &file]);
    assert_eq!(code, 0, "{plan:?}");
    assert!(
        plan.changes
            .iter()
            .any(|c| c.script == "a" && c.field == "command"),
        "{plan:?}"
    );
    assert_eq!(
        etcd.get(KEY),
        Some((slow(1002), revision)),
        "nothing was written"
    );
}

#[test]
fn with_a_username_and_password_file_the_daemon_authenticates() {
    let etcd = Etcd::start();
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"][..]] {
        etcd.ctl(args)
            .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"));
    }
    let put = |v: &str| {
        etcd.ctl(&["--user", "root:rootpw", "put", "--", KEY, v])
            .unwrap_or_else(|e| panic!("etcdctl put: {e}"))
    };
    put(&value(1001));
    let env = Env::new(&format!(
        "{}      username: root\n      password_file: password\n",
        etcd.source_lines(KEY)
    ));
    env.write("password", "rootpw\n");
    let d = env.start();
    running(&d, "b", 1001);
    assert!(etcd_status(&d).connected);
    put(&value(1002));
    running(&d, "b", 1002);
    // With a wrong password etcd refuses the daemon: it says so and runs what it has.
    env.write("password", "wrong\n");
    drop(d);
    let d = env.start();
    running(&d, "b", 1002);
    let problem = etcd_status(&d).problem.unwrap_or_default();
    assert!(problem.contains("authenticate"), "{problem}");
}

#[test]
fn a_daemon_started_on_an_invalid_value_runs_the_last_version_and_says_why() {
    let etcd = Etcd::start();
    let (env, d, _) = start(&etcd, &value(1001));
    running(&d, "b", 1001);
    drop(d);
    let bad = etcd.put(KEY, "scripts:\n  b:\n    comand: \"sleep 5\"\n");
    let d = env.start();
    running(&d, "b", 1001);
    let problem = etcd_status(&d).problem.unwrap_or_default();
    assert!(
        problem.contains(&format!("the value at revision {bad} was not applied")),
        "{problem}"
    );
    assert!(problem.contains("version 1 keeps running"), "{problem}");
    let log = d.log_text();
    assert!(
        log.contains(&format!("at revision {bad} is invalid")),
        "the log says why at start: {log}"
    );
    // The next good put applies.
    let good = etcd.put(KEY, &value(1002));
    running(&d, "b", 1002);
    wait_running_revision(&d, good);
}
