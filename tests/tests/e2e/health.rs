//! Health probes (`health:`), end to end: a real HTTP server (`python3 -m http.server`,
//! which answers 200 for a file that exists and 404 once it is removed) probed by the real
//! daemon; `exec` and `tcp` probes; events `healthy`/`unhealthy`, the state in `ctl status`,
//! the `sys` lines, the restart, and a probe change that leaves the service alone.

use ctl::output::EventJson;
use scriptd_e2e::{
    is_phase, pids_with_marker, unique_marker, wait_for, Daemon, Env, Events, DEADLINE,
};
use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

/// Fails loudly when `python3` is missing (the HTTP server under test).
fn require_python3() {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "these tests run an HTTP server with python3, which is not installed: `apt-get install \
         python3` (.ci/run installs it)"
    );
}

/// A TCP port nothing listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A config with service `web`: an HTTP server on `port` serving `www/` of the config
/// directory, with `health` (YAML lines at 6 spaces) and a short restart delay.
fn web_config(env: &Env, port: u16, health: &str) -> String {
    let www = env.path("www");
    fs::create_dir_all(&www).expect("create www");
    format!(
        "scripts:\n  web:\n    command: [\"python3\", \"-m\", \"http.server\", \"{port}\", \
         \"--bind\", \"127.0.0.1\", \"--directory\", \"{}\"]\n    restart_delay: 100ms\n    \
         stop_grace: 2s\n    health:\n{health}",
        www.display()
    )
}

/// An HTTP probe of `/healthy` on `port`: 200 while `www/healthy` exists, 404 once it is
/// gone. Fast: every 100 ms, unhealthy after 2 failures; failures before the first success
/// do not count (the server takes a while to start, and the test makes it healthy only
/// once it follows the events).
fn http_health(port: u16, restart: bool) -> String {
    format!(
        "      http: http://127.0.0.1:{port}/healthy\n      interval: 100ms\n      timeout: \
         2s\n      failures: 2\n      start_period: 1m\n      restart: {restart}\n"
    )
}

fn is_event(e: &EventJson, script: &str, event: &str) -> bool {
    e.kind == "script" && e.script.as_deref() == Some(script) && e.event.as_deref() == Some(event)
}

/// `ctl logs SCRIPT`: the script's log, its `sys` lines included.
fn log_of(d: &Daemon, script: &str) -> String {
    d.ctl_ok(&["logs", script, "-n", "10000"])
}

#[test]
fn a_failing_http_probe_turns_the_service_unhealthy_and_restarts_it() {
    require_python3();
    let env = Env::new("");
    let port = free_port();
    env.set_body(&web_config(&env, port, &http_health(port, true)));
    let d = env.start();
    let mut ev = Events::follow(&d);
    env.write("www/healthy", "ok\n");

    let healthy = ev.wait("web to turn healthy", |e| is_event(e, "web", "healthy"));
    assert_eq!(healthy.run_id, Some(1));
    assert_eq!(healthy.message.as_deref(), Some("HTTP 200 OK"));
    // Healthy may come before ready_after has passed (still `starting`): wait for both.
    let first = d.wait_script("web", "healthy and running in status", |s| {
        s.health.as_ref().is_some_and(|h| h.status == "healthy") && s.state == "running"
    });
    let first_pid = first.pid.expect("a pid");

    fs::remove_file(env.path("www/healthy")).expect("remove www/healthy");
    let unhealthy = ev.wait("web to turn unhealthy", |e| is_event(e, "web", "unhealthy"));
    assert_eq!(unhealthy.run_id, Some(1));
    let message = unhealthy.message.unwrap_or_default();
    assert!(
        message.contains("HTTP 404") && message.contains("restarting"),
        "{message}"
    );
    let exited = ev.wait("run 1 to end", |e| is_event(e, "web", "exited"));
    assert_eq!(exited.run_id, Some(1));
    assert!(
        exited
            .message
            .as_deref()
            .is_some_and(|m| m.contains("stopped as unhealthy")),
        "{exited:?}"
    );
    let restarted = ev.wait("web to be restarted", |e| is_event(e, "web", "restarted"));
    assert_eq!(restarted.run_id, Some(2));
    let second = d.wait_script("web", "run 2", |s| s.run_id == 2 && s.pid.is_some());
    assert_ne!(second.pid, Some(first_pid), "restarted: a new process");
    assert_eq!(second.restarts, 1, "counted as a restart");

    // The new run starts over and turns healthy once the server answers 200 again.
    env.write("www/healthy", "ok\n");
    let again = ev.wait("run 2 to turn healthy", |e| is_event(e, "web", "healthy"));
    assert_eq!(again.run_id, Some(2));

    let log = log_of(&d, "web");
    assert!(log.contains("health: healthy (HTTP 200 OK)"), "{log}");
    assert!(
        log.contains("health: unhealthy: 2 failed probe(s) in a row, the last: HTTP 404"),
        "{log}"
    );
    let table = d.ctl_ok(&["status"]);
    assert!(
        table.contains("health  web: healthy · HTTP 200 OK · "),
        "{table}"
    );
}

#[test]
fn without_restart_an_unhealthy_service_keeps_running_and_recovers() {
    require_python3();
    let env = Env::new("");
    let port = free_port();
    env.set_body(&web_config(&env, port, &http_health(port, false)));
    let d = env.start();
    let mut ev = Events::follow(&d);
    env.write("www/healthy", "ok\n");
    ev.wait("web to turn healthy", |e| is_event(e, "web", "healthy"));
    let pid = d.script("web").pid.expect("a pid");

    fs::remove_file(env.path("www/healthy")).expect("remove www/healthy");
    let unhealthy = ev.wait("web to turn unhealthy", |e| is_event(e, "web", "unhealthy"));
    assert!(
        unhealthy
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not restarted")),
        "{unhealthy:?}"
    );
    let s = d.wait_script("web", "state unhealthy", |s| s.state == "unhealthy");
    assert_eq!(s.pid, Some(pid), "the same process");
    assert_eq!(
        d.ctl(&["status", "--check", "web"]).code,
        6,
        "unhealthy is not up"
    );
    let h = s.health.expect("health in status");
    assert_eq!(h.status, "unhealthy");
    assert_eq!(h.last_result.as_deref(), Some("failed"));
    assert!(h.consecutive_failures >= 2, "{h:?}");
    assert!(h.last_probe.is_some());
    assert!(
        h.message
            .as_deref()
            .is_some_and(|m| m.starts_with("HTTP 404")),
        "{h:?}"
    );
    // Several more failing probes: still the same process, nothing exits.
    ev.collect_for(Duration::from_millis(500));
    assert!(
        !ev.seen().iter().any(|e| is_event(e, "web", "exited")),
        "the service was stopped:\n{}",
        ev.dump()
    );
    assert_eq!(d.script("web").pid, Some(pid));

    env.write("www/healthy", "ok\n");
    let healthy = ev.wait("web to recover", |e| is_event(e, "web", "healthy"));
    assert_eq!(healthy.run_id, Some(1));
    let s = d.wait_script("web", "running again", |s| s.state == "running");
    assert_eq!(s.pid, Some(pid));
    assert_eq!(d.ctl(&["status", "--check", "web"]).code, 0);
    assert_eq!(s.health.map(|h| h.consecutive_failures), Some(0));
}

#[test]
fn an_exec_probe_s_output_stays_out_of_the_log_and_a_slow_one_is_killed() {
    let marker = unique_marker("probe-");
    let slow = unique_marker("1000.1301");
    let env = Env::new("");
    // Healthy while `ready` exists (its first line is the probe's message); without it, a
    // probe that hangs (and forks) until the timeout kills its group.
    let check = env.script(
        "check.sh",
        &format!(
            "if [ -f ready ]; then echo \"ready {marker}\"; exit 0; fi\n\
             sleep {slow} &\nexec sleep {slow}"
        ),
    );
    env.set_body(&format!(
        "scripts:\n  svc:\n    command: \"echo service-up; exec sleep 1000\"\n    stop_grace: \
         1s\n    health:\n      exec: [\"{}\"]\n      interval: 100ms\n      timeout: 1s\n      \
         failures: 1\n      start_period: 1m\n      restart: false\n",
        check.display()
    ));
    let d = env.start();
    let mut ev = Events::follow(&d);
    env.write("ready", "");
    let healthy = ev.wait("svc to turn healthy", |e| is_event(e, "svc", "healthy"));
    assert_eq!(healthy.message, Some(format!("ready {marker}")));
    assert!(d.script("svc").pid.is_some());

    fs::remove_file(env.path("ready")).expect("remove ready");
    let unhealthy = ev.wait("svc to turn unhealthy", |e| is_event(e, "svc", "unhealthy"));
    assert!(
        unhealthy
            .message
            .as_deref()
            .is_some_and(|m| m.contains("timed out after 1s")),
        "{unhealthy:?}"
    );
    // Each timed-out probe's group is killed: no sleeper outlives its probe for long (one
    // may be running right now), and none is left once probing stops.
    wait_for(
        "the timed-out probes' sleepers to be killed",
        DEADLINE,
        || (pids_with_marker(&format!("sleep {slow}")).len() <= 2).then_some(()),
    );
    d.ctl_ok(&["stop", "svc"]);
    wait_for("every probe process to be gone", DEADLINE, || {
        pids_with_marker(&format!("sleep {slow}"))
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        d.script("svc").health.map(|h| h.status),
        Some("unhealthy".into())
    );
    let log = log_of(&d, "svc");
    assert!(log.contains("service-up"), "{log}");
    assert!(
        log.contains("health: healthy (ready"),
        "the sys line: {log}"
    );
    // The probe's own output reaches the log only inside the sys line of a verdict.
    for line in log.lines().filter(|l| l.contains(&marker)) {
        assert!(
            line.contains(" sys | health: healthy (ready "),
            "{line}\n{log}"
        );
    }
}

#[test]
fn changing_only_the_probe_keeps_the_service_s_pid() {
    require_python3();
    let env = Env::new("");
    let port = free_port();
    env.set_body(&web_config(&env, port, &http_health(port, false)));
    let d = env.start();
    let mut ev = Events::follow(&d);
    env.write("www/healthy", "ok\n");
    ev.wait("web to turn healthy", |e| is_event(e, "web", "healthy"));
    let pid = d.script("web").pid.expect("a pid");

    // A tcp probe of a port nothing listens on: live, the probe starts over and fails.
    let closed = free_port();
    env.set_body(&web_config(
        &env,
        port,
        &format!(
            "      tcp: \"127.0.0.1:{closed}\"\n      interval: 100ms\n      failures: 2\n      \
             restart: false\n"
        ),
    ));
    let applied = ev.wait("the probe change to be applied", |e| is_phase(e, "applied"));
    let changes = applied.changes.unwrap_or_default();
    assert!(!changes.is_empty());
    for c in &changes {
        assert!(c.field.starts_with("health."), "{c:?}");
        assert_eq!(c.impact, "live", "{c:?}");
    }
    let unhealthy = ev.wait("the tcp probe to fail", |e| is_event(e, "web", "unhealthy"));
    assert_eq!(unhealthy.run_id, Some(1));
    assert!(
        unhealthy
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("connect 127.0.0.1:{closed}"))),
        "{unhealthy:?}"
    );
    // The same port as the server: healthy again, still the first process.
    env.set_body(&web_config(
        &env,
        port,
        &format!("      tcp: \"127.0.0.1:{port}\"\n      interval: 100ms\n"),
    ));
    let healthy = ev.wait("the tcp probe to succeed", |e| {
        is_event(e, "web", "healthy")
    });
    assert_eq!(
        healthy.message,
        Some(format!("connected to 127.0.0.1:{port}"))
    );
    let s = d.script("web");
    assert_eq!(
        (s.pid, s.run_id),
        (Some(pid), 1),
        "the service was not restarted"
    );
    assert!(
        !ev.seen().iter().any(|e| is_event(e, "web", "exited")),
        "{}",
        ev.dump()
    );
}
