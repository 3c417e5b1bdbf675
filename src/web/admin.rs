//! The admin page (web role `admin`): channels with enable/disable and,
//! per channel, the From line and signature any agent's replies carry;
//! users with their availability, which an admin may set. And every
//! agent's own availability toggle (the top bar's form).
//!
//! Actions go through [`crate::api::actions`] (the API's checks: an
//! agent's session is refused 403 on admin actions there too).

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::i18n::Lang;
use super::pages::layout;
use super::session::{Agent, Posted};
use crate::api::error::ApiError;
use crate::api::{AppState, actions};
use crate::store::TokenRole;

#[derive(Debug, Default, Deserialize)]
pub struct AdminParams {
    /// The agent whose From line and signature the previews show.
    agent: Option<String>,
}

pub async fn page(
    State(s): State<AppState>,
    agent: Agent,
    headers: HeaderMap,
    q: Result<Query<AdminParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lang = Lang::of(&headers);
    if agent.role != TokenRole::Admin {
        let e = ApiError::forbidden("the admin page needs the admin web role");
        return super::error_page(lang, &e);
    }
    let config = s.live.config();
    let chosen = q
        .ok()
        .and_then(|Query(p)| p.agent)
        .unwrap_or_else(|| agent.id.clone());
    let preview_user = config.user(&chosen).or_else(|| config.user(&agent.id));
    let body = html! {
        h1 { (lang.t("Admin")) }
        section aria-labelledby="channels-h" {
            h2 #channels-h { (lang.t("Channel")) }
            form method="get" action="/admin" {
                label { (lang.t("Preview as")) " "
                    select name="agent" {
                        @for u in &config.users {
                            option value=(u.id) selected[preview_user.is_some_and(|p| p.id == u.id)] { (u.full_name()) }
                        }
                    }
                }
                " " button type="submit" { (lang.t("Show")) }
            }
            table.tickets {
                thead { tr { th { (lang.t("ID")) } th { (lang.t("Kind")) } th { (lang.t("Address")) } th { (lang.t("From line")) } th { (lang.t("Signature")) } th { } } }
                tbody {
                    @for c in &config.channels {
                        @let enabled = s.live.channel_enabled(c);
                        tr data-channel=(c.id) {
                            td { (c.id) }
                            td { (c.kind.as_str()) }
                            td { (c.address.as_deref().unwrap_or("")) }
                            td { @if let (Some(u), Some(a)) = (preview_user, c.address.as_deref()) {
                                (config.sender_display_name(c, Some(u)).map(|n| format!("{n} <{a}>")).unwrap_or_else(|| a.to_string()))
                            } }
                            td { @if let Some(u) = preview_user {
                                div.body { (crate::outbound::signature::render(&c.signature_html, u).text) }
                            } }
                            td {
                                form method="post" action=(format!("/admin/channels/{}", c.id)) {
                                    input type="hidden" name="csrf" value=(agent.csrf);
                                    input type="hidden" name="enabled" value=(if enabled { "0" } else { "1" });
                                    span.badge data-enabled=(enabled) { (if enabled { lang.t("enabled") } else { lang.t("disabled") }) } " "
                                    button type="submit" { (if enabled { lang.t("Disable") } else { lang.t("Enable") }) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="users-h" {
            h2 #users-h { (lang.t("Users")) }
            table.tickets {
                thead { tr { th { (lang.t("ID")) } th { (lang.t("Name")) } th { (lang.t("Email")) } th { (lang.t("Licence")) } th { (lang.t("Available")) } } }
                tbody {
                    @for u in &config.users {
                        @let available = s.live.user_available(u);
                        tr data-user=(u.id) {
                            td { (u.id) } td { (u.full_name()) } td { (u.email) }
                            td { (if u.licensed { "✓" } else { "—" }) }
                            td { (availability_form(lang, &agent, &u.id, available)) }
                        }
                    }
                }
            }
        }
    };
    layout(lang, lang.t("Admin"), Some(&agent), body).into_response()
}

/// A button that switches `user`'s availability (with the state now).
pub fn availability_form(lang: Lang, agent: &Agent, user: &str, available: bool) -> maud::Markup {
    html! {
        form.availability method="post" action=(format!("/users/{user}/availability")) {
            input type="hidden" name="csrf" value=(agent.csrf);
            input type="hidden" name="available" value=(if available { "0" } else { "1" });
            button type="submit" data-available=(available) aria-pressed=(available)
                title=(if available { lang.t("Away") } else { lang.t("Available") }) {
                (if available { lang.t("Available") } else { lang.t("Away") })
            }
        }
    }
}

#[derive(Deserialize)]
pub struct SwitchForm {
    /// `1` or `0`.
    #[serde(alias = "available")]
    enabled: String,
}

fn back(headers: &HeaderMap, default: &str) -> String {
    headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let path = r
                .split_once("://")
                .map_or(r, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
            (path.starts_with('/') && !path.starts_with("//")).then(|| path.to_string())
        })
        .unwrap_or_else(|| default.to_string())
}

/// What a switch posted from a page comes with besides its form: the
/// state, the request's headers (the reader's language, the page it was
/// posted from) and the id in its path.
type SwitchRequest = (State<AppState>, HeaderMap, Path<String>);

/// What a switch turns on or off.
#[derive(Clone, Copy)]
enum Switch {
    /// A channel, enabled or disabled (admins); back to the admin page.
    Channel,
    /// A user's availability (their own; another's needs an admin); back
    /// to the page it was posted from.
    Availability,
}

pub async fn set_channel(request: SwitchRequest, posted: Posted<SwitchForm>) -> Response {
    switch(Switch::Channel, request, posted).await
}

pub async fn set_availability(request: SwitchRequest, posted: Posted<SwitchForm>) -> Response {
    switch(Switch::Availability, request, posted).await
}

/// Run a switch posted from a page through the API's action: once done,
/// back to where the switch says; else the error's page in the reader's
/// language.
async fn switch(
    what: Switch,
    (State(s), headers, Path(id)): SwitchRequest,
    posted: Posted<SwitchForm>,
) -> Response {
    let caller = posted.agent.auth_user();
    let on = posted.form.enabled == "1";
    let done = match what {
        Switch::Channel => actions::set_channel_enabled(&s, &caller, &id, on)
            .await
            .map(|()| "/admin".to_string()),
        Switch::Availability => actions::set_availability(&s, &caller, &id, on)
            .await
            .map(|_| back(&headers, "/")),
    };
    match done {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => super::error_page(Lang::of(&headers), &e),
    }
}
