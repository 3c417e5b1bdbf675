//! Optional DKIM signing of replies with mail-auth (`[outbound.dkim]`).
//!
//! Owns reading the PEM key (RSA PKCS#1/PKCS#8, Ed25519 PKCS#8) and prepending the
//! `DKIM-Signature` header (rsa-sha256 or ed25519-sha256, relaxed/relaxed). Signs From, To,
//! Subject, Date, Message-ID, In-Reply-To, References, MIME-Version and
//! Content-Type. The key file is read on each signing so a rotated key is
//! picked up without a restart; it is never logged.
//!
//! Must not: alter the message bytes other than prepending the header.

use std::path::Path;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
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
    #[error("key file {0} holds no usable RSA or Ed25519 private key: {1}")]
    Key(String, String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Sign `raw` and return it with the `DKIM-Signature` header prepended.
/// The key is RSA (PKCS#1 or PKCS#8: rsa-sha256) or Ed25519 (PKCS#8: ed25519-sha256).
pub fn sign(cfg: &DkimConfig, raw: Vec<u8>) -> Result<Vec<u8>, DkimError> {
    let header = match read_key(&cfg.key_file)? {
        Key::Rsa(key) => signer_header(DkimSigner::from_key(key), cfg, &raw)?,
        Key::Ed25519(key) => signer_header(DkimSigner::from_key(key), cfg, &raw)?,
    };
    let mut out = Vec::with_capacity(header.len() + raw.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&raw);
    Ok(out)
}

/// Read and parse the key file exactly as `sign` does (`postdesk check` and
/// reload use this to refuse a key no reply could be signed with).
pub(crate) fn check_key(path: &Path) -> Result<(), DkimError> {
    read_key(path).map(drop)
}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

fn read_key(path: &Path) -> Result<Key, DkimError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| DkimError::Read(name.clone(), e))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| DkimError::Key(name.clone(), e.to_string()))?;
    match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
        Ok(key) => Ok(Key::Rsa(key)),
        Err(rsa_err) => {
            let PrivateKeyDer::Pkcs8(p8) = &der else {
                return Err(DkimError::Key(name, rsa_err.to_string()));
            };
            let key = Ed25519Key::from_pkcs8_der(p8.secret_pkcs8_der()).map_err(|e| {
                DkimError::Key(name, format!("not RSA ({rsa_err}) nor Ed25519 ({e})"))
            })?;
            Ok(Key::Ed25519(key))
        }
    }
}

fn signer_header<T: SigningKey>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    cfg: &DkimConfig,
    raw: &[u8],
) -> Result<String, DkimError> {
    let signature = signer
        .domain(cfg.domain.clone())
        .selector(cfg.selector.clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .sign(raw)
        .map_err(|e| DkimError::Sign(e.to_string()))?;
    Ok(signature.to_header())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::crypto::Ed25519Key;

    /// A generated Ed25519 key signs, and the header lands first.
    #[test]
    fn signs_with_an_ed25519_key() {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate");
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("key");
        assert!(!key.public_key().is_empty());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&pkcs8)
        };
        std::fs::write(
            &path,
            format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
        )
        .expect("write");
        let cfg = DkimConfig {
            domain: "acme.example".into(),
            selector: "pd".into(),
            key_file: path,
        };
        let raw = b"From: a@acme.example\r\nTo: b@x.example\r\nSubject: t\r\n\r\nbody\r\n".to_vec();
        let out = sign(&cfg, raw.clone()).expect("sign");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert!(
            text.contains("d=acme.example") && text.contains("s=pd"),
            "{text}"
        );
        assert!(out.ends_with(&raw));
        let missing = DkimConfig {
            key_file: dir.path().join("nope.pem"),
            ..cfg
        };
        assert!(matches!(sign(&missing, raw), Err(DkimError::Read(..))));
    }
}
