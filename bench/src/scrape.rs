//! `scrape`: the daemon CPU time one `GET /metrics` costs with 1,000 running scripts, from
//! the daemon's `/proc/PID/stat` (user + system) before and after a series of scrapes,
//! minus what the daemon used in an equally long window without scrapes. Two series: each
//! scrape a second apart (each one samples `/proc` anew: the cost a Prometheus scraping
//! every 15 s sees) and back to back (the `/proc` sample reused within its second: the
//! cost of encoding alone).

use super::{start, DAEMON};
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Scripts configured.
const SCRIPTS: usize = 1000;

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')').context("stat without a command")? + 1..)
        .context("short stat")?
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Clock ticks are 100 a second on Linux (USER_HZ).
    Ok(ticks as f64 / 100.0)
}

fn get(agent: &ureq::Agent, url: &str) -> anyhow::Result<String> {
    Ok(agent.get(url).call()?.body_mut().read_to_string()?)
}

/// Daemon CPU ms per scrape over `n` scrapes `gap` apart, minus its CPU in the same time
/// without scrapes; and the exposition's size.
fn series(
    pid: u32,
    agent: &ureq::Agent,
    url: &str,
    n: usize,
    gap: Duration,
) -> anyhow::Result<(f64, usize)> {
    let idle_start = cpu_seconds(pid)?;
    let t = Instant::now();
    std::thread::sleep(gap * n as u32);
    let idle = (cpu_seconds(pid)? - idle_start) / t.elapsed().as_secs_f64();
    let start = cpu_seconds(pid)?;
    let t = Instant::now();
    let mut size = 0;
    for _ in 0..n {
        let next = Instant::now() + gap;
        size = get(agent, url)?.len();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let used = cpu_seconds(pid)? - start - idle * t.elapsed().as_secs_f64();
    Ok((used.max(0.0) * 1e3 / n as f64, size))
}

/// Runs the benchmark; appends its rows to `out`.
pub fn bench_scrape(bins: &Path, out: &mut String) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cfg = format!("{DAEMON}  metrics: 127.0.0.1:{port}\nscripts:\n");
    for i in 0..SCRIPTS {
        writeln!(cfg, "  s{i}:\n    command: [\"/bin/sleep\", \"100000\"]")?;
    }
    let d = start(bins, &cfg)?;
    let pid = d.child.id();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    // Every script running and sampled: a process count for each.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let text = get(&agent, &url).unwrap_or_default();
        let sampled = text
            .lines()
            .filter(|l| l.starts_with("scriptd_script_processes{"))
            .count();
        if sampled == SCRIPTS {
            break;
        }
        if Instant::now() > end {
            bail!("only {sampled} of {SCRIPTS} scripts running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (fresh, size) = series(pid, &agent, &url, 30, Duration::from_millis(1050))?;
    writeln!(
        out,
        "| `GET /metrics`, {SCRIPTS} running scripts, /proc sampled anew (30 scrapes 1.05 s apart; \
         {} KiB exposition) | {fresh:.1} ms daemon CPU per scrape | | |",
        size / 1024
    )?;
    let (cached, _) = series(pid, &agent, &url, 200, Duration::from_millis(20))?;
    writeln!(
        out,
        "| `GET /metrics`, {SCRIPTS} running scripts, /proc sample reused (200 scrapes 20 ms apart) \
         | {cached:.1} ms daemon CPU per scrape | | |"
    )?;
    Ok(())
}
