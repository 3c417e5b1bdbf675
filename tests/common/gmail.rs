//! A small IMAP proxy that makes a real Dovecot look like Gmail where
//! postdesk depends on Gmail's own behaviour, which Dovecot does not have:
//!
//! - it advertises `X-GM-EXT-1` (in `* CAPABILITY` and `[CAPABILITY …]`);
//! - it answers the fetch item `X-GM-MSGID` with the number in the test
//!   message's `X-Test-Gm-Msgid` header (asked from Dovecot as
//!   `BODY.PEEK[HEADER.FIELDS (X-TEST-GM-MSGID)]` and rewritten in the
//!   response). On Gmail the id is the message's, whatever its labels: a
//!   test delivers the same message with the same header into two folders
//!   to stand for one message under two labels. A message without the
//!   header gets no X-GM-MSGID;
//! - labels: `UID STORE set +X-GM-LABELS (L)` becomes `UID COPY set L`, and
//!   `UID STORE set -X-GM-LABELS (…)` (the selected folder's label) becomes
//!   `\Deleted` + `UID EXPUNGE set` — on Gmail the message leaves the
//!   folder's view and stays in All Mail;
//! - the daily download cap: while [`GmailProxy::overquota`] is on, a
//!   `UID FETCH` of message bodies is answered `NO [OVERQUOTA] Account
//!   exceeded command or bandwidth limits. (Failure)`, as Gmail does, and
//!   not passed on.
//!
//! Every command the client sent is kept, as sent, for the tests to read.
//! Line-based: postdesk sends no literals; Dovecot's literals are passed on
//! whole.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const MSGID_ITEM: &str = "BODY.PEEK[HEADER.FIELDS (X-TEST-GM-MSGID)]";
const MSGID_ANSWER: &[u8] = b"BODY[HEADER.FIELDS (X-TEST-GM-MSGID)] {";
const CAP_ERROR: &str = "NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)";

#[derive(Default)]
struct Shared {
    commands: Mutex<Vec<String>>,
    overquota: AtomicBool,
    logins: AtomicUsize,
    seq: AtomicUsize,
}

pub struct GmailProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl GmailProxy {
    /// Listen on a free loopback port, forwarding to Dovecot on `upstream`.
    pub fn start(upstream: u16) -> GmailProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let s = s.clone();
                std::thread::spawn(move || connection(client, server, s));
            }
        });
        GmailProxy { port, shared }
    }

    /// Every command clients sent so far (without CRLF).
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().expect("lock").clone()
    }

    /// Answer body fetches with Gmail's download-cap error (or stop).
    pub fn overquota(&self, on: bool) {
        self.shared.overquota.store(on, Ordering::SeqCst);
    }

    /// LOGIN and AUTHENTICATE commands seen.
    pub fn logins(&self) -> usize {
        self.shared.logins.load(Ordering::SeqCst)
    }
}

fn connection(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let to_client = Arc::new(Mutex::new(client.try_clone().expect("clone")));
    let mut to_server = server.try_clone().expect("clone");
    {
        let to_client = to_client.clone();
        let (client, server) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        std::thread::spawn(move || {
            responses(server, &to_client);
            let _ = client.shutdown(std::net::Shutdown::Both);
        });
    }
    let mut lines = BufReader::new(client);
    loop {
        let mut line = Vec::new();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        shared.commands.lock().expect("lock").push(text.clone());
        let out = match command(&text, &shared) {
            Command::Forward(out) => out,
            Command::Answer(answer) => {
                let _ = to_client.lock().expect("lock").write_all(answer.as_bytes());
                continue;
            }
        };
        if to_server.write_all(out.as_bytes()).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
}

enum Command {
    /// Send this to Dovecot instead.
    Forward(String),
    /// Answer the client with this; Dovecot sees nothing.
    Answer(String),
}

fn command(line: &str, shared: &Shared) -> Command {
    let mut words = line.splitn(3, ' ');
    let (tag, verb, rest) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or("").to_ascii_uppercase(),
        words.next().unwrap_or(""),
    );
    if verb == "LOGIN" || verb == "AUTHENTICATE" {
        shared.logins.fetch_add(1, Ordering::SeqCst);
    }
    if verb == "UID" && rest.to_ascii_uppercase().starts_with("FETCH ") {
        if shared.overquota.load(Ordering::SeqCst) && rest.contains("BODY.PEEK[]") {
            return Command::Answer(format!("{tag} {CAP_ERROR}\r\n"));
        }
        return Command::Forward(format!("{}\r\n", line.replace("X-GM-MSGID", MSGID_ITEM)));
    }
    if verb == "UID" && rest.to_ascii_uppercase().starts_with("STORE ") {
        let mut parts = rest.splitn(4, ' ');
        let (_, set, op, labels) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let label = labels.trim_start_matches('(').trim_end_matches(')');
        match op {
            "+X-GM-LABELS" => return Command::Forward(format!("{tag} UID COPY {set} {label}\r\n")),
            "-X-GM-LABELS" => {
                let n = shared.seq.fetch_add(1, Ordering::SeqCst);
                return Command::Forward(format!(
                    "PX{n} UID STORE {set} +FLAGS.SILENT (\\Deleted)\r\n{tag} UID EXPUNGE {set}\r\n"
                ));
            }
            _ => {}
        }
    }
    Command::Forward(format!("{line}\r\n"))
}

/// Pass Dovecot's responses on, rewritten; drop the answers to the proxy's
/// own commands (tag `PX…`).
fn responses(server: TcpStream, to_client: &Mutex<TcpStream>) {
    let mut r = BufReader::new(server);
    loop {
        let Some(resp) = read_response(&mut r) else {
            return;
        };
        if resp.starts_with(b"PX") {
            continue;
        }
        let resp = rewrite(resp);
        if to_client.lock().expect("lock").write_all(&resp).is_err() {
            return;
        }
    }
}

/// One whole response: its line and the literals it announces.
fn read_response(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let start = out.len();
        match r.read_until(b'\n', &mut out) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = &out[start..];
        let Some(n) = literal_len(line) else {
            return Some(out);
        };
        let mut lit = vec![0u8; n];
        r.read_exact(&mut lit).ok()?;
        out.extend_from_slice(&lit);
    }
}

/// The length of the literal a line ends with (`{n}\r\n`).
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

fn rewrite(resp: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&resp);
    if text.starts_with("* CAPABILITY ") {
        return format!("{} X-GM-EXT-1\r\n", text.trim_end()).into_bytes();
    }
    if let Some(at) = text.find("[CAPABILITY ")
        && let Some(end) = text[at..].find(']')
    {
        let mut t = text.to_string();
        t.insert_str(at + end, " X-GM-EXT-1");
        return t.into_bytes();
    }
    msgid_answer(resp)
}

/// `BODY[HEADER.FIELDS (X-TEST-GM-MSGID)] {n}\r\n<header>` → `X-GM-MSGID id`.
fn msgid_answer(resp: Vec<u8>) -> Vec<u8> {
    let Some(at) = find(&resp, MSGID_ANSWER) else {
        return resp;
    };
    let after = at + MSGID_ANSWER.len();
    let Some(close) = find(&resp[after..], b"}\r\n") else {
        return resp;
    };
    let Some(n) = std::str::from_utf8(&resp[after..after + close])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return resp;
    };
    let lit_start = after + close + 3;
    let lit_end = (lit_start + n).min(resp.len());
    let header = String::from_utf8_lossy(&resp[lit_start..lit_end]);
    let id = header
        .split_once(':')
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let replacement = match id {
        Some(id) => format!("X-GM-MSGID {id}").into_bytes(),
        None => Vec::new(),
    };
    let mut out = resp[..at].to_vec();
    if replacement.is_empty() && out.last() == Some(&b' ') {
        out.pop();
    }
    out.extend_from_slice(&replacement);
    let rest = &resp[lit_end..];
    // Dropped item at the start of the list: no space before what follows.
    let rest = if replacement.is_empty() && out.last() == Some(&b'(') {
        rest.strip_prefix(b" ").unwrap_or(rest)
    } else {
        rest
    };
    out.extend_from_slice(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
