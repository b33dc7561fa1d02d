//! Moments and the periodic schedule's math (pure): a [`Stamp`] is read once and shown as
//! it is timed; the next tick skips the ones a long run missed; a changed interval counts
//! from the last start.

use crate::now_ms;
use std::time::Duration;
use tokio::time::Instant;

/// A moment as a monotonic instant (what timers use) and as wall-clock milliseconds (what
/// status shows), read together once: a time derived from another (the next run from the
/// last start) is shown exactly that far from it, and does not move between two `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    /// For timers.
    pub(super) at: Instant,
    /// For people: Unix milliseconds.
    pub(super) wall_ms: i64,
}

impl Stamp {
    /// Now.
    pub(super) fn now() -> Self {
        Self {
            at: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    /// `d` later.
    pub(super) fn after(self, d: Duration) -> Self {
        let at = later(self.at, d);
        Self {
            at,
            wall_ms: self
                .wall_ms
                .saturating_add(i64::try_from(millis(at - self.at)).unwrap_or(i64::MAX)),
        }
    }
}

/// `at + d`, without the panic of `+` on overflow: validation caps durations at 100 years,
/// and a far future is as good as never.
pub(super) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(scriptd_common::units::MAX_DURATION))
        .unwrap_or(at)
}

/// Whole milliseconds of `d` (saturating).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people, to the millisecond.
pub(super) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(millis(d))).to_string()
}

/// The next tick of a schedule every `interval` from `next` that is still ahead of `now`:
/// ticks that came while the previous run was going are skipped, not made up for.
pub(super) fn next_tick_after(next: Stamp, interval: Duration, now: Instant) -> Stamp {
    let mut next = next;
    while next.at <= now {
        next = next.after(interval);
    }
    next
}

/// The next run after the interval changed: `interval` after `base` (the start of the run
/// going on, or of the last one), or `now` when that moment has passed.
pub(super) fn rescheduled(base: Stamp, interval: Duration, now: Stamp) -> Stamp {
    let next = base.after(interval);
    if next.at > now.at {
        next
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_stamp_later_shows_exactly_that_much_later(ms in 0u64..3_153_600_000_000) {
            let now = Stamp::now();
            let next = now.after(Duration::from_millis(ms));
            proptest::prop_assert_eq!(next.wall_ms - now.wall_ms, ms as i64);
            proptest::prop_assert_eq!(next.at - now.at, Duration::from_millis(ms));
        }
    }

    /// Moments `s` seconds after one base moment.
    fn clock() -> impl Fn(u64) -> Stamp {
        let t0 = Stamp::now();
        move |s| t0.after(Duration::from_secs(s))
    }

    #[test]
    fn missed_ticks_are_skipped() {
        let at = clock();
        // (next tick due, interval, now, next tick after now), in seconds
        let table = [
            (10, 10, 5, 10),
            (10, 10, 10, 20),
            (10, 10, 11, 20),
            (10, 10, 29, 30),
            (10, 10, 30, 40),
            (10, 3, 100, 103),
            (10, 60, 11, 70),
        ];
        for (next, interval, now, want) in table {
            let got = next_tick_after(at(next), Duration::from_secs(interval), at(now).at);
            assert_eq!(got, at(want), "next {next} every {interval} at {now}");
        }
    }

    #[test]
    fn a_changed_interval_counts_from_the_base_never_before_now() {
        let at = clock();
        // (base, new interval, now, next run), in seconds
        let table = [
            (0, 60, 10, 60),
            (0, 5, 10, 10),
            (0, 10, 10, 10),
            (0, 11, 10, 11),
            (30, 60, 40, 90),
        ];
        for (base, interval, now, want) in table {
            let got = rescheduled(at(base), Duration::from_secs(interval), at(now));
            assert_eq!(got, at(want), "base {base} every {interval} at {now}");
        }
    }
}
