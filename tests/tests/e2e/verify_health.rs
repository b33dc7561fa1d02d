//! Verification of services with a health probe: such a service is verified once it is ready
//! *and* its probe has succeeded in the run the apply started; a probe that keeps failing
//! makes the outcome `probe-failing` (what the probe said), for `ctl reload --wait` and
//! `ctl restart --wait` alike.

use scriptd_e2e::{read, Env};

/// A config with one service `svc` probed by `test -e FLAG` every 100 ms (failures before
/// the first success never count: the probe decides readiness here, not restarts).
fn config(env: &Env, verify: &str, on_failure: &str) -> String {
    let flag = env.path("flag");
    format!(
        "reload: {{ verify: {verify}, on_failure: {on_failure} }}
scripts:
  svc:
    command: \"sleep 30\"
    ready_after: 100ms
    health:
      exec: [\"test\", \"-e\", \"{}\"]
      interval: 100ms
      timeout: 2s
      failures: 2
      start_period: 1h
      restart: false
",
        flag.display()
    )
}

#[test]
fn a_service_with_a_failing_probe_is_not_verified_and_one_that_succeeds_is() {
    let env = Env::manual("");
    let d = env.start();

    // Added with a probe that fails: ready (alive for ready_after) but never healthy.
    env.set_manual(&config(&env, "1s", "keep"));
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!((code, r.result.as_str()), (6, "not-verified"), "{r:?}");
    let v = &r.verification[0];
    assert_eq!(
        (v.script.as_str(), v.outcome.as_str()),
        ("svc", "probe-failing"),
        "{r:?}"
    );
    let reason = v.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("test"), "the reason names the probe: {v:?}");

    // The probe succeeds from now on: a restart is verified once the new run is healthy.
    env.write("flag", "");
    let r = d.ctl(&["restart", "svc", "--wait", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\"ready\""), "{r:?}");
    let h = d.script("svc").health.expect("svc has a probe");
    assert_eq!(h.status, "healthy", "verified only once healthy: {h:?}");

    // With `rollback`, a change that restarts the service into a failing probe is undone (a
    // change of the probe alone is live: nothing restarts, nothing is verified).
    let good = config(&env, "1s", "rollback");
    env.set_manual(&good);
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!(code, 0, "{r:?}");
    let on_disk = read(&env.config());
    let broken = good
        .replace("\"-e\"", "\"-d\"")
        .replace("sleep 30", "sleep 31");
    env.set_manual(&broken);
    let (code, r) = d.reload(&["--wait"]);
    assert_eq!((code, r.result.as_str()), (3, "auto-rolled-back"), "{r:?}");
    assert_eq!(r.verification[0].outcome, "probe-failing", "{r:?}");
    assert_eq!(read(&env.config()), on_disk, "the files are back");
}
