//! What connecting to etcd takes besides an endpoint: the password (`password_file`) and
//! the TLS settings (`tls`), read from the files `daemon.source.etcd` names once, at start
//! (and by `scriptd --check`). A file that cannot be used is an error of the config, named
//! by its setting: the daemon does not start on it.

use super::tls;
use crate::credential_files::{self, CredentialFileError};
use scriptd_common::config::etcd::EtcdSource as Settings;
use std::sync::Arc;
use tokio_rustls::rustls::ClientConfig;

/// User name and password.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"(not shown)")
            .finish()
    }
}

/// What connecting takes besides an endpoint.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The user to authenticate as.
    pub credentials: Option<Credentials>,
    /// TLS (`https://` endpoints).
    pub tls: Option<Tls>,
}

/// The TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    /// etcd's CA, and the client certificate if any.
    pub config: Arc<ClientConfig>,
    /// A client certificate is presented (what a refusal by etcd means depends on it).
    pub client_cert: bool,
}

/// Why a file `daemon.source.etcd` names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file cannot be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] CredentialFileError),
    /// rustls refused the settings.
    #[error("daemon.source.etcd.tls: {0}")]
    Rustls(String),
    /// The client key is not the client certificate's.
    #[error(
        "daemon.source.etcd.tls.key {key} is not the private key of the certificate in \
         daemon.source.etcd.tls.cert {cert} ({reason}): give the key the certificate was \
         issued for"
    )]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's words.
        reason: String,
    },
}

impl FilesError {
    /// The setting whose file is at fault (`daemon.source.etcd.tls.ca`).
    pub fn setting(&self) -> &str {
        match self {
            Self::File(
                CredentialFileError::Read { setting, .. }
                | CredentialFileError::Content { setting, .. }
                | CredentialFileError::KeyReadable { setting, .. },
            ) => setting,
            Self::Mismatch { .. } => "daemon.source.etcd.tls.key",
            Self::Rustls(_) => "daemon.source.etcd.tls",
        }
    }
}

/// Reads the files of `settings` (blocking); warns when others may read the password.
pub fn read(settings: &Settings) -> Result<Access, FilesError> {
    let credentials = match (&settings.username, &settings.password_file) {
        (Some(username), Some(path)) => {
            let file = credential_files::read(path, "daemon.source.etcd.password_file")?;
            if file.mode & 0o077 != 0 {
                tracing::warn!(
                    "the etcd password file {} can be read by group or others (mode {:o}); \
                     `chmod 600` it",
                    path.display(),
                    file.mode
                );
            }
            let text = String::from_utf8_lossy(&file.bytes);
            Some(Credentials {
                username: username.clone(),
                password: text.lines().next().unwrap_or_default().to_owned(),
            })
        }
        _ => None,
    };
    let tls = match &settings.tls {
        Some(files) => Some(Tls {
            config: tls::client_config(files)?,
            client_cert: files.client.is_some(),
        }),
        None => None,
    };
    Ok(Access { credentials, tls })
}
