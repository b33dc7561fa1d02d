//! Calendar schedules in the config: `schedule`, `timezone`, `jitter`, `catch_up` validated
//! at their `file:line:col`, their effective values with `defaults`, and the impact of their
//! changes (interval ↔ schedule keeps a script periodic).

use crate::support::validate;
use scriptd_common::diff::{diff_script, script_fields, Impact};
use std::time::Duration;

/// The script `s` with `settings` (lines under it).
fn script(settings: &str) -> String {
    format!("scripts:\n  s:\n    command: [\"/bin/true\"]\n{settings}")
}

#[test]
fn bad_calendar_keys_are_errors_at_their_place() {
    // (what, settings of script s, the errors' beginnings)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "schedule next to interval",
            "    interval: 1m\n    schedule: \"@daily\"\n",
            &["scriptd.yaml:5:5: scripts.s.schedule: schedule and interval are exclusive"],
        ),
        (
            "a cron expression with four fields",
            "    schedule: \"* * * *\"\n",
            &["scriptd.yaml:4:15: scripts.s.schedule: invalid cron expression \"* * * *\""],
        ),
        (
            "a schedule that is no string",
            "    schedule: 5\n",
            &["scriptd.yaml:4:15: scripts.s.schedule: expected a string"],
        ),
        (
            "a date that never comes",
            "    schedule: \"0 0 30 2 *\"\n",
            &["scriptd.yaml:4:15: scripts.s.schedule: cron expression \"0 0 30 2 *\" never matches"],
        ),
        (
            "an unknown time zone",
            "    schedule: \"@daily\"\n    timezone: Europe/Atlantis\n",
            &["scriptd.yaml:5:15: scripts.s.timezone: unknown time zone \"Europe/Atlantis\""],
        ),
        (
            "timezone without schedule",
            "    interval: 1m\n    timezone: UTC\n",
            &["scriptd.yaml:5:5: scripts.s.timezone: timezone applies only to scripts with a \
               schedule"],
        ),
        (
            "catch_up on a service",
            "    catch_up: true\n",
            &["scriptd.yaml:4:5: scripts.s.catch_up: catch_up applies only to scripts with a \
               schedule"],
        ),
        (
            "jitter on a service",
            "    jitter: 5s\n",
            &["scriptd.yaml:4:5: scripts.s.jitter: jitter applies only to periodic scripts"],
        ),
        (
            "restart on a calendar script",
            "    schedule: \"@daily\"\n    restart: always\n",
            &["scriptd.yaml:5:5: scripts.s.restart: restart applies only to services (scripts \
               without schedule); remove it or remove schedule"],
        ),
    ];
    for (what, settings, want) in cases {
        let errors = match validate(&script(settings)) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), want.len(), "{what}: {errors}");
        for (line, want) in lines.iter().zip(want.iter()) {
            assert!(
                line.starts_with(want),
                "{what}:\n  got  {line}\n  want {want}…"
            );
        }
    }
}

#[test]
fn calendar_fields_with_their_defaults() {
    let cfg = validate(
        "defaults:\n  timezone: America/New_York\n  jitter: 10m\n  catch_up: true\n  timeout: 1h\n\
         scripts:\n  nightly:\n    command: [\"/bin/true\"]\n    schedule: \"30 3 * * *\"\n    \
         timezone: Europe/Berlin\n  hourly:\n    command: [\"/bin/true\"]\n    schedule: \
         \"@hourly\"\n    jitter: 0s\n    catch_up: false\n  every:\n    command: \
         [\"/bin/true\"]\n    interval: 5m\n  web:\n    command: [\"/bin/true\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fields = |name: &str| script_fields(&cfg.scripts[name]);
    let get = |name: &str, key: &str| fields(name).get(key).cloned();

    assert!(cfg.scripts["nightly"].is_periodic());
    assert_eq!(get("nightly", "schedule").as_deref(), Some("30 3 * * *"));
    assert_eq!(get("nightly", "timezone").as_deref(), Some("Europe/Berlin"));
    assert_eq!(get("nightly", "jitter").as_deref(), Some("10m"));
    assert_eq!(get("nightly", "catch_up").as_deref(), Some("true"));
    assert_eq!(get("nightly", "timeout").as_deref(), Some("1h"));

    assert_eq!(
        get("hourly", "timezone").as_deref(),
        Some("America/New_York")
    );
    assert_eq!(get("hourly", "jitter"), None, "jitter: 0s is no jitter");
    assert_eq!(get("hourly", "catch_up").as_deref(), Some("false"));

    // An interval script takes jitter from defaults, not the schedule-only keys.
    assert_eq!(
        cfg.scripts["every"].calendar.jitter,
        Some(Duration::from_secs(600))
    );
    for key in ["schedule", "timezone", "catch_up"] {
        assert_eq!(get("every", key), None, "{key}");
    }
    // A service takes none of them.
    for key in ["schedule", "timezone", "jitter", "catch_up", "timeout"] {
        assert_eq!(get("web", key), None, "{key}");
    }
}

#[test]
fn no_timezone_is_the_local_one() {
    let cfg = validate(&script("    schedule: \"@daily\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let s = &cfg.scripts["s"];
    assert_eq!(
        s.calendar.timezone.as_ref().map(|z| z.name()),
        Some("local")
    );
    assert_eq!(s.calendar.catch_up, Some(false));
}

#[test]
fn impacts_of_calendar_changes() {
    let one = |settings: &str| {
        validate(&script(settings))
            .unwrap_or_else(|e| panic!("{e}"))
            .scripts
            .remove("s")
            .expect("script s")
    };
    // (from, to, every changed field with its impact)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, Impact)]);
    let cases: &[Case] = &[
        (
            "    interval: 1m\n",
            "    schedule: \"@daily\"\n",
            &[
                ("catch_up", Impact::Live),
                ("interval", Impact::NextRun),
                ("schedule", Impact::NextRun),
                ("timezone", Impact::NextRun),
            ],
        ),
        (
            "    schedule: \"@daily\"\n",
            "    schedule: \"@hourly\"\n",
            &[("schedule", Impact::NextRun)],
        ),
        (
            "",
            "    schedule: \"@daily\"\n",
            &[
                ("catch_up", Impact::Live),
                ("schedule", Impact::Restart),
                ("timezone", Impact::NextRun),
            ],
        ),
        (
            "    schedule: \"@daily\"\n",
            "    schedule: \"@daily\"\n    timezone: UTC\n    jitter: 1m\n    catch_up: true\n",
            &[
                ("catch_up", Impact::Live),
                ("jitter", Impact::NextRun),
                ("timezone", Impact::NextRun),
            ],
        ),
    ];
    for (from, to, want) in cases {
        let changes = diff_script("s", &one(from), &one(to));
        let got: Vec<(&str, Impact)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.impact))
            .collect();
        assert_eq!(&got, want, "{from:?} → {to:?}");
    }
}
