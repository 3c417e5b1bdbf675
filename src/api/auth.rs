//! Bearer-token authentication: `Authorization: Bearer <token>`.
//!
//! Tokens are issued by `postdesk users token USER` and stored only as their
//! sha256 (hex); a request's token is hashed and looked up. The user must
//! still exist in the configuration. Acting on behalf of another user is
//! refused by the handlers with 403 ([`AuthUser::require_self`]).
//!
//! Untrusted input: the header value (any bytes); it is never logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

/// Longest token accepted (ours are 43 characters).
const MAX_TOKEN: usize = 256;

/// sha256 hex of a bearer token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits, URL-safe base64).
pub fn new_token() -> std::io::Result<String> {
    use base64::Engine;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The authenticated user's id.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl AuthUser {
    /// 403 unless `user` is the authenticated user.
    pub fn require_self(&self, user: &str) -> Result<(), ApiError> {
        if user == self.0 {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "authenticated as {:?}; cannot act as {user:?}",
                self.0
            )))
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
        let user = state
            .store
            .api_token_user(token_hash(token))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        if state.live.config().user(&user).is_none() {
            return Err(ApiError::unauthorized("token's user no longer exists"));
        }
        Ok(AuthUser(user))
    }
}
