//! Runtime state reaches every node sharing a PostgreSQL store: a channel
//! disabled through node A's API is refused (450, as one node answers) by
//! node B's SMTP listener, and accepted again once A enables it; an API
//! token revoked on A is refused by B's API.

mod common;

use std::time::Duration;

use common::pg::{Cluster, daemon_on};
use common::smtp::Client;
use common::{ACME, Daemon, wait_for};

const LONG: Duration = Duration::from_secs(60);

fn node(url: &str, id: &str) -> Daemon {
    let mut d = daemon_on(url, &format!("node_id = \"{id}\""), None, ACME);
    d.spawn();
    d
}

fn rcpt_code(d: &Daemon, rcpt: &str) -> u16 {
    let mut c = Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO x.example").0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@customer.example>").0, 250);
    c.cmd(&format!("RCPT TO:<{rcpt}>")).0
}

/// Wait until `d` answers RCPT TO support@ with `code`.
fn wait_rcpt(d: &Daemon, code: u16) {
    let got = wait_for(LONG, || {
        (rcpt_code(d, "support@acme.example") == code).then_some(())
    });
    assert!(
        got.is_some(),
        "node never answered {code}:\n{}",
        d.log_text()
    );
}

#[test]
fn a_channel_switched_and_a_token_revoked_on_one_node_hold_on_the_other() {
    let cluster = Cluster::start();
    let url = cluster.url("postdesk");
    let a = node(&url, "node-a");
    let b = node(&url, "node-b");
    let admin = a.admin_token("ann");
    assert_eq!(rcpt_code(&b, "support@acme.example"), 250);

    let (status, body) = a.api(
        "POST",
        "/api/v1/channels/support/disable",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    wait_rcpt(&b, 450);
    let (status, body) = a.api(
        "POST",
        "/api/v1/channels/support/enable",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    wait_rcpt(&b, 250);

    // A token works on both nodes until it is revoked on one.
    let token = a.token("bob");
    assert_eq!(b.api("GET", "/api/v1/tickets", Some(&token), None).0, 200);
    a.cli_ok(&["users", "revoke", "bob", "--all"]);
    let refused = wait_for(LONG, || {
        (b.api("GET", "/api/v1/tickets", Some(&token), None).0 == 401).then_some(())
    });
    assert!(refused.is_some(), "node b still takes the revoked token");
    assert_eq!(a.api("GET", "/api/v1/tickets", Some(&token), None).0, 401);
    assert_eq!(b.api("GET", "/api/v1/tickets", Some(&admin), None).0, 200);
}
