//! Real clients (swaks, Python's smtplib) deliver mail to the listener; each
//! message becomes a ticket with the right contact, subject and body.

mod common;

use std::time::Duration;

use common::{ACME, Daemon, messages, python, swaks};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn find<'a>(tickets: &'a [Value], subject: &str) -> &'a Value {
    tickets
        .iter()
        .find(|t| t["subject"] == subject)
        .unwrap_or_else(|| panic!("no ticket with subject {subject:?} in {tickets:?}"))
}

#[test]
fn swaks_plain_message_becomes_ticket() {
    let d = Daemon::start("", ACME);
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Printer on fire",
            "--header",
            "From: Carol Customer <carol@customer.example>",
            "--body",
            "The printer in room 4 is on fire.",
        ],
    );
    assert!(ok, "swaks failed:\n{out}");
    assert!(out.contains("<-  250 2.0.0"), "no 250 after DATA:\n{out}");
    let tickets = d.wait_tickets(1, T);
    let t = find(&tickets, "Printer on fire");
    assert_eq!(t["contact"]["email"], "carol@customer.example");
    assert_eq!(t["contact"]["name"], "Carol Customer");
    assert_eq!(t["channel"], "support");
    assert_eq!(t["status"], "new");
    assert_eq!(t["priority"], "medium");
    assert_eq!(t["pipeline"], "support");
    assert_eq!(t["owner"], Value::Null);
    assert_eq!(t["messages"], 1);
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    let m = &messages(&shown)[0];
    assert_eq!(m["direction"], "inbound");
    assert!(
        m["text"]
            .as_str()
            .unwrap_or("")
            .contains("room 4 is on fire"),
        "{m}"
    );
    assert_eq!(m["sender_resolution"]["method"], "from");
}

const SMTPLIB_MULTIPART: &str = r#"
import sys, smtplib
from email.message import EmailMessage
host, port = sys.argv[1], int(sys.argv[2])
m = EmailMessage()
m["From"] = "Dana Doe <dana@customer.example>"
m["To"] = "support@acme.example"
m["Subject"] = "Invoice question"
m["Message-ID"] = "<multi-1@customer.example>"
m.set_content("Plain part: where is invoice 42?")
m.add_alternative("<p>HTML part: where is <b>invoice 42</b>?</p>", subtype="html")
m.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice-42.pdf")
with smtplib.SMTP(host, port) as s:
    s.ehlo("client.example")
    assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("smtputf8") and s.has_extn("size")
    s.send_message(m)
print("sent")
"#;

const SMTPLIB_8BIT_UTF8: &str = r#"
import sys, smtplib
host, port = sys.argv[1], int(sys.argv[2])
eight = ("From: Jörg Müller <joerg@kunde.example>\r\nTo: support@acme.example\r\n"
         "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\nMessage-ID: <8bit-1@kunde.example>\r\n"
         "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
         "Sehr geehrte Damen und Herren, die Lieferung ist beschädigt. Grüße\r\n").encode("utf-8")
intl = ("From: 田中 <田中@例え.jp>\r\nTo: support@acme.example\r\nSubject: 注文について\r\n"
        "Message-ID: <utf8-1@example.jp>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n注文が届きません。\r\n").encode("utf-8")
with smtplib.SMTP(host, port) as s:
    s.ehlo("client.example")
    s.sendmail("joerg@kunde.example", ["support@acme.example"], eight, mail_options=["BODY=8BITMIME"])
    s.sendmail("田中@例え.jp", ["support@acme.example"], intl, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
print("sent")
"#;

#[test]
fn smtplib_multipart_8bit_and_smtputf8() {
    let d = Daemon::start("", ACME);
    let (ok, out) = python(SMTPLIB_MULTIPART, d.smtp, &[]);
    assert!(ok, "{out}");
    let (ok, out) = python(SMTPLIB_8BIT_UTF8, d.smtp, &[]);
    assert!(ok, "{out}");
    let tickets = d.wait_tickets(3, T);

    let t = find(&tickets, "Invoice question");
    assert_eq!(t["contact"]["email"], "dana@customer.example");
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    let text = messages(&shown)[0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(text.contains("Plain part: where is invoice 42?"), "{text}");

    let t = find(&tickets, "Grüße aus Köln");
    assert_eq!(t["contact"]["email"], "joerg@kunde.example");
    assert_eq!(t["contact"]["name"], "Jörg Müller");
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    assert!(
        messages(&shown)[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("beschädigt")
    );

    let t = find(&tickets, "注文について");
    assert_eq!(t["contact"]["email"], "田中@例え.jp");
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    assert!(
        messages(&shown)[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("注文が届きません")
    );
}

const SMTPLIB_BIG: &str = r#"
import sys, smtplib
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
body = line * (size // len(line))
msg = ("From: Big Sender <big@customer.example>\r\nTo: support@acme.example\r\nSubject: Large log file\r\n"
       "Message-ID: <big-1@customer.example>\r\n\r\n" + body).encode()
with smtplib.SMTP(host, port, timeout=120) as s:
    s.ehlo("client.example")
    r = s.sendmail("big@customer.example", ["support@acme.example"], msg)
print("sent", len(msg))
"#;

#[test]
fn twenty_megabyte_message_is_accepted_whole() {
    let d = Daemon::start("", ACME);
    let size = 20 * 1024 * 1024;
    let (ok, out) = python(SMTPLIB_BIG, d.smtp, &[&size.to_string()]);
    assert!(ok, "{out}");
    let sent: usize = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("size printed");
    let tickets = d.wait_tickets(1, Duration::from_secs(60));
    let t = find(&tickets, "Large log file");
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    let text = messages(&shown)[0]["text"].as_str().unwrap_or("");
    // The ticket view keeps at most 1 MiB of text; the raw message is kept whole.
    assert!(
        text.starts_with("0123456789abc"),
        "text starts {:?}",
        &text[..40.min(text.len())]
    );
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(status["store"]["spool_total"], 1);
    assert!(sent > size - 100, "python sent {sent}");
}

#[test]
fn reply_joins_ticket_and_duplicate_is_stored_once() {
    let d = Daemon::start("", ACME);
    let first = [
        "--from",
        "erin@customer.example",
        "--to",
        "support@acme.example",
        "--header",
        "From: Erin <erin@customer.example>",
        "--header",
        "Cc: Frank <frank@customer.example>",
        "--header",
        "Subject: Login broken",
        "--header",
        "Message-ID: <first@customer.example>",
        "--body",
        "I cannot log in.",
    ];
    assert!(swaks(d.smtp, &first).0);
    // The same message again (a retry after a lost 250): stored once.
    assert!(swaks(d.smtp, &first).0);
    // A follow-up with In-Reply-To joins the ticket.
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "erin@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "From: Erin <erin@customer.example>",
            "--header",
            "Subject: Re: Login broken",
            "--header",
            "Message-ID: <second@customer.example>",
            "--header",
            "In-Reply-To: <first@customer.example>",
            "--header",
            "References: <first@customer.example>",
            "--body",
            "Still broken.",
        ],
    );
    assert!(ok, "{out}");
    // The colleague Erin copied writes with the ticket's number in the
    // subject: joins as participant (a stranger would not: tests/trust.rs).
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "frank@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "From: Frank <frank@customer.example>",
            "--header",
            "Subject: Re: Login broken [#1]",
            "--header",
            "Message-ID: <third@customer.example>",
            "--body",
            "Me too.",
        ],
    );
    assert!(ok, "{out}");
    d.wait_ingested(T);
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["messages"], 3);
    let shown = d.ticket(1);
    let msgs = messages(&shown);
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m["message_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ids,
        [
            "first@customer.example",
            "second@customer.example",
            "third@customer.example"
        ]
    );
    assert_eq!(shown["participants"][0]["email"], "frank@customer.example");
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(
        status["store"]["spool_total"], 4,
        "all four deliveries were accepted"
    );
    assert_eq!(
        status["store"]["messages"], 3,
        "the duplicate is stored once"
    );
}
