//! What the history records, as types: the trigger of a version or attempt ([`Source`]),
//! how it ended ([`ResultKind`]), how a control action ended ([`ActionResult`]), and the
//! records themselves. Spelled as strings only at the edges (SQLite, the gRPC messages), by
//! `as_str` and `FromStr`.

use scriptd_common::proto;

/// A stored word that names no known value: the database was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?} in the history")]
pub struct UnknownWord {
    /// Which kind of word (`source`, `result`).
    pub what: &'static str,
    /// The word found.
    pub found: String,
}

/// Declares a word enum (kebab-case spellings by `strum`) with `as_str`, `Display` and
/// `FromStr`, and its SQLite conversions.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident,)+ }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString,
            strum::VariantArray,
        )]
        #[strum(serialize_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The spelling in the history, events and `ctl` output.
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// Parses a stored spelling.
            pub fn parse(s: &str) -> Result<Self, UnknownWord> {
                s.parse().map_err(|_| UnknownWord { what: $what, found: s.to_owned() })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                Self::parse(value.as_str()?)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

words! {
    /// What started a version or an attempt.
    Source, "source" {
        /// The daemon started on files that differ from the last recorded version.
        Startup,
        /// The file watcher.
        Watch,
        /// `ctl reload`.
        Ctl,
        /// SIGHUP.
        Signal,
        /// `ctl rollback`.
        Rollback,
        /// A new value of the etcd key (`daemon.source.etcd`).
        Etcd,
        /// The daemon's own rollback of a version that was not verified in time
        /// (`reload.on_failure: rollback`).
        AutoRollback,
    }
}

words! {
    /// How a reload attempt (or dry run) ended.
    ResultKind, "result" {
        /// The new version is live (dry run: would be).
        Applied,
        /// The files are the running version: nothing to do (recorded only for a rollback
        /// that rewrote, or failed to rewrite, the files on disk).
        Unchanged,
        /// Invalid, a change needs a daemon restart, or the plan id moved: nothing touched.
        Rejected,
        /// Applying failed and the previous version was put back.
        FailedRolledBack,
    }
}

words! {
    /// How a control action (start, stop, restart, run) ended.
    ActionResult, "action result" {
        /// Done.
        Ok,
        /// No such script.
        NotFound,
        /// The script's state refuses it (e.g. start of a disabled script).
        Refused,
        /// It could not be carried out (the program could not be started).
        Failed,
        /// The request was malformed (no such action).
        Invalid,
        /// Anything else (the daemon is shutting down).
        Error,
    }
}

/// One version or attempt to append. Owned: it travels to the history's thread.
#[derive(Debug, Clone)]
pub struct Record {
    /// Attempt id (0 for startup).
    pub attempt_id: u64,
    /// When it happened (Unix ms): a record written late keeps its time.
    pub time_ms: i64,
    /// Trigger.
    pub source: Source,
    /// For rollbacks: the version restored.
    pub rollback_from: Option<u64>,
    /// Peer uid of the ctl user.
    pub uid: Option<u32>,
    /// The client certificate name of a remote caller.
    pub cert: Option<String>,
    /// How it ended.
    pub result: ResultKind,
    /// Why refused, or a warning.
    pub message: String,
    /// Changes.
    pub changes: Vec<proto::Change>,
    /// Validation errors.
    pub errors: Vec<proto::ConfigError>,
    /// The etcd mod revision of the value the config came from (etcd mode).
    pub etcd_revision: Option<i64>,
}

impl Record {
    /// The record of a startup version: applied, nobody asked, no changes listed;
    /// `etcd_revision`: the value's, when the config was read from etcd.
    pub fn startup(time_ms: i64, etcd_revision: Option<i64>) -> Self {
        Self {
            attempt_id: 0,
            time_ms,
            source: Source::Startup,
            rollback_from: None,
            uid: None,
            cert: None,
            result: ResultKind::Applied,
            message: String::new(),
            changes: Vec::new(),
            errors: Vec::new(),
            etcd_revision,
        }
    }
}

/// A one-file config source for the history's unit tests.
#[cfg(test)]
pub(crate) fn test_source(text: &str) -> scriptd_common::config::ConfigSource {
    scriptd_common::config::ConfigSource {
        main: "/etc/s/scriptd.yaml".into(),
        files: vec![scriptd_common::config::ConfigFile {
            name: "scriptd.yaml".into(),
            content: text.into(),
        }],
    }
}

/// One control action to append.
#[derive(Debug, Clone)]
pub struct Action {
    /// Peer uid of the ctl user.
    pub uid: Option<u32>,
    /// The client certificate name of a remote caller.
    pub cert: Option<String>,
    /// start, stop, restart, run (or `action N` for an unknown one).
    pub action: String,
    /// Script named in the request.
    pub script: String,
    /// How it ended.
    pub result: ActionResult,
    /// The response message or the error.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_unknown_words_are_errors() {
        use strum::VariantArray;
        let spelled = |words: &[&str]| words.join(" ");
        let sources: Vec<_> = Source::VARIANTS.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            spelled(&sources),
            "startup watch ctl signal rollback etcd auto-rollback"
        );
        let results: Vec<_> = ResultKind::VARIANTS.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            spelled(&results),
            "applied unchanged rejected failed-rolled-back"
        );
        let actions: Vec<_> = ActionResult::VARIANTS.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            spelled(&actions),
            "ok not-found refused failed invalid error"
        );
        for s in Source::VARIANTS {
            assert_eq!(Source::parse(s.as_str()), Ok(*s));
        }
        for r in ResultKind::VARIANTS {
            assert_eq!(ResultKind::parse(r.as_str()), Ok(*r));
        }
        for a in ActionResult::VARIANTS {
            assert_eq!(ActionResult::parse(a.as_str()), Ok(*a));
        }
        let e = ResultKind::parse("restored").expect_err("unknown");
        assert_eq!(e.to_string(), "unknown result \"restored\" in the history");
        assert!(Source::parse("Watch").is_err(), "spellings are exact");
    }
}
