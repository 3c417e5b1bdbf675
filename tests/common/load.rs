//! Load for crash tests: SMTP clients that send numbered messages and retry
//! each one until it is acknowledged, as an MTA would, recording every `250`;
//! and the check that each acknowledged message is in exactly one ticket.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::smtp::{Client, message};
use super::{Daemon, wait_for};

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

/// `clients` threads, each sending `per_client` messages to `addr`; the
/// subject and Message-ID of each are its id (`c{client}-m{i}@load.example`).
pub struct Load {
    pub acked: Arc<Mutex<HashSet<String>>>,
    pub sent: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, per_client: usize) -> Load {
        Load::spread(&[addr], clients, per_client)
    }

    /// Clients spread over several servers (nodes): client `k` starts on
    /// `addrs[k % n]` and, like an MTA with several MX hosts, tries the next
    /// one after a failure (a retry may so reach another node with a message
    /// the first one stored but never acknowledged).
    pub fn spread(addrs: &[SocketAddr], clients: usize, per_client: usize) -> Load {
        let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for client in 0..clients {
            let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
            let addrs = addrs.to_vec();
            threads.push(std::thread::spawn(move || {
                let mut conn = None;
                let mut server = client % addrs.len();
                let mut i = 0;
                let mut failures = 0;
                while i < per_client && !stop.load(Ordering::Relaxed) {
                    let id = format!("c{client}-m{i}@load.example");
                    match try_send(&mut conn, addrs[server], &id) {
                        Ok(true) => {
                            acked.lock().expect("lock").insert(id);
                            sent.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                            failures = 0;
                        }
                        // Like a real MTA: retry the same message later.
                        _ => {
                            conn = None;
                            server = (server + 1) % addrs.len();
                            failures += 1;
                            assert!(failures < 600, "client {client} could not reconnect");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }));
        }
        Load {
            acked,
            sent,
            threads,
        }
    }

    /// Wait until `n` messages in all were acknowledged (panics after 120 s
    /// with the daemon's log).
    pub fn wait_sent(&self, n: usize, d: &Daemon) {
        let reached = wait_for(Duration::from_secs(120), || {
            (self.sent.load(Ordering::Relaxed) >= n).then_some(())
        });
        assert!(
            reached.is_some(),
            "load stalled before {n} messages:\n{}",
            d.log_text()
        );
    }

    /// Join the clients; returns every acknowledged id.
    pub fn finish(self) -> HashSet<String> {
        for t in self.threads {
            t.join().expect("client thread");
        }
        self.acked.lock().expect("lock").clone()
    }
}

/// Every acknowledged message is in exactly one ticket, nothing is there
/// twice, and the store counts `acked.len()` messages with no failed spool
/// entry.
pub fn assert_each_once(d: &Daemon, acked: &HashSet<String>) {
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
    assert_eq!(tickets.len(), acked.len());
    let status = d.cli_json(&["status", "--json"]);
    assert_eq!(status["store"]["messages"], acked.len(), "{status}");
    assert_eq!(status["store"]["spool_failed"], 0, "{status}");
}
