//! The process groups of running scripts, one file per script under
//! `state_dir/groups/NAME`, written when a run starts and removed when it ends; what is left
//! after a crash is swept at the next start.
//!
//! A record names the group and what proves it is ours: the boot, the leader's start time,
//! the shim that started it (pid and start time) and the run (`SCRIPTD_SCRIPT` and
//! `SCRIPTD_RUN_ID` in the environment of its processes). The sweep never signals group 1 or
//! below, the daemon's own group, or a group it cannot prove was started by a shim of ours.
//!
//! Every file is opened relative to the directory, without following symlinks.

use super::procfs::{self, ProcStat};
use crate::throttle::{self, Failure, Streak};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::oneshot;

/// Largest record file read.
const MAX_RECORD: u64 = 4096;

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
    fn to_line(&self) -> String {
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

/// Why the records cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the process group records in {}: {source}", dir.display())]
pub struct RecordsError {
    dir: PathBuf,
    source: std::io::Error,
}

/// The directory of records (`state_dir/groups`), held open by the one thread that reads
/// and writes it (requests in order: a run's record is never removed by the end of the run
/// before it).
#[derive(Debug, Clone)]
pub struct GroupRecords {
    tx: std::sync::mpsc::Sender<Op>,
}

/// A request to the records' thread.
enum Op {
    Record {
        name: String,
        pgid: u32,
        shim_pid: u32,
        run_id: u64,
        reply: oneshot::Sender<Option<u64>>,
    },
    Forget(String, oneshot::Sender<()>),
    Sweep(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Records {
    path: PathBuf,
    dir: OwnedFd,
    boot_id: String,
    /// Failed writes (a full `state_dir`): logged once, then counted.
    unwritable: Streak,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl GroupRecords {
    /// Uses (and creates, mode 0700) `state_dir/groups`, refusing a symlink there.
    pub fn open(state_dir: &Path) -> Result<Self, RecordsError> {
        let path = state_dir.join("groups");
        let err = |source| RecordsError {
            dir: path.clone(),
            source,
        };
        let state = nix::fcntl::open(
            state_dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(io(e)))?;
        match mkdirat(&state, "groups", Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(io(e))),
        }
        let dir = openat(
            &state,
            "groups",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => err(std::io::Error::other(
                "it is a symbolic link or not a directory; remove it (the daemon recreates it)",
            )),
            e => err(io(e)),
        })?;
        let boot_id = procfs::boot_id().ok_or_else(|| {
            err(std::io::Error::other(
                "cannot read /proc/sys/kernel/random/boot_id",
            ))
        })?;
        let records = Records {
            path: path.clone(),
            dir,
            boot_id,
            unwritable: Streak::new(throttle::WINDOW),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("group-records".into())
            .spawn(move || records.serve(rx))
            .map_err(err)?;
        Ok(Self { tx })
    }

    /// Records that `pgid`, the group the script `name` leads, started by the shim
    /// `shim_pid` for run `run_id`, is running; returns the leader's start time. A script
    /// that has already exited has nothing to record.
    pub async fn record(&self, name: &str, pgid: u32, shim_pid: u32, run_id: u64) -> Option<u64> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Record {
            name: name.to_owned(),
            pgid,
            shim_pid,
            run_id,
            reply,
        };
        self.tx.send(op).ok()?;
        rx.await.ok().flatten()
    }

    /// The script's run ended: its group is gone.
    pub async fn forget(&self, name: &str) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Forget(name.to_owned(), reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// At startup, before any script runs: SIGKILLs every recorded group that still has
    /// processes of ours (left by a daemon and shims that were killed together), logs what it
    /// did and what it refused to do, and clears the records.
    pub async fn sweep(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Sweep(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Records {
    /// Serves requests until every [`GroupRecords`] is dropped.
    fn serve(mut self, rx: std::sync::mpsc::Receiver<Op>) {
        for op in rx {
            match op {
                Op::Record {
                    name,
                    pgid,
                    shim_pid,
                    run_id,
                    reply,
                } => {
                    let _ = reply.send(self.record(&name, pgid, shim_pid, run_id));
                }
                Op::Forget(name, reply) => {
                    if let Err(e) = self.remove(&name) {
                        tracing::warn!(
                            script = %name,
                            "cannot remove the process group record: {e}"
                        );
                    }
                    let _ = reply.send(());
                }
                Op::Sweep(reply) => {
                    self.sweep();
                    let _ = reply.send(());
                }
            }
        }
    }

    fn record(&mut self, name: &str, pgid: u32, shim_pid: u32, run_id: u64) -> Option<u64> {
        let start = procfs::proc_stat(pgid)?.start;
        let shim_start = procfs::proc_stat(shim_pid).map_or(0, |s| s.start);
        let rec = GroupRecord {
            pgid,
            start,
            boot_id: self.boot_id.clone(),
            shim_pid,
            shim_start,
            run_id,
        };
        let written = self.write(name, &rec.to_line());
        self.note(name, pgid, written);
        Some(start)
    }

    /// Logs a failed write of a record once, then a count at most once a minute (a fast
    /// periodic script on a full `state_dir` fails at every run), and that records are
    /// written again after a success.
    fn note(&mut self, name: &str, pgid: u32, written: std::io::Result<()>) {
        let dir = self.path.display();
        match written {
            Ok(()) => {
                if let Some(failed) = self.unwritable.succeeded() {
                    tracing::info!(
                        "process groups are recorded again in {dir} ({failed} more failed since \
                         the last report)"
                    );
                }
            }
            Err(e) => match self.unwritable.failed(Instant::now()) {
                None => {}
                Some(Failure::First) => tracing::warn!(
                    script = name,
                    "cannot record process group {pgid} in {}: {e}; a daemon started after a \
                     crash could not sweep what the run leaves behind (further failures are \
                     counted once a minute)",
                    self.path.join(name).display()
                ),
                Some(Failure::Summary { failed }) => tracing::warn!(
                    "still cannot record process groups in {dir}: {failed} failed since the \
                     last report (last: {e})"
                ),
            },
        }
    }

    /// Writes `NAME` by a fresh temp file (created exclusively: never a planted one) renamed
    /// over it.
    fn write(&self, name: &str, text: &str) -> std::io::Result<()> {
        let tmp = format!(".{name}.tmp");
        match unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io(e)),
        }
        let fd = openat(
            &self.dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io)?;
        std::fs::File::from(fd).write_all(text.as_bytes())?;
        renameat(&self.dir, tmp.as_str(), &self.dir, name).map_err(io)
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        match unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Reads a record: a regular file, not followed if a symlink, bounded.
    fn read(&self, name: &str) -> std::io::Result<String> {
        let fd = openat(
            &self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let st = fstat(&fd).map_err(io)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_RECORD)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    fn names(&self) -> std::io::Result<Vec<String>> {
        let mut dir = nix::dir::Dir::openat(
            &self.dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sweep(&self) {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.path.display());
                return;
            }
        };
        if names.is_empty() {
            return;
        }
        let procs = procfs::all_proc_stats();
        let own_pgid = u32::try_from(nix::unistd::getpgrp().as_raw()).unwrap_or(0);
        let sys = System {
            boot_id: &self.boot_id,
            own_pgid,
            procs: &procs,
            environ_has: &procfs::environ_has,
        };
        for name in names {
            // A temp file of a write cut short.
            if name.starts_with('.') {
                let _ = self.remove(&name);
                continue;
            }
            let file = self.path.join(&name);
            let verdict = match self.read(&name) {
                Ok(text) => match GroupRecord::parse(&text) {
                    Some(rec) => (Some(rec.pgid), judge(&name, &rec, &sys)),
                    None => (None, Verdict::Refused(Refusal::Unreadable)),
                },
                Err(e) => {
                    tracing::warn!(
                        script = %name,
                        "not reading {}: {e}; removing it, nothing signalled",
                        file.display()
                    );
                    (None, Verdict::Refused(Refusal::Unreadable))
                }
            };
            match verdict {
                (Some(pgid), Verdict::Kill { members }) => {
                    super::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    tracing::warn!(
                        script = %name,
                        "killed process group {pgid} ({members} process{}) left behind by a \
                         previous daemon",
                        if members == 1 { "" } else { "es" }
                    );
                }
                (_, Verdict::Refused(why)) => tracing::warn!(
                    script = %name,
                    "not signalling the process group recorded in {}: {why}",
                    file.display()
                ),
                (_, Verdict::OtherBoot) => tracing::info!(
                    script = %name,
                    "{} is from an earlier boot: nothing of it runs",
                    file.display()
                ),
                _ => {}
            }
            if let Err(e) = self.remove(&name) {
                tracing::warn!("cannot remove {}: {e}", file.display());
            }
        }
    }
}

/// After a run's shim exited: SIGKILLs what is left of the group `pgid` (leader started at
/// `start`). A shim that exits on its own has emptied the group; one that was killed could
/// not. Returns how many processes were left. Reads `/proc` on a blocking thread.
pub async fn kill_leftovers(pgid: u32, start: u64) -> usize {
    let Ok(raw) = i32::try_from(pgid) else {
        return 0;
    };
    if raw <= 1 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(-raw), None).is_err() {
        return 0; // the usual case: nothing left, no /proc scan
    }
    tokio::task::spawn_blocking(move || {
        let n = leftover_members(&procfs::all_proc_stats(), pgid, start);
        if n > 0 {
            super::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        n
    })
    .await
    .unwrap_or(0)
}

/// How many processes are left of the group `pgid` recorded with leader start time
/// `start`. The leader still running is ours only if it started at that time (its pid was
/// not reused); with the leader gone, the processes still in the group are its remnants
/// (Linux does not hand out a pid that is still some group's id), started after it.
fn leftover_members(procs: &HashMap<u32, ProcStat>, pgid: u32, start: u64) -> usize {
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

    #[test]
    fn a_failed_record_starts_a_streak_that_the_next_written_one_ends() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir_path = state.path().join("groups");
        std::fs::create_dir(&dir_path).expect("groups dir");
        let dir = nix::fcntl::open(
            &dir_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open groups dir");
        let mut records = Records {
            path: dir_path.clone(),
            dir,
            boot_id: "boot".into(),
            unwritable: Streak::new(throttle::WINDOW),
        };
        let me = std::process::id();
        // A directory where the temp file goes: the write fails (as on a full disk).
        let blocker = dir_path.join(".job.tmp");
        std::fs::create_dir(&blocker).expect("blocker");
        for run in 1..=3 {
            assert!(records.record("job", me, me, run).is_some());
            assert!(records.unwritable.is_failing(), "run {run}");
        }
        assert!(!dir_path.join("job").exists());
        std::fs::remove_dir(&blocker).expect("unblock");
        assert!(records.record("job", me, me, 4).is_some());
        assert!(
            !records.unwritable.is_failing(),
            "a written record ends the streak"
        );
        let text = std::fs::read_to_string(dir_path.join("job")).expect("record");
        assert_eq!(
            GroupRecord::parse(&text).map(|r| r.run_id),
            Some(4),
            "{text}"
        );
    }
}
