//! Trust at the HTTP API, against the real daemon: token roles (agent,
//! admin) on every admin-only endpoint, unlicensed users reading only,
//! expired tokens, the per-token send rate; and the listener's resources —
//! idle and half-sent requests closed after the header timeout while others
//! are served, a slow body answered 408, the per-IP connection cap, and
//! `/metrics` on its own listener behind a token.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::http::request_header;
use common::{ACME, Daemon, free_port, wait_for};
use serde_json::{Value, json};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// ACME's ann and bob, and cy without a licence.
fn people() -> String {
    format!("{ACME}\n[[users]]\nid = \"cy\"\nemail = \"cy@acme.example\"\nlicensed = false\n")
}

/// Open a ticket through the API with `token`; (status, body).
fn open_ticket(d: &Daemon, token: &str, email: &str) -> (u16, Value) {
    let body = json!({
        "channel": "support",
        "contact": {"email": email},
        "subject": "Called",
        "text": "About the invoice.",
    });
    d.api(
        "POST",
        "/api/v1/tickets",
        Some(token),
        Some(&body.to_string()),
    )
}

fn channel_enabled(d: &Daemon) -> Value {
    d.cli_json(&["channels", "list", "--json"])[0]["enabled"].clone()
}

/// Each admin-only endpoint: an agent's token is 403 `forbidden` and changes
/// nothing; an admin's token does it. Agents still work tickets (anyone's)
/// and set their own availability.
#[test]
fn admin_only_endpoints_refuse_agent_tokens() {
    let d = Daemon::start("", &people());
    let agent = d.token("ann");
    let admin = d.admin_token("bob");
    let listed = d.cli_json(&["users", "tokens", "ann", "--json"]);
    assert_eq!(listed[0]["role"], "agent", "the default role: {listed}");
    assert_eq!(listed[0]["expires_at"], Value::Null, "{listed}");

    // POST /api/v1/tickets.
    let (s, v) = open_ticket(&d, &agent, "dana@caller.example");
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    assert!(d.tickets().is_empty(), "an agent opened a ticket");
    let (s, t) = open_ticket(&d, &admin, "dana@caller.example");
    assert_eq!(s, 201, "{t}");
    let n = t["number"].as_i64().expect("number");

    // Channels.
    for what in ["disable", "enable"] {
        let path = format!("/api/v1/channels/support/{what}");
        let (s, v) = d.api("POST", &path, Some(&agent), None);
        assert_eq!((s, code(&v)), (403, "forbidden"), "{what}: {v}");
        assert_eq!(channel_enabled(&d), true, "{what} by an agent took effect");
    }
    let (s, v) = d.api(
        "POST",
        "/api/v1/channels/support/disable",
        Some(&admin),
        None,
    );
    assert_eq!((s, &v["enabled"]), (200, &json!(false)), "{v}");
    assert_eq!(channel_enabled(&d), false);
    let (s, v) = d.api(
        "POST",
        "/api/v1/channels/support/enable",
        Some(&admin),
        None,
    );
    assert_eq!(s, 200, "{v}");

    // Contact owners.
    let owner = json!({"owner": "ann"}).to_string();
    let path = "/api/v1/contacts/dana@caller.example/owner";
    let (s, v) = d.api("PUT", path, Some(&agent), Some(&owner));
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (_, c) = d.api(
        "GET",
        "/api/v1/contacts/dana@caller.example",
        Some(&agent),
        None,
    );
    assert_eq!(c["owner"], Value::Null, "{c}");
    let (s, v) = d.api("PUT", path, Some(&admin), Some(&owner));
    assert_eq!((s, &v["owner"]), (200, &json!("ann")), "{v}");

    // Availability: one's own with any token, another's only as an admin.
    let away = json!({"available": false}).to_string();
    let (s, v) = d.api(
        "PUT",
        "/api/v1/users/bob/availability",
        Some(&agent),
        Some(&away),
    );
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = d.api(
        "PUT",
        "/api/v1/users/ann/availability",
        Some(&agent),
        Some(&away),
    );
    assert_eq!(s, 200, "{v}");
    let back = json!({"available": true}).to_string();
    let (s, v) = d.api(
        "PUT",
        "/api/v1/users/ann/availability",
        Some(&admin),
        Some(&back),
    );
    assert_eq!((s, &v["available"]), (200, &json!(true)), "{v}");

    // An agent works any ticket: update, note, reply.
    let (s, v) = d.api(
        "PATCH",
        &format!("/api/v1/tickets/{n}"),
        Some(&agent),
        Some(&json!({"status": "open", "owner": "bob"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    for what in ["notes", "replies"] {
        let (s, v) = d.api(
            "POST",
            &format!("/api/v1/tickets/{n}/{what}"),
            Some(&agent),
            Some(&json!({"text": "On it."}).to_string()),
        );
        assert_eq!(s, 201, "{what}: {v}");
    }
    // …but not as someone else, whatever the role.
    let (s, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{n}/notes"),
        Some(&admin),
        Some(&json!({"text": "x", "as": "ann"}).to_string()),
    );
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
}

/// A user without a licence reads but does not reply, note or update — with
/// an agent's token or an admin's (403 `unlicensed`), and nothing is stored.
#[test]
fn unlicensed_users_read_only() {
    let d = Daemon::start("", &people());
    let (_, t) = open_ticket(&d, &d.admin_token("ann"), "erin@caller.example");
    let n = t["number"].as_i64().expect("number");
    for token in [d.token("cy"), d.admin_token("cy")] {
        let (s, v) = d.api("GET", &format!("/api/v1/tickets/{n}"), Some(&token), None);
        assert_eq!(s, 200, "{v}");
        let (s, _) = d.api("GET", "/api/v1/tickets", Some(&token), None);
        assert_eq!(s, 200);
        let text = json!({"text": "hi"}).to_string();
        let status = json!({"status": "closed"}).to_string();
        let cases = [
            ("POST", format!("/api/v1/tickets/{n}/replies"), &text),
            ("POST", format!("/api/v1/tickets/{n}/notes"), &text),
            ("PATCH", format!("/api/v1/tickets/{n}"), &status),
        ];
        for (method, path, body) in cases {
            let (s, v) = d.api(method, &path, Some(&token), Some(body));
            assert_eq!((s, code(&v)), (403, "unlicensed"), "{method} {path}: {v}");
        }
    }
    let shown = d.ticket(n);
    assert_eq!(
        shown["messages"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    assert_eq!(shown["status"], "new");
}

/// `--expires`: the token works until then, `users tokens` shows when, and
/// after it the API answers 401 `token_expired` (other tokens unaffected).
#[test]
fn expired_tokens_are_refused_with_their_own_code() {
    let d = Daemon::start("", ACME);
    let short = d.token_with("ann", &["--expires", "12h"]);
    let forever = d.token("ann");
    let (s, _) = d.api("GET", "/api/v1/tickets", Some(&short), None);
    assert_eq!(s, 200);

    let listed = d.cli_json(&["users", "tokens", "ann", "--json"]);
    let tokens = listed.as_array().expect("array");
    let now = postdesk::store::now_ms();
    let expiring: Vec<i64> = tokens
        .iter()
        .filter_map(|t| t["expires_at"].as_i64())
        .collect();
    assert_eq!(expiring.len(), 1, "{listed}");
    let in_12h = now + 12 * 3_600_000;
    assert!(
        (in_12h - 120_000..=in_12h).contains(&expiring[0]),
        "{listed}"
    );
    let text = String::from_utf8_lossy(&d.cli_ok(&["users", "tokens", "ann"]).stdout).into_owned();
    assert!(text.contains("ROLE") && text.contains("EXPIRES"), "{text}");
    assert!(text.contains("never") && text.contains("agent"), "{text}");

    // Its expiry passes (moved into the past in the store).
    let db = rusqlite::Connection::open(d.dir.path().join("var/postdesk.sqlite")).expect("db");
    db.busy_timeout(Duration::from_secs(10)).expect("busy");
    let changed = db
        .execute(
            "UPDATE api_tokens SET expires_at = ?1 WHERE token_hash = ?2",
            rusqlite::params![now - 1000, postdesk::api::auth::token_hash(&short)],
        )
        .expect("update");
    assert_eq!(changed, 1);
    let (s, v) = d.api("GET", "/api/v1/tickets", Some(&short), None);
    assert_eq!((s, code(&v)), (401, "token_expired"), "{v}");
    let (s, _) = d.api("GET", "/api/v1/tickets", Some(&forever), None);
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&d.cli_ok(&["users", "tokens", "ann"]).stdout).into_owned();
    assert!(text.contains("(expired)"), "{text}");

    // Bad options are usage errors.
    for args in [
        &["users", "token", "ann", "--expires", "soon"][..],
        &["users", "token", "ann", "--expires", "0d"],
        &["users", "token", "ann", "--role", "root"],
    ] {
        assert_eq!(d.cli(args).status.code(), Some(2), "{args:?}");
    }
}

/// Replies and ticket openings spend one budget per token: over it, 429
/// `rate_limited` with `Retry-After`, nothing queued, a metric counts it;
/// another token has its own budget.
#[test]
fn sends_are_rate_limited_per_token() {
    let d = Daemon::start_http("sends_per_minute_per_token = 2", &people());
    let admin = d.admin_token("ann");
    let (s, t) = open_ticket(&d, &admin, "fay@caller.example");
    assert_eq!(s, 201, "{t}");
    let n = t["number"].as_i64().expect("number");
    let reply = json!({"text": "Second send."}).to_string();
    let path = format!("/api/v1/tickets/{n}/replies");
    let (s, v) = d.api("POST", &path, Some(&admin), Some(&reply));
    assert_eq!(s, 201, "{v}");

    let (s, retry, v) = request_header(
        d.http,
        "POST",
        &path,
        &[],
        Some(&admin),
        Some(&reply),
        "retry-after",
    );
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    let secs: u64 = retry
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&secs), "{secs}");
    let (s, v) = open_ticket(&d, &admin, "gus@caller.example");
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    assert_eq!(d.tickets().len(), 1, "a refused opening stored a ticket");
    let outbound = d.ticket(n)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, 1, "a refused reply was queued");
    // Reading is not a send.
    let (s, _) = d.api("GET", &format!("/api/v1/tickets/{n}"), Some(&admin), None);
    assert_eq!(s, 200);

    let other = d.token("bob");
    let (s, v) = d.api("POST", &path, Some(&other), Some(&reply));
    assert_eq!(s, 201, "another token's budget: {v}");

    let (_, m) = d.api("GET", "/metrics", None, None);
    let text = m.as_str().unwrap_or_default();
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("postdesk_api_rate_limited_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(refused, Some(2.0), "{text}");
}

/// Connect and send `bytes` (maybe nothing, maybe half a header).
fn idle(addr: SocketAddr, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes.as_bytes()).expect("write");
    s
}

/// Whether the server closes `s` (EOF or reset) within 20 s — well before
/// hyper's own default header timeout (30 s), so the configured one is what
/// is tested; what it sent before is read and dropped.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// Connections that send nothing or half a header are closed after
/// `header_timeout_secs`; meanwhile others are served. A body that stops
/// short is answered 408 `request_timeout` after `body_timeout_secs`.
#[test]
fn idle_and_slow_clients_are_cut_off_while_others_are_served() {
    let d = Daemon::start_http(
        "header_timeout_secs = 1\nbody_timeout_secs = 1\nmax_connections = 100\nmax_connections_per_ip = 100",
        ACME,
    );
    let token = d.token("ann");
    let mut sleepers: Vec<TcpStream> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                idle(d.http, "")
            } else {
                idle(d.http, "GET /api/v1/tickets HTTP/1.1\r\nHost: x\r\n")
            }
        })
        .collect();
    let (s, v) = d.api("GET", "/api/v1/tickets", Some(&token), None);
    assert_eq!(s, 200, "served while 40 sit idle: {v}");
    for (i, s) in sleepers.iter_mut().enumerate() {
        assert!(closed_by_server(s), "idle connection {i} left open");
    }

    // Half a body, then silence.
    let mut slow = idle(
        d.http,
        &format!(
            "POST /api/v1/tickets/1/notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\":"
        ),
    );
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    let (s, _) = d.api("GET", "/healthz", None, None);
    assert_eq!(s, 200);
}

/// One connection over `max_connections_per_ip` is answered 503 and closed
/// at once; when one of the held connections closes, its place is free again.
#[test]
fn connections_over_the_per_ip_cap_are_refused_and_places_freed() {
    let d = Daemon::start_http(
        "header_timeout_secs = 600\nmax_connections_per_ip = 3",
        ACME,
    );
    let mut held: Vec<TcpStream> = (0..3).map(|_| idle(d.http, "")).collect();
    // The three are accepted (and counted) before the fourth is tried: a
    // request on a fourth connection is refused once they are.
    let refused = wait_for(Duration::from_secs(30), || {
        let (s, v) = d.api("GET", "/healthz", None, None);
        (s == 503).then_some(v)
    })
    .expect("a fourth connection was served");
    assert_eq!(code(&refused), "unavailable", "{refused}");

    held.pop();
    let served = wait_for(Duration::from_secs(30), || {
        (d.api("GET", "/healthz", None, None).0 == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "the closed connection's place was not freed"
    );
    // The health check's own connection holds the free place until the
    // server has seen it close, which may come after its answer.
    let m = wait_for(Duration::from_secs(30), || {
        let (s, m) = d.api("GET", "/metrics", None, None);
        (s == 200).then_some(m)
    })
    .expect("the metrics were served");
    let text = m.as_str().unwrap_or_default();
    assert!(
        text.contains("postdesk_http_connections_refused_total{reason=\"max_connections_per_ip\"}"),
        "{text}"
    );
    // The held ones are still open (not cut off by the refusals).
    for s in &mut held {
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a held connection was closed"
        );
    }
}

/// `/metrics` on its own listener, behind the token in `metrics_token_file`
/// (401 without or with a wrong one; re-read at each scrape); the API
/// listener no longer serves it.
#[test]
fn metrics_on_their_own_listener_need_the_token() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secrets.path().join("metrics-token");
    std::fs::write(&file, "scrape-me\n").expect("write");
    let port = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let d = Daemon::start_http(
        &format!("metrics_listen = \"{metrics}\"\nmetrics_token_file = {file:?}"),
        ACME,
    );
    let get = |token: Option<&str>| common::http::request(metrics, "GET", "/metrics", token, None);

    let (s, v) = get(None);
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    let (s, v) = get(Some("wrong"));
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    let (s, v) = get(Some("scrape-me"));
    assert_eq!(s, 200, "{v}");
    assert!(v.as_str().unwrap_or_default().contains("postdesk_"), "{v}");
    let (s, _) = d.api("GET", "/metrics", Some("scrape-me"), None);
    assert_eq!(s, 404, "/metrics still on the API listener");

    std::fs::write(&file, "rotated\n").expect("write");
    assert_eq!(get(Some("scrape-me")).0, 401);
    assert_eq!(get(Some("rotated")).0, 200);
}
