//! Verification: after an apply (and for `ctl start|restart --wait`), every script the
//! action started or restarted must become ready in a window — a service alive for its
//! `ready_after` (and healthy, once health probes exist), a periodic script's first run
//! ended with exit 0.
//!
//! The pure part decides: which scripts an applied plan started or restarted
//! ([`targets`]) and what a script's observations add up to ([`verdict`]). The watching
//! part ([`watch_one`], [`spawn`]) reads each runner's [`Readiness`] and status channels,
//! never asks the runner and never blocks the coordinator: each script's outcome is posted
//! back as a [`Decided`] message as soon as it is known.

use super::coordinator::Coordinator;
use super::{Report, Request, RequestError, ResultKind, Source, Verification, VerifyEnd};
use crate::runner::{Readiness, ScriptHandle};
use scriptd_common::config::{Config, OnFailure, ScriptConfig};
use scriptd_common::diff::{Change, Impact, Outcome as ChangeOutcome};
use scriptd_common::proto::{self, HealthState, ReloadPhase, ScriptState};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How one verified script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A service's run was alive for its `ready_after` (and healthy if it has a probe).
    Ready,
    /// A periodic script's run ended with exit 0.
    Succeeded,
    /// It ended and nothing restarts it, or a periodic run failed: how.
    Exited(String),
    /// It exited before `ready_after` and is being restarted: how often and how.
    CrashLooping(String),
    /// Its health probe fails: what the probe said.
    ProbeFailing(String),
    /// The window passed while it was still starting: its state.
    Timeout(String),
    /// The script was removed (or the daemon stopped) before it was decided.
    Removed,
}

impl Outcome {
    /// The word in responses, events and `ctl` output.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Succeeded => "succeeded",
            Self::Exited(_) => "exited",
            Self::CrashLooping(_) => "crash-looping",
            Self::ProbeFailing(_) => "probe-failing",
            Self::Timeout(_) => "timeout",
            Self::Removed => "removed",
        }
    }

    /// True for the outcomes that verify.
    pub fn ok(&self) -> bool {
        matches!(self, Self::Ready | Self::Succeeded)
    }

    /// Why, for people.
    pub fn reason(&self) -> String {
        match self {
            Self::Ready => "alive for its ready_after".into(),
            Self::Succeeded => "its run exited 0".into(),
            Self::Exited(how) | Self::CrashLooping(how) | Self::ProbeFailing(how) => how.clone(),
            Self::Timeout(state) => format!("still {state} when the wait ended"),
            Self::Removed => "removed before it was ready".into(),
        }
    }
}

/// What a verification has seen of one script since the run it waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// A run since then became ready.
    pub ready: bool,
    /// Its health probe succeeded in a run since then.
    pub healthy: bool,
    /// Its probe is failing: what it said.
    pub probe_failing: Option<String>,
    /// Failed starts (or a failed periodic run) since then: how many in a row and the last.
    pub failed: Option<(u32, String)>,
    /// Nothing will start it again by itself (failed, idle, stopped, disabled).
    pub settled: bool,
    /// Its state, for the timeout reason.
    pub state: String,
}

/// Whether a script must also be healthy to verify: a service with a `health:` probe.
pub fn needs_health(cfg: &ScriptConfig) -> bool {
    cfg.health.is_some()
}

/// What `seen` adds up to: `None` while undecided (before the window ends).
pub fn verdict(
    periodic: bool,
    needs_health: bool,
    seen: &Observed,
    window_over: bool,
) -> Option<Outcome> {
    if seen.ready && (!needs_health || seen.healthy) {
        return Some(if periodic {
            Outcome::Succeeded
        } else {
            Outcome::Ready
        });
    }
    if !seen.ready {
        if let Some((_, how)) = &seen.failed {
            if periodic || seen.settled {
                return Some(Outcome::Exited(how.clone()));
            }
        } else if seen.settled {
            return Some(Outcome::Exited(format!(
                "{} before it was ready",
                seen.state
            )));
        }
    }
    if !window_over {
        return None;
    }
    if seen.ready {
        let said = seen.probe_failing.clone();
        return Some(Outcome::ProbeFailing(
            said.unwrap_or_else(|| "no successful health probe yet".into()),
        ));
    }
    Some(match &seen.failed {
        Some((n, how)) => Outcome::CrashLooping(format!(
            "{n} failed start{} in a row (each ended before ready_after), the last: {how}",
            if *n == 1 { "" } else { "s" }
        )),
        None => Outcome::Timeout(seen.state.clone()),
    })
}

/// The scripts an applied plan started or restarted, and whether each is periodic: added or
/// enabled scripts, services with an applied restart, and scripts that became periodic
/// (their first run is now). A periodic script whose restart-impact change waits for its
/// next run is not started by the apply, nor is anything disabled.
pub fn targets(changes: &[Change], new: &Config) -> Vec<(String, bool)> {
    let mut out: BTreeMap<&str, bool> = BTreeMap::new();
    for c in changes.iter().filter(|c| !c.script.is_empty()) {
        let Some(cfg) = new.scripts.get(&c.script).filter(|s| s.enabled) else {
            continue;
        };
        let periodic = cfg.is_periodic();
        let started = match c.impact {
            Impact::Start => true,
            Impact::Restart if c.outcome == ChangeOutcome::Applied => {
                !periodic || (c.field == "interval" && c.old.is_none())
            }
            _ => false,
        };
        if started {
            out.insert(&c.script, periodic);
        }
    }
    out.into_iter().map(|(n, p)| (n.to_owned(), p)).collect()
}

/// One script to verify.
pub struct Target {
    /// Its name.
    pub name: String,
    /// Its runner.
    pub handle: ScriptHandle,
    /// The first run that counts (runs before it belong to the previous config).
    pub since: u64,
    /// A periodic script (verified by a run that succeeds).
    pub periodic: bool,
    /// It must be healthy too ([`needs_health`]).
    pub needs_health: bool,
}

/// A script's outcome, posted as soon as it is decided.
#[derive(Debug)]
pub struct Decided {
    /// The verification it belongs to (the attempt id; 0 for `--wait` of a control action).
    pub id: u64,
    /// The script.
    pub script: String,
    /// The first run that counted.
    pub since: u64,
    /// How it did.
    pub outcome: Outcome,
}

/// What the channels of `handle` say now about runs since `since`.
fn observe(handle: &ScriptHandle, since: u64) -> Observed {
    let r: Readiness = handle.readiness.borrow().clone();
    let status = handle.status.borrow();
    let state = ScriptState::try_from(status.state).unwrap_or(ScriptState::Unspecified);
    // The probe verdict is reset when a run starts, so it is of the current run.
    let this_run = status.run_id >= since;
    let health = status.health.as_ref().filter(|_| this_run);
    let verdict = health.map(|h| HealthState::try_from(h.state).unwrap_or_default());
    Observed {
        ready: r.ready_run >= since,
        healthy: verdict == Some(HealthState::Healthy),
        probe_failing: health
            .filter(|h| h.last_ok == Some(false))
            .map(|h| format!("{}: {}", h.probe, h.message)),
        failed: (r.failed_run >= since).then(|| (r.failed_starts.max(1), r.failure.clone())),
        settled: matches!(
            state,
            ScriptState::Failed | ScriptState::Idle | ScriptState::Stopped | ScriptState::Disabled
        ),
        state: crate::convert::state_word(state).into(),
    }
}

/// Watches one script until its outcome is decided or `deadline` passes.
pub async fn watch_one(t: &Target, deadline: Instant) -> Outcome {
    let (mut ready, mut status) = (t.handle.readiness.clone(), t.handle.status.clone());
    loop {
        let seen = observe(&t.handle, t.since);
        if let Some(o) = verdict(t.periodic, t.needs_health, &seen, false) {
            return o;
        }
        tokio::select! {
            r = ready.changed() => if r.is_err() { return Outcome::Removed },
            r = status.changed() => if r.is_err() { return Outcome::Removed },
            _ = tokio::time::sleep_until(deadline) => {
                let seen = observe(&t.handle, t.since);
                return verdict(t.periodic, t.needs_health, &seen, true)
                    .unwrap_or(Outcome::Timeout(seen.state));
            }
        }
    }
}

/// Watches every target at once, posting each outcome to `tx` as it is decided; stops early
/// on `cancel` (daemon shutdown).
pub fn spawn(
    id: u64,
    targets: Vec<Target>,
    deadline: Instant,
    tx: mpsc::Sender<Decided>,
    cancel: CancellationToken,
) {
    for t in targets {
        let (tx, cancel) = (tx.clone(), cancel.clone());
        tokio::spawn(async move {
            let outcome = tokio::select! {
                o = watch_one(&t, deadline) => o,
                _ = cancel.cancelled() => return,
            };
            let _ = tx
                .send(Decided {
                    id,
                    script: t.name,
                    since: t.since,
                    outcome,
                })
                .await;
        });
    }
}

/// One outcome as sent on the wire.
pub fn to_proto(script: &str, since: u64, outcome: Option<&Outcome>) -> proto::ScriptVerification {
    proto::ScriptVerification {
        script: script.to_owned(),
        outcome: outcome.map_or("pending", Outcome::word).into(),
        reason: outcome.map(Outcome::reason).unwrap_or_default(),
        run_id: since,
    }
}

/// What `ctl status` shows of verifications (published by the coordinator).
#[derive(Debug, Clone, Default)]
pub struct VerifyView {
    /// The verification in progress.
    pub verifying: Option<proto::VerifyProgress>,
    /// The last automatic rollback, until the next applied version.
    pub last_auto_rollback: Option<proto::AutoRollback>,
}

type Reply = oneshot::Sender<Result<Report, RequestError>>;

/// The verification of one applied attempt, owned by the coordinator.
pub struct Verifying {
    attempt_id: u64,
    version: u64,
    base_version: u64,
    source: Source,
    on_failure: OnFailure,
    deadline_ms: i64,
    window: std::time::Duration,
    /// Each target: its first run and, once decided, its outcome.
    outcomes: BTreeMap<String, (u64, Option<Outcome>)>,
    /// `ctl reload --wait` callers: their report, answered at the end.
    waiters: Vec<(Report, Reply)>,
}

impl Verifying {
    fn scripts(&self) -> Vec<proto::ScriptVerification> {
        self.outcomes
            .iter()
            .map(|(name, (since, o))| to_proto(name, *since, o.as_ref()))
            .collect()
    }

    /// Answers every waiter with `end` and `message` added to its report.
    fn answer(&mut self, end: VerifyEnd, message: &str) {
        let scripts = self.scripts();
        for (mut report, reply) in self.waiters.drain(..) {
            report.verification = Some(Verification {
                end,
                scripts: scripts.clone(),
            });
            if !message.is_empty() {
                report.message = if report.message.is_empty() {
                    message.to_owned()
                } else {
                    format!("{}; {message}", report.message)
                };
            }
            let _ = reply.send(Ok(report));
        }
    }
}

/// Every script's current run id: verifications count the runs after these.
pub fn run_ids(handles: &BTreeMap<String, ScriptHandle>) -> BTreeMap<String, u64> {
    handles
        .iter()
        .map(|(n, h)| (n.clone(), h.status.borrow().run_id))
        .collect()
}

impl Coordinator {
    /// After attempt `report` applied: drops a verification in progress (superseded) and
    /// starts watching what this one started or restarted (`before`: the run ids before).
    pub(super) fn begin_verification(
        &mut self,
        source: Source,
        report: &Report,
        before: &BTreeMap<String, u64>,
    ) {
        if let Some(mut old) = self.verifying.take() {
            tracing::info!(
                attempt = old.attempt_id,
                "verification dropped: attempt {} applied version {} first",
                report.attempt_id,
                report.version
            );
            old.answer(
                VerifyEnd::NotVerified,
                &format!(
                    "not verified: attempt {} applied version {} before this one was verified, \
                     and that one is verified instead",
                    report.attempt_id, report.version
                ),
            );
        }
        if source != Source::AutoRollback {
            self.last_auto_rollback = None;
        }
        let window = self.config.reload.verify;
        let deadline = Instant::now() + window;
        let mut list = Vec::new();
        let mut outcomes = BTreeMap::new();
        for (name, periodic) in targets(&report.changes, &self.config) {
            let (Some(handle), Some(cfg)) =
                (self.handles.get(&name), self.config.scripts.get(&name))
            else {
                continue;
            };
            let since = before.get(&name).map_or(1, |r| r + 1);
            outcomes.insert(name.clone(), (since, None));
            list.push(Target {
                name,
                handle: handle.clone(),
                since,
                periodic,
                needs_health: needs_health(cfg),
            });
        }
        if list.is_empty() {
            self.publish_view();
            return;
        }
        let v = Verifying {
            attempt_id: report.attempt_id,
            version: report.version,
            base_version: report.base_version,
            source,
            on_failure: self.config.reload.on_failure,
            deadline_ms: crate::now_ms() + window.as_millis() as i64,
            window,
            outcomes,
            waiters: Vec::new(),
        };
        self.events.reload(proto::ReloadEvent {
            attempt_id: v.attempt_id,
            phase: ReloadPhase::Verifying as i32,
            source: source.as_str().into(),
            version: v.version,
            verification: v.scripts(),
            verify_deadline_ms: v.deadline_ms,
            message: format!(
                "verifying {} script{} within {}",
                v.outcomes.len(),
                if v.outcomes.len() == 1 { "" } else { "s" },
                humantime::format_duration(window)
            ),
            ..Default::default()
        });
        spawn(
            v.attempt_id,
            list,
            deadline,
            self.decided.clone(),
            self.shared.cancel.clone(),
        );
        self.verifying = Some(v);
        self.publish_view();
    }

    /// Keeps `reply` until the verification of `report`'s attempt ends; hands both back when
    /// there is none (nothing to verify: verified).
    pub(super) fn park(&mut self, mut report: Report, reply: Reply) -> Option<(Report, Reply)> {
        match self.verifying.as_mut() {
            Some(v) if v.attempt_id == report.attempt_id => {
                v.waiters.push((report, reply));
                None
            }
            _ => {
                report.verification = Some(Verification {
                    end: VerifyEnd::Verified,
                    scripts: Vec::new(),
                });
                Some((report, reply))
            }
        }
    }

    /// A script's outcome came in; the last one ends the verification.
    pub(super) async fn on_decided(&mut self, d: Decided) {
        let Some(v) = self.verifying.as_mut().filter(|v| v.attempt_id == d.id) else {
            return; // a dropped verification's
        };
        if let Some(slot) = v.outcomes.get_mut(&d.script) {
            slot.1 = Some(d.outcome);
        }
        let done = v.outcomes.values().all(|(_, o)| o.is_some());
        if !done {
            self.publish_view();
            return;
        }
        if let Some(v) = self.verifying.take() {
            self.finish(v).await;
        }
        self.publish_view();
    }

    /// Ends a verification whose every script is decided: verified, kept, or rolled back.
    async fn finish(&mut self, mut v: Verifying) {
        let failed: Vec<String> = v
            .outcomes
            .iter()
            .filter_map(|(name, (_, o))| {
                o.as_ref()
                    .filter(|o| !o.ok())
                    .map(|o| format!("{name} {}: {}", o.word(), o.reason()))
            })
            .collect();
        let event =
            |phase: ReloadPhase, message: String, rollback_attempt_id: u64| proto::ReloadEvent {
                attempt_id: v.attempt_id,
                phase: phase as i32,
                source: v.source.as_str().into(),
                version: v.version,
                verification: v.scripts(),
                message,
                rollback_attempt_id,
                ..Default::default()
            };
        if failed.is_empty() {
            tracing::info!(
                attempt = v.attempt_id,
                version = v.version,
                "reload verified"
            );
            self.events
                .reload(event(ReloadPhase::Verified, String::new(), 0));
            v.answer(VerifyEnd::Verified, "");
            return;
        }
        let why = format!(
            "not verified within {}: {}",
            humantime::format_duration(v.window),
            failed.join("; ")
        );
        let reason = format!("version {} (attempt {}) was {why}", v.version, v.attempt_id);
        // An automatic rollback that fails its own verification is not rolled back again.
        if v.on_failure == OnFailure::Keep || v.source == Source::AutoRollback {
            tracing::warn!(attempt = v.attempt_id, "{reason}; the version stays");
            let message = format!("{reason}; the version stays (reload.on_failure: keep)");
            self.events
                .reload(event(ReloadPhase::VerifyFailed, message.clone(), 0));
            v.answer(VerifyEnd::NotVerified, &message);
            return;
        }
        tracing::warn!(
            attempt = v.attempt_id,
            "{reason}; rolling back to version {}",
            v.base_version
        );
        let req = Request {
            target: Some(v.base_version),
            note: Some(format!(
                "automatic rollback to version {}: {reason}",
                v.base_version
            )),
            ..Request::new(Source::AutoRollback)
        };
        let rolled = self.serve(req).await;
        match rolled {
            Some(r) if r.result == ResultKind::Applied => {
                let message = format!(
                    "{reason}; rolled back to version {} as version {} (attempt {})",
                    v.base_version, r.version, r.attempt_id
                );
                self.last_auto_rollback = Some(proto::AutoRollback {
                    attempt_id: v.attempt_id,
                    failed_version: v.version,
                    version: r.version,
                    restored_version: v.base_version,
                    reason: why,
                    time_ms: crate::now_ms(),
                });
                self.events.reload(event(
                    ReloadPhase::AutoRolledBack,
                    message.clone(),
                    r.attempt_id,
                ));
                v.answer(VerifyEnd::AutoRolledBack(r.version), &message);
            }
            other => {
                let why = other.map_or_else(
                    || format!("version {} is not in the history", v.base_version),
                    |r| r.message,
                );
                let message = format!(
                    "{reason}; the automatic rollback to version {} failed ({why}): the version \
                     stays",
                    v.base_version
                );
                tracing::error!(attempt = v.attempt_id, "{message}");
                self.events
                    .reload(event(ReloadPhase::VerifyFailed, message.clone(), 0));
                v.answer(VerifyEnd::NotVerified, &message);
            }
        }
    }

    /// Publishes what `ctl status` shows.
    fn publish_view(&self) {
        let verifying = self.verifying.as_ref().map(|v| proto::VerifyProgress {
            attempt_id: v.attempt_id,
            version: v.version,
            pending: v
                .outcomes
                .iter()
                .filter(|(_, (_, o))| o.is_none())
                .map(|(n, _)| n.clone())
                .collect(),
            deadline_ms: v.deadline_ms,
            on_failure: v.on_failure.as_str().into(),
        });
        self.view.send_replace(VerifyView {
            verifying,
            last_auto_rollback: self.last_auto_rollback.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ready: bool, failed: Option<u32>, settled: bool) -> Observed {
        Observed {
            ready,
            failed: failed.map(|n| (n, "exit code 1 after 5ms".into())),
            settled,
            state: "starting".into(),
            ..Observed::default()
        }
    }

    #[test]
    fn verdicts() {
        use Outcome::*;
        let how = || "exit code 1 after 5ms".to_string();
        // (periodic, needs health, observed, window over, expected word)
        let table: Vec<(bool, bool, Observed, bool, Option<Outcome>)> = vec![
            (false, false, seen(true, None, false), false, Some(Ready)),
            (true, false, seen(true, None, false), false, Some(Succeeded)),
            // A failed start that is being restarted: undecided until the window ends.
            (false, false, seen(false, Some(1), false), false, None),
            (
                false,
                false,
                seen(false, Some(3), false),
                true,
                Some(CrashLooping(
                    "3 failed starts in a row (each ended before ready_after), the last: exit \
                     code 1 after 5ms"
                        .into(),
                )),
            ),
            // ... and one that nothing restarts is decided at once.
            (
                false,
                false,
                seen(false, Some(1), true),
                false,
                Some(Exited(how())),
            ),
            // A periodic script's first run failing decides at once.
            (
                true,
                false,
                seen(false, Some(1), false),
                false,
                Some(Exited(how())),
            ),
            // A failure followed by a ready run verifies.
            (false, false, seen(true, Some(2), false), false, Some(Ready)),
            // Still starting when the window ends.
            (false, false, seen(false, None, false), false, None),
            (
                false,
                false,
                seen(false, None, false),
                true,
                Some(Timeout("starting".into())),
            ),
            // Stopped (ctl stop) before ready.
            (
                false,
                false,
                Observed {
                    state: "stopped".into(),
                    ..seen(false, None, true)
                },
                false,
                Some(Exited("stopped before it was ready".into())),
            ),
            // Ready but not yet healthy: pending, then probe-failing.
            (false, true, seen(true, None, false), false, None),
            (
                false,
                true,
                Observed {
                    probe_failing: Some("HTTP 500".into()),
                    ..seen(true, None, false)
                },
                true,
                Some(ProbeFailing("HTTP 500".into())),
            ),
            (
                false,
                true,
                Observed {
                    healthy: true,
                    ..seen(true, None, false)
                },
                false,
                Some(Ready),
            ),
        ];
        for (i, (periodic, health, obs, over, want)) in table.into_iter().enumerate() {
            assert_eq!(
                verdict(periodic, health, &obs, over),
                want,
                "row {i}: {obs:?}"
            );
        }
    }

    fn change(script: &str, field: &str, impact: Impact, old: Option<&str>) -> Change {
        Change {
            script: script.into(),
            field: field.into(),
            old: old.map(Into::into),
            new: Some("x".into()),
            impact,
            outcome: ChangeOutcome::Applied,
            reason: String::new(),
        }
    }

    #[test]
    fn what_an_apply_started() {
        let yaml = "scripts:\n\
          \x20 svc: { command: /bin/true }\n\
          \x20 per: { command: /bin/true, interval: 1m }\n\
          \x20 became_per: { command: /bin/true, interval: 1m }\n\
          \x20 added: { command: /bin/true }\n\
          \x20 off: { command: /bin/true, enabled: false }\n\
          \x20 logs: { command: /bin/true }\n\
          \x20 sched: { command: /bin/true, interval: 1m }\n";
        let source = scriptd_common::config::ConfigSource {
            main: "/tmp/scriptd.yaml".into(),
            files: vec![scriptd_common::config::ConfigFile {
                name: "scriptd.yaml".into(),
                content: yaml.into(),
            }],
        };
        let new = scriptd_common::config::validate(&source).expect("valid");
        let mut scheduled = change("sched", "command", Impact::Restart, Some("a"));
        scheduled.outcome = ChangeOutcome::Scheduled;
        let changes = [
            change("", "reload.verify", Impact::Live, Some("30s")),
            change("svc", "command", Impact::Restart, Some("a")),
            change("svc", "env.A", Impact::Restart, Some("a")),
            change("per", "command", Impact::Restart, Some("a")),
            change("became_per", "interval", Impact::Restart, None),
            change("added", "*", Impact::Start, None),
            change("off", "enabled", Impact::Stop, Some("true")),
            change("logs", "log.keep", Impact::Live, Some("3")),
            scheduled,
        ];
        assert_eq!(
            targets(&changes, &new),
            [
                ("added".to_owned(), false),
                ("became_per".to_owned(), true),
                ("svc".to_owned(), false),
            ]
        );
    }
}
