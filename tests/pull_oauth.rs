//! `TokenSource` against a local OAuth token endpoint (Python, rotating
//! refresh tokens): caching until close to expiry, refresh before expiry,
//! the rotated refresh token saved, `invalid_grant` → needs re-authorisation
//! with no further requests until the token file changes.

mod common;

use std::path::Path;

use common::dovecot::OAuthServer;
use postdesk::oauth::{OAuthError, TokenSource};

fn gmail_config(dir: &Path, oauth: &OAuthServer) -> postdesk::config::Config {
    gmail_config_with(dir, oauth, "refresh-token")
}

/// The gmail channel with its refresh token in `token_file` (relative to `dir`).
fn gmail_config_with(
    dir: &Path,
    oauth: &OAuthServer,
    token_file: &str,
) -> postdesk::config::Config {
    let text = format!(
        r#"
[company]
name = "Acme"
[[channels]]
id = "gmail"
kind = "gmail"
address = "desk@acme.example"
[channels.oauth]
token_url = "{}"
client_id = "postdesk-test"
refresh_token_file = "{token_file}"
"#,
        oauth.token_url()
    );
    let path = dir.join("postdesk.toml");
    std::fs::write(&path, &text).expect("config");
    postdesk::config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn token_on_disk(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("refresh-token"))
        .expect("token file")
        .trim()
        .to_string()
}

#[tokio::test]
async fn caches_refreshes_before_expiry_and_saves_rotated_token() {
    postdesk::install_crypto_provider();
    let oauth = OAuthServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = oauth.grant("test");
    std::fs::write(dir.path().join("refresh-token"), format!("{first}\n")).expect("token");
    let config = gmail_config(dir.path(), &oauth);
    let ch = config.channel("gmail").expect("channel");
    let tokens = TokenSource::new();

    let a = tokens.access_token(ch).await.expect("token");
    assert!(a.starts_with("at-"), "{a}");
    assert_eq!(oauth.token_requests(), 1);
    let rotated = token_on_disk(dir.path());
    assert_ne!(rotated, first, "rotated refresh token not saved");
    // Long-lived token: served from memory.
    assert_eq!(tokens.access_token(ch).await.expect("token"), a);
    assert_eq!(oauth.token_requests(), 1);

    // A token that expires within the refresh margin is refreshed on each
    // use, with the newly rotated refresh token.
    tokens.invalidate("gmail").await;
    oauth.set_expires_in(60);
    let b = tokens.access_token(ch).await.expect("token");
    let c = tokens.access_token(ch).await.expect("token");
    assert_ne!(b, a);
    assert_ne!(c, b);
    assert_eq!(oauth.token_requests(), 3);
    assert_ne!(token_on_disk(dir.path()), rotated);
}

#[tokio::test]
async fn invalid_grant_needs_reauth_until_the_token_file_changes() {
    postdesk::install_crypto_provider();
    let oauth = OAuthServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("refresh-token"), "rt-revoked\n").expect("token");
    let config = gmail_config(dir.path(), &oauth);
    let ch = config.channel("gmail").expect("channel");
    let tokens = TokenSource::new();

    let err = tokens.access_token(ch).await.expect_err("refused");
    assert!(matches!(err, OAuthError::NeedsReauth(_)), "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(
        !err.to_string().contains("rt-revoked"),
        "token in error: {err}"
    );
    assert!(tokens.awaiting_reauth(ch).await);
    // No request while nothing changed.
    for _ in 0..3 {
        assert!(
            tokens
                .access_token(ch)
                .await
                .expect_err("still refused")
                .needs_reauth()
        );
    }
    assert_eq!(oauth.token_requests(), 1);
    assert_eq!(
        token_on_disk(dir.path()),
        "rt-revoked",
        "file must not be touched"
    );

    // Re-authorised: a new refresh token on disk.
    let fresh = oauth.grant("test");
    std::fs::write(dir.path().join("refresh-token"), format!("{fresh}\n")).expect("token");
    assert!(!tokens.awaiting_reauth(ch).await);
    tokens
        .access_token(ch)
        .await
        .expect("token after re-authorisation");
    assert_eq!(oauth.token_requests(), 2);
}

/// The refresh-token file's directory is read-only (the shipped unit makes
/// /etc/postdesk read-only): the provider rotates the token on every refresh
/// and it cannot be saved. The access token is still used, the rotated
/// refresh token kept in memory and used for the next refresh, and written
/// once the directory is writable again. Before, every refresh failed after
/// the provider had already rotated the token: the channel never pulled.
#[tokio::test]
async fn a_rotated_token_that_cannot_be_saved_is_kept_in_memory() {
    postdesk::install_crypto_provider();
    let oauth = OAuthServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = common::Tmpfs::mount(&dir.path().join("secrets"), "1m");
    let first = oauth.grant("test");
    std::fs::write(
        dir.path().join("secrets/refresh-token"),
        format!("{first}\n"),
    )
    .expect("token");
    secrets.read_only(true);
    let config = gmail_config_with(dir.path(), &oauth, "secrets/refresh-token");
    let ch = config.channel("gmail").expect("channel");
    let tokens = TokenSource::new();

    let a = tokens
        .access_token(ch)
        .await
        .expect("an access token although the rotated refresh token cannot be saved");
    assert_eq!(token_on_disk(&dir.path().join("secrets")), first);
    tokens.invalidate("gmail").await;
    let b = tokens
        .access_token(ch)
        .await
        .expect("refreshed with the token in memory");
    assert_ne!(a, b);
    assert_eq!(oauth.token_requests(), 2);

    secrets.read_only(false);
    tokens.invalidate("gmail").await;
    tokens.access_token(ch).await.expect("token");
    assert_ne!(
        token_on_disk(&dir.path().join("secrets")),
        first,
        "the newest refresh token is saved once it can be"
    );
}

/// A rotated refresh token is waiting in memory (the directory was
/// read-only) when a person writes a new token into the file (consent
/// granted again, perhaps for another account): the file wins, the token in
/// memory is dropped, and the next refresh uses the file's.
#[tokio::test]
async fn a_token_file_written_by_a_person_outranks_the_unsaved_rotated_token() {
    postdesk::install_crypto_provider();
    let oauth = OAuthServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = common::Tmpfs::mount(&dir.path().join("secrets"), "1m");
    let file = dir.path().join("secrets/refresh-token");
    std::fs::write(&file, format!("{}\n", oauth.grant("old-account"))).expect("token");
    secrets.read_only(true);
    let config = gmail_config_with(dir.path(), &oauth, "secrets/refresh-token");
    let ch = config.channel("gmail").expect("channel");
    let tokens = TokenSource::new();

    let a = tokens.access_token(ch).await.expect("first token");
    assert_eq!(oauth.user_of(&a).as_deref(), Some("old-account"));
    // The rotated token is only in memory now. A person replaces the file.
    secrets.read_only(false);
    std::fs::write(&file, format!("{}\n", oauth.grant("new-account"))).expect("token");
    secrets.read_only(true);
    tokens.invalidate("gmail").await;
    let b = tokens.access_token(ch).await.expect("second token");
    assert_eq!(
        oauth.user_of(&b).as_deref(),
        Some("new-account"),
        "refreshed with the unsaved token instead of the file's"
    );
    assert_eq!(oauth.token_requests(), 2);
}

/// An office365 channel with the app-only flow: `client_secret_file`, a
/// tenant's token endpoint (here the local one), no refresh token file.
fn app_only_config(dir: &Path, oauth: &OAuthServer, extra: &str) -> postdesk::config::Config {
    let text = format!(
        r#"
[company]
name = "Acme"
[[channels]]
id = "o365"
kind = "office365"
address = "desk@acme.example"
[channels.oauth]
flow = "client_credentials"
token_url = "{}"
client_id = "postdesk-test"
client_secret_file = "client-secret"
{extra}
"#,
        oauth.token_url()
    );
    let path = dir.join("postdesk.toml");
    std::fs::write(&path, &text).expect("config");
    postdesk::config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// The client-credentials grant: the secret (and the scope
/// `https://outlook.office365.com/.default`, which the endpoint insists on)
/// buys an access token; no refresh token is read or written; the token is
/// served from memory until close to expiry. A secret the endpoint refuses
/// (`invalid_client`: expired or deleted in Azure) needs a person: no
/// request until the secret file changes.
#[tokio::test]
async fn client_credentials_flow_without_a_refresh_token() {
    postdesk::install_crypto_provider();
    let oauth = OAuthServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("client-secret"), "old-secret\n").expect("secret");
    oauth.app_secret("app-secret-1", "test");
    let config = app_only_config(dir.path(), &oauth, "");
    let ch = config.channel("o365").expect("channel");
    let tokens = TokenSource::new();

    let err = tokens.access_token(ch).await.expect_err("secret refused");
    assert!(err.needs_reauth(), "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("old-secret"), "secret in error");
    assert!(tokens.awaiting_reauth(ch).await);
    assert!(tokens.access_token(ch).await.is_err());
    assert_eq!(oauth.app_requests(), 1, "a refused secret was retried");

    // A new secret written by the admin: the channel comes back.
    std::fs::write(dir.path().join("client-secret"), "app-secret-1\n").expect("secret");
    assert!(!tokens.awaiting_reauth(ch).await);
    let a = tokens.access_token(ch).await.expect("app-only token");
    assert!(a.starts_with("at-app-"), "{a}");
    assert_eq!(oauth.user_of(&a).as_deref(), Some("test"));
    assert_eq!(tokens.access_token(ch).await.expect("cached"), a);
    assert_eq!(oauth.app_requests(), 2);
    assert_eq!(oauth.token_requests(), 2, "{}", oauth.token_requests());
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "something was written: {files:?}");
}

/// A daemon pulls an office365 mailbox from a real Dovecot with an app-only
/// token (XOAUTH2, `user=` the mailbox), introspected by the local OAuth
/// endpoint.
#[test]
fn office365_app_only_pulls_from_dovecot() {
    let oauth = OAuthServer::start();
    let dc = common::dovecot::Dovecot::start(Some(oauth.port));
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = secrets.path().join("client-secret");
    std::fs::write(
        &secret,
        format!("{}\n", oauth.app_secret("s3cret-app", "test")),
    )
    .expect("secret");
    for i in 0..3 {
        dc.deliver(&common::dovecot::message(i, 300));
    }
    let d = common::Daemon::start(
        "",
        &format!(
            r#"{}
[[channels]]
id = "o365"
kind = "office365"
address = "desk@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
poll_interval_secs = 1
[channels.oauth]
flow = "client_credentials"
token_url = "{url}"
client_id = "postdesk-test"
client_secret_file = {secret:?}
"#,
            common::ACME,
            port = dc.port,
            url = oauth.token_url(),
        ),
    );
    let tickets = d.wait_tickets(3, std::time::Duration::from_secs(120));
    assert_eq!(tickets.len(), 3);
    assert!(tickets.iter().all(|t| t["channel"] == "o365"));
    assert!(oauth.app_requests() >= 1);
    assert!(!d.log_text().contains("s3cret-app"), "secret in the log");
}
