//! `ctl logs [-f] NAME|GLOB...` over several scripts (or a glob): their lines interleaved,
//! each with the script's name (a first column in tables, `script` in JSON).
//!
//! Names and globs are resolved like the targets of `start` ([`crate::targets::resolve`]:
//! one that selects nothing is exit 4). The backlog of each script is fetched first
//! (at most 8 at a time) and merged by time, each script's lines kept in their order; with
//! `-f`, one follow per script then goes on exactly after the last line its backlog held
//! (`after_seq`), so no line is lost or repeated at the seam, and live lines are printed as
//! they arrive. `--run` and `--after-seq` are about one script's runs and sequence numbers:
//! with several scripts they are a usage error.

use crate::client::Client;
use crate::error::{CtlError, CtlResult, FAILURE, USAGE};
use crate::logs::{print_records, Ended, Format, LogsArgs};
use crate::targets;
use scriptd_common::proto;
use std::io::Write;
use tokio_stream::{StreamExt, StreamMap};

/// Where a script's follow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// After this sequence number.
    After(u64),
    /// From its first line: the script had none when asked.
    FromStart,
}

/// One script's backlog and where its follow starts.
struct Start {
    backlog: Vec<proto::LogLine>,
    resume: Resume,
}

/// Prints the lines of several scripts as `ctl logs` does for one.
pub async fn print(
    c: &mut Client,
    out: &mut impl Write,
    format: Format,
    args: &LogsArgs,
) -> CtlResult<Ended> {
    for (given, flag) in [
        (args.run.is_some(), "--run ID"),
        (args.after_seq.is_some(), "--after-seq SEQ"),
    ] {
        if given {
            return Err(CtlError::new(
                USAGE,
                format!("{flag} is about one script: name one script (not several or a glob)"),
            ));
        }
    }
    let scripts = targets::scripts(c).await?;
    let names: Vec<String> = targets::resolve(&args.scripts, false, &scripts)?
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let starts = names.iter().map(|name| {
        let (mut c, req) = (c.clone(), args.request(name));
        async move { start(&mut c, req).await }
    });
    let starts: Vec<Start> = targets::bounded(starts.collect())
        .await?
        .into_iter()
        .collect::<CtlResult<_>>()?;
    let mut live = StreamMap::new();
    if args.follow {
        for (i, (name, s)) in names.iter().zip(&starts).enumerate() {
            let mut req = proto::LogsRequest {
                follow: true,
                lines: 0,
                since_ms: 0,
                after_seq: 0,
                ..args.request(name)
            };
            match s.resume {
                Resume::After(seq) => req.after_seq = seq,
                // Every line it printed since it had none.
                Resume::FromStart => req.lines = u64::MAX,
            }
            let stream = c
                .logs(req)
                .await
                .map_err(|s| CtlError::from_status(s, FAILURE))?
                .into_inner();
            live.insert(i, stream);
        }
    }
    let backlog = merge_by_time(starts.into_iter().map(|s| s.backlog).collect());
    let mut lines = tokio_stream::iter(backlog.into_iter().map(Ok))
        .chain(live.map(|(i, item)| item.map(|l| (i, l))));
    let until = args.until_match.as_ref();
    print_records(&mut lines, out, format, &names, until, args.follow).await
}

/// One script's backlog (`req` without follow) and, when `req` follows, where its follow
/// starts: after the last line of the backlog; with none, after the script's last line of
/// any stream, asked for before the backlog (a line printed in between that the filters
/// select would have been in the backlog).
async fn start(c: &mut Client, req: proto::LogsRequest) -> CtlResult<Start> {
    let last_any = if req.follow {
        let probe = proto::LogsRequest {
            script: req.script.clone(),
            lines: 1,
            ..Default::default()
        };
        last_seq(&lines(c, probe).await?)
    } else {
        None
    };
    let wants_backlog = req.lines > 0 || req.since_ms > 0;
    let backlog = if wants_backlog {
        lines(
            c,
            proto::LogsRequest {
                follow: false,
                ..req
            },
        )
        .await?
    } else {
        Vec::new()
    };
    let resume = last_seq(&backlog)
        .or(last_any)
        .map_or(Resume::FromStart, Resume::After);
    Ok(Start { backlog, resume })
}

/// The lines a request without follow answers.
async fn lines(c: &mut Client, req: proto::LogsRequest) -> CtlResult<Vec<proto::LogLine>> {
    let mut stream = c
        .logs(req)
        .await
        .map_err(|s| CtlError::from_status(s, FAILURE))?
        .into_inner();
    let mut lines = Vec::new();
    while let Some(item) = stream.next().await {
        lines.push(item.map_err(|s| CtlError::from_status(s, FAILURE))?);
    }
    Ok(lines)
}

/// The sequence number of the last line (skip markers have none).
fn last_seq(lines: &[proto::LogLine]) -> Option<u64> {
    lines.iter().rev().map(|l| l.seq).find(|seq| *seq > 0)
}

/// The backlogs of several scripts as one list in order of time, each line with the index
/// of its script; each script's lines stay in their order, and lines of the same time come
/// in the order the scripts were named.
fn merge_by_time(backlogs: Vec<Vec<proto::LogLine>>) -> Vec<(usize, proto::LogLine)> {
    let total = backlogs.iter().map(Vec::len).sum();
    let mut heads: Vec<_> = backlogs
        .into_iter()
        .map(|b| b.into_iter().peekable())
        .collect();
    let mut merged = Vec::with_capacity(total);
    loop {
        let next = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.peek().map(|l| (l.time_ms, i)))
            .min();
        let Some((_, i)) = next else {
            return merged;
        };
        if let Some(l) = heads[i].next() {
            merged.push((i, l));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, time_ms: i64) -> proto::LogLine {
        proto::LogLine {
            seq,
            time_ms,
            ..Default::default()
        }
    }

    #[test]
    fn backlogs_merge_by_time_keeping_each_scripts_order() {
        // Per script its lines as (seq, time); the merged list as (script, seq).
        type Case = (Vec<Vec<(u64, i64)>>, Vec<(usize, u64)>);
        let table: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![vec![], vec![(1, 5)]], vec![(1, 1)]),
            (
                vec![vec![(1, 10), (2, 30)], vec![(7, 20), (8, 40)]],
                vec![(0, 1), (1, 7), (0, 2), (1, 8)],
            ),
            // Same time: the order named.
            (
                vec![vec![(1, 10)], vec![(5, 10)], vec![(9, 5)]],
                vec![(2, 9), (0, 1), (1, 5)],
            ),
            // A script's lines stay in their order even if a time goes back.
            (
                vec![vec![(1, 10), (2, 9)], vec![(5, 9)]],
                vec![(1, 5), (0, 1), (0, 2)],
            ),
        ];
        for (backlogs, want) in table {
            let input = backlogs
                .iter()
                .map(|b| b.iter().map(|(s, t)| line(*s, *t)).collect())
                .collect();
            let got: Vec<(usize, u64)> = merge_by_time(input)
                .into_iter()
                .map(|(i, l)| (i, l.seq))
                .collect();
            assert_eq!(got, want, "{backlogs:?}");
        }
    }

    #[test]
    fn the_last_seq_skips_markers() {
        let mut marker = line(0, 3);
        marker.skipped = 4;
        assert_eq!(last_seq(&[line(3, 1), marker]), Some(3));
        assert_eq!(last_seq(&[]), None);
    }
}
