//! The config model of DESIGN.md: one main file, optional included files, `defaults`
//! inherited by every script.
//!
//! [`load`] reads the files from disk, checks their permissions and validates them;
//! [`validate`] turns their text into a [`Config`] or every [`ConfigError`] at once.

mod access;
mod error;
pub mod etcd;
mod exec_context;
pub mod fields;
pub mod health;
mod include_scan;
mod include_walk;
pub mod limits;
mod load;
mod parse;
mod pieces;
pub mod positions;
mod read;
pub mod resource_limits;
mod validate;

pub use access::{Access, AccessRule, Role, Subject};
pub use error::{ConfigError, ConfigErrors, SUMMARY_ERROR_CHARS};
pub use exec_context::{permits, ExecContext, GroupId, Perms, Umask, UserId, Want};
pub use health::{HealthConfig, Probe};
pub use include_scan::include_patterns;
pub use include_walk::WalkLimit;
pub use load::{
    check_permissions, check_permissions_writing, check_trusted_dir, include_matches, load,
    load_cached, read_source, read_source_with, secure_source, secure_source_writing, ConfigFile,
    ConfigSource, INCLUDE_MATCH,
};
pub use parse::YamlError;
pub use read::{decode, read_text, ReadError};
pub use validate::{
    validate, validate_cached, validate_cached_with, validate_with, Account, Host, Stat,
    SystemHost, ValidationCache, DUPLICATES_LISTED,
};

use crate::schedule::{Calendar, Zone};
use itertools::{EitherOrBoth, Itertools};
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated config with every default applied and every path absolute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// `daemon:` section: read at start only.
    pub daemon: DaemonConfig,
    /// Effective script configs by name.
    pub scripts: BTreeMap<String, Arc<ScriptConfig>>,
    /// `reload:` section: how an applied reload is verified. Changes to it are live.
    pub reload: ReloadConfig,
}

impl Config {
    /// Takes `older`'s copy of every script whose config is equal to this one's, so that
    /// the configs kept across versions (and by the runners) share one copy of what did not
    /// change instead of one per save.
    pub fn share_unchanged(&mut self, older: &Config) {
        // Both maps are sorted by name: walked side by side, no look-up per script.
        let pairs = self
            .scripts
            .iter_mut()
            .merge_join_by(&older.scripts, |(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        for pair in pairs {
            if let EitherOrBoth::Both((_, cfg), (_, old)) = pair {
                // The same copy already (validation reused it): nothing to compare.
                if !Arc::ptr_eq(old, cfg) && old == cfg {
                    *cfg = Arc::clone(old);
                }
            }
        }
    }
}

/// The `reload:` section: after an apply, every script it started or restarted must be
/// ready within `verify`; `on_failure` says what happens when one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReloadConfig {
    /// The verification window.
    #[serde(serialize_with = "ser_duration")]
    pub verify: Duration,
    /// What a failed verification does.
    pub on_failure: OnFailure,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            verify: builtin::RELOAD_VERIFY,
            on_failure: OnFailure::Keep,
        }
    }
}

/// What a reload whose verification failed does (`reload.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// The daemon rolls back to the previous version, as `ctl rollback` would.
    Rollback,
    /// The new version stays; the failure is reported.
    Keep,
}

impl OnFailure {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rollback => "rollback",
            Self::Keep => "keep",
        }
    }
}

/// The `daemon:` section. Every path is absolute (relative ones are resolved against the
/// main file's directory).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonConfig {
    /// Unix socket the gRPC server listens on.
    pub socket: PathBuf,
    /// Directory for state (history database, recorded process groups).
    pub state_dir: PathBuf,
    /// Directory for per-script log files.
    pub log_dir: PathBuf,
    /// How long the watcher waits after the first file event before reloading.
    #[serde(serialize_with = "ser_duration")]
    pub debounce: Duration,
    /// Whether file changes are applied automatically.
    pub watch: bool,
    /// How many versions the history keeps.
    pub history_limit: u32,
    /// Who else may use the socket, and with which role.
    pub access: Access,
    /// Where `GET /metrics` (Prometheus) is served; `None` (the default): nowhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// `daemon.listen`: the TCP listener with mutual TLS beside the socket, if any.
    pub listen: Option<Listen>,
    /// `daemon.source.etcd`: the config comes from this etcd key, not from the files.
    pub source: Option<etcd::EtcdSource>,
}

/// `daemon.listen`: a TCP listener beside the Unix socket. TLS is mandatory and client
/// certificates are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    /// `daemon.listen.tcp`: the address and port to listen on.
    pub tcp: std::net::SocketAddr,
    /// `daemon.listen.tls`: the server's certificate and key, and the CA client
    /// certificates must be signed by.
    pub tls: TlsFiles,
}

/// `daemon.listen.tls`: PEM files, absolute paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA (one or more certificates) that signs the clients' certificates.
    pub client_ca: PathBuf,
}

/// One script with its defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptConfig {
    /// What to run.
    pub command: CommandSpec,
    /// Periodic when set; a long-running service otherwise.
    #[serde(serialize_with = "ser_opt_duration")]
    pub interval: Option<Duration>,
    /// A periodic run past this is stopped.
    #[serde(serialize_with = "ser_opt_duration")]
    pub timeout: Option<Duration>,
    /// `false`: never started by the daemon (but `ctl run` still runs it once).
    pub enabled: bool,
    /// Directory the script runs in (absolute).
    pub working_dir: PathBuf,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Lines kept in memory for `ctl logs`.
    pub max_log_lines: u64,
    /// Service restart policy.
    pub restart: RestartPolicy,
    /// Signal sent to the process group to stop it.
    pub stop_signal: StopSignal,
    /// How long to wait after `stop_signal` before SIGKILL.
    #[serde(serialize_with = "ser_duration")]
    pub stop_grace: Duration,
    /// Log file rotation and line cap.
    pub log: LogConfig,
    /// Delays between restarts of a service (`restart_delay`, `restart_delay_max`,
    /// `restart_reset_after`).
    #[serde(flatten)]
    pub backoff: Backoff,
    /// The service's health probe (`health:`); `None` without one (and for periodic
    /// scripts, which take none).
    pub health: Option<HealthConfig>,
    /// `user`, `group`, `umask`, `limits`: what the process is started with.
    #[serde(flatten)]
    pub exec: ExecContext,
    /// A calendar `schedule` instead of an `interval`, its `timezone`, the `jitter` of
    /// every periodic start and `catch_up`.
    #[serde(flatten)]
    pub calendar: CalendarConfig,
    /// A service counts as started once it has run this long; an exit before is a failed
    /// start.
    #[serde(serialize_with = "ser_duration")]
    pub ready_after: Duration,
}

/// When a periodic script starts besides its `interval`: a cron `schedule` in a `timezone`,
/// `jitter` and `catch_up` (see [`crate::schedule`]). Each is `None` on scripts it does not
/// apply to, so it is no field of theirs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CalendarConfig {
    /// `schedule`: periodic on this cron expression (exclusive with `interval`).
    pub schedule: Option<Calendar>,
    /// `timezone` of the schedule (set on scripts with a schedule only; default the
    /// daemon's local zone).
    pub timezone: Option<Zone>,
    /// `jitter`: a random delay in `[0, jitter]` added to every start of a periodic script.
    #[serde(serialize_with = "ser_opt_duration")]
    pub jitter: Option<Duration>,
    /// `catch_up` (scripts with a schedule only): a slot missed while the daemon was down
    /// runs once at start.
    pub catch_up: Option<bool>,
}

impl ScriptConfig {
    /// True for scripts with an `interval` or a `schedule`.
    pub fn is_periodic(&self) -> bool {
        self.interval.is_some() || self.calendar.schedule.is_some()
    }

    /// The argv to execute: the list as given, or `/bin/sh -c STRING`.
    pub fn argv(&self) -> Vec<String> {
        match &self.command {
            CommandSpec::Argv(v) => v.clone(),
            CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// `command:` either as an argv list or as a string for `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Executed directly.
    Argv(Vec<String>),
    /// Run by `/bin/sh -c`.
    Shell(String),
}

/// When a service is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit.
    Always,
    /// After an exit with a non-zero code or a signal.
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

/// Signals a script may be stopped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopSignal {
    /// SIGTERM
    TERM,
    /// SIGINT
    INT,
    /// SIGHUP
    HUP,
    /// SIGQUIT
    QUIT,
    /// SIGKILL
    KILL,
    /// SIGUSR1
    USR1,
    /// SIGUSR2
    USR2,
}

impl StopSignal {
    /// Every accepted signal, in the order the error message lists them.
    pub const ALL: [StopSignal; 7] = [
        Self::TERM,
        Self::INT,
        Self::HUP,
        Self::QUIT,
        Self::KILL,
        Self::USR1,
        Self::USR2,
    ];

    /// The signal it is.
    pub fn signal(self) -> Signal {
        match self {
            Self::TERM => Signal::SIGTERM,
            Self::INT => Signal::SIGINT,
            Self::HUP => Signal::SIGHUP,
            Self::QUIT => Signal::SIGQUIT,
            Self::KILL => Signal::SIGKILL,
            Self::USR1 => Signal::SIGUSR1,
            Self::USR2 => Signal::SIGUSR2,
        }
    }

    /// The name without `SIG`.
    pub fn name(self) -> &'static str {
        let full = self.signal().as_str();
        full.strip_prefix("SIG").unwrap_or(full)
    }

    /// The platform's signal number.
    pub fn number(self) -> i32 {
        self.signal() as i32
    }

    /// Parses `TERM`, `SIGTERM`, `term` or `15` ([`signals::parse`](crate::signals::parse)),
    /// if it is a signal a script may be stopped with.
    pub fn parse(text: &str) -> Option<Self> {
        let signal = crate::signals::parse(text)?;
        Self::ALL.into_iter().find(|s| s.signal() == signal)
    }
}

/// Log file settings of one script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    /// Rotate the file when it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.log.1` .. `NAME.log.KEEP`).
    pub keep: u32,
    /// Longer lines are split, with a marker.
    pub max_line_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 20,
            keep: 3,
            max_line_bytes: 64 << 10,
        }
    }
}

/// How long a crashing service waits before each restart: `delay`, doubling with every
/// consecutive restart up to `max_delay`; a run that lasted `reset_after` starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// `restart_delay`: the delay before the first restart.
    #[serde(rename = "restart_delay", serialize_with = "ser_duration")]
    pub delay: Duration,
    /// `restart_delay_max`: the longest delay.
    #[serde(rename = "restart_delay_max", serialize_with = "ser_duration")]
    pub max_delay: Duration,
    /// `restart_reset_after`: a run at least this long resets the delay to `delay`.
    #[serde(rename = "restart_reset_after", serialize_with = "ser_duration")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: builtin::RESTART_DELAY,
            max_delay: builtin::RESTART_DELAY_MAX,
            reset_after: builtin::RESTART_RESET_AFTER,
        }
    }
}

impl Backoff {
    /// The delay before restart number `n` (0 = the first since the last stable run):
    /// `delay × 2ⁿ`, at most `max_delay`.
    pub fn delay_for(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Built-in defaults, used where neither the script nor `defaults:` sets a field.
pub mod builtin {
    use std::time::Duration;

    /// `max_log_lines`
    pub const MAX_LOG_LINES: u64 = 10_000;
    /// `stop_grace`
    pub const STOP_GRACE: Duration = Duration::from_secs(10);
    /// `restart_delay`
    pub const RESTART_DELAY: Duration = Duration::from_millis(500);
    /// `restart_delay_max` (raised to `restart_delay` when only that is set)
    pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
    /// `restart_reset_after`
    pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
    /// `ready_after`
    pub const READY_AFTER: Duration = Duration::from_secs(1);
    /// `reload.verify`
    pub const RELOAD_VERIFY: Duration = Duration::from_secs(30);
    /// `daemon.debounce`
    pub const DEBOUNCE: Duration = Duration::from_millis(50);
    /// `daemon.history_limit`
    pub const HISTORY_LIMIT: u32 = 100;
    /// `daemon.socket`, relative to the main file's directory.
    pub const SOCKET: &str = "run/scriptd.sock";
    /// `daemon.state_dir`
    pub const STATE_DIR: &str = "state";
    /// `daemon.log_dir`
    pub const LOG_DIR: &str = "logs";
    /// The main file of the packaged install.
    pub const SYSTEM_CONFIG: &str = "/etc/scriptd/scriptd.yaml";
    /// The main file in the working directory.
    pub const LOCAL_CONFIG: &str = "scriptd.yaml";
}

/// The main config file when none is given (`--config`, `SCRIPTD_CONFIG`), for `scriptd`
/// and `ctl` alike: `./scriptd.yaml` when it exists, else the packaged
/// `/etc/scriptd/scriptd.yaml` when that exists, else `./scriptd.yaml` (whose absence the
/// caller then reports).
pub fn default_main_file() -> std::path::PathBuf {
    let local = std::path::PathBuf::from(builtin::LOCAL_CONFIG);
    let system = std::path::Path::new(builtin::SYSTEM_CONFIG);
    if !local.exists() && system.exists() {
        system.to_path_buf()
    } else {
        local
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::format_duration(*d))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}
