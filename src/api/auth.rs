//! Bearer-token authentication and roles: `Authorization: Bearer <token>`.
//!
//! Tokens are issued by `postdesk users token USER [--role agent|admin]
//! [--expires 90d]` and stored only as their sha256 (hex) with a role and an
//! optional expiry; a request's token is hashed and looked up. An unknown or
//! revoked token is 401 `unauthorized`, an expired one 401 `token_expired`.
//! The user must still exist in the configuration.
//!
//! Roles ([`TokenRole`]): an `agent` reads everything, replies, adds notes,
//! updates tickets (whoever owns them) and sets their own availability; an
//! `admin` may also enable and disable channels, set contact owners, set
//! other users' availability and open tickets for any address
//! (`POST /api/v1/tickets`). A role that does not allow an action is 403
//! `forbidden` ([`AuthUser::require_admin`]); acting as another user is 403
//! `forbidden` whatever the role ([`AuthUser::require_self`]). A user without
//! a licence may read but not reply, note or update (403 `unlicensed`,
//! [`AuthUser::require_licensed`]), whatever the role.
//!
//! Untrusted input: the header value (any bytes); it is never logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::config::Config;
pub use crate::store::TokenRole;

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

/// A token lifetime as `users token --expires` takes it: a positive whole
/// number of days (`90d`), hours (`12h`) or minutes (`30m`).
pub fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid lifetime {s:?}: expected e.g. 90d, 12h or 30m");
    let unit = s.chars().last().ok_or_else(bad)?;
    let secs_per = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    // Up to ~100 years: more is a typo, and keeps unix ms in an i64.
    if n == 0 || n.saturating_mul(secs_per) > 100 * 366 * 86_400 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(n * secs_per))
}

/// The authenticated caller: user id, the token's role, and the token's
/// hash (the key of its send rate limit; left out of `Debug`, never logged).
#[derive(Clone)]
pub struct AuthUser {
    pub id: String,
    pub role: TokenRole,
    pub token_hash: String,
}

impl std::fmt::Debug for AuthUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUser")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl AuthUser {
    /// 403 `forbidden` unless `user` is the authenticated user.
    pub fn require_self(&self, user: &str) -> Result<(), ApiError> {
        if user == self.id {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "authenticated as {:?}; cannot act as {user:?}",
                self.id
            )))
        }
    }

    /// 403 `forbidden` unless the token is an admin's; `what` names the action.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match self.role {
            TokenRole::Admin => Ok(()),
            TokenRole::Agent => Err(ApiError::forbidden(format!(
                "{what} needs an admin token (this one is an agent's)"
            ))),
        }
    }

    /// 403 `unlicensed` unless the user has a licence (acting on tickets).
    pub fn require_licensed(&self, config: &Config) -> Result<(), ApiError> {
        match config.user(&self.id) {
            Some(u) if u.licensed => Ok(()),
            _ => Err(ApiError::unlicensed(format!(
                "user {:?} has no licence (licensed = false): reading only",
                self.id
            ))),
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
        let token = bearer(header)?;
        let hash = token_hash(token);
        let grant = state
            .store
            .api_token(hash.clone())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        if grant
            .expires_at
            .is_some_and(|at| at <= crate::store::now_ms())
        {
            return Err(ApiError::token_expired(
                "token expired: ask an admin for a new one (`postdesk users token`)",
            ));
        }
        if state.live.config().user(&grant.user).is_none() {
            return Err(ApiError::unauthorized("token's user no longer exists"));
        }
        Ok(AuthUser {
            id: grant.user,
            role: grant.role,
            token_hash: hash,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &axum::http::HeaderValue) -> Result<&str, ApiError> {
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_days_hours_or_minutes() {
        assert_eq!(
            parse_lifetime("90d"),
            Ok(std::time::Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            parse_lifetime("12h"),
            Ok(std::time::Duration::from_secs(12 * 3_600))
        );
        assert_eq!(
            parse_lifetime(" 30m "),
            Ok(std::time::Duration::from_secs(1_800))
        );
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1.5h",
            "10",
            "10s",
            "10 d",
            "99999999999d",
            "1y",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} accepted");
        }
    }
}
