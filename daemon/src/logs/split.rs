//! Cutting a byte stream into lines (pure): complete lines go into blocks, a line longer
//! than the cap is cut into pieces marked continued (at a character boundary when the text
//! is UTF-8), `\r\n` loses its `\r`, invalid UTF-8 is replaced, and the start of a line whose
//! end has not arrived yet waits for the next chunk.

use super::ingest::READ_CHUNK;
use super::record::{Block, Stream};

/// Cuts a byte stream into lines: complete lines go into blocks; the start of a line whose
/// end has not arrived yet waits in `pending`.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// The lines `data` completes, as one block; a line longer than `max` bytes is cut into
    /// pieces marked `continued`, so `pending` never holds more than `max` bytes.
    pub(super) fn split(&mut self, data: &[u8], max: usize, run_id: u64, stream: Stream) -> Block {
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
    pub(super) fn finish(self, run_id: u64, stream: Stream) -> Block {
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
    use proptest::prelude::*;

    fn texts(b: &Block) -> Vec<(String, bool)> {
        (0..b.len())
            .map(|i| (b.line(i).text.to_owned(), b.line(i).continued))
            .collect()
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
