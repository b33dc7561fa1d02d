//! The TCP listener's TLS: the server config built from `daemon.listen.tls` (read once, at
//! start, by [`crate::credential_files`]), and the names a client certificate goes by.
//!
//! rustls with the `ring` provider, the only crypto provider in the tree (`ctl` and the
//! etcd source's client use it through `tokio-rustls`, the tests' `rcgen` too): `ring` builds with a C compiler
//! alone, where `aws-lc-rs` also wants CMake-sized builds of AWS-LC, for nothing this
//! daemon needs (no FIPS, no post-quantum key exchange requirement).

use crate::credential_files::{self, CredentialFileError};
use scriptd_common::config::TlsFiles;
use std::sync::Arc;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why the TLS files of `daemon.listen.tls` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] CredentialFileError),
    /// rustls refused the certificates or key.
    #[error("daemon.listen.tls: {0}")]
    Rustls(String),
}

/// The server config: the certificate and key of `files`, client certificates required and
/// verified against `files.client_ca`, HTTP/2 only.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = credential_files::certificates(&files.cert, "daemon.listen.tls.cert")?;
    let key = credential_files::private_key(&files.key, "daemon.listen.tls.key")?;
    let roots = credential_files::roots(&files.client_ca, "daemon.listen.tls.client_ca")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls(format!("client_ca: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("cert and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The names a client certificate (DER) goes by, as `daemon.access` `cert:` rules match
/// them: the subject's common names, then the DNS and URI subject alternative names. Empty
/// when the certificate cannot be parsed (rustls has verified it already) or has none.
pub fn names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|s| {
                let name = rcgen::string::Ia5String::try_from(*s).expect("ia5");
                if s.contains("://") {
                    rcgen::SanType::URI(name)
                } else {
                    rcgen::SanType::DnsName(name)
                }
            })
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn names_are_the_common_name_then_dns_and_uri_sans() {
        let cases: &[(Option<&str>, &[&str], &[&str])] = &[
            (Some("deploy-bot"), &[], &["deploy-bot"]),
            (None, &["web-1.example"], &["web-1.example"]),
            (
                Some("ci"),
                &["ci.example", "spiffe://example/ci"],
                &["ci", "ci.example", "spiffe://example/ci"],
            ),
            (None, &[], &[]),
        ];
        for (cn, sans, want) in cases {
            assert_eq!(names(&cert_der(*cn, sans)), *want, "{cn:?} {sans:?}");
        }
        assert!(names(b"not a certificate").is_empty());
    }
}
