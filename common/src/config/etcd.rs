//! `daemon.source.etcd`: the config taken from one etcd key instead of files.
//!
//! The bootstrap file (the main file) holds only `daemon:`; the key's value holds the rest
//! (`defaults`, `scripts`). A version is the bootstrap file plus the value as a second
//! file named [`value_file_name`], so validation, the diff, the hash and the history treat
//! it like any other config file.

use super::{ConfigFile, ConfigSource};
use serde::Serialize;
use std::path::PathBuf;

/// Where the name of the file that holds an etcd value starts.
pub const VALUE_FILE_PREFIX: &str = "etcd:";

/// `daemon.source.etcd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdSource {
    /// Client URLs (`http://host:port`, or all `https://host:port` with [`Self::tls`]),
    /// tried in order.
    pub endpoints: Vec<String>,
    /// The key whose value is the config.
    pub key: String,
    /// User to authenticate as (with `password_file`).
    pub username: Option<String>,
    /// File holding the password (absolute; its first line, without the newline).
    pub password_file: Option<PathBuf>,
    /// `tls`: the files of a TLS connection (`https://` endpoints), read at start.
    pub tls: Option<EtcdTls>,
}

/// `daemon.source.etcd.tls`: PEM files, absolute paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdTls {
    /// The CA (one or more certificates) that signed etcd's server certificate.
    pub ca: PathBuf,
    /// The client certificate (chain) and its private key, for an etcd that requires
    /// client certificates (`--client-cert-auth`).
    pub client: Option<ClientCert>,
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientCert {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The config file name of the value of `key` (`etcd:/scriptd/web-1`).
pub fn value_file_name(key: &str) -> String {
    format!("{VALUE_FILE_PREFIX}{key}")
}

/// Whether the config file named `name` is an etcd value.
pub fn is_value_file(name: &str) -> bool {
    name.starts_with(VALUE_FILE_PREFIX)
}

/// The config made of the bootstrap file of `running` (its main file) and `value`, the
/// text of `key`.
pub fn with_value(running: &ConfigSource, key: &str, value: String) -> ConfigSource {
    let mut files: Vec<ConfigFile> = running.files.iter().take(1).cloned().collect();
    files.push(ConfigFile {
        name: value_file_name(key),
        content: value,
    });
    ConfigSource {
        main: running.main.clone(),
        files,
    }
}

/// The value held by a config made by [`with_value`]: the text of its etcd file.
pub fn value_of(source: &ConfigSource) -> Option<&str> {
    source
        .files
        .iter()
        .find(|f| is_value_file(&f.name))
        .map(|f| f.content.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> ConfigSource {
        ConfigSource {
            main: "/etc/scriptd/scriptd.yaml".into(),
            files: vec![ConfigFile {
                name: "scriptd.yaml".into(),
                content: "daemon: {}\n".into(),
            }],
        }
    }

    #[test]
    fn a_value_is_the_second_file_and_replaces_the_previous_value() {
        let one = with_value(&bootstrap(), "/k", "scripts: {}\n".into());
        assert_eq!(one.files.len(), 2);
        assert_eq!(one.files[1].name, "etcd:/k");
        assert_eq!(value_of(&one), Some("scripts: {}\n"));
        let two = with_value(&one, "/k", "defaults: {}\n".into());
        assert_eq!(two.files.len(), 2);
        assert_eq!(value_of(&two), Some("defaults: {}\n"));
        assert_eq!(two.files[0], bootstrap().files[0]);
        assert_eq!(value_of(&bootstrap()), None);
    }
}
