//! One script's runs as the metrics count them: how each ended and how long it took.

use prometheus_client::metrics::histogram::Histogram;
use scriptd_common::proto::ExitInfo;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds (seconds) of the run duration histogram: from a quick job to a service
/// that runs for a day.
const RUN_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
];

/// How a run ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// Exit code 0.
    Ok,
    /// Any other exit code, or the run could not start.
    Failed,
    /// Ended by a signal (a stop, the OOM killer, a crash).
    Killed,
    /// Stopped because it passed its timeout.
    TimedOut,
}

impl RunResult {
    /// Every result, in the order the metrics list them.
    pub const ALL: [RunResult; 4] = [Self::Ok, Self::Failed, Self::Killed, Self::TimedOut];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::TimedOut => "timed-out",
        }
    }

    /// How the run that ended with `exit` counts.
    pub fn of(exit: &ExitInfo) -> Self {
        if exit.timed_out {
            Self::TimedOut
        } else if exit.signal.is_some() {
            Self::Killed
        } else if exit.code == Some(0) {
            Self::Ok
        } else {
            Self::Failed
        }
    }
}

/// One script's ended runs: a count per result and a histogram of durations. Shared by the
/// script's runner (which adds to it) and the scrapes (which read it).
#[derive(Debug)]
pub struct RunCounters {
    ended: [AtomicU64; 4],
    durations: Histogram,
}

impl Default for RunCounters {
    fn default() -> Self {
        Self {
            ended: Default::default(),
            durations: Histogram::new(RUN_BUCKETS),
        }
    }
}

impl RunCounters {
    /// A run ended with `exit`; one that never started (no start time) has no duration.
    pub fn ended(&self, exit: &ExitInfo) {
        let result = RunResult::of(exit);
        self.ended[result as usize].fetch_add(1, Ordering::Relaxed);
        if exit.started_at_ms != 0 {
            self.durations.observe(exit.duration_ms as f64 / 1000.0);
        }
    }

    /// Runs ended with `result` so far.
    pub fn count(&self, result: RunResult) -> u64 {
        self.ended[result as usize].load(Ordering::Relaxed)
    }

    /// The duration histogram.
    pub fn durations(&self) -> &Histogram {
        &self.durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_end_counts_as_one_result() {
        let exit = |code: Option<i32>, signal: Option<i32>, timed_out: bool| ExitInfo {
            code,
            signal,
            timed_out,
            started_at_ms: 1,
            duration_ms: 1500,
            ..Default::default()
        };
        let cases = [
            (exit(Some(0), None, false), RunResult::Ok),
            (exit(Some(3), None, false), RunResult::Failed),
            (exit(Some(127), None, false), RunResult::Failed),
            (exit(None, Some(9), false), RunResult::Killed),
            (exit(None, Some(15), true), RunResult::TimedOut),
            (exit(Some(0), None, true), RunResult::TimedOut),
        ];
        let c = RunCounters::default();
        for (e, want) in &cases {
            assert_eq!(RunResult::of(e), *want, "{e:?}");
            c.ended(e);
        }
        let counts: Vec<_> = RunResult::ALL.iter().map(|r| c.count(*r)).collect();
        assert_eq!(counts, [1, 2, 1, 2]);
        // A start that failed has no duration.
        c.ended(&ExitInfo {
            code: Some(127),
            ..Default::default()
        });
        assert_eq!(c.count(RunResult::Failed), 3);
    }
}
