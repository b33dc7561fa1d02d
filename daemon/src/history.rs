//! The history store: every applied version (with the full text of every file) and every
//! refused attempt, in SQLite (WAL) under `state_dir`. It survives a crash or `kill -9` of
//! the daemon at any moment: each record is one transaction.

use rusqlite::{params, Connection, OptionalExtension};
use scriptd_common::config::{ConfigFile, ConfigSource};
use scriptd_common::proto;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// A history store error.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Stored JSON did not decode.
    #[error("history database holds a record that does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// One record to append.
pub struct Record<'a> {
    /// Attempt id (0 for startup).
    pub attempt_id: u64,
    /// Trigger.
    pub source: &'a str,
    /// For rollbacks: the version restored.
    pub rollback_from: Option<u64>,
    /// Peer uid of the ctl user.
    pub uid: Option<u32>,
    /// applied, rejected, failed-rolled-back.
    pub result: &'a str,
    /// Why refused.
    pub message: &'a str,
    /// Changes.
    pub changes: &'a [proto::Change],
    /// Validation errors.
    pub errors: &'a [proto::ConfigError],
}

/// Handle to the store; cheap to clone, blocking calls (use from `spawn_blocking`).
#[derive(Clone)]
pub struct History {
    db: Arc<Mutex<Connection>>,
    limit: u32,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    version       INTEGER UNIQUE,          -- NULL for refused attempts
    attempt_id    INTEGER NOT NULL,
    time_ms       INTEGER NOT NULL,
    source        TEXT NOT NULL,
    rollback_from INTEGER,
    uid           INTEGER,
    result        TEXT NOT NULL,
    summary       TEXT NOT NULL,
    message       TEXT NOT NULL,
    hash          TEXT NOT NULL,
    detail        BLOB NOT NULL            -- protobuf ReloadEvent: changes and errors
);
CREATE TABLE IF NOT EXISTS files (
    version INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (version, idx)
);
";

/// `+1 ~2 -0 scripts`: added, changed, removed.
pub fn summary(changes: &[proto::Change]) -> String {
    use std::collections::BTreeSet;
    let (mut added, mut changed, mut removed) = (0, BTreeSet::new(), 0);
    for c in changes {
        match (
            c.field.as_str(),
            c.old_value.is_none(),
            c.new_value.is_none(),
        ) {
            ("*", true, _) => added += 1,
            ("*", _, true) => removed += 1,
            _ if !c.script.is_empty() => {
                changed.insert(c.script.as_str());
            }
            _ => {}
        }
    }
    format!("+{added} ~{} -{removed} scripts", changed.len())
}

/// Changes and errors of an entry, stored as an encoded `ReloadEvent` (only those fields).
fn encode_detail(changes: &[proto::Change], errors: &[proto::ConfigError]) -> Vec<u8> {
    prost::Message::encode_to_vec(&proto::ReloadEvent {
        changes: changes.to_vec(),
        errors: errors.to_vec(),
        ..Default::default()
    })
}

const ENTRY_COLUMNS: &str = "version, attempt_id, time_ms, source, rollback_from, uid, result, \
                             summary, message, hash, detail";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(proto::HistoryEntry, Vec<u8>)> {
    Ok((
        proto::HistoryEntry {
            version: row.get::<_, Option<u64>>(0)?.unwrap_or(0),
            attempt_id: row.get(1)?,
            time_ms: row.get(2)?,
            source: row.get(3)?,
            rollback_from: row.get::<_, Option<u64>>(4)?.unwrap_or(0),
            uid: row.get(5)?,
            result: row.get(6)?,
            summary: row.get(7)?,
            message: row.get(8)?,
            hash: row.get(9)?,
            errors: Vec::new(),
            changes: Vec::new(),
        },
        row.get(10)?,
    ))
}

fn finish(
    (mut entry, detail): (proto::HistoryEntry, Vec<u8>),
) -> Result<proto::HistoryEntry, HistoryError> {
    let detail: proto::ReloadEvent = prost::Message::decode(detail.as_slice())?;
    entry.changes = detail.changes;
    entry.errors = detail.errors;
    Ok(entry)
}

impl History {
    /// Opens (creating) `state_dir/history.db`.
    pub fn open(state_dir: &Path, limit: u32) -> Result<Self, HistoryError> {
        let conn = Connection::open(state_dir.join("history.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a committed record survives a crash or kill -9 of the daemon.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            limit: limit.max(1),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest applied version: number and hash.
    pub fn latest(&self) -> Result<Option<(u64, String)>, HistoryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT version, hash FROM entries WHERE version IS NOT NULL ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The highest attempt id recorded, so attempt ids keep growing across restarts.
    pub fn max_attempt(&self) -> Result<u64, HistoryError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(attempt_id), 0) FROM entries",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records an applied version with its files; prunes old versions beyond the limit
    /// (never `version` itself, which is running now).
    pub fn record_version(
        &self,
        version: u64,
        source: &ConfigSource,
        rec: &Record<'_>,
    ) -> Result<(), HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
            ),
            params![
                version,
                rec.attempt_id,
                crate::now_ms(),
                rec.source,
                rec.rollback_from,
                rec.uid,
                rec.result,
                summary(rec.changes),
                rec.message,
                source.hash(),
                encode_detail(rec.changes, rec.errors),
            ],
        )?;
        for (i, f) in source.files.iter().enumerate() {
            tx.execute(
                "INSERT INTO files (version, idx, name, content) VALUES (?1, ?2, ?3, ?4)",
                params![version, i as i64, f.name, f.content],
            )?;
        }
        let cutoff = version.saturating_sub(u64::from(self.limit));
        if cutoff > 0 {
            tx.execute("DELETE FROM files WHERE version <= ?1", params![cutoff])?;
            tx.execute(
                "DELETE FROM entries WHERE version IS NOT NULL AND version <= ?1",
                params![cutoff],
            )?;
            // Refused attempts are kept in proportion: the newest `limit * 10`.
            tx.execute(
                "DELETE FROM entries WHERE version IS NULL AND id NOT IN \
                 (SELECT id FROM entries WHERE version IS NULL ORDER BY id DESC LIMIT ?1)",
                params![u64::from(self.limit) * 10],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a refused attempt (rejected, or failed and rolled back).
    pub fn record_attempt(&self, rec: &Record<'_>) -> Result<(), HistoryError> {
        self.conn().execute(
            &format!(
                "INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (NULL,?1,?2,?3,?4,?5,?6,?7,?8,'',?9)"
            ),
            params![
                rec.attempt_id,
                crate::now_ms(),
                rec.source,
                rec.rollback_from,
                rec.uid,
                rec.result,
                summary(rec.changes),
                rec.message,
                encode_detail(rec.changes, rec.errors),
            ],
        )?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<proto::HistoryEntry>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit], entry_from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// One version: its entry and files; `None` if unknown (or pruned).
    pub fn version(
        &self,
        version: u64,
    ) -> Result<Option<(proto::HistoryEntry, Vec<ConfigFile>)>, HistoryError> {
        let conn = self.conn();
        let entry = conn
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE version = ?1"),
                params![version],
                entry_from_row,
            )
            .optional()?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare("SELECT name, content FROM files WHERE version = ?1 ORDER BY idx")?;
        let files = stmt
            .query_map(params![version], |r| {
                Ok(ConfigFile {
                    name: r.get(0)?,
                    content: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some((finish(entry)?, files)))
    }

    /// The newest applied version older than `version`.
    pub fn previous(&self, version: u64) -> Result<Option<u64>, HistoryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT version FROM entries WHERE version IS NOT NULL AND version < ?1 \
                 ORDER BY version DESC LIMIT 1",
                params![version],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> ConfigSource {
        ConfigSource {
            main: "/etc/s/scriptd.yaml".into(),
            files: vec![ConfigFile {
                name: "scriptd.yaml".into(),
                content: text.into(),
            }],
        }
    }

    fn rec<'a>(changes: &'a [proto::Change]) -> Record<'a> {
        Record {
            attempt_id: 1,
            source: "ctl",
            rollback_from: None,
            uid: Some(1000),
            result: "applied",
            message: "",
            changes,
            errors: &[],
        }
    }

    #[test]
    fn records_lists_and_prunes() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = History::open(dir.path(), 2)?;
        assert_eq!(h.latest()?, None);
        let change = proto::Change {
            script: "a".into(),
            field: "*".into(),
            new_value: Some("x".into()),
            ..Default::default()
        };
        for v in 1..=3 {
            h.record_version(
                v,
                &source(&format!("v{v}")),
                &rec(std::slice::from_ref(&change)),
            )?;
        }
        h.record_attempt(&Record {
            result: "rejected",
            message: "bad",
            ..rec(&[])
        })?;
        let list = h.list(10)?;
        assert_eq!(
            list.len(),
            3,
            "version 1 pruned (limit 2), the attempt kept"
        );
        assert_eq!(list[0].result, "rejected");
        assert_eq!(list[1].version, 3);
        assert_eq!(list[1].summary, "+1 ~0 -0 scripts");
        assert_eq!(list[1].uid, Some(1000));
        assert!(h.version(1)?.is_none());
        let (entry, files) = h.version(3)?.expect("version 3");
        assert_eq!(entry.hash, source("v3").hash());
        assert_eq!(files[0].content, "v3");
        assert_eq!(h.previous(3)?, Some(2));
        assert_eq!(h.latest()?.map(|l| l.0), Some(3));
        Ok(())
    }
}
