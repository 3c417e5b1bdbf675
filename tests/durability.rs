//! Durability: nothing is lost once postdesk said 250.
//!
//! - 4 clients send 2000 messages while the daemon is killed with SIGKILL
//!   twice; after restart every message whose client saw 250 is in exactly
//!   one ticket, and nothing is there twice.
//! - A full disk answers 4xx without crashing, and the daemon accepts again
//!   once space returns.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::smtp::{Client, message};
use common::{ACME, Daemon, Tmpfs, wait_for};

/// Send one message on a fresh or reused connection; Ok(true) = 250.
fn try_send(conn: &mut Option<Client>, addr: SocketAddr, id: &str) -> Result<bool, ()> {
    if conn.is_none() {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|_| ())?;
        drop(stream);
        let mut c = Client::connect_raw(addr);
        if c.reply().0 != 220 || c.cmd("EHLO load.example").0 != 250 {
            return Err(());
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().ok_or(())?;
    let steps = [
        format!("MAIL FROM:<{id}>"),
        "RCPT TO:<support@acme.example>".to_string(),
        "DATA".to_string(),
    ];
    let want = [250, 250, 354];
    for (s, w) in steps.iter().zip(want) {
        let (code, _) = c.cmd(s);
        if code != w {
            return Err(());
        }
    }
    let body = message(
        &format!("Load <{id}>"),
        "support@acme.example",
        id,
        id,
        &"durable payload line\r\n".repeat(200),
    );
    c.send(body.as_bytes());
    c.send(b"\r\n.\r\n");
    match c.reply().0 {
        250 => Ok(true),
        0 => Err(()),
        _ => Ok(false),
    }
}

#[test]
fn kill_9_twice_under_load_loses_and_duplicates_nothing() {
    let mut d = Daemon::start("", ACME);
    let addr = d.smtp;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let mut conn = None;
            let mut i = 0;
            let mut failures = 0;
            while i < 500 && !stop.load(Ordering::Relaxed) {
                let id = format!("c{client}-m{i}@load.example");
                match try_send(&mut conn, addr, &id) {
                    Ok(true) => {
                        acked.lock().expect("lock").insert(id);
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                        failures = 0;
                    }
                    // Like a real MTA: retry the same message later.
                    _ => {
                        conn = None;
                        failures += 1;
                        assert!(failures < 600, "client {client} could not reconnect");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }));
    }
    for round in 1..=2 {
        let target = round * 600;
        let reached = wait_for(Duration::from_secs(120), || {
            (sent.load(Ordering::Relaxed) >= target).then_some(())
        });
        assert!(
            reached.is_some(),
            "load stalled before kill {round}:\n{}",
            d.log_text()
        );
        d.kill9();
        std::thread::sleep(Duration::from_millis(300));
        d.spawn();
    }
    for c in clients {
        c.join().expect("client thread");
    }
    stop.store(true, Ordering::Relaxed);
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(
        acked.len(),
        2000,
        "every message was eventually acknowledged"
    );

    d.wait_ingested(Duration::from_secs(120));
    let tickets = d.tickets();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &tickets {
        *seen
            .entry(t["subject"].as_str().unwrap_or("").to_string())
            .or_default() += t["messages"].as_u64().unwrap_or(0) as usize;
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let doubled: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
    assert_eq!(tickets.len(), 2000);
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(status["store"]["messages"], 2000, "{status}");
    assert_eq!(status["store"]["spool_failed"], 0, "{status}");
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
