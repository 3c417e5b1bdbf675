//! A scripted SMTP relay on a free loopback port: answers every command
//! with 250 (354 to DATA) and the end of each message with the next reply
//! from a script (the last one repeats). Records every message it
//! accepted with 250, so tests can count deliveries and duplicates.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ScriptedRelay {
    pub port: u16,
    /// Bodies accepted with a 2xx reply, in order.
    pub accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Number of DATA transactions completed (any reply).
    pub transactions: Arc<AtomicUsize>,
    /// `AUTH PLAIN` initial responses seen (base64 as sent).
    pub auth: Arc<Mutex<Vec<String>>>,
    /// Envelope recipients of each accepted message (same order as `accepted`).
    pub rcpts: Arc<Mutex<Vec<Vec<String>>>>,
    /// QUIT commands received (connections closed politely).
    pub quits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ScriptedRelay {
    /// Start answering the end of DATA with `script[i]` for transaction i
    /// (e.g. `["451 4.3.0 try later", "250 2.0.0 ok"]`). An entry
    /// `"sleep:MS 250 ok"` waits MS milliseconds before answering.
    pub fn start(script: &[&str]) -> ScriptedRelay {
        Self::start_with_auth("235 2.7.0 authenticated", script)
    }

    /// As `start`, answering every AUTH with `auth_reply`.
    pub fn start_with_auth(auth_reply: &str, script: &[&str]) -> ScriptedRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Shared {
            script: Arc::new(script.iter().map(|s| s.to_string()).collect()),
            auth_reply: Arc::new(auth_reply.to_string()),
            accepted: Arc::default(),
            transactions: Arc::new(AtomicUsize::new(0)),
            auth: Arc::default(),
            rcpts: Arc::default(),
            quits: Arc::new(AtomicUsize::new(0)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sh) = (stop.clone(), shared.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let sh = sh.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = session(stream, &sh);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ScriptedRelay {
            port,
            accepted: shared.accepted,
            transactions: shared.transactions,
            auth: shared.auth,
            rcpts: shared.rcpts,
            quits: shared.quits,
            stop,
        }
    }

    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().expect("lock").len()
    }
}

impl Drop for ScriptedRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What every session of one relay shares.
#[derive(Clone)]
struct Shared {
    script: Arc<Vec<String>>,
    auth_reply: Arc<String>,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    transactions: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
    rcpts: Arc<Mutex<Vec<Vec<String>>>>,
    quits: Arc<AtomicUsize>,
}

fn session(stream: std::net::TcpStream, sh: &Shared) -> std::io::Result<()> {
    let Shared {
        script,
        auth_reply,
        accepted,
        transactions,
        auth,
        rcpts,
        quits,
    } = sh;
    let mut envelope: Vec<String> = Vec::new();
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"220 scripted.test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.trim_end().to_ascii_uppercase();
        if verb.starts_with("EHLO") {
            w.write_all(
                b"250-scripted.test\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SIZE 52428800\r\n",
            )?;
        } else if verb.starts_with("AUTH PLAIN") {
            let arg = line.trim_end().get(11..).unwrap_or("").trim().to_string();
            auth.lock().expect("lock").push(arg);
            w.write_all(format!("{auth_reply}\r\n").as_bytes())?;
        } else if verb.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n")?;
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" || l == b".\n" {
                    break;
                }
                body.extend_from_slice(&l);
            }
            let i = transactions.fetch_add(1, Ordering::SeqCst);
            let reply = script
                .get(i)
                .or(script.last())
                .cloned()
                .unwrap_or_else(|| "250 ok".into());
            let reply = match reply.strip_prefix("sleep:") {
                Some(rest) => {
                    let (ms, r) = rest.split_once(' ').unwrap_or((rest, "250 ok"));
                    std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                    r.to_string()
                }
                None => reply,
            };
            if reply.starts_with('2') {
                // Both under one lock order: accepted, then rcpts.
                let mut acc = accepted.lock().expect("lock");
                acc.push(body);
                rcpts
                    .lock()
                    .expect("lock")
                    .push(std::mem::take(&mut envelope));
            }
            envelope.clear();
            w.write_all(format!("{reply}\r\n").as_bytes())?;
        } else if verb.starts_with("RCPT TO:") {
            let addr = line.trim_end()[8..]
                .trim()
                .trim_matches(['<', '>'])
                .to_string();
            envelope.push(addr);
            w.write_all(b"250 ok\r\n")?;
        } else if verb.starts_with("MAIL") || verb.starts_with("RSET") {
            envelope.clear();
            w.write_all(b"250 ok\r\n")?;
        } else if verb.starts_with("QUIT") {
            quits.fetch_add(1, Ordering::SeqCst);
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}
