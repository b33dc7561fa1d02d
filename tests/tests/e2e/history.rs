//! History and rollback end to end: versions recorded for every applied edit, `ctl rollback`
//! (default target, dry runs, exit codes, refusals), the files written back to disk (stale
//! includes removed, a failed write-back reported), history across daemon restarts and a
//! `kill -9` in the middle of a burst of reloads or right after a rollback, refused and failed
//! attempts in the audit trail, control actions with their uid, the table output, the JSON
//! documents checked against a fixed schema, retention, and a history write that fails.
//! Every wait polls with a deadline; nothing relies on a bare sleep.

use ctl::history::DiffJson;
use ctl::history::{FileJson, HistoryEntryJson, HistoryJson, VersionJson};
use ctl::output::ReloadJson;
use scriptd_common::config::{read_source, ConfigFile, ConfigSource};
use scriptd_e2e::{
    alive, is_phase, pids_with_marker, wait_for, Daemon, Env, Events, DAEMON_SECTION, DEADLINE,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

// ------------------------------------------------------------------ helpers

/// Uid of this test process: what the daemon should record for our `ctl` calls.
fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// `ctl history --limit N -o json`, parsed strictly.
fn history(d: &Daemon, limit: u32) -> HistoryJson {
    let r = d.ctl(&["history", "--limit", &limit.to_string(), "-o", "json"]);
    assert_eq!(r.code, 0, "ctl history failed: {}", r.stderr);
    let doc: HistoryJson = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("history JSON does not parse strictly: {e}\n{}", r.stdout));
    assert_eq!(doc.schema, 1, "history JSON schema");
    doc
}

/// `ctl history show V -o json`, parsed strictly.
fn show(d: &Daemon, v: u64) -> VersionJson {
    let r = d.ctl(&["history", "show", &v.to_string(), "-o", "json"]);
    assert_eq!(r.code, 0, "ctl history show {v} failed: {}", r.stderr);
    let doc: VersionJson = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("version JSON does not parse strictly: {e}\n{}", r.stdout));
    assert_eq!(doc.schema, 1, "version JSON schema");
    assert_eq!(
        doc.entry.version,
        Some(v),
        "show {v} returned another version"
    );
    doc
}

/// The applied versions listed in a history document, newest first.
fn versions(h: &HistoryJson) -> Vec<u64> {
    h.entries.iter().filter_map(|e| e.version).collect()
}

/// The entry of version `v`.
fn entry(h: &HistoryJson, v: u64) -> &HistoryEntryJson {
    h.entries
        .iter()
        .find(|e| e.version == Some(v))
        .unwrap_or_else(|| panic!("no version {v} in history: {:?}", versions(h)))
}

/// Waits until `ctl history` reports `v` as the running version; returns that history.
fn wait_version(d: &Daemon, v: u64) -> HistoryJson {
    wait_for(&format!("version {v} to be running"), DEADLINE, || {
        let h = history(d, 1000);
        assert!(
            h.running_version <= v,
            "running version {} went past the expected {v}: {:?}",
            h.running_version,
            versions(&h)
        );
        (h.running_version == v).then_some(h)
    })
}

/// The config files on disk, read by the same rules as the daemon, as (name, content).
fn disk_files(env: &Env) -> Vec<(String, String)> {
    read_source(&env.config())
        .expect("the config files on disk are readable")
        .files
        .into_iter()
        .map(|f| (f.name, f.content))
        .collect()
}

/// A version's files as (name, content).
fn pairs(files: &[FileJson]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| (f.name.clone(), f.content.clone()))
        .collect()
}

/// The content hash the daemon computes over these files.
fn hash_of(env: &Env, files: &[FileJson]) -> String {
    ConfigSource {
        main: env.config(),
        files: files
            .iter()
            .map(|f| ConfigFile {
                name: f.name.clone(),
                content: f.content.clone(),
            })
            .collect(),
    }
    .hash()
}

/// Waits until every named script runs; returns name -> pid.
fn pids(d: &Daemon, names: &[&str]) -> BTreeMap<String, u32> {
    names
        .iter()
        .map(|n| {
            let s = d.wait_script(n, "running with a pid", |s| {
                s.state == "running" && s.pid.is_some()
            });
            (n.to_string(), s.pid.expect("pid checked above"))
        })
        .collect()
}

/// Runs a ctl command and parses its `-o json` reload/rollback document strictly.
fn reload_json(d: &Daemon, args: &[&str], code: i32) -> ReloadJson {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let r = d.ctl(&all);
    assert_eq!(r.code, code, "ctl {args:?}: {}{}", r.stdout, r.stderr);
    let doc: ReloadJson = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl {args:?} JSON does not parse strictly: {e}\n{}",
            r.stdout
        )
    });
    assert_eq!(doc.schema, 1, "reload JSON schema");
    doc
}

// ------------------------------------------------------------------ 1. rollback

/// Main file of the rollback test: three services, `d` comes from an included file.
fn rollback_main(a_x: &str, b_x: &str, c_lines: u32) -> String {
    format!(
        "include: [\"scripts.d/*.yaml\"]\n\
         defaults:\n  stop_grace: 2s\n\
         scripts:\n\
         \x20 a:\n    command: \"sleep 2000.1101\"\n    env: {{ X: \"{a_x}\" }}\n\
         \x20 b:\n    command: \"sleep 2000.1201\"\n    env: {{ X: \"{b_x}\" }}\n\
         \x20 c:\n    command: \"sleep 2000.1301\"\n    max_log_lines: {c_lines}\n"
    )
}

#[test]
fn rollback_restores_the_previous_version_touching_only_what_differs() {
    let env = Env::new(&rollback_main("1", "1", 100));
    std::fs::create_dir_all(env.path("scripts.d")).expect("create scripts.d");
    let d = env.start();
    let h = wait_version(&d, 1);
    assert_eq!(entry(&h, 1).source, "startup");

    // Three edits, saved by rename and picked up by the watcher: versions 2, 3, 4.
    env.set_body(&rollback_main("2", "1", 100));
    wait_version(&d, 2);
    env.write(
        "scripts.d/d.yaml",
        "scripts:\n  d:\n    command: \"sleep 2000.1401\"\n",
    );
    wait_version(&d, 3);
    env.set_body(&rollback_main("2", "2", 200));
    let h = wait_version(&d, 4);
    for v in 2..=4 {
        let e = entry(&h, v);
        assert_eq!(e.source, "watch", "version {v} came from the watcher");
        assert_eq!(e.result, "applied");
        assert_eq!(e.uid, None, "the watcher has no uid");
    }
    let v3 = show(&d, 3);
    let before = pids(&d, &["a", "b", "c", "d"]);
    // A config kept private (it may hold secrets in `env`) stays private when rewritten.
    std::fs::set_permissions(env.config(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the main file");

    let mut events = Events::follow(&d);
    // Default target: the version before the running one (3).
    let r = reload_json(&d, &["rollback"], 0);
    assert_eq!(r.result, "applied", "rollback: {r:?}");
    assert_eq!(r.version, 5, "the rollback is a new version");
    let touched: BTreeSet<&str> = r.changes.iter().map(|c| c.script.as_str()).collect();
    assert_eq!(
        touched,
        BTreeSet::from(["b", "c"]),
        "only the scripts that differ between 4 and 3 are in the plan: {:?}",
        r.changes
    );

    let h = history(&d, 1000);
    assert_eq!(h.running_version, 5);
    let e5 = entry(&h, 5);
    assert_eq!(e5.source, "rollback");
    assert_eq!(e5.rollback_to, Some(3));
    assert_eq!(e5.uid, Some(my_uid()), "who rolled back is recorded");
    assert_eq!(e5.result, "applied");
    assert!(e5.running, "version 5 is marked running");
    assert_eq!(
        e5.hash,
        entry(&h, 3).hash,
        "version 5 has version 3's files"
    );

    // Disk, runtime and history agree.
    assert_eq!(
        disk_files(&env),
        pairs(&v3.files),
        "the files on disk are version 3's"
    );
    assert_eq!(pairs(&show(&d, 5).files), pairs(&v3.files));
    let mode = |rel: &str| {
        std::fs::metadata(env.path(rel))
            .expect("stat a written-back file")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode("scriptd.yaml"),
        0o600,
        "the rewritten main file keeps its mode"
    );
    assert_eq!(
        mode("scripts.d/d.yaml"),
        0o644,
        "the rewritten include keeps its mode"
    );
    for dir in [env.path(""), env.path("scripts.d")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("list a config dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("scriptd-rollback"))
            .collect();
        assert!(
            left.is_empty(),
            "temp files left by the write-back: {left:?}"
        );
    }

    // b (env) restarted; c (max_log_lines: live), a and d untouched.
    let b = d.wait_script("b", "restarted with a new pid", |s| {
        s.state == "running" && s.pid.is_some_and(|p| p != before["b"])
    });
    assert!(b.pid.is_some());
    let after = pids(&d, &["a", "b", "c", "d"]);
    for name in ["a", "c", "d"] {
        assert_eq!(
            after[name], before[name],
            "{name} was touched by the rollback"
        );
    }
    assert!(!alive(before["b"]), "b's old process is gone");

    // The watcher sees the rewritten files and finds nothing to do.
    events.wait("the rollback applied", |e| {
        is_phase(e, "applied") && e.source.as_deref() == Some("rollback")
    });
    let seen = events.wait("the watcher's reload of the written-back files", |e| {
        e.source.as_deref() == Some("watch")
            && matches!(
                e.phase.as_deref(),
                Some("unchanged" | "applied" | "rejected" | "failed-rolled-back")
            )
    });
    assert_eq!(
        seen.phase.as_deref(),
        Some("unchanged"),
        "the watcher had nothing to do: {seen:?}"
    );
    let st = d.status();
    assert_eq!(st.sync, "in-sync", "disk vs runtime after the rollback");
    assert_eq!(st.running_version, 5);
    let h = history(&d, 1000);
    assert_eq!(versions(&h), vec![5, 4, 3, 2, 1], "no version 6 appeared");
    assert_eq!(
        h.entries.len(),
        5,
        "nothing else was recorded: {:?}",
        h.entries
    );
}

// ------------------------------------------------------------------ 2. dry run

fn two_scripts(a_x: &str, b_x: &str) -> String {
    format!(
        "scripts:\n\
         \x20 a:\n    command: \"sleep 2000.2101\"\n    env: {{ X: \"{a_x}\" }}\n    stop_grace: 2s\n\
         \x20 b:\n    command: \"sleep 2000.2201\"\n    env: {{ X: \"{b_x}\" }}\n    stop_grace: 2s\n"
    )
}

#[test]
fn rollback_dry_run_prints_the_plan_and_changes_nothing() {
    let env = Env::new(&two_scripts("1", "1"));
    let d = env.start();
    env.set_body(&two_scripts("2", "1"));
    wait_version(&d, 2);
    env.set_body(&two_scripts("2", "2"));
    wait_version(&d, 3);
    let pids_before = pids(&d, &["a", "b"]);
    let history_before = history(&d, 1000);
    let disk_before = disk_files(&env);

    let r = d.ctl(&["rollback", "1", "--dry-run"]);
    assert_eq!(r.code, 0, "rollback --dry-run: {}{}", r.stdout, r.stderr);
    for want in ["a", "b", "env", "restart", "preview", "nothing was applied"] {
        assert!(
            r.stdout.contains(want),
            "the plan mentions {want:?}:\n{}",
            r.stdout
        );
    }

    let j = reload_json(&d, &["rollback", "1", "--dry-run"], 0);
    assert!(j.dry_run);
    assert_eq!(j.result, "would-apply");
    assert_eq!(j.attempt_id, None, "a dry run is no attempt");
    assert_eq!(j.version, 3, "a dry run leaves version 3 running");
    let fields: BTreeSet<(&str, &str)> = j
        .changes
        .iter()
        .map(|c| (c.script.as_str(), c.field.as_str()))
        .collect();
    assert_eq!(fields, BTreeSet::from([("a", "env.X"), ("b", "env.X")]));

    let r = d.ctl(&["rollback", "1", "--dry-run", "--exit-code"]);
    assert_eq!(
        r.code, 5,
        "--exit-code with changes: {}{}",
        r.stdout, r.stderr
    );
    let r = d.ctl(&["rollback", "--dry-run", "--exit-code"]);
    assert_eq!(
        r.code, 5,
        "default target has changes: {}{}",
        r.stdout, r.stderr
    );
    let r = d.ctl(&["rollback", "3", "--dry-run", "--exit-code"]);
    assert_eq!(
        r.code, 0,
        "the running version has no changes: {}{}",
        r.stdout, r.stderr
    );
    let r = d.ctl(&["rollback", "--exit-code"]);
    assert_eq!(r.code, 2, "--exit-code needs --dry-run: {}", r.stderr);

    // Nothing moved: history, version, processes, files.
    assert_eq!(
        history(&d, 1000),
        history_before,
        "a dry run records nothing"
    );
    assert_eq!(
        pids(&d, &["a", "b"]),
        pids_before,
        "a dry run touches no process"
    );
    assert_eq!(disk_files(&env), disk_before, "a dry run writes no file");
    assert_eq!(d.status().sync, "in-sync");
}

// ------------------------------------------------------------------ 3. restart

fn one_script(x: &str) -> String {
    format!("scripts:\n  a:\n    command: \"sleep 2000.3101\"\n    env: {{ X: \"{x}\" }}\n    stop_grace: 2s\n")
}

fn stop(mut d: Daemon) {
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(DEADLINE),
        Some(0),
        "the daemon exits 0 on SIGTERM"
    );
}

#[test]
fn history_survives_a_restart_and_records_offline_edits_as_startup() {
    let env = Env::new(&one_script("1"));
    let d = env.start();
    env.set_body(&one_script("2"));
    wait_version(&d, 2);
    env.set_body("{ invalid");
    wait_for("the invalid save to be recorded", DEADLINE, || {
        history(&d, 1000)
            .entries
            .iter()
            .any(|e| e.result == "rejected")
            .then_some(())
    });
    env.set_body(&one_script("3"));
    let before = wait_version(&d, 3);
    assert_eq!(versions(&before), vec![3, 2, 1]);
    stop(d);

    // Same config: nothing new recorded, the same entries.
    let d = env.start();
    let after = history(&d, 1000);
    assert_eq!(
        after, before,
        "the history after a restart with the same config"
    );
    stop(d);

    // Edited while the daemon was down: a new version from `startup`.
    env.set_body(&one_script("4"));
    let d = env.start();
    let after = wait_version(&d, 4);
    let e = &after.entries[0];
    assert_eq!(e.version, Some(4));
    assert_eq!(e.source, "startup");
    assert_eq!(e.result, "applied");
    assert_eq!(e.uid, None);
    assert!(e.running);
    assert_eq!(e.hash, Some(hash_of(&env, &show(&d, 4).files)));
    assert_eq!(pairs(&show(&d, 4).files), disk_files(&env));
    // The older entries are unchanged, except that 3 is no longer the running one.
    let mut old = before.entries;
    for e in &mut old {
        e.running = false;
    }
    assert_eq!(
        after.entries[1..],
        old[..],
        "older entries after the offline edit"
    );
    assert_eq!(d.status().sync, "in-sync");
}

// ------------------------------------------------------------------ 4. kill -9

/// Marker in the command lines of the burst test's scripts (and their shims), unique to this
/// test process: the fixed-width pid keeps one run's marker from prefixing another's.
fn burst_marker() -> String {
    format!("sleep 2000.4{:07}", std::process::id())
}

fn burst_body(i: usize) -> String {
    let m = burst_marker();
    format!(
        "scripts:\n\
         \x20 a:\n    command: \"{m}1\"\n    env: {{ I: \"{i}\" }}\n    stop_grace: 1s\n\
         \x20 b:\n    command: \"{m}2\"\n    max_log_lines: {}\n    stop_grace: 1s\n",
        100 + i
    )
}

#[test]
fn kill_9_during_a_burst_of_reloads_leaves_a_consistent_history() {
    let marker = burst_marker();
    const SAVES: usize = 50;
    let env = Env::new(&burst_body(0));
    let mut d = env.start();
    let first = pids(&d, &["a", "b"]);
    let saved = AtomicUsize::new(0);
    // Set once reloads are landing; the writer holds a few saves short of mid-way until
    // then, so the kill always falls in the middle of the burst, however slow the machine.
    let landing = AtomicBool::new(false);

    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 1..=SAVES {
                if i == SAVES / 2 - 5 {
                    wait_for("reloads to land during the burst", DEADLINE, || {
                        landing.load(Ordering::SeqCst).then_some(())
                    });
                }
                env.set_body(&burst_body(i));
                saved.store(i, Ordering::SeqCst);
                // Pacing, not waiting: spread the saves so reloads keep landing.
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        wait_for("a few reloads to be applied", DEADLINE, || {
            (history(&d, 1000).running_version >= 3).then_some(())
        });
        landing.store(true, Ordering::SeqCst);
        wait_for("the writer to be mid-way", DEADLINE, || {
            (saved.load(Ordering::SeqCst) >= SAVES / 2).then_some(())
        });
        let live = d.status().scripts;
        assert!(
            !pids_with_marker(&marker).is_empty(),
            "the scripts are found by their marker before the kill"
        );
        let at_kill = saved.load(Ordering::SeqCst);
        d.signal(nix::sys::signal::Signal::SIGKILL);
        assert_eq!(d.wait_exit(DEADLINE), None, "the daemon died of SIGKILL");
        writer.join().expect("writer thread");
        assert!(
            at_kill < SAVES,
            "the daemon was killed mid-burst ({at_kill} saves)"
        );
        // The scripts die with the daemon: none is left behind.
        let mut gone: Vec<u32> = first.values().copied().collect();
        gone.extend(live.iter().filter_map(|s| s.pid));
        wait_for("the killed daemon's scripts to die", DEADLINE, || {
            (gone.iter().all(|&p| !alive(p)) && pids_with_marker(&marker).is_empty()).then_some(())
        });
    });
    drop(d);

    let d = env.start();
    let h = history(&d, 1000);
    let applied = versions(&h);
    eprintln!("versions after the kill and restart: {applied:?}");
    assert!(
        applied.len() >= 4,
        "versions recorded before the kill: {applied:?}"
    );
    // Newest first: strictly decreasing means strictly increasing in recording order, so no
    // duplicates and no number reused.
    assert!(
        applied.windows(2).all(|w| w[0] > w[1]),
        "applied versions strictly increasing, no duplicates: {applied:?}"
    );
    assert_eq!(applied[0], h.running_version, "the newest version runs");
    let newest = &h.entries[0];
    assert_eq!(
        (newest.source.as_str(), newest.version),
        ("startup", Some(applied[1] + 1)),
        "the saves made after the kill start as the next version"
    );
    for e in &h.entries {
        if e.version.is_none() {
            assert_ne!(
                e.result, "applied",
                "an applied entry without a version: {e:?}"
            );
        }
    }
    for &v in &applied {
        let doc = show(&d, v);
        assert!(!doc.files.is_empty(), "version {v} has files");
        assert_eq!(
            doc.entry.hash,
            entry(&h, v).hash,
            "version {v}: show and list agree"
        );
        assert_eq!(
            doc.entry.hash,
            Some(hash_of(&env, &doc.files)),
            "version {v}: the hash matches its files"
        );
    }
    let running = show(&d, h.running_version);
    assert_eq!(
        pairs(&running.files),
        disk_files(&env),
        "the running version is on disk"
    );
    assert_eq!(
        disk_files(&env)[0].1,
        format!("{DAEMON_SECTION}{}", burst_body(SAVES)),
        "the last save is on disk"
    );
    assert_eq!(d.status().sync, "in-sync");
    pids(&d, &["a", "b"]);
}

// ------------------------------------------------------------------ 5. refused attempts

#[test]
fn rejected_attempts_are_recorded_with_their_errors() {
    let body = "scripts:\n  a:\n    command: \"sleep 2000.5101\"\n    stop_grace: 2s\n";
    let env = Env::new(body);
    let d = env.start();

    // An invalid YAML save, picked up by the watcher.
    env.set_body("scripts:\n  a:\n    command: [\"sleep\", \"1\"\n    oops: {\n");
    let h = wait_for("the invalid save to be recorded", DEADLINE, || {
        let h = history(&d, 1000);
        h.entries
            .iter()
            .any(|e| e.result == "rejected")
            .then_some(h)
    });
    assert_eq!(h.running_version, 1, "the running version stays");
    let e = &h.entries[0];
    assert_eq!(e.result, "rejected");
    assert_eq!(e.source, "watch");
    assert_eq!(e.version, None, "a refused attempt has no version");
    assert_eq!(e.hash, None);
    assert!(!e.running);
    assert!(e.message.is_some(), "the refusal says why: {e:?}");
    assert!(
        !e.errors.is_empty(),
        "the validation errors are recorded: {e:?}"
    );
    let err = &e.errors[0];
    assert_eq!(
        err.file, "scriptd.yaml",
        "the error names the file: {err:?}"
    );
    assert!(err.line > 0, "the error names the line: {err:?}");
    assert_eq!(d.status().sync, "invalid");

    // A daemon.* change, via ctl reload.
    let changed = DAEMON_SECTION.replace("debounce: 20ms", "debounce: 30ms");
    assert_ne!(changed, DAEMON_SECTION);
    env.write("scriptd.yaml", &format!("{changed}{body}"));
    let r = reload_json(&d, &["reload"], 3);
    assert_eq!(r.result, "rejected");
    let msg = r.message.expect("a rejection message");
    assert!(
        msg.contains("daemon.debounce"),
        "names the daemon key: {msg}"
    );
    let h = history(&d, 1000);
    assert_eq!(h.running_version, 1, "the running version stays");
    let e = h
        .entries
        .iter()
        .find(|e| e.source == "ctl")
        .expect("the ctl reload is in the history");
    assert_eq!(e.result, "rejected");
    assert_eq!(e.version, None);
    assert_eq!(e.uid, Some(my_uid()));
    let m = e.message.as_deref().expect("recorded message");
    assert!(
        m.contains("daemon.debounce"),
        "recorded message names the key: {m}"
    );
    assert!(
        e.changes.iter().any(|c| c.field == "daemon.debounce"
            && c.impact == "daemon-restart"
            && c.outcome == "rejected"),
        "the refused change is recorded: {:?}",
        e.changes
    );
    assert_eq!(versions(&h), vec![1], "no version from refused attempts");
}

// ------------------------------------------------------------------ 6. JSON and diff

#[test]
fn history_show_and_diff_documents_and_unknown_versions() {
    let env = Env::new(&one_script("1").replace("3101", "6101"));
    let d = env.start();
    env.set_body(&one_script("2").replace("3101", "6101"));
    wait_version(&d, 2);

    let h = history(&d, 1000);
    assert_eq!(h.running_version, 2);
    assert_eq!(versions(&h), vec![2, 1]);
    assert!(entry(&h, 2).running && !entry(&h, 1).running);
    assert!(entry(&h, 1).time.is_some(), "entries carry their time");
    let v1 = show(&d, 1);
    assert_eq!(v1.entry.source, "startup");
    assert_eq!(v1.files[0].name, "scriptd.yaml", "main file first");
    assert!(v1.files[0].content.contains("X: \"1\""));

    let r = d.ctl(&["diff", "1", "-o", "json"]);
    assert_eq!(r.code, 0, "ctl diff 1: {}", r.stderr);
    let diff: DiffJson = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("diff JSON does not parse strictly: {e}\n{}", r.stdout));
    assert_eq!(diff.schema, 1);
    assert_eq!(
        (diff.from, diff.to),
        (1, 2),
        "V2 defaults to the running version"
    );
    assert!(
        diff.unified.contains("-    env: { X: \"1\" }"),
        "{}",
        diff.unified
    );
    assert!(
        diff.unified.contains("+    env: { X: \"2\" }"),
        "{}",
        diff.unified
    );
    assert!(diff.errors.is_empty());
    assert_eq!(diff.changes.len(), 1, "{:?}", diff.changes);
    let c = &diff.changes[0];
    assert_eq!(
        (c.script.as_str(), c.field.as_str(), c.impact.as_str()),
        ("a", "env.X", "restart"),
        "{c:?}"
    );
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some("1"), Some("2")),
        "{c:?}"
    );

    let r = d.ctl(&["diff", "1", "2"]);
    assert_eq!(r.code, 0, "ctl diff 1 2: {}", r.stderr);
    for want in [
        "--- v1/scriptd.yaml",
        "+++ v2/scriptd.yaml",
        "-    env: { X: \"1\" }",
        "+    env: { X: \"2\" }",
        "changes from version 1 to 2",
        "env.X",
        "restart",
    ] {
        assert!(
            r.stdout.contains(want),
            "diff output has {want:?}:\n{}",
            r.stdout
        );
    }
    let r = d.ctl(&["diff", "2", "2"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("same files"), "{}", r.stdout);

    for args in [
        &["history", "show", "99"][..],
        &["diff", "99"],
        &["diff", "1", "99"],
        &["rollback", "99"],
        &["rollback", "99", "--dry-run"],
    ] {
        let r = d.ctl(args);
        assert_eq!(
            r.code, 4,
            "ctl {args:?} on an unknown version: {}{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stderr.contains("99"),
            "ctl {args:?} says which version: {}",
            r.stderr
        );
    }
    assert_eq!(history(&d, 1000), h, "failed look-ups record nothing");
}

// ------------------------------------------------------------------ 7. retention

#[test]
fn history_limit_keeps_the_last_versions_and_the_running_one() {
    let daemon = format!("{DAEMON_SECTION}  history_limit: 3\n");
    let write = |env: &Env, x: usize| {
        env.write(
            "scriptd.yaml",
            &format!(
                "{daemon}{}",
                one_script(&x.to_string()).replace("3101", "7101")
            ),
        );
    };
    let env = Env::new("");
    write(&env, 1);
    let d = env.start();
    for v in 2..=6 {
        write(&env, v);
        wait_version(&d, v as u64);
    }
    let h = history(&d, 1000);
    assert_eq!(
        versions(&h),
        vec![6, 5, 4],
        "only the last 3 versions are kept"
    );
    assert!(entry(&h, 6).running);
    for gone in [1, 3] {
        let r = d.ctl(&["history", "show", &gone.to_string()]);
        assert_eq!(
            r.code, 4,
            "version {gone} was pruned: {}{}",
            r.stdout, r.stderr
        );
    }
    show(&d, 4);

    // A rollback to the oldest kept version is a new version: it and the running one stay.
    let r = reload_json(&d, &["rollback", "4"], 0);
    assert_eq!((r.result.as_str(), r.version), ("applied", 7));
    let h = history(&d, 1000);
    assert_eq!(versions(&h), vec![7, 6, 5]);
    let e = entry(&h, 7);
    assert!(e.running);
    assert_eq!(
        e.rollback_to,
        Some(4),
        "it records what it restored, now pruned"
    );
    assert_eq!(show(&d, 7).files[0].content, disk_files(&env)[0].1);
    let r = d.ctl(&["rollback", "4"]);
    assert_eq!(r.code, 4, "version 4 is gone now: {}{}", r.stdout, r.stderr);
}

// ------------------------------------------------------------------ 8. refusals and failures

#[test]
fn rollback_that_needs_a_daemon_restart_is_rejected_and_recorded() {
    let body = one_script("1").replace("3101", "8101");
    let env = Env::new(&body);
    let d = env.start();
    wait_version(&d, 1);
    stop(d);
    // A daemon.* edit only a restart applies: version 2, from startup.
    let slower = DAEMON_SECTION.replace("debounce: 20ms", "debounce: 30ms");
    assert_ne!(slower, DAEMON_SECTION);
    env.write("scriptd.yaml", &format!("{slower}{body}"));
    let d = env.start();
    let before = wait_version(&d, 2);
    assert_eq!(entry(&before, 2).source, "startup");
    let disk_before = disk_files(&env);

    let r = reload_json(&d, &["rollback", "1", "--dry-run"], 3);
    assert_eq!(r.result, "rejected", "the preview says so: {r:?}");
    let r = reload_json(&d, &["rollback", "1"], 3);
    assert_eq!(r.result, "rejected", "{r:?}");
    assert_eq!(r.version, 2, "version 2 stays running");
    let msg = r.message.expect("a rejection says why");
    assert!(msg.contains("daemon.debounce"), "names the key: {msg}");

    assert_eq!(
        disk_files(&env),
        disk_before,
        "the files on disk are untouched"
    );
    let h = history(&d, 1000);
    assert_eq!(h.running_version, 2);
    assert_eq!(
        versions(&h),
        vec![2, 1],
        "no version from a refused rollback"
    );
    assert_eq!(h.entries.len(), 3, "{:?}", h.entries);
    let e = &h.entries[0];
    assert_eq!(
        (
            e.version,
            e.source.as_str(),
            e.rollback_to,
            e.result.as_str()
        ),
        (None, "rollback", Some(1), "rejected"),
        "{e:?}"
    );
    assert_eq!(e.uid, Some(my_uid()), "who tried is recorded");
    assert!(
        e.changes.iter().any(|c| c.field == "daemon.debounce"
            && c.impact == "daemon-restart"
            && c.outcome == "rejected"),
        "the refused change is recorded: {:?}",
        e.changes
    );
    assert_eq!(d.status().sync, "in-sync");
}

#[test]
fn failed_and_rolled_back_attempt_is_recorded_with_its_error() {
    let scripts =
        |prog: &str| format!("scripts:\n  svc:\n    command: [\"{prog}\"]\n    stop_grace: 2s\n");
    let env = Env::manual(&scripts("./svc.sh"));
    env.script("svc.sh", "exec sleep 2000.8201");
    // Executable, so validation passes; its interpreter is missing, so exec fails.
    let bad = env.path("bad.sh");
    std::fs::write(&bad, "#!/nonexistent/interp\n").expect("write bad.sh");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = env.start();
    pids(&d, &["svc"]);

    env.set_manual(&scripts("./bad.sh"));
    let r = reload_json(&d, &["reload"], 3);
    assert_eq!(
        (r.result.as_str(), r.version),
        ("failed-rolled-back", 1),
        "{r:?}"
    );
    let reported = r.message.expect("the failure says why");

    let h = history(&d, 1000);
    assert_eq!(h.running_version, 1);
    assert_eq!(versions(&h), vec![1], "a failed attempt gets no version");
    let e = &h.entries[0];
    assert_eq!(
        (e.version, e.source.as_str(), e.result.as_str()),
        (None, "ctl", "failed-rolled-back"),
        "{e:?}"
    );
    assert_eq!(e.uid, Some(my_uid()));
    assert_eq!(
        e.message.as_deref(),
        Some(reported.as_str()),
        "the error is recorded"
    );
    assert!(reported.contains("svc"), "names the script: {reported}");
    assert!(
        e.changes
            .iter()
            .any(|c| c.script == "svc" && c.field == "command" && c.impact == "restart"),
        "the plan that failed is recorded: {:?}",
        e.changes
    );
    let r = d.ctl(&["history"]);
    assert!(
        r.stdout.contains("failed-rolled-back"),
        "the table shows it:\n{}",
        r.stdout
    );
}

// ------------------------------------------------------------------ 9. tables and JSON schema

/// The JSON type of a value, as the schema lists it.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts that `v` is an object with exactly the keys of `schema`, each of one of its
/// types (`"string|null"`); returns the object's values by key.
fn assert_schema<'a>(
    what: &str,
    v: &'a Value,
    schema: &[(&str, &str)],
) -> &'a serde_json::Map<String, Value> {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = schema.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, want, "{what}: the keys changed: {v}");
    for (key, types) in schema {
        let t = json_type(&obj[*key]);
        assert!(
            types.split('|').any(|x| x == t),
            "{what}.{key} is {t}, the schema says {types}: {v}"
        );
    }
    obj
}

/// Parses a ctl JSON document as an untyped value.
fn json_value(d: &Daemon, args: &[&str]) -> Value {
    let r = d.ctl(args);
    assert_eq!(r.code, 0, "ctl {args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("ctl {args:?} is not JSON: {e}\n{}", r.stdout))
}

const ENTRY_SCHEMA: &[(&str, &str)] = &[
    ("version", "number|null"),
    ("running", "bool"),
    ("attempt_id", "number"),
    ("time", "string|null"),
    ("source", "string"),
    ("rollback_to", "number|null"),
    ("uid", "number|null"),
    ("user", "string|null"),
    ("cert", "string|null"),
    ("result", "string"),
    ("summary", "string"),
    ("message", "string|null"),
    ("hash", "string|null"),
    ("changes", "array"),
    ("errors", "array"),
];
const CHANGE_SCHEMA: &[(&str, &str)] = &[
    ("script", "string"),
    ("field", "string"),
    ("old", "string|null"),
    ("new", "string|null"),
    ("impact", "string"),
    ("outcome", "string"),
    ("reason", "string|null"),
];
const ERROR_SCHEMA: &[(&str, &str)] = &[
    ("file", "string"),
    ("line", "number"),
    ("column", "number"),
    ("path", "string"),
    ("message", "string"),
    ("text", "string"),
];

/// Checks a history entry and its changes and errors against the schema.
fn assert_entry_schema(what: &str, v: &Value) {
    let e = assert_schema(what, v, ENTRY_SCHEMA);
    for c in e["changes"].as_array().into_iter().flatten() {
        assert_schema(&format!("{what}.changes[]"), c, CHANGE_SCHEMA);
    }
    for err in e["errors"].as_array().into_iter().flatten() {
        assert_schema(&format!("{what}.errors[]"), err, ERROR_SCHEMA);
    }
}

/// The user name `ctl` shows in the WHO column for our uid.
fn my_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", my_uid()), |u| u.name)
}

/// The row of a blank-style table whose first cell starts with `first`, as words; our user
/// name (which may hold a space: `uid 1000`) is one word, `ME`.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("no row starting with {first:?}:\n{table}"))
        .replace(&format!(" {} ", my_name()), " ME ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The column at which `word` starts in the line that starts with `first`.
fn column(table: &str, first: &str, word: &str) -> usize {
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("no row starting with {first:?}:\n{table}"));
    line.find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
}

fn four_scripts(x: &str, with_d: bool) -> String {
    let mut body = format!(
        "defaults:\n  stop_grace: 2s\nscripts:\n\
         \x20 a:\n    command: \"sleep 2000.9101\"\n    env: {{ X: \"{x}\" }}\n\
         \x20 b:\n    command: \"sleep 2000.9201\"\n    env: {{ X: \"{x}\" }}\n\
         \x20 c:\n    command: \"sleep 2000.9301\"\n"
    );
    if with_d {
        body.push_str("  d:\n    command: \"sleep 2000.9401\"\n");
    }
    body
}

#[test]
fn history_tables_and_json_documents_keep_their_shape() {
    let env = Env::manual(&four_scripts("1", false));
    let d = env.start();
    // v2 by `ctl reload`: d added, a and b changed.
    env.set_manual(&four_scripts("2", true));
    assert_eq!(reload_json(&d, &["reload"], 0).version, 2);
    // A refused attempt with a validation error.
    env.write("scriptd.yaml", "{ not: yaml");
    let r = reload_json(&d, &["reload"], 3);
    assert_eq!(r.result, "invalid", "{r:?}");
    let refused = r.attempt_id.expect("attempt id");
    // v3: a rollback to v1 (from a broken file on disk).
    let r = reload_json(&d, &["rollback", "1"], 0);
    assert_eq!((r.result.as_str(), r.version), ("applied", 3), "{r:?}");

    // ctl history: the table.
    // --wide: the refusal message in full (at 80 columns it is cut with …).
    let r = d.ctl(&["history", "--wide"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let t = &r.stdout;
    assert_eq!(
        row(t, "VERSION"),
        vec!["VERSION", "TIME", "SOURCE", "WHO", "RESULT", "SUMMARY"],
        "{t}"
    );
    let me = my_name();
    let r3 = row(t, "3 *");
    assert_eq!(r3[..2], ["3", "*"], "{t}");
    assert_eq!(r3[3..6], ["rollback-to-1", "ME", "applied"], "{t}");
    assert_eq!(r3[6..].join(" "), "+0 ~2 -1 scripts", "{t}");
    let r2 = row(t, "2 ");
    assert_eq!(r2[2..5], ["ctl", "ME", "applied"], "{t}");
    assert_eq!(r2[5..].join(" "), "+1 ~2 -0 scripts", "{t}");
    let attempt = format!("- (#{refused})");
    let ra = row(t, &attempt);
    assert_eq!(ra[3..6], ["ctl", "ME", "rejected"], "{t}");
    assert!(
        ra[6..]
            .join(" ")
            .starts_with("+0 ~0 -0 scripts: the config is invalid"),
        "a refusal shows why: {t}"
    );
    let r1 = row(t, "1 ");
    assert_eq!(r1[2..5], ["startup", "-", "applied"], "{t}");
    assert_eq!(r1[5..].join(" "), "+0 ~0 -0 scripts", "{t}");
    // Columns line up under their headers.
    for (header, first, cell) in [
        ("SOURCE", "3 *", "rollback-to-1"),
        ("SOURCE", "1 ", "startup"),
        ("WHO", "2 ", me.as_str()),
        ("RESULT", &attempt, "rejected"),
        ("SUMMARY", "2 ", "+1 ~2 -0"),
    ] {
        assert_eq!(
            column(t, "VERSION", header),
            column(t, first, cell),
            "{cell} is under {header}:\n{t}"
        );
    }
    assert!(t.contains("(* = running"), "the legend: {t}");

    // ctl history show: the table form.
    let v3 = show(&d, 3);
    let r = d.ctl(&["history", "show", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut want = format!(
        "# version 3 (running) · {} · rollback-to-1 · by {me} · {}\n",
        v3.entry.time.as_deref().expect("time"),
        v3.entry.hash.as_deref().expect("hash")
    );
    for f in &v3.files {
        want.push_str(&format!("\n==> {} <==\n{}", f.name, f.content));
    }
    assert_eq!(r.stdout, want, "the table form of history show");
    let r = d.ctl(&["history", "show", "2"]);
    assert!(
        r.stdout.starts_with("# version 2 · ") && r.stdout.contains(" · ctl · by "),
        "{}",
        r.stdout
    );

    // The running flag of `history show` (JSON).
    assert!(v3.entry.running, "version 3 runs");
    assert!(!show(&d, 2).entry.running, "version 2 does not");
    assert!(!show(&d, 1).entry.running, "version 1 does not");

    // The JSON documents against a fixed schema, independent of ctl's own types.
    let h = json_value(&d, &["history", "-o", "json"]);
    let top = assert_schema(
        "history",
        &h,
        &[
            ("schema", "number"),
            ("running_version", "number"),
            ("entries", "array"),
        ],
    );
    assert_eq!(top["schema"], 1);
    assert_eq!(top["running_version"], 3);
    let entries = top["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "3 versions and 1 attempt: {h}");
    for e in entries {
        assert_entry_schema("history.entries[]", e);
    }
    let (v3j, attempt_j) = (&entries[0], &entries[1]);
    assert_eq!(v3j["version"], 3);
    assert_eq!(v3j["running"], true);
    assert_eq!(v3j["rollback_to"], 1);
    assert_eq!(v3j["uid"], my_uid());
    assert!(v3j["hash"].is_string() && v3j["time"].is_string());
    assert!(!v3j["changes"].as_array().expect("changes").is_empty());
    assert!(attempt_j["version"].is_null() && attempt_j["hash"].is_null());
    assert!(attempt_j["message"].is_string());
    assert!(!attempt_j["errors"].as_array().expect("errors").is_empty());
    assert_eq!(entries[3]["uid"], Value::Null, "startup has no uid");

    let v = json_value(&d, &["history", "show", "3", "-o", "json"]);
    let top = assert_schema(
        "history show",
        &v,
        &[
            ("schema", "number"),
            ("entry", "object"),
            ("files", "array"),
        ],
    );
    assert_eq!(top["schema"], 1);
    assert_entry_schema("history show.entry", &top["entry"]);
    assert_eq!(top["entry"]["running"], true);
    for f in top["files"].as_array().expect("files") {
        assert_schema(
            "history show.files[]",
            f,
            &[("name", "string"), ("content", "string")],
        );
    }
}

// ------------------------------------------------------------------ 10. control actions

#[test]
fn control_actions_are_recorded_with_who_and_result() {
    let env = Env::new(
        "scripts:\n\
         \x20 svc:\n    command: \"sleep 2000.9501\"\n    stop_grace: 2s\n\
         \x20 per:\n    command: \"true\"\n    interval: 1h\n\
         \x20 off:\n    command: \"sleep 2000.9601\"\n    enabled: false\n",
    );
    let d = env.start();
    pids(&d, &["svc"]);
    let versions_before = history(&d, 1000);
    // The history holds config text with env values: private, whatever the umask.
    let mode = |rel: &str| {
        std::fs::metadata(env.path(rel))
            .unwrap_or_else(|e| panic!("stat {rel}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("state"), 0o700, "the state_dir the daemon created");
    for db in [
        "state/history.db",
        "state/history.db-wal",
        "state/history.db-shm",
    ] {
        assert_eq!(mode(db), 0o600, "{db}");
    }
    for (args, code) in [
        (&["stop", "svc"][..], 0),
        (&["start", "svc"], 0),
        (&["restart", "svc"], 0),
        (&["run", "per"], 0),
        (&["stop", "nosuch"], 4),
        (&["start", "off"], 1),
    ] {
        let r = d.ctl(args);
        assert_eq!(r.code, code, "ctl {args:?}: {}{}", r.stdout, r.stderr);
    }

    let doc = json_value(&d, &["history", "--actions", "-o", "json"]);
    let top = assert_schema(
        "history --actions",
        &doc,
        &[("schema", "number"), ("actions", "array")],
    );
    assert_eq!(top["schema"], 1);
    let actions = top["actions"].as_array().expect("actions");
    for a in actions {
        assert_schema(
            "history --actions.actions[]",
            a,
            &[
                ("time", "string|null"),
                ("uid", "number|null"),
                ("user", "string|null"),
                ("cert", "string|null"),
                ("action", "string"),
                ("script", "string"),
                ("result", "string"),
                ("message", "string|null"),
            ],
        );
        assert_eq!(a["uid"], my_uid(), "who asked: {a}");
        assert!(a["time"].is_string(), "when: {a}");
    }
    let got: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or_default(),
                a["script"].as_str().unwrap_or_default(),
                a["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("start", "off", "refused"),
            ("stop", "nosuch", "not-found"),
            ("run", "per", "ok"),
            ("restart", "svc", "ok"),
            ("start", "svc", "ok"),
            ("stop", "svc", "ok"),
        ],
        "every control call, newest first: {doc}"
    );
    let message = |i: usize| actions[i]["message"].as_str().unwrap_or_default();
    assert!(message(4).starts_with("started (pid "), "{doc}");
    assert!(message(1).contains("nosuch"), "{doc}");
    assert!(message(0).contains("disabled"), "{doc}");

    let r = d.ctl(&["history", "--actions", "--limit", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let t = &r.stdout;
    assert_eq!(
        row(t, "TIME"),
        vec!["TIME", "WHO", "ACTION", "SCRIPT", "RESULT", "MESSAGE"],
        "{t}"
    );
    assert_eq!(t.lines().count(), 3, "--limit 2: header and two rows:\n{t}");
    let line = t
        .lines()
        .find(|l| l.contains("nosuch"))
        .unwrap_or_else(|| panic!("the not-found action is listed:\n{t}"));
    let words = row(t, line.trim_start());
    assert_eq!(words[1..5], ["ME", "stop", "nosuch", "not-found"], "{t}");
    assert_eq!(
        column(t, "TIME", "RESULT"),
        line.find("not-found").unwrap_or(0),
        "{t}"
    );

    // Control actions are no config versions; they persist across a restart.
    assert_eq!(
        history(&d, 1000),
        versions_before,
        "no version or attempt from control"
    );
    stop(d);
    let d = env.start();
    assert_eq!(
        json_value(&d, &["history", "--actions", "-o", "json"]),
        doc,
        "the actions survive a restart"
    );
}

// ------------------------------------------------------------------ 11. write-back

#[test]
fn rollback_removes_a_later_include_even_if_the_main_file_is_broken_and_survives_kill_9() {
    let main = |x: &str| {
        format!(
            "include: [\"scripts.d/*.yaml\"]\n\
             scripts:\n  a:\n    command: \"sleep 2000.9701\"\n    env: {{ X: \"{x}\" }}\n    \
             stop_grace: 2s\n"
        )
    };
    let env = Env::manual(&main("1"));
    std::fs::create_dir_all(env.path("scripts.d")).expect("mkdir scripts.d");
    let mut d = env.start();
    env.set_manual(&main("2"));
    assert_eq!(reload_json(&d, &["reload"], 0).version, 2);
    env.write(
        "scripts.d/d.yaml",
        "scripts:\n  d:\n    command: \"sleep 2000.9801\"\n    stop_grace: 2s\n",
    );
    assert_eq!(reload_json(&d, &["reload"], 0).version, 3);
    env.set_manual(&main("4"));
    assert_eq!(reload_json(&d, &["reload"], 0).version, 4);
    pids(&d, &["a", "d"]);
    // The main file on disk does not parse: its include globs cannot be read.
    env.write(
        "scriptd.yaml",
        "include: [\"scripts.d/*.yaml\"\n  {{ broken",
    );

    let r = reload_json(&d, &["rollback", "2"], 0);
    assert_eq!((r.result.as_str(), r.version), ("applied", 5), "{r:?}");
    assert!(
        r.changes
            .iter()
            .any(|c| c.script == "d" && c.field == "*" && c.impact == "stop"),
        "d is removed: {:?}",
        r.changes
    );
    let v2 = show(&d, 2);
    assert_eq!(
        disk_files(&env),
        pairs(&v2.files),
        "the disk holds version 2"
    );
    assert!(
        !env.path("scripts.d/d.yaml").exists(),
        "the include version 3 added is gone"
    );
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (5, "in-sync"));
    let names: Vec<&str> = st.scripts.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a"]);
    let before = history(&d, 1000);
    assert_eq!(entry(&before, 5).rollback_to, Some(2));

    // Killed right after the rollback, restarted on the files on disk: nothing new.
    d.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(d.wait_exit(DEADLINE), None, "the daemon died of SIGKILL");
    drop(d);
    let d = env.start();
    let after = history(&d, 1000);
    assert_eq!(
        after, before,
        "disk == history: the restart records nothing"
    );
    assert_eq!(pairs(&show(&d, 5).files), disk_files(&env));
    assert_eq!(d.status().sync, "in-sync");
}

#[test]
fn a_failed_write_back_is_reported_and_recorded_and_rollback_repairs_it() {
    let env = Env::manual(&one_script("1").replace("3101", "9901"));
    let d = env.start();
    env.set_manual(&one_script("2").replace("3101", "9901"));
    assert_eq!(reload_json(&d, &["reload"], 0).version, 2);
    let v2_on_disk = disk_files(&env);
    // The write-back's temp file for the main file cannot be created: its directory is
    // immutable (root writes anywhere else) or read-only.
    let root = nix::unistd::geteuid().is_root();
    let freeze = |on: bool| {
        if root {
            let flag = if on { "+i" } else { "-i" };
            let st = std::process::Command::new("chattr")
                .arg(flag)
                .arg(env.dir.path())
                .status();
            assert!(st.is_ok_and(|s| s.success()), "chattr {flag}");
        } else {
            let mode = if on { 0o555 } else { 0o755 };
            std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(mode))
                .expect("chmod the config directory");
        }
    };
    freeze(true);

    let r = reload_json(&d, &["rollback", "1"], 3);
    assert_eq!((r.result.as_str(), r.version), ("applied", 3), "{r:?}");
    let msg = r.message.expect("the failure says what happened");
    let dir = env.dir.path().display().to_string();
    for want in ["could not be rewritten", dir.as_str(), "ctl rollback 3"] {
        assert!(msg.contains(want), "the message has {want:?}: {msg}");
    }
    assert_eq!(disk_files(&env), v2_on_disk, "nothing on disk changed");
    let st = d.status();
    assert_eq!((st.running_version, st.sync.as_str()), (3, "changed"));
    let h = history(&d, 1000);
    let e3 = entry(&h, 3);
    assert_eq!((e3.result.as_str(), e3.rollback_to), ("applied", Some(1)));
    assert_eq!(
        e3.message.as_deref(),
        Some(msg.as_str()),
        "recorded honestly"
    );

    // Fixed, `ctl rollback 3` writes the running version's files.
    freeze(false);
    let r = d.ctl(&["rollback", "3"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rewritten to match"), "{}", r.stdout);
    assert_eq!(disk_files(&env), pairs(&show(&d, 3).files));
    assert_eq!(d.status().sync, "in-sync");
    let h = history(&d, 1000);
    assert_eq!(versions(&h), vec![3, 2, 1], "no new version");
    let e = &h.entries[0];
    assert_eq!(
        (
            e.version,
            e.source.as_str(),
            e.result.as_str(),
            e.rollback_to
        ),
        (None, "rollback", "unchanged", Some(3)),
        "the rewrite of the files is in the audit trail: {e:?}"
    );
    assert_eq!(e.uid, Some(my_uid()));
    // Once in sync, the same rollback has nothing to do and records nothing.
    let r = reload_json(&d, &["rollback", "3"], 0);
    assert_eq!(r.result, "unchanged");
    assert!(r.message.is_some_and(|m| m.contains("nothing to do")));
    assert_eq!(history(&d, 1000), h, "nothing recorded");
}

// ------------------------------------------------------------------ 12. history write fails

#[test]
fn a_reload_or_control_action_that_cannot_be_recorded_still_happens_and_says_so() {
    let env = Env::manual(&one_script("1").replace("3101", "9951"));
    let d = env.start();
    let mut events = Events::follow(&d);
    // Another writer holds the database's write lock past the daemon's busy timeout.
    let lock = rusqlite::Connection::open(env.path("state/history.db")).expect("open the db");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    env.set_manual(&one_script("2").replace("3101", "9951"));
    let r = reload_json(&d, &["reload"], 0);
    assert_eq!((r.result.as_str(), r.version), ("applied", 2), "{r:?}");
    let msg = r.message.expect("the record failure is reported");
    assert!(
        msg.contains("could not be recorded in the history"),
        "{msg}"
    );
    let ev = events.wait("the applied event", |e| is_phase(e, "applied"));
    assert!(
        ev.message
            .as_deref()
            .is_some_and(|m| m.contains("could not be recorded")),
        "the event says so too: {ev:?}"
    );
    // A control action that cannot be recorded still happens, and says so.
    let r = d.ctl(&["restart", "a"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("not recorded in the history"),
        "{}",
        r.stdout
    );
    drop(lock);
    assert_eq!(
        json_value(&d, &["history", "--actions", "-o", "json"])["actions"],
        Value::Array(Vec::new()),
        "the restart is missing, as reported"
    );

    let h = history(&d, 1000);
    assert_eq!(h.running_version, 2, "the reload stands");
    assert_eq!(versions(&h), vec![1], "version 2 is missing, as reported");
    env.set_manual(&one_script("3").replace("3101", "9951"));
    let r = reload_json(&d, &["reload"], 0);
    assert_eq!((r.version, r.message), (3, None), "recording works again");
    assert_eq!(versions(&history(&d, 1000)), vec![3, 1]);
}
