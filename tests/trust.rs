//! Trust, end to end through SMTP: what a stranger who can send mail to the
//! listener can no longer do — join a ticket by its number, choose a
//! ticket's customer with group headers, pass for a team member with a
//! forged From, rename a customer — and what authenticated mail still does:
//! a trusted relay's Authentication-Results, and our own DKIM/SPF checks
//! against a real DNS server (dnsmasq) serving the keys.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::smtp::{message, send_file};
use common::{ACME, Daemon, free_port, messages};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn channels() -> String {
    format!(
        "{ACME}
[[channels]]
id = \"group\"
kind = \"forward\"
address = \"group@acme.example\"
forwarders = [\"support-group@googlegroups.com\"]
"
    )
}

/// Deliver `raw` and return the newest ticket once ingested.
fn deliver(d: &Daemon, mail_from: &str, rcpt: &str, raw: &str) -> Value {
    let before = d.tickets().len();
    let (code, text) = send_file(d.smtp, mail_from, rcpt, raw.as_bytes());
    assert_eq!(code, 250, "{text}");
    d.wait_tickets(before + 1, T);
    newest(d)
}

/// Deliver `raw`, expecting it to continue a ticket (no new one).
fn deliver_into(d: &Daemon, mail_from: &str, raw: &str, ticket: i64) -> Value {
    let count = |d: &Daemon| messages(&d.ticket(ticket)).len();
    let before = count(d);
    let (code, text) = send_file(d.smtp, mail_from, "support@acme.example", raw.as_bytes());
    assert_eq!(code, 250, "{text}");
    common::wait_for(T, || (count(d) > before).then_some(()))
        .unwrap_or_else(|| panic!("not threaded into #{ticket}: {:?}", d.tickets()));
    d.ticket(ticket)
}

fn newest(d: &Daemon) -> Value {
    let n = d
        .tickets()
        .iter()
        .filter_map(|t| t["number"].as_i64())
        .max()
        .expect("a ticket");
    d.ticket(n)
}

fn inbound(t: &Value) -> &Value {
    messages(t)
        .iter()
        .find(|m| m["direction"] == "inbound")
        .expect("an inbound message")
}

fn participants(t: &Value) -> Vec<String> {
    t["participants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["email"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A forward by "Ann" of a customer's mail (Gmail's layout).
fn forward_by_ann(from_header: &str, customer: &str, id: &str) -> String {
    format!(
        "From: {from_header}\r\nTo: support@acme.example\r\nSubject: Fwd: Refund please\r\nMessage-ID: <{id}>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nCan someone take this?\r\n\r\n---------- Forwarded message ---------\r\nFrom: Victor Victim <{customer}>\r\nDate: Thu, Dec 3, 2026 at 9:12 AM\r\nSubject: Refund please\r\nTo: <ann@acme.example>\r\n\r\nPlease refund order 5521 to my new account.\r\n"
    )
}

#[test]
fn a_strangers_ticket_number_opens_a_ticket_of_its_own() {
    let d = Daemon::start("", &channels());
    let first = deliver(
        &d,
        "carol@customer.example",
        "support@acme.example",
        &message(
            "Carol Cooper <carol@customer.example>",
            "support@acme.example",
            "Printer on fire",
            "c1@customer.example",
            "Room 4.",
        ),
    );
    let n = first["number"].as_i64().expect("number");
    // The attack: "Re: anything [#N]" from someone else.
    let forged = message(
        "mallory@evil.example",
        "support@acme.example",
        &format!("Re: anything [#{n}]"),
        "m1@evil.example",
        "Add me to the thread.",
    );
    let t = deliver(&d, "mallory@evil.example", "support@acme.example", &forged);
    assert_ne!(t["number"].as_i64(), Some(n), "not threaded into #{n}");
    assert_eq!(t["contact"]["email"], "mallory@evil.example");
    let note = inbound(&t)["thread_note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(note.contains(&format!("mentions #{n}")), "{note:?}");
    // Naming the customer's own Message-ID does not let them in either.
    let by_id = "From: mallory@evil.example\r\nTo: support@acme.example\r\nSubject: hello\r\nIn-Reply-To: <c1@customer.example>\r\nMessage-ID: <m2@evil.example>\r\n\r\nme too\r\n".to_string();
    let t2 = deliver(&d, "mallory@evil.example", "support@acme.example", &by_id);
    assert_ne!(t2["number"].as_i64(), Some(n));
    // Nor does a forged From of our own address (the customer addressed
    // support@, so it stands in the ticket's To).
    let ours = message(
        "support@acme.example",
        "support@acme.example",
        &format!("Re: Printer on fire [#{n}]"),
        "o1@evil.example",
        "From us, honest.",
    );
    let t3 = deliver(&d, "mallory@evil.example", "support@acme.example", &ours);
    assert_ne!(t3["number"].as_i64(), Some(n), "{t3}");
    assert_eq!(t3["contact"]["email"], "mallory@evil.example", "{t3}");
    let t1 = d.ticket(n);
    assert!(participants(&t1).is_empty(), "{t1}");
    assert_eq!(messages(&t1).len(), 1);

    // The customer continues with the bare tag.
    let own = message(
        "carol@customer.example",
        "support@acme.example",
        &format!("Re: Printer on fire [#{n}]"),
        "c2@customer.example",
        "Still burning.",
    );
    deliver_into(&d, "carol@customer.example", &own, n);

    // An agent's reply carries the ticket's secret; whoever the customer
    // passes it to may answer with it (and becomes a participant).
    d.cli_ok(&[
        "reply",
        &n.to_string(),
        "--as",
        "ann",
        "--text",
        "On our way.",
    ]);
    let t1 = d.ticket(n);
    let out = messages(&t1)
        .iter()
        .find(|m| m["direction"] == "outbound")
        .expect("the reply");
    let subject = out["subject"].as_str().expect("subject").to_string();
    let tag_start = subject
        .find(&format!("[#{n}-"))
        .expect("a tag with a secret");
    let tag = &subject[tag_start..];
    assert!(tag.len() > format!("[#{n}-]").len() + 3, "{subject}");
    let with_secret = message(
        "dave@customer.example",
        "support@acme.example",
        &format!("Re: Printer on fire {tag}"),
        "d1@customer.example",
        "Carol asked me to follow up.",
    );
    let t1 = deliver_into(&d, "dave@customer.example", &with_secret, n);
    assert_eq!(participants(&t1), ["dave@customer.example"]);
    // The secret is checked, not just its shape.
    let guessed = message(
        "eve@evil.example",
        "support@acme.example",
        &format!("Re: x [#{n}-aaaaaaaa]"),
        "e1@evil.example",
        "guess",
    );
    let t3 = deliver(&d, "eve@evil.example", "support@acme.example", &guessed);
    assert_ne!(t3["number"].as_i64(), Some(n));
    assert_eq!(participants(&d.ticket(n)), ["dave@customer.example"]);
}

#[test]
fn a_strangers_group_headers_do_not_choose_the_customer() {
    let d = Daemon::start("", &channels());
    // Anyone writing X-Original-From.
    let raw = "From: Mallory <mallory@evil.example>\r\nTo: group@acme.example\r\nX-Original-From: CEO <ceo@victim.example>\r\nX-Original-Sender: ceo@victim.example\r\nReply-To: ceo@victim.example\r\nSubject: Wire transfer\r\nMessage-ID: <x1@evil.example>\r\n\r\nplease\r\n";
    let t = deliver(&d, "mallory@evil.example", "group@acme.example", raw);
    assert_eq!(t["contact"]["email"], "mallory@evil.example");
    let r = &inbound(&t)["sender_resolution"];
    assert_eq!(r["claimed_original"]["email"], "ceo@victim.example");
    assert!(
        r["distrusted"]
            .as_str()
            .is_some_and(|s| s.contains("X-Original-From")),
        "{r}"
    );
    // The configured group's address, forged (no trusted relay, no DNS).
    let raw = "From: \"'CEO' via Support\" <support-group@googlegroups.com>\r\nTo: group@acme.example\r\nX-Original-From: CEO <ceo@victim.example>\r\nSubject: Wire transfer 2\r\nMessage-ID: <x2@evil.example>\r\n\r\nplease\r\n";
    let t = deliver(&d, "mallory@evil.example", "group@acme.example", raw);
    assert_eq!(t["contact"]["email"], "mallory@evil.example", "{t}");
    assert!(participants(&t).is_empty());
}

#[test]
fn a_forged_team_from_with_a_forward_block_is_the_forgers() {
    let d = Daemon::start("", &channels());
    let raw = forward_by_ann(
        "Ann Agent <ann@acme.example>",
        "victor@victim.example",
        "f1@evil.example",
    );
    let t = deliver(&d, "mallory@evil.example", "support@acme.example", &raw);
    assert_eq!(t["contact"]["email"], "mallory@evil.example", "{t}");
    assert_ne!(t["contact"]["email"], "victor@victim.example");
    let r = &inbound(&t)["sender_resolution"];
    assert_eq!(r["method"], "envelope");
    assert_eq!(r["claimed_original"]["email"], "victor@victim.example");
    let why = r["distrusted"].as_str().unwrap_or_default();
    assert!(
        why.contains("ann@acme.example is a team address") && why.contains("not authenticated"),
        "{why}"
    );
    assert!(participants(&t).is_empty());
    // `resolve --peer` explains the same decision to the admin; without
    // --peer the file is judged as if a trusted relay had passed it.
    let file = d.dir.path().join("forged.eml");
    std::fs::write(&file, &raw).expect("write");
    let path = file.to_str().expect("utf-8");
    let judged = d.cli_json(&["resolve", path, "--peer", "192.0.2.7", "--json"]);
    assert_eq!(judged["contact"]["email"], "ann@acme.example");
    assert!(judged["distrusted"].as_str().is_some(), "{judged}");
    let assumed = d.cli_json(&["resolve", path, "--json"]);
    assert_eq!(assumed["contact"]["email"], "victor@victim.example");
    assert!(assumed["distrusted"].is_null(), "{assumed}");
}

#[test]
fn a_forged_mail_does_not_rename_the_customer() {
    let d = Daemon::start("", &channels());
    deliver(
        &d,
        "carol@customer.example",
        "support@acme.example",
        &message(
            "Carol Cooper <carol@customer.example>",
            "support@acme.example",
            "Hello",
            "n1@customer.example",
            "hi",
        ),
    );
    deliver(
        &d,
        "mallory@evil.example",
        "support@acme.example",
        &message(
            "Carol The Fool <carol@customer.example>",
            "support@acme.example",
            "Other",
            "n2@evil.example",
            "hi",
        ),
    );
    let contacts = d.cli_json(&["contacts", "list", "--json"]);
    let carol = contacts
        .as_array()
        .and_then(|a| a.iter().find(|c| c["email"] == "carol@customer.example"))
        .expect("carol");
    assert_eq!(carol["name"], "Carol Cooper");
}

/// Through a trusted relay (here: the test itself on 127.0.0.1), the
/// relay's topmost Authentication-Results decide; another server's, or
/// one below it, do not.
#[test]
fn a_trusted_relays_results_authenticate_a_team_forward() {
    let d = Daemon::start(
        "trusted_relays = [\"127.0.0.1/32\"]\nauthserv_id = \"mx.acme.example\"",
        &channels(),
    );
    let pass = "Authentication-Results: mx.acme.example;\r\n dkim=pass header.d=acme.example header.s=s1;\r\n dmarc=pass (p=reject) header.from=acme.example\r\n";
    let raw = format!(
        "{pass}{}",
        forward_by_ann(
            "Ann Agent <ann@acme.example>",
            "john@customer.example",
            "a1@acme.example"
        )
    );
    let t = deliver(&d, "ann@acme.example", "support@acme.example", &raw);
    assert_eq!(t["contact"]["email"], "john@customer.example");
    let r = &inbound(&t)["sender_resolution"];
    assert_eq!(r["forwarder"]["email"], "ann@acme.example");
    assert!(
        r["authentication"]["by"]
            .as_str()
            .is_some_and(|b| b.contains("trusted relay 127.0.0.1")),
        "{r}"
    );
    // A header of another server, or the sender's own under the relay's.
    for (n, forged) in [
        "Authentication-Results: mx.evil.example; dmarc=pass header.from=acme.example\r\n".to_string(),
        format!(
            "Authentication-Results: mx.acme.example; dmarc=fail header.from=acme.example\r\nReceived: from evil\r\n{pass}"
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = format!(
            "{forged}{}",
            forward_by_ann(
                "Ann Agent <ann@acme.example>",
                "john@customer.example",
                &format!("a{}@evil.example", n + 2)
            )
        );
        let t = deliver(&d, "ann@acme.example", "support@acme.example", &raw);
        assert_eq!(t["contact"]["email"], "ann@acme.example", "case {n}: {t}");
        assert!(inbound(&t)["sender_resolution"]["distrusted"].is_string());
    }
}

/// dnsmasq on a free port serving TXT records; stopped on drop.
struct Dns {
    child: Child,
    addr: SocketAddr,
}

impl Dns {
    fn start(records: &[(&str, String)]) -> Option<Dns> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--log-facility=-",
            &format!("--port={port}"),
        ]);
        if running_as_root() {
            cmd.arg("--user=root");
        }
        for (name, text) in records {
            // dnsmasq splits long strings into 255-byte pieces itself.
            cmd.arg(format!("--txt-record={name},{text}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        // Wait until it answers on TCP (it listens on both).
        common::wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        })?;
        Some(Dns { child, addr })
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn dkim_sign(pkcs8: &[u8], raw: &str) -> String {
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter as _;
    use mail_auth::dkim::DkimSigner;
    let key = Ed25519Key::from_pkcs8_der(pkcs8).expect("key");
    let sig = DkimSigner::from_key(key)
        .domain("acme.example")
        .selector("s1")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(raw.as_bytes())
        .expect("sign");
    format!("{}{raw}", sig.to_header())
}

/// No trusted relay: a team member's forward counts when its DKIM
/// signature verifies against the key in DNS (or SPF passes for the
/// client's address); a forged one, or a tampered body, does not.
#[test]
fn our_own_dkim_and_spf_checks_authenticate_a_team_forward() {
    use base64::Engine as _;
    use mail_auth::common::crypto::Ed25519Key;
    let der = Ed25519Key::generate_pkcs8().expect("generate");
    let key = Ed25519Key::from_pkcs8_der(&der).expect("key");
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    let Some(dns) = Dns::start(&[
        (
            "s1._domainkey.acme.example",
            format!("v=DKIM1; k=ed25519; p={public}"),
        ),
        ("acme.example", "v=spf1 -all".to_string()),
        ("_dmarc.acme.example", "v=DMARC1; p=reject".to_string()),
        ("partner.example", "v=spf1 ip4:127.0.0.1 -all".to_string()),
    ]) else {
        panic!("dnsmasq is needed (scripts/test installs dnsmasq-base)");
    };
    let cfg = format!(
        "{}\n[[channels]]\nid = \"partner\"\nkind = \"forward\"\naddress = \"partner@acme.example\"\nforwarders = [\"desk@partner.example\"]\n",
        channels()
    );
    let d = Daemon::start(&format!("dns_resolver = \"{}\"", dns.addr), &cfg);

    let signed = dkim_sign(
        &der,
        &forward_by_ann(
            "Ann Agent <ann@acme.example>",
            "john@customer.example",
            "k1@acme.example",
        ),
    );
    let t = deliver(&d, "ann@acme.example", "support@acme.example", &signed);
    assert_eq!(t["contact"]["email"], "john@customer.example", "{t}");
    let by = inbound(&t)["sender_resolution"]["authentication"]["by"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(by.contains("dkim pass d=acme.example"), "{by}");

    // The same signature over a changed body: no longer Ann's.
    let tampered = dkim_sign(
        &der,
        &forward_by_ann(
            "Ann Agent <ann@acme.example>",
            "john@customer.example",
            "k2@acme.example",
        ),
    )
    .replace("order 5521", "order 9999");
    let t = deliver(
        &d,
        "mallory@evil.example",
        "support@acme.example",
        &tampered,
    );
    assert_eq!(t["contact"]["email"], "mallory@evil.example", "{t}");

    // A forwarder whose SPF record names the client's address: its
    // envelope sender is proven, and its forward counts.
    let partner = "From: Partner Desk <desk@partner.example>\r\nTo: partner@acme.example\r\nSubject: Fwd: Broken\r\nMessage-ID: <p1@partner.example>\r\n\r\n---------- Forwarded message ---------\r\nFrom: Jane Doe <jane@customer.example>\r\nDate: Thu, Dec 3, 2026 at 9:12 AM\r\nSubject: Broken\r\nTo: <desk@partner.example>\r\n\r\nIt broke.\r\n".to_string();
    let t = deliver(&d, "desk@partner.example", "partner@acme.example", &partner);
    assert_eq!(t["contact"]["email"], "jane@customer.example", "{t}");
    // The same mail from an envelope SPF does not cover: not believed.
    let partner2 = partner.replace("p1@partner", "p2@partner");
    let t = deliver(
        &d,
        "bounce@elsewhere.example",
        "partner@acme.example",
        &partner2,
    );
    assert_ne!(t["contact"]["email"], "jane@customer.example", "{t}");
}
