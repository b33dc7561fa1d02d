//! A service's health probe (`health:`): what it checks and how often, and the pure checks
//! of its HTTP URL and TCP address, which validation and the daemon's probes share.

use super::{ser_duration, CommandSpec};
use serde::Serialize;
use std::time::Duration;

/// `health:` of a service, with the built-in defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthConfig {
    /// What is probed (`exec`, `http` or `tcp`).
    #[serde(flatten)]
    pub probe: Probe,
    /// Time between the starts of two probes; the first one runs this long after the start.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// A probe that has not answered by then failed.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Consecutive failed probes that make the service unhealthy.
    pub failures: u32,
    /// Failures this soon after the start, before the first success, do not count.
    #[serde(serialize_with = "ser_duration")]
    pub start_period: Duration,
    /// Restart the service when it turns unhealthy.
    pub restart: bool,
}

/// The probe itself: exactly one of `exec`, `http`, `tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Run a command (argv list or `/bin/sh -c` string): healthy when it exits 0.
    Exec(CommandSpec),
    /// `GET` a plain-HTTP URL: healthy on a 2xx or 3xx status.
    Http(String),
    /// Connect to `host:port`: healthy when the connection is accepted.
    Tcp(String),
}

impl Probe {
    /// The keys of the probe kinds, in the order messages list them.
    pub const KINDS: [&'static str; 3] = ["exec", "http", "tcp"];

    /// Its key (`exec`, `http`, `tcp`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Http(_) => "http",
            Self::Tcp(_) => "tcp",
        }
    }

    /// For people: `http http://127.0.0.1:8080/`, `tcp db:5432`, `exec ["pg_isready"]`.
    pub fn describe(&self) -> String {
        match self {
            Self::Exec(CommandSpec::Shell(s)) => format!("exec {s:?}"),
            Self::Exec(CommandSpec::Argv(argv)) => format!("exec {argv:?}"),
            Self::Http(url) => format!("http {url}"),
            Self::Tcp(addr) => format!("tcp {addr}"),
        }
    }
}

/// Built-in defaults of `health.*` (those of a Kubernetes probe, which Docker's match but
/// for its 30 s interval and timeout).
pub mod builtin {
    use std::time::Duration;

    /// `health.interval` (Kubernetes `periodSeconds`)
    pub const INTERVAL: Duration = Duration::from_secs(10);
    /// `health.timeout` (Kubernetes `timeoutSeconds`)
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    /// `health.failures` (Kubernetes `failureThreshold`, Docker `--retries`)
    pub const FAILURES: u32 = 3;
    /// `health.start_period` (Docker `--start-period`)
    pub const START_PERIOD: Duration = Duration::ZERO;
    /// `health.restart` (what a Kubernetes liveness probe does)
    pub const RESTART: bool = true;
}

/// Where an HTTP probe connects and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port (80 when the URL names none).
    pub port: u16,
    /// `Host:` header value: the URL's authority.
    pub authority: String,
    /// Path and query (`/` when the URL has none).
    pub path: String,
}

/// Parses a probe URL: `http://HOST[:PORT][/PATH]`. `https` is refused: the probe speaks
/// plain HTTP only.
pub fn http_target(text: &str) -> Result<HttpTarget, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid URL {text:?} ({e}); write it as http://HOST:PORT/PATH"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "https is not supported in {text:?}: the probe speaks plain HTTP only (no TLS \
                 client in the daemon); probe a plain-HTTP port, or use `exec: [curl, -fsS, \
                 {text}]`"
            ))
        }
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other:?} in {text:?}: write it as http://HOST:PORT/PATH"
            ))
        }
        None => {
            return Err(format!(
                "{text:?} has no scheme: write it as http://HOST:PORT/PATH"
            ))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "{text:?} has no host: write it as http://HOST:PORT/PATH"
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} carries credentials (user@host), which the probe does not send; remove them"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "{text:?} has no host: write it as http://HOST:PORT/PATH"
        ));
    }
    // What follows the host: nothing, or `:PORT`.
    let rest = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or_default();
    let port = match rest.strip_prefix(':').map(str::parse::<u16>) {
        None => 80,
        Some(Ok(p)) if p > 0 => p,
        Some(_) => {
            return Err(format!(
                "invalid port in {text:?}: write http://HOST:PORT/PATH with a port from 1 to \
                 65535"
            ))
        }
    };
    Ok(HttpTarget {
        host: host.to_owned(),
        port,
        authority: authority.as_str().to_owned(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

/// Splits a TCP probe address `HOST:PORT` (`[::1]:5432` for an IPv6 address) into host and
/// port.
pub fn tcp_target(text: &str) -> Result<(String, u16), String> {
    let usage = "write it as HOST:PORT, e.g. 127.0.0.1:5432 or [::1]:5432";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port: {usage}"));
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{text:?}: unbalanced brackets; {usage}"))?,
        None if host.contains(':') => {
            return Err(format!("{text:?}: an IPv6 address needs brackets; {usage}"))
        }
        None => host,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("{text:?} has no valid host: {usage}"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {port:?} in {text:?}: {usage}")),
        Ok(p) => Ok((host.to_owned(), p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let ok = [
            ("http://127.0.0.1:8080/", "127.0.0.1", 8080, "/"),
            (
                "http://localhost/healthz?full=1",
                "localhost",
                80,
                "/healthz?full=1",
            ),
            ("http://[::1]:9000/x", "::1", 9000, "/x"),
            ("http://example.org", "example.org", 80, "/"),
        ];
        for (text, host, port, path) in ok {
            let t = http_target(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (t.host.as_str(), t.port, t.path.as_str()),
                (host, port, path)
            );
        }
        let bad = [
            ("https://127.0.0.1/", "https is not supported"),
            ("ftp://host/", "unsupported scheme"),
            ("127.0.0.1:8080", "no scheme"),
            ("/healthz", "no scheme"),
            ("http://", "invalid URL"),
            ("http://user:pw@host/", "credentials"),
            ("http://host:0/", "invalid port"),
            ("http://host:99999/", "invalid port"),
            ("http://host:/", "invalid port"),
            ("not a url", "invalid URL"),
        ];
        for (text, want) in bad {
            let e = http_target(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_taken_or_refused_without_panic(text in "\\PC{0,40}", port in 0u32..70000) {
            let _ = http_target(&text);
            let _ = tcp_target(&text);
            let _ = http_target(&format!("http://{text}:{port}/{text}"));
            let _ = tcp_target(&format!("{text}:{port}"));
        }

        #[test]
        fn a_host_and_port_round_trip(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16..) {
            proptest::prop_assert_eq!(tcp_target(&format!("{host}:{port}")), Ok((host.clone(), port)));
            let t = http_target(&format!("http://{host}:{port}/x")).map(|t| (t.host, t.port));
            proptest::prop_assert_eq!(t, Ok((host, port)));
        }
    }

    #[test]
    fn tcp_addresses() {
        let ok = [
            ("127.0.0.1:5432", "127.0.0.1", 5432),
            ("db.internal:6379", "db.internal", 6379),
            ("[::1]:80", "::1", 80),
        ];
        for (text, host, port) in ok {
            assert_eq!(tcp_target(text), Ok((host.to_owned(), port)), "{text}");
        }
        for text in [
            "localhost",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:http",
            "::1:80",
            "[::1:80",
            "a b:80",
        ] {
            assert!(tcp_target(text).is_err(), "{text}");
        }
    }
}
