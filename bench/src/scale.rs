//! `scale` (issue 16): one daemon with 1,000 / 5,000 / 10,000 scripts, periodic and
//! services, and the follower fan-out, run by `bench/scale.sh`.
//!
//! Per number of scripts and kind (a fresh daemon each time):
//! - *start → answers*: from spawning `scriptd` to the first `Status` listing every script;
//!   *settled*: until every periodic script ran once / every service runs;
//! - *RSS*: the daemon's `VmRSS` once settled, and after the saves;
//! - *`ctl status`*: whole-process wall times of `ctl status` (table), `ctl -o json status`
//!   and `ctl status NAME`, alternating with `/bin/true` in the same rounds (medians);
//! - *save → running*: a save (rename into place) changing one service's env, to that
//!   service's `started` event, with the default 50 ms debounce; the first saves are timed,
//!   each after a pause (an edit reaches an idle daemon), the rest follow back to back
//!   (each after the previous `applied` event) to see whether the RSS stays flat;
//!   *daemon CPU per save*: its utime+stime over all saves, divided by their number.
//!
//! Followers (one daemon with one busy script): `SCALE_FOLLOWERS` `Logs` follow streams,
//! each an in-process gRPC client on its own connection (not a `ctl` process each: 1,000
//! processes would measure the machine's scheduler), of one run printing `SCALE_LINES`
//! lines that carry their write time; every line must reach every follower. The daemon's
//! CPU for the run with the followers minus the same run without any, per follower, and
//! this driver's own CPU for the run (its clients share the machine with the daemon).
//! Events: `SCALE_EVENT_FOLLOWERS` `Events` streams during `SCALE_EVENT_SAVES` saves,
//! each must see every save's `applied` event.
//!
//! Settings (environment, set by `bench/scale.sh`): `SCALE_SCRIPTS` (comma-separated,
//! default `1000,5000,10000`), `SCALE_FILES` (comma-separated, default `1`: a row per
//! number of files the scripts are spread over; more than one is a main file including
//! them, and a save rewrites the one holding `changed`), `SCALE_KINDS` (`periodic,services`), `SCALE_SAVES` (saves
//! per daemon, default 1000), `SCALE_TIMED` (of which timed, default 100), `SCALE_RUNS`
//! (`ctl` rounds, default 50), `SCALE_FOLLOWERS` (1000), `SCALE_LINES` (1000),
//! `SCALE_EVENT_FOLLOWERS` (100), `SCALE_EVENT_SAVES` (100). Progress goes to stderr.

use super::{connect, rss_kib, start, start_with, stats, write_atomic, Daemon, DAEMON};
use anyhow::{bail, Context};
use scriptd_common::proto::{
    self, event::Kind as EventKind, ControlAction, LogStream, ReloadPhase, ScriptEventKind,
    ScriptState,
};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;

type Client = proto::scriptd_client::ScriptdClient<tonic::transport::Channel>;

/// Pause before each timed save (as in `bench/run.sh`'s reload benchmark).
const SETTLE: Duration = Duration::from_millis(200);
/// The main file's name.
const MAIN: &str = "scriptd.yaml";
/// The longest wait for anything the daemon should do (start, settle, an event).
const PATIENCE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Periodic,
    Services,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Periodic => "periodic",
            Kind::Services => "services",
        }
    }

    /// `n` scripts: one service `changed` (the one each save changes) and `n - 1` others,
    /// each entry of the `scripts:` mapping.
    fn entries(self, n: usize, generation: usize) -> Vec<String> {
        let mut out = vec![format!(
            "  changed:\n    command: \"sleep 100000\"\n    env: {{ GENERATION: \"{generation}\" }}\n"
        )];
        out.extend((1..n).map(|i| match self {
            Kind::Periodic => format!("  p{i}:\n    command: [\"/bin/true\"]\n    interval: 1h\n"),
            Kind::Services => format!("  s{i}:\n    command: [\"/bin/sleep\", \"100000\"]\n"),
        }));
        out
    }

    /// The config as files, the main one first: with `split` ≤ 1 one file holding every
    /// script; else a main file including `conf.d/*.yaml` and the scripts spread over
    /// `split` files there, `changed` in the first (`conf.d/000.yaml`), which a save rewrites.
    fn files(self, n: usize, generation: usize, split: usize) -> Vec<(String, String)> {
        let entries = self.entries(n, generation);
        if split <= 1 {
            return vec![(
                MAIN.into(),
                format!("{DAEMON}scripts:\n{}", entries.concat()),
            )];
        }
        let mut out = vec![(
            MAIN.into(),
            format!("{DAEMON}include: [\"conf.d/*.yaml\"]\n"),
        )];
        let per = n.div_ceil(split);
        for (i, part) in entries.chunks(per).enumerate() {
            out.push((
                format!("conf.d/{i:03}.yaml"),
                format!("scripts:\n{}", part.concat()),
            ));
        }
        out
    }

    /// A script other than `changed`, for `ctl status NAME`.
    fn other(self) -> &'static str {
        match self {
            Kind::Periodic => "p1",
            Kind::Services => "s1",
        }
    }
}

struct Settings {
    scripts: Vec<usize>,
    /// How many files the scripts are spread over, per row (1: one file).
    files: Vec<usize>,
    kinds: Vec<Kind>,
    saves: usize,
    timed: usize,
    runs: usize,
    followers: usize,
    lines: usize,
    event_followers: usize,
    event_saves: usize,
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list of counts of at least `min` from the variable `name`
/// (`default` when it is not set).
fn counts(name: &str, default: &str, min: usize) -> anyhow::Result<Vec<usize>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.into());
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= min)
                .with_context(|| format!("{name}: {s:?} is not a number ≥ {min}"))
        })
        .collect()
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let scripts = counts("SCALE_SCRIPTS", "1000,5000,10000", 2)?;
        let files = counts("SCALE_FILES", "1", 1)?;
        let kinds = std::env::var("SCALE_KINDS").unwrap_or_else(|_| "periodic,services".into());
        let kinds = kinds
            .split(',')
            .map(|k| match k.trim() {
                "periodic" => Ok(Kind::Periodic),
                "services" => Ok(Kind::Services),
                other => bail!("SCALE_KINDS: {other:?} is neither periodic nor services"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let saves = env_usize("SCALE_SAVES", 1000)?;
        let timed = env_usize("SCALE_TIMED", 100)?.min(saves).max(1);
        Ok(Self {
            scripts,
            files,
            kinds,
            saves: saves.max(timed),
            timed,
            runs: env_usize("SCALE_RUNS", 50)?.max(1),
            followers: env_usize("SCALE_FOLLOWERS", 1000)?.max(1),
            lines: env_usize("SCALE_LINES", 1000)?.max(1),
            event_followers: env_usize("SCALE_EVENT_FOLLOWERS", 100)?.max(1),
            event_saves: env_usize("SCALE_EVENT_SAVES", 100)?.max(1),
        })
    }
}

/// The daemon's CPU time so far (utime + stime, /proc/PID/stat, in USER_HZ = 100 ticks).
fn cpu_ms(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/PID/stat without ')'")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .context("/proc/PID/stat: no utime/stime")
    };
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    Ok((tick(11)? + tick(12)?) * 10)
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The scripts' status, waiting until `done` holds for the answer.
async fn wait_status(
    c: &mut Client,
    what: &str,
    done: impl Fn(&proto::StatusResponse) -> bool,
) -> anyhow::Result<proto::StatusResponse> {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = c.status(proto::StatusRequest::default()).await {
            let r = r.into_inner();
            if done(&r) {
                return Ok(r);
            }
            if Instant::now() > end {
                let running = r
                    .scripts
                    .iter()
                    .filter(|s| s.state == ScriptState::Running as i32)
                    .count();
                bail!(
                    "{what}: not within {PATIENCE:?} ({} scripts, {running} running; at \
                     10,000 services the daemon needs ~30,000 descriptors: see `ulimit -Hn`)",
                    r.scripts.len()
                );
            }
        } else if Instant::now() > end {
            bail!("{what}: the daemon did not answer within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Medians of whole-process wall times, `ctl` variants and `/bin/true` alternating.
fn ctl_times(bins: &Path, d: &Daemon, other: &str, runs: usize) -> anyhow::Result<[f64; 4]> {
    let socket = d.socket();
    let ctl = bins.join("ctl");
    let s: &OsStr = socket.as_os_str();
    let variants: [(&Path, Vec<&OsStr>); 4] = [
        (&ctl, vec!["--socket".as_ref(), s, "status".as_ref()]),
        (
            &ctl,
            vec![
                "--socket".as_ref(),
                s,
                "-o".as_ref(),
                "json".as_ref(),
                "status".as_ref(),
            ],
        ),
        (
            &ctl,
            vec!["--socket".as_ref(), s, "status".as_ref(), other.as_ref()],
        ),
        (Path::new("/bin/true"), vec![]),
    ];
    let mut samples: [Vec<f64>; 4] = Default::default();
    for round in 0..runs + 3 {
        for (i, (program, args)) in variants.iter().enumerate() {
            let t = Instant::now();
            let st = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("{} {args:?} failed", program.display());
            }
            // The first three rounds warm up.
            if round >= 3 {
                samples[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(samples.map(|v| stats(v).0))
}

struct SaveFigures {
    started: (f64, f64, f64),
    cpu_per_save_ms: f64,
}

/// `total` saves changing the service `changed`; the first `timed` measured.
async fn saves(
    c: &mut Client,
    d: &Daemon,
    (kind, n, split): (Kind, usize, usize),
    total: usize,
    timed: usize,
) -> anyhow::Result<SaveFigures> {
    let pid = d.child.id();
    let mut events = c
        .events(proto::EventsRequest::default())
        .await?
        .into_inner();
    let mut started = Vec::new();
    let cpu0 = cpu_ms(pid)?;
    for g in 1..=total {
        // The file holding `changed`: the main file, or the first included one.
        let (name, text) = kind
            .files(n, g, split)
            .into_iter()
            .nth(usize::from(split > 1))
            .context("no file holds the changed script")?;
        let timing = g <= timed;
        if timing {
            tokio::time::sleep(SETTLE).await;
        }
        let t0 = Instant::now();
        write_atomic(&d.dir.path().join(name), &text)?;
        let (mut applied, mut run) = (false, false);
        while !(applied && (run || !timing)) {
            let ev = tokio::time::timeout(PATIENCE, events.next())
                .await
                .context("no event after a save")?
                .context("event stream ended")??;
            match ev.kind {
                Some(EventKind::Reload(r)) if r.phase == ReloadPhase::Applied as i32 => {
                    applied = true
                }
                Some(EventKind::Reload(r)) if r.phase == ReloadPhase::Rejected as i32 => {
                    bail!("save {g} rejected: {}", r.message)
                }
                Some(EventKind::Script(e))
                    if e.script == "changed"
                        && e.kind == ScriptEventKind::Started as i32
                        && !run =>
                {
                    run = true;
                    if timing {
                        started.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
                _ => {}
            }
        }
        if g % 100 == 0 {
            eprintln!("scale: {n} {}: {g} of {total} saves", kind.label());
        }
    }
    let cpu = cpu_ms(pid)? - cpu0;
    Ok(SaveFigures {
        started: stats(started),
        cpu_per_save_ms: cpu as f64 / total as f64,
    })
}

/// The hard descriptor limit the daemon will run with (it raises its soft limit to it),
/// from `/proc/self/limits`: the daemon inherits this process's.
fn hard_nofile() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|hard| hard.parse().ok())
        .context("/proc/self/limits: no hard limit of open files")
}

/// Descriptors `n` services keep open in the daemon: each running one's stdout and stderr
/// pipes and its log file, plus a margin for the daemon's own (history, watcher, sockets).
fn services_descriptors(n: usize) -> u64 {
    3 * n as u64 + 1000
}

fn scripts_row(
    bins: &Path,
    s: &Settings,
    (kind, n, split): (Kind, usize, usize),
    out: &mut String,
) -> anyhow::Result<()> {
    let label = if split > 1 {
        format!("{n} {} ({split} files)", kind.label())
    } else {
        format!("{n} {}", kind.label())
    };
    let need = services_descriptors(n);
    let hard = hard_nofile()?;
    if kind == Kind::Services && need > hard {
        // It would run into EMFILE and the row would wait out PATIENCE: say why instead.
        eprintln!("scale: {n} services skipped: need ~{need} descriptors, hard limit {hard}");
        writeln!(
            out,
            "| {n} services | not run: needs ~{need} descriptors, the hard `RLIMIT_NOFILE` here is {hard} (raising it needs CAP_SYS_RESOURCE) | | | | | | |"
        )?;
        return Ok(());
    }
    eprintln!("scale: {n} {} scripts: starting", kind.label());
    let t0 = Instant::now();
    let mut files = kind.files(n, 0, split);
    let (_, main) = files.remove(0);
    let d = start_with(bins, &main, &files)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c = rt.block_on(async {
        let end = Instant::now() + PATIENCE;
        loop {
            match connect(d.socket()).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > end => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })?;
    rt.block_on(wait_status(&mut c, "answering with every script", |r| {
        r.scripts.len() == n
    }))?;
    let answers = t0.elapsed().as_secs_f64();
    rt.block_on(wait_status(&mut c, "settling", |r| {
        r.scripts.iter().all(|s| match kind {
            Kind::Periodic if s.name != "changed" => s.last_exit.is_some(),
            _ => s.state == ScriptState::Running as i32,
        })
    }))?;
    let settled = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = rss_kib(d.child.id())?;
    eprintln!("scale: {n} {}: ctl status", kind.label());
    let [table, json, name, floor] = ctl_times(bins, &d, kind.other(), s.runs)?;
    eprintln!("scale: {n} {}: saves", kind.label());
    let f = rt.block_on(saves(&mut c, &d, (kind, n, split), s.saves, s.timed))?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(d.child.id())?;
    let (p50, p99, max) = f.started;
    writeln!(
        out,
        "| {label} | {answers:.2} s | {settled:.1} s | {:.1} MB | {:.1} MB ({} saves) | {table:.2} / {json:.2} / {name:.2} ms (`/bin/true` {floor:.2}) | {p50:.1} / {p99:.1} / {max:.1} ms ({} saves) | {:.1} ms |",
        mb(rss_start),
        mb(rss_after),
        s.saves,
        s.timed,
        f.cpu_per_save_ms,
    )?;
    Ok(())
}

/// The busy script's command: `lines` lines `I SECONDS.MICROS` (bash's `EPOCHREALTIME`,
/// the write time), about 250 a second.
fn busy_config(lines: usize, generation: usize) -> String {
    format!(
        "{DAEMON}scripts:\n  busy:\n    command: [\"/bin/bash\", \"-c\", \"for i in $(seq 1 {lines}); do echo \\\"$i $EPOCHREALTIME\\\"; sleep 0.004; done\"]\n    interval: 1h\n    enabled: false\n  changed:\n    command: [\"/bin/sleep\", \"100000\"]\n    env: {{ GENERATION: \"{generation}\" }}\n"
    )
}

/// Runs `busy` once and waits for the run to end (one `WaitRun` call: no polling that
/// would load the daemon meanwhile); the CPU of the daemon and of this driver meanwhile.
async fn busy_run(c: &mut Client, pid: u32) -> anyhow::Result<(u64, u64)> {
    let (cpu0, own0) = (cpu_ms(pid)?, cpu_ms(std::process::id())?);
    let run_id = c
        .control(proto::ControlRequest {
            script: "busy".into(),
            action: ControlAction::Run as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .run_id;
    tokio::time::timeout(
        PATIENCE,
        c.wait_run(proto::WaitRunRequest {
            script: "busy".into(),
            run_id,
        }),
    )
    .await
    .context("the busy script's run did not end")??;
    Ok((cpu_ms(pid)? - cpu0, cpu_ms(std::process::id())? - own0))
}

/// One follower's stream: the lines of the next run of `busy` and their delays (ms).
async fn follow(
    mut stream: tonic::Streaming<proto::LogLine>,
    lines: usize,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let (mut seen, mut delays) = (0, Vec::with_capacity(lines));
    while seen < lines {
        let line = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .context("no line")?
            .context("log stream ended")??;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let Some((_, written)) = line.text.trim_end().split_once(' ') else {
            continue;
        };
        if let Ok(written) = written.parse::<f64>() {
            seen += 1;
            delays.push((now - written) * 1e3);
        }
    }
    Ok((seen, delays))
}

fn followers(bins: &Path, s: &Settings, out: &mut String) -> anyhow::Result<()> {
    eprintln!("scale: {} log followers", s.followers);
    let d = start(bins, &busy_config(s.lines, 0))?;
    let pid = d.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = connect(d.socket()).await?;
        wait_status(&mut c, "answering", |r| r.scripts.len() == 2).await?;
        let (alone, _) = busy_run(&mut c, pid).await?;
        // Each stream is open (the daemon answered the call) before the run starts.
        let mut tasks = Vec::with_capacity(s.followers);
        for _ in 0..s.followers {
            let mut f = connect(d.socket()).await?;
            let stream = f
                .logs(proto::LogsRequest {
                    script: "busy".into(),
                    follow: true,
                    stream: LogStream::Stdout as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            tasks.push(tokio::spawn(follow(stream, s.lines)));
        }
        let (with, driver) = busy_run(&mut c, pid).await?;
        let (mut complete, mut fewest, mut delays) = (0, usize::MAX, Vec::new());
        for t in tasks {
            let (seen, d) = t.await??;
            complete += usize::from(seen == s.lines);
            fewest = fewest.min(seen);
            delays.extend(d);
        }
        let (p50, p99, max) = stats(delays);
        let per = with.saturating_sub(alone) as f64 / s.followers as f64;
        writeln!(
            out,
            "| {} `Logs` followers of one script printing {} lines | {complete} of {} got every line (fewest {fewest}) | {p50:.2} / {p99:.2} / {max:.1} ms | {with} ms with them, {alone} ms without: {per:.2} ms per follower (this driver's {} clients: {driver} ms) |",
            s.followers, s.lines, s.followers, s.followers
        )?;
        Ok::<_, anyhow::Error>(())
    })?;
    rt.block_on(async {
        eprintln!("scale: {} event followers", s.event_followers);
        let mut streams = Vec::with_capacity(s.event_followers);
        for _ in 0..s.event_followers {
            let mut c = connect(d.socket()).await?;
            streams.push(c.events(proto::EventsRequest::default()).await?.into_inner());
        }
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|mut st| {
                let want = s.event_saves;
                tokio::spawn(async move {
                    let mut applied = 0;
                    while applied < want {
                        match tokio::time::timeout(PATIENCE, st.next()).await {
                            Ok(Some(Ok(ev))) => {
                                if matches!(ev.kind, Some(EventKind::Reload(r)) if r.phase == ReloadPhase::Applied as i32)
                                {
                                    applied += 1
                                }
                            }
                            _ => break,
                        }
                    }
                    applied
                })
            })
            .collect();
        let mut c = connect(d.socket()).await?;
        let config = d.dir.path().join("scriptd.yaml");
        let mut events = c.events(proto::EventsRequest::default()).await?.into_inner();
        for g in 1..=s.event_saves {
            write_atomic(&config, &busy_config(s.lines, g))?;
            loop {
                let ev = tokio::time::timeout(PATIENCE, events.next())
                    .await
                    .context("no event after a save")?
                    .context("event stream ended")??;
                if matches!(ev.kind, Some(EventKind::Reload(r)) if r.phase == ReloadPhase::Applied as i32)
                {
                    break;
                }
            }
        }
        let (mut all, mut fewest) = (0, usize::MAX);
        for t in tasks {
            let seen = t.await?;
            all += usize::from(seen == s.event_saves);
            fewest = fewest.min(seen);
        }
        writeln!(
            out,
            "| {} `Events` followers during {} saves | {all} of {} saw every `applied` event (fewest {fewest}) | | |",
            s.event_followers, s.event_saves, s.event_followers
        )?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// The scale benchmark: the scripts table, then the followers table.
pub fn run(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    // Run alone, the driver's generic header would stand above an empty table.
    if out.lines().count() <= 2 {
        out.clear();
    }
    out.push_str(
        "| scripts | start → answers | settled (all ran / all running) | daemon RSS settled | RSS after the saves | `ctl status` table / JSON / NAME, median | save → changed script running, p50 / p99 / max | daemon CPU per save |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &kind in &s.kinds {
        for &n in &s.scripts {
            for &split in &s.files {
                scripts_row(bins, &s, (kind, n, split), out)?;
            }
        }
    }
    out.push_str(
        "\n| followers | delivered | follow delay p50 / p99 / max | daemon CPU for the run |\n| --- | --- | --- | --- |\n",
    );
    followers(bins, &s, out)
}
