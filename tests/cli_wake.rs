//! The command line's reply wakes a running daemon's sender: with the
//! sender's poll at an hour (`[outbound] poll_secs`), a `postdesk reply`
//! still reaches a real smtp-sink — on SQLite only the wake-up socket next
//! to the store (`outbound::wake`) can have told the daemon; on PostgreSQL
//! only the store's notification (`NOTIFY`, heard by the node's listener).

mod common;

use std::time::Duration;

use common::browser::SmtpSink;
use common::pg::{Cluster, daemon_on};
use common::{ACME, Daemon, wait_for};

fn relay(port: u16) -> String {
    format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 10")
}

/// Wait until `d` logs `line`.
fn wait_log(d: &Daemon, line: &str) {
    let seen = wait_for(Duration::from_secs(30), || {
        d.log_text().contains(line).then_some(())
    });
    assert!(seen.is_some(), "never logged {line:?}:\n{}", d.log_text());
}

#[test]
fn a_cli_reply_wakes_the_daemons_sender() {
    let sink = SmtpSink::start();
    // Without a wake-up the sender would look at the outbox again in an hour.
    let d = Daemon::start_relay(
        "",
        &relay(sink.port),
        &format!("[outbound]\npoll_secs = 3600\n{ACME}"),
    );
    wait_log(&d, "wake-up socket listening");
    reply_from_the_cli(&d, &sink);
}

#[test]
fn a_cli_reply_wakes_a_postgres_nodes_sender() {
    let cluster = Cluster::start();
    let sink = SmtpSink::start();
    let mut d = daemon_on(
        &cluster.url("postdesk"),
        "",
        Some(&relay(sink.port)),
        &format!("[outbound]\npoll_secs = 3600\n{ACME}"),
    );
    d.spawn();
    wait_log(&d, "listening for store changes");
    reply_from_the_cli(&d, &sink);
}

/// Mail a ticket in, reply to it with `postdesk reply`, and see the reply
/// reach the relay.
fn reply_from_the_cli(d: &Daemon, sink: &SmtpSink) {
    let t = d.mail_ticket("Printer on fire", "Help.").to_string();
    d.cli_ok(&[
        "reply",
        &t,
        "--as",
        "ann",
        "--text",
        "Woken from the command line.",
    ]);
    let sent = wait_for(Duration::from_secs(60), || {
        sink.messages()
            .into_iter()
            .find(|m| m.contains("Woken from the command line."))
    });
    assert!(
        sent.is_some(),
        "the reply did not reach the relay: the daemon was not woken\n{}",
        d.log_text()
    );
}
