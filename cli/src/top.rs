//! `ctl top`: what each running script's process group uses, refreshed every second like
//! `top`, sorted by CPU (or memory, or name). One snapshot and exit when stdout is not a
//! terminal, with `-n 1`, or with `--output json`.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, OK};
use crate::output::{paint, state_name};
use crate::resources::{bytes, cpu_time, percent, ResourcesJson};
use clap::{Args, ValueEnum};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use scriptd_common::proto::{self, ScriptStatus};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// How often the screen is refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The order of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// CPU use, highest first.
    Cpu,
    /// Resident memory, highest first.
    Mem,
    /// Script name.
    Name,
}

/// `ctl top` flags.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Order of the rows (keys c, m, n switch it while it runs).
    #[arg(long, value_enum, default_value_t = SortBy::Cpu)]
    pub sort: SortBy,
    /// Refresh this many times, then exit [default: until q; 1 when stdout is not a
    /// terminal].
    #[arg(short = 'n', long = "iterations", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

/// `ctl top --output json`: one snapshot.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopJson {
    /// Always 1.
    pub schema: u32,
    /// The order of `scripts`.
    pub sort: SortBy,
    /// The daemon's own use.
    pub daemon: Option<ResourcesJson>,
    /// Every running script, in `sort` order.
    pub scripts: Vec<TopRowJson>,
}

/// One running script in `ctl top --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopRowJson {
    /// Name.
    pub name: String,
    /// Pid of its process group leader.
    pub pid: u32,
    /// What its process group uses.
    pub resources: ResourcesJson,
}

/// The running scripts that were sampled, in `sort` order (ties by name).
pub fn rows(scripts: &[ScriptStatus], sort: SortBy) -> Vec<(&ScriptStatus, &proto::Resources)> {
    let mut rows: Vec<_> = scripts
        .iter()
        .filter_map(|s| Some((s, s.resources.as_ref()?)))
        .collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        let by = match sort {
            SortBy::Cpu => rb.cpu_percent.total_cmp(&ra.cpu_percent),
            SortBy::Mem => rb.rss_bytes.cmp(&ra.rss_bytes),
            SortBy::Name => std::cmp::Ordering::Equal,
        };
        by.then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// The snapshot as JSON.
pub fn json(r: &proto::StatusResponse, sort: SortBy) -> TopJson {
    TopJson {
        schema: JSON_SCHEMA,
        sort,
        daemon: r.daemon_resources.as_ref().map(ResourcesJson::from),
        scripts: rows(&r.scripts, sort)
            .into_iter()
            .map(|(s, res)| TopRowJson {
                name: s.name.clone(),
                pid: s.pid,
                resources: ResourcesJson::from(res),
            })
            .collect(),
    }
}

/// The screen: a summary line, then a row per running script, at most `max_rows` of them.
pub fn screen(r: &proto::StatusResponse, sort: SortBy, max_rows: usize, colour: bool) -> String {
    let running = rows(&r.scripts, sort);
    let daemon = r.daemon_resources.as_ref().map_or(String::new(), |d| {
        format!(
            " · daemon cpu {}% mem {} fds {}",
            percent(d.cpu_percent),
            bytes(d.rss_bytes),
            d.fds
        )
    });
    let sort_name = match sort {
        SortBy::Cpu => "cpu",
        SortBy::Mem => "mem",
        SortBy::Name => "name",
    };
    let mut out = format!(
        "scriptd pid {} · version {} · {} scripts, {} running{daemon} · sorted by {sort_name}\n\n",
        r.daemon_pid,
        r.running_version,
        r.scripts.len(),
        running.len(),
    );
    let mut builder = tabled::builder::Builder::default();
    builder.push_record([
        "NAME", "PID", "STATE", "CPU %", "MEM", "PROCS", "FDS", "TIME+",
    ]);
    for (s, res) in running.iter().take(max_rows) {
        let state = state_name(s.state);
        builder.push_record([
            s.name.clone(),
            s.pid.to_string(),
            paint(state, "32", colour),
            percent(res.cpu_percent),
            bytes(res.rss_bytes),
            res.processes.to_string(),
            res.fds.to_string(),
            cpu_time(res.cpu_seconds),
        ]);
    }
    let mut table = builder.build();
    table.with(tabled::settings::Style::blank());
    out.push_str(&table.to_string());
    out.push('\n');
    if running.len() > max_rows {
        out.push_str(&format!("… {} more\n", running.len() - max_rows));
    }
    out
}

async fn snapshot(c: &mut Client) -> Result<proto::StatusResponse, CtlError> {
    Ok(c.status(proto::StatusRequest {
        script: String::new(),
        resources: true,
    })
    .await
    .map_err(|s| CtlError::from_status(s, FAILURE))?
    .into_inner())
}

/// Runs `ctl top`.
pub async fn run(
    c: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    args: &TopArgs,
) -> CtlResult {
    let interactive = !json_out && std::io::stdout().is_terminal() && args.iterations != Some(1);
    if !interactive {
        let r = snapshot(c).await?;
        if json_out {
            crate::print_json(out, &json(&r, args.sort))?;
        } else {
            write!(out, "{}", screen(&r, args.sort, usize::MAX, false))?;
        }
        return Ok(OK);
    }
    let _screen = Screen::enter()?;
    let mut sort = args.sort;
    let mut left = args.iterations;
    loop {
        let r = snapshot(c).await?;
        let rows = terminal::size().map_or(usize::MAX, |(_, h)| usize::from(h).saturating_sub(5));
        let text = screen(&r, sort, rows, crate::output::colour_enabled());
        execute!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        // Raw mode: lines need their carriage return.
        write!(out, "{}", text.replace('\n', "\r\n"))?;
        write!(out, "q quits · c, m, n sort by cpu, memory, name\r\n")?;
        out.flush()?;
        if let Some(n) = left.as_mut() {
            *n -= 1;
            if *n == 0 {
                return Ok(OK);
            }
        }
        match next_key(REFRESH).await? {
            Some(Key::Quit) => return Ok(OK),
            Some(Key::Sort(s)) => sort = s,
            None => {}
        }
    }
}

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    Sort(SortBy),
}

fn key(k: KeyEvent) -> Option<Key> {
    match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
        KeyCode::Char('q') | KeyCode::Esc => Some(Key::Quit),
        KeyCode::Char('c') => Some(Key::Sort(SortBy::Cpu)),
        KeyCode::Char('m') => Some(Key::Sort(SortBy::Mem)),
        KeyCode::Char('n') => Some(Key::Sort(SortBy::Name)),
        _ => None,
    }
}

/// The first key that means something within `wait` (read on a blocking thread: the
/// terminal is polled, not the runtime).
async fn next_key(wait: Duration) -> Result<Option<Key>, CtlError> {
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Key>> {
        let until = std::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !crossterm::event::poll(left)? {
                return Ok(None);
            }
            if let Event::Key(k) = crossterm::event::read()? {
                if let Some(k) = key(k) {
                    return Ok(Some(k));
                }
            }
        }
    });
    read.await
        .map_err(|e| CtlError::new(FAILURE, format!("reading the keyboard failed: {e}")))?
        .map_err(|e| CtlError::new(FAILURE, format!("reading the keyboard failed: {e}")))
}

/// The terminal in raw mode on the alternate screen, put back when dropped: on `q`, on an
/// error, on a panic.
struct Screen;

impl Screen {
    fn enter() -> Result<Self, CtlError> {
        terminal::enable_raw_mode()
            .map_err(|e| CtlError::new(FAILURE, format!("cannot set up the terminal: {e}")))?;
        let screen = Self;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(|e| CtlError::new(FAILURE, format!("cannot set up the terminal: {e}")))?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str, cpu: f64, rss: u64) -> ScriptStatus {
        ScriptStatus {
            name: name.into(),
            pid: 10,
            state: proto::ScriptState::Running as i32,
            resources: Some(proto::Resources {
                cpu_seconds: cpu,
                cpu_percent: cpu,
                rss_bytes: rss,
                processes: 1,
                fds: 3,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rows_sorted_by_what_was_asked() {
        let scripts = vec![
            script("a", 5.0, 300),
            script("b", 90.0, 100),
            ScriptStatus {
                name: "idle".into(),
                ..Default::default()
            },
            script("c", 5.0, 200),
        ];
        let names = |sort| -> Vec<&str> {
            rows(&scripts, sort)
                .into_iter()
                .map(|(s, _)| s.name.as_str())
                .collect()
        };
        assert_eq!(names(SortBy::Cpu), ["b", "a", "c"]);
        assert_eq!(names(SortBy::Mem), ["a", "c", "b"]);
        assert_eq!(names(SortBy::Name), ["a", "b", "c"]);
        let r = proto::StatusResponse {
            scripts,
            ..Default::default()
        };
        let text = serde_json::to_string(&json(&r, SortBy::Mem)).expect("json");
        let back: TopJson = serde_json::from_str(&text).expect("strict parse");
        assert_eq!(back.sort, SortBy::Mem);
        assert_eq!(back.scripts.len(), 3);
        let shown = screen(&r, SortBy::Cpu, 2, false);
        assert!(shown.contains("4 scripts, 3 running"), "{shown}");
        assert!(shown.contains("… 1 more"), "{shown}");
    }

    #[test]
    fn keys() {
        let k = |code, modifiers| key(KeyEvent::new(code, modifiers));
        assert_eq!(k(KeyCode::Char('q'), KeyModifiers::NONE), Some(Key::Quit));
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Quit)
        );
        assert_eq!(k(KeyCode::Esc, KeyModifiers::NONE), Some(Key::Quit));
        assert_eq!(
            k(KeyCode::Char('m'), KeyModifiers::NONE),
            Some(Key::Sort(SortBy::Mem))
        );
        assert_eq!(k(KeyCode::Char('x'), KeyModifiers::NONE), None);
    }
}
