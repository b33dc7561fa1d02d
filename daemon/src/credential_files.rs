//! Reading the files a `daemon.*` setting names that hold certificates, private keys or a
//! password (`daemon.listen.tls`, `daemon.source.etcd.tls`, `daemon.source.etcd.
//! password_file`), once, at start, as root.
//!
//! A file is opened with `O_NONBLOCK` (a FIFO at the path cannot hang the start) and must
//! then be a regular file of at most [`MAX_BYTES`] (`/dev/zero` cannot fill the memory);
//! its mode is read from the open file, not from the path again. Symbolic links are
//! followed on purpose: certbot's `live/` directory and Kubernetes secret volumes are
//! links, and these paths come from the bootstrap file, which only root writes (unlike
//! `log_dir`, see [`crate::nofollow`]). Errors name the setting and the file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

/// The largest file taken: far above any certificate chain, key or password.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Why a file a setting names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialFileError {
    /// The file cannot be opened or read.
    #[error("cannot read {setting} {path}: {source}")]
    Read {
        /// The setting that names it (`daemon.listen.tls.cert`).
        setting: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what the setting needs (not a regular file, too large, no usable PEM
    /// item of the kind needed).
    #[error("{setting} {path}: {what}")]
    Content {
        /// The setting that names it.
        setting: String,
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A private key other users may read.
    #[error(
        "{setting} {path} can be read by other users (mode {mode:o}); make it readable by the \
         daemon's user only (chmod 600)"
    )]
    KeyReadable {
        /// The setting that names it.
        setting: String,
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
}

/// A file's bytes and its permission bits.
pub struct Contents {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The permission bits (`0o7777`).
    pub mode: u32,
}

/// Reads the file at `path`, named by `setting` (blocking).
pub fn read(path: &Path, setting: &str) -> Result<Contents, CredentialFileError> {
    let failed = |source| CredentialFileError::Read {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        source,
    };
    let bad = |what: String| CredentialFileError::Content {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        what,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        return Err(bad(format!(
            "not a regular file but a {}",
            crate::nofollow::kind_of(&meta.file_type())
        )));
    }
    if meta.len() > MAX_BYTES {
        return Err(bad(format!(
            "{} bytes, more than any certificate, key or password (at most {} KiB)",
            meta.len(),
            MAX_BYTES / 1024
        )));
    }
    let mut bytes = Vec::new();
    // The regular file may still grow while read: never past the cap.
    Read::take(&file as &File, MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(bad("grew past the size limit while it was read".into()));
    }
    Ok(Contents {
        bytes,
        mode: meta.mode() & 0o7777,
    })
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn certificates(
    path: &Path,
    setting: &str,
) -> Result<Vec<CertificateDer<'static>>, CredentialFileError> {
    parse_certificates(&read(path, setting)?.bytes, path, setting)
}

/// Every certificate in `pem`, the file at `path`; at least one.
pub fn parse_certificates(
    pem: &[u8],
    path: &Path,
    setting: &str,
) -> Result<Vec<CertificateDer<'static>>, CredentialFileError> {
    let bad = |what: String| CredentialFileError::Content {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(certs)
}

/// The CA certificates in the PEM file at `path`, as trust roots.
pub fn roots(path: &Path, setting: &str) -> Result<RootCertStore, CredentialFileError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path, setting)? {
        roots.add(ca).map_err(|e| CredentialFileError::Content {
            setting: setting.to_owned(),
            path: path.display().to_string(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The private key in the PEM file at `path`, which other users must not be able to read.
pub fn private_key(
    path: &Path,
    setting: &str,
) -> Result<PrivateKeyDer<'static>, CredentialFileError> {
    parse_private_key(&read(path, setting)?, path, setting)
}

/// The private key in `file`, the file at `path`, which other users must not be able to
/// read.
pub fn parse_private_key(
    file: &Contents,
    path: &Path,
    setting: &str,
) -> Result<PrivateKeyDer<'static>, CredentialFileError> {
    if file.mode & 0o004 != 0 {
        return Err(CredentialFileError::KeyReadable {
            setting: setting.to_owned(),
            path: path.display().to_string(),
            mode: file.mode,
        });
    }
    PrivateKeyDer::from_pem_slice(&file.bytes).map_err(|e| CredentialFileError::Content {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        what: format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn what_is_not_a_small_regular_file_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let e = read(&fifo, "daemon.source.etcd.tls.ca")
            .err()
            .expect("a FIFO is refused")
            .to_string();
        assert!(
            e.starts_with("daemon.source.etcd.tls.ca ")
                && e.contains("not a regular file but a FIFO"),
            "{e}"
        );
        let e = read(dir.path(), "s")
            .err()
            .expect("a directory")
            .to_string();
        assert!(e.contains("not a regular file but a directory"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_BYTES as usize + 1]).expect("write");
        let e = read(&big, "s").err().expect("too large").to_string();
        assert!(e.contains("more than any certificate"), "{e}");
        let e = read(&dir.path().join("missing"), "daemon.listen.tls.cert")
            .err()
            .expect("missing")
            .to_string();
        assert!(e.starts_with("cannot read daemon.listen.tls.cert "), "{e}");
    }

    #[test]
    fn pem_contents_and_key_modes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["e".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path, junk) = (
            dir.path().join("c.pem"),
            dir.path().join("c.key"),
            dir.path().join("junk"),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        std::fs::write(&junk, "hello\n").expect("write");
        assert_eq!(certificates(&cert_path, "s").expect("certs").len(), 1);
        assert_eq!(roots(&cert_path, "s").expect("roots").len(), 1);
        let e = certificates(&junk, "s").expect_err("junk").to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = private_key(&key_path, "daemon.source.etcd.tls.key")
            .expect_err("a readable key")
            .to_string();
        assert!(e.contains("can be read by other users (mode 644)"), "{e}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(private_key(&key_path, "s").is_ok());
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = private_key(&junk, "s").expect_err("no key").to_string();
        assert!(e.contains("no private key"), "{e}");
    }
}
