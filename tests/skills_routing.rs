//! Routing rules by skill, end to end: mail over SMTP to a channel with
//! `[[channels.routing.rules]]`; the owner is chosen by the first matching
//! rule among users with its skills (a German message to the `de` speaker,
//! an invoice question balanced over the `billing` people), the rest by the
//! channel's default; `tickets show`, the API and `resolve` say which rule
//! chose. `check` refuses a rule requiring a skill nobody has.

mod common;

use std::time::Duration;

use common::smtp::{message, send_file};
use common::{Daemon, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"
skills = ["billing", "de"]

[[users]]
id = "bob"
email = "bob@acme.example"
skills = ["Billing"]

[[users]]
id = "cy"
email = "cy@acme.example"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
[channels.routing]
assign = "users_and_teams"
users = ["cy"]

[[channels.routing.rules]]
name = "german"
languages = ["de"]
skills = ["de"]
users = ["ann", "bob", "cy"]

[[channels.routing.rules]]
name = "billing"
keywords = ["invoice", "refund"]
skills = ["billing"]
users = ["ann", "bob"]
"#;

const GERMAN: &str = "Guten Tag,\r\n\r\nmeine letzte Rechnung wurde doppelt abgebucht. Könnten Sie \
    bitte den zu viel gezahlten Betrag zurückerstatten? Vielen Dank und freundliche Grüße,\r\nKim\r\n";
const INVOICE: &str = "Hello,\r\n\r\nmy last invoice was charged twice. Could you please look \
    into it and send the money back? Thank you and kind regards,\r\nLee\r\n";
const OTHER: &str = "Hello,\r\n\r\nthe printer in our office shows an error after the last \
    update. What should we do? Kind regards,\r\nMo\r\n";

/// Send one customer mail to support@ and return its ticket (as `tickets show --json`).
fn ticket_for(d: &Daemon, from: &str, subject: &str, id: &str, body: &str) -> Value {
    let before = d.tickets().len();
    let raw = message(from, "support@acme.example", subject, id, body);
    let (code, text) = send_file(d.smtp, from, "support@acme.example", raw.as_bytes());
    assert_eq!(code, 250, "{text}");
    let tickets = d.wait_tickets(before + 1, T);
    let number = tickets[0]["number"].as_i64().expect("number");
    d.ticket(number)
}

fn routed_by(t: &Value) -> &str {
    t["routed_by"].as_str().unwrap_or_default()
}

#[test]
fn rules_choose_owners_by_language_and_keyword_and_say_so() {
    let d = Daemon::start("", CONFIG);

    // German: only ann speaks it.
    let t = ticket_for(
        &d,
        "kim@kunde.example",
        "Rechnung doppelt",
        "de1@kunde.example",
        GERMAN,
    );
    assert_eq!(t["owner"], "ann", "{t}");
    assert_eq!(
        routed_by(&t),
        "rule \"german\" (language de) → skills de",
        "{t}"
    );

    // An invoice question in English: balanced over the billing people
    // (ann has one open ticket, bob none).
    let t = ticket_for(
        &d,
        "lee@customer.example",
        "Invoice charged twice",
        "en1@customer.example",
        INVOICE,
    );
    assert_eq!(t["owner"], "bob", "{t}");
    assert!(
        routed_by(&t).starts_with("rule \"billing\" (keyword \"invoice\")"),
        "{t}"
    );
    let t = ticket_for(
        &d,
        "lee@customer.example",
        "Refund?",
        "en2@customer.example",
        INVOICE,
    );
    assert_eq!(t["owner"], "ann", "balanced: {t}");

    // No rule matches: the channel's default.
    let t = ticket_for(
        &d,
        "mo@customer.example",
        "Printer error",
        "p1@customer.example",
        OTHER,
    );
    assert_eq!(t["owner"], "cy", "{t}");
    assert_eq!(
        routed_by(&t),
        "channel default (assign = users_and_teams)",
        "{t}"
    );

    // The only German speaker away: the rule is passed over, and the
    // ticket says why it went to the default.
    d.cli_ok(&["users", "away", "ann"]);
    let t = ticket_for(
        &d,
        "kim@kunde.example",
        "Noch eine Frage",
        "de2@kunde.example",
        GERMAN,
    );
    assert_eq!(t["owner"], "cy", "{t}");
    let by = routed_by(&t);
    assert!(
        by.starts_with("channel default")
            && by.contains(
                "rule \"german\" matched (language de) but no available licensed user has skills de"
            ),
        "{by}"
    );

    // The API says the same as the CLI.
    let number = t["number"].as_i64().expect("number");
    let token = d.token("cy");
    let (status, api) = d.api(
        "GET",
        &format!("/api/v1/tickets/{number}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["routed_by"], t["routed_by"], "{api}");
    let shown = d.cli_ok(&["tickets", "show", &number.to_string()]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains(&format!("routed by: {by}")), "{shown}");

    // `resolve` tells in advance what a message would get.
    let file = d.dir.path().join("german.eml");
    std::fs::write(
        &file,
        message(
            "kim@kunde.example",
            "support@acme.example",
            "Rechnung",
            "x@kunde.example",
            GERMAN,
        ),
    )
    .expect("write");
    let out = d.cli_ok(&[
        "resolve",
        file.to_str().expect("path"),
        "--channel",
        "support",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["language"], "deu", "{v}");
    // resolve uses availability as configured (ann is available there).
    assert_eq!(
        v["routed_by"], "rule \"german\" (language de) → skills de",
        "{v}"
    );
}

/// A rule naming a skill nobody has could never choose anyone: `check`
/// refuses it, at the value, and names the skills users do have; a rule
/// whose skilled users are all outside its choice is a warning.
#[test]
fn check_refuses_a_skill_nobody_has() {
    let d = Daemon::start("", CONFIG);
    let text = std::fs::read_to_string(&d.config).expect("read");
    std::fs::write(
        &d.config,
        text.replace("skills = [\"de\"]\nusers", "skills = [\"german\"]\nusers"),
    )
    .expect("write");
    let out = d.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .position(|l| l.starts_with("skills = [\"de\"]"))
        .expect("line")
        + 1;
    assert!(
        err.contains(&format!("postdesk.toml:{line}:11: routing rule \"german\" requires skill `german`, which no user has; known: billing, de")),
        "{err}"
    );
    // A skill only users outside the rule's choice have: a warning.
    std::fs::write(
        &d.config,
        text.replace(
            "users = [\"ann\", \"bob\", \"cy\"]",
            "users = [\"bob\", \"cy\"]",
        ),
    )
    .expect("write");
    let out = d.cli(&["check"]);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("warning: routing rule \"german\" can choose nobody"),
        "{said}"
    );
    // And the daemon still runs its last good configuration.
    let alive = wait_for(T, || d.cli(&["status"]).status.success().then_some(()));
    assert!(alive.is_some());
}

/// A web form's field chooses too: a `product = "pro"` submission goes to
/// the `pro` specialist, others to the form channel's default.
#[test]
fn a_form_field_routes_a_submission() {
    let config = format!(
        "{CONFIG}
[[channels]]
id = \"web\"
kind = \"form\"
[channels.routing]
assign = \"users_and_teams\"
users = [\"cy\"]
[[channels.routing.rules]]
name = \"pro customers\"
fields = {{ product = \"pro\" }}
skills = [\"billing\"]
users = [\"bob\"]
[channels.form]
rate_limit_per_minute = 0
"
    );
    let d = Daemon::start("", &config);
    let post = |product: &str| {
        let body = serde_json::json!({
            "email": "pat@customer.example",
            "subject": format!("Question about {product}"),
            "message": "How do I export my data?",
            "product": product,
        });
        let (status, v) = common::http::request(
            d.http,
            "POST",
            "/api/v1/forms/web/submissions",
            None,
            Some(&body.to_string()),
        );
        assert_eq!(status, 201, "{v}");
        let number = d.wait_tickets(1, T)[0]["number"].as_i64().expect("number");
        d.ticket(number)
    };
    let t = post("Pro");
    assert_eq!(t["owner"], "bob", "{t}");
    assert_eq!(
        routed_by(&t),
        "rule \"pro customers\" (field product = \"pro\") → skills billing",
        "{t}"
    );
    let before = d.tickets().len();
    let t = post("basic");
    assert_eq!(d.tickets().len(), before + 1);
    assert_eq!(t["owner"], "cy", "{t}");
}
