//! `postdesk users token|tokens|revoke`: API bearer tokens — issued
//! (printed once, stored as their hash, with a role and an optional expiry),
//! listed (never the tokens), revoked. A user gone from the file keeps
//! their tokens in the store (the API refuses them meanwhile): listing and
//! revoking them still works.

use anyhow::{Context, Result};

use super::exit::usage;
use super::print_json;
use crate::config::Config;
use crate::store::Store;

/// `users token USER`: a new token, printed once (its id goes to stderr).
pub(super) async fn issue(
    config: &Config,
    store: &dyn Store,
    user: String,
    role: &str,
    expires: Option<std::time::Duration>,
) -> Result<()> {
    if config.user(&user).is_none() {
        return Err(usage(format!("unknown user {user:?}")));
    }
    let role = crate::store::TokenRole::parse(role)
        .ok_or_else(|| usage(format!("unknown role {role:?}")))?;
    let expires_at = expires.map(|d| {
        crate::store::now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    let token = crate::api::auth::new_token().context("reading /dev/urandom")?;
    let hash = crate::api::auth::token_hash(&token);
    let id = hash
        .get(..crate::store::TOKEN_ID_LEN)
        .unwrap_or(&hash)
        .to_string();
    store
        .add_api_token(crate::store::NewApiToken {
            hash,
            user: user.clone(),
            role,
            expires_at,
        })
        .await?;
    println!("{token}");
    let until = expires_at
        .map(|at| format!(", expires {}", crate::store::ms_to_rfc3339(at)))
        .unwrap_or_default();
    eprintln!("token id {id}, role {role}{until} (`postdesk users revoke {user} {id}` revokes it)");
    Ok(())
}

/// Refuse a user neither in the file nor holding tokens in the store (a
/// typo must not look like a clean-up done); note one only in the store.
async fn known(config: &Config, store: &dyn Store, user: &str) -> Result<()> {
    if config.user(user).is_none() {
        if store.api_tokens(user.to_string()).await?.is_empty() {
            return Err(usage(format!(
                "unknown user {user:?} (not in the configuration, no tokens in the store)"
            )));
        }
        eprintln!("postdesk: note: no user {user:?} in the configuration");
    }
    Ok(())
}

/// `users tokens USER`: id, role, issued, expiry.
pub(super) async fn list(
    config: &Config,
    store: &dyn Store,
    user: String,
    json: bool,
) -> Result<()> {
    known(config, store, &user).await?;
    let tokens = store.api_tokens(user.clone()).await?;
    if json {
        return print_json(&tokens);
    }
    println!("{:<14} {:<6} {:<26} EXPIRES", "ID", "ROLE", "ISSUED");
    let now = crate::store::now_ms();
    for t in &tokens {
        let issued = crate::store::ms_to_rfc3339(t.created_at);
        let expires = match t.expires_at {
            None => "never".to_string(),
            Some(at) if at <= now => {
                format!("{} (expired)", crate::store::ms_to_rfc3339(at))
            }
            Some(at) => crate::store::ms_to_rfc3339(at),
        };
        println!("{:<14} {:<6} {issued:<26} {expires}", t.id, t.role);
    }
    if tokens.is_empty() {
        eprintln!("{user} has no API tokens");
    }
    Ok(())
}

/// `users revoke USER ID|--all` (`id` is `None` with `--all`).
pub(super) async fn revoke(
    config: &Config,
    store: &dyn Store,
    user: String,
    id: Option<String>,
) -> Result<()> {
    known(config, store, &user).await?;
    let all = id.is_none();
    let n = store.revoke_api_tokens(user.clone(), id).await?;
    println!("revoked {n} token(s) of {user}");
    if all {
        eprintln!("their web inbox sessions ended too");
    }
    Ok(())
}
