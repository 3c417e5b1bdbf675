//! Owner notices end to end, through a real Postfix relay delivering into a
//! Maildir:
//!
//! - A contact's owner who is away keeps the ticket and gets the message by
//!   email (`owner_away`), from the system address, never to the customer,
//!   not in the ticket's conversation.
//! - `notify = ["assigned", "customer_replied"]`: a notice when routing
//!   gives a user a ticket and when its customer writes again.
//! - A notice that comes back in — redirected by an agent, answered by a
//!   vacation responder, quoted by a bounce — is dropped, not ticketed; a
//!   stranger's mail carrying a made-up notice tag is ticketed as usual.

mod common;

use std::time::Duration;

use common::postfix::Postfix;
use common::smtp::{message, send_file};
use common::{Daemon, messages, wait_for};
use mail_parser::MessageParser;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"
[outbound]
retry_base_secs = 1
retry_max_secs = 2

[notifications]
from = "postdesk@desk.acme.example"
from_name = "Acme help desk"

[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"
notify = ["assigned", "customer_replied"]

[[users]]
id = "bob"
email = "bob@acme.example"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
[channels.routing]
assign = "users_and_teams"
users = ["ann"]

[[channels]]
id = "sales"
kind = "forward"
address = "sales@acme.example"
[channels.routing]
assign = "contact_owner"
"#;

fn relay_keys(port: u16) -> String {
    format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\npool_size = 2\ntimeout_secs = 10")
}

fn send(d: &Daemon, from: &str, to: &str, raw: &str) {
    let (code, text) = send_file(d.smtp, from, to, raw.as_bytes());
    assert_eq!(code, 250, "{text}");
}

/// The delivered mail once there are `n`, parsed into (headers text, body).
fn delivered(pf: &Postfix, d: &Daemon, n: usize) -> Vec<Vec<u8>> {
    wait_for(T, || {
        let f = pf.delivered();
        (f.len() >= n).then_some(f)
    })
    .unwrap_or_else(|| panic!("{n} mails not delivered:\n{}\n{}", pf.log(), d.log_text()))
}

fn header(raw: &[u8], name: &str) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| {
            m.header_raw(name)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}

fn subject(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

fn body(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

fn owner_of(t: &Value) -> &Value {
    &t["owner"]
}

#[test]
fn owners_are_told_and_notices_never_loop_back() {
    let pf = Postfix::start_maildir(None);
    let d = Daemon::start_relay("", &relay_keys(pf.port), CONFIG);

    // 1. A contact's owner away: still theirs, and emailed the message.
    d.cli_ok(&["contacts", "owner", "kim@customer.example", "bob"]);
    d.cli_ok(&["users", "away", "bob"]);
    send(
        &d,
        "kim@customer.example",
        "sales@acme.example",
        &message(
            "Kim <kim@customer.example>",
            "sales@acme.example",
            "Offer for 40 seats",
            "k1@customer.example",
            "Could you send an offer for 40 seats?\r\n",
        ),
    );
    let t = d.wait_tickets(1, T);
    assert_eq!(owner_of(&t[0]), "bob", "{t:?}");
    let sales = t[0]["number"].as_i64().expect("number");
    let mail = delivered(&pf, &d, 1);
    let away = &mail[0];
    assert_eq!(header(away, "To"), "<bob@acme.example>");
    assert_eq!(
        header(away, "From"),
        "\"Acme help desk\" <postdesk@desk.acme.example>"
    );
    assert_eq!(header(away, "Auto-Submitted"), "auto-generated");
    assert!(header(away, "X-Postdesk-Notice").starts_with("owner_away; tag=pdn."));
    assert_eq!(
        subject(away),
        format!("[#{sales}] Offer for 40 seats — from your contact while you are away")
    );
    let text = body(away);
    assert!(
        text.contains("kim@customer.example wrote while you are away"),
        "{text}"
    );
    assert!(
        text.contains("Could you send an offer for 40 seats?"),
        "{text}"
    );
    // Only Bob got it (the Maildir takes every recipient), and the ticket's
    // conversation is the customer's message alone.
    assert!(!String::from_utf8_lossy(away).contains("X-Original-To: kim@"));
    assert_eq!(messages(&d.ticket(sales)).len(), 1);

    // 2. Assigned (ann asked), then her customer writes again.
    send(
        &d,
        "lee@customer.example",
        "support@acme.example",
        &message(
            "lee@customer.example",
            "support@acme.example",
            "Printer on fire",
            "l1@customer.example",
            "It smokes.\r\n",
        ),
    );
    let support = d.wait_tickets(2, T)[0]["number"].as_i64().expect("number");
    let mail = delivered(&pf, &d, 2);
    let assigned = mail
        .iter()
        .find(|m| header(m, "X-Postdesk-Notice").starts_with("assigned;"))
        .expect("assigned notice");
    assert_eq!(header(assigned, "To"), "<ann@acme.example>");
    assert_eq!(
        subject(assigned),
        format!("[#{support}] assigned to you: Printer on fire")
    );
    let again = "From: lee@customer.example\r\nTo: support@acme.example\r\nSubject: Re: Printer on fire\r\nMessage-ID: <l2@customer.example>\r\nIn-Reply-To: <l1@customer.example>\r\nDate: Thu, 26 Nov 2026 11:00:00 +0000\r\n\r\nNow it is out.\r\n";
    send(&d, "lee@customer.example", "support@acme.example", again);
    let mail = delivered(&pf, &d, 3);
    let replied = mail
        .iter()
        .find(|m| header(m, "X-Postdesk-Notice").starts_with("customer_replied;"))
        .unwrap_or_else(|| {
            let kinds: Vec<String> = mail
                .iter()
                .map(|m| header(m, "X-Postdesk-Notice"))
                .collect();
            panic!("no customer_replied notice: {kinds:?}\n{}", d.log_text())
        });
    assert_eq!(header(replied, "To"), "<ann@acme.example>");
    assert!(body(replied).contains("Now it is out."));
    assert_eq!(messages(&d.ticket(support)).len(), 2);

    // 3. Notices coming back are dropped. Bob's mailbox redirects the
    // notice to support@ as it is; Ann's vacation responder answers one; a
    // bounce quotes one's headers.
    let tickets_before = d.tickets().len();
    let redirected = String::from_utf8_lossy(away).replace("\r\n", "\n");
    send(&d, "bob@acme.example", "support@acme.example", &redirected);
    let notice_id = header(assigned, "Message-ID");
    let vacation = format!(
        "From: ann@acme.example\r\nTo: postdesk@desk.acme.example, support@acme.example\r\nSubject: Out of office\r\nMessage-ID: <v1@acme.example>\r\nIn-Reply-To: {notice_id}\r\n\r\nI am away until Monday.\r\n"
    );
    send(&d, "ann@acme.example", "support@acme.example", &vacation);
    let bounce = format!(
        "From: MAILER-DAEMON@mx.acme.example\r\nTo: support@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b1@mx.acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme.example\r\n\r\nFinal-Recipient: rfc822; ann@acme.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: postdesk@desk.acme.example\r\nMessage-ID: {notice_id}\r\nSubject: assigned\r\n--b--\r\n"
    );
    send(&d, "", "support@acme.example", &bounce);
    d.wait_ingested(T);
    assert_eq!(d.tickets().len(), tickets_before, "{:?}", d.tickets());
    assert_eq!(messages(&d.ticket(support)).len(), 2);
    let log = d.log_text();
    // (An entry may be planned twice, from the hand-off and a scan; it is
    // applied once.)
    let dropped: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("a postdesk notice came back"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("spool=")))
        .collect();
    assert_eq!(dropped.len(), 3, "{log}");

    // 4. A stranger writing a notice header and id of their own is
    // ticketed like anyone else.
    let forged = format!(
        "From: mallory@evil.example\r\nTo: support@acme.example\r\nSubject: Please read\r\nMessage-ID: <m1@evil.example>\r\nIn-Reply-To: <pdn.{}.{}@desk.acme.example>\r\nX-Postdesk-Notice: assigned; tag=pdn.{}.{}\r\n\r\nThis must not be dropped.\r\n",
        "1".repeat(24),
        "2".repeat(32),
        "3".repeat(24),
        "4".repeat(32)
    );
    send(&d, "mallory@evil.example", "support@acme.example", &forged);
    let t = d.wait_tickets(tickets_before + 1, T);
    assert_eq!(t[0]["contact"]["email"], "mallory@evil.example", "{t:?}");
}

/// Our replies carry a signed id (Message-ID and `X-Postdesk-Loop`): one that
/// comes back in — to another channel, as it was sent, or through a relay
/// that rewrote its Message-ID — is dropped, not ticketed. A stranger
/// writing the loop header (made up, one digit changed, or a real one from
/// another postdesk install) or a Message-ID on our domain is ticketed as
/// usual: the header alone proves nothing.
#[test]
fn our_replies_coming_back_are_dropped_and_forged_loop_headers_are_not() {
    let pf = Postfix::start_maildir(None);
    let d = Daemon::start_relay("", &relay_keys(pf.port), CONFIG);
    send(
        &d,
        "lee@customer.example",
        "support@acme.example",
        &message(
            "lee@customer.example",
            "support@acme.example",
            "Printer on fire",
            "l1@customer.example",
            "It smokes.\r\n",
        ),
    );
    let support = d.wait_tickets(1, T)[0]["number"].as_i64().expect("number");
    let number = support.to_string();
    d.cli_ok(&[
        "reply",
        &number,
        "--as",
        "ann",
        "--text",
        "Unplug it, please.",
    ]);
    let mail = delivered(&pf, &d, 2);
    let reply = mail
        .iter()
        .find(|m| header(m, "X-Postdesk-Notice").is_empty())
        .expect("the reply");
    let id = header(reply, "Message-ID");
    let loop_header = header(reply, "X-Postdesk-Loop");
    assert!(id.starts_with(&format!("<pd.{support}.")), "{id}");
    assert!(
        loop_header.contains(&format!("id={}", &id[1..id.find('@').expect("@")])),
        "{loop_header}"
    );

    // The reply reaches another channel as it was sent, and again through a
    // relay that gave it a Message-ID of its own but kept our header.
    let tickets_before = d.tickets().len();
    let as_sent = String::from_utf8_lossy(reply).replace("\r\n", "\n");
    send(&d, "support@acme.example", "sales@acme.example", &as_sent);
    let rewritten = as_sent.replace(&id, "<relay-7731@lists.example.net>");
    assert_ne!(rewritten, as_sent);
    send(&d, "support@acme.example", "sales@acme.example", &rewritten);
    d.wait_ingested(T);
    assert_eq!(d.tickets().len(), tickets_before, "{:?}", d.tickets());
    let log = d.log_text();
    let dropped: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("our own reply"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("spool=")))
        .collect();
    assert_eq!(dropped.len(), 2, "{log}");

    // Strangers: a made-up id, our real id with one digit changed (header
    // and Message-ID), another install's signed id.
    let local = &id[1..id.find('@').expect("@")];
    let mut altered = local.to_string();
    let last = altered.pop().expect("digit");
    altered.push(if last == '0' { '1' } else { '0' });
    let forged = [
        (
            "mallory@evil.example",
            format!(
                "desk; id=pd.{support}.{}.{}",
                "a".repeat(24),
                "b".repeat(32)
            ),
            "<m1@evil.example>".to_string(),
        ),
        (
            "trent@evil.example",
            format!("desk; id={altered}"),
            format!("<{altered}@desk.acme.example>"),
        ),
        (
            "support@partner.example",
            format!(
                "helpdesk.partner.example; id=pd.88.{}.{}",
                "1".repeat(24),
                "2".repeat(32)
            ),
            "<pd.88.x@helpdesk.partner.example>".to_string(),
        ),
    ];
    for (i, (from, loop_value, message_id)) in forged.iter().enumerate() {
        let raw = format!(
            "From: {from}\r\nTo: support@acme.example\r\nSubject: Order {i}\r\nMessage-ID: {message_id}\r\nX-Postdesk-Loop: {loop_value}\r\nDate: Thu, 26 Nov 2026 11:00:00 +0000\r\n\r\nThis must not be dropped.\r\n"
        );
        send(&d, from, "support@acme.example", &raw);
    }
    let t = d.wait_tickets(tickets_before + forged.len(), T);
    let mut contacts: Vec<&str> = t
        .iter()
        .filter_map(|t| t["contact"]["email"].as_str())
        .collect();
    contacts.sort_unstable();
    assert_eq!(
        contacts,
        [
            "lee@customer.example",
            "mallory@evil.example",
            "support@partner.example",
            "trent@evil.example"
        ]
    );
}
