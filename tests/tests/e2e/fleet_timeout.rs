//! `--host-timeout`: a host whose daemon is frozen (SIGSTOP: it accepts connections in the
//! kernel's backlog and never answers) is an error row once the given time has passed,
//! while the other hosts answer; the exit code is the worst of them. A rolling reload stops
//! at it.

use ctl::fleet::FleetJson;
use ctl::rolling::RollingJson;
use nix::sys::signal::Signal;
use scriptd_e2e::*;
use std::time::{Duration, Instant};

/// A daemon stopped with SIGSTOP until dropped (its own drop's SIGTERM would wait for that).
struct Frozen<'a>(&'a Daemon);

impl<'a> Frozen<'a> {
    fn new(d: &'a Daemon) -> Self {
        d.signal(Signal::SIGSTOP);
        let stat = format!("/proc/{}/stat", d.pid());
        wait_for("the daemon to be stopped", DEADLINE, || {
            let text = std::fs::read_to_string(&stat).ok()?;
            let state = text.rsplit_once(") ")?.1.chars().next()?;
            (state == 'T').then_some(())
        });
        Self(d)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.signal(Signal::SIGCONT);
    }
}

#[test]
fn a_frozen_host_is_a_timeout_row_after_the_given_time_and_the_others_answer() {
    let home = ContextHome::new();
    // f-a runs `on-a`; f-b is frozen; f-c has no `on-a` (exit 4 there).
    let fleet: Vec<(Env, Daemon)> = ["a", "b", "c"]
        .into_iter()
        .map(|h| {
            let env = Env::new(&format!(
                "scripts:\n  on-{h}:\n    command: [\"/bin/sleep\", \"1000\"]\n"
            ));
            let d = env.start();
            home.ctl_ok(&[
                "context",
                "add",
                &format!("f-{h}"),
                "--endpoint",
                &format!("unix://{}", d.socket.display()),
            ]);
            (env, d)
        })
        .collect();
    let _frozen = Frozen::new(&fleet[1].1);

    let started = Instant::now();
    let r = home.ctl(&[
        "--context",
        "f-*",
        "--host-timeout",
        "1s",
        "status",
        "on-a",
        "--output",
        "json",
    ]);
    let took = started.elapsed();
    assert_eq!(r.code, 4, "the worst of 0, 1 and 4: {r:?}");
    assert!(
        took >= Duration::from_secs(1),
        "a timeout row only once the time has passed: {took:?}"
    );
    let doc: FleetJson = serde_json::from_str(&r.stdout).expect("fan-out JSON parses strictly");
    let a = &doc.contexts["f-a"];
    assert_eq!((a.exit_code, &a.error), (0, &None), "{a:?}");
    assert_eq!(
        a.output.as_ref().expect("a status")["scripts"][0]["name"],
        "on-a"
    );
    let b = &doc.contexts["f-b"];
    assert_eq!(b.exit_code, 1, "{b:?}");
    assert_eq!(
        b.error.as_deref(),
        Some("no answer within 1s (--host-timeout)")
    );
    let c = &doc.contexts["f-c"];
    assert_eq!(c.exit_code, 4, "{c:?}");
    assert!(
        c.error.as_deref().is_some_and(|e| e.contains("on-a")),
        "{c:?}"
    );

    // The table, the limit from the variable: the frozen host's group says why.
    let r: Run = home
        .command(&["--all-contexts", "status"])
        .env("SCRIPTD_HOST_TIMEOUT", "300ms")
        .output()
        .expect("run ctl")
        .into();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("[f-b]\nerror: no answer within 300ms (--host-timeout)\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("on-a") && r.stdout.contains("on-c"),
        "{}",
        r.stdout
    );

    // A rolling reload stops at the frozen host: f-c is not touched.
    let r = home.ctl(&[
        "--all-contexts",
        "--host-timeout",
        "300ms",
        "reload",
        "--rolling",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc: RollingJson = serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let rows: Vec<(&str, &str, &str)> = doc
        .hosts
        .iter()
        .map(|h| (h.context.as_str(), h.result.as_str(), h.message.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("f-a", "unchanged", ""),
            (
                "f-b",
                "unreachable",
                "no answer within 300ms (--host-timeout)"
            ),
            ("f-c", "skipped", "not touched: an earlier host failed"),
        ]
    );

    let r = home.ctl(&["--all-contexts", "--host-timeout", "soon", "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("such as 500ms"), "{}", r.stderr);
}
