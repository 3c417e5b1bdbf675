//! What an agent does — update a ticket, add a note, reply, compose a new
//! email, set their availability; an admin: enable or disable a channel,
//! set a contact's owner — with every check, once: the JSON API's handlers
//! ([`super::tickets`], [`super::people`]), the web inbox's forms
//! ([`crate::web`]) and the command line ([`crate::cli`]) all call these.
//!
//! Each takes the caller ([`Caller`]: an agent authenticated by a bearer
//! token or a web session, or the operator at the command line acting as a
//! user) and answers [`ApiError`]s with the API's stable codes.

use axum::http::StatusCode;

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiError;
use crate::config::Config;
use crate::outbound::ReplyRequest;
use crate::store::{QueuedReply, TicketId, TicketUpdate};

/// Who asks for an action.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// An agent signed in (API token or web session): their role and
    /// licence are checked, their sends spend their token's budget.
    Agent(&'a AuthUser),
    /// The operator at the command line — whoever can read the
    /// configuration and write the store — acting as this user when the
    /// action has an author: every role, no send budget, but only a
    /// licensed user replies or writes.
    Operator(Option<&'a str>),
}

impl<'a> From<&'a AuthUser> for Caller<'a> {
    fn from(user: &'a AuthUser) -> Self {
        Caller::Agent(user)
    }
}

impl Caller<'_> {
    /// The user acting (none: the operator as nobody in particular).
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Agent(u) => Some(&u.id),
            Caller::Operator(id) => *id,
        }
    }

    /// The author of what the caller writes: a licensed user (403
    /// `unlicensed`; an operator naming an unknown user: 400).
    fn author(&self, config: &Config) -> Result<String, ApiError> {
        match self {
            Caller::Agent(u) => {
                u.require_licensed(config)?;
                Ok(u.id.clone())
            }
            Caller::Operator(None) => Err(ApiError::bad_request("no user to act as")),
            Caller::Operator(Some(id)) => match config.user(id) {
                None => Err(ApiError::bad_request(format!("unknown user {id:?}"))),
                Some(u) if !u.licensed => Err(ApiError::unlicensed(format!(
                    "user {id:?} has no licence (licensed = false): reading only"
                ))),
                Some(u) => Ok(u.id.clone()),
            },
        }
    }

    fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Caller::Agent(u) => u.require_admin(what),
            Caller::Operator(_) => Ok(()),
        }
    }

    fn take_send(&self, s: &AppState) -> Result<(), ApiError> {
        match self {
            Caller::Agent(u) => s.take_send(u),
            Caller::Operator(_) => Ok(()),
        }
    }
}

/// Change a ticket's status, priority and/or owner (licensed callers; the
/// owner must be a licensed user, `Some(None)` unassigns).
pub async fn update_ticket<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    n: TicketId,
    update: TicketUpdate,
) -> Result<(), ApiError> {
    caller.into().author(&s.live.config())?;
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
pub async fn add_note<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    n: TicketId,
    text: String,
) -> Result<(), ApiError> {
    let author = caller.into().author(&s.live.config())?;
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
    s.store.add_note(n, author, text).await?;
    Ok(())
}

/// Queue a reply by the caller (licensed callers; `req.author` is set to
/// the caller), spending their send budget. A reply to a ticket nobody owns
/// makes its author the owner.
pub async fn reply<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    mut req: ReplyRequest,
) -> Result<QueuedReply, ApiError> {
    let caller = caller.into();
    let author = caller.author(&s.live.config())?;
    req.author = author.clone();
    let n = req.ticket;
    caller.take_send(s)?;
    let queued = s.outbound.reply(req).await?;
    // An unassigned ticket becomes the replier's. Not read first: the
    // ticket with all its messages would be read for every reply.
    if !queued.replayed {
        s.store
            .update_ticket(
                n,
                TicketUpdate {
                    owner: Some(Some(author.clone())),
                    only_if_unassigned: true,
                    ..TicketUpdate::default()
                },
            )
            .await?;
        tracing::debug!(ticket = n.0, user = %author, "the replier takes the ticket if unassigned");
    }
    Ok(queued)
}

/// Set a user's availability by hand (their own; another's needs an admin).
/// Returns the user's id as configured.
pub async fn set_availability<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    id: &str,
    available: bool,
) -> Result<String, ApiError> {
    let caller = caller.into();
    let config = s.live.config();
    let u = config
        .user(id)
        .ok_or_else(|| ApiError::not_found(format!("user {id:?} not found")))?;
    if caller.id() != Some(u.id.as_str()) {
        caller.require_admin("setting another user's availability")?;
    }
    s.store
        .set_user_available(u.id.clone(), Some(available))
        .await?;
    s.live.set_user_available(&u.id, available);
    Ok(u.id.clone())
}

/// Enable or disable a channel (admins), persisted and in force at once.
pub async fn set_channel_enabled<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    id: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    set_channel_override(s, caller, id, Some(enabled)).await
}

/// Set a channel's run-time override (admins): enabled, disabled, or
/// `None`: dropped, the file's `enabled` holds again. Persisted and in
/// force at once (a daemon in another process reads it within seconds).
pub async fn set_channel_override<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    id: &str,
    enabled: Option<bool>,
) -> Result<(), ApiError> {
    caller.into().require_admin(match enabled {
        Some(true) => "enabling a channel",
        Some(false) => "disabling a channel",
        None => "resetting a channel",
    })?;
    let config = s.live.config();
    let c = config
        .channel(id)
        .ok_or_else(|| ApiError::not_found(format!("channel {id:?} not found")))?;
    s.store.set_channel_enabled(c.id.clone(), enabled).await?;
    match enabled {
        Some(on) => s.live.set_channel_enabled(&c.id, on),
        None => {
            if let Err(e) = s.live.refresh(s.store.as_ref()).await {
                tracing::debug!(error = %e, "override refresh failed; the next one applies it");
            }
        }
    }
    Ok(())
}

/// Set or clear (`None`) a contact's owner (admins; the owner must be a
/// configured user), creating the contact for a valid address it does not
/// know yet. Returns the normalised address and whether it was created.
pub async fn set_contact_owner<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    email: &str,
    owner: Option<String>,
) -> Result<(String, bool), ApiError> {
    caller.into().require_admin("setting a contact's owner")?;
    if let Some(o) = &owner
        && s.live.config().user(o).is_none()
    {
        return Err(ApiError::bad_request(format!("unknown user {o:?}")));
    }
    let email = crate::mail::normalize_email(email);
    // The store refuses only to create a contact for a non-address (one
    // that exists keeps working whatever ingest stored): the caller's error.
    let created = s
        .store
        .set_contact_owner(email.clone(), owner)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(m) => ApiError::bad_request(m),
            e => ApiError::from(e),
        })?;
    Ok((email, created))
}

/// A new email to a contact from a channel (licensed callers; the channel
/// must be enabled): opens a ticket the caller owns, queues the email as
/// its first message, and spends the caller's send budget.
pub async fn compose<'a>(
    s: &AppState,
    caller: impl Into<Caller<'a>>,
    mut req: crate::outbound::ComposeRequest,
) -> Result<QueuedReply, ApiError> {
    let caller = caller.into();
    let config = s.live.config();
    let author = caller.author(&config)?;
    let channel = config
        .channel(&req.channel)
        .ok_or_else(|| ApiError::bad_request(format!("unknown channel {:?}", req.channel)))?;
    super::open::check_enabled(s, channel, || {
        format!("channel {:?} is disabled", channel.id)
    })
    .await?;
    req.author = author;
    caller.take_send(s)?;
    Ok(s.outbound
        .compose(req, crate::ingest::route::composed_ticket)
        .await?)
}
