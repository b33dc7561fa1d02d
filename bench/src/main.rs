//! scriptd benchmarks, run on a release build by `bench/run.sh`:
//!
//! - `status`: wall time of a whole `ctl status` process with 10 scripts configured;
//! - `reload`: latency from a config save (rename into place) to the reload's `applied`
//!   event and to the changed script's `started` event, with 1,000 scripts configured, one
//!   of them changed per save, and the default 50 ms debounce; plus the daemon's own time
//!   from the attempt's `detected` to its `applied` event (validate, plan, apply, record);
//! - `rss`: daemon resident memory, idle, with 100 scripts configured;
//! - `scrape`: daemon CPU time per `GET /metrics` with 1,000 running scripts (see
//!   [`scrape`]).

//! - `etcd`: as `reload`, with the config in etcd (`daemon.source.etcd`): from the put (a
//!   compare-and-swap by the daemon's own etcd client) to `applied` and `started`. Needs
//!   `etcd` (Debian's `etcd-server`) on `PATH`.
//!
//! Usage: scriptd-bench BIN_DIR [status|reload|rss|scrape|scale|etcd]... Figures go to
//! stdout as Markdown.

mod scrape;

mod scale;

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use scriptd_common::proto::scriptd_client::ScriptdClient;
use scriptd_common::proto::{self, event::Kind, ReloadPhase, ScriptEventKind};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// The daemon section of every benchmark config: the default debounce (50 ms), as a user
/// gets it.
const DAEMON: &str = "daemon:\n  socket: run/s.sock\n  state_dir: state\n  log_dir: logs\n";

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/s.sock")
    }
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn start(bins: &Path, config: &str) -> anyhow::Result<Daemon> {
    start_with(bins, config, &[])
}

/// [`start`] with `extra` files (name relative to the config's directory, text) written
/// beside the main file first.
fn start_with(bins: &Path, config: &str, extra: &[(String, String)]) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    for (name, text) in extra {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&path, text)?;
    }
    write_atomic(&dir.path().join("scriptd.yaml"), config)?;
    let child = Command::new(bins.join("scriptd"))
        .arg("--config")
        .arg(dir.path().join("scriptd.yaml"))
        .env("SCRIPTD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start scriptd")?;
    let d = Daemon { child, dir };
    let end = Instant::now() + Duration::from_secs(30);
    while !d.socket().exists() {
        if Instant::now() > end {
            bail!("daemon did not create its socket");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(d)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99), v[v.len() - 1])
}

fn bench_status(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    let mut cfg = format!("{DAEMON}scripts:\n");
    for i in 0..10 {
        writeln!(cfg, "  s{i}:\n    command: \"sleep 100000\"")?;
    }
    let d = start(bins, &cfg)?;
    let socket = d.socket();
    let ctl = bins.join("ctl");
    let status: Vec<&std::ffi::OsStr> =
        vec!["--socket".as_ref(), socket.as_os_str(), "status".as_ref()];
    let time = |program: &Path, args: &[&std::ffi::OsStr]| -> anyhow::Result<f64> {
        let t = Instant::now();
        let s = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        if !s.success() {
            bail!("{} failed", program.display());
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..20 {
        time(&ctl, &status)?;
    }
    // Alternating with the floor: the cost of starting any process on this machine.
    let (mut samples, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        samples.push(time(&ctl, &status)?);
        floor.push(time(Path::new("/bin/true"), &[])?);
    }
    let (p50, p99, max) = stats(samples);
    writeln!(
        out,
        "| `ctl status`, 10 scripts, whole process (300 runs) | {p50:.2} ms | {p99:.2} ms | {max:.2} ms |"
    )?;
    let (p50, p99, max) = stats(floor);
    writeln!(
        out,
        "| floor: `/bin/true`, whole process, alternating with the runs above | {p50:.2} ms | {p99:.2} ms | {max:.2} ms |"
    )?;
    Ok(())
}

async fn connect(socket: PathBuf) -> anyhow::Result<ScriptdClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::try_from("http://scriptd.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let p = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await?;
    Ok(ScriptdClient::new(ch))
}

/// The scripts of the reload benchmarks (without the `daemon:` section).
fn reload_scripts(n: usize, generation: usize) -> String {
    let mut cfg = "scripts:\n".to_owned();
    // The changed one is a service; the rest are periodic scripts that ran once at start.
    let _ = writeln!(
        cfg,
        "  changed:\n    command: \"sleep 100000\"\n    env: {{ GENERATION: \"{generation}\" }}"
    );
    for i in 1..n {
        let _ = writeln!(
            cfg,
            "  p{i}:\n    command: [\"/bin/true\"]\n    interval: 1h"
        );
    }
    cfg
}

fn reload_config(n: usize, generation: usize) -> String {
    format!("{DAEMON}{}", reload_scripts(n, generation))
}

/// Scripts configured in the reload benchmarks.
const SCRIPTS: usize = 1000;
/// Changes made in the reload benchmarks.
const SAVES: usize = 200;
/// Pause before each change (changes back to back measure a daemon still busy with the
/// previous one: the table says which).
const SETTLE: Duration = Duration::from_millis(200);

/// Waits until every script of the daemon at `socket` ran once (the 1,000 first runs).
async fn settled(c: &mut ScriptdClient<tonic::transport::Channel>) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s = c
            .status(proto::StatusRequest::default())
            .await?
            .into_inner();
        if s.scripts.iter().all(|s| s.run_count >= 1) {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("scripts did not all start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per change: ms to `applied`, ms to the changed service's `started`, and the daemon's
/// own `detected` → `applied` ms.
#[derive(Default)]
struct Latencies {
    applied: Vec<f64>,
    started: Vec<f64>,
    processing: Vec<f64>,
}

impl Latencies {
    /// Reads `events` until the change made at `t0` is applied and the service started.
    async fn measure(
        &mut self,
        events: &mut tonic::Streaming<proto::Event>,
        t0: Instant,
    ) -> anyhow::Result<()> {
        let (mut a, mut s, mut detected_ms) = (None, None, None);
        while a.is_none() || s.is_none() {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .context("no event within 10 s")?
                .context("event stream ended")??;
            match ev.kind {
                Some(Kind::Reload(r)) if r.phase == ReloadPhase::Detected as i32 => {
                    detected_ms = Some(ev.time_ms)
                }
                Some(Kind::Reload(r)) if r.phase == ReloadPhase::Applied as i32 => {
                    a = Some(t0.elapsed());
                    if let Some(d) = detected_ms {
                        self.processing.push((ev.time_ms - d) as f64);
                    }
                }
                Some(Kind::Reload(r)) if r.phase == ReloadPhase::Rejected as i32 => {
                    bail!("reload rejected: {}", r.message)
                }
                Some(Kind::Script(e))
                    if e.script == "changed" && e.kind == ScriptEventKind::Started as i32 =>
                {
                    s = Some(t0.elapsed())
                }
                _ => {}
            }
        }
        self.applied.push(a.unwrap_or_default().as_secs_f64() * 1e3);
        self.started.push(s.unwrap_or_default().as_secs_f64() * 1e3);
        Ok(())
    }

    /// The table rows; `what`: the change (`save`, `put`), `how`: how they were made.
    fn rows(self, what: &str, how: &str, out: &mut String) -> anyhow::Result<()> {
        let (p50, p99, max) = stats(self.applied);
        writeln!(
            out,
            "| {what} → `applied` event, 1,000 scripts, 1 changed ({how}) | {p50:.1} ms | {p99:.1} ms | {max:.1} ms |"
        )?;
        let (p50, p99, max) = stats(self.started);
        writeln!(
            out,
            "| {what} → changed service running (`started` event) | {p50:.1} ms | {p99:.1} ms | {max:.1} ms |"
        )?;
        if !self.processing.is_empty() {
            let (p50, p99, max) = stats(self.processing);
            writeln!(
                out,
                "| of which `detected` → `applied` (daemon clock, 1 ms steps) | {p50:.0} ms | {p99:.0} ms | {max:.0} ms |"
            )?;
        }
        Ok(())
    }
}

fn bench_reload(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    let d = start(bins, &reload_config(SCRIPTS, 0))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = d.dir.path().join("scriptd.yaml");
    let latencies = rt.block_on(async {
        let mut c = connect(d.socket()).await?;
        settled(&mut c).await?;
        let mut events = c
            .events(proto::EventsRequest::default())
            .await?
            .into_inner();
        let mut latencies = Latencies::default();
        for g in 1..=SAVES {
            let text = reload_config(SCRIPTS, g);
            // A save to an idle daemon, as an edit is: the previous restart has settled.
            tokio::time::sleep(SETTLE).await;
            let t0 = Instant::now();
            write_atomic(&config, &text)?;
            latencies.measure(&mut events, t0).await?;
        }
        Ok::<_, anyhow::Error>(latencies)
    })?;
    let how = format!(
        "{SAVES} saves {} ms apart, default debounce 50 ms",
        SETTLE.as_millis()
    );
    latencies.rows("save", &how, out)
}

/// A single-node etcd on loopback in a temp dir, killed on drop.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_etcd() -> anyhow::Result<Etcd> {
    let dir = tempfile::tempdir()?;
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let child = Command::new("etcd")
        .args(["--name", "b", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("b={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start etcd (apt-get install etcd-server)")?;
    Ok(Etcd {
        child,
        _dir: dir,
        url,
    })
}

fn bench_etcd(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    use scriptd::source::etcd::client::{Client, Swap};
    const KEY: &str = "/scriptd/bench";
    let etcd = start_etcd()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&etcd.url, &Default::default()).await {
                Ok(c) if c.read(KEY).await.is_ok() => return Ok(c),
                _ if Instant::now() > end => bail!("etcd did not answer"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })?;
    // The key's mod revision, then a put of `text` made as of it (timed from `t0`).
    let revision = |c: &Client| {
        let c = c.clone();
        async move { Ok::<_, anyhow::Error>(c.read(KEY).await?.value.map_or(0, |(_, r)| r)) }
    };
    let put = |c: &Client, revision: i64, text: String| {
        let c = c.clone();
        async move {
            match c.swap(KEY, revision, text.into_bytes()).await? {
                Swap::Written(_) => Ok(()),
                Swap::Moved => bail!("someone else wrote {KEY}"),
            }
        }
    };
    rt.block_on(async {
        put(
            &client,
            revision(&client).await?,
            reload_scripts(SCRIPTS, 0),
        )
        .await
    })?;
    let bootstrap = format!(
        "{DAEMON}  source:\n    etcd:\n      endpoints: [\"{}\"]\n      key: {KEY}\n",
        etcd.url
    );
    let d = start(bins, &bootstrap)?;
    let latencies = rt.block_on(async {
        let mut c = connect(d.socket()).await?;
        settled(&mut c).await?;
        let mut events = c
            .events(proto::EventsRequest::default())
            .await?
            .into_inner();
        let mut latencies = Latencies::default();
        for g in 1..=SAVES {
            let text = reload_scripts(SCRIPTS, g);
            let at = revision(&client).await?;
            tokio::time::sleep(SETTLE).await;
            let t0 = Instant::now();
            put(&client, at, text).await?;
            latencies.measure(&mut events, t0).await?;
        }
        Ok::<_, anyhow::Error>(latencies)
    })?;
    let how = format!("{SAVES} puts {} ms apart", SETTLE.as_millis());
    latencies.rows("etcd put", &how, out)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

fn bench_rss(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    let mut cfg = format!("{DAEMON}scripts:\n");
    for i in 0..100 {
        writeln!(
            cfg,
            "  s{i}:\n    command: [\"/bin/true\"]\n    interval: 1h"
        )?;
    }
    let d = start(bins, &cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = connect(d.socket()).await?;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = c
                .status(proto::StatusRequest::default())
                .await?
                .into_inner();
            if s.scripts.iter().all(|s| s.last_exit.is_some()) {
                return Ok::<_, anyhow::Error>(());
            }
            if Instant::now() > end {
                bail!("scripts did not all run");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let kib = rss_kib(d.child.id())?;
    writeln!(
        out,
        "| daemon RSS, idle, 100 scripts configured (each ran once) | {:.1} MB | | |",
        kib as f64 / 1024.0
    )?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bins = PathBuf::from(
        args.next()
            .context("usage: scriptd-bench BIN_DIR [status|reload|rss|scrape|scale|etcd]...")?,
    );
    let mut which: Vec<String> = args.collect();
    if which.is_empty() {
        which = vec!["status".into(), "reload".into(), "rss".into()];
    }
    let mut out = String::from("| scenario | median | p99 | max |\n| --- | --- | --- | --- |\n");
    for w in &which {
        match w.as_str() {
            "status" => bench_status(&bins, &mut out)?,
            "reload" => bench_reload(&bins, &mut out)?,
            "rss" => bench_rss(&bins, &mut out)?,
            "scrape" => scrape::bench_scrape(&bins, &mut out)?,
            "scale" => scale::run(&bins, &mut out)?,
            "etcd" => bench_etcd(&bins, &mut out)?,
            other => bail!("unknown benchmark {other}"),
        }
    }
    print!("{out}");
    Ok(())
}
