//! Text → [`Config`], reporting every error at once with file, line, column and key path.

use super::positions::{Pos, Positions};
use super::{
    access, builtin, Access, AccessRule, Backoff, CommandSpec, Config, ConfigError, ConfigErrors,
    ConfigSource, DaemonConfig, LogConfig, RestartPolicy, Role, ScriptConfig, StopSignal, Subject,
};
use crate::units::{format_duration, parse_duration, parse_size};
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOP_KEYS: &[&str] = &["daemon", "include", "defaults", "scripts"];
const INCLUDED_KEYS: &[&str] = &["scripts"];
const DAEMON_KEYS: &[&str] = &[
    "socket",
    "state_dir",
    "log_dir",
    "debounce",
    "watch",
    "history_limit",
    "access",
];
const ACCESS_KEYS: &[&str] = &["user", "group", "role"];
const DEFAULT_KEYS: &[&str] = &[
    "timeout",
    "max_log_lines",
    "stop_grace",
    "stop_signal",
    "restart",
    "restart_delay",
    "restart_delay_max",
    "restart_reset_after",
    "log",
    "working_dir",
    "env",
];
const SCRIPT_KEYS: &[&str] = &[
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
    "stop_signal",
    "stop_grace",
    "log",
];
/// Keys that only services (scripts without `interval`) take.
const SERVICE_ONLY_KEYS: &[&str] = &[
    "restart",
    "restart_delay",
    "restart_delay_max",
    "restart_reset_after",
];
const LOG_KEYS: &[&str] = &["max_bytes", "keep", "max_line_bytes"];

/// Validates every file of `source` and builds the effective config, or returns every
/// error found.
pub fn validate(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    let base = source.base_dir().to_path_buf();
    let mut v = Validator {
        errors: Vec::new(),
        file: String::new(),
        text: "",
        pos: std::cell::OnceCell::new(),
        stats: HashMap::new(),
    };
    let mut daemon = None;
    let mut defaults = Partial::default();
    // name -> (file, partial script)
    let mut scripts: BTreeMap<String, (String, Partial)> = BTreeMap::new();

    for (index, file) in source.files.iter().enumerate() {
        v.set_file(&file.name, &file.content);
        let doc = match super::parse::document(&file.content) {
            Ok(doc) => doc,
            Err(e) => {
                v.errors.push(ConfigError {
                    file: file.name.clone(),
                    line: e.line,
                    column: e.column,
                    path: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if doc.is_null() {
            continue; // an empty file is an empty config
        }
        let top = v.entries(&doc, "", if index == 0 { TOP_KEYS } else { INCLUDED_KEYS });
        for (key, value) in top {
            match key.as_str() {
                "daemon" => daemon = Some(v.daemon(value, &base)),
                "include" => v.include(value),
                "defaults" => defaults = v.partial(value, "defaults", DEFAULT_KEYS, &base),
                "scripts" => {
                    if value.is_null() {
                        continue;
                    }
                    for (name, body) in v.entries(value, "scripts", &[]) {
                        let path = format!("scripts.{name}");
                        if !valid_name(&name) {
                            v.err_key(
                                &path,
                                format!(
                                    "invalid script name {name:?}: use letters, digits, '_', '-' \
                                     and '.', starting with a letter or digit, at most 64 \
                                     characters"
                                ),
                            );
                        }
                        let partial = v.partial(body, &path, SCRIPT_KEYS, &base);
                        if let Some((first_file, _)) = scripts.get(&name) {
                            let first = source
                                .files
                                .iter()
                                .find(|f| f.name == *first_file)
                                .map(|f| Positions::of(&f.content).key(&path))
                                .unwrap_or_default();
                            let msg = format!(
                                "script {name:?} is already defined at {first_file}:{}:{}; \
                                 script names must be unique across files",
                                first.line, first.column
                            );
                            v.err_key(&path, msg);
                        } else {
                            scripts.insert(name, (file.name.clone(), partial));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let daemon = daemon.unwrap_or_else(|| default_daemon(&base));
    let mut out = BTreeMap::new();
    for (name, (file, partial)) in scripts {
        if v.file != file {
            if let Some(f) = source.files.iter().find(|f| f.name == file) {
                v.set_file(&f.name, &f.content);
            }
        }
        if let Some(script) = v.finish_script(&name, partial, &defaults, &base) {
            out.insert(name, script);
        }
    }

    // The second pass (per-script checks) runs in name order; report in file order.
    let file_index = |name: &str| source.files.iter().position(|f| f.name == name);
    v.errors
        .sort_by_key(|e| (file_index(&e.file).unwrap_or(usize::MAX), e.line, e.column));

    if v.errors.is_empty() {
        Ok(Config {
            daemon,
            scripts: out,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn default_daemon(base: &Path) -> DaemonConfig {
    DaemonConfig {
        socket: base.join(builtin::SOCKET),
        state_dir: base.join(builtin::STATE_DIR),
        log_dir: base.join(builtin::LOG_DIR),
        debounce: builtin::DEBOUNCE,
        watch: true,
        history_limit: builtin::HISTORY_LIMIT,
        access: Access::default(),
    }
}

/// Script fields as written, before defaults.
#[derive(Debug, Default, Clone)]
struct Partial {
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
    log_max_bytes: Option<u64>,
    log_keep: Option<u32>,
    log_max_line_bytes: Option<u64>,
    /// The body was not a mapping (already reported).
    malformed: bool,
}

/// What validation needs to know of a path on disk.
#[derive(Debug, Clone, Copy)]
enum Stat {
    Missing,
    Dir,
    /// A regular file and its permission bits.
    File(u32),
    Other,
}

/// Positions are computed only when the first error of a file needs one: a valid config is
/// parsed once. Paths are looked up once per validation: a thousand scripts in one
/// directory running one program cost two `stat`s, not two thousand.
struct Validator<'s> {
    text: &'s str,
    errors: Vec<ConfigError>,
    file: String,
    pos: std::cell::OnceCell<Positions>,
    stats: HashMap<PathBuf, Stat>,
}

impl<'s> Validator<'s> {
    fn stat(&mut self, path: &Path) -> Stat {
        if let Some(s) = self.stats.get(path) {
            return *s;
        }
        let s = match std::fs::metadata(path) {
            Err(_) => Stat::Missing,
            Ok(m) if m.is_dir() => Stat::Dir,
            Ok(m) if m.is_file() => Stat::File(m.permissions().mode()),
            Ok(_) => Stat::Other,
        };
        self.stats.insert(path.to_path_buf(), s);
        s
    }

    fn set_file(&mut self, name: &str, text: &'s str) {
        self.file = name.to_owned();
        self.text = text;
        self.pos = std::cell::OnceCell::new();
    }

    fn positions(&self) -> &Positions {
        self.pos.get_or_init(|| Positions::of(self.text))
    }

    fn push(&mut self, at: Pos, path: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            path: path.to_owned(),
            message,
        });
    }

    fn err(&mut self, path: &str, message: String) {
        let at = self.positions().value(path);
        self.push(at, path, message);
    }

    fn err_key(&mut self, path: &str, message: String) {
        let at = self.positions().key(path);
        self.push(at, path, message);
    }

    /// The entries of a mapping with string keys; unknown keys (when `allowed` is not
    /// empty) are reported with a "did you mean" hint and skipped.
    fn entries<'a>(
        &mut self,
        value: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Vec<(String, &'a Value)> {
        let Some(map) = value.as_mapping() else {
            let what = if path.is_empty() { "the file " } else { "" };
            self.err(
                path,
                format!(
                    "{what}must be a mapping (key: value), found {}",
                    kind(value)
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, val) in map {
            let key = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.err(path, format!("keys must be strings, found {}", kind(other)));
                    continue;
                }
            };
            if !allowed.is_empty() && !allowed.contains(&key.as_str()) {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                self.err_key(&full, unknown_key(&key, allowed));
                continue;
            }
            out.push((key, val));
        }
        out
    }

    fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn duration(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => {
                self.err(
                    path,
                    format!("invalid duration {n}: add a unit, e.g. \"{n}s\" or \"{n}ms\""),
                );
                return None;
            }
            other => {
                self.err(
                    path,
                    format!("expected a duration such as \"30s\", found {}", kind(other)),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn positive_duration(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let d = self.duration(value, path)?;
        if d.is_zero() {
            self.err(path, "must be greater than zero".into());
            return None;
        }
        Some(d)
    }

    fn size(&mut self, value: &Value, path: &str) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("invalid size {n}")),
            Value::String(s) => parse_size(s),
            other => Err(format!(
                "expected a size such as \"10MiB\", found {}",
                kind(other)
            )),
        };
        match parsed {
            Ok(0) => {
                self.err(path, "must be greater than zero".into());
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn count(&mut self, value: &Value, path: &str, min: u64) -> Option<u64> {
        match value.as_u64() {
            Some(n) if n >= min => Some(n),
            _ => {
                self.err(
                    path,
                    format!(
                        "expected a whole number of at least {min}, found {}",
                        render(value)
                    ),
                );
                None
            }
        }
    }

    fn bool(&mut self, value: &Value, path: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    path,
                    format!("expected true or false, found {}", render(other)),
                );
                None
            }
        }
    }

    fn path(&mut self, value: &Value, path: &str, base: &Path) -> Option<PathBuf> {
        let s = self.string(value, path)?;
        if s.is_empty() {
            self.err(path, "must not be empty".into());
            return None;
        }
        Some(base.join(s))
    }

    fn daemon(&mut self, value: &Value, base: &Path) -> DaemonConfig {
        let mut d = default_daemon(base);
        if value.is_null() {
            return d;
        }
        for (key, val) in self.entries(value, "daemon", DAEMON_KEYS) {
            let p = format!("daemon.{key}");
            match key.as_str() {
                "socket" => d.socket = self.path(val, &p, base).unwrap_or(d.socket),
                "state_dir" => d.state_dir = self.path(val, &p, base).unwrap_or(d.state_dir),
                "log_dir" => d.log_dir = self.path(val, &p, base).unwrap_or(d.log_dir),
                "debounce" => d.debounce = self.duration(val, &p).unwrap_or(d.debounce),
                "watch" => d.watch = self.bool(val, &p).unwrap_or(d.watch),
                "history_limit" => {
                    d.history_limit = self
                        .count(val, &p, 1)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(d.history_limit)
                }
                "access" => d.access = self.access(val, &p),
                _ => {}
            }
        }
        d
    }

    /// `daemon.access`: a list of `{ user: NAME|UID, role }` / `{ group: NAME|GID, role }`.
    fn access(&mut self, value: &Value, path: &str) -> Access {
        let items = match value {
            Value::Null => return Access::default(),
            Value::Sequence(items) => items,
            other => {
                self.err(
                    path,
                    format!(
                        "expected a list of entries such as {{ user: alice, role: operate }} or \
                         {{ group: ops, role: read }}, found {}",
                        kind(other)
                    ),
                );
                return Access::default();
            }
        };
        let mut rules: Vec<(String, AccessRule)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let errors_before = self.errors.len();
            let (mut subject, mut role) = (None, None);
            let (mut named, mut has_role) = (false, false);
            let entries = self.entries(item, &at, ACCESS_KEYS);
            // A misspelt key was reported with a hint; do not also call it missing.
            let misspelt = self.errors.len() > errors_before;
            for (key, val) in entries {
                let p = format!("{at}.{key}");
                if key == "role" {
                    has_role = true;
                    role = self.string(val, &p).and_then(|s| {
                        let role = Role::parse(&s);
                        if role.is_none() {
                            self.err(
                                &p,
                                format!(
                                    "invalid role {s:?}; use read (status, logs, history, \
                                     events, dry runs) or operate (everything)"
                                ),
                            );
                        }
                        role
                    });
                } else if named {
                    self.err_key(
                        &p,
                        "an entry names either a user or a group, not both; give the other \
                         its own entry"
                            .into(),
                    );
                } else {
                    named = true;
                    subject = self.subject(val, &p, key == "group");
                }
            }
            if !item.is_mapping() {
                continue; // reported by entries()
            }
            if !named && !misspelt {
                self.err(&at, "missing \"user\" or \"group\"".into());
            }
            if !has_role && !misspelt {
                self.err(&at, "missing \"role\" (read or operate)".into());
            }
            let (Some(subject), Some(role)) = (subject, role) else {
                continue;
            };
            let same = |s: &Subject| match (s, &subject) {
                (Subject::User { uid: a, .. }, Subject::User { uid: b, .. }) => a == b,
                (Subject::Group { gid: a, .. }, Subject::Group { gid: b, .. }) => a == b,
                _ => false,
            };
            if let Some((first, _)) = rules.iter().find(|(_, r)| same(&r.subject)) {
                let key = match subject {
                    Subject::User { .. } => "user",
                    Subject::Group { .. } => "group",
                };
                self.err(
                    &format!("{at}.{key}"),
                    format!(
                        "{subject} is already listed at {first}; give each user or group one \
                         entry"
                    ),
                );
                continue;
            }
            rules.push((at, AccessRule { subject, role }));
        }
        Access(rules.into_iter().map(|(_, r)| r).collect())
    }

    /// A user or group given by name or numeric id.
    fn subject(&mut self, value: &Value, path: &str, group: bool) -> Option<Subject> {
        let id_kind = if group { "gid" } else { "uid" };
        let (id, name) = match value {
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(id) => (id, None),
                None => {
                    self.err(path, format!("invalid {id_kind} {n}"));
                    return None;
                }
            },
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<u32>() {
                    Ok(id) => (id, None),
                    Err(_) => {
                        self.err(path, format!("invalid {id_kind} {s}"));
                        return None;
                    }
                }
            }
            Value::String(s) => match access::lookup(s, group) {
                Ok(id) => (id, Some(s.clone())),
                Err(e) => {
                    self.err(path, e);
                    return None;
                }
            },
            other => {
                self.err(
                    path,
                    format!(
                        "expected a {} name or a numeric {id_kind}, found {}",
                        if group { "group" } else { "user" },
                        kind(other)
                    ),
                );
                return None;
            }
        };
        Some(if group {
            Subject::Group { gid: id, name }
        } else {
            Subject::User { uid: id, name }
        })
    }

    fn include(&mut self, value: &Value) {
        let items: Vec<(String, &Value)> = match value {
            Value::String(_) => vec![("include".into(), value)],
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("include[{i}]"), v))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                self.err(
                    "include",
                    format!("expected a glob or a list of globs, found {}", kind(other)),
                );
                Vec::new()
            }
        };
        for (path, item) in items {
            if let Some(s) = self.string(item, &path) {
                if let Err(e) = glob::Pattern::new(&s) {
                    self.err(&path, format!("invalid glob {s:?}: {e}"));
                }
            }
        }
    }

    fn partial(&mut self, value: &Value, path: &str, allowed: &[&str], base: &Path) -> Partial {
        let mut p = Partial {
            malformed: !value.is_mapping(),
            ..Partial::default()
        };
        if value.is_null() && path == "defaults" {
            return p;
        }
        for (key, val) in self.entries(value, path, allowed) {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "command" => p.command = self.command(val, &at),
                "interval" => {
                    p.interval_given = true;
                    p.interval = self.positive_duration(val, &at);
                }
                "timeout" => p.timeout = self.positive_duration(val, &at),
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
                "log" => {
                    for (lk, lv) in self.entries(val, &at, LOG_KEYS) {
                        let lp = format!("{at}.{lk}");
                        match lk.as_str() {
                            "max_bytes" => p.log_max_bytes = self.size(lv, &lp),
                            "max_line_bytes" => p.log_max_line_bytes = self.size(lv, &lp),
                            "keep" => {
                                p.log_keep =
                                    self.count(lv, &lp, 0).and_then(|n| u32::try_from(n).ok())
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
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

    fn command(&mut self, value: &Value, path: &str) -> Option<CommandSpec> {
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
                    let p = format!("{path}[{i}]");
                    match item {
                        Value::String(s) => argv.push(s.clone()),
                        Value::Number(n) => argv.push(n.to_string()),
                        Value::Bool(b) => argv.push(b.to_string()),
                        other => self.err(
                            &p,
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

    fn env(&mut self, value: &Value, path: &str) -> Option<BTreeMap<String, String>> {
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

    fn finish_script(
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
            if !p.malformed
                && !self
                    .errors
                    .iter()
                    .any(|e| e.path.starts_with(&format!("{path}.command")))
            {
                self.err_key(&path, "missing required key \"command\"".into());
            }
            return None;
        };
        if p.interval.is_some() {
            let given = [
                p.restart.is_some(),
                p.restart_delay.is_some(),
                p.restart_delay_max.is_some(),
                p.restart_reset_after.is_some(),
            ];
            for (key, _) in SERVICE_ONLY_KEYS.iter().zip(given).filter(|(_, g)| *g) {
                self.err_key(
                    &format!("{path}.{key}"),
                    format!(
                        "{key} applies only to services (scripts without interval); remove it \
                         or remove interval"
                    ),
                );
            }
        }
        if !p.interval_given && p.timeout.is_some() {
            self.err_key(
                &format!("{path}.timeout"),
                "timeout applies only to periodic scripts (with interval); a service runs until \
                 it is stopped: remove timeout or add interval"
                    .into(),
            );
        }
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
        let explicit_dir = p.working_dir.is_some();
        let working_dir = p
            .working_dir
            .or_else(|| d.working_dir.clone())
            .unwrap_or_else(|| base.to_path_buf());
        let mut env = d.env.clone().unwrap_or_default();
        env.extend(p.env.unwrap_or_default());
        let dir_ok = self.check_dir(&working_dir, &path, explicit_dir);
        let script = ScriptConfig {
            command,
            interval: p.interval,
            // A service has no timeout; one inherited from `defaults` is for periodic scripts.
            timeout: if p.interval.is_some() {
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
        };
        if dir_ok {
            self.check_program(&script, &path);
        }
        Some(script)
    }

    fn check_dir(&mut self, dir: &Path, script_path: &str, explicit: bool) -> bool {
        let at = format!("{script_path}.working_dir");
        let problem = match self.stat(dir) {
            Stat::Dir => return true,
            Stat::Missing => "does not exist",
            Stat::File(_) | Stat::Other => "is not a directory",
        };
        let msg = format!(
            "working_dir {} {problem}; create it or fix the path",
            dir.display()
        );
        if explicit {
            self.err(&at, msg);
        } else {
            self.err_key(script_path, msg);
        }
        false
    }

    fn check_program(&mut self, script: &ScriptConfig, path: &str) {
        let (program, at) = match &script.command {
            CommandSpec::Argv(argv) => (argv[0].clone(), format!("{path}.command[0]")),
            CommandSpec::Shell(_) => ("/bin/sh".to_owned(), format!("{path}.command")),
        };
        let resolved = if program.contains('/') {
            script.working_dir.join(&program)
        } else {
            let search = script
                .env
                .get("PATH")
                .cloned()
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            let found = std::env::split_paths(&search)
                .map(|d| d.join(&program))
                .find(|p| matches!(self.stat(p), Stat::File(_)));
            match found {
                Some(p) => p,
                None => {
                    self.err(
                        &at,
                        format!(
                            "program {program:?} not found in PATH ({search}); give its full \
                             path or install it"
                        ),
                    );
                    return;
                }
            }
        };
        match self.stat(&resolved) {
            Stat::Missing => self.err(
                &at,
                format!("program {} does not exist", resolved.display()),
            ),
            Stat::Dir | Stat::Other => {
                self.err(&at, format!("program {} is not a file", resolved.display()))
            }
            Stat::File(mode) if mode & 0o111 == 0 => self.err(
                &at,
                format!(
                    "program {} is not executable (mode {:o}); run `chmod +x {}`",
                    resolved.display(),
                    mode & 0o7777,
                    resolved.display()
                ),
            ),
            Stat::File(_) => {}
        }
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

fn unknown_key(key: &str, allowed: &[&str]) -> String {
    let best = allowed
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("unknown key {key:?}; did you mean {k:?}?"),
        None => format!(
            "unknown key {key:?}; expected one of: {}",
            allowed.join(", ")
        ),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_owned(),
    }
}
