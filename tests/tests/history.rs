//! History and rollback end to end: versions recorded for every applied edit, `ctl rollback`
//! (default target, dry runs, exit codes), the files written back to disk, history across
//! daemon restarts and a `kill -9` in the middle of a burst of reloads, refused attempts in
//! the audit trail, the strict JSON documents, and retention. Every wait polls with a
//! deadline; nothing relies on a bare sleep.

use ctl::history::DiffJson;
use ctl::history::{FileJson, HistoryEntryJson, HistoryJson, VersionJson};
use ctl::output::ReloadJson;
use scriptd_common::config::{read_source, ConfigFile, ConfigSource};
use scriptd_e2e::{
    alive, is_phase, pids_with_marker, wait_for, Daemon, Env, Events, DAEMON_SECTION, DEADLINE,
};
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
    assert_eq!(e5.rollback_from, Some(3));
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
        e.rollback_from,
        Some(4),
        "it records what it restored, now pruned"
    );
    assert_eq!(show(&d, 7).files[0].content, disk_files(&env)[0].1);
    let r = d.ctl(&["rollback", "4"]);
    assert_eq!(r.code, 4, "version 4 is gone now: {}{}", r.stdout, r.stderr);
}
