//! Several etcd endpoints, as confd and Patroni take them: a dead endpoint listed first is
//! skipped; a frozen one (connected, never answering) and one that connects but serves no
//! read (a learner member) are left for the next one, at start, on `ctl reload` and while
//! running; `ctl status` names the endpoint connected to. Another endpoint of the same
//! etcd is a [`FreezableProxy`] in front of it.

use scriptd_e2e::{
    etcd_status, free_port, running_sleep, wait_for, Daemon, Env, Etcd, FreezableProxy, DEADLINE,
};

const KEY: &str = "/scriptd/hosts/endpoints/config";

/// A value running service `b`, `sleep {secs}`.
fn value(secs: u32) -> String {
    format!("defaults:\n  stop_grace: 1s\nscripts:\n  b:\n    command: \"sleep {secs}\"\n")
}

/// A config taking [`KEY`] from `endpoints`, in this order.
fn env(endpoints: &[&str]) -> Env {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    Env::new(&format!(
        "  source:\n    etcd:\n      endpoints: [{}]\n      key: {KEY}\n",
        list.join(", ")
    ))
}

/// Waits until `d` is connected to `endpoint` and runs the put of `revision`.
fn connected_to(d: &Daemon, endpoint: &str, revision: i64) {
    wait_for(&format!("connected to {endpoint}"), DEADLINE, || {
        let s = etcd_status(d);
        (s.connected && s.endpoint == endpoint && s.running_revision == Some(revision))
            .then_some(())
    });
}

#[test]
fn dead_and_frozen_endpoints_are_left_for_the_next_while_running_and_at_start() {
    let etcd = Etcd::start();
    let first = etcd.put(KEY, &value(1001));
    let proxy = FreezableProxy::start(etcd.url.trim_start_matches("http://"));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = env(&[&dead, &proxy.url(), &etcd.url]);
    let d = env.start();
    running_sleep(&d, "b", 1001);
    connected_to(&d, &proxy.url(), first);
    let table = d.ctl_ok(&["status"]);
    assert!(
        table.contains(&format!("connected to {}", proxy.url())),
        "{table}"
    );

    // Frozen while watching: the keepalive notices, the next endpoint takes over, and a put
    // made meanwhile is applied through it.
    proxy.freeze();
    let revision = etcd.put(KEY, &value(1002));
    running_sleep(&d, "b", 1002);
    connected_to(&d, &etcd.url, revision);
    drop(d);

    // Frozen at start: the key is read from the next endpoint, not the history.
    let revision = etcd.put(KEY, &value(1003));
    let d = env.start();
    running_sleep(&d, "b", 1003);
    connected_to(&d, &etcd.url, revision);
}

#[test]
fn an_endpoint_that_connects_but_does_not_serve_is_left_for_the_next() {
    let mut etcd = Etcd::start();
    etcd.put(KEY, &value(1001));
    let learner = etcd.add_learner();
    let env = env(&[&learner.url, &etcd.url]);
    // At start, and on `ctl reload`: the key is read from the member that serves.
    let d = env.start();
    running_sleep(&d, "b", 1001);
    let revision = etcd.put(KEY, &value(1002));
    running_sleep(&d, "b", 1002);
    connected_to(&d, &etcd.url, revision);
    let r = d.ctl(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    drop(d);

    // Started while the member that serves is down: the last version runs; once it is back
    // the watch goes on past the learner (listed first) to it.
    etcd.stop();
    let d = env.start();
    running_sleep(&d, "b", 1002);
    etcd.restart();
    let revision = etcd.put(KEY, &value(1003));
    running_sleep(&d, "b", 1003);
    connected_to(&d, &etcd.url, revision);
}
