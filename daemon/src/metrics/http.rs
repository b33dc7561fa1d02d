//! The metrics endpoint: `GET /metrics` over HTTP/1.1 (hyper), nothing else. Connections
//! are bounded ([`MAX_CONNECTIONS`] at once; more wait in the listen backlog), each serves
//! one request (no keep-alive: a scraper that stalls holds nothing between scrapes) and is
//! closed after [`REQUEST_TIMEOUT`] whatever it is doing.

use super::collect::Sources;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// A connection is closed this long after it was accepted.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the OpenMetrics text format, served when the `Accept` header asks
/// for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves scrapes on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, sources: Sources, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failing = false;
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    failing = false;
                    stream
                }
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning; said once per streak.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(respond(&sources, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("metrics endpoint: connection failed: {e}"),
                Err(_) => tracing::debug!(
                    "metrics endpoint: connection closed after {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            }
        });
    }
}

/// What a request gets, by path and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The metrics, in OpenMetrics (`true`) or the Prometheus text format.
    Metrics { openmetrics: bool },
    /// Another path: 404.
    NotFound,
    /// `/metrics` with another method: 405.
    NotAllowed,
}

/// Where a request goes (pure).
fn route(method: &Method, path: &str, accept: Option<&str>) -> Route {
    if path != "/metrics" {
        Route::NotFound
    } else if method != Method::GET && method != Method::HEAD {
        Route::NotAllowed
    } else {
        Route::Metrics {
            openmetrics: accept.is_some_and(|a| a.contains("application/openmetrics-text")),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond(sources: &Sources, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = match route(req.method(), req.uri().path(), accept) {
        Route::Metrics { openmetrics } => openmetrics,
        Route::NotFound => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: scriptd serves GET /metrics only\n".into(),
            )
        }
        Route::NotAllowed => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: /metrics takes GET\n".into(),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let scrape = sources.scrape().await;
    let metrics = sources.metrics.clone();
    // Encoding a thousand scripts is milliseconds of CPU: not on the runtime.
    let encoded = tokio::task::spawn_blocking(move || scrape.encode(&metrics, openmetrics)).await;
    match encoded {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            let content_type = if openmetrics {
                OPENMETRICS
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {e}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed unexpectedly: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let om = Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
        let cases = [
            (
                Method::GET,
                "/metrics",
                None,
                Route::Metrics { openmetrics: false },
            ),
            (
                Method::HEAD,
                "/metrics",
                None,
                Route::Metrics { openmetrics: false },
            ),
            (
                Method::GET,
                "/metrics",
                om,
                Route::Metrics { openmetrics: true },
            ),
            (
                Method::GET,
                "/metrics",
                Some("text/plain"),
                Route::Metrics { openmetrics: false },
            ),
            (Method::POST, "/metrics", None, Route::NotAllowed),
            (Method::DELETE, "/metrics", om, Route::NotAllowed),
            (Method::GET, "/", None, Route::NotFound),
            (Method::GET, "/metrics/", None, Route::NotFound),
            (Method::POST, "/other", None, Route::NotFound),
        ];
        for (method, path, accept, want) in cases {
            assert_eq!(
                route(&method, path, accept),
                want,
                "{method} {path} {accept:?}"
            );
        }
    }
}
