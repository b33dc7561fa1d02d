//! Accepting connections so that no local user can lock root out. Root and the daemon's own
//! user are exempt from the caps; anyone else's connection is counted right after `accept`
//! (SO_PEERCRED) and closed at once when its uid already holds [`PER_UID`] connections, or
//! when everyone but root and the daemon's user together hold a quarter of the descriptor
//! limit: the other three quarters stay for scripts and root. At the descriptor limit the
//! loop backs off (10 ms, doubling up to 1 s) instead of spinning, and a spare descriptor
//! lets one pending connection in at a time: root's is served, anyone else's closed.

use super::access::{plural, Policy, Refusals};
use super::conn::{Clients, Connection, PeerStream};
use crate::throttle::{self, Throttle, Verdict};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Connections one uid other than root and the daemon's own may hold at once.
pub const PER_UID: usize = 64;
/// The most connections all uids but root and the daemon's own may hold together, however
/// high the descriptor limit.
const OTHERS_MAX: usize = 4096;
/// A connection with no call in flight for this long is closed (`SCRIPTD_IDLE_TIMEOUT`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// First and longest wait after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Pending connections looked at with the spare descriptor per failed accept.
const RESCUE_MAX: usize = 64;

/// The connection caps and the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections per uid (other than root and the daemon's own).
    pub per_uid: usize,
    /// Connections of all uids but root and the daemon's own together.
    pub others: usize,
    /// How long a connection may go without a call in flight.
    pub idle: Duration,
}

impl Limits {
    /// The caps of a daemon whose soft descriptor limit is `soft`: [`PER_UID`] per uid, and
    /// a quarter of the limit (at most 4,096) for all uids but root and the daemon's own.
    pub fn new(soft: u64, idle: Duration) -> Self {
        let others = usize::try_from(soft / 4)
            .unwrap_or(usize::MAX)
            .clamp(1, OTHERS_MAX);
        Self {
            per_uid: PER_UID.min(others),
            others,
            idle,
        }
    }
}

/// `SCRIPTD_IDLE_TIMEOUT` that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error(
    "SCRIPTD_IDLE_TIMEOUT={0:?} is not a duration such as 30s or 5m; unset it for the default \
     (60s)"
)]
pub struct BadIdleTimeout(String);

impl Limits {
    /// [`Limits::new`] with the idle timeout from `SCRIPTD_IDLE_TIMEOUT` when it is set.
    pub fn from_env(soft: u64) -> Result<Self, BadIdleTimeout> {
        let idle = match std::env::var_os("SCRIPTD_IDLE_TIMEOUT") {
            None => IDLE_TIMEOUT,
            Some(value) => {
                let text = value.to_string_lossy().into_owned();
                humantime::parse_duration(&text)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or(BadIdleTimeout(text))?
            }
        };
        Ok(Self::new(soft, idle))
    }
}

/// Which cap a connection would go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// Its uid's.
    Uid,
    /// The one for everyone but root and the daemon's user.
    Everyone,
}

/// Connections held by uids other than root and the daemon's own.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

impl Counts {
    /// Counts one more connection of `uid`, unless that goes over a cap.
    fn take(&mut self, uid: u32, limits: &Limits) -> Result<(), Over> {
        if self.per_uid.get(&uid).copied().unwrap_or(0) >= limits.per_uid {
            return Err(Over::Uid);
        }
        if self.total >= limits.others {
            return Err(Over::Everyone);
        }
        *self.per_uid.entry(uid).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    /// One connection of `uid` has closed.
    fn give(&mut self, uid: u32) {
        if let Entry::Occupied(mut o) = self.per_uid.entry(uid) {
            *o.get_mut() -= 1;
            if *o.get() == 0 {
                o.remove();
            }
            self.total = self.total.saturating_sub(1);
        }
    }
}

/// The caps and the counts, shared by the accept loop and the connections' slots.
#[derive(Debug)]
struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

impl Admission {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place under the caps, given back when it is dropped.
pub(super) struct Slot {
    admission: Arc<Admission>,
    uid: u32,
}

impl Slot {
    fn take(admission: &Arc<Admission>, uid: u32) -> Result<Self, Over> {
        admission.counts().take(uid, &admission.limits)?;
        Ok(Self {
            admission: admission.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.counts().give(self.uid);
    }
}

/// Waits after failed accepts: 10 ms, doubling up to 1 s, until an accept succeeds.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((wait * 2).min(BACKOFF_MAX));
        wait
    }

    /// An accept succeeded; whether the loop was backing off.
    fn reset(&mut self) -> bool {
        self.next.take().is_some()
    }
}

/// Starts accepting on `listener`; the connections admitted come out of the returned
/// stream, each with its peer's role. Accepting stops when the stream is dropped.
pub(super) fn spawn(
    listener: UnixListener,
    policy: Arc<Policy>,
    refusals: Arc<Refusals>,
    limits: Limits,
    clients: Clients,
) -> ReceiverStream<PeerStream> {
    let (tx, rx) = mpsc::channel(64);
    let spare = Spare::of(&listener);
    let acceptor = Acceptor {
        listener,
        policy,
        refusals,
        admission: Arc::new(Admission {
            limits,
            counts: Mutex::default(),
        }),
        tx,
        spare,
        clients,
        backoff: Backoff::default(),
        failed: 0,
        over: Throttle::new(throttle::WINDOW),
        failures: Throttle::new(throttle::WINDOW),
    };
    tokio::spawn(acceptor.run());
    ReceiverStream::new(rx)
}

/// A descriptor kept only to be closed at the descriptor limit, so that one pending
/// connection can be accepted in its place (a duplicate of the listener's: no file to
/// open). A connection let in with it holds a [`SpareBack`], which takes the spare again
/// the moment that connection closes, before anything else running in the daemon (a script
/// restarting, say) can take the descriptor it freed and leave root locked out.
pub(super) struct Spare {
    /// A duplicate of the listener never given up: what the spare is made from again.
    template: OwnedFd,
    held: Mutex<Option<OwnedFd>>,
}

impl Spare {
    /// The spare of `listener`; none when even two descriptors cannot be had.
    fn of(listener: &UnixListener) -> Option<Arc<Self>> {
        let template = listener.as_fd().try_clone_to_owned().ok()?;
        let held = template.try_clone().ok();
        Some(Arc::new(Self {
            template,
            held: Mutex::new(held),
        }))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the spare again if it was given up and a descriptor is free.
    fn refill(&self) {
        let mut held = self.held();
        if held.is_none() {
            *held = self.template.try_clone().ok();
        }
    }

    /// Closes the spare to make room for one accept; false when there was none to close
    /// (and none could be taken again now).
    fn give_up(&self) -> bool {
        self.refill();
        let spare = self.held().take();
        spare.is_some()
    }
}

/// Held by a connection let in with the spare descriptor: gives the spare back when the
/// connection is dropped (after its stream has closed, see `PeerStream`'s field order).
pub(super) struct SpareBack(Arc<Spare>);

impl Drop for SpareBack {
    fn drop(&mut self) {
        self.0.refill();
    }
}

/// The accept loop: the only owner of the listener.
struct Acceptor {
    listener: UnixListener,
    policy: Arc<Policy>,
    refusals: Arc<Refusals>,
    admission: Arc<Admission>,
    tx: mpsc::Sender<PeerStream>,
    spare: Option<Arc<Spare>>,
    /// The connections open now (metrics).
    clients: Clients,
    backoff: Backoff,
    /// Accepts failed since the last one that succeeded.
    failed: u64,
    /// Reports of connections closed over a cap, per uid.
    over: Throttle<u32>,
    /// Reports of failed accepts.
    failures: Throttle<()>,
}

impl Acceptor {
    async fn run(mut self) {
        let mut summaries = tokio::time::interval_at(
            tokio::time::Instant::now() + throttle::WINDOW,
            throttle::WINDOW,
        );
        loop {
            let accepted = tokio::select! {
                _ = self.tx.closed() => return,
                _ = summaries.tick() => {
                    self.summarize();
                    continue;
                }
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    self.recovered();
                    self.admit(stream, None);
                }
                Err(e) => {
                    let Some(wait) = self.failed_accept(&e).await else {
                        continue;
                    };
                    tokio::select! {
                        _ = self.tx.closed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Counts a connection under the caps (or closes it at once) and hands it to the server
    /// with its peer's role, looked up off the runtime for anyone but root and the daemon's
    /// user. `back` gives the spare descriptor back when a connection accepted in its
    /// place closes.
    fn admit(&mut self, stream: UnixStream, back: Option<SpareBack>) {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("closed a connection whose peer credentials cannot be read: {e}");
                return;
            }
        };
        let uid = cred.uid();
        let exempt = self.policy.exempt(uid);
        let slot = if exempt {
            None
        } else {
            match Slot::take(&self.admission, uid) {
                Ok(slot) => Some(slot),
                Err(over) => {
                    self.report_over(uid, cred.pid(), over);
                    return;
                }
            }
        };
        let (policy, refusals, tx) = (self.policy.clone(), self.refusals.clone(), self.tx.clone());
        let idle = self.admission.limits.idle;
        let counted = self.clients.enter();
        tokio::spawn(async move {
            let peer = if exempt {
                policy.peer(cred)
            } else {
                match tokio::task::spawn_blocking(move || policy.peer(cred)).await {
                    Ok(peer) => peer,
                    Err(e) => {
                        tracing::warn!(uid, "closed a connection: its role cannot be told: {e}");
                        return;
                    }
                }
            };
            let conn = Connection::new(peer, refusals);
            let _ = tx
                .send(PeerStream::new(stream, conn, idle, slot, counted, back))
                .await;
        });
    }

    fn report_over(&mut self, uid: u32, pid: Option<i32>, over: Over) {
        let limits = self.admission.limits;
        let why = match over {
            Over::Uid => format!(
                "uid {uid} already holds {} connections (the cap per uid)",
                limits.per_uid
            ),
            Over::Everyone => format!(
                "users other than root and scriptd's own already hold {} connections (the cap \
                 for all of them together)",
                limits.others
            ),
        };
        match self.over.hit(uid, Instant::now()) {
            Verdict::HoldBack => {}
            Verdict::Report { held_back: 0 } => {
                tracing::warn!(uid, pid, "closed a new connection at once: {why}");
            }
            Verdict::Report { held_back } => tracing::warn!(
                uid,
                pid,
                "closed a new connection at once: {why} ({held_back} more closed since the last \
                 report)"
            ),
        }
    }

    /// What to do after a failed accept: `None` to accept again at once (the peer gave up
    /// before it was accepted), otherwise how long to wait. At the descriptor limit, pending
    /// connections are looked at with the spare descriptor first.
    async fn failed_accept(&mut self, e: &io::Error) -> Option<Duration> {
        let errno = e.raw_os_error();
        if matches!(
            errno,
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
        ) {
            return None;
        }
        self.failed += 1;
        let at_limit = matches!(errno, Some(libc::EMFILE | libc::ENFILE));
        let what = if at_limit {
            let (soft, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .unwrap_or_default();
            format!(
                "{e} (descriptor limit: soft {soft}, hard {hard}); root's connections still \
                 get through, one at a time"
            )
        } else {
            e.to_string()
        };
        match self.failures.hit((), Instant::now()) {
            Verdict::HoldBack => {}
            Verdict::Report { held_back } => tracing::warn!(
                "cannot accept connections: {what}; retrying in 10 ms, then less often, up to \
                 every second{}",
                if held_back == 0 {
                    String::new()
                } else {
                    format!(" ({held_back} more failed accepts since the last report)")
                }
            ),
        }
        if at_limit {
            if let Some(stream) = self.rescue().await {
                let back = self.spare.clone().map(SpareBack);
                self.admit(stream, back);
            }
        }
        Some(self.backoff.next())
    }

    /// At the descriptor limit: the spare descriptor is given up to take pending
    /// connections one at a time; the first of root or the daemon's user is kept (and
    /// served), anyone else's closed at once, until none is pending.
    async fn rescue(&mut self) -> Option<UnixStream> {
        let spare = self.spare.clone()?;
        for _ in 0..RESCUE_MAX {
            if !spare.give_up() {
                return None;
            }
            let accepted = std::future::poll_fn(|cx| {
                Poll::Ready(match self.listener.poll_accept(cx) {
                    Poll::Ready(Ok((stream, _))) => Some(stream),
                    Poll::Ready(Err(_)) | Poll::Pending => None,
                })
            })
            .await;
            let Some(stream) = accepted else {
                spare.refill();
                return None;
            };
            match stream.peer_cred() {
                Ok(c) if self.policy.exempt(c.uid()) => return Some(stream),
                Ok(c) => self.report_over_limit(c.uid(), c.pid()),
                Err(_) => {}
            }
            drop(stream);
            spare.refill();
        }
        None
    }

    fn report_over_limit(&mut self, uid: u32, pid: Option<i32>) {
        if let Verdict::Report { .. } = self.over.hit(uid, Instant::now()) {
            tracing::warn!(
                uid,
                pid,
                "closed a new connection at once: scriptd is at its descriptor limit"
            );
        }
    }

    /// An accept succeeded: says so after failures, and takes a spare descriptor again.
    fn recovered(&mut self) {
        if self.backoff.reset() {
            tracing::info!(
                "accepting connections again ({} failed accept{} before)",
                self.failed,
                plural(self.failed)
            );
        }
        self.failed = 0;
        match &self.spare {
            Some(spare) => spare.refill(),
            None => self.spare = Spare::of(&self.listener),
        }
    }

    /// Logs the counts held back in windows that have closed.
    fn summarize(&mut self) {
        let now = Instant::now();
        for ((), n) in self.failures.due(now) {
            tracing::warn!("{n} more accept{} failed in the last minute", plural(n));
        }
        for (uid, n) in self.over.due(now) {
            tracing::warn!(
                uid,
                "closed {n} more connection{} of uid {uid} over the caps in the last minute",
                plural(n)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_descriptor_limit() {
        let idle = IDLE_TIMEOUT;
        // (soft limit, per uid, everyone else together)
        for (soft, per_uid, others) in [
            (1024, 64, 256),
            (4096, 64, 1024),
            (524_288, 64, 4096),
            (256, 64, 64),
            (128, 32, 32),
            (0, 1, 1),
        ] {
            let l = Limits::new(soft, idle);
            assert_eq!((l.per_uid, l.others), (per_uid, others), "soft {soft}");
        }
    }

    #[test]
    fn counts_cap_each_uid_and_everyone_together() {
        let limits = Limits {
            per_uid: 2,
            others: 3,
            idle: IDLE_TIMEOUT,
        };
        let mut c = Counts::default();
        // (take or give, uid, expected)
        let table: [(bool, u32, Result<(), Over>); 9] = [
            (true, 1, Ok(())),
            (true, 1, Ok(())),
            (true, 1, Err(Over::Uid)),
            (true, 2, Ok(())),
            (true, 3, Err(Over::Everyone)),
            (false, 1, Ok(())),
            (true, 3, Ok(())),
            (true, 1, Err(Over::Everyone)),
            (true, 2, Err(Over::Everyone)),
        ];
        for (i, (take, uid, want)) in table.into_iter().enumerate() {
            if take {
                assert_eq!(c.take(uid, &limits), want, "step {i}");
            } else {
                c.give(uid);
            }
        }
        for uid in [1, 2, 3] {
            c.give(uid);
        }
        assert_eq!(c.total, 0);
        assert!(c.per_uid.is_empty(), "{:?}", c.per_uid);
        c.give(7);
        assert_eq!(c.total, 0, "a uid with no connection gives nothing back");
    }

    #[test]
    fn backoff_doubles_to_a_second_and_starts_over() {
        let mut b = Backoff::default();
        assert!(!b.reset());
        let waits: Vec<u64> = (0..9).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert!(b.reset());
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
