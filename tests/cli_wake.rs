//! The command line's reply wakes a running daemon's sender: with the
//! sender's poll at an hour (`[outbound] poll_secs`), a `postdesk reply`
//! still reaches a real smtp-sink — only the wake-up socket next to the
//! store (`outbound::wake`) can have told the daemon.

mod common;

use std::time::Duration;

use common::browser::SmtpSink;
use common::{ACME, Daemon, swaks, wait_for};

#[test]
fn a_cli_reply_wakes_the_daemons_sender() {
    let sink = SmtpSink::start();
    let relay = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10",
        sink.port
    );
    // Without a wake-up the sender would look at the outbox again in an hour.
    let d = Daemon::start_relay("", &relay, &format!("[outbound]\npoll_secs = 3600\n{ACME}"));
    let listening = wait_for(Duration::from_secs(30), || {
        d.log_text()
            .contains("wake-up socket listening")
            .then_some(())
    });
    assert!(listening.is_some(), "{}", d.log_text());
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--h-Subject",
            "Printer on fire",
            "--body",
            "Help.",
        ],
    );
    assert!(ok, "{out}");
    let t = d.wait_tickets(1, Duration::from_secs(30))[0]["number"]
        .as_i64()
        .expect("number")
        .to_string();
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
