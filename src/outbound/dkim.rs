//! Optional DKIM signing of replies with mail-auth (`[outbound.dkim]`).
//!
//! Owns keeping the key read by [`crate::keys::read_dkim_key`] (RSA PKCS#1/PKCS#8,
//! Ed25519 PKCS#8) and prepending the
//! `DKIM-Signature` header (rsa-sha256 or ed25519-sha256, relaxed/relaxed). Signs From, To,
//! Subject, Date, Message-ID, In-Reply-To, References, MIME-Version and
//! Content-Type. The parsed key is kept and reused while its file is
//! unchanged (same inode, length and modification time), so a rotated key is
//! picked up at the next signing without a restart, and the PEM is not read
//! and parsed again for every reply; it is never logged. A key it cannot use is
//! refused with the reason (why RSA and why Ed25519 each rejected it, or
//! what is wrong with the PEM), never with bytes of the file.
//!
//! Must not: alter the message bytes other than prepending the header.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::DkimConfig;
use crate::keys::{DkimKey, DkimKeyError, read_dkim_key};
use mail_auth::common::crypto::SigningKey;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

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
    #[error(transparent)]
    Key(#[from] DkimKeyError),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Sign `raw` and return it with the `DKIM-Signature` header prepended.
/// The key is RSA (PKCS#1 or PKCS#8: rsa-sha256) or Ed25519 (PKCS#8: ed25519-sha256).
pub fn sign(cfg: &DkimConfig, raw: Vec<u8>) -> Result<Vec<u8>, DkimError> {
    let header = match &*key_for(&cfg.key_file)? {
        DkimKey::Rsa(key) => signer_header(DkimSigner::from_key(Shared(key)), cfg, &raw)?,
        DkimKey::Ed25519(key) => signer_header(DkimSigner::from_key(Shared(key)), cfg, &raw)?,
    };
    let mut out = Vec::with_capacity(header.len() + raw.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&raw);
    Ok(out)
}

/// What identifies a version of the key file: inode, length, mtime.
type Stamp = (u64, u64, Option<SystemTime>);

/// The last key read and the file version it came from.
static LAST_KEY: Mutex<Option<(PathBuf, Stamp, Arc<DkimKey>)>> = Mutex::new(None);

/// The key in `path`: the one read before while the file is unchanged,
/// otherwise read (and kept) now.
fn key_for(path: &Path) -> Result<Arc<DkimKey>, DkimError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| DkimKeyError::Read(path.display().to_string(), e))?;
    let stamp = (meta.ino(), meta.len(), meta.modified().ok());
    let mut last = LAST_KEY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, s, key)) = last.as_ref()
        && p == path
        && *s == stamp
    {
        return Ok(key.clone());
    }
    let key = Arc::new(read_dkim_key(path)?);
    *last = Some((path.to_path_buf(), stamp, key.clone()));
    Ok(key)
}

/// A borrowed key for one signature (the signer wants a key it owns).
struct Shared<'a, K>(&'a K);

impl<K: SigningKey> SigningKey for Shared<'_, K> {
    type Hasher = K::Hasher;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
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
        assert!(matches!(
            sign(&missing, raw),
            Err(DkimError::Key(DkimKeyError::Read(..)))
        ));
    }

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }

    /// A 2048-bit RSA key signs rsa-sha256, as PKCS#1 and as PKCS#8.
    #[test]
    fn signs_with_an_rsa_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = b"From: a@acme.example\r\nSubject: t\r\n\r\nbody\r\n".to_vec();
        for name in ["rsa2048.pkcs1.pem", "rsa2048.pkcs8.pem"] {
            let path = dir.path().join(name);
            std::fs::write(&path, fixture(&format!("dkim/{name}"))).expect("write");
            let cfg = DkimConfig {
                domain: "acme.example".into(),
                selector: "pd".into(),
                key_file: path,
            };
            let out = sign(&cfg, raw.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with("DKIM-Signature:") && text.contains("a=rsa-sha256"),
                "{name}: {text}"
            );
        }
    }

    /// The parsed key is reused, but a key file replaced by a rename or
    /// rewritten in place is read again at the next signing, and a removed
    /// one stops signing.
    #[test]
    fn a_changed_key_file_is_used_at_the_next_signing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        let ed25519 = pem(
            "PRIVATE KEY",
            &Ed25519Key::generate_pkcs8().expect("generate"),
        );
        let cfg = DkimConfig {
            domain: "acme.example".into(),
            selector: "pd".into(),
            key_file: path.clone(),
        };
        let algorithm = || {
            let out = sign(&cfg, b"From: a@acme.example\r\n\r\nbody\r\n".to_vec());
            let text = String::from_utf8_lossy(&out.expect("sign")).into_owned();
            text.split("a=")
                .nth(1)
                .and_then(|a| a.split(';').next())
                .map(str::to_owned)
        };
        std::fs::write(&path, &ed25519).expect("write");
        assert_eq!(algorithm().as_deref(), Some("ed25519-sha256"));
        assert_eq!(algorithm().as_deref(), Some("ed25519-sha256"), "reused");
        let next = dir.path().join("k.pem.new");
        std::fs::write(&next, fixture("dkim/rsa2048.pkcs8.pem")).expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(algorithm().as_deref(), Some("rsa-sha256"), "renamed over");
        std::fs::write(&path, &ed25519).expect("rewrite");
        assert_eq!(algorithm().as_deref(), Some("ed25519-sha256"), "rewritten");
        std::fs::remove_file(&path).expect("rm");
        let raw = b"From: a@acme.example\r\n\r\nbody\r\n".to_vec();
        assert!(matches!(
            sign(&cfg, raw),
            Err(DkimError::Key(DkimKeyError::Read(..)))
        ));
    }

    /// A key file no reply could be signed with is refused with why, for each
    /// kind of file: what RSA and what Ed25519 each found wrong, or what is
    /// wrong with the PEM; never a byte of the file.
    #[test]
    fn an_unusable_key_says_why_each_algorithm_refused_it() {
        let mut ed25519 = Ed25519Key::generate_pkcs8().expect("generate");
        // The last byte is the public key's: it no longer matches the seed.
        let last = ed25519.len() - 1;
        ed25519[last] ^= 1;
        let cases = [
            (
                "garbage",
                "not a key\n".to_string(),
                "no unencrypted PEM private key (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`)",
            ),
            (
                "bad base64",
                "-----BEGIN PRIVATE KEY-----\nMC4C!!AQAw\n-----END PRIVATE KEY-----\n".to_string(),
                "a PEM section is not valid base64",
            ),
            (
                "no END line",
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n".to_string(),
                "a PEM section has no END line",
            ),
            (
                "1024-bit RSA, PKCS#1",
                fixture("dkim/rsa1024.pkcs1.pem"),
                "not a usable RSA key (TooSmall); not an Ed25519 key (PKCS#1 holds only RSA keys)",
            ),
            (
                "1024-bit RSA, PKCS#8",
                fixture("dkim/rsa1024.pkcs8.pem"),
                "not a usable RSA key (TooSmall); not a usable Ed25519 key (WrongAlgorithm)",
            ),
            (
                "Ed25519 with a mismatched public key",
                pem("PRIVATE KEY", &ed25519),
                "not a usable RSA key (InvalidEncoding); not a usable Ed25519 key (InvalidEncoding)",
            ),
            (
                "P-256, PKCS#8",
                fixture("tls/key.pem"),
                "not a usable RSA key (WrongAlgorithm); not a usable Ed25519 key (WrongAlgorithm)",
            ),
            (
                "P-256, SEC1",
                fixture("dkim/p256.sec1.pem"),
                "an elliptic-curve key (SEC1 `EC PRIVATE KEY`, such as P-256), neither RSA nor Ed25519",
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        for (what, text, want) in cases {
            std::fs::write(&path, text).expect("write");
            match read_dkim_key(&path).map(drop) {
                Err(DkimKeyError::Key(file, reason)) => {
                    assert_eq!(file, path.display().to_string(), "{what}");
                    assert_eq!(reason, want, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
