//! `/api/v1/tickets`: list (filters), show with messages, update status/owner,
//! replies and internal notes.
//!
//! Replies go through [`crate::outbound::Outbound::reply`], the same path as
//! `postdesk reply`: the answer (201) comes after the reply is durably queued.
//! Any token may read; updating, replying and notes need a licensed user
//! (403 `unlicensed`); opening a ticket needs an admin token (403
//! `forbidden`). Replies and openings spend the token's send budget (429
//! `rate_limited`, [`AppState::take_send`]).
//! Untrusted input: every body field; limits are the outbound module's, and
//! the request body is capped by the router.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use serde::Deserialize;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath};
use crate::outbound::{Attachment, ReplyRequest};
use crate::store::{TicketFilter, TicketId, TicketUpdate};

/// Most tickets one list returns.
const MAX_LIST: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub channel: Option<String>,
    pub status: Option<String>,
    pub owner: Option<String>,
    pub contact: Option<String>,
    pub limit: Option<usize>,
}

pub async fn list(
    State(s): State<AppState>,
    _user: AuthUser,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tickets = s
        .store
        .list_tickets(TicketFilter {
            channel: q.channel,
            status: q.status,
            owner: q.owner,
            contact: q.contact,
            limit: Some(q.limit.unwrap_or(100).min(MAX_LIST)),
        })
        .await?;
    Ok(Json(tickets))
}

pub async fn show(
    State(s): State<AppState>,
    _user: AuthUser,
    ApiPath(n): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let n = ticket_number(&n)?;
    Ok(Json(s.store.ticket(n).await?))
}

/// `GET /api/v1/tickets/{n}/inline/{cid}`: an inline part (`cid:` image)
/// of the ticket's conversation, from the raw mail it came in or went out
/// with, as its media type. Served as an attachment with `nosniff`, so an
/// HTML or SVG part a customer sent never runs in the API's origin.
pub async fn inline(
    State(s): State<AppState>,
    _user: AuthUser,
    ApiPath((n, cid)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let n = ticket_number(&n)?;
    let not_found = || ApiError::not_found(format!("no inline part {cid:?} on ticket {n}"));
    if !crate::outbound::quote::valid_cid(&cid) {
        return Err(not_found());
    }
    s.store.ticket(n).await?;
    let raws = s.store.ticket_raws(n).await?;
    let part = tokio::task::spawn_blocking({
        let cid = cid.clone();
        move || {
            raws.iter()
                .find_map(|raw| crate::outbound::quote::inline_part(raw, &cid))
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .ok_or_else(not_found)?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, part.content_type),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment".to_string(),
            ),
            (
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_string(),
            ),
        ],
        part.data,
    ))
}

pub(crate) fn ticket_number(s: &str) -> Result<TicketId, ApiError> {
    s.trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(TicketId)
        .ok_or_else(|| ApiError::not_found(format!("ticket {s:?} not found")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub status: Option<String>,
    pub priority: Option<String>,
    /// A user id, or `null` to unassign. Absent: unchanged.
    #[serde(default, deserialize_with = "double_option")]
    pub owner: Option<Option<String>>,
}

fn double_option<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

pub async fn update(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(n): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<impl IntoResponse, ApiError> {
    user.require_licensed(&s.live.config())?;
    let n = ticket_number(&n)?;
    let update = TicketUpdate {
        status: body.status,
        owner: body.owner,
        priority: body.priority,
        only_if_unassigned: false,
    };
    super::actions::update_ticket(&s, &user, n, update).await?;
    Ok(Json(s.store.ticket(n).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentBody {
    pub filename: String,
    /// Default: by the file name's extension (`content_type_for`).
    pub content_type: Option<String>,
    /// Standard base64.
    pub data_base64: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    pub text: Option<String>,
    pub html: Option<String>,
    pub subject: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentBody>,
    /// Cc the ticket's other participants.
    #[serde(default)]
    pub cc_thread: bool,
    /// Quote the ticket's last customer message (inline images included).
    /// Default: `[outbound] quote_history`.
    pub quote_history: Option<bool>,
    /// The agent the reply is from; must be the token's user. Default: the token's user.
    #[serde(rename = "as")]
    pub as_user: Option<String>,
}

pub async fn reply(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(n): ApiPath<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<ReplyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = super::open::idempotency_key(&headers)?;
    user.require_licensed(&s.live.config())?;
    let n = ticket_number(&n)?;
    if let Some(other) = &body.as_user {
        user.require_self(other)?;
    }
    let mut attachments = Vec::with_capacity(body.attachments.len());
    for a in body.attachments {
        let data = base64::engine::general_purpose::STANDARD
            .decode(a.data_base64.as_bytes())
            .map_err(|e| {
                ApiError::bad_request(format!("attachment {:?}: bad base64: {e}", a.filename))
            })?;
        let content_type = a
            .content_type
            .unwrap_or_else(|| crate::outbound::compose::content_type_for(&a.filename).to_string());
        attachments.push(Attachment {
            filename: a.filename,
            content_type,
            data,
        });
    }
    let request = ReplyRequest {
        ticket: n,
        author: user.id.clone(),
        text: body.text,
        html: body.html,
        subject: body.subject,
        attachments,
        cc_thread: body.cc_thread,
        idempotency_key,
        quote_history: body.quote_history,
    };
    let queued = super::actions::reply(&s, &user, request).await?;
    let status = if queued.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(queued)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    pub text: String,
    #[serde(rename = "as")]
    pub as_user: Option<String>,
}

pub async fn note(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(n): ApiPath<String>,
    ApiJson(body): ApiJson<NoteBody>,
) -> Result<impl IntoResponse, ApiError> {
    user.require_licensed(&s.live.config())?;
    let n = ticket_number(&n)?;
    if let Some(other) = &body.as_user {
        user.require_self(other)?;
    }
    super::actions::add_note(&s, &user, n, body.text).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "ticket": n })),
    ))
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The channel the ticket belongs to (any kind; a disabled one refuses).
    pub channel: String,
    pub contact: ContactBody,
    pub subject: String,
    /// The first message's text.
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeBody {
    pub channel: String,
    pub contact: ContactBody,
    pub subject: String,
    pub text: String,
}

/// `POST /api/v1/tickets/outbound`: a new email to a contact from a
/// channel; opens a ticket the caller owns (201 with the queued email).
pub async fn compose(
    State(s): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<ComposeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = super::open::idempotency_key(&headers)?;
    let request = crate::outbound::ComposeRequest {
        channel: body.channel,
        contact: crate::store::ContactRef {
            email: body.contact.email,
            name: body.contact.name,
        },
        subject: body.subject,
        author: user.id.clone(),
        text: body.text,
        attachments: Vec::new(),
        idempotency_key,
    };
    let queued = super::actions::compose(&s, &user, request).await?;
    let status = if queued.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(queued)))
}

/// `POST /api/v1/tickets`: open a ticket for an integration (chat, phone…).
/// Routing and the channel's ticket properties apply as for mail. With an
/// `Idempotency-Key` header, a retried request answers 200 with the ticket
/// the first one opened.
pub async fn create(
    State(s): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    user.require_admin("opening a ticket")?;
    let idempotency_key = super::open::idempotency_key(&headers)?;
    let config = s.live.config();
    let channel = config
        .channel(&body.channel)
        .ok_or_else(|| ApiError::bad_request(format!("unknown channel {:?}", body.channel)))?;
    super::open::check_enabled(&s, channel, || {
        format!("channel {:?} is disabled", channel.id)
    })
    .await?;
    let typed = crate::mail::check_opening(
        &body.contact.email,
        body.contact.name.as_deref(),
        &body.subject,
        &body.text,
    )
    .map_err(|e| match e {
        crate::mail::OpeningError::TextTooLong => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        crate::mail::OpeningError::Email(_) => ApiError::bad_request(format!("contact.email: {e}")),
        _ => ApiError::bad_request(e.to_string()),
    })?;
    let email = typed.email;
    let id = match &idempotency_key {
        Some(k) => format!("{}:{k}", user.id),
        None => {
            super::auth::new_token().map_err(|e| ApiError::internal(format!("random id: {e}")))?
        }
    };
    let raw = serde_json::to_vec(&serde_json::json!({ "request": &body, "user": &user.id }))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let opening = super::open::Opening {
        origin: crate::ingest::submit::Origin {
            id: &id,
            method: "api",
            date: super::forms::now_rfc2822(),
        },
        contact: crate::store::ContactRef {
            email: email.clone(),
            name: typed.name,
        },
        subject: typed.subject,
        text: body.text.clone(),
        fields: Default::default(),
        spool: crate::store::NewSpool {
            source: crate::store::SpoolSource::Api,
            mail_from: email,
            rcpt_to: Vec::new(),
            client_ip: None,
            helo: None,
            tls: false,
            channel: Some(channel.id.clone()),
            raw,
        },
    };
    s.take_send(&user)?;
    let outcome = super::open::open(&s, &config, channel, opening).await?;
    let d = outcome
        .delivered
        .first()
        .ok_or_else(|| ApiError::internal("ticket not created"))?;
    tracing::info!(user = %user.id, channel = %d.channel, ticket = d.ticket.0, duplicate = d.duplicate, owner = ?d.owner, "ticket opened through the API");
    let status = if d.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(s.store.ticket(d.ticket).await?)))
}
