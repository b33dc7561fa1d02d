//! "Once, then a count": reports of something that can repeat without bound are logged the
//! first time, then held back and summed, and the sum is reported at most once per window.
//! Pure: the caller passes the time and logs what it is told to.
//!
//! - [`Throttle`]: per key, for occurrences that have no end (refused calls, connections
//!   over a cap, accepts failing at the descriptor limit); a timer collects the summaries of
//!   quiet keys ([`Throttle::due`]).
//! - [`Streak`]: one thing failing until it works again (writes to a log file, group
//!   records in a full `state_dir`): the first failure, then a count at most once per
//!   window, and the end of the streak with what was held back since the last report.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a summary of held-back reports may be logged, per key.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `held_back` occurrences of the same key were not logged since the last report.
    Report {
        /// Occurrences held back before this one.
        held_back: u64,
    },
    /// Do not log it: it is counted for the next summary.
    HoldBack,
}

/// The window of one key: when its last report was made and what was held back since.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    held_back: u64,
}

impl Window {
    /// A window opened by a report at `now`.
    fn open(now: Instant) -> Self {
        Self {
            opened: now,
            held_back: 0,
        }
    }

    fn is_closed(&self, now: Instant, length: Duration) -> bool {
        now.saturating_duration_since(self.opened) >= length
    }

    /// A report made at `now` opens the next window; returns what this one held back.
    fn reopen(&mut self, now: Instant) -> u64 {
        std::mem::replace(self, Self::open(now)).held_back
    }

    /// One more occurrence: reported if the window has closed, otherwise held back.
    fn hit(&mut self, now: Instant, length: Duration) -> Verdict {
        if self.is_closed(now, length) {
            Verdict::Report {
                held_back: self.reopen(now),
            }
        } else {
            self.held_back += 1;
            Verdict::HoldBack
        }
    }
}

/// Report windows per key (a uid, or `()` for a single kind of event). Keys whose window
/// closes with nothing held back are forgotten by [`Throttle::due`], so memory follows the
/// keys active in the last window or two.
#[derive(Debug)]
pub struct Throttle<K> {
    window: Duration,
    keys: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// At most one report per `window` and key.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            keys: HashMap::new(),
        }
    }

    /// One occurrence for `key` at `now`: reported when it is the first, or when the key's
    /// window has closed; otherwise held back.
    pub fn hit(&mut self, key: K, now: Instant) -> Verdict {
        match self.keys.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Window::open(now));
                Verdict::Report { held_back: 0 }
            }
            Entry::Occupied(mut o) => o.get_mut().hit(now, self.window),
        }
    }

    /// The counts held back in windows that have closed by `now`, to be logged as summaries
    /// (each opens a new window); keys whose window closed with nothing held back are
    /// forgotten. Call it about once per window.
    pub fn due(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut out = Vec::new();
        let window = self.window;
        self.keys.retain(|key, w| {
            if !w.is_closed(now, window) {
                return true;
            }
            if w.held_back == 0 {
                return false;
            }
            out.push((key.clone(), w.reopen(now)));
            true
        });
        out
    }
}

/// What to log about a failure in a [`Streak`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first failure of a streak: say what failed and why.
    First,
    /// Still failing: `failed` failures since the last report, this one included.
    Summary {
        /// Failures since the last report.
        failed: u64,
    },
}

/// A streak of failures of one thing, which ends when it works again: the first failure is
/// reported, the next ones are counted and reported as one summary at most once per window,
/// and the end is reported (never because something else worked: the caller says when the
/// thing itself did).
#[derive(Debug)]
pub struct Streak {
    window: Duration,
    /// The window of the streak going on.
    current: Option<Window>,
}

impl Streak {
    /// At most one summary per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            current: None,
        }
    }

    /// True while a streak goes on.
    pub fn is_failing(&self) -> bool {
        self.current.is_some()
    }

    /// A failure at `now`.
    pub fn failed(&mut self, now: Instant) -> Option<Failure> {
        let Some(w) = self.current.as_mut() else {
            self.current = Some(Window::open(now));
            return Some(Failure::First);
        };
        match w.hit(now, self.window) {
            Verdict::Report { held_back } => Some(Failure::Summary {
                failed: held_back + 1,
            }),
            Verdict::HoldBack => None,
        }
    }

    /// While a streak goes on and its window has closed by `now`: a summary is due for
    /// something counted beside the failures (it opens the next window); returns the
    /// failures held back.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let w = self.current.as_mut()?;
        w.is_closed(now, self.window).then(|| w.reopen(now))
    }

    /// It worked: ends the streak, if one was going on, and returns the failures since its
    /// last report (to be logged with the news that it works again).
    pub fn succeeded(&mut self) -> Option<u64> {
        self.current.take().map(|w| w.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn first_reported_then_held_back_then_summed_once_per_window() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Throttle::new(W);
        // (time, key, expected verdict)
        let table = [
            (0, 1, Verdict::Report { held_back: 0 }),
            (1, 1, Verdict::HoldBack),
            (2, 1, Verdict::HoldBack),
            (2, 2, Verdict::Report { held_back: 0 }),
            (59, 1, Verdict::HoldBack),
            (60, 1, Verdict::Report { held_back: 3 }),
            (61, 1, Verdict::HoldBack),
            (62, 2, Verdict::Report { held_back: 0 }),
        ];
        for (s, key, want) in table {
            assert_eq!(t.hit(key, at(s)), want, "t={s} key={key}");
        }
    }

    #[test]
    fn summaries_come_due_when_the_window_closes_and_quiet_keys_are_forgotten() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Throttle::new(W);
        t.hit("a", at(0));
        for _ in 0..1999 {
            t.hit("a", at(1));
        }
        t.hit("b", at(0));
        assert_eq!(t.due(at(30)), Vec::new(), "no window has closed");
        assert_eq!(t.due(at(60)), vec![("a", 1999)]);
        assert_eq!(t.keys.len(), 1, "b had nothing held back and is forgotten");
        // The summary opened a new window for a.
        assert_eq!(t.hit("a", at(61)), Verdict::HoldBack);
        assert_eq!(t.due(at(119)), Vec::new());
        assert_eq!(t.due(at(120)), vec![("a", 1)]);
        assert_eq!(t.due(at(180)), Vec::new());
        assert!(t.keys.is_empty());
        assert_eq!(t.hit("a", at(181)), Verdict::Report { held_back: 0 });
    }

    #[test]
    fn a_streak_is_reported_when_it_starts_counted_and_ended() {
        use Failure::{First, Summary};
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        /// One step: a failure, a check for a due summary, or a success, at a second.
        #[derive(Debug, Clone, Copy)]
        enum Step {
            Fail(u64),
            Due(u64),
            Ok,
        }
        use Step::{Due, Fail, Ok};
        let mut s = Streak::new(W);
        // (step, expected report of a failure, expected count from `due` or a success)
        let table: &[(Step, Option<Failure>, Option<u64>)] = &[
            (Ok, None, None),
            (Due(0), None, None),
            (Fail(0), Some(First), None),
            (Fail(1), None, None),
            (Due(30), None, None),
            (Fail(30), None, None),
            (Fail(60), Some(Summary { failed: 3 }), None),
            (Fail(61), None, None),
            (Due(120), None, Some(1)),
            (Fail(121), None, None),
            (Ok, None, Some(1)),
            (Ok, None, None),
            (Due(500), None, None),
            (Fail(500), Some(First), None),
            (Fail(560), Some(Summary { failed: 1 }), None),
            (Ok, None, Some(0)),
        ];
        for &(step, report, count) in table {
            let got = match step {
                Fail(t) => (s.failed(at(t)), None),
                Due(t) => (None, s.due(at(t))),
                Ok => (None, s.succeeded()),
            };
            assert_eq!(got, (report, count), "{step:?}");
            match step {
                Fail(_) => assert!(s.is_failing(), "{step:?}"),
                Ok => assert!(!s.is_failing(), "{step:?}"),
                Due(_) => {}
            }
        }
    }
}
