//! scriptd: supervises scripts and applies edits to its YAML config while it runs.
//!
//! Ownership: the reload coordinator ([`reload`]) owns the running config; one runner task
//! per script ([`runner`]) owns its process; the gRPC handlers ([`server`]) only validate and
//! forward. Every task listens to one cancellation token; the gRPC server and its open
//! streams stop on a second one, cancelled once every runner has stopped its script.

pub mod convert;
pub mod credential_files;
pub mod dirs;
pub mod events;
pub mod health;
pub mod heap;
pub mod history;
pub mod lock;
pub mod logs;
pub mod manual;
pub mod metrics;
pub mod nofollow;
pub mod process;
pub mod reload;
pub mod rlimit;
pub mod runner;
pub mod runs;
pub mod server;
pub mod shim;
pub mod socket;
pub mod source;
pub mod tcp;
pub mod throttle;
pub mod watcher;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use scriptd_common::config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit code for an invalid config (`--check`, or at startup).
pub const EXIT_CONFIG_INVALID: u8 = 3;

/// At shutdown, once every script has stopped, how long open gRPC calls get to finish
/// before their connections are closed.
const SERVER_LINGER: Duration = Duration::from_secs(2);

/// Log output format of the daemon itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `scriptd` command line.
#[derive(Debug, Parser)]
#[command(
    name = "scriptd",
    version,
    about = "Supervises scripts and applies config edits live",
    long_about = "Supervises scripts (periodic jobs and long-running services) and applies edits \
                  to its YAML configuration while it runs: each save is validated, diffed \
                  against what runs, applied at the narrowest safe scope, and recorded as a \
                  version that ctl(1) can diff and roll back to. Every line a script prints \
                  goes to its log file and to ctl's followers."
)]
pub struct Cli {
    /// Main config file [default: ./scriptd.yaml, or /etc/scriptd/scriptd.yaml when there is
    /// no ./scriptd.yaml and it exists].
    #[arg(short, long, env = "SCRIPTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the config and exit: 0 valid, 3 invalid.
    #[arg(long)]
    pub check: bool,
    /// Format of the daemon's own log (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    pub man: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Logs to stderr. `SCRIPTD_LOG` takes `LEVEL` or `target=LEVEL,...` directives (e.g.
/// `debug`, `scriptd=debug,info`); parsed without regex, which keeps the daemon small.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("SCRIPTD_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let _ = match format {
        LogFormat::Text => registry.with(layer.with_filter(filter)).try_init(),
        LogFormat::Json => registry.with(layer.json().with_filter(filter)).try_init(),
    };
}

/// Runs the daemon (or the `--check`) and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.man {
        let page = manual::page(<Cli as clap::CommandFactory>::command())?;
        std::io::Write::write_all(&mut std::io::stdout(), &page)?;
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(cli.log_format);
    let main_file = cli.config.clone().unwrap_or_else(config::default_main_file);
    // A file that is not there is not an invalid config (exit 3) but a wrong path: a
    // startup error, and systemd's RestartPreventExitStatus=3 does not apply to it.
    if let Err(e) = std::fs::metadata(&main_file) {
        anyhow::bail!(
            "cannot read the config {}: {e}; give its path with --config (or SCRIPTD_CONFIG)",
            main_file.display()
        );
    }
    // Validated with the cache every save's validation then reuses (one copy of each
    // script's config for the running version and the cache).
    let validations = reload::Validations::default();
    let loaded = {
        let mut cache = validations.lock().unwrap_or_else(|p| p.into_inner());
        config::load_cached(&main_file, &mut cache)
    };
    let (source, cfg) = match loaded {
        Ok(v) => v,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "scriptd: {} is invalid ({} error{})",
                main_file.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(EXIT_CONFIG_INVALID));
        }
    };
    // The files daemon.source.etcd names are part of the config: read here, also by
    // `--check`; one that cannot be used stops the start like any invalid key.
    let etcd_access = match source::etcd::read_access(&source, &cfg) {
        Ok(access) => access,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("scriptd: {} is invalid (1 error)", main_file.display());
            return Ok(ExitCode::from(EXIT_CONFIG_INVALID));
        }
    };
    // So are the files of daemon.listen.tls: a certificate or key that cannot be used is an
    // invalid config (exit 3, and `--check` says so), as for the etcd source's files.
    let tls = match cfg
        .daemon
        .listen
        .as_ref()
        .map(|l| tcp::server_config(&l.tls))
    {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => {
            eprintln!("{}: {e}", main_file.display());
            eprintln!("scriptd: {} is invalid (1 error)", main_file.display());
            return Ok(ExitCode::from(EXIT_CONFIG_INVALID));
        }
    };
    if cli.check {
        println!(
            "{}: OK ({} file{}, {} script{})",
            main_file.display(),
            source.files.len(),
            if source.files.len() == 1 { "" } else { "s" },
            cfg.scripts.len(),
            if cfg.scripts.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let nofile = rlimit::raise_nofile_logged();
    let limits = socket::Limits::from_env(nofile.daemon)?;
    dirs::prepare(&cfg.daemon)?;
    // glibc gives every thread that allocates its own malloc arena; a supervisor that should
    // idle in a few MB is better served by two.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(serve(
        (source, cfg, validations),
        etcd_access,
        limits,
        tls,
        nofile.scripts,
    ));
    // Whatever is still blocked on a client that went quiet is not waited for.
    runtime.shutdown_timeout(SERVER_LINGER);
    served?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    (source, cfg, validations): (config::ConfigSource, config::Config, reload::Validations),
    etcd_access: Option<source::etcd::access::Access>,
    limits: socket::Limits,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    script_nofile: Option<u64>,
) -> anyhow::Result<()> {
    let daemon = cfg.daemon.clone();
    // Before anything starts: a daemon that SIGTERM could not stop cleanly must not run.
    let handler = |kind: SignalKind, name: &str| {
        signal(kind).with_context(|| format!("cannot install the {name} handler"))
    };
    let (mut term, mut int, mut hup_signal) = (
        handler(SignalKind::terminate(), "SIGTERM")?,
        handler(SignalKind::interrupt(), "SIGINT")?,
        handler(SignalKind::hangup(), "SIGHUP")?,
    );
    let (listener, _socket) = socket::bind(&daemon.socket, &daemon.access)?;
    // Bound before anything starts: an address in use is a startup error (exit 1).
    let metrics_listener = match daemon.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on daemon.metrics {addr}: another process may use the port; \
                 pick a free one or remove daemon.metrics"
            )
        })?),
        None => None,
    };
    let tcp = match (&daemon.listen, tls) {
        (Some(listen), Some(tls)) => Some((tcp::bind(listen.tcp).await?, tls)),
        _ => None,
    };
    let _state = lock::acquire(&daemon.state_dir.join("scriptd.lock"), |pid| {
        format!(
            "another scriptd{} already uses the state directory {}: two daemons must not share \
             a daemon.state_dir; stop it first, or give this one another state_dir",
            lock::pid_text(pid),
            daemon.state_dir.display()
        )
    })?;
    // The socket and the state directory are ours, so no other daemon runs on this config:
    // what the group records name is left over from one that was killed with its shims.
    let groups = process::GroupRecords::open(&daemon.state_dir)?;
    groups.sweep().await;
    let slots = {
        let dir = daemon.state_dir.clone();
        tokio::task::spawn_blocking(move || runner::SlotRecords::open(&dir))
            .await
            .context("cannot open the calendar schedules' records")?
            .with_context(|| {
                format!(
                    "cannot use {}/schedule for the calendar schedules' records",
                    daemon.state_dir.display()
                )
            })?
    };
    let cancel = CancellationToken::new();
    // Cancelled once every script has stopped: the gRPC server stops, open streams end.
    let server_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Event streams end once every script has stopped: followers get the last exits.
    let events = events::EventBus::new(server_stop.clone());
    let shared = Arc::new(runner::Shared {
        shims: process::Shims::new(script_nofile, cancel.clone())
            .context("cannot create the shims' liveness pipe and report socket")?,
        events: events.clone(),
        log_dir: daemon.log_dir.clone(),
        groups,
        cancel: cancel.clone(),
        slots,
        metrics: metrics::Metrics::default(),
    });
    // Reads shim reports and reaps shims until every runner has seen its script's end.
    tokio::spawn({
        let (shared, stop) = (shared.clone(), server_stop.clone());
        async move { shared.shims.run(stop).await }
    });
    let main = source.main.clone();
    // The watches are in place before anyone is served: a save that a client makes once
    // `ctl status` answers is never missed. Set before the coordinator starts: it publishes
    // the disk state only when every save reaches it (see `reload::disk`).
    let watcher_health = Arc::new(watcher::Health::default());
    // Etcd mode: the file is only the bootstrap (read at start), the key is the config.
    let watcher = if daemon.watch && daemon.source.is_none() {
        watcher::start(main.clone(), source.hash(), watcher_health.clone()).await
    } else {
        None
    };
    // Its metrics only when it runs.
    let watcher_health = watcher.is_some().then_some(watcher_health);
    let history = history::History::open(&daemon.state_dir, daemon.history_limit)
        .await
        .with_context(|| format!("cannot open the history in {}", daemon.state_dir.display()))?;
    let (source, cfg, etcd) = match (daemon.source.clone(), etcd_access) {
        (Some(settings), Some(access)) => {
            let started = source::etcd::startup(&settings, &access, (source, cfg), &history).await;
            let etcd = (settings, access, started.resume);
            (started.source, started.config, Some(etcd))
        }
        _ => (source, cfg, None),
    };
    let mode = etcd.as_ref().map(|(settings, access, resume)| {
        reload::etcd::EtcdMode::new(settings.clone(), access.clone(), resume.revision)
    });
    let (coordinator, started) = reload::Coordinator::start(
        main.clone(),
        (source, cfg, validations.clone()),
        shared.clone(),
        tracker.clone(),
        history.clone(),
        watcher.is_some(),
        mode,
    )
    .await
    .context("cannot read the history")?;
    let reload::coordinator::Started {
        snapshot,
        disk,
        first_starts,
        verify_view,
    } = started;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(16);
    tracker.spawn(coordinator.run(reload_rx));
    if let Some(w) = watcher {
        tracker.spawn(w.run(
            daemon.debounce,
            reload_tx.clone(),
            validations,
            cancel.clone(),
        ));
    }
    let etcd_state = etcd.map(|(settings, access, resume)| {
        let (task, state) =
            source::etcd::EtcdSource::new(settings, access, resume, reload_tx.clone());
        tracker.spawn(task.run(cancel.clone()));
        state
    });

    let clients = socket::Clients::default();
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving GET /metrics");
        }
        let sources = metrics::Sources {
            snapshot: snapshot.clone(),
            disk: disk.clone(),
            events: events.clone(),
            metrics: shared.metrics.clone(),
            history: history.clone(),
            clients: clients.clone(),
            watcher: watcher_health,
        };
        tokio::spawn(metrics::serve(listener, sources, server_stop.clone()));
    }
    let service = server::Service::new(
        server::DaemonInfo {
            config_path: main.clone(),
            socket_path: daemon.socket.clone(),
            started_at_ms: now_ms(),
        },
        snapshot,
        disk,
        reload_tx.clone(),
        events,
        history,
        shared.metrics.clone(),
    )
    .with_verify_view(verify_view);
    let service = Arc::new(match etcd_state {
        Some(state) => service.with_etcd(state),
        None => service,
    });
    let idle = limits.idle;
    // Serves until every script has stopped: `ctl status` still answers during a shutdown.
    let unix = socket::serve(
        listener,
        service.clone(),
        daemon.access.clone(),
        limits,
        clients,
        server_stop.clone(),
    );
    let mut server = match tcp {
        Some((tcp_listener, tls)) => {
            let remote = tcp::serve(
                tcp_listener,
                tls,
                service,
                daemon.access.clone(),
                idle,
                server_stop.clone(),
            );
            tokio::spawn(async move { tokio::try_join!(unix, remote).map(|_| ()) })
        }
        None => tokio::spawn(unix),
    };

    // The signal loop never waits for the reload queue (a SIGTERM is never held up behind
    // it): it only wakes this task. One signal reload at a time; SIGHUPs meanwhile leave one
    // permit in the Notify, that is one more reload after it, however many they were.
    let hup = Arc::new(tokio::sync::Notify::new());
    tracker.spawn({
        let (hup, cancel, reload_tx) = (hup.clone(), cancel.clone(), reload_tx.clone());
        async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = hup.notified() => {}
                }
                let (reply, done) = tokio::sync::oneshot::channel();
                let req = reload::Request {
                    reply: Some(reply),
                    ..reload::Request::new(reload::Source::Signal)
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    sent = reload_tx.send(req) => if sent.is_err() { break },
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = done => {}
                }
            }
        }
    });
    let signals = {
        let cancel = cancel.clone();
        async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: stopping every script"); break }
                    _ = int.recv() => { tracing::info!("SIGINT: stopping every script"); break }
                    _ = hup_signal.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        hup.notify_one();
                    }
                }
            }
            cancel.cancel();
        }
    };
    tokio::spawn(signals);
    drop(reload_tx);
    // READY once the startup config is applied: every script started (or failed to).
    for first in first_starts {
        let _ = first.await;
    }
    // What reading the startup config and the first runs freed (the YAML tree, validation's
    // and the runs' temporaries), back to the system, as after every reload.
    drop(tokio::task::spawn_blocking(heap::trim));
    if !cancel.is_cancelled() {
        notify_systemd(Notify::Ready);
        tracing::info!(socket = %daemon.socket.display(), config = %main.display(), "scriptd ready");
    }

    let failed = tokio::select! {
        _ = cancel.cancelled() => None,
        r = &mut server => Some(r),
    };
    notify_systemd(Notify::Stopping);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::debug!("every script has stopped: closing open streams and the server");
    server_stop.cancel();
    let served = match failed {
        Some(r) => r,
        None => match tokio::time::timeout(SERVER_LINGER, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    "gRPC calls still open {}s after every script stopped; closing them",
                    SERVER_LINGER.as_secs()
                );
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    tracing::info!("scriptd stopped");
    served.context("the gRPC server task failed")?
}

/// What the daemon tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1`: started (the socket bound, the startup config applied) or reloaded.
    Ready,
    /// `RELOADING=1` with `MONOTONIC_USEC`, which `Type=notify-reload` requires.
    Reloading,
    /// `STOPPING=1`: shutting down.
    Stopping,
}

impl Notify {
    /// The states sent (`MONOTONIC_USEC` read now).
    fn states(self) -> Vec<sd_notify::NotifyState<'static>> {
        use sd_notify::NotifyState;
        match self {
            Self::Ready => vec![NotifyState::Ready],
            Self::Reloading => {
                let mut v = vec![NotifyState::Reloading];
                v.extend(NotifyState::monotonic_usec_now().ok());
                v
            }
            Self::Stopping => vec![NotifyState::Stopping],
        }
    }
}

/// Tells systemd (`Type=notify` or `notify-reload`) about state changes; a no-op outside
/// systemd.
pub fn notify_systemd(what: Notify) {
    if let Err(e) = sd_notify::notify(&what.states()) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
