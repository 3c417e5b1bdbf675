//! The listener's protocol behaviour against a real socket: recipients,
//! relaying, limits, ordering, pipelining, STARTTLS, timeouts and SMTP
//! smuggling. Each check asserts the exact reply code.

mod common;

use std::time::Duration;

use common::smtp::{Client, message};
use common::{ACME, Daemon, swaks};

const T: Duration = Duration::from_secs(30);

fn ehlo(c: &mut Client) -> String {
    let (code, text) = c.cmd("EHLO client.example");
    assert_eq!(code, 250, "{text}");
    text
}

#[test]
fn recipients_and_relaying() {
    let d = Daemon::start("", ACME);
    let mut c = Client::connect(d.smtp);
    let caps = ehlo(&mut c);
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(caps.contains(ext), "EHLO lacks {ext}: {caps}");
    }
    assert!(
        !caps.contains("STARTTLS"),
        "STARTTLS offered without a certificate"
    );
    assert_eq!(c.cmd("MAIL FROM:<x@customer.example>").0, 250);
    let cases = [
        ("support@acme.example", 250),
        ("SUPPORT@Acme.Example", 250),
        ("support+billing@acme.example", 250),
        ("nobody@acme.example", 550),
        ("victim@gmail.example", 550),
        ("support@acme.example.evil.example", 550),
        ("\"support@acme.example\"@relay.example", 550),
        ("support%acme.example@relay.example", 550),
    ];
    for (rcpt, want) in cases {
        let (code, text) = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(code, want, "RCPT {rcpt}: {text}");
        if want == 550 {
            assert!(text.contains("5.1.1"), "{text}");
        }
    }
    assert_eq!(c.cmd("QUIT").0, 221);
}

#[test]
fn limits_size_recipients_line_length() {
    let d = Daemon::start("max_message_size = 10000\nmax_recipients = 3", ACME);
    let mut c = Client::connect(d.smtp);
    ehlo(&mut c);
    let (code, text) = c.cmd("MAIL FROM:<x@customer.example> SIZE=20000");
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("5.3.4"), "{text}");

    // Declared small, actually big: 552 after the data, nothing stored.
    assert_eq!(c.cmd("MAIL FROM:<x@customer.example>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<support@acme.example>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    let big = message(
        "x@customer.example",
        "support@acme.example",
        "big",
        "big@x",
        &"y".repeat(30000),
    );
    c.send(big.as_bytes());
    c.send(b"\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 552, "{text}");

    // Too many recipients.
    assert_eq!(c.cmd("RSET").0, 250);
    assert_eq!(c.cmd("MAIL FROM:<x@customer.example>").0, 250);
    for i in 0..3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<support+{i}@acme.example>")).0, 250);
    }
    let (code, text) = c.cmd("RCPT TO:<support+4@acme.example>");
    assert_eq!(code, 452, "{text}");

    // A command line over the limit.
    let (code, text) = c.cmd(&format!("NOOP {}", "z".repeat(5000)));
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("5.5.2") || text.contains("5.5.6"), "{text}");
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(
        status["store"]["spool_total"], 0,
        "nothing oversize was stored"
    );
}

#[test]
fn commands_out_of_order() {
    let d = Daemon::start("", ACME);
    let mut c = Client::connect(d.smtp);
    let (code, text) = c.cmd("MAIL FROM:<x@customer.example>");
    assert_eq!(code, 503, "MAIL before EHLO: {text}");
    ehlo(&mut c);
    assert_eq!(
        c.cmd("RCPT TO:<support@acme.example>").0,
        503,
        "RCPT before MAIL"
    );
    assert_eq!(c.cmd("DATA").0, 503, "DATA before MAIL");
    assert_eq!(c.cmd("MAIL FROM:<x@customer.example>").0, 250);
    assert_eq!(
        c.cmd("MAIL FROM:<x@customer.example>").0,
        503,
        "nested MAIL"
    );
    assert_eq!(c.cmd("DATA").0, 503, "DATA without a recipient");
    let (code, _) = c.cmd("FROB nicate");
    assert_eq!(code, 500, "unknown command");
}

#[test]
fn pipelined_session() {
    let d = Daemon::start("", ACME);
    let mut c = Client::connect(d.smtp);
    let body = message(
        "p@customer.example",
        "support@acme.example",
        "Pipelined",
        "pipe-1@customer.example",
        "hello",
    );
    c.send("EHLO client.example\r\nMAIL FROM:<p@customer.example>\r\nRCPT TO:<support@acme.example>\r\nRCPT TO:<nobody@acme.example>\r\nDATA\r\n".as_bytes());
    let codes: Vec<u16> = (0..5).map(|_| c.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 550, 354]);
    c.send(format!("{body}\r\n.\r\nQUIT\r\n").as_bytes());
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.reply().0, 221);
    let tickets = d.wait_tickets(1, T);
    assert_eq!(tickets[0]["subject"], "Pipelined");
}

#[test]
fn bare_lf_dot_does_not_end_the_message() {
    let d = Daemon::start("", ACME);
    let mut c = Client::connect(d.smtp);
    ehlo(&mut c);
    // An SMTP smuggling attempt: `\n.\n` then a second transaction, inside one DATA.
    let body = "From: s@customer.example\r\nTo: support@acme.example\r\nSubject: Smuggle\r\nMessage-ID: <smuggle-1@customer.example>\r\n\r\nfirst part\n.\nMAIL FROM:<evil@customer.example>\r\nRCPT TO:<support@acme.example>\r\nDATA\r\nSubject: Smuggled\r\n\r\nsecond\r\n.\r.\r\nend";
    let (code, text) = c.mail("s@customer.example", &["support@acme.example"], body);
    assert_eq!(code, 250, "{text}");
    // The connection is still in sync: the next command gets its own reply.
    assert_eq!(c.cmd("NOOP").0, 250);
    d.wait_ingested(T);
    let tickets = d.tickets();
    assert_eq!(
        tickets.len(),
        1,
        "exactly one message, one ticket: {tickets:?}"
    );
    assert_eq!(tickets[0]["subject"], "Smuggle");
    let shown = d.ticket(1);
    let text = shown["messages"][0]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("Smuggled"),
        "the smuggled part stays inside the body: {text:?}"
    );
}

#[test]
fn dot_stuffing_is_undone() {
    let d = Daemon::start("", ACME);
    let mut c = Client::connect(d.smtp);
    ehlo(&mut c);
    let body = "From: s@customer.example\r\nTo: support@acme.example\r\nSubject: Dots\r\n\r\n..leading dot line\r\n...\r\nend";
    assert_eq!(
        c.mail("s@customer.example", &["support@acme.example"], body)
            .0,
        250
    );
    d.wait_tickets(1, T);
    let text = d.ticket(1)["messages"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.contains("\n.leading dot line") || text.starts_with(".leading dot line"),
        "{text:?}"
    );
    assert!(
        text.contains("\n..\n") || text.contains("\r\n..\r\n"),
        "{text:?}"
    );
}

#[test]
fn idle_timeout_closes_with_421() {
    let d = Daemon::start("idle_timeout_secs = 1", ACME);
    let mut c = Client::connect(d.smtp);
    ehlo(&mut c);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert_eq!(c.reply().0, 0, "connection closed after 421");
}

#[test]
fn starttls_with_test_certificate() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls");
    let extra = format!("tls_cert = \"{fixtures}/cert.pem\"\ntls_key = \"{fixtures}/key.pem\"");
    let d = Daemon::start(&extra, ACME);
    let mut c = Client::connect(d.smtp);
    assert!(ehlo(&mut c).contains("STARTTLS"));
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--tls",
            "--from",
            "t@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Over TLS",
            "--body",
            "encrypted",
        ],
    );
    assert!(ok, "swaks --tls failed:\n{out}");
    assert!(out.contains("TLS started"), "{out}");
    let tickets = d.wait_tickets(1, T);
    assert_eq!(tickets[0]["subject"], "Over TLS");
}

/// The attack of many stalled transfers, over a real socket with the keys read
/// from the file: a BDAT chunk over `max_inflight_bytes` gets `452 4.3.1`; the
/// stalled sender holding the budget is cut by `data_timeout_secs` (`421
/// 4.4.2`), its budget comes back (the gauge says 0) and the refused sender's
/// next message is accepted.
#[test]
fn inflight_budget_and_data_timeout() {
    let d = Daemon::start(
        "max_message_size = 100000\nmax_inflight_bytes = 150000\ndata_timeout_secs = 2",
        ACME,
    );
    let open = |c: &mut Client| {
        ehlo(c);
        assert_eq!(c.cmd("MAIL FROM:<x@customer.example>").0, 250);
        assert_eq!(c.cmd("RCPT TO:<support@acme.example>").0, 250);
    };
    let mut holder = Client::connect(d.smtp);
    open(&mut holder);
    holder.send(format!("BDAT 100000\r\n{}", "a".repeat(100_000)).as_bytes());
    assert_eq!(holder.reply().0, 250);

    let mut c = Client::connect(d.smtp);
    open(&mut c);
    c.send(format!("BDAT 60000 LAST\r\n{}", "b".repeat(60_000)).as_bytes());
    let (code, text) = c.reply();
    assert!(text.starts_with("452 4.3.1"), "{code} {text}");

    let (code, text) = holder.reply();
    assert!(text.starts_with("421 4.4.2"), "{code} {text}");
    let (_, m) = d.api("GET", "/metrics", None, None);
    let metrics = m.as_str().unwrap_or("");
    assert!(
        metrics.contains("postdesk_smtp_inflight_bytes 0\n"),
        "{metrics}"
    );
    let body = message(
        "x@customer.example",
        "support@acme.example",
        "after",
        "b1@x",
        "hello",
    );
    let (code, text) = c.mail("x@customer.example", &["support@acme.example"], &body);
    assert_eq!(code, 250, "{text}");
}
