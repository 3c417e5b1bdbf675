//! `postdesk tickets list|show`, and what an agent sends from the command
//! line: `reply` (to a ticket) and `compose` (a new email, opening a
//! ticket), through [`crate::api::actions`] as the HTTP API's are (the
//! same checks; a reply to a ticket nobody owns makes its author the owner).
//! A queued reply wakes a daemon running on the same store
//! ([`crate::outbound::wake`]), as the API's wakes its sender.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{open_store, print_json};
use crate::api::actions::{self, Caller};
use crate::config::Config;
use crate::store::{TicketFilter, TicketId};

/// `tickets list`: newest first, a note on stderr for a filter naming
/// what the file does not.
pub(super) async fn list(config: Config, filter: TicketFilter, json: bool) -> Result<()> {
    // A typo in a filter would list nothing, as if there were no
    // such tickets: say so — on stderr, and list anyway, since a
    // user or channel removed from the file still has its tickets
    // (an ex-agent's, to reassign).
    if let Some(c) = filter
        .channel
        .as_deref()
        .filter(|c| config.channel(c).is_none())
    {
        eprintln!("postdesk: note: no channel {c:?} in the configuration");
    }
    if let Some(u) = filter.owner.as_deref().filter(|u| config.user(u).is_none()) {
        eprintln!("postdesk: note: no user {u:?} in the configuration");
    }
    let store = open_store(&config).await?;
    let tickets = store.list_tickets(filter).await?;
    if json {
        return print_json(&tickets);
    }
    println!(
        "{:>6}  {:<12} {:<10} {:<10} {:<30} {:>4}  SUBJECT",
        "NUMBER", "CHANNEL", "STATUS", "OWNER", "CONTACT", "MSGS"
    );
    for t in tickets {
        let h = &t.head;
        println!(
            "{:>6}  {:<12} {:<10} {:<10} {:<30} {:>4}  {}",
            // The number itself: TicketId's Display ignores widths.
            h.number.0,
            h.channel,
            h.status.as_deref().unwrap_or("-"),
            h.owner.as_deref().unwrap_or("-"),
            h.contact.email,
            t.messages,
            h.subject
        );
    }
    Ok(())
}

/// `tickets show N`: the ticket with its messages.
pub(super) async fn show(config: Config, number: i64, json: bool) -> Result<()> {
    let store = open_store(&config).await?;
    let t = store.ticket(TicketId(number)).await?;
    if json {
        return print_json(&t);
    }
    let h = &t.head;
    println!("Ticket #{} — {}", h.number, h.subject);
    println!(
        "  channel: {}  status: {}  priority: {}  pipeline: {}",
        h.channel,
        h.status.as_deref().unwrap_or("-"),
        h.priority.as_deref().unwrap_or("-"),
        h.pipeline.as_deref().unwrap_or("-")
    );
    match h.contact.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => println!("  contact: {name} <{}>", h.contact.email),
        None => println!("  contact: {}", h.contact.email),
    }
    match (&h.owner, &h.unassigned_reason) {
        (Some(o), _) => println!("  owner: {o}"),
        (None, Some(r)) => println!("  owner: none ({r})"),
        (None, None) => println!("  owner: none"),
    }
    if let Some(by) = &h.routed_by {
        println!("  routed by: {by}");
    }
    for m in &t.messages {
        println!();
        // A note is its author's (a user id), else its sender's (a
        // forwarder who is not a user); a message without a Date
        // header shows when it was stored.
        let who = match m.direction.as_str() {
            "note" => m.author.as_deref().or(m.from.as_deref()),
            _ => m.from.as_deref().or(m.author.as_deref()),
        };
        let stored = crate::store::ms_to_rfc3339(m.created_at);
        println!(
            "--- {} from {} at {}",
            m.direction,
            who.unwrap_or("?"),
            m.date.as_deref().unwrap_or(&stored)
        );
        if let Some(method) = m.sender_resolution.get("method").and_then(|v| v.as_str()) {
            println!("    sender resolution: {method}");
        }
        if let Some(d) = &m.delivery {
            println!(
                "    delivery: {d} {}",
                m.delivery_detail.as_deref().unwrap_or("")
            );
        }
        println!("{}", m.text.as_deref().unwrap_or("").trim_end());
    }
    Ok(())
}

/// `reply`'s arguments.
#[derive(clap::Args)]
#[group(skip)]
pub(super) struct Reply {
    /// The ticket number.
    pub number: i64,
    /// The agent (user id) the reply is from.
    #[arg(long = "as", value_name = "USER_ID")]
    pub as_user: String,
    /// Plain-text body (this, --html, or both).
    #[arg(long)]
    pub text: Option<String>,
    /// HTML body (a text part is made from it when --text is absent).
    #[arg(long)]
    pub html: Option<String>,
    /// Subject instead of `Re: <ticket subject>` (the `[#N]` token is kept).
    #[arg(long)]
    pub subject: Option<String>,
    /// Attach a file (repeatable).
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Cc the ticket's other participants.
    #[arg(long)]
    pub cc_thread: bool,
    /// Quote the ticket's last customer message, inline images included
    /// (`true`/`false`; default: `[outbound] quote_history`).
    #[arg(long, value_name = "BOOL")]
    pub quote_history: Option<bool>,
}

/// `reply N --as USER`: composed and durably queued.
pub(super) async fn reply(config: Config, r: Reply, json: bool) -> Result<()> {
    let mut attachments = Vec::new();
    for path in r.attach {
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", path.display()))?;
        attachments.push(crate::outbound::Attachment {
            content_type: crate::outbound::compose::content_type_for(&filename).into(),
            filename,
            data,
        });
    }
    let s = super::app(config).await?;
    let caller = Caller::Operator(Some(&r.as_user));
    let request = crate::outbound::ReplyRequest {
        ticket: TicketId(r.number),
        author: r.as_user.clone(),
        text: r.text,
        html: r.html,
        subject: r.subject,
        attachments,
        cc_thread: r.cc_thread,
        idempotency_key: None,
        quote_history: r.quote_history,
    };
    let queued = actions::reply(&s, caller, request).await?;
    if !queued.replayed {
        crate::outbound::wake::wake_daemon(&s.live.config());
    }
    if json {
        return print_json(&queued);
    }
    println!(
        "reply queued on ticket #{} as <{}>",
        queued.ticket, queued.message_id
    );
    Ok(())
}

/// `compose`: a new email to a contact, opening a ticket.
pub(super) async fn compose(
    config: Config,
    request: crate::outbound::ComposeRequest,
    json: bool,
) -> Result<()> {
    let s = super::app(config).await?;
    let author = request.author.clone();
    let queued = actions::compose(&s, Caller::Operator(Some(&author)), request).await?;
    if !queued.replayed {
        crate::outbound::wake::wake_daemon(&s.live.config());
    }
    if json {
        return print_json(&queued);
    }
    println!(
        "ticket #{} opened, email queued as <{}>",
        queued.ticket, queued.message_id
    );
    Ok(())
}
