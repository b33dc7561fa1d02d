//! scriptd: supervises scripts and applies edits to its YAML config while it runs.
//!
//! Ownership: the reload coordinator ([`reload`]) owns the running config; one runner task
//! per script ([`runner`]) owns its process; the gRPC handlers ([`server`]) only validate and
//! forward. Every task listens to one cancellation token; the gRPC server and its open
//! streams stop on a second one, cancelled once every runner has stopped its script.

pub mod convert;
pub mod dirs;
pub mod events;
pub mod history;
pub mod lock;
pub mod logs;
pub mod nofollow;
pub mod process;
pub mod reload;
pub mod rlimit;
pub mod runner;
pub mod runs;
pub mod server;
pub mod shim;
pub mod socket;
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
    about = "Supervises scripts and applies config edits live"
)]
pub struct Cli {
    /// Main config file.
    #[arg(short, long, default_value = "scriptd.yaml", env = "SCRIPTD_CONFIG")]
    pub config: PathBuf,
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
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        page.extend_from_slice(config::fields::man_section().as_bytes());
        std::io::Write::write_all(&mut std::io::stdout(), &page)?;
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(cli.log_format);
    let (source, cfg) = match config::load(&cli.config) {
        Ok(v) => v,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "scriptd: {} is invalid ({} error{})",
                cli.config.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(EXIT_CONFIG_INVALID));
        }
    };
    if cli.check {
        println!(
            "{}: OK ({} file{}, {} script{})",
            cli.config.display(),
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
    let served = runtime.block_on(serve(source, cfg, limits, nofile.scripts));
    // Whatever is still blocked on a client that went quiet is not waited for.
    runtime.shutdown_timeout(SERVER_LINGER);
    served?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    source: config::ConfigSource,
    cfg: config::Config,
    limits: socket::Limits,
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
    let cancel = CancellationToken::new();
    // Cancelled once every script has stopped: the gRPC server stops, open streams end.
    let server_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Event streams end once every script has stopped: followers get the last exits.
    let events = events::EventBus::new(server_stop.clone());
    let shared = Arc::new(runner::Shared {
        shims: process::Shims::new(script_nofile)
            .context("cannot create the shims' liveness pipe and report socket")?,
        events: events.clone(),
        log_dir: daemon.log_dir.clone(),
        groups,
        cancel: cancel.clone(),
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
    let watcher = if daemon.watch {
        watcher::start(main.clone(), source.hash()).await
    } else {
        None
    };
    let history = history::History::open(&daemon.state_dir, daemon.history_limit)
        .await
        .with_context(|| format!("cannot open the history in {}", daemon.state_dir.display()))?;
    let (coordinator, started) = reload::Coordinator::start(
        main.clone(),
        source,
        cfg,
        shared.clone(),
        tracker.clone(),
        history.clone(),
        watcher.is_some(),
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
        tracker.spawn(w.run(daemon.debounce, reload_tx.clone(), cancel.clone()));
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
    )
    .with_verify_view(verify_view);
    // Serves until every script has stopped: `ctl status` still answers during a shutdown.
    let mut server = tokio::spawn(socket::serve(
        listener,
        service,
        daemon.access.clone(),
        limits,
        server_stop.clone(),
    ));

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
