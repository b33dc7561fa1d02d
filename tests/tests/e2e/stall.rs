//! A save that takes long to validate does not stall supervision: while the reload
//! validates it (on a blocking thread), `ctl status` answers and a fast periodic job keeps
//! running. Proven by ordering, not by timing: the job's runs that start between the
//! attempt's `detected` and terminal events, and status answers whose last run id is older
//! than one of those runs.

use scriptd_e2e::{is_phase, Env, Events};
use std::time::Duration;

/// Scripts in the big include files: enough that validating them takes a while (hundreds of
/// milliseconds), on any machine, against a job ticking every 50 ms.
const BIG: usize = 30_000;

/// Include files they are spread over: each stays well under the 1 MiB a config file may
/// have (`config::limits`).
const FILES: usize = 30;

/// A main file whose watcher window never closes by itself (debounce: 1h): the test's
/// `ctl reload` is the one that validates the big file, between `detected` and `rejected`.
const MAIN: &str = "daemon:\n  socket: run/scriptd.sock\n  state_dir: state\n  log_dir: \
                    logs\n  debounce: 1h\ninclude: [\"big.d/*.yaml\"]\nscripts:\n  tick:\n    \
                    command: [\"/bin/true\"]\n    interval: 50ms\n";

/// Include file `file` of `FILES`: its share of `BIG` valid disabled scripts, and in the last
/// one an invalid script: every file is validated (every error is reported), then the reload
/// is rejected and nothing is applied.
fn big_include(file: usize) -> String {
    let mut text = String::from("scripts:\n");
    let per = BIG / FILES;
    for i in file * per..(file + 1) * per {
        text.push_str(&format!(
            "  big{i}:\n    command: [\"/bin/true\", \"{i}\"]\n    interval: 1h\n    enabled: false\n"
        ));
    }
    if file + 1 == FILES {
        text.push_str("  broken:\n    command: [\"/bin/true\"]\n    interval: soon\n");
    }
    text
}

#[test]
fn a_slow_validation_stalls_neither_status_nor_a_fast_job() {
    let env = Env::new("");
    env.write("scriptd.yaml", MAIN);
    let d = env.start();
    let mut events = Events::follow(&d);
    d.wait_script("tick", "a first run", |s| s.run_id >= 1);

    for file in 0..FILES {
        env.write(&format!("big.d/big{file:02}.yaml"), &big_include(file));
    }
    let reload = std::thread::spawn({
        let mut cmd = d.ctl_command(&["reload", "--output", "json"]);
        move || cmd.output().expect("run ctl reload")
    });
    let detected = events.wait("the reload is detected", |e| {
        is_phase(e, "detected") && e.source.as_deref() == Some("ctl")
    });
    let attempt = detected.attempt_id;

    // Status answers while the reload validates: each answer's last run id of the job.
    let mut answered = Vec::new();
    let ended = loop {
        answered.push(d.script("tick").run_id);
        if let Some(e) = events.wait_opt(Duration::from_millis(1), |e| {
            e.kind == "reload"
                && e.attempt_id == attempt
                && matches!(e.phase.as_deref(), Some("rejected" | "applied"))
        }) {
            break e;
        }
        assert!(
            answered.len() < 10_000,
            "the reload did not end; events:\n{}",
            events.dump()
        );
    };
    assert_eq!(ended.phase.as_deref(), Some("rejected"), "{ended:?}");
    let out = reload.join().expect("ctl reload thread");
    assert_eq!(out.status.code(), Some(3), "the big file is refused");

    // The job's runs that started after `detected` and before the reload ended.
    let seen = events.seen();
    let from = seen
        .iter()
        .position(|e| is_phase(e, "detected") && e.attempt_id == attempt)
        .expect("detected is seen");
    let to = seen
        .iter()
        .position(|e| e.seq == ended.seq)
        .expect("the end is seen");
    let during: Vec<u64> = seen[from..to]
        .iter()
        .filter(|e| e.script.as_deref() == Some("tick") && e.event.as_deref() == Some("started"))
        .filter_map(|e| e.run_id)
        .collect();
    assert!(
        during.len() >= 3,
        "the job kept running while the reload validated: runs {during:?} started between \
         `detected` and `rejected`; events:\n{}",
        events.dump()
    );
    // An answer whose last run is r came before run r + 1 started; when run r + 1 started
    // before the reload ended, the answer came while it validated.
    let mut while_validating: Vec<u64> = answered
        .iter()
        .copied()
        .filter(|r| during.contains(&(r + 1)))
        .collect();
    while_validating.dedup();
    assert!(
        while_validating.len() >= 2,
        "`ctl status` answered while the reload validated: answers with last runs {answered:?}, \
         runs during the reload {during:?}"
    );
    // Nothing of the big file runs; the job still does.
    let st = d.status();
    assert_eq!(st.scripts.len(), 1, "the rejected file added nothing");
    assert_eq!(st.sync, "invalid", "{:?}", st.sync_error);
}
