//! Diff of two configs, field by field, with the impact of each change (DESIGN.md
//! "Change impact"). Pure functions: the daemon applies what they decide.

use crate::config::fields::{self, ChangeRule};
use crate::config::{Config, ScriptConfig};
use itertools::{EitherOrBoth, Itertools};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a change is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impact {
    /// Applied at once, no process touched.
    Live,
    /// Used from the next run on.
    NextRun,
    /// Graceful restart of that script (periodic: when its current run ends).
    Restart,
    /// The script is started or scheduled.
    Start,
    /// The script is stopped gracefully.
    Stop,
    /// Needs a daemon restart: the whole reload is rejected.
    DaemonRestart,
}

/// What happens (or happened) to a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done at once.
    Applied,
    /// Waits for the script's current run to end.
    Scheduled,
    /// Refused.
    Rejected,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Script name; empty for `daemon.*`.
    pub script: String,
    /// Field path within the script (`command`, `env.RETENTION`, `log.keep`), `*` for a whole
    /// script added or removed, or the full key for daemon changes.
    pub field: String,
    /// Old value as text; `None` when added.
    pub old: Option<String>,
    /// New value as text; `None` when removed.
    pub new: Option<String>,
    /// Scope.
    pub impact: Impact,
    /// Outcome.
    pub outcome: Outcome,
    /// Why it is scheduled or rejected.
    pub reason: String,
}

/// What happens to one script.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptPlan {
    /// New script: start or schedule it.
    Added(Arc<ScriptConfig>),
    /// Gone: stop it gracefully and forget it.
    Removed,
    /// Some fields changed; the runner gets the whole new config.
    Changed(Arc<ScriptConfig>),
}

/// The result of diffing two configs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Every change, sorted by script then field (daemon changes first).
    pub changes: Vec<Change>,
    /// Per-script actions; unchanged scripts are absent.
    pub scripts: BTreeMap<String, ScriptPlan>,
    /// Set when a change needs a daemon restart; the whole plan is then refused.
    pub rejected: Option<String>,
}

impl Plan {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Flattens a serialised config section into `(field path, rendered value)` pairs.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        // An empty map (an empty `env`) has no field at all: each entry is a field.
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The fields of a script as `(path, text)`, the form changes are reported in.
pub fn script_fields(cfg: &ScriptConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(cfg) {
        flatten("", &v, &mut out);
    }
    out
}

/// Impact of changing `field` of a script from `old` to `new`, as the field table
/// ([`fields::FIELDS`]) says; a field the table does not know restarts the script.
pub fn field_impact(field: &str, old: Option<&str>, new: Option<&str>) -> Impact {
    fields::field(field).map_or(Impact::Restart, |f| f.rule.impact(old, new))
}

/// `current` with the non-restart `changes` of a script applied from `new`: what a script
/// runs with while its restart-impact changes wait. `changes` are the rows of a diff whose
/// new side is `new` (and whose old side agrees with `current` on every non-restart field).
pub fn apply_except_restart(
    current: &ScriptConfig,
    new: &ScriptConfig,
    changes: &[Change],
) -> ScriptConfig {
    let mut out = current.clone();
    for c in changes.iter().filter(|c| c.impact != Impact::Restart) {
        if let Some(f) = fields::field(&c.field) {
            (f.copy)(&mut out, new, &c.field);
        }
    }
    out
}

/// Field-level changes of one script. Empty when the configs are equal.
///
/// `interval` and `schedule` (rule [`ChangeRule::Schedule`]) restart a script only when it
/// changes kind: one replacing the other keeps it periodic, and both rows are next-run.
pub fn diff_script(name: &str, old: &ScriptConfig, new: &ScriptConfig) -> Vec<Change> {
    let (a, b) = (script_fields(old), script_fields(new));
    let stays_periodic = old.is_periodic() && new.is_periodic();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let (o, n) = (a.get(k).cloned(), b.get(k).cloned());
            let reschedules =
                stays_periodic && fields::field(k).is_some_and(|f| f.rule == ChangeRule::Schedule);
            Change {
                script: name.to_owned(),
                field: k.clone(),
                impact: if reschedules {
                    Impact::NextRun
                } else {
                    field_impact(k, o.as_deref(), n.as_deref())
                },
                old: o,
                new: n,
                outcome: Outcome::Applied,
                reason: String::new(),
            }
        })
        .collect()
}

/// Diffs `old` against `new`. `running_periodic(name)` says whether a periodic script has a
/// run in progress now: its restart-impact changes are then scheduled for when it ends.
pub fn plan(old: &Config, new: &Config, running_periodic: &dyn Fn(&str) -> bool) -> Plan {
    let mut out = Plan::default();

    let (da, db) = (
        serde_json::to_value(&old.daemon).unwrap_or(Value::Null),
        serde_json::to_value(&new.daemon).unwrap_or(Value::Null),
    );
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("daemon", &da, &mut fa);
    flatten("daemon", &db, &mut fb);
    let mut daemon_keys = Vec::new();
    for key in fa.keys().chain(fb.keys().filter(|k| !fa.contains_key(*k))) {
        if fa.get(key) != fb.get(key) {
            daemon_keys.push(key.clone());
            out.changes.push(Change {
                script: String::new(),
                field: key.clone(),
                old: fa.get(key).cloned(),
                new: fb.get(key).cloned(),
                impact: Impact::DaemonRestart,
                outcome: Outcome::Rejected,
                reason: "read at start only; restart the daemon to change it".into(),
            });
        }
    }

    let (ra, rb) = (
        serde_json::to_value(old.reload).unwrap_or(Value::Null),
        serde_json::to_value(new.reload).unwrap_or(Value::Null),
    );
    let (mut ra_fields, mut rb_fields) = (BTreeMap::new(), BTreeMap::new());
    flatten("reload", &ra, &mut ra_fields);
    flatten("reload", &rb, &mut rb_fields);
    for (key, old_value) in &ra_fields {
        let new_value = rb_fields.get(key);
        if Some(old_value) != new_value {
            // `reload.*` is read by the coordinator at each apply: live.
            out.changes.push(Change {
                script: String::new(),
                field: key.clone(),
                old: Some(old_value.clone()),
                new: new_value.cloned(),
                impact: Impact::Live,
                outcome: Outcome::Applied,
                reason: String::new(),
            });
        }
    }

    // Both maps are sorted by name: one walk over the two side by side, no look-up per
    // script (with 10,000 scripts the look-ups were most of a save's plan).
    let pairs = old
        .scripts
        .iter()
        .merge_join_by(&new.scripts, |(a, _), (b, _)| a.cmp(b));
    for pair in pairs {
        match pair {
            EitherOrBoth::Left((name, cfg)) => {
                out.scripts.insert(name.clone(), ScriptPlan::Removed);
                out.changes.push(Change {
                    script: name.clone(),
                    field: "*".into(),
                    old: Some(command_text(cfg)),
                    new: None,
                    impact: Impact::Stop,
                    outcome: Outcome::Applied,
                    reason: String::new(),
                });
            }
            // The same copy (validation reused it) is equal without a look.
            EitherOrBoth::Both((name, cfg), (_, next)) => {
                if Arc::ptr_eq(next, cfg) || next == cfg {
                    continue;
                }
                let mut changes = diff_script(name, cfg, next);
                if running_periodic(name) && cfg.is_periodic() {
                    for c in changes.iter_mut().filter(|c| c.impact == Impact::Restart) {
                        c.outcome = Outcome::Scheduled;
                        c.reason = "a run is in progress; applies when it ends".into();
                    }
                }
                out.changes.extend(changes);
                out.scripts
                    .insert(name.clone(), ScriptPlan::Changed(next.clone()));
            }
            EitherOrBoth::Right((name, cfg)) => {
                out.scripts
                    .insert(name.clone(), ScriptPlan::Added(cfg.clone()));
                out.changes.push(Change {
                    script: name.clone(),
                    field: "*".into(),
                    old: None,
                    new: Some(command_text(cfg)),
                    impact: Impact::Start,
                    outcome: Outcome::Applied,
                    reason: if cfg.enabled {
                        String::new()
                    } else {
                        "added disabled: nothing runs".into()
                    },
                });
            }
        }
    }
    out.changes.sort_by(|a, b| {
        (a.script.as_str(), a.field.as_str()).cmp(&(b.script.as_str(), b.field.as_str()))
    });

    if !daemon_keys.is_empty() {
        let reason = format!(
            "rejected: {} changed, which only a daemon restart can apply; the running config \
             stays",
            daemon_keys.join(", ")
        );
        for c in out
            .changes
            .iter_mut()
            .filter(|c| c.impact != Impact::DaemonRestart)
        {
            c.outcome = Outcome::Rejected;
            c.reason = "the whole reload is rejected".into();
        }
        out.rejected = Some(reason);
    }
    out
}

/// Short description of a whole script for added/removed rows.
fn command_text(cfg: &ScriptConfig) -> String {
    script_fields(cfg).remove("command").unwrap_or_default()
}
