//! The etcd source (`daemon.source.etcd`): one key holds the config.
//!
//! At start ([`startup`]) the daemon reads the key (revision R) and runs its value; when
//! etcd cannot be reached, or the value is invalid, it runs the last version in the history
//! instead and says so. Then one task ([`EtcdSource::run`], the only owner of the
//! connection) watches the key from R + 1 and hands every new value to the coordinator as a
//! [`Request`] carrying an [`EtcdValue`]: the one reload pipeline validates, diffs, applies
//! and records it (source `etcd`, with its mod revision). A value already handed over (same
//! mod revision) is never handed over again, so a re-read after a reconnect or a compaction
//! applies nothing twice; a value that hashes the same as the running version is not
//! recorded again either.
//!
//! The source going away never stops supervision: a closed connection, a frozen server
//! (HTTP/2 keepalive, see [`client`]) or a cancelled watch (compaction) only mark the source
//! disconnected ([`state`], shown by `ctl status`) and start a reconnect with backoff.
//!
//! Several endpoints: the key is read from the first that answers ([`read_any`]: one that
//! connects but does not serve the read counts as down), and a lost watch reconnects
//! starting with the endpoint after the one lost. The password and TLS files are read at
//! start ([`access`]); the TLS connection and its failures in words are in [`tls`].

pub mod access;
pub mod client;
pub mod state;
pub mod tls;

use crate::history::History;
use crate::reload::{Request, Source};
use access::Access;
use client::{Client, EtcdError, Read};
use scriptd_common::config::etcd::{self as cfg_etcd, EtcdSource as Settings};
use scriptd_common::config::{self, Backoff, Config, ConfigErrors, ConfigSource};
use state::{Publisher, SourceState};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The reconnect backoff: 100 ms doubling to 5 s, from the first failure after a watch was
/// established.
const RECONNECT: Backoff = Backoff {
    delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
    reset_after: Duration::ZERO,
};

/// A value of the key, for the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdValue {
    /// The value as stored (decoded by the coordinator, where a value that is not UTF-8 or
    /// too large is an error of the config like any other).
    pub bytes: Vec<u8>,
    /// Its mod revision.
    pub revision: i64,
}

/// The config the daemon starts with in etcd mode, and where it came from.
pub struct Startup {
    /// The config's files: the bootstrap file and the value.
    pub source: ConfigSource,
    /// The config.
    pub config: Config,
    /// Where the source's task goes on from.
    pub resume: Resume,
}

/// Where the source's task goes on from after [`startup`].
pub struct Resume {
    /// The value's mod revision, when it was read from etcd at start.
    pub revision: Option<i64>,
    /// The connection the read used, kept for the watch.
    client: Option<Client>,
    /// The problem with etcd at start, for the status (empty when none).
    problem: String,
    /// What runs instead of the key's value (etcd away or the value invalid at start).
    fallback: Option<String>,
}

/// The files `daemon.source.etcd` of `config` names, read (blocking; `source`: the config's
/// files, for the position of the setting at fault): `None` without an etcd source.
pub fn read_access(source: &ConfigSource, config: &Config) -> Result<Option<Access>, ConfigErrors> {
    let Some(settings) = &config.daemon.source else {
        return Ok(None);
    };
    access::read(settings).map(Some).map_err(|e| {
        let main = source.files.first();
        let pos = main.map(|f| config::positions::Positions::of(&f.content).value(e.setting()));
        ConfigErrors(vec![config::ConfigError {
            file: main.map(|f| f.name.clone()).unwrap_or_default(),
            line: pos.map_or(0, |p| p.line),
            column: pos.map_or(0, |p| p.column),
            path: String::new(),
            message: e.to_string(),
        }])
    })
}

/// Connects to the endpoints in turn, from the `first`th on (wrapping around): the first
/// that connects and its index; or, when none does, every endpoint's failure.
pub async fn connect(
    settings: &Settings,
    access: &Access,
    first: usize,
) -> Result<(usize, Client), EtcdError> {
    let n = settings.endpoints.len();
    let mut failures = Vec::new();
    for i in (0..n).map(|k| (first + k) % n) {
        match Client::connect(&settings.endpoints[i], access).await {
            Ok(c) => return Ok((i, c)),
            Err(e) => failures.push((settings.endpoints[i].clone(), e)),
        }
    }
    Err(EtcdError::Unreachable(failures))
}

/// Reads the key from the first endpoint that answers, in order: an endpoint that accepts
/// the connection but does not answer (a frozen server) counts as down. The connection and
/// what it read; or every endpoint's failure.
pub async fn read_any(settings: &Settings, access: &Access) -> Result<(Client, Read), EtcdError> {
    let mut failures = Vec::new();
    for endpoint in &settings.endpoints {
        let read = match Client::connect(endpoint, access).await {
            Ok(client) => match client.read(&settings.key).await {
                Ok(read) => return Ok((client, read)),
                Err(e) => e,
            },
            Err(e) => e,
        };
        failures.push((endpoint.clone(), read));
    }
    Err(EtcdError::Unreachable(failures))
}

/// Validates `source` on a blocking thread.
async fn validate(source: ConfigSource) -> Result<(ConfigSource, Config), ConfigErrors> {
    tokio::task::spawn_blocking(move || {
        let config = config::validate(&source)?;
        Ok((source, config))
    })
    .await
    .unwrap_or_else(|e| {
        Err(ConfigErrors::file(
            "config",
            format!("validation failed: {e}"),
        ))
    })
}

/// The config to start with: the key's value when etcd answers and the value is valid;
/// otherwise the last version in the history (its value with this bootstrap file); without
/// one, no scripts until the key can be read. `bootstrap`: the main file as loaded.
pub async fn startup(
    settings: &Settings,
    access: &Access,
    bootstrap: (ConfigSource, Config),
    history: &History,
) -> Startup {
    let key = &settings.key;
    let problem = match read_any(settings, access).await {
        Err(e) => format!("etcd is unreachable ({e})"),
        Ok((client, read)) => match read.value {
            None => format!("the key {key:?} does not exist"),
            Some((bytes, revision)) => {
                let name = cfg_etcd::value_file_name(key);
                let checked = match config::decode(&name, bytes) {
                    Ok(text) => validate(cfg_etcd::with_value(&bootstrap.0, key, text)).await,
                    Err(e) => Err(ConfigErrors::file(&name, e.to_string())),
                };
                match checked {
                    Ok((source, config)) => {
                        let resume = Resume {
                            revision: Some(revision),
                            client: Some(client),
                            problem: String::new(),
                            fallback: None,
                        };
                        return Startup {
                            source,
                            config,
                            resume,
                        };
                    }
                    Err(errors) => format!(
                        "the value of {key:?} at revision {revision} is invalid: {}",
                        errors.summary(3)
                    ),
                }
            }
        },
    };
    let (source, config, from) = match last_value(settings, &bootstrap.0, history).await {
        Some((v, source, config)) => (
            source,
            config,
            format!("the last version in the history ({v})"),
        ),
        None => (
            bootstrap.0,
            bootstrap.1,
            "no scripts (the history has no version from etcd)".into(),
        ),
    };
    tracing::warn!(
        "{problem}: running {from} until the key can be read; supervision goes on, and the \
         key's value applies as soon as it is read"
    );
    Startup {
        source,
        config,
        resume: Resume {
            revision: None,
            client: None,
            problem: format!("{problem} at start; running {from}"),
            fallback: Some(format!("running {from} since start")),
        },
    }
}

/// The newest version in the history that holds a value of the key, with this bootstrap
/// file, when it is valid.
async fn last_value(
    settings: &Settings,
    bootstrap: &ConfigSource,
    history: &History,
) -> Option<(u64, ConfigSource, Config)> {
    let (latest, _) = history.latest().await.ok().flatten()?;
    let (_, files) = history.version(latest).await.ok().flatten()?;
    let name = cfg_etcd::value_file_name(&settings.key);
    let value = files.into_iter().find(|f| f.name == name)?.content;
    match validate(cfg_etcd::with_value(bootstrap, &settings.key, value)).await {
        Ok((source, config)) => Some((latest, source, config)),
        Err(errors) => {
            tracing::warn!(
                "version {latest} in the history is not valid with this daemon config: {}",
                errors.summary(3)
            );
            None
        }
    }
}

/// The source's task: watches the key and hands new values to the coordinator.
pub struct EtcdSource {
    settings: Settings,
    access: Access,
    /// The index of the endpoint the next connection tries first: the one after the
    /// endpoint whose connection was lost last (a dead or frozen endpoint is not retried
    /// before the others).
    next: usize,
    reloads: mpsc::Sender<Request>,
    state: Publisher,
    /// The mod revision of the last value handed over (or run at start).
    delivered: i64,
    /// The connection made at start, used first.
    client: Option<Client>,
    /// Until the key is first read: what runs instead, added to every problem shown.
    fallback: Option<String>,
    /// Where a new watch starts: the revision after the last one watched; `None`: read the
    /// key first (at start, and after a watch was cancelled by a compaction).
    resume_at: Option<i64>,
}

impl EtcdSource {
    /// The task for `settings`, going on from `resume`; and the state `ctl status` reads.
    pub fn new(
        settings: Settings,
        access: Access,
        resume: Resume,
        reloads: mpsc::Sender<Request>,
    ) -> (Self, watch::Receiver<SourceState>) {
        let endpoint = resume.client.as_ref().map_or_else(
            || settings.endpoints.first().cloned().unwrap_or_default(),
            |c| c.endpoint.clone(),
        );
        let (state, rx) = Publisher::new(&settings.key, &endpoint, crate::now_ms());
        if !resume.problem.is_empty() {
            state.disconnected(&endpoint, resume.problem, crate::now_ms());
        }
        let source = Self {
            next: settings
                .endpoints
                .iter()
                .position(|e| *e == endpoint)
                .unwrap_or(0),
            settings,
            access,
            reloads,
            state,
            delivered: resume.revision.unwrap_or(0),
            client: resume.client,
            resume_at: None,
            fallback: resume.fallback,
        };
        (source, rx)
    }

    /// Watches until `cancel`: reconnects with backoff whenever the connection is lost.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let lost = tokio::select! {
                _ = cancel.cancelled() => return,
                e = self.session(&mut failures) => e,
            };
            let (endpoint, e) = lost;
            let delay = RECONNECT.delay_for(failures);
            if failures == 0 {
                tracing::warn!(
                    "etcd source: {e}; scripts keep running, reconnecting (backoff up to {}s)",
                    RECONNECT.max_delay.as_secs()
                );
            } else {
                tracing::debug!("etcd source: {e}; retrying in {delay:?}");
            }
            let why = match &self.fallback {
                Some(fallback) => format!("{e}; {fallback}"),
                None => e.to_string(),
            };
            self.state.disconnected(&endpoint, why, crate::now_ms());
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: read the key (unless a watch resumes where the last one ended), then
    /// watch it; read again after a watch cancelled by a compaction. Returns why it ended
    /// (the endpoint and the error).
    async fn session(&mut self, failures: &mut u32) -> (String, EtcdError) {
        let n = self.settings.endpoints.len().max(1);
        let client = match self.client.take() {
            Some(c) => c,
            None => match connect(&self.settings, &self.access, self.next).await {
                Ok((i, c)) => {
                    self.next = i;
                    c
                }
                Err(e) => {
                    let last = (self.next + n - 1) % n;
                    let endpoint = self.settings.endpoints.get(last).cloned();
                    return (endpoint.unwrap_or_default(), e);
                }
            },
        };
        // Whatever ends this connection, the next one tries the following endpoint first.
        self.next = (self.next + 1) % n;
        let at = |e| (client.endpoint.clone(), e);
        let key = self.settings.key.clone();
        loop {
            let from = match self.resume_at {
                Some(from) => from,
                None => {
                    let read = match client.read(&key).await {
                        Ok(r) => r,
                        Err(e) => return at(e),
                    };
                    self.state.seen(read.revision);
                    self.state.connected(&client.endpoint, crate::now_ms());
                    self.fallback = None;
                    match read.value {
                        Some((bytes, revision)) => self.deliver(bytes, revision).await,
                        None => self.state.problem(format!(
                            "the key {key:?} does not exist; the running version stays"
                        )),
                    }
                    read.revision + 1
                }
            };
            self.resume_at = Some(from);
            let (mut stream, _requests) = match client.watch(&key, from).await {
                Ok(w) => w,
                Err(e) => return at(e),
            };
            self.state.connected(&client.endpoint, crate::now_ms());
            if *failures > 0 {
                tracing::info!(endpoint = %client.endpoint, "etcd source: connected again");
            }
            *failures = 0;
            loop {
                let response = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return at(EtcdError::Call {
                            call: "the watch",
                            status: "etcd ended it".into(),
                        })
                    }
                    Err(s) => {
                        return at(EtcdError::Call {
                            call: "the watch",
                            status: client.explain(&s),
                        })
                    }
                };
                if let Some(h) = &response.header {
                    self.state.seen(h.revision);
                }
                if response.compact_revision != 0 || response.canceled {
                    tracing::info!(
                        compacted = response.compact_revision,
                        "etcd source: the watch was cancelled ({}); reading the key again",
                        if response.cancel_reason.is_empty() {
                            "compaction"
                        } else {
                            response.cancel_reason.as_str()
                        }
                    );
                    self.resume_at = None;
                    break;
                }
                for event in response.events {
                    let Some(kv) = event.kv else { continue };
                    self.resume_at = Some(kv.mod_revision + 1);
                    if event.r#type == client::mvccpb::event::EventType::Delete as i32 {
                        tracing::warn!(
                            "etcd source: the key {key:?} was deleted at revision {}; the \
                             running version stays",
                            kv.mod_revision
                        );
                        self.state.problem(format!(
                            "the key {key:?} was deleted at revision {}; the running version \
                             stays",
                            kv.mod_revision
                        ));
                    } else {
                        self.deliver(kv.value, kv.mod_revision).await;
                    }
                }
            }
        }
    }

    /// Hands the value of mod revision `revision` to the coordinator, once, and waits for
    /// the outcome.
    async fn deliver(&mut self, bytes: Vec<u8>, revision: i64) {
        if revision <= self.delivered {
            return;
        }
        self.delivered = revision;
        let (reply, done) = oneshot::channel();
        let request = Request {
            etcd: Some(EtcdValue { bytes, revision }),
            reply: Some(reply),
            ..Request::new(Source::Etcd)
        };
        if self.reloads.send(request).await.is_err() {
            return; // shutting down
        }
        if let Ok(Ok(report)) = done.await {
            use crate::reload::ResultKind;
            match report.result {
                ResultKind::Applied | ResultKind::Unchanged => self.state.problem(String::new()),
                ResultKind::Rejected | ResultKind::FailedRolledBack => {
                    self.state.problem(format!(
                        "the value at revision {revision} was not applied ({}); version {} \
                         keeps running",
                        report.message, report.version
                    ));
                }
            }
        }
    }
}
