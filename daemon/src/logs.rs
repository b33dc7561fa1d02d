//! The log pipeline of one script: every line of every run goes, in order, to the script's
//! log file (rotated by size), to an in-memory ring of `max_log_lines`, and to live
//! followers.
//!
//! Readers take big chunks from the pipe, stamp one time per chunk, split lines and hand the
//! whole batch over under one lock with one write to the file, so the cost per line is a
//! copy and a format. Followers subscribe under the same lock that appends, so the backlog
//! they get and the live lines that follow meet with no gap and no repeat.

use scriptd_common::config::LogConfig;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

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
    /// Spelling in the log file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "out",
            Self::Stderr => "err",
            Self::System => "sys",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "out" => Some(Self::Stdout),
            "err" => Some(Self::Stderr),
            "sys" => Some(Self::System),
            _ => None,
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

impl LogLine {
    /// The log file form: `TIME SEQ RUN STREAM[+] TEXT`.
    fn write_to(&self, time: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "{time} {} {} {}{} ",
            self.seq,
            self.run_id,
            self.stream.as_str(),
            if self.continued { "+" } else { "" }
        );
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'\n');
    }

    /// Parses a log file line (the inverse of `write_to`).
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(5, ' ');
        let time = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let run_id = parts.next()?.parse().ok()?;
        let stream_field = parts.next()?;
        let text = parts.next().unwrap_or("").to_owned();
        let (stream_name, continued) = match stream_field.strip_suffix('+') {
            Some(s) => (s, true),
            None => (stream_field, false),
        };
        let time_ms = humantime::parse_rfc3339(time)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Some(Self {
            seq,
            time_ms,
            run_id,
            stream: Stream::parse(stream_name)?,
            text,
            continued,
        })
    }
}

/// Capacity of the live-follower channel; a follower further behind gets a skip marker.
const FOLLOW_CAPACITY: usize = 16 * 1024;

/// The log state of one script.
pub struct LogSink {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<LogLine>>,
}

struct Inner {
    ring: VecDeque<Arc<LogLine>>,
    max_lines: usize,
    next_seq: u64,
    cfg: LogConfig,
    file: LogFile,
    buf: Vec<u8>,
}

struct LogFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    size: u64,
}

impl LogFile {
    fn open(path: PathBuf) -> Self {
        let (writer, size) = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Some(BufWriter::with_capacity(64 << 10, f)), size)
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot open log file: {e}");
                (None, 0)
            }
        };
        Self { path, writer, size }
    }

    fn rotate(&mut self, keep: u32) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.flush();
        }
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(keep));
            for i in (1..keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        *self = Self::open(self.path.clone());
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.write_all(bytes) {
                tracing::error!(path = %self.path.display(), "cannot write log file: {e}");
            }
            self.size += bytes.len() as u64;
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            let _ = w.flush();
        }
    }
}

/// Path of a script's log file.
pub fn log_path(dir: &Path, script: &str) -> PathBuf {
    dir.join(format!("{script}.log"))
}

impl LogSink {
    /// Opens (or creates) the script's log file and resumes the sequence after its last line.
    pub fn open(dir: &Path, script: &str, max_lines: u64, cfg: LogConfig) -> Arc<Self> {
        let path = log_path(dir, script);
        let last = last_line(&path)
            .or_else(|| last_line(Path::new(&format!("{}.1", path.display()))));
        let next_seq = last.map_or(1, |l| l.seq + 1);
        let (tx, _) = broadcast::channel(FOLLOW_CAPACITY);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                max_lines: max_lines as usize,
                next_seq,
                cfg,
                file: LogFile::open(path),
                buf: Vec::with_capacity(64 << 10),
            }),
            tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live change of the ring size and file settings.
    pub fn set_config(&self, max_lines: u64, cfg: LogConfig) {
        let mut g = self.lock();
        g.max_lines = max_lines as usize;
        g.cfg = cfg;
        while g.ring.len() > g.max_lines {
            g.ring.pop_front();
        }
    }

    /// Current line cap.
    pub fn max_line_bytes(&self) -> usize {
        self.lock().cfg.max_line_bytes as usize
    }

    /// Appends a batch read at one time from one stream.
    pub fn append(&self, run_id: u64, stream: Stream, pieces: Vec<(String, bool)>) {
        if pieces.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let time_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let time = humantime::format_rfc3339_millis(now).to_string();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.buf.clear();
        for (text, continued) in pieces {
            let line = Arc::new(LogLine {
                seq: inner.next_seq,
                time_ms,
                run_id,
                stream,
                text,
                continued,
            });
            inner.next_seq += 1;
            let before = inner.buf.len();
            line.write_to(&time, &mut inner.buf);
            if inner.file.size + (inner.buf.len() as u64) > inner.cfg.max_bytes
                && inner.file.size + (before as u64) > 0
            {
                // Rotate before this line: write what precedes it to the old file.
                let head: Vec<u8> = inner.buf.drain(..before).collect();
                inner.file.write(&head);
                inner.file.rotate(inner.cfg.keep);
            }
            if inner.ring.len() >= inner.max_lines {
                inner.ring.pop_front();
            }
            if inner.max_lines > 0 {
                inner.ring.push_back(line.clone());
            }
            // No receiver is not an error.
            let _ = self.tx.send(line);
        }
        let buf = std::mem::take(&mut inner.buf);
        inner.file.write(&buf);
        inner.file.flush();
        inner.buf = buf;
    }

    /// A daemon line (run started / ended) in the script's stream.
    pub fn system(&self, run_id: u64, text: String) {
        self.append(run_id, Stream::System, vec![(text, false)]);
    }

    /// The last `n` lines held in memory, and a receiver for every line after them.
    pub fn follow(&self, n: usize) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let g = self.lock();
        let skip = g.ring.len().saturating_sub(n);
        let backlog = g.ring.iter().skip(skip).cloned().collect();
        (backlog, self.tx.subscribe())
    }

    /// Sequence number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }
}

/// The last complete line of a log file, if any.
fn last_line(path: &Path) -> Option<LogLine> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(256 << 10);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().rev().find_map(LogLine::parse)
}

/// Reads one stream of a run until EOF, feeding `sink` line by line as output arrives.
///
/// Chunks of up to 64 KiB; a line longer than `log.max_line_bytes` is cut into pieces marked
/// `continued`, so memory stays bounded whatever the script prints; `\r\n` endings lose the
/// `\r`; invalid UTF-8 is replaced; a last line without a newline is flushed at EOF.
pub async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: Arc<LogSink>, run_id: u64, stream: Stream) {
    let mut buf = vec![0u8; 64 << 10];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let max = sink.max_line_bytes().max(1);
        let mut pieces = Vec::new();
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            split_long(&mut pending, max, &mut pieces);
            if pending.last() == Some(&b'\r') {
                pending.pop();
            }
            pieces.push((String::from_utf8_lossy(&pending).into_owned(), false));
            pending.clear();
        }
        pending.extend_from_slice(rest);
        split_long(&mut pending, max, &mut pieces);
        sink.append(run_id, stream, pieces);
    }
    if !pending.is_empty() {
        if pending.last() == Some(&b'\r') {
            pending.pop();
        }
        let text = String::from_utf8_lossy(&pending).into_owned();
        sink.append(run_id, stream, vec![(text, false)]);
    }
}

/// Moves full `max`-byte pieces off the front of `pending` as continued pieces.
fn split_long(pending: &mut Vec<u8>, max: usize, pieces: &mut Vec<(String, bool)>) {
    if pending.len() <= max {
        return;
    }
    let mut start = 0;
    while pending.len() - start > max {
        pieces.push((String::from_utf8_lossy(&pending[start..start + max]).into_owned(), true));
        start += max;
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
