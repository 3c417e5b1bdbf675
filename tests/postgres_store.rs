//! The daemon on a PostgreSQL store, end to end: a private cluster, a
//! config with `[store] kind = "postgres"` and its URL in a 0600 file;
//! `check --connect` reaches it; mail sent with swaks becomes a ticket the
//! HTTP API and the CLI show; the daemon restarted on the same database
//! keeps it (migrations run once).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::pg::Cluster;
use common::{ACME, Daemon, free_port, swaks};

/// A daemon on `url`'s database, its config in a temp dir.
fn daemon_on(url: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    let url_file = secrets.join("postgres-url");
    std::fs::write(&url_file, format!("{url}\n")).expect("url file");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let smtp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("postdesk.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"postgres\"\nurl_file = \"secrets/postgres-url\"\npool_size = 4\n\n\
             [smtp]\nlisten = [\"{smtp}\"]\nhostname = \"desk.acme.example\"\ndns_resolver = \"off\"\n\n\
             [http]\nlisten = \"{http}\"\n\n[relay]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n{ACME}\n"
        ),
    )
    .expect("config");
    let log = dir.path().join("daemon.log");
    Daemon {
        config,
        smtp: smtp.parse().expect("addr"),
        http: http.parse().expect("addr"),
        child: None,
        log,
        rust_log: "info,postdesk=debug".into(),
        env: Vec::new(),
        dir,
    }
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
