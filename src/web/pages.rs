//! The page frame, sign-in and sign-out, and the inbox (views with counts,
//! filters, search, paging by last activity).
//!
//! Untrusted input: the query string and the sign-in form; `next` (where
//! to go after signing in) must be a path on this site.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::i18n::Lang;
use super::session::{self, Agent, Posted, SigninLimits};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::store::{InboxQuery, InboxView, TicketSummary};

/// Tickets on one inbox page.
pub const PAGE_SIZE: usize = 50;

/// A whole page: head, the top bar (for a signed-in agent) and `body`.
pub fn layout(lang: Lang, title: &str, agent: Option<&Agent>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — postdesk" }
                link rel="stylesheet" href=(super::asset_url("app", "css"));
                script src=(super::asset_url("app", "js")) defer {}
            }
            body {
                @if let Some(agent) = agent {
                    header.top {
                        a.brand href="/" { "postdesk" }
                        a href="/" { (lang.t("Inbox")) }
                        a href="/compose" { (lang.t("New email")) }
                        @if agent.role == crate::store::TokenRole::Admin {
                            a href="/admin" { (lang.t("Admin")) }
                        }
                        span.muted { (agent.id) }
                        (super::admin::availability_form(lang, agent, &agent.id, agent.available))
                        @if lang == Lang::De {
                            a href="/lang/en" lang="en" { "English" }
                        } @else {
                            a href="/lang/de" lang="de" { "Deutsch" }
                        }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(agent.csrf);
                            button type="submit" { (lang.t("Sign out")) }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(page.into_string())
}

/// A stored time (unix ms) as `YYYY-MM-DD HH:MM` UTC.
pub fn short_time(ms: i64) -> String {
    let t = crate::store::ms_to_rfc3339(ms);
    t.get(..16).map(|s| s.replace('T', " ")).unwrap_or(t)
}

/// `next` if it is a path on this site, else `/`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(char::is_control) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_page(
    lang: Lang,
    links: bool,
    next: &str,
    email: &str,
    error: Option<&str>,
) -> Html<String> {
    layout(
        lang,
        lang.t("Sign in"),
        None,
        html! {
            form.login method="post" action="/login" {
                h1 { "postdesk" }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                input type="hidden" name="next" value=(next);
                label { (lang.t("Email")) br;
                    input type="email" name="email" value=(email) autocomplete="username" required autofocus; }
                label { (lang.t("Password")) br;
                    input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { (lang.t("Sign in")) }
            }
            @if links {
                form.login.link method="post" action="/login/link" {
                    p { (lang.t("Or get a one-time sign-in link by email:")) }
                    label { (lang.t("Email")) br;
                        input type="email" name="email" autocomplete="username" required; }
                    button type="submit" { (lang.t("Email me a link")) }
                }
            }
        },
    )
}

pub async fn login_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Html<String> {
    let lang = Lang::of(&headers);
    let links = super::link::enabled(&s.live.config());
    login_page(lang, links, &local_path(q.next.as_deref()), "", None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// Check email and password; on success start a session and go to `next`.
/// Unknown email and wrong password look alike (and cost alike: a decoy
/// hash is verified); attempts are limited per client address and email.
pub async fn login(
    State(s): State<AppState>,
    Extension(limits): Extension<Arc<SigninLimits>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, form) = match session::public_form::<LoginForm>(&s, req).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let lang = Lang::of(&parts.headers);
    let next = local_path(form.next.as_deref());
    let email = crate::mail::normalize_email(&form.email);
    let ip = session::client_ip(&parts.extensions, &parts.headers, &s);
    let links = super::link::enabled(&s.live.config());
    let fail = |status: StatusCode, message: &'static str| {
        (
            status,
            login_page(lang, links, &next, &email, Some(lang.t(message))),
        )
            .into_response()
    };
    if !limits.take(ip, &email) {
        tracing::info!(client = ?ip, "web sign-in refused: too many attempts");
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts; wait a minute.",
        );
    }
    let config = s.live.config();
    let user = config.user_by_email(&email).map(|u| u.id.clone());
    let stored = match &user {
        Some(id) => match s.store.web_user(id.clone()).await {
            Ok(w) => w.and_then(|w| w.password),
            Err(e) => return super::error_page(lang, &ApiError::from(e)),
        },
        None => None,
    };
    let password = form.password;
    let ok = password.len() <= session::MAX_PASSWORD && {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| session::decoy_hash().to_string());
        let verified =
            tokio::task::spawn_blocking(move || session::verify_password(&password, &phc))
                .await
                .unwrap_or(false);
        known && verified
    };
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(client = ?ip, "web sign-in failed");
        return fail(StatusCode::UNAUTHORIZED, "Wrong email or password.");
    };
    match session::start(&s, &user, &parts.extensions, &parts.headers).await {
        Ok(cookie) => {
            tracing::info!(user = %user, client = ?ip, "web sign-in");
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Err(e) => super::error_page(lang, &e),
    }
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

pub async fn logout(State(s): State<AppState>, posted: Posted<NoFields>) -> Response {
    if let Err(e) = s.store.end_session(posted.agent.session_hash.clone()).await {
        tracing::warn!(error = %e, "ending a web session failed");
    }
    tracing::info!(user = %posted.agent.id, "web sign-out");
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

/// `/lang/{code}`: remember the language in a cookie, back to the inbox.
pub async fn set_lang(axum::extract::Path(code): axum::extract::Path<String>) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::En);
    (
        [(
            header::SET_COOKIE,
            format!(
                "lang={}; Path=/; SameSite=Lax; Max-Age=31536000",
                lang.code()
            ),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct InboxParams {
    /// `mine`, `unassigned`, `open` (default), `closed` or `channel:ID`.
    view: Option<String>,
    status: Option<String>,
    owner: Option<String>,
    contact: Option<String>,
    q: Option<String>,
    /// `<updated_at>.<number>` of the previous page's last ticket.
    before: Option<String>,
}

fn some(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn view_of(param: Option<&str>, agent: &Agent) -> (InboxView, String) {
    match param.unwrap_or("open") {
        "mine" => (InboxView::Mine(agent.id.clone()), "mine".into()),
        "unassigned" => (InboxView::Unassigned, "unassigned".into()),
        "closed" => (InboxView::Closed, "closed".into()),
        p => match p.strip_prefix("channel:") {
            Some(c) => (InboxView::Channel(c.to_string()), p.to_string()),
            None => (InboxView::Open, "open".into()),
        },
    }
}

/// The page URL for a view with the current filters, and a cursor.
fn inbox_url(view: &str, p: &InboxParams, before: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("view", view);
    for (k, v) in [
        ("status", &p.status),
        ("owner", &p.owner),
        ("contact", &p.contact),
        ("q", &p.q),
    ] {
        if let Some(v) = some(v) {
            q.append_pair(k, &v);
        }
    }
    if let Some(b) = before {
        q.append_pair("before", b);
    }
    format!("/?{}", q.finish())
}

pub async fn inbox(
    State(s): State<AppState>,
    agent: Agent,
    headers: HeaderMap,
    q: Result<Query<InboxParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lang = Lang::of(&headers);
    let p = q.map(|Query(p)| p).unwrap_or_default();
    let (view, view_key) = view_of(p.view.as_deref(), &agent);
    let before = p.before.as_deref().and_then(|b| {
        let (at, n) = b.split_once('.')?;
        Some((at.parse().ok()?, n.parse().ok()?))
    });
    let query = InboxQuery {
        view,
        status: some(&p.status),
        owner: some(&p.owner),
        contact: some(&p.contact),
        search: some(&p.q),
        before,
        limit: PAGE_SIZE,
    };
    // Activity first, then the data it stands for (see `ticket::show`).
    let version = match s.store.activity().await {
        Ok(v) => v,
        Err(e) => return super::error_page(lang, &ApiError::from(e)),
    };
    let (tickets, counts) =
        match tokio::try_join!(s.store.inbox(query), s.store.inbox_counts(agent.id.clone())) {
            Ok(r) => r,
            Err(e) => return super::error_page(lang, &ApiError::from(e)),
        };
    let next = (tickets.len() == PAGE_SIZE)
        .then(|| tickets.last())
        .flatten()
        .map(|t| format!("{}.{}", t.head.updated_at, t.head.number));
    let mut views: Vec<(String, &str, i64)> = vec![
        ("mine".into(), lang.t("Mine"), counts.mine),
        ("unassigned".into(), lang.t("Unassigned"), counts.unassigned),
        ("open".into(), lang.t("All open"), counts.open),
    ];
    let config = s.live.config();
    for c in &config.channels {
        let n = counts
            .channels
            .iter()
            .find(|(id, _)| *id == c.id)
            .map_or(0, |(_, n)| *n);
        views.push((format!("channel:{}", c.id), c.id.as_str(), n));
    }
    views.push(("closed".into(), lang.t("Closed"), counts.closed));
    let body = html! {
        nav #views aria-label=(lang.t("Inbox")) {
            @for (key, label, n) in &views {
                a href=(inbox_url(key, &p, None)) class=[(*key == view_key).then_some("current")]
                    aria-current=[(*key == view_key).then_some("page")] {
                    (label) " " span.count { "(" (n) ")" }
                }
            }
        }
        form.filters method="get" action="/" role="search" {
            input type="hidden" name="view" value=(view_key);
            input type="search" name="q" value=[some(&p.q)] placeholder=(lang.t("Search")) aria-label=(lang.t("Search"));
            input type="text" name="status" value=[some(&p.status)] placeholder=(lang.t("Status")) aria-label=(lang.t("Status")) size="8";
            input type="text" name="owner" value=[some(&p.owner)] placeholder=(lang.t("Owner")) aria-label=(lang.t("Owner")) size="8";
            input type="text" name="contact" value=[some(&p.contact)] placeholder=(lang.t("Contact")) aria-label=(lang.t("Contact")) size="14";
            button type="submit" { (lang.t("Filter")) }
        }
        div #live data-version=(version) {
            (ticket_table(lang, &tickets))
            @if let Some(next) = &next {
                p { a rel="next" href=(inbox_url(&view_key, &p, Some(next))) { (lang.t("Older tickets")) " →" } }
            }
        }
    };
    layout(lang, lang.t("Inbox"), Some(&agent), body).into_response()
}

/// A list of tickets (the inbox, a contact's other tickets).
pub fn ticket_table(lang: Lang, tickets: &[TicketSummary]) -> Markup {
    html! {
        @if tickets.is_empty() {
            p.muted { (lang.t("No tickets.")) }
        } @else {
            table.tickets {
                thead { tr {
                    th { "#" } th { (lang.t("Subject")) } th { (lang.t("Contact")) }
                    th { (lang.t("Status")) } th { (lang.t("Owner")) }
                    th.wide { (lang.t("Channel")) } th.wide { (lang.t("Last activity")) }
                } }
                tbody {
                    @for t in tickets {
                        tr data-ticket=(t.head.number.0) {
                            td { (t.head.number.0) }
                            td { a href=(format!("/tickets/{}", t.head.number.0)) { (t.head.subject) } }
                            td { (t.head.contact.name.as_deref().unwrap_or(&t.head.contact.email)) }
                            td { (t.head.status.as_deref().unwrap_or("")) }
                            td { (t.head.owner.as_deref().unwrap_or(lang.t("unassigned"))) }
                            td.wide { (t.head.channel) }
                            td.wide { (short_time(t.head.updated_at)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_path(Some("/tickets/3")), "/tickets/3");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "x",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
