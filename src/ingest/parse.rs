//! Parse stage: raw bytes → the fields the product needs.
//!
//! Pure; never fails: malformed mail still yields a [`Parsed`] with whatever
//! could be read (the raw bytes are kept in the spool regardless).

use mail_parser::{Message, MessageParser};

use crate::mail::{clean_message_id, email_of, without_nul};

/// Fields taken from one message's headers and bodies.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub subject: String,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    /// Cc addresses, normalised.
    pub cc: Vec<String>,
    pub date: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

/// Largest text body kept in the ticket view (the raw message keeps all).
const MAX_TEXT: usize = 1 << 20;

/// Parse `raw` with mail-parser. `None` only when the input has no headers at all.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|a| {
        a.iter()
            .filter_map(|a| a.address().and_then(email_of))
            .collect()
    })
    .unwrap_or_default()
}

/// Extract the fields of `msg`.
pub fn fields(msg: &Message<'_>) -> Parsed {
    let from = msg.from().and_then(|a| a.first());
    let in_reply_to = msg
        .in_reply_to()
        .as_text_list()
        .and_then(|l| l.last().and_then(|s| clean_message_id(s)))
        .or_else(|| msg.in_reply_to().as_text().and_then(clean_message_id));
    let mut references: Vec<String> = msg
        .references()
        .as_text_list()
        .map(|l| l.iter().filter_map(|s| clean_message_id(s)).collect())
        .unwrap_or_default();
    if references.is_empty()
        && let Some(r) = msg.references().as_text().and_then(clean_message_id)
    {
        references.push(r);
    }
    // Only a real text/html part: mail-parser would otherwise render the text
    // part as HTML, which costs time and stores nothing new.
    let html = msg
        .html_part(0)
        .filter(|p| p.is_text_html())
        .and_then(|_| msg.body_html(0))
        .map(|h| without_nul(truncate(h.into_owned(), MAX_TEXT)));
    let text = msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    Parsed {
        message_id: msg.message_id().and_then(clean_message_id),
        in_reply_to,
        references,
        subject: without_nul(
            msg.subject()
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        ),
        from_email: from.and_then(|a| a.address()).and_then(email_of),
        from_name: from
            .and_then(|a| a.name())
            .map(|n| without_nul(n.trim().to_string()))
            .filter(|n| !n.is_empty()),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        date: msg.date().map(|d| d.to_rfc3339()),
        text: without_nul(truncate(text, MAX_TEXT)),
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_thread_headers() {
        let raw = b"From: \"Carol C\" <Carol@Customer.example>\r\nTo: support@acme.example\r\nSubject: Re: Help [#12]\r\nMessage-ID: <m2@customer.example>\r\nIn-Reply-To: <m1@desk.example>\r\nReferences: <m0@customer.example> <m1@desk.example>\r\n\r\nBody\r\n";
        let msg = parse(raw).expect("parses");
        let p = fields(&msg);
        assert_eq!(p.message_id.as_deref(), Some("m2@customer.example"));
        assert_eq!(p.in_reply_to.as_deref(), Some("m1@desk.example"));
        assert_eq!(p.references, vec!["m0@customer.example", "m1@desk.example"]);
        assert_eq!(p.from_email.as_deref(), Some("carol@customer.example"));
        assert_eq!(p.from_name.as_deref(), Some("Carol C"));
        assert_eq!(p.subject, "Re: Help [#12]");
        assert_eq!(p.text.trim(), "Body");
        assert_eq!(p.html, None, "a text-only message has no HTML body");
    }

    #[test]
    fn keeps_a_real_html_part() {
        let raw = b"From: a@x.example\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>rich</p>\r\n--b--\r\n";
        let msg = parse(raw).expect("parses");
        let p = fields(&msg);
        assert_eq!(p.text.trim(), "plain");
        assert!(
            p.html.as_deref().is_some_and(|h| h.contains("<p>rich</p>")),
            "{:?}",
            p.html
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [
            &b""[..],
            b"\r\n\r\n",
            b"From:\r\n\r\n",
            b"\xff\xfe\x00garbage",
            b"Subject: =?utf-8?B?####?=\r\n",
        ] {
            if let Some(m) = parse(raw) {
                let _ = fields(&m);
            }
        }
    }
}
