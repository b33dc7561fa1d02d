//! One script section (or `defaults:`): its keys parsed into a [`Partial`], then the
//! effective [`ScriptConfig`] with `defaults` and the built-in defaults applied. Pure but
//! for the host checks: users and groups (`exec_context.rs`), and the directory and
//! program at the end of [`Validator::finish_script`].

use super::health::HealthPartial;
use super::{kind, Validator};
use crate::config::fields::{self, Applies, LOG_KEYS};
use crate::config::resource_limits::Limits;
use crate::config::{
    builtin, Backoff, CalendarConfig, CommandSpec, ExecContext, GroupId, LogConfig, Probe,
    RestartPolicy, ScriptConfig, StopSignal, Umask, UserId,
};
use crate::schedule::{Calendar, Zone};
use crate::units::format_duration;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Script fields as written, before defaults.
#[derive(Debug, Default, Clone)]
pub(super) struct Partial {
    /// The keys whose value parsed, as written.
    set: Vec<String>,
    /// `command` is written (even if it did not parse).
    command_given: bool,
    command: Option<CommandSpec>,
    interval: Option<Duration>,
    /// `interval` is written (even if it did not parse).
    interval_given: bool,
    timeout: Option<Duration>,
    enabled: Option<bool>,
    working_dir: Option<PathBuf>,
    env: Option<BTreeMap<String, String>>,
    max_log_lines: Option<u64>,
    restart: Option<RestartPolicy>,
    stop_signal: Option<StopSignal>,
    stop_grace: Option<Duration>,
    restart_delay: Option<Duration>,
    restart_delay_max: Option<Duration>,
    restart_reset_after: Option<Duration>,
    ready_after: Option<Duration>,
    log_max_bytes: Option<u64>,
    log_keep: Option<u32>,
    log_max_line_bytes: Option<u64>,
    health: HealthPartial,
    schedule: Option<Calendar>,
    /// `schedule` is written (even if it did not parse).
    schedule_given: bool,
    timezone: Option<Zone>,
    jitter: Option<Duration>,
    catch_up: Option<bool>,
    // `user`, `group`, `umask`, `limits` (validate/exec_context.rs)
    user: Option<UserId>,
    group: Option<GroupId>,
    umask: Option<Umask>,
    limits: Option<Limits>,
    /// The body was not a mapping (already reported).
    malformed: bool,
}

impl Validator<'_> {
    pub(super) fn partial(
        &mut self,
        value: &Value,
        path: &str,
        allowed: &[&str],
        base: &Path,
    ) -> Partial {
        let mut p = Partial {
            malformed: !value.is_mapping(),
            ..Partial::default()
        };
        if value.is_null() && path == "defaults" {
            return p;
        }
        for (key, val) in self.entries(value, path, allowed) {
            let at = format!("{path}.{key}");
            let errors_before = self.errors.len();
            match key.as_str() {
                "command" => {
                    p.command_given = true;
                    p.command = self.command(val, &at);
                }
                "interval" => {
                    p.interval_given = true;
                    p.interval = self.positive_duration(val, &at);
                }
                "timeout" => p.timeout = self.positive_duration(val, &at),
                "schedule" => {
                    p.schedule_given = true;
                    p.schedule = self.calendar(val, &at);
                }
                "timezone" => p.timezone = self.zone(val, &at),
                "jitter" => p.jitter = self.duration(val, &at),
                "catch_up" => p.catch_up = self.bool(val, &at),
                "enabled" => p.enabled = self.bool(val, &at),
                "working_dir" => p.working_dir = self.path(val, &at, base),
                "env" => p.env = self.env(val, &at),
                "max_log_lines" => p.max_log_lines = self.count(val, &at, 1),
                "restart" => {
                    p.restart = self.string(val, &at).and_then(|s| match s.as_str() {
                        "always" => Some(RestartPolicy::Always),
                        "on-failure" => Some(RestartPolicy::OnFailure),
                        "never" => Some(RestartPolicy::Never),
                        other => {
                            self.err(
                                &at,
                                format!(
                                    "invalid restart policy {other:?}; use always, on-failure \
                                     or never"
                                ),
                            );
                            None
                        }
                    })
                }
                "stop_signal" => {
                    let text = match val {
                        Value::Number(n) => Some(n.to_string()),
                        other => self.string(other, &at),
                    };
                    p.stop_signal = text.and_then(|t| {
                        let sig = StopSignal::parse(&t);
                        if sig.is_none() {
                            let names: Vec<_> = StopSignal::ALL.iter().map(|s| s.name()).collect();
                            self.err(
                                &at,
                                format!("unknown signal {t:?}; use one of {}", names.join(", ")),
                            );
                        }
                        sig
                    })
                }
                "stop_grace" => p.stop_grace = self.duration(val, &at),
                "restart_delay" => p.restart_delay = self.positive_duration(val, &at),
                "restart_delay_max" => p.restart_delay_max = self.positive_duration(val, &at),
                "restart_reset_after" => p.restart_reset_after = self.positive_duration(val, &at),
                "ready_after" => p.ready_after = self.duration(val, &at),
                "log" => {
                    for (lk, lv) in self.entries(val, &at, &LOG_KEYS) {
                        let lp = format!("{at}.{lk}");
                        match lk.as_str() {
                            "max_bytes" => p.log_max_bytes = self.size(lv, &lp),
                            "max_line_bytes" => p.log_max_line_bytes = self.size(lv, &lp),
                            "keep" => p.log_keep = self.count_u32(lv, &lp, 0),
                            _ => {}
                        }
                    }
                }
                "health" => p.health = self.health(val, &at),
                "user" => p.user = self.user(val, &at),
                "group" => p.group = self.group(val, &at),
                "umask" => p.umask = self.umask(val, &at),
                "limits" => p.limits = self.limits(val, &at),
                _ => {}
            }
            if self.errors.len() == errors_before {
                p.set.push(key);
            }
        }
        if let (Some(delay), Some(max)) = (p.restart_delay, p.restart_delay_max) {
            if max < delay {
                self.err(
                    &format!("{path}.restart_delay_max"),
                    delay_order_message(delay, max),
                );
            }
        }
        p
    }

    pub(super) fn command(&mut self, value: &Value, path: &str) -> Option<CommandSpec> {
        match value {
            Value::String(s) if s.trim().is_empty() => {
                self.err(path, "must not be empty".into());
                None
            }
            Value::String(s) => Some(CommandSpec::Shell(s.clone())),
            Value::Sequence(items) if items.is_empty() => {
                self.err(path, "must not be an empty list".into());
                None
            }
            Value::Sequence(items) => {
                let mut argv = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => argv.push(s.clone()),
                        Value::Number(n) => argv.push(n.to_string()),
                        Value::Bool(b) => argv.push(b.to_string()),
                        // The item's path only for an error: built for every argument, it
                        // was a tenth of a save's validation (issue 16).
                        other => self.err(
                            &format!("{path}[{i}]"),
                            format!("arguments must be strings, found {}", kind(other)),
                        ),
                    }
                }
                (argv.len() == items.len()).then_some(CommandSpec::Argv(argv))
            }
            other => {
                self.err(
                    path,
                    format!(
                        "expected a list of arguments or a shell command string, found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn env(&mut self, value: &Value, path: &str) -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in self.entries(value, path, &[]) {
            let p = format!("{path}.{k}");
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                self.err_key(&p, format!("invalid variable name {k:?}"));
                ok = false;
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.err(
                        &p,
                        format!("expected a string value, found {}", kind(other)),
                    );
                    ok = false;
                    continue;
                }
            };
            out.insert(k, text);
        }
        ok.then_some(out)
    }

    pub(super) fn finish_script(
        &mut self,
        name: &str,
        p: Partial,
        d: &Partial,
        base: &Path,
    ) -> Option<ScriptConfig> {
        let path = format!("scripts.{name}");
        let Some(command) = p.command.clone() else {
            // A script whose body failed to parse already has errors; only report a missing
            // command when the key is really absent.
            if !p.malformed && !p.command_given {
                self.err_key(&path, "missing required key \"command\"".into());
            }
            return None;
        };
        self.check_applies(&p, &path);
        let delay = p
            .restart_delay
            .or(d.restart_delay)
            .unwrap_or(builtin::RESTART_DELAY);
        // Without a max anywhere, the built-in one is raised to the delay: `restart_delay: 1m`
        // alone means a steady minute.
        let max_delay = p
            .restart_delay_max
            .or(d.restart_delay_max)
            .unwrap_or(builtin::RESTART_DELAY_MAX.max(delay));
        if max_delay < delay {
            // Both from the same section are reported where that section is parsed.
            let mixed = p.restart_delay.is_some() != p.restart_delay_max.is_some();
            if mixed {
                let key = if p.restart_delay_max.is_some() {
                    "restart_delay_max"
                } else {
                    "restart_delay"
                };
                self.err(
                    &format!("{path}.{key}"),
                    delay_order_message(delay, max_delay),
                );
            }
        }
        let periodic = p.interval.is_some() || p.schedule.is_some();
        let calendar = calendar_config(&p, d, periodic);
        let explicit_dir = p.working_dir.is_some();
        let working_dir = p
            .working_dir
            .or_else(|| d.working_dir.clone())
            .unwrap_or_else(|| base.to_path_buf());
        let mut env = d.env.clone().unwrap_or_default();
        env.extend(p.env.unwrap_or_default());
        let mut limits = d.limits.clone().unwrap_or_default();
        limits.0.extend(p.limits.unwrap_or_default().0);
        let exec = ExecContext {
            user: p.user.or_else(|| d.user.clone()),
            group: p.group.or_else(|| d.group.clone()),
            umask: p.umask.or(d.umask),
            limits,
        };
        let who = self.who(&exec);
        let dir_ok = self.check_dir(&working_dir, &path, explicit_dir, who.as_ref());
        // A periodic script takes no probe; one inherited from `defaults` is for services.
        let health = if p.interval_given {
            None
        } else {
            self.finish_health(&p.health, &d.health, &path)
        };
        let script = ScriptConfig {
            command,
            interval: p.interval,
            // A service has no timeout; one inherited from `defaults` is for periodic scripts.
            timeout: if periodic {
                p.timeout.or(d.timeout)
            } else {
                None
            },
            enabled: p.enabled.unwrap_or(true),
            working_dir,
            env,
            max_log_lines: p
                .max_log_lines
                .or(d.max_log_lines)
                .unwrap_or(builtin::MAX_LOG_LINES),
            restart: p.restart.or(d.restart).unwrap_or(RestartPolicy::OnFailure),
            stop_signal: p.stop_signal.or(d.stop_signal).unwrap_or(StopSignal::TERM),
            stop_grace: p.stop_grace.or(d.stop_grace).unwrap_or(builtin::STOP_GRACE),
            log: LogConfig {
                max_bytes: p
                    .log_max_bytes
                    .or(d.log_max_bytes)
                    .unwrap_or(LogConfig::default().max_bytes),
                keep: p
                    .log_keep
                    .or(d.log_keep)
                    .unwrap_or(LogConfig::default().keep),
                max_line_bytes: p
                    .log_max_line_bytes
                    .or(d.log_max_line_bytes)
                    .unwrap_or(LogConfig::default().max_line_bytes),
            },
            backoff: Backoff {
                delay,
                max_delay,
                reset_after: p
                    .restart_reset_after
                    .or(d.restart_reset_after)
                    .unwrap_or(builtin::RESTART_RESET_AFTER),
            },
            health,
            calendar,
            exec,
            ready_after: p
                .ready_after
                .or(d.ready_after)
                .unwrap_or(builtin::READY_AFTER),
        };
        if dir_ok {
            self.check_program(&script, &path, who.as_ref());
            if let Some(Probe::Exec(exec)) = script.health.as_ref().map(|h| &h.probe) {
                self.check_command(exec, &script, &format!("{path}.health.exec"), who.as_ref());
            }
        }
        Some(script)
    }
}

impl Validator<'_> {
    /// A `schedule` value: a cron expression croner parses and that matches some date.
    fn calendar(&mut self, value: &Value, path: &str) -> Option<Calendar> {
        let text = self.string(value, path)?;
        Calendar::parse(&text)
            .map_err(|e| self.err(path, e.to_string()))
            .ok()
    }

    /// A `timezone` value: a zone of the time zone database.
    fn zone(&mut self, value: &Value, path: &str) -> Option<Zone> {
        let name = self.string(value, path)?;
        Zone::named(&name)
            .map_err(|e| self.err(path, e.to_string()))
            .ok()
    }

    /// Keys written on a script they do not apply to (the field table's `applies`), and
    /// `schedule` next to `interval`.
    fn check_applies(&mut self, p: &Partial, path: &str) {
        let written = |key: &&str| p.set.iter().any(|s| s == key);
        if p.interval_given && p.schedule_given {
            self.err_key(
                &format!("{path}.schedule"),
                "schedule and interval are exclusive: a periodic script runs every interval or \
                 on a calendar schedule; remove one of them"
                    .into(),
            );
        }
        let periodic = p.interval_given || p.schedule_given;
        let kind_key = if p.interval.is_some() {
            Some("interval")
        } else {
            p.schedule.is_some().then_some("schedule")
        };
        if let Some(which) = kind_key {
            for key in fields::applying_to(Applies::Service).filter(written) {
                self.err_key(
                    &format!("{path}.{key}"),
                    format!(
                        "{key} applies only to services (scripts without {which}); remove it or \
                         remove {which}"
                    ),
                );
            }
        }
        if !periodic {
            for key in fields::applying_to(Applies::Periodic).filter(written) {
                let why = if key == "timeout" {
                    "; a service runs until it is stopped"
                } else {
                    ""
                };
                self.err_key(
                    &format!("{path}.{key}"),
                    format!(
                        "{key} applies only to periodic scripts (with interval or schedule){why}: \
                         remove {key} or add interval or schedule"
                    ),
                );
            }
        }
        if !p.schedule_given {
            for key in fields::applying_to(Applies::Calendar).filter(written) {
                self.err_key(
                    &format!("{path}.{key}"),
                    format!(
                        "{key} applies only to scripts with a schedule; remove {key} or add \
                         schedule"
                    ),
                );
            }
        }
    }
}

/// The calendar fields of a script: `defaults` fill in what it does not set, on the scripts
/// each applies to (`timezone` and `catch_up` with a schedule, `jitter` on periodic ones).
fn calendar_config(p: &Partial, d: &Partial, periodic: bool) -> CalendarConfig {
    let schedule = p.schedule.clone();
    let has_schedule = schedule.is_some();
    CalendarConfig {
        timezone: has_schedule.then(|| {
            p.timezone
                .clone()
                .or_else(|| d.timezone.clone())
                .unwrap_or_else(Zone::local)
        }),
        jitter: if periodic {
            p.jitter.or(d.jitter).filter(|j| !j.is_zero())
        } else {
            None
        },
        catch_up: has_schedule.then(|| p.catch_up.or(d.catch_up).unwrap_or(false)),
        schedule,
    }
}

fn delay_order_message(delay: Duration, max: Duration) -> String {
    format!(
        "restart_delay_max ({}) is shorter than restart_delay ({}); raise restart_delay_max or \
         lower restart_delay",
        format_duration(max),
        format_duration(delay)
    )
}
