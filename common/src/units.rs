//! Durations (humantime: `250ms`, `5m`, `1h 30m`) and sizes (`512`, `64KiB`, `10MiB`).

use std::time::Duration;

/// Longest duration the config accepts: 100 years (humantime years of 365.25 days). Far
/// beyond any sane interval, timeout or grace, and far inside what the daemon's clock
/// arithmetic and the shim's millisecond argument can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses a humantime duration of at most [`MAX_DURATION`], with a message fit for a
/// validation error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 250ms, 30s, 5m, 1h 30m"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is too long: at most 100y (100 years)"
        ));
    }
    Ok(d)
}

/// Renders a duration the way the config accepts it (`5m`, `1h 30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a byte size: a plain integer, or a number with a unit B, KiB, MiB, GiB (also
/// KB/MB/GB, taken as powers of 1000, and K/M/G as powers of 1024). Exact: integers are
/// taken as they are (no float on the way), a fraction of a unit is rounded down to whole
/// bytes, and a size past `u64::MAX` bytes is an error.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {text:?}; use e.g. 4096, 64KiB, 10MiB, 1GiB");
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "K" | "k" | "Ki" => 1 << 10,
        "MiB" | "M" | "Mi" => 1 << 20,
        "GiB" | "G" | "Gi" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad());
    }
    let too_large = || format!("size {text:?} is too large: at most {} bytes", u64::MAX);
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    whole
        .checked_mul(mult)
        .and_then(|n| n.checked_add(fraction_of(fraction, mult)))
        .ok_or_else(too_large)
}

/// Digits of a fraction that can change whole bytes: every unit divides 10^30.
const FRACTION_DIGITS: usize = 30;

/// `0.DIGITS × mult`, rounded down: `DIGITS` cut or padded to 30 digits is exact, because
/// `mult` divides 10^30 (the digits past the 30th add less than one step of `mult / 10^30`,
/// which cannot reach the next whole byte).
fn fraction_of(digits: &str, mult: u64) -> u64 {
    let kept = &digits[..digits.len().min(FRACTION_DIGITS)];
    let padded = format!("{kept:0<FRACTION_DIGITS$}");
    let numerator: u128 = padded.parse().unwrap_or(0);
    let step = 10u128.pow(FRACTION_DIGITS as u32) / u128::from(mult);
    // Less than `mult`, so it fits.
    u64::try_from(numerator / step).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("4096", Some(4096)),
            ("64KiB", Some(65536)),
            ("10MiB", Some(10 << 20)),
            ("1GiB", Some(1 << 30)),
            ("1.5KiB", Some(1536)),
            ("2KB", Some(2000)),
            ("10 MiB", Some(10 << 20)),
            ("ten", None),
            ("5XB", None),
            ("", None),
            (".", None),
            ("1.2.3", None),
            (".5KiB", Some(512)),
            ("1.", Some(1)),
            ("0.3KB", Some(300)),
            ("0.1B", Some(0)),
            ("9007199254740993", Some(9_007_199_254_740_993)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("17179869184GiB", None),
            (
                "17179869183.99999999999999999999999999999999GiB",
                Some(u64::MAX),
            ),
        ] {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let err = parse_duration("5 minuets").err().unwrap_or_default();
        assert!(err.starts_with("invalid duration \"5 minuets\""), "{err}");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
        let err = parse_duration("300000000000y").err().unwrap_or_default();
        assert_eq!(
            err,
            "duration \"300000000000y\" is too long: at most 100y (100 years)"
        );
    }

    const UNITS: [(&str, u64); 7] = [
        ("", 1),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
    ];

    proptest::proptest! {
        #[test]
        fn every_integer_round_trips(n in proptest::num::u64::ANY) {
            proptest::prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        }

        #[test]
        fn no_precision_lost_above_2_pow_53(n in (1u64 << 53)..=u64::MAX) {
            proptest::prop_assert_eq!(parse_size(&format!("{n}B")), Ok(n));
            proptest::prop_assert_eq!(parse_size(&format!(" {n} ")), Ok(n));
        }

        #[test]
        fn units_multiply_exactly_or_overflow(n in proptest::num::u64::ANY, unit in 0..UNITS.len()) {
            let (name, mult) = UNITS[unit];
            let exact = u128::from(n) * u128::from(mult);
            let got = parse_size(&format!("{n}{name}"));
            if exact > u128::from(u64::MAX) {
                let err = got.err().unwrap_or_default();
                proptest::prop_assert!(err.contains("too large"), "{}", err);
            } else {
                proptest::prop_assert_eq!(got, Ok(exact as u64));
            }
        }

        #[test]
        fn fractions_round_down_to_whole_bytes(
            whole in 0u64..1 << 20,
            digits in "[0-9]{1,28}",
            unit in 0..UNITS.len(),
        ) {
            let (name, mult) = UNITS[unit];
            // The exact value in u128: numerator < 10^28, mult ≤ 2^30.
            let scale = 10u128.pow(digits.len() as u32);
            let numerator: u128 = digits.parse().unwrap_or_default();
            let floor = u128::from(whole) * u128::from(mult) + numerator * u128::from(mult) / scale;
            proptest::prop_assert_eq!(
                parse_size(&format!("{whole}.{digits}{name}")),
                Ok(floor as u64)
            );
        }

        #[test]
        fn anything_else_is_an_error_not_a_panic(text in "\\PC{0,24}") {
            let _ = parse_size(&text);
        }
    }
}
