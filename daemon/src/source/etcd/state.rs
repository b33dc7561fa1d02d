//! What `ctl status` shows of the etcd source: published by the source's task (the one
//! owner), read by the gRPC service.

use scriptd_common::proto;
use tokio::sync::watch;

/// The etcd source's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceState {
    /// The endpoint connected to, or last tried.
    pub endpoint: String,
    /// The key.
    pub key: String,
    /// A watch is established.
    pub connected: bool,
    /// Since when (Unix ms) connected, or disconnected.
    pub since_ms: i64,
    /// The newest revision seen.
    pub last_revision_seen: i64,
    /// Why not connected, or the last problem with the key.
    pub problem: String,
}

impl SourceState {
    /// As the `Status` response has it, with the running value's mod revision (the
    /// coordinator's, see [`crate::reload::Snapshot`]).
    pub fn to_proto(&self, running_revision: Option<i64>) -> proto::EtcdSourceStatus {
        proto::EtcdSourceStatus {
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            connected: self.connected,
            since_ms: self.since_ms,
            last_revision_seen: self.last_revision_seen,
            running_revision: running_revision.unwrap_or(0),
            problem: self.problem.clone(),
        }
    }
}

/// The publishing side, owned by the source's task.
pub struct Publisher(watch::Sender<SourceState>);

impl Publisher {
    /// A publisher for `key`, disconnected since `now_ms`, and its receiver.
    pub fn new(key: &str, endpoint: &str, now_ms: i64) -> (Self, watch::Receiver<SourceState>) {
        let (tx, rx) = watch::channel(SourceState {
            endpoint: endpoint.to_owned(),
            key: key.to_owned(),
            since_ms: now_ms,
            ..SourceState::default()
        });
        (Self(tx), rx)
    }

    /// Connected to `endpoint`: the time and the problem (why it was not) change only when
    /// it was not connected there already.
    pub fn connected(&self, endpoint: &str, now_ms: i64) {
        self.0.send_if_modified(|s| {
            let change = !s.connected || s.endpoint != endpoint;
            if change {
                s.since_ms = now_ms;
                s.problem.clear();
            }
            s.connected = true;
            s.endpoint = endpoint.to_owned();
            change
        });
    }

    /// Not connected, because of `why`.
    pub fn disconnected(&self, endpoint: &str, why: String, now_ms: i64) {
        self.0.send_modify(|s| {
            if s.connected {
                s.since_ms = now_ms;
            }
            s.connected = false;
            s.endpoint = endpoint.to_owned();
            s.problem = why;
        });
    }

    /// A problem with the key while connected (deleted, not UTF-8); empty clears it.
    pub fn problem(&self, why: String) {
        self.0.send_modify(|s| s.problem = why);
    }

    /// Revision `revision` seen.
    pub fn seen(&self, revision: i64) {
        self.0.send_if_modified(|s| {
            let newer = revision > s.last_revision_seen;
            if newer {
                s.last_revision_seen = revision;
            }
            newer
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_changes_only_when_the_connection_does() {
        let (p, rx) = Publisher::new("/k", "http://a:1", 10);
        p.disconnected("http://a:1", "refused".into(), 20);
        assert_eq!((rx.borrow().connected, rx.borrow().since_ms), (false, 10));
        p.connected("http://a:1", 30);
        assert!(
            rx.borrow().problem.is_empty(),
            "connecting ends the disconnection's problem"
        );
        p.problem("the value at revision 5 was not applied".into());
        p.connected("http://a:1", 40);
        assert_eq!((rx.borrow().connected, rx.borrow().since_ms), (true, 30));
        assert!(
            !rx.borrow().problem.is_empty(),
            "a problem with the key stays"
        );
        p.disconnected("http://a:1", "keepalive".into(), 50);
        assert_eq!(rx.borrow().since_ms, 50);
        assert_eq!(rx.borrow().problem, "keepalive");
        p.seen(7);
        p.seen(5);
        assert_eq!(rx.borrow().last_revision_seen, 7);
    }
}
