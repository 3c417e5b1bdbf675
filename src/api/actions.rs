//! What an agent does to a ticket — update it, add a note, reply — with
//! every check, once: the JSON API's handlers ([`super::tickets`]) and the
//! web inbox's forms ([`crate::web`]) both call these.
//!
//! Each takes the authenticated caller ([`AuthUser`]: a bearer token's or a
//! web session's) and answers [`ApiError`]s with the API's stable codes.

use axum::http::StatusCode;

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiError;
use crate::outbound::ReplyRequest;
use crate::store::{QueuedReply, TicketId, TicketUpdate};

/// Change a ticket's status and/or owner (licensed callers; the owner must
/// be a licensed user, `Some(None)` unassigns).
pub async fn update_ticket(
    s: &AppState,
    user: &AuthUser,
    n: TicketId,
    update: TicketUpdate,
) -> Result<(), ApiError> {
    user.require_licensed(&s.live.config())?;
    if let Some(status) = &update.status
        && (status.trim().is_empty() || status.len() > 64 || status.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "status must be 1-64 printable characters",
        ));
    }
    if let Some(Some(owner)) = &update.owner {
        match s.live.config().user(owner) {
            None => return Err(ApiError::bad_request(format!("unknown user {owner:?}"))),
            Some(u) if !u.licensed => {
                return Err(ApiError::bad_request(format!(
                    "user {owner:?} has no licence (licensed = false): only licensed users own tickets"
                )));
            }
            Some(_) => {}
        }
    }
    if update.status.is_none() && update.owner.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give status and/or owner",
        ));
    }
    s.store.update_ticket(n, update).await?;
    Ok(())
}

/// Add an internal note by the caller (licensed callers).
pub async fn add_note(
    s: &AppState,
    user: &AuthUser,
    n: TicketId,
    text: String,
) -> Result<(), ApiError> {
    user.require_licensed(&s.live.config())?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("note text is empty"));
    }
    if text.len() > crate::outbound::MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "note too long",
        ));
    }
    s.store.add_note(n, user.id.clone(), text).await?;
    Ok(())
}

/// Queue a reply by the caller (licensed callers; `req.author` is set to
/// the caller), spending their send budget. A reply to a ticket nobody owns
/// makes its author the owner.
pub async fn reply(
    s: &AppState,
    user: &AuthUser,
    mut req: ReplyRequest,
) -> Result<QueuedReply, ApiError> {
    user.require_licensed(&s.live.config())?;
    req.author = user.id.clone();
    let n = req.ticket;
    s.take_send(user)?;
    let queued = s.outbound.reply(req).await?;
    if !queued.replayed && s.store.ticket(n).await?.head.owner.is_none() {
        s.store
            .update_ticket(
                n,
                TicketUpdate {
                    status: None,
                    owner: Some(Some(user.id.clone())),
                },
            )
            .await?;
        tracing::info!(ticket = n.0, user = %user.id, "unassigned ticket taken by its replier");
    }
    Ok(queued)
}
