//! Calendar schedules: a cron `schedule` (the seconds form, so that it fires within the
//! test) starts runs on its slots and shows its next one in `ctl status`; `jitter` delays
//! interval starts within `[interval, interval + jitter]`; `catch_up` runs a slot missed
//! while the daemon was down once at start, and only then; bad `schedule`/`timezone` values
//! are errors at their place.

use scriptd_e2e::{assert_stays, now_ms, read, wait_for, Env, DEADLINE};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

/// Unix ms of an RFC 3339 time as `ctl status --output json` prints it.
fn ms(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{rfc3339}: {e}"));
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The start times (ms) the script wrote, one per line.
fn starts(env: &Env) -> Vec<i64> {
    read(&env.path("starts"))
        .lines()
        .map(|l| l.trim().parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

const RECORD_STARTS: &str = "date +%s%3N >> starts";

#[test]
fn a_seconds_schedule_fires_on_its_slots_and_shows_the_next_one() {
    let env = Env::with_scripts(&[(
        "tick",
        RECORD_STARTS,
        "    schedule: \"* * * * * *\"\n    timezone: UTC\n",
    )]);
    let d = env.start();
    // Its next run is a slot: a whole second, in the future when planned.
    let first = d.script("tick");
    assert_eq!(first.kind, "periodic");
    assert_eq!(first.schedule.as_deref(), Some("* * * * * *"));
    assert_eq!(first.timezone.as_deref(), Some("UTC"));
    assert_eq!(first.catch_up, Some(false));
    assert_eq!(first.jitter_ms, None);
    // Unlike an interval script, it does not run when the daemon starts: at its first slot.
    let planned = ms(first.next_run.as_deref().expect("a next run"));
    assert_eq!(planned % 1000, 0, "next run {planned} is not on a second");

    // Each slot is started no earlier than planned (the daemon's own start times), and the
    // next one planned is a later whole second.
    let mut prev: Option<(u64, i64)> = None; // (run count, next run)
    let mut checked = 0;
    let s = wait_for("3 new runs seen after a planned slot", DEADLINE * 2, || {
        let s = d.script("tick");
        let next = s.next_run.as_deref().map(ms);
        let last = s.last_start.as_deref().map(ms);
        if let Some(next) = next {
            assert_eq!(next % 1000, 0, "next run {next} is not on a second");
        }
        if let (Some((count, planned)), Some(last)) = (prev, last) {
            // Runs since that snapshot are for its planned slot or later ones (a slow poll
            // may see several at once).
            if s.run_count > count {
                assert!(
                    last >= planned - 5,
                    "run {} started at {last}, before the slot {planned} planned before it",
                    s.run_count
                );
                if let Some(next) = next {
                    assert!(next > planned, "slot {planned} planned again ({next})");
                }
                checked += 1;
            }
        }
        if let Some(next) = next {
            prev = Some((s.run_count, next));
        }
        (checked >= 3).then_some(s)
    });
    assert!(s.state == "waiting" || s.state == "running", "{s:?}");
    // No run before the first planned slot.
    let starts = starts(&env);
    assert!(
        starts[0] >= planned,
        "ran at {} before its slot {planned}",
        starts[0]
    );

    // The latest slot run is recorded for catch_up: a whole second, not in the future.
    let record = wait_for("the slot record", DEADLINE, || {
        let text = read(&env.path("state/schedule/tick"));
        (!text.is_empty()).then_some(text)
    });
    let slot: i64 = record
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("record {record:?}"));
    assert_eq!(slot % 1000, 0, "recorded slot {slot}");
    assert!(slot <= now_ms(), "recorded slot {slot} in the future");
}

#[test]
fn jitter_delays_each_interval_start_within_the_jitter() {
    let env = Env::with_scripts(&[("jit", RECORD_STARTS, "    interval: 1s\n    jitter: 1s\n")]);
    let d = env.start();
    // The runner publishes its status once it has started; wait for that, then read it.
    let jit = d.wait_script("jit", "its first status", |s| s.jitter_ms.is_some());
    assert_eq!(jit.jitter_ms, Some(1000));
    // Each start plans the next one interval + [0, jitter] after it (both from one moment).
    let mut delays = BTreeSet::new();
    let mut seen = BTreeSet::new();
    wait_for(
        "3 starts with their next start planned",
        DEADLINE * 2,
        || {
            let s = d.script("jit");
            if let (Some(next), Some(last)) = (s.next_run.as_deref(), s.last_start.as_deref()) {
                let (next, last) = (ms(next), ms(last));
                let delay = next - last;
                assert!(
                    (1000..=2000).contains(&delay),
                    "next start {delay} ms after the last, outside [interval, interval + jitter]"
                );
                if seen.insert(last) {
                    delays.insert(delay);
                }
            }
            (seen.len() >= 3).then_some(())
        },
    );
    // Three draws of 1001 values that are all 0: one chance in 10^9.
    assert!(
        delays.iter().any(|&d| d > 1000),
        "no start was delayed: {delays:?}"
    );
    // The runs themselves started at least an interval apart (the daemon's start times).
    let seen: Vec<i64> = seen.into_iter().collect();
    for w in seen.windows(2) {
        assert!(
            w[1] - w[0] >= 1000 - 5,
            "starts {seen:?} closer than the interval"
        );
    }
}

#[test]
fn a_slot_that_comes_while_the_run_goes_on_is_skipped() {
    let env = Env::with_scripts(&[("slow", "sleep 1.5", "    schedule: \"* * * * * *\"\n")]);
    let d = env.start();
    let s = d.wait_script("slow", "two runs and skipped slots", |s| {
        s.run_count >= 2 && s.skipped_ticks >= 2
    });
    // Never two at once: the slots during a run are skipped, not queued.
    assert!(s.skipped_ticks >= s.run_count - 1, "{s:?}");
}

/// New Year 2020, UTC: a slot long past.
const OLD_SLOT: i64 = 1_577_836_800_000;

/// An env whose yearly script `nightly` last ran in 2020 (as its record says).
fn yearly(catch_up: bool) -> Env {
    let env = Env::with_scripts(&[(
        "nightly",
        "echo ran >> runs",
        &format!("    schedule: \"@yearly\"\n    timezone: UTC\n    catch_up: {catch_up}\n"),
    )]);
    fs::create_dir_all(env.path("state/schedule")).expect("state dir");
    fs::set_permissions(env.path("state"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(
        env.path("state/schedule/nightly"),
        format!("{OLD_SLOT} {}\n", OLD_SLOT + 7),
    )
    .expect("write the record");
    env
}

fn runs(env: &Env) -> usize {
    read(&env.path("runs")).lines().count()
}

#[test]
fn catch_up_runs_a_missed_slot_once_at_start() {
    let env = yearly(true);
    let d = env.start();
    // The run may write its line before the runner has published its start.
    wait_for("the catch-up run", DEADLINE, || {
        (runs(&env) == 1 && d.script("nightly").run_count == 1).then_some(())
    });
    assert_stays("exactly one run", Duration::from_millis(1500), || {
        runs(&env) == 1 && d.script("nightly").run_count == 1
    });
    let s = d.script("nightly");
    assert_eq!(s.catch_up, Some(true));
    // Its log says why it ran.
    let log = d.ctl_ok(&["logs", "nightly"]);
    assert!(
        log.contains("run 1 makes up for slot ") && log.contains("catch_up"),
        "{log}"
    );
    // Its next run is the next New Year.
    let next = ms(s.next_run.as_deref().expect("next run"));
    assert!(next > now_ms() && next % 86_400_000 == 0, "next run {next}");
    // The record now names the latest New Year, the slot that was made up for.
    let record = read(&env.path("state/schedule/nightly"));
    let slot: i64 = record
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("record {record:?}"));
    assert!(
        slot > OLD_SLOT && slot <= now_ms() && slot % 86_400_000 == 0,
        "recorded slot {slot}"
    );
    let daemon_log = d.log_text();
    drop(d);
    assert!(!daemon_log.contains("panicked"), "{daemon_log}");

    // Started again: that slot was run, nothing is missed.
    let d = env.start();
    assert_stays("no second catch-up", Duration::from_millis(1500), || {
        d.script("nightly").run_count == 0
    });
    assert_eq!(runs(&env), 1);
}

#[test]
fn without_catch_up_a_missed_slot_is_skipped() {
    let env = yearly(false);
    let d = env.start();
    assert_stays("no run at start", Duration::from_millis(1500), || {
        d.script("nightly").run_count == 0
    });
    assert_eq!(runs(&env), 0);
    assert_eq!(d.script("nightly").state, "waiting");
}

#[test]
fn switching_interval_to_schedule_is_next_run() {
    let env = Env::manual("");
    let entry = |settings: &str| {
        format!(
            "scripts:\n{}",
            env.script_entry("sw", RECORD_STARTS, settings)
        )
    };
    env.set_manual(&entry("    interval: 1h\n"));
    let d = env.start();
    d.wait_script("sw", "its first run at start", |s| s.run_count == 1);

    env.set_manual(&entry("    schedule: \"* * * * * *\"\n    timezone: UTC\n"));
    let (code, reload) = d.reload(&[]);
    assert_eq!(code, 0, "{reload:?}");
    let impact = |field: &str| {
        reload
            .changes
            .iter()
            .find(|c| c.field == field)
            .map(|c| c.impact.clone())
    };
    assert_eq!(
        impact("interval").as_deref(),
        Some("next-run"),
        "{reload:?}"
    );
    assert_eq!(
        impact("schedule").as_deref(),
        Some("next-run"),
        "{reload:?}"
    );
    // Rescheduled at once: an hour away before, the next second now.
    let s = d.wait_script("sw", "runs on the schedule", |s| s.run_count >= 3);
    assert_eq!(s.kind, "periodic");
    assert_eq!(s.interval_ms, None);
}

#[test]
fn bad_schedules_are_errors_at_their_place() {
    let cases = [
        (
            "    interval: 1m\n    schedule: \"@daily\"\n",
            "scripts.a.schedule: schedule and interval are exclusive",
        ),
        (
            "    schedule: \"@daily\"\n    timezone: Mars/Olympus\n",
            "scripts.a.timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "    enabled: true\n    schedule: \"61 * * * *\"\n",
            "scripts.a.schedule: invalid cron expression \"61 * * * *\"",
        ),
    ];
    for (settings, want) in cases {
        let env = Env::new(&format!(
            "scripts:\n  a:\n    command: /bin/true\n{settings}"
        ));
        let r = env.check();
        assert_eq!(r.code, 3, "{settings}: {r:?}");
        // The error is at the key's line (the script's keys start on line 9).
        let line = r
            .stderr
            .lines()
            .chain(r.stdout.lines())
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no {want:?} in {r:?}"));
        assert!(line.contains("scriptd.yaml:10:"), "{line}");
    }
}
