//! Gmail's specifics against a real Dovecot behind the Gmail proxy
//! (`common::gmail`: X-GM-EXT-1, X-GM-MSGID, X-GM-LABELS, the download cap):
//! one ticket per message whatever its labels (and no second download),
//! IMAP ID, `move_to` by labels (archiving), the download cap answered with
//! a long wait, and a backlog pulled at the daily budget.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::dovecot::Dovecot;
use common::gmail::GmailProxy;
use common::{ACME, Daemon, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(240);

/// A message with Gmail's id `msgid` (as the proxy reads it) and about
/// `size` bytes of body.
fn gmail_message(i: usize, msgid: u64, size: usize) -> Vec<u8> {
    let raw = common::dovecot::message(i, size);
    let mut out = format!("X-Test-Gm-Msgid: {msgid}\r\n").into_bytes();
    out.extend_from_slice(&raw);
    out
}

/// A channel pulling `folder` of Dovecot's account through the proxy.
fn channel(id: &str, address: &str, proxy: &GmailProxy, pw: &Path, extra: &str) -> String {
    common::dovecot::imap_channel_on(
        id,
        address,
        proxy.port,
        pw,
        &format!("poll_interval_secs = 1\n{extra}"),
    )
}

fn wait_mailbox(d: &Daemon, channel: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    d.wait_mailbox(channel, what, f)
}

fn body_fetches(proxy: &GmailProxy) -> usize {
    proxy
        .commands()
        .iter()
        .filter(|c| c.contains("UID FETCH") && c.contains("BODY.PEEK[]"))
        .count()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One account, two channels: INBOX and the label "Billing". Message 102 is
/// in both (the same message under two labels): three messages, three
/// tickets — before, the label's channel made a second ticket of 102. A
/// message later labelled "Billing" too (101) is recognised by its
/// X-GM-MSGID and not downloaded again. The client says who it is (ID).
#[test]
fn one_ticket_per_gmail_message_whatever_its_labels() {
    let dc = Dovecot::start(None);
    let proxy = GmailProxy::start(dc.port);
    let a = gmail_message(1, 101, 300);
    let b = gmail_message(2, 102, 300);
    let c = gmail_message(3, 103, 300);
    dc.deliver(&a);
    dc.deliver(&b);
    dc.deliver_to("Billing", &b);
    dc.deliver_to("Billing", &c);
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}{}",
            channel("inbox", "help@acme.example", &proxy, &pw, ""),
            channel(
                "billing",
                "billing@acme.example",
                &proxy,
                &pw,
                "folder = \"Billing\""
            )
        ),
    );
    let tickets = d.wait_tickets(3, LONG);
    let st = d.wait_ingested(LONG);
    let inbox = wait_mailbox(&d, "inbox", "caught up", |m| m["last_uid"] == 2);
    let billing = wait_mailbox(&d, "billing", "caught up", |m| m["last_uid"] == 2);
    assert_eq!(tickets.len(), 3, "{tickets:?}");
    assert_eq!(st["store"]["spool_total"], 3, "{st}");
    let fetched = inbox["fetched"].as_i64().unwrap_or(0) + billing["fetched"].as_i64().unwrap_or(0);
    let skipped = inbox["skipped"].as_i64().unwrap_or(0) + billing["skipped"].as_i64().unwrap_or(0);
    assert_eq!((fetched, skipped), (3, 1), "{inbox} {billing}");

    // 101 gets the label "Billing" too: known by its X-GM-MSGID, it is not
    // downloaded (the sizes-and-ids fetch is all that runs).
    let bodies = body_fetches(&proxy);
    dc.deliver_to("Billing", &a);
    wait_mailbox(&d, "billing", "the new UID passed", |m| m["last_uid"] == 3);
    assert_eq!(
        body_fetches(&proxy),
        bodies,
        "downloaded again: {:?}",
        proxy.commands()
    );
    assert_eq!(d.tickets().len(), 3);
    assert!(
        proxy
            .commands()
            .iter()
            .any(|c| c.contains("UID FETCH") && c.contains("X-GM-MSGID")),
        "X-GM-MSGID never asked"
    );

    // IMAP ID, once per session.
    let ids: Vec<String> = proxy
        .commands()
        .into_iter()
        .filter(|c| c.split(' ').nth(1) == Some("ID"))
        .collect();
    assert!(!ids.is_empty(), "no ID sent");
    assert!(ids[0].contains("\"name\" \"postdesk\""), "{ids:?}");
}

/// `move_to = "[Gmail]/All Mail"` archives: the pulled messages lose the
/// INBOX label (and nothing else happens to them: no COPY, no MOVE, no
/// `\Deleted`, no EXPUNGE from postdesk — which Gmail may turn into "move to
/// Trash"). `move_to = "Processed"` adds that label first.
#[test]
fn move_to_on_gmail_moves_by_labels() {
    for (target, added) in [("[Gmail]/All Mail", None), ("Processed", Some("Processed"))] {
        let dc = Dovecot::start(None);
        let proxy = GmailProxy::start(dc.port);
        dc.deliver(&gmail_message(1, 201, 300));
        dc.deliver(&gmail_message(2, 202, 300));
        let secrets = tempfile::tempdir().expect("tempdir");
        let pw = dc.password_file(secrets.path());
        let d = Daemon::start(
            "",
            &format!(
                "{ACME}{}",
                channel(
                    "inbox",
                    "help@acme.example",
                    &proxy,
                    &pw,
                    &format!("move_to = {target:?}")
                )
            ),
        );
        d.wait_tickets(2, LONG);
        wait_for(LONG, || (dc.count_in("INBOX") == 0).then_some(()))
            .unwrap_or_else(|| panic!("{target}: INBOX not emptied\n{}", d.log_text()));
        let sent = proxy.commands();
        let ours = |verb: &str| {
            sent.iter()
                .any(|c| c.split(' ').skip(1).take(2).collect::<Vec<_>>().join(" ") == verb)
        };
        assert!(
            !ours("UID MOVE") && !ours("UID COPY") && !ours("UID EXPUNGE"),
            "{target}: {sent:?}"
        );
        assert!(
            !sent.iter().any(|c| c.contains("\\Deleted")),
            "{target}: {sent:?}"
        );
        let removed: Vec<&String> = sent
            .iter()
            .filter(|c| c.contains("-X-GM-LABELS (\\Inbox)"))
            .collect();
        assert!(!removed.is_empty(), "{target}: {sent:?}");
        match added {
            None => {
                assert!(!sent.iter().any(|c| c.contains("+X-GM-LABELS")), "{sent:?}");
                assert!(!sent.iter().any(|c| c.contains(" CREATE ")), "{sent:?}");
            }
            Some(label) => {
                assert!(
                    sent.iter()
                        .any(|c| c.contains(&format!("+X-GM-LABELS (\"{label}\")"))),
                    "{sent:?}"
                );
                assert_eq!(dc.count_in(label), 2);
            }
        }
    }
}

/// Gmail's daily download cap answers the body fetch with `NO [OVERQUOTA]
/// Account exceeded command or bandwidth limits`: the mailbox is
/// `throttled` for an hour — not reconnecting within seconds, and not
/// skipping the messages as never returned.
#[test]
fn the_download_cap_is_answered_with_a_long_wait() {
    let dc = Dovecot::start(None);
    let proxy = GmailProxy::start(dc.port);
    proxy.overquota(true);
    for i in 0..3 {
        dc.deliver(&gmail_message(i, 300 + i as u64, 300));
    }
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}",
            channel("inbox", "help@acme.example", &proxy, &pw, "")
        ),
    );
    let m = wait_mailbox(&d, "inbox", "throttled", |m| m["state"] == "throttled");
    let resume_at = m["resume_at"].as_i64().unwrap_or(0);
    assert!(
        resume_at >= now_ms() + 55 * 60 * 1000,
        "resumes too soon: {m}"
    );
    assert!(
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeded command or bandwidth limits")),
        "{m}"
    );
    assert_eq!(m["unreturned"], 0, "{m}");
    assert_eq!(m["last_uid"], 0, "{m}");
    assert_eq!(proxy.logins(), 1);
    assert!(d.tickets().is_empty());
}

/// `download_bytes_per_day` of 1,152 KiB: an hour's share is 48 KiB. Five
/// messages of about 20 KB: two fit the first batch; the next batch would
/// wait about 40 minutes, so the session ends `throttled` with that time —
/// the backlog is pulled at the budget, not as fast as the link allows.
#[test]
fn a_backlog_is_pulled_at_the_daily_budget() {
    let dc = Dovecot::start(None);
    let proxy = GmailProxy::start(dc.port);
    for i in 0..5 {
        dc.deliver(&gmail_message(i, 400 + i as u64, 20_000));
    }
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}",
            channel(
                "inbox",
                "help@acme.example",
                &proxy,
                &pw,
                &format!("download_bytes_per_day = {}", 48 * 1024 * 24)
            )
        ),
    );
    let m = wait_mailbox(&d, "inbox", "throttled", |m| m["state"] == "throttled");
    d.wait_ingested(LONG);
    assert_eq!(d.tickets().len(), 2, "{m}");
    assert_eq!(m["last_uid"], 2, "{m}");
    let resume_at = m["resume_at"].as_i64().unwrap_or(0);
    assert!(resume_at >= now_ms() + 30 * 60 * 1000, "{m}");
    assert!(
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("download budget")),
        "{m}"
    );
    assert_eq!(body_fetches(&proxy), 1, "{:?}", proxy.commands());
}
