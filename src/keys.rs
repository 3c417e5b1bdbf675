//! Keys and certificates read from the operator's files: the STARTTLS
//! certificate and key, and the DKIM signing key. A leaf (it imports no other
//! postdesk module) so that the daemon loading them and `postdesk check`
//! validating a configuration read them with the same code: a file `check`
//! accepts is one the daemon can use.
//!
//! Owns: parsing PEM (rustls's parser) into a rustls server config (the
//! aws-lc-rs provider passed explicitly) and into an RSA or Ed25519 DKIM key,
//! and saying in its own words what is wrong with a file — never quoting its
//! bytes. Must not: read any file but the one it is given; fall back silently
//! when only one of the TLS pair is set. Untrusted input: none (operator
//! files), but their content is never echoed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{CryptoError, Ed25519Key, RsaKey, Sha256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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

/// The STARTTLS acceptor for a certificate chain and key in PEM files
/// (`None` when neither is set); an error naming the file and what is wrong
/// with it otherwise.
pub fn tls_acceptor(
    cert_path: Option<&Path>,
    key_path: Option<&Path>,
) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert_path, key_path) = match (cert_path, key_path) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A DKIM signing key: RSA (rsa-sha256) or Ed25519 (ed25519-sha256).
pub enum DkimKey {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// Why a DKIM key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    #[error("cannot read key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("key file {0} holds no usable RSA or Ed25519 private key: {1}")]
    Key(String, String),
}

/// Read and parse a DKIM key file (PEM: RSA PKCS#1 or PKCS#8, Ed25519
/// PKCS#8); refused with why RSA and why Ed25519 each rejected it, or what is
/// wrong with the PEM.
pub fn read_dkim_key(path: &Path) -> Result<DkimKey, DkimKeyError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| DkimKeyError::Read(name.clone(), e))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| DkimKeyError::Key(name.clone(), pem_problem(&e).into()))?;
    let try_rsa = || RsaKey::<Sha256>::from_key_der(der.clone_key()).map_err(|e| rejected(&e));
    let reason = match &der {
        PrivateKeyDer::Pkcs8(p8) => {
            let rsa_err = match try_rsa() {
                Ok(key) => return Ok(DkimKey::Rsa(key)),
                Err(e) => e,
            };
            match Ed25519Key::from_pkcs8_der(p8.secret_pkcs8_der()) {
                Ok(key) => return Ok(DkimKey::Ed25519(key)),
                Err(e) => format!(
                    "not a usable RSA key ({rsa_err}); not a usable Ed25519 key ({})",
                    rejected(&e)
                ),
            }
        }
        PrivateKeyDer::Pkcs1(_) => match try_rsa() {
            Ok(key) => return Ok(DkimKey::Rsa(key)),
            Err(rsa_err) => format!(
                "not a usable RSA key ({rsa_err}); not an Ed25519 key (PKCS#1 holds only RSA keys)"
            ),
        },
        PrivateKeyDer::Sec1(_) => {
            "an elliptic-curve key (SEC1 `EC PRIVATE KEY`, such as P-256), neither RSA nor Ed25519"
                .into()
        }
        _ => "a key format other than PKCS#1 or PKCS#8".into(),
    };
    Err(DkimKeyError::Key(name, reason))
}

/// Why the file holds no PEM private key, in words of our own: the parser's
/// own text can quote bytes of the file.
fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => {
            "no unencrypted PEM private key (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`)"
        }
        Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        Error::Base64Decode(_) => "a PEM section is not valid base64",
        Error::SectionTooLarge => "a PEM section is too large",
        _ => "the PEM cannot be parsed",
    }
}

/// The crypto library's reason for refusing a key (`TooSmall`,
/// `WrongAlgorithm`…), without mail-auth's generic prefix.
fn rejected(e: &mail_auth::Error) -> String {
    match e {
        mail_auth::Error::Crypto(CryptoError::Library(reason)) => reason.clone(),
        other => other.to_string(),
    }
}
