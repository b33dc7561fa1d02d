//! What each running script's process group (and the daemon itself) uses, sampled from
//! `/proc` on demand: for `ctl status --wide`, `ctl top` and scrapes. One sample reads every
//! group at once on one blocking thread, and a sample less than [`MAX_AGE`] old is reused,
//! so however many clients ask, `/proc` is walked at most about once a second.

use crate::process::procfs::{self, GroupUsage};
use scriptd_common::proto;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sample younger than this is reused.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// What one group (or the daemon) uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time (user + system), seconds.
    pub cpu_seconds: f64,
    /// CPU use since the previous sample, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Processes.
    pub processes: u32,
    /// Open descriptors.
    pub fds: u32,
}

impl Usage {
    /// As sent on the wire.
    pub fn to_proto(self) -> proto::Resources {
        proto::Resources {
            cpu_seconds: self.cpu_seconds,
            cpu_percent: self.cpu_percent,
            rss_bytes: self.rss_bytes,
            processes: self.processes,
            fds: self.fds,
        }
    }
}

/// One sample: each group that had a live process, by process group id, and the daemon.
#[derive(Debug, Default)]
pub struct Sample {
    /// By process group id (a running script's pid).
    pub groups: HashMap<u32, Usage>,
    /// The daemon process itself.
    pub daemon: Option<Usage>,
}

/// CPU time used by a process or group at a moment, both in seconds (the moment on the
/// clock of `/proc/uptime`, which process start times are counted on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuMark {
    /// CPU seconds used so far.
    pub cpu: f64,
    /// Seconds since boot.
    pub at: f64,
}

/// CPU use between two marks, percent of one core; 0 when no time passed or the counter
/// went back (another group with the same id).
pub fn cpu_percent(before: CpuMark, now: CpuMark) -> f64 {
    let (cpu, wall) = (now.cpu - before.cpu, now.at - before.at);
    if wall <= 0.0 || cpu < 0.0 {
        0.0
    } else {
        cpu / wall * 100.0
    }
}

/// Takes samples and keeps the latest one and the CPU marks of the one before.
pub struct Sampler {
    cache: tokio::sync::Mutex<Cache>,
    ticks: f64,
    page: u64,
}

#[derive(Default)]
struct Cache {
    taken: Option<Instant>,
    /// The groups the latest sample was asked for.
    asked: HashSet<u32>,
    latest: Arc<Sample>,
    /// CPU marks of the latest sample, by (group id, leader start): the previous point of
    /// the next sample's CPU %.
    marks: HashMap<(u32, u64), CpuMark>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            cache: Default::default(),
            ticks: procfs::ticks_per_second() as f64,
            page: procfs::page_size(),
        }
    }
}

/// The daemon's own key in the marks (no process group id is 0).
const DAEMON_KEY: u32 = 0;

impl Sampler {
    /// What `groups` (process group ids) and the daemon use now, or as of a sample less
    /// than `MAX_AGE` (1 s) old that covered them. Callers that ask while a sample is being
    /// taken wait for it and share it.
    pub async fn sample(&self, groups: HashSet<u32>) -> Arc<Sample> {
        let mut cache = self.cache.lock().await;
        if cache.taken.is_some_and(|t| t.elapsed() < MAX_AGE) && groups.is_subset(&cache.asked) {
            return cache.latest.clone();
        }
        let read = {
            let groups = groups.clone();
            tokio::task::spawn_blocking(move || {
                let usage = procfs::group_usage(&groups);
                let pid = std::process::id();
                let own = procfs::proc_stat(pid).map(|stat| {
                    let mut u = GroupUsage::default();
                    u.add(stat.pgrp, &stat, procfs::count_fds(pid));
                    u
                });
                (usage, own, procfs::uptime())
            })
        };
        let Ok((usage, own, Some(now))) = read.await else {
            // /proc unreadable (or the blocking pool gone): nothing to show, nothing cached.
            return Arc::new(Sample::default());
        };
        let mut marks = HashMap::new();
        let mut usage_of = |key: u32, g: &GroupUsage| {
            let leader = g.leader_start.unwrap_or(0);
            let mark = CpuMark {
                cpu: g.cpu_ticks as f64 / self.ticks,
                at: now,
            };
            // The first sample of a group measures from its leader's start.
            let before = cache.marks.get(&(key, leader)).copied().or_else(|| {
                g.leader_start.map(|s| CpuMark {
                    cpu: 0.0,
                    at: s as f64 / self.ticks,
                })
            });
            marks.insert((key, leader), mark);
            Usage {
                cpu_seconds: mark.cpu,
                cpu_percent: before.map_or(0.0, |b| cpu_percent(b, mark)),
                rss_bytes: g.rss_pages * self.page,
                processes: g.processes,
                fds: g.fds,
            }
        };
        let sample = Arc::new(Sample {
            groups: usage
                .iter()
                .map(|(id, g)| (*id, usage_of(*id, g)))
                .collect(),
            daemon: own.map(|g| usage_of(DAEMON_KEY, &g)),
        });
        *cache = Cache {
            taken: Some(Instant::now()),
            asked: groups,
            latest: sample.clone(),
            marks,
        };
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let m = |cpu, at| CpuMark { cpu, at };
        let cases = [
            (m(0.0, 10.0), m(1.0, 11.0), 100.0),
            (m(2.0, 10.0), m(2.5, 12.0), 25.0),
            (m(0.0, 10.0), m(4.0, 12.0), 200.0),
            (m(1.0, 10.0), m(1.0, 10.0), 0.0),
            (m(5.0, 10.0), m(1.0, 11.0), 0.0),
            (m(0.0, 12.0), m(1.0, 11.0), 0.0),
        ];
        for (before, now, want) in cases {
            assert_eq!(cpu_percent(before, now), want, "{before:?} -> {now:?}");
        }
    }

    #[tokio::test]
    async fn samples_are_shared_for_a_second() {
        let s = Sampler::default();
        let own = nix::unistd::getpgrp().as_raw() as u32;
        let first = s.sample([own].into()).await;
        assert!(first.groups.contains_key(&own), "{first:?}");
        assert!(first.daemon.is_some_and(|d| d.rss_bytes > 0 && d.fds > 0));
        let again = s.sample(HashSet::new()).await;
        assert!(
            Arc::ptr_eq(&first, &again),
            "a fresh sample covering the groups is reused"
        );
        // A group the cached sample was not asked for: sampled anew.
        let other = s.sample([own, 1].into()).await;
        assert!(!Arc::ptr_eq(&first, &other));
    }
}
