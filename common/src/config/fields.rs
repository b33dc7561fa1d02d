//! The one table of script fields: how each is written, its type and default, whether
//! `defaults:` may set it, which kind of script takes it, and what changing it does.
//!
//! Validation takes its key lists from here (unknown keys and their "did you mean" hints,
//! which keys `defaults:` may set, which only services take); the diff takes the impact of
//! every change from here, and applies the non-restart ones with [`Field::copy`]. The
//! README's reference and impact tables are checked against it by a test
//! (`common/tests/config/fields.rs`), and the `SCRIPT FIELDS` section of `scriptd(8)` is
//! rendered from it ([`man_section`]; `daemon/tests/check.rs` checks the shipped page). A
//! new field is one row here, its parsing in `validate/script.rs`, and its member of
//! [`ScriptConfig`].

use super::resource_limits::Limit;
use super::ScriptConfig;
use crate::diff::Impact;
use std::sync::LazyLock;

/// What a field's value is, as the README's reference table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An argv list or a shell command string.
    Command,
    /// A humantime duration (`250ms`, `5m`).
    Duration,
    /// `true` or `false`.
    Bool,
    /// A path, relative ones resolved against the main file's directory.
    Path,
    /// A map of environment variables (one row per variable in a diff).
    Map,
    /// A whole number.
    Int,
    /// One of a few words (`restart`).
    Enum,
    /// A signal name or number.
    Signal,
    /// A byte size (`4096`, `64KiB`).
    Size,
    /// A plain-HTTP URL (`http://127.0.0.1:8080/healthz`).
    Url,
    /// A TCP address, `host:port`.
    Address,
    /// A cron expression (`30 3 * * *`, `@daily`).
    Cron,
    /// An IANA time zone name (`Europe/Berlin`).
    TimeZone,
    /// A user name or uid.
    User,
    /// A group name or gid.
    Group,
    /// An octal file mode creation mask, as a string (`"0027"`).
    Umask,
    /// A map of resource limits (one row per limit in a diff).
    Limits,
}

impl Kind {
    /// The word the README's type column starts with.
    pub fn doc(self) -> &'static str {
        match self {
            Self::Command => "list or string",
            Self::Duration => "duration",
            Self::Bool => "bool",
            Self::Path => "path",
            Self::Map => "map",
            Self::Int => "int",
            Self::Enum => "enum",
            Self::Signal => "signal",
            Self::Size => "size",
            Self::Url => "URL",
            Self::Address => "host:port",
            Self::Cron => "cron expression",
            Self::TimeZone => "time zone",
            Self::User => "user",
            Self::Group => "group",
            Self::Umask => "octal string",
            Self::Limits => "map of limits",
        }
    }
}

/// Which scripts take a field; on the other kind it is a validation error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Services and periodic scripts.
    Both,
    /// Only scripts without `interval`.
    Service,
    /// Only periodic scripts (with `interval` or `schedule`).
    Periodic,
    /// Only scripts with a `schedule`.
    Calendar,
}

/// What a change of a field does (DESIGN.md "Change impact").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRule {
    /// Applied at once, no process touched.
    Live,
    /// Used from the next run (or the next restart) on.
    NextRun,
    /// Graceful restart of the script.
    Restart,
    /// `enabled`: started when it becomes true, stopped when it becomes false.
    StartStop,
    /// `interval`, `schedule`: next-run while the script stays periodic (also when it
    /// switches from one to the other); restart when it is added or removed and the script
    /// changes kind.
    Schedule,
}

impl ChangeRule {
    /// The impact of one change from `old` to `new` (rendered values; `None`: absent).
    pub fn impact(self, old: Option<&str>, new: Option<&str>) -> Impact {
        match self {
            Self::Live => Impact::Live,
            Self::NextRun => Impact::NextRun,
            Self::Restart => Impact::Restart,
            Self::StartStop if new == Some("false") => Impact::Stop,
            Self::StartStop => Impact::Start,
            Self::Schedule if old.is_none() || new.is_none() => Impact::Restart,
            Self::Schedule => Impact::NextRun,
        }
    }
}

/// One script field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// As written in YAML; nested ones with a dot (`log.max_bytes`), `env.*` for the
    /// variables of `env` (each its own row in a diff).
    pub name: &'static str,
    /// Value type.
    pub kind: Kind,
    /// The default as the README writes it (`required`, `none`, `10MiB`).
    pub default: &'static str,
    /// Whether `defaults:` may set it.
    pub inheritable: bool,
    /// Which scripts take it.
    pub applies: Applies,
    /// What a change does.
    pub rule: ChangeRule,
    /// Sets this field of `to` as it is in `from`; for `env.*`, only the variable the diff
    /// field (`env.NAME`) names.
    pub copy: fn(to: &mut ScriptConfig, from: &ScriptConfig, field: &str),
}

impl Field {
    /// The key a script section writes it under (`log` for `log.keep`, `env` for `env.*`).
    pub fn key(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// The key inside its section for nested fields (`keep` for `log.keep`).
    pub fn subkey(&self) -> Option<&'static str> {
        self.name.split_once('.').map(|(_, sub)| sub)
    }
}

const fn row(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    inheritable: bool,
    applies: Applies,
    rule: ChangeRule,
    copy: fn(&mut ScriptConfig, &ScriptConfig, &str),
) -> Field {
    Field {
        name,
        kind,
        default,
        inheritable,
        applies,
        rule,
        copy,
    }
}

use Applies::{Both, Calendar, Periodic, Service};
use ChangeRule::{Live, NextRun, Restart, Schedule, StartStop};

/// Every script field, in the order the unknown-key message lists them.
#[rustfmt::skip]
pub const FIELDS: &[Field] = &[
    //   name                   kind            default                 defaults? applies   change
    row("command",             Kind::Command,  "required",             false, Both,     Restart,   |t, f, _| t.command = f.command.clone()),
    row("interval",            Kind::Duration, "none (service)",       false, Both,     Schedule,  |t, f, _| t.interval = f.interval),
    row("timeout",             Kind::Duration, "none",                 true,  Periodic, NextRun,   |t, f, _| t.timeout = f.timeout),
    row("enabled",             Kind::Bool,     "true",                 false, Both,     StartStop, |t, f, _| t.enabled = f.enabled),
    row("working_dir",         Kind::Path,     "the config directory", true,  Both,     Restart,   |t, f, _| t.working_dir = f.working_dir.clone()),
    row("env.*",               Kind::Map,      "{}",                   true,  Both,     Restart,   copy_env_var),
    row("max_log_lines",       Kind::Int,      "10000",                true,  Both,     Live,      |t, f, _| t.max_log_lines = f.max_log_lines),
    row("restart",             Kind::Enum,     "on-failure",           true,  Service,  Restart,   |t, f, _| t.restart = f.restart),
    row("restart_delay",       Kind::Duration, "500ms",                true,  Service,  NextRun,   |t, f, _| t.backoff.delay = f.backoff.delay),
    row("restart_delay_max",   Kind::Duration, "30s",                  true,  Service,  NextRun,   |t, f, _| t.backoff.max_delay = f.backoff.max_delay),
    row("restart_reset_after", Kind::Duration, "10s",                  true,  Service,  NextRun,   |t, f, _| t.backoff.reset_after = f.backoff.reset_after),
    row("ready_after",         Kind::Duration, "1s",                   true,  Service,  NextRun,   |t, f, _| t.ready_after = f.ready_after),
    row("stop_signal",         Kind::Signal,   "TERM",                 true,  Both,     Restart,   |t, f, _| t.stop_signal = f.stop_signal),
    row("stop_grace",          Kind::Duration, "10s",                  true,  Both,     Live,      |t, f, _| t.stop_grace = f.stop_grace),
    row("log.max_bytes",       Kind::Size,     "10MiB",                true,  Both,     Live,      |t, f, _| t.log.max_bytes = f.log.max_bytes),
    row("log.keep",            Kind::Int,      "3",                    true,  Both,     Live,      |t, f, _| t.log.keep = f.log.keep),
    row("log.max_line_bytes",  Kind::Size,     "64KiB",                true,  Both,     Live,      |t, f, _| t.log.max_line_bytes = f.log.max_line_bytes),
    // The health probe: exactly one of exec | http | tcp, and its timing. A change restarts
    // the probe, never the service, so every row copies the whole section.
    row("health.exec",         Kind::Command,  "none",                 true,  Service,  Live,      copy_health),
    row("health.http",         Kind::Url,      "none",                 true,  Service,  Live,      copy_health),
    row("health.tcp",          Kind::Address,  "none",                 true,  Service,  Live,      copy_health),
    row("health.interval",     Kind::Duration, "10s",                  true,  Service,  Live,      copy_health),
    row("health.timeout",      Kind::Duration, "1s",                   true,  Service,  Live,      copy_health),
    row("health.failures",     Kind::Int,      "3",                    true,  Service,  Live,      copy_health),
    row("health.start_period", Kind::Duration, "0s",                   true,  Service,  Live,      copy_health),
    row("health.restart",      Kind::Bool,     "true",                 true,  Service,  Live,      copy_health),
    // Calendar schedules (README "Calendar schedules").
    row("schedule",            Kind::Cron,     "none",                 false, Both,     Schedule,  |t, f, _| t.calendar.schedule = f.calendar.schedule.clone()),
    row("timezone",            Kind::TimeZone, "local",                true,  Calendar, NextRun,   |t, f, _| t.calendar.timezone = f.calendar.timezone.clone()),
    row("jitter",              Kind::Duration, "none",                 true,  Periodic, NextRun,   |t, f, _| t.calendar.jitter = f.calendar.jitter),
    row("catch_up",            Kind::Bool,     "false",                true,  Calendar, Live,      |t, f, _| t.calendar.catch_up = f.calendar.catch_up),
    row("user",                Kind::User,     "the daemon's",         true,  Both,     Restart,   |t, f, _| t.exec.user = f.exec.user.clone()),
    row("group",               Kind::Group,    "the user's primary group", true, Both,  Restart,   |t, f, _| t.exec.group = f.exec.group.clone()),
    row("umask",               Kind::Umask,    "the daemon's",         true,  Both,     Restart,   |t, f, _| t.exec.umask = f.exec.umask),
    row("limits.*",            Kind::Limits,   "the daemon's",         true,  Both,     Restart,   copy_limit),
];

fn copy_health(to: &mut ScriptConfig, from: &ScriptConfig, _: &str) {
    to.health = from.health.clone();
}

fn copy_env_var(to: &mut ScriptConfig, from: &ScriptConfig, field: &str) {
    let Some(var) = field.strip_prefix("env.") else {
        to.env = from.env.clone();
        return;
    };
    match from.env.get(var) {
        Some(value) => to.env.insert(var.to_owned(), value.clone()),
        None => to.env.remove(var),
    };
}

fn copy_limit(to: &mut ScriptConfig, from: &ScriptConfig, field: &str) {
    let Some(limit) = field.strip_prefix("limits.").and_then(Limit::parse) else {
        to.exec.limits = from.exec.limits.clone();
        return;
    };
    match from.exec.limits.0.get(&limit) {
        Some(value) => to.exec.limits.0.insert(limit, *value),
        None => to.exec.limits.0.remove(&limit),
    };
}

/// The row of a field as a diff names it (`log.keep`, `env.PATH`, `limits.nofile`,
/// `restart_delay`): its own, else its section's `SECTION.*` row.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name).or_else(|| {
        let (section, _) = name.split_once('.')?;
        FIELDS
            .iter()
            .find(|f| f.name.strip_suffix(".*") == Some(section))
    })
}

/// Distinct top-level keys of `rows`, in table order.
fn keys<'a>(rows: impl Iterator<Item = &'a Field>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for f in rows {
        if !out.contains(&f.key()) {
            out.push(f.key());
        }
    }
    out
}

/// The keys a script section takes.
pub static SCRIPT_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| keys(FIELDS.iter()));

/// The keys the `defaults:` section takes.
pub static DEFAULT_KEYS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| keys(FIELDS.iter().filter(|f| f.inheritable)));

/// The keys of a script's `log:` section.
pub static LOG_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    FIELDS
        .iter()
        .filter(|f| f.key() == "log")
        .filter_map(Field::subkey)
        .collect()
});

/// The keys of a script's `health:` section.
pub static HEALTH_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    FIELDS
        .iter()
        .filter(|f| f.key() == "health")
        .filter_map(Field::subkey)
        .collect()
});

/// The keys only services take, in table order (each once).
pub fn service_only() -> impl Iterator<Item = &'static str> {
    applying_to(Applies::Service)
}

/// The keys of the fields that apply to `which` scripts only, in table order (each once).
pub fn applying_to(which: Applies) -> impl Iterator<Item = &'static str> {
    keys(FIELDS.iter().filter(move |f| f.applies == which)).into_iter()
}

impl Applies {
    /// Which scripts take it, in words.
    pub fn doc(self) -> &'static str {
        match self {
            Self::Both => "every script",
            Self::Service => "services only",
            Self::Periodic => "periodic scripts only",
            Self::Calendar => "scripts with a schedule only",
        }
    }
}

impl ChangeRule {
    /// What a change does, in the impact table's words.
    pub fn doc(self) -> &'static str {
        match self {
            Self::Live => "live (applied at once, no process touched)",
            Self::NextRun => "next-run (used from the next run or restart on)",
            Self::Restart => "restart (services now, periodic scripts at their next run)",
            Self::StartStop => "start when it becomes true, stop when it becomes false",
            Self::Schedule => {
                "next-run (rescheduled from the last start, also when switching between \
                 interval and schedule); restart when added or removed"
            }
        }
    }
}

/// The `SCRIPT FIELDS` section of `scriptd(8)`, in roff, rendered from [`FIELDS`] so that
/// the man page cannot drift from what validation and the diff do.
pub fn man_section() -> String {
    let mut out = String::from(
        ".SH \"SCRIPT FIELDS\"\nEach key of a script under \\fBscripts:\\fR (the README has the \
         full reference). Fields marked inheritable may also be set under \\fBdefaults:\\fR.\n",
    );
    for f in FIELDS {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR ({}; default: {}; {}{})\nChange: {}.\n",
            f.name.replace('-', "\\-"),
            f.kind.doc(),
            f.default.replace('-', "\\-"),
            f.applies.doc(),
            if f.inheritable { "; inheritable" } else { "" },
            f.rule.doc().replace('-', "\\-"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_section_names_every_field() {
        let man = man_section();
        for f in FIELDS {
            assert!(
                man.contains(&format!("\\fB{}\\fR", f.name.replace('-', "\\-"))),
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn key_lists_come_from_the_table() {
        assert_eq!(
            SCRIPT_KEYS.as_slice(),
            [
                "command",
                "interval",
                "timeout",
                "enabled",
                "working_dir",
                "env",
                "max_log_lines",
                "restart",
                "restart_delay",
                "restart_delay_max",
                "restart_reset_after",
                "ready_after",
                "stop_signal",
                "stop_grace",
                "log",
                "health",
                "schedule",
                "timezone",
                "jitter",
                "catch_up",
                "user",
                "group",
                "umask",
                "limits",
            ]
        );
        assert!(!DEFAULT_KEYS.contains(&"command"));
        assert!(!DEFAULT_KEYS.contains(&"interval"));
        assert!(!DEFAULT_KEYS.contains(&"schedule"));
        assert!(DEFAULT_KEYS.contains(&"timezone"));
        assert!(!DEFAULT_KEYS.contains(&"enabled"));
        assert_eq!(LOG_KEYS.as_slice(), ["max_bytes", "keep", "max_line_bytes"]);
        assert_eq!(
            service_only().collect::<Vec<_>>(),
            [
                "restart",
                "restart_delay",
                "restart_delay_max",
                "restart_reset_after",
                "ready_after",
                "health"
            ]
        );
        assert_eq!(
            HEALTH_KEYS.as_slice(),
            [
                "exec",
                "http",
                "tcp",
                "interval",
                "timeout",
                "failures",
                "start_period",
                "restart"
            ]
        );
    }

    #[test]
    fn rows_by_diff_field() {
        assert_eq!(field("env.PATH").map(|f| f.name), Some("env.*"));
        assert_eq!(field("limits.nofile").map(|f| f.name), Some("limits.*"));
        assert_eq!(field("user").map(|f| f.rule), Some(Restart));
        assert_eq!(field("log.keep").map(|f| f.rule), Some(Live));
        assert!(field("log").is_none());
        assert!(field("nope").is_none());
    }
}
