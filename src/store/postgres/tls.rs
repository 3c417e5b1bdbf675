//! TLS to PostgreSQL (`sslmode=require`, `verify-ca` or `verify-full` in
//! the URL): a `tokio-postgres-rustls` connector over the process's one
//! rustls provider (aws-lc-rs).
//!
//! Every TLS connection verifies the server's certificate chain and its
//! name, whichever of the three modes the URL names: against the
//! certificates of `[store] ca_file` only, or else the system's roots (the
//! platform verifier, as for IMAP and the relay). postdesk never sends a
//! password or a message over TLS it has not verified, so `prefer` and
//! `allow` (TLS only if the server offers it, unverified in libpq) connect
//! without TLS, as `disable` does.
//!
//! Must not: log the URL, or fall back to plain text when TLS was asked for.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What every pooled connection and `check --connect` connect with.
pub type Connector = MakeRustlsConnect;

/// The libpq modes that ask for TLS; all are verified as `verify-full`.
const TLS_MODES: [&str; 3] = ["require", "verify-ca", "verify-full"];

/// `text` with `sslmode=verify-ca|verify-full` written as `require` (the
/// only TLS mode `tokio-postgres` parses; the verification is ours), in a
/// URL's query or a key=value string alike.
pub(super) fn normalize_sslmode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sslmode") {
        let (before, from) = rest.split_at(at + "sslmode".len());
        out.push_str(before);
        let value_at = from
            .trim_start()
            .strip_prefix('=')
            .map(|v| from.len() - v.trim_start().len());
        rest = from;
        if let Some(i) = value_at {
            let value = &from[i..];
            if let Some(mode) = ["verify-full", "verify-ca"]
                .into_iter()
                .find(|m| value.starts_with(m))
            {
                out.push_str(&from[..i]);
                out.push_str("require");
                rest = &value[mode.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether connections to `config` use TLS (and are then verified).
pub fn uses_tls(config: &tokio_postgres::Config) -> bool {
    config.get_ssl_mode() == SslMode::Require
}

/// The sslmode values that ask for TLS, for messages.
pub fn tls_modes() -> String {
    TLS_MODES.join(", ")
}

/// The connector: roots from `ca_file` (PEM, every certificate in it) when
/// given, else the system's. An unreadable or empty `ca_file` is an error
/// naming the file. Without `tls` (the URL asks for none) nothing is read:
/// the connector is never used, and a machine without system roots must
/// still reach a local database.
pub fn connector(ca_file: Option<&Path>, tls: bool) -> Result<Connector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if !tls {
        let unused = builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        return Ok(MakeRustlsConnect::new(unused));
    }
    let config = match ca_file {
        Some(file) => {
            let bad = |e: &dyn std::fmt::Display| {
                format!("ca_file {}: not PEM certificates: {e}", file.display())
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "ca_file {}: no certificate in the file",
                    file.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("the system's certificate roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// What a failed connection's message adds when TLS was in play: where the
/// certificate was checked against, so that "UnknownIssuer" says what to fix.
pub(super) fn explain(config: &tokio_postgres::Config, ca_file: Option<&Path>) -> String {
    if !uses_tls(config) {
        return String::new();
    }
    match ca_file {
        Some(f) => format!(
            " (TLS: the server's certificate and name are checked against the CA in {})",
            f.display()
        ),
        None => " (TLS: the server's certificate and name are checked against the system's roots; set [store] ca_file for a private CA)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_become_require_in_urls_and_key_value_strings() {
        assert_eq!(
            normalize_sslmode("postgresql://u@db.example/pd?sslmode=verify-full&x=1"),
            "postgresql://u@db.example/pd?sslmode=require&x=1"
        );
        assert_eq!(
            normalize_sslmode("host=db dbname=pd sslmode = verify-ca user=u"),
            "host=db dbname=pd sslmode = require user=u"
        );
        let plain = "host=db dbname=sslmode_test sslmode=disable";
        assert_eq!(normalize_sslmode(plain), plain);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let err = connector(Some(&file), true).err().expect("refused");
        assert!(
            err.contains("ca.pem") && err.contains("no certificate"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = connector(Some(&missing), true).err().expect("refused");
        assert!(err.contains("missing.pem"), "{err}");
        assert!(connector(None, true).is_ok());
        assert!(connector(Some(&missing), false).is_ok());
    }
}
