//! How failed writes to a log file are reported (pure: the caller passes the time and logs
//! what it is told to). A full disk fails every write of a chatty script; the daemon log
//! gets the first failure, then at most one count per [`SUMMARY_EVERY`], and "writable
//! again" only once a write has succeeded — never because a file could be opened (a
//! rotation's reopen succeeds on a full disk). A [`Streak`] of failed writes, with the
//! records dropped meanwhile counted into its reports.

use crate::throttle::{Failure, Streak};
use std::time::{Duration, Instant};

/// At most one summary of failed writes per this long.
pub(super) const SUMMARY_EVERY: Duration = crate::throttle::WINDOW;

/// What to tell the daemon log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    /// The first failure of a streak: say what failed and why.
    First,
    /// Still failing: `failed` writes and `dropped` records since the last report.
    Summary { failed: u64, dropped: u64 },
    /// A write succeeded after a streak of failures: `failed` writes and `dropped` records
    /// since the last report.
    Recovered { failed: u64, dropped: u64 },
}

/// The failure streak of one log file: a [`Streak`] of failed writes (and opens), and the
/// records dropped meanwhile, which go into its reports.
#[derive(Debug)]
pub(super) struct WriteFailures {
    writes: Streak,
    /// Records dropped since the last report (too many kept for a retry).
    dropped: u64,
}

impl Default for WriteFailures {
    fn default() -> Self {
        Self {
            writes: Streak::new(SUMMARY_EVERY),
            dropped: 0,
        }
    }
}

impl WriteFailures {
    /// True while a streak of failures goes on.
    pub(super) fn is_failing(&self) -> bool {
        self.writes.is_failing()
    }

    /// A write (or the open before it) failed at `now`.
    pub(super) fn failed(&mut self, now: Instant) -> Option<Report> {
        Some(match self.writes.failed(now)? {
            Failure::First => Report::First,
            Failure::Summary { failed } => Report::Summary {
                failed,
                dropped: std::mem::take(&mut self.dropped),
            },
        })
    }

    /// `n` records kept for a retry were dropped at `now`: reported with the streak's next
    /// summary, or at once when none is going on.
    pub(super) fn dropped(&mut self, n: u64, now: Instant) -> Option<Report> {
        if n == 0 {
            return None;
        }
        self.dropped += n;
        let failed = if self.writes.is_failing() {
            self.writes.due(now)?
        } else {
            0
        };
        Some(Report::Summary {
            failed,
            dropped: std::mem::take(&mut self.dropped),
        })
    }

    /// A write succeeded.
    pub(super) fn succeeded(&mut self) -> Option<Report> {
        let failed = self.writes.succeeded()?;
        Some(Report::Recovered {
            failed,
            dropped: std::mem::take(&mut self.dropped),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a streak: what happens, seconds after the start.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Fail(u64),
        Drop(u64, u64),
        Ok,
    }

    fn run(steps: &[Step]) -> Vec<Option<Report>> {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = WriteFailures::default();
        steps
            .iter()
            .map(|&step| match step {
                Step::Fail(s) => w.failed(at(s)),
                Step::Drop(n, s) => w.dropped(n, at(s)),
                Step::Ok => w.succeeded(),
            })
            .collect()
    }

    #[test]
    fn streaks_are_reported_once_then_counted() {
        use Report::*;
        use Step::*;
        let none = None;
        type Case = (&'static str, Vec<Step>, Vec<Option<Report>>);
        let table: Vec<Case> = vec![
            (
                "a success alone says nothing",
                vec![Ok, Ok],
                vec![none, none],
            ),
            (
                "the first failure is reported, the next ones are not",
                vec![Fail(0), Fail(1), Fail(2)],
                vec![Some(First), none, none],
            ),
            (
                "a count at most once a minute",
                vec![
                    Fail(0),
                    Fail(1),
                    Fail(30),
                    Fail(60),
                    Fail(61),
                    Fail(119),
                    Fail(120),
                ],
                vec![
                    Some(First),
                    none,
                    none,
                    Some(Summary {
                        failed: 3,
                        dropped: 0,
                    }),
                    none,
                    none,
                    Some(Summary {
                        failed: 3,
                        dropped: 0,
                    }),
                ],
            ),
            (
                "dropped records are counted into the summary",
                vec![Fail(0), Drop(5, 10), Drop(7, 20), Fail(60)],
                vec![
                    Some(First),
                    none,
                    none,
                    Some(Summary {
                        failed: 1,
                        dropped: 12,
                    }),
                ],
            ),
            (
                "writable again only after a success, with what happened since the last report",
                vec![Fail(0), Fail(1), Drop(2, 2), Ok, Ok],
                vec![
                    Some(First),
                    none,
                    none,
                    Some(Recovered {
                        failed: 1,
                        dropped: 2,
                    }),
                    none,
                ],
            ),
            (
                "a new streak after a recovery is reported again",
                vec![Fail(0), Ok, Fail(1), Fail(2)],
                vec![
                    Some(First),
                    Some(Recovered {
                        failed: 0,
                        dropped: 0,
                    }),
                    Some(First),
                    none,
                ],
            ),
        ];
        for (what, steps, want) in table {
            assert_eq!(run(&steps), want, "{what}");
        }
    }
}
