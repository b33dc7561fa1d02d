//! Validation that reuses the last one's work (issue 16: a save that changes one of 10,000
//! scripts parsed and validated all 10,000 again).
//!
//! Each file is cut into pieces ([`pieces`](crate::config::pieces)): the top-level keys
//! other than the scripts are parsed and validated every time (they are small), and each
//! script's lines are looked up in a [`ValidationCache`]. A script whose lines are the same
//! bytes as at the last validation, under the same `defaults:` and base directory, for which
//! the machine answers every question its validation asked the same way again (a program's
//! `stat`, a user look-up: each recorded with its answer, replayed once per distinct set of
//! questions), gets the validated [`ScriptConfig`] of the last time, the same `Arc`. Any
//! other script is parsed from its own lines and validated as before.
//!
//! This path only ever returns a valid config: on any error, a file it cannot cut, or a
//! doubt (names or top-level keys that repeat across pieces), [`validate_cached_with`] runs
//! the whole validation of [`super::validate_with`], so errors are always that one's, with
//! its positions. Validation is deterministic given the text and the machine's answers, so a
//! reused script is the one the whole validation would build (a property test holds the two
//! to the same [`Config`] over random edits).

use super::host::{Account, Host, Stat, SystemHost};
use super::script::Partial;
use super::{valid_name, Sections, Validator};
use crate::config::etcd::is_value_file;
use crate::config::exec_context::Perms;
use crate::config::fields::{DEFAULT_KEYS, SCRIPT_KEYS};
use crate::config::limits::MAX_DEPTH;
use crate::config::parse::{depth_bound, strip_bom};
use crate::config::pieces::{self, Chunk};
use crate::config::resource_limits::Limit;
use crate::config::{Config, ConfigErrors, ConfigSource, ScriptConfig};
use serde_yaml::Value;
use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// What the last successful validation found, for the next one to reuse (see the module
/// docs). Empty at first; [`validate_cached`] fills it.
#[derive(Debug, Default)]
pub struct ValidationCache {
    /// What every script's validation also read: the base directory and `defaults:`.
    context: Option<Context>,
    /// Per file name: its text and its scripts' results.
    files: HashMap<String, FileEntry>,
}

impl ValidationCache {
    /// How many scripts it holds.
    pub fn len(&self) -> usize {
        self.files.values().map(|f| f.chunks.len()).sum()
    }

    /// Whether it holds no script.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a script's validation reads besides its own lines and the machine.
#[derive(Debug, Clone, PartialEq)]
struct Context {
    base: PathBuf,
    /// `defaults:` as parsed, and the machine's answers while it was validated.
    defaults: Option<Value>,
    defaults_calls: Vec<Call>,
}

#[derive(Debug)]
struct FileEntry {
    /// The file's text (without a byte-order mark).
    text: String,
    /// By the name as written on each script's key line.
    chunks: HashMap<Box<str>, Cached>,
}

#[derive(Debug)]
struct Cached {
    /// Where its lines are in [`FileEntry::text`].
    range: Range<usize>,
    /// The script's name (as validation spells its key).
    name: String,
    script: Arc<ScriptConfig>,
    /// Every question its validation asked the machine, with the answer.
    calls: Arc<[Call]>,
}

/// One question validation asked the machine ([`Host`]), with the answer it got.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Call {
    Stat(PathBuf, Stat),
    Lookup(String, bool, Result<u32, String>),
    SearchPath(Option<String>),
    Perms(PathBuf, Option<Perms>),
    User(String, Result<Account, String>),
    GroupsOf(String, u32, Vec<u32>),
    DaemonIds((u32, u32)),
    HardLimit(Limit, Option<u64>),
    NrOpen(Option<u64>),
}

impl Call {
    /// Whether `host` gives the same answer now.
    fn holds(&self, host: &mut dyn Host) -> bool {
        match self {
            Call::Stat(p, s) => host.stat(p) == *s,
            Call::Lookup(n, g, r) => host.lookup(n, *g) == *r,
            Call::SearchPath(s) => host.search_path() == *s,
            Call::Perms(p, r) => host.perms(p) == *r,
            Call::User(n, r) => host.user(n) == *r,
            Call::GroupsOf(n, g, r) => host.groups_of(n, *g) == *r,
            Call::DaemonIds(r) => host.daemon_ids() == *r,
            Call::HardLimit(l, r) => host.hard_limit(*l) == *r,
            Call::NrOpen(r) => host.nr_open() == *r,
        }
    }
}

/// The calls being written down, if any.
type Log = Rc<RefCell<Option<Vec<Call>>>>;

/// A [`Host`] that writes down every call (and its answer) while its log is open.
struct Recording<'h> {
    inner: &'h mut dyn Host,
    log: Log,
}

impl Recording<'_> {
    fn note<T>(&self, answer: T, call: impl FnOnce(&T) -> Call) -> T {
        if let Some(log) = self.log.borrow_mut().as_mut() {
            log.push(call(&answer));
        }
        answer
    }
}

impl Host for Recording<'_> {
    fn stat(&mut self, path: &Path) -> Stat {
        let a = self.inner.stat(path);
        self.note(a, |a| Call::Stat(path.to_path_buf(), *a))
    }
    fn lookup(&mut self, name: &str, group: bool) -> Result<u32, String> {
        let a = self.inner.lookup(name, group);
        self.note(a, |a| Call::Lookup(name.to_owned(), group, a.clone()))
    }
    fn search_path(&self) -> Option<String> {
        let a = self.inner.search_path();
        self.note(a, |a| Call::SearchPath(a.clone()))
    }
    fn perms(&mut self, path: &Path) -> Option<Perms> {
        let a = self.inner.perms(path);
        self.note(a, |a| Call::Perms(path.to_path_buf(), *a))
    }
    fn user(&mut self, spec: &str) -> Result<Account, String> {
        let a = self.inner.user(spec);
        self.note(a, |a| Call::User(spec.to_owned(), a.clone()))
    }
    fn groups_of(&mut self, name: &str, gid: u32) -> Vec<u32> {
        let a = self.inner.groups_of(name, gid);
        self.note(a, |a| Call::GroupsOf(name.to_owned(), gid, a.clone()))
    }
    fn daemon_ids(&self) -> (u32, u32) {
        let a = self.inner.daemon_ids();
        self.note(a, |a| Call::DaemonIds(*a))
    }
    fn hard_limit(&mut self, limit: Limit) -> Option<u64> {
        let a = self.inner.hard_limit(limit);
        self.note(a, |a| Call::HardLimit(limit, *a))
    }
    fn nr_open(&mut self) -> Option<u64> {
        let a = self.inner.nr_open();
        self.note(a, |a| Call::NrOpen(*a))
    }
}

/// [`super::validate`] reusing `cache`, which it updates after a valid config.
pub fn validate_cached(
    source: &ConfigSource,
    cache: &mut ValidationCache,
) -> Result<Config, ConfigErrors> {
    validate_cached_with(source, &mut SystemHost::default(), cache)
}

/// [`validate_cached`] with the machine as `host` says: the same result as
/// [`super::validate_with`] on the same host, always.
pub fn validate_cached_with(
    source: &ConfigSource,
    host: &mut dyn Host,
    cache: &mut ValidationCache,
) -> Result<Config, ConfigErrors> {
    if let Some((config, next)) = incremental(source, host, cache) {
        *cache = next;
        return Ok(config);
    }
    super::validate_with(source, host)
}

/// A file's top-level value and, when it was cut, its scripts' chunks.
struct File<'t> {
    /// Its text without a byte-order mark.
    text: &'t str,
    top: Value,
    chunks: Vec<Chunk<'t>>,
}

/// A piece parsed alone, `outer` collections deep in the whole file; `None` when it does
/// not parse (or might nest too deep there).
fn piece(text: &str, outer: usize) -> Option<Value> {
    if depth_bound(text) + outer > MAX_DEPTH {
        return None;
    }
    serde_yaml::from_str(text).ok()
}

/// The file's pieces parsed: the head and the tail as one mapping (keys must not repeat
/// between them), the chunks left for later. A file that cannot be cut is parsed whole.
fn parse_file(text: &str) -> Option<File<'_>> {
    let Some(p) = pieces::split(text) else {
        return Some(File {
            text,
            top: piece(text, 0)?,
            chunks: Vec::new(),
        });
    };
    let Value::Mapping(mut top) = piece(p.head, 0)? else {
        return None;
    };
    if top.get("scripts") != Some(&Value::Null) {
        return None;
    }
    match piece(p.tail, 0)? {
        Value::Null => {}
        Value::Mapping(tail) => {
            for (k, v) in tail {
                if top.contains_key(&k) {
                    return None;
                }
                top.insert(k, v);
            }
        }
        _ => return None,
    }
    Some(File {
        text,
        top: Value::Mapping(top),
        chunks: p.chunks,
    })
}

/// A script on its way: validated from its lines, or taken from the cache.
enum Script<'c> {
    Fresh {
        partial: Box<Partial>,
        calls: Vec<Call>,
    },
    Reused(&'c Cached),
}

/// One script found, with where it came from.
struct Found<'c, 't> {
    name: String,
    file: usize,
    /// The chunk it came from (a file cut into pieces), for the next cache.
    chunk: Option<&'t Chunk<'t>>,
    script: Script<'c>,
}

/// The validation of [`validate_cached_with`]: `None` on any error or doubt.
fn incremental(
    source: &ConfigSource,
    host: &mut dyn Host,
    cache: &ValidationCache,
) -> Option<(Config, ValidationCache)> {
    let base = source.base_dir().to_path_buf();
    let log: Log = Rc::default();
    let mut recording = Recording {
        inner: host,
        log: log.clone(),
    };
    let mut v = Validator {
        files: &source.files,
        file: 0,
        positions: source.files.iter().map(|_| OnceCell::new()).collect(),
        errors: Vec::new(),
        host: &mut recording,
    };
    let open = || *log.borrow_mut() = Some(Vec::new());
    let close = || log.borrow_mut().take().unwrap_or_default();

    let files: Vec<File<'_>> = source
        .files
        .iter()
        .map(|f| parse_file(strip_bom(&f.content)))
        .collect::<Option<_>>()?;
    let mut sections = Sections::default();
    let mut defaults_value = None;
    let mut defaults_calls = Vec::new();
    let mut found: Vec<Found<'_, '_>> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        v.file = index;
        if file.top.is_null() {
            continue;
        }
        let name = &source.files[index].name;
        for (key, value) in v.entries(&file.top, "", super::allowed_keys(index, name)) {
            sections.note(index, &key);
            match key.as_str() {
                "defaults" => {
                    open();
                    sections.defaults = v.partial(value, "defaults", &DEFAULT_KEYS, &base);
                    defaults_calls = close();
                    defaults_value = Some(value.clone());
                }
                "scripts" if !value.is_null() => {
                    for (name, body) in v.entries(value, "scripts", &[]) {
                        let script = fresh(&mut v, &name, body, &base, &log)?;
                        found.push(Found {
                            name,
                            file: index,
                            chunk: None,
                            script,
                        });
                    }
                }
                "scripts" => {}
                _ => v.section(is_value_file(name), &key, value, &base, &mut sections),
            }
        }
    }
    if !v.errors.is_empty() {
        return None;
    }
    let context = Context {
        base: base.clone(),
        defaults: defaults_value,
        defaults_calls,
    };
    let same_context = cache.context.as_ref() == Some(&context);
    for (index, file) in files.iter().enumerate() {
        v.file = index;
        let entry = same_context
            .then(|| cache.files.get(&source.files[index].name))
            .flatten();
        for chunk in &file.chunks {
            let reused = entry.and_then(|e| {
                let c = e.chunks.get(chunk.key)?;
                (e.text.get(c.range.clone()) == Some(chunk.text)).then_some(c)
            });
            let (name, script) = match reused {
                Some(c) => (c.name.clone(), Script::Reused(c)),
                None => parse_chunk(&mut v, chunk, &base, &log)?,
            };
            found.push(Found {
                name,
                file: index,
                chunk: Some(chunk),
                script,
            });
        }
    }
    let (daemon, main_body_keys, reload, defaults) = sections.finish(&base);
    if daemon.source.is_some() && !main_body_keys.is_empty() {
        return None;
    }

    // Each distinct set of recorded questions asked again once.
    let mut holds: HashMap<*const [Call], bool> = HashMap::new();
    let mut next = ValidationCache {
        context: Some(context),
        files: HashMap::new(),
    };
    let mut interned: HashSet<Arc<[Call]>> = HashSet::new();
    let mut scripts = BTreeMap::new();
    for f in found {
        v.file = f.file;
        let script = match f.script {
            Script::Reused(c) => {
                let ok = *holds
                    .entry(Arc::as_ptr(&c.calls))
                    .or_insert_with(|| c.calls.iter().all(|call| call.holds(v.host)));
                if ok {
                    Script::Reused(c)
                } else {
                    let chunk = f.chunk?;
                    parse_chunk(&mut v, chunk, &base, &log)?.1
                }
            }
            fresh => fresh,
        };
        let (config, calls) = match script {
            Script::Reused(c) => (c.script.clone(), c.calls.clone()),
            Script::Fresh { partial, mut calls } => {
                open();
                let finished = v.finish_script(&f.name, *partial, &defaults, &base);
                calls.extend(close());
                let calls: Arc<[Call]> = match interned.get(calls.as_slice()) {
                    Some(same) => same.clone(),
                    None => {
                        let calls: Arc<[Call]> = calls.into();
                        interned.insert(calls.clone());
                        calls
                    }
                };
                (Arc::new(finished?), calls)
            }
        };
        if let Some(chunk) = f.chunk {
            let text = files[f.file].text;
            let entry = next
                .files
                .entry(source.files[f.file].name.clone())
                .or_insert_with(|| FileEntry {
                    text: text.to_owned(),
                    chunks: HashMap::new(),
                });
            let start = chunk.text.as_ptr() as usize - text.as_ptr() as usize;
            entry.chunks.insert(
                chunk.key.into(),
                Cached {
                    range: start..start + chunk.text.len(),
                    name: f.name.clone(),
                    script: config.clone(),
                    calls,
                },
            );
        }
        if scripts.insert(f.name, config).is_some() {
            return None; // a name twice: the whole validation says where
        }
    }
    if !v.errors.is_empty() {
        return None;
    }
    Some((
        Config {
            daemon,
            scripts,
            reload: reload.unwrap_or_default(),
        },
        next,
    ))
}

/// A script of a file parsed whole: its partial, with the calls it made.
fn fresh<'c>(
    v: &mut Validator<'_>,
    name: &str,
    body: &Value,
    base: &Path,
    log: &Log,
) -> Option<Script<'c>> {
    if !valid_name(name) {
        return None;
    }
    *log.borrow_mut() = Some(Vec::new());
    let partial = v.partial(body, &format!("scripts.{name}"), &SCRIPT_KEYS, base);
    let calls = log.borrow_mut().take().unwrap_or_default();
    Some(Script::Fresh {
        partial: Box::new(partial),
        calls,
    })
}

/// A chunk parsed alone (two collections deep in the whole file: the top mapping and the
/// scripts'), which must be one script.
fn parse_chunk<'c>(
    v: &mut Validator<'_>,
    chunk: &Chunk<'_>,
    base: &Path,
    log: &Log,
) -> Option<(String, Script<'c>)> {
    let value = piece(chunk.text, 1)?;
    if value.as_mapping()?.len() != 1 {
        return None;
    }
    let (name, body) = v.entries(&value, "scripts", &[]).pop()?;
    let script = fresh(v, &name, body, base, log)?;
    Some((name, script))
}
