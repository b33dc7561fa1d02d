//! Several targets and checks, driven as a shell script would drive `ctl`: `start`, `stop`,
//! `restart` and `run` take several names, globs and `--all`, print one row per target and
//! exit with the worst code (a glob that matches nothing is 4, nothing done); `run --wait`
//! with several waits for every run; `status --check` exits 0 when every script named is up,
//! 6 when one is not, 4 for an unknown name.

use ctl::targets::{CheckJson, TargetJson, TargetsJson};
use scriptd_e2e::{Daemon, Env};

/// `ctl ARGS --output json`: exit code and the per-target results, parsed strictly.
fn targets(d: &Daemon, args: &[&str]) -> (i32, Vec<TargetJson>) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let r = d.ctl(&all);
    let doc: TargetsJson = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("`ctl {all:?}` JSON does not parse ({e}): {r:?}"));
    (r.code, doc.results)
}

fn row<'a>(results: &'a [TargetJson], name: &str) -> &'a TargetJson {
    results
        .iter()
        .find(|r| r.script == name)
        .unwrap_or_else(|| panic!("no row for {name}: {results:?}"))
}

fn names(results: &[TargetJson]) -> Vec<&str> {
    results.iter().map(|r| r.script.as_str()).collect()
}

/// Two services `web-a`, `web-b`; `worker`, disabled; `ok` and `bad`, disabled one-shots
/// that exit 0 and 3.
fn env() -> Env {
    Env::new(
        "scripts:
  web-a:
    command: \"sleep 30\"
  web-b:
    command: \"sleep 30\"
  worker:
    command: \"sleep 30\"
    enabled: false
  ok:
    command: \"exit 0\"
    enabled: false
  bad:
    command: \"exit 3\"
    enabled: false
",
    )
}

#[test]
fn several_names_globs_and_all_report_a_row_each() {
    let env = env();
    let d = env.start();
    for name in ["web-a", "web-b"] {
        d.wait_script(name, "running", |s| s.state == "running");
    }

    // Several names: one row each, in the order named.
    let (code, results) = targets(&d, &["stop", "web-b", "web-a"]);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(names(&results), ["web-b", "web-a"]);
    assert!(
        results.iter().all(|r| r.ok && r.exit_code == 0),
        "{results:?}"
    );
    for name in ["web-a", "web-b"] {
        d.wait_script(name, "stopped", |s| s.state == "stopped");
    }

    // A glob, as a table: NAME, RESULT, MESSAGE and a row per script it matches.
    let r = d.ctl(&["start", "web-*"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert!(
        lines[0].contains("NAME") && lines[0].contains("RESULT"),
        "{r:?}"
    );
    assert!(
        lines[1].contains("web-a") && lines[1].contains("ok"),
        "{r:?}"
    );
    assert!(
        lines[2].contains("web-b") && lines[2].contains("started"),
        "{r:?}"
    );
    for name in ["web-a", "web-b"] {
        d.wait_script(name, "running again", |s| s.state == "running");
    }

    // --all: every script (in the order of `ctl status`); start skips the disabled ones and says so, without failing.
    let (code, results) = targets(&d, &["start", "--all"]);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(names(&results), ["bad", "ok", "web-a", "web-b", "worker"]);
    let worker = row(&results, "worker");
    assert!(
        worker.ok && worker.message.contains("--all skips"),
        "{worker:?}"
    );
    assert_eq!(d.script("worker").state, "disabled");

    // Named explicitly, a disabled script is refused (1): the worst code wins, the other
    // target is still done.
    let (code, results) = targets(&d, &["restart", "web-a", "worker"]);
    assert_eq!(code, 1, "{results:?}");
    let (web, worker) = (row(&results, "web-a"), row(&results, "worker"));
    assert!(web.ok && web.run_id.is_some(), "{web:?}");
    assert!(!worker.ok && worker.exit_code == 1, "{worker:?}");
    assert!(worker.message.contains("disabled"), "{worker:?}");

    // A glob that matches nothing: exit 4 naming it, and nothing is done.
    let before = d.script("web-b").run_id;
    let r = d.ctl(&["stop", "web-b", "db-*"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("db-*"), "{r:?}");
    assert_eq!(d.script("web-b").state, "running");
    assert_eq!(d.script("web-b").run_id, before);

    // stop --all takes every script, the disabled ones included.
    let (code, results) = targets(&d, &["stop", "--all"]);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(results.len(), 5, "{results:?}");
    for name in ["web-a", "web-b"] {
        d.wait_script(name, "stopped by --all", |s| s.state == "stopped");
    }
    // A disabled script that was not running stays as it was.
    assert_eq!(d.script("worker").state, "disabled");
}

#[test]
fn run_wait_with_several_waits_for_every_run() {
    let env = env();
    let d = env.start();
    let (code, results) = targets(&d, &["run", "ok", "bad", "--wait"]);
    assert_eq!(code, 6, "{results:?}");
    let (ok, bad) = (row(&results, "ok"), row(&results, "bad"));
    assert!(ok.ok && ok.exit_code == 0 && ok.run_id.is_some(), "{ok:?}");
    assert!(ok.message.contains("succeeded"), "{ok:?}");
    assert!(!bad.ok && bad.exit_code == 6, "{bad:?}");
    assert!(bad.message.contains("failed"), "{bad:?}");
    // Both runs ended: the wait was for each of them.
    for name in ["ok", "bad"] {
        assert!(d.script(name).last_exit.is_some(), "{name} has not ended");
    }

    let (code, results) = targets(&d, &["run", "o*", "--wait"]);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(names(&results), ["ok"]);

    // --follow follows one run only.
    let r = d.ctl(&["run", "ok", "bad", "--wait", "--follow"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn status_check_is_0_when_up_6_when_not_4_when_unknown() {
    let env = Env::new(
        "scripts:
  up:
    command: \"sleep 30\"
  crash:
    command: \"exit 3\"
    restart: never
  off:
    command: \"exit 0\"
    enabled: false
",
    );
    let d = env.start();
    d.wait_script("up", "running", |s| s.state == "running");
    d.wait_script("crash", "failed", |s| s.state == "failed");

    let r = d.ctl(&["status", "--check", "up"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = d.ctl(&["status", "--check", "u*"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Default: every enabled script; only the ones not up are printed.
    let r = d.ctl(&["status", "--check"]);
    assert_eq!(r.code, 6, "{r:?}");
    assert_eq!(r.stdout, "crash: failed\n");

    let r = d.ctl(&["status", "--check", "--output", "json"]);
    assert_eq!(r.code, 6, "{r:?}");
    let doc: CheckJson = serde_json::from_str(&r.stdout).expect("strict parse");
    assert!(!doc.ok);
    let checked: Vec<(&str, &str, bool)> = doc
        .scripts
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str(), s.ok))
        .collect();
    assert_eq!(
        checked,
        [("crash", "failed", false), ("up", "running", true)]
    );

    // A stopped service is not up.
    d.ctl_ok(&["stop", "up"]);
    d.wait_script("up", "stopped", |s| s.state == "stopped");
    let r = d.ctl(&["status", "--check", "up"]);
    assert_eq!((r.code, r.stdout.as_str()), (6, "up: stopped\n"), "{r:?}");

    let r = d.ctl(&["status", "--check", "up", "nope"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("nope"), "{r:?}");
}
