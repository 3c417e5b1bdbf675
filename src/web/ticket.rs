//! A ticket's page: the conversation (inbound, outbound with its delivery,
//! internal notes apart; who really wrote each message; auto-reply and
//! bounce badges; quoted history folded; customer HTML sandboxed), the
//! reply form with a preview of what the customer will see, notes, and
//! the owner/status form; the contact and their other tickets beside it.
//!
//! Every action calls [`crate::api::actions`] (the API's own checks) and
//! then redirects back to the page (303), so a reload never repeats it; a
//! reply also carries a per-render idempotency key, so a re-sent form
//! queues one reply.
//!
//! Untrusted input: the path, every form field, and everything a message
//! contains (escaped in our pages; its HTML only ever in the sandbox).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::i18n::Lang;
use super::pages::{layout, short_time, ticket_table};
use super::session::{Agent, Posted};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::outbound::ReplyRequest;
use crate::store::{MessageView, TicketDetail, TicketFilter, TicketId, TicketUpdate};

/// The customer HTML's policy: a sandbox (no script, a unique origin), no
/// fetches; inline styles and inline (`data:`) images only.
const HTML_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
     font-src data:; frame-ancestors 'self'";
/// The same once the agent asked for remote images.
const HTML_CSP_IMAGES: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; \
     img-src data: https: http:; font-src data:; frame-ancestors 'self'";

fn number(n: &str) -> Result<TicketId, ApiError> {
    crate::api::tickets::ticket_number(n)
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowParams {
    /// Position of the message whose remote images the agent asked for.
    images: Option<usize>,
}

pub async fn show(
    State(s): State<AppState>,
    agent: Agent,
    headers: HeaderMap,
    Path(n): Path<String>,
    q: Result<Query<ShowParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lang = Lang::of(&headers);
    let images = q.ok().and_then(|Query(p)| p.images);
    let result = async {
        let n = number(&n)?;
        // The activity value is read before the data it stands for: a
        // change landing in between then shows as a newer value and the
        // live script re-fetches; read after, it would be missed.
        let version = s.store.activity().await?;
        let ticket = s.store.ticket(n).await?;
        let others = s
            .store
            .list_tickets(TicketFilter {
                contact: Some(ticket.head.contact.email.clone()),
                limit: Some(11),
                ..TicketFilter::default()
            })
            .await?;
        let files = super::attachments::of_ticket(&s, n, ticket.messages.len()).await?;
        let contact = s
            .store
            .contact_view(ticket.head.contact.email.clone())
            .await?;
        Ok::<_, ApiError>((ticket, others, version, files, contact))
    }
    .await;
    let (ticket, mut others, version, files, contact) = match result {
        Ok(r) => r,
        Err(e) => return super::error_page(lang, &e),
    };
    others.retain(|t| t.head.number != ticket.head.number);
    let idem = crate::api::auth::new_token().unwrap_or_default();
    let config = s.live.config();
    let n = ticket.head.number.0;
    let body = html! {
        h1 { "#" (n) " " (ticket.head.subject) }
        div.layout {
            div {
                div #live data-version=(version) {
                    @for (i, m) in ticket.messages.iter().enumerate() {
                        (message(&config, lang, n, i, m, images == Some(i), files.get(i).map_or(&[][..], Vec::as_slice)))
                    }
                }
                (reply_form(&s, lang, &agent, &ticket, &idem))
                section aria-labelledby="note-h" {
                    h2 #note-h { (lang.t("Internal note")) }
                    form method="post" action=(format!("/tickets/{n}/note")) {
                        input type="hidden" name="csrf" value=(agent.csrf);
                        textarea name="text" aria-labelledby="note-h" required {}
                        button type="submit" { (lang.t("Add note")) }
                    }
                }
            }
            aside {
                (update_form(&s, lang, &agent, &ticket))
                section #contact aria-labelledby="contact-h" {
                    h2 #contact-h { (lang.t("Contact")) }
                    p {
                        @if let Some(name) = &ticket.head.contact.name { (name) br; }
                        a href=(format!("/?view=open&contact={}", form_urlencoded::byte_serialize(ticket.head.contact.email.as_bytes()).collect::<String>())) {
                            (ticket.head.contact.email)
                        }
                    }
                    p.contact-owner {
                        (lang.t("Contact owner")) ": "
                        @match contact.as_ref().and_then(|c| c.owner.as_deref()) {
                            Some(id) => strong data-owner=(id) {
                                (config.user(id).map_or_else(|| id.to_string(), |u| u.full_name()))
                            },
                            None => span.muted { (lang.t("none")) },
                        }
                    }
                    h3 { (lang.t("Other tickets")) }
                    (ticket_table(lang, &others))
                }
            }
        }
    };
    let title = format!("#{n} {}", ticket.head.subject);
    layout(lang, &title, Some(&agent), body).into_response()
}

/// "Name <email>" or the email alone.
fn name_addr(name: Option<&str>, email: Option<&str>) -> String {
    match (name.filter(|n| !n.is_empty()), email) {
        (Some(n), Some(e)) => format!("{n} <{e}>"),
        (Some(n), None) => n.to_string(),
        (None, Some(e)) => e.to_string(),
        (None, None) => String::new(),
    }
}

/// How a resolution method reads to an agent.
fn method_label(lang: Lang, method: &str) -> String {
    match method {
        "rfc822" => lang.t("attached message").into(),
        "resent" => lang.t("Resent headers").into(),
        m if m.starts_with("list:") => lang.t("mailing list").into(),
        m => match m.strip_prefix("body:") {
            Some(client) => {
                let mut c = client.chars();
                let client: String = c
                    .next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default();
                match lang {
                    Lang::En => format!("{client} forward"),
                    Lang::De => format!("{client}-Weiterleitung"),
                }
            }
            None => m.to_string(),
        },
    }
}

/// "forwarded by Ann Agent — original sender John Carter, Gmail forward",
/// for a message whose ticket belongs to someone other than its sender.
fn who_wrote(lang: Lang, m: &MessageView) -> Option<String> {
    let r = &m.sender_resolution;
    let fwd = r.get("forwarder").filter(|f| !f.is_null())?;
    let addr = |v: &serde_json::Value| {
        name_addr(
            v.get("name").and_then(|n| n.as_str()),
            v.get("email").and_then(|e| e.as_str()),
        )
    };
    let contact = r.get("contact").map(addr).unwrap_or_default();
    let method = r.get("method").and_then(|m| m.as_str()).unwrap_or("");
    let fwd_name = fwd
        .get("name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| addr(fwd));
    Some(format!(
        "{} {fwd_name} — {} {contact}, {}",
        lang.t("forwarded by"),
        lang.t("original sender"),
        method_label(lang, method)
    ))
}

/// Text split where quoted history starts (`>` lines, "On … wrote:",
/// "-----Original Message-----"): (what is new, the quoted rest).
fn split_quoted(text: &str) -> (&str, &str) {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        if l.starts_with('>')
            || (l.starts_with("On ") && l.ends_with("wrote:"))
            || (l.starts_with("Am ") && l.ends_with("schrieb:"))
            || l.starts_with("-----Original Message-----")
        {
            if at > 0 {
                return text.split_at(at);
            }
            break;
        }
        at += line.len();
    }
    (text, "")
}

fn badges(lang: Lang, m: &MessageView) -> Markup {
    let kind = m
        .classification
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    html! {
        @match kind {
            "auto_reply" => span.badge.auto { (lang.t("auto-reply")) },
            "bounce" => span.badge.bounce { (lang.t("bounce")) },
            "bulk" => span.badge { (lang.t("bulk")) },
            "loop" => span.badge { (lang.t("loop")) },
            _ => {},
        }
        @if let Some(d) = m.delivery.as_deref() {
            span class=(format!("badge delivery {d}")) data-delivery=(d) {
                @match d { "queued" => (lang.t("queued")), "sent" => (lang.t("sent")), "failed" => (lang.t("failed")), other => (other) }
            }
        }
    }
}

fn message(
    config: &crate::config::Config,
    lang: Lang,
    n: i64,
    i: usize,
    m: &MessageView,
    images: bool,
    files: &[super::attachments::AttachmentInfo],
) -> Markup {
    let from = match (m.direction.as_str(), m.author.as_deref()) {
        ("inbound", _) | (_, None) => name_addr(m.from_name.as_deref(), m.from.as_deref()),
        (_, Some(id)) => config
            .user(id)
            .map_or_else(|| id.to_string(), |u| u.full_name()),
    };
    let text = m.text.as_deref().unwrap_or("");
    let (new, quoted) = split_quoted(text);
    let direction = match m.direction.as_str() {
        "inbound" | "outbound" | "note" => m.direction.as_str(),
        _ => "other",
    };
    html! {
        article class=(format!("msg {direction}")) id=(format!("m-{i}")) data-direction=(direction)
            data-author=[m.author.as_deref()] {
            header {
                strong { (from) }
                @if direction == "note" { span.badge { (lang.t("Note")) } }
                @if direction == "outbound" && !m.to.is_empty() { span { "→ " (m.to.join(", ")) } }
                time { (short_time(m.created_at)) }
                (badges(lang, m))
            }
            @if let Some(who) = who_wrote(lang, m) { p.who { (who) } }
            @if let Some(note) = &m.thread_note { p.who { (note) } }
            @if let Some(detail) = m.delivery_detail.as_deref().filter(|_| direction == "outbound") {
                p.who.delivery-detail { (detail) }
            }
            div.body { (new.trim_end()) }
            @if !quoted.is_empty() {
                details { summary { (lang.t("Quoted text")) } div.body { (quoted) } }
            }
            @if !files.is_empty() {
                ul.attachments aria-label=(lang.t("Attachments")) {
                    @for a in files {
                        li {
                            a href=(format!("/tickets/{n}/messages/{i}/attachments/{}", a.index)) download=(a.name) { (a.name) }
                            " " span.muted { "(" (super::attachments::human_size(a.size)) ", " (a.content_type) ")" }
                        }
                    }
                }
            }
            // Customer HTML only: ours is the text above, composed.
            @if m.html.is_some() && direction == "inbound" {
                @let src = if images { format!("/tickets/{n}/messages/{i}/html?images=1") } else { format!("/tickets/{n}/messages/{i}/html") };
                iframe.html sandbox="" referrerpolicy="no-referrer" src=(src) title=(format!("HTML {i}")) {}
                @if !images {
                    p.muted { (lang.t("Remote images are blocked.")) " "
                        a href=(format!("/tickets/{n}?images={i}#m-{i}")) { (lang.t("Show images")) } }
                }
            }
        }
    }
}

fn reply_form(s: &AppState, lang: Lang, agent: &Agent, t: &TicketDetail, idem: &str) -> Markup {
    let config = s.live.config();
    let user = config.user(&agent.id);
    let channel = config.channel(&t.head.channel);
    let from = match (channel, user) {
        (Some(c), Some(u)) => {
            let name = config.sender_display_name(c, Some(u));
            name_addr(name.as_deref(), c.address.as_deref())
        }
        _ => String::new(),
    };
    let signature = match (channel, user) {
        (Some(c), Some(u)) => crate::outbound::signature::render(&c.signature_html, u).text,
        _ => String::new(),
    };
    let n = t.head.number.0;
    html! {
        section aria-labelledby="reply-h" {
            h2 #reply-h { (lang.t("Reply")) }
            form method="post" action=(format!("/tickets/{n}/reply")) enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(agent.csrf);
                input type="hidden" name="idem" value=(idem);
                textarea #reply-text name="text" aria-labelledby="reply-h" required {}
                label { (lang.t("Attachments")) " " input type="file" name="attachments" multiple; }
                label { input type="checkbox" name="cc_thread" value="1"; " " (lang.t("Cc the thread's other participants")) }
                label { input type="checkbox" name="quote_history" value="1" checked[config.outbound.quote_history]; " " (lang.t("Quote the customer's last message")) }
                div.preview aria-label=(lang.t("What the customer will see")) {
                    div.from { (lang.t("From")) ": " span #preview-from { (from) } }
                    div.from { (lang.t("To")) ": " (t.head.contact.email) }
                    div.body #preview-text {}
                    @if !signature.is_empty() { div.body #preview-signature { (signature) } }
                }
                button type="submit" { (lang.t("Send reply")) }
            }
        }
    }
}

fn update_form(s: &AppState, lang: Lang, agent: &Agent, t: &TicketDetail) -> Markup {
    let config = s.live.config();
    let n = t.head.number.0;
    let owner = t.head.owner.as_deref().unwrap_or("");
    html! {
        section aria-labelledby="update-h" {
            h2 #update-h { (lang.t("Status")) }
            form method="post" action=(format!("/tickets/{n}/update")) {
                input type="hidden" name="csrf" value=(agent.csrf);
                label { (lang.t("Status")) br;
                    input type="text" name="status" value=(t.head.status.as_deref().unwrap_or("")) size="12"; }
                br;
                label { (lang.t("Priority")) br;
                    input type="text" name="priority" value=(t.head.priority.as_deref().unwrap_or("")) size="12"; }
                br;
                label { (lang.t("Owner")) br;
                    select name="owner" {
                        option value="" selected[owner.is_empty()] { "— " (lang.t("unassigned")) }
                        @for u in config.users.iter().filter(|u| u.licensed) {
                            option value=(u.id) selected[u.id == owner] { (u.full_name()) " (" (u.id) ")" }
                        }
                    }
                }
                br;
                button type="submit" { (lang.t("Save")) }
            }
        }
    }
}

/// Where an action goes on success, and how its failure looks.
fn after(lang: Lang, n: TicketId, r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => Redirect::to(&format!("/tickets/{n}")).into_response(),
        Err(e) => super::error_page(lang, &e),
    }
}

#[derive(Deserialize)]
pub struct ReplyForm {
    text: String,
    cc_thread: Option<String>,
    /// The box is sent only when ticked: absent means no quote.
    quote_history: Option<String>,
    idem: Option<String>,
}

pub async fn reply(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(n): Path<String>,
    posted: Posted<ReplyForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let user = posted.agent.auth_user();
    let (f, files) = (posted.form, posted.files);
    let r = async {
        let n = number(&n)?;
        if f.text.trim().is_empty() {
            return Err(ApiError::bad_request("the reply is empty"));
        }
        let request = ReplyRequest {
            ticket: n,
            author: user.id.clone(),
            text: Some(f.text),
            html: None,
            subject: None,
            attachments: files,
            cc_thread: f.cc_thread.is_some(),
            idempotency_key: f.idem.filter(|k| !k.is_empty()).map(|k| format!("web:{k}")),
            quote_history: Some(f.quote_history.is_some()),
        };
        crate::api::actions::reply(&s, &user, request).await?;
        Ok(n)
    }
    .await;
    match r {
        Ok(n) => after(lang, n, Ok(())),
        Err(e) => super::error_page(lang, &e),
    }
}

#[derive(Deserialize)]
pub struct NoteForm {
    text: String,
}

pub async fn note(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(n): Path<String>,
    posted: Posted<NoteForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let n = match number(&n) {
        Ok(n) => n,
        Err(e) => return super::error_page(lang, &e),
    };
    let user = posted.agent.auth_user();
    let r = crate::api::actions::add_note(&s, &user, n, posted.form.text).await;
    after(lang, n, r)
}

#[derive(Deserialize)]
pub struct UpdateForm {
    status: Option<String>,
    priority: Option<String>,
    /// A user id; empty unassigns.
    owner: Option<String>,
}

pub async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(n): Path<String>,
    posted: Posted<UpdateForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let n = match number(&n) {
        Ok(n) => n,
        Err(e) => return super::error_page(lang, &e),
    };
    let f = posted.form;
    let update = TicketUpdate {
        status: f
            .status
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        owner: f
            .owner
            .map(|o| Some(o.trim().to_string()).filter(|o| !o.is_empty())),
        priority: f
            .priority
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()),
        only_if_unassigned: false,
    };
    let user = posted.agent.auth_user();
    let r = crate::api::actions::update_ticket(&s, &user, n, update).await;
    after(lang, n, r)
}

/// A message's HTML part, for the sandboxed iframe only: its own CSP
/// (`sandbox`, nothing remote unless `?images=1`).
pub async fn message_html(
    State(s): State<AppState>,
    _agent: Agent,
    Path((n, i)): Path<(String, usize)>,
    q: Result<
        Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let images = q.is_ok_and(|Query(q)| q.get("images").is_some_and(|v| v == "1"));
    let html = match number(&n) {
        Ok(n) => s.store.message_html(n, i).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match html {
        Ok(Some(html)) => {
            let csp = if images { HTML_CSP_IMAGES } else { HTML_CSP };
            let mut resp =
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
            resp.headers_mut().insert(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            );
            resp
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no HTML part\n").into_response(),
        Err(e) => (e.status, format!("{}\n", e.message)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_history_is_split_off() {
        let (new, quoted) = split_quoted("Thanks!\n\nOn Mon, Ann wrote:\n> hello\n");
        assert_eq!(new, "Thanks!\n\n");
        assert_eq!(quoted, "On Mon, Ann wrote:\n> hello\n");
        assert_eq!(split_quoted("> only quoted\n"), ("> only quoted\n", ""));
        assert_eq!(split_quoted("plain"), ("plain", ""));
    }

    #[test]
    fn methods_read_as_words() {
        assert_eq!(method_label(Lang::En, "body:gmail"), "Gmail forward");
        assert_eq!(method_label(Lang::En, "rfc822"), "attached message");
        assert_eq!(method_label(Lang::En, "list:reply-to"), "mailing list");
        assert_eq!(method_label(Lang::De, "body:gmail"), "Gmail-Weiterleitung");
    }
}
