//! Applying a plan to the running scripts, and putting every touched script back as it was
//! when that fails: either the whole new version runs or the old one does.

use crate::runner::{self, ControlError, ScriptHandle, Shared, UpdateOutcome};
use scriptd_common::config::{Config, ScriptConfig};
use scriptd_common::diff::{self, Change, Plan, ScriptPlan};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// The running scripts an apply changes: the coordinator's handles and what starts new ones.
pub struct Scripts<'a> {
    /// One handle per running script (copied on write: snapshots share it).
    pub handles: &'a mut Arc<BTreeMap<String, ScriptHandle>>,
    /// What runners share.
    pub shared: &'a Arc<Shared>,
    /// Where runner tasks are tracked.
    pub tracker: &'a TaskTracker,
}

/// An apply that failed: what could not be applied, and what could not be put back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApplyError {
    /// `name: error` of each script the new version could not be applied to.
    pub failures: Vec<String>,
    /// `name: error` of each script that could not be put back as it was.
    pub not_restored: Vec<String>,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failures = self.failures.join("; ");
        if self.not_restored.is_empty() {
            write!(
                f,
                "could not apply ({failures}); the previous version was put back"
            )
        } else {
            write!(
                f,
                "could not apply ({failures}); putting the previous version back failed too ({}): \
                 those scripts have their previous config but are not running it; fix the \
                 cause, then save again or `ctl restart` them",
                self.not_restored.join("; ")
            )
        }
    }
}

/// Applies `plan` (computed from `running`); on failure puts every touched script back as
/// it was. Returns how each changed script took its change.
pub async fn apply(
    scripts: Scripts<'_>,
    running: &Config,
    plan: &Plan,
) -> Result<BTreeMap<String, UpdateOutcome>, ApplyError> {
    let Scripts {
        handles,
        shared,
        tracker,
    } = scripts;
    let mut set = tokio::task::JoinSet::new();
    let mut added = Vec::new();
    let mut rows: BTreeMap<&str, Vec<Change>> = BTreeMap::new();
    for c in &plan.changes {
        rows.entry(c.script.as_str()).or_default().push(c.clone());
    }
    for (name, p) in &plan.scripts {
        match p {
            ScriptPlan::Changed(cfg) => {
                if let Some(h) = handles.get(name).cloned() {
                    let (name, cfg) = (name.clone(), cfg.clone());
                    let changes = rows.remove(name.as_str()).unwrap_or_default();
                    set.spawn(async move {
                        let r = h.update(cfg, changes).await;
                        (name, r)
                    });
                }
            }
            ScriptPlan::Added(cfg) => {
                let (h, started) =
                    runner::start_reporting(name.clone(), cfg.clone(), shared.clone(), tracker);
                added.push(name.clone());
                Arc::make_mut(handles).insert(name.clone(), h);
                let name = name.clone();
                set.spawn(async move {
                    let r = match started.await {
                        Ok(Ok(())) => Ok(UpdateOutcome::Applied),
                        Ok(Err(e)) => Err(ControlError::Spawn(e)),
                        Err(_) => Err(ControlError::Gone),
                    };
                    (name, r)
                });
            }
            ScriptPlan::Removed => {}
        }
    }
    let mut outcomes = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((name, Ok(o))) => {
                outcomes.insert(name, o);
            }
            Ok((name, Err(e))) => failures.push(format!("{name}: {e}")),
            Err(e) => failures.push(format!("internal error: {e}")),
        }
    }
    if !failures.is_empty() {
        failures.sort();
        let not_restored = roll_back(handles, running, plan, &added).await;
        return Err(ApplyError {
            failures,
            not_restored,
        });
    }
    let mut removals = tokio::task::JoinSet::new();
    for (name, p) in &plan.scripts {
        if matches!(p, ScriptPlan::Removed) {
            if let Some(h) = Arc::make_mut(handles).remove(name) {
                removals.spawn(async move { h.remove().await });
            }
        }
    }
    removals.join_all().await;
    Ok(outcomes)
}

/// Puts every script the failed apply touched back as it was in `running`; returns what
/// could not be (`name: error`).
async fn roll_back(
    handles: &mut Arc<BTreeMap<String, ScriptHandle>>,
    running: &Config,
    plan: &Plan,
    added: &[String],
) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for name in added {
        if let Some(h) = Arc::make_mut(handles).remove(name) {
            set.spawn(async move {
                h.remove().await;
                Ok(())
            });
        }
    }
    for (name, p) in &plan.scripts {
        if let (ScriptPlan::Changed(new), Some(old)) = (p, running.scripts.get(name)) {
            if let Some(h) = handles.get(name).cloned() {
                let back = diff::diff_script(name, new, old);
                let (name, old): (String, Arc<ScriptConfig>) = (name.clone(), old.clone());
                set.spawn(
                    async move { h.update(old, back).await.map(|_| ()).map_err(|e| (name, e)) },
                );
            }
        }
    }
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err((name, e))) => failed.push(format!("{name}: {e}")),
            Err(e) => failed.push(format!("internal error: {e}")),
        }
    }
    failed.sort();
    failed
}
