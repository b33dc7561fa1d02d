//! What the group records and the sweep read from `/proc`.

use std::collections::HashMap;
use std::path::Path;

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
    /// CPU time used (user + system), clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

/// What every shim's name (comm) starts with.
pub const SHIM_COMM_PREFIX: &str = "shim:";

/// Parses `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold anything: fields start after the
    // last ')'. Then: state ppid pgrp session ... utime the 12th, stime the 13th,
    // starttime the 20th, rss the 22nd (fields 3, 4, 5, 14, 15, 22 and 24 of proc(5)).
    // Read in one pass without collecting them: a scrape parses one per process.
    let close = text.rfind(')')?;
    let comm = text.get(text.find('(')? + 1..close)?;
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let zombie = fields.next()? == "Z";
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let utime: u64 = fields.nth(8)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let start = fields.nth(6)?.parse().ok()?;
    let rss_pages = fields.nth(1)?.parse().ok()?;
    Some(ProcStat {
        shim: comm.starts_with(SHIM_COMM_PREFIX),
        zombie,
        ppid,
        pgrp,
        start,
        cpu_ticks: utime + stime,
        rss_pages,
    })
}

/// The stat of one process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    Reader::default().stat(pid)
}

/// The stat of every process.
pub fn all_proc_stats() -> HashMap<u32, ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    let mut reader = Reader::default();
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, reader.stat(pid)?)))
        .collect()
}

/// What the processes of one process group use (see [`group_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// CPU time (user + system) of its processes, clock ticks.
    pub cpu_ticks: u64,
    /// Resident pages of its processes.
    pub rss_pages: u64,
    /// Processes (zombies not counted).
    pub processes: u32,
    /// Open descriptors of its processes.
    pub fds: u32,
    /// Start time of the group's leader (clock ticks after boot), when it is alive.
    pub leader_start: Option<u64>,
}

impl GroupUsage {
    /// Adds one process of the group (`pid`, with `stat`) and its `fds`.
    pub fn add(&mut self, pid: u32, stat: &ProcStat, fds: u32) {
        self.cpu_ticks += stat.cpu_ticks;
        self.rss_pages += stat.rss_pages;
        self.processes += 1;
        self.fds += fds;
        if pid == stat.pgrp {
            self.leader_start = Some(stat.start);
        }
    }
}

/// What each of `groups` uses now. A group's id is its leader's pid: the leaders are read
/// first, then one pass over `/proc` reads the stat of every other process, skipping the
/// leaders' parents (their shims, never in a script's group: half the processes with many
/// services), and counts the descriptors of the members. A group with no process left is
/// absent. Processes that end while they are read are skipped. Blocking: call it off the
/// async runtime.
pub fn group_usage(groups: &std::collections::HashSet<u32>) -> HashMap<u32, GroupUsage> {
    let mut out: HashMap<u32, GroupUsage> = HashMap::new();
    if groups.is_empty() {
        return out;
    }
    let mut reader = Reader::default();
    let mut known = std::collections::HashSet::with_capacity(groups.len() * 2);
    let add =
        |pid: u32, stat: &ProcStat, reader: &mut Reader, out: &mut HashMap<u32, GroupUsage>| {
            if !stat.zombie && groups.contains(&stat.pgrp) {
                let fds = reader.fds(pid);
                out.entry(stat.pgrp).or_default().add(pid, stat, fds);
            }
        };
    for &leader in groups {
        known.insert(leader);
        if let Some(stat) = reader.stat(leader) {
            known.insert(stat.ppid);
            add(leader, &stat, &mut reader, &mut out);
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if known.contains(&pid) {
            continue;
        }
        if let Some(stat) = reader.stat(pid) {
            add(pid, &stat, &mut reader, &mut out);
        }
    }
    out
}

/// Reads `/proc/PID/stat` and counts `/proc/PID/fd` of many processes with one path and
/// one buffer, reused: no allocation per process, and three calls per stat (open, one
/// `read`, close) where `fs::read_to_string` makes six (it also asks the size, which
/// `/proc` does not know, and the position, and reads again to find the end).
struct Reader {
    path: String,
    buf: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            path: String::with_capacity(32),
            // A stat line is a few hundred bytes (at most ~1.2 KiB: 52 numbers and a
            // 16-byte name).
            buf: vec![0; 4096],
        }
    }
}

impl Reader {
    /// `/proc/PID/` then `file` in [`Self::path`].
    fn path(&mut self, pid: u32, file: &str) -> &str {
        self.path.clear();
        self.path.push_str("/proc/");
        self.path.push_str(itoa::Buffer::new().format(pid));
        self.path.push('/');
        self.path.push_str(file);
        &self.path
    }

    /// The stat of `pid`: the kernel writes the whole line in one `read`.
    fn stat(&mut self, pid: u32) -> Option<ProcStat> {
        use std::io::Read;
        let mut file = std::fs::File::open(self.path(pid, "stat")).ok()?;
        let n = file.read(&mut self.buf).ok()?;
        if n == self.buf.len() {
            // Not the whole line after all (never seen): read the rest.
            let mut all = self.buf.clone();
            file.read_to_end(&mut all).ok()?;
            return parse_stat(std::str::from_utf8(&all).ok()?);
        }
        parse_stat(std::str::from_utf8(&self.buf[..n]).ok()?)
    }

    /// [`count_fds`] of `pid`.
    fn fds(&mut self, pid: u32) -> u32 {
        fd_count(Path::new(self.path(pid, "fd")))
    }
}

/// Open descriptors of `pid` (0 when they cannot be listed). Linux 6.2 and later give the
/// count as the size of `/proc/PID/fd` (one `stat`); older kernels say 0 there, and the
/// directory is listed.
pub fn count_fds(pid: u32) -> u32 {
    Reader::default().fds(pid)
}

/// [`count_fds`] of the `/proc/PID/fd` directory `dir`.
fn fd_count(dir: &Path) -> u32 {
    match std::fs::metadata(dir).map(|m| m.len()) {
        Ok(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        Ok(_) => std::fs::read_dir(dir).map_or(0, |d| d.count() as u32),
        Err(_) => 0,
    }
}

/// Seconds since boot (`/proc/uptime`), the clock process start times are counted on.
pub fn uptime() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux), the unit of the CPU times
/// and start times in `/proc/PID/stat`.
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Bytes per page, the unit of the resident set size in `/proc/PID/stat`.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(4096)
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
                start: 987654,
                cpu_ticks: 0,
                rss_pages: 10,
            })
        );
        let busy = "7 (sh) R 1 7 7 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 \
                    5000 1000 2048 18446744073709551615";
        assert!(parse_stat(busy).is_some_and(|s| s.cpu_ticks == 281 && s.rss_pages == 2048));
        assert_eq!(parse_stat("garbage"), None);
        let shim = "4242 (shim:web) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert!(parse_stat(shim).is_some_and(|s| s.shim));
        let own = proc_stat(std::process::id()).expect("own /proc stat");
        assert!(own.start > 0);
        assert!(boot_id().is_some());
        assert!(environ_has(std::process::id(), &[]));
    }

    #[test]
    fn a_group_is_the_sum_of_its_processes() {
        let stat = |pid: u32, pgrp, cpu_ticks, rss_pages| ProcStat {
            shim: false,
            zombie: false,
            ppid: 1,
            pgrp,
            start: 100 + u64::from(pid),
            cpu_ticks,
            rss_pages,
        };
        let mut g = GroupUsage::default();
        g.add(11, &stat(11, 10, 5, 7), 3);
        assert_eq!(g.leader_start, None, "11 is not the leader of group 10");
        g.add(10, &stat(10, 10, 20, 100), 4);
        assert_eq!(
            g,
            GroupUsage {
                cpu_ticks: 25,
                rss_pages: 107,
                processes: 2,
                fds: 7,
                leader_start: Some(110),
            }
        );
        // The test's own group: at least this process, with its descriptors.
        let own = nix::unistd::getpgrp().as_raw() as u32;
        let usage = group_usage(&[own].into_iter().collect());
        let mine = usage.get(&own).expect("the test's own process group");
        assert!(
            mine.processes >= 1 && mine.fds >= 3 && mine.rss_pages > 0,
            "{mine:?}"
        );
        assert!(uptime().is_some_and(|u| u > 0.0));
        assert!(ticks_per_second() > 0 && page_size() >= 4096);
    }
}
