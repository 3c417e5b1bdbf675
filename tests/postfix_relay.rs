//! The mail admin's setup: a real Postfix relays the team alias to postdesk.
//! Mail sent to Postfix ends up as a ticket.

mod common;

use std::time::Duration;

use common::postfix::Postfix;
use common::{ACME, Daemon, swaks};

#[test]
fn postfix_relays_team_alias_to_postdesk() {
    let d = Daemon::start("", ACME);
    let pf = Postfix::start(d.smtp.port(), "acme.example");
    let upstream = format!("127.0.0.1:{}", pf.port).parse().expect("addr");
    for (i, subject) in ["Order 1001 missing", "Order 1002 damaged"]
        .iter()
        .enumerate()
    {
        let (ok, out) = swaks(
            upstream,
            &[
                "--from",
                "gina@customer.example",
                "--to",
                "support@acme.example",
                "--header",
                &format!("Subject: {subject}"),
                "--header",
                "From: Gina Green <gina@customer.example>",
                "--header",
                &format!("Message-ID: <via-postfix-{i}@customer.example>"),
                "--body",
                "Sent through the company MX.",
            ],
        );
        assert!(ok, "Postfix refused the message:\n{out}");
    }
    // An address postdesk does not serve is bounced by postdesk (550) back to
    // Postfix, never stored.
    let (ok, out) = swaks(
        upstream,
        &[
            "--from",
            "gina@customer.example",
            "--to",
            "nobody@acme.example",
            "--header",
            "Subject: Lost",
        ],
    );
    assert!(ok, "{out}");

    let tickets = d.wait_tickets(2, Duration::from_secs(60));
    let mut subjects: Vec<&str> = tickets
        .iter()
        .map(|t| t["subject"].as_str().unwrap_or(""))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Order 1001 missing", "Order 1002 damaged"],
        "{}",
        pf.log()
    );
    for t in &tickets {
        assert_eq!(t["contact"]["email"], "gina@customer.example");
        assert_eq!(t["contact"]["name"], "Gina Green");
    }
    let bounced = common::wait_for(Duration::from_secs(30), || {
        pf.log().contains("5.1.1").then_some(())
    });
    assert!(
        bounced.is_some(),
        "Postfix did not log postdesk's 550 5.1.1:\n{}",
        pf.log()
    );
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(status["store"]["spool_total"], 2, "{status}");
}
