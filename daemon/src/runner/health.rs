//! The verdict of a service's health probe, owned by its runner: the probe task of the run
//! ([`crate::health`]) sends each result here; [`Verdict::record`] (pure) decides whether
//! the service turned healthy or unhealthy; the runner publishes the event, writes the
//! `sys` line and, with `health.restart`, restarts the service through the restart path
//! (counted as a restart, with the backoff of a crash).

use super::Runner;
use crate::health::{self, ProbeResult, Target};
use scriptd_common::config::HealthConfig;
use scriptd_common::proto::{HealthState, HealthStatus, ScriptEventKind};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

/// A change of the verdict, to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turned {
    /// The first success of the run, or a success after it was unhealthy.
    Healthy,
    /// `failures` failures in a row that count.
    Unhealthy,
}

/// What the probe results of one run add up to (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Failures in a row that make the service unhealthy.
    failures: u32,
    /// Failures this soon after the start, before the first success, do not count.
    start_period: Duration,
    pub(super) state: HealthState,
    /// A probe of this run has succeeded.
    succeeded: bool,
    /// Failures in a row that count.
    pub(super) consecutive: u32,
}

impl Verdict {
    pub(super) fn new(cfg: &HealthConfig) -> Self {
        Self {
            failures: cfg.failures.max(1),
            start_period: cfg.start_period,
            state: HealthState::Unknown,
            succeeded: false,
            consecutive: 0,
        }
    }

    /// Takes one result, `since_start` after the run started; says whether the verdict
    /// changed.
    pub(super) fn record(&mut self, ok: bool, since_start: Duration) -> Option<Turned> {
        if ok {
            self.succeeded = true;
            self.consecutive = 0;
            if self.state == HealthState::Healthy {
                return None;
            }
            self.state = HealthState::Healthy;
            return Some(Turned::Healthy);
        }
        if !self.succeeded && since_start < self.start_period {
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive < self.failures || self.state == HealthState::Unhealthy {
            return None;
        }
        self.state = HealthState::Unhealthy;
        Some(Turned::Unhealthy)
    }
}

/// The probe of the current run.
pub(super) struct Probing {
    run_id: u64,
    started: Instant,
    pub(super) verdict: Verdict,
    /// Where the probe task sends its results: created with the probe, so a script without
    /// one (or not running) holds no channel.
    pub(super) results: mpsc::Receiver<Box<ProbeResult>>,
    /// Dropping it stops the probe task.
    _task: DropGuard,
}

impl Runner {
    /// Starts probing the current run when the script has a probe (a run starts, or a
    /// reload changed the probe of a running service: it starts over, the service is not
    /// touched). Without a probe, whatever probed before stops.
    pub(super) fn start_probe(&mut self) {
        self.probing = None;
        let (Some(cfg), Some(run)) = (self.cfg.health.clone(), self.run.as_ref()) else {
            self.tally.health = None;
            return;
        };
        if run.stopping {
            return;
        }
        let (run_id, started) = (run.id, run.started.at);
        self.tally.health = Some(Box::new(HealthStatus {
            state: HealthState::Unknown as i32,
            probe: cfg.probe.describe(),
            ..Default::default()
        }));
        let verdict = Verdict::new(&cfg);
        let (tx, results) = mpsc::channel(4);
        let target = Target {
            name: self.name.clone(),
            run_id,
            script: self.cfg.clone(),
            health: cfg,
            shared: self.shared.clone(),
        };
        self.probing = Some(Probing {
            run_id,
            started,
            verdict,
            results,
            _task: health::start(target, started, tx),
        });
    }

    /// True while the current run's probe says unhealthy.
    pub(super) fn unhealthy(&self) -> bool {
        self.run.is_some()
            && self
                .probing
                .as_ref()
                .is_some_and(|p| p.verdict.state == HealthState::Unhealthy)
    }

    /// A probe result: recorded in the status; a change of the verdict is announced (event,
    /// `sys` line) and, unhealthy with `health.restart`, the service is stopped and then
    /// restarted with the restart backoff.
    pub(super) fn on_probe(&mut self, result: ProbeResult) {
        let stopping = self.run.as_ref().is_none_or(|r| r.stopping);
        let Some(probing) = self.probing.as_mut().filter(|p| p.run_id == result.run_id) else {
            return; // from a run or a probe config that is gone
        };
        if stopping {
            return;
        }
        let turned = probing.verdict.record(result.ok, probing.started.elapsed());
        let verdict = probing.verdict;
        if let Some(h) = self.tally.health.as_mut() {
            h.state = verdict.state as i32;
            h.last_ok = Some(result.ok);
            h.last_probe_ms = result.at_ms;
            h.consecutive_failures = verdict.consecutive;
            h.message = result.message.clone();
        }
        let restart = self.cfg.health.as_ref().is_some_and(|h| h.restart);
        match turned {
            None => {}
            Some(Turned::Healthy) => {
                tracing::info!(script = %self.name, run = result.run_id, "healthy: {}", result.message);
                self.logs.system(
                    result.run_id,
                    format!("health: healthy ({})", result.message),
                );
                self.event(ScriptEventKind::Healthy, result.message, None);
            }
            Some(Turned::Unhealthy) => {
                let what = format!(
                    "{} failed probe(s) in a row, the last: {}",
                    verdict.consecutive, result.message
                );
                let then = if restart {
                    "; restarting it (health.restart)"
                } else {
                    "; not restarted (health.restart: false)"
                };
                tracing::warn!(script = %self.name, run = result.run_id, "unhealthy: {what}{then}");
                self.logs
                    .system(result.run_id, format!("health: unhealthy: {what}{then}"));
                self.event(ScriptEventKind::Unhealthy, format!("{what}{then}"), None);
                if restart {
                    if let Some(run) = self.run.as_mut() {
                        run.unhealthy = true;
                    }
                    self.begin_stop();
                }
            }
        }
    }

    /// A reload changed the config from `old`: a changed probe starts over.
    pub(super) fn probe_config_changed(&mut self, old: &Option<HealthConfig>) {
        if *old != self.cfg.health {
            self.start_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scriptd_common::config::Probe;

    fn verdict(failures: u32, start_period_ms: u64) -> Verdict {
        Verdict::new(&HealthConfig {
            probe: Probe::Tcp("127.0.0.1:1".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures,
            start_period: Duration::from_millis(start_period_ms),
            restart: true,
        })
    }

    proptest::proptest! {
        /// Whatever the results: a change of the verdict is announced exactly when the
        /// state changes, announcements alternate, a success is always healthy, and
        /// unhealthy is announced at exactly `failures` failures that count.
        #[test]
        fn verdicts_follow_the_results(
            failures in 1u32..5,
            start_period in 0u64..50,
            steps in proptest::collection::vec((proptest::bool::ANY, 0u64..10), 0..60),
        ) {
            let mut v = verdict(failures, start_period);
            let (mut at, mut last) = (0, None);
            for (ok, step) in steps {
                at += step;
                let before = v.state;
                let turned = v.record(ok, Duration::from_millis(at));
                proptest::prop_assert_eq!(turned.is_some(), v.state != before);
                if let Some(turn) = turned {
                    proptest::prop_assert_ne!(Some(turn), last);
                    last = Some(turn);
                }
                if ok {
                    proptest::prop_assert_eq!((v.state, v.consecutive), (HealthState::Healthy, 0));
                }
                if turned == Some(Turned::Unhealthy) {
                    proptest::prop_assert_eq!(v.consecutive, failures);
                }
            }
        }
    }

    #[test]
    fn results_add_up_to_a_verdict() {
        use HealthState::{Healthy, Unhealthy, Unknown};
        let (h, u) = (Some(Turned::Healthy), Some(Turned::Unhealthy));
        // (failures, start_period ms, [(ok, ms since start, turned, state, consecutive)])
        type Step = (bool, u64, Option<Turned>, HealthState, u32);
        let table: &[(u32, u64, &[Step])] = &[
            // The first success is announced, later ones are not.
            (
                3,
                0,
                &[(true, 10, h, Healthy, 0), (true, 20, None, Healthy, 0)],
            ),
            // Three failures in a row, once; a success recovers.
            (
                3,
                0,
                &[
                    (true, 10, h, Healthy, 0),
                    (false, 20, None, Healthy, 1),
                    (false, 30, None, Healthy, 2),
                    (false, 40, u, Unhealthy, 3),
                    (false, 50, None, Unhealthy, 4),
                    (true, 60, h, Healthy, 0),
                ],
            ),
            // A success in between starts the count over.
            (
                2,
                0,
                &[
                    (false, 10, None, Unknown, 1),
                    (true, 20, h, Healthy, 0),
                    (false, 30, None, Healthy, 1),
                    (true, 40, None, Healthy, 0),
                    (false, 50, None, Healthy, 1),
                ],
            ),
            // Never healthy: unhealthy after `failures`.
            (
                2,
                0,
                &[(false, 10, None, Unknown, 1), (false, 20, u, Unhealthy, 2)],
            ),
            // Failures within start_period before the first success do not count...
            (
                1,
                100,
                &[
                    (false, 10, None, Unknown, 0),
                    (false, 99, None, Unknown, 0),
                    (false, 100, u, Unhealthy, 1),
                ],
            ),
            // ...after the first success they do.
            (
                1,
                100,
                &[(true, 10, h, Healthy, 0), (false, 20, u, Unhealthy, 1)],
            ),
            // failures: 1 turns at the first failure that counts.
            (1, 0, &[(false, 1, u, Unhealthy, 1)]),
        ];
        for (case, (failures, start_period, steps)) in table.iter().enumerate() {
            let mut v = verdict(*failures, *start_period);
            for (i, (ok, at, turned, state, consecutive)) in steps.iter().enumerate() {
                let got = v.record(*ok, Duration::from_millis(*at));
                assert_eq!(
                    (got, v.state, v.consecutive),
                    (*turned, *state, *consecutive),
                    "case {case}, step {i}"
                );
            }
        }
    }
}
