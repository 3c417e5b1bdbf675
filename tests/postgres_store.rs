//! The daemon on a PostgreSQL store, end to end: a private cluster, a
//! config with `[store] kind = "postgres"` and its URL in a 0600 file;
//! `check --connect` reaches it; mail sent with swaks becomes a ticket the
//! HTTP API and the CLI show; the daemon restarted on the same database
//! keeps it (migrations run once).

mod common;

use std::time::Duration;

use common::pg::Cluster;
use common::{ACME, Daemon, free_port, swaks};

/// A daemon on `url`'s database, its config in a temp dir.
fn daemon_on(url: &str) -> Daemon {
    common::pg::daemon_on(url, "", None, ACME)
}

#[test]
fn mail_becomes_a_ticket_on_postgres_and_survives_a_restart() {
    let cluster = Cluster::start();
    let mut d = daemon_on(&cluster.url("postdesk"));

    let out = d.cli(&["check", "--connect"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("store: PostgreSQL 1"), "{stdout}");

    d.spawn();
    let (ok, log) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Printer on fire",
            "--body",
            "Room 4, please hurry.",
        ],
    );
    assert!(ok, "{log}");
    let tickets = d.wait_tickets(1, Duration::from_secs(60));
    assert_eq!(tickets[0]["subject"], "Printer on fire");
    assert_eq!(tickets[0]["contact"]["email"], "carol@customer.example");

    // Through the HTTP API, with a token the CLI stored in PostgreSQL.
    let token = d.token("ann");
    let (status, body) = d.api("GET", "/api/v1/tickets/1", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "Printer on fire");
    assert!(
        body["messages"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Room 4, please hurry.")),
        "{body}"
    );
    // The rows are in PostgreSQL, not in a SQLite file.
    assert_eq!(
        cluster.psql("postdesk", "SELECT COUNT(*) FROM tickets"),
        "1"
    );
    assert!(!d.dir.path().join("var/postdesk.sqlite").exists());

    d.stop();
    d.spawn();
    let (ok, log) = swaks(
        d.smtp,
        &[
            "--from",
            "dave@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Second",
            "--body",
            "hello",
        ],
    );
    assert!(ok, "{log}");
    let tickets = d.wait_tickets(2, Duration::from_secs(60));
    assert_eq!(tickets.len(), 2);
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*), COUNT(DISTINCT version) FROM postdesk_schema"
        ),
        cluster.psql(
            "postdesk",
            "SELECT MAX(version), MAX(version) FROM postdesk_schema"
        )
    );
}

/// An unreachable database: `check` passes (it does not connect),
/// `check --connect` exits 1 saying why, never with the password.
#[test]
fn an_unreachable_database_is_reported_by_check_connect() {
    let port = free_port();
    let d = daemon_on(&format!(
        "postgresql://postdesk:s3cret@127.0.0.1:{port}/postdesk"
    ));
    let out = d.cli(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["check", "--connect"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store "), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
}

/// NUL characters — raw in a body, encoded in a subject, a sender's name,
/// an HTML part and a forwarded message's From line — cannot be stored in
/// PostgreSQL's text: a stranger must not be able to make their mail fail
/// (or a ticket unreadable) by writing them. They become U+FFFD, on either
/// backend, and the ticket reads back.
#[test]
fn nul_characters_from_a_stranger_become_replacement_characters() {
    let cluster = Cluster::start();
    let mut d = daemon_on(&cluster.url("postdesk"));
    d.spawn();
    let raw: &[u8] = b"From: =?utf-8?B?TWFsAGxvcnk=?= <mallory@evil.example>\r\n\
To: support@acme.example\r\n\
Subject: =?utf-8?B?T3JkZXIAIDQ0NzE=?=\r\n\
Message-ID: <nul-1@evil.example>\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Cancel\0 it.\r\n\
---------- Forwarded message ---------\r\n\
From: Eve\0 Null <eve@evil.example>\r\n\
--b\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PHA+Q2FuY2VsAGl0LjwvcD4=\r\n\
--b--\r\n";
    let (code, text) =
        common::smtp::send_file(d.smtp, "mallory@evil.example", "support@acme.example", raw);
    assert_eq!(code, 250, "{text}");
    let tickets = d.wait_tickets(1, Duration::from_secs(60));
    assert_eq!(tickets[0]["subject"], "Order\u{fffd} 4471", "{tickets:?}");
    let n = tickets[0]["number"].as_i64().expect("number");
    let token = d.token("ann");
    let (status, t) = d.api("GET", &format!("/api/v1/tickets/{n}"), Some(&token), None);
    assert_eq!(status, 200, "{t}");
    let m = &common::messages(&t)[0];
    assert!(
        m["text"]
            .as_str()
            .is_some_and(|s| s.starts_with("Cancel\u{fffd} it.")),
        "{m}"
    );
    assert_eq!(m["from_name"], "Mal\u{fffd}lory", "{m}");
    assert_eq!(m["html"], "<p>Cancel\u{fffd}it.</p>", "{m}");
    let log = d.log_text();
    assert!(!log.contains("0x00"), "{log}");
}
