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
    // The connection is driven here, next to the request: nothing outlives the probe.
    let conn = std::pin::pin!(conn);
    let response = tokio::select! {
        r = sender.send_request(request) => r.map_err(|e| format!("GET {url}: {e}"))?,
        r = conn => return Err(match r {
            Ok(()) => format!("GET {url}: the connection closed before a response"),
            Err(e) => format!("GET {url}: {e}"),
        }),
    };
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
