//! Calendar schedules (pure): a cron `schedule` in a time zone, the next slot after a moment,
//! a start delayed by `jitter`, and whether a slot was missed while the daemon was down
//! (`catch_up`).
//!
//! The cron expressions are parsed and searched by `croner` (Vixie-cron fields plus an
//! optional leading seconds field, `@hourly` … `@yearly`), on `jiff` zoned times, so a time
//! that a clock change skips or repeats follows cron's rules: a slot in a spring-forward gap
//! runs once, at the first instant after the gap; a slot at a fixed time that the fall-back
//! repeats runs once, at its first occurrence (a pattern whose hour field is a wildcard or
//! a step, `*/15 * * * *`, fires in both passes, as in cron). Moments are Unix milliseconds,
//! as the daemon keeps them; nothing here reads the clock.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Serialize, Serializer};
use std::time::Duration;

/// Why a schedule or a time zone is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error(
        "invalid cron expression {text:?}: {reason}; write 5 fields (minute hour day-of-month \
         month day-of-week, e.g. \"30 3 * * *\"), 6 with seconds first, or @hourly, @daily, \
         @weekly, @monthly, @yearly"
    )]
    Pattern {
        /// As written.
        text: String,
        /// What croner said.
        reason: String,
    },
    /// The expression parses but names no moment that exists (`0 0 30 2 *`).
    #[error("cron expression {0:?} never matches a date (is the day of month past the end of the month?)")]
    NeverMatches(String),
    /// The time zone is not in the time zone database.
    #[error(
        "unknown time zone {name:?} ({reason}); use an IANA name such as \"Europe/Berlin\", \
         \"America/New_York\" or \"UTC\""
    )]
    Zone {
        /// As written.
        name: String,
        /// What the database said.
        reason: String,
    },
}

/// A validated cron expression, compared and shown as written.
#[derive(Debug, Clone)]
pub struct Calendar {
    text: String,
    cron: Cron,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for Calendar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Where [`Calendar::parse`] looks for a first match: any pattern that matches some date
/// matches one within the 8 years after it (a 29 February at most 8 years on).
const PROBE_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

impl Calendar {
    /// Parses 5 fields, 6 with seconds first, or an `@` alias, and checks that it matches
    /// some date.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text.trim())
            .map_err(|e| ScheduleError::Pattern {
                text: text.to_owned(),
                reason: e.to_string(),
            })?;
        let calendar = Self {
            text: text.to_owned(),
            cron,
        };
        if calendar.next_after(&Zone::utc(), PROBE_MS).is_none() {
            return Err(ScheduleError::NeverMatches(text.to_owned()));
        }
        Ok(calendar)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first slot strictly after `after_ms` in `zone`; `None` when there is none
    /// (croner gives up after a search limit of years).
    pub fn next_after(&self, zone: &Zone, after_ms: i64) -> Option<i64> {
        let from = zoned(zone, after_ms)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The latest slot at or before `at_ms` in `zone`.
    pub fn latest_at_or_before(&self, zone: &Zone, at_ms: i64) -> Option<i64> {
        let from = zoned(zone, at_ms)?;
        let prev = self.cron.find_previous_occurrence(&from, true).ok()?;
        Some(prev.timestamp().as_millisecond())
    }
}

fn zoned(zone: &Zone, ms: i64) -> Option<Zoned> {
    Some(
        Timestamp::from_millisecond(ms)
            .ok()?
            .to_zoned(zone.tz().clone()),
    )
}

/// The time zone of a schedule: one named in the config, or the daemon's local one.
#[derive(Debug, Clone)]
pub enum Zone {
    /// The daemon's local time zone (`TZ`, else `/etc/localtime`, else UTC), shown `local`.
    Local(TimeZone),
    /// An IANA time zone by name.
    Named(String, TimeZone),
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Zone {
    /// The daemon's local zone. Reads `TZ` or `/etc/localtime` (jiff caches it).
    pub fn local() -> Self {
        Self::Local(TimeZone::system())
    }

    /// UTC.
    pub fn utc() -> Self {
        Self::Named("UTC".into(), TimeZone::UTC)
    }

    /// A zone of the time zone database (the system's `/usr/share/zoneinfo`, else the copy
    /// built into scriptd). Reads the disk the first time a name is asked for.
    pub fn named(name: &str) -> Result<Self, ScheduleError> {
        TimeZone::get(name)
            .map(|tz| Self::Named(name.to_owned(), tz))
            .map_err(|e| ScheduleError::Zone {
                name: name.to_owned(),
                reason: e.to_string(),
            })
    }

    /// `local` or the name as written.
    pub fn name(&self) -> &str {
        match self {
            Self::Local(_) => "local",
            Self::Named(name, _) => name,
        }
    }

    /// The zone's rules.
    pub fn tz(&self) -> &TimeZone {
        match self {
            Self::Local(tz) | Self::Named(_, tz) => tz,
        }
    }
}

/// A planned start: the slot it is for and the moment it starts (the slot plus the jitter
/// delay), in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The slot of the schedule.
    pub slot_ms: i64,
    /// When the run starts.
    pub start_ms: i64,
}

/// The next start of `calendar` in `zone`: the first slot after both `now_ms` and
/// `last_slot_ms` (a slot that was planned once is never planned again, also when the clock
/// was set back a little), started `delay` after it (`delay`: the jitter drawn for this
/// start, see [`jitter_delay`]).
pub fn next_start(
    calendar: &Calendar,
    zone: &Zone,
    now_ms: i64,
    last_slot_ms: Option<i64>,
    delay: Duration,
) -> Option<Planned> {
    let after = last_slot_ms.map_or(now_ms, |last| last.max(now_ms));
    let slot_ms = calendar.next_after(zone, after)?;
    Some(Planned {
        slot_ms,
        start_ms: slot_ms.saturating_add(millis_i64(delay)),
    })
}

/// The delay `jitter` adds to one start, from `draw`, a uniformly random number (the caller's
/// RNG): uniform in `[0, jitter]`, to the millisecond.
pub fn jitter_delay(jitter: Duration, draw: u64) -> Duration {
    let span = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    match span.checked_add(1) {
        Some(n) => Duration::from_millis(draw % n),
        None => Duration::from_millis(draw),
    }
}

/// `catch_up` at start: the latest slot of `calendar` that came after the slot of the last
/// recorded start (`last_slot_ms`) and by `now_ms`, if any: a run was missed while the
/// daemon was down, and one run (however many slots passed) is due now. Without a record
/// nothing was missed that can be told.
pub fn missed_slot(
    calendar: &Calendar,
    zone: &Zone,
    last_slot_ms: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    let last = last_slot_ms?;
    let latest = calendar.latest_at_or_before(zone, now_ms)?;
    (latest > last).then_some(latest)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn cal(text: &str) -> Calendar {
        Calendar::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn zone(name: &str) -> Zone {
        Zone::named(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Unix ms of a wall-clock time in `zone`; the earlier instant of a repeated one.
    fn at(zone: &Zone, y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> i64 {
        zone.tz()
            .to_ambiguous_zoned(date(y, mo, d).at(h, mi, s, 0))
            .earlier()
            .expect("a valid time")
            .timestamp()
            .as_millisecond()
    }

    /// The later instant of a wall-clock time the fall-back repeats.
    fn at_later(zone: &Zone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
        zone.tz()
            .to_ambiguous_zoned(date(y, mo, d).at(h, mi, 0, 0))
            .later()
            .expect("a valid time")
            .timestamp()
            .as_millisecond()
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn expressions_that_parse_and_that_do_not() {
        for ok in [
            "30 3 * * *",
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "* * * * * *",
            "*/5 * * * * *",
            "0 9 * * MON-FRI",
            "0 0 29 2 *",
        ] {
            assert_eq!(cal(ok).as_str(), ok);
        }
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "@sometimes",
            "banana",
        ] {
            assert!(
                matches!(Calendar::parse(bad), Err(ScheduleError::Pattern { .. })),
                "{bad:?} should not parse"
            );
        }
        assert_eq!(
            Calendar::parse("0 0 30 2 *"),
            Err(ScheduleError::NeverMatches("0 0 30 2 *".into()))
        );
    }

    #[test]
    fn zones_by_name() {
        assert_eq!(zone("Europe/Berlin").name(), "Europe/Berlin");
        assert_eq!(Zone::local().name(), "local");
        assert!(matches!(
            Zone::named("Mars/Olympus_Mons"),
            Err(ScheduleError::Zone { .. })
        ));
    }

    #[test]
    fn next_slots_on_ordinary_days() {
        let berlin = zone("Europe/Berlin");
        let utc = Zone::utc();
        // (expression, zone, now, next slot)
        let table: &[(&str, &Zone, i64, i64)] = &[
            (
                "30 3 * * *",
                &berlin,
                at(&berlin, 2026, 6, 1, 12, 0, 0),
                at(&berlin, 2026, 6, 2, 3, 30, 0),
            ),
            (
                "30 3 * * *",
                &berlin,
                at(&berlin, 2026, 6, 1, 3, 29, 59),
                at(&berlin, 2026, 6, 1, 3, 30, 0),
            ),
            // Exactly at a slot: the next one (strictly after).
            (
                "30 3 * * *",
                &berlin,
                at(&berlin, 2026, 6, 1, 3, 30, 0),
                at(&berlin, 2026, 6, 2, 3, 30, 0),
            ),
            // The same expression in UTC is two hours later in Berlin summer time.
            (
                "30 3 * * *",
                &utc,
                at(&berlin, 2026, 6, 1, 4, 0, 0),
                at(&berlin, 2026, 6, 1, 5, 30, 0),
            ),
            (
                "@hourly",
                &utc,
                at(&utc, 2026, 1, 1, 10, 59, 59),
                at(&utc, 2026, 1, 1, 11, 0, 0),
            ),
            (
                "@monthly",
                &utc,
                at(&utc, 2026, 1, 31, 10, 0, 0),
                at(&utc, 2026, 2, 1, 0, 0, 0),
            ),
            (
                "0 9 * * MON-FRI",
                &utc,
                at(&utc, 2026, 12, 4, 9, 0, 0), // a Friday
                at(&utc, 2026, 12, 7, 9, 0, 0), // Monday
            ),
            // Seconds: the next whole second, also from the middle of one.
            (
                "* * * * * *",
                &utc,
                at(&utc, 2026, 1, 1, 0, 0, 0) + 500,
                at(&utc, 2026, 1, 1, 0, 0, 1),
            ),
            (
                "* * * * * *",
                &utc,
                at(&utc, 2026, 1, 1, 0, 0, 0),
                at(&utc, 2026, 1, 1, 0, 0, 1),
            ),
        ];
        for &(text, zone, now, want) in table {
            assert_eq!(
                cal(text).next_after(zone, now),
                Some(want),
                "{text} in {} after {now}",
                zone.name()
            );
        }
    }

    /// Every start of `text` in `zone` from `from` for `hours` hours, walking from slot to
    /// slot as the daemon does.
    fn walk(text: &str, zone: &Zone, from: i64, hours: i64) -> Vec<i64> {
        let calendar = cal(text);
        let mut slots = Vec::new();
        let mut last = None;
        let mut now = from;
        while let Some(p) = next_start(&calendar, zone, now, last, Duration::ZERO) {
            if p.slot_ms > from + hours * HOUR {
                break;
            }
            slots.push(p.slot_ms);
            last = Some(p.slot_ms);
            now = p.start_ms; // the run starts on time
        }
        slots
    }

    #[test]
    fn a_job_in_the_spring_forward_gap_runs_once_right_after_it() {
        // Europe/Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
        let berlin = zone("Europe/Berlin");
        let day = at(&berlin, 2026, 3, 29, 0, 0, 0);
        assert_eq!(
            walk("30 2 * * *", &berlin, day, 24),
            [at(&berlin, 2026, 3, 29, 3, 0, 0)]
        );
        // The day before and after: 02:30 as usual.
        assert_eq!(
            walk("30 2 * * *", &berlin, day - 24 * HOUR, 24),
            [at(&berlin, 2026, 3, 28, 2, 30, 0)]
        );
        assert_eq!(
            walk("30 2 * * *", &berlin, day + 23 * HOUR, 24),
            [at(&berlin, 2026, 3, 30, 2, 30, 0)]
        );
        // America/New_York, 8 March 2026: 02:00 EST becomes 03:00 EDT.
        let ny = zone("America/New_York");
        assert_eq!(
            walk("30 2 * * *", &ny, at(&ny, 2026, 3, 8, 0, 0, 0), 24),
            [at(&ny, 2026, 3, 8, 3, 0, 0)]
        );
        // Every 15 minutes: the slots in the gap do not exist; the hour has none.
        let quarter = walk(
            "*/15 * * * *",
            &berlin,
            at(&berlin, 2026, 3, 29, 1, 40, 0),
            1,
        );
        assert_eq!(
            quarter,
            [
                at(&berlin, 2026, 3, 29, 1, 45, 0),
                at(&berlin, 2026, 3, 29, 3, 0, 0),
                at(&berlin, 2026, 3, 29, 3, 15, 0),
                at(&berlin, 2026, 3, 29, 3, 30, 0),
            ]
        );
    }

    #[test]
    fn a_fixed_time_the_fall_back_repeats_runs_once_at_its_first_occurrence() {
        // Europe/Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let berlin = zone("Europe/Berlin");
        let day = at(&berlin, 2026, 10, 25, 0, 0, 0);
        assert_ne!(
            at(&berlin, 2026, 10, 25, 2, 30, 0),
            at_later(&berlin, 2026, 10, 25, 2, 30)
        );
        assert_eq!(
            walk("30 2 * * *", &berlin, day, 25),
            [at(&berlin, 2026, 10, 25, 2, 30, 0)]
        );
        // From inside the second pass, before 02:30 there: not again that day.
        let second_pass = at_later(&berlin, 2026, 10, 25, 2, 10);
        assert_eq!(
            cal("30 2 * * *").next_after(&berlin, second_pass),
            Some(at(&berlin, 2026, 10, 26, 2, 30, 0))
        );
        // America/New_York, 1 November 2026: 01:30 happens twice, runs once.
        let ny = zone("America/New_York");
        assert_eq!(
            walk("30 1 * * *", &ny, at(&ny, 2026, 11, 1, 0, 0, 0), 25),
            [at(&ny, 2026, 11, 1, 1, 30, 0)]
        );
        // A wildcard hour fires in both passes, as in cron: 02:00 and 02:30, twice each.
        let halves = walk(
            "*/30 2 * * *",
            &berlin,
            at(&berlin, 2026, 10, 25, 1, 0, 0),
            4,
        );
        assert_eq!(
            halves,
            [
                at(&berlin, 2026, 10, 25, 2, 0, 0),
                at(&berlin, 2026, 10, 25, 2, 30, 0),
                at_later(&berlin, 2026, 10, 25, 2, 0),
                at_later(&berlin, 2026, 10, 25, 2, 30),
            ]
        );
    }

    #[test]
    fn a_slot_is_planned_once_also_when_the_clock_goes_back() {
        let utc = Zone::utc();
        let c = cal("* * * * * *");
        let slot = at(&utc, 2026, 1, 1, 0, 0, 1);
        // The timer fired a little before the slot by the wall clock: still the next one.
        let p = next_start(&c, &utc, slot - 300, Some(slot), Duration::ZERO);
        assert_eq!(p.map(|p| p.slot_ms), Some(slot + 1000));
        let p = next_start(&c, &utc, slot + 2500, Some(slot), Duration::ZERO);
        assert_eq!(p.map(|p| p.slot_ms), Some(slot + 3000));
    }

    #[test]
    fn jitter_delays_the_start_not_the_slot() {
        let utc = Zone::utc();
        let now = at(&utc, 2026, 1, 1, 10, 0, 0);
        let p = next_start(
            &cal("@hourly"),
            &utc,
            now,
            None,
            Duration::from_millis(1234),
        );
        assert_eq!(
            p,
            Some(Planned {
                slot_ms: now + HOUR,
                start_ms: now + HOUR + 1234
            })
        );
        let ten_min = Duration::from_secs(600);
        // (draw, delay)
        for (draw, want) in [
            (0, 0),
            (599_999, 599_999),
            (600_000, 600_000),
            (600_001, 0),
            (u64::MAX, u64::MAX % 600_001),
        ] {
            assert_eq!(jitter_delay(ten_min, draw), Duration::from_millis(want));
        }
        assert_eq!(jitter_delay(Duration::ZERO, 12345), Duration::ZERO);
    }

    #[test]
    fn catch_up_runs_once_for_any_number_of_missed_slots() {
        let berlin = zone("Europe/Berlin");
        let nightly = cal("30 3 * * *");
        let last = at(&berlin, 2026, 6, 1, 3, 30, 0);
        // (now, missed slot)
        let table = [
            (at(&berlin, 2026, 6, 1, 12, 0, 0), None),
            (at(&berlin, 2026, 6, 2, 3, 29, 59), None),
            (
                at(&berlin, 2026, 6, 2, 3, 30, 0),
                Some(at(&berlin, 2026, 6, 2, 3, 30, 0)),
            ),
            (
                at(&berlin, 2026, 6, 9, 8, 0, 0),
                Some(at(&berlin, 2026, 6, 9, 3, 30, 0)),
            ),
        ];
        for (now, want) in table {
            assert_eq!(missed_slot(&nightly, &berlin, Some(last), now), want);
        }
        // Never started before: nothing to make up for.
        assert_eq!(
            missed_slot(&nightly, &berlin, None, at(&berlin, 2026, 6, 9, 8, 0, 0)),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn next_is_after_now_and_monotone(
            t in 1_700_000_000_000i64..1_900_000_000_000,
            dt in 0i64..400 * HOUR,
            which in 0usize..5,
            zi in 0usize..3,
        ) {
            let text = ["* * * * * *", "*/7 * * * *", "30 2 * * *", "0 0 * * SUN", "15 1,2,3 * * *"][which];
            let z = [Zone::utc(), zone("Europe/Berlin"), zone("America/New_York")][zi].clone();
            let c = cal(text);
            let a = c.next_after(&z, t).expect("a next slot");
            let b = c.next_after(&z, t + dt).expect("a next slot");
            proptest::prop_assert!(a > t);
            proptest::prop_assert!(b > t + dt);
            proptest::prop_assert!(a <= b);
            // Nothing between now and the next slot is a slot.
            proptest::prop_assert_eq!(c.latest_at_or_before(&z, a - 1).map(|p| p <= t), Some(true));
        }

        #[test]
        fn a_missed_slot_is_the_latest_one_since_the_last(
            last in 1_700_000_000_000i64..1_800_000_000_000,
            gap in 0i64..200 * HOUR,
            which in 0usize..3,
        ) {
            let text = ["*/7 * * * *", "30 2 * * *", "0 0 * * SUN"][which];
            let z = zone("Europe/Berlin");
            let c = cal(text);
            let now = last + gap;
            match missed_slot(&c, &z, Some(last), now) {
                Some(slot) => {
                    proptest::prop_assert!(slot > last && slot <= now);
                    // No later slot has passed.
                    proptest::prop_assert!(c.next_after(&z, slot).is_some_and(|n| n > now));
                }
                // None missed: the next slot after the last is still ahead.
                None => proptest::prop_assert!(c.next_after(&z, last).is_some_and(|n| n > now)),
            }
        }
    }
}
