//! Verified reloads in etcd mode: a put that restarts a service into a crash loop, with
//! `reload.on_failure: rollback` in the key's value, is rolled back by the daemon through
//! the same path as `ctl rollback`: the previous value written back to the key with a
//! compare-and-swap, recorded as `auto-rollback` (with the revision it wrote).

use scriptd_e2e::{is_phase, Env, Etcd, Events};

const KEY: &str = "/scriptd/hosts/verify/config";

/// A value with one service `svc` running `command`, verified within 1 s and rolled back
/// when it is not.
fn value(command: &str) -> String {
    format!(
        "reload: {{ verify: 1s, on_failure: rollback }}\nscripts:\n  svc:\n    command: \
         \"{command}\"\n    ready_after: 200ms\n    restart_delay: 50ms\n"
    )
}

#[test]
fn a_crash_looping_put_is_rolled_back_by_writing_the_key() {
    let etcd = Etcd::start();
    let good = value("sleep 1000");
    etcd.put(KEY, &good);
    let env = Env::new(&etcd.source_lines(KEY));
    let d = env.start();
    d.wait_script("svc", "svc running", |s| s.state == "running");
    let mut ev = Events::follow(&d);

    let bad_revision = etcd.put(KEY, &value("exit 1"));
    let rolled = ev.wait("the auto-rollback", |e| is_phase(e, "auto-rolled-back"));
    assert!(
        rolled
            .message
            .as_deref()
            .is_some_and(|m| m.contains("svc crash-looping")),
        "{rolled:?}"
    );

    // The key holds the good value again, written after the bad one.
    let (now, revision) = etcd.get(KEY).expect("the key exists");
    assert_eq!(now, good, "the previous value is back in etcd");
    assert!(revision > bad_revision, "{revision} > {bad_revision}");
    d.wait_script("svc", "svc running the good command", |s| {
        s.state == "running"
            && s.pid
                .is_some_and(|p| scriptd_e2e::cmdline(p).contains("sleep"))
    });

    let r = d.ctl(&["history", "-o", "json"]);
    let h: ctl::history::HistoryJson =
        serde_json::from_str(&r.stdout).expect("history JSON parses strictly");
    let top = &h.entries[0];
    assert_eq!(
        (top.source.as_str(), top.result.as_str(), top.etcd_revision),
        ("auto-rollback", "applied", Some(revision)),
        "{top:?}"
    );
}
