//! The log pipeline of one script: every line of every run goes, in order, to the script's
//! log file (rotated by size), to an in-memory ring of `max_log_lines`, and to live
//! followers.
//!
//! Readers take big chunks from the pipe, stamp one time per chunk, split lines and hand the
//! whole batch over under one lock with one write to the file, so the cost per line is a
//! copy and a format.
//!
//! Followers do not have queues of their own: each keeps a cursor (the next sequence number
//! it wants) into the sink's line buffer and copies batches out of it under the lock. The
//! buffer holds the ring (`max_log_lines`) and, while someone follows, at least
//! [`FOLLOW_WINDOW`] lines; it never holds more than [`MEM_BYTES`]. A follower whose cursor
//! fell off the front of the buffer reads the lines it missed from the log files (opened
//! under the lock, so a rotation changes nothing) and goes on; only lines gone from the files
//! too are replaced by one marker saying how many were skipped. So a slow follower never
//! slows the script or the file and costs no memory of its own, and a fast one loses nothing
//! while the files hold the lines. Because sequence numbers are gapless, the backlog a
//! reader gets and the live lines after it meet exactly (no gap, no repeat), and a skip
//! count is exact.

use scriptd_common::config::LogConfig;
use scriptd_common::proto;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Lines kept in memory while at least one follower is attached, even when `max_log_lines`
/// is smaller: how far a follower may fall behind before it gets a skip marker.
pub const FOLLOW_WINDOW: usize = 32 * 1024;

/// Memory cap of one script's line buffer (text plus per-line overhead). Lines pushed out by
/// it are still in the file: backlog requests read them from there.
pub const MEM_BYTES: usize = 4 << 20;

/// Bookkeeping bytes counted per buffered block on top of its text and line table.
const BLOCK_OVERHEAD: usize = 128;

/// At most this many lines, or about this many bytes, are taken per batch by a reader.
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Size of one read from a script's pipe.
const READ_CHUNK: usize = 64 << 10;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The script's stdout.
    Stdout,
    /// The script's stderr.
    Stderr,
    /// A line written by the daemon: run started, run ended.
    System,
}

impl Stream {
    /// Spelling in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "out",
            Self::Stderr => "err",
            Self::System => "sys",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"out" => Some(Self::Stdout),
            b"err" => Some(Self::Stderr),
            b"sys" => Some(Self::System),
            _ => None,
        }
    }

    /// The API's spelling.
    pub fn to_proto(self) -> proto::LogStream {
        match self {
            Self::Stdout => proto::LogStream::Stdout,
            Self::Stderr => proto::LogStream::Stderr,
            Self::System => proto::LogStream::System,
        }
    }
}

/// Lines read at one time from one stream of one run, kept in one buffer: one allocation
/// per read instead of one per line. Blocks in memory are gapless by seq.
#[derive(Debug)]
pub struct Block {
    /// Seq of the first line; set when the sink takes the block.
    first_seq: u64,
    /// Unix ms when the block was read; set when the sink takes the block.
    time_ms: i64,
    run_id: u64,
    stream: Stream,
    /// The lines' text, one after the other, lossily decoded, without terminators.
    text: String,
    /// Per line: where its text ends in `text`, and whether it is a piece of an over-long
    /// line that continues in the next record.
    ends: Vec<(usize, bool)>,
}

impl Block {
    /// An empty block for `capacity` bytes of text.
    pub fn new(run_id: u64, stream: Stream, capacity: usize) -> Self {
        Self {
            first_seq: 0,
            time_ms: 0,
            run_id,
            stream,
            text: String::with_capacity(capacity),
            ends: Vec::new(),
        }
    }

    /// Adds a line given as raw bytes; invalid UTF-8 is replaced.
    pub fn push(&mut self, bytes: &[u8], continued: bool) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        self.ends.push((self.text.len(), continued));
    }

    /// Adds a line that is already text.
    fn push_str(&mut self, text: &str, continued: bool) {
        self.text.push_str(text);
        self.ends.push((self.text.len(), continued));
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the block holds no line.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every line, in order.
    fn lines(&self) -> impl Iterator<Item = LineRef<'_>> {
        let mut start = 0;
        self.ends
            .iter()
            .enumerate()
            .map(move |(i, &(end, continued))| {
                let text = &self.text[start..end];
                start = end;
                LineRef {
                    seq: self.first_seq + i as u64,
                    time_ms: self.time_ms,
                    run_id: self.run_id,
                    stream: self.stream,
                    text,
                    continued,
                }
            })
    }

    fn line(&self, i: usize) -> LineRef<'_> {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].0);
        let (end, continued) = self.ends[i];
        LineRef {
            seq: self.first_seq + i as u64,
            time_ms: self.time_ms,
            run_id: self.run_id,
            stream: self.stream,
            text: &self.text[start..end],
            continued,
        }
    }

    /// Bytes of memory the block holds.
    fn cost(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<(usize, bool)>()
            + BLOCK_OVERHEAD
    }
}

/// One line of output, borrowed from the block that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineRef<'a> {
    /// Per-script sequence number, gapless and only growing (also across daemon restarts).
    seq: u64,
    /// Unix ms when the chunk holding it was read.
    time_ms: i64,
    /// Run that printed it.
    run_id: u64,
    stream: Stream,
    /// Text without the line terminator.
    text: &'a str,
    /// A piece of an over-long line that continues in the next record.
    continued: bool,
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl LineRef<'_> {
    /// The log file form: `TIME SEQ RUN STREAM[+] TEXT`.
    fn write_to(&self, time: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(time.as_bytes());
        out.push(b' ');
        push_u64(out, self.seq);
        out.push(b' ');
        push_u64(out, self.run_id);
        out.push(b' ');
        out.extend_from_slice(self.stream.as_str().as_bytes());
        if self.continued {
            out.push(b'+');
        }
        out.push(b' ');
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'\n');
    }

    /// The line as the API sends it.
    fn to_proto(self) -> proto::LogLine {
        proto::LogLine {
            seq: self.seq,
            time_ms: self.time_ms,
            run_id: self.run_id,
            stream: self.stream.to_proto() as i32,
            text: self.text.to_owned(),
            continued: self.continued,
            skipped: 0,
        }
    }
}

/// A log file line split into its fields, without copying the text.
struct RawLine<'a> {
    time: &'a [u8],
    seq: u64,
    run_id: u64,
    stream: Stream,
    continued: bool,
    text: &'a [u8],
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl<'a> RawLine<'a> {
    fn parse(line: &'a [u8]) -> Option<Self> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut parts = line.splitn(5, |&b| b == b' ');
        let time = parts.next()?;
        let seq = parse_u64(parts.next()?)?;
        let run_id = parse_u64(parts.next()?)?;
        let stream_field = parts.next()?;
        let text = parts.next().unwrap_or(b"");
        let (stream_name, continued) = match stream_field.strip_suffix(b"+") {
            Some(s) => (s, true),
            None => (stream_field, false),
        };
        // A time is `YYYY-MM-DDTHH:MM:SS.mmmZ`; checking the shape here keeps text that
        // happens to hold numbers from passing for a line (the full parse is lazy).
        if time.len() < 20 || time.get(4) != Some(&b'-') || time.get(10) != Some(&b'T') {
            return None;
        }
        Some(Self {
            time,
            seq,
            run_id,
            stream: Stream::parse(stream_name)?,
            continued,
            text,
        })
    }

    fn time_ms(&self) -> Option<i64> {
        let t = humantime::parse_rfc3339(std::str::from_utf8(self.time).ok()?).ok()?;
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64)
    }

    fn to_proto(&self) -> Option<proto::LogLine> {
        Some(proto::LogLine {
            seq: self.seq,
            time_ms: self.time_ms()?,
            run_id: self.run_id,
            stream: self.stream.to_proto() as i32,
            text: String::from_utf8_lossy(self.text).into_owned(),
            continued: self.continued,
            skipped: 0,
        })
    }
}

/// The log state of one script.
pub struct LogSink {
    inner: Mutex<Inner>,
    /// Carries `next_seq` after every append (and on close): readers wait on it.
    wake: watch::Sender<u64>,
    /// Live followers attached; while there are any, the buffer keeps [`FOLLOW_WINDOW`].
    followers: AtomicUsize,
    /// Run id of the newest record in the files when the sink was opened.
    last_run_id: u64,
}

struct Inner {
    /// The newest lines, gapless by seq: the ring, plus the follow window.
    blocks: VecDeque<Block>,
    /// Lines at the front of the first block that were trimmed away.
    skip: usize,
    /// Lines in memory (in `blocks`, minus `skip`).
    count: usize,
    /// Sum of `Block::cost` over `blocks`.
    bytes: usize,
    max_lines: usize,
    next_seq: u64,
    cfg: LogConfig,
    file: LogFile,
    /// The script is gone (removed, daemon stopping): followers end.
    closed: bool,
}

impl Inner {
    fn trim(&mut self, following: bool) {
        let keep = if following {
            self.max_lines.max(FOLLOW_WINDOW)
        } else {
            self.max_lines
        };
        while self.count > keep || self.bytes > MEM_BYTES {
            let Some(first) = self.blocks.front() else {
                break;
            };
            let left = first.len() - self.skip;
            let over = self.count.saturating_sub(keep);
            if over >= left || self.bytes > MEM_BYTES {
                self.bytes -= first.cost();
                self.count -= left;
                self.skip = 0;
                self.blocks.pop_front();
            } else {
                self.skip += over;
                self.count -= over;
            }
        }
    }

    /// Seq of the oldest line in memory (`next_seq` when there is none).
    fn front(&self) -> u64 {
        self.blocks
            .front()
            .map_or(self.next_seq, |b| b.first_seq + self.skip as u64)
    }

    /// The lines in memory from seq `from` on, oldest first.
    fn lines_from(&self, from: u64) -> impl Iterator<Item = LineRef<'_>> {
        let from = from.max(self.front());
        let first = self
            .blocks
            .partition_point(|b| b.first_seq + b.len() as u64 <= from);
        self.blocks.range(first..).flat_map(move |b| {
            let start = usize::try_from(from.saturating_sub(b.first_seq)).unwrap_or(usize::MAX);
            (start.min(b.len())..b.len()).map(move |i| b.line(i))
        })
    }

    /// The lines in memory, newest first.
    fn lines_rev(&self) -> impl Iterator<Item = LineRef<'_>> {
        let skip = self.skip;
        self.blocks
            .iter()
            .enumerate()
            .rev()
            .flat_map(move |(bi, b)| {
                let lo = if bi == 0 { skip } else { 0 };
                (lo..b.len()).rev().map(move |i| b.line(i))
            })
    }
}

/// The script's log file. Each appended block's records are written in one write before
/// followers are told about them, so what a follower saw is on disk (also across a
/// `kill -9` of the daemon) and a reader of the files always finds every line older than
/// those in memory. Records that cannot be written (disk full, file gone) are kept and
/// written with the next block, up to [`UNWRITTEN_MAX`] bytes.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of the current file, counting those still in `buf`.
    size: u64,
    /// Records not written yet.
    buf: Vec<u8>,
    /// The last open or write failed (and was reported): report only the first of a streak.
    failing: bool,
}

/// The write buffer is given back after a write when it grew past this.
const FILE_BUF_KEEP: usize = 16 << 10;

/// Unwritable records kept for a retry; beyond this the oldest are dropped (and counted).
const UNWRITTEN_MAX: usize = 4 << 20;

impl LogFile {
    fn open(path: PathBuf) -> Self {
        let mut f = Self {
            path,
            file: None,
            size: 0,
            buf: Vec::new(),
            failing: false,
        };
        f.reopen();
        f
    }

    fn reopen(&mut self) {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path);
        match opened {
            Ok(mut f) => {
                let mut size = f.metadata().map(|m| m.len()).unwrap_or(0);
                // A line cut short by a crash: end it, so the next record starts a line.
                let mut last = [0u8; 1];
                if size > 0
                    && f.read_at(&mut last, size - 1).is_ok()
                    && last[0] != b'\n'
                    && f.write_all(b"\n").is_ok()
                {
                    size += 1;
                }
                self.file = Some(f);
                self.size = size + self.buf.len() as u64;
                self.recovered();
            }
            Err(e) => self.failed("cannot open log file", &e),
        }
    }

    fn failed(&mut self, what: &str, e: &std::io::Error) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(path = %self.path.display(), "{what}: {e}");
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(path = %self.path.display(), "log file writable again");
        }
    }

    fn rotated(&self, i: u32) -> PathBuf {
        rotated_path(&self.path, i)
    }

    /// Adds one record; rotates first when it would take the file past `max_bytes`.
    fn push(&mut self, line: LineRef<'_>, time: &str, cfg: &LogConfig) {
        let before = self.buf.len();
        line.write_to(time, &mut self.buf);
        let len = (self.buf.len() - before) as u64;
        if self.size + len > cfg.max_bytes && self.size > 0 {
            self.write_out(before);
            self.rotate(cfg.keep); // the new file's size counts what `buf` holds
        } else {
            self.size += len;
        }
    }

    /// Rename and reopen: `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, and so on;
    /// the oldest beyond `keep` is removed. A follower reading the old file by its open
    /// descriptor keeps reading it.
    fn rotate(&mut self, keep: u32) {
        self.file = None;
        let mut errors = Vec::new();
        let mut note = |what: String, r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("{what}: {e}"))
            }
            _ => {}
        };
        if keep == 0 {
            note("remove".into(), std::fs::remove_file(&self.path));
        } else {
            note(
                "remove oldest".into(),
                std::fs::remove_file(self.rotated(keep)),
            );
            for i in (1..keep).rev() {
                note(
                    format!("rename .{i}"),
                    std::fs::rename(self.rotated(i), self.rotated(i + 1)),
                );
            }
            note(
                "rename".into(),
                std::fs::rename(&self.path, self.rotated(1)),
            );
        }
        // Files left beyond `keep` by an earlier, larger setting.
        let mut i = keep + 1;
        while std::fs::remove_file(self.rotated(i)).is_ok() {
            i += 1;
        }
        if !errors.is_empty() {
            // The file keeps growing until a rotation succeeds; say so every time.
            tracing::warn!(path = %self.path.display(), "log rotation failed: {}", errors.join("; "));
        }
        self.size = self.buf.len() as u64;
        self.reopen();
    }

    /// Writes the first `n` bytes of `buf` to the file; what cannot be written stays.
    fn write_out(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.file.is_none() {
            self.reopen();
        }
        let mut done = 0;
        let result = match self.file.as_mut() {
            None => Ok(()), // reported by reopen
            Some(f) => loop {
                match f.write(&self.buf[done..n]) {
                    Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(w) => {
                        done += w;
                        if done == n {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            },
        };
        self.buf.drain(..done);
        match result {
            Ok(()) if self.file.is_some() => self.recovered(),
            Ok(()) => {}
            Err(e) => self.failed("cannot write log file", &e),
        }
        if self.buf.len() > UNWRITTEN_MAX {
            self.drop_oldest();
        }
    }

    /// Drops the oldest whole records held for a retry, down to [`UNWRITTEN_MAX`].
    fn drop_oldest(&mut self) {
        let excess = self.buf.len() - UNWRITTEN_MAX;
        let cut =
            memchr::memchr(b'\n', &self.buf[excess..]).map_or(self.buf.len(), |i| excess + i + 1);
        let lost = memchr::memchr_iter(b'\n', &self.buf[..cut]).count();
        self.buf.drain(..cut);
        tracing::error!(
            path = %self.path.display(),
            "{lost} log records dropped: the log file could not be written for too long"
        );
    }

    fn flush(&mut self) {
        self.write_out(self.buf.len());
        if self.buf.is_empty() && self.buf.capacity() > FILE_BUF_KEEP {
            self.buf = Vec::new();
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Path of a script's log file.
pub fn log_path(dir: &Path, script: &str) -> PathBuf {
    dir.join(format!("{script}.log"))
}

/// Path of the `i`th rotated file (`NAME.log.i`).
fn rotated_path(path: &Path, i: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{i}"));
    PathBuf::from(p)
}

/// The rotated files and the current one, oldest first (only those that exist).
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|i| rotated_path(path, i))
        .take_while(|p| p.exists())
        .take(10_000)
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

impl LogSink {
    /// Opens (or creates) the script's log file and resumes the sequence after its last line
    /// (or the last line of the newest rotated file, when the current one is empty).
    pub fn open(dir: &Path, script: &str, max_lines: u64, cfg: LogConfig) -> Arc<Self> {
        let path = log_path(dir, script);
        let last = log_files(&path).iter().rev().find_map(|p| last_record(p));
        let next_seq = last.map_or(1, |(seq, _)| seq + 1);
        let last_run_id = last.map_or(0, |(_, run)| run);
        let (wake, _) = watch::channel(next_seq);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                blocks: VecDeque::new(),
                skip: 0,
                count: 0,
                bytes: 0,
                max_lines: max_lines as usize,
                next_seq,
                cfg,
                file: LogFile::open(path),
                closed: false,
            }),
            wake,
            followers: AtomicUsize::new(0),
            last_run_id,
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

    /// Live change of the ring size and file settings.
    pub fn set_config(&self, max_lines: u64, cfg: LogConfig) {
        let mut g = self.lock();
        g.max_lines = max_lines as usize;
        g.cfg = cfg;
        let following = self.followers.load(Ordering::Relaxed) > 0;
        g.trim(following);
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
        let time = humantime::format_rfc3339_millis(now).to_string();
        let mut g = self.lock();
        let following = self.followers.load(Ordering::Relaxed) > 0;
        let inner = &mut *g;
        block.first_seq = inner.next_seq;
        inner.next_seq += block.len() as u64;
        // A record is the text plus a header of about 40 bytes.
        inner.file.buf.reserve(block.text.len() + 48 * block.len());
        for line in block.lines() {
            inner.file.push(line, &time, &inner.cfg);
        }
        inner.file.flush();
        inner.count += block.len();
        inner.bytes += block.cost();
        inner.blocks.push_back(block);
        inner.trim(following);
        let next = inner.next_seq;
        drop(g);
        self.wake.send_replace(next);
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
        let next = {
            let mut g = self.lock();
            g.closed = true;
            g.file.flush();
            g.next_seq
        };
        self.wake.send_replace(next);
    }

    /// Under the lock: the backlog in memory, the files (opened now, so a rotation while
    /// they are read changes nothing) when the backlog reaches back before memory, and the
    /// seq where live lines start.
    fn start(self: &Arc<Self>, q: &Query) -> Start {
        let following = q.follow.then(|| {
            self.followers.fetch_add(1, Ordering::Relaxed);
            Following(self.clone())
        });
        let mut g = self.lock();
        let end = g.next_seq;
        let front = g.front();
        let mut mem = Vec::new();
        if q.wants_backlog() {
            for l in g.lines_rev() {
                if l.seq <= q.after_seq || (q.lines > 0 && mem.len() as u64 >= q.lines) {
                    break;
                }
                if q.matches(&l) {
                    mem.push(l.to_proto());
                }
            }
            mem.reverse();
        }
        let file_need = (q.lines > 0).then(|| q.lines - mem.len() as u64);
        let older_may_match = match (q.since_ms, g.blocks.front()) {
            (Some(cutoff), Some(oldest)) => oldest.time_ms >= cutoff,
            _ => true,
        };
        let files = (q.wants_backlog()
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

    /// Under the lock: the lines from `cursor` on that `q` wants (a batch), how many lines
    /// the batch covers, and whether the sink is closed; or, when `cursor` is older than
    /// memory, the files to catch up from and where memory starts.
    fn take(&self, cursor: u64, q: &Query) -> Taken {
        let mut g = self.lock();
        let front = g.front();
        if cursor < front {
            return Taken::Behind {
                files: g.open_files(),
                front,
            };
        }
        let (mut bytes, mut covered) = (0, 0);
        let mut batch = Vec::new();
        for l in g.lines_from(cursor) {
            if covered >= BATCH_LINES || (bytes > 0 && bytes + l.text.len() > BATCH_BYTES) {
                break;
            }
            covered += 1;
            bytes += l.text.len();
            if q.matches(&l) {
                batch.push(l.to_proto());
            }
        }
        Taken::Lines {
            batch,
            covered: covered as u64,
            closed: g.closed,
        }
    }
}

impl Inner {
    fn open_files(&mut self) -> Vec<File> {
        self.file.flush();
        log_files(&self.file.path)
            .iter()
            .filter_map(|p| File::open(p).ok())
            .collect()
    }
}

enum Taken {
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

/// A follower attached to a sink: keeps the follow window while it lives.
struct Following(Arc<LogSink>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Start {
    /// Backlog from memory, oldest first, filtered and limited.
    mem: Vec<proto::LogLine>,
    /// Log files, oldest first, when the backlog reaches back before memory.
    files: Option<Vec<File>>,
    /// How many matching lines the files must give (`None`: all that match).
    file_need: Option<u64>,
    /// The files give only lines before this seq (the rest came from memory).
    front: u64,
    /// Live lines start at this seq.
    end: u64,
    following: Option<Following>,
}

/// What a `Logs` request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The last N matching lines of backlog (0: none, or all with `after_seq`/`since_ms`).
    pub lines: u64,
    /// Go on with live lines after the backlog.
    pub follow: bool,
    /// Only lines after this seq (0: not set).
    pub after_seq: u64,
    /// Only lines read at or after this Unix ms time.
    pub since_ms: Option<i64>,
    /// Only this stream.
    pub stream: Option<Stream>,
    /// Only this run (0: any).
    pub run_id: u64,
}

impl Query {
    /// The query of a `Logs` request; `now_ms` anchors `since_ms`.
    pub fn from_request(r: &proto::LogsRequest, now_ms: i64) -> Result<Self, Status> {
        let stream = match proto::LogStream::try_from(r.stream) {
            Ok(proto::LogStream::All) => None,
            Ok(proto::LogStream::Stdout) => Some(Stream::Stdout),
            Ok(proto::LogStream::Stderr) => Some(Stream::Stderr),
            Ok(proto::LogStream::System) => Some(Stream::System),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown stream {}",
                    r.stream
                )))
            }
        };
        Ok(Self {
            lines: r.lines,
            follow: r.follow,
            after_seq: r.after_seq,
            since_ms: (r.since_ms > 0)
                .then(|| now_ms.saturating_sub(i64::try_from(r.since_ms).unwrap_or(i64::MAX))),
            stream,
            run_id: r.run_id,
        })
    }

    fn wants_backlog(&self) -> bool {
        self.lines > 0 || self.after_seq > 0 || self.since_ms.is_some()
    }

    fn matches_raw(&self, seq: u64, run_id: u64, stream: Stream) -> bool {
        seq > self.after_seq
            && (self.run_id == 0 || self.run_id == run_id)
            && self.stream.is_none_or(|s| s == stream)
    }

    fn matches(&self, l: &LineRef<'_>) -> bool {
        self.matches_raw(l.seq, l.run_id, l.stream) && self.since_ms.is_none_or(|c| l.time_ms >= c)
    }
}

/// The marker a reader gets in place of `n` lines that were gone (from memory and from the
/// files) before it could read them.
pub fn skipped_marker(n: u64) -> proto::LogLine {
    proto::LogLine {
        seq: 0,
        time_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        run_id: 0,
        stream: proto::LogStream::System as i32,
        text: format!("{n} lines skipped: this reader fell behind"),
        continued: false,
        skipped: n,
    }
}

type Item = Result<proto::LogLine, Status>;

/// Lines on their way to one client, sent in batches: one channel operation (and at most
/// one wake-up) per batch instead of per line.
struct Out {
    tx: mpsc::Sender<Vec<Item>>,
    batch: Vec<Item>,
    bytes: usize,
}

impl Out {
    fn new(tx: mpsc::Sender<Vec<Item>>) -> Self {
        Self {
            tx,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a line; true when the batch is full and should be sent.
    fn push(&mut self, l: proto::LogLine) -> bool {
        self.bytes += l.text.len() + 32;
        self.batch.push(Ok(l));
        self.batch.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    fn take(&mut self) -> Option<Vec<Item>> {
        self.bytes = 0;
        (!self.batch.is_empty()).then(|| std::mem::take(&mut self.batch))
    }

    /// Sends what is batched; false when the client left.
    async fn flush(&mut self) -> bool {
        match self.take() {
            Some(b) => self.tx.send(b).await.is_ok(),
            None => true,
        }
    }
}

/// The response stream of a `Logs` call: the batches a producer task sends, one line at a
/// time.
pub struct Lines {
    rx: mpsc::Receiver<Vec<Item>>,
    current: std::vec::IntoIter<Item>,
}

impl tokio_stream::Stream for Lines {
    type Item = Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Item>> {
        loop {
            if let Some(item) = self.current.next() {
                return std::task::Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }
}

/// Starts serving one `Logs` request: the backlog (from the files when it reaches back
/// before memory, then from memory), then with `follow` live lines, across rotation and
/// restarts of the script, until the client leaves or the script is gone.
pub fn stream(sink: Arc<LogSink>, q: Query) -> Lines {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(serve(sink, q, Out::new(tx)));
    Lines {
        rx,
        current: Vec::new().into_iter(),
    }
}

async fn serve(sink: Arc<LogSink>, q: Query, mut out: Out) {
    let Start {
        mem,
        files,
        file_need,
        front,
        end,
        following,
    } = sink.start(&q);
    if let Some(files) = files {
        // A resume (`after_seq` without a line count) is told about lines that are gone.
        let gap_from = (q.after_seq > 0 && q.lines == 0).then(|| q.after_seq + 1);
        let reader = FileReader::new(files, q.clone(), front, file_need, gap_from);
        match files_phase(out, reader).await {
            Some(o) => out = o,
            None => return,
        }
    }
    for l in mem {
        if out.push(l) && !out.flush().await {
            return;
        }
    }
    if !out.flush().await {
        return;
    }
    if let Some(following) = following {
        follow(&following.0, q, end, out).await;
    }
}

/// Live lines from `cursor` on, until the client leaves or the sink closes. Lines that
/// left memory before this reader took them are read from the files; only lines gone from
/// the files too are skipped, with a marker.
async fn follow(sink: &LogSink, q: Query, mut cursor: u64, mut out: Out) {
    let mut wake = sink.wake.subscribe();
    loop {
        wake.borrow_and_update();
        match sink.take(cursor, &q) {
            Taken::Behind { files, front } => {
                let catch_up = Query {
                    after_seq: q.after_seq.max(cursor - 1),
                    ..q.clone()
                };
                let reader = FileReader::new(files, catch_up, front, None, Some(cursor));
                match files_phase(out, reader).await {
                    Some(o) => out = o,
                    None => return,
                }
                cursor = front;
            }
            Taken::Lines {
                batch,
                covered,
                closed,
            } => {
                if covered == 0 {
                    if !out.flush().await || closed || wake.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                cursor += covered;
                for l in batch {
                    if out.push(l) && !out.flush().await {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads the matching lines of log files (oldest first) with a seq below `front`, a batch at
/// a time, so that a reader waiting on a slow client holds no thread: with `need`, only the
/// last `need` of them; with `gap_from`, lines from that seq on that are no longer in the
/// files are reported with one skip marker where they would be.
struct FileReader {
    /// Files not opened for reading yet, oldest first.
    files: VecDeque<File>,
    current: Option<BufReader<File>>,
    q: Query,
    front: u64,
    need: Option<u64>,
    gap_from: Option<u64>,
    /// Matching lines still to pass over before the tail of `need` lines starts.
    skip: u64,
    positioned: bool,
    done: bool,
    line: Vec<u8>,
}

impl FileReader {
    fn new(
        files: Vec<File>,
        q: Query,
        front: u64,
        need: Option<u64>,
        gap_from: Option<u64>,
    ) -> Self {
        Self {
            files: files.into(),
            current: None,
            q,
            front,
            need,
            gap_from,
            skip: 0,
            positioned: false,
            done: false,
            line: Vec::with_capacity(1024),
        }
    }

    fn selects(&self, r: &RawLine<'_>) -> bool {
        r.seq < self.front
            && self.q.matches_raw(r.seq, r.run_id, r.stream)
            && self
                .q
                .since_ms
                .is_none_or(|c| r.time_ms().is_some_and(|t| t >= c))
    }

    /// Finds the first file to read: for the tail of `need` lines, by counting matches from
    /// the newest file back; for a resume (after_seq / since), the newest file that begins
    /// before it.
    fn position(&mut self) {
        let first = match self.need {
            Some(need) => {
                let mut have = 0u64;
                let mut at = 0;
                for (i, f) in self.files.iter().enumerate().rev() {
                    let mut n = 0u64;
                    scan(f, &mut |r| {
                        if r.seq >= self.front {
                            return false;
                        }
                        if self.selects(&r) {
                            n += 1;
                        }
                        true
                    });
                    have += n;
                    if have >= need {
                        (at, self.skip) = (i, have - need);
                        break;
                    }
                }
                at
            }
            None => {
                let q = &self.q;
                let starts_before = |f: &File| {
                    let mut yes = false;
                    scan(f, &mut |r| {
                        yes = r.seq <= q.after_seq.saturating_add(1)
                            && q.since_ms
                                .is_none_or(|c| r.time_ms().is_some_and(|t| t <= c));
                        false
                    });
                    yes
                };
                self.files.iter().rposition(starts_before).unwrap_or(0)
            }
        };
        self.files.drain(..first.min(self.files.len()));
        self.positioned = true;
    }

    /// Appends the next lines (and markers) to `batch`, up to a batch's worth; false when
    /// there is nothing more.
    fn next_batch(&mut self, batch: &mut Vec<proto::LogLine>) -> bool {
        if !self.positioned {
            self.position();
        }
        let mut bytes = 0;
        while !self.done {
            if batch.len() >= BATCH_LINES || bytes >= BATCH_BYTES {
                return true;
            }
            let Some(reader) = self.current.as_mut() else {
                match self.files.pop_front() {
                    Some(mut f) => {
                        if f.seek(SeekFrom::Start(0)).is_ok() {
                            self.current = Some(BufReader::with_capacity(256 << 10, f));
                        }
                    }
                    None => self.finish(batch),
                }
                continue;
            };
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(n) if n > 0 && self.line.last() == Some(&b'\n') => {}
                // The end of the file, or a line being written right now: not ours to read.
                _ => {
                    self.current = None;
                    continue;
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(r) = RawLine::parse(&line) {
                bytes += r.text.len();
                self.visit(&r, batch);
            }
            self.line = line;
        }
        false
    }

    fn visit(&mut self, r: &RawLine<'_>, batch: &mut Vec<proto::LogLine>) {
        if r.seq >= self.front {
            self.finish(batch);
            return;
        }
        if let Some(from) = self.gap_from.filter(|&from| r.seq >= from) {
            self.gap_from = None;
            if r.seq > from {
                batch.push(skipped_marker(r.seq - from));
            }
        }
        if !self.selects(r) {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if let Some(l) = r.to_proto() {
            batch.push(l);
        }
    }

    /// No more lines: lines from `gap_from` up to `front` that no file holds are skipped.
    fn finish(&mut self, batch: &mut Vec<proto::LogLine>) {
        if let Some(from) = self.gap_from.take().filter(|&from| self.front > from) {
            batch.push(skipped_marker(self.front - from));
        }
        self.files.clear();
        self.current = None;
        self.done = true;
    }
}

/// Sends what `reader` reads to the client, each batch read on a blocking thread; hands
/// `out` back, or `None` when the client left or the read failed (the client was told).
async fn files_phase(mut out: Out, mut reader: FileReader) -> Option<Out> {
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let more = reader.next_batch(&mut batch);
            (reader, batch, more)
        })
        .await;
        let (r, batch, more) = match read {
            Ok(v) => v,
            Err(e) => {
                let _ = out
                    .tx
                    .send(vec![Err(Status::internal(format!(
                        "reading the log files failed: {e}"
                    )))])
                    .await;
                return None;
            }
        };
        reader = r;
        for l in batch {
            if out.push(l) && !out.flush().await {
                return None;
            }
        }
        if !more {
            return Some(out);
        }
    }
}

/// Calls `visit` with every parseable line of `f` from its start until it returns false.
fn scan(f: &File, visit: &mut dyn FnMut(RawLine<'_>) -> bool) {
    let mut f = f;
    if f.seek(SeekFrom::Start(0)).is_err() {
        return;
    }
    let mut reader = BufReader::with_capacity(256 << 10, f);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            return; // being written right now: not ours to read
        }
        if let Some(r) = RawLine::parse(&line) {
            if !visit(r) {
                return;
            }
        }
    }
}

/// The seq of the last record of a log file, if it has one. Reads backwards from the end,
/// so the cost does not depend on the file's size; a line cut short by a crash still
/// counts when its seq field is whole.
/// Sequence number and run id of the last complete record of a log file.
fn last_record(path: &Path) -> Option<(u64, u64)> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    const BLOCK: u64 = 64 << 10;
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(&mut block).ok()?;
        block.extend_from_slice(&tail);
        // Every line start in `block` except possibly its first byte (unless at offset 0).
        let mut starts: Vec<usize> = block
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| i < block.len())
            .collect();
        if start == 0 {
            starts.insert(0, 0);
        }
        for &s in starts.iter().rev() {
            let rest = &block[s..];
            let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
            if let Some(r) = RawLine::parse(line) {
                return Some((r.seq, r.run_id));
            }
        }
        // Keep the first partial line of this block: its start is in the previous one.
        let first_nl = block
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(block.len());
        tail = block[..first_nl].to_vec();
        if tail.len() > 1 << 20 {
            tail.truncate(1 << 20); // a header is at the start of a line: enough
        }
        end = start;
    }
    None
}

/// A pipe end a script writes to: a run's stdout or stderr.
pub trait PipeEnd {
    /// The descriptor, to read from directly.
    fn into_fd(self) -> std::io::Result<OwnedFd>;
}

impl PipeEnd for tokio::process::ChildStdout {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

impl PipeEnd for tokio::process::ChildStderr {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

impl PipeEnd for OwnedFd {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self)
    }
}

/// Cuts a byte stream into lines: complete lines go into blocks; the start of a line whose
/// end has not arrived yet waits in `pending`.
#[derive(Debug, Default)]
struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// The lines `data` completes, as one block; a line longer than `max` bytes is cut into
    /// pieces marked `continued`, so `pending` never holds more than `max` bytes.
    fn split(&mut self, data: &[u8], max: usize, run_id: u64, stream: Stream) -> Block {
        let mut block = Block::new(run_id, stream, data.len() + self.pending.len());
        // One UTF-8 check for the whole chunk; lines inside its valid part need none.
        let valid = std::str::from_utf8(data)
            .unwrap_or_else(|e| std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default());
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            if self.pending.is_empty() && end - start <= max {
                match valid.get(start..end) {
                    Some(line) => block.push_str(line.strip_suffix('\r').unwrap_or(line), false),
                    None => block.push(strip_cr(&data[start..end]), false),
                }
            } else {
                self.pending.extend_from_slice(&data[start..end]);
                split_long(&mut self.pending, max, &mut block);
                block.push(strip_cr(&self.pending), false);
                self.pending.clear();
            }
            start = end + 1;
        }
        let rest = &data[start..];
        self.pending.extend_from_slice(rest);
        split_long(&mut self.pending, max, &mut block);
        if self.pending.capacity() > 2 * max + READ_CHUNK {
            self.pending.shrink_to(max + READ_CHUNK);
        }
        block
    }

    /// The last line, without its newline, when the stream ended.
    fn finish(self, run_id: u64, stream: Stream) -> Block {
        let mut block = Block::new(run_id, stream, self.pending.len());
        if !self.pending.is_empty() {
            block.push(strip_cr(&self.pending), false);
        }
        block
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads one stream of a run until EOF, feeding `sink` as output arrives.
///
/// It waits for the pipe to be readable without holding a buffer (an idle script costs no
/// memory here), then reads chunks of up to 64 KiB until the pipe is empty; each chunk's
/// complete lines become one block (one timestamp, one allocation, one file write). A line
/// longer than `log.max_line_bytes` is cut into pieces marked `continued` (at a character
/// boundary when the text is UTF-8), so memory stays bounded whatever the script prints;
/// `\r\n` endings lose the `\r`; invalid UTF-8 is replaced; a last line without a newline
/// is flushed at EOF.
///
/// `stop` ends it early (a process that escaped the run's group still holds the pipe after
/// the run ended): what the pipe holds then is read, the partial last line flushed, and a
/// daemon line says reading stopped.
pub async fn pump(
    pipe: impl PipeEnd,
    sink: Arc<LogSink>,
    run_id: u64,
    stream: Stream,
    stop: CancellationToken,
) {
    let rx = match pipe.into_fd().and_then(pipe::Receiver::from_owned_fd) {
        Ok(rx) => rx,
        Err(e) => {
            let what = stream.as_str();
            sink.system(run_id, format!("cannot read the script's std{what}: {e}"));
            return;
        }
    };
    let mut lines = Splitter::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut widened = false;
    let mut stopped = false;
    'stream: loop {
        tokio::select! {
            ready = rx.readable() => if ready.is_err() { break },
            _ = stop.cancelled(), if !stopped => stopped = true,
        }
        buf.reserve_exact(READ_CHUNK);
        // After `stop`, only what the pipe holds now (a bounded amount) is still read.
        let mut reads = 0;
        while !stopped || reads < STOP_DRAIN_READS {
            reads += 1;
            buf.clear();
            match rx.try_read_buf(&mut buf) {
                Ok(0) => break 'stream,
                Ok(n) => {
                    if n == READ_CHUNK && !widened {
                        widened = true;
                        widen(&rx);
                    }
                    let max = sink.max_line_bytes().max(4);
                    sink.append(lines.split(&buf, max, run_id, stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break 'stream,
            }
        }
        if stopped {
            sink.append(lines.finish(run_id, stream));
            sink.system(
                run_id,
                format!(
                    "stopped reading std{}: the run ended, but a process outside its group \
                     still holds the pipe open",
                    stream.as_str()
                ),
            );
            return;
        }
        // The pipe is empty: give the buffer back until the script writes again.
        buf = Vec::new();
    }
    sink.append(lines.finish(run_id, stream));
}

/// Reads of a pipe still made after the pump was told to stop (up to 4 MiB).
const STOP_DRAIN_READS: usize = 64;

/// Pipe capacity for a script that floods its output.
const FLOOD_PIPE: i32 = 1 << 20;

/// Gives the pipe of a script that filled it a bigger buffer, so the script blocks less
/// often while the daemon writes a chunk out. Only flooding streams get one (the kernel
/// counts pipe buffers against the user's limit); when the kernel refuses, nothing changes.
fn widen(rx: &pipe::Receiver) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(F_SETPIPE_SZ) with an integer argument on a descriptor we own.
    unsafe { libc::fcntl(rx.as_raw_fd(), libc::F_SETPIPE_SZ, FLOOD_PIPE) };
}

/// Where to cut `bytes` (longer than `max`) so no UTF-8 character is cut in two.
fn cut_point(bytes: &[u8], max: usize) -> usize {
    let is_cont = |b: u8| b & 0xC0 == 0x80;
    let mut cut = max;
    while cut > max.saturating_sub(3) && cut > 1 && is_cont(bytes[cut]) {
        cut -= 1;
    }
    if is_cont(bytes[cut]) {
        max
    } else {
        cut
    }
}

/// Moves pieces of at most `max` bytes off the front of `pending` into `block` as
/// continued lines, until at most `max` bytes remain.
fn split_long(pending: &mut Vec<u8>, max: usize, block: &mut Block) {
    if pending.len() <= max {
        return;
    }
    let mut start = 0;
    while pending.len() - start > max {
        let cut = cut_point(&pending[start..], max);
        block.push(&pending[start..start + cut], true);
        start += cut;
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_bytes: u64, keep: u32) -> LogConfig {
        LogConfig {
            max_bytes,
            keep,
            max_line_bytes: 64 << 10,
        }
    }

    fn parse(line: &str) -> Option<proto::LogLine> {
        RawLine::parse(line.as_bytes()).and_then(|r| r.to_proto())
    }

    fn texts(b: &Block) -> Vec<(String, bool)> {
        (0..b.len())
            .map(|i| (b.line(i).text.to_owned(), b.line(i).continued))
            .collect()
    }

    #[test]
    fn file_line_round_trips() {
        let line = LineRef {
            seq: 42,
            time_ms: 1_700_000_000_123,
            run_id: 7,
            stream: Stream::Stderr,
            text: "hello  world ",
            continued: true,
        };
        let mut out = Vec::new();
        line.write_to("2023-11-14T22:13:20.123Z", &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text, "2023-11-14T22:13:20.123Z 42 7 err+ hello  world \n");
        assert_eq!(parse(text.trim_end_matches('\n')), Some(line.to_proto()));
        assert_eq!(parse("a 5 6 out text"), None);
        assert_eq!(parse("2023-11-14T22:13:20.123Z 5 6 bad text"), None);
    }

    #[test]
    fn long_lines_are_split() {
        let mut pending = vec![b'x'; 10];
        let mut block = Block::new(1, Stream::Stdout, 0);
        split_long(&mut pending, 4, &mut block);
        assert_eq!(texts(&block), vec![("xxxx".into(), true); 2]);
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn splits_keep_characters_whole() {
        let mut pending = "aé€€€".as_bytes().to_vec(); // 1 + 2 + 3*3 = 12 bytes
        let mut block = Block::new(1, Stream::Stdout, 0);
        split_long(&mut pending, 4, &mut block);
        let rest = String::from_utf8(pending).expect("utf8 rest");
        let joined: String = block.text.clone() + &rest;
        assert_eq!(joined, "aé€€€");
        assert!(!block.text.contains('\u{FFFD}'));
    }

    #[test]
    fn the_splitter_frames_lines_across_reads() {
        let mut s = Splitter::default();
        let b = s.split(b"one\r\ntw", 8, 3, Stream::Stdout);
        assert_eq!(texts(&b), vec![("one".into(), false)]);
        let b = s.split(
            b"o\n\xff\xfebad\nlonger than eight\nta",
            8,
            3,
            Stream::Stdout,
        );
        assert_eq!(
            texts(&b),
            vec![
                ("two".into(), false),
                ("\u{FFFD}\u{FFFD}bad".into(), false),
                ("longer t".into(), true),
                ("han eigh".into(), true),
                ("t".into(), false),
            ]
        );
        assert_eq!(
            texts(&s.finish(3, Stream::Stdout)),
            vec![("ta".into(), false)]
        );
    }

    fn sink(dir: &Path, max_lines: u64, c: LogConfig) -> Arc<LogSink> {
        LogSink::open(dir, "s", max_lines, c)
    }

    fn push(s: &LogSink, n: usize) {
        let mut block = Block::new(1, Stream::Stdout, 0);
        for i in 0..n {
            block.push(format!("line {i}").as_bytes(), false);
        }
        s.append(block);
    }

    fn next_seq(s: &LogSink) -> u64 {
        s.lock().next_seq
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

    fn read_all(mut reader: FileReader) -> Vec<proto::LogLine> {
        let mut out = Vec::new();
        let mut batches = 0;
        while reader.next_batch(&mut out) {
            batches += 1;
            assert!(batches < 1_000_000, "the reader never ends");
        }
        out
    }

    fn collect(s: &Arc<LogSink>, q: &Query) -> Vec<proto::LogLine> {
        let start = s.start(q);
        let mut out = Vec::new();
        let gap_from = (q.after_seq > 0 && q.lines == 0).then(|| q.after_seq + 1);
        let files = start.files.unwrap_or_default();
        let reader = FileReader::new(files, q.clone(), start.front, start.file_need, gap_from);
        out.extend(read_all(reader));
        out.extend(start.mem);
        out
    }

    #[test]
    fn backlog_reaches_into_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 5, cfg(2000, 10));
        for _ in 0..20 {
            push(&s, 10);
        }
        assert!(dir.path().join("s.log.3").exists());
        let q = Query {
            lines: 150,
            ..Query::default()
        };
        let seqs: Vec<u64> = collect(&s, &q).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (51..=200).collect::<Vec<_>>());
        let q = Query {
            after_seq: 17,
            ..Query::default()
        };
        let seqs: Vec<u64> = collect(&s, &q).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (18..=200).collect::<Vec<_>>());
        let q = Query {
            lines: 3,
            after_seq: 17,
            ..Query::default()
        };
        let seqs: Vec<u64> = collect(&s, &q).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![198, 199, 200]);
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
        assert!(g.bytes <= MEM_BYTES);
        assert!(g.count < MEM_BYTES / big.len() + 1);
    }

    #[test]
    fn a_lagging_reader_catches_up_from_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 10, cfg(u64::MAX, 1));
        let q = Query {
            follow: true,
            ..Query::default()
        };
        let start = s.start(&q);
        push(&s, FOLLOW_WINDOW + 100);
        let Taken::Behind { files, front } = s.take(start.end, &q) else {
            panic!("the reader should be behind memory");
        };
        assert_eq!(front, 101);
        let catch_up = Query {
            after_seq: start.end - 1,
            ..q
        };
        let reader = FileReader::new(files, catch_up, front, None, Some(start.end));
        let seqs: Vec<u64> = read_all(reader).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        drop(start);
        push(&s, 1);
        assert_eq!(s.lock().count, 10);
    }

    #[test]
    fn lines_gone_from_the_files_are_reported_as_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 10, cfg(2000, 1));
        for _ in 0..20 {
            push(&s, 10);
        }
        let q = Query {
            after_seq: 5,
            ..Query::default()
        };
        let out = collect(&s, &q);
        let first = out.first().expect("some output");
        assert!(first.skipped > 0, "{first:?}");
        assert_eq!(out.get(1).map(|l| l.seq), Some(6 + first.skipped));
        let seqs: Vec<u64> = out.iter().skip(1).map(|l| l.seq).collect();
        assert_eq!(seqs, (6 + first.skipped..=200).collect::<Vec<_>>());
    }
}
