//! The event bus: reload phases and script lifecycle events, to every `Events` follower.
//! A follower that falls behind gets a "missed N" marker instead of stalling the daemon.

use scriptd_common::proto::{self, event::Kind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events buffered per follower before it starts missing some.
const CAPACITY: usize = 4096;

/// Cheap to clone; every clone publishes to the same followers.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<proto::Event>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            seq: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl EventBus {
    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, kind: Kind) {
        let event = proto::Event {
            time_ms: crate::now_ms(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind: Some(kind),
        };
        let _ = self.tx.send(Arc::new(event));
    }

    /// A script lifecycle event.
    pub fn script(&self, event: proto::ScriptEvent) {
        self.publish(Kind::Script(event));
    }

    /// A reload phase.
    pub fn reload(&self, event: proto::ReloadEvent) {
        self.publish(Kind::Reload(event));
    }

    /// A receiver for every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<proto::Event>> {
        self.tx.subscribe()
    }
}
