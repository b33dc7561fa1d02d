//! `ctl events` filters and resume, driven as a shell script would: `--script NAME|GLOB`
//! and `--kind KIND` are applied by the daemon; every event has an `id`, and `--after-id N`
//! replays the kept events after N, then follows live ones, with no gap and no repeat; an id
//! of an earlier daemon process gets a `missed` marker saying so; an unknown kind is a usage
//! error (2), an unknown script or an id not reached yet is 4.

use ctl::output::EventJson;
use scriptd_e2e::{wait_for, Daemon, Env, Events, Follower, DEADLINE};
use std::time::Duration;

/// Three one-shots that only run when asked: `job-a`, `job-b`, `other`.
fn env() -> Env {
    Env::new(
        "scripts:
  job-a:
    command: \"exit 0\"
    enabled: false
  job-b:
    command: \"exit 1\"
    enabled: false
  other:
    command: \"exit 0\"
    enabled: false
",
    )
}

/// `ctl run NAME --wait`: its started and exited events are published when it returns.
fn run(d: &Daemon, name: &str) {
    let r = d.ctl(&["run", name, "--wait"]);
    assert!(r.code == 0 || r.code == 6, "ctl run {name} --wait: {r:?}");
}

/// `ctl events ARGS --output json` to its end (`--count` in ARGS ends it), parsed strictly.
fn events(d: &Daemon, args: &[&str]) -> Vec<EventJson> {
    let mut all = vec!["events", "--output", "json"];
    all.extend_from_slice(args);
    let (code, lines) = Follower::start(d, &all).wait_exit(&format!("ctl {all:?} to end"));
    assert_eq!(code, Some(0), "ctl {all:?}: {lines:?}");
    lines.iter().map(|l| parse(l)).collect()
}

fn parse(line: &str) -> EventJson {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("event does not parse ({e}): {line}"))
}

/// `script event` of each script event, `reload PHASE` of each reload event.
fn names(events: &[EventJson]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.kind.as_str() {
            "script" => format!(
                "{} {}",
                e.script.as_deref().unwrap_or("?"),
                e.event.as_deref().unwrap_or("?")
            ),
            "reload" => format!("reload {}", e.phase.as_deref().unwrap_or("?")),
            other => other.to_owned(),
        })
        .collect()
}

#[test]
fn script_and_kind_filters_are_applied_by_the_daemon() {
    let env = env();
    let d = env.start();
    for name in ["job-a", "job-b", "job-a"] {
        run(&d, name);
    }
    assert_eq!(d.reload(&[]).0, 0, "a reload of the running files");
    // Everything since the start.
    let all = names(&events(&d, &["--after-id", "0", "--count", "8"]));
    assert_eq!(
        all,
        [
            "job-a started",
            "job-a exited",
            "job-b started",
            "job-b exited",
            "job-a started",
            "job-a exited",
            "reload detected",
            "reload unchanged",
        ],
    );

    let table: [(&[&str], &[&str]); 5] = [
        (
            &["--script", "job-a"],
            &[
                "job-a started",
                "job-a exited",
                "job-a started",
                "job-a exited",
            ],
        ),
        (
            &["--kind", "exited"],
            &["job-a exited", "job-b exited", "job-a exited"],
        ),
        (
            &["--script", "job-*", "--kind", "started"],
            &["job-a started", "job-b started", "job-a started"],
        ),
        (
            &["--kind", "reload"],
            &["reload detected", "reload unchanged"],
        ),
        (
            &["--script", "job-b", "--kind", "reload", "--kind", "exited"],
            &["job-b exited", "reload detected", "reload unchanged"],
        ),
    ];
    for (filter, want) in table {
        let count = want.len().to_string();
        let mut args = vec!["--after-id", "0", "--count", &count];
        args.extend_from_slice(filter);
        assert_eq!(names(&events(&d, &args)), want, "ctl events {filter:?}");
    }

    // Live too: a follower of job-b's exits sees the next one and nothing of job-a's or
    // other's in between.
    let live = Follower::start(
        &d,
        &[
            "events", "--output", "json", "--script", "job-b", "--kind", "exited",
        ],
    );
    // The follower is subscribed once a `--after-id` request made after it would see the
    // same event: keep running job-b until the live follower reports an exit.
    run(&d, "other");
    run(&d, "job-a");
    let first = wait_for("the live follower to see a job-b exit", DEADLINE, || {
        run(&d, "job-b");
        live.next_line(Duration::from_millis(500)).ok()
    });
    let first = parse(&first);
    assert_eq!(names(&[first]), ["job-b exited"]);

    // A table line starts with the event's id.
    let table = d.ctl(&["events", "--after-id", "0", "--count", "1"]);
    assert_eq!(table.code, 0, "{table:?}");
    let id = table.stdout.split_whitespace().next().unwrap_or_default();
    assert!(id.parse::<u64>().is_ok_and(|id| id > 0), "{table:?}");
}

#[test]
fn after_id_resumes_exactly_after_it_and_follows_on() {
    let env = env();
    let d = env.start();
    let mut full = Events::follow(&d);
    for name in ["job-a", "job-b", "other"] {
        run(&d, name);
    }
    let last = full.wait("other exited", |e| {
        e.script.as_deref() == Some("other") && e.event.as_deref() == Some("exited")
    });
    let seen: Vec<&EventJson> = full.seen().iter().collect();
    let ids: Vec<u64> = seen.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    // Resume after the third-last event: the last two, then live ones.
    let after = seen[seen.len() - 3].id;
    let resumed = Follower::start(
        &d,
        &[
            "events",
            "--output",
            "json",
            "--after-id",
            &after.to_string(),
        ],
    );
    let replayed: Vec<EventJson> = (0..2)
        .map(|_| parse(&resumed.next_line(DEADLINE).expect("replayed event")))
        .collect();
    assert_eq!(
        replayed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [seen[seen.len() - 2].id, last.id],
        "exactly the events after {after}"
    );
    // Live events after the replay: the next one the unfiltered follower sees, no gap.
    run(&d, "job-a");
    let next = full.wait("job-a started again", |e| {
        e.script.as_deref() == Some("job-a") && e.event.as_deref() == Some("started")
    });
    let live = parse(&resumed.next_line(DEADLINE).expect("live event"));
    assert_eq!((live.id, live.event), (next.id, next.event));
    assert_eq!(next.id, last.id + 1, "no event in between");

    // An id not reached yet: 4.
    let r = d.ctl(&["events", "--after-id", &(next.id + 1000).to_string()]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("no event"), "{r:?}");

    // After a restart, an id of the earlier process: a marker saying so, then every event
    // of the new process, never the old ones again.
    drop(full);
    drop(d);
    let d = env.start();
    run(&d, "job-a");
    let got = events(&d, &["--after-id", &last.id.to_string(), "--count", "2"]);
    assert_eq!(got[0].kind, "missed", "{got:?}");
    assert_eq!(got[0].earlier_daemon, Some(true), "{got:?}");
    assert_eq!(got[0].missed, Some(0), "{got:?}");
    assert!(got[1].id > next.id, "ids grow across restarts: {got:?}");
    assert_eq!(
        names(&got[1..]),
        ["job-a started", "job-a exited"],
        "{got:?}"
    );
    let table = d.ctl(&["events", "--after-id", &last.id.to_string(), "--count", "1"]);
    assert!(
        table.stdout.starts_with("- ") && table.stdout.contains("earlier daemon process"),
        "{table:?}"
    );
}

#[test]
fn unknown_kinds_scripts_and_bad_globs_are_refused() {
    let env = env();
    let d = env.start();
    let r = d.ctl(&["events", "--kind", "finished"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("reload, started, exited, timed-out"),
        "the valid kinds are listed: {r:?}"
    );
    for script in ["nosuch", "web-*"] {
        let r = d.ctl(&["events", "--script", script]);
        assert_eq!(r.code, 4, "{r:?}");
        assert!(r.stderr.contains(script), "{r:?}");
    }
    let r = d.ctl(&["events", "--script", "job-["]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn a_quiet_follower_ends_when_its_reader_goes_away() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let env = env();
    let d = env.start();
    run(&d, "job-a");
    // `ctl events --after-id 0 | head -n 1`: the bus is quiet after the replay, and ctl still
    // exits 0, quietly, once the reader is gone.
    let mut child = d
        .ctl_command(&["events", "--after-id", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl events");
    {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("read") > 0);
        assert!(line.contains("job-a started"), "{line}");
    } // the read end closes here, like `head` exiting
    let status = wait_for("ctl events to exit after its reader left", DEADLINE, || {
        child.try_wait().expect("try_wait")
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "", "quiet on a closed pipe");
}
