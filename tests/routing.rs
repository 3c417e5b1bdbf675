//! Routing as the admin configures it, end to end through SMTP and the CLI:
//! balancing over available licensed users, away users skipped, contact
//! owners, and a routing change by SIGHUP taking effect for the next mail.

mod common;

use std::time::Duration;

use common::smtp::{Client, message};
use common::{Daemon, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

const USERS: &str = r#"
[company]
name = "Acme"

[[teams]]
id = "tier1"

[[users]]
id = "ann"
email = "ann@acme.example"
teams = ["tier1"]

[[users]]
id = "bob"
email = "bob@acme.example"
teams = ["tier1"]

[[users]]
id = "cy"
email = "cy@acme.example"
licensed = false
teams = ["tier1"]
"#;

fn config(assign: &str) -> String {
    format!(
        "{USERS}
[[channels]]
id = \"support\"
kind = \"forward\"
address = \"support@acme.example\"
[channels.routing]
assign = \"{assign}\"
teams = [\"tier1\"]
"
    )
}

/// Send one mail from `from` and return the owner of the ticket it opened.
fn owner_of_next(d: &Daemon, from: &str, id: &str) -> Value {
    let before = d.tickets().len();
    let mut c = Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO x.example").0, 250);
    let (code, text) = c.mail(
        from,
        &["support@acme.example"],
        &message(from, "support@acme.example", id, id, "help"),
    );
    assert_eq!(code, 250, "{text}");
    let tickets = d.wait_tickets(before + 1, T);
    let t = tickets
        .iter()
        .find(|t| t["subject"] == id)
        .expect("the new ticket");
    t["owner"].clone()
}

#[test]
fn team_routing_balances_and_skips_away_and_unlicensed_users() {
    let d = Daemon::start("", &config("users_and_teams"));
    let mut owners = Vec::new();
    for i in 0..6 {
        owners.push(owner_of_next(
            &d,
            "carol@customer.example",
            &format!("t{i}@c.example"),
        ));
    }
    let count = |u: &str| owners.iter().filter(|o| *o == u).count();
    assert_eq!(
        (count("ann"), count("bob"), count("cy")),
        (3, 3, 0),
        "{owners:?}"
    );

    let out = d.cli(&["users", "away", "ann"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert_eq!(
            owner_of_next(&d, "carol@customer.example", &format!("away{i}@c.example")),
            "bob"
        );
    }
    let users = d.cli_json(&["users", "list", "--json"]);
    assert_eq!(users[0]["available"], false, "{users}");
    // The same field name as the API's /users.
    assert!(users[0]["full_name"].is_string(), "{users}");

    // Nobody available: unassigned, and the ticket says why.
    assert!(d.cli(&["users", "away", "bob"]).status.success());
    assert_eq!(
        owner_of_next(&d, "carol@customer.example", "nobody@c.example"),
        Value::Null
    );
    let t = d
        .tickets()
        .into_iter()
        .find(|t| t["subject"] == "nobody@c.example")
        .expect("ticket");
    assert!(
        t["unassigned_reason"]
            .as_str()
            .unwrap_or("")
            .contains("available"),
        "{t}"
    );

    // A reply on an existing ticket never re-routes it.
    assert!(d.cli(&["users", "available", "ann"]).status.success());
    let first = d
        .tickets()
        .into_iter()
        .find(|t| t["subject"] == "t0@c.example")
        .expect("ticket");
    let mut c = Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO x.example").0, 250);
    let reply = "From: carol@customer.example\r\nTo: support@acme.example\r\nSubject: Re: t0\r\nIn-Reply-To: <t0@c.example>\r\nMessage-ID: <r0@c.example>\r\n\r\nthanks";
    assert_eq!(
        c.mail("carol@customer.example", &["support@acme.example"], reply)
            .0,
        250
    );
    d.wait_ingested(T);
    let again = d.ticket(first["number"].as_i64().expect("number"));
    assert_eq!(again["owner"], first["owner"]);
    assert_eq!(again["messages"].as_array().map(Vec::len), Some(2));
}

#[test]
fn contact_owner_routing_and_reload() {
    let d = Daemon::start("", &config("contact_owner"));
    // A new contact has no owner: unassigned.
    assert_eq!(
        owner_of_next(&d, "dave@customer.example", "d1@c.example"),
        Value::Null
    );
    let out = d.cli(&["contacts", "owner", "dave@customer.example", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        owner_of_next(&d, "dave@customer.example", "d2@c.example"),
        "bob"
    );
    // The owner away: the ticket is still theirs (they are told by email
    // when notices are on: tests/notices.rs).
    assert!(d.cli(&["users", "away", "bob"]).status.success());
    assert_eq!(
        owner_of_next(&d, "dave@customer.example", "d3@c.example"),
        "bob"
    );
    // An owner set before the contact's first mail (a key account): the
    // contact is created, and its first ticket goes to that owner. Before,
    // an unknown contact was refused.
    let out = d.cli_ok(&["contacts", "owner", "Erin@Customer.example", "ann"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("erin@customer.example created"), "{said}");
    assert_eq!(
        owner_of_next(&d, "erin@customer.example", "e1@c.example"),
        "ann"
    );
    // Clearing an unknown contact's owner, or an owner for a non-address:
    // refused, and nothing created.
    for args in [
        &["contacts", "owner", "nobody@customer.example", "--clear"][..],
        &["contacts", "owner", "not-an-address", "ann"],
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let contacts = d.cli_json(&["contacts", "list", "--json"]);
    assert!(
        !contacts.to_string().contains("nobody@")
            && !contacts.to_string().contains("not-an-address"),
        "{contacts}"
    );
    assert!(
        !d.cli(&["contacts", "owner", "dave@customer.example", "zed"])
            .status
            .success(),
        "unknown user"
    );

    // SIGHUP with a new rule: the next mail follows it.
    std::fs::write(
        &d.config,
        std::fs::read_to_string(&d.config)
            .expect("read")
            .replace("contact_owner", "users_and_teams"),
    )
    .expect("write");
    d.signal("HUP");
    let reloaded = wait_for(T, || {
        d.log_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", d.log_text());
    assert_eq!(
        owner_of_next(&d, "dave@customer.example", "d4@c.example"),
        "ann"
    );
}

#[test]
fn a_licence_removed_by_reload_is_skipped_from_then_on() {
    let d = Daemon::start("", &config("users_and_teams"));
    let mut first = Vec::new();
    for i in 0..2 {
        first.push(owner_of_next(
            &d,
            "erin@customer.example",
            &format!("l{i}@c.example"),
        ));
    }
    assert!(first.contains(&Value::from("ann")), "{first:?}");
    // ann loses her seat; she is a member of the routed team, not named, so the
    // new configuration passes `check` and is applied on SIGHUP.
    let text = std::fs::read_to_string(&d.config).expect("read");
    let text = text.replacen(
        "id = \"ann\"\nemail = \"ann@acme.example\"",
        "id = \"ann\"\nemail = \"ann@acme.example\"\nlicensed = false",
        1,
    );
    std::fs::write(&d.config, text).expect("write");
    d.signal("HUP");
    let reloaded = wait_for(T, || {
        d.log_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", d.log_text());
    for i in 0..4 {
        assert_eq!(
            owner_of_next(&d, "erin@customer.example", &format!("after{i}@c.example")),
            "bob"
        );
    }
}
