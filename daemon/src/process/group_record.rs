//! What a process group record holds, and what the startup sweep may do with the group it
//! names (pure: [`crate::process::GroupRecords`] does the I/O and passes what `/proc` says).

use super::procfs::ProcStat;
use std::collections::HashMap;

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The process group, which is the script's pid.
    pub pgid: u32,
    /// The script's start time (clock ticks after boot).
    pub start: u64,
    /// The boot it ran in.
    pub boot_id: String,
    /// The shim that started it.
    pub shim_pid: u32,
    /// The shim's start time.
    pub shim_start: u64,
    /// The run's id (`SCRIPTD_RUN_ID`).
    pub run_id: u64,
}

impl GroupRecord {
    /// The record as written to its file.
    pub fn to_line(&self) -> String {
        format!(
            "v2 {} {} {} {} {} {}\n",
            self.pgid, self.start, self.boot_id, self.shim_pid, self.shim_start, self.run_id
        )
    }

    /// Parses a record; `None` for anything else (an older format included).
    pub fn parse(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [v, pgid, start, boot, shim, shim_start, run] = f[..] else {
            return None;
        };
        (v == "v2").then_some(())?;
        Some(Self {
            pgid: pgid.parse().ok()?,
            start: start.parse().ok()?,
            boot_id: boot.to_owned(),
            shim_pid: shim.parse().ok()?,
            shim_start: shim_start.parse().ok()?,
            run_id: run.parse().ok()?,
        })
    }
}

/// What the sweep does with a record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its processes are ours and still there: SIGKILL to the group.
    Kill {
        /// How many processes the group has.
        members: usize,
    },
    /// Nothing of it is left.
    Gone,
    /// Written in another boot: none of its processes can exist.
    OtherBoot,
    /// Not signalled, for the reason given.
    Refused(Refusal),
}

/// Why the sweep leaves a recorded group alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The file is not a record of this daemon's format.
    #[error("the record is unreadable (not `v2 PGID START BOOT SHIM SHIM_START RUN`)")]
    Unreadable,
    /// 0 and 1 are not groups a script can lead (`kill(-1)` signals every process).
    #[error("process group {0} is not one a script can lead")]
    NotAGroup(u32),
    /// The daemon's own group.
    #[error("process group {0} is the daemon's own")]
    DaemonsGroup(u32),
    /// The group's leader is another process than the recorded one.
    #[error(
        "its leader (pid {pgid}) is not the recorded script: it started at tick {found}, the \
         script at {recorded} (the pid was reused)"
    )]
    LeaderReused {
        /// The group.
        pgid: u32,
        /// The leader's start time now.
        found: u64,
        /// The recorded start time.
        recorded: u64,
    },
    /// The leader's parent is not the recorded shim.
    #[error(
        "its leader (pid {pgid}) is not a child of the recorded shim (pid {shim}): its parent \
         is pid {parent}, not a shim of scriptd started when the record says"
    )]
    NotFromShim {
        /// The group.
        pgid: u32,
        /// The recorded shim.
        shim: u32,
        /// The leader's parent.
        parent: u32,
    },
    /// The leader is gone, and none of the group's processes carries the run's environment.
    #[error(
        "its leader is gone and none of its {members} process(es) carries the run's \
         environment (SCRIPTD_SCRIPT, SCRIPTD_RUN_ID)"
    )]
    NoMarker {
        /// How many processes the group has.
        members: usize,
    },
}

/// What the sweep knows of the system.
pub struct System<'a> {
    /// This boot.
    pub boot_id: &'a str,
    /// The daemon's own process group.
    pub own_pgid: u32,
    /// Every process.
    pub procs: &'a HashMap<u32, ProcStat>,
    /// Whether a process's environment holds the given `NAME=value` entries.
    pub environ_has: &'a dyn Fn(u32, &[String]) -> bool,
}

/// Decides what to do with the record of `script`'s group.
pub fn judge(script: &str, rec: &GroupRecord, sys: &System<'_>) -> Verdict {
    if rec.boot_id != sys.boot_id {
        return Verdict::OtherBoot;
    }
    if rec.pgid <= 1 {
        return Verdict::Refused(Refusal::NotAGroup(rec.pgid));
    }
    if rec.pgid == sys.own_pgid {
        return Verdict::Refused(Refusal::DaemonsGroup(rec.pgid));
    }
    let members: Vec<u32> = sys
        .procs
        .iter()
        .filter(|(_, p)| p.pgrp == rec.pgid && !p.zombie)
        .map(|(&pid, _)| pid)
        .collect();
    if members.is_empty() {
        return Verdict::Gone;
    }
    match sys.procs.get(&rec.pgid).filter(|p| !p.zombie) {
        Some(leader) if leader.start != rec.start => Verdict::Refused(Refusal::LeaderReused {
            pgid: rec.pgid,
            found: leader.start,
            recorded: rec.start,
        }),
        Some(leader) => {
            let shim_is_parent = leader.ppid == rec.shim_pid
                && sys
                    .procs
                    .get(&rec.shim_pid)
                    .is_some_and(|s| s.start == rec.shim_start && s.shim);
            if shim_is_parent {
                Verdict::Kill {
                    members: members.len(),
                }
            } else {
                Verdict::Refused(Refusal::NotFromShim {
                    pgid: rec.pgid,
                    shim: rec.shim_pid,
                    parent: leader.ppid,
                })
            }
        }
        None => {
            // Linux gives no new process a pid that is still some group's id, so these are
            // what the leader left, or a later group's if this one emptied and the pid came
            // round again: the run's environment tells.
            let marker = [
                format!("SCRIPTD_SCRIPT={script}"),
                format!("SCRIPTD_RUN_ID={}", rec.run_id),
            ];
            let later: Vec<u32> = members
                .iter()
                .copied()
                .filter(|pid| sys.procs.get(pid).is_some_and(|p| p.start >= rec.start))
                .collect();
            if later.iter().any(|&pid| (sys.environ_has)(pid, &marker)) {
                Verdict::Kill {
                    members: members.len(),
                }
            } else {
                Verdict::Refused(Refusal::NoMarker {
                    members: members.len(),
                })
            }
        }
    }
}

/// How many processes are left of the group `pgid` recorded with leader start time
/// `start`. The leader still running is ours only if it started at that time (its pid was
/// not reused); with the leader gone, the processes still in the group are its remnants
/// (Linux does not hand out a pid that is still some group's id), started after it.
pub fn leftover_members(procs: &HashMap<u32, ProcStat>, pgid: u32, start: u64) -> usize {
    if procs.get(&pgid).is_some_and(|leader| leader.start != start) {
        return 0; // the pid now belongs to another process
    }
    procs
        .values()
        .filter(|p| p.pgrp == pgid && p.start >= start && !p.zombie)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ppid: u32, pgrp: u32, start: u64) -> ProcStat {
        ProcStat {
            shim: false,
            zombie: false,
            ppid,
            pgrp,
            start,
            cpu_ticks: 0,
            rss_pages: 0,
        }
    }

    #[test]
    fn leftovers_only_of_the_recorded_group() {
        let procs: HashMap<u32, ProcStat> = [
            (100, p(90, 100, 50)),  // leader, recorded at 50
            (101, p(100, 100, 60)), // its child
            (200, p(1, 300, 10)),   // unrelated
        ]
        .into();
        assert_eq!(leftover_members(&procs, 100, 50), 2);
        // Recorded at another start time: pid 100 was reused, leave it alone.
        assert_eq!(leftover_members(&procs, 100, 40), 0);
        // Leader gone, a child left in its group (and a zombie, which counts for nothing).
        let zombie = ProcStat {
            zombie: true,
            ..p(1, 100, 70)
        };
        let orphaned: HashMap<u32, ProcStat> =
            [(101, p(1, 100, 60)), (102, zombie), (200, p(1, 300, 10))].into();
        assert_eq!(leftover_members(&orphaned, 100, 50), 1);
        assert_eq!(leftover_members(&orphaned, 300, 50), 0);
    }

    proptest::proptest! {
        #[test]
        fn records_round_trip(
            pgid: u32, start: u64, boot in "[0-9a-f-]{1,40}", shim_pid: u32, shim_start: u64,
            run_id: u64,
        ) {
            let rec = GroupRecord { pgid, start, boot_id: boot, shim_pid, shim_start, run_id };
            proptest::prop_assert_eq!(GroupRecord::parse(&rec.to_line()), Some(rec));
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in ".{0,200}") {
            let _ = GroupRecord::parse(&text);
        }
    }

    #[test]
    fn record_lines() {
        let rec = GroupRecord {
            pgid: 100,
            start: 50,
            boot_id: "b-1".into(),
            shim_pid: 90,
            shim_start: 49,
            run_id: 7,
        };
        assert_eq!(GroupRecord::parse(&rec.to_line()), Some(rec));
        // The format before boot ids and shims were recorded is not trusted.
        assert_eq!(GroupRecord::parse("100 50\n"), None);
        assert_eq!(GroupRecord::parse("v2 100 50 b 90 49"), None);
        assert_eq!(GroupRecord::parse("v2 x 50 b 90 49 7"), None);
    }

    #[test]
    fn verdicts() {
        let rec = |pgid, start| GroupRecord {
            pgid,
            start,
            boot_id: "boot".into(),
            shim_pid: 90,
            shim_start: 40,
            run_id: 7,
        };
        let procs: HashMap<u32, ProcStat> = [
            (1, p(0, 1, 1)),
            (
                90,
                ProcStat {
                    shim: true,
                    ..p(1, 90, 40)
                },
            ), // the shim
            (100, p(90, 100, 50)),  // script, leads 100
            (101, p(100, 100, 60)), // its child
            (500, p(1, 500, 20)),   // the daemon, leads 500
            (600, p(1, 600, 70)),   // unrelated leader
            (610, p(601, 610, 71)), // unrelated leader whose parent is no shim
            (601, p(1, 601, 30)),
            (700, p(1, 777, 80)), // in a group whose leader is gone, marked
            (701, p(1, 888, 80)), // in a group whose leader is gone, unmarked
        ]
        .into();
        let marked = |pid: u32, vars: &[String]| {
            pid == 700 && vars == ["SCRIPTD_SCRIPT=s", "SCRIPTD_RUN_ID=7"]
        };
        let sys = System {
            boot_id: "boot",
            own_pgid: 500,
            procs: &procs,
            environ_has: &marked,
        };
        let refused = |r| Verdict::Refused(r);
        let table: Vec<(&str, GroupRecord, Verdict)> = vec![
            ("ours", rec(100, 50), Verdict::Kill { members: 2 }),
            (
                "other boot (even pgid 1)",
                GroupRecord {
                    boot_id: "old".into(),
                    ..rec(1, 1)
                },
                Verdict::OtherBoot,
            ),
            ("pgid 1", rec(1, 1), refused(Refusal::NotAGroup(1))),
            ("pgid 0", rec(0, 1), refused(Refusal::NotAGroup(0))),
            (
                "daemon's",
                rec(500, 20),
                refused(Refusal::DaemonsGroup(500)),
            ),
            (
                "reused pid",
                rec(100, 49),
                refused(Refusal::LeaderReused {
                    pgid: 100,
                    found: 50,
                    recorded: 49,
                }),
            ),
            (
                "unrelated leader at the recorded start",
                rec(600, 70),
                refused(Refusal::NotFromShim {
                    pgid: 600,
                    shim: 90,
                    parent: 1,
                }),
            ),
            (
                "parent not a shim",
                GroupRecord {
                    shim_pid: 601,
                    shim_start: 30,
                    ..rec(610, 71)
                },
                refused(Refusal::NotFromShim {
                    pgid: 610,
                    shim: 601,
                    parent: 601,
                }),
            ),
            (
                "shim pid reused",
                GroupRecord {
                    shim_start: 41,
                    ..rec(100, 50)
                },
                refused(Refusal::NotFromShim {
                    pgid: 100,
                    shim: 90,
                    parent: 90,
                }),
            ),
            (
                "leader gone, marked",
                rec(777, 75),
                Verdict::Kill { members: 1 },
            ),
            (
                "leader gone, marked, started before the leader",
                rec(777, 85),
                refused(Refusal::NoMarker { members: 1 }),
            ),
            (
                "leader gone, unmarked",
                rec(888, 75),
                refused(Refusal::NoMarker { members: 1 }),
            ),
            ("nothing left", rec(999, 75), Verdict::Gone),
        ];
        for (what, r, want) in table {
            assert_eq!(judge("s", &r, &sys), want, "{what}");
        }
    }
}
