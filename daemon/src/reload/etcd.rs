//! The coordinator in etcd mode (`daemon.source.etcd`): the config is the bootstrap file
//! plus the key's value, and a version that does not come from the key (a rollback, a
//! `ctl reload --file` candidate) is written to the key first, with a compare-and-swap on
//! the mod revision the caller saw running, so that a concurrent writer makes it fail and
//! nothing is applied.

use super::Candidate;
use crate::source::etcd::access::Access;
use crate::source::etcd::client::{Client, Read, Swap};
use crate::source::etcd::{connect, read_any, EtcdValue};
use scriptd_common::config::etcd::{self as cfg_etcd, EtcdSource as Settings};
use scriptd_common::config::{self, ConfigErrors, ConfigSource};

/// The etcd side of the coordinator's state.
pub struct EtcdMode {
    settings: Settings,
    access: Access,
    /// The mod revision of the value the running version holds; `None` when it did not come
    /// from the key in this daemon's life (the history's last version, run at start while
    /// etcd was away).
    pub revision: Option<i64>,
}

/// A value to write to the key before applying it.
pub struct Write {
    /// The text.
    pub value: String,
    /// The mod revision the key must still have.
    pub expected: i64,
}

impl EtcdMode {
    /// The etcd mode of `settings`, running the value of mod revision `revision`.
    pub fn new(settings: Settings, access: Access, revision: Option<i64>) -> Self {
        Self {
            settings,
            access,
            revision,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.settings.key
    }

    /// The config of `running`'s bootstrap file with `value`.
    pub fn with_value(
        &self,
        running: &ConfigSource,
        value: EtcdValue,
    ) -> Result<ConfigSource, ConfigErrors> {
        let name = cfg_etcd::value_file_name(self.key());
        let text = config::decode(&name, value.bytes)
            .map_err(|e| ConfigErrors::file(&name, e.to_string()))?;
        Ok(cfg_etcd::with_value(running, self.key(), text))
    }

    /// The config of `running`'s bootstrap file with the value a recorded version held
    /// (`files`: that version's).
    pub fn with_recorded(
        &self,
        running: &ConfigSource,
        files: &ConfigSource,
    ) -> Result<ConfigSource, ConfigErrors> {
        match cfg_etcd::value_of(files) {
            Some(value) => Ok(cfg_etcd::with_value(running, self.key(), value.to_owned())),
            None => Err(ConfigErrors::file(
                "history",
                "this version was not read from etcd (it has no value of the key): roll back \
                 to a version recorded in etcd mode",
            )),
        }
    }

    /// The config of `running`'s bootstrap file with a candidate's one file, which must be
    /// named `etcd:KEY`, or `etcd:` alone: whatever key this daemon reads (one value rolled
    /// over a fleet whose hosts each have their own key, `ctl reload --rolling --file
    /// etcd:=FILE`).
    pub fn with_candidate(
        &self,
        running: &ConfigSource,
        candidate: Candidate,
    ) -> Result<ConfigSource, ConfigErrors> {
        let name = cfg_etcd::value_file_name(self.key());
        match candidate.into_single() {
            Some((target, bytes)) if target == name || target == cfg_etcd::VALUE_FILE_PREFIX => {
                self.with_value(running, EtcdValue { bytes, revision: 0 })
            }
            _ => Err(ConfigErrors::file(
                "candidate",
                format!(
                    "the config comes from etcd: a candidate is the key's value, given as \
                     --file {name}=FILE (or --file etcd:=FILE, the key of whichever daemon \
                     it goes to)"
                ),
            )),
        }
    }

    /// The config of `running`'s bootstrap file with `value` (from the watch) or, without
    /// one (`ctl reload`, SIGHUP), with the key's value read now; and its mod revision.
    pub async fn load(
        &self,
        running: &ConfigSource,
        value: Option<EtcdValue>,
    ) -> (Result<ConfigSource, ConfigErrors>, Option<i64>) {
        let value = match value {
            Some(v) => v,
            None => match self.read().await {
                Ok(v) => v,
                Err(e) => {
                    let name = cfg_etcd::value_file_name(self.key());
                    return (Err(ConfigErrors::file(name, e)), None);
                }
            },
        };
        let revision = value.revision;
        (self.with_value(running, value), Some(revision))
    }

    /// The write a rollback or a candidate makes before it applies: `source`'s value, as
    /// of `base` (the revision running when the request arrived; else the running one).
    pub fn write_for(&self, source: &ConfigSource, base: Option<i64>) -> Option<Write> {
        cfg_etcd::value_of(source).map(|value| Write {
            value: value.to_owned(),
            expected: base.or(self.revision).unwrap_or(0),
        })
    }

    /// A connection to the first endpoint that connects, or why none does.
    async fn client(&self) -> Result<Client, String> {
        connect(&self.settings, &self.access, 0)
            .await
            .map(|(_, client)| client)
            .map_err(|e| format!("etcd is unreachable ({e})"))
    }

    /// Reads the key now (`ctl reload`, SIGHUP) from the first endpoint that answers: its
    /// value, or why not.
    pub async fn read(&self) -> Result<EtcdValue, String> {
        let key = self.key();
        match read_any(&self.settings, &self.access).await {
            Ok((
                _,
                Read {
                    value: Some((bytes, revision)),
                    ..
                },
            )) => Ok(EtcdValue { bytes, revision }),
            Ok((_, Read { value: None, .. })) => Err(format!(
                "the key {key:?} does not exist; the running version stays"
            )),
            Err(e) => Err(format!(
                "etcd is unreachable ({e}); the running version stays"
            )),
        }
    }

    /// Writes `write` to the key if its mod revision is still the expected one; returns the
    /// new mod revision, or why not (for the report).
    pub async fn swap(&self, write: Write) -> Result<i64, String> {
        let key = self.key().to_owned();
        let client = self.client().await.map_err(|e| {
            format!(
                "{e}: the key {key:?} cannot be written, and nothing was applied (in etcd \
                 mode a version runs only once the key holds it)"
            )
        })?;
        match client
            .swap(&key, write.expected, write.value.into_bytes())
            .await
        {
            Ok(Swap::Written(revision)) => Ok(revision),
            Ok(Swap::Moved) => Err(format!(
                "the key {key:?} changed since revision {} (another writer); nothing was \
                 applied: look at `ctl history` and try again",
                write.expected
            )),
            Err(e) => Err(format!(
                "the key {key:?} could not be written ({e}); nothing was applied"
            )),
        }
    }
}
