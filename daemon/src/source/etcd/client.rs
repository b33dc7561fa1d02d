//! The etcd v3 gRPC client: the generated stubs (`proto/etcd/`, see `daemon/build.rs`), a
//! connection with HTTP/2 keepalive (a frozen server is noticed within
//! [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`]), over TLS for `https://` endpoints (see
//! [`tls`]), authentication, and the three calls the source makes: read the key, watch it,
//! compare-and-swap it.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use super::access::Access;
use super::tls;
use etcdserverpb::auth_client::AuthClient;
use etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdserverpb::kv_client::KvClient;
use etcdserverpb::request_op::Request as Op;
use etcdserverpb::watch_client::WatchClient;
use etcdserverpb::watch_request::RequestUnion;
use etcdserverpb::{
    AuthenticateRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// How often an HTTP/2 ping is sent on the connection, also while idle.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is given up.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP connect or a unary call (read, write, authenticate) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A failed call, in words for the status and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint URL tonic does not take (validation should have caught it).
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// No connection (refused, unreachable, timed out).
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A call that got no answer in time.
    #[error("{0} got no answer in time")]
    Timeout(&'static str),
    /// A call etcd refused or that broke.
    #[error("{call} failed: {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// etcd's status message.
        status: String,
    },
    /// No endpoint answered: each one tried, and why.
    #[error("{}", tried(.0))]
    Unreachable(Vec<(String, EtcdError)>),
}

fn tried(failures: &[(String, EtcdError)]) -> String {
    failures
        .iter()
        .map(|(endpoint, e)| match e {
            EtcdError::Connect { reason, .. } => format!("{endpoint}: {reason}"),
            other => format!("{endpoint}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn call_error(call: &'static str, client_cert: bool) -> impl Fn(tonic::Status) -> EtcdError {
    move |s| EtcdError::Call {
        call,
        status: status_text(&s, client_cert),
    }
}

/// A status in words: its message, or what its cause comes down to (a broken connection,
/// a TLS refusal: see [`tls::explain`]; `client_cert`: one was presented), and its code.
fn status_text(s: &tonic::Status, client_cert: bool) -> String {
    let why = match std::error::Error::source(s) {
        Some(cause) => tls::explain(cause, client_cert),
        None => tls::hint_text(s.message(), client_cert),
    };
    format!("{why} ({:?})", s.code())
}

/// Runs `f` with [`CALL_TIMEOUT`] (`client_cert`: the connection presents one).
async fn timed<T>(
    call: &'static str,
    client_cert: bool,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(call_error(call, client_cert)),
        Err(_) => Err(EtcdError::Timeout(call)),
    }
}

/// The value of the key at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The store's revision when it was read.
    pub revision: i64,
    /// The key's value and mod revision; `None` when the key does not exist.
    pub value: Option<(Vec<u8>, i64)>,
}

/// How a compare-and-swap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// Written: the key's new mod revision.
    Written(i64),
    /// The key's mod revision was no longer the one expected.
    Moved,
}

/// A connection to one endpoint, authenticated when a user is configured.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// The connection presents a client certificate.
    client_cert: bool,
    /// The endpoint connected to.
    pub endpoint: String,
}

impl Client {
    /// Connects to `endpoint` (over TLS, and authenticated, as `access` says).
    pub async fn connect(endpoint: &str, access: &Access) -> Result<Self, EtcdError> {
        let settings = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|_| EtcdError::Endpoint(endpoint.to_owned()))?
            .connect_timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let client_cert = access.tls.as_ref().is_some_and(|t| t.client_cert);
        let failed = |e: tonic::transport::Error| EtcdError::Connect {
            endpoint: endpoint.to_owned(),
            reason: tls::explain(&e, client_cert),
        };
        let channel = match &access.tls {
            Some(tls) => tls::connect(settings, tls.config.clone()).await,
            None => settings.connect().await,
        }
        .map_err(failed)?;
        let token = match &access.credentials {
            None => None,
            Some(c) => {
                let mut auth = AuthClient::new(channel.clone());
                let request = AuthenticateRequest {
                    name: c.username.clone(),
                    password: c.password.clone(),
                };
                let token = timed("authenticate", client_cert, auth.authenticate(request))
                    .await?
                    .into_inner()
                    .token;
                Some(token.parse().map_err(|_| EtcdError::Call {
                    call: "authenticate",
                    status: "etcd answered with a token that is not ASCII".into(),
                })?)
            }
        };
        Ok(Self {
            channel,
            token,
            client_cert,
            endpoint: endpoint.to_owned(),
        })
    }

    /// A failed call's status in words (see [`tls::explain`]).
    pub fn explain(&self, s: &tonic::Status) -> String {
        status_text(s, self.client_cert)
    }

    /// `msg` as a request carrying the token.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("token", t.clone());
        }
        r
    }

    /// Reads `key` (linearizable).
    pub async fn read(&self, key: &str) -> Result<Read, EtcdError> {
        let mut kv = KvClient::new(self.channel.clone());
        let request = self.request(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        let r = timed("reading the key", self.client_cert, kv.range(request))
            .await?
            .into_inner();
        Ok(Read {
            revision: r.header.map_or(0, |h| h.revision),
            value: r
                .kvs
                .into_iter()
                .next()
                .map(|kv| (kv.value, kv.mod_revision)),
        })
    }

    /// Writes `value` to `key` if its mod revision is still `expected` (0: the key does not
    /// exist).
    pub async fn swap(&self, key: &str, expected: i64, value: Vec<u8>) -> Result<Swap, EtcdError> {
        let mut kv = KvClient::new(self.channel.clone());
        let request = self.request(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::ModRevision(expected)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value,
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        });
        let r = timed("writing the key", self.client_cert, kv.txn(request))
            .await?
            .into_inner();
        Ok(if r.succeeded {
            Swap::Written(r.header.map_or(0, |h| h.revision))
        } else {
            Swap::Moved
        })
    }

    /// Watches `key` from revision `from`: the response stream (the request side stays open
    /// while the stream is read).
    pub async fn watch(
        &self,
        key: &str,
        from: i64,
    ) -> Result<(tonic::Streaming<WatchResponse>, mpsc::Sender<WatchRequest>), EtcdError> {
        let mut watch = WatchClient::new(self.channel.clone());
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                start_revision: from,
                ..Default::default()
            })),
        };
        // The channel holds one request and is empty: this cannot fail.
        let _ = tx.try_send(create);
        let request = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        let stream = timed("starting the watch", self.client_cert, watch.watch(request))
            .await?
            .into_inner();
        Ok((stream, tx))
    }
}
