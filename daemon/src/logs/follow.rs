//! Serving one `Logs` request: what it asks for ([`Query`]), the backlog (from the files when
//! it reaches back before memory, then from memory), then with `follow` live lines, sent to
//! the client in batches ([`Lines`]).

use super::backlog::FileReader;
use super::counters::LogCounters;
use super::record::{LineRef, Stream};
use super::sink::{LogSink, Start, Taken};
use super::{BATCH_BYTES, BATCH_LINES};
use scriptd_common::proto;
use std::sync::Arc;
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
pub type RunEnd = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Lines on their way to one client, sent in batches: one channel operation (and at most
/// one wake-up) per batch instead of per line.
struct Out {
    tx: mpsc::Sender<Vec<Item>>,
    batch: Vec<Item>,
    bytes: usize,
    /// Where skip markers sent to this reader are counted.
    counters: Arc<LogCounters>,
}

impl Out {
    fn new(tx: mpsc::Sender<Vec<Item>>, counters: Arc<LogCounters>) -> Self {
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

    fn take(&mut self) -> Option<Vec<Item>> {
        self.bytes = 0;
        (!self.batch.is_empty()).then(|| std::mem::take(&mut self.batch))
    }

    /// Sends what is batched; false when the client left.
    async fn flush(&mut self) -> bool {
        match self.take() {
            Some(b) => self.tx.send(b).await.is_ok(),
            None => true,
        }
    }
}

/// The response stream of a `Logs` call: the batches a producer task sends, one line at a
/// time.
pub struct Lines {
    rx: mpsc::Receiver<Vec<Item>>,
    current: std::vec::IntoIter<Item>,
}

impl tokio_stream::Stream for Lines {
    type Item = Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Item>> {
        loop {
            if let Some(item) = self.current.next() {
                return std::task::Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }
}

/// Starts serving one `Logs` request: the backlog (from the files when it reaches back
/// before memory, then from memory), then with `follow` live lines, across rotation and
/// restarts of the script, until the client leaves or the script is gone, or `run_end`
/// resolves (a follower of one run).
pub fn stream(sink: Arc<LogSink>, q: Query, run_end: Option<RunEnd>) -> Lines {
    let (tx, rx) = mpsc::channel(4);
    let out = Out::new(tx, sink.counters.clone());
    tokio::spawn(serve(sink, q, out, run_end));
    Lines {
        rx,
        current: Vec::new().into_iter(),
    }
}

async fn serve(sink: Arc<LogSink>, q: Query, mut out: Out, run_end: Option<RunEnd>) {
    let Start {
        mem,
        files,
        file_need,
        front,
        end,
        following,
    } = sink.start(&q);
    if let Some(files) = files {
        // A resume (`after_seq` without a line count) is told about lines that are gone.
        let gap_from = (q.after_seq > 0 && q.lines == 0).then(|| q.after_seq + 1);
        let reader = FileReader::new(files, q.clone(), front, file_need, gap_from);
        match files_phase(out, reader).await {
            Some(o) => out = o,
            None => return,
        }
    }
    for l in mem {
        if out.push(l) && !out.flush().await {
            return;
        }
    }
    if !out.flush().await {
        return;
    }
    if let Some(following) = following {
        follow(&following.0, q, end, out, run_end).await;
    }
}

/// Live lines from `cursor` on, until the client leaves, the sink closes, or `run_end` has
/// resolved and every line written before that was taken. Lines that left memory before
/// this reader took them are read from the files; only lines gone from the files too are
/// skipped, with a marker.
async fn follow(
    sink: &LogSink,
    q: Query,
    mut cursor: u64,
    mut out: Out,
    mut run_end: Option<RunEnd>,
) {
    let mut wake = sink.wake.subscribe();
    // Set before a take: that take sees every line the ended run wrote.
    let mut run_over = false;
    loop {
        wake.borrow_and_update();
        match sink.take(cursor, &q) {
            Taken::Behind { files, front } => {
                let catch_up = Query {
                    after_seq: q.after_seq.max(cursor - 1),
                    ..q.clone()
                };
                let reader = FileReader::new(files, catch_up, front, None, Some(cursor));
                match files_phase(out, reader).await {
                    Some(o) => out = o,
                    None => return,
                }
                cursor = front;
            }
            Taken::Lines {
                batch,
                covered,
                closed,
            } => {
                if covered == 0 {
                    if !out.flush().await || closed || run_over {
                        return;
                    }
                    let ended = async {
                        match run_end.as_mut() {
                            Some(f) => f.await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        r = wake.changed() => if r.is_err() {
                            return;
                        },
                        () = ended => {
                            run_over = true;
                            run_end = None;
                        }
                    }
                    continue;
                }
                cursor += covered;
                for l in batch {
                    if out.push(l) && !out.flush().await {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends what `reader` reads to the client, each batch read on a blocking thread; hands
/// `out` back, or `None` when the client left or the read failed (the client was told).
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
                    .send(vec![Err(Status::internal(format!(
                        "reading the log files failed: {e}"
                    )))])
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
            return Some(out);
        }
    }
}
