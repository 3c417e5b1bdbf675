//! Alerts when a mailbox stops, against real peers: Dovecot (XOAUTH2
//! through the local OAuth endpoint), Postfix as the relay delivering the
//! alert emails into a Maildir. A revoked refresh token and a mailbox
//! failing for longer than `alert_after_secs` each open an incident: one
//! email to `[alerts] to`, the metric, first in `postdesk status` — and no
//! second email, not even after a restart; re-authorising resolves it.

mod common;

use std::time::Duration;

use common::dovecot::{Dovecot, OAuthServer, message};
use common::postfix::Postfix;
use common::{ACME, Daemon, free_port, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(240);

fn header(raw: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .unwrap_or_default()
}

fn notices_queued(d: &Daemon) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("notice queued") && l.contains("mailbox_alert"))
        .count()
}

fn metrics(d: &Daemon) -> String {
    d.metrics()
}

fn alerts(d: &Daemon) -> Vec<Value> {
    d.cli_json(&["status", "--json"])["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_stopped_mailbox_alerts_its_admins_once_per_incident() {
    let pf = Postfix::start_maildir(None);
    let oauth = OAuthServer::start();
    let dc = Dovecot::start(Some(oauth.port));
    dc.deliver(&message(1, 300));
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("refresh-token");
    std::fs::write(&token_file, "rt-revoked\n").expect("token");
    let pw = dc.password_file(secrets.path());
    // Nothing listens there: every session of `broken` fails.
    let closed = free_port();
    let rest = format!(
        r#"{ACME}
[notifications]
from = "postdesk@desk.acme.example"

[alerts]
to = ["admin@ops.example"]
alert_after_secs = 1

[[channels]]
id = "gmail"
kind = "gmail"
address = "desk@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
poll_interval_secs = 1
[channels.oauth]
token_url = "{url}"
client_id = "postdesk-test"
refresh_token_file = {token_file:?}

[[channels]]
id = "broken"
kind = "imap"
address = "help@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {closed}
tls = "none"
username = "test"
password_file = {pw:?}
"#,
        port = dc.port,
        url = oauth.token_url(),
    );
    let relay = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\npool_size = 2\ntimeout_secs = 10",
        pf.port
    );
    let mut d = Daemon::start_relay("", &relay, &rest);

    // Two incidents, two emails: the revoked token at once, the broken
    // mailbox once it has failed for a second.
    let mail = wait_for(LONG, || {
        let m = pf.delivered();
        (m.len() >= 2).then_some(m)
    })
    .unwrap_or_else(|| panic!("alerts not delivered\n{}\n{}", d.log_text(), pf.log()));
    for raw in &mail {
        assert_eq!(header(raw, "To"), "<admin@ops.example>");
        assert!(header(raw, "X-Postdesk-Notice").starts_with("mailbox_alert"));
        assert_eq!(header(raw, "Auto-Submitted"), "auto-generated");
    }
    let subjects: Vec<String> = mail.iter().map(|m| header(m, "Subject")).collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("Mailbox gmail (desk@acme.example) stopped")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("Mailbox broken (help@acme.example) stopped")),
        "{subjects:?}"
    );
    let gmail_mail = mail
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|m| m.contains("Mailbox gmail"))
        .expect("gmail alert");
    assert!(gmail_mail.contains("invalid_grant"), "{gmail_mail}");
    assert!(!gmail_mail.contains("rt-revoked"), "a token in the alert");

    // Status shows them first; the metric says so.
    let open = alerts(&d);
    assert_eq!(open.len(), 2, "{open:?}");
    let reason = |ch: &str| {
        open.iter()
            .find(|a| a["channel"] == ch)
            .map(|a| a["reason"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(reason("gmail"), "needs_reauth");
    assert_eq!(reason("broken"), "failing");
    assert!(open.iter().all(|a| !a["notified_at"].is_null()), "{open:?}");
    let text = String::from_utf8_lossy(&d.cli_ok(&["status"]).stdout).into_owned();
    let first: Vec<&str> = text.lines().take(2).collect();
    assert!(
        first.iter().all(|l| l.starts_with("ALERT: mailbox ")),
        "alerts not first:\n{text}"
    );
    let m = metrics(&d);
    assert!(
        m.contains("postdesk_mailbox_alert{channel=\"gmail\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("postdesk_mailbox_alerts_total{channel=\"broken\",reason=\"failing\"} 1"),
        "{m}"
    );

    // Once per incident: `broken` keeps failing, no second email.
    let failures = |d: &Daemon| {
        d.log_text()
            .lines()
            .filter(|l| l.contains("mailbox session failed") && l.contains("broken"))
            .count()
    };
    let seen = failures(&d);
    wait_for(LONG, || (failures(&d) >= seen + 2).then_some(()))
        .unwrap_or_else(|| panic!("broken stopped retrying\n{}", d.log_text()));
    assert_eq!(notices_queued(&d), 2, "{}", d.log_text());

    // Nor after a restart: the incidents are in the store.
    d.stop();
    d.spawn();
    let refused = |d: &Daemon| {
        d.log_text()
            .lines()
            .filter(|l| l.contains("oauth grant refused"))
            .count()
    };
    wait_for(LONG, || (refused(&d) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no refusal after the restart\n{}", d.log_text()));
    let seen = failures(&d);
    wait_for(LONG, || (failures(&d) >= seen + 2).then_some(()))
        .unwrap_or_else(|| panic!("broken stopped retrying\n{}", d.log_text()));
    assert_eq!(notices_queued(&d), 2, "emailed again after the restart");
    assert_eq!(alerts(&d).len(), 2);

    // Re-authorised: the gmail mailbox pulls and its incident is resolved.
    let fresh = oauth.grant("test");
    std::fs::write(&token_file, format!("{fresh}\n")).expect("token");
    d.wait_tickets(1, LONG);
    let left = wait_for(LONG, || {
        let a = alerts(&d);
        (a.len() == 1).then_some(a)
    })
    .unwrap_or_else(|| panic!("gmail's alert not resolved\n{}", d.log_text()));
    assert_eq!(left[0]["channel"], "broken");
    let m = metrics(&d);
    assert!(
        m.contains("postdesk_mailbox_alert{channel=\"gmail\"} 0"),
        "{m}"
    );
    assert_eq!(pf.delivered().len(), 2);
}
