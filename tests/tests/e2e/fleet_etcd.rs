//! A fleet whose daemons take their config from etcd, one key per host: one candidate value
//! rolled over all of them (`--file etcd:=FILE`, each daemon's own key) is written to each
//! host's key in turn and applied there.

use ctl::rolling::RollingJson;
use scriptd_e2e::*;

#[test]
fn a_rolling_reload_writes_one_value_to_each_host_s_own_key() {
    let etcd = Etcd::start();
    let home = ContextHome::new();
    let first = "scripts:\n  base:\n    command: \"sleep 1000\"\n";
    let hosts: Vec<(Env, Daemon, String)> = (1..=3)
        .map(|i| {
            let key = format!("/scriptd/hosts/e-{i}/config");
            etcd.put(&key, first);
            let env = Env::new(&etcd.source_lines(&key));
            let d = env.start();
            home.ctl_ok(&[
                "context",
                "add",
                &format!("e-{i}"),
                "--endpoint",
                &format!("unix://{}", d.socket.display()),
            ]);
            (env, d, key)
        })
        .collect();
    let value =
        "scripts:\n  base:\n    command: \"sleep 1000\"\n  shipped:\n    command: \"sleep 1000\"\n";
    let candidate = home.dir.path().join("value.yaml");
    std::fs::write(&candidate, value).expect("write the candidate");
    let r = home.ctl(&[
        "--all-contexts",
        "reload",
        "--rolling",
        "--file",
        &format!("etcd:={}", candidate.display()),
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: RollingJson = serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<&str> = doc.hosts.iter().map(|h| h.result.as_str()).collect();
    assert_eq!(results, ["applied", "applied", "applied"], "{doc:?}");
    for (_, d, key) in &hosts {
        let names: Vec<String> = d.status().scripts.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["base", "shipped"], "{key}");
        assert_eq!(
            etcd.get(key).map(|(v, _)| v).as_deref(),
            Some(value),
            "the value is in {key}"
        );
    }
}
