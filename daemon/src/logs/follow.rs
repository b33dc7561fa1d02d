//! Serving one `Logs` request: what it asks for ([`Query`]), the backlog (from the files when
//! it reaches back before memory, then from memory), then with `follow` live lines ([`Lines`]).
//!
//! The backlog and a follower's catch-up from the files are read by a task of their own (file
//! reads go to blocking threads) and reach the response stream in batches over a channel.
//! Live lines take no task: the response stream itself takes them from the sink when the
//! server polls it, and waits in the sink's list of waiting readers, which the next append
//! wakes. A line on its way to a follower so costs one wake-up of the task that writes the
//! response (there were two, with a task and a channel in between), which matters when a
//! thousand followers watch one busy script.

use super::backlog::FileReader;
use super::counters::LogCounters;
use super::sink::{Following, LogSink, Start, Taken, Waiting};
use super::{record::LineRef, record::Stream, BATCH_BYTES, BATCH_LINES};
use scriptd_common::proto;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::Status;

/// What a `Logs` request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The last N matching lines of backlog (0: none, or all with `after_seq`/`since_ms`).
    pub lines: u64,
    /// Go on with live lines after the backlog.
    pub follow: bool,
    /// Only lines after this seq (0: not set).
    pub after_seq: u64,
    /// Only lines read at or after this Unix ms time.
    pub since_ms: Option<i64>,
    /// Only this stream.
    pub stream: Option<Stream>,
    /// Only this run (0: any).
    pub run_id: u64,
}

impl Query {
    /// The query of a `Logs` request; `now_ms` anchors `since_ms`.
    pub fn from_request(r: &proto::LogsRequest, now_ms: i64) -> Result<Self, Status> {
        let stream = match proto::LogStream::try_from(r.stream) {
            Ok(proto::LogStream::All) => None,
            Ok(proto::LogStream::Stdout) => Some(Stream::Stdout),
            Ok(proto::LogStream::Stderr) => Some(Stream::Stderr),
            Ok(proto::LogStream::System) => Some(Stream::System),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown stream {}",
                    r.stream
                )))
            }
        };
        Ok(Self {
            lines: r.lines,
            follow: r.follow,
            after_seq: r.after_seq,
            since_ms: (r.since_ms > 0)
                .then(|| now_ms.saturating_sub(i64::try_from(r.since_ms).unwrap_or(i64::MAX))),
            stream,
            run_id: r.run_id,
        })
    }

    pub(super) fn wants_backlog(&self) -> bool {
        self.lines > 0 || self.after_seq > 0 || self.since_ms.is_some()
    }

    pub(super) fn matches_raw(&self, seq: u64, run_id: u64, stream: Stream) -> bool {
        seq > self.after_seq
            && (self.run_id == 0 || self.run_id == run_id)
            && self.stream.is_none_or(|s| s == stream)
    }

    pub(super) fn matches(&self, l: &LineRef<'_>) -> bool {
        self.matches_raw(l.seq, l.run_id, l.stream) && self.since_ms.is_none_or(|c| l.time_ms >= c)
    }
}

type Item = Result<proto::LogLine, Status>;

/// Resolves once the run a follower is limited to has ended (its last line is in the sink by
/// then): the follower ends after that line.
pub type RunEnd = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the task reading backlog or catch-up sends the response stream.
enum Msg {
    /// Lines, in order.
    Lines(Vec<Item>),
    /// Done: live lines from here on.
    Live(Box<Live>),
}

/// Lines on their way to one client from the task reading backlog or catch-up, sent in
/// batches: one channel operation (and at most one wake-up) per batch instead of per line.
struct Out {
    tx: mpsc::Sender<Msg>,
    batch: Vec<Item>,
    bytes: usize,
    /// Where skip markers sent to this reader are counted.
    counters: Arc<LogCounters>,
}

impl Out {
    fn new(tx: mpsc::Sender<Msg>, counters: Arc<LogCounters>) -> Self {
        Self {
            tx,
            batch: Vec::new(),
            bytes: 0,
            counters,
        }
    }

    /// Adds a line; true when the batch is full and should be sent.
    fn push(&mut self, l: proto::LogLine) -> bool {
        if l.skipped > 0 {
            self.counters.skipped(l.skipped);
        }
        self.bytes += l.text.len() + 32;
        self.batch.push(Ok(l));
        self.batch.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    /// Sends what is batched; false when the client left.
    async fn flush(&mut self) -> bool {
        self.bytes = 0;
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.tx.send(Msg::Lines(batch)).await.is_ok()
    }
}

/// A follower's live state: where it is in the sink and when it ends.
struct Live {
    following: Following,
    q: Query,
    /// The next seq wanted.
    cursor: u64,
    /// Ends the follower once resolved (a follower of one run).
    run_end: Option<RunEnd>,
    /// `run_end` resolved: the takes from then on see every line the run wrote, and the
    /// follower ends at the first that finds nothing new.
    run_over: bool,
    /// Its place in the sink's list of waiting readers.
    waiting: Waiting,
}

impl Live {
    fn sink(&self) -> &LogSink {
        &self.following.0
    }
}

/// Where a `Logs` response's lines come from now.
enum Source {
    /// The task reading the backlog or a catch-up from the files.
    Task(mpsc::Receiver<Msg>),
    /// The sink, taken from by the stream itself.
    Live(Box<Live>),
    /// Nothing more.
    Done,
}

/// The response stream of a `Logs` call: the backlog and catch-up batches a task sends, then
/// live lines taken straight from the sink, one line at a time.
pub struct Lines {
    source: Source,
    /// The batch from the task being sent.
    sent: std::vec::IntoIter<Item>,
    /// The lines from memory being sent (backlog or live).
    lines: std::vec::IntoIter<proto::LogLine>,
}

impl tokio_stream::Stream for Lines {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.sent.next() {
                return Poll::Ready(Some(item));
            }
            if let Some(line) = this.lines.next() {
                return Poll::Ready(Some(Ok(line)));
            }
            match &mut this.source {
                Source::Done => return Poll::Ready(None),
                Source::Task(rx) => match rx.poll_recv(cx) {
                    Poll::Ready(Some(Msg::Lines(batch))) => this.sent = batch.into_iter(),
                    Poll::Ready(Some(Msg::Live(live))) => this.source = Source::Live(live),
                    Poll::Ready(None) => this.source = Source::Done,
                    Poll::Pending => return Poll::Pending,
                },
                Source::Live(live) => match poll_live(live, cx) {
                    Poll::Ready(Step::Lines(batch)) => this.lines = batch.into_iter(),
                    Poll::Ready(Step::Behind(reader)) => {
                        if let Source::Live(live) =
                            std::mem::replace(&mut this.source, Source::Done)
                        {
                            this.source = Source::Task(catch_up(live, reader));
                        }
                    }
                    Poll::Ready(Step::End) => this.source = Source::Done,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

/// What a poll of the live source gives.
enum Step {
    /// Live lines (maybe none, when none matched the query).
    Lines(Vec<proto::LogLine>),
    /// The follower fell behind memory: what it missed is read from the files.
    Behind(FileReader),
    /// The sink closed, or the run followed ended, and every line was taken.
    End,
}

/// Takes the next live lines from the sink; when there are none, the task waits in the
/// sink's list (registered under the same lock as the take, so no append is missed) or for
/// the end of the run followed.
fn poll_live(l: &mut Live, cx: &mut Context<'_>) -> Poll<Step> {
    if !l.run_over && l.sink().listed(&l.waiting, cx.waker()) {
        // Nothing new since the last take: only the run's end may have come.
        match l.run_end.as_mut().map(|f| f.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                l.run_over = true;
                l.run_end = None;
            }
            _ => return Poll::Pending,
        }
    }
    loop {
        match l
            .following
            .0
            .take(l.cursor, &l.q, &mut l.waiting, cx.waker())
        {
            Taken::Behind { files, front } => {
                let catch_up = Query {
                    after_seq: l.q.after_seq.max(l.cursor - 1),
                    ..l.q.clone()
                };
                let reader = FileReader::new(files, catch_up, front, None, Some(l.cursor));
                l.cursor = front;
                return Poll::Ready(Step::Behind(reader));
            }
            Taken::Lines { batch, covered, .. } if covered > 0 => {
                l.cursor += covered;
                return Poll::Ready(Step::Lines(batch));
            }
            Taken::Lines { closed, .. } => {
                if closed || l.run_over {
                    return Poll::Ready(Step::End);
                }
                match l.run_end.as_mut().map(|f| f.as_mut().poll(cx)) {
                    // Take again: that take sees every line the ended run wrote.
                    Some(Poll::Ready(())) => {
                        l.run_over = true;
                        l.run_end = None;
                    }
                    _ => return Poll::Pending,
                }
            }
        }
    }
}

/// Starts serving one `Logs` request: the backlog (from the files when it reaches back
/// before memory, then from memory), then with `follow` live lines, across rotation and
/// restarts of the script, until the client leaves or the script is gone, or `run_end`
/// resolves (a follower of one run).
pub fn stream(sink: Arc<LogSink>, q: Query, run_end: Option<RunEnd>) -> Lines {
    let Start {
        mem,
        files,
        file_need,
        front,
        end,
        following,
    } = sink.start(&q);
    let live = following.map(|following| {
        Box::new(Live {
            following,
            q: q.clone(),
            cursor: end,
            run_end,
            run_over: false,
            waiting: Waiting::default(),
        })
    });
    let source = match (files, live) {
        // Backlog from memory only, then live: no task.
        (None, live) => live.map_or(Source::Done, Source::Live),
        (Some(files), live) => {
            // A resume (`after_seq` without a line count) is told about lines that are gone.
            let gap_from = (q.after_seq > 0 && q.lines == 0).then(|| q.after_seq + 1);
            let reader = FileReader::new(files, q, front, file_need, gap_from);
            let (tx, rx) = mpsc::channel(4);
            let out = Out::new(tx, sink.counters.clone());
            tokio::spawn(backlog_task(out, reader, mem, live));
            return Lines {
                source: Source::Task(rx),
                sent: Vec::new().into_iter(),
                lines: Vec::new().into_iter(),
            };
        }
    };
    Lines {
        source,
        sent: Vec::new().into_iter(),
        lines: mem.into_iter(),
    }
}

/// The backlog that reaches back into the files: their lines, then `mem`'s, then the
/// follower's live state, if any.
async fn backlog_task(
    out: Out,
    reader: FileReader,
    mem: Vec<proto::LogLine>,
    live: Option<Box<Live>>,
) {
    let Some(mut out) = files_phase(out, reader).await else {
        return;
    };
    for l in mem {
        if out.push(l) && !out.flush().await {
            return;
        }
    }
    if !out.flush().await {
        return;
    }
    if let Some(live) = live {
        let _ = out.tx.send(Msg::Live(live)).await;
    }
}

/// A follower that fell behind memory: the task reading what it missed from the files, which
/// hands the follower back once it has caught up.
fn catch_up(live: Box<Live>, reader: FileReader) -> mpsc::Receiver<Msg> {
    let (tx, rx) = mpsc::channel(4);
    let out = Out::new(tx, live.sink().counters.clone());
    tokio::spawn(async move {
        if let Some(out) = files_phase(out, reader).await {
            let _ = out.tx.send(Msg::Live(live)).await;
        }
    });
    rx
}

/// Sends what `reader` reads to the client, each batch read on a blocking thread; hands
/// `out` back (everything sent), or `None` when the client left or the read failed (the
/// client was told).
async fn files_phase(mut out: Out, mut reader: FileReader) -> Option<Out> {
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let more = reader.next_batch(&mut batch);
            (reader, batch, more)
        })
        .await;
        let (r, batch, more) = match read {
            Ok(v) => v,
            Err(e) => {
                let _ = out
                    .tx
                    .send(Msg::Lines(vec![Err(Status::internal(format!(
                        "reading the log files failed: {e}"
                    )))]))
                    .await;
                return None;
            }
        };
        reader = r;
        for l in batch {
            if out.push(l) && !out.flush().await {
                return None;
            }
        }
        if !more {
            return out.flush().await.then_some(out);
        }
    }
}
