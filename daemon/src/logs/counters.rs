//! What a script's log pipeline counts for the metrics: lines and bytes per stream, lines
//! readers were told were skipped, failed writes. Plain atomics, added to once per block
//! (not per line) and read by a scrape without the sink's lock.

use super::record::Stream;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one script's log.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Lines taken, by stream (`out`, `err`, `sys`).
    lines: [AtomicU64; 3],
    /// Bytes of text taken (without terminators), by stream.
    bytes: [AtomicU64; 3],
    /// Lines `ctl logs` readers were told were skipped (gone from memory and the files).
    skipped: AtomicU64,
    /// Writes to the log file that failed.
    write_errors: AtomicU64,
}

/// A snapshot of [`LogCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Lines and bytes per stream, in [`Stream::ALL`] order.
    pub lines: [u64; 3],
    /// Bytes per stream.
    pub bytes: [u64; 3],
    /// Lines readers were told were skipped.
    pub skipped: u64,
    /// Failed writes.
    pub write_errors: u64,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::System => 2,
    }
}

impl LogCounters {
    /// A block of `lines` lines and `bytes` bytes of `stream` was taken.
    pub(super) fn taken(&self, stream: Stream, lines: usize, bytes: usize) {
        let i = index(stream);
        self.lines[i].fetch_add(lines as u64, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A reader got a marker for `n` skipped lines.
    pub(super) fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// A write to the log file failed.
    pub(super) fn write_failed(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn get(&self) -> LogCounts {
        let load = |a: &[AtomicU64; 3]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        LogCounts {
            lines: load(&self.lines),
            bytes: load(&self.bytes),
            skipped: self.skipped.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_their_stream() {
        let c = LogCounters::default();
        c.taken(Stream::Stdout, 3, 30);
        c.taken(Stream::Stderr, 1, 5);
        c.taken(Stream::Stdout, 2, 4);
        c.skipped(7);
        c.write_failed();
        assert_eq!(
            c.get(),
            LogCounts {
                lines: [5, 1, 0],
                bytes: [34, 5, 0],
                skipped: 7,
                write_errors: 1
            }
        );
    }
}
