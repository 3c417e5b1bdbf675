//! Signing in and staying signed in: password hashes (argon2id), the
//! session cookie, CSRF tokens and the sign-in rate limit.
//!
//! A session is a random 256-bit token in the cookie `postdesk_session`
//! (HttpOnly, SameSite=Lax, Path=/, Secure when the request came over TLS
//! through a trusted proxy: `X-Forwarded-Proto: https` from one of
//! `[http] trusted_proxies`); the store keeps only its sha256, the user, an
//! expiry ([`SESSION_LIFETIME`]) and the session's CSRF token. Every form
//! carries that token; a POST without it, with another session's, or from
//! another origin (`Origin` / `Sec-Fetch-Site`) is refused 403 ([`Posted`]).
//! Sessions end on sign-out, on a new password, and when the user's API
//! tokens are all revoked (`postdesk users revoke USER`).
//!
//! Untrusted input: the cookie, every form field, the client's headers.
//! Passwords and tokens are never logged.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;

use crate::api::AppState;
use crate::api::auth::{AuthUser, token_hash};
use crate::store::{NewWebSession, TokenRole};

/// The cookie's name.
pub const COOKIE: &str = "postdesk_session";
/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sign-in attempts per minute from one client address, and for one email
/// address (a burst of this many, then one every 60/N seconds).
pub const SIGNINS_PER_MINUTE: u32 = 10;
/// Largest form body accepted (a reply's text and its fields).
pub const MAX_FORM: usize = 2 * 1024 * 1024;
/// Largest `multipart/form-data` form (a reply with attachments): a
/// form's text and the API's attachment limit.
pub const MAX_UPLOAD: usize = MAX_FORM + crate::outbound::MAX_ATTACHMENTS_BYTES + 64 * 1024;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 1024;

/// An argon2id PHC string for `password` (default parameters: 19 MiB,
/// 2 passes), with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&crate::mail::random_bytes::<16>())
        .map_err(|e| format!("salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// Whether `password` matches the stored PHC string (any argon2 variant
/// it names; an unparsable hash matches nothing).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A PHC string no password matches, verified when the email is unknown so
/// that a miss costs as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("postdesk decoy").unwrap_or_default())
}

/// The sign-in budget, per client address and per email address.
pub struct SigninLimits {
    by_key: DefaultKeyedRateLimiter<String>,
}

impl Default for SigninLimits {
    fn default() -> Self {
        let n = NonZeroU32::new(SIGNINS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        SigninLimits {
            by_key: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }
}

impl SigninLimits {
    /// Take one attempt for the client `ip` and for `email`: false when
    /// either is spent.
    pub fn take(&self, ip: Option<IpAddr>, email: &str) -> bool {
        if self.by_key.len() > 100_000 {
            self.by_key.retain_recent();
        }
        let ip_ok = ip.is_none_or(|ip| self.by_key.check_key(&format!("ip:{ip}")).is_ok());
        let email_ok = self.by_key.check_key(&format!("email:{email}")).is_ok();
        ip_ok && email_ok
    }

    /// Take one attempt for the client `ip` alone (using a sign-in link).
    pub fn take_ip(&self, ip: Option<IpAddr>) -> bool {
        ip.is_none_or(|ip| self.by_key.check_key(&format!("ip:{ip}")).is_ok())
    }
}

/// The client's address (behind a trusted proxy: the forwarded one).
pub fn client_ip(
    parts_ext: &axum::http::Extensions,
    headers: &HeaderMap,
    s: &AppState,
) -> Option<IpAddr> {
    let peer = parts_ext
        .get::<ConnectInfo<SocketAddr>>()?
        .0
        .ip()
        .to_canonical();
    Some(crate::api::forms::client_ip(
        peer,
        headers,
        &s.live.config().http.trusted_proxies,
    ))
}

/// Whether the request reached a trusted proxy over TLS.
fn behind_tls(ext: &axum::http::Extensions, headers: &HeaderMap, s: &AppState) -> bool {
    let Some(peer) = ext.get::<ConnectInfo<SocketAddr>>() else {
        return false;
    };
    let peer = peer.0.ip().to_canonical();
    let trusted = s
        .live
        .config()
        .http
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer));
    trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Start a session for `user`: stores it and returns the `Set-Cookie` value.
pub async fn start(
    s: &AppState,
    user: &str,
    ext: &axum::http::Extensions,
    headers: &HeaderMap,
) -> Result<String, crate::api::error::ApiError> {
    let token = crate::api::auth::new_token()
        .map_err(|e| crate::api::error::ApiError::internal(format!("random: {e}")))?;
    let csrf = crate::api::auth::new_token()
        .map_err(|e| crate::api::error::ApiError::internal(format!("random: {e}")))?;
    let expires_at = crate::store::now_ms() + SESSION_LIFETIME.as_millis() as i64;
    s.store
        .create_session(NewWebSession {
            id_hash: token_hash(&token),
            user: user.to_string(),
            csrf,
            expires_at,
        })
        .await?;
    let secure = if behind_tls(ext, headers, s) {
        "; Secure"
    } else {
        ""
    };
    Ok(format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    ))
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The session token in the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// A signed-in agent (from the session cookie).
#[derive(Clone)]
pub struct Agent {
    pub id: String,
    pub role: TokenRole,
    /// The session's CSRF token, for the forms a page renders.
    pub csrf: String,
    /// sha256 of the session's token (to end it).
    pub session_hash: String,
    /// Available for assignment now (the top bar's toggle shows it).
    pub available: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// The caller as the API's actions take it. Sends are budgeted per user
    /// across their browsers (`web:<user>`), apart from their API tokens.
    pub fn auth_user(&self) -> AuthUser {
        AuthUser {
            id: self.id.clone(),
            role: self.role,
            token_hash: format!("web:{}", self.id),
        }
    }
}

/// Not signed in: a page goes to `/login`, anything else is 401.
pub struct SignInFirst(Method, String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.0 == Method::GET && !self.1.starts_with("/events") {
            let next: String = form_urlencoded::byte_serialize(self.1.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next}")).into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "sign in first\n").into_response()
        }
    }
}

impl FromRequestParts<AppState> for Agent {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, SignInFirst> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let refuse = || SignInFirst(parts.method.clone(), path.clone());
        let token = cookie_token(&parts.headers).ok_or_else(refuse)?;
        let hash = token_hash(token);
        let session = match s.store.web_session(hash.clone()).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(refuse()),
            Err(e) => {
                tracing::warn!(error = %e, "web session lookup failed");
                return Err(refuse());
            }
        };
        let config = s.live.config();
        let Some(user) = config.user(&session.user) else {
            return Err(refuse());
        };
        if session.expires_at <= crate::store::now_ms() {
            return Err(refuse());
        }
        Ok(Agent {
            available: s.live.user_available(user),
            id: session.user,
            role: session.role,
            csrf: session.csrf,
            session_hash: hash,
        })
    }
}

/// A POSTed form from a signed-in agent, its `csrf` field this session's
/// token and its origin the page's own; anything else is refused 403
/// before the form is even parsed. URL-encoded, or `multipart/form-data`
/// with files (up to [`MAX_UPLOAD`], the files within the API's
/// attachment limit).
pub struct Posted<T> {
    pub agent: Agent,
    pub form: T,
    /// The files of a multipart form (file inputs left empty are skipped).
    pub files: Vec<crate::outbound::Attachment>,
}

/// A `multipart/form-data` body: its text fields and its files.
async fn multipart(
    content_type: &str,
    body: axum::body::Bytes,
) -> Result<(Vec<(String, String)>, Vec<crate::outbound::Attachment>), Response> {
    let bad = |e: multer::Error| {
        (
            StatusCode::BAD_REQUEST,
            format!("malformed multipart form: {e}\n"),
        )
            .into_response()
    };
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let (mut fields, mut files) = (Vec::new(), Vec::new());
    let mut total = 0;
    while let Some(field) = parts.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().map(str::to_string);
        let media = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let bytes = field.bytes().await.map_err(bad)?;
        match file {
            Some(f) if f.is_empty() && bytes.is_empty() => {}
            Some(filename) => {
                total += bytes.len();
                if total > crate::outbound::MAX_ATTACHMENTS_BYTES {
                    return Err(
                        Refused(StatusCode::PAYLOAD_TOO_LARGE, "attachments too large")
                            .into_response(),
                    );
                }
                let content_type = media
                    .filter(|m| {
                        crate::outbound::quote::valid_media_type(m)
                            && m != "application/octet-stream"
                    })
                    .unwrap_or_else(|| {
                        crate::outbound::compose::content_type_for(&filename).to_string()
                    });
                files.push(crate::outbound::Attachment {
                    filename,
                    content_type,
                    data: bytes.to_vec(),
                });
            }
            None => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("field {name:?} is not UTF-8 text\n"),
                    )
                        .into_response()
                })?;
                fields.push((name, text));
            }
        }
    }
    Ok((fields, files))
}

/// Why a POST was refused.
pub struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// A request that says it comes from another site (`Sec-Fetch-Site`) or
/// another origin than the `Host` it was sent to.
pub fn cross_origin(headers: &HeaderMap) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if site == "cross-site" || site == "same-site" {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("null");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}

/// A form POSTed without a session (signing in): refused 403 when it says
/// it comes from another origin, 400 when it is not the form expected.
/// Returns the request's parts (headers, client address) and the form.
pub async fn public_form<T: DeserializeOwned + Send>(
    s: &AppState,
    req: Request,
) -> Result<(Parts, T), Response> {
    let (parts, body) = req.into_parts();
    if cross_origin(&parts.headers) {
        return Err((StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response());
    }
    let req = Request::from_parts(parts.clone(), body);
    match Form::<T>::from_request(req, s).await {
        Ok(Form(form)) => Ok((parts, form)),
        Err(_) => Err((StatusCode::BAD_REQUEST, "bad sign-in form\n").into_response()),
    }
}

/// Equal by their digests: no early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    token_hash(a) == token_hash(b)
}

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let agent = Agent::from_request_parts(&mut parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        if cross_origin(&parts.headers) {
            tracing::info!(user = %agent.id, "web POST from another origin refused");
            return Err(
                Refused(StatusCode::FORBIDDEN, "cross-origin request refused").into_response(),
            );
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let is_multipart = content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data");
        let limit = if is_multipart { MAX_UPLOAD } else { MAX_FORM };
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            Refused(StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response()
        })?;
        // A multipart form continues as the URL-encoded form of its text
        // fields, its files apart.
        let (bytes, files) = if is_multipart {
            let (fields, files) = multipart(&content_type, bytes).await?;
            let mut enc = form_urlencoded::Serializer::new(String::new());
            enc.extend_pairs(fields);
            parts.headers.insert(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            (axum::body::Bytes::from(enc.finish()), files)
        } else {
            (bytes, Vec::new())
        };
        let csrf = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !same_secret(&csrf, &agent.csrf) {
            tracing::info!(user = %agent.id, "web POST without this session's CSRF token refused");
            return Err(
                Refused(StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response(),
            );
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Form(form) = Form::<T>::from_request(req, s)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
        Ok(Posted { agent, form, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_argon2id_and_verify() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("postdesk decoy", ""));
        assert_ne!(h, hash_password("correct horse").expect("hash"), "salted");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; postdesk_session=tok; b=2".parse().expect("hv"),
        );
        assert_eq!(cookie_token(&h), Some("tok"));
        h.insert(header::COOKIE, "postdesk_session=".parse().expect("hv"));
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn cross_origin_posts_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "desk.example:8025".parse().expect("hv"));
        assert!(
            !cross_origin(&h),
            "no Origin: a plain form post of old browsers"
        );
        h.insert(
            header::ORIGIN,
            "http://desk.example:8025".parse().expect("hv"),
        );
        assert!(!cross_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().expect("hv"));
        assert!(cross_origin(&h));
        h.insert(header::ORIGIN, "null".parse().expect("hv"));
        assert!(cross_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().expect("hv"));
        assert!(cross_origin(&h));
    }
}
