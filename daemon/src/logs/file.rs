//! The script's log file: appending records, rotation by size, and the paths of the current
//! and rotated files.

use super::record::LineRef;
use scriptd_common::config::LogConfig;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
/// The script's log file. Each appended block's records are written in one write before
/// followers are told about them, so what a follower saw is on disk (also across a
/// `kill -9` of the daemon) and a reader of the files always finds every line older than
/// those in memory. Records that cannot be written (disk full, file gone) are kept and
/// written with the next block, up to [`UNWRITTEN_MAX`] bytes.
pub(super) struct LogFile {
    pub(super) path: PathBuf,
    file: Option<File>,
    /// Bytes of the current file, counting those still in `buf`.
    size: u64,
    /// Records not written yet.
    pub(super) buf: Vec<u8>,
    /// The last open or write failed (and was reported): report only the first of a streak.
    failing: bool,
}

/// The write buffer is given back after a write when it grew past this.
const FILE_BUF_KEEP: usize = 16 << 10;

/// Unwritable records kept for a retry; beyond this the oldest are dropped (and counted).
const UNWRITTEN_MAX: usize = 4 << 20;

impl LogFile {
    pub(super) fn open(path: PathBuf) -> Self {
        let mut f = Self {
            path,
            file: None,
            size: 0,
            buf: Vec::new(),
            failing: false,
        };
        f.reopen();
        f
    }

    fn reopen(&mut self) {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path);
        match opened {
            Ok(mut f) => {
                let mut size = f.metadata().map(|m| m.len()).unwrap_or(0);
                // A line cut short by a crash: end it, so the next record starts a line.
                let mut last = [0u8; 1];
                if size > 0
                    && f.read_at(&mut last, size - 1).is_ok()
                    && last[0] != b'\n'
                    && f.write_all(b"\n").is_ok()
                {
                    size += 1;
                }
                self.file = Some(f);
                self.size = size + self.buf.len() as u64;
                self.recovered();
            }
            Err(e) => self.failed("cannot open log file", &e),
        }
    }

    fn failed(&mut self, what: &str, e: &std::io::Error) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(path = %self.path.display(), "{what}: {e}");
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(path = %self.path.display(), "log file writable again");
        }
    }

    fn rotated(&self, i: u32) -> PathBuf {
        rotated_path(&self.path, i)
    }

    /// Adds one record; rotates first when it would take the file past `max_bytes`.
    pub(super) fn push(&mut self, line: LineRef<'_>, time: &str, cfg: &LogConfig) {
        let before = self.buf.len();
        line.write_to(time, &mut self.buf);
        let len = (self.buf.len() - before) as u64;
        if self.size + len > cfg.max_bytes && self.size > 0 {
            self.write_out(before);
            self.rotate(cfg.keep); // the new file's size counts what `buf` holds
        } else {
            self.size += len;
        }
    }

    /// Rename and reopen: `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, and so on;
    /// the oldest beyond `keep` is removed. A follower reading the old file by its open
    /// descriptor keeps reading it.
    fn rotate(&mut self, keep: u32) {
        self.file = None;
        let mut errors = Vec::new();
        let mut note = |what: String, r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("{what}: {e}"))
            }
            _ => {}
        };
        if keep == 0 {
            note("remove".into(), std::fs::remove_file(&self.path));
        } else {
            note(
                "remove oldest".into(),
                std::fs::remove_file(self.rotated(keep)),
            );
            for i in (1..keep).rev() {
                note(
                    format!("rename .{i}"),
                    std::fs::rename(self.rotated(i), self.rotated(i + 1)),
                );
            }
            note(
                "rename".into(),
                std::fs::rename(&self.path, self.rotated(1)),
            );
        }
        // Files left beyond `keep` by an earlier, larger setting.
        let mut i = keep + 1;
        while std::fs::remove_file(self.rotated(i)).is_ok() {
            i += 1;
        }
        if !errors.is_empty() {
            // The file keeps growing until a rotation succeeds; say so every time.
            tracing::warn!(path = %self.path.display(), "log rotation failed: {}", errors.join("; "));
        }
        self.size = self.buf.len() as u64;
        self.reopen();
    }

    /// Writes the first `n` bytes of `buf` to the file; what cannot be written stays.
    fn write_out(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.file.is_none() {
            self.reopen();
        }
        let mut done = 0;
        let result = match self.file.as_mut() {
            None => Ok(()), // reported by reopen
            Some(f) => loop {
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
            },
        };
        self.buf.drain(..done);
        match result {
            Ok(()) if self.file.is_some() => self.recovered(),
            Ok(()) => {}
            Err(e) => self.failed("cannot write log file", &e),
        }
        if self.buf.len() > UNWRITTEN_MAX {
            self.drop_oldest();
        }
    }

    /// Drops the oldest whole records held for a retry, down to [`UNWRITTEN_MAX`].
    fn drop_oldest(&mut self) {
        let excess = self.buf.len() - UNWRITTEN_MAX;
        let cut =
            memchr::memchr(b'\n', &self.buf[excess..]).map_or(self.buf.len(), |i| excess + i + 1);
        let lost = memchr::memchr_iter(b'\n', &self.buf[..cut]).count();
        self.buf.drain(..cut);
        tracing::error!(
            path = %self.path.display(),
            "{lost} log records dropped: the log file could not be written for too long"
        );
    }

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

/// Path of a script's log file.
pub fn log_path(dir: &Path, script: &str) -> PathBuf {
    dir.join(format!("{script}.log"))
}

/// Path of the `i`th rotated file (`NAME.log.i`).
fn rotated_path(path: &Path, i: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{i}"));
    PathBuf::from(p)
}

/// The rotated files and the current one, oldest first (only those that exist).
pub(super) fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|i| rotated_path(path, i))
        .take_while(|p| p.exists())
        .take(10_000)
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}
