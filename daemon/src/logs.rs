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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// Lines kept in memory while at least one follower is attached, even when `max_log_lines`
/// is smaller: how far a follower may fall behind before it gets a skip marker.
pub const FOLLOW_WINDOW: usize = 32 * 1024;

/// Memory cap of one script's line buffer (text plus per-line overhead). Lines pushed out by
/// it are still in the file: backlog requests read them from there.
pub const MEM_BYTES: usize = 16 << 20;

/// Bookkeeping bytes counted per buffered line on top of its text.
const LINE_OVERHEAD: usize = 96;

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

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Per-script sequence number, gapless and only growing (also across daemon restarts).
    pub seq: u64,
    /// Unix ms when the chunk holding it was read.
    pub time_ms: i64,
    /// Run that printed it.
    pub run_id: u64,
    /// Stream.
    pub stream: Stream,
    /// Text, lossily decoded, without the line terminator.
    pub text: String,
    /// True when this is a piece of an over-long line that continues in the next record.
    pub continued: bool,
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl LogLine {
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

    /// Parses a log file line (the inverse of `write_to`); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        RawLine::parse(line.as_bytes()).and_then(|r| r.to_line())
    }

    /// The line as the API sends it.
    pub fn into_proto(self) -> proto::LogLine {
        proto::LogLine {
            seq: self.seq,
            time_ms: self.time_ms,
            run_id: self.run_id,
            stream: self.stream.to_proto() as i32,
            text: self.text,
            continued: self.continued,
            skipped: 0,
        }
    }

    fn cost(&self) -> usize {
        self.text.len() + LINE_OVERHEAD
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

    fn to_line(&self) -> Option<LogLine> {
        Some(LogLine {
            seq: self.seq,
            time_ms: self.time_ms()?,
            run_id: self.run_id,
            stream: self.stream,
            text: String::from_utf8_lossy(self.text).into_owned(),
            continued: self.continued,
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
    lines: VecDeque<LogLine>,
    /// Sum of `LogLine::cost` over `lines`.
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
        while self.lines.len() > keep || self.bytes > MEM_BYTES {
            match self.lines.pop_front() {
                Some(l) => self.bytes -= l.cost(),
                None => break,
            }
        }
    }

    /// Seq of the oldest line in memory (`next_seq` when there is none).
    fn front(&self) -> u64 {
        self.lines.front().map_or(self.next_seq, |l| l.seq)
    }
}

/// The script's log file. Records are formatted into `buf` and written out in big writes:
/// when `buf` passes [`FILE_BUF`], when the pump has nothing more to read right now, before
/// a rotation, and (under the sink's lock) before anyone reads the files, so a reader of the
/// files always finds every line older than those in memory.
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

/// Records are written out once this many bytes are waiting.
const FILE_BUF: usize = 256 << 10;

impl LogFile {
    fn open(path: PathBuf) -> Self {
        let mut f = Self {
            path,
            file: None,
            size: 0,
            buf: Vec::with_capacity(FILE_BUF + READ_CHUNK),
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
    fn push(&mut self, line: &LogLine, time: &str, cfg: &LogConfig) {
        let before = self.buf.len();
        line.write_to(time, &mut self.buf);
        let len = (self.buf.len() - before) as u64;
        if self.size + len > cfg.max_bytes && self.size > 0 {
            self.write_out(before);
            self.rotate(cfg.keep);
        }
        self.size += len;
    }

    /// Rename and reopen: `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, and so on;
    /// the oldest beyond `keep` is removed. A follower reading the old file by its open
    /// descriptor keeps reading it.
    fn rotate(&mut self, keep: u32) {
        self.file = None;
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(keep));
            for i in (1..keep).rev() {
                let _ = std::fs::rename(self.rotated(i), self.rotated(i + 1));
            }
            let _ = std::fs::rename(&self.path, self.rotated(1));
        }
        // Files left beyond `keep` by an earlier, larger setting.
        let mut i = keep + 1;
        while std::fs::remove_file(self.rotated(i)).is_ok() {
            i += 1;
        }
        self.size = 0;
        self.reopen();
    }

    /// Writes the first `n` bytes of `buf` to the file.
    fn write_out(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.file.is_none() {
            self.reopen();
        }
        if let Some(f) = self.file.as_mut() {
            match f.write_all(&self.buf[..n]) {
                Ok(()) => self.recovered(),
                Err(e) => self.failed("cannot write log file", &e),
            }
        }
        self.buf.drain(..n);
    }

    fn flush(&mut self) {
        self.write_out(self.buf.len());
        if self.buf.capacity() > 2 * (FILE_BUF + READ_CHUNK) {
            self.buf = Vec::with_capacity(FILE_BUF + READ_CHUNK);
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
                lines: VecDeque::new(),
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

    /// Appends a batch read at one time from one stream. The file is written when its
    /// buffer is full; the pump calls [`flush`](Self::flush) when it has nothing more to read.
    pub fn append(&self, run_id: u64, stream: Stream, pieces: Vec<(String, bool)>) {
        self.append_batch(run_id, stream, pieces, false);
    }

    fn append_batch(&self, run_id: u64, stream: Stream, pieces: Vec<(String, bool)>, flush: bool) {
        if pieces.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let time_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let time = humantime::format_rfc3339_millis(now).to_string();
        let mut g = self.lock();
        let following = self.followers.load(Ordering::Relaxed) > 0;
        let inner = &mut *g;
        for (text, continued) in pieces {
            let line = LogLine {
                seq: inner.next_seq,
                time_ms,
                run_id,
                stream,
                text,
                continued,
            };
            inner.next_seq += 1;
            inner.file.push(&line, &time, &inner.cfg);
            inner.bytes += line.cost();
            inner.lines.push_back(line);
        }
        inner.trim(following);
        if flush || inner.file.buf.len() >= FILE_BUF {
            inner.file.flush();
        }
        let next = inner.next_seq;
        drop(g);
        self.wake.send_replace(next);
    }

    /// Writes out what the file buffer holds.
    pub fn flush(&self) {
        self.lock().file.flush();
    }

    /// A daemon line (run started / ended) in the script's stream, written out at once.
    pub fn system(&self, run_id: u64, text: String) {
        self.append_batch(run_id, Stream::System, vec![(text, false)], true);
    }

    /// The script is gone for good (removed from the config, daemon stopping): followers get
    /// what is left and end.
    pub fn close(&self) {
        let next = {
            let mut g = self.lock();
            g.closed = true;
            g.file.flush();
            g.next_seq
        };
        self.wake.send_replace(next);
    }

    /// Sequence number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
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
            for l in g.lines.iter().rev() {
                if l.seq <= q.after_seq || (q.lines > 0 && mem.len() as u64 >= q.lines) {
                    break;
                }
                if q.matches(l) {
                    mem.push(l.clone());
                }
            }
            mem.reverse();
        }
        let file_need = (q.lines > 0).then(|| q.lines - mem.len() as u64);
        let older_may_match = match (q.since_ms, g.lines.front()) {
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

    /// Under the lock: lines from `cursor` on (a batch) and whether the sink is closed; or,
    /// when `cursor` is older than memory, the files to catch up from and where memory
    /// starts.
    fn take(&self, cursor: u64) -> Taken {
        let mut g = self.lock();
        let front = g.front();
        if cursor < front {
            return Taken::Behind {
                files: g.open_files(),
                front,
            };
        }
        let idx = usize::try_from(cursor - front).unwrap_or(usize::MAX);
        let mut bytes = 0;
        let batch = g
            .lines
            .range(idx.min(g.lines.len())..)
            .take(BATCH_LINES)
            .take_while(|l| {
                bytes += l.text.len();
                bytes <= BATCH_BYTES || bytes == l.text.len()
            })
            .cloned()
            .collect();
        Taken::Lines {
            batch,
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
    Lines { batch: Vec<LogLine>, closed: bool },
    Behind { files: Vec<File>, front: u64 },
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
    mem: Vec<LogLine>,
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

    fn matches(&self, l: &LogLine) -> bool {
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

    /// Like `flush`, from a blocking thread.
    fn flush_blocking(&mut self) -> bool {
        match self.take() {
            Some(b) => self.tx.blocking_send(b).is_ok(),
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

/// Reads `files` on a blocking thread into `out` (see [`read_files`]); hands `out` back, or
/// `None` when the client left or the read failed (the client was told).
async fn files_phase(
    out: Out,
    files: Vec<File>,
    q: Query,
    front: u64,
    need: Option<u64>,
    gap_from: Option<u64>,
) -> Option<Out> {
    let (tx, q2) = (out.tx.clone(), q);
    let done = tokio::task::spawn_blocking(move || {
        let mut out = out;
        let ok = read_files(&files, &q2, front, need, gap_from, &mut |l| {
            !out.push(l) || out.flush_blocking()
        }) && out.flush_blocking();
        ok.then_some(out)
    })
    .await;
    match done {
        Ok(out) => out,
        Err(e) => {
            let _ = tx
                .send(vec![Err(Status::internal(format!(
                    "reading the log files failed: {e}"
                )))])
                .await;
            None
        }
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
        match files_phase(out, files, q.clone(), front, file_need, gap_from).await {
            Some(o) => out = o,
            None => return,
        }
    }
    for l in mem {
        if out.push(l.into_proto()) && !out.flush().await {
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
        match sink.take(cursor) {
            Taken::Behind { files, front } => {
                let catch_up = Query {
                    after_seq: q.after_seq.max(cursor - 1),
                    ..q.clone()
                };
                match files_phase(out, files, catch_up, front, None, Some(cursor)).await {
                    Some(o) => out = o,
                    None => return,
                }
                cursor = front;
            }
            Taken::Lines { batch, closed } => {
                if batch.is_empty() {
                    if !out.flush().await || closed || wake.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                cursor += batch.len() as u64;
                for l in batch {
                    if q.matches(&l) && out.push(l.into_proto()) && !out.flush().await {
                        return;
                    }
                }
            }
        }
    }
}

/// Visits the matching lines of `files` (oldest first) with a seq below `front`; with
/// `need`, only the last `need` of them. With `gap_from`, lines from that seq on that are
/// no longer in the files are reported with one skip marker where they would be. Returns
/// false when `emit` asked to stop.
fn read_files(
    files: &[File],
    q: &Query,
    front: u64,
    need: Option<u64>,
    gap_from: Option<u64>,
    emit: &mut dyn FnMut(proto::LogLine) -> bool,
) -> bool {
    let selects = |r: &RawLine<'_>| {
        r.seq < front
            && q.matches_raw(r.seq, r.run_id, r.stream)
            && q.since_ms
                .is_none_or(|c| r.time_ms().is_some_and(|t| t >= c))
    };
    // Where to start: the tail of `need` lines is found by counting from the newest file
    // back; a resume (after_seq / since) starts at the newest file that begins before it.
    let (first, mut skip) = match need {
        Some(need) => {
            let mut have = 0u64;
            let mut at = (0, 0);
            for (i, f) in files.iter().enumerate().rev() {
                let mut n = 0u64;
                scan(f, &mut |r| {
                    if r.seq >= front {
                        return false;
                    }
                    if selects(&r) {
                        n += 1;
                    }
                    true
                });
                have += n;
                if have >= need {
                    at = (i, have - need);
                    break;
                }
            }
            at
        }
        None => {
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
            let i = files.iter().rposition(starts_before).unwrap_or(0);
            (i, 0)
        }
    };
    let mut gap_from = gap_from;
    let mut go_on = true;
    for f in files.get(first..).unwrap_or_default() {
        let mut past_front = false;
        scan(f, &mut |r| {
            if r.seq >= front {
                past_front = true;
                return false;
            }
            if let Some(from) = gap_from.filter(|&from| r.seq >= from) {
                gap_from = None;
                if r.seq > from {
                    go_on = emit(skipped_marker(r.seq - from));
                    if !go_on {
                        return false;
                    }
                }
            }
            if !selects(&r) {
                return true;
            }
            if skip > 0 {
                skip -= 1;
                return true;
            }
            match r.to_line() {
                Some(l) => {
                    go_on = emit(l.into_proto());
                    go_on
                }
                None => true,
            }
        });
        if !go_on || past_front {
            break;
        }
    }
    match gap_from {
        Some(from) if go_on && front > from => emit(skipped_marker(front - from)),
        _ => go_on,
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

/// Reads one stream of a run until EOF, feeding `sink` line by line as output arrives.
///
/// Chunks of up to 64 KiB; a line longer than `log.max_line_bytes` is cut into pieces marked
/// `continued` (at a character boundary when the text is UTF-8), so memory stays bounded
/// whatever the script prints; `\r\n` endings lose the `\r`; invalid UTF-8 is replaced; a
/// last line without a newline is flushed at EOF. The file is written out whenever there is
/// nothing more to read right now: one big write for a burst, one small one for a trickle.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    sink: Arc<LogSink>,
    run_id: u64,
    stream: Stream,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut unflushed = false;
    loop {
        let read = match read_now(&mut reader, &mut buf).await {
            Some(r) => r,
            None => {
                if std::mem::take(&mut unflushed) {
                    sink.flush();
                }
                reader.read(&mut buf).await
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let max = sink.max_line_bytes().max(4);
        let mut pieces = Vec::new();
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let line = if pending.is_empty() && i <= max {
                &rest[..i]
            } else {
                pending.extend_from_slice(&rest[..i]);
                split_long(&mut pending, max, &mut pieces);
                &pending[..]
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pieces.push((String::from_utf8_lossy(line).into_owned(), false));
            pending.clear();
            rest = &rest[i + 1..];
        }
        pending.extend_from_slice(rest);
        split_long(&mut pending, max, &mut pieces);
        if pending.capacity() > 2 * max + READ_CHUNK {
            pending.shrink_to(max + READ_CHUNK);
        }
        unflushed |= !pieces.is_empty();
        sink.append(run_id, stream, pieces);
    }
    if !pending.is_empty() {
        let line = pending.strip_suffix(b"\r").unwrap_or(&pending[..]);
        let text = String::from_utf8_lossy(line).into_owned();
        sink.append(run_id, stream, vec![(text, false)]);
    }
    sink.flush();
}

/// A read that is ready now (data, EOF or an error), or `None` if it would wait.
async fn read_now<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    std::future::poll_fn(|cx| {
        let mut rb = tokio::io::ReadBuf::new(buf);
        std::task::Poll::Ready(
            match std::pin::Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => Some(Ok(rb.filled().len())),
                std::task::Poll::Ready(Err(e)) => Some(Err(e)),
                std::task::Poll::Pending => None,
            },
        )
    })
    .await
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

/// Moves pieces of at most `max` bytes off the front of `pending` as continued pieces,
/// until at most `max` bytes remain.
fn split_long(pending: &mut Vec<u8>, max: usize, pieces: &mut Vec<(String, bool)>) {
    if pending.len() <= max {
        return;
    }
    let mut start = 0;
    while pending.len() - start > max {
        let cut = cut_point(&pending[start..], max);
        pieces.push((
            String::from_utf8_lossy(&pending[start..start + cut]).into_owned(),
            true,
        ));
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

    #[test]
    fn file_line_round_trips() {
        let line = LogLine {
            seq: 42,
            time_ms: 1_700_000_000_123,
            run_id: 7,
            stream: Stream::Stderr,
            text: "hello  world ".into(),
            continued: true,
        };
        let mut out = Vec::new();
        line.write_to("2023-11-14T22:13:20.123Z", &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text, "2023-11-14T22:13:20.123Z 42 7 err+ hello  world \n");
        assert_eq!(LogLine::parse(text.trim_end_matches('\n')), Some(line));
        assert_eq!(LogLine::parse("a 5 6 out text"), None);
        assert_eq!(
            LogLine::parse("2023-11-14T22:13:20.123Z 5 6 bad text"),
            None
        );
    }

    #[test]
    fn long_lines_are_split() {
        let mut pending = vec![b'x'; 10];
        let mut pieces = Vec::new();
        split_long(&mut pending, 4, &mut pieces);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|(t, c)| t.len() == 4 && *c));
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn splits_keep_characters_whole() {
        let mut pending = "aé€€€".as_bytes().to_vec(); // 1 + 2 + 3*3 = 12 bytes
        let mut pieces = Vec::new();
        split_long(&mut pending, 4, &mut pieces);
        let rest = String::from_utf8(pending).expect("utf8 rest");
        let joined: String = pieces.iter().map(|(t, _)| t.as_str()).collect::<String>() + &rest;
        assert_eq!(joined, "aé€€€");
        assert!(pieces.iter().all(|(t, _)| !t.contains('\u{FFFD}')));
    }

    fn sink(dir: &Path, max_lines: u64, c: LogConfig) -> Arc<LogSink> {
        LogSink::open(dir, "s", max_lines, c)
    }

    fn push(s: &LogSink, n: usize) {
        let pieces = (0..n).map(|i| (format!("line {i}"), false)).collect();
        s.append(1, Stream::Stdout, pieces);
        s.flush();
    }

    #[test]
    fn sequence_resumes_after_reopen_and_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 10, cfg(1000, 2));
        push(&s, 100);
        assert_eq!(s.next_seq(), 101);
        drop(s);
        let s = sink(dir.path(), 10, cfg(1000, 2));
        assert_eq!(s.next_seq(), 101);
        // An empty current file (crash right after a rotation): resume from `.1`.
        std::fs::write(dir.path().join("s.log"), b"").expect("truncate");
        let s2 = sink(dir.path(), 10, cfg(1000, 2));
        assert!(
            s2.next_seq() > 1 && s2.next_seq() <= 101,
            "{}",
            s2.next_seq()
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
        assert_eq!(s.next_seq(), 9);
        push(&s, 1);
        let text = std::fs::read_to_string(&path).expect("read");
        let parsed: Vec<_> = text
            .lines()
            .filter_map(LogLine::parse)
            .map(|l| l.seq)
            .collect();
        assert_eq!(parsed, vec![7, 8, 9]);
    }

    fn collect(s: &Arc<LogSink>, q: &Query) -> Vec<proto::LogLine> {
        let start = s.start(q);
        let mut out = Vec::new();
        let gap_from = (q.after_seq > 0 && q.lines == 0).then(|| q.after_seq + 1);
        let files = start.files.unwrap_or_default();
        read_files(
            &files,
            q,
            start.front,
            start.file_need,
            gap_from,
            &mut |l| {
                out.push(l);
                true
            },
        );
        out.extend(start.mem.into_iter().map(LogLine::into_proto));
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
            s.append(1, Stream::Stdout, vec![(big.clone(), true)]);
        }
        let g = s.lock();
        assert!(g.bytes <= MEM_BYTES);
        assert!(g.lines.len() < MEM_BYTES / big.len() + 1);
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
        let Taken::Behind { files, front } = s.take(start.end) else {
            panic!("the reader should be behind memory");
        };
        assert_eq!(front, 101);
        let mut seqs = Vec::new();
        let catch_up = Query {
            after_seq: start.end - 1,
            ..q
        };
        read_files(&files, &catch_up, front, None, Some(start.end), &mut |l| {
            seqs.push(l.seq);
            true
        });
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        drop(start);
        push(&s, 1);
        assert_eq!(s.lock().lines.len(), 10);
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
