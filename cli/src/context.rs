//! Contexts: named daemons, kubeconfig-like, in `$XDG_CONFIG_HOME/scriptd/contexts.yaml`
//! (else `~/.config/scriptd/contexts.yaml`), and `ctl context list|use|add|remove|show`.
//!
//! ```yaml
//! current-context: web-1
//! contexts:
//!   - name: web-1
//!     endpoint: https://web-1.example:7443
//!     ca: /home/me/.config/scriptd/ca.pem
//!     cert: /home/me/.config/scriptd/me.pem
//!     key: /home/me/.config/scriptd/me.key
//!   - name: local
//!     endpoint: unix:///run/scriptd/scriptd.sock
//! ```
//!
//! Which daemon a command talks to is `route`'s: flags before variables, `--socket` before
//! `--context` before `--config`, then the current context, then the socket of the config.
//!
//! The file is refused when others could change it (writable by group or others, or owned
//! by another user than the caller and root), as ssh refuses such a config: whoever can
//! write it decides which daemon, and which CA, ctl trusts.

use crate::error::{CtlError, CtlResult, FAILURE, NOT_FOUND, OK, USAGE};
use crate::output::{self, table};
use clap::Subcommand;
use scriptd_common::JSON_SCHEMA;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `ctl context` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ContextCommand {
    /// Every context, the current one marked.
    List,
    /// Make NAME the current context (what ctl talks to without --context or --socket);
    /// --none: no current context (as `kubectl config unset current-context`).
    Use {
        /// Context name.
        #[arg(required_unless_present = "none")]
        name: Option<String>,
        /// No current context: ctl goes back to the socket rules (./scriptd.yaml, else
        /// /etc/scriptd/scriptd.yaml).
        #[arg(long, conflicts_with = "name")]
        none: bool,
    },
    /// Add a context (a name in use is refused unless --force replaces it).
    Add {
        /// Context name (letters, digits, `_`, `-`, `.`).
        name: String,
        /// `unix:///PATH/scriptd.sock`, or `https://HOST:PORT` (a daemon's
        /// daemon.listen.tcp; TLS with a client certificate).
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// The CA that signed the daemon's certificate (PEM; https only, required there).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// This client's certificate (PEM; https only).
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// This client's private key (PEM; https only).
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Replace the context of that name if there is one.
        #[arg(long)]
        force: bool,
    },
    /// Remove a context (when it is the current one, there is no current context after).
    Remove {
        /// Context name.
        name: String,
    },
    /// One context (default: the current one).
    Show {
        /// Context name.
        name: Option<String>,
    },
}

/// The contexts file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Contexts {
    /// The context used without --context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Every context, in the order added.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One context: a name and how to reach its daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Name.
    pub name: String,
    /// `unix:///PATH` or `https://HOST:PORT`.
    pub endpoint: String,
    /// CA of the daemon's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// Where a context's daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP listener with TLS: the URL as given (`https://HOST:PORT`).
    Https(String),
}

impl Endpoint {
    /// Parses `unix:///ABSOLUTE/PATH` or `https://HOST:PORT`; anything else is a usage
    /// error that says what is accepted.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{url}: a unix endpoint takes an absolute path, e.g. \
                     unix:///run/scriptd/scriptd.sock"
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("https://") {
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            let port = authority
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            return match port {
                Some((host, Ok(_))) if !host.is_empty() && !authority.contains('/') => {
                    Ok(Self::Https(format!("https://{authority}")))
                }
                _ => Err(format!(
                    "{url}: an https endpoint is https://HOST:PORT (the daemon's \
                     daemon.listen.tcp), e.g. https://web-1.example:7443"
                )),
            };
        }
        if url.starts_with("http://") {
            return Err(format!(
                "{url}: TLS is mandatory over TCP (the daemon speaks nothing else there); use \
                 https://HOST:PORT with --ca, --cert and --key"
            ));
        }
        Err(format!(
            "{url}: unknown endpoint; use unix:///PATH/scriptd.sock or https://HOST:PORT"
        ))
    }
}

/// The contexts file: `$XDG_CONFIG_HOME/scriptd/contexts.yaml`, else
/// `$HOME/.config/scriptd/contexts.yaml`; `None` when neither variable is set.
pub fn file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("scriptd").join("contexts.yaml"))
}

impl Contexts {
    /// Reads `path`; a file that does not exist holds no contexts. Refused: a file others
    /// could have written, invalid YAML, a name given twice.
    pub fn load(path: &Path) -> CtlResult<Self> {
        use std::io::Read;
        let cannot_read = |e: std::io::Error| {
            CtlError::new(
                FAILURE,
                format!(
                    "cannot read the contexts {}: {e}; check its owner and mode (ctl writes it \
                     0600)",
                    path.display()
                ),
            )
        };
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(cannot_read(e)),
        };
        let meta = file.metadata().map_err(cannot_read)?;
        let euid = nix::unistd::geteuid().as_raw();
        trusted(&meta, euid).map_err(|why| {
            CtlError::new(
                USAGE,
                format!(
                    "the contexts {} are not used: {why}, so someone else could choose the \
                     daemons (and the CA) ctl trusts; `chown {euid} {p} && chmod 600 {p}` if \
                     its content is yours",
                    path.display(),
                    p = path.display()
                ),
            )
        })?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(cannot_read)?;
        let invalid = |why: String| {
            CtlError::new(
                USAGE,
                format!(
                    "the contexts {} are invalid: {why}; fix the file, or remove it and add the \
                     contexts again with `ctl context add`",
                    path.display()
                ),
            )
        };
        let contexts: Self = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for (i, c) in contexts.contexts.iter().enumerate() {
            if contexts.contexts[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(format!("the name {:?} is given twice", c.name)));
            }
        }
        Ok(contexts)
    }

    /// Writes `path` (mode 0600, its directory created 0700), replacing it whole: a reader
    /// never sees half a file.
    pub fn save(&self, path: &Path) -> CtlResult<()> {
        use std::os::unix::fs::DirBuilderExt;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            CtlError::new(
                FAILURE,
                format!("cannot {what} the contexts {}: {e}", path.display()),
            )
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create the directory of", &e))?;
        let text = serde_yaml::to_string(self).map_err(|e| fail("encode", &e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("write", &e))?;
        tmp.write_all(text.as_bytes())
            .map_err(|e| fail("write", &e))?;
        tmp.persist(path).map_err(|e| fail("write", &e.error))?;
        Ok(())
    }

    /// The context named `name`.
    pub fn get(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }
}

/// Whether a contexts file with metadata `meta` may be used by (effective) uid `euid`: not
/// writable by group or others, owned by `euid` or root. `Err`: what is wrong.
fn trusted(meta: &std::fs::Metadata, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!("it is writable by other users (mode {mode:04o})"));
    }
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(format!(
            "it belongs to uid {}, not to you (uid {euid})",
            meta.uid()
        ));
    }
    Ok(())
}

/// The context a command uses: `flag` (`--context`/`SCRIPTD_CONTEXT`), else the current
/// one; `None` when neither is set (then the socket rules apply). A name that is not in
/// the file is a usage error.
pub fn selected(flag: Option<&str>) -> CtlResult<Option<Context>> {
    let Some(path) = file() else {
        return match flag {
            Some(name) => Err(no_file(name)),
            None => Ok(None),
        };
    };
    let contexts = Contexts::load(&path)?;
    let (name, given) = match (flag, &contexts.current_context) {
        (Some(name), _) => (name.to_owned(), true),
        (None, Some(current)) => (current.clone(), false),
        (None, None) => return Ok(None),
    };
    match contexts.get(&name) {
        Some(c) => Ok(Some(c.clone())),
        None => Err(CtlError::new(
            USAGE,
            format!(
                "no context named {name:?} in {}{}; `ctl context list` shows them, `ctl \
                 context add` adds one",
                path.display(),
                if given {
                    " (--context or SCRIPTD_CONTEXT)"
                } else {
                    " (its current-context)"
                }
            ),
        )),
    }
}

fn no_file(name: &str) -> CtlError {
    CtlError::new(
        USAGE,
        format!(
            "no context named {name:?}: neither XDG_CONFIG_HOME nor HOME is set, so there is \
             no contexts file"
        ),
    )
}

/// `ctl context ...`.
pub fn run(cmd: ContextCommand, json: bool, out: &mut impl Write) -> CtlResult {
    let path = file().ok_or_else(|| {
        CtlError::new(
            USAGE,
            "neither XDG_CONFIG_HOME nor HOME is set: ctl has nowhere to keep contexts",
        )
    })?;
    let mut contexts = Contexts::load(&path)?;
    let missing = |name: &str| {
        CtlError::new(
            NOT_FOUND,
            format!(
                "no context named {name:?} in {}; `ctl context list` shows them",
                path.display()
            ),
        )
    };
    match cmd {
        ContextCommand::List => {
            if json {
                let doc = ContextListJson {
                    schema: JSON_SCHEMA,
                    current: contexts.current_context.clone(),
                    contexts: contexts.contexts.iter().map(ContextJson::from).collect(),
                };
                serde_json::to_writer(&mut *out, &doc)?;
                writeln!(out)?;
            } else {
                let mut rows = vec![vec!["CURRENT".into(), "NAME".into(), "ENDPOINT".into()]];
                for c in &contexts.contexts {
                    let current = contexts.current_context.as_deref() == Some(c.name.as_str());
                    rows.push(vec![
                        if current { "*" } else { "" }.to_owned(),
                        c.name.clone(),
                        c.endpoint.clone(),
                    ]);
                }
                write!(
                    out,
                    "{}",
                    table::render(rows, &[2], output::display().width)
                )?;
            }
        }
        ContextCommand::Use { name: None, .. } => {
            contexts.current_context = None;
            contexts.save(&path)?;
            if !json {
                writeln!(
                    out,
                    "no current context: ctl talks to the daemon of the socket rules unless \
                     given --context"
                )?;
            }
        }
        ContextCommand::Use {
            name: Some(name), ..
        } => {
            if contexts.get(&name).is_none() {
                return Err(missing(&name));
            }
            contexts.current_context = Some(name.clone());
            contexts.save(&path)?;
            if !json {
                writeln!(out, "current context: {name}")?;
            }
            // What wins over the current context (as docker warns about DOCKER_HOST).
            for var in ["SCRIPTD_SOCKET", "SCRIPTD_CONTEXT", "SCRIPTD_CONFIG"] {
                if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                    eprintln!(
                        "ctl: warning: {var} is set and wins over the current context; unset \
                         it to use {name}"
                    );
                }
            }
        }
        ContextCommand::Add {
            name,
            endpoint,
            ca,
            cert,
            key,
            force,
        } => {
            let context = new_context(name, endpoint, ca, cert, key)?;
            let name = context.name.clone();
            match contexts.contexts.iter_mut().find(|c| c.name == name) {
                Some(old) if force => *old = context,
                Some(old) => {
                    return Err(CtlError::new(
                        USAGE,
                        format!(
                            "a context named {name:?} exists already (endpoint {}); replace it \
                             with `ctl context add --force`, or choose another name",
                            old.endpoint
                        ),
                    ))
                }
                None => contexts.contexts.push(context),
            }
            contexts.save(&path)?;
            if !json {
                writeln!(out, "context {name} saved in {}", path.display())?;
            }
        }
        ContextCommand::Remove { name } => {
            let before = contexts.contexts.len();
            contexts.contexts.retain(|c| c.name != name);
            if contexts.contexts.len() == before {
                return Err(missing(&name));
            }
            let was_current = contexts.current_context.as_deref() == Some(name.as_str());
            if was_current {
                contexts.current_context = None;
            }
            contexts.save(&path)?;
            if !json {
                writeln!(out, "context {name} removed")?;
            }
            if was_current {
                // As kubectl warns after deleting the current context.
                eprintln!(
                    "ctl: warning: {name} was the current context; there is none now: `ctl \
                     context use NAME` chooses one"
                );
            }
        }
        ContextCommand::Show { name } => {
            let name = match name.or_else(|| contexts.current_context.clone()) {
                Some(name) => name,
                None => {
                    return Err(CtlError::new(
                        NOT_FOUND,
                        "no current context; give a name, or set one with `ctl context use`",
                    ))
                }
            };
            let c = contexts.get(&name).ok_or_else(|| missing(&name))?;
            if json {
                serde_json::to_writer(&mut *out, &ContextJson::from(c))?;
                writeln!(out)?;
            } else {
                writeln!(out, "name: {}", c.name)?;
                writeln!(out, "endpoint: {}", c.endpoint)?;
                for (what, p) in [("ca", &c.ca), ("cert", &c.cert), ("key", &c.key)] {
                    if let Some(p) = p {
                        writeln!(out, "{what}: {}", p.display())?;
                    }
                }
            }
        }
    }
    Ok(OK)
}

/// A context from `ctl context add`'s flags: the endpoint checked, the files made absolute
/// (the context works from any directory) and required for https.
fn new_context(
    name: String,
    endpoint: String,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> CtlResult<Context> {
    let usage = |m: String| CtlError::new(USAGE, m);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(usage(format!(
            "invalid context name {name:?}: use letters, digits, `_`, `-` and `.`"
        )));
    }
    let parsed = Endpoint::parse(&endpoint).map_err(usage)?;
    let absolute = |p: Option<PathBuf>| -> CtlResult<Option<PathBuf>> {
        p.map(|p| std::path::absolute(&p).map_err(|e| usage(format!("{}: {e}", p.display()))))
            .transpose()
    };
    let (ca, cert, key) = (absolute(ca)?, absolute(cert)?, absolute(key)?);
    match parsed {
        Endpoint::Unix(_) if ca.is_some() || cert.is_some() => Err(usage(
            "--ca, --cert and --key are for https endpoints; a unix socket needs none".into(),
        )),
        Endpoint::Https(_) if ca.is_none() => Err(usage(
            "an https endpoint needs --ca FILE: the CA that signed the daemon's certificate".into(),
        )),
        Endpoint::Unix(path) => Ok(Context {
            name,
            endpoint: format!("unix://{}", path.display()),
            ca,
            cert,
            key,
        }),
        Endpoint::Https(url) => Ok(Context {
            name,
            endpoint: url,
            ca,
            cert,
            key,
        }),
    }
}

/// `ctl context list --output json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextListJson {
    /// Always 1.
    pub schema: u32,
    /// The current context's name.
    pub current: Option<String>,
    /// Every context.
    pub contexts: Vec<ContextJson>,
}

/// One context in JSON (`ctl context show --output json`, and in lists).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextJson {
    /// Name.
    pub name: String,
    /// Endpoint URL.
    pub endpoint: String,
    /// CA file.
    pub ca: Option<String>,
    /// Client certificate file.
    pub cert: Option<String>,
    /// Client key file.
    pub key: Option<String>,
}

impl From<&Context> for ContextJson {
    fn from(c: &Context) -> Self {
        let text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Self {
            name: c.name.clone(),
            endpoint: c.endpoint.clone(),
            ca: text(&c.ca),
            cert: text(&c.cert),
            key: text(&c.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok: &[(&str, Endpoint)] = &[
            (
                "unix:///run/scriptd/scriptd.sock",
                Endpoint::Unix("/run/scriptd/scriptd.sock".into()),
            ),
            (
                "https://web-1.example:7443",
                Endpoint::Https("https://web-1.example:7443".into()),
            ),
            (
                "https://127.0.0.1:7443/",
                Endpoint::Https("https://127.0.0.1:7443".into()),
            ),
            (
                "https://[::1]:7443",
                Endpoint::Https("https://[::1]:7443".into()),
            ),
        ];
        for (url, want) in ok {
            assert_eq!(Endpoint::parse(url).as_ref(), Ok(want), "{url}");
        }
        for (url, says) in [
            ("unix://run/s.sock", "absolute path"),
            ("https://web-1.example", "https://HOST:PORT"),
            ("https://:7443", "https://HOST:PORT"),
            ("https://h:7443/x", "https://HOST:PORT"),
            ("http://h:7443", "TLS is mandatory"),
            ("tcp://h:7443", "unknown endpoint"),
        ] {
            let e = Endpoint::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn the_file_round_trips_and_json_parses_back_strictly() {
        let contexts = Contexts {
            current_context: Some("web-1".into()),
            contexts: vec![
                Context {
                    name: "web-1".into(),
                    endpoint: "https://web-1:7443".into(),
                    ca: Some("/ca.pem".into()),
                    cert: Some("/me.pem".into()),
                    key: Some("/me.key".into()),
                },
                Context {
                    name: "local".into(),
                    endpoint: "unix:///run/scriptd/scriptd.sock".into(),
                    ca: None,
                    cert: None,
                    key: None,
                },
            ],
        };
        let text = serde_yaml::to_string(&contexts).expect("yaml");
        assert!(text.contains("current-context: web-1"), "{text}");
        assert_eq!(
            serde_yaml::from_str::<Contexts>(&text).expect("parse"),
            contexts
        );
        let doc = ContextListJson {
            schema: JSON_SCHEMA,
            current: contexts.current_context.clone(),
            contexts: contexts.contexts.iter().map(ContextJson::from).collect(),
        };
        let json = serde_json::to_string(&doc).expect("json");
        assert_eq!(
            serde_json::from_str::<ContextListJson>(&json).expect("strict parse"),
            doc
        );
    }

    #[test]
    fn files_others_could_write_are_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("contexts.yaml");
        std::fs::write(&path, "contexts: []\n").expect("write");
        let euid = nix::unistd::geteuid().as_raw();
        for (mode, ok) in [(0o600, true), (0o644, true), (0o620, false), (0o602, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let meta = std::fs::metadata(&path).expect("metadata");
            assert_eq!(trusted(&meta, euid).is_ok(), ok, "mode {mode:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let meta = std::fs::metadata(&path).expect("metadata");
        let someone = euid.wrapping_add(1).max(1);
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        assert_eq!(
            trusted(&meta, someone).is_ok(),
            owner == 0,
            "another user's file"
        );
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("contexts.yaml");
        std::fs::write(
            &path,
            "contexts:\n  - {name: a, endpoint: 'unix:///a'}\n  - {name: a, endpoint: 'unix:///b'}\n",
        )
        .expect("write");
        let e = Contexts::load(&path).expect_err("twice");
        assert!(e.message.contains("\"a\" is given twice"), "{}", e.message);
    }

    #[test]
    fn https_contexts_need_a_ca_and_unix_ones_no_files() {
        let add = |endpoint: &str, ca: Option<&str>| {
            new_context(
                "n".into(),
                endpoint.into(),
                ca.map(PathBuf::from),
                None,
                None,
            )
        };
        assert!(add("https://h:1", None).is_err());
        assert!(add("unix:///s", Some("/ca.pem")).is_err());
        let c = add("https://h:1", Some("ca.pem")).expect("ok");
        assert!(c.ca.expect("ca").is_absolute());
        assert!(new_context("bad name".into(), "unix:///s".into(), None, None, None).is_err());
    }
}
