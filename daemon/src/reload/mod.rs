//! Reloads: the coordinator, the one owner of the running config ([`coordinator`]); applying
//! a plan and putting the previous version back when that fails ([`apply`]); a caller's
//! candidate files ([`candidate`]); writing files into place, a rolled-back version's or a
//! candidate's ([`write_back`]); and how the files on disk relate to the running version
//! ([`disk`]).
//!
//! Every trigger (watcher, `ctl reload`, SIGHUP, dry runs, rollbacks) becomes a [`Request`]
//! on one queue, handled one at a time, in order: read → validate → diff → classify →
//! reject or apply → record → publish. Either the whole new version runs or the old one
//! does. File I/O and validation run on blocking threads, the history on its own.

pub mod apply;
pub mod candidate;
pub mod coordinator;
pub mod disk;
pub mod etcd;
pub mod verify;
pub mod write_back;

pub use crate::history::{ResultKind, Source};
pub use candidate::Candidate;
pub use coordinator::Coordinator;

use crate::runner::ScriptHandle;
use scriptd_common::config::{self, Config, ConfigErrors, ConfigSource};
use scriptd_common::diff::Change;
use scriptd_common::plan_id::PlanId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A reload (or dry run) to perform.
pub struct Request {
    /// Trigger.
    pub source: Source,
    /// Only a preview.
    pub dry_run: bool,
    /// Apply only if the plan id still matches.
    pub plan_id: Option<PlanId>,
    /// Apply the files of this recorded version instead of the files on disk (rollback);
    /// `Some(0)` means the version before the running one.
    pub target: Option<u64>,
    /// The files on disk with these in place of (or beside) the files of those names; unless
    /// a dry run, written into place before the apply.
    pub candidate: Option<Candidate>,
    /// Uid of the ctl user who asked.
    pub uid: Option<u32>,
    /// The client certificate name of a remote caller who asked.
    pub cert: Option<String>,
    /// A new value of the etcd key (etcd mode): the config is the bootstrap file with it.
    pub etcd: Option<crate::source::etcd::EtcdValue>,
    /// Etcd mode: the mod revision of the value running when the request arrived; a
    /// rollback or candidate is written to the key only if it still has it.
    pub etcd_base: Option<i64>,
    /// The files as the watcher validated them while its debounce window was open: used
    /// when the files read for the attempt hash the same, which takes the validation off
    /// the path from a save to the change running.
    pub prevalidated: Option<Prevalidated>,
    /// Where the result goes.
    pub reply: Option<oneshot::Sender<Result<Report, RequestError>>>,
    /// When it began: the watcher's first event of a save, else when it was made. The
    /// reload duration metric counts from here.
    pub since: std::time::Instant,
    /// Answer only once the applied version was verified (`ctl reload --wait`).
    pub wait: bool,
    /// Why the attempt was made, recorded as its message (an automatic rollback: the
    /// failed verification).
    pub note: Option<String>,
}

impl Request {
    /// A request from `source` for the files on disk, no reply wanted.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            dry_run: false,
            plan_id: None,
            target: None,
            candidate: None,
            uid: None,
            cert: None,
            etcd: None,
            etcd_base: None,
            prevalidated: None,
            reply: None,
            since: std::time::Instant::now(),
            wait: false,
            note: None,
        }
    }
}

/// A request that names something that does not exist: no attempt was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A rollback to a version the history does not have.
    #[error("{0}")]
    NoSuchVersion(String),
}

/// A config validated ahead of its reload (see [`Request::prevalidated`]).
#[derive(Debug)]
pub struct Prevalidated {
    /// The files validated.
    source: ConfigSource,
    /// Their hash.
    hash: String,
    config: Config,
}

/// The validation cache ([`config::ValidationCache`]) the daemon's start, the watcher's
/// validation ahead and the coordinator share, so that a save validates only the scripts
/// it changed. Locked only on blocking threads, for one validation at a time.
pub type Validations = Arc<std::sync::Mutex<config::ValidationCache>>;

/// Validates `source` reusing `validations` (blocking): the same result as
/// [`config::validate`].
pub fn validate(source: &ConfigSource, validations: &Validations) -> Result<Config, ConfigErrors> {
    // A panic mid-validation leaves the cache as it was: it is replaced only after a valid
    // config.
    let mut cache = validations.lock().unwrap_or_else(|p| p.into_inner());
    config::validate_cached(source, &mut cache)
}

impl Prevalidated {
    /// Reads and validates the config at `main` as a reload would (blocking); `None` when
    /// it is not valid (the reload then finds and reports why).
    pub fn read(main: &Path, validations: &Validations) -> Option<Self> {
        let source = config::read_source(main)
            .and_then(config::secure_source)
            .ok()?;
        let config = validate(&source, validations).ok()?;
        Some(Self {
            hash: source.hash(),
            source,
            config,
        })
    }

    /// The hash of `source` when it is the files validated ahead: comparing them byte for
    /// byte is far cheaper than hashing them again, on the coordinator's runtime thread.
    pub fn hash_of(&self, source: &ConfigSource) -> Option<&str> {
        (self.source == *source).then_some(self.hash.as_str())
    }
}

/// The result of one attempt (or dry run).
#[derive(Debug, Clone)]
pub struct Report {
    /// Attempt id (0 for dry runs).
    pub attempt_id: u64,
    /// How it ended (a dry run: how it would).
    pub result: ResultKind,
    /// Version running after it.
    pub version: u64,
    /// Version the plan was computed against.
    pub base_version: u64,
    /// Plan id (empty when the files could not be read).
    pub plan_id: String,
    /// Changes with outcomes.
    pub changes: Vec<Change>,
    /// Validation errors.
    pub errors: ConfigErrors,
    /// Why it was rejected or failed, or a warning.
    pub message: String,
    /// Rollback: the files on disk could not be rewritten to match the running version.
    pub disk_differs: bool,
    /// With [`Request::wait`]: how the verification of the applied version ended.
    pub verification: Option<Verification>,
}

/// How the verification of an applied version ended (for `ctl reload --wait`).
#[derive(Debug, Clone)]
pub struct Verification {
    /// Verified, kept unverified, or rolled back.
    pub end: VerifyEnd,
    /// Each verified script's outcome.
    pub scripts: Vec<scriptd_common::proto::ScriptVerification>,
}

/// The end of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyEnd {
    /// Every started or restarted script became ready in time (or there was none).
    Verified,
    /// Not verified; the version stays (`on_failure: keep`, a failed automatic rollback, or
    /// a later attempt applied first).
    NotVerified,
    /// Not verified; the daemon rolled back, applying this version.
    AutoRolledBack(u64),
}

/// What the rest of the daemon may read of the running state.
pub struct Snapshot {
    /// Running version number.
    pub version: u64,
    /// Hash of the running version's files.
    pub hash: String,
    /// Etcd mode: the mod revision of the value the running version holds.
    pub etcd_revision: Option<i64>,
    /// Running config.
    pub config: Arc<Config>,
    /// One handle per script (shared with the coordinator until a script is added or
    /// removed: publishing a snapshot copies no map).
    pub handles: Arc<BTreeMap<String, ScriptHandle>>,
}
