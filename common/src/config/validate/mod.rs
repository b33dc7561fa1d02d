//! Text → [`Config`], reporting every error at once with file, line, column and key path.
//!
//! The work is linear in the size of the config: every per-file and per-script structure
//! is a map or an index, never a scan. Rooms:
//! - this file: the walk over the files, the top-level keys, script names, and how errors
//!   are placed and ordered;
//! - [`values`]: scalar values (durations, sizes, counts, paths);
//! - [`script`]: a script section and `defaults:` into an effective [`ScriptConfig`](super::ScriptConfig);
//! - [`daemon`]: the `daemon:` section and `include:`;
//! - [`health`]: a `health:` section (the probe of a service);
//! - [`exec_context`]: `user`, `group`, `umask` and `limits` of a script;
//! - [`reload`]: the `reload:` section;
//! - [`host`]: the checks that look at the machine (directories, programs, users and
//!   groups, the daemon's ids and limits), reached only through the [`Host`] trait.

mod cached;
mod daemon;
mod exec_context;
mod health;
mod host;
mod reload;
mod script;
mod source;
mod values;

pub use cached::{validate_cached, validate_cached_with, ValidationCache};
pub use host::{Account, Host, Stat, SystemHost};

use super::etcd::is_value_file;
use super::fields::{DEFAULT_KEYS, SCRIPT_KEYS};
use super::positions::{Pos, Positions};
use super::{Config, ConfigError, ConfigErrors, ConfigSource, DaemonConfig, ReloadConfig};
use script::Partial;
use serde_yaml::Value;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

const TOP_KEYS: &[&str] = &["daemon", "include", "defaults", "scripts", "reload"];
const INCLUDED_KEYS: &[&str] = &["scripts"];
/// An etcd value: `defaults`, `scripts` and `reload`, and `include` to say why it cannot
/// be there.
const ETCD_VALUE_KEYS: &[&str] = &["defaults", "scripts", "reload", "include"];

/// Duplicate script names listed one by one per file; the rest of that file's are
/// summed up in one more error (a file included twice must not bury every other error).
pub const DUPLICATES_LISTED: usize = 10;

/// Validates every file of `source` against this machine and builds the effective
/// config, or returns every error found. Blocks: it looks at the disk and the user and
/// group databases.
pub fn validate(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    validate_with(source, &mut SystemHost::default())
}

/// [`validate`] with the machine's directories, programs, users and groups as `host`
/// says: without the host checks the parsing is pure.
pub fn validate_with(source: &ConfigSource, host: &mut dyn Host) -> Result<Config, ConfigErrors> {
    let base = source.base_dir().to_path_buf();
    let mut v = Validator {
        files: &source.files,
        file: 0,
        positions: source.files.iter().map(|_| OnceCell::new()).collect(),
        errors: Vec::new(),
        host,
    };
    let mut sections = Sections::default();
    // name -> (index of its file, partial script)
    let mut scripts: BTreeMap<String, (usize, Partial)> = BTreeMap::new();
    // per file: (duplicates found, the first one not listed and the file defining it)
    let mut duplicates: Vec<(usize, Option<(String, usize)>)> = vec![(0, None); source.files.len()];

    for (index, file) in source.files.iter().enumerate() {
        v.file = index;
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
        let etcd_value = is_value_file(&file.name);
        for (key, value) in v.entries(&doc, "", allowed_keys(index, &file.name)) {
            sections.note(index, &key);
            match key.as_str() {
                "defaults" => {
                    sections.defaults = v.partial(value, "defaults", &DEFAULT_KEYS, &base)
                }
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
                        let partial = v.partial(body, &path, &SCRIPT_KEYS, &base);
                        match scripts.get(&name) {
                            Some(&(first, _)) => {
                                let (count, unlisted) = &mut duplicates[index];
                                *count += 1;
                                if *count <= DUPLICATES_LISTED {
                                    v.duplicate(&name, first);
                                } else if unlisted.is_none() {
                                    *unlisted = Some((name, first));
                                }
                            }
                            None => {
                                scripts.insert(name, (index, partial));
                            }
                        }
                    }
                }
                _ => v.section(etcd_value, &key, value, &base, &mut sections),
            }
        }
    }
    for (index, (count, unlisted)) in duplicates.into_iter().enumerate() {
        let Some((name, first)) = unlisted else {
            continue;
        };
        v.file = index;
        let more = count - DUPLICATES_LISTED - 1;
        if more == 0 {
            v.duplicate(&name, first);
            continue;
        }
        v.err_key(
            &format!("scripts.{name}"),
            format!(
                "script {name:?} and {more} more script{} of this file are already defined in \
                 another file (only the first {DUPLICATES_LISTED} are listed); script names must \
                 be unique across files: is a file included twice?",
                if more == 1 { "" } else { "s" }
            ),
        );
    }

    let (daemon, main_body_keys, reload, defaults) = sections.finish(&base);
    if let Some(etcd) = &daemon.source {
        v.file = 0;
        for key in main_body_keys {
            v.err_key(
                &key,
                format!(
                    "with daemon.source.etcd the config comes from the etcd key {:?}: put \
                     `{key}` in the key's value, not in this file",
                    etcd.key
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, (file, partial)) in scripts {
        v.file = file;
        if let Some(script) = v.finish_script(&name, partial, &defaults, &base) {
            out.insert(name, Arc::new(script));
        }
    }

    // The second pass (per-script checks) runs in name order; report in file order.
    let file_index: HashMap<&str, usize> = source
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    v.errors.sort_by_key(|e| {
        (
            file_index
                .get(e.file.as_str())
                .copied()
                .unwrap_or(usize::MAX),
            e.line,
            e.column,
        )
    });

    if v.errors.is_empty() {
        Ok(Config {
            daemon,
            scripts: out,
            reload: reload.unwrap_or_default(),
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// The top-level keys file `index` (named `name`) may hold.
fn allowed_keys(index: usize, name: &str) -> &'static [&'static str] {
    match index {
        0 => TOP_KEYS,
        _ if is_value_file(name) => ETCD_VALUE_KEYS,
        _ => INCLUDED_KEYS,
    }
}

/// What the top-level keys other than `scripts` set, over every file.
#[derive(Default)]
struct Sections {
    daemon: Option<DaemonConfig>,
    /// The keys besides `daemon` the main file holds (none when the config is in etcd).
    main_body_keys: Vec<String>,
    reload: Option<ReloadConfig>,
    defaults: Partial,
}

impl Sections {
    /// Top-level `key` of file `index` was read.
    fn note(&mut self, index: usize, key: &str) {
        if index == 0 && key != "daemon" {
            self.main_body_keys.push(key.to_owned());
        }
    }

    /// The daemon section (its defaults when absent), the main file's other keys, the
    /// reload section and the defaults.
    fn finish(self, base: &Path) -> (DaemonConfig, Vec<String>, Option<ReloadConfig>, Partial) {
        (
            self.daemon.unwrap_or_else(|| daemon::default_daemon(base)),
            self.main_body_keys,
            self.reload,
            self.defaults,
        )
    }
}

impl Validator<'_> {
    /// Top-level `key` other than `scripts` and `defaults` (of an etcd value when
    /// `etcd_value`), into `s`.
    fn section(
        &mut self,
        etcd_value: bool,
        key: &str,
        value: &Value,
        base: &Path,
        s: &mut Sections,
    ) {
        match key {
            "daemon" => s.daemon = Some(self.daemon(value, base)),
            "include" if etcd_value => self.err_key(
                "include",
                "an etcd value cannot include files: the key's value holds the whole config \
                 (defaults and scripts)"
                    .into(),
            ),
            "reload" => s.reload = Some(self.reload(value)),
            "include" => self.include(value),
            _ => {}
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Where validation is and what it found. The positions of a file are computed when its
/// first error needs one (a valid config is parsed once), then kept for the whole pass.
struct Validator<'s> {
    files: &'s [super::ConfigFile],
    /// Index of the file being looked at.
    file: usize,
    positions: Vec<OnceCell<Positions>>,
    errors: Vec<ConfigError>,
    host: &'s mut dyn Host,
}

impl Validator<'_> {
    fn positions_of(&self, file: usize) -> Option<&Positions> {
        let text = &self.files.get(file)?.content;
        Some(
            self.positions
                .get(file)?
                .get_or_init(|| Positions::of(text)),
        )
    }

    fn push(&mut self, at: Pos, path: &str, message: String) {
        self.errors.push(ConfigError {
            file: self
                .files
                .get(self.file)
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            line: at.line,
            column: at.column,
            path: path.to_owned(),
            message,
        });
    }

    fn err(&mut self, path: &str, message: String) {
        let at = self
            .positions_of(self.file)
            .map(|p| p.value(path))
            .unwrap_or_default();
        self.push(at, path, message);
    }

    fn err_key(&mut self, path: &str, message: String) {
        let at = self
            .positions_of(self.file)
            .map(|p| p.key(path))
            .unwrap_or_default();
        self.push(at, path, message);
    }

    /// Script `name` of the current file is already defined in file `first`.
    fn duplicate(&mut self, name: &str, first: usize) {
        let path = format!("scripts.{name}");
        let at = self
            .positions_of(first)
            .map(|p| p.key(&path))
            .unwrap_or_default();
        let first_file = self.files.get(first).map_or("", |f| f.name.as_str());
        let msg = format!(
            "script {name:?} is already defined at {first_file}:{}:{}; script names must be \
             unique across files",
            at.line, at.column
        );
        self.err_key(&path, msg);
    }

    /// The entries of a mapping with string keys; unknown keys (when `allowed` is not
    /// empty) are reported with a "did you mean" hint and skipped.
    pub(super) fn entries<'a>(
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
