//! Diff and impact classification: a table of single-field changes, and properties over
//! generated pairs of configs (the new one a mutation of the old one: some scripts kept,
//! some changed in a few fields, some removed, some added, sometimes the daemon section).

use proptest::prelude::*;
use scriptd_common::config::{
    Access, AccessRule, Backoff, CommandSpec, Config, DaemonConfig, ExecContext, LogConfig,
    RestartPolicy, Role, ScriptConfig, StopSignal, Subject,
};
use scriptd_common::diff::{
    apply_except_restart, diff_script, plan, script_fields, Change, Impact, Outcome, ScriptPlan,
};
use scriptd_common::units::parse_duration;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
        metrics: None,
        listen: None,
        source: None,
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
        health: None,
        calendar: Default::default(),
        exec: ExecContext::default(),
        ready_after: Duration::from_secs(1),
    }
}

fn config(scripts: &[(&str, ScriptConfig)]) -> Config {
    Config {
        daemon: daemon(),
        scripts: scripts
            .iter()
            .map(|(n, s)| ((*n).to_owned(), Arc::new(s.clone())))
            .collect(),
        reload: Default::default(),
    }
}

#[test]
fn share_unchanged_takes_the_older_copy_of_equal_scripts_only() {
    let changed = ScriptConfig {
        enabled: false,
        ..script()
    };
    let old = config(&[
        ("same", script()),
        ("changed", script()),
        ("gone", script()),
    ]);
    let mut new = config(&[
        ("same", script()),
        ("changed", changed),
        ("added", script()),
    ]);
    new.share_unchanged(&old);
    assert!(Arc::ptr_eq(&new.scripts["same"], &old.scripts["same"]));
    assert!(!Arc::ptr_eq(
        &new.scripts["changed"],
        &old.scripts["changed"]
    ));
    assert!(!new.scripts["changed"].enabled);
    assert!(new.scripts.contains_key("added") && !new.scripts.contains_key("gone"));
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
fn an_empty_env_has_no_rows_and_absent_differs_from_empty() {
    let mut old = script();
    old.env.clear();
    let mut new = old.clone();
    new.env.insert("B".into(), String::new());
    // One row per variable; the empty map itself is no field.
    let added = diff_script("s", &old, &new);
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(
        (
            added[0].field.as_str(),
            added[0].old.as_deref(),
            added[0].new.as_deref()
        ),
        ("env.B", None, Some(""))
    );
    let mut newer = new.clone();
    newer.env.insert("B".into(), "x".into());
    let changed = diff_script("s", &new, &newer);
    assert_eq!(
        (changed[0].old.as_deref(), changed[0].new.as_deref()),
        (Some(""), Some("x"))
    );
    let removed = diff_script("s", &newer, &old);
    assert_eq!(
        (
            removed.len(),
            removed[0].old.as_deref(),
            removed[0].new.as_deref()
        ),
        (1, Some("x"), None)
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
fn a_reload_section_change_is_live_and_applies() {
    let old = config(&[("s", script())]);
    let mut new = old.clone();
    new.reload.verify = Duration::from_secs(2);
    new.reload.on_failure = scriptd_common::config::OnFailure::Rollback;
    let p = plan(&old, &new, &|_| false);
    assert_eq!(p.rejected, None);
    assert!(p.scripts.is_empty(), "no script touched: {:?}", p.scripts);
    let rows: Vec<_> = p
        .changes
        .iter()
        .map(|c| {
            (
                c.script.as_str(),
                c.field.as_str(),
                c.old.as_deref(),
                c.new.as_deref(),
                c.impact,
                c.outcome,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "",
                "reload.on_failure",
                Some("keep"),
                Some("rollback"),
                Impact::Live,
                Outcome::Applied
            ),
            (
                "",
                "reload.verify",
                Some("30s"),
                Some("2s"),
                Impact::Live,
                Outcome::Applied
            ),
        ]
    );
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

/// Number of script fields [`mix`] knows.
const FIELDS: u32 = 13;

fn arb_script() -> impl Strategy<Value = ScriptConfig> {
    (
        prop::sample::select(vec!["/bin/true", "/bin/sh", "echo hi", ""]),
        prop::option::of(1u64..5),
        prop::option::of(1u64..5),
        any::<bool>(),
        prop::sample::select(vec!["/srv", "/tmp"]),
        prop::collection::btree_map("[A-C]", "[0-2]?", 0..3),
        1u64..4,
        prop::sample::select(vec![
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]),
        prop::sample::select(StopSignal::ALL.to_vec()),
        1u64..3,
        (1u32..3, 1u64..3, 1u64..3),
    )
        .prop_map(
            |(
                cmd,
                interval,
                timeout,
                enabled,
                wd,
                env,
                lines,
                restart,
                sig,
                grace,
                (keep, mb, delay),
            )| {
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
                        max_bytes: mb << 20,
                        ..LogConfig::default()
                    },
                    backoff: Backoff {
                        delay: Duration::from_millis(500 * delay),
                        ..Backoff::default()
                    },
                    health: None,
                    calendar: Default::default(),
                    exec: ExecContext::default(),
                    ready_after: Duration::from_millis(250 * delay),
                }
            },
        )
}

/// `a` with the fields whose bit is set in `mask` taken from `b`.
fn mix(a: &ScriptConfig, b: &ScriptConfig, mask: u32) -> ScriptConfig {
    let take = |i: u32| mask & (1 << i) != 0;
    let mut out = a.clone();
    if take(0) {
        out.command = b.command.clone();
    }
    if take(1) {
        out.interval = b.interval;
    }
    if take(2) {
        out.timeout = b.timeout;
    }
    if take(3) {
        out.enabled = b.enabled;
    }
    if take(4) {
        out.working_dir = b.working_dir.clone();
    }
    if take(5) {
        out.env = b.env.clone();
    }
    if take(6) {
        out.max_log_lines = b.max_log_lines;
    }
    if take(7) {
        out.restart = b.restart;
    }
    if take(8) {
        out.stop_signal = b.stop_signal;
    }
    if take(9) {
        out.stop_grace = b.stop_grace;
    }
    if take(10) {
        out.log = b.log;
    }
    if take(11) {
        out.backoff = b.backoff;
    }
    if take(12) {
        out.ready_after = b.ready_after;
    }
    out
}

/// What a new config does to one old script.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Remove,
    /// Some fields (mask bits) taken from another script; possibly all equal.
    Change(Box<ScriptConfig>, u32),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => Just(Edit::Keep),
        1 => Just(Edit::Remove),
        4 => (arb_script(), 1u32..(1 << FIELDS)).prop_map(|(s, m)| Edit::Change(Box::new(s), m)),
    ]
}

/// The daemon section, changed in one key a quarter of the time.
fn arb_daemon() -> impl Strategy<Value = DaemonConfig> {
    prop_oneof![
        6 => Just(daemon()),
        1 => Just(DaemonConfig { log_dir: "/elsewhere".into(), ..daemon() }),
        1 => Just(DaemonConfig { debounce: Duration::from_millis(20), ..daemon() }),
        1 => Just(DaemonConfig { watch: false, ..daemon() }),
        1 => Just(DaemonConfig { metrics: "127.0.0.1:9464".parse().ok(), ..daemon() }),
    ]
}

fn arb_config() -> impl Strategy<Value = Config> {
    prop::collection::btree_map("[a-e]", arb_script(), 0..5).prop_map(|scripts| Config {
        daemon: daemon(),
        scripts: scripts.into_iter().map(|(n, s)| (n, Arc::new(s))).collect(),
        reload: Default::default(),
    })
}

/// An old config and a new one derived from it.
fn arb_pair() -> impl Strategy<Value = (Config, Config)> {
    arb_config()
        .prop_flat_map(|a| {
            let n = a.scripts.len();
            (
                Just(a),
                prop::collection::vec(arb_edit(), n),
                prop::collection::btree_map("[f-h]", arb_script(), 0..3),
                arb_daemon(),
            )
        })
        .prop_map(|(a, edits, added, daemon)| {
            let mut b = Config {
                daemon,
                scripts: BTreeMap::new(),
                reload: a.reload,
            };
            for ((name, cfg), edit) in a.scripts.iter().zip(edits) {
                match edit {
                    Edit::Keep => {
                        b.scripts.insert(name.clone(), cfg.clone());
                    }
                    Edit::Remove => {}
                    Edit::Change(other, mask) => {
                        b.scripts
                            .insert(name.clone(), Arc::new(mix(cfg, &other, mask)));
                    }
                }
            }
            b.scripts
                .extend(added.into_iter().map(|(n, s)| (n, Arc::new(s))));
            (a, b)
        })
}

fn duration(text: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

fn number<T: std::str::FromStr>(field: &str, text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("{field}: not a number: {text:?}"))
}

/// Sets one script field from its change row's new value (`None`: the field is gone).
fn set_script_field(s: &mut ScriptConfig, field: &str, new: Option<&str>) {
    if let Some(var) = field.strip_prefix("env.") {
        match new {
            Some(v) => s.env.insert(var.to_owned(), v.to_owned()),
            None => s.env.remove(var),
        };
        return;
    }
    let optional = ["interval", "timeout"];
    let Some(text) = new else {
        assert!(
            optional.contains(&field),
            "{field} removed, but it is never absent"
        );
        match field {
            "interval" => s.interval = None,
            _ => s.timeout = None,
        }
        return;
    };
    match field {
        "command" => {
            s.command = match serde_json::from_str::<Vec<String>>(text) {
                Ok(argv) => CommandSpec::Argv(argv),
                Err(_) => CommandSpec::Shell(text.to_owned()),
            }
        }
        "interval" => s.interval = Some(duration(text)),
        "timeout" => s.timeout = Some(duration(text)),
        "enabled" => s.enabled = number(field, text),
        "working_dir" => s.working_dir = text.into(),
        "max_log_lines" => s.max_log_lines = number(field, text),
        "restart" => {
            s.restart = match text {
                "always" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure,
                "never" => RestartPolicy::Never,
                other => panic!("restart {other:?}"),
            }
        }
        "stop_signal" => {
            s.stop_signal = StopSignal::parse(text).unwrap_or_else(|| panic!("signal {text:?}"))
        }
        "stop_grace" => s.stop_grace = duration(text),
        "log.keep" => s.log.keep = number(field, text),
        "log.max_bytes" => s.log.max_bytes = number(field, text),
        "log.max_line_bytes" => s.log.max_line_bytes = number(field, text),
        "restart_delay" => s.backoff.delay = duration(text),
        "restart_delay_max" => s.backoff.max_delay = duration(text),
        "restart_reset_after" => s.backoff.reset_after = duration(text),
        "ready_after" => s.ready_after = duration(text),
        other => panic!("a change row for a field the test does not know: {other}"),
    }
}

/// Sets one daemon key from its change row's new value.
fn set_daemon_field(d: &mut DaemonConfig, field: &str, new: Option<&str>) {
    if field == "daemon.metrics" {
        // Off (None) has no row value: the row is an addition or a removal.
        d.metrics = new.map(|t| t.parse().unwrap_or_else(|e| panic!("address {t:?}: {e}")));
        return;
    }
    let text = new.unwrap_or_else(|| panic!("{field} removed, but it is never absent"));
    match field {
        "daemon.socket" => d.socket = text.into(),
        "daemon.state_dir" => d.state_dir = text.into(),
        "daemon.log_dir" => d.log_dir = text.into(),
        "daemon.debounce" => d.debounce = duration(text),
        "daemon.watch" => d.watch = number(field, text),
        "daemon.history_limit" => d.history_limit = number(field, text),
        other => panic!("a change row for a daemon key the test does not know: {other}"),
    }
}

/// The new config as the change rows describe it: `old` with every row's new value set.
/// An added script's row carries only its command; its config comes from the plan.
fn rebuild(old: &Config, p: &scriptd_common::diff::Plan) -> Config {
    let mut out = old.clone();
    for c in &p.changes {
        if c.script.is_empty() {
            set_daemon_field(&mut out.daemon, &c.field, c.new.as_deref());
        } else if c.field == "*" {
            match (&c.old, &c.new, p.scripts.get(&c.script)) {
                (None, Some(_), Some(ScriptPlan::Added(cfg))) => {
                    out.scripts.insert(c.script.clone(), cfg.clone());
                }
                (Some(_), None, Some(ScriptPlan::Removed)) => {
                    out.scripts.remove(&c.script);
                }
                other => panic!("whole-script row {c:?} does not match its plan: {other:?}"),
            }
        } else {
            let s = out
                .scripts
                .get_mut(&c.script)
                .unwrap_or_else(|| panic!("a field row of an unknown script: {c:?}"));
            set_script_field(Arc::make_mut(s), &c.field, c.new.as_deref());
        }
    }
    out
}

/// The rows of one script.
fn rows<'a>(p: &'a scriptd_common::diff::Plan, name: &'a str) -> impl Iterator<Item = &'a Change> {
    p.changes.iter().filter(move |c| c.script == name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_against_itself_is_empty(c in arb_config()) {
        let p = plan(&c, &c, &|_| true);
        prop_assert!(p.is_empty());
        prop_assert!(p.scripts.is_empty());
        prop_assert!(p.rejected.is_none());
    }

    #[test]
    fn unchanged_scripts_never_appear((a, b) in arb_pair(), busy in any::<bool>()) {
        let p = plan(&a, &b, &|_| busy);
        for (name, cfg) in &a.scripts {
            if b.scripts.get(name) == Some(cfg) {
                prop_assert!(!p.scripts.contains_key(name), "{} is unchanged but planned", name);
                prop_assert!(rows(&p, name).next().is_none(), "{} is unchanged but has rows", name);
            } else {
                prop_assert!(p.scripts.contains_key(name), "{} changed but is not planned", name);
                prop_assert!(rows(&p, name).next().is_some(), "{} changed but has no row", name);
            }
        }
    }

    #[test]
    fn applying_the_rows_yields_the_new_config((a, b) in arb_pair()) {
        let p = plan(&a, &b, &|_| false);
        prop_assert_eq!(rebuild(&a, &p), b.clone());
        // Every row says what really was there before, and something changed.
        for c in &p.changes {
            prop_assert_ne!(&c.old, &c.new, "{:?}", c);
            if c.field != "*" && !c.script.is_empty() {
                let before = script_fields(&a.scripts[&c.script]).remove(&c.field);
                prop_assert_eq!(&c.old, &before, "{:?}", c);
            }
        }
        // A changed script's runner gets exactly the new config.
        for (name, sp) in &p.scripts {
            match sp {
                ScriptPlan::Changed(cfg) | ScriptPlan::Added(cfg) => {
                    prop_assert_eq!(Some(cfg), b.scripts.get(name));
                }
                ScriptPlan::Removed => prop_assert!(!b.scripts.contains_key(name)),
            }
        }
    }

    #[test]
    fn a_daemon_change_rejects_the_whole_plan((a, b) in arb_pair()) {
        let p = plan(&a, &b, &|_| false);
        let daemon_rows: Vec<&Change> = p.changes.iter().filter(|c| c.script.is_empty()).collect();
        if a.daemon == b.daemon {
            prop_assert!(daemon_rows.is_empty());
            prop_assert!(p.rejected.is_none());
            prop_assert!(p.changes.iter().all(|c| c.outcome != Outcome::Rejected));
        } else {
            prop_assert!(!daemon_rows.is_empty());
            let reason = p.rejected.clone().unwrap_or_default();
            for c in &daemon_rows {
                prop_assert_eq!(c.impact, Impact::DaemonRestart);
                prop_assert!(c.field.starts_with("daemon."));
                prop_assert!(reason.contains(&c.field), "{} not named in {}", c.field, reason);
            }
            prop_assert!(p.changes.iter().all(|c| c.outcome == Outcome::Rejected));
        }
    }

    #[test]
    fn scheduled_only_for_restart_of_running_periodic((a, b) in arb_pair()) {
        let p = plan(&a, &b, &|_| true);
        for c in &p.changes {
            if c.outcome == Outcome::Scheduled {
                prop_assert_eq!(c.impact, Impact::Restart);
                prop_assert!(a.scripts.get(&c.script).is_some_and(|s| s.is_periodic()));
            }
        }
    }

    /// What a runner does while a periodic run is in progress: the plan's non-restart rows
    /// apply now, which leaves exactly its restart rows to wait for the run's end.
    #[test]
    fn applying_the_non_restart_rows_leaves_only_the_restart_rows((a, b) in arb_pair()) {
        let p = plan(&a, &b, &|_| true);
        for (name, sp) in &p.scripts {
            let ScriptPlan::Changed(new) = sp else { continue };
            let planned: Vec<Change> = rows(&p, name).cloned().collect();
            let now = apply_except_restart(&a.scripts[name], new, &planned);
            let left = diff_script(name, &now, new);
            for c in &left {
                prop_assert_eq!(c.impact, Impact::Restart, "{:?} left after applying {:?}", c, planned);
            }
            let restart_rows: Vec<&str> = planned
                .iter()
                .filter(|c| c.impact == Impact::Restart)
                .map(|c| c.field.as_str())
                .collect();
            let left_rows: Vec<&str> = left.iter().map(|c| c.field.as_str()).collect();
            prop_assert_eq!(left_rows, restart_rows);
        }
    }
}
