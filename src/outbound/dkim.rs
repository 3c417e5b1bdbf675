//! Optional DKIM signing of replies with mail-auth (`[outbound.dkim]`).
//!
//! Owns reading the PEM key (PKCS#1 or PKCS#8 RSA) and prepending the
//! `DKIM-Signature` header (rsa-sha256, relaxed/relaxed). Signs From, To,
//! Subject, Date, Message-ID, In-Reply-To, References, MIME-Version and
//! Content-Type. The key file is read on each signing so a rotated key is
//! picked up without a restart; it is never logged.
//!
//! Must not: alter the message bytes other than prepending the header.

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::config::DkimConfig;

/// Headers covered by the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot read key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("key file {0} holds no usable RSA private key: {1}")]
    Key(String, String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Sign `raw` and return it with the `DKIM-Signature` header prepended.
pub fn sign(cfg: &DkimConfig, raw: Vec<u8>) -> Result<Vec<u8>, DkimError> {
    let name = cfg.key_file.display().to_string();
    let pem = std::fs::read(&cfg.key_file).map_err(|e| DkimError::Read(name.clone(), e))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| DkimError::Key(name.clone(), e.to_string()))?;
    let key =
        RsaKey::<Sha256>::from_key_der(der).map_err(|e| DkimError::Key(name, e.to_string()))?;
    let signature = DkimSigner::from_key(key)
        .domain(cfg.domain.clone())
        .selector(cfg.selector.clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .sign(&raw)
        .map_err(|e| DkimError::Sign(e.to_string()))?;
    let header = signature.to_header();
    let mut out = Vec::with_capacity(header.len() + raw.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&raw);
    Ok(out)
}
