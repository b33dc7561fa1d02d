//! The event bus: reload phases and script lifecycle events, to every `Events` follower.
//! A follower that falls behind gets a "missed N" marker instead of stalling the daemon, and
//! every follower's stream ends when the daemon shuts down (an open stream would otherwise
//! hold up the server's graceful shutdown for as long as the client stays connected).
//!
//! Every event has an id (see `events/resume.rs` for how ids are numbered). The bus keeps the last
//! [`KEPT`] events (at most [`KEPT_BYTES`] of them, encoded), so a follower can resume after an
//! id it saw: it is sent the kept events
//! after it, then live ones. Publishing, keeping and subscribing happen under one lock, so a
//! resuming follower's replay and its live events meet exactly. Each follower's [`Filter`]
//! is applied here, before anything is queued for it.

mod filter;
mod resume;

pub use filter::{Filter, FilterError};
pub use resume::NotYet;

use resume::{Kept, Resume};
use scriptd_common::proto::{self, event::Kind};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Events buffered per follower before it starts missing some.
const CAPACITY: usize = 4096;

/// Events kept for followers that resume after an id.
pub const KEPT: usize = 4096;

/// At most this many bytes of kept events (their encoded size): a reload of a big config
/// carries its whole plan, and 4,096 of those must not pile up.
pub const KEPT_BYTES: usize = 4 << 20;

/// Events queued for one follower's gRPC stream beyond the bus buffer.
const STREAM_QUEUE: usize = 64;

/// Cheap to clone; every clone publishes to the same followers.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Mutex<Inner>>,
    /// Daemon shutdown: ends every follower.
    closed: CancellationToken,
}

/// What publishing changes, under one lock.
struct Inner {
    tx: broadcast::Sender<Arc<proto::Event>>,
    /// Ids of this process are `base + seq`.
    base: u64,
    /// Seq of the next event (from 1).
    next_seq: u64,
    /// The newest events, oldest first, with consecutive ids, each with its encoded size.
    kept: VecDeque<(Arc<proto::Event>, usize)>,
    /// Sum of the sizes in `kept`.
    kept_bytes: usize,
}

impl EventBus {
    /// A bus whose followers end when `closed` is cancelled; its ids start after the
    /// current time in microseconds.
    pub fn new(closed: CancellationToken) -> Self {
        let base = u64::try_from(crate::now_ms())
            .unwrap_or(0)
            .saturating_mul(1000);
        Self::with_base(closed, base)
    }

    /// A bus whose event ids start after `base`.
    fn with_base(closed: CancellationToken, base: u64) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                tx,
                base,
                next_seq: 1,
                kept: VecDeque::with_capacity(KEPT),
                kept_bytes: 0,
            })),
            closed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing under the lock can leave the state half-changed: a panic elsewhere while
        // holding it does not make the events wrong.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, kind: Kind) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let event = Arc::new(proto::Event {
            time_ms: crate::now_ms(),
            seq,
            kind: Some(kind),
            id: inner.base + seq,
            earlier_daemon: false,
        });
        let size = prost::Message::encoded_len(&*event);
        inner.kept_bytes += size;
        inner.kept.push_back((event.clone(), size));
        // The newest event is always kept, however big.
        while inner.kept.len() > KEPT || (inner.kept_bytes > KEPT_BYTES && inner.kept.len() > 1) {
            if let Some((_, size)) = inner.kept.pop_front() {
                inner.kept_bytes -= size;
            }
        }
        let _ = inner.tx.send(event);
    }

    /// `ctl events` followers now.
    pub fn followers(&self) -> usize {
        self.lock().tx.receiver_count()
    }

    /// A script lifecycle event.
    pub fn script(&self, event: proto::ScriptEvent) {
        self.publish(Kind::Script(event));
    }

    /// A reload phase.
    pub fn reload(&self, event: proto::ReloadEvent) {
        self.publish(Kind::Reload(event));
    }

    /// The stream of one `Events` follower: with `after_id`, the kept events after it (a
    /// `missed` marker first for those no longer kept), then every event published from
    /// now on, in order, those `filter` lets through, with a `missed` marker (id 0) where it
    /// fell more than `CAPACITY` events behind. It ends when the client leaves or the
    /// daemon shuts down.
    pub fn follow(
        &self,
        filter: Filter,
        after_id: Option<u64>,
    ) -> Result<ReceiverStream<Result<proto::Event, tonic::Status>>, NotYet> {
        let (mut sub, first, replay) = {
            let inner = self.lock();
            let (first, replay) = match after_id {
                None => (None, Vec::new()),
                Some(after_id) => {
                    let kept = Kept {
                        base: inner.base,
                        oldest: inner.kept.front().map(|(e, _)| e.id),
                        newest: inner.base + inner.next_seq - 1,
                    };
                    let r = resume::resume(after_id, kept)?;
                    let replay = inner
                        .kept
                        .iter()
                        .map(|(e, _)| e)
                        .filter(|e| e.id > r.after && filter.matches(e))
                        .cloned()
                        .collect();
                    (r.marker().then(|| missed_marker(r)), replay)
                }
            };
            // Subscribed under the lock: the first live event is the one after the newest
            // kept one.
            (inner.tx.subscribe(), first, replay)
        };
        let closed = self.closed.clone();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            for ev in first
                .into_iter()
                .chain(replay.iter().map(|e| (**e).clone()))
            {
                if !send(&tx, &closed, ev).await {
                    return;
                }
            }
            loop {
                // Events already published (the scripts' last exits) go out before the end.
                let received = tokio::select! {
                    biased;
                    r = sub.recv() => r,
                    _ = closed.cancelled() => break,
                };
                let item = match received {
                    Ok(ev) if filter.matches(&ev) => (*ev).clone(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => proto::Event {
                        time_ms: crate::now_ms(),
                        kind: Some(Kind::Missed(n)),
                        ..Default::default()
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !send(&tx, &closed, item).await {
                    break;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// The marker a resuming follower gets for the events no longer kept.
fn missed_marker(r: Resume) -> proto::Event {
    proto::Event {
        time_ms: crate::now_ms(),
        kind: Some(Kind::Missed(r.missed)),
        earlier_daemon: r.earlier_daemon,
        ..Default::default()
    }
}

/// Sends `item` if the client takes it, also at shutdown; false when the client left, or
/// stopped reading and the daemon is shutting down (it is let go then).
async fn send(
    tx: &mpsc::Sender<Result<proto::Event, tonic::Status>>,
    closed: &CancellationToken,
    item: proto::Event,
) -> bool {
    tokio::select! {
        biased;
        sent = tx.send(Ok(item)) => sent.is_ok(),
        _ = closed.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn script(n: u32) -> proto::ScriptEvent {
        proto::ScriptEvent {
            script: format!("s{n}"),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_follower_gets_a_missed_marker_then_live_events() {
        let bus = EventBus::new(CancellationToken::new());
        let mut follower = bus.follow(Filter::default(), None).expect("live");
        // Far more than the bus and the stream queue hold, before the follower reads.
        let total = (CAPACITY + STREAM_QUEUE) as u32 * 2;
        for n in 0..total {
            bus.script(script(n));
            tokio::task::yield_now().await;
        }
        let mut missed = 0;
        let mut last = None;
        while let Some(Ok(e)) = follower.next().await {
            match e.kind {
                Some(Kind::Missed(n)) => missed += n,
                Some(Kind::Script(s)) => {
                    last = Some(s.script);
                    if last.as_deref() == Some(format!("s{}", total - 1).as_str()) {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(missed > 0, "no missed marker");
        assert_eq!(
            last,
            Some(format!("s{}", total - 1)),
            "the newest event arrives"
        );
    }

    #[tokio::test]
    async fn followers_end_at_shutdown_even_when_not_reading() {
        let closed = CancellationToken::new();
        let bus = EventBus::new(closed.clone());
        let mut reading = bus.follow(Filter::default(), None).expect("live");
        let mut stalled = bus.follow(Filter::default(), None).expect("live");
        for n in 0..(STREAM_QUEUE as u32 * 4) {
            bus.script(script(n));
        }
        closed.cancel();
        // The reader gets what was queued, then the end; so does the stalled one.
        while let Some(item) = reading.next().await {
            assert!(item.is_ok());
        }
        while let Some(item) = stalled.next().await {
            assert!(item.is_ok());
        }
    }

    /// The script names of the events a follower receives until `until` (a script name).
    async fn names_until(
        follower: &mut ReceiverStream<Result<proto::Event, tonic::Status>>,
        until: &str,
    ) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        while let Some(Ok(e)) = follower.next().await {
            match e.kind {
                Some(Kind::Script(s)) => {
                    let end = s.script == until;
                    got.push((e.id, s.script));
                    if end {
                        break;
                    }
                }
                other => got.push((e.id, format!("{other:?}"))),
            }
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_follower_gets_every_event_after_the_id_once_across_the_seam() {
        const BASE: u64 = 5_000_000;
        let bus = EventBus::with_base(CancellationToken::new(), BASE);
        for n in 0..10 {
            bus.script(script(n));
        }
        // A publisher keeps going while followers join: whatever is published between a
        // follower's replay and its first live event must arrive, once.
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 10..400 {
                    bus.script(script(n));
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut followers = Vec::new();
        for _ in 0..20 {
            followers.push(bus.follow(Filter::default(), Some(BASE + 4)).expect("kept"));
            tokio::task::yield_now().await;
        }
        publisher.await.expect("publisher");
        for mut f in followers {
            let got = names_until(&mut f, "s399").await;
            let want: Vec<(u64, String)> = (4..400)
                .map(|n| (BASE + 1 + n as u64, format!("s{n}")))
                .collect();
            let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
            assert!(
                got.len() == want.len() && first_wrong.is_none(),
                "{} events instead of {}, first difference at {first_wrong:?}",
                got.len(),
                want.len()
            );
        }
    }

    #[tokio::test]
    async fn an_id_no_longer_kept_gets_a_missed_marker_then_the_kept_events() {
        const BASE: u64 = 5_000_000;
        let bus = EventBus::with_base(CancellationToken::new(), BASE);
        let total = KEPT as u32 + 10;
        for n in 0..total {
            bus.script(script(n));
        }
        let mut f = bus
            .follow(Filter::default(), Some(BASE + 3))
            .expect("resumable");
        let first = f.next().await.expect("marker").expect("ok");
        assert_eq!(
            (first.kind, first.id, first.earlier_daemon),
            (Some(Kind::Missed(7)), 0, false)
        );
        let second = f.next().await.expect("event").expect("ok");
        assert_eq!(second.id, BASE + 11, "the oldest kept event");

        // An id of an earlier process (all below this one's base): the flag, and every
        // kept event.
        let mut f = bus
            .follow(Filter::default(), Some(BASE - 1))
            .expect("resumable");
        let first = f.next().await.expect("marker").expect("ok");
        assert_eq!(
            (first.kind, first.earlier_daemon),
            (Some(Kind::Missed(10)), true)
        );

        // An id not reached yet.
        let newest = BASE + u64::from(total);
        let err = bus.follow(Filter::default(), Some(newest + 1)).err();
        assert_eq!(
            err,
            Some(NotYet {
                asked: newest + 1,
                newest
            })
        );
    }

    #[tokio::test]
    async fn big_events_are_kept_up_to_the_byte_bound() {
        const BASE: u64 = 5_000_000;
        let bus = EventBus::with_base(CancellationToken::new(), BASE);
        let big = |n: u32| proto::ScriptEvent {
            message: "x".repeat(64 << 10),
            ..script(n)
        };
        // 128 events of 64 KiB: twice the byte bound, far below the count.
        for n in 0..128 {
            bus.script(big(n));
        }
        let kept = {
            let inner = bus.lock();
            assert!(inner.kept_bytes <= KEPT_BYTES, "{}", inner.kept_bytes);
            inner.kept.len() as u64
        };
        assert!((32..128).contains(&kept), "{kept} kept");
        let mut f = bus.follow(Filter::default(), Some(0)).expect("resumable");
        let first = f.next().await.expect("marker").expect("ok");
        assert_eq!(first.kind, Some(Kind::Missed(128 - kept)));
        let second = f.next().await.expect("event").expect("ok");
        assert_eq!(second.id, BASE + 128 - kept + 1, "the oldest kept event");
    }

    #[tokio::test]
    async fn the_filter_applies_to_the_replay_and_to_live_events() {
        let closed = CancellationToken::new();
        let bus = EventBus::with_base(closed.clone(), 0);
        for n in 0..6 {
            bus.script(script(n % 3));
        }
        let filter = Filter::from_request(&proto::EventsRequest {
            scripts: vec!["s1".into()],
            ..Default::default()
        })
        .expect("filter");
        let mut f = bus.follow(filter, Some(0)).expect("kept");
        bus.script(script(2));
        bus.script(script(1));
        bus.script(script(9));
        // The stream ends at shutdown, after what was published.
        closed.cancel();
        let mut got = Vec::new();
        while let Some(Ok(e)) = f.next().await {
            if let Some(Kind::Script(s)) = e.kind {
                got.push((e.id, s.script));
            }
        }
        let want: Vec<(u64, String)> = vec![(2, "s1".into()), (5, "s1".into()), (8, "s1".into())];
        assert_eq!(got, want);
    }
}
