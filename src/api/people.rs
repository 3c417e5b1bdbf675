//! `/api/v1/contacts`, `/api/v1/users` and `/api/v1/channels`.
//!
//! Contacts: list, show, set owner (admin). Users: list with availability,
//! set your own availability (persisted in the store, effective at once for
//! routing; another user's needs an admin token, else 403 `forbidden`).
//! Channels: list, enable, disable (admin; persisted; SMTP and pullers follow
//! the daemon's live state).

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath};
use crate::mail::normalize_email;

pub async fn contacts(
    State(s): State<AppState>,
    _user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.list_contacts().await?))
}

pub async fn contact(
    State(s): State<AppState>,
    _user: AuthUser,
    ApiPath(email): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let email = normalize_email(&email);
    s.store
        .contact_view(email.clone())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("contact {email} not found")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    /// A user id, or null to clear.
    pub owner: Option<String>,
}

pub async fn contact_owner(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(email): ApiPath<String>,
    ApiJson(body): ApiJson<OwnerBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (email, _) = super::actions::set_contact_owner(&s, &user, &email, body.owner).await?;
    contact(State(s), user, ApiPath(email)).await
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub full_name: String,
    pub licensed: bool,
    pub available: bool,
    pub teams: Vec<String>,
}

pub async fn users(State(s): State<AppState>, _user: AuthUser) -> impl IntoResponse {
    let config = s.live.config();
    let v: Vec<UserView> = config
        .users
        .iter()
        .map(|u| UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            full_name: u.full_name(),
            licensed: u.licensed,
            available: s.live.user_available(u),
            teams: u.teams.clone(),
        })
        .collect();
    Json(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityBody {
    pub available: bool,
}

pub async fn set_availability(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AvailabilityBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = super::actions::set_availability(&s, &user, &id, body.available).await?;
    Ok(Json(
        serde_json::json!({ "id": id, "available": body.available }),
    ))
}

#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub id: String,
    pub kind: String,
    pub address: Option<String>,
    pub enabled: bool,
}

pub async fn channels(State(s): State<AppState>, _user: AuthUser) -> impl IntoResponse {
    let config = s.live.config();
    let v: Vec<ChannelView> = config
        .channels
        .iter()
        .map(|c| ChannelView {
            id: c.id.clone(),
            kind: c.kind.as_str().to_string(),
            address: c.address.clone(),
            enabled: s.live.channel_enabled(c),
        })
        .collect();
    Json(v)
}

async fn set_channel(
    s: AppState,
    user: AuthUser,
    id: String,
    enabled: bool,
) -> Result<Json<ChannelView>, ApiError> {
    super::actions::set_channel_enabled(&s, &user, &id, enabled).await?;
    let config = s.live.config();
    let c = config
        .channel(&id)
        .ok_or_else(|| ApiError::not_found(format!("channel {id:?} not found")))?;
    Ok(Json(ChannelView {
        id: c.id.clone(),
        kind: c.kind.as_str().to_string(),
        address: c.address.clone(),
        enabled,
    }))
}

pub async fn enable_channel(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_channel(s, user, id, true).await
}

pub async fn disable_channel(
    State(s): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_channel(s, user, id, false).await
}
