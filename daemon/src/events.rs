//! The event bus: reload phases and script lifecycle events, to every `Events` follower.
//! A follower that falls behind gets a "missed N" marker instead of stalling the daemon, and
//! every follower's stream ends when the daemon shuts down (an open stream would otherwise
//! hold up the server's graceful shutdown for as long as the client stays connected).

use scriptd_common::proto::{self, event::Kind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Events buffered per follower before it starts missing some.
const CAPACITY: usize = 4096;

/// Events queued for one follower's gRPC stream beyond the bus buffer.
const STREAM_QUEUE: usize = 64;

/// Cheap to clone; every clone publishes to the same followers.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<proto::Event>>,
    seq: Arc<AtomicU64>,
    /// Daemon shutdown: ends every follower.
    closed: CancellationToken,
}

impl EventBus {
    /// A bus whose followers end when `closed` is cancelled.
    pub fn new(closed: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            seq: Arc::new(AtomicU64::new(1)),
            closed,
        }
    }

    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, kind: Kind) {
        let event = proto::Event {
            time_ms: crate::now_ms(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind: Some(kind),
        };
        let _ = self.tx.send(Arc::new(event));
    }

    /// `ctl events` followers now.
    pub fn followers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A script lifecycle event.
    pub fn script(&self, event: proto::ScriptEvent) {
        self.publish(Kind::Script(event));
    }

    /// A reload phase.
    pub fn reload(&self, event: proto::ReloadEvent) {
        self.publish(Kind::Reload(event));
    }

    /// The stream of one `Events` follower: every event published from now on, in order,
    /// with a `missed` marker (seq 0) where it fell more than `CAPACITY` events behind. It
    /// ends when the client leaves or the daemon shuts down.
    pub fn follow(&self) -> ReceiverStream<Result<proto::Event, tonic::Status>> {
        let mut sub = self.tx.subscribe();
        let closed = self.closed.clone();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            loop {
                // Events already published (the scripts' last exits) go out before the end.
                let received = tokio::select! {
                    biased;
                    r = sub.recv() => r,
                    _ = closed.cancelled() => break,
                };
                let item = match received {
                    Ok(ev) => (*ev).clone(),
                    Err(broadcast::error::RecvError::Lagged(n)) => proto::Event {
                        time_ms: crate::now_ms(),
                        seq: 0,
                        kind: Some(Kind::Missed(n)),
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                // Sent if the client takes it, also at shutdown; a client that stopped
                // reading is let go then.
                tokio::select! {
                    biased;
                    sent = tx.send(Ok(item)) => if sent.is_err() { break }, // the client left
                    _ = closed.cancelled() => break,
                }
            }
        });
        ReceiverStream::new(rx)
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
        let mut follower = bus.follow();
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
        let mut reading = bus.follow();
        let mut stalled = bus.follow();
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
}
