//! Rolling changes N hosts at a time (`--parallel`), and the row each host gets: version
//! before and after, result, time, what happened (with `--undo-on-failure`, the undo).

use ctl::rolling::RollingJson;
use scriptd_e2e::*;

/// `n` daemons with the watcher off, each running `base`, as contexts `p-1`.. in `home`.
fn fleet(home: &ContextHome, n: usize) -> Vec<(Env, Daemon)> {
    let body = "scripts:\n  base:\n    command: [\"/bin/sleep\", \"1000\"]\n";
    home.unix_fleet("p", vec![body.to_owned(); n])
}

#[test]
fn parallel_batches_stop_after_the_batch_that_failed_and_rows_say_what_happened() {
    let home = ContextHome::new();
    let fleet = fleet(&home, 5);
    let before: Vec<u64> = fleet
        .iter()
        .map(|(_, d)| d.status().running_version)
        .collect();
    for (i, (env, _)) in fleet.iter().enumerate() {
        let bad = if i == 2 { "    bogus_key: 1\n" } else { "" };
        env.set_manual(&format!(
            "scripts:\n  base:\n    command: [\"/bin/sleep\", \"1000\"]\n  added:\n    \
             command: [\"/bin/sleep\", \"1000\"]\n{bad}"
        ));
    }
    // Batches (p-1, p-2), (p-3, p-4), (p-5): p-3 rejects, p-4 is in its batch and applies,
    // p-5 is not touched; the undo puts p-1, p-2 and p-4 back.
    let r = home.ctl(&[
        "--all-contexts",
        "reload",
        "--rolling",
        "--parallel",
        "2",
        "--undo-on-failure",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 3, "a rejected host: {r:?}");
    let doc: RollingJson = serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<(&str, &str)> = doc
        .hosts
        .iter()
        .map(|h| (h.context.as_str(), h.result.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("p-1", "applied"),
            ("p-2", "applied"),
            ("p-3", "rejected"),
            ("p-4", "applied"),
            ("p-5", "skipped"),
        ]
    );
    for (i, host) in doc.hosts.iter().enumerate() {
        let (version, scripts) = {
            let s = fleet[i].1.status();
            let names: Vec<String> = s.scripts.into_iter().map(|s| s.name).collect();
            (s.running_version, names)
        };
        assert_eq!(
            scripts,
            ["base"],
            "{}: back to (or still on) what it ran",
            host.context
        );
        match host.result.as_str() {
            "applied" => {
                assert_eq!(host.before, Some(before[i]), "{host:?}");
                let after = host.after.expect("a version after");
                assert!(after > before[i], "{host:?}");
                let undone = host.undone_to.expect("undone");
                assert_eq!(undone, version, "the undo's version runs: {host:?}");
                assert_eq!(host.undo_error, None);
            }
            "rejected" => {
                assert_eq!(
                    (host.before, host.after),
                    (Some(before[i]), Some(before[i]))
                );
                assert!(host.message.contains("bogus_key"), "{host:?}");
                assert_eq!(host.undone_to, None, "nothing to undo");
            }
            _ => {
                assert_eq!((host.before, host.after, host.time_ms), (None, None, 0));
                assert_eq!(version, before[i], "not touched");
            }
        }
    }

    // The table: a row per host with before, after, result, time and message.
    for (env, _) in fleet.iter().take(2) {
        env.set_manual(
            "scripts:\n  base:\n    command: [\"/bin/sleep\", \"1000\"]\n  second:\n    \
             command: [\"/bin/sleep\", \"1000\"]\n",
        );
    }
    let now: Vec<u64> = fleet
        .iter()
        .map(|(_, d)| d.status().running_version)
        .collect();
    let r = home.ctl(&["--context", "p-1,p-2", "--wide", "reload", "--rolling"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["HOST", "BEFORE", "AFTER", "RESULT", "TIME", "MESSAGE"],
        "{}",
        r.stdout
    );
    assert_eq!(rows.len(), 3, "{}", r.stdout);
    for (i, row) in rows[1..].iter().enumerate() {
        let after = fleet[i].1.status().running_version;
        assert_eq!(
            row[..4],
            [
                format!("p-{}", i + 1).as_str(),
                &format!("v{}", now[i]),
                &format!("v{after}"),
                "applied"
            ],
            "{}",
            r.stdout
        );
        let ms = row[4].strip_suffix("ms").expect("a time in ms");
        assert!(ms.parse::<u64>().is_ok(), "{}", r.stdout);
    }
}

#[test]
fn a_rolling_reload_of_a_candidate_puts_the_same_file_on_every_host() {
    let home = ContextHome::new();
    let fleet = fleet(&home, 2);
    let candidate = home.dir.path().join("candidate.yaml");
    let text = format!(
        "{NO_WATCH_SECTION}scripts:\n  base:\n    command: [\"/bin/sleep\", \"1000\"]\n  \
         shipped:\n    command: [\"/bin/sleep\", \"1000\"]\n"
    );
    std::fs::write(&candidate, &text).expect("write the candidate");
    let r = home.ctl(&[
        "--all-contexts",
        "reload",
        "--rolling",
        "--file",
        &format!("scriptd.yaml={}", candidate.display()),
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: RollingJson = serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<&str> = doc.hosts.iter().map(|h| h.result.as_str()).collect();
    assert_eq!(results, ["applied", "applied"]);
    for (env, d) in &fleet {
        let names: Vec<String> = d.status().scripts.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["base", "shipped"]);
        assert_eq!(
            read(&env.config()),
            text,
            "the candidate is the file on disk"
        );
    }
}
