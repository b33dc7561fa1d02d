//! Cutting a byte stream into lines (pure): complete lines go into blocks, a line longer
//! than the cap is cut into pieces marked continued (at a character boundary when the text
//! is UTF-8), `\r\n` loses its `\r`, invalid UTF-8 is replaced, and the start of a line whose
//! end has not arrived yet waits for the next read.
//!
//! The pipe is read straight into the splitter's buffer, behind the partial line of the read
//! before; the lines that read completes are found in place and the buffer becomes their
//! block as it is (one UTF-8 check, no copy of the text): only the partial line at its end
//! is copied, into the next buffer.

use super::record::{Block, End, Stream};

/// Cuts a byte stream into lines: complete lines go into blocks; the start of a line whose
/// end has not arrived yet waits in `pending`, where the next read lands behind it.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    /// The partial line, then what was read since; holds no newline before `scanned`.
    pending: Vec<u8>,
    /// Bytes at the front of `pending` already searched for newlines.
    scanned: usize,
}

impl Splitter {
    /// The buffer the next read appends to, with room for at least `room` more bytes.
    pub(super) fn buffer(&mut self, room: usize) -> &mut Vec<u8> {
        self.pending.reserve_exact(room);
        &mut self.pending
    }

    /// Gives back the buffer's unused room while the pipe is quiet (an idle script costs
    /// only its partial line).
    pub(super) fn idle(&mut self) {
        self.pending.shrink_to_fit();
    }

    /// The lines the bytes read so far complete, as one block; a line longer than `max`
    /// bytes is cut into pieces marked `continued`, so `pending` keeps at most `max` bytes
    /// between reads.
    pub(super) fn take(&mut self, max: usize, run_id: u64, stream: Stream) -> Block {
        let data = &self.pending;
        let mut ends = Vec::new();
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &data[self.scanned..]) {
            let nl = nl + self.scanned;
            start = cut_pieces(data, start, nl, max, &mut ends);
            let end = if nl > start && data[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            ends.push((end, End::Line(if end < nl { 2 } else { 1 })));
            start = nl + 1;
        }
        start = cut_pieces(data, start, data.len(), max, &mut ends);
        if ends.is_empty() {
            self.scanned = data.len();
            return Block::new(run_id, stream, 0);
        }
        let tail = data[start..].to_vec();
        self.scanned = tail.len();
        let mut text = std::mem::replace(&mut self.pending, tail);
        text.truncate(start);
        text.shrink_to_fit();
        match String::from_utf8(text) {
            Ok(text) => Block::from_parts(run_id, stream, text, ends),
            Err(e) => lossy(e.as_bytes(), &ends, run_id, stream),
        }
    }

    /// The last line, without its newline, when the stream ended.
    pub(super) fn finish(self, run_id: u64, stream: Stream) -> Block {
        let mut block = Block::new(run_id, stream, self.pending.len());
        if !self.pending.is_empty() {
            block.push(strip_cr(&self.pending), false);
        }
        block
    }

    /// Appends `data` as if read, and takes the block it completes.
    #[cfg(test)]
    pub(super) fn split(&mut self, data: &[u8], max: usize, run_id: u64, stream: Stream) -> Block {
        self.buffer(data.len()).extend_from_slice(data);
        self.take(max, run_id, stream)
    }
}

/// Cuts pieces of at most `max` bytes off the front of `data[start..end]` (a line or the
/// partial line) into `ends` until at most `max` bytes are left; returns where they start.
fn cut_pieces(
    data: &[u8],
    mut start: usize,
    end: usize,
    max: usize,
    ends: &mut Vec<(usize, End)>,
) -> usize {
    while end - start > max {
        start += cut_point(&data[start..], max);
        ends.push((start, End::Piece));
    }
    start
}

/// The block of `ends` laid out in `bytes` (which are not all valid UTF-8): each line
/// decoded on its own, invalid sequences replaced.
fn lossy(bytes: &[u8], ends: &[(usize, End)], run_id: u64, stream: Stream) -> Block {
    let mut block = Block::new(run_id, stream, bytes.len() + 16);
    let mut start = 0;
    for &(end, how) in ends {
        block.push(&bytes[start..end], how == End::Piece);
        start = end + how.gap();
    }
    block
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(b: &Block) -> Vec<(String, bool)> {
        (0..b.len())
            .map(|i| (b.line(i).text.to_owned(), b.line(i).continued))
            .collect()
    }

    #[test]
    fn long_lines_are_split() {
        let mut s = Splitter::default();
        let block = s.split(&[b'x'; 10], 4, 1, Stream::Stdout);
        assert_eq!(texts(&block), vec![("xxxx".into(), true); 2]);
        assert_eq!(s.pending.len(), 2);
        assert_eq!(block.piece_bytes(), 8);
    }

    #[test]
    fn splits_keep_characters_whole() {
        let mut s = Splitter::default();
        // 1 + 2 + 3*3 = 12 bytes
        let block = s.split("aé€€€".as_bytes(), 4, 1, Stream::Stdout);
        let rest = String::from_utf8(s.pending).expect("utf8 rest");
        let joined: String = texts(&block)
            .into_iter()
            .map(|(t, _)| t)
            .collect::<String>()
            + &rest;
        assert_eq!(joined, "aé€€€");
        assert!(!joined.contains('\u{FFFD}'));
    }

    #[test]
    fn a_block_is_the_buffer_read_into() {
        let mut s = Splitter::default();
        s.buffer(64).extend_from_slice(b"one\r\ntwo\nthr");
        let block = s.take(8, 1, Stream::Stdout);
        assert_eq!(
            texts(&block),
            vec![("one".into(), false), ("two".into(), false)]
        );
        assert_eq!(block.text_bytes(), 6);
        assert_eq!(s.pending, b"thr");
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

    /// Feeds `data` cut at `cuts` (offsets, any order) and returns every line and piece,
    /// with the partial last line flushed at the end.
    fn feed(data: &[u8], cuts: &[usize], max: usize) -> Vec<(String, bool)> {
        let mut at: Vec<usize> = cuts.iter().map(|&c| c % (data.len() + 1)).collect();
        at.push(0);
        at.push(data.len());
        at.sort_unstable();
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for w in at.windows(2) {
            out.extend(texts(&s.split(&data[w[0]..w[1]], max, 1, Stream::Stdout)));
        }
        out.extend(texts(&s.finish(1, Stream::Stdout)));
        out
    }

    /// Bytes rich in what the splitter cares about: newlines, `\r`, multi-byte characters
    /// and their pieces, invalid bytes.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just("€".as_bytes().to_vec()),
            Just("😀".as_bytes().to_vec()),
            Just(vec![0xe2, 0x82]),
            Just(vec![0xff]),
            proptest::collection::vec(b'a'..=b'z', 1..12),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    /// Valid UTF-8 text with newlines, `\r\n` and multi-byte characters.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("([a-z ]{0,9}|\r\n|\n|é|€|😀){0,60}").expect("valid regex")
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines_and_pieces(
            data in bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max in 4usize..40,
        ) {
            prop_assert_eq!(feed(&data, &cuts, max), feed(&data, &[], max));
        }

        #[test]
        fn pieces_join_back_into_the_lines(
            data in text(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max in 4usize..40,
        ) {
            let out = feed(data.as_bytes(), &cuts, max);
            let mut lines = Vec::new();
            let mut current = String::new();
            for (piece, continued) in &out {
                prop_assert!(piece.len() <= max, "piece {:?} longer than {}", piece, max);
                current.push_str(piece);
                if !continued {
                    lines.push(std::mem::take(&mut current));
                }
            }
            prop_assert_eq!(current, "", "the last piece ends its line");
            let mut want: Vec<&str> = data.split('\n').collect();
            if want.last() == Some(&"") {
                want.pop();
            }
            let want: Vec<&str> = want
                .into_iter()
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect();
            prop_assert_eq!(lines, want);
        }
    }
}
