//! scriptd: supervises scripts and applies edits to its YAML config while it runs.
//!
//! Ownership: the reload coordinator ([`reload`]) owns the running config; one runner task
//! per script ([`runner`]) owns its process; the gRPC handlers ([`server`]) only validate and
//! forward. Every task listens to one cancellation token.

pub mod convert;
pub mod events;
pub mod history;
pub mod logs;
pub mod process;
pub mod reload;
pub mod runner;
pub mod server;
pub mod shim;
pub mod socket;
pub mod watcher;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use scriptd_common::config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit code for an invalid config (`--check`, or at startup).
pub const EXIT_CONFIG_INVALID: u8 = 3;

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
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(cli.log_format);
    let loaded = config::read_source(&cli.config).and_then(|source| {
        config::check_permissions(&source)?;
        let cfg = config::validate(&source)?;
        Ok((source, cfg))
    });
    let (source, cfg) = match loaded {
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
    runtime.block_on(serve(source, cfg))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(source: config::ConfigSource, cfg: config::Config) -> anyhow::Result<()> {
    let daemon = cfg.daemon.clone();
    for dir in [&daemon.state_dir, &daemon.log_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let listener = socket::bind(&daemon.socket).await?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let events = events::EventBus::new(cancel.clone());
    let shared = Arc::new(runner::Shared {
        death: process::DeathPipe::new().context("cannot create the shim liveness pipe")?,
        events: events.clone(),
        log_dir: daemon.log_dir.clone(),
        cancel: cancel.clone(),
    });
    let main = source.main.clone();
    let history = history::History::open(&daemon.state_dir, daemon.history_limit)
        .with_context(|| format!("cannot open the history in {}", daemon.state_dir.display()))?;
    let (coordinator, snapshot) = reload::Coordinator::start(
        main.clone(),
        source,
        cfg,
        shared.clone(),
        tracker.clone(),
        history.clone(),
    )
    .context("cannot record the startup version in the history")?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(16);
    tracker.spawn(coordinator.run(reload_rx));

    if daemon.watch {
        tracker.spawn(watcher::run(
            main.clone(),
            daemon.debounce,
            reload_tx.clone(),
            cancel.clone(),
        ));
    }

    let service = server::Service::new(
        server::DaemonInfo {
            config_path: main.clone(),
            socket_path: daemon.socket.clone(),
            started_at_ms: now_ms(),
        },
        snapshot,
        reload_tx.clone(),
        events,
        history,
    );
    let server_task = socket::serve(listener, service, cancel.clone());

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
            let (Ok(mut term), Ok(mut int), Ok(mut hup_signal)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
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
    notify_systemd("READY=1");
    tracing::info!(socket = %daemon.socket.display(), config = %main.display(), "scriptd ready");

    let served = server_task.await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let _ = std::fs::remove_file(&daemon.socket);
    tracing::info!("scriptd stopped");
    served
}

/// Tells systemd (Type=notify) about state changes; a no-op outside systemd.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), PathBuf::from(path))
    };
    if let Err(e) = result {
        tracing::debug!("sd_notify failed: {e}");
    }
}
