//! What an agent does — update a ticket, add a note, reply, set their
//! availability; an admin: enable or disable a channel — with every
//! check, once: the JSON API's handlers ([`super::tickets`]) and the
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

/// Change a ticket's status, priority and/or owner (licensed callers; the
/// owner must be a licensed user, `Some(None)` unassigns).
pub async fn update_ticket(
    s: &AppState,
    user: &AuthUser,
    n: TicketId,
    update: TicketUpdate,
) -> Result<(), ApiError> {
    user.require_licensed(&s.live.config())?;
    for (field, value) in [("status", &update.status), ("priority", &update.priority)] {
        if let Some(v) = value
            && (v.trim().is_empty() || v.len() > 64 || v.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(format!(
                "{field} must be 1-64 printable characters"
            )));
        }
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
    if update.status.is_none() && update.owner.is_none() && update.priority.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give status, priority and/or owner",
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
                    owner: Some(Some(user.id.clone())),
                    ..TicketUpdate::default()
                },
            )
            .await?;
        tracing::info!(ticket = n.0, user = %user.id, "unassigned ticket taken by its replier");
    }
    Ok(queued)
}

/// Set a user's availability by hand (their own; another's needs an admin).
/// Returns the user's id as configured.
pub async fn set_availability(
    s: &AppState,
    user: &AuthUser,
    id: &str,
    available: bool,
) -> Result<String, ApiError> {
    let config = s.live.config();
    let u = config
        .user(id)
        .ok_or_else(|| ApiError::not_found(format!("user {id:?} not found")))?;
    if u.id != user.id {
        user.require_admin("setting another user's availability")?;
    }
    s.store
        .set_user_available(u.id.clone(), Some(available))
        .await?;
    s.live.set_user_available(&u.id, available);
    Ok(u.id.clone())
}

/// Enable or disable a channel (admins), persisted and in force at once.
pub async fn set_channel_enabled(
    s: &AppState,
    user: &AuthUser,
    id: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    user.require_admin(if enabled {
        "enabling a channel"
    } else {
        "disabling a channel"
    })?;
    let config = s.live.config();
    let c = config
        .channel(id)
        .ok_or_else(|| ApiError::not_found(format!("channel {id:?} not found")))?;
    s.store
        .set_channel_enabled(c.id.clone(), Some(enabled))
        .await?;
    s.live.set_channel_enabled(&c.id, enabled);
    Ok(())
}

/// A new email to a contact from a channel (licensed callers; the channel
/// must be enabled): opens a ticket the caller owns, queues the email as
/// its first message, and spends the caller's send budget.
pub async fn compose(
    s: &AppState,
    user: &AuthUser,
    mut req: crate::outbound::ComposeRequest,
) -> Result<QueuedReply, ApiError> {
    let config = s.live.config();
    user.require_licensed(&config)?;
    let channel = config
        .channel(&req.channel)
        .ok_or_else(|| ApiError::bad_request(format!("unknown channel {:?}", req.channel)))?;
    super::open::check_enabled(s, channel, || {
        format!("channel {:?} is disabled", channel.id)
    })
    .await?;
    req.author = user.id.clone();
    s.take_send(user)?;
    Ok(s.outbound.compose(req).await?)
}
