//! Supervision end to end: periodic runs, service restarts with backoff, timeouts, stop
//! grace, process-group cleanup (stop, daemon SIGTERM, daemon `kill -9`), the socket
//! (second daemon, stale socket; other uids: access.rs), control commands, config validation and
//! shutdown. Every wait polls with a deadline; nothing relies on a bare sleep.

use ctl::output::EventJson;
use scriptd_e2e::{
    alive, cmdline, copy_executable, ctl_bin, is_phase, lines, pids_with_marker, scriptd_bin,
    scriptd_exits, unique_marker, wait_for, wait_gone, Daemon, Env, Events, Follower, Run,
    DEADLINE,
};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ helpers

/// Parses the `date +%s%N` lines a script appended.
fn nanos(lines: &[String]) -> Vec<u128> {
    lines
        .iter()
        .map(|l| l.trim().parse::<u128>().expect("a `date +%s%N` line"))
        .collect()
}

// ------------------------------------------------------------------ 1. periodic

#[test]
fn periodic_script_runs_every_interval() {
    let env = Env::with_scripts(&[(
        "tick",
        "echo \"$SCRIPTD_RUN_ID $(date +%s%N)\" >> runs.txt",
        "    interval: 300ms\n",
    )]);
    let out = env.path("runs.txt");
    let d = env.start();

    let s = d.wait_script("tick", "3 runs started", |s| s.run_count >= 3);
    assert_eq!(s.kind, "periodic");
    assert_eq!(s.interval_ms, Some(300));
    let written = wait_for("3 lines written by 3 runs", DEADLINE, || {
        let l = lines(&out);
        (l.len() >= 3).then_some(l)
    });
    // One line per run, each from a different run id, in order.
    let ids: Vec<u64> = written
        .iter()
        .map(|l| {
            l.split(' ')
                .next()
                .and_then(|x| x.parse().ok())
                .expect("run id")
        })
        .collect();
    assert_eq!(&ids[..3], &[1, 2, 3], "lines: {written:?}");
    let after = d.script("tick");
    assert!(
        after.run_count >= written.len() as u64,
        "{} lines but run_count {}",
        written.len(),
        after.run_count
    );
    // The runs are spaced by the interval, not looping back to back.
    let times: Vec<u128> = written
        .iter()
        .map(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|x| x.parse().ok())
                .expect("timestamp")
        })
        .collect();
    // Each start can be late (a loaded machine delays the exec), so a single gap may be
    // short after a late one; what matters is that N runs span about N - 1 intervals
    // (back-to-back runs would be a few ms apart), with one interval of slack.
    let span_ms = (times[times.len() - 1] - times[0]) / 1_000_000;
    let intervals = (times.len() as u128 - 1) * 300;
    assert!(
        intervals <= span_ms + 300,
        "{} runs within {span_ms} ms (interval 300ms): {written:?}",
        times.len()
    );
    let exit = after.last_exit.expect("a finished run");
    assert_eq!(exit.code, Some(0));
}

// ------------------------------------------------------------------ 2. backoff

#[test]
fn crashing_service_restarts_with_growing_backoff() {
    let env = Env::with_scripts(&[(
        "crash",
        "date +%s%N >> starts.txt\nexit 1",
        "    restart: on-failure\n",
    )]);
    let out = env.path("starts.txt");
    let d = env.start();

    let mut seen_backing_off = false;
    let mut max_restarts = 0;
    let starts = wait_for("4 starts of the crashing service", DEADLINE, || {
        let s = d.script("crash");
        seen_backing_off |= s.state == "backing-off";
        max_restarts = max_restarts.max(s.restarts);
        let l = lines(&out);
        // The status too: the 4th run can write its line before the runner has published
        // its start (and the restart count with it).
        (l.len() >= 4 && s.run_count >= 4).then_some(l)
    });
    assert!(seen_backing_off, "state never showed backing-off");
    let s = d.script("crash");
    assert!(s.run_count >= 4, "run_count {}", s.run_count);
    assert!(s.restarts.max(max_restarts) >= 3, "restarts {}", s.restarts);
    assert_eq!(s.last_exit.as_ref().and_then(|e| e.code), Some(1));

    let t = nanos(&starts);
    let gaps: Vec<u128> = t.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    assert!(
        gaps[0] >= 400,
        "first restart after {} ms, backoff is 500ms: {gaps:?}",
        gaps[0]
    );
    assert!(gaps[1] > gaps[0], "backoff did not grow: {gaps:?}");
    assert!(gaps[2] > gaps[0], "backoff did not grow: {gaps:?}");
    assert!(
        gaps[2] >= 1500,
        "third backoff should be about 2s: {gaps:?}"
    );
}

// ------------------------------------------------------------------ 3. timeout

#[test]
fn periodic_run_past_its_timeout_is_stopped() {
    let marker = format!("sleep {}", unique_marker("30.31"));
    let env = Env::new(&format!(
        "scripts:\n  slow:\n    command: \"{marker}\"\n    interval: 1h\n    timeout: 300ms\n"
    ));
    let d = env.start();
    let s = d.wait_script("slow", "the first run to be running", |s| s.run_count >= 1);
    let exit = d
        .wait_script("slow", "the run to be stopped", |s| s.last_exit.is_some())
        .last_exit
        .expect("last exit");
    assert!(exit.timed_out, "last_exit: {exit:?}");
    assert_eq!(
        exit.signal.as_deref(),
        Some("SIGTERM"),
        "last_exit: {exit:?}"
    );
    assert_eq!(exit.code, None);
    assert!(
        (250..10_000).contains(&exit.duration_ms),
        "ran {} ms with a 300ms timeout",
        exit.duration_ms
    );
    if let Some(pid) = s.pid {
        wait_gone(&[pid], "the timed-out run to be gone");
    }
    assert!(pids_with_marker(&marker).is_empty());
    let after = d.script("slow");
    assert_eq!(after.state, "waiting");
    assert_eq!(after.pid, None);
}

// ------------------------------------------------------------------ 4. stop grace

/// A script that ignores SIGTERM, once `ready` says the trap is in place.
const STUBBORN: &str = "trap '' TERM\necho ready >> ready\nwhile true; do sleep 0.1; done";

#[test]
fn stop_kills_a_script_ignoring_term_after_the_grace() {
    let env = Env::with_scripts(&[("stubborn", STUBBORN, "    stop_grace: 500ms\n")]);
    let ready = env.path("ready");
    let d = env.start();
    let s = d.wait_script("stubborn", "running", |s| {
        s.state == "running" && s.pid.is_some()
    });
    let pid = s.pid.expect("pid");
    // The trap must be in place before the stop.
    wait_for("the script to ignore TERM", DEADLINE, || {
        (!lines(&ready).is_empty()).then_some(())
    });

    let t0 = Instant::now();
    let r = d.ctl(&["stop", "stubborn"]);
    let took = t0.elapsed();
    assert_eq!(r.code, 0, "ctl stop: {r:?}");
    assert!(
        took >= Duration::from_millis(450),
        "stop returned after {took:?}, grace is 500ms"
    );
    let after = d.script("stubborn");
    assert_eq!(after.state, "stopped");
    assert_eq!(after.pid, None);
    let exit = after.last_exit.expect("last exit");
    assert_eq!(
        exit.signal.as_deref(),
        Some("SIGKILL"),
        "last_exit: {exit:?}"
    );
    assert!(!exit.timed_out);
    assert!(!alive(pid), "pid {pid} still alive after ctl stop");
    wait_gone(&[pid], "the killed script to be reaped");
}

// ------------------------------------------------------------------ 5. process groups

/// A service that forks a child and waits; returns the env and the marker its sleeps carry.
fn forking_env(marker: &str) -> Env {
    Env::new(&format!(
        "scripts:\n  forker:\n    command: \"sleep {marker} & sleep {marker}; wait\"\n    stop_grace: 2s\n"
    ))
}

/// Waits for both sleeps of the forking script; returns every process carrying the marker
/// (the shim, the shell and the two sleeps).
fn forked(marker: &str) -> Vec<u32> {
    wait_for("the script and its forked child", DEADLINE, || {
        let pids = pids_with_marker(marker);
        let sleeps = pids
            .iter()
            .filter(|&&p| cmdline(p).starts_with("sleep "))
            .count();
        (sleeps == 2).then_some(pids)
    })
}

fn assert_nothing_left(pids: &[u32], marker: &str, when: &str) {
    wait_for(&format!("no process left behind {when}"), DEADLINE, || {
        pids_with_marker(marker).is_empty().then_some(())
    });
    for &p in pids {
        assert!(!alive(p), "pid {p} still alive {when}");
    }
    wait_gone(pids, &format!("no zombie left {when}"));
}

#[test]
fn stop_leaves_no_process_behind() {
    let marker = &unique_marker("1000.5101");
    let env = forking_env(marker);
    let d = env.start();
    let pids = forked(marker);
    assert!(pids.len() >= 3, "expected shim, shell and sleeps: {pids:?}");
    let r = d.ctl(&["stop", "forker"]);
    assert_eq!(r.code, 0, "ctl stop: {r:?}");
    assert_nothing_left(&pids, marker, "after ctl stop");
    assert_eq!(d.script("forker").state, "stopped");
}

#[test]
fn daemon_sigterm_leaves_no_process_behind() {
    let marker = &unique_marker("1000.5202");
    let env = forking_env(marker);
    let mut d = env.start();
    let pids = forked(marker);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), Some(0), "daemon exit after SIGTERM");
    assert_nothing_left(&pids, marker, "after the daemon's SIGTERM");
}

#[test]
fn daemon_kill_9_takes_the_process_group_with_it() {
    let marker = &unique_marker("1000.5303");
    let env = forking_env(marker);
    let mut d = env.start();
    let pids = forked(marker);
    let shim: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| cmdline(p).contains("__shim"))
        .collect();
    assert_eq!(shim.len(), 1, "one shim among {pids:?}");
    d.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(d.wait_exit(DEADLINE), None, "the daemon died of SIGKILL");
    // The script, its child and the shim all go; the shim reaps the script's processes
    // (subreaper), so none of them is left as a zombie. The shim itself, orphaned, is reaped
    // by whatever init the machine has: only required not to be running.
    let script_pids: Vec<u32> = pids.iter().copied().filter(|p| !shim.contains(p)).collect();
    assert_nothing_left(&script_pids, marker, "after kill -9 of the daemon");
    wait_for("the shim to exit", DEADLINE, || {
        (!alive(shim[0])).then_some(())
    });
}

// ------------------------------------------------------------------ 6. the socket

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.6101\"\n");
    let d = env.start();
    let pid = d
        .wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid");

    let second = scriptd_exits(&env.config());
    assert_eq!(second.code, 1, "second daemon: {second:?}");
    assert!(
        second.stderr.contains("already listening"),
        "stderr: {}",
        second.stderr
    );

    // The first one is untouched and still answers on its socket.
    let st = d.status();
    assert_eq!(st.daemon.pid, d.pid());
    let s = st
        .scripts
        .iter()
        .find(|s| s.name == "svc")
        .expect("svc in status");
    assert_eq!(s.pid, Some(pid));
    assert_eq!(s.run_count, 1);
    assert!(alive(pid));
    assert!(env.socket().exists());
}

#[test]
fn stale_socket_is_replaced() {
    let marker = &unique_marker("1000.6202");
    let env = Env::new(&format!(
        "scripts:\n  svc:\n    command: \"sleep {marker}\"\n"
    ));
    let mut first = env.start();
    let old = first
        .wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid");
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(first.wait_exit(DEADLINE), None);
    assert!(
        env.socket().exists(),
        "kill -9 leaves the socket file behind"
    );
    wait_for("the old run to die with its daemon", DEADLINE, || {
        (!alive(old)).then_some(())
    });

    let second = env.start();
    let st = second.status();
    assert_eq!(st.daemon.pid, second.pid());
    let new = second
        .wait_script("svc", "running under the new daemon", |s| s.pid.is_some())
        .pid
        .expect("pid");
    assert_ne!(new, old);
    assert!(alive(new));
    assert!(
        second.log_text().contains("stale socket"),
        "daemon log: {}",
        second.log_text()
    );
}

// ------------------------------------------------------------------ 8. control

#[test]
fn control_commands() {
    let env = Env::new("");
    let out = env.path("once.txt");
    env.set_body(&format!(
        "scripts:\n  off:\n    command: \"echo ran >> {}\"\n    enabled: false\n  svc:\n    command: \"sleep 1000.8101\"\n",
        out.display()
    ));
    let d = env.start();

    // Raw JSON carries the schema.
    let raw = d.ctl(&["status", "--output", "json"]);
    assert_eq!(raw.code, 0, "{raw:?}");
    let v: serde_json::Value = serde_json::from_str(&raw.stdout).expect("status JSON");
    assert_eq!(v["schema"], 1, "{}", raw.stdout);
    assert_eq!(d.status().schema, 1);

    // `run` on a disabled script: one run, then back to disabled.
    let off = d.script("off");
    assert_eq!(off.state, "disabled");
    assert_eq!(off.run_count, 0);
    let r = d.ctl(&["run", "off"]);
    assert_eq!(r.code, 0, "ctl run off: {r:?}");
    let off = d.wait_script("off", "the one-off run to end", |s| {
        s.state == "disabled" && s.last_exit.is_some()
    });
    assert_eq!(off.run_count, 1);
    assert_eq!(off.last_exit.and_then(|e| e.code), Some(0));
    assert_eq!(lines(&out), vec!["ran".to_owned()]);

    // `start` on a disabled script is refused with a reason.
    let r = d.ctl(&["start", "off"]);
    assert_eq!(r.code, 1, "ctl start off: {r:?}");
    assert!(r.stderr.contains("disabled"), "stderr: {}", r.stderr);
    assert_eq!(d.script("off").run_count, 1);

    // Unknown scripts.
    for cmd in ["status", "stop", "start", "restart", "run"] {
        let r = d.ctl(&[cmd, "nosuch"]);
        assert_eq!(r.code, 4, "ctl {cmd} nosuch: {r:?}");
        assert!(!r.stderr.is_empty(), "ctl {cmd} nosuch says nothing");
    }

    // stop / start / restart of a service: each start is a new process.
    let p1 = d
        .wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid");
    let r = d.ctl(&["stop", "svc"]);
    assert_eq!(r.code, 0, "ctl stop svc: {r:?}");
    let s = d.script("svc");
    assert_eq!(s.state, "stopped");
    assert_eq!(s.pid, None);
    wait_gone(&[p1], "the stopped service to be gone");

    let r = d.ctl(&["start", "svc"]);
    assert_eq!(r.code, 0, "ctl start svc: {r:?}");
    let s = d.script("svc");
    let alive_states = ["starting", "running"];
    assert!(alive_states.contains(&s.state.as_str()), "{s:?}");
    let p2 = s.pid.expect("pid after start");
    assert_ne!(p2, p1);
    assert!(alive(p2));
    assert_eq!(s.run_count, 2);

    let r = d.ctl(&["restart", "svc"]);
    assert_eq!(r.code, 0, "ctl restart svc: {r:?}");
    let s = d.script("svc");
    assert!(alive_states.contains(&s.state.as_str()), "{s:?}");
    let p3 = s.pid.expect("pid after restart");
    assert_ne!(p3, p2);
    assert!(alive(p3));
    assert_eq!(s.run_count, 3);
    wait_gone(&[p2], "the restarted run to be gone");
}

// ------------------------------------------------------------------ 9. validation

/// An invalid config: main body, extra files, and the error line expected on stderr.
type InvalidCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn invalid_configs_are_reported_with_location() {
    // Body lines start at 6: DAEMON_SECTION is 5 lines.
    let cases: &[InvalidCase] = &[
        (
            "scripts:\n  a:\n    command: /bin/true\n    intervall: 5s\n",
            &[],
            "scriptd.yaml:9:5: scripts.a.intervall: unknown key \"intervall\"; did you mean \"interval\"?",
        ),
        (
            "scripts:\n  a:\n    command: /bin/true\n    interval: soon\n",
            &[],
            "scriptd.yaml:9:15: scripts.a.interval: invalid duration \"soon\"",
        ),
        (
            "scripts:\n  a:\n    command: [/no/such/program]\n",
            &[],
            "scriptd.yaml:8:15: scripts.a.command[0]: program /no/such/program does not exist",
        ),
        (
            "include: [\"scripts.d/*.yaml\"]\nscripts:\n  dup:\n    command: /bin/true\n",
            &[("scripts.d/more.yaml", "scripts:\n  dup:\n    command: /bin/true\n")],
            "scripts.d/more.yaml:2:3: scripts.dup: script \"dup\" is already defined at scriptd.yaml:8:3",
        ),
    ];
    for (body, extra, expected) in cases {
        let env = Env::new(body);
        for (rel, content) in *extra {
            env.write(rel, content);
        }
        let r = env.check();
        assert_eq!(r.code, 3, "--check on {body:?}: {r:?}");
        assert!(
            r.stderr.contains(expected),
            "expected {expected:?} in:\n{}",
            r.stderr
        );

        let started = scriptd_exits(&env.config());
        assert_eq!(started.code, 3, "daemon on {body:?}: {started:?}");
        assert!(
            started.stderr.contains(expected),
            "daemon stderr:\n{}",
            started.stderr
        );
        assert!(
            !env.socket().exists(),
            "an invalid config created the socket"
        );
    }
}

// ------------------------------------------------------------------ 10. shutdown

#[test]
fn sigterm_stops_every_script_gracefully_and_exits_0() {
    let marker = unique_marker("1000.9101");
    let env = Env::new("");
    let term = env.script_entry(
        "term",
        "trap 'sleep 0.3; echo got TERM >> got.txt; exit 0' TERM\necho term >> ready.txt\n\
         while true; do sleep 0.1; done",
        "    stop_grace: 5s\n",
    );
    let int = env.script_entry(
        "int",
        "trap 'echo got INT >> got.txt; exit 0' INT\necho int >> ready.txt\n\
         while true; do sleep 0.1; done",
        "    stop_signal: INT\n    stop_grace: 5s\n",
    );
    env.set_body(&format!(
        "scripts:\n{term}{int}  periodic:\n    command: \"sleep {marker}\"\n    interval: 1h\n"
    ));
    let got = env.path("got.txt");
    let ready = env.path("ready.txt");
    let mut d = env.start();
    wait_for("both services to have set their traps", DEADLINE, || {
        (lines(&ready).len() >= 2).then_some(())
    });
    // A run is in `ctl status` with its pid once its process group is recorded (on a
    // blocking thread), which under load can come after the script's first line.
    let pids: Vec<u32> = wait_for("all three running with a pid", DEADLINE, || {
        let pids: Vec<u32> = d.status().scripts.iter().filter_map(|s| s.pid).collect();
        (pids.len() == 3).then_some(pids)
    });

    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(DEADLINE),
        Some(0),
        "daemon exit code after SIGTERM"
    );
    let mut got_lines = lines(&got);
    got_lines.sort();
    assert_eq!(got_lines, vec!["got INT".to_owned(), "got TERM".to_owned()]);
    assert!(!env.socket().exists(), "the socket was not removed");
    wait_gone(&pids, "every script to be gone after shutdown");
    assert!(pids_with_marker(&format!("sleep {marker}")).is_empty());
}

// ------------------------------------------------------------------ 11. more helpers

/// The texts of the daemon's own lines (`sys`) in a script's log, oldest first.
fn system_lines(d: &Daemon, script: &str) -> Vec<String> {
    let r = d.ctl(&[
        "logs", script, "-n", "1000", "--stream", "system", "--output", "json",
    ]);
    assert_eq!(r.code, 0, "ctl logs {script}: {r:?}");
    r.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("log line JSON");
            v["text"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The delays ("restarting in 200ms ...") the daemon logged for a service, in ms.
fn restart_delays(d: &Daemon, script: &str) -> Vec<u64> {
    system_lines(d, script)
        .iter()
        .filter_map(|l| l.strip_prefix("restarting in "))
        .map(|l| {
            let text = l.split(" (").next().unwrap_or_default();
            let d = humantime_ms(text);
            d.unwrap_or_else(|| panic!("unparsable delay in {l:?}"))
        })
        .collect()
}

/// `250ms`, `1s 500ms`, `2s` in milliseconds.
fn humantime_ms(text: &str) -> Option<u64> {
    let mut total = 0;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = part.split_at(split);
        let n: u64 = n.parse().ok()?;
        total += match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            _ => return None,
        };
    }
    Some(total)
}

/// `/proc/PID/comm`.
fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// Parent pid from `/proc/PID/stat`.
fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Writes `body` as the main config and waits for the reload to be applied.
fn save_and_apply(env: &Env, ev: &mut Events, body: &str) -> EventJson {
    env.set_body(body);
    ev.wait("the save to be applied", |e| is_phase(e, "applied"))
}

/// The change of `field` of `script` in an event's plan.
fn change<'a>(e: &'a EventJson, script: &str, field: &str) -> &'a ctl::output::ChangeJson {
    e.changes
        .iter()
        .flatten()
        .find(|c| c.script == script && c.field == field)
        .unwrap_or_else(|| panic!("no change of {script}.{field} in {e:?}"))
}

// ------------------------------------------------------------------ 12. shutdown with followers

#[test]
fn sigterm_ends_events_and_log_followers_and_exits_0() {
    let marker = unique_marker("1000.1201");
    let env = Env::new(&format!(
        "scripts:\n  svc:\n    command: \"echo up; exec sleep {marker}\"\n    stop_grace: 2s\n"
    ));
    let mut d = env.start();
    d.wait_script("svc", "running", |s| s.pid.is_some());
    // An events follower, provably subscribed: it sees a reload made after it started.
    let events = Follower::start(&d, &["events", "--output", "json"]);
    wait_for("`ctl events` to receive events", DEADLINE, || {
        assert_eq!(d.reload(&[]).0, 0);
        events
            .next_line(Duration::from_millis(300))
            .ok()
            .map(|_| ())
    });
    let logs = Follower::start(&d, &["logs", "svc", "-f", "--raw"]);
    logs.until("up", "the log follower to print the script's line");

    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(DEADLINE),
        Some(0),
        "daemon exit after SIGTERM with followers connected; daemon log:\n{}",
        fs::read_to_string(env.path("daemon.log")).unwrap_or_default()
    );
    let (code, seen) = events.wait_exit("`ctl events` to end with the daemon");
    assert_eq!(code, Some(0), "ctl events exit");
    // Followers see the shutdown: the service's exit is the last thing they get.
    assert!(
        seen.iter()
            .any(|l| l.contains("\"exited\"") && l.contains("\"svc\"")),
        "the events follower did not see the service exit: {seen:#?}"
    );
    let (code, _) = logs.wait_exit("`ctl logs -f` to end with the daemon");
    assert_eq!(code, Some(0), "ctl logs -f exit");
    assert!(pids_with_marker(&format!("sleep {marker}")).is_empty());
}

// ------------------------------------------------------------------ 13. SIGINT

#[test]
fn sigint_stops_every_script_and_exits_0() {
    let marker = &unique_marker("1000.1301");
    let env = Env::new(&format!(
        "scripts:\n  svc:\n    command: \"sleep {marker}\"\n  per:\n    command: \"sleep {marker}\"\n    interval: 1h\n"
    ));
    let mut d = env.start();
    let pids: Vec<u32> = wait_for("both scripts running", DEADLINE, || {
        let st = d.status();
        let p: Vec<u32> = st.scripts.iter().filter_map(|s| s.pid).collect();
        (p.len() == 2).then_some(p)
    });
    d.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(d.wait_exit(DEADLINE), Some(0), "daemon exit after SIGINT");
    wait_gone(&pids, "both scripts to be gone after SIGINT");
    assert!(pids_with_marker(marker).is_empty());
    assert!(!env.socket().exists(), "the socket was not removed");
    assert!(
        d.log_text().contains("SIGINT: stopping every script"),
        "{}",
        d.log_text()
    );
}

// ------------------------------------------------------------------ 14. sd_notify

/// Receives one datagram within the deadline.
fn notify_recv(sock: &std::os::unix::net::UnixDatagram, what: &str) -> String {
    sock.set_read_timeout(Some(DEADLINE)).expect("set timeout");
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify message ({what}): {e}"));
    // sd_notify(3) ends each assignment with a newline, the last one too.
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn sd_notify_ready_reloading_stopping() {
    let env = Env::new("");
    let seen_env = env.path("notify-env.txt");
    let body = |n: u32| {
        format!(
            "scripts:\n  svc:\n    command: \"echo ${{NOTIFY_SOCKET-unset}} > {}; exec sleep 1000.1401\"\n  other:\n    command: \"sleep 1000.140{n}\"\n",
            seen_env.display()
        )
    };
    env.set_body(&body(2));
    let path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    let mut d = env.start_with_env(&[("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))]);

    assert_eq!(notify_recv(&sock, "startup"), "READY=1");
    // READY comes once the startup config is applied: both services have been started.
    let st = d.status();
    for s in &st.scripts {
        assert!(
            s.pid.is_some() && s.run_count == 1,
            "not started at READY: {s:?}"
        );
    }
    // A script does not get the daemon's NOTIFY_SOCKET.
    let got = wait_for("the script to write its NOTIFY_SOCKET", DEADLINE, || {
        lines(&seen_env).first().cloned()
    });
    assert_eq!(got, "unset");

    let mut ev = Events::follow(&d);
    // Events::follow ran unchanged reloads: each one says RELOADING then READY.
    let before = monotonic_usec();
    env.set_body(&body(3));
    ev.wait("the edit to be applied", |e| is_phase(e, "applied"));
    let after = monotonic_usec();
    // Every reload (the follower's sync reloads too) is a RELOADING, READY pair; the
    // edit's pair is the first stamped after `before`.
    loop {
        let reloading = notify_recv(&sock, "RELOADING of a reload");
        let usec: u64 = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("RELOADING without MONOTONIC_USEC: {reloading:?}"));
        assert_eq!(notify_recv(&sock, "READY after a reload"), "READY=1");
        if usec >= before {
            assert!(
                usec <= after,
                "MONOTONIC_USEC {usec} is not the time of the reload ({before}..{after})"
            );
            break;
        }
    }

    d.signal(nix::sys::signal::Signal::SIGTERM);
    // (A late watcher reload may still be queued before it.)
    while notify_recv(&sock, "STOPPING at shutdown") != "STOPPING=1" {}
    assert_eq!(d.wait_exit(DEADLINE), Some(0));
}

// ------------------------------------------------------------------ 15. scriptd --check

#[test]
fn check_reports_each_problem_with_its_location_and_exits_3() {
    // Body lines start at 6: DAEMON_SECTION is 5 lines.
    let cases: &[(&str, &str, &str)] = &[
        (
            "non-executable program",
            "scripts:\n  a:\n    command: [\"./prog.sh\"]\n",
            "scriptd.yaml:8:15: scripts.a.command[0]: program {dir}/./prog.sh is not executable \
             (mode 644); run `chmod +x {dir}/./prog.sh`",
        ),
        (
            "missing working_dir",
            "scripts:\n  a:\n    command: /bin/true\n    working_dir: nowhere\n",
            "scriptd.yaml:9:18: scripts.a.working_dir: working_dir {dir}/nowhere does not exist; \
             create it or fix the path",
        ),
        (
            "YAML syntax error",
            "scripts:\n  a:\n    command: [/bin/true\n",
            "scriptd.yaml:9:1: invalid YAML: ",
        ),
        (
            "interval of 300000000000 years",
            "scripts:\n  a:\n    command: /bin/true\n    interval: 300000000000y\n",
            "scriptd.yaml:9:15: scripts.a.interval: duration \"300000000000y\" is too long: at \
             most 100y (100 years)",
        ),
        (
            "stop_grace beyond what the shim could be given",
            "scripts:\n  a:\n    command: /bin/true\n    stop_grace: 1000000000y\n",
            "scriptd.yaml:9:17: scripts.a.stop_grace: duration \"1000000000y\" is too long",
        ),
        (
            "timeout on a service",
            "scripts:\n  a:\n    command: /bin/true\n    timeout: 5s\n",
            "scriptd.yaml:9:5: scripts.a.timeout: timeout applies only to periodic scripts",
        ),
    ];
    for (name, body, want) in cases {
        let env = Env::new(body);
        fs::write(env.path("prog.sh"), "#!/bin/sh\n").expect("write prog.sh");
        let want = want.replace("{dir}", &env.dir.path().display().to_string());
        let r = env.check();
        assert_eq!(r.code, 3, "{name}: {r:?}");
        assert!(
            r.stderr.contains(&want),
            "{name}: expected {want:?} in:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("is invalid (1 error)"),
            "{name}: {}",
            r.stderr
        );
    }

    // A file others can write is refused (a file-level error: no line of its own).
    let env = Env::new("scripts:\n  a:\n    command: /bin/true\n");
    assert_eq!(env.check().code, 0, "valid before the chmod");
    fs::set_permissions(env.config(), fs::Permissions::from_mode(0o666)).expect("chmod");
    let r = env.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("scriptd.yaml: refused: the file is writable by others (mode 666)"),
        "{}",
        r.stderr
    );
    let started = scriptd_exits(&env.config());
    assert_eq!(started.code, 3, "the daemon refuses it too: {started:?}");
}

// ------------------------------------------------------------------ 16. scheduled changes

/// A periodic script whose run waits for the file `go`; `tag` is what its command prints.
fn gated(env: &Env, tag: &str, extra: &str) -> String {
    format!(
        "scripts:\n  per:\n    command: \"echo {tag}; while [ ! -f {go} ]; do sleep 0.05; done\"\n    interval: 1h\n{extra}",
        go = env.path("go").display()
    )
}

#[test]
fn a_scheduled_change_reverted_before_the_run_ends_is_dropped() {
    let env = Env::new("");
    env.set_body(&gated(&env, "original", ""));
    let d = env.start();
    d.wait_script("per", "the first run", |s| s.state == "running");
    let mut ev = Events::follow(&d);

    let a = save_and_apply(&env, &mut ev, &gated(&env, "edited", ""));
    assert_eq!(change(&a, "per", "command").outcome, "scheduled", "{a:?}");
    assert_eq!(d.script("per").pending_changes, vec!["command".to_owned()]);

    // Saved back: the run in progress already uses this command; nothing stays pending.
    env.set_body(&gated(&env, "original", ""));
    ev.wait("the revert to be applied", |e| is_phase(e, "applied"));
    let s = d.script("per");
    assert!(s.pending_changes.is_empty(), "still pending: {s:?}");

    fs::write(env.path("go"), "").expect("create go");
    let exited = ev.wait("the run to end", |e| {
        e.event.as_deref() == Some("exited") && e.script.as_deref() == Some("per")
    });
    assert_eq!(exited.run_id, Some(1));
    let r = d.ctl(&["run", "per"]);
    assert_eq!(r.code, 0, "{r:?}");
    let s = d.wait_script("per", "the second run to end", |s| {
        s.run_count == 2 && s.pid.is_none()
    });
    assert_eq!(s.last_exit.and_then(|e| e.code), Some(0));
    let out: Vec<String> = d
        .ctl(&["logs", "per", "--stream", "stdout", "--raw"])
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(out, ["original", "original"], "the reverted command ran");
    assert!(
        !ev.seen()
            .iter()
            .any(|e| e.event.as_deref() == Some("scheduled-change-applied")),
        "a dropped change was applied: {}",
        ev.dump()
    );
}

#[test]
fn a_change_scheduled_by_a_reload_that_failed_and_rolled_back_is_dropped() {
    let env = Env::new("");
    // Executable, so validation passes; its interpreter is missing, so exec fails.
    let bad = env.path("bad.sh");
    fs::write(&bad, "#!/nonexistent/interp\n").expect("write bad.sh");
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).expect("chmod bad.sh");
    let svc = |prog: &str| format!("  svc:\n    command: [\"{prog}\", \"1000.1602\"]\n");
    env.set_body(&(gated(&env, "original", "") + &svc("sleep")));
    let d = env.start();
    d.wait_script("per", "the first run", |s| s.state == "running");
    let mut ev = Events::follow(&d);

    // per's command change is scheduled behind its run; svc cannot start: all rolled back.
    env.set_body(&(gated(&env, "edited", "") + &svc(bad.to_str().expect("utf-8"))));
    ev.wait("the reload to fail and roll back", |e| {
        is_phase(e, "failed-rolled-back")
    });
    let s = d.script("per");
    assert!(
        s.pending_changes.is_empty(),
        "still pending after the rollback: {s:?}"
    );

    fs::write(env.path("go"), "").expect("create go");
    ev.wait("the run to end", |e| {
        e.event.as_deref() == Some("exited") && e.script.as_deref() == Some("per")
    });
    assert_eq!(d.ctl(&["run", "per"]).code, 0);
    d.wait_script("per", "the second run to end", |s| {
        s.run_count == 2 && s.pid.is_none()
    });
    let out = d
        .ctl(&["logs", "per", "--stream", "stdout", "--raw"])
        .stdout;
    assert_eq!(out, "original\noriginal\n", "the rolled-back command ran");
}

#[test]
fn disabling_a_running_periodic_script_with_a_command_change_runs_it_no_more() {
    let env = Env::new("");
    // A short interval: were the schedule kept, the next tick would start a run soon.
    let body =
        |tag: &str, extra: &str| gated(&env, tag, extra).replace("interval: 1h", "interval: 300ms");
    env.set_body(&body("original", ""));
    let d = env.start();
    d.wait_script("per", "the first run", |s| s.state == "running");
    let mut ev = Events::follow(&d);

    let r = save_and_apply(&env, &mut ev, &body("edited", "    enabled: false\n"));
    assert_eq!(change(&r, "per", "command").outcome, "scheduled", "{r:?}");
    assert_eq!(change(&r, "per", "enabled").impact, "stop", "{r:?}");

    fs::write(env.path("go"), "").expect("create go");
    ev.wait("the run to end", |e| {
        e.event.as_deref() == Some("exited") && e.script.as_deref() == Some("per")
    });
    let s = d.wait_script("per", "disabled after its run", |s| s.pid.is_none());
    assert_eq!(s.state, "disabled", "{s:?}");
    assert_eq!(s.next_run, None, "{s:?}");
    // Several intervals later it has still not run again.
    ev.collect_for(Duration::from_millis(1200));
    assert!(
        !ev.seen()
            .iter()
            .any(|e| e.event.as_deref() == Some("started") && e.script.as_deref() == Some("per")),
        "a disabled script started: {}",
        ev.dump()
    );
    assert_eq!(d.script("per").run_count, 1);
}

#[test]
fn a_periodic_script_that_becomes_a_service_mid_run_starts_as_one_at_once() {
    let marker = &unique_marker("1000.1601");
    let env = Env::new("");
    env.set_body(&gated(&env, "periodic", ""));
    let d = env.start();
    d.wait_script("per", "the first run", |s| s.state == "running");
    let mut ev = Events::follow(&d);

    let r = save_and_apply(
        &env,
        &mut ev,
        &format!("scripts:\n  per:\n    command: \"sleep {marker}\"\n"),
    );
    assert_eq!(change(&r, "per", "interval").outcome, "scheduled", "{r:?}");
    fs::write(env.path("go"), "").expect("create go");
    ev.wait("the periodic run to end", |e| {
        e.event.as_deref() == Some("exited") && e.script.as_deref() == Some("per")
    });
    ev.wait("the change to be applied", |e| {
        e.event.as_deref() == Some("scheduled-change-applied")
    });
    // Exit 0 and `on-failure` would not restart a service: it is started because it is one
    // now, not an hour later at the periodic tick.
    let s = d.wait_script("per", "running as a service", |s| {
        s.state == "running" && s.kind == "service"
    });
    assert_eq!(s.run_count, 2);
    assert_eq!(s.next_run, None);
    let pid = s.pid.expect("pid");
    assert!(cmdline(pid).contains(marker), "{}", cmdline(pid));
}

// ------------------------------------------------------------------ 17. shims

#[test]
fn shims_do_not_look_like_the_daemon() {
    let marker = &unique_marker("1000.1701");
    let env = forking_env(marker);
    let d = env.start();
    let pids = forked(marker);
    let shim = pids
        .iter()
        .copied()
        .find(|&p| cmdline(p).contains("__shim"))
        .expect("a shim");
    assert_eq!(comm(shim), "shim:forker");
    assert!(
        cmdline(shim).starts_with("scriptd-shim forker __shim"),
        "{}",
        cmdline(shim)
    );
    assert_eq!(comm(d.pid()), "scriptd");
    // What `pgrep -x scriptd` / `pidof scriptd` match (comm, argv[0]): not the shim.
    for p in &pids {
        assert_ne!(comm(*p), "scriptd", "pid {p}: {}", cmdline(*p));
    }
    // The small `scriptd-shim` executable next to the daemon's binary runs it.
    assert_eq!(exe_name(shim), "scriptd-shim");
}

/// The file name of the executable a process runs.
fn exe_name(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .expect("read /proc/PID/exe")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn the_daemon_binary_alone_runs_scripts_through_its_built_in_shim() {
    // A copy of `scriptd` without `scriptd-shim` beside it: its own binary is the shim.
    let marker = &unique_marker("1000.1702");
    let env = forking_env(marker);
    let bin_dir = tempfile::tempdir().expect("temp dir for the binary");
    let bin = bin_dir.path().join("scriptd");
    copy_executable(&scriptd_bin(), &bin);
    let d = env.start_binary(&bin, &[]);
    let pids = forked(marker);
    let shim = pids
        .iter()
        .copied()
        .find(|&p| cmdline(p).contains("__shim"))
        .expect("a shim");
    assert_eq!(exe_name(shim), "scriptd");
    assert_eq!(comm(shim), "shim:forker");
    assert!(d.script("forker").pid.is_some());
    let r = d.ctl(&["stop", "forker"]);
    assert_eq!(r.code, 0, "{r:?}");
    wait_for("the forked processes to be gone", DEADLINE, || {
        pids_with_marker(marker).is_empty().then_some(())
    });
}

/// The forking service, its shim and the shell that leads the group (the script itself).
fn shim_and_leader(marker: &str) -> (u32, u32, Vec<u32>) {
    let pids = forked(marker);
    let shim = pids
        .iter()
        .copied()
        .find(|&p| cmdline(p).contains("__shim"))
        .expect("a shim");
    let leader = pids
        .iter()
        .copied()
        .find(|&p| ppid(p) == Some(shim) && !cmdline(p).starts_with("sleep "))
        .expect("the script's shell");
    let sleeps = pids
        .iter()
        .copied()
        .filter(|&p| cmdline(p).starts_with("sleep "))
        .collect();
    (shim, leader, sleeps)
}

#[test]
fn a_killed_shim_takes_its_script_along_and_the_daemon_the_rest() {
    let marker = &unique_marker("1000.1705");
    let env = forking_env(marker);
    let d = env.start();
    let (shim, leader, sleeps) = shim_and_leader(marker);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    // PR_SET_PDEATHSIG: the script dies with its shim.
    wait_for("the script to die with its shim", DEADLINE, || {
        (!alive(leader)).then_some(())
    });
    // What it forked is killed by the daemon, which sees the shim gone.
    wait_for("the script's children to be killed", DEADLINE, || {
        sleeps.iter().all(|&p| !alive(p)).then_some(())
    });
    let s = d.wait_script("forker", "restarted after the crash", |s| s.run_count >= 2);
    assert_eq!(s.kind, "service");
    assert!(
        system_lines(&d, "forker")
            .iter()
            .any(|l| l.starts_with("the shim was killed and left 2 process(es)")),
        "{:?}",
        system_lines(&d, "forker")
    );
}

#[test]
fn a_group_left_by_a_killed_daemon_and_shim_is_swept_at_the_next_start() {
    let marker = &unique_marker("1000.1703");
    let env = forking_env(marker);
    let mut d = env.start();
    let (shim, leader, sleeps) = shim_and_leader(marker);
    // Recorded by the daemon's group-record thread, right after the spawn.
    wait_for("the running group to be recorded", DEADLINE, || {
        env.path("state/groups/forker").exists().then_some(())
    });
    // Both at once, the shim first (killed first, the daemon would stop the group itself).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    d.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(d.wait_exit(DEADLINE), None);
    wait_for("the script to die with its shim", DEADLINE, || {
        (!alive(leader)).then_some(())
    });
    assert!(
        sleeps.iter().all(|&p| alive(p)),
        "the children outlive shim and daemon until the next start"
    );

    let d2 = env.start();
    wait_for("the leftover group to be swept", DEADLINE, || {
        sleeps.iter().all(|&p| !alive(p)).then_some(())
    });
    assert!(
        d2.log_text().contains("left behind by a previous daemon"),
        "{}",
        d2.log_text()
    );
    // The new daemon runs the script again, recorded afresh.
    d2.wait_script("forker", "running again", |s| s.pid.is_some());
    assert!(env.path("state/groups/forker").exists());
}

#[test]
fn group_records_are_removed_when_runs_end() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.1704\"\n");
    let d = env.start();
    let pid = d
        .wait_script("svc", "running", |s| s.pid.is_some())
        .pid
        .expect("pid");
    let record = fs::read_to_string(env.path("state/groups/svc")).expect("record");
    assert!(record.starts_with(&format!("v2 {pid} ")), "{record:?}");
    assert_eq!(d.ctl(&["stop", "svc"]).code, 0);
    assert!(
        !env.path("state/groups/svc").exists(),
        "record left after stop"
    );
}

// ------------------------------------------------------------------ 18. control messages

#[test]
fn stop_says_what_it_cancelled() {
    let env = Env::new(
        "scripts:\n  crash:\n    command: \"exit 1\"\n    restart_delay: 1h\n  per:\n    command: \"true\"\n    interval: 1h\n",
    );
    let d = env.start();
    d.wait_script("crash", "backing off", |s| s.state == "backing-off");
    let r = d.ctl(&["stop", "crash"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("crash: not running; cancelled the pending restart (due in 59m"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("stays stopped until `ctl start`"),
        "{}",
        r.stdout
    );
    let s = d.script("crash");
    assert_eq!((s.state.as_str(), s.next_run), ("stopped", None));
    let r = d.ctl(&["stop", "crash"]);
    assert_eq!(r.stdout.trim(), "crash: already stopped");

    d.wait_script("per", "waiting", |s| s.state == "waiting");
    let r = d.ctl(&["stop", "per"]);
    assert!(
        r.stdout
            .starts_with("per: not running; cancelled the next run (due in "),
        "{}",
        r.stdout
    );
    assert_eq!(d.script("per").state, "stopped");
}

// ------------------------------------------------------------------ 19. backoff settings

#[test]
fn backoff_grows_is_capped_and_resets_after_a_stable_run() {
    let env = Env::new("");
    let starts = env.path("starts.txt");
    // Runs 1-4 and 6 crash at once; run 5 lasts past restart_reset_after, then crashes.
    let script = env.script_entry(
        "crash",
        "n=$(($(cat count 2>/dev/null || echo 0) + 1)); echo $n > count\ndate +%s%N >> starts.txt\n\
         [ $n -eq 5 ] && sleep 1.5\nexit 1",
        "    restart_delay_max: 300ms\n    restart_reset_after: 1s\n",
    );
    let body = |delay: &str| format!("scripts:\n{script}    restart_delay: {delay}\n");
    env.set_body(&body("100ms"));
    let d = env.start();
    // Six restarts, one after a 1.5 s run.
    let delays = wait_for("six restart delays", DEADLINE, || {
        let d = restart_delays(&d, "crash");
        (d.len() >= 6).then_some(d)
    });
    // 100 ms doubling, capped at 300 ms; after the long run 5, back to 100 ms.
    assert_eq!(&delays[..6], &[100, 200, 300, 300, 100, 200], "{delays:?}");
    // The delays are kept: no start comes before its delay is over.
    let t = nanos(&lines(&starts));
    let gaps: Vec<u64> = t
        .windows(2)
        .map(|w| ((w[1] - w[0]) / 1_000_000) as u64)
        .collect();
    for (i, (gap, delay)) in gaps.iter().zip(&delays).enumerate() {
        assert!(
            gap >= delay,
            "start {} came {gap} ms after the previous one, delay {delay}: {gaps:?}",
            i + 2
        );
    }

    // A new delay is a next-run change: the running process is not touched.
    let mut ev = Events::follow(&d);
    let r = save_and_apply(&env, &mut ev, &body("150ms"));
    let c = change(&r, "crash", "restart_delay");
    assert_eq!(
        (c.impact.as_str(), c.outcome.as_str()),
        ("next-run", "applied"),
        "{r:?}"
    );
}

// ------------------------------------------------------------------ 20. periodic: skipped ticks

#[test]
fn a_tick_that_finds_the_run_still_going_is_skipped_and_counted() {
    let env = Env::new("");
    env.set_body(&gated(&env, "slow", "").replace("interval: 1h", "interval: 200ms"));
    let d = env.start();
    d.wait_script("per", "the first run", |s| s.state == "running");
    let mut ev = Events::follow(&d);
    let e = ev.wait("a tick-skipped event", |e| {
        e.event.as_deref() == Some("tick-skipped") && e.script.as_deref() == Some("per")
    });
    assert_eq!(e.message.as_deref(), Some("previous run still going"));
    let s = d.wait_script("per", "skipped ticks counted", |s| s.skipped_ticks >= 2);
    assert_eq!(s.run_count, 1, "no run started while one was going: {s:?}");
    assert_eq!(s.state, "running");
    fs::write(env.path("go"), "").expect("create go");
    let s = d.wait_script("per", "the next tick to run", |s| s.run_count >= 2);
    assert!(s.skipped_ticks >= 2);
}

// ------------------------------------------------------------------ 21. restart policies and states

#[test]
fn restart_policies_and_the_idle_and_failed_states() {
    let env = Env::new(
        "scripts:\n  always:\n    command: \"exit 0\"\n    restart: always\n    restart_delay: 100ms\n    \
         restart_delay_max: 200ms\n  \
         never-fails:\n    command: \"exit 3\"\n    restart: never\n  never-ok:\n    command: \"exit 0\"\n    restart: never\n    \
         ready_after: 0s\n  onfail-ok:\n    command: \"exit 0\"\n    restart: on-failure\n    ready_after: 0s\n",
    );
    let d = env.start();
    // always: restarted after a clean exit.
    let s = d.wait_script("always", "restarted after exit 0", |s| s.run_count >= 3);
    assert_eq!(s.last_exit.and_then(|e| e.code), Some(0));
    // never: one run; failed after a failure, idle after exit 0; nothing scheduled.
    let s = d.wait_script("never-fails", "its run to end", |s| s.last_exit.is_some());
    assert_eq!(
        (s.state.as_str(), s.run_count, s.next_run.as_deref()),
        ("failed", 1, None)
    );
    assert_eq!(s.last_exit.and_then(|e| e.code), Some(3));
    let s = d.wait_script("never-ok", "its run to end", |s| s.last_exit.is_some());
    assert_eq!(
        (s.state.as_str(), s.run_count, s.next_run.as_deref()),
        ("idle", 1, None)
    );
    // on-failure after exit 0: idle too.
    let s = d.wait_script("onfail-ok", "its run to end", |s| s.last_exit.is_some());
    assert_eq!(
        (s.state.as_str(), s.run_count, s.next_run.as_deref()),
        ("idle", 1, None)
    );
    // Still so after `always` restarted a few more times.
    d.wait_script("always", "more restarts", |s| s.run_count >= 6);
    for name in ["never-fails", "never-ok", "onfail-ok"] {
        assert_eq!(d.script(name).run_count, 1, "{name} ran again");
    }
}

// ------------------------------------------------------------------ 22. timeout and grace

#[test]
fn a_timed_out_run_that_ignores_term_is_killed_after_the_grace() {
    let env = Env::with_scripts(&[(
        "stubborn",
        STUBBORN,
        "    interval: 1h\n    timeout: 500ms\n    stop_grace: 300ms\n",
    )]);
    let ready = env.path("ready");
    let d = env.start();
    let s = d.wait_script("stubborn", "the run to end", |s| s.last_exit.is_some());
    let exit = s.last_exit.expect("last exit");
    assert!(exit.timed_out, "{exit:?}");
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"), "{exit:?}");
    assert!(
        exit.duration_ms >= 800,
        "killed after {} ms: timeout 500ms + grace 300ms",
        exit.duration_ms
    );
    assert!(!lines(&ready).is_empty(), "the trap was set");
    assert_eq!(s.state, "waiting");
    let sys = system_lines(&d, "stubborn");
    assert!(
        sys.iter().any(|l| l.contains("timed out after 500ms")),
        "{sys:?}"
    );
    assert!(
        sys.iter()
            .any(|l| l.starts_with("still running after stop_grace: SIGKILL")),
        "{sys:?}"
    );
    assert!(
        sys.iter()
            .any(|l| l.contains("ended: signal SIGKILL, timed out")),
        "{sys:?}"
    );
}

// ------------------------------------------------------------------ 23. ctl: socket, health, colour

#[test]
fn ctl_finds_the_daemon_through_scriptd_socket() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2301\"\n");
    let d = env.start();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let ctl = |socket: &Path, extra: &[&str]| -> Run {
        Command::new(ctl_bin())
            .args(extra)
            .args(["status", "--output", "json"])
            .current_dir(elsewhere.path())
            .env_remove("SCRIPTD_CONFIG")
            .env("SCRIPTD_SOCKET", socket)
            .output()
            .expect("run ctl")
            .into()
    };
    let r = ctl(&env.socket(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("status JSON");
    assert_eq!(v["daemon"]["pid"], d.pid(), "{}", r.stdout);

    let bogus = elsewhere.path().join("no.sock");
    let r = ctl(&bogus, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&bogus.display().to_string()),
        "{}",
        r.stderr
    );
    // --socket wins over the variable.
    let sock = env.socket();
    let r = ctl(&bogus, &["--socket", sock.to_str().expect("utf-8")]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn the_grpc_health_service_answers_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2302\"\n");
    let d = env.start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let socket = d.socket.clone();
    let statuses = rt.block_on(async move {
        let channel = tonic::transport::Endpoint::try_from("http://scriptd.invalid")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await
            .expect("connect to the socket");
        let mut health = HealthClient::new(channel);
        let mut out = Vec::new();
        for service in ["", "scriptd.v1.Scriptd"] {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"));
            out.push(r.into_inner().status);
        }
        out
    });
    assert_eq!(
        statuses,
        [ServingStatus::Serving as i32, ServingStatus::Serving as i32]
    );
}

/// Runs `ctl ARGS` with its stdout on a pseudo-terminal; returns what it printed.
fn ctl_on_a_terminal(d: &Daemon, args: &[&str], no_color: bool) -> String {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc pty calls; the fds are owned by the File/OwnedFd wrappers below.
    let (master, slave) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_owned();
        let s = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(s >= 0, "open the pty slave");
        (fs::File::from_raw_fd(m), fs::File::from_raw_fd(s))
    };
    let mut cmd = d.ctl_command(args);
    cmd.stdout(slave)
        .stderr(Stdio::null())
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().expect("run ctl on a pty");
    drop(cmd); // the last copy of the slave is the child's
    let mut out = Vec::new();
    let mut master = master;
    // Once the child has exited, no slave is open and read fails (EIO) after the output.
    let _ = master.read_to_end(&mut out);
    let status = child.wait().expect("wait for ctl");
    assert!(status.success(), "ctl {args:?} on a pty: {status:?}");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = Env::new("scripts:\n  svc:\n    command: \"sleep 1000.2303\"\n");
    let d = env.start();
    d.wait_script("svc", "running", |s| s.state == "running");
    let on_tty = ctl_on_a_terminal(&d, &["status"], false);
    assert!(on_tty.contains("running"), "{on_tty:?}");
    assert!(
        on_tty.contains("\x1b["),
        "no colour on a terminal: {on_tty:?}"
    );
    let no_color = ctl_on_a_terminal(&d, &["status"], true);
    assert!(no_color.contains("running"), "{no_color:?}");
    assert!(
        !no_color.contains('\x1b'),
        "colour despite NO_COLOR: {no_color:?}"
    );
    for args in [&["status"][..], &["logs", "svc", "-n", "5"], &["history"]] {
        let r = d.ctl(args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(
            !r.stdout.contains('\x1b'),
            "colour into a pipe ({args:?}): {:?}",
            r.stdout
        );
    }
}

// ------------------------------------------------------------------ 24. the bundled example

#[test]
fn the_bundled_example_runs_as_is() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let env = Env::new("");
    for file in ["scriptd.yaml", "scripts.d/maintenance.yaml"] {
        let text = fs::read_to_string(examples.join(file)).expect("example file");
        env.write(file, &text);
    }
    let d = env.start();
    let beat = d.wait_script("heartbeat", "the first heartbeat to end", |s| {
        s.last_exit.is_some()
    });
    assert_eq!(beat.kind, "periodic");
    assert_eq!(beat.state, "waiting");
    assert_eq!(
        beat.last_exit.and_then(|e| e.code),
        Some(0),
        "heartbeat failed"
    );
    let out = d
        .ctl(&["logs", "heartbeat", "--stream", "stdout", "--raw"])
        .stdout;
    assert!(out.starts_with("heartbeat from "), "{out:?}");
    let ticker = d.wait_script("ticker", "running", |s| s.state == "running");
    assert_eq!(ticker.kind, "service");
    let cleanup = d.script("cleanup");
    assert_eq!((cleanup.state.as_str(), cleanup.run_count), ("disabled", 0));
    let table = d.ctl(&["status"]);
    assert_eq!(table.code, 0);
    for name in ["heartbeat", "ticker", "cleanup"] {
        assert!(table.stdout.contains(name), "{}", table.stdout);
    }
    assert_eq!(d.status().scripts.len(), 3);
    // And `ctl run cleanup` works on any machine too.
    assert_eq!(d.ctl(&["run", "cleanup"]).code, 0);
    let c = d.wait_script("cleanup", "its one run", |s| s.last_exit.is_some());
    assert_eq!(c.last_exit.and_then(|e| e.code), Some(0));
}
