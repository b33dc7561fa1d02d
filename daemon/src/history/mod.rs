//! The history: every applied version (with the full text of every file), every refused
//! attempt and every control action (start, stop, restart, run), in SQLite under
//! `state_dir` (module `store`).
//!
//! One owner: a thread of its own holds the connection and runs the commands sent to it, in
//! order; callers on the async runtime await the reply. Nothing else touches the database.
//!
//! A startup version that cannot be recorded (a full disk) does not keep the daemon from
//! starting: the owner keeps it and writes it as soon as it can, before every later command
//! and every [`RETRY`] while it waits.

mod record;
mod store;

pub use record::{Action, ActionResult, Record, ResultKind, Source, UnknownWord};

use scriptd_common::config::{ConfigFile, ConfigSource};
use scriptd_common::proto;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use store::Store;
use tokio::sync::oneshot;

/// How often the owner tries again to write a record it is holding.
pub const RETRY: Duration = Duration::from_secs(10);

/// A history error.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored change/error detail (an encoded protobuf `ReloadEvent`) did not decode.
    #[error("history database holds a record that does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Creating or securing `state_dir` or a database file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The database was written by a newer scriptd.
    #[error(
        "history database has schema version {found}, but this scriptd knows versions up to \
         {known}: it was written by a newer scriptd; run that one, or move history.db aside \
         to start a new history"
    )]
    NewerSchema {
        /// The database's `user_version`.
        found: u32,
        /// The newest this daemon knows.
        known: u32,
    },
    /// The history's thread is gone (the daemon is stopping, or it could not be started).
    #[error("the history is not available: {0}")]
    Stopped(String),
}

/// A command for the owner thread.
type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// The owner thread's state.
struct Owner {
    store: Store,
    /// The startup version, while it could not be recorded.
    pending: Option<(u64, ConfigSource, Record)>,
}

impl Owner {
    /// Writes the held startup version if the database takes it now.
    fn retry_pending(&mut self) {
        let Some((version, source, record)) = self.pending.take() else {
            return;
        };
        match self.store.record_version(version, &source, &record) {
            Ok(()) => tracing::info!("startup version {version} is recorded in the history now"),
            Err(HistoryError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                tracing::warn!(
                    "startup version {version} cannot be recorded: the history has another \
                     version {version} ({e}); giving up on it"
                );
            }
            Err(e) => {
                tracing::debug!("startup version {version} still cannot be recorded: {e}");
                self.pending = Some((version, source, record));
            }
        }
    }

    /// Runs commands until every handle is dropped.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = if self.pending.is_some() {
                match jobs.recv_timeout(RETRY) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvError) => break,
                }
            };
            // First what is held: a later version or a listing then sees it in order.
            self.retry_pending();
            if let Some(job) = job {
                job(&mut self);
            }
        }
        if let Some((version, ..)) = self.pending {
            tracing::warn!(
                "startup version {version} was never recorded in the history (it could not be \
                 written); the next start records the files again if they differ"
            );
        }
    }
}

/// Handle to the history; cheap to clone. Every call is answered by the owner thread.
#[derive(Clone)]
pub struct History {
    jobs: mpsc::Sender<Job>,
    dir: PathBuf,
    /// Records that could not be written (for the metrics).
    write_failures: Arc<AtomicU64>,
}

impl History {
    /// Opens (creating) `state_dir/history.db` on the owner thread it starts: `state_dir`
    /// 0700 if it is created, the database and its WAL files 0600, the schema brought up to
    /// date.
    pub async fn open(state_dir: &Path, limit: u32) -> Result<Self, HistoryError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (opened, is_open) = oneshot::channel();
        let dir = state_dir.to_path_buf();
        std::thread::Builder::new()
            .name("history".into())
            .spawn({
                let dir = dir.clone();
                move || match Store::open(&dir, limit) {
                    Ok(store) => {
                        let _ = opened.send(Ok(()));
                        Owner {
                            store,
                            pending: None,
                        }
                        .run(rx);
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                    }
                }
            })
            .map_err(|e| HistoryError::Stopped(format!("cannot start its thread: {e}")))?;
        is_open
            .await
            .map_err(|_| HistoryError::Stopped("its thread ended while opening".into()))??;
        Ok(Self {
            jobs,
            dir,
            write_failures: Arc::default(),
        })
    }

    /// Records (versions, attempts, control actions) that could not be written so far.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    /// A call that writes a record: its failure is counted.
    async fn write(
        &self,
        f: impl FnOnce(&mut Owner) -> Result<(), HistoryError> + Send + 'static,
    ) -> Result<(), HistoryError> {
        let written = self.call(f).await;
        if written.is_err() {
            self.write_failures.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    /// The directory holding the database (`state_dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` on the owner thread and awaits its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Owner) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |owner| {
            let _ = tx.send(f(owner));
        });
        self.jobs
            .send(job)
            .map_err(|_| HistoryError::Stopped("its thread has stopped".into()))?;
        rx.await
            .map_err(|_| HistoryError::Stopped("its thread stopped mid-call".into()))?
    }

    /// The newest applied version: number and hash.
    pub async fn latest(&self) -> Result<Option<(u64, String)>, HistoryError> {
        self.call(|o| o.store.latest()).await
    }

    /// The highest attempt id recorded, so attempt ids keep growing across restarts.
    pub async fn max_attempt(&self) -> Result<u64, HistoryError> {
        self.call(|o| o.store.max_attempt()).await
    }

    /// Records the version the daemon started with. If it cannot be written now, the owner
    /// keeps it and writes it as soon as it can; the error says why it is late.
    pub async fn record_startup(
        &self,
        version: u64,
        source: ConfigSource,
        record: Record,
    ) -> Result<(), HistoryError> {
        self.write(
            move |o| match o.store.record_version(version, &source, &record) {
                Ok(()) => Ok(()),
                Err(e) => {
                    o.pending = Some((version, source, record));
                    Err(e)
                }
            },
        )
        .await
    }

    /// Records an applied version with its files; prunes old versions beyond the limit
    /// (never `version` itself, which is running now).
    pub async fn record_version(
        &self,
        version: u64,
        source: ConfigSource,
        record: Record,
    ) -> Result<(), HistoryError> {
        self.write(move |o| o.store.record_version(version, &source, &record))
            .await
    }

    /// Records a refused attempt (or a rollback that only rewrote the files on disk).
    pub async fn record_attempt(&self, record: Record) -> Result<(), HistoryError> {
        self.write(move |o| o.store.record_attempt(&record)).await
    }

    /// Records a control action.
    pub async fn record_action(&self, action: Action) -> Result<(), HistoryError> {
        self.write(move |o| o.store.record_action(&action)).await
    }

    /// The newest `limit` control actions, newest first.
    pub async fn actions(&self, limit: u32) -> Result<Vec<proto::ActionEntry>, HistoryError> {
        self.call(move |o| o.store.actions(limit)).await
    }

    /// The newest `limit` entries, newest first.
    pub async fn list(&self, limit: u32) -> Result<Vec<proto::HistoryEntry>, HistoryError> {
        self.call(move |o| o.store.list(limit)).await
    }

    /// One version: its entry and files; `None` if unknown (or pruned).
    pub async fn version(
        &self,
        version: u64,
    ) -> Result<Option<(proto::HistoryEntry, Vec<ConfigFile>)>, HistoryError> {
        self.call(move |o| o.store.version(version)).await
    }

    /// The newest applied version older than `version`.
    pub async fn previous(&self, version: u64) -> Result<Option<u64>, HistoryError> {
        self.call(move |o| o.store.previous(version)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::history::record::test_source as source;

    fn startup() -> Record {
        Record::startup(7, None)
    }

    #[tokio::test]
    async fn a_startup_version_that_cannot_be_written_is_written_with_the_next_call(
    ) -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = History::open(dir.path(), 5).await?;
        h.record_version(1, source("v1"), startup()).await?;
        // Another writer holds the write lock past the busy timeout: the record fails.
        let lock = rusqlite::Connection::open(dir.path().join("history.db"))?;
        lock.execute_batch("BEGIN IMMEDIATE")?;
        let late = h.record_startup(2, source("v2"), startup()).await;
        assert!(late.is_err(), "the lock holds the record off");
        assert_eq!(h.latest().await?.map(|l| l.0), Some(1));
        drop(lock);
        // The next call finds it written first.
        let (v, hash) = h.latest().await?.expect("a version");
        assert_eq!((v, hash), (2, source("v2").hash()));
        let listed = h.list(10).await?;
        assert_eq!(listed[0].time_ms, 7, "it keeps the time it happened");
        assert_eq!(listed[0].source, "startup");
        Ok(())
    }
}
