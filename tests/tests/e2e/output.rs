//! Output a person can read at 80 columns: tables cut to fit (whole with `--wide` and in
//! JSON), no trailing spaces, colour that keeps columns aligned, previews that say
//! `planned`, rollback sources that read right, user names next to uids, local times,
//! `--since` with a time, and version 0 / unknown runs as errors (exit 4).

use ctl::history::{ActionsJson, HistoryJson};
use ctl::output::ReloadJson;
use scriptd_e2e::*;
use std::process::Command;
use std::time::Duration;

/// A command longer than any terminal: the table must cut it, JSON must not.
fn long_command(tag: &str) -> String {
    format!("sleep 3000.{tag}1 # {}", "a-very-long-comment-".repeat(8))
}

fn body(tag: &str) -> String {
    format!(
        "scripts:\n  svc:\n    command: \"{}\"\n  per:\n    command: \"echo per-{tag}\"\n    interval: 1h\n",
        long_command(tag)
    )
}

/// Width on screen of a line without colour (the tables hold `…` and `→`: one column each).
fn width(line: &str) -> usize {
    strip_ansi(line).chars().count()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every table line (they start with the cell padding, a space) is at most `limit` wide;
/// the lines around tables hold paths and ids, which are as long as they are.
fn assert_fits(what: &str, text: &str, limit: usize) {
    assert!(
        text.lines().any(|l| l.starts_with(' ')),
        "{what}: no table:\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with(' ')) {
        assert!(
            width(line) <= limit,
            "{what}: a line is {} wide, over {limit}:\n{text}",
            width(line)
        );
    }
}

fn assert_no_trailing_spaces(what: &str, text: &str) {
    assert!(!text.is_empty(), "{what} printed nothing");
    for line in text.lines() {
        assert_eq!(
            line,
            line.trim_end(),
            "{what}: trailing spaces in {line:?}:\n{text}"
        );
    }
}

/// `ctl ARGS` (a JSON command), which must exit 0: its stdout.
fn json_text(d: &Daemon, args: &[&str]) -> String {
    let r = d.ctl(args);
    assert_eq!(r.code, 0, "ctl {args:?}: {}{}", r.stdout, r.stderr);
    r.stdout
}

/// The rows of a plan table (the lines of our scripts).
fn plan_rows(text: &str) -> Vec<&str> {
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            ["svc ", "per "]
                .iter()
                .any(|s| l.trim_start().starts_with(s))
        })
        .collect();
    assert!(!rows.is_empty(), "no plan rows:\n{text}");
    rows
}

/// The daemon at version 2 (the long command changed once), with the watcher off.
fn two_versions() -> (Env, Daemon) {
    let env = Env::manual(&body("1"));
    let d = env.start();
    env.set_manual(&body("2"));
    let (code, r) = d.reload(&[]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "applied", 2),
        "{r:?}"
    );
    (env, d)
}

#[test]
fn a_long_command_is_cut_at_80_columns_whole_with_wide_and_in_json() {
    let (env, d) = two_versions();
    env.set_manual(&body("3"));
    let (old, new) = (long_command("2"), long_command("3"));

    let r = d.ctl(&["reload", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_fits("reload --dry-run", &r.stdout, 80);
    assert!(r.stdout.contains('…'), "the command is cut:\n{}", r.stdout);
    assert!(!r.stdout.contains(&new), "not whole:\n{}", r.stdout);
    // What is never cut: the script name, the field, the impact, the outcome.
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("svc "))
        .unwrap_or_else(|| panic!("no command row:\n{}", r.stdout));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], ["svc", "command"], "{line}");
    assert_eq!(words[words.len() - 2..], ["restart", "planned"], "{line}");

    let wide = d.ctl(&["reload", "--dry-run", "--wide"]);
    assert_eq!(wide.code, 0, "{}", wide.stderr);
    assert!(
        wide.stdout.contains(&format!("{old} → {new}")),
        "--wide shows the values whole:\n{}",
        wide.stdout
    );
    assert!(!wide.stdout.contains('…'), "{}", wide.stdout);

    let (_, doc) = d.reload(&["--dry-run"]);
    let c = doc
        .changes
        .iter()
        .find(|c| c.script == "svc" && c.field == "command")
        .unwrap_or_else(|| panic!("no command change: {doc:?}"));
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some(&*old), Some(&*new))
    );
}

#[test]
fn previews_say_planned_and_applies_say_applied() {
    let (env, d) = two_versions();
    env.set_manual(&body("3"));
    let outcomes = |doc: &ReloadJson| -> Vec<String> {
        doc.changes.iter().map(|c| c.outcome.clone()).collect()
    };

    // reload --dry-run: table and JSON.
    let r = d.ctl(&["reload", "--dry-run", "--wide"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for row in plan_rows(&r.stdout) {
        assert!(row.ends_with(" planned"), "{row}\n{}", r.stdout);
    }
    let (_, dry) = d.reload(&["--dry-run"]);
    assert!(!dry.changes.is_empty(), "{dry:?}");
    assert!(outcomes(&dry).iter().all(|o| o == "planned"), "{dry:?}");

    // rollback --dry-run: table and JSON.
    let r = d.ctl(&["rollback", "1", "--dry-run", "--wide"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for row in plan_rows(&r.stdout) {
        assert!(row.ends_with(" planned"), "{row}\n{}", r.stdout);
    }
    let back: ReloadJson = serde_json::from_str(&json_text(
        &d,
        &["rollback", "1", "--dry-run", "-o", "json"],
    ))
    .expect("strict parse");
    assert!(!back.changes.is_empty(), "{back:?}");
    assert!(outcomes(&back).iter().all(|o| o == "planned"), "{back:?}");

    // The diff of two versions is a comparison: nothing was applied by it either.
    let diff: serde_json::Value =
        serde_json::from_str(&json_text(&d, &["diff", "1", "2", "-o", "json"])).expect("json");
    let changes = diff["changes"].as_array().expect("changes");
    assert!(!changes.is_empty(), "{diff}");
    assert!(changes.iter().all(|c| c["outcome"] == "planned"), "{diff}");

    // The reload itself applies them.
    let (code, applied) = d.reload(&[]);
    assert_eq!(code, 0, "{applied:?}");
    assert!(
        outcomes(&applied).iter().all(|o| o == "applied"),
        "{applied:?}"
    );
}

#[test]
fn no_table_has_trailing_spaces_nor_passes_80_columns() {
    let (env, d) = two_versions();
    d.ctl_ok(&["run", "per"]);
    let r = d.ctl(&["rollback", "1"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let check = |args: &[&str], fits: bool| {
        let r = d.ctl(args);
        assert_eq!(r.code, 0, "ctl {args:?}: {}{}", r.stdout, r.stderr);
        let what = format!("ctl {}", args.join(" "));
        assert_no_trailing_spaces(&what, &r.stdout);
        if fits {
            assert_fits(&what, &r.stdout, 80);
        }
    };
    // Before the files change (a rollback preview with edited files exits 3).
    check(&["rollback", "2", "--dry-run"], true);
    env.set_manual(&body("4"));
    for args in [
        &["status"][..],
        &["status", "svc"],
        &["reload", "--dry-run"],
        &["history"],
        &["history", "--actions"],
        &["restart", "svc", "per"],
    ] {
        check(args, true);
    }
    // These print files and the script's lines, which are as wide as their authors made
    // them; their own lines and tables still end without spaces.
    for args in [
        &["history", "show", "1"][..],
        &["diff", "1", "2"],
        &["logs", "per"],
    ] {
        check(args, false);
    }
}

#[test]
fn rollback_sources_read_rollback_to_and_json_names_every_uid() {
    let (_env, d) = two_versions();
    d.ctl_ok(&["run", "per"]);
    let r = d.ctl(&["rollback", "1"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name);

    let t = d.ctl_ok(&["history"]);
    let row = t
        .lines()
        .find(|l| l.trim_start().starts_with("3 *"))
        .unwrap_or_else(|| panic!("no row of version 3:\n{t}"));
    assert!(row.contains(" rollback-to-1 "), "{row}");
    assert!(!t.contains("rollback-from"), "{t}");

    let h: HistoryJson =
        serde_json::from_str(&json_text(&d, &["history", "-o", "json"])).expect("strict parse");
    let v3 = &h.entries[0];
    assert_eq!(
        (v3.version, v3.source.as_str(), v3.rollback_to),
        (Some(3), "rollback", Some(1)),
        "{v3:?}"
    );
    for e in &h.entries {
        match e.uid {
            Some(_) => assert_eq!(e.user, me, "the user next to the uid: {e:?}"),
            None => assert_eq!(e.user, None, "no uid, no user: {e:?}"),
        }
    }
    assert!(h.entries.iter().any(|e| e.uid.is_some()), "{h:?}");

    let a: ActionsJson =
        serde_json::from_str(&json_text(&d, &["history", "--actions", "-o", "json"]))
            .expect("strict parse");
    assert!(!a.actions.is_empty(), "{a:?}");
    for action in &a.actions {
        assert!(action.uid.is_some(), "{action:?}");
        assert_eq!(action.user, me, "the user next to the uid: {action:?}");
    }
}

#[test]
fn local_shows_times_in_the_local_zone_and_json_stays_utc() {
    let env = Env::manual(&body("1"));
    let d = env.start();
    d.ctl_ok(&["run", "per"]);
    wait_for("per's line", DEADLINE, || {
        d.ctl_ok(&["logs", "per"]).contains("per-1").then_some(())
    });
    let kolkata = |args: &[&str]| {
        let out = d
            .ctl_command(args)
            .env("TZ", "Asia/Kolkata")
            .output()
            .expect("run ctl");
        assert!(out.status.success(), "ctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf8")
    };
    // 2026-12-02 14:44:03 +05:30 (tables), 2026-12-02 14:44:03.123 +05:30 (lines).
    let local_time = |s: &str| {
        let b = s.as_bytes();
        let ms = s.len() == 30 && b[19] == b'.';
        (s.len() == 26 || ms)
            && s.ends_with(" +05:30")
            && b[4] == b'-'
            && b[10] == b' '
            && b[13] == b':'
    };

    let t = kolkata(&["history", "--local"]);
    let row = t
        .lines()
        .find(|l| l.trim_start().starts_with("1 *"))
        .unwrap_or_else(|| panic!("no row of version 1:\n{t}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(local_time(&cells[2..5].join(" ")), "{row}");

    let logs = kolkata(&["logs", "per", "--local"]);
    let line = logs
        .lines()
        .find(|l| l.contains("per-1"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(local_time(&line[..30]), "{line}");

    // Events: a follower subscribed once a reload's lines reach it.
    let events = Follower::spawn(
        d.ctl_command(&["events", "--local"])
            .env("TZ", "Asia/Kolkata"),
    );
    let line = wait_for("an event line", DEADLINE, || {
        let (code, r) = d.reload(&[]);
        assert_eq!(code, 0, "{r:?}");
        events.next_line(Duration::from_millis(200)).ok()
    });
    // The first column is the event's id.
    let (_, timed) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
    assert!(local_time(&timed[..30]), "{line}");

    let actions = kolkata(&["history", "--actions", "--local"]);
    let row = actions
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{actions}"));
    assert!(local_time(&row[1..27]), "{row}");

    // Without --local: UTC, as before; JSON stays UTC with --local.
    let utc = kolkata(&["logs", "per"]);
    assert!(utc.lines().all(|l| l[..24].ends_with('Z')), "{utc}");
    let h: HistoryJson =
        serde_json::from_str(&kolkata(&["history", "--local", "-o", "json"])).expect("json");
    let time = h.entries[0].time.as_deref().expect("time");
    assert!(time.ends_with('Z'), "{time}");
}

#[test]
fn logs_since_takes_a_time() {
    let env = Env::with_scripts(&[(
        "svc",
        "echo first; while [ ! -e go ]; do sleep 0.02; done; echo second; exec sleep 3000.8111",
        "",
    )]);
    let d = env.start();
    let lines = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["logs", "svc", "--stream", "stdout", "-o", "json"];
        all.extend_from_slice(args);
        let r = d.ctl(&all);
        assert_eq!(r.code, 0, "ctl {all:?}: {}", r.stderr);
        r.stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["text"].as_str().expect("text").to_owned()
            })
            .collect()
    };
    let first_ms = wait_for("the first line", DEADLINE, || {
        let r = d.ctl(&["logs", "svc", "--stream", "stdout", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next()?).ok()?;
        v["time_ms"].as_i64()
    });
    // A time just after the first line; ctl turns it into "the last N ms" when it starts,
    // so the second line comes well after it (500ms: far more than ctl takes to ask).
    let since = first_ms + 1;
    wait_for("the clock to pass 500ms after", DEADLINE, || {
        (now_ms() > since + 500).then_some(())
    });
    std::fs::write(env.path("go"), "").expect("create go");
    wait_for("the second line", DEADLINE, || {
        (lines(&[]).len() == 2).then_some(())
    });

    let stamp = ctl::output::time(since).expect("a time");
    assert_eq!(lines(&["--since", &stamp]), ["second"], "--since {stamp}");
    assert_eq!(lines(&["--since", "1h"]), ["first", "second"]);

    for bad in ["yesterday", "2999-01-01T00:00:00Z"] {
        let r = d.ctl(&["logs", "svc", "--since", bad]);
        assert_eq!(r.code, 2, "--since {bad}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(bad), "names the value: {}", r.stderr);
    }
}

#[test]
fn version_0_and_unknown_runs_and_versions_are_errors() {
    let (_env, d) = two_versions();
    for args in [
        &["history", "show", "0"][..],
        &["history", "show", "99"],
        &["diff", "0", "2"],
        &["diff", "1", "0"],
        &["diff", "1", "99"],
        &["rollback", "0"],
        &["rollback", "0", "--dry-run"],
        &["rollback", "99"],
        &["logs", "per", "--run", "0"],
        &["logs", "per", "--run", "999999"],
        &["logs", "per", "-f", "--run", "999999"],
    ] {
        let r = d.ctl(args);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (4, ""),
            "ctl {args:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.is_empty(), "ctl {args:?} says why");
    }
}

/// Runs `ctl ARGS` on a pseudo-terminal (`script`, util-linux) with `COLUMNS` set: what a
/// person at a terminal sees, colours included.
fn on_terminal(d: &Daemon, args: &str, columns: usize) -> String {
    let ctl = format!(
        "{} --socket {} {args}",
        ctl_bin().display(),
        d.socket.display()
    );
    let out = Command::new("script")
        .args(["-qec", &ctl, "/dev/null"])
        .env("COLUMNS", columns.to_string())
        .env_remove("NO_COLOR")
        .env_remove("SCRIPTD_CONFIG")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `script` (install util-linux: apt-get install bsdutils): {e}")
        });
    assert!(out.status.success(), "ctl {args} on a terminal: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .replace("\r\n", "\n")
}

#[test]
fn on_a_terminal_coloured_columns_align_and_tables_fit_its_width() {
    let env = Env::manual(&body("1"));
    let d = env.start();
    d.wait_script("svc", "running", |s| s.state == "running");

    let t = on_terminal(&d, "status", 200);
    assert!(t.contains("\x1b[32mrunning\x1b[0m"), "coloured:\n{t:?}");
    let plain = strip_ansi(&t);
    let col = |first: &str, word: &str| {
        let line = plain
            .lines()
            .find(|l| l.trim_start().starts_with(first))
            .unwrap_or_else(|| panic!("no line {first:?}:\n{plain}"));
        line.find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
    };
    // The column after the coloured STATE starts at the same place in every row.
    let runs = col("NAME", "RUNS");
    let per_runs = plain
        .lines()
        .find(|l| l.trim_start().starts_with("per "))
        .expect("per's row");
    let svc_runs = plain
        .lines()
        .find(|l| l.trim_start().starts_with("svc "))
        .expect("svc's row");
    assert_eq!(
        col("NAME", "PID"),
        col("svc ", &d.script("svc").pid.expect("pid").to_string())
    );
    for line in [per_runs, svc_runs] {
        assert_eq!(
            line[runs..]
                .split_whitespace()
                .next()
                .map(|w| w.parse::<u64>().is_ok()),
            Some(true),
            "RUNS is under its header in {line:?}:\n{plain}"
        );
    }

    env.set_manual(&body("2"));
    let t = on_terminal(&d, "reload --dry-run", 60);
    assert_fits("reload --dry-run at COLUMNS=60", &t, 60);
    assert!(t.contains('…'), "{t}");
    let wide = on_terminal(&d, "reload --dry-run --wide", 60);
    assert!(wide.contains(&long_command("2")), "{wide}");
}
