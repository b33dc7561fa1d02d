//! Records: a line's fields ([`Stream`], sequence number, run, time), the [`Block`] that
//! holds the lines of one read, the log file's record format (`TIME SEQ RUN STREAM[+] TEXT`)
//! and its parser, and the skip marker.

use scriptd_common::proto;
use std::time::SystemTime;

/// Bookkeeping bytes counted per buffered block on top of its text and line table.
const BLOCK_OVERHEAD: usize = 128;

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
    /// Every stream, in the order the metrics list them.
    pub const ALL: [Stream; 3] = [Self::Stdout, Self::Stderr, Self::System];

    /// Spelling in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "out",
            Self::Stderr => "err",
            Self::System => "sys",
        }
    }

    pub(super) fn parse(s: &[u8]) -> Option<Self> {
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
    pub(super) first_seq: u64,
    /// Unix ms when the block was read; set when the sink takes the block.
    pub(super) time_ms: i64,
    run_id: u64,
    stream: Stream,
    /// The lines' text, one after the other, lossily decoded, without terminators.
    pub(super) text: String,
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
    pub(super) fn push_str(&mut self, text: &str, continued: bool) {
        self.text.push_str(text);
        self.ends.push((self.text.len(), continued));
    }

    /// The stream its lines were read from.
    pub fn stream(&self) -> Stream {
        self.stream
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
    pub(super) fn lines(&self) -> impl Iterator<Item = LineRef<'_>> {
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

    pub(super) fn line(&self, i: usize) -> LineRef<'_> {
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
    pub(super) fn cost(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<(usize, bool)>()
            + BLOCK_OVERHEAD
    }
}

/// One line of output, borrowed from the block that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineRef<'a> {
    /// Per-script sequence number, gapless and only growing (also across daemon restarts).
    pub(super) seq: u64,
    /// Unix ms when the chunk holding it was read.
    pub(super) time_ms: i64,
    /// Run that printed it.
    pub(super) run_id: u64,
    pub(super) stream: Stream,
    /// Text without the line terminator.
    pub(super) text: &'a str,
    /// A piece of an over-long line that continues in the next record.
    pub(super) continued: bool,
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl LineRef<'_> {
    /// The log file form: `TIME SEQ RUN STREAM[+] TEXT`.
    pub(super) fn write_to(&self, time: &str, out: &mut Vec<u8>) {
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
    pub(super) fn to_proto(self) -> proto::LogLine {
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
pub(super) struct RawLine<'a> {
    pub(super) time: &'a [u8],
    pub(super) seq: u64,
    pub(super) run_id: u64,
    pub(super) stream: Stream,
    pub(super) continued: bool,
    pub(super) text: &'a [u8],
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl<'a> RawLine<'a> {
    pub(super) fn parse(line: &'a [u8]) -> Option<Self> {
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

    pub(super) fn time_ms(&self) -> Option<i64> {
        let t = humantime::parse_rfc3339(std::str::from_utf8(self.time).ok()?).ok()?;
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64)
    }

    pub(super) fn to_proto(&self) -> Option<proto::LogLine> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<proto::LogLine> {
        RawLine::parse(line.as_bytes()).and_then(|r| r.to_proto())
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
}
