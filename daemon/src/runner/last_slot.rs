//! The latest slot each calendar script ran, kept for `catch_up` in
//! `state_dir/schedule/NAME`: one line, `SLOT_MS STARTED_MS` (Unix milliseconds of the slot
//! and of the run's start). Each file has one writer, the script's runner; it is replaced
//! whole (a temporary file renamed over it), read without following a symlink, and read and
//! written on blocking threads.

use crate::nofollow::open_regular;
use crate::throttle::{self, Failure, Streak};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest record read.
const MAX_RECORD: u64 = 256;

/// A script's latest slot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastSlot {
    /// The slot (Unix ms).
    pub(crate) slot_ms: i64,
    /// When its run started (Unix ms).
    pub(crate) started_ms: i64,
}

impl LastSlot {
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_ascii_whitespace();
        let slot_ms = words.next()?.parse().ok()?;
        let started_ms = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Self {
            slot_ms,
            started_ms,
        })
    }

    fn text(self) -> String {
        format!("{} {}\n", self.slot_ms, self.started_ms)
    }
}

/// The directory of the records (`state_dir/schedule`).
#[derive(Debug, Clone)]
pub struct SlotRecords {
    dir: PathBuf,
    /// Failed writes (a full `state_dir`): logged once, then counted.
    unwritable: Arc<Mutex<Streak>>,
}

impl SlotRecords {
    /// Uses (and creates, mode 0700) `state_dir/schedule`. Blocks.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("schedule");
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory (remove it; the daemon creates it)",
                dir.display()
            )));
        }
        Ok(Self {
            dir,
            unwritable: Arc::new(Mutex::new(Streak::new(throttle::WINDOW))),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The record of `name`; `None` when there is none (or it is unreadable: logged).
    pub(crate) async fn read(&self, name: &str) -> Option<LastSlot> {
        let path = self.path(name);
        let read = tokio::task::spawn_blocking(move || -> Result<Option<String>, String> {
            let file = match open_regular(&path, OpenOptions::new().read(true)) {
                Ok(f) => f,
                Err(crate::nofollow::OpenError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e.to_string()),
            };
            let mut text = String::new();
            file.take(MAX_RECORD)
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(Some(text))
        })
        .await;
        match read {
            Ok(Ok(Some(text))) => {
                let record = LastSlot::parse(&text);
                if record.is_none() {
                    tracing::warn!(
                        script = %name,
                        "the last-slot record {} is not `SLOT_MS STARTED_MS`; ignored (catch_up \
                         has nothing to go by until the next run writes it)",
                        self.path(name).display()
                    );
                }
                record
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(script = %name, "last-slot record ignored: {e}");
                None
            }
            Err(e) => {
                tracing::warn!(script = %name, "last-slot record not read: {e}");
                None
            }
        }
    }

    /// Replaces the record of `name`. A failure (a full disk) is logged once, then counted
    /// once a minute (an every-second schedule fails at every run): the record is only for
    /// `catch_up`.
    pub(crate) async fn write(&self, name: &str, record: LastSlot) {
        let (dir, path) = (self.dir.clone(), self.path(name));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".slot")
                .permissions(fs::Permissions::from_mode(0o600))
                .tempfile_in(&dir)?;
            tmp.write_all(record.text().as_bytes())?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let mut streak = match self.unwritable.lock() {
            Ok(streak) => streak,
            Err(poisoned) => poisoned.into_inner(),
        };
        let dir = self.dir.display();
        match written {
            Ok(()) => {
                if let Some(failed) = streak.succeeded() {
                    tracing::info!(
                        "calendar slots are recorded again in {dir} ({failed} more failed since \
                         the last report)"
                    );
                }
            }
            Err(e) => match streak.failed(Instant::now()) {
                None => {}
                Some(Failure::First) => tracing::warn!(
                    script = %name,
                    "cannot record the last slot in {dir}: {e}; catch_up may run that slot \
                     again at the next start (further failures are counted once a minute)"
                ),
                Some(Failure::Summary { failed }) => tracing::warn!(
                    "still cannot record calendar slots in {dir}: {failed} failed since the \
                     last report (last: {e})"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back_and_nothing_else_does() {
        let r = LastSlot {
            slot_ms: 1_700_000_000_000,
            started_ms: 1_700_000_000_123,
        };
        assert_eq!(LastSlot::parse(&r.text()), Some(r));
        assert_eq!(
            LastSlot::parse("-5 7"),
            Some(LastSlot {
                slot_ms: -5,
                started_ms: 7
            })
        );
        for bad in ["", "1", "1 2 3", "a b", "1.5 2", "1 2x"] {
            assert_eq!(LastSlot::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_record_is_replaced_and_read_back() {
        let state = tempfile::tempdir().expect("temp dir");
        let records = SlotRecords::open(state.path()).expect("open");
        assert_eq!(records.read("nightly").await, None);
        for slot_ms in [1000, 2000] {
            let r = LastSlot {
                slot_ms,
                started_ms: slot_ms + 5,
            };
            records.write("nightly", r).await;
            assert_eq!(records.read("nightly").await, Some(r));
        }
        let mode = fs::metadata(state.path().join("schedule/nightly"))
            .expect("record")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A symlink planted there is not followed.
        std::os::unix::fs::symlink("/etc/passwd", state.path().join("schedule/evil"))
            .expect("symlink");
        assert_eq!(records.read("evil").await, None);
    }
}
