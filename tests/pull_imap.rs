//! Pulling mailboxes from a real Dovecot (started by each test on a free
//! loopback port): bulk pull, IDLE and polling, large messages within the
//! byte budget, kill -9 mid-batch, server
//! restart mid-fetch, UIDVALIDITY change, XOAUTH2 with a rotating refresh
//! token, and `invalid_grant` isolated to its channel.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::dovecot::{Dovecot, OAuthServer, imap_channel, message};
use common::{ACME, Daemon, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(240);

fn gmail_channel(
    id: &str,
    address: &str,
    dc: &Dovecot,
    oauth: &OAuthServer,
    token: &Path,
) -> String {
    format!(
        r#"
[[channels]]
id = "{id}"
kind = "gmail"
address = "{address}"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
poll_interval_secs = 1
[channels.oauth]
token_url = "{url}"
client_id = "postdesk-test"
refresh_token_file = {token:?}
"#,
        port = dc.port,
        url = oauth.token_url()
    )
}

/// A daemon pulling Dovecot's INBOX into the channel `mailbox`
/// (help@acme.example), `extra` added to its `[channels.imap]`; the returned
/// directory holds the password file.
fn pulling(dc: &Dovecot, extra: &str) -> (Daemon, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}",
            imap_channel("mailbox", "help@acme.example", dc, &pw, extra)
        ),
    );
    (d, secrets)
}

fn mailbox(d: &Daemon, channel: &str) -> Value {
    d.mailbox(channel)
}

fn wait_mailbox(d: &Daemon, channel: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    d.wait_mailbox(channel, what, f)
}

fn subjects(tickets: &[Value]) -> HashSet<String> {
    tickets
        .iter()
        .map(|t| t["subject"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Exactly `n` tickets with `n` distinct subjects and `n` spool rows.
fn assert_exactly(d: &Daemon, n: usize) {
    let tickets = d.wait_tickets(n, LONG);
    let st = d.wait_ingested(LONG);
    assert_eq!(tickets.len(), n, "ticket count");
    assert_eq!(subjects(&tickets).len(), n, "duplicate tickets");
    assert_eq!(st["store"]["spool_total"], n as i64, "spool rows: {st}");
}

fn seen_flags(dc: &Dovecot) -> usize {
    std::fs::read_dir(dc.maildir().join("cur"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.rsplit_once(":2,")
                        .is_some_and(|(_, f)| f.contains('S'))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn pulls_500_then_new_mail_while_idle() {
    let dc = Dovecot::start(None);
    for i in 0..500 {
        dc.deliver(&message(i, 1500));
    }
    let (d, _secrets) = pulling(&dc, "idle = true");
    assert_exactly(&d, 500);
    let t = &d.tickets()[0];
    assert_eq!(t["channel"], "mailbox");
    let m = wait_mailbox(&d, "mailbox", "idle after catching up", |m| {
        m["state"] == "idle"
    });
    assert_eq!(m["last_uid"], 500);
    assert_eq!(m["fetched"], 500);

    // New mail while IDLE.
    dc.deliver(&message(1000, 200));
    assert_exactly(&d, 501);
    assert!(
        d.tickets()
            .iter()
            .any(|t| t["subject"] == "Pulled message 1000")
    );
    // The mailbox is left as it was: nothing marked \Seen, nothing removed.
    assert_eq!(seen_flags(&dc), 0, "messages were marked seen");
    let files = std::fs::read_dir(dc.maildir().join("cur"))
        .expect("cur")
        .count()
        + std::fs::read_dir(dc.maildir().join("new"))
            .expect("new")
            .count();
    assert_eq!(files, 501);
    let metrics = common_metrics(&d);
    assert!(
        metrics.contains("postdesk_mailbox_state{channel=\"mailbox\",state=\"idle\"} 1"),
        "{metrics}"
    );
}

fn common_metrics(d: &Daemon) -> String {
    d.metrics()
}

#[test]
fn new_mail_is_noticed_by_polling_without_idle() {
    let dc = Dovecot::start(None);
    for i in 0..3 {
        dc.deliver(&message(i, 200));
    }
    let (d, _secrets) = pulling(&dc, "idle = false\npoll_interval_secs = 1");
    assert_exactly(&d, 3);
    wait_mailbox(&d, "mailbox", "polling", |m| m["state"] == "polling");
    dc.deliver(&message(3, 200));
    assert_exactly(&d, 4);
}

/// Three 12 MB messages under a 25 MB `batch_bytes` (and the default 100
/// messages): fetched two, then one — the daemon's log says how many each
/// committed batch fetched — and each is in one ticket. Before, all three
/// came in one fetch.
#[test]
fn large_messages_are_fetched_within_batch_bytes() {
    let dc = Dovecot::start(None);
    for i in 0..3 {
        dc.deliver(&message(i, 12_000_000));
    }
    let (d, _secrets) = pulling(&dc, "batch_bytes = 25000000");
    assert_exactly(&d, 3);
    let log = d.log_text();
    let fetched: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("batch committed"))
        .filter_map(|l| l.split(' ').find_map(|w| w.strip_prefix("fetched=")))
        .collect();
    assert_eq!(fetched, ["2", "1"], "{log}");
}

#[test]
fn kill9_mid_batch_then_restart_loses_nothing_and_duplicates_nothing() {
    let dc = Dovecot::start(None);
    let n = 1500;
    for i in 0..n {
        dc.deliver(&message(i, 3000));
    }
    let (mut d, _secrets) = pulling(&dc, "batch_size = 25");
    // Kill as soon as the first batches are in: the pull is mid-way.
    wait_mailbox(&d, "mailbox", "some messages fetched", |m| {
        m["fetched"].as_i64().unwrap_or(0) > 0
    });
    d.kill9();
    let before = mailbox(&d, "mailbox");
    let fetched = before["fetched"].as_i64().unwrap_or(0);
    eprintln!("killed with {fetched} of {n} fetched");
    assert!(
        fetched > 0 && fetched < n as i64,
        "the kill did not land mid-pull: {before}"
    );
    d.spawn();
    assert_exactly(&d, n);
    let m = wait_mailbox(&d, "mailbox", "caught up", |m| m["last_uid"] == n as i64);
    assert_eq!(m["fetched"], n as i64, "{m}");
}

#[test]
fn sigterm_mid_pull_commits_the_batch_in_hand_then_resumes() {
    let dc = Dovecot::start(None);
    let n = 1500;
    for i in 0..n {
        dc.deliver(&message(i, 3000));
    }
    let (mut d, _secrets) = pulling(&dc, "batch_size = 25");
    wait_mailbox(&d, "mailbox", "some messages fetched", |m| {
        m["fetched"].as_i64().unwrap_or(0) > 0
    });
    let status = d.stop();
    assert!(status.success(), "{status}\n{}", d.log_text());
    let m = mailbox(&d, "mailbox");
    assert_eq!(m["state"], "stopped", "{m}");
    assert_eq!(
        m["fetched"], m["last_uid"],
        "checkpoint and spool disagree: {m}"
    );
    assert!(
        m["last_uid"].as_i64().is_some_and(|u| u < n as i64),
        "the stop did not land mid-pull: {m}"
    );
    d.spawn();
    assert_exactly(&d, n);
}

#[test]
fn dovecot_restart_mid_fetch_reconnects_and_resumes() {
    let mut dc = Dovecot::start(None);
    let n = 1500;
    for i in 0..n {
        dc.deliver(&message(i, 3000));
    }
    let (d, _secrets) = pulling(&dc, "batch_size = 20");
    wait_mailbox(&d, "mailbox", "some messages fetched", |m| {
        m["fetched"].as_i64().unwrap_or(0) > 0
    });
    dc.stop();
    let m = wait_mailbox(&d, "mailbox", "backoff while the server is down", |m| {
        m["state"] == "backoff"
    });
    assert!(
        m["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{m}"
    );
    assert!(m["last_error_at"].as_i64().is_some(), "{m}");
    dc.spawn();
    assert_exactly(&d, n);
    wait_mailbox(&d, "mailbox", "idle again", |m| m["state"] == "idle");
}

#[test]
fn new_uidvalidity_resyncs_without_duplicates() {
    let mut dc = Dovecot::start(None);
    let raws: Vec<Vec<u8>> = (0..20).map(|i| message(i, 500)).collect();
    for r in &raws {
        dc.deliver(r);
    }
    let (d, _secrets) = pulling(&dc, "poll_interval_secs = 1\nbatch_size = 8");
    assert_exactly(&d, 20);
    let first = wait_mailbox(&d, "mailbox", "caught up", |m| m["last_uid"] == 20);
    let metric = |d: &Daemon, name: &str| -> u64 {
        common_metrics(d)
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{channel=\"mailbox\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let downloaded = |d: &Daemon| metric(d, "postdesk_pull_bytes_total");
    let before = downloaded(&d);
    let total: u64 = raws.iter().map(|r| r.len() as u64).sum();
    assert!(before >= total, "{before} < {total}");
    let mut again = raws.clone();
    let new = message(20, 500);
    again.push(new.clone());
    dc.recreate_mailbox(&again);
    let m = wait_mailbox(&d, "mailbox", "resynced under the new UIDVALIDITY", |m| {
        m["uidvalidity"] != first["uidvalidity"] && m["last_uid"] == 21
    });
    assert_exactly(&d, 21);
    assert_eq!(m["skipped"], 20, "{m}");
    // Only the new message was downloaded again; the 20 known ones cost
    // their headers.
    // The one new message counts as pulled, like any other.
    assert_eq!(metric(&d, "postdesk_pull_messages_total"), 21);
    let resync = downloaded(&d) - before;
    assert!(
        resync < 2 * new.len() as u64,
        "resync downloaded {resync} bytes (one new message: {})",
        new.len()
    );
}

#[test]
fn xoauth2_end_to_end_with_rotated_refresh_token() {
    let oauth = OAuthServer::start();
    let dc = Dovecot::start(Some(oauth.port));
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("refresh-token");
    let initial = oauth.grant("test");
    std::fs::write(&token_file, format!("{initial}\n")).expect("token");
    for i in 0..5 {
        dc.deliver(&message(i, 500));
    }
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}",
            gmail_channel("gmail", "desk@acme.example", &dc, &oauth, &token_file)
        ),
    );
    assert_exactly(&d, 5);
    assert_eq!(d.tickets()[0]["channel"], "gmail");
    let on_disk = std::fs::read_to_string(&token_file).expect("token file");
    let on_disk = on_disk.trim();
    assert_ne!(on_disk, initial, "rotated refresh token was not saved");
    assert!(on_disk.starts_with("rt-"), "{on_disk}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(oauth.token_requests() >= 1);
    // No token ever reaches the log.
    let log = d.log_text();
    assert!(
        !log.contains(&initial) && !log.contains(on_disk),
        "token in log"
    );
    // Mail keeps flowing over the XOAUTH2 session.
    dc.deliver(&message(5, 500));
    assert_exactly(&d, 6);
}

#[test]
fn token_endpoint_down_backs_off_then_pulls_when_it_returns() {
    // The provider's token endpoint unreachable (an outage, a firewall):
    // the mailbox reports it and retries; nothing else stops; once the
    // endpoint answers again the mail is pulled, exactly once.
    let mut oauth = OAuthServer::start();
    let dc = Dovecot::start(Some(oauth.port));
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("refresh-token");
    std::fs::write(&token_file, format!("{}\n", oauth.grant("test"))).expect("token");
    for i in 0..3 {
        dc.deliver(&message(i, 500));
    }
    oauth.stop();
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}",
            gmail_channel("gmail", "desk@acme.example", &dc, &oauth, &token_file)
        ),
    );
    let m = wait_mailbox(&d, "gmail", "reports the token endpoint", |m| {
        m["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    assert!(d.tickets().is_empty(), "{m}");
    let error = m["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("token endpoint") && error.contains("refused"),
        "the reason is shown: {error}"
    );
    // The rest of the daemon works: SMTP takes mail meanwhile.
    let (ok, out) = common::swaks(
        d.smtp,
        &[
            "--from",
            "c@customer.example",
            "--to",
            "support@acme.example",
        ],
    );
    assert!(ok, "{out}");
    d.wait_tickets(1, LONG);
    oauth.restart();
    assert_exactly(&d, 4);
    let m = wait_mailbox(&d, "gmail", "back to normal", |m| {
        m["state"] == "idle" || m["state"] == "polling"
    });
    assert_eq!(m["fetched"].as_i64(), Some(3), "{m}");
}

#[test]
fn invalid_grant_needs_reauth_while_other_mailbox_keeps_pulling() {
    let oauth = OAuthServer::start();
    let dc = Dovecot::start(Some(oauth.port));
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let token_file = secrets.path().join("refresh-token");
    std::fs::write(&token_file, "rt-revoked\n").expect("token");
    for i in 0..3 {
        dc.deliver(&message(i, 500));
    }
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}{}",
            gmail_channel("gmail", "desk@acme.example", &dc, &oauth, &token_file),
            imap_channel(
                "mailbox",
                "help@acme.example",
                &dc,
                &pw,
                "poll_interval_secs = 1"
            )
        ),
    );
    let m = wait_mailbox(&d, "gmail", "needs_reauth", |m| {
        m["state"] == "needs_reauth"
    });
    assert!(
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_grant")),
        "{m}"
    );
    let requests = oauth.token_requests();
    // The healthy mailbox pulls, before and after the other one broke.
    assert_exactly(&d, 3);
    dc.deliver(&message(3, 500));
    assert_exactly(&d, 4);
    assert!(d.tickets().iter().all(|t| t["channel"] == "mailbox"));
    assert_eq!(mailbox(&d, "gmail")["state"], "needs_reauth");
    assert_eq!(
        oauth.token_requests(),
        requests,
        "refused grant was retried"
    );
    let metrics = common_metrics(&d);
    assert!(
        metrics.contains("postdesk_mailbox_state{channel=\"gmail\",state=\"needs_reauth\"} 1"),
        "{metrics}"
    );

    // Re-authorisation: a new refresh token on disk brings the channel back.
    let fresh = oauth.grant("test");
    std::fs::write(&token_file, format!("{fresh}\n")).expect("token");
    let mut gmail = Vec::new();
    wait_for(LONG, || {
        gmail = d
            .tickets()
            .into_iter()
            .filter(|t| t["channel"] == "gmail")
            .collect();
        (gmail.len() == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("gmail channel did not recover: {gmail:?}\n{}", d.log_text()));
}

#[test]
fn same_message_by_forward_and_by_pull_is_stored_once() {
    let dc = Dovecot::start(None);
    let raw = message(7, 300);
    let (d, secrets) = pulling(&dc, "poll_interval_secs = 1");
    // First by SMTP (a forwarding rule on the provider), then by pull.
    let script = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.sendmail("customer7@example.com", ["help@acme.example"], open(sys.argv[3], "rb").read())
s.quit()
"#;
    let file = secrets.path().join("m.eml");
    std::fs::write(&file, &raw).expect("eml");
    let (ok, out) = common::python(script, d.smtp, &[file.to_str().expect("path")]);
    assert!(ok, "{out}");
    d.wait_tickets(1, LONG);
    dc.deliver(&raw);
    let m = wait_mailbox(&d, "mailbox", "pulled", |m| m["last_uid"] == 1);
    // The pull recognised the Message-ID ingest already stored.
    assert_eq!(m["skipped"], 1, "{m}");
    let st = d.wait_ingested(LONG);
    assert_eq!(st["store"]["spool_total"], 1, "{st}");
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["messages"], 1, "{tickets:?}");
}

/// Disable `mailbox` by the CLI, wait until its puller says so, deliver
/// one more message: it is not pulled (one ticket stays one).
fn disable_then_deliver(d: &Daemon, dc: &Dovecot) {
    d.cli_ok(&["channels", "disable", "mailbox"]);
    wait_mailbox(d, "mailbox", "disabled", |m| m["state"] == "disabled");
    dc.deliver(&message(1, 300));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.tickets().len(), 1, "a disabled channel pulled mail");
}

#[test]
fn disabling_a_channel_ends_its_idle_at_once() {
    let dc = Dovecot::start(None);
    dc.deliver(&message(0, 300));
    // IDLE is renewed only every 10 minutes: only the change itself can
    // end the wait within this test's patience.
    let (d, _secrets) = pulling(&dc, "poll_interval_secs = 600");
    assert_exactly(&d, 1);
    wait_mailbox(&d, "mailbox", "idle", |m| m["state"] == "idle");
    disable_then_deliver(&d, &dc);
}

#[test]
fn disabled_channel_pauses_its_puller() {
    let dc = Dovecot::start(None);
    dc.deliver(&message(0, 300));
    let (d, _secrets) = pulling(&dc, "poll_interval_secs = 1");
    assert_exactly(&d, 1);
    disable_then_deliver(&d, &dc);
    d.cli_ok(&["channels", "enable", "mailbox"]);
    assert_exactly(&d, 2);
}

#[test]
fn a_full_store_mid_pull_loses_and_duplicates_nothing() {
    // 30 × 100 KB waiting, the store on a 2 MB tmpfs: batches commit until
    // the disk is full, the failed batch is not checkpointed, the puller
    // backs off and reconnects; once there is room again every message is
    // pulled exactly once.
    let dc = Dovecot::start(None);
    for i in 0..30 {
        dc.deliver(&message(i, 100 * 1024));
    }
    let disk = tempfile::tempdir().expect("tempdir");
    let fs = common::Tmpfs::mount(&disk.path().join("small"), "2m");
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let d = Daemon::start_in(
        tempfile::tempdir().expect("tempdir"),
        "",
        &format!(
            "{ACME}{}",
            imap_channel("mailbox", "help@acme.example", &dc, &pw, "batch_size = 4")
        ),
        Some(&fs.0.join("postdesk.sqlite")),
    );
    let full = wait_for(LONG, || d.log_text().contains("storage full").then_some(()));
    assert!(full.is_some(), "the store never filled:\n{}", d.log_text());
    assert!(d.tickets().len() < 30);
    fs.resize("64m");
    assert_exactly(&d, 30);
    assert_eq!(mailbox(&d, "mailbox")["last_uid"], 30);
}

#[test]
fn move_to_moves_pulled_mail_after_commit() {
    let dc = Dovecot::start(None);
    for i in 0..5 {
        dc.deliver(&message(i, 300));
    }
    let (d, _secrets) = pulling(&dc, "move_to = \"Processed\"\nbatch_size = 2");
    assert_moved(&d, &dc, 5);
    // Still exactly once after more mail and a new round.
    dc.deliver(&message(5, 300));
    assert_exactly(&d, 6);
}

/// A non-ASCII folder name goes to the server in modified UTF-7: before, it
/// was sent as UTF-8, which Dovecot refuses, so nothing was ever moved.
#[test]
fn move_to_a_folder_with_a_non_ascii_name() {
    let dc = Dovecot::start(None);
    for i in 0..3 {
        dc.deliver(&message(i, 300));
    }
    let (d, _secrets) = pulling(&dc, "move_to = \"Geprüft\"");
    assert_moved_to(&d, &dc, ".Gepr&APw-ft", 3);
}

#[test]
fn move_to_moves_what_an_earlier_session_left_behind() {
    // Committed but not moved — as after a connection lost between the
    // commit and the MOVE, or mail pulled before `move_to` was set: those
    // UIDs are below the checkpoint and no later fetch sees them again.
    let dc = Dovecot::start(None);
    for i in 0..5 {
        dc.deliver(&message(i, 300));
    }
    let (d, _secrets) = pulling(&dc, "batch_size = 2");
    assert_exactly(&d, 5);
    assert_eq!(maildir_count(&dc.maildir()), 5, "left in INBOX");
    // The channel's [channels.imap] table is the config's last: set move_to
    // there and reload.
    let mut text = std::fs::read_to_string(&d.config).expect("config");
    text.push_str("\nmove_to = \"Processed\"\n");
    std::fs::write(&d.config, text).expect("config");
    d.signal("HUP");
    assert_moved(&d, &dc, 5);
    assert!(
        d.log_text()
            .contains("moving messages pulled earlier but not moved yet"),
        "{}",
        d.log_text()
    );
    // New mail after that is pulled and moved as usual, exactly once.
    dc.deliver(&message(5, 300));
    assert_moved(&d, &dc, 6);
}

/// Messages in a Maildir folder (new and cur).
fn maildir_count(dir: &Path) -> usize {
    ["cur", "new"]
        .iter()
        .map(|s| {
            std::fs::read_dir(dir.join(s))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}

/// `n` tickets, and the `n` messages moved out of INBOX into Processed.
fn assert_moved(d: &Daemon, dc: &Dovecot, n: usize) {
    assert_moved_to(d, dc, ".Processed", n);
}

/// `n` tickets, and the `n` messages moved out of INBOX into the Maildir
/// folder `dir` (Dovecot names it in modified UTF-7: `.Gepr&APw-ft`).
fn assert_moved_to(d: &Daemon, dc: &Dovecot, dir: &str, n: usize) {
    assert_exactly(d, n);
    let moved = wait_for(LONG, || {
        (maildir_count(&dc.maildir().join(dir)) == n && maildir_count(&dc.maildir()) == 0)
            .then_some(())
    });
    assert!(
        moved.is_some(),
        "INBOX {} / {dir} {}\n{}",
        maildir_count(&dc.maildir()),
        maildir_count(&dc.maildir().join(dir)),
        d.log_text()
    );
}

/// Dovecot's capabilities after login, as a server without MOVE offers them
/// (`uidplus`: whether UID EXPUNGE is among them).
fn without_move(uidplus: bool) -> String {
    format!(
        "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT{}",
        if uidplus { " UIDPLUS" } else { "" }
    )
}

#[test]
fn move_to_copies_and_expunges_on_a_server_without_move() {
    // The fallback path: with MOVE missing, the old code refused move_to
    // outright (no ticket at all); UIDPLUS makes COPY + UID EXPUNGE safe.
    let dc = Dovecot::start_configured(&without_move(true));
    for i in 0..5 {
        dc.deliver(&message(i, 300));
    }
    let (d, _secrets) = pulling(&dc, "move_to = \"Processed\"\nbatch_size = 2");
    assert_moved(&d, &dc, 5);
    dc.deliver(&message(5, 300));
    assert_moved(&d, &dc, 6);
}

/// kill -9 while the COPY fallback moves batches (COPY, STORE, EXPUNGE per
/// batch, each after its commit), then a restart: every message is one
/// ticket, INBOX ends empty, and the target holds each message — at most
/// the one set in doubt at the kill (copied, not yet expunged) twice.
#[test]
fn kill9_mid_copy_fallback_then_restart_loses_nothing() {
    let dc = Dovecot::start_configured(&without_move(true));
    let n = 600;
    let batch = 25;
    for i in 0..n {
        dc.deliver(&message(i, 2000));
    }
    let (mut d, _secrets) = pulling(
        &dc,
        &format!("move_to = \"Processed\"\nbatch_size = {batch}"),
    );
    // Kill once some batches are moved: pulling and moving are mid-way.
    let moving = wait_for(LONG, || {
        (maildir_count(&dc.maildir().join(".Processed")) > 0).then_some(())
    });
    assert!(moving.is_some(), "nothing moved:\n{}", d.log_text());
    d.kill9();
    let left = maildir_count(&dc.maildir());
    eprintln!("killed with {left} of {n} left in INBOX");
    assert!(left > 0, "the kill did not land mid-move");
    d.spawn();
    assert_exactly(&d, n);
    let done = wait_for(LONG, || (maildir_count(&dc.maildir()) == 0).then_some(()));
    let processed = maildir_count(&dc.maildir().join(".Processed"));
    assert!(
        done.is_some(),
        "INBOX {} / Processed {processed}\n{}",
        maildir_count(&dc.maildir()),
        d.log_text()
    );
    assert!(
        (n..=n + batch).contains(&processed),
        "Processed holds {processed} of {n}"
    );
}

#[test]
fn move_to_is_refused_without_move_or_uidplus() {
    let dc = Dovecot::start_configured(&without_move(false));
    dc.deliver(&message(0, 300));
    let (d, _secrets) = pulling(&dc, "move_to = \"Processed\"");
    let m = wait_mailbox(&d, "mailbox", "reports the missing capability", |m| {
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("neither MOVE nor UIDPLUS"))
    });
    assert_eq!(m["fetched"].as_i64(), Some(0), "{m}");
    assert!(d.tickets().is_empty(), "pulled without being able to move");
    assert_eq!(
        maildir_count(&dc.maildir()),
        1,
        "the message stays in INBOX"
    );
}
