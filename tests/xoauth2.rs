//! XOAUTH2 SMTP for gmail/office365 channels, end to end: the daemon's
//! replies on a gmail channel go to the provider SMTP named in
//! `[channels.smtp]` (here a scripted responder that requires STARTTLS —
//! verified against `ca_file` — then advertises `AUTH XOAUTH2` and accepts only `user=…^Aauth=Bearer TOKEN^A^A` with a
//! token the local OAuth server issued to that user), with a token from the
//! same token source the IMAP puller uses. A token the provider refuses is
//! forgotten and the retry gets a fresh one. An office365 channel whose
//! refresh token was revoked (`invalid_grant`) keeps its reply queued with a
//! clear detail, while the gmail channel and a `[relay]` channel keep sending.
//! A backlog of replies on one channel shares at most `[channels.smtp]
//! connections` connections to the provider, reused from reply to reply.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::dovecot::OAuthServer;
use common::relay::ScriptedRelay;
use common::{Daemon, free_port, messages, swaks, wait_for};
use serde_json::{Value, json};

/// What the XOAUTH2 responder saw.
#[derive(Default)]
struct Seen {
    /// (user, token, accepted) for each AUTH XOAUTH2.
    auths: Vec<(String, String, bool)>,
    /// (authenticated user, message) for each accepted message.
    accepted: Vec<(String, Vec<u8>)>,
    /// Connections accepted, and the most open at one time.
    connections: usize,
    /// Sessions the client ended with QUIT.
    quits: usize,
    open: usize,
    max_open: usize,
}

/// A provider-like SMTP server: `STARTTLS` (required before `AUTH`, with
/// the test certificate), then `AUTH XOAUTH2` only, checked against the
/// OAuth server's issued access tokens; refuses the first `reject_first`
/// valid tokens (as a provider does with a token revoked a moment ago) the
/// way Gmail does (a `334` error challenge, then `535`).
struct XoauthSmtp {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("tls config"),
    )
}

impl XoauthSmtp {
    /// `delay`: how long each message's DATA takes to be accepted.
    fn start(oauth_state: PathBuf, reject_first: usize, delay: Duration) -> XoauthSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let rejects = Arc::new(AtomicUsize::new(reject_first));
        let tls = tls_config();
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, state, rejects, tls) =
                            (s.clone(), oauth_state.clone(), rejects.clone(), tls.clone());
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            {
                                let mut seen = s.lock().expect("lock");
                                seen.connections += 1;
                                seen.open += 1;
                                seen.max_open = seen.max_open.max(seen.open);
                            }
                            let _ = session(stream, tls, &state, &s, &rejects, delay);
                            s.lock().expect("lock").open -= 1;
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        XoauthSmtp { port, seen, stop }
    }
}

impl Drop for XoauthSmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The user the OAuth server issued `token` to, if it is live.
fn token_user(state: &PathBuf, token: &str) -> Option<String> {
    let text = std::fs::read_to_string(state).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["access"][token].as_str().map(str::to_string)
}

/// How a stretch of the session ended.
enum End {
    Closed,
    StartTls,
}

fn session(
    stream: std::net::TcpStream,
    tls: Arc<rustls::ServerConfig>,
    oauth_state: &PathBuf,
    seen: &Mutex<Seen>,
    rejects: &AtomicUsize,
    delay: Duration,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut plain = BufReader::new(stream);
    plain
        .get_mut()
        .write_all(b"220 smtp.provider.test ESMTP\r\n")?;
    if let End::StartTls = serve(&mut plain, false, oauth_state, seen, rejects, delay)? {
        let conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
        let stream = rustls::StreamOwned::new(conn, plain.into_inner());
        let mut secure = BufReader::new(stream);
        serve(&mut secure, true, oauth_state, seen, rejects, delay)?;
    }
    Ok(())
}

fn serve<S: std::io::Read + Write>(
    r: &mut BufReader<S>,
    tls: bool,
    oauth_state: &PathBuf,
    seen: &Mutex<Seen>,
    rejects: &AtomicUsize,
    delay: Duration,
) -> std::io::Result<End> {
    let mut user: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(End::Closed);
        }
        let l = line.trim_end().to_string();
        let verb = l.to_ascii_uppercase();
        let w = r.get_mut();
        if verb.starts_with("EHLO") {
            let ext: &[u8] = if tls {
                b"250-smtp.provider.test\r\n250-8BITMIME\r\n250 AUTH XOAUTH2\r\n"
            } else {
                b"250-smtp.provider.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
            };
            w.write_all(ext)?;
        } else if verb == "STARTTLS" && !tls {
            w.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
            w.flush()?;
            return Ok(End::StartTls);
        } else if verb.starts_with("AUTH") && !tls {
            w.write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n")?;
        } else if verb.starts_with("AUTH XOAUTH2 ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(l[13..].trim())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&raw).to_string();
            // user=<addr>\x01auth=Bearer <token>\x01\x01
            let parsed = text
                .strip_suffix("\x01\x01")
                .and_then(|t| t.split_once('\x01'))
                .and_then(|(u, a)| {
                    Some((u.strip_prefix("user=")?, a.strip_prefix("auth=Bearer ")?))
                });
            let (u, t) = parsed.unwrap_or(("", ""));
            let valid = !u.is_empty() && token_user(oauth_state, t).as_deref() == Some(u);
            let accept = valid
                && rejects
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err();
            seen.lock()
                .expect("lock")
                .auths
                .push((u.to_string(), t.to_string(), accept));
            if accept {
                user = Some(u.to_string());
                w.write_all(b"235 2.7.0 Accepted\r\n")?;
            } else {
                // As Gmail does: an error challenge first; the client answers
                // with an empty line (lettre just gives up), then 535.
                let err = base64::engine::general_purpose::STANDARD.encode(
                    r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#,
                );
                w.write_all(format!("334 {err}\r\n").as_bytes())?;
                w.flush()?;
                let mut empty = String::new();
                if r.read_line(&mut empty)? == 0 {
                    return Ok(End::Closed);
                }
                r.get_mut()
                    .write_all(b"535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials\r\n")?;
            }
        } else if verb.starts_with("AUTH") {
            w.write_all(b"504 5.7.4 Unrecognized authentication type\r\n")?;
        } else if verb.starts_with("MAIL") {
            if user.is_some() {
                w.write_all(b"250 2.1.0 OK\r\n")?;
            } else {
                w.write_all(b"530 5.7.0 Authentication Required\r\n")?;
            }
        } else if verb.starts_with("DATA") {
            w.write_all(b"354 Go ahead\r\n")?;
            w.flush()?;
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(End::Closed);
                }
                if l == b".\r\n" || l == b".\n" {
                    break;
                }
                body.extend_from_slice(&l);
            }
            std::thread::sleep(delay);
            seen.lock()
                .expect("lock")
                .accepted
                .push((user.clone().unwrap_or_default(), body));
            r.get_mut()
                .write_all(b"250 2.0.0 OK 1795687205 provider-queued\r\n")?;
        } else if verb.starts_with("QUIT") {
            seen.lock().expect("lock").quits += 1;
            w.write_all(b"221 2.0.0 closing connection\r\n")?;
            w.flush()?;
            return Ok(End::Closed);
        } else {
            w.write_all(b"250 OK\r\n")?;
        }
        r.get_mut().flush()?;
    }
}

/// A gmail/office365 channel whose IMAP port is `imap_port` (nothing need
/// listen there) and whose replies go to the XOAUTH2 responder on `smtp_port`.
fn provider_channel(
    (id, kind, address): (&str, &str, &str),
    token_file: &str,
    oauth: &OAuthServer,
    (imap_port, smtp_port): (u16, u16),
    extra_smtp: &str,
) -> String {
    format!(
        r#"
[[channels]]
id = "{id}"
kind = "{kind}"
address = "{address}"
[channels.imap]
host = "127.0.0.1"
port = {imap_port}
tls = "none"
[channels.oauth]
token_url = "{url}"
client_id = "postdesk-test"
refresh_token_file = "{token_file}"
[channels.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "starttls"
ca_file = "{ca}"
{extra_smtp}
"#,
        url = oauth.token_url(),
        ca = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/cert.pem"),
    )
}

fn mail_to(d: &Daemon, to: &str, msgid: &str) {
    let hdr = format!("Message-Id: <{msgid}>");
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            to,
            "--header",
            &hdr,
            "--h-Subject",
            "Need help",
            "--body",
            "Hello.",
        ],
    );
    assert!(ok, "{out}");
}

fn ticket_on(d: &Daemon, channel: &str) -> i64 {
    let tickets = d.tickets();
    tickets
        .iter()
        .find(|t| t["channel"] == channel)
        .and_then(|t| t["number"].as_i64())
        .unwrap_or_else(|| panic!("no ticket on {channel}: {tickets:?}"))
}

fn reply(d: &Daemon, token: &str, ticket: i64) -> String {
    let (status, v) = d.api(
        "POST",
        &format!("/api/v1/tickets/{ticket}/replies"),
        Some(token),
        Some(&json!({ "text": "On it." }).to_string()),
    );
    assert_eq!(status, 201, "reply: {v}\n{}", d.log_text());
    v["message_id"].as_str().expect("message_id").to_string()
}

fn outbound_of(d: &Daemon, ticket: i64) -> Value {
    messages(&d.ticket(ticket))
        .iter()
        .find(|m| m["direction"] == "outbound")
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_outbound(d: &Daemon, ticket: i64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for(Duration::from_secs(30), || {
        last = outbound_of(d, ticket);
        ok(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{what}: {last}\n{}", d.log_text()))
}

#[test]
fn gmail_replies_use_xoauth2_and_a_revoked_token_only_holds_its_channel() {
    let oauth = OAuthServer::start();
    let smtp = XoauthSmtp::start(oauth.dir.path().join("state.json"), 1, Duration::ZERO);
    let relay = ScriptedRelay::start(&["250 2.0.0 Ok: queued"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let granted = oauth.grant("desk@acme.example");
    std::fs::write(
        dir.path().join("gmail-refresh-token"),
        format!("{granted}\n"),
    )
    .expect("token");
    std::fs::write(dir.path().join("o365-refresh-token"), "rt-revoked\n").expect("token");
    // Nothing listens on the IMAP port: the pullers fail and back off.
    let imap_port = free_port();
    let ports = (imap_port, smtp.port);
    let rest = format!(
        r#"
[outbound]
retry_base_secs = 1
retry_max_secs = 1

[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"
first_name = "Ann"
last_name = "Agent"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
{gmail}{o365}"#,
        gmail = provider_channel(
            ("gmail", "gmail", "desk@acme.example"),
            "gmail-refresh-token",
            &oauth,
            ports,
            ""
        ),
        o365 = provider_channel(
            ("o365", "office365", "help@acme.example"),
            "o365-refresh-token",
            &oauth,
            ports,
            ""
        ),
    );
    let relay_keys = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10",
        relay.port
    );
    let d = Daemon::start_full(dir, "", Some(&relay_keys), &rest, None);
    mail_to(&d, "desk@acme.example", "c-gmail@customer.example");
    mail_to(&d, "help@acme.example", "c-o365@customer.example");
    mail_to(&d, "support@acme.example", "c-support@customer.example");
    d.wait_tickets(3, Duration::from_secs(20));
    let token = d.token("ann");
    let (g, o, s) = (
        ticket_on(&d, "gmail"),
        ticket_on(&d, "o365"),
        ticket_on(&d, "support"),
    );
    let gmail_mid = reply(&d, &token, g);
    reply(&d, &token, o);
    reply(&d, &token, s);

    // gmail: the first (valid) token is refused by the provider, forgotten,
    // and the retry authenticates with a fresh one.
    let sent = wait_outbound(&d, g, "gmail reply not sent", |m| m["delivery"] == "sent");
    assert!(
        sent["delivery_detail"]
            .as_str()
            .is_some_and(|t| t.starts_with("250")),
        "{sent}"
    );
    {
        let seen = smtp.seen.lock().expect("lock");
        assert_eq!(seen.accepted.len(), 1, "one message through the provider");
        assert_eq!(seen.accepted[0].0, "desk@acme.example");
        let body = String::from_utf8_lossy(&seen.accepted[0].1);
        assert!(body.contains(&gmail_mid), "{body}");
        let gmail_auths: Vec<_> = seen
            .auths
            .iter()
            .filter(|(u, _, _)| u == "desk@acme.example")
            .collect();
        assert!(gmail_auths.len() >= 2, "{gmail_auths:?}");
        assert!(!gmail_auths[0].2, "first token refused");
        assert!(gmail_auths.last().is_some_and(|a| a.2), "{gmail_auths:?}");
        assert_ne!(
            gmail_auths[0].1,
            gmail_auths.last().expect("auth").1,
            "a refused token is not reused"
        );
        assert!(
            d.log_text()
                .contains("refused the XOAUTH2 token: error challenge to AUTH XOAUTH2"),
            "{}",
            d.log_text()
        );
        assert!(
            seen.auths.iter().all(|(u, _, _)| u != "help@acme.example"),
            "no token for the revoked channel, so no AUTH attempt"
        );
    }

    // office365, revoked refresh token: queued, with the reason shown.
    let held = wait_outbound(&d, o, "o365 reply has no detail", |m| {
        m["delivery_detail"].as_str().is_some_and(|t| !t.is_empty())
    });
    assert_eq!(held["delivery"], "queued", "{held}");
    let detail = held["delivery_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("invalid_grant") && detail.contains("re-authorisation needed"),
        "{detail}"
    );
    assert!(detail.contains("o365"), "{detail}");

    // The [relay] channel is not held up.
    wait_outbound(&d, s, "support reply not sent", |m| m["delivery"] == "sent");
    assert_eq!(relay.accepted_count(), 1);
    // Still queued a while later, and never sent anywhere.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(outbound_of(&d, o)["delivery"], "queued");
    assert_eq!(smtp.seen.lock().expect("lock").accepted.len(), 1);
}

/// A daemon with one gmail channel (desk@acme.example) replying through
/// `smtp` with `extra_smtp` in its `[channels.smtp]`; `n` tickets opened on
/// it by mail, answered by ann. Returns the daemon and the tickets.
fn gmail_replies(
    oauth: &OAuthServer,
    smtp: &XoauthSmtp,
    extra_smtp: &str,
    n: usize,
) -> (Daemon, Vec<i64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let granted = oauth.grant("desk@acme.example");
    std::fs::write(dir.path().join("refresh-token"), format!("{granted}\n")).expect("token");
    let rest = format!(
        "[company]\nname = \"Acme\"\n\n[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n{}",
        provider_channel(
            ("gmail", "gmail", "desk@acme.example"),
            "refresh-token",
            oauth,
            (free_port(), smtp.port),
            extra_smtp,
        )
    );
    let d = Daemon::start_full(dir, "", None, &rest, None);
    for i in 0..n {
        mail_to(&d, "desk@acme.example", &format!("c{i}@customer.example"));
    }
    d.wait_tickets(n, Duration::from_secs(30));
    let token = d.token("ann");
    let tickets: Vec<i64> = d
        .tickets()
        .iter()
        .filter_map(|t| t["number"].as_i64())
        .collect();
    assert_eq!(tickets.len(), n);
    for t in &tickets {
        reply(&d, &token, *t);
    }
    for t in &tickets {
        wait_outbound(&d, *t, "reply not sent", |m| m["delivery"] == "sent");
    }
    (d, tickets)
}

#[test]
fn a_backlog_of_replies_shares_a_few_provider_connections() {
    const REPLIES: usize = 12;
    let oauth = OAuthServer::start();
    // 150 ms per message: the replies pile up behind the first sends.
    let smtp = XoauthSmtp::start(
        oauth.dir.path().join("state.json"),
        0,
        Duration::from_millis(150),
    );
    let _d = gmail_replies(&oauth, &smtp, "connections = 2", REPLIES);
    let seen = smtp.seen.lock().expect("lock");
    assert_eq!(
        seen.accepted.len(),
        REPLIES,
        "every reply through the provider"
    );
    assert!(
        seen.max_open <= 2,
        "at most `connections` open at once: {}",
        seen.max_open
    );
    assert!(
        seen.connections <= 2 && seen.auths.len() <= 2,
        "connections reused, not one per reply: {} connections, {} AUTHs",
        seen.connections,
        seen.auths.len()
    );
    assert!(seen.auths.iter().all(|(_, _, ok)| *ok), "{:?}", seen.auths);
}

#[test]
fn connections_of_a_replaced_token_end_with_quit() {
    // Tokens that live 60 s are inside the 5-minute refresh margin: every
    // reply gets a fresh token, so every send builds a new pool and closes
    // the one before while its connection may still be sending. Such a
    // connection must still say QUIT when it is done, not just vanish.
    let oauth = OAuthServer::start();
    oauth.set_expires_in(60);
    let smtp = XoauthSmtp::start(
        oauth.dir.path().join("state.json"),
        0,
        Duration::from_millis(300),
    );
    let (mut d, _) = gmail_replies(&oauth, &smtp, "", 4);
    // Stopping closes what is still idle; then every connection said QUIT.
    assert_eq!(d.stop().code(), Some(0));
    let seen = smtp.seen.lock().expect("lock");
    assert_eq!(seen.accepted.len(), 4);
    assert!(
        seen.auths.len() >= 2,
        "tokens were not renewed: {:?}",
        seen.auths
    );
    assert_eq!(
        seen.quits, seen.connections,
        "{} connections, {} ended with QUIT",
        seen.connections, seen.quits
    );
}

/// An IMAP server that refuses every login: records the `LOGIN` lines and
/// the `AUTHENTICATE` responses it was sent (so a test knows the secrets
/// went over the wire), answers everything else `BAD`.
fn refusing_imap() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut w = stream.try_clone()?;
                let mut r = BufReader::new(stream);
                w.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n")?;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let mut words = line.split_whitespace();
                    let tag = words.next().unwrap_or("*").to_string();
                    let verb = words.next().unwrap_or("").to_ascii_uppercase();
                    match verb.as_str() {
                        "CAPABILITY" => write!(
                            w,
                            "* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n{tag} OK done\r\n"
                        )?,
                        "LOGIN" => {
                            s.lock().expect("lock").push(line.trim_end().to_string());
                            write!(w, "{tag} NO [AUTHENTICATIONFAILED] refused\r\n")?;
                        }
                        "AUTHENTICATE" => {
                            w.write_all(b"+ \r\n")?;
                            let mut resp = String::new();
                            r.read_line(&mut resp)?;
                            s.lock().expect("lock").push(resp.trim_end().to_string());
                            write!(w, "{tag} NO [AUTHENTICATIONFAILED] refused\r\n")?;
                        }
                        "LOGOUT" => {
                            write!(w, "* BYE\r\n{tag} OK bye\r\n")?;
                            return Ok(());
                        }
                        _ => write!(w, "{tag} BAD unknown\r\n")?,
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Secrets never reach the log, even at `trace` for every target (lettre's
/// and async-imap's included): a reply through `[relay]` with AUTH PLAIN and
/// one through a gmail channel with XOAUTH2, and IMAP logins by password
/// (imap channel) and XOAUTH2 (the gmail channel); then the daemon's whole
/// log is searched for the passwords (plain and as the AUTH PLAIN base64),
/// the access tokens (plain and as the XOAUTH2 base64) and the refresh
/// tokens.
#[test]
fn no_secret_reaches_the_log_at_trace_level() {
    const PASSWORD: &str = "pw-Zq8vR3kT9x";
    const IMAP_PASSWORD: &str = "imap-pw-Hk27wQ";
    let (imap_port, imap_seen) = refusing_imap();
    let oauth = OAuthServer::start();
    let smtp = XoauthSmtp::start(oauth.dir.path().join("state.json"), 0, Duration::ZERO);
    let relay = ScriptedRelay::start(&["250 2.0.0 Ok: queued"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let granted = oauth.grant("desk@acme.example");
    std::fs::write(dir.path().join("refresh-token"), format!("{granted}\n")).expect("token");
    std::fs::write(dir.path().join("relay-password"), format!("{PASSWORD}\n")).expect("pw");
    std::fs::write(
        dir.path().join("imap-password"),
        format!("{IMAP_PASSWORD}\n"),
    )
    .expect("pw");
    let rest = format!(
        r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"

[[channels]]
id = "mailbox"
kind = "imap"
address = "help@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {imap_port}
tls = "none"
password_file = "imap-password"
{}"#,
        provider_channel(
            ("gmail", "gmail", "desk@acme.example"),
            "refresh-token",
            &oauth,
            (imap_port, smtp.port),
            "",
        )
    );
    let relay_keys = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"postdesk\"\npassword_file = \"relay-password\"",
        relay.port
    );
    let d = Daemon::start_logged(dir, "", Some(&relay_keys), &rest, None, "trace");
    for (to, id) in [
        ("desk@acme.example", "c-gmail@customer.example"),
        ("support@acme.example", "c-support@customer.example"),
    ] {
        let raw = common::smtp::message("carol@customer.example", to, "Need help", id, "Hello.");
        let (code, text) =
            common::smtp::send_file(d.smtp, "carol@customer.example", to, raw.as_bytes());
        assert_eq!(code, 250, "{text}");
    }
    d.wait_tickets(2, Duration::from_secs(20));
    let token = d.token("ann");
    let (g, s) = (ticket_on(&d, "gmail"), ticket_on(&d, "support"));
    reply(&d, &token, g);
    reply(&d, &token, s);
    wait_outbound(&d, g, "gmail reply not sent", |m| m["delivery"] == "sent");
    wait_outbound(&d, s, "relay reply not sent", |m| m["delivery"] == "sent");
    // Both pullers tried to log in (the password, and an XOAUTH2 token).
    let logins = wait_for(Duration::from_secs(30), || {
        let seen = imap_seen.lock().expect("lock").clone();
        (seen.iter().any(|l| l.contains(IMAP_PASSWORD))
            && seen.iter().any(|l| !l.contains("LOGIN")))
        .then_some(seen)
    })
    .unwrap_or_else(|| {
        panic!(
            "no IMAP logins: {:?}\n{}",
            imap_seen.lock().expect("lock"),
            d.log_text()
        )
    });

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let plain = b64(&format!("\0postdesk\0{PASSWORD}"));
    // The secrets really went over the wire (else this test proves nothing).
    assert_eq!(*relay.auth.lock().expect("lock"), vec![plain.clone()]);
    let mut secrets = vec![PASSWORD.to_string(), plain, IMAP_PASSWORD.to_string()];
    // The IMAP XOAUTH2 responses as sent (base64).
    secrets.extend(logins.iter().filter(|l| !l.contains("LOGIN")).cloned());
    {
        let seen = smtp.seen.lock().expect("lock");
        assert!(!seen.auths.is_empty() && seen.auths.iter().all(|a| a.2));
        for (user, at, _) in &seen.auths {
            secrets.push(at.clone());
            secrets.push(b64(&format!("user={user}\x01auth=Bearer {at}\x01\x01")));
        }
    }
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(oauth.dir.path().join("state.json")).expect("state"),
    )
    .expect("state json");
    for kind in ["access", "refresh"] {
        if let Some(m) = state[kind].as_object() {
            secrets.extend(m.keys().cloned());
        }
    }
    secrets.push(granted);

    let log = d.log_text();
    assert!(log.contains("TRACE"), "the daemon did not log at trace");
    for secret in &secrets {
        let at = log.find(secret.as_str());
        assert!(
            at.is_none(),
            "secret {secret:?} in the log: …{}…",
            at.map(|i| &log[i.saturating_sub(200)..(i + secret.len() + 50).min(log.len())])
                .unwrap_or_default()
        );
    }
}
