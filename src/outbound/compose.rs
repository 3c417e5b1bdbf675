//! Compose a reply: pure, no I/O, no clock (the caller passes the date and
//! the Message-ID's unique part).
//!
//! Owns the exact header set of our replies: From per the channel's
//! `sender_name`, To = the contact, `Re: <subject> [#N]`, In-Reply-To and
//! References from the thread, our Message-ID, `X-Postdesk-Loop`, and a
//! `multipart/alternative` body (agent's text + rendered signature, agent's
//! HTML + signature HTML), plus attachments. Never sets `Auto-Submitted`:
//! these are human replies.
//!
//! UNTRUSTED INPUT: the ticket subject (it came from a customer's mail), the
//! agent's text, HTML, optional subject and attachment names (API), and
//! names from the config. Header values go through [`clean_header_value`]
//! (control characters, CR/LF included, become spaces; overlong values are cut
//! at [`MAX_HEADER_VALUE`] characters) or are refused with [`ComposeError`]
//! when an agent typed them (subject override, attachment file names).
//! mail-builder then RFC 2047/2231-encodes whatever is not plain ASCII.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

use super::signature::Signature;

/// Longest header value we write (characters), well under RFC 5322's 998-byte line.
pub const MAX_HEADER_VALUE: usize = 300;
/// Longest attachment file name (bytes).
pub const MAX_FILENAME: usize = 255;
/// Most message ids in References (the first plus the most recent).
pub const MAX_REFERENCES: usize = 20;
/// The header every reply carries, `host; id=<signed reply id>`, so an echo
/// of it is recognised as our own even where the Message-ID was rewritten
/// (ingest drops it as a loop when the id verifies: `mail::tags`).
pub const LOOP_HEADER: &str = "X-Postdesk-Loop";

/// Why a reply cannot be composed: each is the agent's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("{field} contains a line break or control character")]
    ControlCharacter { field: &'static str },
    #[error("{field} is too long (at most {max})")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("attachment file name {0:?} may not contain a path separator")]
    PathInFilename(String),
    #[error("reply has neither text nor HTML")]
    NoBody,
    #[error("contact address {0:?} is not a valid address")]
    BadAddress(String),
}

/// One attachment as the agent supplied it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// The media type of an attachment given without one (the CLI's files, an
/// API attachment without `content_type`), by its file name's extension:
/// the binary types support mail carries most, else
/// `application/octet-stream`. Recipients' mail clients show a PDF or an
/// image inline only when it is labelled as one. Not `text/*` (mail-builder
/// would send it without a charset and with its line endings rewritten) nor
/// `message/rfc822` (which may not be base64-encoded): those stay
/// octet-stream, their bytes exact.
pub fn content_type_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        _ => "application/octet-stream",
    }
}

/// Everything a reply is built from.
#[derive(Debug, Clone)]
pub struct ReplyInput<'a> {
    /// Channel address: From address and envelope sender.
    pub from_email: &'a str,
    /// From display name (see `Config::sender_display_name`).
    pub from_name: Option<&'a str>,
    pub to_email: &'a str,
    pub to_name: Option<&'a str>,
    /// `Cc` recipients (address, name).
    pub cc: &'a [(String, Option<String>)],
    pub ticket: i64,
    /// The ticket's secret: the subject tag is `[#N-secret]`.
    pub ticket_secret: &'a str,
    /// The ticket's subject (customer input).
    pub ticket_subject: &'a str,
    /// The agent's own subject, replacing `Re: <ticket subject>`.
    pub subject_override: Option<&'a str>,
    /// Message ids of the thread, oldest first (without brackets).
    pub thread: &'a [String],
    /// Full Message-ID to use (without brackets).
    pub message_id: &'a str,
    /// Unix seconds for the Date header.
    pub date: i64,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub signature: &'a Signature,
    pub attachments: &'a [Attachment],
    /// Value of the loop header (our host name and the signed reply id).
    pub loop_value: &'a str,
    /// The quoted history below the agent's text, its inline images sent
    /// along (`multipart/related`). Default none.
    pub quote: Option<&'a super::quote::Quote>,
}

/// A composed reply.
#[derive(Debug, Clone)]
pub struct Composed {
    pub raw: Vec<u8>,
    pub subject: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Text part as sent (agent's text + signature text).
    pub text: String,
    /// HTML part as sent, if any.
    pub html: Option<String>,
}

/// Replace control characters (CR, LF, TAB, NUL…) with spaces, collapse runs
/// of whitespace, trim, and cut at `max` characters.
pub fn clean_header_value(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut space = false;
    let mut n = 0;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if n >= max {
            break;
        }
        if space {
            out.push(' ');
            n += 1;
            space = false;
            if n >= max {
                break;
            }
        }
        out.push(c);
        n += 1;
    }
    out
}

/// Check a value an agent typed for a header: refused, not repaired.
pub fn check_agent_header(field: &'static str, s: &str, max: usize) -> Result<(), ComposeError> {
    use crate::mail::LineError;
    crate::mail::check_typed_line(s, max).map_err(|e| match e {
        LineError::ControlCharacter => ComposeError::ControlCharacter { field },
        LineError::TooLong => ComposeError::TooLong { field, max },
        LineError::Empty => ComposeError::Empty { field },
    })
}

/// Check an attachment file name.
pub fn check_filename(name: &str) -> Result<(), ComposeError> {
    check_agent_header("attachment file name", name, MAX_FILENAME)?;
    if name.len() > MAX_FILENAME {
        return Err(ComposeError::TooLong {
            field: "attachment file name",
            max: MAX_FILENAME,
        });
    }
    if name.contains(['/', '\\']) {
        return Err(ComposeError::PathInFilename(name.to_string()));
    }
    Ok(())
}

/// `Re: <subject> [#N-secret]`, without doubling `Re:` or the tag (an old
/// `[#N]` of the same ticket is dropped too).
pub fn reply_subject(ticket_subject: &str, ticket: i64, secret: &str) -> String {
    let token = crate::mail::subject::ticket_tag(ticket, secret);
    let base = clean_header_value(ticket_subject, MAX_HEADER_VALUE);
    let base = crate::mail::subject::strip_ticket_tags(&base, ticket);
    let base = base.trim();
    let stripped = crate::mail::subject::strip_subject_prefixes(base);
    let stripped = stripped.trim();
    if stripped.is_empty() {
        format!("Re: {token}")
    } else {
        format!("Re: {stripped} {token}")
    }
}

/// In-Reply-To and References for a reply to `thread` (oldest first):
/// the last id, and the first plus the most recent ones (RFC 5322 §3.6.4
/// suggests keeping the first).
pub fn thread_headers(thread: &[String]) -> (Option<String>, Vec<String>) {
    let ids: Vec<&String> = thread.iter().filter(|id| valid_msg_id(id)).collect();
    let in_reply_to = ids.last().map(|s| s.to_string());
    let refs = if ids.len() <= MAX_REFERENCES {
        ids.iter().map(|s| s.to_string()).collect()
    } else {
        let mut v = vec![ids[0].to_string()];
        v.extend(
            ids[ids.len() - (MAX_REFERENCES - 1)..]
                .iter()
                .map(|s| s.to_string()),
        );
        v
    };
    (in_reply_to, refs)
}

/// A message id we are willing to repeat in a header: printable ASCII, no
/// spaces or brackets, bounded.
fn valid_msg_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

fn valid_address(a: &str) -> bool {
    a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'(' | b')'))
}

/// Check what an agent typed beside the text: a subject replacing the
/// ticket's, and each attachment's file name and media type.
pub fn check_parts(subject: Option<&str>, attachments: &[Attachment]) -> Result<(), ComposeError> {
    if let Some(s) = subject {
        check_agent_header("subject", s, MAX_HEADER_VALUE)?;
    }
    for a in attachments {
        check_filename(&a.filename)?;
        check_agent_header("attachment content type", &a.content_type, 100)?;
    }
    Ok(())
}

/// Build the reply.
pub fn compose(input: &ReplyInput<'_>) -> Result<Composed, ComposeError> {
    check_parts(input.subject_override, input.attachments)?;
    let subject = match input.subject_override {
        Some(s) => {
            let token = crate::mail::subject::ticket_tag(input.ticket, input.ticket_secret);
            let base = crate::mail::subject::strip_ticket_tags(s, input.ticket);
            format!("{} {token}", base.trim())
        }
        None => reply_subject(input.ticket_subject, input.ticket, input.ticket_secret),
    };
    if !valid_address(input.to_email) {
        return Err(ComposeError::BadAddress(input.to_email.to_string()));
    }
    if !valid_address(input.from_email) {
        return Err(ComposeError::BadAddress(input.from_email.to_string()));
    }
    if let Some((bad, _)) = input.cc.iter().find(|(a, _)| !valid_address(a)) {
        return Err(ComposeError::BadAddress(bad.clone()));
    }
    let text_in = input.text.map(str::trim_end).filter(|t| !t.is_empty());
    let html_in = input.html.map(str::trim).filter(|t| !t.is_empty());
    if text_in.is_none() && html_in.is_none() {
        return Err(ComposeError::NoBody);
    }

    // The text part: the agent's text (or a rendering of their HTML), then the signature.
    let mut text = match (text_in, html_in) {
        (Some(t), _) => t.to_string(),
        (None, Some(h)) => crate::mail::html::html_to_text(h).trim_end().to_string(),
        (None, None) => String::new(),
    };
    if !input.signature.text.is_empty() {
        text.push_str("\n\n-- \n");
        text.push_str(&input.signature.text);
    }
    text.push('\n');
    if let Some(q) = input.quote {
        text.push('\n');
        text.push_str(&q.as_text());
    }
    // The HTML part: the agent's HTML (or their text, escaped), then the signature.
    let body_html = match (html_in, text_in) {
        (Some(h), _) => h.to_string(),
        (None, Some(t)) => text_to_html(t),
        (None, None) => String::new(),
    };
    let html = if input.signature.html.is_empty() {
        body_html
    } else {
        format!(
            "{body_html}\n<div class=\"postdesk-signature\">{}</div>",
            input.signature.html
        )
    };
    let html = match input.quote {
        Some(q) => format!("{html}\n{}", q.as_html()),
        None => html,
    };
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{html}\n</body></html>\n"
    );

    let (in_reply_to, references) = thread_headers(input.thread);
    let from_name = input
        .from_name
        .map(|n| clean_header_value(n, MAX_HEADER_VALUE))
        .filter(|n| !n.is_empty());
    let to_name = input
        .to_name
        .map(|n| clean_header_value(n, MAX_HEADER_VALUE))
        .filter(|n| !n.is_empty());

    let mut b = MessageBuilder::new()
        .from(Address::new_address(
            from_name.clone(),
            input.from_email.to_string(),
        ))
        .to(Address::new_address(to_name, input.to_email.to_string()))
        .subject(Text::new(subject.clone()))
        .date(input.date)
        .message_id(MessageId::new(input.message_id.to_string()))
        .header(
            LOOP_HEADER,
            // Raw: folded at spaces only, never encoded, so the id stays
            // whole (host names and ids are plain ASCII).
            Raw::new(clean_header_value(input.loop_value, 200)),
        )
        .body(body_parts(&text, &html, input));
    if !input.cc.is_empty() {
        let cc = input
            .cc
            .iter()
            .map(|(a, n)| {
                let n = n
                    .as_deref()
                    .map(|n| clean_header_value(n, MAX_HEADER_VALUE))
                    .filter(|n| !n.is_empty());
                Address::new_address(n, a.clone())
            })
            .collect();
        b = b.cc(Address::new_list(cc));
    }
    if let Some(id) = &in_reply_to {
        b = b.in_reply_to(MessageId::new(id.clone()));
    }
    if !references.is_empty() {
        b = b.references(MessageId::new_list(references.iter().cloned()));
    }
    let raw = b.write_to_vec().map_err(|_| ComposeError::NoBody)?;
    Ok(Composed {
        raw,
        subject,
        in_reply_to,
        references,
        text,
        html: Some(html),
    })
}

/// The body: text and HTML as `multipart/alternative` — the HTML in a
/// `multipart/related` with the quote's inline images when it has any —
/// then the attachments (`multipart/mixed`).
fn body_parts<'x>(text: &str, html: &str, input: &ReplyInput<'_>) -> MimePart<'x> {
    let text = MimePart::new("text/plain", text.to_string());
    let mut html = MimePart::new("text/html", html.to_string());
    let images = input.quote.map_or(&[][..], |q| q.images.as_slice());
    if !images.is_empty() {
        let mut related = vec![html];
        related.extend(images.iter().map(|i| {
            MimePart::new(i.content_type.clone(), i.data.clone())
                .inline()
                .cid(i.cid.clone())
        }));
        html = MimePart::new("multipart/related", related);
    }
    let alternative = MimePart::new("multipart/alternative", vec![text, html]);
    if input.attachments.is_empty() {
        return alternative;
    }
    let mut mixed = vec![alternative];
    mixed.extend(input.attachments.iter().map(|a| {
        MimePart::new(a.content_type.clone(), a.data.clone()).attachment(a.filename.clone())
    }));
    MimePart::new("multipart/mixed", mixed)
}

/// Plain text as HTML: escaped, line breaks kept.
pub fn text_to_html(text: &str) -> String {
    let escaped = super::signature::escape_html(text);
    format!(
        "<div style=\"white-space: pre-wrap\">{}</div>",
        escaped.replace("\r\n", "\n").replace('\n', "<br>\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI's files and API attachments without a type are labelled by
    /// extension (before: all application/octet-stream, so a PDF or an
    /// image was not shown inline).
    #[test]
    fn attachments_are_typed_by_their_extension() {
        for (name, want) in [
            ("Invoice 4471.PDF", "application/pdf"),
            ("screenshot.png", "image/png"),
            ("photo.JPEG", "image/jpeg"),
            (
                "report.xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            // Bytes kept exact: no text/* or message/rfc822.
            ("original.eml", "application/octet-stream"),
            ("notes.txt", "application/octet-stream"),
            ("table.csv", "application/octet-stream"),
            ("archive.tar.gz", "application/octet-stream"),
            ("README", "application/octet-stream"),
            ("", "application/octet-stream"),
        ] {
            assert_eq!(content_type_for(name), want, "{name:?}");
        }
    }
    use mail_parser::{HeaderName, MessageParser, MimeHeaders};

    fn input<'a>(sig: &'a Signature, thread: &'a [String]) -> ReplyInput<'a> {
        ReplyInput {
            from_email: "support@acme.example",
            from_name: Some("Ann Agent from Acme"),
            to_email: "carol@customer.example",
            to_name: Some("Carol"),
            cc: &[],
            ticket: 7,
            ticket_secret: "",
            ticket_subject: "Printer on fire",
            subject_override: None,
            thread,
            message_id: "pd.7.abc@desk.acme.example",
            date: 1_790_000_000,
            text: Some("Hello Carol,\nwe are on it."),
            html: None,
            signature: sig,
            attachments: &[],
            loop_value: "desk.acme.example",
            quote: None,
        }
    }

    /// With a quote that has inline images: text and HTML alternatives, the
    /// HTML in a multipart/related with the images under their Content-IDs,
    /// attachments after; the quote in both parts.
    #[test]
    fn a_quote_with_images_is_sent_as_related_parts() {
        use crate::outbound::quote::{InlineImage, Quote};
        let sig = Signature::default();
        let quote = Quote {
            attribution: "Carol <carol@customer.example> wrote:".into(),
            text: "It smokes.\nSee the photo.".into(),
            html: Some("<p>It smokes.</p><img src=\"cid:photo@c\">".into()),
            images: vec![InlineImage {
                cid: "photo@c".into(),
                content_type: "image/jpeg".into(),
                data: b"\xff\xd8 jpeg".to_vec(),
            }],
        };
        let files = [Attachment {
            filename: "manual.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF".to_vec(),
        }];
        let thread = [];
        let mut i = input(&sig, &thread);
        i.quote = Some(&quote);
        i.attachments = &files;
        let c = compose(&i).expect("composed");
        let m = MessageParser::default().parse(&c.raw).expect("parses");
        let types: Vec<String> = m
            .parts
            .iter()
            .map(|p| {
                let ct = p.content_type().expect("type");
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            types,
            [
                "multipart/mixed",
                "multipart/alternative",
                "text/plain",
                "multipart/related",
                "text/html",
                "image/jpeg",
                "application/pdf"
            ]
        );
        let image = m
            .parts
            .iter()
            .find(|p| p.content_id() == Some("photo@c"))
            .expect("cid part");
        assert_eq!(image.contents(), b"\xff\xd8 jpeg");
        assert!(
            c.text.ends_with(
                "Carol <carol@customer.example> wrote:\n> It smokes.\n> See the photo.\n"
            ),
            "{}",
            c.text
        );
        let html = c.html.expect("html");
        assert!(html.contains("<blockquote type=\"cite\""), "{html}");
        assert!(html.contains("<img src=\"cid:photo@c\">"), "{html}");
        // Without images nor attachments: the plain alternative, as before.
        let mut plain = input(&sig, &thread);
        let no_images = Quote {
            images: vec![],
            ..quote.clone()
        };
        plain.quote = Some(&no_images);
        let c = compose(&plain).expect("composed");
        let m = MessageParser::default().parse(&c.raw).expect("parses");
        assert_eq!(m.parts.len(), 3, "alternative, text, html");
    }

    /// Header names of the top-level message, lower-cased.
    fn header_names(raw: &[u8]) -> Vec<String> {
        let m = MessageParser::default().parse(raw).expect("parses");
        m.headers()
            .iter()
            .map(|h| h.name().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn reply_headers_and_parts() {
        let sig = Signature {
            html: "<p>Ann Agent<br>Acme</p>".into(),
            text: "Ann Agent\nAcme".into(),
        };
        let thread = vec!["first@cust".to_string(), "second@cust".to_string()];
        let c = compose(&input(&sig, &thread)).expect("compose");
        let m = MessageParser::default().parse(&c.raw).expect("parses");
        assert_eq!(m.subject(), Some("Re: Printer on fire [#7]"));
        assert_eq!(m.message_id(), Some("pd.7.abc@desk.acme.example"));
        assert_eq!(m.in_reply_to().as_text(), Some("second@cust"));
        let refs: Vec<_> = m.references().as_text_list().unwrap_or_default().to_vec();
        assert_eq!(refs, vec!["first@cust", "second@cust"]);
        let from = m.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.name(), Some("Ann Agent from Acme"));
        assert_eq!(from.address(), Some("support@acme.example"));
        assert!(
            m.header(HeaderName::Other("X-Postdesk-Loop".into()))
                .is_some()
        );
        let names = header_names(&c.raw);
        assert!(!names.iter().any(|n| n == "auto-submitted"), "{names:?}");
        let text = m.body_text(0).expect("text part").replace("\r\n", "\n");
        assert!(
            text.contains("we are on it.") && text.contains("-- \nAnn Agent\nAcme"),
            "{text}"
        );
        let html = m.body_html(0).expect("html part");
        assert!(html.contains("<p>Ann Agent<br>Acme</p>"), "{html}");
        let ct = m.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("alternative"));
    }

    #[test]
    fn subjects_table() {
        let cases = [
            ("Printer on fire", "Re: Printer on fire [#7]"),
            ("Re: Printer on fire", "Re: Printer on fire [#7]"),
            ("RE: Fwd: Printer [#7]", "Re: Printer [#7]"),
            ("", "Re: [#7]"),
            (
                "Line\r\nBcc: evil@x.example",
                "Re: Line Bcc: evil@x.example [#7]",
            ),
        ];
        for (subject, want) in cases {
            assert_eq!(reply_subject(subject, 7, ""), want, "{subject:?}");
        }
        let long = "x".repeat(5000);
        assert!(reply_subject(&long, 7, "").chars().count() <= MAX_HEADER_VALUE + 12);
    }

    /// Each injection attempt: no header beyond the expected set appears, and
    /// the value survives only as text.
    #[test]
    fn header_injection_is_encoded_or_refused() {
        let sig = Signature::default();
        let thread: Vec<String> = vec!["a@b\r\nBcc: evil@x.example".into(), "ok@cust".into()];
        // Ticket subject (customer input) and agent name (config): encoded.
        let mut i = input(&sig, &thread);
        i.ticket_subject = "Hi\r\nBcc: evil@x.example\r\n\r\nbody";
        i.from_name = Some("Ann\r\nBcc: evil@x.example");
        i.to_name = Some("Carol\nX-Evil: 1");
        let c = compose(&i).expect("compose");
        let names = header_names(&c.raw);
        assert!(
            !names.iter().any(|n| n == "bcc" || n == "x-evil"),
            "{names:?}"
        );
        let m = MessageParser::default().parse(&c.raw).expect("parses");
        assert_eq!(m.in_reply_to().as_text(), Some("ok@cust"));
        let from = m.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.name(), Some("Ann Bcc: evil@x.example"));
        // Overlong agent name: cut.
        let long = "N".repeat(2000);
        i.from_name = Some(&long);
        let c = compose(&i).expect("compose");
        assert!(c.raw.split(|b| *b == b'\n').all(|l| l.len() <= 998));

        // Agent-typed values: refused.
        let refused: [(&str, Option<&str>, &str); 5] = [
            ("subject", Some("Hi\r\nBcc: evil@x.example"), "ok.txt"),
            ("subject", Some(&"s".repeat(MAX_HEADER_VALUE + 1)), "ok.txt"),
            ("filename", None, "a\r\nContent-Type: text/html.txt"),
            ("filename", None, "../etc/passwd"),
            ("filename", None, "\"; x=\n.txt"),
        ];
        for (what, subject, filename) in refused {
            let att = [Attachment {
                filename: filename.into(),
                content_type: "text/plain".into(),
                data: b"x".to_vec(),
            }];
            let mut i = input(&sig, &[]);
            i.subject_override = subject;
            i.attachments = &att;
            assert!(
                compose(&i).is_err(),
                "{what}: {subject:?} {filename:?} accepted"
            );
        }
        let long_name = format!("{}.txt", "f".repeat(MAX_FILENAME));
        assert!(check_filename(&long_name).is_err());
    }

    #[test]
    fn non_ascii_values_are_encoded() {
        let sig = Signature::default();
        let att = [Attachment {
            filename: "Größe résumé.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF".to_vec(),
        }];
        let mut i = input(&sig, &[]);
        i.from_name = Some("Zoë Ågent from Ācme");
        i.ticket_subject = "Überweisung fehlgeschlagen";
        i.attachments = &att;
        let c = compose(&i).expect("compose");
        assert!(c.raw.is_ascii(), "raw mail must be 7-bit");
        let m = MessageParser::default().parse(&c.raw).expect("parses");
        assert_eq!(m.subject(), Some("Re: Überweisung fehlgeschlagen [#7]"));
        let from = m.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.name(), Some("Zoë Ågent from Ācme"));
        let a = m.attachment(0).expect("attachment");
        assert_eq!(a.attachment_name(), Some("Größe résumé.pdf"));
        assert_eq!(a.contents(), b"%PDF");
    }

    #[test]
    fn html_only_reply_gets_a_text_part() {
        let sig = Signature::default();
        let mut i = input(&sig, &[]);
        i.text = None;
        i.html = Some("<p>Fixed &amp; done</p>");
        let c = compose(&i).expect("compose");
        assert!(c.text.contains("Fixed & done"), "{}", c.text);
        i.html = Some("  ");
        assert_eq!(compose(&i).err(), Some(ComposeError::NoBody));
    }
}
