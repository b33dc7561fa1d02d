//! The script's log file: appending records, rotation by size, when a descriptor is held,
//! and how failed writes are reported.

use super::counters::LogCounters;
use super::paths::{open_append, rotated_path};
use super::record::{Block, Framing};
use super::write_failures::{Report, WriteFailures};
use scriptd_common::config::LogConfig;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The script's log file. Each appended block's records are written in one write before
/// followers are told about them, so what a follower saw is on disk (also across a
/// `kill -9` of the daemon) and a reader of the files always finds every line older than
/// those in memory. Records that cannot be written (disk full, file gone) are kept and
/// written with the next block, up to [`UNWRITTEN_MAX`] bytes.
///
/// The file is opened by a write and stays open after it only while it is held (a run's
/// pipes are being read, see [`LogFile::hold`]), so an idle, waiting, disabled or stopped
/// script holds no descriptor.
pub(super) struct LogFile {
    pub(super) path: PathBuf,
    file: Option<File>,
    /// Bytes in the file on disk (as last seen: the daemon is its only writer).
    on_disk: u64,
    /// Records not written yet.
    pub(super) buf: Vec<u8>,
    /// Holders that keep the file open between writes.
    holds: usize,
    /// The end of the file found at the first open was checked (and a cut line ended).
    ended: bool,
    failures: WriteFailures,
    /// The last failure, for the summaries.
    last_error: String,
    /// Where failed writes are counted for the metrics.
    counters: Arc<LogCounters>,
}

/// The write buffer is given back after a write when it grew past this.
const FILE_BUF_KEEP: usize = 16 << 10;

/// Unwritable records kept for a retry; beyond this the oldest are dropped (and counted).
const UNWRITTEN_MAX: usize = 4 << 20;

impl LogFile {
    /// The log file at `path`; nothing is opened until the first write.
    pub(super) fn new(path: PathBuf, counters: Arc<LogCounters>) -> Self {
        let on_disk = path
            .symlink_metadata()
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        Self {
            path,
            file: None,
            on_disk,
            buf: Vec::new(),
            holds: 0,
            ended: false,
            failures: WriteFailures::default(),
            last_error: String::new(),
            counters,
        }
    }

    /// Keeps the file open between writes until the matching [`Self::release`].
    pub(super) fn hold(&mut self) {
        self.holds += 1;
    }

    /// Ends one [`Self::hold`]; the last one closes the file (records still pending are
    /// written by the next write, or when the sink closes).
    pub(super) fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        self.settle();
    }

    /// After a write: the file is closed unless someone holds it.
    pub(super) fn settle(&mut self) {
        if self.holds == 0 {
            self.file = None;
        }
    }

    /// True when a descriptor is open.
    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Opens the file (no-follow, regular files only). At the first open, a line cut short
    /// by a crash is ended, so the next record starts a line; later opens go on where the
    /// last write stopped (a record cut by a failed write goes on with the rest in `buf`).
    fn reopen(&mut self) {
        let mut f = match open_append(&self.path) {
            Ok(f) => f,
            Err(e) => return self.failed(&e),
        };
        let mut size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut last = [0u8; 1];
        if !std::mem::replace(&mut self.ended, true)
            && size > 0
            && f.read_at(&mut last, size - 1).is_ok()
            && last[0] != b'\n'
            && f.write_all(b"\n").is_ok()
        {
            size += 1;
        }
        self.file = Some(f);
        self.on_disk = size;
    }

    fn failed(&mut self, e: &dyn std::fmt::Display) {
        self.counters.write_failed();
        self.last_error = e.to_string();
        let report = self.failures.failed(Instant::now());
        self.report(report);
    }

    fn report(&self, report: Option<Report>) {
        let path = self.path.display();
        match report {
            None => {}
            Some(Report::First) => tracing::warn!(
                path = %path,
                "cannot write log file: {}; its records are kept (up to {} MiB) and written \
                 when it works again; further failures are counted once a minute",
                self.last_error,
                UNWRITTEN_MAX >> 20
            ),
            Some(Report::Summary { failed, dropped }) => tracing::warn!(
                path = %path,
                "log file still not writable: {failed} more failed writes, {dropped} records \
                 dropped (last error: {})",
                self.last_error
            ),
            Some(Report::Recovered { failed, dropped }) => tracing::info!(
                path = %path,
                "log file writable again ({failed} more failed writes, {dropped} records \
                 dropped since the last report)"
            ),
        }
    }

    /// Adds the records of `block`'s lines read at `time`; rotates whenever the next record
    /// would take the file past `max_bytes`.
    pub(super) fn push(&mut self, block: &Block, time: &str, cfg: &LogConfig) {
        let mut framing = Framing::new(time, block.first_seq, block.run_id(), block.stream());
        self.buf
            .reserve(framing.record_bytes(0) * block.len() + block.text_bytes());
        for (text, continued) in block.records() {
            let before = self.buf.len();
            framing.write(text, continued, &mut self.buf);
            let size = self.on_disk + self.buf.len() as u64;
            if size > cfg.max_bytes {
                self.rotate_before(before, cfg);
            }
        }
    }

    /// The record that starts at `before` in `buf` takes the file past `max_bytes`: the ones
    /// before it are written and the file rotated, unless the file is empty.
    #[cold]
    fn rotate_before(&mut self, before: usize, cfg: &LogConfig) {
        let had = self.on_disk + before as u64;
        // While writes fail, only a file with something on disk is rotated (which removes
        // the oldest file: that may free the space): the records wait in `buf`, and the new
        // empty file is not rotated again and again.
        let stuck = self.failures.is_failing() && self.on_disk == 0;
        if had > 0 && !stuck {
            self.write_out(before);
            self.rotate(cfg.keep);
        }
    }

    /// Rename: `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, and so on; the oldest
    /// beyond `keep` is removed. The next write creates a new `NAME.log`. A follower reading
    /// the old file by its open descriptor keeps reading it. Renames and removals act on
    /// directory entries: a symlink found there is moved or removed, never followed.
    fn rotate(&mut self, keep: u32) {
        self.file = None;
        let mut errors = Vec::new();
        let mut note = |what: String, r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("{what}: {e}"))
            }
            _ => {}
        };
        let rotated = |i| rotated_path(&self.path, i);
        if keep == 0 {
            note("remove".into(), std::fs::remove_file(&self.path));
        } else {
            note("remove oldest".into(), std::fs::remove_file(rotated(keep)));
            for i in (1..keep).rev() {
                note(
                    format!("rename .{i}"),
                    std::fs::rename(rotated(i), rotated(i + 1)),
                );
            }
            note("rename".into(), std::fs::rename(&self.path, rotated(1)));
        }
        // Files left beyond `keep` by an earlier, larger setting.
        let mut i = keep + 1;
        while std::fs::remove_file(rotated(i)).is_ok() {
            i += 1;
        }
        if !errors.is_empty() {
            // The file keeps growing until a rotation succeeds; say so every time.
            tracing::warn!(path = %self.path.display(), "log rotation failed: {}", errors.join("; "));
        }
        self.on_disk = 0;
    }

    /// Writes the first `n` bytes of `buf` to the file; what cannot be written stays.
    fn write_out(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.file.is_none() {
            self.reopen();
        }
        let Some(f) = self.file.as_mut() else {
            return self.keep_unwritten(); // the open failed, and said so
        };
        let mut done = 0;
        let result = loop {
            match f.write(&self.buf[done..n]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    done += w;
                    if done == n {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        self.on_disk += done as u64;
        match result {
            Ok(()) => {
                let report = self.failures.succeeded();
                self.report(report);
            }
            // What was not written stays in `buf`: the next write goes on from there.
            Err(e) => self.failed(&e),
        }
        self.keep_unwritten();
    }

    /// Drops the oldest whole records held for a retry, down to [`UNWRITTEN_MAX`].
    fn keep_unwritten(&mut self) {
        if self.buf.len() <= UNWRITTEN_MAX {
            return;
        }
        let excess = self.buf.len() - UNWRITTEN_MAX;
        let cut =
            memchr::memchr(b'\n', &self.buf[excess..]).map_or(self.buf.len(), |i| excess + i + 1);
        let lost = memchr::memchr_iter(b'\n', &self.buf[..cut]).count() as u64;
        self.buf.drain(..cut);
        let report = self.failures.dropped(lost, Instant::now());
        self.report(report);
    }

    /// Writes every pending record (opening the file if needed).
    pub(super) fn flush(&mut self) {
        self.write_out(self.buf.len());
        if self.buf.is_empty() && self.buf.capacity() > FILE_BUF_KEEP {
            self.buf = Vec::new();
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::Stream;

    fn cfg(max_bytes: u64, keep: u32) -> LogConfig {
        LogConfig {
            max_bytes,
            keep,
            max_line_bytes: 64 << 10,
        }
    }

    fn write(f: &mut LogFile, n: usize, cfg: &LogConfig) {
        let mut block = Block::new(1, Stream::Stdout, 0);
        for i in 0..n {
            block.push(format!("line {i}").as_bytes(), false);
        }
        f.push(&block, "2023-11-14T22:13:20.123Z", cfg);
        f.flush();
        f.settle();
    }

    #[test]
    fn the_file_is_open_only_while_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(1 << 20, 2);
        let mut f = LogFile::new(dir.path().join("s.log"), Default::default());
        assert!(!f.is_open(), "nothing is opened before a write");
        write(&mut f, 3, &c);
        assert!(!f.is_open(), "closed after a write nobody holds");
        f.hold();
        f.hold();
        write(&mut f, 3, &c);
        assert!(f.is_open(), "held: stays open");
        f.release();
        assert!(f.is_open(), "one holder left");
        f.release();
        assert!(!f.is_open(), "the last release closes it");
        let text = std::fs::read_to_string(dir.path().join("s.log")).expect("read");
        assert_eq!(text.lines().count(), 6);
    }

    #[test]
    fn rotation_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let path = dir.path().join("s.log");
        std::os::unix::fs::symlink(&victim, rotated_path(&path, 1)).expect("link .1");
        std::os::unix::fs::symlink(&victim, rotated_path(&path, 2)).expect("link .2");
        let c = cfg(200, 2);
        let mut f = LogFile::new(path.clone(), Default::default());
        for _ in 0..10 {
            write(&mut f, 5, &c);
        }
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read"),
            "precious\n"
        );
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            let meta = p.symlink_metadata().expect("exists");
            assert!(meta.is_file(), "{} is a file of the daemon's", p.display());
        }
    }

    #[test]
    fn a_symlink_at_the_log_name_is_refused_and_the_records_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let path = dir.path().join("s.log");
        std::os::unix::fs::symlink(&victim, &path).expect("link");
        let c = cfg(1 << 20, 2);
        let mut f = LogFile::new(path.clone(), Default::default());
        write(&mut f, 3, &c);
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read"),
            "precious\n"
        );
        assert!(f.last_error.contains("symbolic link"), "{}", f.last_error);
        assert!(!f.buf.is_empty(), "the records wait for a retry");
        std::fs::remove_file(&path).expect("remove the link");
        write(&mut f, 1, &c);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn only_the_first_open_ends_a_cut_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.log");
        std::fs::write(&path, "2023-11-14T22:13:20.123Z 1 1 out cut by a cra").expect("write");
        let c = cfg(1 << 20, 2);
        let mut f = LogFile::new(path.clone(), Default::default());
        write(&mut f, 1, &c);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "the cut line is ended: {text}");
        // A record cut by a failed write: its start is on disk, the rest still in `buf`.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"2023-11-14T22:13:20.123Z 3 1 out ha")
            .expect("append");
        f.buf.extend_from_slice(b"lf\n");
        f.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with(" 3 1 out half\n"), "{text}");
    }
}
