//! PostgreSQL restarted under load: a daemon on a private cluster, SMTP
//! clients sending all the while; the server is stopped (fast shutdown,
//! then, the second time, immediate shutdown: crash recovery at start) and
//! started again on the same socket while the clients keep sending. During
//! the outage every message is answered with a 4xx (never a 5xx, never a
//! `250` for what was not stored); the daemon, never restarted, recovers on
//! its own (its pool reconnects, later mail gets `250` and becomes tickets);
//! at the end every acknowledged message is in exactly one ticket.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::load::assert_each_once;
use common::pg::{Cluster, daemon_on};
use common::smtp::{Client, message};
use common::{ACME, Daemon, wait_for};

const LONG: Duration = Duration::from_secs(120);

/// What the clients saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Message ids answered `250` at the end of DATA.
    acked: Mutex<HashSet<String>>,
    acks: AtomicUsize,
    /// Temporary failures at the end of DATA (4xx).
    temporary: AtomicUsize,
    /// Every reply code other than the expected ones, with where it came:
    /// a 5xx anywhere is a failure of the test.
    odd: Mutex<BTreeMap<String, usize>>,
    stop: AtomicBool,
}

impl Seen {
    fn odd(&self, what: String) {
        *self.odd.lock().expect("lock").entry(what).or_default() += 1;
    }
}

/// One message on `conn` (a fresh connection when None). Ok: the final
/// reply code; Err: the connection is gone (dropped, or a 421).
fn send_one(conn: &mut Option<Client>, addr: SocketAddr, id: &str, seen: &Seen) -> Result<u16, ()> {
    if conn.is_none() {
        let mut c = Client::connect_raw(addr);
        match c.reply().0 {
            220 => {}
            code => {
                seen.odd(format!("greeting {code}"));
                return Err(());
            }
        }
        match c.cmd("EHLO load.example").0 {
            250 => {}
            code => {
                seen.odd(format!("EHLO {code}"));
                return Err(());
            }
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().ok_or(())?;
    for (line, want) in [
        (format!("MAIL FROM:<{id}>"), 250),
        ("RCPT TO:<support@acme.example>".to_string(), 250),
        ("DATA".to_string(), 354),
    ] {
        let (code, _) = c.cmd(&line);
        if code != want {
            let verb = line.split([' ', ':']).next().unwrap_or("").to_string();
            seen.odd(format!("{verb} {code}"));
            return Err(());
        }
    }
    let body = message(
        &format!("Load <{id}>"),
        "support@acme.example",
        id,
        id,
        &"a line of the message body\r\n".repeat(40),
    );
    c.send(body.as_bytes());
    c.send(b"\r\n.\r\n");
    let (code, _) = c.reply();
    if code == 0 || code == 421 {
        return Err(());
    }
    Ok(code)
}

/// `clients` threads sending numbered messages until told to stop; each
/// message is retried (as an MTA does) until it is acknowledged.
fn start_clients(addr: SocketAddr, clients: usize, seen: &Arc<Seen>) -> Vec<JoinHandle<()>> {
    (0..clients)
        .map(|client| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut conn = None;
                let mut i = 0;
                // A message answered with anything but 250 is retried even
                // after the stop: it may have been stored all the same (a
                // COMMIT whose answer was lost), and must then be acked.
                let mut retrying = false;
                while retrying || !seen.stop.load(Ordering::Relaxed) {
                    let id = format!("c{client}-m{i}@load.example");
                    match send_one(&mut conn, addr, &id, &seen) {
                        Ok(250) => {
                            seen.acked.lock().expect("lock").insert(id);
                            seen.acks.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                            retrying = false;
                        }
                        Ok(code) if (400..500).contains(&code) => {
                            seen.temporary.fetch_add(1, Ordering::Relaxed);
                            retrying = true;
                            // The session stays usable after a 4xx: RSET.
                            if let Some(c) = conn.as_mut()
                                && c.cmd("RSET").0 != 250
                            {
                                conn = None;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(code) => {
                            seen.odd(format!("end of DATA {code}"));
                            conn = None;
                            retrying = true;
                        }
                        Err(()) => {
                            conn = None;
                            retrying = true;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        })
        .collect()
}

/// Wait until `n` more messages than `from` were acknowledged.
fn wait_acks(seen: &Seen, n: usize, d: &Daemon, what: &str) {
    let from = seen.acks.load(Ordering::Relaxed);
    let got = wait_for(LONG, || {
        (seen.acks.load(Ordering::Relaxed) >= from + n).then_some(())
    });
    assert!(
        got.is_some(),
        "{what}: fewer than {n} messages acknowledged; odd replies {:?}\n{}",
        seen.odd.lock().expect("lock"),
        d.log_text()
    );
}

/// The daemon is still the process the test started: it recovered on its own.
fn still_running(d: &mut Daemon) {
    let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    assert!(
        exited.is_none(),
        "the daemon exited: {exited:?}\n{}",
        d.log_text()
    );
}

#[test]
fn postgres_restarted_under_load_loses_nothing_and_the_daemon_recovers() {
    let mut cluster = Cluster::start();
    let mut d = daemon_on(&cluster.url("postdesk"), "", None, ACME);
    d.spawn();
    let seen = Arc::new(Seen::default());
    let clients = start_clients(d.smtp, 4, &seen);
    wait_acks(&seen, 100, &d, "before the first outage");

    for immediate in [false, true] {
        let what = if immediate { "immediate" } else { "fast" };
        let temporary = seen.temporary.load(Ordering::Relaxed);
        if immediate {
            cluster.stop_immediate();
        } else {
            cluster.stop();
        }
        // The outage lasts until the clients were told to retry a while.
        let told = wait_for(LONG, || {
            (seen.temporary.load(Ordering::Relaxed) >= temporary + 20).then_some(())
        });
        assert!(
            told.is_some(),
            "{what} shutdown: no 4xx answers; odd replies {:?}\n{}",
            seen.odd.lock().expect("lock"),
            d.log_text()
        );
        cluster.spawn();
        // Recovered without a restart: new mail is acknowledged again.
        wait_acks(&seen, 100, &d, &format!("after the {what} restart"));
        still_running(&mut d);
    }

    seen.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    still_running(&mut d);
    let odd = seen.odd.lock().expect("lock").clone();
    assert!(
        odd.keys().all(|k| !k.contains(" 5")),
        "permanent failures: {odd:?}\n{}",
        d.log_text()
    );
    assert!(odd.is_empty(), "unexpected replies: {odd:?}");
    let acked = seen.acked.lock().expect("lock").clone();
    assert_each_once(&d, &acked);
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*) = COUNT(DISTINCT message_id) FROM messages"
        ),
        "t"
    );
    assert!(
        d.log_text().contains("store transaction failed"),
        "the outage was not seen by the store"
    );
}
