//! Bounces end to end: an agent's reply goes out through a (scripted) relay,
//! then a bounce for it arrives over SMTP on the channel — a Postfix-style
//! RFC 3464 multipart/report, and an Exchange-style NDR without a
//! delivery-status part that quotes the original headers in its body. Each
//! joins the reply's ticket, the reply shows `failed` with the diagnostic,
//! and no MAILER-DAEMON ticket or contact appears. A bounce for mail we never
//! sent keeps the old behaviour (its own ticket, flagged); an out-of-office
//! joins the thread; nothing is ever sent automatically in answer.
//! And once with a real Postfix as the relay: the customer's MX refuses the
//! reply, Postfix sends its own DSN back to the channel.

mod common;

use std::time::Duration;

use common::postfix::Postfix;
use common::relay::ScriptedRelay;
use common::smtp::send_file;
use common::{Daemon, messages, swaks, wait_for};
use serde_json::{Value, json};

const PEOPLE: &str = r#"
[outbound]
retry_base_secs = 1
retry_max_secs = 2

[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"
first_name = "Ann"
last_name = "Agent"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
"#;

fn fixture(name: &str, message_id: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/bounces/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("{{MESSAGE_ID}}", message_id)
        .into_bytes()
}

fn outbound(d: &Daemon, ticket: i64) -> Vec<Value> {
    messages(&d.ticket(ticket))
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .cloned()
        .collect()
}

/// Reply as ann on `ticket`; wait until the relay took it (or, with a fast
/// real bounce, it already failed); its Message-ID.
fn send_reply(d: &Daemon, token: &str, ticket: i64, text: &str) -> String {
    let (status, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{ticket}/replies"),
        Some(token),
        Some(&json!({ "text": text }).to_string()),
    );
    assert_eq!(status, 201, "reply: {v}\n{}", d.log_text());
    let mid = v["message_id"].as_str().expect("message_id").to_string();
    wait_for(Duration::from_secs(30), || {
        outbound(d, ticket)
            .iter()
            .any(|m| m["message_id"] == mid.as_str() && m["delivery"] != "queued")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("reply {mid} not sent:\n{}", d.log_text()));
    mid
}

fn bounce_in(d: &Daemon, raw: &[u8]) {
    let (code, text) = send_file(d.smtp, "", "support@acme.example", raw);
    assert_eq!(code, 250, "{text}");
    d.wait_ingested(Duration::from_secs(20));
}

fn failed_reply(d: &Daemon, ticket: i64, mid: &str) -> Value {
    let mut last = Vec::new();
    wait_for(Duration::from_secs(10), || {
        last = outbound(d, ticket);
        last.iter()
            .find(|m| m["message_id"] == mid && m["delivery"] == "failed")
            .cloned()
    })
    .unwrap_or_else(|| panic!("reply {mid} not failed: {last:?}\n{}", d.log_text()))
}

#[test]
fn bounces_join_the_reply_ticket_and_fail_the_reply() {
    let relay = ScriptedRelay::start(&["250 2.0.0 Ok: queued as 4F2A11C0123"]);
    let relay_keys = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\npool_size = 1\ntimeout_secs = 10",
        relay.port
    );
    let d = Daemon::start_relay("", &relay_keys, PEOPLE);
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Message-Id: <carol-1@customer.example>",
            "--h-Subject",
            "Printer on fire",
            "--h-From",
            "Carol Customer <carol@customer.example>",
            "--body",
            "Please help.",
        ],
    );
    assert!(ok, "{out}");
    d.wait_tickets(1, Duration::from_secs(20));
    let token = d.token("ann");

    // 1. Postfix DSN (multipart/report, message/delivery-status, the
    //    returned message attached as message/rfc822).
    let first = send_reply(&d, &token, 1, "We are on it.");
    bounce_in(&d, &fixture("001-postfix-dsn.eml", &first));
    let failed = failed_reply(&d, 1, &first);
    let detail = failed["delivery_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("5.1.1") && detail.contains("User unknown in local recipient table"),
        "{detail}"
    );
    assert!(detail.contains("carol@customer.example"), "{detail}");

    // 2. Exchange-style NDR: no delivery-status, original headers in the body.
    let second = send_reply(&d, &token, 1, "Trying again.");
    bounce_in(&d, &fixture("002-exchange-ndr.eml", &second));
    let failed = failed_reply(&d, 1, &second);
    let detail = failed["delivery_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("550 5.1.1 RESOLVER.ADR.RecipNotFound"),
        "{detail}"
    );

    // Both bounces are on ticket 1, flagged and linked; no other ticket, no
    // mailer-daemon contact or participant.
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let t = d.ticket(1);
    let bounces: Vec<&Value> = messages(&t)
        .iter()
        .filter(|m| m["classification"]["kind"] == "bounce")
        .collect();
    assert_eq!(bounces.len(), 2, "{t}");
    assert_eq!(bounces[0]["classification"]["bounced_message_id"], first);
    assert_eq!(
        bounces[0]["classification"]["dsn"]["recipients"][0]["status"],
        "5.1.1"
    );
    assert_eq!(bounces[1]["classification"]["bounced_message_id"], second);
    assert_eq!(t["participants"], json!([]), "{t}");
    let contacts = d.cli_json(&["contacts", "list", "--json"]);
    let emails: Vec<&str> = contacts
        .as_array()
        .expect("contacts")
        .iter()
        .filter_map(|c| c["email"].as_str())
        .collect();
    assert_eq!(emails, ["carol@customer.example"], "{contacts}");

    // 3. A bounce for mail we never sent: today's behaviour, its own ticket,
    //    flagged as a bounce.
    let unmatched = String::from_utf8(fixture("001-postfix-dsn.eml", "not-ours@elsewhere.example"))
        .expect("utf8")
        .replace("4F2A11C0125@", "4F2A11C0999@");
    bounce_in(&d, unmatched.as_bytes());
    let tickets = d.wait_tickets(2, Duration::from_secs(10));
    let other = tickets
        .iter()
        .find(|t| t["number"] != 1)
        .expect("second ticket");
    assert_eq!(
        other["contact"]["email"], "mailer-daemon@mx.customer.example",
        "{other}"
    );
    let t2 = d.ticket(other["number"].as_i64().expect("number"));
    assert_eq!(messages(&t2)[0]["classification"]["kind"], "bounce");

    // 4. An out-of-office answer to our reply joins the thread, flagged.
    let ooo = format!(
        "From: Carol Customer <carol@customer.example>\r\nTo: support@acme.example\r\nSubject: Automatic reply: Re: Printer on fire [#1]\r\nMessage-ID: <ooo-1@customer.example>\r\nIn-Reply-To: <{second}>\r\nAuto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\nDate: Thu, 26 Nov 2026 10:05:00 +0000\r\n\r\nI am out of the office until Monday.\r\n"
    );
    let (code, text) = send_file(d.smtp, "", "support@acme.example", ooo.as_bytes());
    assert_eq!(code, 250, "{text}");
    d.wait_ingested(Duration::from_secs(20));
    let t = d.ticket(1);
    assert!(
        messages(&t)
            .iter()
            .any(|m| m["classification"]["kind"] == "auto_reply"),
        "{t}"
    );

    // Nothing automatic was sent: the relay saw exactly the two replies and
    // nothing is queued.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(relay.accepted_count(), 2);
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(status["store"]["outbox_queued"], 0, "{status}");

    // `postdesk resolve` shows what ingest looks a bounce up by.
    let file = d.dir.path().join("ndr.eml");
    std::fs::write(&file, fixture("002-exchange-ndr.eml", &second)).expect("write");
    let v = d.cli_json(&["resolve", file.to_str().expect("path"), "--json"]);
    assert_eq!(v["classification"]["kind"], "bounce");
    assert_eq!(v["bounce"]["candidates"][0], second.as_str(), "{v}");
    assert_eq!(v["bounce"]["failed"], true);
}

#[test]
fn a_real_postfix_dsn_fails_the_reply_on_its_ticket() {
    let d = Daemon::start_relay("", "host = \"127.0.0.1\"\nport = 9\ntls = \"none\"", PEOPLE);
    // The customer's MX refuses the reply after DATA; Postfix bounces it to
    // the channel address, which it relays to postdesk.
    let mx = ScriptedRelay::start(&[
        "550 5.1.1 <carol@customer.example>: Recipient address rejected: User unknown in local recipient table",
    ]);
    let postfix = Postfix::start_routes(&[
        ("customer.example", mx.port),
        ("acme.example", d.smtp.port()),
    ]);
    // Point the daemon's relay at Postfix (a reload re-reads [relay]).
    let text = std::fs::read_to_string(&d.config).expect("config");
    let text = text.replace("port = 9\n", &format!("port = {}\n", postfix.port));
    std::fs::write(&d.config, text).expect("config");
    d.signal("HUP");
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Message-Id: <carol-2@customer.example>",
            "--h-Subject",
            "Where is my order?",
            "--body",
            "Please check.",
        ],
    );
    assert!(ok, "{out}");
    d.wait_tickets(1, Duration::from_secs(20));
    let token = d.token("ann");
    let mid = send_reply(&d, &token, 1, "It ships today.");
    let mut last = Vec::new();
    let failed = wait_for(Duration::from_secs(60), || {
        last = outbound(&d, 1);
        last.iter()
            .find(|m| m["message_id"] == mid.as_str() && m["delivery"] == "failed")
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no failed reply: {last:?}\n{}\n{}",
            d.log_text(),
            postfix.log()
        )
    });
    let detail = failed["delivery_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("carol@customer.example 5.1.1") && detail.contains("User unknown"),
        "{detail}"
    );
    println!("real Postfix DSN → delivery_detail: {detail}");
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let t = d.ticket(1);
    let bounce = messages(&t)
        .iter()
        .find(|m| m["classification"]["kind"] == "bounce")
        .unwrap_or_else(|| panic!("no bounce on #1: {t}"));
    assert_eq!(bounce["classification"]["bounced_message_id"], mid);
    assert!(
        bounce["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("mailer-daemon@")),
        "{bounce}"
    );
}
