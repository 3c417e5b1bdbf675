//! Who really wrote it: sender resolution and classification of inbound mail.
//!
//! Owns classification and resolution (docs/sender-resolution.md) as pure functions over a parsed
//! [`mail_parser::Message`]: [`classify`] (normal, auto-reply, bulk, bounce,
//! loop) and [`resolve`] (who owns the ticket, how we decided, how sure we are,
//! who forwarded, the forwarder's note and the customer's original message).
//!
//! Trust order in [`resolve`]: mailing-list / Google Groups rewriting
//! (X-Original-From, X-Original-Sender, then Reply-To — only when the list
//! rewrote From; when the author it names is a team member, the steps below
//! apply to that author: a colleague forwarding through the group), Resent-*
//! redirects by a trusted address, then — only when From
//! is a team member or a configured forwarder — a `message/rfc822` (or `.eml`)
//! part, then the forwarded-header block in the body. Anyone else's "forward" is
//! attributed to them, the claimed original recorded. A false positive (mail
//! attributed to someone who did not send it) is worse than a miss.
//!
//! Must not: do I/O, read the clock, touch the store, or panic on any input.
//! Untrusted input: the whole message, including bodies and attachments.
//! Limits: nested forwards are followed [`MAX_DEPTH`] levels deep; `.eml`
//! attachments larger than [`MAX_EML`] bytes are not re-parsed; see `block.rs`,
//! `classify.rs` and `html.rs` for scan limits.

mod address;
mod attribution;
mod block;
mod classify;
mod glued;
mod labels;
mod prep;
#[cfg(test)]
mod proptests;

use std::collections::HashSet;

use mail_parser::{HeaderValue, Message, MimeHeaders, PartType};

pub use crate::ingest::auth::Authentication;
pub use crate::mail::html::html_to_text;
pub use crate::mail::subject::strip_subject_prefixes;
pub use block::{Block, Client, Hints, find_block};

/// How many forwards inside forwards we follow.
pub const MAX_DEPTH: usize = 8;
/// Largest `.eml` attachment we parse again.
pub const MAX_EML: usize = 16 * 1024 * 1024;

/// What resolution needs to know about the channel and the team.
pub struct ResolveContext<'a> {
    /// Users' emails, normalised (lowercase, trimmed).
    pub team_addresses: &'a HashSet<String>,
    /// The channel's extra trusted forwarders (e.g. a Google Group), normalised.
    pub forwarders: &'a [String],
    /// Channel toggle: forwards belong to the original sender (default on).
    pub original_sender_of_forwards: bool,
    /// The install's key for signed tags ([`crate::mail::tags`]): a message
    /// whose own Message-ID or `X-Postdesk-Loop` holds a reply id made with
    /// it is one of our replies come back (a loop). `None`: no loop is
    /// recognised (`postdesk resolve` without a store).
    pub loop_key: Option<&'a [u8]>,
    /// What is proven about the message's origin: a team member's or
    /// forwarder's address in From/Resent-From counts only when covered.
    pub auth: &'a Authentication,
}

impl ResolveContext<'_> {
    fn is_team(&self, email: &str) -> bool {
        !email.is_empty() && self.team_addresses.contains(email)
    }
    fn is_forwarder(&self, email: &str) -> bool {
        !email.is_empty() && self.forwarders.iter().any(|f| f == email)
    }
    /// A team member or forwarder by address alone: for authors named
    /// inside a forward (or by a trusted group), whose word is the
    /// forwarder's.
    fn is_known(&self, email: &str) -> bool {
        self.is_team(email) || self.is_forwarder(email)
    }
    /// A team member or forwarder that this message is proven to come from.
    fn is_trusted(&self, email: &str) -> bool {
        self.is_known(email) && self.auth.covers(email)
    }
    /// Why `email`, a known address, is not believed on this message.
    fn distrust(&self, email: &str, role: &str) -> Option<String> {
        if !self.is_known(email) || self.auth.covers(email) {
            return None;
        }
        let what = if self.is_team(email) {
            "a team address"
        } else {
            "a configured forwarder"
        };
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        Some(format!(
            "{role} {email} is {what}, but the message is not authenticated for {domain} ({}): treated as a stranger's",
            self.auth.by
        ))
    }
}

// The types this stage produces are plain data the store serialises (one
// place for public types, and no dependency of the store on ingest).
pub use crate::store::{
    Address, Classification, Dsn, DsnRecipient, OriginalMessage, Resolution, rounded,
};

/// `envelope_from` is the SMTP MAIL FROM ("" for the null path; None when
/// unknown, e.g. pulled mail — then a `Return-Path: <>` header counts).
pub fn classify(
    msg: &Message<'_>,
    envelope_from: Option<&str>,
    ctx: &ResolveContext<'_>,
) -> Classification {
    let sender = address::from_parsed(msg.from()).unwrap_or_else(empty);
    classify::classify(msg, envelope_from, ctx, is_group_mail(msg, ctx, &sender))
}

/// Decide who owns the ticket for `msg`. Never panics.
pub fn resolve(msg: &Message<'_>, ctx: &ResolveContext<'_>) -> Resolution {
    let sender = address::from_parsed(msg.from()).unwrap_or_else(empty);
    let mut r = match resolve_list(msg, ctx, &sender) {
        // A colleague forwarding a customer's mail through a group that
        // rewrote From ("'Ann' via Support"): the forward rules apply to the
        // author the group names (the group, authenticated, vouches for
        // them). Without a forward, the list's answer stands.
        Some(list) if ctx.is_known(&list.contact.email) => {
            resolve_as(msg, ctx, &list.contact, true).unwrap_or(list)
        }
        Some(list) => list,
        None => resolve_as(msg, ctx, &sender, false).unwrap_or_else(|| plain(sender.clone())),
    };
    if r.distrusted.is_none() {
        r.distrusted = ctx
            .distrust(&sender.email, "From")
            .or_else(|| untrusted_group(msg, ctx, &sender, &mut r));
    }
    r
}

/// A group header (X-Original-From/-Sender) on mail that is not from an
/// authenticated configured forwarder: recorded as a claim, with the reason.
fn untrusted_group(
    msg: &Message<'_>,
    ctx: &ResolveContext<'_>,
    sender: &Address,
    r: &mut Resolution,
) -> Option<String> {
    if ctx.is_forwarder(&sender.email) && ctx.auth.covers(&sender.email) {
        return None;
    }
    let (header, claimed) = ["X-Original-From", "X-Original-Sender"]
        .into_iter()
        .find_map(|h| header_address(msg, h).map(|a| (h, a)))?;
    if claimed.email == sender.email {
        return None;
    }
    let why = if ctx.is_forwarder(&sender.email) {
        format!(
            "{header} names {}, but the forwarder {}'s message is not authenticated ({})",
            claimed.email, sender.email, ctx.auth.by
        )
    } else {
        format!(
            "{header} names {}, believed only from a configured forwarder (channels.forwarders); {} is not one",
            claimed.email,
            if sender.email.is_empty() {
                "the sender"
            } else {
                sender.email.as_str()
            }
        )
    };
    if r.claimed_original.is_none() {
        r.claimed_original = Some(claimed);
    }
    Some(why)
}

/// A redirect (Resent-*) or a forward by `sender`; `None`: `sender` wrote it.
/// `vouched`: `sender` was named by an authenticated group, not by From.
fn resolve_as(
    msg: &Message<'_>,
    ctx: &ResolveContext<'_>,
    sender: &Address,
    vouched: bool,
) -> Option<Resolution> {
    if let Some(r) = resolve_resent(msg, ctx, sender) {
        return Some(r);
    }
    let found = find_forward(msg, ctx, 0);
    let trusted = if vouched {
        ctx.is_known(&sender.email)
    } else {
        ctx.is_trusted(&sender.email)
    };
    if !trusted {
        let claimed = found?.owner;
        let mut r = plain(sender.clone());
        r.claimed_original = Some(claimed);
        return Some(r);
    }
    let f = found?;
    let name_only = f.owner.email.is_empty();
    if name_only || !ctx.original_sender_of_forwards {
        return Some(Resolution {
            contact: sender.clone(),
            method: "forwarder".into(),
            confidence: if name_only { 0.5 } else { 1.0 },
            forwarder: Some(sender.clone()),
            claimed_original: name_only.then_some(f.owner),
            note: f.note,
            original: Some(f.original),
            distrusted: None,
        });
    }
    Some(Resolution {
        contact: f.owner,
        method: f.method,
        confidence: f.confidence,
        forwarder: Some(sender.clone()),
        claimed_original: None,
        note: f.note,
        original: Some(f.original),
        distrusted: None,
    })
}

fn empty() -> Address {
    Address {
        email: String::new(),
        name: None,
    }
}

fn plain(sender: Address) -> Resolution {
    let confidence = if sender.email.is_empty() { 0.0 } else { 1.0 };
    Resolution::only(sender, "from", confidence)
}

/// An address from a header of any parsed shape.
fn header_address(msg: &Message<'_>, name: &str) -> Option<Address> {
    let value = msg
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))?
        .value();
    let addr = match value {
        HeaderValue::Address(a) => address::from_parsed(Some(a)),
        HeaderValue::Text(t) => text_address(t),
        HeaderValue::TextList(l) => l.first().and_then(|t| text_address(t)),
        _ => classify::header_text(msg, name).and_then(address::parse_loose),
    }?;
    (!addr.email.is_empty()).then_some(addr)
}

/// An address header mail-parser kept as text (it parses only the headers it
/// knows, e.g. not Google Groups' `X-Original-From`): read as a From header,
/// so that an encoded-word name is decoded; loosely when that finds nothing.
fn text_address(t: &str) -> Option<Address> {
    let one_line: String = t
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let header = format!("From: {one_line}\r\n\r\n");
    crate::ingest::parse::parse(header.as_bytes())
        .and_then(|m| address::from_parsed(m.from()))
        .filter(|a| !a.email.is_empty())
        .or_else(|| address::parse_loose(t))
}

fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.headers()
        .iter()
        .any(|h| h.name().eq_ignore_ascii_case(name))
}

/// A list/group that names the author (so its List-* headers are not "bulk").
fn is_group_mail(msg: &Message<'_>, ctx: &ResolveContext<'_>, sender: &Address) -> bool {
    has_header(msg, "X-Original-From")
        || has_header(msg, "X-Original-Sender")
        || ctx.is_forwarder(&sender.email)
        || sender
            .name
            .as_deref()
            .is_some_and(|n| n.to_lowercase().contains(" via "))
}

/// Mailing list / Google Groups rewriting.
fn resolve_list(
    msg: &Message<'_>,
    ctx: &ResolveContext<'_>,
    sender: &Address,
) -> Option<Resolution> {
    let via = sender
        .name
        .as_deref()
        .is_some_and(|n| n.to_lowercase().contains(" via "));
    let list_post = classify::header_text(msg, "List-Post")
        .unwrap_or("")
        .to_lowercase();
    let rewritten = ctx.is_forwarder(&sender.email)
        || via
        || !sender.email.is_empty() && list_post.contains(&sender.email);
    let original_headers =
        has_header(msg, "X-Original-From") || has_header(msg, "X-Original-Sender");
    if !(rewritten || original_headers || has_header(msg, "List-Id")) {
        return None;
    }
    // Anyone can write these headers: only an authenticated configured
    // forwarder's are believed (`resolve` records the others as claims).
    if !ctx.is_trusted(&sender.email) || !ctx.is_forwarder(&sender.email) {
        return None;
    }
    let mut candidates = vec![
        ("X-Original-From", "list:x-original-from", 0.9),
        ("X-Original-Sender", "list:x-original-sender", 0.85),
    ];
    if rewritten {
        candidates.push(("Reply-To", "list:reply-to", 0.6));
    }
    for (header, method, confidence) in candidates {
        let Some(owner) = header_address(msg, header) else {
            continue;
        };
        if owner.email == sender.email || list_post.contains(&owner.email) {
            if header == "Reply-To" {
                continue;
            }
            // Not rewritten: the sender is the author; resolve normally.
            return None;
        }
        return Some(Resolution {
            contact: owner,
            method: method.into(),
            confidence,
            forwarder: Some(sender.clone()),
            claimed_original: None,
            note: None,
            original: None,
            distrusted: None,
        });
    }
    None
}

fn message_text(msg: &Message<'_>) -> Option<String> {
    let part = msg.text_part(0).or_else(|| msg.html_part(0))?;
    match &part.body {
        PartType::Text(t) => Some(t.to_string()),
        PartType::Html(h) => Some(html_to_text(h)),
        _ => None,
    }
}

fn html_text(msg: &Message<'_>) -> Option<String> {
    match &msg.html_part(0)?.body {
        PartType::Html(h) => Some(html_to_text(h)),
        _ => None,
    }
}

fn original_of(msg: &Message<'_>) -> OriginalMessage {
    OriginalMessage {
        subject: msg.subject().map(strip_subject_prefixes),
        date: classify::header_text(msg, "Date").map(str::to_string),
        text: message_text(msg).unwrap_or_default().trim().to_string(),
        message_id: msg.message_id().map(str::to_string),
    }
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Resent-From/Resent-Sender by a trusted address: the author (From) owns it.
fn resolve_resent(
    msg: &Message<'_>,
    ctx: &ResolveContext<'_>,
    sender: &Address,
) -> Option<Resolution> {
    let resender = address::from_parsed(msg.resent_from())
        .or_else(|| address::from_parsed(msg.resent_sender()))?;
    if !ctx.is_trusted(&resender.email) || sender.email.is_empty() || ctx.is_team(&sender.email) {
        return None;
    }
    let keep = !ctx.original_sender_of_forwards;
    Some(Resolution {
        contact: if keep {
            resender.clone()
        } else {
            sender.clone()
        },
        method: if keep { "forwarder" } else { "resent" }.into(),
        confidence: if keep { 1.0 } else { 0.95 },
        forwarder: Some(resender),
        claimed_original: None,
        note: None,
        original: Some(original_of(msg)),
        distrusted: None,
    })
}

struct Found {
    owner: Address,
    method: String,
    confidence: f32,
    note: Option<String>,
    original: OriginalMessage,
}

fn outlook_mailer(msg: &Message<'_>) -> bool {
    ["X-Mailer", "User-Agent"].iter().any(|h| {
        classify::header_text(msg, h).is_some_and(|v| {
            let v = v.to_lowercase();
            v.contains("microsoft outlook")
                || v.contains("microsoft office outlook")
                || v.contains("microsoft-macoutlook")
        })
    })
}

/// The first claimed original sender in `msg` that is not a team member
/// (walking inward), or a name-only claim. `None` when there is no forward.
fn find_forward(msg: &Message<'_>, ctx: &ResolveContext<'_>, depth: usize) -> Option<Found> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let note = || message_text(msg).and_then(non_empty);
    // 1. message/rfc822 parts and .eml attachments.
    for part in msg.attachments() {
        let reparsed;
        let inner: &Message<'_> = match &part.body {
            PartType::Message(m) => m,
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Text(_) if is_eml(part) => {
                let bytes: &[u8] = match &part.body {
                    PartType::Text(t) => t.as_bytes(),
                    PartType::Binary(b) | PartType::InlineBinary(b) => b,
                    _ => continue,
                };
                if bytes.len() > MAX_EML {
                    continue;
                }
                reparsed = crate::ingest::parse::parse(bytes);
                match &reparsed {
                    Some(m) => m,
                    None => continue,
                }
            }
            _ => continue,
        };
        let Some(author) = address::from_parsed(inner.from()) else {
            continue;
        };
        if !ctx.is_known(&author.email) {
            return Some(Found {
                owner: author,
                method: "rfc822".into(),
                confidence: 0.95,
                note: note(),
                original: original_of(inner),
            });
        }
        if let Some(mut f) = find_forward(inner, ctx, depth + 1) {
            f.note = note().or(f.note);
            return Some(f);
        }
    }
    // 2. The forwarded-header block in the text (or HTML) body.
    let mut hints = Hints {
        subject: msg.subject().unwrap_or("").to_string(),
        outlook_mailer: outlook_mailer(msg),
    };
    let text = message_text(msg)?;
    let first = find_block(&text, &hints).or_else(|| {
        let h = html_text(msg)?;
        find_block(&h, &hints)
    })?;
    let outer_note = non_empty(first.note.clone());
    let mut block = first;
    for _ in 0..MAX_DEPTH {
        let original = OriginalMessage {
            subject: block.subject.as_deref().map(strip_subject_prefixes),
            date: block.date.clone(),
            text: block.body.clone(),
            message_id: None,
        };
        if block.from.email.is_empty() || !ctx.is_known(&block.from.email) {
            let confidence = match block.client {
                Client::Generic | Client::Attribution => 0.7,
                _ => 0.85,
            };
            return Some(Found {
                owner: block.from,
                method: block.client.method().into(),
                confidence,
                note: outer_note,
                original,
            });
        }
        // A team member's forward inside: walk inward.
        hints.subject = block.subject.clone().unwrap_or_default();
        block = find_block(&block.body, &hints)?;
    }
    None
}

fn is_eml(part: &mail_parser::MessagePart<'_>) -> bool {
    let named = part
        .attachment_name()
        .is_some_and(|n| n.to_lowercase().ends_with(".eml"));
    let typed = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
    });
    named || typed
}
