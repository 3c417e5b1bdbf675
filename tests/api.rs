//! The HTTP API (`/api/v1`) against the real daemon: bearer auth (401),
//! acting as another user (403), unknown things (404), bad JSON (400), a
//! path segment that is not UTF-8 (400), a wrong method (405), a body that is
//! not sent as JSON (415), each with its stable JSON error code; then the
//! resources agents use.

mod common;

use std::time::Duration;

use common::{ACME, Daemon, messages};
use serde_json::{Value, json};

/// (method, path, token, body, status, code)
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<String>,
    u16,
    &'a str,
);

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

fn with_ticket() -> (Daemon, i64) {
    // ACME's people and cy, who has no licence.
    let people =
        format!("{ACME}\n[[users]]\nid = \"cy\"\nemail = \"cy@acme.example\"\nlicensed = false\n");
    let d = Daemon::start("", &people);
    let t = d.mail_ticket("API test", "Hello.");
    (d, t)
}

#[test]
fn errors_have_stable_codes() {
    let (d, t) = with_ticket();
    let ann = d.token("ann");
    let admin = d.admin_token("bob");
    let reply = json!({"text": "hi"}).to_string();
    let path = format!("/api/v1/tickets/{t}/replies");

    let cases: Vec<Case> = vec![
        (
            "GET",
            "/api/v1/tickets".into(),
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/api/v1/tickets".into(),
            Some("not-a-token"),
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            path.clone(),
            None,
            Some(reply.clone()),
            401,
            "unauthorized",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some(json!({"text": "hi", "as": "bob"}).to_string()),
            403,
            "forbidden",
        ),
        (
            "PUT",
            "/api/v1/users/bob/availability".into(),
            Some(&ann),
            Some(json!({"available": false}).to_string()),
            403,
            "forbidden",
        ),
        (
            "GET",
            "/api/v1/tickets/999".into(),
            Some(&ann),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/tickets/abc".into(),
            Some(&ann),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/tickets/999/replies".into(),
            Some(&ann),
            Some(reply.clone()),
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/nothing-here".into(),
            Some(&ann),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/contacts/nobody@x.example".into(),
            Some(&ann),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some("{not json".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some(json!({"txt": "typo"}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some("{}".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some(json!({"text": "hi", "subject": "Hi\r\nBcc: evil@x.example"}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            path.clone(),
            Some(&ann),
            Some(
                json!({"text": "hi", "attachments": [
                    {"filename": "a\r\nContent-Type: text/html", "data_base64": "eA=="}
                ]})
                .to_string(),
            ),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            format!("/api/v1/tickets/{t}"),
            Some(&ann),
            Some(json!({"owner": "nobody-like-this"}).to_string()),
            400,
            "bad_request",
        ),
        (
            // Setting an owner creates an unknown contact, but only for an
            // address (before: 409 conflict).
            "PUT",
            "/api/v1/contacts/not-an-address/owner".into(),
            Some(&admin),
            Some(json!({"owner": "ann"}).to_string()),
            400,
            "bad_request",
        ),
        (
            // A user without a licence owns no tickets (as routing skips
            // them): before, cy was accepted.
            "PATCH",
            format!("/api/v1/tickets/{t}"),
            Some(&ann),
            Some(json!({"owner": "cy"}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/channels/nope/disable".into(),
            Some(&admin),
            None,
            404,
            "not_found",
        ),
    ];
    for (method, path, token, body, status, want) in cases {
        let (got, v) = d.api(method, &path, token, body.as_deref());
        assert_eq!(
            (got, code(&v)),
            (status, want),
            "{method} {path} {body:?}: {v}"
        );
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // Nothing was queued by the refused requests.
    assert!(
        messages(&d.ticket(t))
            .iter()
            .all(|m| m["direction"] != "outbound")
    );
}

/// One request's (status, Content-Type, body), extra headers as given.
fn exchange(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    common::http::request_header(d.http, method, path, headers, token, body, "content-type")
}

/// Asserts a JSON error: status, `Content-Type: application/json`, code.
fn assert_json_error(what: &str, got: (u16, Option<String>, Value), status: u16, want: &str) {
    let (st, ct, v) = got;
    assert_eq!((st, code(&v)), (status, want), "{what}: {ct:?} {v}");
    assert!(
        ct.as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: Content-Type {ct:?}"
    );
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
}

/// A path segment that is not UTF-8 (`%FF`) is a JSON 400 on every route
/// with a path parameter, forms (no token) included.
#[test]
fn non_utf8_path_segment_is_a_json_bad_request() {
    let d = Daemon::start("", ACME);
    let ann = d.token("ann");
    let avail = json!({"available": true}).to_string();
    let cases: [(&str, &str, Option<&str>, Option<&str>); 7] = [
        ("GET", "/api/v1/tickets/%FF", Some(&ann), None),
        (
            "POST",
            "/api/v1/tickets/%FF/notes",
            Some(&ann),
            Some(r#"{"text":"x"}"#),
        ),
        ("GET", "/api/v1/contacts/%FF", Some(&ann), None),
        (
            "PUT",
            "/api/v1/users/%FF/availability",
            Some(&ann),
            Some(&avail),
        ),
        ("POST", "/api/v1/channels/%FF/enable", Some(&ann), None),
        ("POST", "/api/v1/forms/%FF/submissions", None, Some("{}")),
        ("OPTIONS", "/api/v1/forms/%FF/submissions", None, None),
    ];
    for (method, path, token, body) in cases {
        let got = exchange(&d, method, path, &[], token, body);
        assert_json_error(&format!("{method} {path}"), got, 400, "bad_request");
    }
}

/// A known path with a method it does not serve is a JSON 405 with `Allow`;
/// an unknown path stays a JSON 404.
#[test]
fn wrong_method_on_a_known_route_is_a_json_405() {
    let d = Daemon::start("", ACME);
    let ann = d.token("ann");
    let cases: [(&str, &str, Option<&str>, &str); 5] = [
        ("DELETE", "/api/v1/tickets/1", Some(&ann), "GET"),
        ("PUT", "/api/v1/tickets", Some(&ann), "POST"),
        ("GET", "/api/v1/tickets/1/notes", Some(&ann), "POST"),
        (
            "DELETE",
            "/api/v1/contacts/carol@customer.example",
            Some(&ann),
            "GET",
        ),
        ("GET", "/api/v1/forms/web/submissions", None, "POST"),
    ];
    for (method, path, token, allowed) in cases {
        let what = format!("{method} {path}");
        let got = exchange(&d, method, path, &[], token, None);
        assert_json_error(&what, got, 405, "method_not_allowed");
        let (_, allow, _) =
            common::http::request_header(d.http, method, path, &[], token, None, "allow");
        assert!(
            allow.as_deref().is_some_and(|a| a.contains(allowed)),
            "{what}: Allow {allow:?}"
        );
    }
    let got = exchange(&d, "DELETE", "/api/v1/no-such-thing", &[], Some(&ann), None);
    assert_json_error("unknown path", got, 404, "not_found");
}

/// A JSON body sent as another media type is a JSON 415
/// `unsupported_media_type`, not a 400.
#[test]
fn json_body_without_json_content_type_is_a_json_415() {
    let d = Daemon::start("", ACME);
    let ann = d.token("ann");
    let note = json!({"text": "x"}).to_string();
    let status = json!({"status": "closed"}).to_string();
    let cases = [
        ("POST", "/api/v1/tickets/1/notes", note.as_str()),
        ("POST", "/api/v1/tickets/1/replies", note.as_str()),
        ("PATCH", "/api/v1/tickets/1", status.as_str()),
    ];
    for (method, path, body) in cases {
        for ct in ["text/plain", "application/x-www-form-urlencoded"] {
            let got = exchange(
                &d,
                method,
                path,
                &[("Content-Type", ct)],
                Some(&ann),
                Some(body),
            );
            assert_json_error(
                &format!("{method} {path} as {ct}"),
                got,
                415,
                "unsupported_media_type",
            );
        }
    }
}

#[test]
fn agents_work_a_ticket() {
    let (d, t) = with_ticket();
    let ann = d.token("ann");
    let admin = d.admin_token("bob");
    let get = |path: &str| {
        let (s, v) = d.api("GET", path, Some(&ann), None);
        assert_eq!(s, 200, "{path}: {v}");
        v
    };

    let list = get("/api/v1/tickets?channel=support&limit=10");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(
        get("/api/v1/tickets?status=closed")
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let one = get(&format!("/api/v1/tickets/{t}"));
    assert_eq!(one["subject"], "API test");
    assert_eq!(one["contact"]["email"], "carol@customer.example");

    // Status and owner.
    let (s, v) = d.api(
        "PATCH",
        &format!("/api/v1/tickets/{t}"),
        Some(&ann),
        Some(&json!({"status": "open", "owner": "bob"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["owner"].as_str()),
        (Some("open"), Some("bob"))
    );
    let (s, v) = d.api(
        "PATCH",
        &format!("/api/v1/tickets/{t}"),
        Some(&ann),
        Some(&json!({"owner": null}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["owner"].is_null(), "{v}");
    assert_eq!(v["status"], "open");

    // An internal note and a reply (queued: the harness relay is down).
    let (s, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{t}/notes"),
        Some(&ann),
        Some(&json!({"text": "Customer is VIP"}).to_string()),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{t}/replies"),
        Some(&ann),
        Some(
            &json!({"text": "On it.", "as": "ann", "attachments": [
                {"filename": "log.txt", "content_type": "text/plain", "data_base64": "aGVsbG8="}
            ]})
            .to_string(),
        ),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["delivery"], "queued");
    let shown = get(&format!("/api/v1/tickets/{t}"));
    let msgs = messages(&shown);
    let note = msgs
        .iter()
        .find(|m| m["direction"] == "note")
        .expect("note");
    assert_eq!(
        (note["author"].as_str(), note["text"].as_str()),
        (Some("ann"), Some("Customer is VIP"))
    );
    let out = msgs
        .iter()
        .find(|m| m["direction"] == "outbound")
        .expect("reply");
    assert_eq!(out["author"], "ann");
    assert_eq!(out["delivery"], "queued");
    assert_eq!(out["message_id"], v["message_id"]);

    // Contacts.
    let contacts = get("/api/v1/contacts");
    assert_eq!(contacts[0]["email"], "carol@customer.example");
    let (s, v) = d.api(
        "PUT",
        "/api/v1/contacts/Carol@Customer.example/owner",
        Some(&admin),
        Some(&json!({"owner": "ann"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"], "ann");
    assert_eq!(
        get("/api/v1/contacts/carol@customer.example")["owner"],
        "ann"
    );

    // Availability: own only, persisted (the CLI's status reads the same store).
    let (s, v) = d.api(
        "PUT",
        "/api/v1/users/ann/availability",
        Some(&ann),
        Some(&json!({"available": false}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    let users = get("/api/v1/users");
    let me = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["id"] == "ann"))
        .expect("ann");
    assert_eq!(me["available"], false);

    // Channels.
    let (s, v) = d.api(
        "POST",
        "/api/v1/channels/support/disable",
        Some(&admin),
        None,
    );
    assert_eq!((s, v["enabled"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(get("/api/v1/channels")[0]["enabled"], false);
    let cli = d.cli_json(&["channels", "list", "--json"]);
    assert_eq!(cli[0]["enabled"], false, "persisted: {cli}");
    let (s, _) = d.api(
        "POST",
        "/api/v1/channels/support/enable",
        Some(&admin),
        None,
    );
    assert_eq!(s, 200);

    // Metrics carry the outbox depth.
    let (s, m) = d.api("GET", "/metrics", None, None);
    assert_eq!(s, 200);
    let text = m.as_str().unwrap_or("");
    assert!(text.contains("postdesk_outbox_depth"), "{text}");
    // Latencies are histograms (buckets add up across daemons), not
    // per-process summaries.
    assert!(
        text.contains("# TYPE postdesk_spool_commit_seconds histogram")
            && text.contains("postdesk_spool_commit_seconds_bucket{le=\"0.001\"}"),
        "{text}"
    );
    // Each series says what it is.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or("");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help for {name}:\n{text}"
        );
    }
}

#[test]
fn cli_reply_uses_the_same_path() {
    let (d, t) = with_ticket();
    let file = d.dir.path().join("notes.txt");
    std::fs::write(&file, "attached").expect("write");
    let v = d.cli_json(&[
        "reply",
        &t.to_string(),
        "--as",
        "bob",
        "--text",
        "From the command line.",
        "--attach",
        file.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(v["delivery"], "queued");
    let out = messages(&d.ticket(t))
        .iter()
        .find(|m| m["direction"] == "outbound")
        .cloned()
        .expect("reply");
    assert_eq!(out["author"], "bob");
    assert_eq!(out["from"], "support@acme.example");
    let bad = d.cli(&["reply", &t.to_string(), "--as", "nobody", "--text", "x"]);
    assert!(!bad.status.success());
    let bad = d.cli(&["reply", "999", "--as", "bob", "--text", "x"]);
    assert!(!bad.status.success());
}

/// A retried POST with the same Idempotency-Key queues one reply.
#[test]
fn idempotency_key_makes_retries_safe() {
    let (d, t) = with_ticket();
    let ann = d.token("ann");
    let bob = d.token("bob");
    let path = format!("/api/v1/tickets/{t}/replies");
    let body = json!({"text": "Only once, please."}).to_string();
    let send = |token: &str, key: &str| {
        common::http::request_with(
            d.http,
            "POST",
            &path,
            &[("Idempotency-Key", key)],
            Some(token),
            Some(&body),
        )
    };
    let (s1, first) = send(&ann, "k-1");
    assert_eq!(s1, 201, "{first}");
    let (s2, again) = send(&ann, "k-1");
    assert_eq!(s2, 200, "{again}");
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(again["replayed"], true);
    // Another key, or another agent with the same key: a new reply.
    let (s3, other) = send(&ann, "k-2");
    assert_eq!(s3, 201, "{other}");
    let (s4, bobs) = send(&bob, "k-1");
    assert_eq!(s4, 201, "{bobs}");
    // The same rule as POST /api/v1/tickets: 1-200 printable ASCII.
    for bad in ["", &"k".repeat(201)] {
        let (s, v) = send(&ann, bad);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad:?}: {v}"
        );
    }
    let outbound = messages(&d.ticket(t))
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, 3);
}

/// An admin lists a user's API tokens (ids, never the tokens) and revokes
/// one — or all — at once: the next request with it is 401, the others
/// still work. Before, the only way to stop a leaked token was to remove
/// its user.
#[test]
fn tokens_are_listed_and_revoked_one_or_all() {
    let d = Daemon::start("", ACME);
    let first = d.token("ann");
    let second = d.token("ann");
    let bob = d.token("bob");
    let works = |t: &str| d.api("GET", "/api/v1/tickets", Some(t), None).0 == 200;
    assert!(works(&first) && works(&second) && works(&bob));

    let listed = d.cli_json(&["users", "tokens", "ann", "--json"]);
    let ids: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert!(
        !listed.to_string().contains(&first) && !listed.to_string().contains(&second),
        "a token was shown: {listed}"
    );
    // The first token's id is the start of its sha256 (as `users token`
    // printed it on stderr).
    let issued = d.cli(&["users", "token", "bob"]);
    let said = String::from_utf8_lossy(&issued.stderr).into_owned();
    assert!(said.contains("token id "), "{said}");

    let first_id = ids
        .iter()
        .find(|id| postdesk::api::auth::token_hash(&first).starts_with(id.as_str()))
        .expect("the first token's id is listed")
        .clone();
    for bad in ["abc", "zzzzzzzz", "00000000"] {
        assert!(
            !d.cli(&["users", "revoke", "ann", bad]).status.success(),
            "revoked with {bad:?}"
        );
    }
    d.cli_ok(&["users", "revoke", "ann", &first_id]);
    assert!(!works(&first), "the revoked token still works");
    assert!(
        works(&second) && works(&bob),
        "another token stopped working"
    );

    d.cli_ok(&["users", "revoke", "ann", "--all"]);
    assert!(!works(&second));
    assert!(works(&bob), "bob's token went with ann's");
    assert_eq!(
        d.cli_json(&["users", "tokens", "ann", "--json"]),
        serde_json::json!([])
    );
    assert!(
        !d.cli(&["users", "revoke", "ann"]).status.success(),
        "neither an id nor --all"
    );
    // A user no longer in the file: their tokens can still be listed and
    // revoked (an admin cleaning up after someone left).
    d.token("bob");
    let text = std::fs::read_to_string(&d.config).expect("config");
    let without_bob = text.replace("id = \"bob\"", "id = \"bobby\"");
    assert_ne!(text, without_bob);
    std::fs::write(&d.config, without_bob).expect("write");
    let listed = d.cli_json(&["users", "tokens", "bob", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    d.cli_ok(&["users", "revoke", "bob", "--all"]);
    // Now bob is in neither the file nor the store: an unknown user, as a
    // typo is (not "revoked 0 tokens").
    for args in [
        &["users", "tokens", "bob"][..],
        &["users", "revoke", "bobb", "--all"],
    ] {
        assert_eq!(d.cli(args).status.code(), Some(2), "{args:?}");
    }
}

/// An address ingest stored as it came (not one `check` would accept, e.g.
/// a Japanese carrier's `a..b@`) can still be given an owner through the
/// API; only creating a contact needs a plausible address.
#[test]
fn an_odd_existing_contact_can_be_given_an_owner() {
    let d = Daemon::start("", ACME);
    let mut c = common::smtp::Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO x.example").0, 250);
    let raw = "From: a..b@docomo.ne.jp\r\nTo: support@acme.example\r\nSubject: odd\r\nMessage-ID: <odd@docomo.ne.jp>\r\n\r\nhi\r\n";
    let (code, text) = c.mail("bounce@docomo.ne.jp", &["support@acme.example"], raw);
    assert_eq!(code, 250, "{text}");
    let t = d.wait_tickets(1, Duration::from_secs(30));
    let email = t[0]["contact"]["email"]
        .as_str()
        .expect("email")
        .to_string();
    assert!(!postdesk::mail::is_valid_email(&email), "not odd: {email}");
    let (s, v) = d.api(
        "PUT",
        &format!("/api/v1/contacts/{email}/owner"),
        Some(&d.admin_token("ann")),
        Some(&json!({"owner": "ann"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
}
