//! Moments and the periodic schedule's math (pure): a [`Stamp`] is read once and shown as
//! it is timed; the next tick skips the ones a long run missed; a changed interval counts
//! from the last start; a calendar schedule's next start is its next slot
//! ([`scriptd_common::schedule`]) as a timer instant; jitter is added to either.

use crate::now_ms;
use scriptd_common::config::CalendarConfig;
use scriptd_common::schedule::{self, jitter_delay};
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

/// The next run after the interval changed: `next`, the new interval (and jitter) after the
/// start of the run going on or of the last one, or `now` when that moment has passed.
pub(super) fn rescheduled(next: Stamp, now: Stamp) -> Stamp {
    if next.at > now.at {
        next
    } else {
        now
    }
}

/// The next start of an interval script whose run starts at `now`: `interval` plus the
/// jitter drawn from `draw` (any random number) later.
pub(super) fn interval_start(
    interval: Duration,
    jitter: Option<Duration>,
    now: Stamp,
    draw: u64,
) -> Stamp {
    now.after(interval.saturating_add(jitter_delay(jitter.unwrap_or_default(), draw)))
}

/// The next start of a calendar script at `now`: its first slot after `now` and after
/// `after_slot` (the last slot it ran or skipped), plus the jitter drawn from `draw`; and
/// that slot (Unix ms). `None` without a schedule, or when the schedule has no next slot.
pub(super) fn calendar_start(
    calendar: &CalendarConfig,
    now: Stamp,
    after_slot: Option<i64>,
    draw: u64,
) -> Option<(Stamp, i64)> {
    let (pattern, zone) = (calendar.schedule.as_ref()?, calendar.timezone.as_ref()?);
    let delay = jitter_delay(calendar.jitter.unwrap_or_default(), draw);
    let planned = schedule::next_start(pattern, zone, now.wall_ms, after_slot, delay)?;
    Some((ahead_of(now, planned.start_ms), planned.slot_ms))
}

/// The moment of wall-clock time `wall_ms` as seen from `now` (`now` itself when it has
/// passed).
fn ahead_of(now: Stamp, wall_ms: i64) -> Stamp {
    let ahead = u64::try_from(wall_ms.saturating_sub(now.wall_ms)).unwrap_or(0);
    now.after(Duration::from_millis(ahead))
}

/// `target` with its timer instant taken again from the wall clock at `now`: after the
/// clock was stepped, a calendar start keeps its wall-clock time.
pub(super) fn realigned(target: Stamp, now: Stamp) -> Stamp {
    Stamp {
        wall_ms: target.wall_ms,
        ..ahead_of(now, target.wall_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scriptd_common::schedule::{Calendar, Zone};

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
            let got = rescheduled(at(base).after(Duration::from_secs(interval)), at(now));
            assert_eq!(got, at(want), "base {base} every {interval} at {now}");
        }
    }

    fn calendar(text: &str, jitter_ms: u64) -> CalendarConfig {
        CalendarConfig {
            schedule: Some(Calendar::parse(text).expect("parses")),
            timezone: Some(Zone::utc()),
            jitter: Some(Duration::from_millis(jitter_ms)),
            catch_up: Some(false),
        }
    }

    #[test]
    fn a_calendar_start_is_its_next_slot_plus_the_jitter() {
        let t0 = Stamp::now();
        // A moment on a whole minute, so that the slots are known.
        let on_minute = t0.after(Duration::from_millis(
            60_000 - u64::try_from(t0.wall_ms.rem_euclid(60_000)).expect("non-negative"),
        ));
        let minute = |m: i64| on_minute.wall_ms + m * 60_000;
        // (jitter ms, draw, after slot, now + ms, (start, slot) in ms from on_minute)
        let table = [
            (0, 7, None, 0, (60_000, 60_000)),
            (0, 7, None, 1, (60_000, 60_000)),
            (1000, 7, None, 0, (60_007, 60_000)),
            (1000, 1001, None, 0, (60_000, 60_000)),
            // The slot just planned is never planned again.
            (0, 0, Some(minute(1)), 59_990, (120_000, 120_000)),
        ];
        for (jitter, draw, after, now_ms, (start, slot)) in table {
            let now = on_minute.after(Duration::from_millis(now_ms));
            let (at, got_slot) =
                calendar_start(&calendar("* * * * *", jitter), now, after, draw).expect("a slot");
            assert_eq!(
                got_slot,
                on_minute.wall_ms + slot,
                "{jitter} {draw} {now_ms}"
            );
            assert_eq!(
                at.wall_ms,
                on_minute.wall_ms + start,
                "{jitter} {draw} {now_ms}"
            );
            assert_eq!(at.at - now.at, Duration::from_millis(start as u64 - now_ms));
        }
        assert_eq!(
            calendar_start(&CalendarConfig::default(), on_minute, None, 0),
            None
        );
    }

    #[test]
    fn an_interval_start_adds_the_jitter() {
        let at = clock();
        let every = Duration::from_secs(10);
        let jitter = Some(Duration::from_secs(5));
        // (draw, next start in ms)
        for (draw, want) in [
            (0, 10_000),
            (4_999, 14_999),
            (5_000, 15_000),
            (5_001, 10_000),
        ] {
            let got = interval_start(every, jitter, at(0), draw);
            assert_eq!(got, at(0).after(Duration::from_millis(want)), "draw {draw}");
        }
        assert_eq!(interval_start(every, None, at(0), 123), at(10));
    }

    #[test]
    fn a_start_keeps_its_wall_clock_time_after_a_clock_step() {
        let at = clock();
        let target = at(100);
        // The clock was set forward by 60 s: the start is 40 s away, not 100.
        let stepped = Stamp {
            wall_ms: at(0).wall_ms + 60_000,
            ..at(0)
        };
        let got = realigned(target, stepped);
        assert_eq!((got.wall_ms, got.at), (target.wall_ms, at(40).at));
        // Set forward past it: due now.
        let past = Stamp {
            wall_ms: at(0).wall_ms + 200_000,
            ..at(0)
        };
        assert_eq!(realigned(target, past).at, past.at);
        // No step: unchanged.
        assert_eq!(realigned(target, at(0)), target);
    }
}
