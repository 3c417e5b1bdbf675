//! Bounce linking: what ingest hands the store so that a bounce lands on the
//! ticket of the outbound message it reports on (docs/sender-resolution.md, bounces).
//!
//! Owns [`link`]: from a message classified as a bounce, the candidate
//! Message-IDs of our bounced message, most trusted first — the RFC 3464
//! DSN's returned message or headers, then In-Reply-To / References, then
//! any `Message-ID:` line in a returned message, a `text/rfc822-headers`
//! part or the body text (Exchange and older MTAs quote the original headers
//! in the body, without a delivery-status part) — and whether and why
//! delivery failed (status and diagnostic, for the outbound message's
//! `delivery_detail`). The store looks the candidates up among our outbound
//! messages only, so an id of someone else's mail quoted in a bounce cannot
//! attach it anywhere.
//!
//! Anyone can send a bounce; only someone who saw our reply knows its
//! Message-ID (hashed, unguessable), so a forged bounce cannot fail a reply
//! it never saw.
//!
//! Must not: do I/O, read the clock, or panic. Nothing here (or anywhere in
//! postdesk) sends mail in answer to a bounce or an auto-reply.
//!
//! Untrusted input: the whole message. Limits: [`MAX_SCAN`] bytes per part
//! are scanned, at most [`MAX_PARTS`] parts, at most
//! [`MAX_CANDIDATES`] ids kept; the detail is one line
//! of at most [`MAX_DETAIL`] characters.

use mail_parser::{Message, MimeHeaders, PartType};

use super::parse::Parsed;
use super::resolve::{Classification, Dsn};
use crate::store::{BounceLink, InboundFacts, OutboundRef, StoreError};

/// Bytes of one part scanned for returned headers.
pub const MAX_SCAN: usize = 256 * 1024;
/// Parts walked.
pub const MAX_PARTS: usize = 256;
/// Longest `delivery_detail` written.
pub const MAX_DETAIL: usize = 500;
/// Candidate Message-IDs kept.
pub const MAX_CANDIDATES: usize = 16;

/// The link for a bounce; `None` for any other classification.
pub fn link(
    msg: Option<&Message<'_>>,
    class: &Classification,
    fields: &Parsed,
) -> Option<BounceLink> {
    let Classification::Bounce { dsn } = class else {
        return None;
    };
    let mut candidates: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        let id = plausible_id(id);
        if let Some(id) = id
            && candidates.len() < MAX_CANDIDATES
            && !candidates.contains(&id)
        {
            candidates.push(id);
        }
    };
    if let Some(id) = dsn.as_ref().and_then(|d| d.original_message_id.as_deref()) {
        push(id);
    }
    for id in fields
        .in_reply_to
        .iter()
        .chain(fields.references.iter().rev())
    {
        push(id);
    }
    if let Some(msg) = msg {
        for p in msg.parts.iter().take(MAX_PARTS) {
            match &p.body {
                PartType::Message(m) => {
                    if let Some(id) = m.message_id() {
                        push(id);
                    }
                }
                PartType::Text(t) => {
                    for id in message_ids_in_text(clip(t)) {
                        push(&id);
                    }
                }
                PartType::Html(h) => {
                    for id in message_ids_in_text(&super::resolve::html_to_text(clip(h))) {
                        push(&id);
                    }
                }
                PartType::Binary(b) | PartType::InlineBinary(b)
                    if is_headers_part(p.content_type()) =>
                {
                    let text = String::from_utf8_lossy(&b[..b.len().min(MAX_SCAN)]);
                    for id in message_ids_in_text(&text) {
                        push(&id);
                    }
                }
                _ => {}
            }
        }
    }
    for id in message_ids_in_text(clip(&fields.text)) {
        push(&id);
    }
    let (failed, detail) = match dsn {
        Some(d) if !d.recipients.is_empty() => dsn_detail(d),
        _ => {
            let delayed = fields.subject.to_lowercase().contains("delay");
            let what = if delayed { "delayed" } else { "bounced" };
            let why = diagnostic_line(&fields.text).unwrap_or_else(|| fields.subject.clone());
            (!delayed, one_line(&format!("{what}: {why}")))
        }
    };
    Some(BounceLink {
        candidates,
        failed,
        detail,
    })
}

/// Our outbound message of `channel` that `link` reports on: its first
/// candidate (most trusted first) that names one, read through `facts`.
/// Only our outbound messages are looked up, so an id of someone else's mail
/// quoted in a bounce attaches it nowhere.
pub fn reported_on(
    channel: &str,
    link: &BounceLink,
    facts: &mut dyn InboundFacts,
) -> Result<Option<OutboundRef>, StoreError> {
    for id in link.candidates.iter().take(MAX_CANDIDATES) {
        if let Some(found) = facts.outbound(channel, id)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn is_headers_part(ct: Option<&mail_parser::ContentType<'_>>) -> bool {
    ct.is_some_and(|ct| {
        ct.subtype().is_some_and(|s| {
            s.eq_ignore_ascii_case("rfc822-headers") || s.eq_ignore_ascii_case("global-headers")
        })
    })
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_SCAN {
        return s;
    }
    let mut cut = MAX_SCAN;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// A plausible Message-ID to look up: cleaned as everywhere else, then
/// bounded and required to look like `local@domain` (bounce bodies are noisy).
fn plausible_id(id: &str) -> Option<String> {
    crate::mail::clean_message_id(id).filter(|id| {
        id.len() <= 250
            && id.contains('@')
            && !id.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// `Message-ID:` fields in returned headers quoted as text: at a line's
/// start (also `>`-quoted, or folded onto the next line) or after a space
/// (HTML converted to text runs a `<pre>` block onto one line); never
/// `X-Message-ID:` and the like.
pub fn message_ids_in_text(text: &str) -> Vec<String> {
    const FIELD: &str = "message-id:";
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let lower = line.to_ascii_lowercase();
        let mut from = 0;
        while let Some(at) = lower[from..].find(FIELD).map(|i| i + from) {
            from = at + FIELD.len();
            let before = line[..at].chars().next_back();
            if before.is_some_and(|c| !(c.is_whitespace() || c == '>')) {
                continue;
            }
            let rest = &line[from..];
            let mut value = rest.trim().to_string();
            if value.is_empty()
                && let Some(next) = lines.peek()
                && next.starts_with([' ', '\t', '>'])
            {
                value = next.trim_start_matches(['>', ' ', '\t']).trim().to_string();
            }
            let id = match (value.find('<'), value.find('>')) {
                (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
                _ => value.split_whitespace().next().unwrap_or("").to_string(),
            };
            if let Some(id) = plausible_id(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// `failed` when any recipient failed (or none is listed with an action);
/// the detail names the failed (else all) recipients with status and
/// diagnostic.
fn dsn_detail(d: &Dsn) -> (bool, String) {
    let failed: Vec<_> = d
        .recipients
        .iter()
        .filter(|r| r.action.starts_with("failed") || r.action.is_empty())
        .collect();
    let (is_failed, shown) = if failed.is_empty() {
        (false, d.recipients.iter().collect::<Vec<_>>())
    } else {
        (true, failed)
    };
    let what = if is_failed {
        "bounced".to_string()
    } else {
        shown
            .first()
            .map(|r| r.action.clone())
            .unwrap_or_else(|| "report".into())
    };
    let parts: Vec<String> = shown
        .iter()
        .map(|r| {
            let mut s = format!("{} {}", r.recipient, r.status);
            if let Some(diag) = &r.diagnostic {
                s.push_str(": ");
                s.push_str(diag);
            }
            s
        })
        .collect();
    let mut text = format!("{what}: {}", parts.join("; "));
    if let Some(mta) = &d.reporting_mta {
        text.push_str(&format!(" (reported by {mta})"));
    }
    (is_failed, one_line(&text))
}

/// The first line of a human-readable bounce that carries an enhanced status
/// code (`5.1.1`), before any quoted headers.
pub fn diagnostic_line(text: &str) -> Option<String> {
    for line in clip(text).lines() {
        let l = line.trim();
        if l.as_bytes()
            .get(..9)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"received:"))
        {
            break;
        }
        let has_code = l
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(is_enhanced_code);
        if has_code {
            return Some(l.trim_matches(['#', ' ']).to_string());
        }
    }
    None
}

fn is_enhanced_code(tok: &str) -> bool {
    let parts: Vec<&str> = tok.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()))
}

/// Control characters and runs of whitespace collapsed; bounded.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::resolve::{self, ResolveContext};
    use std::collections::HashSet;

    const OUR_ID: &str = "pd.1.0123456789abcdef01234567@desk.acme.example";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/bounces/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .replace("{{MESSAGE_ID}}", OUR_ID)
            .into_bytes()
    }

    fn link_of(raw: &[u8], envelope_from: Option<&str>) -> (Classification, Option<BounceLink>) {
        let msg = crate::ingest::parse::parse(raw).expect("parses");
        let team = HashSet::new();
        let ctx = ResolveContext {
            team_addresses: &team,
            forwarders: &[],
            original_sender_of_forwards: true,
            loop_key: None,
            auth: &crate::ingest::auth::Authentication::none("test"),
        };
        let class = resolve::classify(&msg, envelope_from, &ctx);
        let fields = crate::ingest::parse::fields(&msg);
        let l = link(Some(&msg), &class, &fields);
        (class, l)
    }

    /// What a fixture's `.expected.json` holds.
    fn actual(raw: &[u8]) -> serde_json::Value {
        let (class, l) = link_of(raw, Some(""));
        let kind = serde_json::to_value(&class).unwrap_or_default()["kind"].clone();
        match l {
            Some(l) => serde_json::json!({
                "kind": kind,
                "candidates": l.candidates,
                "failed": l.failed,
                "detail": l.detail,
            }),
            None => serde_json::json!({ "kind": kind }),
        }
    }

    /// Golden corpus: each `fixtures/bounces/NNN-*.eml` (with `{{MESSAGE_ID}}`
    /// standing for our reply's id) against `NNN-*.expected.json`, run with
    /// CRLF and LF line ends; a mismatch writes `NNN-*.actual.json` beside it.
    #[test]
    fn fixtures_golden() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounces");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixtures/bounces")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        assert!(!names.is_empty(), "fixtures/bounces is empty");
        let mut failures = Vec::new();
        for name in &names {
            let raw = fixture(name);
            let lf = String::from_utf8_lossy(&raw)
                .replace("\r\n", "\n")
                .into_bytes();
            let got = actual(&raw);
            assert_eq!(got, actual(&lf), "{name}: CRLF and LF differ");
            let stem = name.trim_end_matches(".eml");
            let want_path = dir.join(format!("{stem}.expected.json"));
            let want: serde_json::Value = std::fs::read_to_string(&want_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let actual_path = dir.join(format!("{stem}.actual.json"));
            if got != want {
                let text = serde_json::to_string_pretty(&got).unwrap_or_default();
                let _ = std::fs::write(&actual_path, text + "\n");
                failures.push(name.clone());
            } else {
                let _ = std::fs::remove_file(&actual_path);
            }
            if let Some(d) = got["detail"].as_str() {
                assert!(!d.contains('\n') && d.len() <= MAX_DETAIL, "{name}");
            }
        }
        assert!(
            failures.is_empty(),
            "mismatches (see .actual.json): {failures:?}"
        );
    }

    #[test]
    fn delayed_dsn_does_not_fail() {
        let raw = String::from_utf8(fixture("001-postfix-dsn.eml"))
            .expect("utf8")
            .replace("Action: failed", "Action: delayed")
            .replace("Status: 5.1.1", "Status: 4.4.1");
        let (_, l) = link_of(raw.as_bytes(), Some(""));
        let l = l.expect("link");
        assert!(!l.failed);
        assert!(
            l.detail
                .starts_with("delayed: carol@customer.example 4.4.1"),
            "{}",
            l.detail
        );
    }

    #[test]
    fn not_a_bounce_has_no_link() {
        let raw = b"From: carol@customer.example\r\nSubject: hi\r\nMessage-ID: <c@x>\r\n\r\nMessage-ID: <pd.1@desk.acme.example>\r\n";
        let (class, l) = link_of(raw, Some("carol@customer.example"));
        assert_eq!(class, Classification::Normal);
        assert_eq!(l, None);
    }

    #[test]
    fn message_id_lines_table() {
        let cases: &[(&str, &[&str])] = &[
            ("Message-ID: <a@b>", &["a@b"]),
            ("message-id:<a@b>", &["a@b"]),
            ("> Message-Id: <a@b>", &["a@b"]),
            ("Message-ID:\n <a@b>\nSubject: x", &["a@b"]),
            ("Message-ID: a@b", &["a@b"]),
            ("Message-ID: <not an id>", &[]),
            ("Message-ID:", &[]),
            ("X-Message-ID: <a@b>", &[]),
            ("To: c@d Message-ID: <a@b> Date: x", &["a@b"]),
            ("To: c@d X-Message-Id: <a@b>", &[]),
            (
                "text\nMessage-ID: <a@b>\nMessage-ID: <c@d>",
                &["a@b", "c@d"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(message_ids_in_text(text), *want, "{text:?}");
        }
    }

    #[test]
    fn diagnostic_lines_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##",
                Some("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"),
            ),
            (
                "Remote Server returned '554 5.4.14 Hop count exceeded'",
                Some("Remote Server returned '554 5.4.14 Hop count exceeded'"),
            ),
            ("server id 15.1.2507.39 at 192.0.2.10", None),
            ("Received: by x\n550 5.1.1 quoted", None),
            ("received:\n550 5.1.1 quoted", None),
            // A multi-byte character across byte 9 (this used to panic).
            ("Mailbox ä full", None),
            ("Mailbox ä full 552 5.2.2", Some("Mailbox ä full 552 5.2.2")),
            (
                "Empfängerpostfach voll 5.2.2",
                Some("Empfängerpostfach voll 5.2.2"),
            ),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(diagnostic_line(text).as_deref(), *want, "{text:?}");
        }
    }

    /// A human-readable bounce with a non-ASCII line used to panic in
    /// [`diagnostic_line`] (byte slice inside `ä`): the bounce was parked and
    /// the reply never marked failed.
    #[test]
    fn non_ascii_bounce_fails_the_reply() {
        let raw = format!(
            "From: MAILER-DAEMON@mx.customer.example\r\nSubject: Undeliverable\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMailbox \u{e4} full\r\n552 5.2.2 Postfach voll\r\n\r\nMessage-ID: <{OUR_ID}>\r\n"
        );
        let (class, l) = link_of(raw.as_bytes(), Some(""));
        assert!(matches!(class, Classification::Bounce { .. }), "{class:?}");
        let l = l.expect("link");
        assert!(l.failed);
        assert_eq!(l.candidates, vec![OUR_ID.to_string()]);
        assert_eq!(l.detail, "bounced: 552 5.2.2 Postfach voll");
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [&b"From: MAILER-DAEMON@x\r\n\r\nMessage-ID:"[..], b"From: postmaster@x\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n\xff\xfe\r\n--b--"] {
            let (_, l) = link_of(raw, Some(""));
            assert!(l.is_some());
        }
    }
}
