//! STARTTLS set-up: builds the rustls server config (aws-lc-rs provider, passed
//! explicitly so no process-wide default provider is needed) from `tls_cert`/`tls_key`.
//!
//! Must not: read anything but the two configured PEM files, or fall back silently when
//! only one of them is set. Untrusted input: none (operator files).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::SmtpConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("smtp.tls_cert and smtp.tls_key must be set together")]
    Incomplete,
    #[error("cannot read TLS certificate {path}: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificate { path: PathBuf },
    #[error("cannot read TLS private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid TLS certificate/key pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Build a TlsAcceptor from cfg.tls_cert/tls_key (None when unset); clear error type on bad files.
pub fn tls_acceptor(cfg: &SmtpConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert_path, key_path) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
