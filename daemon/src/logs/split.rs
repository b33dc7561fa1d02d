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
}
