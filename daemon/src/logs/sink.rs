//! [`LogSink`]: the log state of one script behind one lock — the ring in memory, the log
//! file, the settings — and what readers take out of it (a backlog, a batch of live lines,
//! or the files to catch up from).

use super::backlog::last_record;
use super::counters::{LogCounters, LogCounts};
use super::file::LogFile;
use super::follow::Query;
use super::paths::{log_files, log_path, open_all_read};
use super::record::{Block, Stream};
use super::ring::Ring;
use super::{BATCH_BYTES, BATCH_LINES};
use scriptd_common::config::LogConfig;
use scriptd_common::proto;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::SystemTime;

/// The log state of one script.
pub struct LogSink {
    inner: Mutex<Inner>,
    /// The round of [`Waiters`], readable without the lock: a follower still listed in it
    /// knows no line came since it looked (see [`LogSink::listed`]).
    round: AtomicU64,
    /// Live followers attached; while there are any, the buffer keeps
    /// [`FOLLOW_WINDOW`](super::FOLLOW_WINDOW).
    followers: AtomicUsize,
    /// Run id of the newest record in the files when the sink was opened.
    last_run_id: u64,
    /// What the metrics read of this log.
    pub(super) counters: Arc<LogCounters>,
}

struct Inner {
    ring: Ring,
    cfg: LogConfig,
    file: LogFile,
    /// The script is gone (removed, daemon stopping): followers end.
    closed: bool,
    /// The records' time, formatted once per millisecond.
    time: TimeText,
    /// Followers that found no new line: the next append (or the close) wakes them.
    waiters: Waiters,
}

/// The tasks of followers waiting for lines, each listed once per round (a round ends when
/// an append or the close wakes them all). One list per sink instead of a notification per
/// follower: an append takes the list under the lock it holds anyway and wakes the tasks
/// after.
#[derive(Default)]
struct Waiters {
    wakers: Vec<Waker>,
    round: u64,
}

/// A follower's place in its sink's [`Waiters`]: the round and index it is listed at, and
/// the task listed.
#[derive(Debug, Default)]
pub(super) struct Waiting(Option<(u64, usize, Waker)>);

impl Waiters {
    /// Lists `waker` for the next wake-up, unless `at` says it is listed already.
    fn wait(&mut self, waker: &Waker, at: &mut Waiting) {
        if let Some((round, i, listed)) = &mut at.0 {
            if *round == self.round {
                if let Some(in_list) = self.wakers.get_mut(*i) {
                    if !in_list.will_wake(waker) {
                        in_list.clone_from(waker);
                        listed.clone_from(waker);
                    }
                    return;
                }
            }
        }
        at.0 = Some((self.round, self.wakers.len(), waker.clone()));
        self.wakers.push(waker.clone());
    }

    /// Ends the round: the tasks to wake (once the lock is released).
    fn take(&mut self, round: &AtomicU64) -> Vec<Waker> {
        if self.wakers.is_empty() {
            return Vec::new();
        }
        self.round += 1;
        round.store(self.round, Ordering::Release);
        std::mem::take(&mut self.wakers)
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The time of the last block, as its records spell it: a script that writes line by line
/// makes many blocks a millisecond, and formatting the time anew (and allocating it) was
/// ~650 of the ~7,000 instructions a one-line block cost the daemon.
#[derive(Default)]
struct TimeText {
    ms: Option<i64>,
    text: String,
}

impl TimeText {
    /// `now` (`ms` Unix ms) as `2026-12-02T09:00:00.123Z`.
    fn text(&mut self, now: SystemTime, ms: i64) -> &str {
        if self.ms != Some(ms) {
            use std::fmt::Write as _;
            self.text.clear();
            let _ = write!(self.text, "{}", humantime::format_rfc3339_millis(now));
            self.ms = Some(ms);
        }
        &self.text
    }
}

impl Inner {
    /// Flushes the file and opens every log file for reading, oldest first.
    fn open_files(&mut self) -> Vec<File> {
        self.file.flush();
        self.file.settle();
        open_all_read(&self.file.path)
    }
}

impl LogSink {
    /// Opens (or creates) the script's log file and resumes the sequence after its last line
    /// (or the last line of the newest rotated file, when the current one is empty).
    pub fn open(dir: &Path, script: &str, max_lines: u64, cfg: LogConfig) -> Arc<Self> {
        let path = log_path(dir, script);
        let last = log_files(&path).iter().rev().find_map(|p| last_record(p));
        let next_seq = last.map_or(1, |(seq, _)| seq + 1);
        let last_run_id = last.map_or(0, |(_, run)| run);
        let counters = Arc::new(LogCounters::default());
        Arc::new(Self {
            inner: Mutex::new(Inner {
                ring: Ring::new(max_lines as usize, next_seq),
                cfg,
                file: LogFile::new(path, counters.clone()),
                closed: false,
                time: TimeText::default(),
                waiters: Waiters::default(),
            }),
            round: AtomicU64::new(0),
            followers: AtomicUsize::new(0),
            last_run_id,
            counters,
        })
    }

    /// Run id of the newest record found in the files at open: run ids continue from it
    /// across daemon restarts, so `--run ID` never matches two runs.
    pub fn last_run_id(&self) -> u64 {
        self.last_run_id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lines, bytes, skipped lines and failed writes so far.
    pub fn counts(&self) -> LogCounts {
        self.counters.get()
    }

    /// Live followers attached now.
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::Relaxed)
    }

    fn following(&self) -> bool {
        self.followers.load(Ordering::Relaxed) > 0
    }

    /// Live change of the ring size and file settings.
    pub fn set_config(&self, max_lines: u64, cfg: LogConfig) {
        let following = self.following();
        let mut g = self.lock();
        g.ring.max_lines = max_lines as usize;
        g.cfg = cfg;
        g.ring.trim(following);
    }

    /// Current line cap.
    pub fn max_line_bytes(&self) -> usize {
        self.lock().cfg.max_line_bytes as usize
    }

    /// Takes a block read at one time from one stream: numbers its lines, writes them to
    /// the file (one write), keeps them in memory and wakes followers.
    pub fn append(&self, mut block: Block) {
        if block.is_empty() {
            return;
        }
        let now = SystemTime::now();
        block.time_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.counters
            .taken(block.stream(), block.len(), block.text_bytes());
        let following = self.following();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.ring.number(&mut block);
        let time = inner.time.text(now, block.time_ms);
        inner.file.push(&block, time, &inner.cfg);
        inner.file.flush();
        inner.file.settle();
        inner.ring.push(block, following);
        let woken = inner.waiters.take(&self.round);
        drop(g);
        wake_all(woken);
    }

    /// Keeps the log file open between writes until the guard is dropped: a run's pumps
    /// hold it while they read, so a chatty run does not open the file for every chunk,
    /// and a script without a run holds no descriptor.
    pub(super) fn hold_file(self: &Arc<Self>) -> FileHold {
        self.lock().file.hold();
        FileHold(self.clone())
    }

    /// A daemon line (run started / ended) in the script's stream.
    pub fn system(&self, run_id: u64, text: String) {
        let mut block = Block::new(run_id, Stream::System, text.len());
        block.push(text.as_bytes(), false);
        self.append(block);
    }

    /// The script is gone for good (removed, daemon stopping): followers get what is left
    /// and end.
    pub fn close(&self) {
        let woken = {
            let mut g = self.lock();
            g.closed = true;
            g.file.flush();
            g.file.settle();
            g.waiters.take(&self.round)
        };
        wake_all(woken);
    }

    /// Under the lock: the backlog in memory, the files (opened now, so a rotation while
    /// they are read changes nothing) when the backlog reaches back before memory, and the
    /// seq where live lines start.
    pub(super) fn start(self: &Arc<Self>, q: &Query) -> Start {
        let following = q.follow.then(|| {
            self.followers.fetch_add(1, Ordering::Relaxed);
            Following(self.clone())
        });
        let mut g = self.lock();
        let end = g.ring.next_seq;
        let front = g.ring.front();
        let mut mem = Vec::new();
        // Runs follow each other in the log: a line of an earlier run means the one asked
        // for starts after it, and the files hold nothing of it.
        let mut before_run = false;
        if q.wants_backlog() {
            for l in g.ring.lines_rev() {
                if l.seq <= q.after_seq || (q.lines > 0 && mem.len() as u64 >= q.lines) {
                    break;
                }
                if q.run_id > 0 && l.run_id > 0 && l.run_id < q.run_id {
                    before_run = true;
                    break;
                }
                if q.matches(&l) {
                    mem.push(l.to_proto());
                }
            }
            mem.reverse();
        }
        let file_need = (q.lines > 0).then(|| q.lines - mem.len() as u64);
        let older_may_match = match (q.since_ms, g.ring.oldest_time_ms()) {
            (Some(cutoff), Some(oldest)) => oldest >= cutoff,
            _ => true,
        };
        let files = (q.wants_backlog()
            && !before_run
            && front > q.after_seq.saturating_add(1)
            && file_need != Some(0)
            && older_may_match)
            .then(|| g.open_files());
        drop(g);
        Start {
            mem,
            files,
            file_need,
            front,
            end,
            following,
        }
    }

    /// Whether `at` is still listed to be woken by the next append, for `waker`'s task:
    /// then no line came (and the sink did not close) since its last take, which it need not
    /// repeat. Without the lock: the server polls a response for more reasons than new lines
    /// (flow control, its own bookkeeping), and most polls of a follower find nothing.
    pub(super) fn listed(&self, at: &Waiting, waker: &Waker) -> bool {
        at.0.as_ref().is_some_and(|(round, _, listed)| {
            *round == self.round.load(Ordering::Acquire) && listed.will_wake(waker)
        })
    }

    /// Under the lock: the lines from `cursor` on that `q` wants (a batch), how many lines
    /// the batch covers, and whether the sink is closed; or, when `cursor` is older than
    /// memory, the files to catch up from and where memory starts. When there is no line
    /// from `cursor` on and the sink is open, `waker` is listed (`at`) to be woken by the
    /// next append: under the same lock, so no line comes between the take and the wait.
    pub(super) fn take(&self, cursor: u64, q: &Query, at: &mut Waiting, waker: &Waker) -> Taken {
        let mut g = self.lock();
        let front = g.ring.front();
        if cursor < front {
            return Taken::Behind {
                files: g.open_files(),
                front,
            };
        }
        let (mut bytes, mut covered) = (0, 0);
        let mut batch = Vec::new();
        for l in g.ring.lines_from(cursor) {
            if covered >= BATCH_LINES || (bytes > 0 && bytes + l.text.len() > BATCH_BYTES) {
                break;
            }
            covered += 1;
            bytes += l.text.len();
            if q.matches(&l) {
                batch.push(l.to_proto());
            }
        }
        if covered == 0 && !g.closed {
            g.waiters.wait(waker, at);
        }
        Taken::Lines {
            batch,
            covered: covered as u64,
            closed: g.closed,
        }
    }
}

pub(super) enum Taken {
    Lines {
        batch: Vec<proto::LogLine>,
        covered: u64,
        closed: bool,
    },
    Behind {
        files: Vec<File>,
        front: u64,
    },
}

/// Keeps the sink's log file open while it lives (see [`LogSink::hold_file`]).
pub(super) struct FileHold(Arc<LogSink>);

impl Drop for FileHold {
    fn drop(&mut self) {
        self.0.lock().file.release();
    }
}

/// A follower attached to a sink: keeps the follow window while it lives.
pub(super) struct Following(pub(super) Arc<LogSink>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Start {
    /// Backlog from memory, oldest first, filtered and limited.
    pub(super) mem: Vec<proto::LogLine>,
    /// Log files, oldest first, when the backlog reaches back before memory.
    pub(super) files: Option<Vec<File>>,
    /// How many matching lines the files must give (`None`: all that match).
    pub(super) file_need: Option<u64>,
    /// The files give only lines before this seq (the rest came from memory).
    pub(super) front: u64,
    /// Live lines start at this seq.
    pub(super) end: u64,
    pub(super) following: Option<Following>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::logs::record::RawLine;
    use crate::logs::{MEM_BYTES, PIECE_BYTES};

    pub(crate) fn cfg(max_bytes: u64, keep: u32) -> LogConfig {
        LogConfig {
            max_bytes,
            keep,
            max_line_bytes: 64 << 10,
        }
    }

    fn parse(line: &str) -> Option<proto::LogLine> {
        RawLine::parse(line.as_bytes()).and_then(|r| r.to_proto())
    }

    pub(crate) fn sink(dir: &Path, max_lines: u64, c: LogConfig) -> Arc<LogSink> {
        LogSink::open(dir, "s", max_lines, c)
    }

    pub(crate) fn push(s: &LogSink, n: usize) {
        let mut block = Block::new(1, Stream::Stdout, 0);
        for i in 0..n {
            block.push(format!("line {i}").as_bytes(), false);
        }
        s.append(block);
    }

    /// Lines in memory.
    pub(crate) fn in_memory(s: &LogSink) -> usize {
        s.lock().ring.count
    }

    fn next_seq(s: &LogSink) -> u64 {
        s.lock().ring.next_seq
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_follower_that_found_nothing_is_listed_once_and_woken_by_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 100, cfg(1 << 20, 1));
        let q = Query::default();
        let (count, waker) = counting();
        let mut at = Waiting::default();
        assert!(!s.listed(&at, &waker));
        // Found nothing: listed, and listed once however often it looks again.
        for _ in 0..3 {
            assert!(matches!(
                s.take(1, &q, &mut at, &waker),
                Taken::Lines { covered: 0, .. }
            ));
        }
        assert!(s.listed(&at, &waker));
        assert_eq!(s.lock().waiters.wakers.len(), 1);
        // Another task is not taken for the one listed.
        let (_, other) = counting();
        assert!(!s.listed(&at, &other));
        push(&s, 2);
        assert_eq!(woken(&count), 1);
        assert!(!s.listed(&at, &waker), "a new line ends the round");
        assert!(matches!(
            s.take(1, &q, &mut at, &waker),
            Taken::Lines { covered: 2, .. }
        ));
        // Lines taken: not listed (only a take that finds nothing waits).
        assert!(!s.listed(&at, &waker));
        push(&s, 1);
        assert_eq!(woken(&count), 1);
        assert!(matches!(
            s.take(3, &q, &mut at, &waker),
            Taken::Lines { covered: 1, .. }
        ));
        assert!(matches!(
            s.take(4, &q, &mut at, &waker),
            Taken::Lines { covered: 0, .. }
        ));
        s.close();
        assert_eq!(woken(&count), 2, "the close wakes the followers waiting");
        assert!(matches!(
            s.take(4, &q, &mut at, &waker),
            Taken::Lines {
                covered: 0,
                closed: true,
                ..
            }
        ));
        assert!(
            s.lock().waiters.wakers.is_empty(),
            "a closed sink lists no one"
        );
    }

    #[test]
    fn sequence_resumes_after_reopen_and_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 10, cfg(1000, 2));
        push(&s, 100);
        assert_eq!(next_seq(&s), 101);
        drop(s);
        let s = sink(dir.path(), 10, cfg(1000, 2));
        assert_eq!(next_seq(&s), 101);
        // An empty current file (crash right after a rotation): resume from `.1`.
        std::fs::write(dir.path().join("s.log"), b"").expect("truncate");
        let s2 = sink(dir.path(), 10, cfg(1000, 2));
        assert!(
            next_seq(&s2) > 1 && next_seq(&s2) <= 101,
            "{}",
            next_seq(&s2)
        );
        drop((s, s2));
    }

    #[test]
    fn a_cut_last_line_is_ended_before_new_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.log");
        std::fs::write(
            &path,
            "2023-11-14T22:13:20.123Z 7 1 out whole\n2023-11-14T22:13:20.123Z 8 1 out cu",
        )
        .expect("write");
        let s = sink(dir.path(), 10, cfg(1 << 20, 2));
        assert_eq!(next_seq(&s), 9);
        push(&s, 1);
        let text = std::fs::read_to_string(&path).expect("read");
        let parsed: Vec<_> = text.lines().filter_map(parse).map(|l| l.seq).collect();
        assert_eq!(parsed, vec![7, 8, 9]);
    }

    #[test]
    fn memory_is_capped_in_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 100_000, cfg(u64::MAX, 1));
        let big = "x".repeat(64 << 10);
        for _ in 0..(2 * MEM_BYTES / big.len()) {
            let mut block = Block::new(1, Stream::Stdout, big.len());
            block.push(big.as_bytes(), true);
            s.append(block);
        }
        let g = s.lock();
        assert!(g.ring.bytes <= MEM_BYTES);
        assert!(g.ring.count < MEM_BYTES / big.len() + 1);
    }

    #[test]
    fn pieces_of_an_over_long_line_take_little_memory_and_all_reach_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 100_000, cfg(u64::MAX, 1));
        push(&s, 1000);
        let piece = "x".repeat(64 << 10);
        let pieces = 4 * MEM_BYTES / piece.len();
        for _ in 0..pieces {
            let mut block = Block::new(1, Stream::Stdout, piece.len());
            block.push(piece.as_bytes(), true);
            s.append(block);
        }
        {
            let g = s.lock();
            assert!(
                g.ring.pieces <= PIECE_BYTES,
                "{} bytes of pieces",
                g.ring.pieces
            );
            assert!(g.ring.bytes <= PIECE_BYTES + 4096, "{} bytes", g.ring.bytes);
        }
        push(&s, 1000);
        assert_eq!(next_seq(&s), 2001 + pieces as u64);
        let text = std::fs::read_to_string(dir.path().join("s.log")).expect("read");
        let parsed: Vec<_> = text.lines().filter_map(parse).collect();
        assert_eq!(
            parsed.len(),
            2000 + pieces,
            "every line and piece in the file"
        );
        assert_eq!(parsed.iter().filter(|l| l.continued).count(), pieces);
    }
}
