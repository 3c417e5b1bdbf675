//! Durability: nothing is lost once postdesk said 250.
//!
//! - 4 clients send 2000 messages while the daemon is killed with SIGKILL
//!   twice; after restart every message whose client saw 250 is in exactly
//!   one ticket, and nothing is there twice.
//! - A full disk answers 4xx without crashing, and the daemon accepts again
//!   once space returns.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::load::{Load, assert_each_once};
use common::smtp::{Client, message};
use common::{ACME, Daemon, Tmpfs};

#[test]
fn kill_9_twice_under_load_loses_and_duplicates_nothing() {
    let mut d = Daemon::start("", ACME);
    let load = Load::start(d.smtp, 4, 500);
    for round in 1..=2 {
        load.wait_sent(round * 600, &d);
        d.kill9();
        std::thread::sleep(Duration::from_millis(300));
        d.spawn();
    }
    let acked = load.finish();
    assert_eq!(
        acked.len(),
        2000,
        "every message was eventually acknowledged"
    );
    assert_each_once(&d, &acked);
}

#[test]
fn full_disk_answers_4xx_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Tmpfs::mount(&dir.path().join("small"), "2m");
    let store = fs.0.join("postdesk.sqlite");
    let mut d = Daemon::start_in(
        tempfile::tempdir().expect("tempdir"),
        "",
        ACME,
        Some(&store),
    );
    let payload = "x".repeat(100 * 1024);
    let mut acked = Vec::new();
    let mut refused = None;
    let mut c = Client::connect(d.smtp);
    assert_eq!(c.cmd("EHLO full.example").0, 250);
    for i in 0..100 {
        let id = format!("full-{i}@customer.example");
        let body = message(
            "f@customer.example",
            "support@acme.example",
            &id,
            &id,
            &payload,
        );
        let (code, text) = c.mail("f@customer.example", &["support@acme.example"], &body);
        match code {
            250 => acked.push(id),
            451 | 452 => {
                refused = Some(text);
                break;
            }
            other => panic!("unexpected reply {other}: {text}"),
        }
    }
    let refused = refused.expect("the 2 MB store filled up and was refused with 4xx");
    assert!(refused.contains("4.3."), "{refused}");
    assert!(
        d.child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("wait")
            .is_none(),
        "daemon survived the full disk"
    );

    fs.resize("64m");
    let id = "after-space-returns@customer.example";
    let body = message(
        "f@customer.example",
        "support@acme.example",
        id,
        id,
        "space is back",
    );
    // The session continues; the same connection is accepted again.
    let (code, text) = c.mail("f@customer.example", &["support@acme.example"], &body);
    assert_eq!(code, 250, "{text}");
    acked.push(id.to_string());
    d.wait_ingested(Duration::from_secs(60));
    let subjects: HashSet<String> = d
        .tickets()
        .iter()
        .map(|t| t["subject"].as_str().unwrap_or("").to_string())
        .collect();
    for id in &acked {
        assert!(
            subjects.contains(id),
            "acknowledged {id} missing after the disk filled"
        );
    }
    assert_eq!(d.stop().code(), Some(0));
}
