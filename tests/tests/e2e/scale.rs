//! Many scripts on one daemon (issue 16): the first runs of a large startup config go
//! through the daemon's start gate (a few starts in flight at once, the rest waiting their
//! turn in order). Every script is listed at once, and every one gets its first run, once,
//! whether its start succeeds or fails: a turn is given back either way.
//!
//! That `ctl status` answers *during* the storm instead of after it is a matter of time
//! (10,000 scripts: 29 s before the gate, under a second with it), so it is measured by
//! `bench/scale.sh` (BENCHMARKS.md, "Scale"), not asserted here.

use scriptd_e2e::{wait_for, Env, DEADLINE};

/// Scripts whose first run starts.
const SCRIPTS: usize = 1_000;
/// Scripts whose first start fails (their interpreter does not exist): more than the
/// starts the gate lets through at once, so a turn not given back after a failed start
/// would stall every start behind them.
const FAILING: usize = 40;

#[test]
fn every_first_run_of_a_start_storm_happens_once() {
    let env = Env::new("");
    // Executable, so it validates, but `exec` fails: no such interpreter.
    let broken = env.script("broken.sh", "");
    std::fs::write(&broken, "#!/nonexistent/interpreter\n").expect("write broken.sh");
    let mut body = String::from("scripts:\n");
    for i in 0..FAILING {
        body.push_str(&format!(
            "  bad{i}:\n    command: [\"{}\"]\n    interval: 1h\n",
            broken.display()
        ));
    }
    for i in 0..SCRIPTS {
        body.push_str(&format!(
            "  p{i}:\n    command: [\"/bin/true\"]\n    interval: 1h\n"
        ));
    }
    env.set_body(&body);
    let d = env.start();
    let early = d.status();
    assert_eq!(
        early.scripts.len(),
        SCRIPTS + FAILING,
        "every script is listed from the first answer"
    );

    // Spread out, but all of them happen: each script ran (or failed to start) once, its
    // next run an hour away, none left waiting for a turn.
    let done = wait_for("every script's first run to end", DEADLINE * 6, || {
        let s = d.status();
        s.scripts.iter().all(|s| s.last_exit.is_some()).then_some(s)
    });
    for s in &done.scripts {
        let exit = s.last_exit.as_ref().expect("ended");
        let (runs, code) = if s.name.starts_with("bad") {
            (0, 127)
        } else {
            (1, 0)
        };
        assert_eq!(s.run_count, runs, "{}: {} runs", s.name, s.run_count);
        assert_eq!(exit.code, Some(code), "{}: {exit:?}", s.name);
        assert!(s.next_run.is_some(), "{}: no next run planned", s.name);
    }
}
