//! Diff and impact classification: a table of single-field changes, and properties over
//! generated configs.

use proptest::prelude::*;
use scriptd_common::config::{
    Access, AccessRule, Backoff, CommandSpec, Config, DaemonConfig, LogConfig, RestartPolicy, Role,
    ScriptConfig, StopSignal, Subject,
};
use scriptd_common::diff::{apply, diff_script, plan, Impact, Outcome, ScriptPlan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn daemon() -> DaemonConfig {
    DaemonConfig {
        socket: "/run/s.sock".into(),
        state_dir: "/var/lib/s".into(),
        log_dir: "/var/log/s".into(),
        debounce: Duration::from_millis(50),
        watch: true,
        history_limit: 100,
        access: Access::default(),
    }
}

fn script() -> ScriptConfig {
    ScriptConfig {
        command: CommandSpec::Argv(vec!["/bin/true".into()]),
        interval: Some(Duration::from_secs(60)),
        timeout: Some(Duration::from_secs(10)),
        enabled: true,
        working_dir: PathBuf::from("/srv"),
        env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
        max_log_lines: 100,
        restart: RestartPolicy::OnFailure,
        stop_signal: StopSignal::TERM,
        stop_grace: Duration::from_secs(5),
        log: LogConfig::default(),
        backoff: Backoff::default(),
    }
}

fn config(scripts: &[(&str, ScriptConfig)]) -> Config {
    Config {
        daemon: daemon(),
        scripts: scripts
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect(),
    }
}

#[test]
fn each_field_has_its_impact() {
    type Edit = fn(&mut ScriptConfig);
    let cases: Vec<(&str, Edit, &str, Impact)> = vec![
        ("disable", |s| s.enabled = false, "enabled", Impact::Stop),
        (
            "interval",
            |s| s.interval = Some(Duration::from_secs(30)),
            "interval",
            Impact::NextRun,
        ),
        (
            "periodic to service",
            |s| s.interval = None,
            "interval",
            Impact::Restart,
        ),
        (
            "timeout",
            |s| s.timeout = Some(Duration::from_secs(1)),
            "timeout",
            Impact::NextRun,
        ),
        (
            "max_log_lines",
            |s| s.max_log_lines = 5,
            "max_log_lines",
            Impact::Live,
        ),
        ("log.keep", |s| s.log.keep = 9, "log.keep", Impact::Live),
        (
            "log.max_bytes",
            |s| s.log.max_bytes = 1,
            "log.max_bytes",
            Impact::Live,
        ),
        (
            "stop_grace",
            |s| s.stop_grace = Duration::from_secs(1),
            "stop_grace",
            Impact::Live,
        ),
        (
            "command",
            |s| s.command = CommandSpec::Shell("x".into()),
            "command",
            Impact::Restart,
        ),
        (
            "working_dir",
            |s| s.working_dir = "/tmp".into(),
            "working_dir",
            Impact::Restart,
        ),
        (
            "env value",
            |s| {
                s.env.insert("A".into(), "2".into());
            },
            "env.A",
            Impact::Restart,
        ),
        (
            "env added",
            |s| {
                s.env.insert("B".into(), "2".into());
            },
            "env.B",
            Impact::Restart,
        ),
        (
            "stop_signal",
            |s| s.stop_signal = StopSignal::INT,
            "stop_signal",
            Impact::Restart,
        ),
        (
            "restart",
            |s| s.restart = RestartPolicy::Always,
            "restart",
            Impact::Restart,
        ),
    ];
    for (name, edit, field, impact) in cases {
        let old = script();
        let mut new = script();
        edit(&mut new);
        let changes = diff_script("s", &old, &new);
        assert_eq!(changes.len(), 1, "{name}: {changes:?}");
        assert_eq!(changes[0].field, field, "{name}");
        assert_eq!(changes[0].impact, impact, "{name}");
        assert_eq!(changes[0].outcome, Outcome::Applied, "{name}");
    }
    let mut disabled = script();
    disabled.enabled = false;
    let enable = diff_script("s", &disabled, &script());
    assert_eq!(enable[0].impact, Impact::Start);
    assert_eq!(
        (enable[0].old.as_deref(), enable[0].new.as_deref()),
        (Some("false"), Some("true"))
    );
}

#[test]
fn added_removed_and_scheduled() {
    let mut changed = script();
    changed.command = CommandSpec::Shell("new".into());
    let old = config(&[("keep", script()), ("gone", script()), ("busy", script())]);
    let new = config(&[("keep", script()), ("busy", changed), ("fresh", script())]);
    let p = plan(&old, &new, &|name| name == "busy");
    let rows: Vec<_> = p
        .changes
        .iter()
        .map(|c| (c.script.as_str(), c.field.as_str(), c.impact, c.outcome))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("busy", "command", Impact::Restart, Outcome::Scheduled),
            ("fresh", "*", Impact::Start, Outcome::Applied),
            ("gone", "*", Impact::Stop, Outcome::Applied),
        ]
    );
    assert!(p.rejected.is_none());
    assert!(matches!(p.scripts.get("gone"), Some(ScriptPlan::Removed)));
    assert!(!p.scripts.contains_key("keep"));
}

#[test]
fn daemon_change_rejects_everything_and_names_the_key() {
    let old = config(&[("a", script())]);
    let mut new = config(&[("a", script()), ("b", script())]);
    new.daemon.log_dir = "/elsewhere".into();
    let p = plan(&old, &new, &|_| false);
    let reason = p.rejected.expect("rejected");
    assert!(reason.contains("daemon.log_dir"), "{reason}");
    assert!(p.changes.iter().all(|c| c.outcome == Outcome::Rejected));
    let d = p
        .changes
        .iter()
        .find(|c| c.field == "daemon.log_dir")
        .expect("daemon row");
    assert_eq!(d.impact, Impact::DaemonRestart);
    assert_eq!(d.new.as_deref(), Some("/elsewhere"));
}

#[test]
fn access_change_is_a_daemon_restart() {
    let old = config(&[("a", script())]);
    let mut new = old.clone();
    new.daemon.access = Access(vec![AccessRule {
        subject: Subject::User {
            uid: 1000,
            name: Some("alice".into()),
        },
        role: Role::Operate,
    }]);
    let p = plan(&old, &new, &|_| false);
    let reason = p.rejected.expect("rejected");
    assert!(reason.contains("daemon.access"), "{reason}");
    let d = p
        .changes
        .iter()
        .find(|c| c.field == "daemon.access")
        .expect("daemon.access row");
    assert_eq!(d.impact, Impact::DaemonRestart);
    assert_eq!(d.outcome, Outcome::Rejected);
    assert_eq!(d.old.as_deref(), Some("[]"));
    assert_eq!(
        d.new.as_deref(),
        Some(r#"["user alice (uid 1000): operate"]"#)
    );
}

fn arb_script() -> impl Strategy<Value = ScriptConfig> {
    (
        prop::sample::select(vec!["/bin/true", "/bin/sh", "echo hi"]),
        prop::option::of(1u64..5),
        prop::option::of(1u64..5),
        any::<bool>(),
        prop::sample::select(vec!["/srv", "/tmp"]),
        prop::collection::btree_map("[A-C]", "[0-2]", 0..3),
        1u64..4,
        prop::sample::select(vec![
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]),
        prop::sample::select(StopSignal::ALL.to_vec()),
        1u64..3,
        1u32..3,
    )
        .prop_map(
            |(cmd, interval, timeout, enabled, wd, env, lines, restart, sig, grace, keep)| {
                ScriptConfig {
                    command: if cmd.starts_with('/') {
                        CommandSpec::Argv(vec![cmd.into()])
                    } else {
                        CommandSpec::Shell(cmd.into())
                    },
                    interval: interval.map(Duration::from_secs),
                    timeout: timeout.map(Duration::from_secs),
                    enabled,
                    working_dir: wd.into(),
                    env,
                    max_log_lines: lines,
                    restart,
                    stop_signal: sig,
                    stop_grace: Duration::from_secs(grace),
                    log: LogConfig {
                        keep,
                        ..LogConfig::default()
                    },
                    backoff: Backoff::default(),
                }
            },
        )
}

fn arb_config() -> impl Strategy<Value = Config> {
    prop::collection::btree_map("[a-e]", arb_script(), 0..5).prop_map(|scripts| Config {
        daemon: daemon(),
        scripts,
    })
}

proptest! {
    #[test]
    fn plan_against_itself_is_empty(c in arb_config()) {
        let p = plan(&c, &c, &|_| true);
        prop_assert!(p.is_empty());
        prop_assert!(p.scripts.is_empty());
        prop_assert!(p.rejected.is_none());
    }

    #[test]
    fn unchanged_scripts_never_appear(a in arb_config(), b in arb_config()) {
        let p = plan(&a, &b, &|_| false);
        for (name, cfg) in &a.scripts {
            if b.scripts.get(name) == Some(cfg) {
                prop_assert!(!p.scripts.contains_key(name), "{} is unchanged but planned", name);
                prop_assert!(p.changes.iter().all(|c| &c.script != name));
            } else {
                prop_assert!(p.changes.iter().any(|c| &c.script == name), "{} changed but has no row", name);
            }
        }
    }

    #[test]
    fn applying_the_plan_yields_the_new_config(a in arb_config(), b in arb_config()) {
        let p = plan(&a, &b, &|_| false);
        prop_assert_eq!(apply(&a, &p, &b.daemon), b);
    }

    #[test]
    fn scheduled_only_for_restart_of_running_periodic(a in arb_config(), b in arb_config()) {
        let p = plan(&a, &b, &|_| true);
        for c in &p.changes {
            if c.outcome == Outcome::Scheduled {
                prop_assert_eq!(c.impact, Impact::Restart);
                prop_assert!(a.scripts.get(&c.script).is_some_and(ScriptConfig::is_periodic));
            }
        }
    }
}
