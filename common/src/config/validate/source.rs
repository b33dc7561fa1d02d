//! `daemon.source`: where the config comes from when it is not the files (`etcd`), and the
//! rules of a config split between a bootstrap file and an etcd value.

use super::{kind, Validator};
use crate::config::etcd::{ClientCert, EtcdSource, EtcdTls};
use serde_yaml::Value;
use std::path::Path;

const SOURCE_KEYS: &[&str] = &["etcd"];
const ETCD_KEYS: &[&str] = &["endpoints", "key", "username", "password_file", "tls"];
const TLS_KEYS: &[&str] = &["ca", "cert", "key"];

impl Validator<'_> {
    /// `daemon.source`: `{ etcd: {...} }`, or nothing (the files).
    pub(super) fn source(&mut self, value: &Value, base: &Path) -> Option<EtcdSource> {
        if value.is_null() {
            return None;
        }
        let mut etcd = None;
        for (key, val) in self.entries(value, "daemon.source", SOURCE_KEYS) {
            if key == "etcd" {
                etcd = self.etcd(val, base);
            }
        }
        etcd
    }

    fn etcd(&mut self, value: &Value, base: &Path) -> Option<EtcdSource> {
        let at = "daemon.source.etcd";
        let before = self.errors.len();
        let (mut endpoints, mut key, mut username, mut password_file) = (None, None, None, None);
        let mut tls = None;
        let entries = self.entries(value, at, ETCD_KEYS);
        if !value.is_mapping() {
            return None;
        }
        for (k, val) in entries {
            let p = format!("{at}.{k}");
            match k.as_str() {
                "endpoints" => endpoints = self.endpoints(val, &p),
                "key" => {
                    key = self.string(val, &p).filter(|s| {
                        let ok = !s.is_empty();
                        if !ok {
                            self.err(&p, "must not be empty".into());
                        }
                        ok
                    })
                }
                "username" => username = self.string(val, &p),
                "password_file" => password_file = self.path(val, &p, base),
                "tls" => tls = self.etcd_tls(val, &p, base),
                _ => {}
            }
        }
        if endpoints.is_none()
            && !self.errors[before..]
                .iter()
                .any(|e| e.path.ends_with(".endpoints"))
        {
            self.err(
                at,
                "missing \"endpoints\" (e.g. [\"http://127.0.0.1:2379\"])".into(),
            );
        }
        if key.is_none()
            && !self.errors[before..]
                .iter()
                .any(|e| e.path.ends_with(".key"))
        {
            self.err(
                at,
                "missing \"key\" (the etcd key whose value is the config)".into(),
            );
        }
        if username.is_some() != password_file.is_some() && self.errors.len() == before {
            self.err(
                at,
                "\"username\" and \"password_file\" go together: give both, or neither".into(),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        let endpoints = endpoints?;
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https > 0 && https < endpoints.len() {
            self.err(
                &format!("{at}.endpoints"),
                "mixes http:// and https:// endpoints: one connection setting serves them all, \
                 so either every endpoint uses TLS (https://, with \"tls\") or none does"
                    .into(),
            );
        } else if https > 0 && tls.is_none() {
            self.err(
                at,
                "https:// endpoints need \"tls\" with at least \"ca\" (the CA that signed \
                 etcd's certificate), e.g. tls: { ca: /etc/scriptd/etcd-ca.pem }"
                    .into(),
            );
        } else if https == 0 && tls.is_some() {
            self.err(
                &format!("{at}.tls"),
                "TLS needs https:// endpoints, and these are http://: write them as \
                 https://HOST:PORT, or remove \"tls\""
                    .into(),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        Some(EtcdSource {
            endpoints,
            key: key?,
            username,
            password_file,
            tls,
        })
    }

    /// `daemon.source.etcd.tls`: `{ ca }`, or `{ ca, cert, key }` for a client certificate.
    fn etcd_tls(&mut self, value: &Value, path: &str, base: &Path) -> Option<EtcdTls> {
        let before = self.errors.len();
        let (mut ca, mut cert, mut key) = (None, None, None);
        for (k, val) in self.entries(value, path, TLS_KEYS) {
            let p = format!("{path}.{k}");
            let file = self.path(val, &p, base);
            match k.as_str() {
                "ca" => ca = file,
                "cert" => cert = file,
                "key" => key = file,
                _ => {}
            }
        }
        if self.errors.len() > before || !value.is_mapping() {
            return None;
        }
        if ca.is_none() {
            self.err(
                path,
                "missing \"ca\" (the CA that signed etcd's certificate, a PEM file)".into(),
            );
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (None, None) => None,
            _ => {
                self.err(
                    path,
                    "\"cert\" and \"key\" go together (the client certificate etcd's \
                     --client-cert-auth asks for, and its private key): give both, or neither"
                        .into(),
                );
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(EtcdTls { ca: ca?, client })
    }

    /// A non-empty list of `http://host:port` or `https://host:port` URLs.
    fn endpoints(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let Value::Sequence(items) = value else {
            self.err(
                path,
                format!(
                    "expected a list of URLs such as [\"http://127.0.0.1:2379\"], found {}",
                    kind(value)
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.err(path, "must list at least one endpoint".into());
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(url) = self.string(item, &p) else {
                continue;
            };
            match endpoint_error(&url) {
                None => out.push(url),
                Some(why) => self.err(&p, why),
            }
        }
        (out.len() == items.len()).then_some(out)
    }
}

/// Why `url` is not an endpoint scriptd can use (pure).
fn endpoint_error(url: &str) -> Option<String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Some(format!(
            "invalid endpoint {url:?}: expected http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host_port.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            None
        }
        _ => Some(format!(
            "invalid endpoint {url:?}: expected http://HOST:PORT or https://HOST:PORT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_error;

    #[test]
    fn endpoints() {
        for ok in [
            "http://127.0.0.1:2379",
            "http://etcd-1:2379/",
            "http://[::1]:2379",
            "https://etcd-1:2379",
        ] {
            assert_eq!(endpoint_error(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("127.0.0.1:2379", "expected http://HOST:PORT"),
            (
                "grpc://e:2379",
                "expected http://HOST:PORT or https://HOST:PORT",
            ),
            ("https://e", "expected http://HOST:PORT"),
            ("http://e", "expected http://HOST:PORT"),
            ("http://e:0", "expected http://HOST:PORT"),
            ("http://:2379", "expected http://HOST:PORT"),
            ("http://e:2379/v3", "expected http://HOST:PORT"),
        ] {
            let e = endpoint_error(bad).unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
