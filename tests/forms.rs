//! Web form channels end to end: `POST /api/v1/forms/{id}/submissions`
//! (no token) as JSON and as a website's URL-encoded post, each opening one
//! ticket with the channel's properties and routing; hidden fields kept in the
//! stored submission but not in the conversation; bad input refused with a
//! JSON error and nothing stored; the honeypot; the per-IP rate limit; and a
//! disabled form channel that comes back when enabled; the redirect after a
//! plain HTML form post and CORS for allowed origins.

mod common;

use common::http::request_with;
use common::{Daemon, messages};
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
available = false

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"

[[channels]]
id = "web"
kind = "form"
[channels.ticket_properties]
pipeline = "web"
status = "new"
source = "form"
[channels.routing]
assign = "users_and_teams"
users = ["ann", "bob"]
[channels.form]
label = "Contact form"
honeypot_field = "website"
rate_limit_per_minute = 0
max_field_size = 10000
[[channels.form.fields]]
name = "email"
type = "email"
required = true
[[channels.form.fields]]
name = "name"
[[channels.form.fields]]
name = "subject"
[[channels.form.fields]]
name = "message"
type = "textarea"
required = true
[[channels.form.fields]]
name = "plan"
label = "Plan"
type = "select"
[[channels.form.fields]]
name = "ref"
hidden = true

[[channels]]
id = "tight"
kind = "form"
[channels.form]
rate_limit_per_minute = 2

[[channels]]
id = "site"
kind = "form"
[channels.form]
redirect_url = "https://www.acme.example/thanks"
allowed_origins = ["https://www.acme.example"]
"#;

/// One raw HTTP exchange; returns the response head (status line and headers).
fn head(d: &Daemon, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.http).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

const URLENCODED: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// A form post: (status, JSON body).
fn post(d: &Daemon, form: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("Content-Type", c))
        .into_iter()
        .collect();
    request_with(
        d.http,
        "POST",
        &format!("/api/v1/forms/{form}/submissions"),
        &headers,
        None,
        Some(body),
    )
}

/// What the store holds: tickets, messages, contacts, spool rows.
fn counts(d: &Daemon) -> Value {
    let s = d.cli_json(&["status", "--json"])["store"].clone();
    json!([s["tickets"], s["messages"], s["contacts"], s["spool_total"]])
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[test]
fn submissions_open_tickets_and_bad_input_stores_nothing() {
    let d = Daemon::start("", CONFIG);

    // A website's URL-encoded post.
    let (s, v) = request_with(
        d.http,
        "POST",
        "/api/v1/forms/web/submissions",
        &[URLENCODED],
        None,
        Some(
            "email=Carol%40Customer.example&name=Carol+Customer&subject=Pricing+question\
             &message=How+much%3F%0D%0AThanks&plan=pro&plan=team&ref=ad-42&submit=Send",
        ),
    );
    assert_eq!((s, &v), (201, &json!({"received": true})));
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let t = &tickets[0];
    assert_eq!(t["subject"], "Pricing question");
    assert_eq!(t["channel"], "web");
    assert_eq!(t["contact"]["email"], "carol@customer.example");
    assert_eq!(t["contact"]["name"], "Carol Customer");
    assert_eq!(
        (&t["pipeline"], &t["status"]),
        (&json!("web"), &json!("new"))
    );
    assert_eq!(t["properties"]["source"], "form");
    assert_eq!(t["owner"], "ann", "bob is away: {t}");

    // Hidden fields: not in the conversation, in the stored submission.
    let n = t["number"].as_i64().expect("number");
    let shown = d.ticket(n);
    let m = &messages(&shown)[0];
    assert_eq!(m["direction"], "inbound");
    let text = m["text"].as_str().expect("text");
    assert!(text.starts_with("How much?"), "{text}");
    assert!(text.contains("Plan: pro, team"), "{text}");
    assert!(!text.contains("ad-42") && !text.contains("Send"), "{text}");
    assert_eq!(m["sender_resolution"]["method"], "form");
    assert_eq!(m["submission"]["hidden"], json!({"ref": "ad-42"}), "{m}");
    assert_eq!(m["submission"]["fields"]["plan"], "pro, team");
    assert!(m["submission"]["fields"].get("ref").is_none(), "{m}");
    // The same through the API.
    let ann = d.token("ann");
    let (s, api) = d.api("GET", &format!("/api/v1/tickets/{n}"), Some(&ann), None);
    assert_eq!(s, 200);
    assert_eq!(api["messages"][0]["submission"]["hidden"]["ref"], "ad-42");

    // A JSON post: one more ticket, same contact matched; no subject field
    // gives "{label}: {name}".
    let body =
        json!({"email": "carol@customer.example", "name": "Carol", "message": "Again", "ref": 7});
    let (s, _) = post(&d, "web", Some("application/json"), &body.to_string());
    assert_eq!(s, 201);
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0]["subject"], "Contact form: Carol");
    let contacts = d.cli_json(&["status", "--json"])["store"]["contacts"].clone();
    assert_eq!(contacts, 1, "contact matched by email");
    let second = d.ticket(tickets[0]["number"].as_i64().expect("number"));
    assert_eq!(messages(&second)[0]["submission"]["hidden"]["ref"], "7");

    // Bad input: a JSON error each, nothing stored.
    let before = counts(&d);
    let big = "x".repeat(1_000_000);
    let huge = "y".repeat(2 * 1024 * 1024);
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "web",
            Some("application/json"),
            json!({"message": "hi"}).to_string(),
            400,
            "bad_request",
        ),
        (
            "web",
            Some("application/json"),
            json!({"email": "not-an-address", "message": "hi"}).to_string(),
            400,
            "bad_request",
        ),
        (
            "web",
            URLENCODED.1.into(),
            "email=a%40b&message=hi".into(),
            400,
            "bad_request",
        ),
        (
            "web",
            Some("application/json"),
            json!({"email": "a@x.example"}).to_string(),
            400,
            "bad_request",
        ),
        (
            "web",
            Some("application/json"),
            json!({"email": "a@x.example", "message": big}).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "web",
            URLENCODED.1.into(),
            format!("email=a%40x.example&message={huge}"),
            413,
            "payload_too_large",
        ),
        (
            "web",
            Some("application/json"),
            "{\"email\": ".into(),
            400,
            "bad_request",
        ),
        (
            "web",
            Some("application/json"),
            json!({"email": {"x": 1}}).to_string(),
            400,
            "bad_request",
        ),
        (
            "web",
            Some("text/plain"),
            "email=a@x.example".into(),
            415,
            "unsupported_media_type",
        ),
        (
            "nope",
            Some("application/json"),
            json!({"email": "a@x.example", "message": "hi"}).to_string(),
            404,
            "not_found",
        ),
        (
            "support",
            Some("application/json"),
            json!({"email": "a@x.example", "message": "hi"}).to_string(),
            404,
            "not_found",
        ),
    ];
    for (form, ct, body, status, want) in &cases {
        let (s, v) = post(&d, form, *ct, body);
        assert_eq!(
            (s, code(&v)),
            (*status, *want),
            "{form} {ct:?} {}: {v}",
            &body[..body.len().min(80)]
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    assert!(
        post(
            &d,
            "web",
            Some("application/json"),
            &json!({"message": "hi"}).to_string()
        )
        .1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email")),
    );
    assert_eq!(counts(&d), before, "bad input stored something");

    // Honeypot: looks like success, stores nothing, counted.
    let bot =
        json!({"email": "bot@spam.example", "message": "buy", "website": "http://spam.example"});
    let (s, v) = post(&d, "web", Some("application/json"), &bot.to_string());
    assert_eq!((s, v), (201, json!({"received": true})));
    assert_eq!(counts(&d), before, "honeypot stored something");
    let (_, m) = d.api("GET", "/metrics", None, None);
    let metrics = m.as_str().unwrap_or("");
    assert!(
        metrics.contains("postdesk_form_submissions_total{result=\"honeypot\"} 1"),
        "{metrics}"
    );
}

/// A `multipart/form-data` body: (name, filename, content) parts.
fn multipart(parts: &[(&str, Option<&str>, &str)]) -> String {
    let mut body = String::new();
    for (name, file, content) in parts {
        body.push_str("--XyZzy42\r\n");
        match file {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(content);
        body.push_str("\r\n");
    }
    body.push_str("--XyZzy42--\r\n");
    body
}

const MULTIPART: &str = "multipart/form-data; boundary=XyZzy42";

#[test]
fn multipart_posts_are_taken_and_files_refused() {
    let d = Daemon::start("", CONFIG);
    // What a browser posts for <form enctype="multipart/form-data">, with
    // an optional file input left empty.
    let body = multipart(&[
        ("email", None, "dora@customer.example"),
        ("name", None, "Dora Küster"),
        ("subject", None, "Grüße aus Köln"),
        ("message", None, "Zeile eins\r\nZeile zwei"),
        ("plan", None, "pro"),
        ("attachment", Some(""), ""),
    ]);
    let (s, v) = post(&d, "web", Some(MULTIPART), &body);
    assert_eq!((s, &v), (201, &json!({"received": true})));
    let t = &d.tickets()[0];
    assert_eq!(t["subject"], "Grüße aus Köln");
    assert_eq!(t["contact"]["email"], "dora@customer.example");
    assert_eq!(t["contact"]["name"], "Dora Küster");
    let shown = d.ticket(t["number"].as_i64().expect("number"));
    let text = messages(&shown)[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with("Zeile eins\r\nZeile zwei") || text.starts_with("Zeile eins\nZeile zwei"),
        "{text}"
    );
    assert!(text.contains("Plan: pro"), "{text}");

    // A file is refused, and nothing is stored; so is a body without its boundary.
    let before = counts(&d);
    let with_file = multipart(&[
        ("email", None, "eve@customer.example"),
        ("message", None, "see attached"),
        ("attachment", Some("invoice.pdf"), "%PDF-1.4 ..."),
    ]);
    let (s, v) = post(&d, "web", Some(MULTIPART), &with_file);
    assert_eq!((s, code(&v)), (415, "unsupported_media_type"), "{v}");
    let (s, v) = post(&d, "web", Some("multipart/form-data"), &with_file);
    assert_eq!((s, code(&v)), (400, "bad_request"), "{v}");
    assert_eq!(counts(&d), before);

    // A plain multipart form post to a form with redirect_url: 303 there.
    let body = multipart(&[
        ("email", None, "finn@customer.example"),
        ("message", None, "hello"),
    ]);
    let resp = head(
        &d,
        &format!(
            "POST /api/v1/forms/site/submissions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {MULTIPART}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("http/1.1 303"), "{resp}");
    assert!(
        resp.contains("location: https://www.acme.example/thanks"),
        "{resp}"
    );
}

#[test]
fn rate_limit_and_disabled_form() {
    let d = Daemon::start("", CONFIG);
    let ok =
        |i: usize| json!({"email": format!("c{i}@customer.example"), "message": "hi"}).to_string();

    // `tight` takes 2 a minute from one address; the 3rd is 429, nothing stored.
    for i in 0..2 {
        let (s, v) = post(&d, "tight", Some("application/json"), &ok(i));
        assert_eq!(s, 201, "{v}");
    }
    let before = counts(&d);
    let (s, v) = post(&d, "tight", Some("application/json"), &ok(9));
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    assert_eq!(counts(&d), before);
    // Another form has its own limit.
    let (s, _) = post(&d, "web", Some("application/json"), &ok(3));
    assert_eq!(s, 201);

    // Disabled through the API: submissions refused, tickets kept.
    let ann = d.admin_token("ann");
    let (s, _) = d.api("POST", "/api/v1/channels/web/disable", Some(&ann), None);
    assert_eq!(s, 200);
    let before = counts(&d);
    let (s, v) = post(&d, "web", Some("application/json"), &ok(4));
    assert_eq!((s, code(&v)), (503, "unavailable"), "{v}");
    assert_eq!(counts(&d), before);
    assert_eq!(
        d.tickets().iter().filter(|t| t["channel"] == "web").count(),
        1
    );

    // Enabled again by the CLI (another process): the very next submission
    // opens a ticket — the overrides are refreshed before the check, not
    // up to two seconds later.
    d.cli_ok(&["channels", "enable", "web"]);
    let (s, v) = post(&d, "web", Some("application/json"), &ok(5));
    assert_eq!(s, 201, "not open right after enable: {v}");
    // Disabled by the CLI: the next one is refused at once.
    d.cli_ok(&["channels", "disable", "web"]);
    let (s, v) = post(&d, "web", Some("application/json"), &ok(6));
    assert_eq!((s, code(&v)), (503, "unavailable"), "{v}");
    assert_eq!(
        d.tickets().iter().filter(|t| t["channel"] == "web").count(),
        2
    );
}

#[test]
fn html_form_redirects_and_cors_allows_listed_origins() {
    let d = Daemon::start("", CONFIG);
    let body = "email=dora%40customer.example&message=Hi";
    let post = |origin: &str, ct: &str, body: &str| {
        head(
            &d,
            &format!(
                "POST /api/v1/forms/site/submissions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{origin}Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };

    // A plain HTML form post: 303 to the thank-you page, ticket stored.
    let h = post("", "application/x-www-form-urlencoded", body);
    assert!(h.starts_with("http/1.1 303"), "{h}");
    assert!(
        h.contains("location: https://www.acme.example/thanks"),
        "{h}"
    );
    assert_eq!(d.tickets().len(), 1);
    // Refused input still answers with the JSON error, not the redirect.
    let h = post("", "application/x-www-form-urlencoded", "message=Hi");
    assert!(h.starts_with("http/1.1 400"), "{h}");

    // JavaScript from an allowed origin: preflight and post carry CORS headers.
    let h = head(
        &d,
        "OPTIONS /api/v1/forms/site/submissions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://www.acme.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    assert!(h.starts_with("http/1.1 204"), "{h}");
    assert!(
        h.contains("access-control-allow-origin: https://www.acme.example"),
        "{h}"
    );
    assert!(h.contains("access-control-allow-methods: post"), "{h}");
    let json = json!({"email": "eli@customer.example", "message": "Hi"}).to_string();
    let h = post(
        "Origin: https://www.acme.example\r\n",
        "application/json",
        &json,
    );
    assert!(h.starts_with("http/1.1 201"), "{h}");
    assert!(
        h.contains("access-control-allow-origin: https://www.acme.example"),
        "{h}"
    );
    // Another origin gets no permission (the browser blocks it).
    let h = post(
        "Origin: https://evil.example\r\n",
        "application/json",
        &json,
    );
    assert!(!h.contains("access-control-allow-origin"), "{h}");
    assert_eq!(d.tickets().len(), 3);
}
