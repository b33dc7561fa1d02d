//! Reading lines back from the log files: the tail of a backlog, a resume after a sequence
//! number or a time, a follower catching up, and the last record (where the sequence goes
//! on after a restart).

use super::follow::Query;
use super::paths::open_read;
use super::record::{skipped_marker, RawLine};
use super::{BATCH_BYTES, BATCH_LINES};
use scriptd_common::proto;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Reads the matching lines of log files (oldest first) with a seq below `front`, a batch at
/// a time, so that a reader waiting on a slow client holds no thread: with `need`, only the
/// last `need` of them; with `gap_from`, lines from that seq on that are no longer in the
/// files are reported with one skip marker where they would be.
pub(super) struct FileReader {
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
    pub(super) fn new(
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
    pub(super) fn next_batch(&mut self, batch: &mut Vec<proto::LogLine>) -> bool {
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
pub(super) fn last_record(path: &Path) -> Option<(u64, u64)> {
    let mut f = open_read(path).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::sink::tests::{cfg, in_memory, push, sink};
    use crate::logs::sink::{LogSink, Taken};
    use crate::logs::FOLLOW_WINDOW;
    use std::sync::Arc;

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
    fn a_lagging_reader_catches_up_from_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 10, cfg(u64::MAX, 1));
        let q = Query {
            follow: true,
            ..Query::default()
        };
        let start = s.start(&q);
        push(&s, FOLLOW_WINDOW + 100);
        let Taken::Behind { files, front } = s.take(
            start.end,
            &q,
            &mut Default::default(),
            std::task::Waker::noop(),
        ) else {
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
        assert_eq!(in_memory(&s), 10);
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
