//! Automation that waits for outcomes, driven as a shell script would drive `ctl`: `run`
//! prints its run id and refuses a script that is already running; `run --wait` exits 0 or
//! 6 with the run's end (`--timeout` ends the wait, never the run; `--follow` prints the
//! run's lines); `logs -f --run ID` ends after the run; `--until-match` ends at the match
//! (6 at its timeout or when the lines end); a follower whose reader left exits at once;
//! unknown run ids and version 0 exit 4.
//!
//! Runs that must stay up until the test lets them go wait for a file the test creates;
//! every wait has a deadline, none is a bare sleep.

use ctl::logs::LogLineJson;
use ctl::output::{ControlJson, RunWaitJson};
use scriptd_e2e::{exits, wait_for, Daemon, Env, Run, DEADLINE};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

/// A config whose scripts only run when `ctl run` asks: `gate` prints, waits for the file
/// `go`, prints again and exits 0; `ok` exits 0, `bad` 3, `slow` passes its 300ms timeout.
fn env() -> Env {
    let env = Env::new("");
    let go = env.path("go");
    env.script(
        "gate.sh",
        &format!(
            "echo gate-start\nwhile [ ! -e {} ]; do sleep 0.02; done\necho gate-done",
            go.display()
        ),
    );
    let gate = env.path("gate.sh");
    env.set_body(&format!(
        "scripts:
  gate:
    command: [\"{}\"]
    enabled: false
  ok:
    command: \"echo ok-line; echo ok-err >&2\"
    enabled: false
  bad:
    command: \"echo bad-line; exit 3\"
    enabled: false
  slow:
    command: \"sleep 30\"
    interval: 1h
    timeout: 300ms
    enabled: false
",
        gate.display()
    ));
    env
}

/// Runs `ctl ARGS` to its end, with a deadline: a `ctl` that hangs fails the test.
fn ctl_ends(d: &Daemon, args: &[&str]) -> Run {
    let child = d
        .ctl_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl");
    exits(child, &format!("ctl {}", args.join(" ")))
}

/// A `ctl` whose stdout lines a thread hands over as they come; killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str]) -> Self {
        let mut child = d
            .ctl_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ctl");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line; `None` once stdout closed. Fails the test after [`DEADLINE`].
    fn line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line and no end within {DEADLINE:?}")
            }
        }
    }

    /// Waits (with a deadline) for ctl to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        wait_for("ctl to exit", DEADLINE, || {
            self.child.try_wait().expect("try_wait")
        })
        .code()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_wait_json(r: &Run) -> RunWaitJson {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("run --wait JSON does not parse strictly ({e}): {r:?}"))
}

#[test]
fn run_prints_its_run_id_and_refuses_a_running_script_naming_its_run() {
    let env = env();
    let d = env.start();
    let r = d.ctl(&["run", "gate", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: ControlJson = serde_json::from_str(&r.stdout).expect("strict control JSON");
    assert_eq!(doc.run_id, Some(1), "{doc:?}");

    let again = d.ctl(&["run", "gate"]);
    assert_eq!(again.code, 1, "someone else's run is not ours: {again:?}");
    assert!(
        again.stderr.contains("already running as run 1"),
        "{again:?}"
    );

    std::fs::write(env.path("go"), "").expect("let the run end");
    // `logs -f --run 1` ends (exit 0) after the run's last line.
    let follow = ctl_ends(&d, &["logs", "-f", "gate", "--run", "1", "--raw"]);
    assert_eq!(follow.code, 0, "{follow:?}");
    assert_eq!(follow.stdout, "gate-start\ngate-done\n", "{follow:?}");

    let r = d.ctl(&["run", "gate"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("gate: run 2: started"), "{r:?}");
}

#[test]
fn run_wait_exits_0_on_success_and_6_on_failure_or_timeout() {
    let env = env();
    let d = env.start();
    let r = ctl_ends(&d, &["run", "ok", "--wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ok: run 1 succeeded: exit 0"), "{r:?}");

    let r = ctl_ends(&d, &["run", "bad", "--wait", "--output", "json"]);
    assert_eq!(r.code, 6, "{r:?}");
    let doc = run_wait_json(&r);
    assert_eq!(
        (
            doc.outcome.as_str(),
            doc.run_id,
            doc.exit_code,
            doc.timed_out
        ),
        ("run-failed", 1, Some(3), false),
        "{doc:?}"
    );
    assert!(
        doc.started_at.is_some() && doc.ended_at.is_some(),
        "{doc:?}"
    );

    let r = ctl_ends(&d, &["run", "slow", "--wait", "--output", "json"]);
    assert_eq!(r.code, 6, "{r:?}");
    let doc = run_wait_json(&r);
    assert_eq!(doc.outcome, "run-failed", "{doc:?}");
    assert!(doc.timed_out && doc.signal.is_some(), "{doc:?}");
}

#[test]
fn run_wait_timeout_ends_the_wait_and_the_run_goes_on() {
    let env = env();
    let d = env.start();
    let r = ctl_ends(
        &d,
        &[
            "run",
            "gate",
            "--wait",
            "--timeout",
            "200ms",
            "--output",
            "json",
        ],
    );
    assert_eq!(r.code, 6, "{r:?}");
    let doc = run_wait_json(&r);
    assert_eq!(
        (doc.outcome.as_str(), doc.run_id, doc.ended_at.as_deref()),
        ("timeout", 1, None),
        "{doc:?}"
    );
    let s = d.script("gate");
    assert_eq!((s.state.as_str(), s.run_id), ("running", 1), "{s:?}");

    // The run ends later, normally; status says which run its last exit belongs to.
    std::fs::write(env.path("go"), "").expect("let the run end");
    let s = d.wait_script("gate", "run 1 to end", |s| s.pid.is_none());
    let exit = s.last_exit.expect("a last exit");
    assert_eq!((exit.run_id, exit.code), (Some(1), Some(0)), "{exit:?}");
}

#[test]
fn run_wait_follow_prints_the_runs_lines() {
    let env = env();
    let d = env.start();
    let r = ctl_ends(&d, &["run", "ok", "--wait", "--follow"]);
    assert_eq!(r.code, 0, "{r:?}");
    for want in ["out | ok-line", "err | ok-err", "ok: run 1 succeeded"] {
        assert!(r.stdout.contains(want), "{want:?} in {r:?}");
    }

    // --raw: stdout is the run's output alone, ctl's own lines go to stderr.
    let r = ctl_ends(&d, &["run", "ok", "--wait", "--follow", "--raw"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut out: Vec<&str> = r.stdout.lines().collect();
    out.sort_unstable();
    assert_eq!(out, ["ok-err", "ok-line"], "{r:?}");
    assert!(r.stderr.contains("ok: run 2 succeeded"), "{r:?}");

    let r = ctl_ends(
        &d,
        &["run", "bad", "--wait", "--follow", "--output", "json"],
    );
    assert_eq!(r.code, 6, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let (last, log) = lines.split_last().expect("output");
    let doc: RunWaitJson = serde_json::from_str(last).expect("the result, strictly");
    assert_eq!(
        (doc.outcome.as_str(), doc.exit_code),
        ("run-failed", Some(3))
    );
    let texts: Vec<String> = log
        .iter()
        .map(|l| {
            let rec: LogLineJson = serde_json::from_str(l).expect("a log line, strictly");
            assert_eq!(rec.run_id, 1, "only the run's lines: {rec:?}");
            rec.text
        })
        .collect();
    assert!(texts.iter().any(|t| t == "bad-line"), "{texts:?}");
}

#[test]
fn until_match_ends_at_the_match_and_exits_6_when_it_does_not_come() {
    let env = env();
    let d = env.start();
    let started = d.ctl(&["run", "gate"]);
    assert_eq!(started.code, 0, "{started:?}");
    let mut follower = Follower::start(
        &d,
        &["logs", "-f", "gate", "--raw", "--until-match", "^gate-d"],
    );
    // The match is a live line: the run goes on only once the follower has the first one.
    assert_eq!(follower.line().as_deref(), Some("gate-start"));
    std::fs::write(env.path("go"), "").expect("let the run go on");
    assert_eq!(follower.line().as_deref(), Some("gate-done"));
    assert_eq!(follower.exit_code(), Some(0));
    assert_eq!(follower.line(), None, "nothing after the match");

    // Nothing new matches before the timeout: 6, and the wait says why.
    let r = ctl_ends(
        &d,
        &[
            "logs",
            "-f",
            "gate",
            "-n",
            "0",
            "--until-match",
            "never",
            "--timeout",
            "200ms",
        ],
    );
    assert_eq!(r.code, 6, "{r:?}");
    assert!(r.stderr.contains("timeout"), "{r:?}");
    // The lines end without a match (no -f: the backlog is all there is).
    let r = ctl_ends(&d, &["logs", "gate", "--until-match", "never"]);
    assert_eq!(r.code, 6, "{r:?}");
    assert!(r.stderr.contains("stream-ended"), "{r:?}");
}

#[test]
fn a_follower_whose_reader_left_exits_at_once_on_a_quiet_script() {
    let env = env();
    let d = env.start();
    assert_eq!(d.ctl(&["run", "gate"]).code, 0);
    // `ctl logs -f gate | head -n 1`: after gate-start the script prints nothing more.
    let mut child = d
        .ctl_command(&["logs", "-f", "gate", "--raw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl logs -f");
    {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("read") > 0);
        assert_eq!(line, "gate-start\n");
    } // the read end closes here, like `head` exiting
    let status = wait_for("ctl to exit after its reader left", DEADLINE, || {
        child.try_wait().expect("try_wait")
    });
    assert_eq!(status.code(), Some(0), "quietly, as after `| head`");
    assert_eq!(d.script("gate").state, "running", "no line came meanwhile");
}

#[test]
fn unknown_run_ids_and_version_0_exit_4() {
    let env = env();
    let d = env.start();
    assert_eq!(ctl_ends(&d, &["run", "ok", "--wait"]).code, 0);
    for args in [
        &["logs", "ok", "--run", "2"][..],
        &["logs", "ok", "-f", "--run", "7"],
        &["logs", "ok", "--run", "0"],
        &["history", "show", "0"],
        &["diff", "0"],
        &["diff", "1", "0"],
        &["rollback", "0"],
    ] {
        let r = ctl_ends(&d, args);
        assert_eq!(r.code, 4, "ctl {args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "ctl {args:?} says why: {r:?}");
    }
    // The run that exists is found.
    assert_eq!(ctl_ends(&d, &["logs", "ok", "-f", "--run", "1"]).code, 0);
}
