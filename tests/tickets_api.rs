//! `POST /api/v1/tickets` (integrations open tickets) end to end: routing and
//! ticket properties apply as for mail, errors are JSON with stable codes and
//! store nothing, `Idempotency-Key` replays; and availability flipped through
//! `PUT /api/v1/users/{id}/availability` sends the next ticket (by SMTP or by
//! the API) elsewhere.

mod common;

use std::time::Duration;

use common::Daemon;
use common::http::request_with;
use common::smtp::{Client, message};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"

[[users]]
id = "bob"
email = "bob@acme.example"

[[users]]
id = "cy"
email = "cy@acme.example"
licensed = false

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
[channels.ticket_properties]
pipeline = "support"
status = "new"
priority = "medium"
source = "phone"
[channels.routing]
assign = "users_and_teams"
users = ["ann", "bob"]

[[channels]]
id = "chat"
kind = "form"
enabled = false
"#;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

fn counts(d: &Daemon) -> Value {
    let s = d.cli_json(&["status", "--json"])["store"].clone();
    json!([s["tickets"], s["messages"], s["contacts"], s["spool_total"]])
}

fn create(d: &Daemon, token: &str, email: &str, subject: &str) -> (u16, Value) {
    let body = json!({
        "channel": "support",
        "contact": {"email": email, "name": "Dana Caller"},
        "subject": subject,
        "text": "Called about the invoice.",
    });
    d.api(
        "POST",
        "/api/v1/tickets",
        Some(token),
        Some(&body.to_string()),
    )
}

#[test]
fn create_routes_applies_properties_and_refuses_bad_input() {
    let d = Daemon::start("", CONFIG);
    // Opening tickets for any address is an admin's (tests/api_trust.rs
    // checks an agent's token is refused).
    let ann = d.admin_token("ann");

    let (s, t) = create(&d, &ann, "Dana@Caller.example", "Phone call");
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["subject"], "Phone call");
    assert_eq!(t["channel"], "support");
    assert_eq!(
        t["contact"],
        json!({"email": "dana@caller.example", "name": "Dana Caller"})
    );
    assert_eq!(
        (&t["pipeline"], &t["status"], &t["priority"]),
        (&json!("support"), &json!("new"), &json!("medium"))
    );
    assert_eq!(t["properties"]["source"], "phone");
    assert_eq!(t["messages"][0]["text"], "Called about the invoice.");
    assert_eq!(t["messages"][0]["direction"], "inbound");
    assert_eq!(t["messages"][0]["sender_resolution"]["method"], "api");
    let first = t["owner"].as_str().expect("routed").to_string();
    assert!(first == "ann" || first == "bob", "{t}");

    // Balanced: the next goes to the other licensed user, never cy.
    let (s, t2) = create(&d, &ann, "dana@caller.example", "Second call");
    assert_eq!(s, 201);
    assert_ne!(t2["owner"], json!(first), "{t2}");
    assert_eq!(d.cli_json(&["status", "--json"])["store"]["contacts"], 1);

    // Idempotency-Key: a retry answers 200 with the same ticket, stores nothing.
    let body = json!({"channel": "support", "contact": {"email": "eve@x.example"}, "subject": "Chat", "text": "hi"}).to_string();
    let key = [("Idempotency-Key", "chat-1")];
    let (s, a) = request_with(
        d.http,
        "POST",
        "/api/v1/tickets",
        &key,
        Some(&ann),
        Some(&body),
    );
    assert_eq!(s, 201, "{a}");
    let before = counts(&d);
    let (s, b) = request_with(
        d.http,
        "POST",
        "/api/v1/tickets",
        &key,
        Some(&ann),
        Some(&body),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(a["number"], b["number"]);
    assert_eq!(counts(&d), before);

    // Errors: JSON with a stable code, nothing stored.
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({"channel": "support", "contact": {"email": "f@x.example"}, "subject": "S", "text": "T"});
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, ok(&|_| {}), 401, "unauthorized"),
        (Some("bogus"), ok(&|_| {}), 401, "unauthorized"),
        (
            Some(&ann),
            ok(&|v| v["channel"] = json!("nope")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["contact"]["email"] = json!("no-at-sign")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["subject"] = json!("  ")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["subject"] = json!("a\r\nBcc: x")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["text"] = json!("")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["priority"] = json!("high")),
            400,
            "bad_request",
        ),
        (
            Some(&ann),
            ok(&|v| v["contact"] = json!({"name": "x"})),
            400,
            "bad_request",
        ),
        (Some(&ann), "{".into(), 400, "bad_request"),
        (
            Some(&ann),
            ok(&|v| v["channel"] = json!("chat")),
            503,
            "unavailable",
        ),
    ];
    let before = counts(&d);
    for (token, body, status, want) in &cases {
        let (s, v) = d.api("POST", "/api/v1/tickets", *token, Some(body));
        assert_eq!((s, code(&v)), (*status, *want), "{body}: {v}");
    }
    assert_eq!(counts(&d), before, "refused requests stored something");
    // An Idempotency-Key outside 1-200 printable ASCII: 400, as for replies.
    for bad in ["", &"k".repeat(201)] {
        let (s, v) = request_with(
            d.http,
            "POST",
            "/api/v1/tickets",
            &[("Idempotency-Key", bad)],
            Some(&ann),
            Some(&ok(&|_| {})),
        );
        assert_eq!((s, code(&v)), (400, "bad_request"), "{bad:?}: {v}");
    }
    assert_eq!(counts(&d), before);

    // Disabled and enabled by the CLI (another process): the very next
    // request sees it (overrides refreshed before the check).
    for (what, status) in [("disable", 503), ("enable", 201)] {
        d.cli_ok(&["channels", what, "support"]);
        let (s, v) = create(&d, &ann, "gil@caller.example", what);
        assert_eq!(s, status, "right after {what}: {v}");
    }

    // Tickets opened through the API show up in the list like mail's.
    let list = d.tickets();
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|t| t["channel"] == "support"));
}

/// Send one mail and return the owner of the ticket it opened.
fn owner_by_mail(d: &Daemon, subject: &str) -> Value {
    let before = d.tickets().len();
    let mut c = Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO x.example").0, 250);
    let from = "carol@customer.example";
    let (code, text) = c.mail(
        from,
        &["support@acme.example"],
        &message(from, "support@acme.example", subject, subject, "help"),
    );
    assert_eq!(code, 250, "{text}");
    let tickets = d.wait_tickets(before + 1, Duration::from_secs(30));
    tickets
        .iter()
        .find(|t| t["subject"] == subject)
        .expect("the new ticket")["owner"]
        .clone()
}

fn set_available(d: &Daemon, user: &str, token: &str, available: bool) {
    let (s, v) = d.api(
        "PUT",
        &format!("/api/v1/users/{user}/availability"),
        Some(token),
        Some(&json!({ "available": available }).to_string()),
    );
    assert_eq!((s, &v["available"]), (200, &json!(available)), "{v}");
}

#[test]
fn availability_flipped_through_the_api_moves_the_next_ticket() {
    let d = Daemon::start("", CONFIG);
    // Agents set their own availability; bob's admin token opens tickets.
    let (ann, bob) = (d.token("ann"), d.admin_token("bob"));

    // Both available: two mails, one each.
    let mut owners = vec![
        owner_by_mail(&d, "m1@c.example"),
        owner_by_mail(&d, "m2@c.example"),
    ];
    owners.sort_by_key(|o| o.to_string());
    assert_eq!(owners, [json!("ann"), json!("bob")]);

    // ann goes away through the API: the next mails go to bob, though he has more open tickets.
    set_available(&d, "ann", &ann, false);
    assert_eq!(owner_by_mail(&d, "m3@c.example"), "bob");
    assert_eq!(owner_by_mail(&d, "m4@c.example"), "bob");

    // Flip both: the next ticket, opened through the tickets API, goes to ann.
    set_available(&d, "ann", &ann, true);
    set_available(&d, "bob", &bob, false);
    let (s, t) = create(&d, &bob, "dana@caller.example", "After the flip");
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["owner"], "ann", "{t}");

    // Nobody available: unassigned, and the ticket says why.
    set_available(&d, "ann", &ann, false);
    let (_, t) = create(&d, &bob, "dana@caller.example", "Nobody home");
    assert_eq!(t["owner"], Value::Null, "{t}");
    assert!(
        t["unassigned_reason"]
            .as_str()
            .is_some_and(|r| r.contains("available")),
        "{t}"
    );
}
