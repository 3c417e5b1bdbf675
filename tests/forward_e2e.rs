//! Who really wrote it, end to end through SMTP: forwards by team members,
//! the per-channel toggle, fake forwards by outsiders, Google Groups,
//! out-of-office replies and bounces — with the decision visible in
//! `tickets show --json` and `postdesk resolve`.

mod common;

use std::time::Duration;

use common::smtp::send_file;
use common::{ACME, Daemon, messages};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/fixtures/forwards/{name}.eml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config() -> String {
    format!(
        "{ACME}
[[channels]]
id = \"raw\"
kind = \"forward\"
address = \"raw@acme.example\"
original_sender_of_forwards = false

[[channels]]
id = \"group\"
kind = \"forward\"
address = \"group@acme.example\"
forwarders = [\"support-group@googlegroups.com\"]
"
    )
}

/// The upstream MTA: the test itself on 127.0.0.1, a trusted relay whose
/// Authentication-Results say the team's and the group's mail passed.
const RELAY: &str = "trusted_relays = [\"127.0.0.1/32\"]\nauthserv_id = \"mx.test.example\"";
const PASSED: &str = "Authentication-Results: mx.test.example; dkim=pass header.d=acme.example; dkim=pass header.d=googlegroups.com\r\n";

/// Deliver one fixture (as the trusted relay, which checked it) and return
/// the ticket it landed in.
fn deliver(d: &Daemon, name: &str, mail_from: &str, rcpt: &str) -> Value {
    let before = d.tickets().len();
    let mut raw = PASSED.as_bytes().to_vec();
    raw.extend(fixture(name));
    let (code, text) = send_file(d.smtp, mail_from, rcpt, &raw);
    assert_eq!(code, 250, "{name}: {text}");
    let tickets = d.wait_tickets(before + 1, T);
    let newest = tickets
        .iter()
        .max_by_key(|t| t["number"].as_i64())
        .expect("a ticket");
    d.ticket(newest["number"].as_i64().expect("number"))
}

#[test]
fn forwarded_mail_belongs_to_the_customer_with_the_note_kept() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(
        &d,
        "001-gmail-en",
        "ann@acme.example",
        "support@acme.example",
    );
    assert_eq!(t["contact"]["email"], "john.carter@example.com");
    assert_eq!(t["contact"]["name"], "John Carter");
    assert_eq!(
        t["subject"], "Invoice 4471 is wrong",
        "the customer's subject, prefix removed"
    );
    let msgs = messages(&t);
    let inbound = msgs
        .iter()
        .find(|m| m["direction"] == "inbound")
        .expect("inbound");
    assert_eq!(inbound["sender_resolution"]["method"], "body:gmail");
    assert_eq!(
        inbound["sender_resolution"]["forwarder"]["email"],
        "ann@acme.example"
    );
    assert!(
        inbound["text"]
            .as_str()
            .unwrap_or("")
            .contains("we only ordered 10"),
        "{inbound}"
    );
    assert!(
        !inbound["text"]
            .as_str()
            .unwrap_or("")
            .contains("Can someone take this one"),
        "the note is not the customer's text"
    );
    let note = msgs
        .iter()
        .find(|m| m["direction"] == "note")
        .expect("the forwarder's note is an internal note");
    assert!(
        note["text"]
            .as_str()
            .unwrap_or("")
            .contains("Can someone take this one?"),
        "{note}"
    );
    // The note is from Ann's address, not the customer's (it was stored
    // with the customer's as its sender); no author, as the From header
    // that names her can be forged.
    assert_eq!(note["from"], "ann@acme.example", "{note}");
    assert!(note["author"].is_null(), "{note}");
    let number = t["number"].as_i64().expect("number").to_string();
    let shown =
        String::from_utf8_lossy(&d.cli_ok(&["tickets", "show", &number]).stdout).into_owned();
    // The text listings: numbers right-aligned under NUMBER, and a header
    // on the contacts list.
    let list = String::from_utf8_lossy(&d.cli_ok(&["tickets", "list"]).stdout).into_owned();
    let header = list.lines().next().unwrap_or("");
    let row = list.lines().nth(1).unwrap_or("");
    assert_eq!(
        header.find("NUMBER").map(|i| i + "NUMBER".len()),
        row.find(&format!("{number} ")).map(|i| i + number.len()),
        "{list}"
    );
    let contacts = String::from_utf8_lossy(&d.cli_ok(&["contacts", "list"]).stdout).into_owned();
    assert!(contacts.starts_with("EMAIL "), "{contacts}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("--- note from ann@acme.example at 20")),
        "{shown}"
    );
    let contacts = d.cli_json(&["contacts", "list", "--json"]);
    assert!(
        contacts
            .as_array()
            .expect("array")
            .iter()
            .all(|c| c["email"] != "ann@acme.example"),
        "the forwarder does not become a contact: {contacts}"
    );
}

#[test]
fn toggle_off_gives_the_ticket_to_the_forwarder() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(&d, "001-gmail-en", "ann@acme.example", "raw@acme.example");
    assert_eq!(t["channel"], "raw");
    assert_eq!(t["contact"]["email"], "ann@acme.example");
    assert_eq!(messages(&t)[0]["sender_resolution"]["method"], "forwarder");
}

#[test]
fn an_outsiders_fake_forward_stays_with_the_outsider() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(
        &d,
        "111-negative-en",
        "mallory@evil.example",
        "support@acme.example",
    );
    assert_eq!(t["contact"]["email"], "mallory@evil.example");
    let r = &messages(&t)[0]["sender_resolution"];
    assert_eq!(r["method"], "from");
    assert_eq!(r["forwarder"], Value::Null);
}

#[test]
fn google_groups_mail_belongs_to_the_original_author() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(
        &d,
        "084-group-en",
        "support-group+bncBD@googlegroups.com",
        "group@acme.example",
    );
    assert_eq!(t["contact"]["email"], "maria.garcia@example.mx");
    let r = &messages(&t)[0]["sender_resolution"];
    assert_eq!(r["method"], "list:x-original-from");
    let contacts = d.cli_json(&["contacts", "list", "--json"]);
    assert!(
        contacts
            .as_array()
            .expect("array")
            .iter()
            .all(|c| c["email"] != "support-group@googlegroups.com"),
        "the group does not become one giant contact"
    );
}

/// Google Groups writes a non-ASCII author's name as an encoded word in
/// X-Original-From (a header mail-parser keeps as text): the contact gets the
/// decoded name.
#[test]
fn a_google_group_authors_encoded_name_is_decoded() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(
        &d,
        "120-group-de",
        "support-group+bncBD@googlegroups.com",
        // The channel the group forwards to, which names it as a forwarder.
        "group@acme.example",
    );
    assert_eq!(t["contact"]["email"], "juergen.weiss@beispiel.at");
    assert_eq!(t["contact"]["name"], "Jürgen Weiß", "{t}");
}

#[test]
fn out_of_office_and_bounces_are_stored_and_flagged() {
    let d = Daemon::start(RELAY, &config());
    let t = deliver(
        &d,
        "089-ooo-en",
        "john.carter@example.com",
        "support@acme.example",
    );
    let m = &messages(&t)[0];
    assert_eq!(m["classification"]["kind"], "auto_reply", "{m}");
    let t = deliver(&d, "097-bounce-en", "", "support@acme.example");
    let m = &messages(&t)[0];
    assert_eq!(m["classification"]["kind"], "bounce", "{m}");
    let dsn = &m["classification"]["dsn"];
    assert!(
        dsn["recipients"].as_array().is_some_and(|r| !r.is_empty()),
        "DSN parsed: {dsn}"
    );
    assert!(
        dsn["recipients"][0]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with('5'),
        "{dsn}"
    );
}

#[test]
fn resolve_command_explains_the_decision_without_storing() {
    let d = Daemon::start(RELAY, &config());
    let path = format!(
        "{}/fixtures/forwards/001-gmail-en.eml",
        env!("CARGO_MANIFEST_DIR")
    );
    let v = d.cli_json(&["resolve", &path, "--json"]);
    assert_eq!(v["contact"]["email"], "john.carter@example.com");
    assert_eq!(v["forwarder"]["email"], "ann@acme.example");
    assert_eq!(v["method"], "body:gmail");
    assert_eq!(v["classification"]["kind"], "normal");
    assert!(v["confidence"].as_f64().is_some_and(|c| c > 0.5));
    // Two decimals, not the f32's 0.8999999761581421.
    let written = v["confidence"].to_string();
    assert!(written.len() <= 4, "{written}");
    // From standard input, on the toggle-off channel.
    let out = std::process::Command::new(common::BIN)
        .args(["--config"])
        .arg(&d.config)
        .args(["resolve", "-", "--channel", "raw", "--json"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["contact"]["email"], "ann@acme.example");
    assert_eq!(
        d.cli_json(&["status", "--json"])["store"]["spool_total"],
        0,
        "resolve stores nothing"
    );
}
