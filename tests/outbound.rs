//! Replies end to end, against real servers on 127.0.0.1:
//!
//! - A private Postfix relay delivering into a Maildir: replies sent through
//!   the API arrive with the right From name (both sender-name modes), the
//!   personalised and escaped signature in both parts, threading headers and
//!   `[#N]`; the customer's answer to one joins the same ticket.
//! - Relay down → queued; relay up → delivered exactly once.
//! - A scripted relay: 451 twice then 250 → sent; 550 → failed with the text.
//! - kill -9 with 200 replies queued, restart → all delivered; duplicates
//!   counted (only possible in the documented window).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::postfix::Postfix;
use common::relay::ScriptedRelay;
use common::{Daemon, free_port, messages, swaks, wait_for};
use mail_parser::{HeaderName, MessageParser, MimeHeaders};
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

[[users]]
id = "obrien"
email = "obrien@acme.example"
first_name = "<b>O'Brien"
last_name = "& Co</b>"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
sender_name = "agent_and_company"
signature_html = "<p>{{ sender.full_name }}<br>Acme Support</p>"

[[channels]]
id = "sales"
kind = "forward"
address = "sales@acme.example"
sender_name = "company"
company_name = "Acme Sales"
signature_html = "<p>{{ sender.first_name }} for Acme Sales</p>"
"#;

fn relay_keys(port: u16) -> String {
    format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\npool_size = 2\ntimeout_secs = 10")
}

/// The first ticket: a customer's mail to support@ with `subject` and
/// Message-ID `msgid`; returns its number.
fn support_ticket(d: &Daemon, subject: &str, msgid: &str) -> i64 {
    customer_mail(d, "support@acme.example", subject, msgid, &[]);
    d.wait_tickets(1, Duration::from_secs(30))[0]["number"]
        .as_i64()
        .expect("number")
}

/// A customer's mail to `to` with a fixed Message-ID; waits for its ticket.
fn customer_mail(d: &Daemon, to: &str, subject: &str, msgid: &str, extra: &[&str]) {
    let hdr = format!("Message-Id: <{msgid}>");
    let mut args = vec![
        "--from",
        "carol@customer.example",
        "--to",
        to,
        "--header",
        &hdr,
        "--h-Subject",
        subject,
        "--h-From",
        "Carol Customer <carol@customer.example>",
        "--body",
        "Hello, something is broken.",
    ];
    args.extend_from_slice(extra);
    let (ok, out) = swaks(d.smtp, &args);
    assert!(ok, "swaks failed: {out}");
}

fn reply(d: &Daemon, token: &str, ticket: i64, body: Value) -> Value {
    let (status, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{ticket}/replies"),
        Some(token),
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "reply: {v}\n{}", d.log_text());
    v
}

/// The outbound messages of a ticket.
fn outbound(d: &Daemon, ticket: i64) -> Vec<Value> {
    messages(&d.ticket(ticket))
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .cloned()
        .collect()
}

fn wait_delivery(d: &Daemon, ticket: i64, state: &str) -> Value {
    let mut last = Vec::new();
    wait_for(Duration::from_secs(60), || {
        last = outbound(d, ticket);
        last.iter().find(|m| m["delivery"] == state).cloned()
    })
    .unwrap_or_else(|| panic!("no {state} reply on #{ticket}: {last:?}\n{}", d.log_text()))
}

fn message_id_of(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn replies_arrive_in_postfix_maildir_and_thread_back() {
    let pf = Postfix::start_maildir(None);
    let d = Daemon::start_relay("", &relay_keys(pf.port), PEOPLE);
    customer_mail(
        &d,
        "support@acme.example",
        "Printer on fire",
        "c1@customer.example",
        &[],
    );
    customer_mail(
        &d,
        "sales@acme.example",
        "Quote please",
        "c2@customer.example",
        &[],
    );
    let tickets = d.wait_tickets(2, Duration::from_secs(30));
    let number = |ch: &str| {
        tickets
            .iter()
            .find(|t| t["channel"] == ch)
            .and_then(|t| t["number"].as_i64())
            .expect("ticket")
    };
    let (support, sales) = (number("support"), number("sales"));

    let obrien = d.token("obrien");
    let ann = d.token("ann");
    let q1 = reply(
        &d,
        &obrien,
        support,
        json!({"text": "We are on it.", "html": "<p>We are <i>on it</i>.</p>"}),
    );
    assert_eq!(q1["delivery"], "queued");
    let q2 = reply(&d, &ann, sales, json!({"text": "Here is your quote."}));

    let files = wait_for(Duration::from_secs(60), || {
        let f = pf.delivered();
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| panic!("replies not delivered:\n{}\n{}", pf.log(), d.log_text()));
    assert_eq!(files.len(), 2);
    let by_id: HashMap<String, &Vec<u8>> = files.iter().map(|f| (message_id_of(f), f)).collect();

    // agent_and_company, with an agent name that needs escaping.
    let id1 = q1["message_id"].as_str().expect("message_id");
    assert!(id1.ends_with("@desk.acme.example"), "{id1}");
    let m = MessageParser::default()
        .parse(by_id[id1].as_slice())
        .expect("parse");
    let from = m.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.name(), Some("<b>O'Brien & Co</b> from Acme"));
    assert_eq!(from.address(), Some("support@acme.example"));
    let to = m.to().and_then(|a| a.first()).expect("to");
    assert_eq!(to.address(), Some("carol@customer.example"));
    // The tag carries the ticket's secret: `[#N-xxxxxxxx]`.
    let subject = m.subject().expect("subject");
    let tag = format!("Re: Printer on fire [#{support}-");
    assert!(
        subject.starts_with(&tag) && subject.ends_with(']') && subject.len() == tag.len() + 9,
        "{subject}"
    );
    assert_eq!(m.in_reply_to().as_text(), Some("c1@customer.example"));
    assert_eq!(
        m.references().as_text_list().map(|l| l.to_vec()),
        Some(vec!["c1@customer.example".into()])
    );
    assert!(
        m.header(HeaderName::Other("X-Postdesk-Loop".into()))
            .is_some()
    );
    assert!(
        m.header(HeaderName::Other("Auto-Submitted".into()))
            .is_none()
    );
    let html = m.body_html(0).expect("html part");
    assert!(html.contains("We are <i>on it</i>."), "{html}");
    assert!(
        html.contains("&lt;b&gt;O&#39;Brien &amp; Co&lt;/b&gt;<br>Acme Support"),
        "{html}"
    );
    let text = m.body_text(0).expect("text part").replace("\r\n", "\n");
    assert!(text.contains("We are on it."), "{text}");
    assert!(text.contains("<b>O'Brien & Co</b>\nAcme Support"), "{text}");
    let ct = m.root_part().content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );

    // company mode.
    let id2 = q2["message_id"].as_str().expect("message_id");
    let m2 = MessageParser::default()
        .parse(by_id[id2].as_slice())
        .expect("parse");
    let from2 = m2.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from2.name(), Some("Acme Sales"));
    assert_eq!(from2.address(), Some("sales@acme.example"));
    let subject2 = m2.subject().expect("subject");
    assert!(
        subject2.starts_with(&format!("Re: Quote please [#{sales}-")),
        "{subject2}"
    );
    assert!(
        m2.body_html(0)
            .expect("html")
            .contains("<p>Ann for Acme Sales</p>")
    );
    assert!(
        m2.body_text(0)
            .expect("text")
            .contains("Ann for Acme Sales")
    );

    // The state is on the ticket.
    let sent = wait_delivery(&d, support, "sent");
    assert_eq!(sent["author"], "obrien");
    assert!(
        sent["delivery_detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("250"),
        "{sent}"
    );

    // The customer answers our reply (no [#N] in the subject): same ticket.
    let irt = format!("In-Reply-To: <{id1}>");
    customer_mail(
        &d,
        "support@acme.example",
        "Re: Printer on fire",
        "c3@customer.example",
        &["--add-header", &irt],
    );
    let ok = wait_for(Duration::from_secs(30), || {
        let t = d.ticket(support);
        (messages(&t).len() >= 3).then_some(t)
    })
    .unwrap_or_else(|| panic!("answer did not join #{support}:\n{}", d.log_text()));
    let last = messages(&ok).last().expect("message").clone();
    assert_eq!(last["direction"], "inbound");
    assert_eq!(last["message_id"], "c3@customer.example");
    assert_eq!(d.tickets().len(), 2, "no new ticket for the answer");
}

#[test]
fn relay_down_then_up_delivers_exactly_once() {
    let port = free_port();
    let d = Daemon::start_relay("", &relay_keys(port), PEOPLE);
    let t = support_ticket(&d, "Down", "down1@customer.example");
    let q = reply(
        &d,
        &d.token("ann"),
        t,
        json!({"text": "Queued while the relay is down."}),
    );
    // The first attempt fails (connection refused) and is deferred.
    let deferred = wait_for(Duration::from_secs(30), || {
        let m = outbound(&d, t).pop()?;
        (m["delivery"] == "queued" && m["delivery_detail"].is_string()).then_some(m)
    })
    .unwrap_or_else(|| panic!("no deferred attempt:\n{}", d.log_text()));
    assert_eq!(deferred["delivery"], "queued");
    // The detail and the log name the relay; the log says when the next
    // try is, as a time (not epoch milliseconds).
    let relay = format!("127.0.0.1:{port}");
    let detail = deferred["delivery_detail"].as_str().unwrap_or("");
    assert!(detail.starts_with(&format!("{relay}: ")), "{detail}");
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("reply deferred")
            && l.contains(&format!("relay={relay}"))
            && l.contains("retry_at=20")),
        "{log}"
    );

    let pf = Postfix::start_maildir(Some(port));
    wait_delivery(&d, t, "sent");
    assert!(
        d.log_text()
            .lines()
            .any(|l| l.contains("reply sent") && l.contains(&format!("relay={relay}"))),
        "{}",
        d.log_text()
    );
    let files = wait_for(Duration::from_secs(30), || {
        let f = pf.delivered();
        (!f.is_empty()).then_some(f)
    })
    .expect("delivered");
    // Give a duplicate, if any, the chance to show up before counting.
    std::thread::sleep(Duration::from_secs(3));
    let files = if pf.delivered().len() > files.len() {
        pf.delivered()
    } else {
        files
    };
    assert_eq!(files.len(), 1, "delivered exactly once");
    assert_eq!(
        message_id_of(&files[0]),
        q["message_id"].as_str().expect("id")
    );
}

#[test]
fn relay_451_twice_then_250_is_sent() {
    let relay = ScriptedRelay::start(&[
        "451 4.3.0 greylisted, try again",
        "451 4.3.0 still greylisted",
        "250 2.0.0 queued as ABC123",
    ]);
    let d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    let t = support_ticket(&d, "Greylist", "g1@customer.example");
    reply(&d, &d.token("ann"), t, json!({"text": "Retry me."}));
    let m = wait_delivery(&d, t, "sent");
    assert!(
        m["delivery_detail"]
            .as_str()
            .unwrap_or("")
            .contains("queued as ABC123"),
        "{m}"
    );
    assert_eq!(
        relay.transactions.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(relay.accepted_count(), 1);
    // The outcomes are in the metrics.
    let (status, metrics) = d.api("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or("");
    for want in [
        "postdesk_outbox_attempts_total{result=\"deferred\"} 2",
        "postdesk_outbox_attempts_total{result=\"sent\"} 1",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}

/// A reload that points `[relay]` elsewhere closes the old relay's pooled
/// connections at once (QUIT), not when the next reply happens to be due; the
/// next reply goes to the new relay.
#[test]
fn a_reload_to_another_relay_closes_the_old_ones_connections() {
    use std::sync::atomic::Ordering;
    let old = ScriptedRelay::start(&["250 2.0.0 old"]);
    let new = ScriptedRelay::start(&["250 2.0.0 new"]);
    let d = Daemon::start_relay("", &relay_keys(old.port), PEOPLE);
    let t = support_ticket(&d, "Moving relay", "move1@customer.example");
    reply(
        &d,
        &d.token("ann"),
        t,
        json!({"text": "Via the old relay."}),
    );
    wait_delivery(&d, t, "sent");
    assert_eq!(old.accepted_count(), 1);
    assert_eq!(old.quits.load(Ordering::SeqCst), 0, "kept in the pool");

    let text = std::fs::read_to_string(&d.config).expect("config");
    let moved = text.replace(
        &format!("port = {}\n", old.port),
        &format!("port = {}\n", new.port),
    );
    assert_ne!(moved, text, "the relay port is in the config");
    std::fs::write(&d.config, moved).expect("write config");
    d.signal("HUP");
    let closed = wait_for(Duration::from_secs(10), || {
        (old.quits.load(Ordering::SeqCst) == 1).then_some(())
    });
    assert!(
        closed.is_some(),
        "the old relay's connection was not closed after the reload:\n{}",
        d.log_text()
    );

    reply(
        &d,
        &d.token("ann"),
        t,
        json!({"text": "Via the new relay."}),
    );
    let sent = wait_for(Duration::from_secs(30), || {
        (new.accepted_count() == 1).then_some(())
    });
    assert!(
        sent.is_some(),
        "not sent via the new relay:\n{}",
        d.log_text()
    );
    assert_eq!(old.accepted_count(), 1, "nothing more to the old relay");
}

/// The relay took the reply (250) but its `sent` cannot be recorded (here a
/// trigger refuses the update; in life a full disk): the reply must not go
/// out again while the outcome waits, and is recorded once the store takes
/// it. Before, the sender gave up recording after ≈ 26 s of retries, the
/// entry was still queued and due, and the customer got the reply again
/// every ≈ 26 s.
#[test]
fn a_sent_reply_whose_outcome_cannot_be_recorded_is_not_sent_again() {
    let relay = ScriptedRelay::start(&["250 2.0.0 queued as ONCE"]);
    let d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    let t = support_ticket(&d, "Unrecordable", "unrec1@customer.example");
    let db = rusqlite::Connection::open(d.dir.path().join("var/postdesk.sqlite")).expect("db");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db.execute_batch(
        "CREATE TRIGGER unrecordable BEFORE UPDATE OF state ON outbox WHEN NEW.state = 'sent'
         BEGIN SELECT RAISE(ABORT, 'injected: cannot record'); END;",
    )
    .expect("trigger");
    reply(
        &d,
        &d.token("ann"),
        t,
        json!({"text": "Only once, please."}),
    );
    let first = wait_for(Duration::from_secs(30), || {
        (relay.accepted_count() == 1).then_some(())
    });
    assert!(first.is_some(), "not delivered:\n{}", d.log_text());
    // Longer than the old code's retries before it gave up and sent again.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        relay.accepted_count(),
        1,
        "sent again while its outcome waited:\n{}",
        d.log_text()
    );
    assert_eq!(outbound(&d, t)[0]["delivery"], "queued");

    db.execute_batch("DROP TRIGGER unrecordable").expect("drop");
    let m = wait_delivery(&d, t, "sent");
    assert!(
        m["delivery_detail"]
            .as_str()
            .unwrap_or("")
            .contains("queued as ONCE"),
        "{m}"
    );
    assert_eq!(relay.accepted_count(), 1, "delivered exactly once");
}

#[test]
fn relay_silent_after_the_data_is_a_timeout_and_retried() {
    // The relay takes the whole message and then says nothing past our
    // budget for the transaction (timeout_secs 1 per step: MAIL, RCPT, DATA,
    // the body = 4 s): the attempt is deferred, not failed, and the retry is
    // sent. The relay may still have queued the first copy — the one window
    // where a reply can arrive twice, with the same Message-ID.
    let relay = ScriptedRelay::start(&["sleep:6000 250 2.0.0 too late", "250 2.0.0 queued as T2"]);
    let keys = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 1",
        relay.port
    );
    let d = Daemon::start_relay("", &keys, PEOPLE);
    let t = support_ticket(&d, "Slow relay", "s1@customer.example");
    reply(&d, &d.token("ann"), t, json!({"text": "Patience."}));
    let m = wait_delivery(&d, t, "sent");
    assert!(
        m["delivery_detail"]
            .as_str()
            .unwrap_or("")
            .contains("queued as T2"),
        "{m}"
    );
    let (_, metrics) = d.api("GET", "/metrics", None, None);
    let text = metrics.as_str().unwrap_or("");
    for want in [
        "postdesk_outbox_attempts_total{result=\"deferred\"} 1",
        "postdesk_outbox_attempts_total{result=\"sent\"} 1",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    // Both copies reached the relay, byte for byte the same message.
    let both = common::wait_for(Duration::from_secs(10), || {
        (relay.accepted_count() == 2).then(|| relay.accepted.lock().expect("lock").clone())
    })
    .expect("the late first copy");
    assert_eq!(both[0], both[1]);
    assert!(!message_id_of(&both[0]).is_empty());
}

#[test]
fn relay_550_fails_with_the_reply_text() {
    let relay = ScriptedRelay::start(&["550 5.1.1 <carol@customer.example>: mailbox unknown"]);
    let d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    let t = support_ticket(&d, "Bounce", "b1@customer.example");
    reply(&d, &d.token("ann"), t, json!({"text": "This will bounce."}));
    let m = wait_delivery(&d, t, "failed");
    let detail = m["delivery_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("550") && detail.contains("mailbox unknown"),
        "{detail}"
    );
    // Permanent: tried once, not retried.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        relay.transactions.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Visible in the CLI's text view too.
    let out = d.cli(&["tickets", "show", &t.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("delivery: failed") && text.contains("mailbox unknown"),
        "{text}"
    );
}

#[test]
fn kill_9_with_200_queued_then_restart_delivers_all() {
    let relay = ScriptedRelay::start(&["250 2.0.0 ok"]);
    let down = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start_full(dir, "", Some(&relay_keys(down)), PEOPLE, None);
    let t = support_ticket(&d, "Many", "k1@customer.example");
    let token = d.token("ann");
    let mut ids = Vec::new();
    for i in 0..200 {
        let q = reply(&d, &token, t, json!({"text": format!("reply {i}")}));
        ids.push(q["message_id"].as_str().expect("id").to_string());
    }
    d.kill9();
    // Restart with the relay up.
    let text = std::fs::read_to_string(&d.config).expect("config");
    let text = text.replace(
        &format!("port = {down}\n"),
        &format!("port = {}\n", relay.port),
    );
    std::fs::write(&d.config, text).expect("config");
    d.spawn();
    let all = wait_for(Duration::from_secs(120), || {
        let out = outbound(&d, t);
        out.iter().all(|m| m["delivery"] == "sent").then_some(out)
    })
    .unwrap_or_else(|| panic!("not all sent:\n{}", d.log_text()));
    assert_eq!(all.len(), 200);
    let accepted: Vec<String> = relay
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| message_id_of(b))
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &accepted {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in &ids {
        assert!(counts.contains_key(id.as_str()), "{id} never delivered");
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "kill -9 with 200 queued: {} deliveries, {duplicates} duplicates",
        accepted.len()
    );
    assert_eq!(
        duplicates, 0,
        "nothing was in flight at the kill, so no duplicate is allowed"
    );
}

#[test]
fn relay_auth_uses_the_password_file() {
    let relay = ScriptedRelay::start(&["250 2.0.0 ok"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("relay-password"), "s3cret\n").expect("write");
    let keys = format!(
        "{}\nusername = \"postdesk\"\npassword_file = \"relay-password\"",
        relay_keys(relay.port)
    );
    let d = Daemon::start_full(dir, "", Some(&keys), PEOPLE, None);
    let t = support_ticket(&d, "Auth", "a1@customer.example");
    reply(&d, &d.token("ann"), t, json!({"text": "Authenticated."}));
    wait_delivery(&d, t, "sent");
    let seen = relay.auth.lock().expect("lock").clone();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(seen.first().expect("AUTH PLAIN sent"))
        .expect("base64");
    assert_eq!(decoded, b"\0postdesk\0s3cret");
}

/// The relay refusing our credentials (535: a rotated password) is not the
/// reply's fault: it stays queued with the reason and is tried again, instead
/// of failing on its first attempt.
#[test]
fn a_relay_refusing_our_credentials_defers_the_reply() {
    let relay =
        ScriptedRelay::start_with_auth("535 5.7.8 Authentication credentials invalid", &["250 ok"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("relay-password"), "rotated\n").expect("write");
    let keys = format!(
        "{}\nusername = \"postdesk\"\npassword_file = \"relay-password\"",
        relay_keys(relay.port)
    );
    let d = Daemon::start_full(dir, "", Some(&keys), PEOPLE, None);
    let t = support_ticket(&d, "Rotated", "rot1@customer.example");
    reply(
        &d,
        &d.token("ann"),
        t,
        json!({"text": "Waiting for the password."}),
    );
    let retried = wait_for(Duration::from_secs(30), || {
        (relay.auth.lock().expect("lock").len() >= 3).then_some(())
    });
    assert!(
        retried.is_some(),
        "AUTH not retried: {:?}\n{}",
        outbound(&d, t),
        d.log_text()
    );
    let m = outbound(&d, t).remove(0);
    assert_eq!(m["delivery"], "queued", "{m}");
    assert!(
        m["delivery_detail"].as_str().unwrap_or("").contains("535"),
        "{m}"
    );
    assert_eq!(relay.accepted_count(), 0);
}

/// kill -9 while replies are being sent: after a restart every reply is
/// delivered, and a reply is delivered twice only if the relay had accepted
/// it before the kill (the documented window: accepted, not yet recorded).
#[test]
fn kill_9_while_sending_repeats_only_in_the_window() {
    // A relay slow enough (20 ms a message) that the kill lands mid-send.
    let relay = ScriptedRelay::start(&["sleep:20 250 2.0.0 ok"]);
    let mut d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    let t = support_ticket(&d, "Busy", "w1@customer.example");
    let token = d.token("ann");
    let mut ids = Vec::new();
    for i in 0..200 {
        let q = reply(&d, &token, t, json!({"text": format!("busy {i}")}));
        ids.push(q["message_id"].as_str().expect("id").to_string());
    }
    d.kill9();
    std::thread::sleep(Duration::from_millis(200));
    let before_kill: Vec<String> = relay
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| message_id_of(b))
        .collect();
    assert!(
        !before_kill.is_empty() && before_kill.len() < 200,
        "the kill did not land mid-send: {} accepted before it",
        before_kill.len()
    );
    d.spawn();
    wait_for(Duration::from_secs(120), || {
        let out = outbound(&d, t);
        (out.len() == 200 && out.iter().all(|m| m["delivery"] == "sent")).then_some(())
    })
    .unwrap_or_else(|| panic!("not all sent after restart:\n{}", d.log_text()));
    let all: Vec<String> = relay
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| message_id_of(b))
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in &ids {
        assert!(counts.contains_key(id.as_str()), "{id} never delivered");
    }
    let dups: Vec<&str> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    eprintln!(
        "kill -9 while sending: {} accepted before the kill, {} deliveries, {} duplicates",
        before_kill.len(),
        all.len(),
        dups.len()
    );
    for id in &dups {
        assert_eq!(counts[id], 2, "{id} delivered more than twice");
        assert!(
            before_kill.iter().any(|b| b == id),
            "{id} repeated but was not accepted before the kill"
        );
    }
}

/// STARTTLS and implicit TLS to a Postfix relay with a self-signed
/// certificate: delivered when `relay.ca_file` trusts it; without it the
/// reply stays queued with the certificate error as its detail.
#[test]
fn relay_tls_starttls_and_implicit() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls");
    let cert = std::path::Path::new(fixtures).join("cert.pem");
    let key = std::path::Path::new(fixtures).join("key.pem");
    let smtps = free_port();
    let pf = Postfix::start_maildir_tls(&cert, &key, smtps);
    wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", smtps)).ok()
    })
    .expect("smtps listener");
    let cases = [
        ("starttls", pf.port, true, "s1@customer.example"),
        ("implicit", smtps, true, "i1@customer.example"),
        ("starttls", pf.port, false, "u1@customer.example"),
    ];
    let mut delivered = 0;
    for (mode, port, trust, msgid) in cases {
        let ca = if trust {
            format!("ca_file = {:?}\n", cert.display().to_string())
        } else {
            String::new()
        };
        let keys = format!(
            "host = \"127.0.0.1\"\nport = {port}\ntls = \"{mode}\"\ntimeout_secs = 10\n{ca}"
        );
        let d = Daemon::start_relay("", &keys, PEOPLE);
        customer_mail(&d, "support@acme.example", "TLS", msgid, &[]);
        let t = d.wait_tickets(1, Duration::from_secs(30))[0]["number"]
            .as_i64()
            .expect("number");
        reply(
            &d,
            &d.token("ann"),
            t,
            json!({"text": format!("over {mode}")}),
        );
        if trust {
            let m = wait_delivery(&d, t, "sent");
            assert!(
                m["delivery_detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("250"),
                "{m}"
            );
            delivered += 1;
            let got = wait_for(Duration::from_secs(30), || {
                (pf.delivered().len() >= delivered).then_some(())
            });
            assert!(got.is_some(), "{mode}: not in the Maildir:\n{}", pf.log());
        } else {
            let m = wait_for(Duration::from_secs(30), || {
                let m = outbound(&d, t).pop()?;
                m["delivery_detail"].is_string().then_some(m)
            })
            .expect("an attempt");
            assert_eq!(m["delivery"], "queued", "{m}");
            let detail = m["delivery_detail"].as_str().unwrap_or("").to_lowercase();
            assert!(
                detail.contains("certificate") || detail.contains("tls"),
                "{detail}"
            );
        }
    }
    let log = pf.log();
    assert!(log.contains("TLS connection established from"), "{log}");
}

/// `cc_thread`: the ticket's other participants are Cc'd (header and
/// envelope); without it only the contact gets the reply.
#[test]
fn reply_can_cc_the_thread() {
    let relay = ScriptedRelay::start(&["250 2.0.0 ok"]);
    let d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    customer_mail(
        &d,
        "support@acme.example",
        "Team issue",
        "cc1@customer.example",
        &["--h-Cc", "Dave Colleague <dave@customer.example>"],
    );
    let t = d.wait_tickets(1, Duration::from_secs(30))[0]["number"]
        .as_i64()
        .expect("number");
    // The colleague the customer copied answers in the same thread.
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "dave@customer.example",
            "--to",
            "support@acme.example",
            "--h-Subject",
            "Re: Team issue",
            "--h-From",
            "Dave Colleague <dave@customer.example>",
            "--add-header",
            "In-Reply-To: <cc1@customer.example>",
            "--body",
            "Same here.",
        ],
    );
    assert!(ok, "{out}");
    wait_for(Duration::from_secs(30), || {
        (messages(&d.ticket(t)).len() >= 2).then_some(())
    })
    .expect("dave's mail joined the ticket");
    let ann = d.token("ann");
    reply(
        &d,
        &ann,
        t,
        json!({"text": "To all of you.", "cc_thread": true}),
    );
    wait_delivery(&d, t, "sent");
    reply(&d, &ann, t, json!({"text": "Just Carol."}));
    wait_for(Duration::from_secs(30), || {
        (relay.accepted_count() >= 2).then_some(())
    })
    .expect("both delivered");
    let rcpts = relay.rcpts.lock().expect("lock").clone();
    let bodies = relay.accepted.lock().expect("lock").clone();
    let (mut with_cc, mut without) = (None, None);
    for (r, b) in rcpts.iter().zip(&bodies) {
        let m = MessageParser::default().parse(b.as_slice()).expect("parse");
        let cc = m
            .cc()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string);
        if m.body_text(0).is_some_and(|t| t.contains("To all of you.")) {
            with_cc = Some((r.clone(), cc));
        } else {
            without = Some((r.clone(), cc));
        }
    }
    let (r, cc) = with_cc.expect("cc reply");
    assert_eq!(r, vec!["carol@customer.example", "dave@customer.example"]);
    assert_eq!(cc.as_deref(), Some("dave@customer.example"));
    let (r, cc) = without.expect("plain reply");
    assert_eq!(r, vec!["carol@customer.example"]);
    assert_eq!(cc, None);
}

/// SIGTERM while the relay is still answering a transaction: the daemon
/// waits for the answer, records `sent`, and exits cleanly.
#[test]
fn sigterm_finishes_the_send_in_flight() {
    let relay = ScriptedRelay::start(&["sleep:3000 250 2.0.0 slow but ok"]);
    let mut d = Daemon::start_relay("", &relay_keys(relay.port), PEOPLE);
    let t = support_ticket(&d, "Slow", "sl1@customer.example");
    reply(&d, &d.token("ann"), t, json!({"text": "Slowly."}));
    wait_for(Duration::from_secs(30), || {
        (relay.transactions.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .expect("transaction started");
    let status = d.stop();
    assert!(status.success(), "exit status {status}:\n{}", d.log_text());
    assert_eq!(relay.accepted_count(), 1);
    let m = outbound(&d, t).pop().expect("reply");
    assert_eq!(m["delivery"], "sent", "{m}");
}
