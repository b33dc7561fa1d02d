//! The SQLite side of the history: schema (versioned with `PRAGMA user_version`, brought up
//! to date by [`MIGRATIONS`]), file modes, and every query. Blocking: only the history's
//! own thread ([`super::History`]) holds a [`Store`].
//!
//! The database (WAL) survives a crash or `kill -9` of the daemon at any moment: each record
//! is one transaction. The files hold the full config text (`env` values included), so
//! `state_dir` is created 0700 and the database files are 0600.

use super::record::{Action, ActionResult, Record, ResultKind, Source};
use super::HistoryError;
use rusqlite::{params, Connection, OptionalExtension};
use scriptd_common::config::{ConfigFile, ConfigSource};
use scriptd_common::proto;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Name of the database file under `state_dir`.
const DB_FILE: &str = "history.db";
/// SQLite's companion files of a WAL database.
const DB_COMPANIONS: [&str; 2] = ["history.db-wal", "history.db-shm"];

/// The history store: one SQLite connection, owned by the history thread.
pub struct Store {
    conn: Connection,
    limit: u32,
}

/// Schema version 1: versions and attempts, their files, control actions. A database from
/// before schemas were versioned has exactly these tables and `user_version` 0.
const SCHEMA_V1: &str = "
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
CREATE TABLE IF NOT EXISTS actions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms  INTEGER NOT NULL,
    uid      INTEGER,
    action   TEXT NOT NULL,
    script   TEXT NOT NULL,
    result   TEXT NOT NULL,
    message  TEXT NOT NULL
);
";

/// The schema migrations, in order: entry `i` brings a database from version `i` to `i + 1`,
/// in one transaction with the new `user_version`. Append, never edit: a released entry has
/// already run on someone's database.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

/// Schema version 2: the client certificate name of a remote caller (`daemon.listen`), who
/// has no uid.
const SCHEMA_V2: &str = "
ALTER TABLE entries ADD COLUMN cert TEXT;
ALTER TABLE actions ADD COLUMN cert TEXT;
";

/// Schema version 3: the etcd mod revision of the value a version or attempt came from
/// (`daemon.source.etcd`); NULL otherwise.
const SCHEMA_V3: &str = "ALTER TABLE entries ADD COLUMN etcd_revision INTEGER;";

/// The schema version this daemon writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database's schema up to [`SCHEMA_VERSION`]. An unversioned database that
/// already has the version 1 tables is version 1. A newer schema is refused: an older daemon
/// must not write what it does not understand.
fn migrate(conn: &mut Connection) -> Result<(), HistoryError> {
    let stored: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let unversioned_v1 = stored == 0
        && conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
    let current = if unversioned_v1 { 1 } else { stored };
    if current > SCHEMA_VERSION {
        return Err(HistoryError::NewerSchema {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION && stored == SCHEMA_VERSION {
        return Ok(());
    }
    let pending = &MIGRATIONS[current as usize..];
    let tx = conn.transaction()?;
    for migration in pending {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    match tx.commit() {
        Ok(()) => Ok(()),
        // Only the stamp of an unversioned database was missing: it is recognised again
        // next time (a full disk must not keep the daemon from starting).
        Err(e) if pending.is_empty() => {
            tracing::warn!(
                "cannot mark the history database as schema version {SCHEMA_VERSION}: {e}"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

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
                             summary, message, hash, detail, cert, etcd_revision";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(proto::HistoryEntry, Vec<u8>)> {
    Ok((
        proto::HistoryEntry {
            version: row.get::<_, Option<u64>>(0)?.unwrap_or(0),
            attempt_id: row.get(1)?,
            time_ms: row.get(2)?,
            source: row.get::<_, Source>(3)?.as_str().into(),
            rollback_from: row.get::<_, Option<u64>>(4)?.unwrap_or(0),
            uid: row.get(5)?,
            result: row.get::<_, ResultKind>(6)?.as_str().into(),
            summary: row.get(7)?,
            message: row.get(8)?,
            hash: row.get(9)?,
            errors: Vec::new(),
            changes: Vec::new(),
            user: String::new(), // named by the server
            cert: row.get::<_, Option<String>>(11)?.unwrap_or_default(),
            etcd_revision: row.get::<_, Option<i64>>(12)?.unwrap_or(0),
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `state_dir` (and missing parents) 0700 if it does not exist; warns when an
/// existing one can be entered or read by group or others.
fn prepare_state_dir(dir: &Path) -> Result<(), HistoryError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let mode = std::fs::metadata(dir)
        .map_err(io_err(dir))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "state_dir {} is accessible by group or others (mode {mode:o}); it holds the \
             history with the full text of every config version, env values included: run \
             `chmod 700 {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Makes `path` mode 0600, creating it empty (0600 whatever the umask) if `create`. A
/// symlink there is not followed (an error), and the mode is set on what was opened.
fn restrict(path: &Path, create: bool) -> Result<(), HistoryError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .create(create)
        .write(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_err(path))?,
    };
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))
}

/// Opens the database in WAL mode. `exclusive`: in exclusive locking mode, whose WAL index
/// lives in the daemon's memory instead of the `-shm` file: reading then needs no space on
/// a full disk.
fn connect(path: &Path, exclusive: bool) -> Result<Connection, HistoryError> {
    // Not through a symlink (SQLite opens the path itself).
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    if exclusive {
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a committed record survives a crash or kill -9 of the daemon.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Whether SQLite failed for want of space (the disk, or the `-shm` index on it).
fn no_room(e: &HistoryError) -> bool {
    matches!(e, HistoryError::Sql(rusqlite::Error::SqliteFailure(f, _))
        if f.code == rusqlite::ErrorCode::DiskFull
            || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE)
}

impl Store {
    /// Opens (creating) `state_dir/history.db`: `state_dir` 0700 if the daemon creates it,
    /// the database and its WAL files 0600; the schema brought up to date.
    pub fn open(state_dir: &Path, limit: u32) -> Result<Self, HistoryError> {
        prepare_state_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        // Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the
        // mode of the database file. An older, wider database is narrowed here too.
        restrict(&path, true)?;
        for companion in DB_COMPANIONS {
            restrict(&state_dir.join(companion), false)?;
        }
        let mut conn = match connect(&path, false) {
            Ok(conn) => conn,
            Err(e) if no_room(&e) => {
                tracing::warn!(
                    "{}: no room for the database's shared-memory index ({e}); opened in \
                     exclusive locking mode instead (no other process can read it while the \
                     daemon runs); free some space in state_dir",
                    path.display()
                );
                connect(&path, true)?
            }
            Err(e) => return Err(e),
        };
        migrate(&mut conn)?;
        Ok(Self {
            conn,
            limit: limit.max(1),
        })
    }

    /// How many refused attempts, and how many control actions, are kept: ten per version.
    fn audit_limit(&self) -> u64 {
        u64::from(self.limit) * 10
    }

    /// The newest applied version: number and hash.
    pub fn latest(&self) -> Result<Option<(u64, String)>, HistoryError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, hash FROM entries WHERE version IS NOT NULL ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The highest attempt id recorded, so attempt ids keep growing across restarts.
    pub fn max_attempt(&self) -> Result<u64, HistoryError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(attempt_id), 0) FROM entries",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records an applied version with its files; prunes old versions beyond the limit
    /// (never `version` itself, which is running now).
    pub fn record_version(
        &mut self,
        version: u64,
        source: &ConfigSource,
        rec: &Record,
    ) -> Result<(), HistoryError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO entries ({ENTRY_COLUMNS}) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
            ),
            params![
                version,
                rec.attempt_id,
                rec.time_ms,
                rec.source,
                rec.rollback_from,
                rec.uid,
                rec.result,
                summary(&rec.changes),
                rec.message,
                source.hash(),
                encode_detail(&rec.changes, &rec.errors),
                rec.cert,
                rec.etcd_revision,
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
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a refused attempt (rejected, or failed and rolled back); keeps the newest
    /// ten per version of `history_limit`.
    pub fn record_attempt(&mut self, rec: &Record) -> Result<(), HistoryError> {
        let audit_limit = self.audit_limit();
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO entries ({ENTRY_COLUMNS}) \
                 VALUES (NULL,?1,?2,?3,?4,?5,?6,?7,?8,'',?9,?10,?11)"
            ),
            params![
                rec.attempt_id,
                rec.time_ms,
                rec.source,
                rec.rollback_from,
                rec.uid,
                rec.result,
                summary(&rec.changes),
                rec.message,
                encode_detail(&rec.changes, &rec.errors),
                rec.cert,
                rec.etcd_revision,
            ],
        )?;
        tx.execute(
            "DELETE FROM entries WHERE version IS NULL AND id NOT IN \
             (SELECT id FROM entries WHERE version IS NULL ORDER BY id DESC LIMIT ?1)",
            params![audit_limit],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a control action; keeps the newest ten per version of `history_limit`.
    pub fn record_action(&mut self, a: &Action) -> Result<(), HistoryError> {
        let audit_limit = self.audit_limit();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO actions (time_ms, uid, action, script, result, message, cert) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                crate::now_ms(),
                a.uid,
                a.action,
                a.script,
                a.result,
                a.message,
                a.cert
            ],
        )?;
        tx.execute(
            "DELETE FROM actions WHERE id NOT IN \
             (SELECT id FROM actions ORDER BY id DESC LIMIT ?1)",
            params![audit_limit],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` control actions, newest first.
    pub fn actions(&self, limit: u32) -> Result<Vec<proto::ActionEntry>, HistoryError> {
        let mut stmt = self.conn.prepare(
            "SELECT time_ms, uid, action, script, result, message, cert FROM actions \
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(proto::ActionEntry {
                time_ms: r.get(0)?,
                uid: r.get(1)?,
                action: r.get(2)?,
                script: r.get(3)?,
                result: r.get::<_, ActionResult>(4)?.as_str().into(),
                message: r.get(5)?,
                user: String::new(), // named by the server
                cert: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` entries, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<proto::HistoryEntry>, HistoryError> {
        let mut stmt = self.conn.prepare(&format!(
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
        let conn = &self.conn;
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
            .conn
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

    use crate::history::record::test_source as source;

    #[test]
    fn a_remote_callers_certificate_name_is_kept() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = Store::open(dir.path(), 10)?;
        let remote = Record {
            uid: None,
            cert: Some("deploy-bot".into()),
            ..rec(&[])
        };
        h.record_version(1, &source("v1"), &remote)?;
        h.record_attempt(&Record {
            attempt_id: 2,
            result: ResultKind::Rejected,
            ..remote.clone()
        })?;
        h.record_version(3, &source("v3"), &rec(&[]))?;
        h.record_action(&Action {
            uid: None,
            cert: Some("deploy-bot".into()),
            action: "restart".into(),
            script: "web".into(),
            result: ActionResult::Ok,
            message: String::new(),
        })?;
        let certs: Vec<String> = h.list(10)?.into_iter().map(|e| e.cert).collect();
        assert_eq!(certs, ["", "deploy-bot", "deploy-bot"], "newest first");
        assert_eq!(h.actions(10)?[0].cert, "deploy-bot");
        Ok(())
    }

    fn rec(changes: &[proto::Change]) -> Record {
        Record {
            attempt_id: 1,
            time_ms: 1,
            source: Source::Ctl,
            rollback_from: None,
            uid: Some(1000),
            cert: None,
            result: ResultKind::Applied,
            message: String::new(),
            changes: changes.to_vec(),
            errors: Vec::new(),
            etcd_revision: None,
        }
    }

    #[test]
    fn records_lists_and_prunes() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = Store::open(dir.path(), 2)?;
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
            result: ResultKind::Rejected,
            message: "bad".into(),
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
        h.record_version(
            4,
            &source("v4"),
            &Record {
                etcd_revision: Some(17),
                ..rec(&[])
            },
        )?;
        assert_eq!(h.version(4)?.expect("version 4").0.etcd_revision, 17);
        assert_eq!(h.version(3)?.expect("version 3").0.etcd_revision, 0);
        assert_eq!(h.latest()?.map(|l| l.0), Some(4));
        Ok(())
    }

    #[test]
    fn refused_attempts_and_actions_are_pruned_on_their_own() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Limit 2: at most 20 refused attempts and 20 actions, with no new version at all.
        let mut h = Store::open(dir.path(), 2)?;
        h.record_version(1, &source("v1"), &rec(&[]))?;
        for i in 0..25 {
            h.record_attempt(&Record {
                attempt_id: i,
                result: ResultKind::Rejected,
                ..rec(&[])
            })?;
            h.record_action(&Action {
                uid: Some(0),
                cert: None,
                action: "run".into(),
                script: format!("s{i}"),
                result: ActionResult::Ok,
                message: "started".into(),
            })?;
        }
        let list = h.list(1000)?;
        let attempts: Vec<u64> = list
            .iter()
            .filter(|e| e.version == 0)
            .map(|e| e.attempt_id)
            .collect();
        assert_eq!(
            attempts,
            (5..25).rev().collect::<Vec<_>>(),
            "newest 20 kept"
        );
        assert!(list.iter().any(|e| e.version == 1), "the version stays");
        let actions = h.actions(1000)?;
        assert_eq!(actions.len(), 20);
        assert_eq!(actions[0].script, "s24", "newest first");
        assert_eq!(actions[19].script, "s5");
        assert_eq!(actions[0].uid, Some(0));
        assert_eq!(
            (actions[0].action.as_str(), actions[0].result.as_str()),
            ("run", "ok")
        );
        Ok(())
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn state_dir_and_database_files_are_private() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/state");
        let mut h = Store::open(&state, 5)?;
        h.record_version(1, &source("secret"), &rec(&[]))?;
        assert_eq!(
            mode(&state),
            0o700,
            "a state_dir the daemon creates is 0700"
        );
        for name in [DB_FILE].iter().chain(&DB_COMPANIONS) {
            let p = state.join(name);
            assert!(p.exists(), "{name} exists while the store is open");
            assert_eq!(mode(&p), 0o600, "{name}");
        }
        drop(h);

        // An existing wider database is narrowed; an existing state_dir keeps its mode.
        let wide = dir.path().join("wide");
        std::fs::create_dir(&wide).expect("mkdir");
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(wide.join(DB_FILE), "").expect("touch");
        std::fs::set_permissions(wide.join(DB_FILE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let mut h = Store::open(&wide, 5)?;
        h.record_version(1, &source("secret"), &rec(&[]))?;
        assert_eq!(mode(&wide.join(DB_FILE)), 0o600);
        assert_eq!(mode(&wide.join(DB_COMPANIONS[0])), 0o600);
        assert_eq!(mode(&wide), 0o755, "only warned about, not changed");
        Ok(())
    }

    fn user_version(path: &Path) -> u32 {
        Connection::open(path)
            .expect("open")
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version")
    }

    #[test]
    fn an_unversioned_database_is_version_1_and_a_newer_one_is_refused() -> Result<(), HistoryError>
    {
        let dir = tempfile::tempdir().expect("tempdir");
        // A database as written before schemas were versioned: the tables, user_version 0.
        let old = Connection::open(dir.path().join(DB_FILE))?;
        old.execute_batch(SCHEMA_V1)?;
        old.execute(
            "INSERT INTO entries (version, attempt_id, time_ms, source, rollback_from, uid, \
             result, summary, message, hash, detail) \
             VALUES (1, 0, 5, 'startup', NULL, NULL, 'applied', '+0 ~0 -0 scripts', '', 'h', x'')",
            [],
        )?;
        drop(old);
        assert_eq!(user_version(&dir.path().join(DB_FILE)), 0);
        let h = Store::open(dir.path(), 5)?;
        assert_eq!(
            h.latest()?,
            Some((1, "h".to_owned())),
            "its records are kept"
        );
        assert_eq!(h.list(10)?[0].source, "startup");
        assert_eq!(
            h.list(10)?[0].etcd_revision,
            0,
            "no revision before version 2"
        );
        drop(h);
        assert_eq!(user_version(&dir.path().join(DB_FILE)), SCHEMA_VERSION);

        // A fresh database gets the current version.
        let fresh = tempfile::tempdir().expect("tempdir");
        drop(Store::open(fresh.path(), 5)?);
        assert_eq!(user_version(&fresh.path().join(DB_FILE)), SCHEMA_VERSION);

        // One from a newer daemon is refused, and left as it is.
        let newer = Connection::open(fresh.path().join(DB_FILE))?;
        newer.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        drop(newer);
        match Store::open(fresh.path(), 5) {
            Err(e @ HistoryError::NewerSchema { .. }) => {
                let text = e.to_string();
                assert!(text.contains("newer scriptd"), "{text}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
        assert_eq!(
            user_version(&fresh.path().join(DB_FILE)),
            SCHEMA_VERSION + 1
        );
        Ok(())
    }

    #[test]
    fn a_stored_word_this_daemon_does_not_know_is_an_error_not_a_panic() -> Result<(), HistoryError>
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = Store::open(dir.path(), 5)?;
        h.record_version(1, &source("v1"), &rec(&[]))?;
        h.conn
            .execute("UPDATE entries SET result = 'restored'", [])?;
        let e = h.list(10).expect_err("unknown result");
        assert!(e.to_string().contains("unknown result \"restored\""), "{e}");
        Ok(())
    }
}
