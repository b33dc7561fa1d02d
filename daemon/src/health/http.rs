//! `http:` a `GET` of a plain-HTTP URL with hyper's HTTP/1.1 client connection (hyper is in
//! the tree through tonic: no other HTTP client), healthy on a 2xx or 3xx status like a
//! Kubernetes `httpGet` probe. Redirects are not followed and the body is not read.

use super::tcp::connect;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use scriptd_common::config::health::http_target;

/// One `GET` of `url` (checked by validation); the caller bounds the time.
pub(super) async fn probe(url: &str) -> Result<String, String> {
    let target = http_target(url)?;
    let stream = connect(&target.host, target.port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", target.authority))?;
    let request = Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(
            USER_AGENT,
            concat!("scriptd-health/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request for {url}: {e}"))?;
    // The connection is driven here, next to the request: nothing outlives the probe. A
    // server that closes the connection after its answer (HTTP/1.0) ends `conn` as the
    // response is handed over: the request's result is then ready.
    let mut conn = std::pin::pin!(conn);
    let mut sent = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        r = &mut sent => r,
        r = &mut conn => match r {
            Ok(()) => sent.await,
            Err(e) => return Err(format!("GET {url}: {e}")),
        },
    }
    .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let text = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    if status.is_success() || status.is_redirection() {
        Ok(text.trim_end().to_owned())
    } else {
        Err(text.trim_end().to_owned())
    }
}
