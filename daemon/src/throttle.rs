//! "Once, then a count": reports of something that can repeat without bound (refused calls,
//! connections over a cap, accepts failing at the descriptor limit) are logged the first
//! time for a key, then held back and summed, and the sum is reported at most once per
//! window. Pure: the caller passes the time and logs what it is told to.

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
                v.insert(Window {
                    opened: now,
                    held_back: 0,
                });
                Verdict::Report { held_back: 0 }
            }
            Entry::Occupied(mut o) => {
                let w = o.get_mut();
                if now.saturating_duration_since(w.opened) >= self.window {
                    let held_back = w.held_back;
                    *w = Window {
                        opened: now,
                        held_back: 0,
                    };
                    Verdict::Report { held_back }
                } else {
                    w.held_back += 1;
                    Verdict::HoldBack
                }
            }
        }
    }

    /// The counts held back in windows that have closed by `now`, to be logged as summaries
    /// (each opens a new window); keys whose window closed with nothing held back are
    /// forgotten. Call it about once per window.
    pub fn due(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut out = Vec::new();
        let window = self.window;
        self.keys.retain(|key, w| {
            if now.saturating_duration_since(w.opened) < window {
                return true;
            }
            if w.held_back == 0 {
                return false;
            }
            out.push((key.clone(), w.held_back));
            *w = Window {
                opened: now,
                held_back: 0,
            };
            true
        });
        out
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
}
