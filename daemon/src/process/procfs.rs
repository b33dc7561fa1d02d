//! What the group records and the sweep read from `/proc`.

use std::collections::HashMap;

/// What the sweep needs of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Whether its name (comm) starts with `shim:`, as every shim names itself.
    pub shim: bool,
    /// Dead, not reaped yet: nothing to kill.
    pub zombie: bool,
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgrp: u32,
    /// Start time, clock ticks after boot.
    pub start: u64,
}

/// What every shim's name (comm) starts with.
pub const SHIM_COMM_PREFIX: &str = "shim:";

/// Parses `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold anything: fields start after the
    // last ')'. Then: state ppid pgrp session ... with starttime the 20th.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let comm = text.get(text.find('(')? + 1..text.rfind(')')?)?;
    Some(ProcStat {
        shim: comm.starts_with(SHIM_COMM_PREFIX),
        zombie: *fields.first()? == "Z",
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of one process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The stat of every process.
pub fn all_proc_stats() -> HashMap<u32, ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): pids and start times are only
/// comparable within one boot.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_owned())
}

/// Whether the initial environment of `pid` holds every one of `vars` (`NAME=value`).
pub fn environ_has(pid: u32, vars: &[String]) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    vars.iter()
        .all(|v| env.split(|&b| b == 0).any(|e| e == v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_parentheses() {
        let line = "4242 (a) (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                shim: false,
                zombie: false,
                ppid: 17,
                pgrp: 4242,
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let shim = "4242 (shim:web) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert!(parse_stat(shim).is_some_and(|s| s.shim));
        let own = proc_stat(std::process::id()).expect("own /proc stat");
        assert!(own.start > 0);
        assert!(boot_id().is_some());
        assert!(environ_has(std::process::id(), &[]));
    }
}
