//! Hot reload end to end: the change-impact table of DESIGN.md row by row, every editor save
//! pattern the watcher must cope with, bursts of saves, broken saves, plans, dry runs,
//! rollback of a failed apply, refused permissions, `watch: false` with SIGHUP, and the
//! reload events.
//!
//! Nothing here waits with a bare sleep: it polls with deadlines or follows
//! `ctl events --output json`. The few fixed windows ([`assert_stays`]) only observe that
//! something does *not* happen, polling all along; the other sleeps are part of a simulated
//! edit (an editor's pause between truncating and writing, the pace of a burst of saves).

use ctl::output::{ChangeJson, EventJson, ReloadJson, ScriptJson};
use scriptd_e2e::{
    alive, assert_stays, is_phase, now_ms, read, wait_for, Daemon, Env, Events, DAEMON_SECTION,
    DEADLINE, NO_WATCH_SECTION,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ helpers

/// Two scripts no test changes: every reload must leave them alone.
const BYSTANDERS: &str = "  keep_svc:\n    command: \"exec sleep 1000\"\n  keep_per:\n    command: \"true\"\n    interval: 1h\n";

/// A shell loop that blocks until `out/release` exists: a run that ends when the test says.
const BLOCK: &str = "while [ ! -e out/release ]; do sleep 0.02; done";

/// `env` with an `out/` directory for the scripts' marker files (a subdirectory: the watcher
/// does not see writes there).
fn with_out(env: Env) -> Env {
    fs::create_dir_all(env.path("out")).expect("create out dir");
    env
}

/// An env with the harness daemon section (watch on) and `out/`.
fn new_env(body: &str) -> Env {
    with_out(Env::new(body))
}

/// An env whose daemon section has `watch: false`, and `out/`.
fn manual_env(body: &str) -> Env {
    with_out(Env::manual(body))
}

/// Unix ms of an RFC 3339 UTC time as `ctl` prints it (`2026-01-02T03:04:05.678Z`).
fn rfc3339_ms(t: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 {
        t.get(r)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("malformed time {t:?}"))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mi, ss) = (num(11..13), num(14..16), num(17..19));
    let ms = if t.as_bytes().get(19) == Some(&b'.') {
        num(20..23)
    } else {
        0
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3_600 + mi * 60 + ss) * 1_000 + ms
}

/// Alive: `running`, or `starting` (a service not yet alive for its `ready_after`).
fn running(s: &ScriptJson) -> bool {
    matches!(s.state.as_str(), "running" | "starting") && s.pid.is_some()
}

fn pid_of(s: &ScriptJson) -> u32 {
    s.pid
        .unwrap_or_else(|| panic!("{} has no pid: {s:?}", s.name))
}

/// Whether the status lists a script of that name.
fn listed(d: &Daemon, name: &str) -> bool {
    d.status().scripts.iter().any(|s| s.name == name)
}

/// `ctl reload` that must apply; returns the document.
fn reload_applied(d: &Daemon) -> ReloadJson {
    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str()),
        (0, "applied"),
        "ctl reload: {r:?}"
    );
    r
}

/// The change of `script`.`field` in a plan.
fn change<'a>(changes: &'a [ChangeJson], script: &str, field: &str) -> &'a ChangeJson {
    changes
        .iter()
        .find(|c| c.script == script && c.field == field)
        .unwrap_or_else(|| panic!("no change {script}.{field} in {changes:#?}"))
}

fn assert_change(changes: &[ChangeJson], script: &str, field: &str, impact: &str, outcome: &str) {
    let c = change(changes, script, field);
    assert_eq!(
        (c.impact.as_str(), c.outcome.as_str()),
        (impact, outcome),
        "{script}.{field}: {c:?}"
    );
}

/// `name` still runs its first process, `pid`: not restarted.
fn assert_not_restarted(d: &Daemon, name: &str, pid: u32) {
    let s = d.script(name);
    assert_eq!(
        (s.pid, s.run_count),
        (Some(pid), 1),
        "{name} was restarted: {s:?}"
    );
    assert!(alive(pid), "{name}'s process {pid} is gone");
}

/// What must not move for the bystanders.
#[derive(Debug)]
struct Bystanders {
    svc_pid: u32,
    per_runs: u64,
    per_last_start: String,
    per_next_ms: i64,
}

/// Records the bystanders once settled: the service running, the periodic script's first
/// run over, and long enough ago that rescheduling it "from now" would show.
fn bystanders(d: &Daemon) -> Bystanders {
    let svc = d.wait_script("keep_svc", "running", running);
    let per = d.wait_script("keep_per", "first run over, 500ms ago", |s| {
        s.state == "waiting"
            && s.run_count == 1
            && s.last_start
                .as_deref()
                .is_some_and(|t| now_ms() - rfc3339_ms(t) > 500)
    });
    Bystanders {
        svc_pid: pid_of(&svc),
        per_runs: per.run_count,
        per_last_start: per.last_start.clone().expect("last start"),
        per_next_ms: rfc3339_ms(per.next_run.as_deref().expect("keep_per has a next run")),
    }
}

/// Unchanged scripts keep their pid and their schedule.
fn assert_untouched(d: &Daemon, b: &Bystanders) {
    let svc = d.script("keep_svc");
    assert_eq!(svc.pid, Some(b.svc_pid), "keep_svc was restarted: {svc:?}");
    assert!(alive(b.svc_pid), "keep_svc's process is gone");
    assert_eq!(svc.run_count, 1, "keep_svc was restarted: {svc:?}");
    let per = d.script("keep_per");
    assert_eq!(per.run_count, b.per_runs, "keep_per ran again: {per:?}");
    assert_eq!(per.last_start.as_deref(), Some(b.per_last_start.as_str()));
    let next = rfc3339_ms(per.next_run.as_deref().expect("keep_per lost its next run"));
    // The next run is stamped once, with the start it is computed from: not a millisecond
    // of drift between two `status`.
    assert_eq!(
        next,
        b.per_next_ms,
        "keep_per was rescheduled: next run moved by {} ms",
        next - b.per_next_ms
    );
}

/// Whether `e` is the script event `event` (`started`, `exited`, ...) of `script`.
fn is_script_event(e: &EventJson, script: &str, event: &str) -> bool {
    e.kind == "script" && e.script.as_deref() == Some(script) && e.event.as_deref() == Some(event)
}

// ------------------------------------------------------------------ change impact, row by row

#[test]
fn added_service_starts_and_added_periodic_runs() {
    let body = format!("scripts:\n{BYSTANDERS}");
    let env = manual_env(&body);
    let d = env.start();
    let b = bystanders(&d);
    let started = d.status().daemon.started_at.expect("daemon start time");
    assert!(
        (rfc3339_ms(&started) - now_ms()).abs() < 60_000,
        "time parsing is off: {started}"
    );

    env.set_manual(&format!(
        "{body}  new_svc:\n    command: \"echo up >> out/new_svc; exec sleep 1000\"\n  \
             new_per:\n    command: \"echo ran >> out/new_per\"\n    interval: 1h\n"
    ));
    let r = reload_applied(&d);
    assert_eq!(r.version, 2);
    assert_change(&r.changes, "new_svc", "*", "start", "applied");
    assert_change(&r.changes, "new_per", "*", "start", "applied");
    assert_eq!(
        r.changes.len(),
        2,
        "only the two new scripts changed: {:#?}",
        r.changes
    );

    // `ctl reload` returns once the new version is live: the service runs already.
    let svc = d.script("new_svc");
    assert!(
        running(&svc) && alive(pid_of(&svc)),
        "new_svc not started: {svc:?}"
    );
    assert_eq!(svc.kind, "service");
    env.wait_file("out/new_svc", "up\n");
    // The periodic script first runs when added, then every interval from that start.
    env.wait_file("out/new_per", "ran\n");
    let per = d.wait_script("new_per", "first run over", |s| s.state == "waiting");
    assert_eq!(per.run_count, 1);
    let (start, next) = (
        rfc3339_ms(per.last_start.as_deref().expect("last start")),
        rfc3339_ms(per.next_run.as_deref().expect("next run")),
    );
    assert!(
        (next - start - 3_600_000).abs() < 1_000,
        "next run not 1h after the start: {per:?}"
    );
    assert_untouched(&d, &b);
}

#[test]
fn removed_scripts_are_stopped_and_forgotten() {
    let gone = format!(
        "  gone_svc:\n    command: \"exec sleep 1000\"\n  gone_per:\n    command: \"{BLOCK}\"\n    \
         interval: 1h\n"
    );
    let env = manual_env(&format!("scripts:\n{gone}{BYSTANDERS}"));
    let d = env.start();
    let svc = pid_of(&d.wait_script("gone_svc", "running", running));
    let per = pid_of(&d.wait_script("gone_per", "a run in progress", running));
    let b = bystanders(&d);

    env.set_manual(&format!("scripts:\n{BYSTANDERS}"));
    let r = reload_applied(&d);
    assert_change(&r.changes, "gone_svc", "*", "stop", "applied");
    assert_change(&r.changes, "gone_per", "*", "stop", "applied");
    // Stopped (gracefully) before `ctl reload` returned, and forgotten.
    assert!(!alive(svc), "gone_svc's process {svc} still runs");
    assert!(!alive(per), "gone_per's process {per} still runs");
    assert!(
        !listed(&d, "gone_svc") && !listed(&d, "gone_per"),
        "{:?}",
        d.status()
    );
    assert_eq!(d.status().running_version, 2);
    // Its logs stay.
    assert!(
        env.path("logs/gone_svc.log").exists(),
        "the removed script's log file is gone"
    );
    assert_untouched(&d, &b);
}

#[test]
fn disabling_stops_a_service_now_and_lets_a_periodic_run_finish() {
    // A short interval, so that a periodic script that kept being scheduled would show.
    let scripts = |enabled: bool| {
        format!(
            "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    enabled: {enabled}\n  per:\n    \
             command: \"echo start >> out/per; {BLOCK}; echo end >> out/per\"\n    \
             interval: 300ms\n    enabled: {enabled}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts(true));
    let d = env.start();
    let svc = pid_of(&d.wait_script("svc", "running", running));
    let per = pid_of(&d.wait_script("per", "a run in progress", running));
    env.wait_file("out/per", "start\n");
    let b = bystanders(&d);

    env.set_manual(&scripts(false));
    let r = reload_applied(&d);
    assert_change(&r.changes, "svc", "enabled", "stop", "applied");
    assert_change(&r.changes, "per", "enabled", "stop", "applied");

    // The service is stopped now.
    assert!(
        !alive(svc),
        "svc's process {svc} still runs after disabling"
    );
    let s = d.script("svc");
    assert_eq!((s.state.as_str(), s.pid), ("disabled", None), "{s:?}");
    // The periodic run in progress goes on.
    let p = d.script("per");
    assert_eq!((p.state.as_str(), p.pid), ("running", Some(per)), "{p:?}");
    assert!(alive(per));
    assert_eq!(p.next_run, None, "a disabled script has no next run: {p:?}");

    // It ends by itself, unharmed...
    fs::write(env.path("out/release"), "").expect("release the run");
    let p = d.wait_script("per", "its run to end", |s| s.pid.is_none());
    assert_eq!(p.state, "disabled");
    let exit = p.last_exit.expect("last exit");
    assert_eq!(
        (exit.code, exit.signal),
        (Some(0), None),
        "the run was killed"
    );
    env.wait_file("out/per", "start\nend\n");
    assert!(!alive(per));
    // ...and no new run follows (the interval is 300ms).
    assert_stays(
        "no new run of the disabled scripts",
        Duration::from_millis(800),
        || {
            let st = d.status();
            st.scripts
                .iter()
                .filter(|s| s.name == "per" || s.name == "svc")
                .all(|s| s.state == "disabled" && s.pid.is_none() && s.run_count == 1)
        },
    );
    assert_eq!(read(&env.path("out/per")), "start\nend\n");
    assert_untouched(&d, &b);
}

#[test]
fn enabling_starts_like_an_added_script() {
    let scripts = |enabled: bool| {
        format!(
            "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    enabled: {enabled}\n  per:\n    \
             command: \"echo ran >> out/per\"\n    interval: 1h\n    enabled: {enabled}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts(false));
    let d = env.start();
    let b = bystanders(&d);
    for name in ["svc", "per"] {
        let s = d.script(name);
        assert_eq!(
            (s.state.as_str(), s.pid, s.run_count),
            ("disabled", None, 0),
            "{s:?}"
        );
    }

    env.set_manual(&scripts(true));
    let r = reload_applied(&d);
    assert_change(&r.changes, "svc", "enabled", "start", "applied");
    assert_change(&r.changes, "per", "enabled", "start", "applied");
    let s = d.script("svc");
    assert!(running(&s) && alive(pid_of(&s)), "svc not started: {s:?}");
    env.wait_file("out/per", "ran\n");
    let p = d.wait_script("per", "first run over", |s| s.state == "waiting");
    assert_eq!(p.run_count, 1);
    assert!(p.next_run.is_some());
    assert_untouched(&d, &b);
}

#[test]
fn interval_change_reschedules_from_the_last_start_and_kills_nothing() {
    let scripts = |interval: &str| {
        format!(
            "scripts:\n  per:\n    command: \"{BLOCK}\"\n    interval: {interval}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts("1h"));
    let d = env.start();
    let before = d.wait_script("per", "a run in progress", running);
    let pid = pid_of(&before);
    let start = rfc3339_ms(before.last_start.as_deref().expect("last start"));
    let b = bystanders(&d);
    // Long enough after the start that a reschedule from "now" would show.
    wait_for("per's run to have started 500ms ago", DEADLINE, || {
        (now_ms() - start > 500).then_some(())
    });

    env.set_manual(&scripts("2h"));
    let r = reload_applied(&d);
    let c = change(&r.changes, "per", "interval");
    assert_eq!(
        (c.impact.as_str(), c.outcome.as_str()),
        ("next-run", "applied"),
        "{c:?}"
    );
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some("1h"), Some("2h"))
    );

    let after = d.script("per");
    assert_eq!(
        after.pid,
        Some(pid),
        "the run in progress was touched: {after:?}"
    );
    assert!(alive(pid));
    assert_eq!(after.last_start, before.last_start);
    assert_eq!(after.interval_ms, Some(7_200_000));
    let next = rfc3339_ms(after.next_run.as_deref().expect("next run"));
    // The schedule's base is the run's start, one stamp for both.
    assert_eq!(
        next - start,
        7_200_000,
        "next run should be the last start + 2h, is {} ms off",
        next - start - 7_200_000
    );

    fs::write(env.path("out/release"), "").expect("release the run");
    let p = d.wait_script("per", "its run to end", |s| s.state == "waiting");
    let exit = p.last_exit.expect("last exit");
    assert_eq!((exit.code, exit.signal), (Some(0), None));
    assert_eq!(p.run_count, 1);
    let next = rfc3339_ms(p.next_run.as_deref().expect("next run"));
    assert_eq!(
        next - start,
        7_200_000,
        "the end of the run moved the schedule"
    );
    assert_untouched(&d, &b);
}

#[test]
fn timeout_change_applies_to_the_next_run_only() {
    let scripts = |timeout: &str| {
        format!(
            "scripts:\n  per:\n    command: \"{BLOCK}\"\n    interval: 1h\n    timeout: {timeout}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts("30s"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("per", "a run in progress", running));
    let b = bystanders(&d);

    env.set_manual(&scripts("300ms"));
    let r = reload_applied(&d);
    assert_change(&r.changes, "per", "timeout", "next-run", "applied");
    // The current run keeps its 30s deadline: well past 300ms it still runs.
    assert_stays(
        "the run in progress keeps running",
        Duration::from_millis(900),
        || {
            let s = d.script("per");
            s.pid == Some(pid) && s.state == "running" && alive(pid)
        },
    );
    fs::write(env.path("out/release"), "").expect("release the run");
    let p = d.wait_script("per", "its run to end", |s| s.state == "waiting");
    let exit = p.last_exit.expect("last exit");
    assert_eq!((exit.code, exit.timed_out), (Some(0), false), "{exit:?}");

    // The next run has the new 300ms timeout.
    fs::remove_file(env.path("out/release")).expect("re-arm the blocking run");
    let r = d.ctl(&["run", "per"]);
    assert_eq!(r.code, 0, "ctl run: {r:?}");
    let p = d.wait_script("per", "the next run to time out", |s| {
        s.run_count == 2 && s.pid.is_none()
    });
    let exit = p.last_exit.expect("last exit");
    assert!(
        exit.timed_out,
        "the next run did not use the new timeout: {exit:?}"
    );
    assert_untouched(&d, &b);
}

#[test]
fn log_settings_apply_live_without_touching_the_process() {
    let scripts = |lines: u32, keep: u32| {
        format!(
            "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    max_log_lines: {lines}\n    \
             log: {{ keep: {keep}, max_bytes: {keep}MiB }}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts(100, 3));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);

    env.set_manual(&scripts(5, 1));
    let r = reload_applied(&d);
    for field in ["max_log_lines", "log.keep", "log.max_bytes"] {
        assert_change(&r.changes, "svc", field, "live", "applied");
    }
    assert_not_restarted(&d, "svc", pid);
    assert_untouched(&d, &b);
}

#[test]
fn restart_fields_restart_a_service_gracefully() {
    let env = manual_env("scripts: {}\n");
    let out = env.path("out/svc").display().to_string();
    // A config of the service: [command tag, V, working_dir, stop_signal, restart]. Each
    // process it starts appends `line(config)` to out/svc.
    let body = |[cmd, v, wd, sig, restart]: [&str; 5]| {
        format!(
            "scripts:\n  svc:\n    command: 'echo \"{cmd} $V $(pwd)\" >> {out}; exec sleep 1000'\n    \
             env: {{ V: {v} }}\n    working_dir: {wd}\n    stop_signal: {sig}\n    \
             restart: {restart}\n{BYSTANDERS}"
        )
    };
    let line = |[cmd, v, wd, ..]: [&str; 5]| format!("{cmd} {v} {wd}\n");
    let base = env.dir.path().display().to_string();
    let wd2 = env.path("wd2");
    fs::create_dir_all(&wd2).expect("create wd2");
    let wd2 = wd2.display().to_string();
    let (base, wd2) = (base.as_str(), wd2.as_str());
    let first = ["c1", "a", base, "TERM", "on-failure"];
    env.set_manual(&body(first));
    let d = env.start();
    let mut pid = pid_of(&d.wait_script("svc", "running", running));
    let mut expected = line(first);
    env.wait_file("out/svc", &expected);
    let b = bystanders(&d);

    // (field changed, the config after the change)
    let steps = [
        ("command", ["c2", "a", base, "TERM", "on-failure"]),
        ("env.V", ["c2", "b", base, "TERM", "on-failure"]),
        ("working_dir", ["c2", "b", wd2, "TERM", "on-failure"]),
        ("stop_signal", ["c2", "b", wd2, "INT", "on-failure"]),
        ("restart", ["c2", "b", wd2, "INT", "always"]),
    ];
    let mut old = first;
    for (field, config) in steps {
        env.set_manual(&body(config));
        let r = reload_applied(&d);
        assert_change(&r.changes, "svc", field, "restart", "applied");
        assert_eq!(r.changes.len(), 1, "{field}: {:#?}", r.changes);
        // Restarted before `ctl reload` returned: a new process, the old one gone.
        let s = d.script("svc");
        let new_pid = pid_of(&s);
        assert_ne!(new_pid, pid, "{field}: svc was not restarted");
        assert!(!alive(pid), "{field}: the old process {pid} still runs");
        assert!(running(&s) && alive(new_pid), "{field}: {s:?}");
        // Stopped with the signal configured until now (SIGINT after the stop_signal step).
        let exit = s.last_exit.expect("last exit");
        assert_eq!(
            exit.signal,
            Some(format!("SIG{}", old[3])),
            "{field}: not a graceful stop: {exit:?}"
        );
        expected.push_str(&line(config));
        env.wait_file("out/svc", &expected);
        assert_untouched(&d, &b);
        (pid, old) = (new_pid, config);
    }
    assert_eq!(d.status().running_version, 6);
}

#[test]
fn periodic_command_change_during_a_run_is_scheduled_for_its_end() {
    // A 1s interval: the ticks during the blocked run are skipped, and the first tick after
    // it is what must run the new command.
    let scripts = |tag: &str| {
        format!(
            "scripts:\n  per:\n    command: \"echo {tag}-start >> out/per; {BLOCK}; echo {tag}-end >> out/per\"\n    \
             interval: 1s\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts("v1"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("per", "a run in progress", running));
    env.wait_file("out/per", "v1-start\n");
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    env.set_manual(&scripts("v2"));
    let r = reload_applied(&d);
    assert_change(&r.changes, "per", "command", "restart", "scheduled");
    assert!(
        change(&r.changes, "per", "command").reason.is_some(),
        "a scheduled change says why"
    );
    assert_eq!(r.version, 2);
    let s = d.script("per");
    assert_eq!(s.pid, Some(pid), "the run in progress was touched: {s:?}");
    assert!(alive(pid));
    assert_eq!(s.pending_changes, vec!["command".to_owned()]);

    // The run finishes with the old command...
    fs::write(env.path("out/release"), "").expect("release the run");
    let exited = ev.wait("per's run to exit", |e| is_script_event(e, "per", "exited"));
    assert_eq!(exited.pid, Some(pid));
    assert_eq!(
        exited.exit.as_ref().and_then(|x| x.code),
        Some(0),
        "{exited:?}"
    );
    // ...then, and only then, the change is applied...
    let applied = ev.wait("the scheduled change to be applied", |e| {
        is_script_event(e, "per", "scheduled-change-applied")
    });
    let time = |e: &EventJson| rfc3339_ms(e.time.as_deref().expect("event time"));
    assert!(
        applied.seq > exited.seq && time(&applied) >= time(&exited),
        "applied before the run ended:\n{}",
        ev.dump()
    );
    assert!(
        applied
            .message
            .as_deref()
            .is_some_and(|m| m.contains("command")),
        "{applied:?}"
    );
    assert!(
        !ev.seen()
            .iter()
            .any(|e| is_script_event(e, "per", "started")),
        "per started again before its run ended:\n{}",
        ev.dump()
    );
    // ...and the next scheduled tick (nobody runs it by hand) uses the new command.
    let next = ev.wait("the next scheduled run", |e| {
        is_script_event(e, "per", "started")
    });
    assert!(next.seq > applied.seq && time(&next) >= time(&applied));
    assert_ne!(next.pid, Some(pid));
    wait_for("the next run to use the new command", DEADLINE, || {
        read(&env.path("out/per"))
            .starts_with("v1-start\nv1-end\nv2-start\nv2-end\n")
            .then_some(())
    });
    let s = d.script("per");
    assert!(s.pending_changes.is_empty(), "{s:?}");
    assert!(s.run_count >= 2, "{s:?}");
    assert_untouched(&d, &b);
}

#[test]
fn restart_field_change_of_an_idle_periodic_script_applies_to_its_next_run() {
    let scripts = |v: &str| {
        format!(
            "scripts:\n  per:\n    command: 'echo \"$V\" >> out/per'\n    env: {{ V: {v} }}\n    \
             interval: 1h\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&scripts("one"));
    let d = env.start();
    env.wait_file("out/per", "one\n");
    let before = d.wait_script("per", "first run over", |s| s.state == "waiting");
    let b = bystanders(&d);

    env.set_manual(&scripts("two"));
    let r = reload_applied(&d);
    // No run in progress: nothing to wait for, the next run uses it.
    assert_change(&r.changes, "per", "env.V", "restart", "applied");
    assert_eq!(r.changes.len(), 1, "{:#?}", r.changes);
    let after = d.script("per");
    assert_eq!(
        (after.state.as_str(), after.pid, after.run_count),
        ("waiting", None, 1),
        "an idle periodic script was run by the reload: {after:?}"
    );
    assert!(after.pending_changes.is_empty(), "{after:?}");
    assert_eq!(after.last_start, before.last_start);
    let next = |s: &ScriptJson| rfc3339_ms(s.next_run.as_deref().expect("next run"));
    assert_eq!(
        next(&after),
        next(&before),
        "per was rescheduled: {before:?} -> {after:?}"
    );
    assert_eq!(read(&env.path("out/per")), "one\n");
    assert_untouched(&d, &b);

    let r = d.ctl(&["run", "per"]);
    assert_eq!(r.code, 0, "ctl run: {r:?}");
    env.wait_file("out/per", "one\ntwo\n");
    assert_untouched(&d, &b);
}

#[test]
fn daemon_section_change_rejects_the_whole_reload() {
    let env = new_env(&format!(
        "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    env: {{ V: a }}\n{BYSTANDERS}"
    ));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);

    // daemon.log_dir and a script change in the same save.
    env.write(
        "scriptd.yaml",
        &format!(
            "{}scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    env: {{ V: b }}\n{BYSTANDERS}",
            DAEMON_SECTION.replace("log_dir: logs\n", "log_dir: logs2\n")
        ),
    );
    let r = d.ctl(&["reload"]);
    assert_eq!(r.code, 3, "ctl reload: {r:?}");
    assert!(
        r.stdout.contains("daemon.log_dir"),
        "the key is not named: {r:?}"
    );

    let (code, j) = d.reload(&[]);
    assert_eq!((code, j.result.as_str()), (3, "rejected"), "{j:?}");
    assert_eq!(j.version, 1);
    assert_change(
        &j.changes,
        "",
        "daemon.log_dir",
        "daemon-restart",
        "rejected",
    );
    assert_change(&j.changes, "svc", "env.V", "restart", "rejected");
    assert!(
        j.message
            .as_deref()
            .is_some_and(|m| m.contains("daemon.log_dir")),
        "{j:?}"
    );

    let st = d.status();
    assert_eq!(st.running_version, 1);
    assert_not_restarted(&d, "svc", pid);
    assert!(!env.path("logs2").exists(), "the new log_dir was acted on");
    assert_untouched(&d, &b);
}

// ------------------------------------------------------------------ editor save patterns

/// The `svc` entry of a `scripts:` map: a service that appends its `V` to `out/svc`.
fn svc_def(v: &str) -> String {
    format!(
        "  svc:\n    command: 'echo \"$V\" >> out/svc; exec sleep 1000'\n    \
         env: {{ V: \"{v}\" }}\n"
    )
}

/// A service that appends its `V` to `out/svc`, plus the bystanders.
fn svc_body(v: &str) -> String {
    format!("scripts:\n{}{BYSTANDERS}", svc_def(v))
}

/// Which file of a watch case holds `svc`.
#[derive(Clone, Copy)]
enum SvcIn {
    /// The main file (with the bystanders).
    Main,
    /// `conf.d/svc.yaml`, included by the main file (which holds the bystanders).
    Include,
}

impl SvcIn {
    /// The file, relative to the env.
    fn rel(self) -> &'static str {
        match self {
            Self::Main => "scriptd.yaml",
            Self::Include => "conf.d/svc.yaml",
        }
    }

    /// The whole text of that file with `svc`'s `V` = `v`.
    fn text(self, v: &str) -> String {
        match self {
            Self::Main => format!("{DAEMON_SECTION}{}", svc_body(v)),
            Self::Include => format!("scripts:\n{}", svc_def(v)),
        }
    }

    /// A new env with `svc`'s `V` = `v`.
    fn env(self, v: &str) -> Env {
        match self {
            Self::Main => new_env(&svc_body(v)),
            Self::Include => {
                let env = new_env(&format!(
                    "include: [\"conf.d/*.yaml\"]\nscripts:\n{BYSTANDERS}"
                ));
                env.write(self.rel(), &self.text(v));
                env
            }
        }
    }
}

/// What the watcher logs when it reads a file it waited for in vain (still open for writing
/// or empty after 1 s): no editor save pattern should need that.
const READ_ANYWAY: &str = "reading the config anyway";

/// Proves that nothing was applied or refused beyond what `ev` saw: a `ctl reload`, queued
/// after every reload already asked for, finds the files running as `version`; the history
/// holds versions 1..=`version` and no refused attempt; and `ev` saw exactly the versions
/// after `first` applied, each once.
fn assert_settled(d: &Daemon, ev: &mut Events, first: u64, version: u64) {
    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "unchanged", version),
        "{r:?}"
    );
    let id = r.attempt_id.expect("attempt id");
    ev.wait("the sync reload", |e| {
        is_phase(e, "unchanged") && e.attempt_id == Some(id)
    });
    ev.assert_no_bad_reload();
    let applied: Vec<u64> = ev
        .seen()
        .iter()
        .filter(|e| is_phase(e, "applied"))
        .filter_map(|e| e.version)
        .collect();
    assert_eq!(
        applied,
        ((first + 1)..=version).collect::<Vec<_>>(),
        "each version applied once:\n{}",
        ev.dump()
    );
    let r = d.ctl(&["history", "--limit", "1000", "--output", "json"]);
    assert_eq!(r.code, 0, "ctl history: {r:?}");
    let h: ctl::history::HistoryJson = serde_json::from_str(&r.stdout).expect("history JSON");
    let mut versions: Vec<u64> = h.entries.iter().filter_map(|e| e.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{h:#?}");
    assert!(
        h.entries.iter().all(|e| e.result == "applied"),
        "a refused attempt is recorded: {h:#?}"
    );
}

/// Starts `svc_body("one")`, lets `save` write `svc_body("two")` (the whole file text) some
/// way, and checks that the watcher applied it, once, without ever applying or rejecting
/// anything else.
fn watch_case(save: impl FnOnce(&Env, &Path, &str)) -> (Env, Daemon, Events) {
    watch_case_in(SvcIn::Main, |_| {}, save)
}

/// [`watch_case`] with `svc` in `file`, a `setup` of the env before the daemon starts, and
/// `save` given the env, the absolute path of `file` and its new text.
fn watch_case_in(
    file: SvcIn,
    setup: impl FnOnce(&Env),
    save: impl FnOnce(&Env, &Path, &str),
) -> (Env, Daemon, Events) {
    let env = file.env("one");
    setup(&env);
    let d = env.start();
    let old = pid_of(&d.wait_script("svc", "running", running));
    env.wait_file("out/svc", "one\n");
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    save(&env, &env.path(file.rel()), &file.text("two"));
    let applied = ev.wait("the save to be applied", |e| is_phase(e, "applied"));
    assert_eq!(applied.source.as_deref(), Some("watch"));
    assert_eq!(applied.version, Some(2));
    let changes = applied.changes.as_deref().unwrap_or_default();
    let c = change(changes, "svc", "env.V");
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some("one"), Some("two"))
    );
    assert_eq!(changes.len(), 1, "{changes:#?}");

    let s = d.wait_script("svc", "restarted", |s| running(s) && s.pid != Some(old));
    assert!(!alive(old) && alive(pid_of(&s)));
    env.wait_file("out/svc", "one\ntwo\n");
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (2, "in-sync"));
    assert_untouched(&d, &b);
    assert_settled(&d, &mut ev, 1, 2);
    // Debounced, not stalled: the watcher never had to give up waiting for the file.
    assert!(
        !d.log_text().contains(READ_ANYWAY),
        "the watcher waited the full second for a file:\n{}",
        d.log_text()
    );
    (env, d, ev)
}

#[test]
fn watch_in_place_write_same_inode() {
    let (env, _d, _ev) = watch_case(|_, path, text| {
        let ino = fs::metadata(path).expect("stat").ino();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open in place");
        f.write_all(text.as_bytes()).expect("write in place");
        drop(f);
        assert_eq!(
            fs::metadata(path).expect("stat").ino(),
            ino,
            "not the same inode"
        );
    });
    assert_eq!(
        read(&env.config()),
        format!("{DAEMON_SECTION}{}", svc_body("two"))
    );
}

#[test]
fn watch_truncate_then_write_with_a_pause_never_reads_the_empty_file() {
    let (_env, _d, _ev) = watch_case(|_, path, text| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open and truncate");
        f.sync_all().expect("sync the empty file");
        assert_eq!(read(path), "", "the file is empty on disk now");
        // The editor's pause between the two steps: far longer than the 20ms debounce.
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(text.as_bytes()).expect("write");
        drop(f);
    });
    // watch_case checked that no reload was rejected (an empty file would be: it changes
    // daemon.*) and that no script was removed.
}

#[test]
fn watch_truncate_close_then_write_later_never_applies_the_empty_file() {
    // The two steps as two separate opens: truncate (and close), pause, write.
    let (_env, _d, _ev) = watch_case(|_, path, text| truncate_close_then_write(path, text));
}

/// Saves `text` to `path` in two separate opens: truncate (and close), a pause far longer
/// than the 20ms debounce, then write.
fn truncate_close_then_write(path: &Path, text: &str) {
    drop(
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("truncate"),
    );
    assert_eq!(read(path), "", "the file is empty on disk now");
    std::thread::sleep(Duration::from_millis(150));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("reopen");
    f.write_all(text.as_bytes()).expect("write");
}

#[test]
fn watch_truncate_close_then_write_later_of_an_include_removes_nothing() {
    // An empty included file would remove `svc`: watch_case checks that nothing was.
    let (_env, _d, _ev) = watch_case_in(
        SvcIn::Include,
        |_| {},
        |_, path, text| truncate_close_then_write(path, text),
    );
}

/// Writes `text` to the temp file `tmp` (next to `path`) in two opens with a pause, as a slow
/// editor or a provisioning tool might, then renames it over `path`.
fn write_temp_then_rename(path: &Path, tmp: &str, text: &str) {
    let tmp = path.with_file_name(tmp);
    let (head, tail) = text.split_at(text.len() / 2);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    f.write_all(head.as_bytes()).expect("write the first half");
    drop(f);
    // Far longer than the 20ms debounce: a watcher reading the temp file now reads half of
    // it, closed.
    std::thread::sleep(Duration::from_millis(150));
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&tmp)
        .expect("reopen the temp file");
    f.write_all(tail.as_bytes()).expect("write the second half");
    drop(f);
    fs::rename(&tmp, path).expect("rename over");
}

#[test]
fn watch_write_temp_then_rename() {
    let (_env, _d, _ev) =
        watch_case(|_, path, text| write_temp_then_rename(path, ".scriptd.yaml.swp", text));
}

#[test]
fn watch_include_write_temp_then_rename_never_reads_the_dotfile() {
    // The temp file matches the include glob but for its leading dot (Ansible's temp file
    // pattern): half-written, it would be invalid, and complete, a duplicate of `svc`.
    let (_env, _d, _ev) = watch_case_in(
        SvcIn::Include,
        |_| {},
        |_, path, text| write_temp_then_rename(path, ".ansible_tmpXa.yaml", text),
    );
}

#[test]
fn watch_delete_and_recreate() {
    let (_env, _d, _ev) = watch_case(|_, path, text| {
        fs::remove_file(path).expect("delete");
        create_in_place(path, text);
    });
}

#[test]
fn watch_include_delete_and_recreate() {
    let (_env, _d, _ev) = watch_case_in(
        SvcIn::Include,
        |_| {},
        |_, path, text| {
            fs::remove_file(path).expect("delete");
            create_in_place(path, text);
        },
    );
}

/// Creates `path` (which must not exist) with mode 0644 and writes `text` into it: a new file
/// written in place, not renamed into place.
fn create_in_place(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn watch_include_file_added_and_removed() {
    let inc = |name: &str| {
        format!(
            "scripts:\n  {name}:\n    command: \"echo {name} >> out/{name}; exec sleep 1000\"\n"
        )
    };
    let env = new_env(&format!(
        "include: [\"conf.d/*.yaml\"]\nscripts:\n{BYSTANDERS}"
    ));
    env.write("conf.d/a.yaml", &inc("inc_a"));
    let d = env.start();
    let a = pid_of(&d.wait_script("inc_a", "running", running));
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    // A new file, created in place (not renamed).
    create_in_place(&env.path("conf.d/b.yaml"), &inc("inc_b"));
    let applied = ev.wait("b.yaml to be applied", |e| is_phase(e, "applied"));
    assert_change(
        applied.changes.as_deref().unwrap_or_default(),
        "inc_b",
        "*",
        "start",
        "applied",
    );
    d.wait_script("inc_b", "running", running);
    env.wait_file("out/inc_b", "inc_b\n");
    assert_eq!(d.script("inc_a").pid, Some(a), "inc_a was touched");

    // A file removed.
    fs::remove_file(env.path("conf.d/a.yaml")).expect("remove a.yaml");
    let applied = ev.wait("the removal to be applied", |e| is_phase(e, "applied"));
    assert_eq!(applied.version, Some(3));
    assert_change(
        applied.changes.as_deref().unwrap_or_default(),
        "inc_a",
        "*",
        "stop",
        "applied",
    );
    wait_for("inc_a to be forgotten", DEADLINE, || {
        (!listed(&d, "inc_a")).then_some(())
    });
    assert!(!alive(a), "inc_a's process still runs");
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (3, "in-sync"));
    assert!(running(&d.script("inc_b")));
    assert_untouched(&d, &b);
    assert!(
        !ev.seen().iter().any(|e| is_phase(e, "rejected")),
        "{}",
        ev.dump()
    );
}

#[test]
fn watch_kubernetes_configmap_symlink_swap() {
    let (env, _d, _ev) = watch_case_in(SvcIn::Main, configmap_layout, |env, _, text| {
        // Exactly what the kubelet does.
        configmap_dir(env, "..2026_02", text);
        symlink("..2026_02", env.path("..data_tmp")).expect("symlink ..data_tmp");
        fs::rename(env.path("..data_tmp"), env.path("..data")).expect("swap ..data");
        fs::remove_dir_all(env.path("..2026_01")).expect("remove the old dir");
    });
    assert!(fs::symlink_metadata(env.config())
        .expect("stat")
        .file_type()
        .is_symlink());
}

/// Rewrites an env's main file into a ConfigMap volume layout: `scriptd.yaml` ->
/// `..data/scriptd.yaml`, `..data` -> `..2026_01`.
fn configmap_layout(env: &Env) {
    let text = read(&env.config());
    fs::remove_file(env.config()).expect("remove the plain file");
    configmap_dir(env, "..2026_01", &text);
    symlink("..2026_01", env.path("..data")).expect("symlink ..data");
    symlink("..data/scriptd.yaml", env.config()).expect("symlink scriptd.yaml");
}

/// Creates a ConfigMap volume's timestamped dir `dir` (in the env) holding `scriptd.yaml` =
/// `text`, mode 0644.
fn configmap_dir(env: &Env, dir: &str, text: &str) {
    fs::create_dir(env.path(dir)).unwrap_or_else(|e| panic!("create {dir}: {e}"));
    let file = env.path(dir).join("scriptd.yaml");
    fs::write(&file, text).unwrap_or_else(|e| panic!("write {dir}/scriptd.yaml: {e}"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
}

// ------------------------------------------------------------------ bursts and broken saves

#[test]
fn hundred_rapid_saves_end_with_the_last_content_applied_once() {
    // A service that takes ~100ms to stop, so that saves keep landing while a reload is
    // being applied: those must be picked up after it.
    let body = |v: u32| {
        format!(
            "scripts:\n  svc:\n    command: 'trap \"sleep 0.1; exit 0\" TERM; echo \"$V\" >> out/svc; \
             while :; do sleep 0.05; done'\n    env: {{ V: \"{v}\" }}\n{BYSTANDERS}"
        )
    };
    let env = new_env(&body(0));
    let d = env.start();
    d.wait_script("svc", "running", running);
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    for i in 1..=100 {
        env.set_body(&body(i));
        // Rapid, but spread over longer than the debounce window and a reload.
        std::thread::sleep(Duration::from_millis(3));
    }
    ev.wait("the last save to be applied", |e| {
        is_phase(e, "applied")
            && e.changes
                .iter()
                .flatten()
                .any(|c| c.field == "env.V" && c.new.as_deref() == Some("100"))
    });
    // Nothing more: no version applied twice, none refused.
    let version = d.status().running_version;
    assert_settled(&d, &mut ev, 1, version);

    let applied: Vec<&EventJson> = ev
        .seen()
        .iter()
        .filter(|e| is_phase(e, "applied"))
        .collect();
    let mut last_version = 1;
    let mut last_v = 0;
    for e in &applied {
        let version = e.version.expect("applied version");
        assert_eq!(
            version,
            last_version + 1,
            "versions not consecutive:\n{}",
            ev.dump()
        );
        last_version = version;
        let c = change(e.changes.as_deref().unwrap_or_default(), "svc", "env.V");
        let old: u32 = c
            .old
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("old V");
        let new: u32 = c
            .new
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("new V");
        assert_eq!(
            old, last_v,
            "an applied version does not follow the previous one"
        );
        assert!(
            new > old,
            "content applied twice or backwards: {old} -> {new}"
        );
        last_v = new;
    }
    assert_eq!(last_v, 100, "the last save is not what runs");
    // Every attempt id is unique too.
    let mut ids: Vec<u64> = applied.iter().filter_map(|e| e.attempt_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), applied.len());

    let st = d.status();
    assert_eq!(st.running_version, last_version);
    assert_eq!(st.sync, "in-sync");
    let s = d.script("svc");
    assert!(running(&s) && alive(pid_of(&s)));
    wait_for("out/svc to end with 100", DEADLINE, || {
        read(&env.path("out/svc"))
            .ends_with("\n100\n")
            .then_some(())
    });
    assert_untouched(&d, &b);
}

#[test]
fn broken_save_is_reported_and_the_old_version_keeps_running() {
    let env = new_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    env.write(
        "scriptd.yaml",
        &format!("{DAEMON_SECTION}scripts:\n  svc:\n    command: [\"unterminated\n"),
    );
    let rejected = ev.wait("the broken save to be rejected", |e| {
        is_phase(e, "rejected")
    });
    assert_eq!(rejected.source.as_deref(), Some("watch"));
    let errors = rejected.errors.as_deref().unwrap_or_default();
    assert!(
        !errors.is_empty(),
        "a rejection for a broken file carries its errors"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.file == "scriptd.yaml" && e.line > 0),
        "{errors:#?}"
    );

    let st = d.status();
    assert_eq!(st.sync, "invalid");
    let sync_error = st.sync_error.expect("sync_error when invalid");
    // file:line:col: ...
    let mut parts = sync_error.splitn(4, ':');
    assert_eq!(parts.next(), Some("scriptd.yaml"), "{sync_error}");
    let line: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let col: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(line > 0 && col > 0, "no line:col in {sync_error:?}");
    assert_eq!(st.running_version, 1);
    assert_eq!(
        d.script("svc").pid,
        Some(pid),
        "the broken save touched svc"
    );
    assert!(alive(pid));
    assert_untouched(&d, &b);

    // The next good save is picked up.
    env.set_body(&svc_body("two"));
    let applied = ev.wait("the good save to be applied", |e| is_phase(e, "applied"));
    assert_eq!(applied.version, Some(2));
    let s = d.wait_script("svc", "restarted", |s| running(s) && s.pid != Some(pid));
    assert!(alive(pid_of(&s)));
    env.wait_file("out/svc", "one\ntwo\n");
    let st = d.status();
    assert_eq!(
        (st.sync.as_str(), st.sync_error, st.running_version),
        ("in-sync", None, 2)
    );
    assert_untouched(&d, &b);
}

// ------------------------------------------------------------------ plans and dry runs

#[test]
fn plan_id_applies_only_when_nothing_moved() {
    let env = manual_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);

    env.set_manual(&svc_body("two"));
    let (code, dry) = d.reload(&["--dry-run"]);
    assert_eq!(
        (code, dry.result.as_str(), dry.dry_run),
        (0, "would-apply", true),
        "{dry:?}"
    );
    let plan = dry.plan_id.clone().expect("a dry run prints a plan id");
    assert_change(&dry.changes, "svc", "env.V", "restart", "planned");
    let text = d.ctl(&["reload", "--dry-run"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains(&plan),
        "the table output names the plan: {text:?}"
    );
    assert_eq!(d.script("svc").pid, Some(pid), "a dry run restarted svc");

    let (code, r) = d.reload(&["--plan", &plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "applied", 2),
        "{r:?}"
    );
    let applied_pid = pid_of(&d.script("svc"));
    assert_ne!(applied_pid, pid);
    env.wait_file("out/svc", "one\ntwo\n");

    // Preview, then the files move: the old plan is refused.
    env.set_manual(&svc_body("three"));
    let (_, dry) = d.reload(&["--dry-run"]);
    let old_plan = dry.plan_id.expect("plan id");
    assert_ne!(old_plan, plan);
    env.set_manual(&svc_body("four"));
    let (code, r) = d.reload(&["--plan", &old_plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "rejected", 2),
        "{r:?}"
    );
    assert!(
        r.message.as_deref().is_some_and(|m| m.contains(&old_plan)),
        "the refusal names the stale plan: {r:?}"
    );
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (2, "changed"));
    let s = d.script("svc");
    assert_eq!(s.pid, Some(applied_pid), "a refused plan touched svc");
    assert!(alive(applied_pid));
    assert_eq!(read(&env.path("out/svc")), "one\ntwo\n");
    assert_untouched(&d, &b);
}

#[test]
fn dry_run_exit_codes_and_no_side_effects() {
    let env = manual_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);
    let unchanged = |why: &str| {
        let st = d.status();
        assert_eq!(st.running_version, 1, "{why}");
        assert_eq!(d.script("svc").pid, Some(pid), "{why}: svc touched");
        assert!(alive(pid), "{why}");
        assert_untouched(&d, &b);
    };

    let r = d.ctl(&["reload", "--dry-run", "--exit-code"]);
    assert_eq!(r.code, 0, "no changes: {r:?}");
    let (code, j) = d.reload(&["--dry-run", "--exit-code"]);
    assert_eq!((code, j.result.as_str()), (0, "unchanged"));
    unchanged("after a dry run without changes");

    env.set_manual(&svc_body("two"));
    let r = d.ctl(&["reload", "--dry-run", "--exit-code"]);
    assert_eq!(r.code, 5, "changes: {r:?}");
    let (code, j) = d.reload(&["--dry-run", "--exit-code"]);
    assert_eq!((code, j.result.as_str()), (5, "would-apply"));
    assert_eq!(
        d.ctl(&["reload", "--dry-run"]).code,
        0,
        "without --exit-code"
    );
    unchanged("after dry runs with changes");
    assert_eq!(d.status().sync, "changed");

    env.write(
        "scriptd.yaml",
        &format!(
            "{NO_WATCH_SECTION}scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    intervall: 5m\n"
        ),
    );
    let r = d.ctl(&["reload", "--dry-run"]);
    assert_eq!(r.code, 3, "invalid: {r:?}");
    assert!(r.stdout.contains("intervall"), "{r:?}");
    let (code, j) = d.reload(&["--dry-run", "--exit-code"]);
    assert_eq!((code, j.result.as_str()), (3, "invalid"), "{j:?}");
    assert!(!j.errors.is_empty());
    unchanged("after dry runs of an invalid file");
    assert_eq!(read(&env.path("out/svc")), "one\n");
}

// ------------------------------------------------------------------ failures and refusals

#[test]
fn service_that_cannot_spawn_rolls_back_to_the_old_version() {
    let scripts = |prog: &str| {
        format!("scripts:\n  svc:\n    command: [\"{prog}\"]\n    stop_grace: 2s\n{BYSTANDERS}")
    };
    let env = manual_env(&scripts("./svc.sh"));
    env.script("svc.sh", "echo old >> out/svc\nexec sleep 1000");
    // Executable, so validation passes; its interpreter is missing, so exec fails (ENOENT).
    let bad = env.path("bad.sh");
    fs::write(&bad, "#!/nonexistent/interp\necho new >> out/svc\n").expect("write bad.sh");
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).expect("chmod bad.sh");
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    env.wait_file("out/svc", "old\n");
    let b = bystanders(&d);

    env.set_manual(&scripts("./bad.sh"));
    let (code, r) = d.reload(&["--dry-run"]);
    assert_eq!(
        (code, r.result.as_str()),
        (0, "would-apply"),
        "validation passes: {r:?}"
    );

    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str()),
        (3, "failed-rolled-back"),
        "{r:?}"
    );
    assert_eq!(r.version, 1);
    assert!(
        r.message.as_deref().is_some_and(|m| m.contains("svc")),
        "{r:?}"
    );

    // The old service runs again, with the old command.
    let s = d.script("svc");
    assert!(running(&s), "svc is not running after the rollback: {s:?}");
    let new_pid = pid_of(&s);
    assert!(alive(new_pid));
    env.wait_file("out/svc", "old\nold\n");
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (1, "changed"));
    // And it stays so: no backoff restart with the failed config follows.
    assert_stays(
        "svc keeps running the old command",
        Duration::from_millis(1_000),
        || d.script("svc").pid == Some(new_pid) && alive(new_pid),
    );
    assert_eq!(read(&env.path("out/svc")), "old\nold\n");
    assert!(!alive(pid));
    assert_untouched(&d, &b);
}

#[test]
fn config_writable_by_others_is_refused() {
    let env = new_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);

    // New content, saved world-writable.
    let tmp = env.path("scriptd.yaml.new");
    fs::write(&tmp, format!("{DAEMON_SECTION}{}", svc_body("two"))).expect("write");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).expect("chmod 0666");
    fs::rename(&tmp, env.config()).expect("rename");

    let r = d.ctl(&["reload"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("chmod go-w"), "says how to fix it: {r:?}");
    let (code, j) = d.reload(&[]);
    assert_eq!(code, 3);
    assert!(
        j.errors.iter().any(|e| e.text.contains("chmod go-w")),
        "{j:?}"
    );
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (1, "invalid"));
    assert!(st.sync_error.is_some_and(|e| e.contains("chmod go-w")));
    assert_eq!(d.script("svc").pid, Some(pid));
    assert!(alive(pid));
    assert_eq!(read(&env.path("out/svc")), "one\n");
    assert_untouched(&d, &b);

    // Fixed as told, it applies.
    fs::set_permissions(env.config(), fs::Permissions::from_mode(0o644)).expect("chmod go-w");
    let r = reload_applied(&d);
    assert_eq!(r.version, 2);
    env.wait_file("out/svc", "one\ntwo\n");
}

#[test]
fn watch_false_applies_only_on_ctl_reload_or_sighup() {
    let env = manual_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    env.set_manual(&svc_body("two"));
    // Far past the 20ms debounce, nothing is applied.
    assert_stays(
        "the edit is not applied",
        Duration::from_millis(600),
        || {
            let st = d.status();
            st.running_version == 1 && st.sync == "changed"
        },
    );
    assert_eq!(d.script("svc").pid, Some(pid));

    let r = reload_applied(&d);
    assert_eq!(r.version, 2);
    env.wait_file("out/svc", "one\ntwo\n");

    env.set_manual(&svc_body("three"));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let applied = ev.wait("SIGHUP to reload", |e| {
        is_phase(e, "applied") && e.version == Some(3)
    });
    assert_eq!(applied.source.as_deref(), Some("signal"));
    env.wait_file("out/svc", "one\ntwo\nthree\n");
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (3, "in-sync"));
    assert_untouched(&d, &b);
    // The watcher never tried: every attempt came from ctl or the signal.
    assert!(
        !ev.seen()
            .iter()
            .any(|e| e.kind == "reload" && e.source.as_deref() == Some("watch")),
        "{}",
        ev.dump()
    );
}

// ------------------------------------------------------------------ events

#[test]
fn events_carry_schema_1_and_every_phase_of_an_attempt() {
    let env = new_env(&svc_body("one"));
    let d = env.start();
    d.wait_script("svc", "running", running);
    let mut ev = Events::follow(&d);

    // The raw lines carry "schema": 1 (EventJson requires the field, and `pull` checks it).
    env.set_body(&svc_body("two"));
    let applied = ev.wait("the save to be applied", |e| is_phase(e, "applied"));
    let id = applied.attempt_id.expect("attempt id");
    assert!(
        ev.seen()
            .iter()
            .any(|e| is_script_event(e, "svc", "started")),
        "{}",
        ev.dump()
    );
    let phases: Vec<&str> = ev
        .seen()
        .iter()
        .filter(|e| e.kind == "reload" && e.attempt_id == Some(id))
        .map(|e| e.phase.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(
        phases,
        ["detected", "validated", "planned", "applying", "applied"],
        "{}",
        ev.dump()
    );
    for e in ev.seen().iter().filter(|e| e.attempt_id == Some(id)) {
        assert_eq!(e.source.as_deref(), Some("watch"));
    }
    assert!(ev.seen().iter().all(|e| e.schema == 1));
    assert!(ev
        .seen()
        .iter()
        .any(|e| is_script_event(e, "svc", "exited")));
    let seqs: Vec<u64> = ev.seen().iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {seqs:?}"
    );
}

// ------------------------------------------------------------------ watcher layout changes

/// An included file holding one service `name` that appends its name to `out/NAME`.
fn inc_script(name: &str) -> String {
    format!("scripts:\n  {name}:\n    command: \"echo {name} >> out/{name}; exec sleep 1000\"\n")
}

/// Waits until the daemon log says it watches `dir`.
fn wait_watching(d: &Daemon, dir: &Path) {
    let line = format!("watching dir={}", dir.display());
    wait_for(&format!("the daemon log to say `{line}`"), DEADLINE, || {
        d.log_text().contains(&line).then_some(())
    });
}

/// Whether `e` is an `applied` reload that starts `script`.
fn starts(e: &EventJson, script: &str) -> bool {
    is_phase(e, "applied")
        && e.changes
            .iter()
            .flatten()
            .any(|c| c.script == script && c.field == "*" && c.impact == "start")
}

#[test]
fn watch_include_glob_added_by_a_reload_is_watched_and_filtered_on() {
    let env = new_env(&format!("scripts:\n{BYSTANDERS}"));
    // The directory exists from the start, but no glob names it yet.
    fs::create_dir_all(env.path("conf.d")).expect("create conf.d");
    let d = env.start();
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    env.set_body(&format!(
        "include: [\"conf.d/*.yaml\"]\nscripts:\n{BYSTANDERS}"
    ));
    let applied = ev.wait("the new include glob to be applied", |e| {
        is_phase(e, "applied")
    });
    assert_eq!(applied.version, Some(2));
    wait_watching(&d, &env.path("conf.d"));
    // The watcher reads everything again once the new directory is watched (a file may have
    // landed there before); only what comes after tests the filter.
    ev.wait("the read after the new watch", |e| {
        is_phase(e, "unchanged") && e.source.as_deref() == Some("watch")
    });

    // A file that appears there afterwards is picked up: the watcher filters by the new glob.
    create_in_place(&env.path("conf.d/a.yaml"), &inc_script("inc_a"));
    let applied = ev.wait("conf.d/a.yaml to be applied", |e| starts(e, "inc_a"));
    assert_eq!(applied.source.as_deref(), Some("watch"));
    d.wait_script("inc_a", "running", running);
    env.wait_file("out/inc_a", "inc_a\n");
    assert_untouched(&d, &b);
    assert_settled(&d, &mut ev, 1, 3);
}

#[test]
fn watch_include_dir_created_after_start_is_watched() {
    let env = new_env(&format!(
        "include: [\"conf.d/*.yaml\"]\nscripts:\n{BYSTANDERS}"
    ));
    assert!(!env.path("conf.d").exists());
    let d = env.start();
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    // `mkdir conf.d && cp a.yaml conf.d/`: the file lands before the new directory can be
    // watched.
    fs::create_dir(env.path("conf.d")).expect("mkdir conf.d");
    env.write("conf.d/a.yaml", &inc_script("inc_a"));
    ev.wait("conf.d/a.yaml to be applied", |e| starts(e, "inc_a"));
    d.wait_script("inc_a", "running", running);
    wait_watching(&d, &env.path("conf.d"));

    // And one written there later.
    create_in_place(&env.path("conf.d/b.yaml"), &inc_script("inc_b"));
    ev.wait("conf.d/b.yaml to be applied", |e| starts(e, "inc_b"));
    d.wait_script("inc_b", "running", running);
    env.wait_file("out/inc_b", "inc_b\n");
    assert_untouched(&d, &b);
    assert_settled(&d, &mut ev, 1, 3);
}

#[test]
fn same_hash_save_does_nothing_and_says_so_in_the_daemon_log() {
    let env = new_env(&svc_body("one"));
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    // Saved again with the same text: a new inode (renamed into place), the same bytes.
    env.set_body(&svc_body("one"));
    let e = ev.wait("the save to be found unchanged", |e| {
        is_phase(e, "unchanged") && e.source.as_deref() == Some("watch")
    });
    let id = e.attempt_id.expect("attempt id");
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("config unchanged, nothing to do")
                && l.contains(&format!("attempt={id}"))
                && l.contains("source=\"watch\"")),
        "the daemon log does not say the save was unchanged:\n{log}"
    );
    assert_eq!(d.script("svc").pid, Some(pid));
    assert_untouched(&d, &b);
    assert_settled(&d, &mut ev, 1, 1);
}

// ------------------------------------------------------------------ triggers and ordering

#[test]
fn watcher_ctl_and_sighup_reloads_are_serial_and_end_with_the_last_content() {
    let env = new_env(&svc_body("v0"));
    let d = env.start();
    d.wait_script("svc", "running", running);
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);
    // The follower may have joined in the middle of an attempt: check what comes after.
    let first = ev.seen().len();

    let mut ctls = Vec::new();
    for i in 1..=5 {
        // A save (the watcher), a `ctl reload` and a SIGHUP, in quick succession.
        env.set_body(&svc_body(&format!("v{i}")));
        ctls.push(
            d.ctl_command(&["reload"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn ctl reload"),
        );
        d.signal(nix::sys::signal::Signal::SIGHUP);
    }
    for mut c in ctls {
        let status = c.wait().expect("ctl reload");
        assert_eq!(status.code(), Some(0), "a ctl reload failed");
    }
    // Whatever is still queued runs before this one, which applies the last save if nothing
    // did yet; the one after it finds nothing to do.
    let (code, _) = d.reload(&[]);
    assert_eq!(code, 0);
    let version = d.status().running_version;
    assert_settled(&d, &mut ev, 1, version);

    // Attempts ran one at a time, in order: each attempt's phases are contiguous, start at
    // `detected`, end in one terminal phase, and attempt ids only grow.
    let terminal = ["applied", "rejected", "failed-rolled-back", "unchanged"];
    let mut current: Option<(u64, bool)> = None;
    let mut sources = std::collections::BTreeSet::new();
    // The verification of an applied attempt reports later, while others run: its phases
    // are not part of the attempt's contiguous run.
    let verification = ["verifying", "verified", "verify-failed", "auto-rolled-back"];
    for e in ev.seen()[first..].iter().filter(|e| {
        e.kind == "reload" && !verification.contains(&e.phase.as_deref().unwrap_or("?"))
    }) {
        let id = e.attempt_id.expect("attempt id");
        let phase = e.phase.as_deref().unwrap_or("?");
        match current {
            Some((cur, ended)) if cur == id => {
                assert!(
                    !ended,
                    "attempt {id} has phases after its end:\n{}",
                    ev.dump()
                );
            }
            Some((cur, ended)) => {
                assert!(
                    ended,
                    "attempt {id} began before {cur} ended:\n{}",
                    ev.dump()
                );
                assert!(id > cur, "attempt ids go backwards:\n{}", ev.dump());
                assert_eq!(phase, "detected", "{}", ev.dump());
            }
            None => assert_eq!(phase, "detected", "{}", ev.dump()),
        }
        current = Some((id, terminal.contains(&phase)));
        if let Some(src) = e.source.as_deref() {
            sources.insert(src.to_owned());
        }
    }
    assert_eq!(current.map(|(_, ended)| ended), Some(true));
    for src in ["watch", "ctl", "signal"] {
        assert!(sources.contains(src), "no {src} attempt:\n{}", ev.dump());
    }
    // The last save runs.
    assert_eq!(d.status().sync, "in-sync");
    wait_for("svc to run v5", DEADLINE, || {
        read(&env.path("out/svc")).ends_with("v5\n").then_some(())
    });
    assert!(running(&d.script("svc")));
    assert_untouched(&d, &b);
}

#[test]
fn sighup_storm_coalesces_and_never_delays_sigterm() {
    // svc takes 1.5s to stop: a reload restarting it keeps the coordinator busy.
    let body = |v: &str| {
        format!(
            "scripts:\n  svc:\n    command: 'trap \"echo stopping >> out/svc; sleep 1.5; exit 0\" TERM; \
             echo \"$V\" >> out/svc; while :; do sleep 0.05; done'\n    env: {{ V: \"{v}\" }}\n{BYSTANDERS}"
        )
    };
    let env = manual_env(&body("one"));
    let mut d = env.start();
    env.wait_file("out/svc", "one\n");
    let mut ev = Events::follow(&d);
    let hup_storm = |d: &Daemon| {
        for _ in 0..40 {
            d.signal(nix::sys::signal::Signal::SIGHUP);
            // The pace of a storm: each one is seen by the daemon on its own.
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // While a reload is being applied, SIGHUPs pile up into one pending reload, not forty.
    env.set_manual(&body("two"));
    let slow = d
        .ctl_command(&["reload"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ctl reload");
    env.wait_file("out/svc", "one\nstopping\n");
    hup_storm(&d);
    let status = slow.wait_with_output().expect("ctl reload").status;
    assert_eq!(status.code(), Some(0));
    env.wait_file("out/svc", "one\nstopping\ntwo\n");
    ev.wait("a signal reload", |e| {
        e.kind == "reload" && e.source.as_deref() == Some("signal")
    });
    assert_settled(&d, &mut ev, 1, 2);
    let signal_attempts: std::collections::BTreeSet<u64> = ev
        .seen()
        .iter()
        .filter(|e| e.kind == "reload" && e.source.as_deref() == Some("signal"))
        .filter_map(|e| e.attempt_id)
        .collect();
    assert!(
        (1..=2).contains(&signal_attempts.len()),
        "forty SIGHUPs during one reload made {} reloads:\n{}",
        signal_attempts.len(),
        ev.dump()
    );

    // SIGTERM during a busy reload and a SIGHUP storm is acted on at once.
    env.set_manual(&body("three"));
    let slow = d
        .ctl_command(&["reload"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ctl reload");
    env.wait_file("out/svc", "one\nstopping\ntwo\nstopping\n");
    hup_storm(&d);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let log_path = d.log.clone();
    let exited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.wait_exit(DEADLINE)));
    let log = read(&log_path);
    assert_eq!(
        exited.ok(),
        Some(Some(0)),
        "the daemon did not exit 0:\n{log}"
    );
    let _ = slow.wait_with_output();
    let term = log
        .find("SIGTERM: stopping every script")
        .unwrap_or_else(|| panic!("no SIGTERM line in the daemon log:\n{log}"));
    // The reload in progress, if it got to the end at all, ended after the SIGTERM was seen.
    if let Some(applied) = log
        .lines()
        .position(|l| l.contains("reload applied") && l.contains("version=3"))
    {
        let term_line = log[..term].lines().count();
        assert!(
            applied >= term_line,
            "SIGTERM waited for the reload in progress:\n{log}"
        );
    }
}

// ------------------------------------------------------------------ plans, failures, values

#[test]
fn plan_is_done_when_the_base_moved_but_its_files_are_back() {
    let env = manual_env(&svc_body("one"));
    let d = env.start();
    d.wait_script("svc", "running", running);

    let (code, dry) = d.reload(&["--dry-run"]);
    assert_eq!((code, dry.result.as_str()), (0, "unchanged"), "{dry:?}");
    let old_plan = dry.plan_id.expect("a dry run prints a plan id");

    // The base version moves (1 -> 3) while the files end up as they were.
    env.set_manual(&svc_body("two"));
    reload_applied(&d);
    env.set_manual(&svc_body("one"));
    let r = reload_applied(&d);
    assert_eq!(r.version, 3);
    let pid = pid_of(&d.wait_script("svc", "running", running));

    // The plan's files are the running ones: it is done (exit 0), not stale, and nothing is
    // applied or recorded.
    let (code, r) = d.reload(&["--plan", &old_plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "unchanged", 3),
        "a plan whose files run was refused: {r:?}"
    );
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains(&old_plan) && m.contains("already running")),
        "{r:?}"
    );
    assert_eq!(d.script("svc").pid, Some(pid));
    // A plan previewed now is accepted (and finds nothing to do).
    let (_, dry) = d.reload(&["--dry-run"]);
    let plan = dry.plan_id.expect("plan id");
    assert_ne!(plan, old_plan);
    let (code, r) = d.reload(&["--plan", &plan]);
    assert_eq!((code, r.result.as_str(), r.version), (0, "unchanged", 3));
}

/// Writes `rel` as an executable script whose interpreter does not exist: it passes
/// validation (an executable file) and fails to spawn (ENOENT).
fn unspawnable(env: &Env, rel: &str) {
    let path = env.path(rel);
    fs::write(&path, "#!/nonexistent/interp\necho never\n").expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

#[test]
fn added_service_that_cannot_spawn_rolls_back_and_touches_nothing() {
    let body = format!("scripts:\n  svc:\n    command: \"exec sleep 1000\"\n{BYSTANDERS}");
    let env = manual_env(&body);
    unspawnable(&env, "bad.sh");
    let d = env.start();
    let pid = pid_of(&d.wait_script("svc", "running", running));
    let b = bystanders(&d);

    env.set_manual(&format!("{body}  new_svc:\n    command: [\"./bad.sh\"]\n"));
    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "failed-rolled-back", 1),
        "{r:?}"
    );
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("new_svc") && msg.contains("the previous version was put back"),
        "{r:?}"
    );
    assert!(!listed(&d, "new_svc"), "{:?}", d.status());
    assert_not_restarted(&d, "svc", pid);
    assert_untouched(&d, &b);
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (1, "changed"));
}

#[test]
fn failed_apply_whose_rollback_fails_too_says_so() {
    let scripts = |prog: &str| format!("scripts:\n  svc:\n    command: [\"{prog}\"]\n{BYSTANDERS}");
    let env = manual_env(&scripts("./svc.sh"));
    env.script("svc.sh", "echo old >> out/svc\nexec sleep 1000");
    unspawnable(&env, "bad.sh");
    let d = env.start();
    d.wait_script("svc", "running", running);
    env.wait_file("out/svc", "old\n");
    let b = bystanders(&d);
    let mut ev = Events::follow(&d);

    // The old program breaks while it runs, so putting it back fails too.
    unspawnable(&env, "svc.sh");
    env.set_manual(&scripts("./bad.sh"));
    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "failed-rolled-back", 1),
        "{r:?}"
    );
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("putting the previous version back failed too") && msg.contains("svc:"),
        "the report claims a clean rollback: {r:?}"
    );
    assert!(!msg.contains("was put back"), "{msg}");
    let id = r.attempt_id.expect("attempt id");
    let e = ev.wait("the failed attempt's event", |e| {
        is_phase(e, "failed-rolled-back") && e.attempt_id == Some(id)
    });
    assert_eq!(e.message.as_deref(), Some(msg.as_str()));
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("reload failed") && l.contains("failed too")),
        "{log}"
    );
    assert_eq!(d.status().running_version, 1);
    assert_untouched(&d, &b);
}

#[test]
fn empty_and_absent_values_differ_in_the_plan() {
    let env = manual_env(&format!(
        "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    env: {{ A: \"\" }}\n{BYSTANDERS}"
    ));
    let d = env.start();
    d.wait_script("svc", "running", running);

    env.set_manual(
        &format!(
            "scripts:\n  svc:\n    command: \"exec sleep 1000\"\n    env: {{ A: x, B: y, C: \"\" }}\n{BYSTANDERS}"
        ),
    );
    let (code, r) = d.reload(&["--dry-run"]);
    assert_eq!(code, 0, "{r:?}");
    let value = |field: &str| {
        let c = change(&r.changes, "svc", field);
        (c.old.as_deref(), c.new.as_deref())
    };
    assert_eq!(value("env.A"), (Some(""), Some("x")), "changed from empty");
    assert_eq!(value("env.B"), (None, Some("y")), "added");
    assert_eq!(value("env.C"), (None, Some("")), "added empty");
    assert_eq!(r.changes.len(), 3, "{:#?}", r.changes);

    let table = d.ctl(&["reload", "--dry-run"]);
    assert_eq!(table.code, 0, "{table:?}");
    let row = |field: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.contains(field))
            .unwrap_or_else(|| panic!("no {field} row:\n{}", table.stdout))
            .to_owned()
    };
    assert!(row("env.A").contains("\"\" → x"), "{}", table.stdout);
    assert!(row("env.B").contains("+ y"), "{}", table.stdout);
    assert!(row("env.C").contains("+ \"\""), "{}", table.stdout);
}

// ------------------------------------------------------------------ slow events reader

#[test]
fn slow_events_reader_gets_a_missed_marker_and_never_stalls_the_daemon() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    let env = manual_env(&svc_body("v0"));
    let d = env.start();
    d.wait_script("svc", "running", running);

    // A follower that reads its first event, then stops reading until told.
    let mut child = d
        .ctl_command(&["events", "--output", "json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ctl events");
    let stdout = child.stdout.take().expect("ctl events stdout");
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let (line_tx, line_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if !matches!(lines.next(), Some(Ok(_))) || first_tx.send(()).is_err() {
            return;
        }
        if resume_rx.recv().is_err() {
            return;
        }
        for line in lines {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for("the follower to receive its first event", DEADLINE, || {
        let (code, _) = d.reload(&[]);
        assert_eq!(code, 0);
        first_rx.recv_timeout(Duration::from_millis(300)).ok()
    });

    // A flood: periodic scripts whose runs never end and whose 1ms ticks are all skipped,
    // one event each.
    let noisy: String = (0..6)
        .map(|i| format!("  noisy{i}:\n    command: \"exec sleep 1000\"\n    interval: 1ms\n"))
        .collect();
    env.set_manual(&format!("{}{noisy}", svc_body("v1")));
    reload_applied(&d);
    // The daemon does not wait for the stalled reader: reloads apply meanwhile, each
    // restarting svc.
    let mut version = 2;
    for v in ["v2", "v3"] {
        env.set_manual(&format!("{}{noisy}", svc_body(v)));
        version = reload_applied(&d).version;
    }
    env.wait_file("out/svc", "v0\nv1\nv2\nv3\n");
    // Far more events than the follower's queues hold.
    let skipped = |d: &Daemon| -> u64 { d.status().scripts.iter().map(|s| s.skipped_ticks).sum() };
    wait_for(
        "the flood to pass 30,000 events",
        Duration::from_secs(120),
        || (skipped(&d) >= 30_000).then_some(()),
    );
    env.set_manual(&svc_body("v4"));
    let last = reload_applied(&d).version;
    assert_eq!(last, version + 1);
    env.wait_file("out/svc", "v0\nv1\nv2\nv3\nv4\n");

    // Read at last: a marker says how many events were missed, and what follows is live.
    resume_tx.send(()).expect("resume the reader");
    let mut missed = None;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = line_rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!("no applied event of version {last} ({e}); missed {missed:?}")
        });
        let e: EventJson = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("event line does not parse ({err}): {line}"));
        assert_eq!(e.schema, 1);
        if e.kind == "missed" {
            missed = Some(missed.unwrap_or(0) + e.missed.expect("a missed marker says how many"));
        }
        if is_phase(&e, "applied") && e.version == Some(last) {
            break;
        }
    }
    assert!(
        missed.is_some_and(|n| n > 0),
        "no `missed` marker before the live events"
    );
    let _ = child.kill();
    let _ = child.wait();
}
