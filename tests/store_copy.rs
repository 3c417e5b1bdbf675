//! `postdesk store copy`: a SQLite store filled by the real daemon (mail
//! over SMTP, a note, a queued reply, tokens, an override, a contact owner,
//! a web password and session) copied into a private PostgreSQL cluster;
//! the daemon started on PostgreSQL answers the same, numbers the next
//! ticket after the last, and takes the old token and session. The copy
//! refuses while the daemon runs or anything holds the SQLite file open,
//! resumes after a kill -9, verifies again when run on a finished copy,
//! catches a row changed in PostgreSQL and refuses a database that holds
//! something else. TLS: the copy and the daemon reach a cluster serving
//! TLS with `sslmode=verify-full` and `[store] ca_file`; a wrong CA and a
//! wrong host name are refused, saying so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::http::request_header;
use common::pg::Cluster;
use common::pki::Pki;
use common::{ACME, BIN, Daemon, free_port, swaks, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The test users and channel, replies retried only after an hour (so no
/// attempt changes the outbox between the copy and the checks).
fn rest() -> String {
    format!("{ACME}\n[outbound]\nretry_base_secs = 3600\n")
}

fn send(d: &Daemon, from: &str, subject: &str) {
    let (ok, log) = swaks(
        d.smtp,
        &[
            "--from",
            from,
            "--to",
            "support@acme.example",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "The printer is on fire.",
        ],
    );
    assert!(ok, "{log}");
}

/// A configuration beside `d`'s, the same but for `[store]`: PostgreSQL at
/// `url` (in a 0600 file), with `[store]` keys `extra`.
fn postgres_config(d: &Daemon, url: &str, name: &str, extra: &str) -> PathBuf {
    let dir = d.dir.path();
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    let url_file = dir.join(format!("secrets/{name}-url"));
    std::fs::write(&url_file, format!("{url}\n")).expect("url file");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = std::fs::read_to_string(&d.config).expect("config");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines[1].starts_with("path = "), "{text}");
    lines[1] = format!("kind = \"postgres\"\nurl_file = \"secrets/{name}-url\"\n{extra}");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write config");
    path
}

/// `store copy` from `d`'s SQLite store into `to`'s.
fn copy(d: &Daemon, to: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["store", "copy", "--to-config", to.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    d.cli(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A daemon on `config` (beside `d`'s, on its ports: `d` is stopped).
fn daemon_on(d: &Daemon, config: PathBuf) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    Daemon {
        log: dir.path().join("daemon.log"),
        dir,
        config,
        smtp: d.smtp,
        http: d.http,
        child: None,
        rust_log: "info,postdesk=debug".into(),
        env: Vec::new(),
    }
}

/// The inbox page's status with `cookie` (200 signed in, 303 to /login not).
fn inbox_status(d: &Daemon, cookie: &str) -> u16 {
    request_header(d.http, "GET", "/", &[("Cookie", cookie)], None, None, "x").0
}

/// Which of the tickets "Case 0" to "Case 3" the inbox page (all open
/// tickets) lists when searching for `q` (URL-encoded) with `cookie`.
fn search_page(d: &Daemon, cookie: &str, q: &str) -> Vec<String> {
    let path = format!("/?view=open&q={q}");
    let (status, _, body) =
        request_header(d.http, "GET", &path, &[("Cookie", cookie)], None, None, "x");
    let page = body.as_str().unwrap_or_default().to_string();
    assert_eq!(status, 200, "{path}: {page}");
    (0..4)
        .map(|i| format!("Case {i}"))
        .filter(|c| page.contains(c.as_str()))
        .collect()
}

/// The searches both stores must answer alike: a body word (every
/// ticket), a contact's address, a sender's prefix with a subject word,
/// and words that all must match.
fn searches(d: &Daemon, cookie: &str) -> Vec<Vec<String>> {
    [
        "printer",
        "dave%40customer.example",
        "ERI+case",
        "printer+nowhere",
    ]
    .iter()
    .map(|q| search_page(d, cookie, q))
    .collect()
}

/// What the API says about everything the copy must carry over.
fn api_view(d: &Daemon, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/tickets",
        "/api/v1/tickets/1",
        "/api/v1/tickets/2",
        "/api/v1/tickets/3",
        "/api/v1/contacts",
        "/api/v1/users",
        "/api/v1/channels",
    ] {
        let (status, body) = d.api("GET", path, Some(token), None);
        assert_eq!(status, 200, "{path}: {body}");
        out.push(body);
    }
    out
}

/// A store with three tickets, a note, a reply tried once and queued,
/// tokens, bob away, a contact owner, ann's web password and a session.
fn filled_store() -> (Daemon, String, String) {
    let d = Daemon::start("", &rest());
    for (i, from) in [
        "carol@customer.example",
        "dave@customer.example",
        "erin@customer.example",
    ]
    .iter()
    .enumerate()
    {
        send(&d, from, &format!("Case {i}"));
    }
    d.wait_tickets(3, T);
    d.wait_ingested(T);
    let admin = d.admin_token("ann");
    let (status, body) = d.api(
        "POST",
        "/api/v1/tickets/1/notes",
        Some(&admin),
        Some(r#"{"text":"Called the customer back"}"#),
    );
    assert_eq!(status, 201, "{body}");
    d.cli_ok(&["reply", "2", "--as", "ann", "--text", "On our way"]);
    // Through the API: the daemon's own view changes at once.
    let (status, body) = d.api(
        "PUT",
        "/api/v1/users/bob/availability",
        Some(&admin),
        Some(r#"{"available":false}"#),
    );
    assert_eq!(status, 200, "{body}");
    d.cli_ok(&["contacts", "owner", "carol@customer.example", "ann"]);
    d.set_password("ann", "ann-secret-pw", "admin");
    let cookie = d.sign_in("ann@acme.example", "ann-secret-pw");
    assert_eq!(inbox_status(&d, &cookie), 200);
    // The relay (port 9) refuses: the reply's first attempt is recorded,
    // the next one is an hour away.
    wait_for(T, || d.log_text().contains("reply deferred").then_some(()))
        .unwrap_or_else(|| panic!("no attempt:\n{}", d.log_text()));
    (d, admin, cookie)
}

#[test]
fn a_sqlite_store_moves_to_postgres_and_carries_on() {
    let (mut d, admin, cookie) = filled_store();
    let before = api_view(&d, &admin);
    let searched = searches(&d, &cookie);
    assert_eq!(
        searched,
        [
            vec!["Case 0", "Case 1", "Case 2"],
            vec!["Case 1"],
            vec!["Case 2"],
            vec![]
        ],
        "on SQLite"
    );
    let cluster = Cluster::start();
    let pg = postgres_config(&d, &cluster.url("postdesk"), "pg", "");

    // Not while the daemon runs.
    let out = copy(&d, &pg, &[]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("stop it before copying"),
        "{}",
        text(&out.stderr)
    );
    d.stop();

    // Nor while anything else holds the SQLite file open.
    let store = d.dir.path().join("var/postdesk.sqlite");
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1])\nc.execute('SELECT COUNT(*) FROM tickets').fetchall()\nprint('open', flush=True)\ntime.sleep(120)",
        ])
        .arg(&store)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "open");
    let out = copy(&d, &pg, &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        !out.status.success() && text(&out.stderr).contains("is in use"),
        "{}",
        text(&out.stderr)
    );

    let out = copy(&d, &pg, &[]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for line in [
        "tickets 3/3",
        "verified tickets: 3 rows, sha256 ",
        "verified messages: 5 rows",
        "verified outbox: 1 rows",
        "verified web_users: 1 rows",
        "message_search: skipped (the web inbox's full-text index",
        "message_search: 5 messages indexed",
        "copied and verified: ",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    assert_eq!(
        cluster.psql("postdesk", "SELECT state, attempts FROM outbox ORDER BY id"),
        "queued|1"
    );

    // A second run only verifies.
    let out = copy(&d, &pg, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("already copied, verified"),
        "{}",
        text(&out.stdout)
    );

    // The daemon on PostgreSQL: the same answers, the same token and
    // session, and the next ticket number after the last.
    let mut p = daemon_on(&d, pg);
    p.spawn();
    let after = api_view(&p, &admin);
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a, b, "{}", p.log_text());
    }
    assert_eq!(inbox_status(&p, &cookie), 200);
    // The copied messages are searchable, with the same answers.
    assert_eq!(searches(&p, &cookie), searched, "{}", p.log_text());
    send(&p, "frank@customer.example", "Case 3");
    let tickets = p.wait_tickets(4, T);
    let numbers: Vec<i64> = tickets
        .iter()
        .filter_map(|t| t["number"].as_i64())
        .collect();
    assert!(numbers.contains(&4), "{numbers:?}");
    assert_eq!(cluster.psql("postdesk", "SELECT MAX(id) FROM tickets"), "4");
    // A message after the copy is indexed by the trigger.
    assert_eq!(search_page(&p, &cookie, "frank"), ["Case 3"]);
    p.stop();
}

/// Wait until `file` (the copy's stdout) says `what`.
fn wait_output(file: &Path, what: &str) -> String {
    wait_for(T, || {
        let s = std::fs::read_to_string(file).unwrap_or_default();
        s.contains(what).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "{what:?} never came:\n{}",
            std::fs::read_to_string(file).unwrap_or_default()
        )
    })
}

#[test]
fn an_interrupted_copy_resumes_and_a_changed_row_is_caught() {
    let (mut d, _admin, _cookie) = filled_store();
    d.stop();
    let cluster = Cluster::start();
    let pg = postgres_config(&d, &cluster.url("postdesk"), "pg", "");

    // One row per batch, killed with SIGKILL after the 12th batch.
    let out_file = d.dir.path().join("copy.out");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&d.config)
        .args(["store", "copy", "--to-config"])
        .arg(&pg)
        .args(["--batch-rows", "1"])
        .env("POSTDESK_COPY_PAUSE_AFTER_BATCHES", "12")
        .stdout(std::fs::File::create(&out_file).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("store copy");
    wait_output(&out_file, "paused after 12 batches");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let partial = cluster.psql(
        "postdesk",
        "SELECT COUNT(*) FILTER (WHERE finished_at IS NOT NULL), COUNT(*), SUM(copied) FROM postdesk_store_copy WHERE table_name <> ''",
    );
    let parts: Vec<i64> = partial.split('|').filter_map(|n| n.parse().ok()).collect();
    assert!(
        parts.len() == 3 && parts[0] < parts[1] && parts[2] == 12,
        "{partial}"
    );

    // Run again: it carries on and ends verified.
    let out = copy(&d, &pg, &["--batch-rows", "1"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("(copied before)"), "{said}");
    assert!(said.contains("copied and verified: "), "{said}");
    assert_eq!(
        cluster.psql("postdesk", "SELECT COUNT(*) FROM tickets"),
        "3"
    );

    // One row changed in PostgreSQL: named, exit 1.
    cluster.psql(
        "postdesk",
        "UPDATE contacts SET name = 'Mallory' WHERE email = 'dave@customer.example'",
    );
    let out = copy(&d, &pg, &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("DIFFERS contacts: SQLite 3 rows"), "{said}");
    assert!(said.contains("differs in name"), "{said}");
    assert!(
        text(&out.stderr).contains("verification failed: contacts differ"),
        "{}",
        text(&out.stderr)
    );

    // A database with rows and no copy of this store in it is refused.
    cluster.psql("postdesk", "DROP TABLE postdesk_store_copy");
    let out = copy(&d, &pg, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not empty (table"),
        "{}",
        text(&out.stderr)
    );
}

fn check_connect(config: &Path) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["check", "--connect"])
        .output()
        .expect("check --connect")
}

#[test]
fn tls_with_verify_full_and_a_ca_file_and_refused_otherwise() {
    let pki = Pki::new();
    let (cert, key) = pki.server();
    let wrong = pki.ca("other-ca");
    let port = free_port();
    let cluster = Cluster::start_on(Some(port));
    cluster.enable_tls(&cert, &key);
    let mut d = Daemon::start("", &rest());
    send(&d, "carol@customer.example", "Over TLS");
    d.wait_tickets(1, T);
    d.stop();
    let url =
        |host: &str| format!("postgresql://postdesk@{host}:{port}/postdesk?sslmode=verify-full");
    let ca = |file: &Path| format!("ca_file = {:?}", file.display().to_string());
    let tls = postgres_config(&d, &url("127.0.0.1"), "tls", &ca(&pki.path("ca.pem")));

    let out = check_connect(&tls);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("store: PostgreSQL "),
        "{}",
        text(&out.stdout)
    );
    let out = copy(&d, &tls, &[]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let mut p = daemon_on(&d, tls);
    p.spawn();
    send(&p, "dave@customer.example", "Still over TLS");
    p.wait_tickets(2, T);
    // The daemon's own connections are encrypted.
    let encrypted = cluster.psql(
        "postdesk",
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'postdesk' AND s.ssl",
    );
    assert_ne!(encrypted, "0");
    p.stop();

    // A CA that did not sign the server's certificate, and a host name the
    // certificate does not name: refused, saying what was checked.
    for (name, host, file, says) in [
        (
            "wrong-ca",
            "127.0.0.1",
            wrong.as_path(),
            ["invalid peer certificate: UnknownIssuer", "unknown issuer"],
        ),
        (
            "wrong-name",
            "localhost",
            pki.path("ca.pem").as_path(),
            ["NotValidForName", "not valid for name"],
        ),
    ] {
        let config = postgres_config(&d, &url(host), name, &ca(file));
        let out = check_connect(&config);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(says.iter().any(|s| err.contains(s)), "{name}: {err}");
        assert!(err.contains("checked against the CA in"), "{name}: {err}");
    }
}
