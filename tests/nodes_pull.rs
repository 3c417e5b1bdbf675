//! Two nodes sharing one PostgreSQL store pull the same mailbox (a real
//! Dovecot): one node at a time holds the mailbox's lease, every message
//! becomes exactly one ticket; the holder stopped (SIGSTOP) past its lease,
//! the other takes over and pulls what arrives; the first, woken
//! (SIGCONT), finds its lease lost, writes nothing stale and stands by.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::dovecot::{Dovecot, imap_channel, message};
use common::pg::{Cluster, daemon_on};
use common::{ACME, Daemon, wait_for};

/// Generous: the nodes share two cores with other builds.
const LONG: Duration = Duration::from_secs(240);
const LEASE: &str = "mailbox:mailbox";

/// A node of the pair: `node_id`, `lease_secs = 5`.
fn node(url: &str, id: &str, channel: &str) -> Daemon {
    let mut d = daemon_on(
        url,
        &format!("node_id = \"{id}\"\nlease_secs = 5"),
        None,
        &format!("{ACME}{channel}"),
    );
    d.spawn();
    d
}

/// The lease's (owner, epoch), if anyone ever held it.
fn lease(cluster: &Cluster) -> Option<(String, i64)> {
    let row = cluster.psql(
        "postdesk",
        &format!("SELECT owner || ' ' || epoch FROM leases WHERE name = '{LEASE}'"),
    );
    let (owner, epoch) = row.trim().split_once(' ')?;
    Some((owner.to_string(), epoch.parse().ok()?))
}

/// Wait until `n` tickets exist, then check there are exactly `n`, one per
/// pulled message (distinct subjects), from `n` spool rows with `n`
/// distinct Message-IDs; and the checkpoint at UID `n`.
fn assert_exactly(cluster: &Cluster, d: &Daemon, n: usize) {
    let tickets = d.wait_tickets(n, LONG);
    d.wait_ingested(LONG);
    let subjects: HashSet<&str> = tickets
        .iter()
        .filter_map(|t| t["subject"].as_str())
        .collect();
    assert_eq!(tickets.len(), n, "ticket count");
    assert_eq!(subjects.len(), n, "a message ticketed twice: {subjects:?}");
    let q = |sql: &str| cluster.psql("postdesk", sql).trim().to_string();
    assert_eq!(q("SELECT COUNT(*) FROM spool"), n.to_string(), "spool rows");
    assert_eq!(
        q(
            "SELECT COUNT(*) || ' ' || COUNT(DISTINCT message_id) FROM messages WHERE direction = 'inbound'"
        ),
        format!("{n} {n}"),
        "inbound messages, distinct Message-IDs"
    );
    // The checkpoint is written by the lease's holder only: never behind.
    let cp = wait_for(LONG, || {
        let last = q("SELECT last_uid FROM mailbox_checkpoints WHERE channel = 'mailbox'");
        (last == n.to_string()).then_some(last)
    });
    assert!(cp.is_some(), "checkpoint not at UID {n}");
}

#[test]
fn one_node_pulls_a_mailbox_and_the_other_takes_over_when_it_stops() {
    let cluster = Cluster::start();
    let url = cluster.url("postdesk");
    let dc = Dovecot::start(None);
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    let channel = imap_channel(
        "mailbox",
        "help@acme.example",
        &dc,
        &pw,
        "poll_interval_secs = 1",
    );
    let a = node(&url, "node-a", &channel);
    let b = node(&url, "node-b", &channel);

    for i in 1..=20 {
        dc.deliver(&message(i, 300));
    }
    assert_exactly(&cluster, &a, 20);
    let (holder, epoch) = lease(&cluster).expect("a node holds the lease");
    let (held, other, other_id) = match holder.as_str() {
        "node-a" => (&a, &b, "node-b"),
        "node-b" => (&b, &a, "node-a"),
        who => panic!("lease held by {who}"),
    };
    // Only the holder pulled.
    assert!(
        !other.log_text().contains("mailbox lease acquired"),
        "{}",
        other.log_text()
    );

    // The holder stops dead (no shutdown, no release): the other node
    // takes the mailbox over once the lease expires, under a new epoch.
    held.signal("STOP");
    let taken = wait_for(LONG, || {
        lease(&cluster).filter(|(owner, _)| owner.as_str() == other_id)
    })
    .unwrap_or_else(|| panic!("no takeover: {:?}\n{}", lease(&cluster), other.log_text()));
    assert!(taken.1 > epoch, "takeover under epoch {}", taken.1);
    for i in 21..=30 {
        dc.deliver(&message(i, 300));
    }
    assert_exactly(&cluster, other, 30);

    // The first node wakes up: it finds its lease lost and stands by.
    held.signal("CONT");
    let lost = wait_for(LONG, || {
        let log = held.log_text();
        let after = log
            .rsplit_once("mailbox lease lost")
            .map(|(_, rest)| rest.to_string());
        after.filter(|rest| rest.contains("standing by"))
    });
    assert!(lost.is_some(), "the woken node: {}", held.log_text());
    for i in 31..=35 {
        dc.deliver(&message(i, 300));
    }
    assert_exactly(&cluster, other, 35);
    assert_eq!(
        lease(&cluster).map(|(owner, _)| owner),
        Some(other_id.to_string())
    );
    // Nothing the woken node did was taken as the holder's.
    assert!(!held.log_text().contains("panicked"), "{}", held.log_text());
}

/// A 1,000-message mailbox: the lease's holder killed with SIGKILL while it
/// pulls (some of the messages are in the spool, not all); the other node
/// takes the mailbox over once the dead node's lease expires and pulls the
/// rest. Each message is one ticket, none twice, none lost; the checkpoint
/// ends at the last UID.
#[test]
fn a_1000_message_mailbox_survives_its_puller_killed_mid_pull() {
    const N: usize = 1000;
    let cluster = Cluster::start();
    let url = cluster.url("postdesk");
    let dc = Dovecot::start(None);
    for i in 1..=N {
        dc.deliver(&message(i, 300));
    }
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = dc.password_file(secrets.path());
    // Small batches: the pull takes many transactions, so the kill falls
    // between some of them.
    let channel = imap_channel(
        "mailbox",
        "help@acme.example",
        &dc,
        &pw,
        "poll_interval_secs = 1\nbatch_size = 20",
    );
    let mut a = node(&url, "node-a", &channel);
    let mut b = node(&url, "node-b", &channel);
    let spooled = || {
        cluster
            .psql("postdesk", "SELECT COUNT(*) FROM spool")
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    // Some messages pulled, and the holder known.
    let started = wait_for(LONG, || {
        let n = spooled();
        (n >= 60).then(|| lease(&cluster)).flatten()
    });
    let (holder, epoch) = started.unwrap_or_else(|| panic!("no pull:\n{}", a.log_text()));
    let (held, other, other_id) = match holder.as_str() {
        "node-a" => (&mut a, &b, "node-b"),
        "node-b" => (&mut b, &a, "node-a"),
        who => panic!("lease held by {who}"),
    };
    held.kill9();
    let at_kill = spooled();
    assert!(
        at_kill < N,
        "the holder finished the mailbox before it was killed ({at_kill} spooled)"
    );
    let killed_at = std::time::Instant::now();
    let taken = wait_for(LONG, || {
        lease(&cluster).filter(|(owner, _)| owner.as_str() == other_id)
    })
    .unwrap_or_else(|| panic!("no takeover: {:?}\n{}", lease(&cluster), other.log_text()));
    assert!(taken.1 > epoch, "takeover under epoch {}", taken.1);
    eprintln!(
        "killed {holder} with {at_kill} of {N} spooled; {other_id} took the lease over after {:?}",
        killed_at.elapsed()
    );
    assert_exactly(&cluster, other, N);
    assert!(
        other.log_text().contains("mailbox lease acquired"),
        "{}",
        other.log_text()
    );
}
