//! Supervision end to end: periodic runs, service restarts with backoff, timeouts, stop
//! grace, process-group cleanup (stop, daemon SIGTERM, daemon `kill -9`), the socket
//! (second daemon, stale socket; other uids: access.rs), control commands, config validation and
//! shutdown. Every wait polls with a deadline; nothing relies on a bare sleep.

use scriptd_e2e::{alive, pids_with_marker, scriptd_exits, wait_for, Env, DEADLINE};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ helpers

/// Lines of a file the scripts append to (empty when it does not exist yet).
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// True when nothing at all is left of `pid`: not running and not a zombie either.
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until none of `pids` exists any more, zombies included.
fn wait_gone(pids: &[u32], what: &str) {
    wait_for(what, DEADLINE, || {
        pids.iter().all(|&p| gone(p)).then_some(())
    });
}

/// Command line of a process, NULs as spaces.
fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

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
    let env = Env::new("");
    let out = env.path("runs.txt");
    let script = env.script(
        "tick.sh",
        &format!(
            "echo \"$SCRIPTD_RUN_ID $(date +%s%N)\" >> {}",
            out.display()
        ),
    );
    env.set_body(&format!(
        "scripts:\n  tick:\n    command: [\"{}\"]\n    interval: 300ms\n",
        script.display()
    ));
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
    for w in times.windows(2) {
        let gap_ms = (w[1] - w[0]) / 1_000_000;
        assert!(
            gap_ms >= 200,
            "runs only {gap_ms} ms apart (interval 300ms): {written:?}"
        );
    }
    let exit = after.last_exit.expect("a finished run");
    assert_eq!(exit.code, Some(0));
}

// ------------------------------------------------------------------ 2. backoff

#[test]
fn crashing_service_restarts_with_growing_backoff() {
    let env = Env::new("");
    let out = env.path("starts.txt");
    let script = env.script(
        "crash.sh",
        &format!("date +%s%N >> {}\nexit 1", out.display()),
    );
    env.set_body(&format!(
        "scripts:\n  crash:\n    command: [\"{}\"]\n    restart: on-failure\n",
        script.display()
    ));
    let d = env.start();

    let mut seen_backing_off = false;
    let mut max_restarts = 0;
    let starts = wait_for("4 starts of the crashing service", DEADLINE, || {
        let s = d.script("crash");
        seen_backing_off |= s.state == "backing-off";
        max_restarts = max_restarts.max(s.restarts);
        let l = lines(&out);
        (l.len() >= 4).then_some(l)
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
    let env = Env::new(
        "scripts:\n  slow:\n    command: \"sleep 30.31\"\n    interval: 1h\n    timeout: 300ms\n",
    );
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
    assert!(pids_with_marker("sleep 30.31").is_empty());
    let after = d.script("slow");
    assert_eq!(after.state, "waiting");
    assert_eq!(after.pid, None);
}

// ------------------------------------------------------------------ 4. stop grace

#[test]
fn stop_kills_a_script_ignoring_term_after_the_grace() {
    let env = Env::new("");
    let ready = env.path("ready");
    let script = env.script(
        "stubborn.sh",
        &format!(
            "trap '' TERM\necho ready >> {}\nwhile true; do sleep 0.1; done",
            ready.display()
        ),
    );
    env.set_body(&format!(
        "scripts:\n  stubborn:\n    command: [\"{}\"]\n    stop_grace: 500ms\n",
        script.display()
    ));
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
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
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
    let marker = "1000.5101";
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
    let marker = "1000.5202";
    let env = forking_env(marker);
    let mut d = env.start();
    let pids = forked(marker);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), Some(0), "daemon exit after SIGTERM");
    assert_nothing_left(&pids, marker, "after the daemon's SIGTERM");
}

#[test]
fn daemon_kill_9_takes_the_process_group_with_it() {
    let marker = "1000.5303";
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
    let marker = "1000.6202";
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
    assert_eq!(s.state, "running");
    let p2 = s.pid.expect("pid after start");
    assert_ne!(p2, p1);
    assert!(alive(p2));
    assert_eq!(s.run_count, 2);

    let r = d.ctl(&["restart", "svc"]);
    assert_eq!(r.code, 0, "ctl restart svc: {r:?}");
    let s = d.script("svc");
    assert_eq!(s.state, "running");
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
    let env = Env::new("");
    let got = env.path("got.txt");
    let ready = env.path("ready.txt");
    let term = env.script(
        "term.sh",
        &format!(
            "trap 'sleep 0.3; echo got TERM >> {g}; exit 0' TERM\necho term >> {r}\nwhile true; do sleep 0.1; done",
            g = got.display(),
            r = ready.display()
        ),
    );
    let int = env.script(
        "int.sh",
        &format!(
            "trap 'echo got INT >> {g}; exit 0' INT\necho int >> {r}\nwhile true; do sleep 0.1; done",
            g = got.display(),
            r = ready.display()
        ),
    );
    env.set_body(&format!(
        "scripts:\n  term:\n    command: [\"{}\"]\n    stop_grace: 5s\n  int:\n    command: [\"{}\"]\n    stop_signal: INT\n    stop_grace: 5s\n  periodic:\n    command: \"sleep 1000.9101\"\n    interval: 1h\n",
        term.display(),
        int.display()
    ));
    let mut d = env.start();
    wait_for("both services to have set their traps", DEADLINE, || {
        (lines(&ready).len() >= 2).then_some(())
    });
    let st = d.status();
    let pids: Vec<u32> = st.scripts.iter().filter_map(|s| s.pid).collect();
    assert_eq!(pids.len(), 3, "all three running: {:?}", st.scripts);

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
    assert!(pids_with_marker("sleep 1000.9101").is_empty());
}
