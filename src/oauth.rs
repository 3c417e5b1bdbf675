//! OAuth 2 access tokens for channels that log in with XOAUTH2 (Gmail,
//! Office 365): [`TokenSource::access_token`] returns a bearer token,
//! refreshing it (refresh-token grant through the `oauth2` crate over
//! reqwest) when it is missing or within [`REFRESH_MARGIN`] of expiry.
//! Shared by every user of the token: the IMAP puller and, through
//! [`ChannelTokens`], the outbound sender's XOAUTH2 SMTP.
//!
//! Owns: the in-memory access tokens, and the refresh-token file on disk
//! when the provider rotates it (written to a temp file in the same
//! directory with mode 0600, fsynced, renamed over the old one, directory
//! fsynced — a crash leaves the old or the new token, never half of one).
//! A rotated token that cannot be written (a read-only directory) does not
//! cost the access token: it is kept in memory, used for the next refresh and
//! written then (logged as an error until it is).
//! A refused grant (`invalid_grant`: revoked, expired) marks the channel
//! [`OAuthError::NeedsReauth`]; from then on no request is made for that
//! channel until the refresh-token or client-secret file changes on disk.
//!
//! Its own module (not the puller's or the sender's) because both use it:
//! `pull/` for XOAUTH2 IMAP and `outbound/` (through [`AccessTokens`]) for
//! XOAUTH2 SMTP, and neither imports the other for it.
//!
//! Must not: log or put into an error any token or secret (errors carry the
//! provider's error code and description only). Untrusted input: the token
//! endpoint's JSON (parsed by `oauth2`); redirects are not followed.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, HttpRequest, HttpResponse, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use tokio::sync::Mutex;

use crate::config::{ChannelConfig, ChannelKind, O365_APP_SCOPE, OAuthConfig, OAuthFlow};

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Lifetime assumed when the provider does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Bound on one token request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token-endpoint response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The channel has no `[channels.oauth]` or no token endpoint.
    #[error("channel {0} has no oauth configuration")]
    NotConfigured(String),
    /// The provider refused the grant; a person must authorise again
    /// (write a new refresh token file).
    #[error("refresh token refused ({0}); re-authorisation needed")]
    NeedsReauth(String),
    /// A secret file could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The token endpoint failed otherwise (network, 5xx, bad JSON); retry later.
    #[error("token endpoint: {0}")]
    Endpoint(String),
}

impl OAuthError {
    /// True when only a person can fix it (no retry until files change).
    pub fn needs_reauth(&self) -> bool {
        matches!(self, OAuthError::NeedsReauth(_))
    }
}

/// What the secret files looked like when the grant was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Vec<Option<(SystemTime, u64)>>);

fn stamp(cfg: &OAuthConfig) -> FileStamp {
    FileStamp(
        cfg.secret_files()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect(),
    )
}

#[derive(Default)]
struct Entry {
    access: Option<(String, Instant)>,
    refused: Option<(FileStamp, String)>,
    /// A rotated refresh token that could not be saved (a read-only
    /// directory), with the file's stamp then: used instead of the file's
    /// (the provider may have retired that one) until it is saved or the
    /// file changes (a person wrote a new token).
    unsaved: Option<(FileStamp, String)>,
}

/// A refreshed access token, and the rotated refresh token if it could not
/// be saved.
struct Refreshed {
    access: String,
    expires: Instant,
    unsaved: Option<String>,
}

/// Access tokens for every OAuth channel, shared by the daemon's tasks.
pub struct TokenSource {
    http: reqwest::Client,
    entries: std::sync::Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
}

fn read_secret(path: &Path) -> Result<String, OAuthError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| OAuthError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// Replace `path` with `contents` atomically, mode 0600: a new temp file
/// beside it, fsync, rename over `path`, fsync the directory.
///
/// The temp file is opened `O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing
/// file, and never through a symlink someone planted at its name (which
/// would write the token wherever the link points); a name that exists is
/// skipped for the next one.
pub fn write_secret_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".into());
    let pid = std::process::id();
    let temps = (0..16).map(|_| {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        dir.join(format!(".{name}.{pid}.{seq}.tmp"))
    });
    write_secret_via(path, contents, temps)
}

/// [`write_secret_atomically`] through the first of `temps` that can be
/// created new.
fn write_secret_via(
    path: &Path,
    contents: &str,
    temps: impl IntoIterator<Item = PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut last = None;
    for tmp in temps {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        // Created by us just now: ours to remove if anything fails.
        let result = (|| {
            f.write_all(contents.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return result;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary file name to use")))
}

impl Default for TokenSource {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenSource {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        TokenSource {
            http,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, channel: &str) -> Arc<Mutex<Entry>> {
        let mut map = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(channel.to_string()).or_default().clone()
    }

    /// Forget the cached access token (the server refused it), so the next
    /// call refreshes.
    pub async fn invalidate(&self, channel: &str) {
        self.entry(channel).lock().await.access = None;
    }

    /// Whether the channel is waiting for re-authorisation and its files
    /// have not changed since the refusal.
    pub async fn awaiting_reauth(&self, channel: &ChannelConfig) -> bool {
        let Some(cfg) = &channel.oauth else {
            return false;
        };
        match &self.entry(&channel.id).lock().await.refused {
            Some((s, _)) => *s == stamp(cfg),
            None => false,
        }
    }

    /// A valid access token for `channel`, refreshed if needed.
    pub async fn access_token(&self, channel: &ChannelConfig) -> Result<String, OAuthError> {
        let cfg = channel
            .oauth
            .as_ref()
            .ok_or_else(|| OAuthError::NotConfigured(channel.id.clone()))?;
        let url = channel
            .effective_token_url()
            .ok_or_else(|| OAuthError::NotConfigured(channel.id.clone()))?;
        let entry = self.entry(&channel.id);
        let mut e = entry.lock().await;
        if let Some((s, why)) = &e.refused {
            if *s == stamp(cfg) {
                return Err(OAuthError::NeedsReauth(why.clone()));
            }
            tracing::info!(channel = %channel.id, "oauth files changed; trying the refresh token again");
            e.refused = None;
        }
        if let Some((token, expires)) = &e.access
            && Instant::now() + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let before = stamp(cfg);
        let unsaved = match e.unsaved.take() {
            Some((s, token)) if s == before => Some(token),
            Some(_) => {
                tracing::info!(channel = %channel.id, "oauth refresh token file changed; the unsaved rotated token is dropped");
                None
            }
            None => None,
        };
        let fetched = match cfg.flow {
            OAuthFlow::RefreshToken => self.refresh(&channel.id, cfg, &url, unsaved.clone()).await,
            OAuthFlow::ClientCredentials => {
                let scope = channel.effective_app_scope().unwrap_or(O365_APP_SCOPE);
                self.app_token(&channel.id, cfg, &url, scope).await
            }
        };
        match fetched {
            Ok(r) => {
                e.access = Some((r.access.clone(), r.expires));
                e.unsaved = r.unsaved.map(|t| (stamp(cfg), t));
                Ok(r.access)
            }
            Err(OAuthError::NeedsReauth(why)) => {
                tracing::warn!(channel = %channel.id, reason = %why, "oauth grant refused: needs re-authorisation");
                e.access = None;
                e.refused = Some((before, why.clone()));
                Err(OAuthError::NeedsReauth(why))
            }
            Err(other) => {
                // Not refused: an unsaved rotated token stays the one to use.
                e.unsaved = unsaved.map(|t| (before, t));
                Err(other)
            }
        }
    }

    /// Exchange the refresh token (`unsaved`, else the file's) for an access
    /// token, and save the newest refresh token to the file.
    async fn refresh(
        &self,
        channel: &str,
        cfg: &OAuthConfig,
        url: &str,
        unsaved: Option<String>,
    ) -> Result<Refreshed, OAuthError> {
        let from_memory = unsaved.is_some();
        let file = cfg
            .refresh_token_file
            .as_deref()
            .ok_or_else(|| OAuthError::NotConfigured(channel.to_string()))?;
        let refresh = match unsaved {
            Some(token) => token,
            None => read_secret(file)?,
        };
        let client = client(cfg, url)?;
        let reqwest_client = self.http.clone();
        let http = move |req: HttpRequest| send(reqwest_client.clone(), req);
        let started = Instant::now();
        let token = RefreshToken::new(refresh.clone());
        let resp = client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await
            .map_err(grant_error)?;
        // The newest refresh token belongs in the file: one the provider
        // just rotated, or one still only in memory.
        let newest = resp
            .refresh_token()
            .map(|t| t.secret().clone())
            .filter(|t| *t != refresh)
            .or(from_memory.then_some(refresh));
        let unsaved = match newest {
            None => None,
            Some(token) => match write_secret_atomically(file, &token) {
                Ok(()) => {
                    tracing::info!(%channel, "oauth refresh token rotated and saved");
                    None
                }
                // The access token is good: use it, keep the new refresh
                // token in memory and save it at the next refresh. (A
                // restart before that loses it: then re-authorise.)
                Err(error) => {
                    tracing::error!(%channel, path = %file.display(), %error,
                        "cannot save the rotated oauth refresh token; kept in memory until it can be");
                    Some(token)
                }
            },
        };
        let lifetime = resp.expires_in().unwrap_or(DEFAULT_LIFETIME);
        tracing::debug!(%channel, lifetime_secs = lifetime.as_secs(), "oauth access token refreshed");
        Ok(Refreshed {
            access: resp.access_token().secret().clone(),
            expires: started + lifetime,
            unsaved,
        })
    }
}

impl TokenSource {
    /// The app-only (client-credentials) flow: the client id and secret
    /// for an access token of `scope`. No refresh token is involved and
    /// nothing is written back; a refused secret (`invalid_client`: expired
    /// or deleted in Azure) needs a person, as a refused refresh token does.
    async fn app_token(
        &self,
        channel: &str,
        cfg: &OAuthConfig,
        url: &str,
        scope: &str,
    ) -> Result<Refreshed, OAuthError> {
        let client = client(cfg, url)?;
        let reqwest_client = self.http.clone();
        let http = move |req: HttpRequest| send(reqwest_client.clone(), req);
        let started = Instant::now();
        let resp = client
            .exchange_client_credentials()
            .add_scope(Scope::new(scope.to_string()))
            .request_async(&http)
            .await
            .map_err(grant_error)?;
        let lifetime = resp.expires_in().unwrap_or(DEFAULT_LIFETIME);
        tracing::debug!(%channel, lifetime_secs = lifetime.as_secs(), "oauth app-only access token issued");
        Ok(Refreshed {
            access: resp.access_token().secret().clone(),
            expires: started + lifetime,
            unsaved: None,
        })
    }
}

/// The `oauth2` client of a channel: its id, its secret when it has one,
/// credentials sent in the request body.
fn client(
    cfg: &OAuthConfig,
    url: &str,
) -> Result<
    BasicClient<
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
    OAuthError,
> {
    let mut client = BasicClient::new(ClientId::new(cfg.client_id.clone()))
        .set_token_uri(
            TokenUrl::new(url.to_string())
                .map_err(|e| OAuthError::Endpoint(format!("bad token_url: {e}")))?,
        )
        .set_auth_type(AuthType::RequestBody);
    if let Some(path) = &cfg.client_secret_file {
        client = client.set_client_secret(ClientSecret::new(read_secret(path)?));
    }
    Ok(client)
}

/// A token request's failure: the grant or the client refused (only a
/// person can fix it) or anything else (retried later). Carries the
/// provider's error code and description only, never a secret.
fn grant_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().to_string();
            let desc = r
                .error_description()
                .map(|d| format!(": {}", crate::mail::short(d)))
                .unwrap_or_default();
            match r.error() {
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::UnauthorizedClient
                | BasicErrorResponseType::InvalidClient => {
                    OAuthError::NeedsReauth(format!("{code}{desc}"))
                }
                _ => OAuthError::Endpoint(format!("{code}{desc}")),
            }
        }
        RequestTokenError::Request(e) => OAuthError::Endpoint(crate::mail::short(e)),
        RequestTokenError::Parse(e, _) => {
            OAuthError::Endpoint(format!("bad response: {}", crate::mail::short(e)))
        }
        RequestTokenError::Other(s) => OAuthError::Endpoint(crate::mail::short(s)),
    }
}

/// What the provider must grant an OAuth channel, for `postdesk check`:
/// the Azure permissions of each Office 365 flow, Gmail's scope; `None`
/// for channels without OAuth.
pub fn permissions_needed(ch: &ChannelConfig) -> Option<String> {
    let oauth = ch.oauth.as_ref().filter(|_| ch.kind.uses_oauth())?;
    let id = &ch.id;
    let mailbox = ch.login_user();
    Some(match (ch.kind, oauth.flow) {
        (ChannelKind::Office365, OAuthFlow::ClientCredentials) => format!(
            "channel `{id}` (office365, app-only): the app registration `{client}` needs the \
             application permission IMAP.AccessAsApp (Office 365 Exchange Online; SMTP.SendAsApp \
             too for replies through the provider) with admin consent; then, in Exchange Online \
             PowerShell, register its service principal (New-ServicePrincipal -AppId {client} \
             -ObjectId <object id of the enterprise application>) and give it the mailbox \
             (Add-MailboxPermission -Identity {mailbox} -User <that service principal> \
             -AccessRights FullAccess). Scope asked: {scope}",
            client = oauth.client_id,
            scope = ch.effective_app_scope().unwrap_or(O365_APP_SCOPE),
        ),
        (ChannelKind::Office365, OAuthFlow::RefreshToken) => format!(
            "channel `{id}` (office365, delegated): the app registration `{client}` needs the \
             delegated permissions IMAP.AccessAsUser.All, SMTP.Send and offline_access, consented \
             by {mailbox} (or an admin for the organisation); the refresh token in \
             refresh_token_file must come from that consent",
            client = oauth.client_id,
        ),
        _ => format!(
            "channel `{id}` ({kind}): the refresh token must grant the scope \
             https://mail.google.com/ (IMAP and SMTP) to the OAuth client `{client}`, consented \
             by {mailbox}",
            kind = ch.kind.as_str(),
            client = oauth.client_id,
        ),
    })
}

/// A source of OAuth 2 access tokens for a channel's mailbox, used for
/// XOAUTH2 to the provider's SMTP (gmail, office365): what the outbound
/// sender asks for; [`ChannelTokens`] answers it from the [`TokenSource`]
/// the IMAP puller uses too.
pub trait AccessTokens: Send + Sync + 'static {
    /// A currently valid access token for `channel` (refreshing as needed).
    fn access_token<'a>(
        &'a self,
        channel: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

    /// The provider refused `channel`'s token (XOAUTH2 AUTH failed): forget
    /// any cached token so the next attempt gets a fresh one.
    fn rejected<'a>(&'a self, channel: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = channel;
        Box::pin(async {})
    }
}

/// [`TokenSource`] as the outbound sender's [`AccessTokens`]: looks the
/// channel up in the live configuration, so XOAUTH2 SMTP and the IMAP puller
/// share one token (and one rotated refresh token) per channel.
pub struct ChannelTokens {
    pub tokens: Arc<TokenSource>,
    pub live: Arc<crate::live::Live>,
}

impl AccessTokens for ChannelTokens {
    fn access_token<'a>(
        &'a self,
        channel: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let config = self.live.config();
            let ch = config
                .channel(channel)
                .ok_or_else(|| format!("channel {channel} is not in the configuration"))?;
            self.tokens
                .access_token(ch)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn rejected<'a>(&'a self, channel: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.tokens.invalidate(channel))
    }
}

/// The `oauth2` crate's HTTP client: one request over reqwest 0.13.
async fn send(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let mut builder = http.request(parts.method, parts.uri.to_string()).body(body);
    for (name, value) in parts.headers.iter() {
        builder = builder.header(name, value);
    }
    let mut resp = builder.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    // Refuse an oversized body before reading it: by its announced length,
    // else as soon as what arrived passes the cap (a broken or hostile
    // endpoint could stream without end).
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = oauth2::http::Response::builder().status(status);
    for (name, value) in headers.iter() {
        out = out.header(name, value);
    }
    out.body(body).map_err(|e| HttpError::Build(e.to_string()))
}

/// `e` and each of its sources, joined by ": " (a source whose text its
/// parent already shows is left out).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

/// Transport errors of the token request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Shown with its causes: reqwest's own text ("error sending request
    /// for url …") does not say that the connection was refused.
    #[error("{}", with_causes(.0))]
    Reqwest(#[from] reqwest::Error),
    #[error("response too large")]
    TooLarge,
    #[error("{0}")]
    Build(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token endpoint that answers `head` and then streams `chunk` until
    /// the client hangs up; returns its URL.
    fn endless_endpoint(head: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(head.as_bytes());
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            // Without end: a client that reads it all never finishes.
            while s.write_all(chunk.as_bytes()).is_ok() {}
        });
        format!("http://127.0.0.1:{port}/token")
    }

    async fn fetch(url: &str) -> Result<HttpResponse, HttpError> {
        let req = oauth2::http::Request::builder()
            .method("POST")
            .uri(url)
            .body(b"grant_type=refresh_token".to_vec())
            .expect("request");
        let client = reqwest::Client::builder().build().expect("client");
        tokio::time::timeout(std::time::Duration::from_secs(10), send(client, req))
            .await
            .expect("gave up in time")
    }

    #[tokio::test]
    async fn an_oversized_token_response_is_refused_without_reading_it_all() {
        let streamed = endless_endpoint(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(fetch(&streamed).await, Err(HttpError::TooLarge)));
        // Announced too large: refused before any body byte is read.
        let announced = endless_endpoint(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n",
        );
        assert!(matches!(fetch(&announced).await, Err(HttpError::TooLarge)));
    }

    #[test]
    fn rotated_token_is_written_atomically_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("refresh-token");
        std::fs::write(&path, "old\n").expect("write");
        write_secret_atomically(&path, "new-token").expect("rotate");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new-token\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    /// A symlink planted at the temp name (dangling, or to another file) is
    /// neither followed nor replaced: that name is skipped.
    #[test]
    fn a_symlink_at_the_temp_path_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("refresh-token");
        std::fs::write(&path, "old\n").expect("write");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let dangling = dir.path().join("created-through-link");
        let (t1, t2, t3) = (
            dir.path().join(".t1.tmp"),
            dir.path().join(".t2.tmp"),
            dir.path().join(".t3.tmp"),
        );
        std::os::unix::fs::symlink(&victim, &t1).expect("symlink");
        std::os::unix::fs::symlink(&dangling, &t2).expect("symlink");

        // Only planted names: refused, nothing written anywhere.
        let e = write_secret_via(&path, "stolen", [t1.clone(), t2.clone()]).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old\n");

        // With a free name after them: written there, then renamed.
        write_secret_via(&path, "new-token", [t1.clone(), t2.clone(), t3.clone()]).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new-token\n");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
        assert!(!dangling.exists(), "a file was created through the link");
        for link in [&t1, &t2] {
            let m = std::fs::symlink_metadata(link).expect("link");
            assert!(m.file_type().is_symlink(), "{}", link.display());
        }
        assert!(!t3.exists());
    }

    /// Mode 0600 whatever the umask allows (only the mode asked for, never
    /// more) and whatever mode the file it replaces had.
    #[test]
    fn a_rotated_token_replaces_a_world_readable_file_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rt");
        std::fs::write(&path, "old\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        write_secret_atomically(&path, "new").expect("rotate");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Twice in a row (fresh temp names each time).
        write_secret_atomically(&path, "newer").expect("rotate");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "newer\n");
    }
}
