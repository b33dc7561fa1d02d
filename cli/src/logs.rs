//! `ctl logs SCRIPT`: the last lines of a script's output, then with `-f` live lines.
//! Several names or globs: see [`crate::logs_many`].
//!
//! Output, one record per line:
//! - people (default): `TIME STREAM | text`, STREAM `out`, `err` (red on a terminal) or `sys`
//!   (the daemon's run started / ended lines); `+` after it marks a piece of an over-long
//!   line that goes on in the next record; control characters are shown escaped (`\x1b`);
//! - `--raw`: the bare text of stdout and stderr lines (pieces of a split line joined again,
//!   daemon lines left out, skip markers on stderr);
//! - `--output json`: one object per line with every field and `"schema": 1`.
//!
//! A reader too slow for a follow gets a marker (`N lines skipped`) in place of the lines it
//! missed. Output is flushed whenever no more lines are waiting, so a follower sees each line
//! as soon as it arrives; a closed pipe (`ctl logs -f x | head`) ends it quietly with 0 (see
//! `main`), at once, also when no line comes (see [`crate::reader`]).
//!
//! A follow ends by itself: with `--run ID` after the run's last line once it ended, with
//! `--until-match` at the first matching line (exit 6 when the stream ends first), with
//! `--timeout` when it passes first (exit 6).

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, NOT_FOUND, OK, OUTCOME, USAGE};
use crate::output::{colour_enabled, paint, time};
use clap::{Args, ValueEnum};
use regex::Regex;
use scriptd_common::proto::{self, LogStream};
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};

/// Lines of backlog when neither `-n`, `--since` nor `--after-seq` says otherwise.
pub const DEFAULT_LINES: u64 = 20;

/// Stream filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    /// The script's stdout.
    Stdout,
    /// The script's stderr.
    Stderr,
    /// The daemon's lines about runs (started, ended, timed out).
    System,
}

/// Flags of `ctl logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Script name; several names or globs ('web-*') interleave the scripts' lines with a
    /// name column (JSON: `script`).
    #[arg(value_name = "NAME", required = true)]
    pub scripts: Vec<String>,
    /// Keep printing lines as they are written, across log rotation and restarts of the
    /// script, until interrupted (or the script is removed).
    #[arg(short, long)]
    pub follow: bool,
    /// Print the last N lines first (0: none) [default: 20; with --since or --after-seq:
    /// every line they select].
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<u64>,
    /// Only lines written in the last DUR (`90s`, `5m`, `1h 30m`) or since a time
    /// (`2026-12-02T09:00:00Z`, local `2026-12-02 09:00:00`).
    #[arg(long, value_name = "DUR|TIME", value_parser = crate::output::time::parse_since)]
    pub since: Option<Duration>,
    /// Only lines after this sequence number: resumes exactly where an earlier reader
    /// stopped (the `seq` of `--output json`), reading the rotated files when needed.
    #[arg(long, value_name = "SEQ")]
    pub after_seq: Option<u64>,
    /// Only this stream (default: stdout, stderr and the daemon's lines).
    #[arg(long, value_enum)]
    pub stream: Option<StreamArg>,
    /// Only the lines of this run (the run id of `ctl run` or `ctl status`); with -f, end
    /// after its last line once it has ended.
    #[arg(long = "run", value_name = "ID")]
    pub run: Option<u64>,
    /// Print only the text of stdout and stderr lines, nothing added.
    #[arg(long)]
    pub raw: bool,
    /// End after the first stdout or stderr line matching REGEX (printed); exit 6 when the
    /// lines end first. The backlog counts: `-n 0` or `--run ID` to match only new lines.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    pub until_match: Option<Regex>,
    /// With -f: give up after DUR (exit 6) unless the follow ended by itself before.
    #[arg(long, value_name = "DUR", requires = "follow", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_regex(s: &str) -> Result<Regex, regex::Error> {
    Regex::new(s)
}

impl LogsArgs {
    /// The request these flags make for `script`.
    pub fn request(&self, script: &str) -> proto::LogsRequest {
        let default_lines = if self.since.is_some() || self.after_seq.is_some() {
            0
        } else {
            DEFAULT_LINES
        };
        proto::LogsRequest {
            script: script.to_owned(),
            lines: self.lines.unwrap_or(default_lines),
            follow: self.follow,
            since_ms: self.since.map_or(0, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
            after_seq: self.after_seq.unwrap_or(0),
            stream: match self.stream {
                None => LogStream::All,
                Some(StreamArg::Stdout) => LogStream::Stdout,
                Some(StreamArg::Stderr) => LogStream::Stderr,
                Some(StreamArg::System) => LogStream::System,
            } as i32,
            run_id: self.run.unwrap_or(0),
        }
    }
}

/// `ctl logs --output json`: one object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogLineJson {
    /// Always 1.
    pub schema: u32,
    /// Per-script sequence number (gapless, only grows); 0 on a skip marker.
    pub seq: u64,
    /// When the line was read, RFC 3339 (UTC, ms).
    pub time: Option<String>,
    /// The same, Unix ms.
    pub time_ms: i64,
    /// Run that printed it (0 on a skip marker).
    pub run_id: u64,
    /// `stdout`, `stderr` or `system` (the daemon's lines and skip markers).
    pub stream: String,
    /// Text (invalid UTF-8 replaced), without the line terminator.
    pub text: String,
    /// A piece of an over-long line that goes on in the next record.
    pub continued: bool,
    /// On a skip marker: how many lines this reader missed; 0 otherwise.
    pub skipped: u64,
    /// The script, when several are printed (`ctl logs 'web-*'`); absent for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// API spelling of a stream, in JSON.
pub fn stream_name(s: i32) -> &'static str {
    match LogStream::try_from(s).unwrap_or(LogStream::All) {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "system",
        LogStream::All => "unknown",
    }
}

impl From<&proto::LogLine> for LogLineJson {
    fn from(l: &proto::LogLine) -> Self {
        Self {
            schema: JSON_SCHEMA,
            seq: l.seq,
            time: time(l.time_ms),
            time_ms: l.time_ms,
            run_id: l.run_id,
            stream: stream_name(l.stream).into(),
            text: l.text.clone(),
            continued: l.continued,
            skipped: l.skipped,
            script: None,
        }
    }
}

/// Control characters (other than tab) as visible escapes, so a script's output cannot
/// drive the reader's terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `TIME STREAM | text`.
    Human {
        /// ANSI colours.
        colour: bool,
    },
    /// Bare text.
    Raw,
    /// One JSON object per line.
    Json,
}

/// Which script a line is from when several are printed: its name, and the width of the
/// name column in tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    /// Script name.
    pub name: &'a str,
    /// Width of the column (the longest name printed).
    pub width: usize,
}

/// Prints one record in `format`; in `Raw`, skip markers go to `err`.
pub fn print_line(
    out: &mut impl Write,
    err: &mut impl Write,
    format: Format,
    l: &proto::LogLine,
) -> std::io::Result<()> {
    print_named(out, err, format, None, l)
}

/// Prints one record in `format`, of script `name` when several are printed (a first
/// column in tables, `script` in JSON; nothing in `Raw`).
pub fn print_named(
    out: &mut impl Write,
    err: &mut impl Write,
    format: Format,
    name: Option<Name<'_>>,
    l: &proto::LogLine,
) -> std::io::Result<()> {
    if let (Some(n), Format::Human { .. }) = (name, format) {
        write!(out, "{:<width$} ", n.name, width = n.width)?;
    }
    match format {
        Format::Json => {
            let doc = LogLineJson {
                script: name.map(|n| n.name.to_owned()),
                ..LogLineJson::from(l)
            };
            serde_json::to_writer(&mut *out, &doc).map_err(std::io::Error::from)?;
            out.write_all(b"\n")
        }
        Format::Raw if l.skipped > 0 => {
            out.flush()?;
            writeln!(err, "ctl: {}", l.text)
        }
        Format::Raw if l.stream == LogStream::System as i32 => Ok(()),
        Format::Raw => {
            out.write_all(l.text.as_bytes())?;
            if !l.continued {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Human { colour } => {
            let when = crate::output::shown_time(l.time_ms, crate::output::time::Precision::Millis);
            let (label, code) = if l.skipped > 0 {
                ("sys", "33")
            } else {
                match LogStream::try_from(l.stream).unwrap_or(LogStream::All) {
                    LogStream::Stdout => ("out", ""),
                    LogStream::Stderr => ("err", "31"),
                    LogStream::System => ("sys", "36"),
                    LogStream::All => ("???", ""),
                }
            };
            let label = if l.continued {
                format!("{label}+")
            } else {
                label.to_owned()
            };
            let text = escape_controls(&l.text);
            if colour {
                let daemon = l.skipped > 0 || l.stream == LogStream::System as i32;
                let label = if code.is_empty() {
                    label
                } else {
                    paint(&label, code, true)
                };
                let text = if daemon {
                    Cow::Owned(paint(&text, code, true))
                } else {
                    text
                };
                writeln!(out, "{} {label} | {text}", paint(&when, "2", true))
            } else {
                writeln!(out, "{when} {label} | {text}")
            }
        }
    }
}

/// The format of `--output json` / `--raw` / tables.
pub fn format_of(json: bool, raw: bool) -> CtlResult<Format> {
    Ok(if json && raw {
        return Err(CtlError::new(
            USAGE,
            "--raw and --output json do not go together",
        ));
    } else if json {
        Format::Json
    } else if raw {
        Format::Raw
    } else {
        Format::Human {
            colour: colour_enabled(),
        }
    })
}

/// Runs `ctl logs`.
pub async fn run(c: &mut Client, out: &mut impl Write, json: bool, args: LogsArgs) -> CtlResult {
    let format = format_of(json, args.raw)?;
    let printing = async {
        match one_script(&args) {
            Some(_) if args.run == Some(0) => Err(CtlError::new(
                NOT_FOUND,
                "no run 0: run ids start at 1 (`ctl status` shows the latest)",
            )),
            Some(script) => {
                let mut stream = c
                    .logs(args.request(script))
                    .await
                    .map_err(|s| CtlError::from_status(s, FAILURE))?
                    .into_inner();
                let until = args.until_match.as_ref();
                print_stream(&mut stream, out, format, until, args.follow).await
            }
            None => crate::logs_many::print(c, out, format, &args).await,
        }
    };
    let ended = match args.timeout {
        Some(limit) => match tokio::time::timeout(limit, printing).await {
            Ok(ended) => ended?,
            Err(_) => {
                let what = match &args.until_match {
                    Some(re) => format!("no line matched {:?}", re.as_str()),
                    None => "the follow did not end".to_owned(),
                };
                return Err(CtlError::new(
                    OUTCOME,
                    format!(
                        "timeout: {what} within {}",
                        humantime::format_duration(limit)
                    ),
                ));
            }
        },
        None => printing.await?,
    };
    match (&args.until_match, ended) {
        (Some(re), Ended::Stream) => Err(CtlError::new(
            OUTCOME,
            format!(
                "stream-ended: no line matched {:?} before the lines ended",
                re.as_str()
            ),
        )),
        _ => Ok(OK),
    }
}

/// Why [`print_stream`] (or `print_records`, for several scripts) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The daemon ended the stream.
    Stream,
    /// A line matched the pattern.
    Matched,
}

/// The one plain name when that is all that was given: such a call keeps the output of one
/// script (no name column).
fn one_script(args: &LogsArgs) -> Option<&str> {
    match args.scripts.as_slice() {
        [name] if !crate::targets::is_glob(name) => Some(name),
        _ => None,
    }
}

/// Prints the lines of `stream` until it ends or (with `until`) a stdout or stderr line
/// matches; `follow`: also return (as a closed pipe) as soon as stdout's reader is gone.
pub async fn print_stream(
    stream: &mut tonic::Streaming<proto::LogLine>,
    out: &mut impl Write,
    format: Format,
    until: Option<&Regex>,
    follow: bool,
) -> CtlResult<Ended> {
    let mut lines = stream.map(|item| item.map(|l| (0, l)));
    print_records(&mut lines, out, format, &[], until, follow).await
}

/// [`print_stream`] of lines from several scripts: each item is the index of its script in
/// `names` (empty: one script, no name printed) and the line.
pub(crate) async fn print_records<S>(
    stream: &mut S,
    out: &mut impl Write,
    format: Format,
    names: &[String],
    until: Option<&Regex>,
    follow: bool,
) -> CtlResult<Ended>
where
    S: Stream<Item = Result<(usize, proto::LogLine), tonic::Status>> + Unpin,
{
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let gone = async {
        if follow {
            crate::reader::gone().await
        } else {
            std::future::pending().await
        }
    };
    tokio::pin!(gone);
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let mut err = std::io::stderr();
    let mut next = tokio::select! {
        item = stream.next() => item,
        () = &mut gone => return Err(CtlError::reader_gone()),
    };
    while let Some(item) = next {
        let (script, line) = item.map_err(|s| CtlError::from_status(s, FAILURE))?;
        let name = names.get(script).map(|name| Name { name, width });
        print_named(&mut out, &mut err, format, name, &line)?;
        if until.is_some_and(|re| is_output(&line) && re.is_match(&line.text)) {
            out.flush()?;
            return Ok(Ended::Matched);
        }
        // Flush once no more lines are waiting: a batch costs one write, and a follower
        // still sees every line at once.
        next = match ready_now(stream).await {
            Poll::Ready(item) => item,
            Poll::Pending => {
                out.flush()?;
                tokio::select! {
                    item = stream.next() => item,
                    () = &mut gone => return Err(CtlError::reader_gone()),
                }
            }
        };
    }
    out.flush()?;
    Ok(Ended::Stream)
}

/// A line the script wrote (stdout or stderr), not the daemon's nor a skip marker.
fn is_output(l: &proto::LogLine) -> bool {
    l.skipped == 0 && (l.stream == LogStream::Stdout as i32 || l.stream == LogStream::Stderr as i32)
}

/// The stream's next item if it is already there, without waiting.
async fn ready_now<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *s).poll_next(cx))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: LogStream, text: &str, continued: bool) -> proto::LogLine {
        proto::LogLine {
            seq: 7,
            time_ms: 1_700_000_000_123,
            run_id: 3,
            stream: stream as i32,
            text: text.into(),
            continued,
            skipped: 0,
        }
    }

    fn render(format: Format, lines: &[proto::LogLine]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for l in lines {
            print_line(&mut out, &mut err, format, l).expect("print");
        }
        (
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    }

    #[test]
    fn human_lines() {
        let (out, _) = render(
            Format::Human { colour: false },
            &[
                line(LogStream::Stdout, "hello", false),
                line(LogStream::Stderr, "bad\x1b[31m", true),
            ],
        );
        assert_eq!(
            out,
            "2023-11-14T22:13:20.123Z out | hello\n2023-11-14T22:13:20.123Z err+ | bad\\x1b[31m\n"
        );
    }

    #[test]
    fn raw_joins_pieces_and_drops_daemon_lines() {
        let mut marker = line(LogStream::System, "5 lines skipped", false);
        marker.skipped = 5;
        let (out, err) = render(
            Format::Raw,
            &[
                line(LogStream::System, "run 3 started", false),
                line(LogStream::Stdout, "ab", true),
                line(LogStream::Stdout, "cd", false),
                marker,
                line(LogStream::Stderr, "e", false),
            ],
        );
        assert_eq!(out, "abcd\ne\n");
        assert_eq!(err, "ctl: 5 lines skipped\n");
    }

    #[test]
    fn json_lines_round_trip_strictly() {
        let (out, _) = render(Format::Json, &[line(LogStream::Stderr, "x", false)]);
        let doc: LogLineJson = serde_json::from_str(out.trim_end()).expect("strict parse");
        assert_eq!(doc.schema, 1);
        assert_eq!(doc.stream, "stderr");
        assert_eq!(doc.seq, 7);
        assert_eq!(doc.time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
    }
}
