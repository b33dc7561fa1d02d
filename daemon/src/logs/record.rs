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

/// How a line's text ends in its block: a whole line (followed by the `n` bytes of its
/// terminator, `\n` or `\r\n`, when the block keeps the bytes as they were read) or a piece
/// of an over-long line (the next piece starts right after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// A piece of an over-long line that continues in the next line of the block.
    Piece,
    /// A whole line, then this many terminator bytes before the next line starts.
    Line(u8),
}

impl End {
    /// Bytes between this line's text and the next line's.
    pub(super) fn gap(self) -> usize {
        match self {
            Self::Piece => 0,
            Self::Line(n) => usize::from(n),
        }
    }
}

/// Lines read at one time from one stream of one run, kept in one buffer: one allocation
/// per read instead of one per line. A block made by the splitter *is* the buffer the pipe
/// was read into (valid UTF-8), its line terminators left in place: the lines' text is
/// never copied on the way in. Blocks in memory are gapless by seq.
#[derive(Debug)]
pub struct Block {
    /// Seq of the first line; set when the sink takes the block.
    pub(super) first_seq: u64,
    /// Unix ms when the block was read; set when the sink takes the block.
    pub(super) time_ms: i64,
    run_id: u64,
    stream: Stream,
    /// The lines' text, one after the other, lossily decoded, each followed by its
    /// terminator when the block holds the bytes as read.
    text: String,
    /// Per line: where its text ends in `text`, and how it ends.
    ends: Vec<(usize, End)>,
    /// Bytes of the lines' text (without terminators).
    text_bytes: usize,
    /// Bytes of text that belong to pieces of over-long lines.
    piece_bytes: usize,
}

impl Block {
    /// An empty block for `capacity` bytes of text.
    pub fn new(run_id: u64, stream: Stream, capacity: usize) -> Self {
        Self::from_parts(run_id, stream, String::with_capacity(capacity), Vec::new())
    }

    /// The block of lines already laid out in `text`: `ends` says where each line's text
    /// ends and how (the first line starts at 0).
    pub(super) fn from_parts(
        run_id: u64,
        stream: Stream,
        text: String,
        ends: Vec<(usize, End)>,
    ) -> Self {
        let (mut start, mut gaps, mut piece_bytes) = (0, 0, 0);
        for &(end, how) in &ends {
            if how == End::Piece {
                piece_bytes += end - start;
            }
            gaps += how.gap();
            start = end + how.gap();
        }
        Self {
            first_seq: 0,
            time_ms: 0,
            run_id,
            stream,
            text_bytes: text.len() - gaps,
            piece_bytes,
            text,
            ends,
        }
    }

    /// Adds a line given as raw bytes; invalid UTF-8 is replaced.
    pub fn push(&mut self, bytes: &[u8], continued: bool) {
        let before = self.text.len();
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        self.text_bytes = self.text.len();
        if continued {
            self.piece_bytes += self.text.len() - before;
        }
        let end = if continued { End::Piece } else { End::Line(0) };
        self.ends.push((self.text.len(), end));
    }

    /// The run whose lines it holds.
    pub(super) fn run_id(&self) -> u64 {
        self.run_id
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

    /// Bytes of the lines' text (without terminators).
    pub(super) fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// Bytes of text that belong to pieces of over-long lines.
    pub(super) fn piece_bytes(&self) -> usize {
        self.piece_bytes
    }

    /// Every line's text as bytes and whether it is a piece, in order (the file's view:
    /// no character boundaries to check).
    pub(super) fn records(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let text = self.text.as_bytes();
        let mut start = 0;
        self.ends.iter().map(move |&(end, how)| {
            let line = &text[start..end];
            start = end + how.gap();
            (line, how == End::Piece)
        })
    }

    pub(super) fn line(&self, i: usize) -> LineRef<'_> {
        let start = i
            .checked_sub(1)
            .map_or(0, |p| self.ends[p].0 + self.ends[p].1.gap());
        let (end, how) = self.ends[i];
        LineRef {
            seq: self.first_seq + i as u64,
            time_ms: self.time_ms,
            run_id: self.run_id,
            stream: self.stream,
            text: &self.text[start..end],
            continued: how == End::Piece,
        }
    }

    /// Bytes of memory the block holds.
    pub(super) fn cost(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<(usize, End)>()
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

/// The head of the next record of a block, laid out once per block and kept up to date:
/// `TIME SEQ RUN STREAM `, whose sequence number is counted up in decimal in place. A
/// record is then two copies and a newline.
pub(super) struct Framing {
    /// `TIME SEQ RUN STREAM ` of the next record.
    head: Vec<u8>,
    /// Where the sequence number's digits are in `head`.
    seq: std::ops::Range<usize>,
}

impl Framing {
    /// The framing of the records of lines of `run_id` and `stream` read at `time`, the
    /// first numbered `first_seq`.
    pub(super) fn new(time: &str, first_seq: u64, run_id: u64, stream: Stream) -> Self {
        let mut head = Vec::with_capacity(time.len() + 48);
        head.extend_from_slice(time.as_bytes());
        head.push(b' ');
        let start = head.len();
        head.extend_from_slice(itoa::Buffer::new().format(first_seq).as_bytes());
        let seq = start..head.len();
        head.push(b' ');
        head.extend_from_slice(itoa::Buffer::new().format(run_id).as_bytes());
        head.push(b' ');
        head.extend_from_slice(stream.as_str().as_bytes());
        head.push(b' ');
        Self { head, seq }
    }

    /// Bytes a record of `text_bytes` bytes of text takes, at most.
    pub(super) fn record_bytes(&self, text_bytes: usize) -> usize {
        self.head.len() + 2 + text_bytes + 1
    }

    /// Appends the log file form of the next line: `TIME SEQ RUN STREAM[+] TEXT`.
    pub(super) fn write(&mut self, text: &[u8], continued: bool, out: &mut Vec<u8>) {
        if continued {
            out.extend_from_slice(&self.head[..self.head.len() - 1]);
            out.extend_from_slice(b"+ ");
        } else {
            out.extend_from_slice(&self.head);
        }
        out.extend_from_slice(text);
        out.push(b'\n');
        self.next_seq();
    }

    /// Counts the sequence number in `head` up by one.
    fn next_seq(&mut self) {
        for i in self.seq.clone().rev() {
            if self.head[i] == b'9' {
                self.head[i] = b'0';
            } else {
                self.head[i] += 1;
                return;
            }
        }
        // All nines (now zeros): one more digit.
        self.head.insert(self.seq.start, b'1');
        self.seq.end += 1;
    }
}

impl LineRef<'_> {
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

    #[test]
    fn the_sequence_counts_up_in_decimal() {
        for start in [0, 1, 8, 9, 99, 12_345_678_999, u64::MAX - 2] {
            let mut f = Framing::new("T", start, 3, Stream::Stdout);
            let mut out = Vec::new();
            for _ in 0..3 {
                f.write(b"x", false, &mut out);
            }
            f.write(b"y", true, &mut out);
            let want: String = (0..3)
                .map(|k| format!("T {} 3 out x\n", start as u128 + k))
                .chain([format!("T {} 3 out+ y\n", start as u128 + 3)])
                .collect();
            assert_eq!(String::from_utf8(out).expect("utf8"), want);
        }
    }

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
        Framing::new("2023-11-14T22:13:20.123Z", 42, 7, Stream::Stderr).write(
            line.text.as_bytes(),
            true,
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text, "2023-11-14T22:13:20.123Z 42 7 err+ hello  world \n");
        assert_eq!(parse(text.trim_end_matches('\n')), Some(line.to_proto()));
        assert_eq!(parse("a 5 6 out text"), None);
        assert_eq!(parse("2023-11-14T22:13:20.123Z 5 6 bad text"), None);
    }
}
