//! How the files on disk relate to the running version (`ctl status`: in sync, changed, or
//! invalid with the first error), computed off the async runtime.
//!
//! When the watcher runs, every save ends in a reload, and the coordinator checks the disk
//! after each one (on a blocking thread) and publishes the result: `Status` only compares
//! hashes. Without the watcher nobody sees a save, so `Status` checks the disk itself, on a
//! blocking thread. Either way a set of files is validated at most once: verdicts are kept
//! by hash, and the coordinator hands over the ones it reached itself.

use scriptd_common::config::{self, ConfigErrors};
use scriptd_common::proto::ConfigSync;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Whether a set of files validates: `Err` holds the first error.
pub type Verdict = Result<(), String>;

/// The first error of a failed read or validation, as `ctl status` shows it.
pub fn first_error(errors: &ConfigErrors) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

/// What was found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCheck {
    /// Hash of the files; `None` when they could not be read.
    hash: Option<String>,
    /// Whether they validate (files that are the running version do).
    verdict: Verdict,
}

/// How the files on disk relate to the running version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// They hash the same as the running version.
    InSync,
    /// They differ and are valid, but are not applied (yet, or refused).
    Changed,
    /// They do not read or validate: the first error.
    Invalid(String),
}

impl DiskState {
    /// As the `Status` response has it.
    pub fn to_proto(&self) -> (ConfigSync, String) {
        match self {
            Self::InSync => (ConfigSync::InSync, String::new()),
            Self::Changed => (ConfigSync::Changed, String::new()),
            Self::Invalid(e) => (ConfigSync::Invalid, e.clone()),
        }
    }
}

impl DiskCheck {
    /// The files of the running version: in sync.
    pub fn running(hash: &str) -> Self {
        Self {
            hash: Some(hash.to_owned()),
            verdict: Ok(()),
        }
    }

    /// These files against the running version's hash.
    pub fn against(&self, running_hash: &str) -> DiskState {
        match (&self.hash, &self.verdict) {
            (Some(h), _) if h == running_hash => DiskState::InSync,
            (_, Ok(())) => DiskState::Changed,
            (_, Err(e)) => DiskState::Invalid(e.clone()),
        }
    }
}

/// The disk state's keeper, shared by the coordinator and the gRPC service.
pub struct DiskSync {
    main: PathBuf,
    /// The last check, when the watcher keeps it current; `None`: checked on demand.
    published: Option<watch::Sender<DiskCheck>>,
    /// The last verdict reached on files that are not the running version, by hash.
    verdicts: Mutex<Option<(String, Verdict)>>,
}

impl DiskSync {
    /// The keeper for the config at `main`, starting in sync with `running_hash`;
    /// `published`: whether the watcher runs (every save then ends in a reload, after which
    /// the coordinator refreshes the state).
    pub fn new(main: PathBuf, running_hash: &str, published: bool) -> Arc<Self> {
        Arc::new(Self {
            main,
            published: published.then(|| watch::Sender::new(DiskCheck::running(running_hash))),
            verdicts: Mutex::new(None),
        })
    }

    /// Keeps the verdict the coordinator reached on the files hashing `hash`.
    pub fn remember(&self, hash: &str, verdict: Verdict) {
        *self.verdicts.lock().unwrap_or_else(|p| p.into_inner()) = Some((hash.to_owned(), verdict));
    }

    fn known(&self, hash: &str) -> Option<Verdict> {
        match &*self.verdicts.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((h, v)) if h == hash => Some(v.clone()),
            _ => None,
        }
    }

    /// Reads the files on disk and judges them (blocking: file I/O, the permission checks'
    /// user database lookups, validation).
    fn check(&self, running_hash: &str) -> DiskCheck {
        let source = match config::read_source(&self.main) {
            Ok(s) => s,
            Err(e) => {
                return DiskCheck {
                    hash: None,
                    verdict: Err(first_error(&e)),
                }
            }
        };
        let hash = source.hash();
        if hash == running_hash {
            return DiskCheck::running(&hash);
        }
        let verdict = match self.known(&hash) {
            Some(v) => v,
            None => {
                let v = config::secure_source(source)
                    .and_then(|s| config::validate(&s))
                    .map(drop)
                    .map_err(|e| first_error(&e));
                self.remember(&hash, v.clone());
                v
            }
        };
        DiskCheck {
            hash: Some(hash),
            verdict,
        }
    }

    /// [`Self::check`] on a blocking thread.
    async fn check_off_runtime(self: &Arc<Self>, running_hash: &str) -> DiskCheck {
        let (this, running) = (self.clone(), running_hash.to_owned());
        tokio::task::spawn_blocking(move || this.check(&running))
            .await
            .unwrap_or_else(|e| DiskCheck {
                hash: None,
                verdict: Err(format!("checking the files on disk failed: {e}")),
            })
    }

    /// After a reload: checks the disk again and publishes it (nothing to do when `Status`
    /// checks on demand).
    pub async fn refresh(self: &Arc<Self>, running_hash: &str) {
        if let Some(published) = &self.published {
            let check = self.check_off_runtime(running_hash).await;
            published.send_replace(check);
        }
    }

    /// How the files on disk relate to the version hashing `running_hash`.
    pub async fn state(self: &Arc<Self>, running_hash: &str) -> DiskState {
        match &self.published {
            Some(published) => published.borrow().against(running_hash),
            None => self
                .check_off_runtime(running_hash)
                .await
                .against(running_hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_against_the_running_hash() {
        let cases = [
            (Some("a"), Ok(()), DiskState::InSync),
            (Some("a"), Err("x".to_owned()), DiskState::InSync),
            (Some("b"), Ok(()), DiskState::Changed),
            (
                Some("b"),
                Err("x".to_owned()),
                DiskState::Invalid("x".into()),
            ),
            (
                None,
                Err("gone".to_owned()),
                DiskState::Invalid("gone".into()),
            ),
        ];
        for (hash, verdict, want) in cases {
            let check = DiskCheck {
                hash: hash.map(str::to_owned),
                verdict,
            };
            assert_eq!(check.against("a"), want, "{check:?}");
        }
    }

    #[tokio::test]
    async fn files_are_validated_once_per_hash_and_published_only_on_refresh() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let main = tmp.path().join("scriptd.yaml");
        std::fs::write(&main, "scripts: {}\n").expect("write");
        let running = config::read_source(&main).expect("read").hash();
        let disk = DiskSync::new(main.clone(), &running, true);
        assert_eq!(disk.state(&running).await, DiskState::InSync);

        std::fs::write(&main, "scripts: [\n").expect("write");
        assert_eq!(
            disk.state(&running).await,
            DiskState::InSync,
            "published: no file I/O until the next refresh"
        );
        disk.refresh(&running).await;
        let DiskState::Invalid(first) = disk.state(&running).await else {
            panic!("the broken file shows after a refresh");
        };
        assert!(first.contains("scriptd.yaml"), "{first}");

        // A verdict handed over by the coordinator is taken as it is.
        std::fs::write(&main, "scripts: {}\n# changed\n").expect("write");
        let hash = config::read_source(&main).expect("read").hash();
        disk.remember(&hash, Err("said the coordinator".into()));
        disk.refresh(&running).await;
        assert_eq!(
            disk.state(&running).await,
            DiskState::Invalid("said the coordinator".into())
        );
        assert_eq!(disk.state(&hash).await, DiskState::InSync);

        let on_demand = DiskSync::new(main, &running, false);
        assert_eq!(
            on_demand.state(&running).await,
            DiskState::Changed,
            "on demand, the disk is read and validated"
        );
    }
}
