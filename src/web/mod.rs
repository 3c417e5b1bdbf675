//! The agents' web inbox: server-rendered pages on the API's listener.
//!
//! Owns the pages ([`pages`]: sign-in, inbox; [`link`]: one-time sign-in
//! links by email; [`ticket`]: a ticket, its
//! conversation and the reply, note and update forms; [`admin`]: channels,
//! previews, users, availability; [`compose`]: a new email), sessions and CSRF
//! ([`session`]), attachments ([`attachments`]: listed per message,
//! downloaded, never rendered), live updates ([`events`]: server-sent events), the two
//! languages ([`i18n`]) and the embedded, cache-busted assets (one small
//! script, one stylesheet). Every page works without the script.
//!
//! Must not: run SQL, or act on a ticket any other way than the API does —
//! actions call [`crate::api::actions`], the functions behind `/api/v1`.
//!
//! Security: every page is sent with a strict Content-Security-Policy (only
//! our own script and style; no inline script), `X-Frame-Options: DENY`
//! and `nosniff`. Customer HTML is never part of our pages: it is served
//! on its own URL with `Content-Security-Policy: sandbox` (no script, a
//! unique origin, no remote images until the agent asks) and shown in a
//! `sandbox` iframe. Text is escaped by the template engine (maud).

pub mod admin;
pub mod attachments;
pub mod compose;
pub mod events;
pub mod i18n;
pub mod link;
pub mod pages;
pub mod session;
pub mod ticket;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use crate::api::AppState;

/// The policy of our own pages.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file, served under a name with its content's hash.
struct Asset {
    stem: &'static str,
    ext: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        stem: "app",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        stem: "app",
        ext: "css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
];

/// `/static/<stem>.<hash>.<ext>` of each asset, computed once.
fn asset_names() -> &'static Vec<String> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = hex::encode(&Sha256::digest(a.body.as_bytes())[..6]);
                format!("{}.{hash}.{}", a.stem, a.ext)
            })
            .collect()
    })
}

/// The URL of the embedded asset `stem.ext` (its name changes with its content).
pub fn asset_url(stem: &str, ext: &str) -> String {
    ASSETS
        .iter()
        .zip(asset_names())
        .find(|(a, _)| a.stem == stem && a.ext == ext)
        .map(|(_, n)| format!("/static/{n}"))
        .unwrap_or_default()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().zip(asset_names()).find(|(_, n)| **n == name) {
        Some((a, _)) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// Headers every web response gets (a response that set its own CSP, the
/// sandboxed customer HTML, keeps it).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The web inbox's routes, to merge into the API's router.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::inbox))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/login/link", post(link::request))
        .route("/login/link/{token}", get(link::page).post(link::use_link))
        .route("/logout", post(pages::logout))
        .route("/lang/{code}", get(pages::set_lang))
        .route("/tickets/{n}", get(ticket::show))
        .route("/tickets/{n}/reply", post(ticket::reply))
        .route("/tickets/{n}/note", post(ticket::note))
        .route("/tickets/{n}/update", post(ticket::update))
        .route("/tickets/{n}/messages/{i}/html", get(ticket::message_html))
        .route(
            "/tickets/{n}/messages/{i}/attachments/{j}",
            get(attachments::download),
        )
        .route("/events", get(events::stream))
        .route("/compose", get(compose::form).post(compose::send))
        .route("/admin", get(admin::page))
        .route("/admin/channels/{id}", post(admin::set_channel))
        .route("/users/{id}/availability", post(admin::set_availability))
        .route("/static/{name}", get(asset))
        .layer(axum::Extension(Arc::new(session::SigninLimits::default())))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::api::listener::body_deadline,
        ))
}

/// An error page for a failed action or lookup (status and message of the
/// API's error; the message is escaped).
pub fn error_page(lang: i18n::Lang, e: &crate::api::error::ApiError) -> Response {
    let body = maud::html! {
        (maud::DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "postdesk — " (e.status.as_u16()) }
                link rel="stylesheet" href=(asset_url("app", "css"));
            }
            body { main {
                p.error role="alert" { (e.message) }
                p { a href="/" { (lang.t("Back")) } }
            } }
        }
    };
    (e.status, axum::response::Html(body.into_string())).into_response()
}
