//! Who may do what: the role of a peer, computed once per connection from the credentials
//! the kernel recorded at connect time (SO_PEERCRED: uid, gid, pid) and the supplementary
//! groups of the connecting process (`/proc/PID/status`), and the check of every request of
//! every service (scriptd, health, reflection) against it. Refusals are logged rate-limited
//! per uid.

use super::conn::{Connection, Tracked};
use crate::throttle::{self, Throttle, Verdict};
use scriptd_common::config::{Access, Role};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use tokio::net::unix::UCred;
use tonic::codegen::http;
use tonic::Status;

/// The other end of a connection, as the kernel recorded it when the peer connected.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel could tell it.
    pub pid: Option<i32>,
    /// What the peer may do; `None`: nothing.
    pub role: Option<Role>,
    /// The user name of `uid`, looked up for messages to peers other than root and the
    /// daemon's user; `None` for those, or when the user database does not know it.
    pub name: Option<String>,
    /// A remote caller (TCP with TLS): its client certificate's name, the one that matched
    /// a `daemon.access` rule, else its CN or first SAN. `uid` and `gid` are then
    /// [`NO_ID`] and `pid` `None`.
    pub cert: Option<String>,
}

/// The uid and gid of a remote caller: `(uid_t)-1`, which no user has (`setuid(-1)` means
/// "leave unchanged").
pub const NO_ID: u32 = u32::MAX;

impl Peer {
    /// A remote caller known by its client certificate, with the role `daemon.access`
    /// grants it.
    pub fn remote(cert: String, role: Option<Role>) -> Self {
        Self {
            uid: NO_ID,
            gid: NO_ID,
            pid: None,
            role,
            name: None,
            cert: Some(cert),
        }
    }

    /// The uid of a local caller; `None` for a remote one.
    pub fn local_uid(&self) -> Option<u32> {
        self.cert.is_none().then_some(self.uid)
    }

    /// Who, for refusal counts and logs.
    fn who(&self) -> Who {
        match &self.cert {
            Some(name) => Who::Cert(name.clone()),
            None => Who::Uid(self.uid),
        }
    }
}

/// A caller, as refusals are counted and logged: a local uid, a certificate name, or the
/// address of a TCP client whose TLS handshake failed (it has no name yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Uid(u32),
    Cert(String),
    Address(std::net::IpAddr),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "uid {uid}"),
            Self::Cert(name) => write!(f, "certificate {name:?}"),
            Self::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

/// Who gets which role: the daemon's user and root everything, others per `daemon.access`.
pub(super) struct Policy {
    me: u32,
    access: Access,
}

impl Policy {
    /// The policy of a daemon running as `me`.
    pub(super) fn new(me: u32, access: Access) -> Self {
        Self { me, access }
    }

    /// Root and the daemon's own user: every role, no connection cap.
    pub(super) fn exempt(&self, uid: u32) -> bool {
        uid == self.me || uid == 0
    }

    /// The peer behind `cred`. For anyone but an exempt uid this reads `/proc` and the user
    /// database (NSS, maybe LDAP): call it off the async runtime.
    pub(super) fn peer(&self, cred: UCred) -> Peer {
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        if self.exempt(uid) {
            return Peer {
                uid,
                gid,
                pid,
                role: Some(Role::Operate),
                name: None,
                cert: None,
            };
        }
        let mut groups = vec![gid];
        if self.access.names_groups() {
            groups.extend(
                pid.and_then(|p| supplementary_groups(p, uid))
                    .unwrap_or_default(),
            );
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        Peer {
            uid,
            gid,
            pid,
            role: self.access.role_of(uid, &groups),
            name,
            cert: None,
        }
    }
}

/// The supplementary groups of process `pid` (its `Groups:` line), provided it still runs as
/// `uid`: exactly what the connecting process holds, not what the user database says. `None`
/// when unreadable (the process is gone, or /proc hides it): then only the primary gid counts.
fn supplementary_groups(pid: i32, uid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    // Uid: real, effective, saved, fs. A different effective uid: the pid was reused.
    if field("Uid:")?.get(1) != Some(&uid) {
        return None;
    }
    field("Groups:")
}

/// The role a call needs, by its gRPC path. Every service is covered (health and reflection
/// need `read`: a peer with no role learns nothing, not even the schema); anything not
/// listed as read-only needs `operate`. `Rollback` passes here with `read` and its handler
/// asks for `operate` unless it is a dry run (see [`require`]).
fn needed(path: &str) -> Role {
    match path.strip_prefix("/scriptd.v1.Scriptd/") {
        Some(
            "Status" | "Logs" | "WaitRun" | "History" | "GetVersion" | "Events" | "Diff"
            | "Rollback",
        ) => Role::Read,
        Some(_) => Role::Operate,
        None if path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.v1.ServerReflection/")
            || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/") =>
        {
            Role::Read
        }
        None => Role::Operate,
    }
}

/// `Ok` when `peer` has at least `role`; otherwise PERMISSION_DENIED naming the uid, what it
/// has and what `call` needs. Pure: logging is the caller's.
fn check(peer: Option<&Peer>, role: Role, call: &str) -> Result<(), Status> {
    let Some(peer) = peer else {
        return Err(Status::permission_denied(
            "the kernel gave no credentials for this connection (SO_PEERCRED), so it is refused",
        ));
    };
    if peer.role >= Some(role) {
        return Ok(());
    }
    let wanted = role.as_str();
    if let Some(cert) = &peer.cert {
        return Err(Status::permission_denied(match peer.role {
            None => format!(
                "the client certificate {cert:?} has no role on this scriptd; {call} needs the \
                 {wanted} role: grant it in daemon.access, e.g. `- {{ cert: {cert}, role: \
                 {wanted} }}`, and restart the daemon"
            ),
            Some(has) => format!(
                "the client certificate {cert:?} has the {} role; {call} needs the {wanted} \
                 role in daemon.access",
                has.as_str()
            ),
        }));
    }
    let who = match &peer.name {
        Some(n) => format!("uid {} ({n})", peer.uid),
        None => format!("uid {}", peer.uid),
    };
    let message = match peer.role {
        None => format!(
            "{who} has no role on this scriptd (it runs as uid {}); {call} needs the {wanted} \
             role: grant it in daemon.access, e.g. `- {{ user: {}, role: {wanted} }}`, and \
             restart the daemon",
            nix::unistd::geteuid(),
            peer.name.clone().unwrap_or_else(|| peer.uid.to_string())
        ),
        Some(has) => format!(
            "{who} has the {} role; {call} needs the {wanted} role in daemon.access",
            has.as_str()
        ),
    };
    Err(Status::permission_denied(message))
}

/// [`check`] for a call on `conn`, logging a refusal (rate-limited per uid).
#[allow(clippy::result_large_err)]
fn authorize(conn: Option<&Connection>, role: Role, call: &str) -> Result<(), Status> {
    let result = check(conn.map(Connection::peer), role, call);
    if let Err(status) = &result {
        match conn {
            Some(c) => c.refusals().report(c.peer(), call, status.message()),
            None => tracing::warn!(call, "refused a call without connection credentials"),
        }
    }
    result
}

/// Refusal warnings, per uid: the first one logged, then at most one summary per minute with
/// the count held back (2,000 refused calls are a line or two, not 2,000 warnings).
pub(crate) struct Refusals(Mutex<Throttle<Who>>);

impl Refusals {
    /// Refusal counts, with their summaries (at most one per caller and minute) logged
    /// until `cancel`.
    pub(crate) fn start(cancel: tokio_util::sync::CancellationToken) -> Arc<Self> {
        let refusals = Arc::new(Self(Mutex::new(Throttle::new(throttle::WINDOW))));
        tokio::spawn({
            let refusals = refusals.clone();
            async move {
                let window = throttle::WINDOW;
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + window, window);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => refusals.summarize(),
                    }
                }
            }
        });
        refusals
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle<Who>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, peer: &Peer, call: &str, message: &str) {
        let (who, pid) = (peer.who(), peer.pid);
        match self.throttle().hit(who.clone(), Instant::now()) {
            Verdict::HoldBack => {}
            Verdict::Report { held_back: 0 } => {
                tracing::warn!(%who, pid, call, "refused: {message}");
            }
            Verdict::Report { held_back } => tracing::warn!(
                %who,
                pid,
                call,
                "refused: {message} ({held_back} more refused call{} of {who} not logged \
                 since the last report)",
                plural(held_back)
            ),
        }
    }

    /// A TCP client at `ip` whose TLS handshake failed (no certificate, another CA's, not
    /// TLS, too slow): counted per address like refused calls, so that a scanner or a
    /// misconfigured client in a loop is a line a minute, not one per connection.
    pub(crate) fn handshake_failed(&self, ip: std::net::IpAddr, error: &dyn std::fmt::Display) {
        let who = Who::Address(ip);
        match self.throttle().hit(who.clone(), Instant::now()) {
            Verdict::HoldBack => {}
            Verdict::Report { held_back: 0 } => {
                tracing::warn!(%who, "refused a TLS handshake: {error}");
            }
            Verdict::Report { held_back } => tracing::warn!(
                %who,
                "refused a TLS handshake: {error} ({held_back} more of {who} not logged since \
                 the last report)"
            ),
        }
    }

    /// Logs the counts held back in windows that have closed.
    fn summarize(&self) {
        let due = self.throttle().due(Instant::now());
        for (who, n) in due {
            let what = match who {
                Who::Address(_) => "TLS handshake",
                Who::Uid(_) | Who::Cert(_) => "call",
            };
            tracing::warn!(
                %who,
                "refused {n} more {what}{} of {who} in the last minute (logged once a minute)",
                plural(n)
            );
        }
    }
}

/// `"s"` unless `n` is 1.
pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// For handlers whose role depends on the request (rollback: `operate` unless a dry run).
#[allow(clippy::result_large_err)]
pub fn require<T>(request: &tonic::Request<T>, role: Role, call: &str) -> Result<(), Status> {
    authorize(
        request
            .extensions()
            .get::<Arc<Connection>>()
            .map(Arc::as_ref),
        role,
        call,
    )
}

/// The peer that sent `request`.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&Peer> {
    request
        .extensions()
        .get::<Arc<Connection>>()
        .map(|c| c.peer())
}

/// Checks every request of every service before it reaches its handler, and holds the
/// connection busy (not idle) until the response has ended.
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
}

impl<S> Gate<S> {
    /// Gates `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let call = path.rsplit('/').next().unwrap_or(path);
        let role = needed(path);
        let conn = request.extensions().get::<Arc<Connection>>().cloned();
        if let Err(status) = authorize(conn.as_deref(), role, call) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        if role == Role::Operate {
            match conn.as_deref().map(Connection::peer) {
                Some(Peer {
                    cert: Some(cert), ..
                }) => {
                    tracing::info!(cert, call, "operate request")
                }
                Some(p) => tracing::info!(uid = p.uid, pid = p.pid, call, "operate request"),
                None => {}
            }
        }
        let in_flight = conn.map(|c| c.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match in_flight {
                Some(in_flight) => {
                    response.map(|body| tonic::body::Body::new(Tracked::new(body, in_flight)))
                }
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_calls_need_read_and_everything_else_operate() {
        for read in [
            "/scriptd.v1.Scriptd/Status",
            "/scriptd.v1.Scriptd/Logs",
            "/scriptd.v1.Scriptd/WaitRun",
            "/scriptd.v1.Scriptd/History",
            "/scriptd.v1.Scriptd/GetVersion",
            "/scriptd.v1.Scriptd/Events",
            "/scriptd.v1.Scriptd/Diff",
            "/scriptd.v1.Scriptd/Rollback",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(needed(read), Role::Read, "{read}");
        }
        for operate in [
            "/scriptd.v1.Scriptd/Control",
            "/scriptd.v1.Scriptd/Reload",
            "/scriptd.v1.Scriptd/SomethingNew",
            "/other.Service/Call",
        ] {
            assert_eq!(needed(operate), Role::Operate, "{operate}");
        }
    }

    #[test]
    fn denials_name_the_uid_and_the_role_needed() {
        let peer = |role, name: Option<&str>| Peer {
            uid: 54321,
            gid: 54321,
            pid: None,
            role,
            name: name.map(str::to_owned),
            cert: None,
        };
        assert!(check(
            Some(&peer(Some(Role::Operate), None)),
            Role::Operate,
            "Control"
        )
        .is_ok());
        assert!(check(Some(&peer(Some(Role::Operate), None)), Role::Read, "Status").is_ok());
        assert!(check(Some(&peer(Some(Role::Read), None)), Role::Read, "Status").is_ok());

        let e = check(
            Some(&peer(Some(Role::Read), None)),
            Role::Operate,
            "Control",
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "uid 54321 has the read role; Control needs the operate role in daemon.access"
        );
        let e = check(Some(&peer(None, None)), Role::Read, "Status").unwrap_err();
        assert!(
            e.message()
                .starts_with("uid 54321 has no role on this scriptd"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("`- { user: 54321, role: read }`"),
            "{}",
            e.message()
        );
        let e = check(Some(&peer(None, Some("eve"))), Role::Read, "Status").unwrap_err();
        assert!(
            e.message().starts_with("uid 54321 (eve) has no role")
                && e.message().contains("`- { user: eve, role: read }`"),
            "{}",
            e.message()
        );
        assert_eq!(
            check(None, Role::Read, "Status").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn root_and_the_daemons_user_are_exempt_and_need_no_lookups() {
        let policy = Policy::new(1234, Access::default());
        assert!(policy.exempt(0) && policy.exempt(1234) && !policy.exempt(1235));
    }

    #[test]
    fn supplementary_groups_of_this_process() {
        let me = nix::unistd::geteuid().as_raw();
        let pid = std::process::id() as i32;
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = supplementary_groups(pid, me).expect("own /proc status is readable");
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(
            supplementary_groups(pid, me.wrapping_add(1)),
            None,
            "other uid"
        );
    }
}
