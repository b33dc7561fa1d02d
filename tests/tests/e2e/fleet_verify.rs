//! Rolling reloads wait for each host's verification (`reload --wait`): a host whose change
//! puts a service into a crash loop is `not-verified` (its daemon keeps the version, exit 6)
//! and stops the roll; `--undo-on-failure` puts it and the hosts before it back.

use scriptd_e2e::*;

/// Host `i`'s config: its own service, and `added` running `added` when given. A short
/// verify window, the version kept when not verified (the default `on_failure`).
fn config(i: usize, added: Option<&str>) -> String {
    let added = added.map_or_else(String::new, |cmd| {
        format!(
            "  added:\n    command: \"{cmd}\"\n    ready_after: 200ms\n    restart_delay: 50ms\n"
        )
    });
    format!(
        "reload: {{ verify: 1s }}\nscripts:\n  base-{i}:\n    command: [\"/bin/sleep\", \
         \"1000\"]\n{added}"
    )
}

#[test]
fn a_rolling_reload_stops_at_the_host_whose_change_is_not_verified() {
    let home = ContextHome::new();
    let fleet = home.unix_fleet("h", (1..=3).map(|i| config(i, None)).collect());
    let before: Vec<u64> = fleet
        .iter()
        .map(|(_, d)| d.status().running_version)
        .collect();
    for (i, (env, _)) in fleet.iter().enumerate() {
        let cmd = if i == 1 { "exit 1" } else { "sleep 1000" };
        env.set_manual(&config(i + 1, Some(cmd)));
    }
    let r = home.ctl(&[
        "--context",
        "h-*",
        "reload",
        "--rolling",
        "--undo-on-failure",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 6, "a host not verified: {r:?}");
    let doc: ctl::rolling::RollingJson =
        serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<&str> = doc.hosts.iter().map(|h| h.result.as_str()).collect();
    assert_eq!(results, ["applied", "not-verified", "skipped"], "{doc:?}");
    assert!(
        doc.hosts[1].message.contains("added crash-looping"),
        "{:?}",
        doc.hosts[1]
    );
    // Hosts 1 and 2 were put back (a rollback: a new version without `added`); host 3 was
    // never touched.
    for (i, (_, d)) in fleet.iter().enumerate() {
        let s = d.status();
        let names: Vec<&str> = s.scripts.iter().map(|s| s.name.as_str()).collect();
        assert!(!names.contains(&"added"), "host {}: {names:?}", i + 1);
        if i < 2 {
            assert!(doc.hosts[i].undone_to.is_some(), "{:?}", doc.hosts[i]);
        } else {
            assert_eq!(s.running_version, before[i], "host 3 untouched");
        }
    }
}
