//! The newest lines of a script in memory: blocks gapless by sequence number, trimmed to
//! the ring size (`max_log_lines`), to [`FOLLOW_WINDOW`] while someone follows, and always
//! to [`MEM_BYTES`], of which pieces of over-long lines take at most [`PIECE_BYTES`]. The
//! ring also numbers the lines: it owns the next sequence number.

use super::record::{Block, LineRef};
use super::{FOLLOW_WINDOW, MEM_BYTES, PIECE_BYTES};
use std::collections::VecDeque;

pub(super) struct Ring {
    /// The newest lines, gapless by seq: the ring, plus the follow window.
    blocks: VecDeque<Block>,
    /// Lines at the front of the first block that were trimmed away.
    skip: usize,
    /// Lines in memory (in `blocks`, minus `skip`).
    pub(super) count: usize,
    /// Sum of `Block::cost` over `blocks`.
    pub(super) bytes: usize,
    /// Sum of `Block::piece_bytes` over `blocks`.
    pub(super) pieces: usize,
    pub(super) max_lines: usize,
    /// Seq the next line gets.
    pub(super) next_seq: u64,
}

impl Ring {
    /// An empty ring of `max_lines` whose first line gets seq `next_seq`.
    pub(super) fn new(max_lines: usize, next_seq: u64) -> Self {
        Self {
            blocks: VecDeque::new(),
            skip: 0,
            count: 0,
            bytes: 0,
            pieces: 0,
            max_lines,
            next_seq,
        }
    }

    /// Gives `block`'s lines the next sequence numbers.
    pub(super) fn number(&mut self, block: &mut Block) {
        block.first_seq = self.next_seq;
        self.next_seq += block.len() as u64;
    }

    /// Keeps a numbered block, dropping the oldest lines beyond the limits.
    pub(super) fn push(&mut self, block: Block, following: bool) {
        self.count += block.len();
        self.bytes += block.cost();
        self.pieces += block.piece_bytes();
        self.blocks.push_back(block);
        self.trim(following);
    }

    /// Unix ms of the oldest block in memory.
    pub(super) fn oldest_time_ms(&self) -> Option<i64> {
        self.blocks.front().map(|b| b.time_ms)
    }

    /// Drops the oldest lines beyond the ring size (the follow window while `following`),
    /// the memory cap and the cap on pieces of over-long lines: a line of 50 MiB streams
    /// through memory (and on to the file and followers) without filling the buffer.
    pub(super) fn trim(&mut self, following: bool) {
        let keep = if following {
            self.max_lines.max(FOLLOW_WINDOW)
        } else {
            self.max_lines
        };
        while self.count > keep || self.bytes > MEM_BYTES || self.pieces > PIECE_BYTES {
            let Some(first) = self.blocks.front() else {
                break;
            };
            let left = first.len() - self.skip;
            let over = self.count.saturating_sub(keep);
            if over >= left || self.bytes > MEM_BYTES || self.pieces > PIECE_BYTES {
                self.bytes -= first.cost();
                self.pieces -= first.piece_bytes();
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
    pub(super) fn front(&self) -> u64 {
        self.blocks
            .front()
            .map_or(self.next_seq, |b| b.first_seq + self.skip as u64)
    }

    /// The lines in memory from seq `from` on, oldest first.
    pub(super) fn lines_from(&self, from: u64) -> impl Iterator<Item = LineRef<'_>> {
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
    pub(super) fn lines_rev(&self) -> impl Iterator<Item = LineRef<'_>> {
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
