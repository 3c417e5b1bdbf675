//! `/compose`: a new email to a contact from a channel. It opens a ticket
//! the agent owns, through [`crate::api::actions::compose`] (the same
//! function as `POST /api/v1/tickets/outbound`), then shows that ticket.
//! The form carries a per-render idempotency key: sent twice, it opens
//! one ticket.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::i18n::Lang;
use super::pages::layout;
use super::session::{Agent, Posted};
use crate::api::AppState;

pub async fn form(State(s): State<AppState>, agent: Agent, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let config = s.live.config();
    // A re-sent form (reload, double click) opens one ticket.
    let idem = crate::api::auth::new_token().unwrap_or_default();
    let body = html! {
        h1 { (lang.t("New email")) }
        form.compose method="post" action="/compose" {
            input type="hidden" name="csrf" value=(agent.csrf);
            input type="hidden" name="idem" value=(idem);
            label { (lang.t("Channel")) br;
                select name="channel" required {
                    @for c in config.channels.iter().filter(|c| c.address.is_some() && s.live.channel_enabled(c)) {
                        option value=(c.id) { (c.id) " <" (c.address.as_deref().unwrap_or("")) ">" }
                    }
                }
            }
            br;
            label { (lang.t("Email")) br; input type="email" name="email" required; }
            br;
            label { (lang.t("Name")) br; input type="text" name="name"; }
            br;
            label { (lang.t("Subject")) br; input type="text" name="subject" required size="50"; }
            br;
            label { (lang.t("Text")) br; textarea name="text" required {} }
            button type="submit" { (lang.t("Send")) }
        }
    };
    layout(lang, lang.t("New email"), Some(&agent), body).into_response()
}

#[derive(Deserialize)]
pub struct ComposeForm {
    channel: String,
    email: String,
    name: Option<String>,
    subject: String,
    text: String,
    idem: Option<String>,
}

pub async fn send(
    State(s): State<AppState>,
    headers: HeaderMap,
    posted: Posted<ComposeForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let user = posted.agent.auth_user();
    let f = posted.form;
    let request = crate::outbound::ComposeRequest {
        channel: f.channel,
        contact: crate::store::ContactRef {
            email: f.email,
            name: f.name,
        },
        subject: f.subject,
        author: user.id.clone(),
        text: f.text,
        attachments: Vec::new(),
        idempotency_key: f.idem.filter(|k| !k.is_empty()).map(|k| format!("web:{k}")),
    };
    match crate::api::actions::compose(&s, &user, request).await {
        Ok(q) => Redirect::to(&format!("/tickets/{}", q.ticket)).into_response(),
        Err(e) => super::error_page(lang, &e),
    }
}
