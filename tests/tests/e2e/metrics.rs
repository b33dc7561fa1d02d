//! Metrics: `GET /metrics` scraped by a real Prometheus (Debian's `prometheus`, started by
//! the test on loopback), the exposition checked by `promtool`, and what `ctl top`, `ctl
//! status --wide` and the metrics show of each script's processes.

use ctl::output::StatusJson;
use ctl::top::TopJson;
use scriptd_e2e::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Continues the harness's `daemon:` section: metrics on a free loopback port.
const METRICS: &str = "  metrics: \"127.0.0.1:0\"\n";

/// Prometheus starts, reads its TSDB and scrapes every second: give it more than the
/// usual deadline.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(30);

fn job_config(echo: &str) -> String {
    format!("{METRICS}scripts:\n  job:\n    command: \"echo {echo}\"\n    interval: 1h\n")
}

#[test]
fn prometheus_scrapes_runs_and_reloads_and_promtool_accepts_the_exposition() {
    let promtool = require_program("promtool", "prometheus");
    let env = Env::new(&job_config("first"));
    let d = env.start();
    let addr = metrics_address(&d);
    let url = format!("http://{addr}/metrics");

    // The classic text format by default; it passes `promtool check metrics`.
    let (code, content_type, text) = http("GET", &url, None);
    assert_eq!(code, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let checked = check.wait_with_output().expect("promtool result");
    assert!(
        checked.status.success(),
        "promtool check metrics refused the exposition: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // OpenMetrics when asked; only /metrics, only GET.
    let (code, content_type, open) = http("GET", &url, Some("application/openmetrics-text"));
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert_eq!(http("GET", &format!("http://{addr}/"), None).0, 404);
    // A `ctl events` follower is a connected client and an event follower.
    let events = Events::follow(&d);
    wait_for("the follower in the metrics", DEADLINE, || {
        let text = http("GET", &url, None).2;
        let followers = sample(&text, "scriptd_event_followers")?;
        let clients = sample(&text, "scriptd_connected_clients")?;
        (followers >= 1.0 && clients >= 1.0).then_some(())
    });
    drop(events);
    assert_eq!(http("POST", &url, None).0, 405);

    let prom = Prometheus::start(&addr);
    let up = wait_for_opt(PROMETHEUS_DEADLINE, || {
        (prom.query("up{job=\"scriptd\"}")? == 1.0).then_some(())
    });
    assert!(
        up.is_some(),
        "Prometheus never saw the daemon's target up; its log:\n{}",
        prom.log_text()
    );
    let runs = "scriptd_script_runs_started_total{script=\"job\"}";
    let before = wait_for(
        "Prometheus to have job's run counter",
        PROMETHEUS_DEADLINE,
        || prom.query(runs),
    );
    d.ctl_ok(&["run", "job", "--wait"]);
    let text = http("GET", &url, None).2;
    let control = "scriptd_control_actions_total{action=\"run\",result=\"ok\"}";
    assert_eq!(sample(&text, control), Some(1.0), "{text}");
    env.set_body(&job_config("second"));
    d.wait_script("job", "the save applied", |_| {
        d.status().running_version == 2
    });
    let moved = wait_for_opt(PROMETHEUS_DEADLINE, || {
        (prom.query(runs)? > before).then_some(())
    });
    assert!(
        moved.is_some(),
        "the run counter did not move past {before}"
    );
    let reloads = "scriptd_reload_attempts_total{result=\"applied\",source=\"watch\"}";
    let reloaded = wait_for_opt(PROMETHEUS_DEADLINE, || {
        (prom.query(reloads)? >= 1.0).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "Prometheus never saw the applied reload"
    );
}

fn top_json(d: &Daemon, sort: &str) -> TopJson {
    let r = d.ctl(&["top", "-n", "1", "--sort", sort, "--output", "json"]);
    assert_eq!(r.code, 0, "ctl top failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("ctl top JSON parses with the strict schema")
}

#[test]
fn a_cpu_burner_and_a_memory_holder_show_up_as_such() {
    let python = require_program("python3", "python3");
    let hold = format!(
        "[\"{}\", \"-c\", \"import time; b = b'x' * (64 << 20); time.sleep(3600)\"]",
        python.display()
    );
    let env = Env::new(&format!(
        "{METRICS}scripts:\n  burn:\n    command: \"while :; do :; done\"\n  hold:\n    \
         command: {hold}\n  calm:\n    command: \"sleep 3600\"\n"
    ));
    let d = env.start();
    const MIB_60: u64 = 60 << 20;

    // ctl top, one snapshot: the burner first by CPU, the holder first by memory.
    wait_for("burn to lead `ctl top` by CPU", DEADLINE, || {
        let top = top_json(&d, "cpu");
        (top.scripts.first()?.name == "burn").then_some(())
    });
    let by_mem = wait_for("hold to lead `ctl top --sort mem`", DEADLINE, || {
        let top = top_json(&d, "mem");
        let first = top.scripts.first()?;
        (first.name == "hold" && first.resources.rss_bytes >= MIB_60).then_some(top)
    });
    assert_eq!(by_mem.scripts.len(), 3, "every running script has a row");
    assert!(by_mem.daemon.is_some_and(|r| r.rss_bytes > 0 && r.fds > 0));
    // The table (stdout is not a terminal: one snapshot and exit).
    wait_for("burn on the first row of `ctl top -n 1`", DEADLINE, || {
        let out = d.ctl_ok(&["top", "-n", "1"]);
        let mut rows = out
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("NAME"));
        rows.next()?;
        rows.next()?.trim_start().starts_with("burn ").then_some(())
    });

    // The metrics: the burner's CPU time grows, the holder's memory is resident.
    let url = format!("http://{}/metrics", metrics_address(&d));
    let cpu = |text: &str| sample(text, "scriptd_script_cpu_seconds_total{script=\"burn\"}");
    let first = wait_for("burn's CPU seconds", DEADLINE, || {
        cpu(&http("GET", &url, None).2)
    });
    wait_for("burn's CPU seconds to grow", DEADLINE, || {
        (cpu(&http("GET", &url, None).2)? > first).then_some(())
    });
    let text = http("GET", &url, None).2;
    let rss = sample(
        &text,
        "scriptd_script_resident_memory_bytes{script=\"hold\"}",
    );
    assert!(
        rss.is_some_and(|r| r >= MIB_60 as f64),
        "hold's RSS {rss:?}:\n{text}"
    );
    // `sh -c "sleep 3600"`: the shell (unless it execs) and sleep.
    let calm = sample(&text, "scriptd_script_processes{script=\"calm\"}");
    assert!(calm.is_some_and(|p| p >= 1.0), "{calm:?}");

    // status: --wide adds the columns; JSON carries resources, null once a script stopped.
    let wide = d.ctl_ok(&["status", "--wide"]);
    let header = wide
        .lines()
        .find(|l| l.contains("NAME"))
        .unwrap_or_default();
    for column in ["CPU %", "MEM", "PROCS"] {
        assert!(header.contains(column), "{column} missing in:\n{wide}");
    }
    assert!(!d.ctl_ok(&["status"]).contains("PROCS"), "only with --wide");
    d.ctl_ok(&["stop", "calm"]);
    let r = d.ctl(&["status", "--output", "json"]);
    let status: StatusJson = serde_json::from_str(&r.stdout).expect("strict status JSON");
    let of = |name: &str| status.scripts.iter().find(|s| s.name == name).expect(name);
    assert!(of("calm").resources.is_none(), "a stopped script has none");
    assert!(of("hold").resources.is_some_and(|r| r.rss_bytes >= MIB_60));
    assert!(status.daemon.resources.is_some());
}

#[test]
fn a_metrics_address_in_use_stops_the_start_before_any_script_runs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address");
    let marker = unique_marker("metrics-port");
    let env = Env::new(&format!(
        "  metrics: \"{addr}\"\nscripts:\n  web:\n    command: \"touch started; exec sleep \
         3600 # {marker}\"\n"
    ));
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("cannot listen on daemon.metrics {addr}")),
        "{}",
        r.stderr
    );
    assert!(!env.path("started").exists(), "no script may start");
    assert!(pids_with_marker(&marker).is_empty());
}
