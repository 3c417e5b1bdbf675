//! Inline images (`cid:`) end to end: a customer's HTML mail with an image
//! in a `multipart/related` arrives over SMTP; the stored conversation keeps
//! the HTML's `cid:` reference and the API serves the image by it; a reply
//! with `quote_history` reaches a real Postfix relay with the quoted HTML,
//! the image as a related part under the same Content-ID, byte for byte,
//! and the quote in the text part; a reply without it carries neither.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::postfix::Postfix;
use common::smtp::send_file;
use common::{Daemon, messages, wait_for};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"
[outbound]
retry_base_secs = 1
retry_max_secs = 2

[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
"#;

/// Bytes no text transformation leaves alone (NUL, CR, LF, 0xff).
const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\x00\r\n.\r\nend of image";

fn customer_mail() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(IMAGE);
    format!(
        "From: Carol <carol@customer.example>\r\nTo: support@acme.example\r\nSubject: Broken screen\r\nMessage-ID: <s1@customer.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMy screen looks like this:\r\n[image]\r\n--a\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>My screen looks like this:</p><img src=\"cid:screen.png@customer.example\" alt=\"screen\"></body></html>\r\n--r\r\nContent-Type: image/png; name=\"screen.png\"\r\nContent-ID: <screen.png@customer.example>\r\nContent-Disposition: inline; filename=\"screen.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--r--\r\n--a--\r\n"
    )
}

fn reply(d: &Daemon, token: &str, ticket: i64, body: Value) {
    let (status, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{ticket}/replies"),
        Some(token),
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{v}");
}

fn content_types(raw: &[u8]) -> Vec<String> {
    let m = MessageParser::default().parse(raw).expect("parses");
    m.parts
        .iter()
        .map(|p| {
            let ct = p.content_type().expect("type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        })
        .collect()
}

#[test]
fn inline_images_survive_store_and_quoted_reply() {
    let pf = Postfix::start_maildir(None);
    let relay = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\npool_size = 2\ntimeout_secs = 10",
        pf.port
    );
    let d = Daemon::start_relay("", &relay, CONFIG);
    let (code, text) = send_file(
        d.smtp,
        "carol@customer.example",
        "support@acme.example",
        customer_mail().as_bytes(),
    );
    assert_eq!(code, 250, "{text}");
    let number = d.wait_tickets(1, T)[0]["number"].as_i64().expect("number");

    // The stored conversation: HTML with its cid: reference, the image
    // served by it, exact bytes.
    let t = d.ticket(number);
    let html = messages(&t)[0]["html"].as_str().expect("html").to_string();
    assert!(
        html.contains("src=\"cid:screen.png@customer.example\""),
        "{html}"
    );
    let token = d.token("ann");
    let (status, bytes, headers) = common::http::get_bytes(
        d.http,
        &format!("/api/v1/tickets/{number}/inline/screen.png@customer.example"),
        &token,
    );
    assert_eq!(status, 200);
    assert_eq!(bytes, IMAGE);
    assert!(headers.contains("content-type: image/png"), "{headers}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    let (status, _, _) = common::http::get_bytes(
        d.http,
        &format!("/api/v1/tickets/{number}/inline/other@customer.example"),
        &token,
    );
    assert_eq!(status, 404);

    // A reply quoting the history: the image goes along, under its cid.
    reply(
        &d,
        &token,
        number,
        json!({"text": "Thanks, we see it.", "html": "<p>Thanks, we <b>see</b> it.</p>", "quote_history": true}),
    );
    let sent = wait_for(T, || pf.delivered().into_iter().next())
        .unwrap_or_else(|| panic!("not delivered:\n{}\n{}", pf.log(), d.log_text()));
    assert_eq!(
        content_types(&sent),
        [
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png"
        ]
    );
    let m = MessageParser::default().parse(&sent).expect("parses");
    let image = m
        .parts
        .iter()
        .find(|p| p.content_id() == Some("screen.png@customer.example"))
        .expect("the image under its Content-ID");
    assert_eq!(image.contents(), IMAGE);
    let html = m.body_html(0).expect("html").into_owned();
    assert!(html.contains("<p>Thanks, we <b>see</b> it.</p>"), "{html}");
    assert!(html.contains("<blockquote type=\"cite\""), "{html}");
    assert!(
        html.contains("src=\"cid:screen.png@customer.example\""),
        "{html}"
    );
    let text = m.body_text(0).expect("text").into_owned();
    assert!(
        text.contains("On 2026-11-26T10:00:00Z, Carol <carol@customer.example> wrote:\n> My screen looks like this:"),
        "{text}"
    );

    // The reply as stored keeps its quote and cid: reference too.
    let t = d.ticket(number);
    let stored = messages(&t).last().expect("reply").clone();
    assert!(
        stored["html"]
            .as_str()
            .is_some_and(|h| h.contains("cid:screen.png@customer.example")),
        "{stored}"
    );

    // Without quote_history (the default): no quote, no image.
    reply(&d, &token, number, json!({"text": "Fixed now."}));
    // (Maildir file names do not sort by arrival within a second.)
    let second = wait_for(T, || {
        pf.delivered()
            .into_iter()
            .find(|f| String::from_utf8_lossy(f).contains("Fixed now."))
    })
    .unwrap_or_else(|| panic!("not delivered:\n{}", d.log_text()));
    assert_eq!(
        content_types(&second),
        ["multipart/alternative", "text/plain", "text/html"]
    );
    let text = MessageParser::default()
        .parse(&second)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    assert!(!text.contains("wrote:"), "{text}");
}
