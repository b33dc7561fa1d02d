//! Readiness and reloads that verify themselves: a service is `starting` until it has run for
//! its `ready_after` (event `ready`), an exit before is a failed start; `ctl reload --wait`
//! and `ctl start|restart --wait` return once what they started is ready (0) or not (6); a
//! save that puts a service into a crash loop is rolled back by the daemon when
//! `reload.on_failure: rollback` (files on disk back, `auto-rollback` in the history, exit 3
//! for `reload --wait`), and kept with `on_failure: keep` (exit 6); a later apply drops a
//! verification in progress.

use ctl::history::HistoryJson;
use ctl::output::ControlJson;
use scriptd_e2e::{is_phase, read, wait_for, Daemon, Env, Events, DEADLINE};

fn history(d: &Daemon) -> HistoryJson {
    let out = d.ctl_ok(&["history", "--output", "json"]);
    serde_json::from_str(&out).expect("history JSON parses strictly")
}

fn control_json(d: &Daemon, args: &[&str]) -> (i32, ControlJson) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let r = d.ctl(&all);
    let doc = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("`ctl {all:?}` JSON does not parse ({e}): {r:?}"));
    (r.code, doc)
}

#[test]
fn a_service_is_starting_until_ready_after_then_ready() {
    let env = Env::new(
        "scripts:
  svc:
    command: \"sleep 30\"
    ready_after: 300ms
  slow:
    command: \"sleep 30\"
    ready_after: 1h
",
    );
    let d = env.start();
    // `slow` stays starting once spawned (a loaded machine may show it before its first
    // start): not up for `status --check`, and a wait for it times out.
    wait_for("slow to be starting", DEADLINE, || {
        (d.script("slow").state == "starting").then_some(())
    });
    let check = d.ctl(&["status", "--check", "slow"]);
    assert_eq!((check.code, check.stdout.trim()), (6, "slow: starting"));
    let (code, doc) = control_json(&d, &["start", "slow", "--wait", "--timeout", "200ms"]);
    let outcome = doc.outcome.expect("--wait names the outcome");
    assert_eq!(
        (code, outcome.outcome.as_str()),
        (6, "timeout"),
        "{outcome:?}"
    );

    let mut ev = Events::follow(&d);
    let restarted = d.ctl_ok(&["restart", "svc"]);
    let started = ev.wait("svc started", |e| {
        e.script.as_deref() == Some("svc") && e.event.as_deref() == Some("started")
    });
    let ready = ev.wait("svc ready", |e| {
        e.script.as_deref() == Some("svc") && e.event.as_deref() == Some("ready")
    });
    assert_eq!(ready.run_id, started.run_id, "{restarted}");
    assert_eq!(d.script("svc").state, "running");
    let run = started.run_id.expect("run id");
    let log = read(&env.path("logs/svc.log"));
    assert!(
        log.contains(&format!("run {run} ready: alive for 300ms")),
        "a sys line on the change: {log}"
    );
}

#[test]
fn a_service_that_exits_before_ready_after_is_a_failed_start() {
    // Exit 0 with `restart: on-failure` was a success and stayed idle; before `ready_after`
    // it is a failed start, restarted with the backoff.
    let env = Env::new(
        "scripts:
  quick:
    command: \"exit 0\"
    ready_after: 1s
    restart: on-failure
    restart_delay: 50ms
",
    );
    let d = env.start();
    d.wait_script("quick", "restarted after failed starts", |s| {
        s.run_count >= 3
    });
    let log = read(&env.path("logs/quick.log"));
    assert!(
        log.contains("a failed start: it ended before ready_after (1s)"),
        "{log}"
    );
    assert!(
        log.contains("restarting in 100ms (restart 2"),
        "backoff: {log}"
    );
}

/// A manual config (watcher off) with `reload:` as given and two services.
fn manual(reload: &str, svc: &str) -> String {
    format!(
        "reload: {reload}
scripts:
  keep:
    command: \"sleep 30\"
    ready_after: 100ms
  svc:
    command: \"{svc}\"
    ready_after: 300ms
    restart_delay: 50ms
"
    )
}

#[test]
fn reload_wait_is_0_when_what_it_started_is_ready() {
    let env = Env::manual(&manual("{ verify: 10s }", "sleep 30"));
    let d = env.start();
    env.set_manual(&format!(
        "{}  job:\n    command: \"true\"\n    interval: 1h\n",
        manual("{ verify: 10s }", "sleep 31")
    ));
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!((code, r.result.as_str()), (0, "applied"), "{r:?}");
    let outcomes: Vec<(&str, &str)> = r
        .verification
        .iter()
        .map(|v| (v.script.as_str(), v.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [("job", "succeeded"), ("svc", "ready")], "{r:?}");
    assert_eq!(d.script("svc").state, "running");
}

#[test]
fn a_crash_looping_save_is_rolled_back_automatically() {
    let env = Env::new(&manual("{ verify: 1s, on_failure: rollback }", "sleep 30"));
    let before = read(&env.config());
    let d = env.start();
    let keep = d
        .wait_script("keep", "running", |s| s.state == "running")
        .pid;
    let mut ev = Events::follow(&d);
    env.write(
        "scriptd.yaml",
        &before.replace(
            "command: \"sleep 30\"\n    ready_after: 300ms",
            "command: \"exit 3\"\n    ready_after: 300ms",
        ),
    );
    let applied = ev.wait("the save applied", |e| is_phase(e, "applied"));
    let attempt = applied.attempt_id;
    let rolled = ev.wait("the auto-rollback", |e| is_phase(e, "auto-rolled-back"));
    assert_eq!(rolled.attempt_id, attempt, "{}", ev.dump());
    let reason = rolled.message.clone().unwrap_or_default();
    assert!(reason.contains("svc crash-looping"), "{reason}");
    assert!(rolled.rollback_attempt_id.is_some(), "{rolled:?}");

    // The file on disk holds the previous bytes again, the history says why.
    env.wait_file("scriptd.yaml", &before);
    let h = history(&d);
    let top = &h.entries[0];
    assert_eq!(
        (top.source.as_str(), top.result.as_str(), top.rollback_to),
        ("auto-rollback", "applied", Some(1)),
        "{top:?}"
    );
    assert!(
        top.message
            .as_deref()
            .unwrap_or_default()
            .contains("svc crash-looping"),
        "{top:?}"
    );
    let table = d.ctl_ok(&["history"]);
    assert!(table.contains("auto-rollback-to-1"), "{table}");

    // Nothing else was touched; the service runs its old command again.
    assert_eq!(d.script("keep").pid, keep, "keep kept its pid");
    d.wait_script("svc", "running the old command", |s| s.state == "running");
    let status = d.status();
    let last = status
        .last_auto_rollback
        .expect("status shows the auto-rollback");
    assert_eq!((last.failed_version, last.restored_version), (2, 1));
    assert!(last.reason.contains("svc crash-looping"), "{last:?}");
    let table = d.ctl_ok(&["status"]);
    assert!(table.contains("auto-rollback"), "{table}");
}

#[test]
fn reload_wait_is_3_after_an_auto_rollback_and_6_when_kept() {
    let env = Env::manual(&manual("{ verify: 1s, on_failure: rollback }", "sleep 30"));
    let d = env.start();
    let good = read(&env.config());
    env.set_manual(&manual("{ verify: 1s, on_failure: rollback }", "exit 3"));
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!((code, r.result.as_str()), (3, "auto-rolled-back"), "{r:?}");
    assert_eq!(r.rollback_version, Some(3), "{r:?}");
    assert_eq!(r.verification[0].outcome, "crash-looping", "{r:?}");
    assert_eq!(read(&env.config()), good, "the files are back");
    assert!(d.status().last_auto_rollback.is_some());

    // `keep`: the version stays, exit 6; the last auto-rollback is gone with the new version.
    env.set_manual(&manual("{ verify: 1s, on_failure: keep }", "exit 4"));
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!((code, r.result.as_str()), (6, "not-verified"), "{r:?}");
    let status = d.status();
    assert_eq!(status.running_version, r.version);
    assert!(
        status.last_auto_rollback.is_none(),
        "{:?}",
        status.last_auto_rollback
    );
}

#[test]
fn restart_wait_is_0_when_ready_and_6_when_it_exits() {
    let env = Env::new(
        "scripts:
  svc:
    command: \"sleep 30\"
    ready_after: 200ms
  bad:
    command: \"exit 2\"
    restart: never
    ready_after: 200ms
",
    );
    let d = env.start();
    let (code, doc) = control_json(&d, &["restart", "svc", "--wait"]);
    let outcome = doc.outcome.expect("outcome");
    assert_eq!(
        (code, outcome.outcome.as_str()),
        (0, "ready"),
        "{outcome:?}"
    );
    assert_eq!(outcome.run_id, doc.run_id);

    let r = d.ctl(&["restart", "bad", "--wait"]);
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.stdout.contains("bad: not ready: exited (exit code 2"),
        "{r:?}"
    );
    // Several targets: a row each, the worst code.
    let r = d.ctl(&["restart", "svc", "bad", "--wait", "--timeout", "5s"]);
    assert_eq!(r.code, 6, "{r:?}");
}

#[test]
fn a_later_apply_drops_the_verification_in_progress() {
    // A window long enough for the second reload to come inside it even on a loaded machine;
    // the dropped verification's window then passes with nothing rolled back.
    let reload = "{ verify: 2s, on_failure: rollback }";
    let env = Env::manual(&manual(reload, "sleep 30"));
    let d = env.start();
    env.set_manual(&manual(reload, "exit 3"));
    // While attempt 1 is verified, a good version applies: attempt 1's verification is
    // dropped, its waiter told so, and nothing is rolled back.
    let (r1, _) = std::thread::scope(|s| {
        let first = s.spawn(|| {
            d.ctl_command(&["reload", "--wait", "--output", "json"])
                .output()
        });
        scriptd_e2e::wait_for("the bad version to apply", scriptd_e2e::DEADLINE, || {
            (d.status().running_version == 2).then_some(())
        });
        env.set_manual(&manual(reload, "sleep 31"));
        let (code, r) = d.reload(&["--wait"]);
        assert_eq!((code, r.result.as_str()), (0, "applied"), "{r:?}");
        (first.join().expect("join"), r)
    });
    let out = r1.expect("run ctl");
    let doc: ctl::output::ReloadJson =
        serde_json::from_slice(&out.stdout).expect("reload JSON parses strictly");
    assert_eq!(
        (out.status.code(), doc.result.as_str()),
        (Some(6), "not-verified"),
        "{doc:?}"
    );
    let message = doc.message.unwrap_or_default();
    assert!(
        message.contains("before this one was verified"),
        "{message}"
    );
    scriptd_e2e::assert_stays(
        "no auto-rollback",
        std::time::Duration::from_millis(2500),
        || d.status().running_version == 3,
    );
    assert!(
        history(&d)
            .entries
            .iter()
            .all(|e| e.source != "auto-rollback"),
        "nothing was rolled back"
    );
}
