//! Classification: normal mail, auto-replies, bulk/list mail, bounces, loops.
//!
//! Owns: classification (docs/sender-resolution.md) and RFC 3464 delivery-status parsing. Order of
//! precedence: loop > bounce > auto-reply > bulk > normal. A null envelope
//! sender alone is a bounce only when no auto-reply header is present (RFC 3834
//! tells auto-responders to use the null path too); a `multipart/report`
//! delivery-status or a mailer-daemon/postmaster From is a bounce regardless.
//!
//! Untrusted input: the whole message. Limits: DSN parts larger than
//! [`MAX_DSN`] bytes are truncated, at most [`MAX_RECIPIENTS`] recipients are
//! kept, the part walk is bounded by [`MAX_PARTS`]; never panics.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::labels::AUTO_REPLY_SUBJECTS;
use super::{Classification, Dsn, DsnRecipient, ResolveContext};

pub(crate) const MAX_DSN: usize = 64 * 1024;
pub(crate) const MAX_RECIPIENTS: usize = 100;
pub(crate) const MAX_PARTS: usize = 256;

/// Text of a header as written (first occurrence), trimmed.
pub(crate) fn header_text<'a>(msg: &'a Message<'_>, name: &str) -> Option<&'a str> {
    let h = msg
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))?;
    let raw = msg
        .raw_message()
        .get(h.offset_start() as usize..h.offset_end() as usize)?;
    std::str::from_utf8(raw)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.headers()
        .iter()
        .any(|h| h.name().eq_ignore_ascii_case(name))
}

/// Whether `msg` is one of our own replies come back: its own Message-ID,
/// or a token of an `X-Postdesk-Loop` header (for relays that rewrite the
/// Message-ID), is a reply id signed with the install's key. The header or
/// a Message-ID on our domain without a valid signature is a stranger's
/// word (or another postdesk install's) and proves nothing.
pub(crate) fn is_loop(msg: &Message<'_>, ctx: &ResolveContext<'_>) -> Option<String> {
    let key = ctx.loop_key?;
    if let Some(id) = msg.message_id()
        && crate::mail::tags::is_own_reply_id(id, key)
    {
        return Some("our own reply (signed message-id)".into());
    }
    let raw = msg.raw_message();
    let signed_header = msg
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("X-Postdesk-Loop"))
        .filter_map(|h| raw.get(h.offset_start() as usize..h.offset_end() as usize))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split([' ', '\t', '\r', '\n', ';', ',']))
        .map(|token| token.trim().trim_start_matches("id="))
        .any(|token| crate::mail::tags::is_own_reply_id(token, key));
    signed_header.then(|| "our own reply (signed x-postdesk-loop)".into())
}

fn auto_reply_reason(msg: &Message<'_>) -> Option<String> {
    if let Some(v) = header_text(msg, "Auto-Submitted") {
        let v = v.to_lowercase();
        if !v.starts_with("no") {
            return Some(format!("auto-submitted: {v}"));
        }
    }
    for h in ["X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"] {
        if has_header(msg, h) {
            return Some(h.to_lowercase());
        }
    }
    if let Some(p) = header_text(msg, "Precedence") {
        let p = p.to_lowercase();
        if p == "auto_reply" || p == "junk" {
            return Some(format!("precedence: {p}"));
        }
    }
    let subject = msg.subject().unwrap_or("").trim().to_lowercase();
    if AUTO_REPLY_SUBJECTS.iter().any(|s| subject.starts_with(s)) {
        return Some("subject".into());
    }
    None
}

fn bulk_reason(msg: &Message<'_>, group: bool) -> Option<String> {
    if let Some(p) = header_text(msg, "Precedence") {
        let p = p.to_lowercase();
        if !group && (p == "bulk" || p == "list") {
            return Some(format!("precedence: {p}"));
        }
    }
    if group {
        return None;
    }
    if has_header(msg, "List-Id") {
        return Some("list-id".into());
    }
    if has_header(msg, "List-Unsubscribe") {
        return Some("list-unsubscribe".into());
    }
    None
}

fn sender_is_daemon(msg: &Message<'_>) -> bool {
    msg.from()
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref())
        .and_then(|a| a.split('@').next())
        .map(|local| {
            let l = local.trim().to_lowercase();
            l == "mailer-daemon" || l == "postmaster" || l.starts_with("microsoftexchange")
        })
        .unwrap_or(false)
}

fn null_sender(msg: &Message<'_>, envelope_from: Option<&str>) -> bool {
    match envelope_from {
        Some(e) => e.trim().trim_matches(['<', '>']).trim().is_empty(),
        None => header_text(msg, "Return-Path")
            .is_some_and(|r| r.trim_matches(['<', '>', ' ']).is_empty()),
    }
}

fn is_report(msg: &Message<'_>) -> bool {
    msg.root_part().content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|r| r.eq_ignore_ascii_case("delivery-status"))
    })
}

fn part_bytes<'a>(p: &'a MessagePart<'_>) -> &'a [u8] {
    match &p.body {
        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
        PartType::Binary(b) | PartType::InlineBinary(b) => b,
        PartType::Message(m) => m.raw_message(),
        PartType::Multipart(_) => &[],
    }
}

fn part_is(p: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    p.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|x| s.eq_ignore_ascii_case(x)))
    })
}

/// Unfold RFC 822-style fields (`Name: value` with indented continuations).
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// `rfc822; a@b` → `a@b`; `dns; mx.example` → `mx.example`.
fn typed_value(v: &str) -> String {
    v.split_once(';')
        .map_or(v, |(_, r)| r)
        .trim()
        .trim_matches(['<', '>'])
        .to_string()
}

fn clip(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_DSN)]).into_owned()
}

/// Parse the `message/delivery-status` body per RFC 3464.
pub(crate) fn parse_delivery_status(text: &str) -> (Option<String>, Vec<DsnRecipient>) {
    let text = text.replace("\r\n", "\n");
    let mut mta = None;
    let mut recipients = Vec::new();
    for (n, group) in text.split("\n\n").enumerate() {
        let f = fields(group);
        if f.is_empty() {
            continue;
        }
        let get = |name: &str| f.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if n == 0 || get("reporting-mta").is_some() {
            if let Some(m) = get("reporting-mta") {
                mta = Some(typed_value(&m));
            }
            if get("final-recipient").is_none() {
                continue;
            }
        }
        let recipient = get("final-recipient").or_else(|| get("original-recipient"));
        if let Some(r) = recipient
            && recipients.len() < MAX_RECIPIENTS
        {
            recipients.push(DsnRecipient {
                recipient: typed_value(&r).to_lowercase(),
                action: get("action").unwrap_or_default().to_lowercase(),
                status: get("status").unwrap_or_default(),
                diagnostic: get("diagnostic-code").map(|d| typed_value(&d)),
            });
        }
    }
    (mta, recipients)
}

fn message_id_in_headers(text: &str) -> Option<String> {
    let head = text.replace("\r\n", "\n");
    let head = head.split("\n\n").next().unwrap_or("");
    fields(head)
        .into_iter()
        .find(|(k, _)| k == "message-id")
        .map(|(_, v)| v.trim().trim_matches(['<', '>']).to_string())
        .filter(|v| !v.is_empty())
}

/// Find and parse the DSN of a report message.
pub(crate) fn dsn(msg: &Message<'_>) -> Option<Dsn> {
    let mut status = None;
    let mut original = None;
    for p in msg.parts.iter().take(MAX_PARTS) {
        if status.is_none() && part_is(p, "message", &["delivery-status", "global-delivery-status"])
        {
            status = Some(parse_delivery_status(&clip(part_bytes(p))));
        } else if original.is_none() {
            if let PartType::Message(m) = &p.body {
                original = m.message_id().map(str::to_string);
            } else if part_is(p, "text", &["rfc822-headers"])
                || part_is(p, "message", &["rfc822-headers", "global-headers"])
            {
                original = message_id_in_headers(&clip(part_bytes(p)));
            }
        }
    }
    let (reporting_mta, recipients) = status?;
    Some(Dsn {
        recipients,
        original_message_id: original,
        reporting_mta,
    })
}

/// See [`super::classify`].
pub(crate) fn classify(
    msg: &Message<'_>,
    envelope_from: Option<&str>,
    ctx: &ResolveContext<'_>,
    group: bool,
) -> Classification {
    if let Some(reason) = is_loop(msg, ctx) {
        return Classification::Loop { reason };
    }
    let auto = auto_reply_reason(msg);
    let report = is_report(msg);
    if report || sender_is_daemon(msg) || auto.is_none() && null_sender(msg, envelope_from) {
        return Classification::Bounce { dsn: dsn(msg) };
    }
    if let Some(reason) = auto {
        return Classification::AutoReply { reason };
    }
    if let Some(reason) = bulk_reason(msg, group) {
        return Classification::Bulk { reason };
    }
    Classification::Normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_table() {
        let text = "Reporting-MTA: dns; mx.acme.example\nX-Postfix-Queue-ID: 1\nArrival-Date: Mon\n\nFinal-Recipient: rfc822; Nobody@Example.com\nOriginal-Recipient: rfc822;nobody@example.com\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.com\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>:\n    Recipient address rejected\n\nFinal-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.4.1\n";
        let (mta, r) = parse_delivery_status(text);
        assert_eq!(mta.as_deref(), Some("mx.acme.example"));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].recipient, "nobody@example.com");
        assert_eq!(r[0].action, "failed");
        assert_eq!(r[0].status, "5.1.1");
        assert_eq!(
            r[0].diagnostic.as_deref(),
            Some("550 5.1.1 <nobody@example.com>: Recipient address rejected")
        );
        assert_eq!(r[1].status, "4.4.1");
        assert_eq!(parse_delivery_status("").1.len(), 0);
        assert_eq!(
            message_id_in_headers("From: a\nMessage-ID:\n <x@y>\n\nbody").as_deref(),
            Some("x@y")
        );
    }
}
