//! What a script's process group uses (CPU, memory, processes, descriptors) as `ctl status
//! --wide`, `ctl top` and their JSON show it.

use scriptd_common::proto;
use serde::{Deserialize, Serialize};

/// Resources in JSON: `resources` of a running script (null otherwise) and of the daemon.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesJson {
    /// CPU time (user + system) of every process in the group, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the daemon's previous sample (at most a second old), percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of every process in the group, bytes.
    pub rss_bytes: u64,
    /// Processes in the group.
    pub processes: u32,
    /// Open descriptors of every process in the group.
    pub fds: u32,
}

impl From<&proto::Resources> for ResourcesJson {
    fn from(r: &proto::Resources) -> Self {
        Self {
            cpu_seconds: r.cpu_seconds,
            cpu_percent: r.cpu_percent,
            rss_bytes: r.rss_bytes,
            processes: r.processes,
            fds: r.fds,
        }
    }
}

/// The headers of the columns `--wide` adds to `ctl status`.
pub const WIDE_HEADERS: [&str; 3] = ["CPU %", "MEM", "PROCS"];

/// The cells `--wide` adds to a script's row (`-` when it does not run).
pub fn wide_cells(r: Option<&proto::Resources>) -> [String; 3] {
    match r {
        Some(r) => [
            percent(r.cpu_percent),
            bytes(r.rss_bytes),
            r.processes.to_string(),
        ],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// CPU use with one decimal: `12.5`.
pub fn percent(p: f64) -> String {
    format!("{p:.1}")
}

/// A byte count in binary units, as `top` and `ps` print them: `812K`, `64.2M`, `1.5G`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if v >= 100.0 || unit == "K" {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{n}B")
}

/// CPU seconds as `top`'s TIME+: `m:ss.cc`, hours added past an hour.
pub fn cpu_time(secs: f64) -> String {
    let cs = (secs * 100.0).round() as u64;
    let (h, m, s, c) = (cs / 360_000, cs / 6000 % 60, cs / 100 % 60, cs % 100);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{c:02}")
    } else {
        format!("{m}:{s:02}.{c:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_as_people_read_them() {
        let sizes = [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1K"),
            (812 * 1024 + 300, "812K"),
            (64 << 20, "64.0M"),
            ((64 << 20) + (1 << 19), "64.5M"),
            (150 << 20, "150M"),
            (3 << 29, "1.5G"),
        ];
        for (n, want) in sizes {
            assert_eq!(bytes(n), want, "{n}");
        }
        let times = [
            (0.0, "0:00.00"),
            (1.5, "0:01.50"),
            (61.25, "1:01.25"),
            (3725.0, "1:02:05.00"),
        ];
        for (s, want) in times {
            assert_eq!(cpu_time(s), want, "{s}");
        }
        assert_eq!(percent(99.94), "99.9");
        assert_eq!(wide_cells(None), ["-", "-", "-"]);
        let r = proto::Resources {
            cpu_seconds: 2.0,
            cpu_percent: 100.0,
            rss_bytes: 2 << 20,
            processes: 3,
            fds: 9,
        };
        assert_eq!(wide_cells(Some(&r)), ["100.0", "2.0M", "3"]);
        let text = serde_json::to_string(&ResourcesJson::from(&r)).expect("json");
        let back: ResourcesJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back.rss_bytes, 2 << 20);
    }
}
