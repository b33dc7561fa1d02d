//! `limits:` — the resource limits (`setrlimit(2)`) a script starts with, named like
//! systemd's `LimitX=` keys in lower case (`nofile` for `LimitNOFILE=`). Parsing a value is
//! a pure function ([`parse_value`]); the shim applies them just before it executes the
//! script.
//!
//! A value is one number for both the soft and the hard limit (as systemd's `LimitX=N`),
//! or `SOFT:HARD`; either side may be `infinity`. Byte limits take sizes (`64MiB`), `cpu`
//! takes seconds or a duration (`1h`), `rttime` microseconds or a duration.

use crate::units::{parse_duration, parse_size};
use nix::sys::resource::Resource;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The kernel's "no limit" (`RLIM_INFINITY`).
pub const INFINITY: u64 = u64::MAX;

/// What a limit counts, which decides the units its values may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of things (descriptors, processes, locks, signals) or a priority.
    Count,
    /// Bytes: a plain number or a size (`64KiB`, `1GiB`).
    Bytes,
    /// CPU seconds: a plain number or a duration of whole seconds.
    Seconds,
    /// Microseconds: a plain number or a duration.
    Micros,
}

/// One resource limit a script may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// `RLIMIT_CPU` (`LimitCPU=`)
    Cpu,
    /// `RLIMIT_FSIZE`
    Fsize,
    /// `RLIMIT_DATA`
    Data,
    /// `RLIMIT_STACK`
    Stack,
    /// `RLIMIT_CORE`
    Core,
    /// `RLIMIT_RSS`
    Rss,
    /// `RLIMIT_NOFILE`
    Nofile,
    /// `RLIMIT_AS`
    As,
    /// `RLIMIT_NPROC`
    Nproc,
    /// `RLIMIT_MEMLOCK`
    Memlock,
    /// `RLIMIT_LOCKS`
    Locks,
    /// `RLIMIT_SIGPENDING`
    Sigpending,
    /// `RLIMIT_MSGQUEUE`
    Msgqueue,
    /// `RLIMIT_NICE` (the kernel's raw value: 20 − nice, 0..40)
    Nice,
    /// `RLIMIT_RTPRIO`
    Rtprio,
    /// `RLIMIT_RTTIME`
    Rttime,
}

impl Limit {
    /// Every limit, in systemd's order (the order the unknown-key message lists them).
    pub const ALL: [Limit; 16] = [
        Self::Cpu,
        Self::Fsize,
        Self::Data,
        Self::Stack,
        Self::Core,
        Self::Rss,
        Self::Nofile,
        Self::As,
        Self::Nproc,
        Self::Memlock,
        Self::Locks,
        Self::Sigpending,
        Self::Msgqueue,
        Self::Nice,
        Self::Rtprio,
        Self::Rttime,
    ];

    /// The config spelling (`nofile`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Fsize => "fsize",
            Self::Data => "data",
            Self::Stack => "stack",
            Self::Core => "core",
            Self::Rss => "rss",
            Self::Nofile => "nofile",
            Self::As => "as",
            Self::Nproc => "nproc",
            Self::Memlock => "memlock",
            Self::Locks => "locks",
            Self::Sigpending => "sigpending",
            Self::Msgqueue => "msgqueue",
            Self::Nice => "nice",
            Self::Rtprio => "rtprio",
            Self::Rttime => "rttime",
        }
    }

    /// The limit spelled `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The config spellings of every limit.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|l| l.name()).collect()
    }

    /// What its values count.
    pub fn unit(self) -> Unit {
        match self {
            Self::Fsize
            | Self::Data
            | Self::Stack
            | Self::Core
            | Self::Rss
            | Self::As
            | Self::Memlock
            | Self::Msgqueue => Unit::Bytes,
            Self::Cpu => Unit::Seconds,
            Self::Rttime => Unit::Micros,
            Self::Nofile
            | Self::Nproc
            | Self::Locks
            | Self::Sigpending
            | Self::Nice
            | Self::Rtprio => Unit::Count,
        }
    }

    /// The kernel resource it sets.
    pub fn resource(self) -> Resource {
        match self {
            Self::Cpu => Resource::RLIMIT_CPU,
            Self::Fsize => Resource::RLIMIT_FSIZE,
            Self::Data => Resource::RLIMIT_DATA,
            Self::Stack => Resource::RLIMIT_STACK,
            Self::Core => Resource::RLIMIT_CORE,
            Self::Rss => Resource::RLIMIT_RSS,
            Self::Nofile => Resource::RLIMIT_NOFILE,
            Self::As => Resource::RLIMIT_AS,
            Self::Nproc => Resource::RLIMIT_NPROC,
            Self::Memlock => Resource::RLIMIT_MEMLOCK,
            Self::Locks => Resource::RLIMIT_LOCKS,
            Self::Sigpending => Resource::RLIMIT_SIGPENDING,
            Self::Msgqueue => Resource::RLIMIT_MSGQUEUE,
            Self::Nice => Resource::RLIMIT_NICE,
            Self::Rtprio => Resource::RLIMIT_RTPRIO,
            Self::Rttime => Resource::RLIMIT_RTTIME,
        }
    }
}

/// The soft and hard limit of one resource ([`INFINITY`]: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitValue {
    /// What the script gets; it may raise it up to `hard`.
    pub soft: u64,
    /// The ceiling; an unprivileged script may only lower it.
    pub hard: u64,
}

fn bound(f: &mut fmt::Formatter<'_>, n: u64) -> fmt::Result {
    if n == INFINITY {
        f.write_str("infinity")
    } else {
        write!(f, "{n}")
    }
}

/// `4096` when both are the same, else `1024:4096`; `infinity` for none. The diff shows
/// this, and the shim's argument uses it.
impl fmt::Display for LimitValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bound(f, self.soft)?;
        if self.soft != self.hard {
            f.write_str(":")?;
            bound(f, self.hard)?;
        }
        Ok(())
    }
}

impl Serialize for LimitValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The limits a script sets; the others stay as the daemon's (`nofile`: the soft limit the
/// daemon was started with, see the README's "Supervision").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits(pub BTreeMap<Limit, LimitValue>);

/// A map from the config spelling to the value (`{"nofile": "4096"}`): each limit is a field
/// of its own in a diff (`limits.nofile`).
impl Serialize for Limits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(l, v)| (l.name(), v)))
    }
}

/// Parses one value of `limit`: `N` (soft and hard), `SOFT:HARD`, `infinity` on either
/// side; sizes for byte limits, durations for `cpu` and `rttime`. A message fit for a
/// validation error otherwise.
pub fn parse_value(limit: Limit, text: &str) -> Result<LimitValue, String> {
    let text = text.trim();
    let (soft, hard) = match text.split_once(':') {
        Some((soft, hard)) => (parse_bound(limit, soft)?, parse_bound(limit, hard)?),
        None => {
            let n = parse_bound(limit, text)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(format!(
            "soft limit {} is above the hard limit {}; write SOFT:HARD with SOFT ≤ HARD",
            LimitValue { soft, hard: soft },
            LimitValue { soft: hard, hard },
        ));
    }
    Ok(LimitValue { soft, hard })
}

fn parse_bound(limit: Limit, text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "infinity" {
        return Ok(INFINITY);
    }
    if text.starts_with('-') {
        return Err(format!(
            "invalid limit {text:?}: must not be negative; use 0 or more, or infinity"
        ));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let hint = match limit.unit() {
        Unit::Count => "a whole number",
        Unit::Bytes => "a number of bytes or a size such as 64MiB",
        Unit::Seconds => "a number of seconds or a duration such as 1h",
        Unit::Micros => "a number of microseconds or a duration such as 500ms",
    };
    let bad = || format!("invalid limit {text:?}; use {hint}, or infinity (SOFT:HARD for two)");
    match limit.unit() {
        Unit::Count => Err(bad()),
        Unit::Bytes => parse_size(text).map_err(|_| bad()),
        Unit::Seconds => {
            let d = parse_duration(text).map_err(|_| bad())?;
            if d.subsec_nanos() != 0 {
                return Err(format!(
                    "invalid limit {text:?}: the CPU limit counts whole seconds"
                ));
            }
            Ok(d.as_secs())
        }
        Unit::Micros => {
            let d = parse_duration(text).map_err(|_| bad())?;
            u64::try_from(d.as_micros()).map_err(|_| bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(n: u64) -> LimitValue {
        LimitValue { soft: n, hard: n }
    }

    #[test]
    fn values() {
        let cases: &[(Limit, &str, Result<LimitValue, &str>)] = &[
            (Limit::Nofile, "4096", Ok(both(4096))),
            (
                Limit::Nofile,
                " 1024:4096 ",
                Ok(LimitValue {
                    soft: 1024,
                    hard: 4096,
                }),
            ),
            (
                Limit::Nofile,
                "1024:infinity",
                Ok(LimitValue {
                    soft: 1024,
                    hard: INFINITY,
                }),
            ),
            (Limit::Core, "0", Ok(both(0))),
            (Limit::Core, "infinity", Ok(both(INFINITY))),
            (Limit::As, "1GiB", Ok(both(1 << 30))),
            (
                Limit::Memlock,
                "64KiB:1MiB",
                Ok(LimitValue {
                    soft: 64 << 10,
                    hard: 1 << 20,
                }),
            ),
            (Limit::Cpu, "1h", Ok(both(3600))),
            (Limit::Cpu, "30", Ok(both(30))),
            (Limit::Rttime, "500ms", Ok(both(500_000))),
            (Limit::Nofile, "-1", Err("must not be negative")),
            (Limit::Nofile, "4096:1024", Err("above the hard limit")),
            (Limit::Nofile, "4k", Err("use a whole number")),
            (Limit::Nproc, "lots", Err("use a whole number")),
            (Limit::As, "1 lightyear", Err("a size such as 64MiB")),
            (Limit::Cpu, "1500ms", Err("whole seconds")),
            (Limit::Nofile, "1:2:3", Err("invalid limit")),
            (Limit::Nofile, "", Err("invalid limit")),
            (Limit::Nofile, "99999999999999999999", Err("invalid limit")),
        ];
        for (limit, text, want) in cases {
            let got = parse_value(*limit, text);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{text:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{text:?}: {g}"),
                _ => panic!("{limit:?} {text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn values_render_as_they_parse() {
        for (value, text) in [
            (both(4096), "4096"),
            (
                LimitValue {
                    soft: 1024,
                    hard: 4096,
                },
                "1024:4096",
            ),
            (both(INFINITY), "infinity"),
            (
                LimitValue {
                    soft: 0,
                    hard: INFINITY,
                },
                "0:infinity",
            ),
        ] {
            assert_eq!(value.to_string(), text);
            assert_eq!(parse_value(Limit::Nofile, text), Ok(value));
        }
    }

    #[test]
    fn names_round_trip_and_are_systemds() {
        for l in Limit::ALL {
            assert_eq!(Limit::parse(l.name()), Some(l));
            // RLIMIT_NOFILE for nofile: the names are the kernel's, lower case.
            assert_eq!(
                format!("{:?}", l.resource()),
                format!("RLIMIT_{}", l.name().to_uppercase())
            );
        }
        assert_eq!(Limit::parse("NOFILE"), None);
        let limits = Limits(BTreeMap::from([
            (Limit::Nofile, both(8)),
            (Limit::Core, both(0)),
        ]));
        assert_eq!(
            serde_json::to_value(&limits).expect("serializes"),
            serde_json::json!({"nofile": "8", "core": "0"})
        );
    }

    proptest::proptest! {
        /// Every value renders as text that parses back to it, for every limit (byte limits
        /// and durations take plain numbers too); any text parses or is refused, never a
        /// panic.
        #[test]
        fn rendered_values_parse_back(
            a in proptest::prelude::any::<u64>(),
            b in proptest::prelude::any::<u64>(),
            limit in proptest::sample::select(Limit::ALL.to_vec()),
            text in "[0-9a-zA-Z:. -]{0,16}",
        ) {
            let value = LimitValue { soft: a.min(b), hard: a.max(b) };
            proptest::prop_assert_eq!(parse_value(limit, &value.to_string()), Ok(value));
            let _ = parse_value(limit, &text);
        }
    }
}
