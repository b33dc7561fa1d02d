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
/// KB/MB/GB, taken as powers of 1000, and K/M/G as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {text:?}; use e.g. 4096, 64KiB, 10MiB, 1GiB");
    let n: f64 = num.parse().map_err(|_| bad())?;
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
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
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
}
