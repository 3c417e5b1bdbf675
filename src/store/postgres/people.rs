//! People and runtime state in PostgreSQL: contacts and their owners,
//! users' availability, channels' overrides, API tokens (what
//! `store/outbound.rs` and `sqlite.rs` do for SQLite, same rules).

use super::sql::{Db, col, exec, row, rows};
use crate::store::{
    ApiTokenInfo, ContactView, NewApiToken, StoreError, TOKEN_ID_LEN, TokenGrant, TokenRole,
    UserOverride, now_ms,
};

pub(super) async fn list_contacts(db: &Db) -> Result<Vec<ContactView>, StoreError> {
    let sql = "SELECT c.email, c.name, c.owner,
                      (SELECT COUNT(*) FROM tickets t WHERE t.contact_id = c.id)
               FROM contacts c ORDER BY c.email";
    rows(db, sql, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(ContactView {
                email: col(r, 0)?,
                name: col(r, 1)?,
                owner: col(r, 2)?,
                tickets: col(r, 3)?,
            })
        })
        .collect()
}

/// Set (or clear) a contact's owner; an unknown address with an owner is
/// created. Whether it was created.
pub(super) async fn set_contact_owner(
    db: &Db,
    email: &str,
    owner: Option<&str>,
) -> Result<bool, StoreError> {
    let n = exec(
        db,
        "UPDATE contacts SET owner = $1 WHERE email = $2",
        &[&owner, &email],
    )
    .await?;
    match (n, owner) {
        (0, None) => Err(StoreError::NotFound(format!("contact {email}"))),
        (0, Some(_)) if !crate::mail::is_valid_email(email) => Err(StoreError::Invalid(format!(
            "{email:?} is not an email address"
        ))),
        (0, Some(owner)) => {
            exec(
                db,
                "INSERT INTO contacts (email, owner, created_at) VALUES ($1, $2, $3)",
                &[&email, &owner, &now_ms()],
            )
            .await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub(super) async fn user_overrides(db: &Db) -> Result<Vec<UserOverride>, StoreError> {
    let sql = "SELECT id, available, COALESCE(available_at, 0) FROM user_state
               WHERE available IS NOT NULL";
    rows(db, sql, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(UserOverride {
                id: col(r, 0)?,
                available: col(r, 1)?,
                at: col(r, 2)?,
            })
        })
        .collect()
}

pub(super) async fn set_user_available(
    db: &Db,
    user: &str,
    available: Option<bool>,
) -> Result<(), StoreError> {
    exec(
        db,
        "INSERT INTO user_state (id, available, available_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET available = excluded.available,
             available_at = excluded.available_at",
        &[&user, &available, &now_ms()],
    )
    .await?;
    super::listen::notify(db, super::listen::STATE).await
}

pub(super) async fn channel_overrides(db: &Db) -> Result<Vec<(String, bool)>, StoreError> {
    rows(
        db,
        "SELECT id, enabled FROM channel_state WHERE enabled IS NOT NULL",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
    .collect()
}

pub(super) async fn set_channel_enabled(
    db: &Db,
    channel: &str,
    enabled: Option<bool>,
) -> Result<(), StoreError> {
    exec(
        db,
        "INSERT INTO channel_state (id, enabled) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled",
        &[&channel, &enabled],
    )
    .await?;
    super::listen::notify(db, super::listen::STATE).await
}

pub(super) async fn insert_token(db: &Db, t: &NewApiToken, now: i64) -> Result<(), StoreError> {
    exec(
        db,
        "INSERT INTO api_tokens (token_hash, user_id, created_at, role, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&t.hash, &t.user, &now, &t.role.as_str(), &t.expires_at],
    )
    .await?;
    Ok(())
}

/// A role column as stored; anything unknown reads as the weaker `agent`.
fn role_of(s: &str) -> TokenRole {
    TokenRole::parse(s).unwrap_or(TokenRole::Agent)
}

pub(super) async fn token_grant(db: &Db, hash: &str) -> Result<Option<TokenGrant>, StoreError> {
    let r = row(
        db,
        "SELECT user_id, role, expires_at FROM api_tokens WHERE token_hash = $1",
        &[&hash],
    )
    .await?;
    r.map(|r| {
        Ok(TokenGrant {
            user: col(&r, 0)?,
            role: role_of(col(&r, 1)?),
            expires_at: col(&r, 2)?,
        })
    })
    .transpose()
}

pub(super) async fn tokens_of(db: &Db, user: &str) -> Result<Vec<ApiTokenInfo>, StoreError> {
    let len = TOKEN_ID_LEN as i32;
    rows(
        db,
        "SELECT substr(token_hash, 1, $2), created_at, role, expires_at FROM api_tokens
          WHERE user_id = $1 ORDER BY created_at, token_hash",
        &[&user, &len],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ApiTokenInfo {
            id: col(r, 0)?,
            created_at: col(r, 1)?,
            role: role_of(col(r, 2)?),
            expires_at: col(r, 3)?,
        })
    })
    .collect()
}

/// Delete `user`'s tokens whose id starts with `id` (8 to 64 hex digits,
/// naming one token), or all of them; how many.
pub(super) async fn revoke_tokens(
    db: &Db,
    user: &str,
    id: Option<&str>,
) -> Result<usize, StoreError> {
    let Some(id) = id else {
        let n = exec(db, "DELETE FROM api_tokens WHERE user_id = $1", &[&user]).await?;
        return Ok(n as usize);
    };
    let id = id.to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid(format!(
            "token id {id:?}: give 8 to 64 hex digits, as `users tokens` shows them"
        )));
    }
    let matching = rows(
        db,
        "SELECT token_hash FROM api_tokens WHERE user_id = $1 AND starts_with(token_hash, $2)",
        &[&user, &id],
    )
    .await?;
    match matching.len() {
        0 => Err(StoreError::NotFound(format!(
            "no token {id} for user {user}"
        ))),
        1 => {
            let hash: String = col(&matching[0], 0)?;
            let n = exec(
                db,
                "DELETE FROM api_tokens WHERE user_id = $1 AND token_hash = $2",
                &[&user, &hash],
            )
            .await?;
            Ok(n as usize)
        }
        n => Err(StoreError::Invalid(format!(
            "token id {id} names {n} tokens of {user}: give more digits"
        ))),
    }
}
