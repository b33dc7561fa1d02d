//! The `daemon:` section (with `daemon.access`) and `include:`.

use super::{kind, Validator};
use crate::config::{builtin, Access, AccessRule, DaemonConfig, Listen, Role, Subject, TlsFiles};
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

const DAEMON_KEYS: &[&str] = &[
    "socket",
    "state_dir",
    "log_dir",
    "debounce",
    "watch",
    "history_limit",
    "access",
    "metrics",
    "listen",
    "source",
];
const ACCESS_KEYS: &[&str] = &["user", "group", "cert", "role"];
const LISTEN_KEYS: &[&str] = &["tcp", "tls"];
const TLS_KEYS: &[&str] = &["cert", "key", "client_ca"];

/// What an access entry names, for finding an entry listed twice.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Listed {
    Uid(u32),
    Gid(u32),
    Cert(String),
}

/// The `daemon:` section when the file has none.
pub(super) fn default_daemon(base: &Path) -> DaemonConfig {
    DaemonConfig {
        socket: base.join(builtin::SOCKET),
        state_dir: base.join(builtin::STATE_DIR),
        log_dir: base.join(builtin::LOG_DIR),
        debounce: builtin::DEBOUNCE,
        watch: true,
        history_limit: builtin::HISTORY_LIMIT,
        access: Access::default(),
        metrics: None,
        listen: None,
        source: None,
    }
}

impl Validator<'_> {
    pub(super) fn daemon(&mut self, value: &Value, base: &Path) -> DaemonConfig {
        let mut d = default_daemon(base);
        if value.is_null() {
            return d;
        }
        for (key, val) in self.entries(value, "daemon", DAEMON_KEYS) {
            let p = format!("daemon.{key}");
            match key.as_str() {
                "socket" => d.socket = self.path(val, &p, base).unwrap_or(d.socket),
                "state_dir" => d.state_dir = self.path(val, &p, base).unwrap_or(d.state_dir),
                "log_dir" => d.log_dir = self.path(val, &p, base).unwrap_or(d.log_dir),
                "debounce" => d.debounce = self.duration(val, &p).unwrap_or(d.debounce),
                "watch" => d.watch = self.bool(val, &p).unwrap_or(d.watch),
                "history_limit" => {
                    d.history_limit = self.count_u32(val, &p, 1).unwrap_or(d.history_limit)
                }
                "access" => d.access = self.access(val, &p),
                "metrics" => d.metrics = self.metrics_address(val, &p),
                "listen" => d.listen = self.listen(val, &p, base),
                "source" => d.source = self.source(val, base),
                _ => {}
            }
        }
        d
    }

    /// `daemon.metrics`: `HOST:PORT` with a numeric address (`127.0.0.1:9464`, `[::1]:9464`),
    /// or null for none. Names are not resolved: what the daemon binds is what the file says.
    pub(super) fn metrics_address(&mut self, value: &Value, path: &str) -> Option<SocketAddr> {
        if value.is_null() {
            return None;
        }
        let text = self.string(value, path)?;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "invalid address {text:?}: use IP:PORT, e.g. 127.0.0.1:9464 (loopback) \
                         or [::1]:9464; host names are not resolved"
                    ),
                );
                None
            }
        }
    }

    /// `daemon.listen`: `{ tcp: ADDR:PORT, tls: { cert, key, client_ca } }`, both required
    /// (TLS is mandatory on TCP). The files are read at start, by the daemon.
    fn listen(&mut self, value: &Value, path: &str, base: &Path) -> Option<Listen> {
        if value.is_null() {
            return None;
        }
        let errors_before = self.errors.len();
        let (mut tcp, mut tls) = (None, None);
        let (mut has_tcp, mut has_tls) = (false, false);
        for (key, val) in self.entries(value, path, LISTEN_KEYS) {
            let p = format!("{path}.{key}");
            match key.as_str() {
                "tcp" => {
                    has_tcp = true;
                    tcp = self.string(val, &p).and_then(|s| match s.parse() {
                        Ok(addr) => Some(addr),
                        Err(_) => {
                            self.err(
                                &p,
                                format!(
                                    "invalid address {s:?}; give an IP address and a port, \
                                     e.g. 0.0.0.0:7443 or [::1]:7443"
                                ),
                            );
                            None
                        }
                    });
                }
                "tls" => {
                    has_tls = true;
                    tls = self.tls(val, &p, base);
                }
                _ => {}
            }
        }
        if self.errors.len() > errors_before || !value.is_mapping() {
            return None;
        }
        if !has_tcp {
            self.err(
                path,
                "missing \"tcp\" (an address and port, e.g. 0.0.0.0:7443)".into(),
            );
        }
        if !has_tls {
            self.err(
                path,
                "missing \"tls\": TLS is mandatory on TCP; give { cert, key, client_ca }".into(),
            );
        }
        Some(Listen {
            tcp: tcp?,
            tls: tls?,
        })
    }

    /// `daemon.listen.tls`: three PEM files, each required.
    fn tls(&mut self, value: &Value, path: &str, base: &Path) -> Option<TlsFiles> {
        let errors_before = self.errors.len();
        let (mut cert, mut key, mut client_ca) = (None, None, None);
        for (k, val) in self.entries(value, path, TLS_KEYS) {
            let p = format!("{path}.{k}");
            let file = self.path(val, &p, base);
            match k.as_str() {
                "cert" => cert = file,
                "key" => key = file,
                "client_ca" => client_ca = file,
                _ => {}
            }
        }
        if self.errors.len() > errors_before || !value.is_mapping() {
            return None;
        }
        for (name, what, missing) in [
            ("cert", "the server's certificate", cert.is_none()),
            ("key", "the server's private key", key.is_none()),
            (
                "client_ca",
                "the CA that signs client certificates (they are required)",
                client_ca.is_none(),
            ),
        ] {
            if missing {
                self.err(path, format!("missing \"{name}\" ({what}, a PEM file)"));
            }
        }
        Some(TlsFiles {
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
        })
    }

    /// `daemon.access`: a list of `{ user: NAME|UID, role }` / `{ group: NAME|GID, role }` /
    /// `{ cert: NAME, role }`.
    pub(super) fn access(&mut self, value: &Value, path: &str) -> Access {
        let items = match value {
            Value::Null => return Access::default(),
            Value::Sequence(items) => items,
            other => {
                self.err(
                    path,
                    format!(
                        "expected a list of entries such as {{ user: alice, role: operate }} or \
                         {{ group: ops, role: read }}, found {}",
                        kind(other)
                    ),
                );
                return Access::default();
            }
        };
        let mut rules = Vec::new();
        // Who (user, group or certificate) -> where it is listed first.
        let mut listed: HashMap<Listed, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let errors_before = self.errors.len();
            let (mut subject, mut role) = (None, None);
            let (mut named, mut has_role) = (false, false);
            let entries = self.entries(item, &at, ACCESS_KEYS);
            // A misspelt key was reported with a hint; do not also call it missing.
            let misspelt = self.errors.len() > errors_before;
            for (key, val) in entries {
                let p = format!("{at}.{key}");
                if key == "role" {
                    has_role = true;
                    role = self.string(val, &p).and_then(|s| {
                        let role = Role::parse(&s);
                        if role.is_none() {
                            self.err(
                                &p,
                                format!(
                                    "invalid role {s:?}; use read (status, logs, history, \
                                     events, dry runs) or operate (everything)"
                                ),
                            );
                        }
                        role
                    });
                } else if named {
                    self.err_key(
                        &p,
                        "an entry names one user, group or certificate; give the other its \
                         own entry"
                            .into(),
                    );
                } else {
                    named = true;
                    subject = if key == "cert" {
                        self.cert_name(val, &p)
                    } else {
                        self.subject(val, &p, key == "group")
                    };
                }
            }
            if !item.is_mapping() {
                continue; // reported by entries()
            }
            if !named && !misspelt {
                self.err(&at, "missing \"user\", \"group\" or \"cert\"".into());
            }
            if !has_role && !misspelt {
                self.err(&at, "missing \"role\" (read or operate)".into());
            }
            let (Some(subject), Some(role)) = (subject, role) else {
                continue;
            };
            let (id, key) = match &subject {
                Subject::User { uid, .. } => (Listed::Uid(*uid), "user"),
                Subject::Group { gid, .. } => (Listed::Gid(*gid), "group"),
                Subject::Cert { name } => (Listed::Cert(name.clone()), "cert"),
            };
            if let Some(first) = listed.get(&id) {
                self.err(
                    &format!("{at}.{key}"),
                    format!(
                        "{subject} is already listed at {first}; give each user, group or \
                         certificate one entry"
                    ),
                );
                continue;
            }
            listed.insert(id, at);
            rules.push(AccessRule { subject, role });
        }
        Access(rules)
    }

    /// The name of a client certificate (its CN, or a DNS or URI SAN).
    fn cert_name(&mut self, value: &Value, path: &str) -> Option<Subject> {
        let name = self.string(value, path)?;
        if name.is_empty() {
            self.err(
                path,
                "must not be empty; give the certificate's CN or a DNS or URI SAN".into(),
            );
            return None;
        }
        Some(Subject::Cert { name })
    }

    /// A user or group given by name or numeric id.
    pub(super) fn subject(&mut self, value: &Value, path: &str, group: bool) -> Option<Subject> {
        let id_kind = if group { "gid" } else { "uid" };
        let (id, name) = match value {
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(id) => (id, None),
                None => {
                    self.err(path, format!("invalid {id_kind} {n}"));
                    return None;
                }
            },
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<u32>() {
                    Ok(id) => (id, None),
                    Err(_) => {
                        self.err(path, format!("invalid {id_kind} {s}"));
                        return None;
                    }
                }
            }
            Value::String(s) => match self.host.lookup(s, group) {
                Ok(id) => (id, Some(s.clone())),
                Err(e) => {
                    self.err(path, e);
                    return None;
                }
            },
            other => {
                self.err(
                    path,
                    format!(
                        "expected a {} name or a numeric {id_kind}, found {}",
                        if group { "group" } else { "user" },
                        kind(other)
                    ),
                );
                return None;
            }
        };
        Some(if group {
            Subject::Group { gid: id, name }
        } else {
            Subject::User { uid: id, name }
        })
    }

    pub(super) fn include(&mut self, value: &Value) {
        let items: Vec<(String, &Value)> = match value {
            Value::String(_) => vec![("include".into(), value)],
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("include[{i}]"), v))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                self.err(
                    "include",
                    format!("expected a glob or a list of globs, found {}", kind(other)),
                );
                Vec::new()
            }
        };
        for (path, item) in items {
            if let Some(s) = self.string(item, &path) {
                if let Err(e) = glob::Pattern::new(&s) {
                    self.err(&path, format!("invalid glob {s:?}: {e}"));
                }
            }
        }
    }
}
