//! One-time sign-in links: an agent asks on `/login` for a link by email;
//! postdesk mails it (a notice through the outbox and `[relay]`, see
//! [`crate::outbound::notify`]) to the address configured for them. The
//! link is `<[http] public_url>/login/link/<token>`: a random 256-bit token
//! of which the store keeps only the sha256, valid once, for
//! [`LINK_LIFETIME`].
//!
//! Opening the link shows a page with one button; pressing it (a POST)
//! uses the link and starts a session. Nothing is used up on GET, so a mail
//! scanner that follows links does not spend it.
//!
//! No account enumeration: asking for a link always gets the same page
//! ("if the address belongs to an agent, a link is on its way"), and the
//! work for a known address happens after the answer is sent; a used, an
//! expired and a made-up link get the same answer. Requests share the
//! password sign-in's budget per client address and per email address.
//!
//! Links are off unless both `[http] public_url` and `[notifications]
//! from` are set; the link is never built from the request's `Host` (a
//! stranger asking for a victim's link could otherwise name their own host
//! and receive the token when the victim clicks).
//!
//! Untrusted input: the form's email and the token in the path.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::i18n::Lang;
use super::pages::layout;
use super::session::{self, SigninLimits};
use crate::api::AppState;
use crate::api::auth::token_hash;
use crate::config::Config;
use crate::outbound::notify::Notice;
use crate::store::NewSigninLink;

/// How long a mailed link can be used.
pub const LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The notice kind of a sign-in link's mail.
pub const NOTICE_KIND: &str = "signin_link";

/// Whether sign-in links can be mailed with this configuration.
pub fn enabled(config: &Config) -> bool {
    config.http.public_url.is_some() && config.notifications.from.is_some()
}

#[derive(Deserialize)]
pub struct LinkRequest {
    email: String,
}

fn answer(lang: Lang, status: StatusCode, text: &'static str) -> Response {
    (
        status,
        layout(
            lang,
            lang.t("Sign in"),
            None,
            html! {
                div.login {
                    h1 { "postdesk" }
                    p role="status" { (lang.t(text)) }
                    p { a href="/login" { (lang.t("Back")) } }
                }
            },
        ),
    )
        .into_response()
}

/// `POST /login/link`: mail a link if the address is an agent's; the same
/// answer either way.
pub async fn request(
    State(s): State<AppState>,
    Extension(limits): Extension<Arc<SigninLimits>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, form) = match session::public_form::<LinkRequest>(&s, req).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let lang = Lang::of(&parts.headers);
    let email = crate::mail::normalize_email(&form.email);
    let ip = session::client_ip(&parts.extensions, &parts.headers, &s);
    if !limits.take(ip, &email) {
        tracing::info!(client = ?ip, "sign-in link refused: too many attempts");
        return answer(
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts; wait a minute.",
        );
    }
    let config = s.live.config();
    if !enabled(&config) {
        tracing::warn!(
            "a sign-in link was asked for, but [http] public_url or [notifications] from is not set"
        );
    } else if let Some(user) = config.user_by_email(&email) {
        // After the answer: a known address costs the asker no more time
        // than an unknown one.
        let (s, user) = (s.clone(), user.id.clone());
        tokio::spawn(async move {
            if let Err(e) = mail_link(&s, &user).await {
                tracing::warn!(user = %user, error = %e, "sign-in link not sent");
            }
        });
    } else {
        tracing::info!(client = ?ip, "sign-in link asked for an address that is no agent's");
    }
    answer(
        lang,
        StatusCode::OK,
        "If the address belongs to an agent, a link is on its way.",
    )
}

/// Store a new link for `user` and queue its mail.
async fn mail_link(s: &AppState, user: &str) -> Result<(), String> {
    let config = s.live.config();
    let (Some(u), Some(base)) = (config.user(user), config.http.public_url.as_deref()) else {
        return Err("user or [http] public_url gone".into());
    };
    let token = crate::api::auth::new_token().map_err(|e| format!("random: {e}"))?;
    let expires_at = crate::store::now_ms() + LINK_LIFETIME.as_millis() as i64;
    s.store
        .create_signin_link(NewSigninLink {
            token_hash: token_hash(&token),
            user: u.id.clone(),
            expires_at,
        })
        .await
        .map_err(|e| e.to_string())?;
    let minutes = LINK_LIFETIME.as_secs() / 60;
    let notice = Notice {
        kind: NOTICE_KIND.into(),
        to: vec![u.email.clone()],
        subject: "Your postdesk sign-in link".into(),
        text: format!(
            "Hello {},\n\nopen this link to sign in to postdesk:\n\n{base}/login/link/{token}\n\n\
             It works once, within {minutes} minutes. If you did not ask for it, ignore this mail.\n",
            u.full_name()
        ),
    };
    s.outbound
        .notifier()
        .send(notice)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(user = %u.id, "sign-in link mailed");
    Ok(())
}

/// A token as it may appear in a link (URL-safe base64 of 32 bytes).
fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /login/link/{token}`: a button that uses the link (nothing is
/// used up here).
pub async fn page(headers: HeaderMap, Path(token): Path<String>) -> Html<String> {
    let lang = Lang::of(&headers);
    let action = if plausible(&token) {
        format!("/login/link/{token}")
    } else {
        "/login/link/-".to_string()
    };
    layout(
        lang,
        lang.t("Sign in"),
        None,
        html! {
            form.login method="post" action=(action) {
                h1 { "postdesk" }
                p { (lang.t("Sign in with the link from your mail.")) }
                button type="submit" { (lang.t("Sign in")) }
            }
        },
    )
}

/// `POST /login/link/{token}`: use the link — a session for its user if
/// it is known, unused and not expired; one neutral refusal otherwise.
pub async fn use_link(
    State(s): State<AppState>,
    Extension(limits): Extension<Arc<SigninLimits>>,
    Path(token): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let lang = Lang::of(&parts.headers);
    if session::cross_origin(&parts.headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response();
    }
    let ip = session::client_ip(&parts.extensions, &parts.headers, &s);
    if !limits.take_ip(ip) {
        return answer(
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts; wait a minute.",
        );
    }
    let refused = || {
        answer(
            lang,
            StatusCode::BAD_REQUEST,
            "This sign-in link cannot be used (used already, expired or unknown). Ask for a new one.",
        )
    };
    if !plausible(&token) {
        return refused();
    }
    let user = match s
        .store
        .use_signin_link(token_hash(&token), crate::store::now_ms())
        .await
    {
        Ok(u) => u,
        Err(e) => return super::error_page(lang, &e.into()),
    };
    let config = s.live.config();
    let Some(user) = user.filter(|u| config.user(u).is_some()) else {
        tracing::info!(client = ?ip, "sign-in link refused");
        return refused();
    };
    match session::start(&s, &user, &parts.extensions, &parts.headers).await {
        Ok(cookie) => {
            tracing::info!(user = %user, client = ?ip, "web sign-in by link");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => super::error_page(lang, &e),
    }
}
