//! Times and durations as people read them, and `--since` as people write it.
//!
//! - JSON times are RFC 3339 in UTC to the millisecond ([`time`]), whatever the flags.
//! - Times in lines ([`shown_time`]) are the same (table cells to the second), or with
//!   `--local` the local time with its offset: `2026-12-02 14:44:03.123 +05:30`.
//! - Every duration a person reads is rounded to its two most significant units by one
//!   function, [`duration_text`]: `350ms`, `2.5s`, `42s`, `3m 14s`, `1h 5m`, `2d 3h`.

use jiff::{civil, tz::TimeZone, SignedDuration, Timestamp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 time of Unix ms in UTC, to the ms; `None` for 0.
pub fn time(ms: i64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    })
}

/// How finely a time is shown: lines (logs, events) to the ms, table cells to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// `.123`.
    Millis,
    /// Whole seconds.
    Seconds,
}

/// The time of Unix ms in `zone` with its offset (`2026-12-02 14:44:03.123 +05:30`, or
/// to the second `2026-12-02 14:44:03 +05:30`); `None` for 0 (or a time out of range).
pub fn time_in(ms: i64, zone: &TimeZone, precision: Precision) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    let at = Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned_datetime(zone.clone());
    let format = match precision {
        Precision::Millis => "%Y-%m-%d %H:%M:%S%.3f %:z",
        Precision::Seconds => "%Y-%m-%d %H:%M:%S %:z",
    };
    jiff::fmt::strtime::format(format, &at).ok()
}

/// A time as people read it in this invocation: RFC 3339 in UTC (`2026-12-02T09:14:03.123Z`,
/// `2026-12-02T09:14:03Z`), or with `--local` [`time_in`] the local zone; `-` for none.
pub fn shown_time(ms: i64, precision: Precision) -> String {
    let shown = match (&super::display().zone, precision) {
        (Some(zone), _) => time_in(ms, zone, precision),
        (None, Precision::Millis) => time(ms),
        (None, Precision::Seconds) => (ms > 0).then(|| {
            let at = UNIX_EPOCH + Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(at).to_string()
        }),
    };
    shown.unwrap_or_else(|| "-".into())
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// "5s ago" / "in 4m 10s" / "now" (under a second away), as [`duration_text`] rounds.
pub fn relative(ms: i64) -> String {
    relative_at(ms, now_ms())
}

/// [`relative`] seen at `now` (Unix ms): a table takes the time once for all its rows.
pub fn relative_at(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let delta = ms - now;
    let away = Duration::from_millis(delta.unsigned_abs());
    if away < Duration::from_secs(1) {
        return "now".into();
    }
    let mut s = String::with_capacity(16);
    if delta >= 0 {
        s.push_str("in ");
        push_duration(&mut s, away);
    } else {
        push_duration(&mut s, away);
        s.push_str(" ago");
    }
    s
}

/// A duration rounded to its two most significant units: `350ms`, `2.5s` (tenths under
/// 10s), `42s`, `3m 14s`, `1h 5m`, `2d 3h`; a zero second unit is left out (`5m`).
pub fn duration_text(d: Duration) -> String {
    let mut s = String::with_capacity(8);
    push_duration(&mut s, d);
    s
}

/// [`duration_text`] appended to `out`: numbers written with `itoa`, not `format!` (a
/// status table of 1,000 scripts writes 3,000 of them).
pub fn push_duration(out: &mut String, d: Duration) {
    let mut n = itoa::Buffer::new();
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms < 1000 {
        out.push_str(n.format(ms));
        out.push_str("ms");
        return;
    }
    if ms < 9_950 {
        let tenths = (ms + 50) / 100;
        out.push_str(n.format(tenths / 10));
        if tenths % 10 != 0 {
            out.push('.');
            out.push_str(n.format(tenths % 10));
        }
        out.push('s');
        return;
    }
    let mut two = |big: u64, unit: &str, small: u64, small_unit: &str| {
        out.push_str(n.format(big));
        out.push_str(unit);
        if small != 0 {
            out.push(' ');
            out.push_str(n.format(small));
            out.push_str(small_unit);
        }
    };
    let secs = ms.saturating_add(500) / 1000;
    if secs < 60 {
        return two(secs, "s", 0, "");
    }
    if secs < 3600 {
        return two(secs / 60, "m", secs % 60, "s");
    }
    // Each unit rounds the milliseconds (rounding a rounded value could carry twice).
    let mins = ms.saturating_add(30_000) / 60_000;
    if mins < 24 * 60 {
        return two(mins / 60, "h", mins % 60, "m");
    }
    let hours = ms.saturating_add(1_800_000) / 3_600_000;
    two(hours / 24, "d", hours % 24, "h")
}

/// `--since`: a duration back from now (`10m`, `1h 30m`), or a time: RFC 3339
/// (`2026-12-02T09:00:00Z`, `2026-12-02T09:00:00+01:00`) or a local date and time
/// (`2026-12-02 09:00:00`, `2026-12-02T09:00`, `2026-12-02`, in `TZ` or `/etc/localtime`).
/// A time becomes the duration from it to now.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    // The local zone only for a time without offset; an unknown zone then is an error.
    let zone = || {
        TimeZone::try_system().map_err(|e| {
            format!("cannot tell the local time zone for {s:?} ({e}): set TZ or add an offset (Z)")
        })
    };
    since_at(s, Timestamp::now(), zone)
}

/// [`parse_since`] at `now`, with `zone` the local time zone (asked only when needed).
pub fn since_at(
    s: &str,
    now: Timestamp,
    zone: impl FnOnce() -> Result<TimeZone, String>,
) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(d);
    }
    let at = if let Ok(at) = s.parse::<Timestamp>() {
        at
    } else if let Ok(local) = s.parse::<civil::DateTime>() {
        local
            .to_zoned_datetime(zone()?)
            .map_err(|e| format!("{s:?} is no time in the local zone: {e}"))?
            .timestamp()
    } else {
        return Err(format!(
            "{s:?} is neither a duration (`10m`, `1h 30m`) nor a time (`2026-12-02T09:00:00Z`, \
             or local `2026-12-02 09:00:00`)"
        ));
    };
    let ago: SignedDuration = now.duration_since(at);
    if ago.is_negative() {
        return Err(format!("{s:?} is in the future"));
    }
    Duration::try_from(ago).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_to_two_units() {
        let table = [
            (0, "0ms"),
            (350, "350ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_049, "1s"),
            (1_050, "1.1s"),
            (2_500, "2.5s"),
            (9_949, "9.9s"),
            (9_950, "10s"),
            (42_400, "42s"),
            (59_499, "59s"),
            (59_500, "1m"),
            (194_353, "3m 14s"),
            (494_353, "8m 14s"),
            (3_599_499, "59m 59s"),
            (3_599_500, "1h"),
            (3_900_000, "1h 5m"),
            (86_369_999, "23h 59m"),
            (86_370_000, "1d"),
            (183_600_000, "2d 3h"),
        ];
        for (ms, want) in table {
            assert_eq!(duration_text(Duration::from_millis(ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn relative_times_read_from_a_given_now() {
        let now = 1_800_000_000_000;
        let table = [
            (0, "-"),
            (-5, "-"),
            (now, "now"),
            (now + 999, "now"),
            (now - 999, "now"),
            (now + 5_000, "in 5s"),
            (now - 194_353, "3m 14s ago"),
            (now + 3_900_000, "in 1h 5m"),
            (now - 183_600_000, "2d 3h ago"),
        ];
        for (ms, want) in table {
            assert_eq!(relative_at(ms, now), want, "{ms}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_duration_has_at_most_two_units_and_never_shrinks(a in 0u64..400_000_000_000, d in 0u64..10_000_000) {
            let units = |t: &str| t.split(' ').count();
            let text = duration_text(Duration::from_millis(a));
            proptest::prop_assert!(units(&text) <= 2, "{}", text);
            // Longer never reads shorter: compare in ms what the text says.
            let back = |t: &str| -> u64 {
                t.split(' ')
                    .map(|part| {
                        let (num, unit) = part.split_at(part.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(part.len()));
                        let n: f64 = num.parse().unwrap_or(0.0);
                        let scale = match unit { "ms" => 1.0, "s" => 1e3, "m" => 60e3, "h" => 3600e3, "d" => 86400e3, _ => 0.0 };
                        (n * scale).round() as u64
                    })
                    .sum()
            };
            let longer = duration_text(Duration::from_millis(a + d));
            proptest::prop_assert!(back(&longer) >= back(&text), "{} then {}", text, longer);
        }
    }

    #[test]
    fn local_times_carry_their_offset() {
        let zone = TimeZone::get("Asia/Kolkata").expect("bundled or system tzdata");
        let table = [
            (&zone, Precision::Millis, "2023-11-15 03:43:20.123 +05:30"),
            (&zone, Precision::Seconds, "2023-11-15 03:43:20 +05:30"),
            (
                &TimeZone::UTC,
                Precision::Millis,
                "2023-11-14 22:13:20.123 +00:00",
            ),
        ];
        for (zone, precision, want) in table {
            let got = time_in(1_700_000_000_123, zone, precision);
            assert_eq!(got.as_deref(), Some(want), "{precision:?}");
        }
        assert_eq!(time_in(0, &zone, Precision::Millis), None);
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now: Timestamp = "2026-12-02T09:10:00Z".parse().expect("now");
        let kolkata = || TimeZone::get("Asia/Kolkata").map_err(|e| e.to_string());
        let ok = [
            ("10m", 600),
            ("1h 30m", 5_400),
            ("2026-12-02T09:00:00Z", 600),
            ("2026-12-02T10:00:00+01:00", 600),
            ("2026-12-02 14:30:00", 600),
            ("2026-12-02T14:30", 600),
            ("2026-12-02", 9 * 3600 + 10 * 60 + 5 * 3600 + 30 * 60),
        ];
        for (text, secs) in ok {
            assert_eq!(
                since_at(text, now, kolkata),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        let bad = [
            ("2026-12-02T09:20:00Z", "in the future"),
            ("yesterday", "neither a duration"),
            ("2026-13-02 09:00:00", "neither a duration"),
        ];
        for (text, want) in bad {
            let e = since_at(text, now, kolkata).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        let no_zone = || Err("no zone".to_owned());
        assert_eq!(
            since_at("2026-12-02T09:00:00Z", now, no_zone),
            Ok(Duration::from_secs(600))
        );
        assert!(since_at("2026-12-02 09:00:00", now, no_zone).is_err());
    }
}
