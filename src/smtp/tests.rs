//! Session and listener tests: exact reply codes over in-memory duplex streams (and real
//! sockets on 127.0.0.1:0 for the listener), against an in-memory `Spool`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::data::DotReceiver;
use super::session::{Shared, handle};
use super::{Envelope, RcptCheck, Spool, SpoolError, serve};
use crate::keys::TlsError;

/// The STARTTLS acceptor for a listener's configuration, as the daemon builds it.
fn tls_acceptor(
    cfg: &crate::config::SmtpConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    crate::keys::tls_acceptor(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref())
}
use crate::config::SmtpConfig;

const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- test spool

#[derive(Clone, Copy)]
enum Fail {
    Full,
    Unavailable,
    ShuttingDown,
}

#[derive(Default)]
struct MemSpool {
    committed: Mutex<Vec<(Envelope, Vec<u8>)>>,
    fail: Mutex<Option<Fail>>,
}

impl MemSpool {
    fn failing(fail: Fail) -> Self {
        let spool = Self::default();
        *spool.fail.lock().unwrap() = Some(fail);
        spool
    }

    fn messages(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.committed.lock().unwrap().clone()
    }
}

impl Spool for MemSpool {
    fn check_recipient(&self, addr: &str) -> RcptCheck {
        let (local, domain) = addr.split_once('@').unwrap_or((addr, ""));
        let base = local.split('+').next().unwrap_or(local);
        match (base, domain) {
            ("support" | "sales", "acme.example") => RcptCheck::Accept,
            ("paused", "acme.example") => RcptCheck::Disabled,
            _ => RcptCheck::Unknown,
        }
    }

    async fn commit(&self, envelope: Envelope, raw: Vec<u8>) -> Result<i64, SpoolError> {
        let fail = *self.fail.lock().unwrap();
        match fail {
            Some(Fail::Full) => Err(SpoolError::Full),
            Some(Fail::Unavailable) => Err(SpoolError::Unavailable("locked".into())),
            Some(Fail::ShuttingDown) => Err(SpoolError::ShuttingDown),
            None => {
                let mut committed = self.committed.lock().unwrap();
                committed.push((envelope, raw));
                Ok(committed.len() as i64)
            }
        }
    }
}

// ---------------------------------------------------------------- test client

/// Counts `poll_write` calls that wrote bytes (to check reply batching).
struct CountingIo<T> {
    inner: T,
    writes: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Client<T> {
    io: BufReader<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Client<T> {
    fn new(io: T) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.send_bytes(bytes.as_bytes()).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One complete (possibly multi-line) reply; "" on EOF.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Assert the next reply's last line starts with `expected` (e.g. "250 2.1.5").
    async fn expect(&mut self, expected: &str) -> String {
        let reply = self.reply().await;
        let last = reply.lines().last().unwrap_or("");
        assert!(
            last.starts_with(expected),
            "expected {expected:?}, got {reply:?}"
        );
        reply
    }

    async fn cmd(&mut self, line: &str, expected: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.expect(expected).await
    }

    async fn expect_eof(&mut self) {
        let reply = self.reply().await;
        assert_eq!(reply, "", "expected the connection to close");
    }
}

// ---------------------------------------------------------------- harness

fn cfg() -> SmtpConfig {
    SmtpConfig {
        hostname: "mx.test".into(),
        ..SmtpConfig::default()
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

fn tls_cfg() -> SmtpConfig {
    SmtpConfig {
        tls_cert: Some(fixture("cert.pem")),
        tls_key: Some(fixture("key.pem")),
        ..cfg()
    }
}

struct Harness {
    spool: Arc<MemSpool>,
    shared: Arc<Shared<MemSpool>>,
}

impl Harness {
    fn new(cfg: SmtpConfig, spool: MemSpool) -> Self {
        let tls = tls_acceptor(&cfg).unwrap();
        let spool = Arc::new(spool);
        let shared = Arc::new(Shared::new(
            Arc::new(cfg),
            Arc::clone(&spool),
            tls,
            CancellationToken::new(),
        ));
        Self { spool, shared }
    }

    /// A session on a duplex pipe; the greeting is already read.
    async fn connect(&self) -> Client<tokio::io::DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(handle(server, CLIENT_IP, Arc::clone(&self.shared)));
        let mut client = Client::new(client);
        client.expect("220 mx.test ESMTP postdesk").await;
        client
    }
}

async fn session(cfg: SmtpConfig) -> (Client<tokio::io::DuplexStream>, Arc<MemSpool>) {
    let harness = Harness::new(cfg, MemSpool::default());
    let client = harness.connect().await;
    (client, harness.spool)
}

async fn start_listener(
    cfg: SmtpConfig,
) -> (
    std::net::SocketAddr,
    Arc<MemSpool>,
    CancellationToken,
    JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spool = Arc::new(MemSpool::default());
    let token = CancellationToken::new();
    let tls = tls_acceptor(&cfg).unwrap();
    let task = tokio::spawn(serve(
        vec![listener],
        Arc::new(cfg),
        tls,
        Arc::clone(&spool),
        token.clone(),
    ));
    (addr, spool, token, task)
}

async fn tcp(addr: std::net::SocketAddr) -> Client<TcpStream> {
    Client::new(TcpStream::connect(addr).await.unwrap())
}

/// EHLO, MAIL, one RCPT to support@.
async fn open_transaction<T: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<T>) {
    client.cmd("EHLO client.test", "250 ").await;
    client
        .cmd("MAIL FROM:<alice@example.org>", "250 2.1.0")
        .await;
    client
        .cmd("RCPT TO:<support@acme.example>", "250 2.1.5")
        .await;
}

const BODY: &str = "Subject: hi\r\n\r\nHello.\r\n";

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn happy_path() {
    let (mut c, spool) = session(cfg()).await;
    let ehlo = c.cmd("EHLO client.test", "250 ").await;
    for cap in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 26214400",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(ehlo.contains(cap), "{cap} missing in {ehlo:?}");
    }
    assert!(ehlo.starts_with("250-mx.test\r\n"), "{ehlo:?}");
    assert!(!ehlo.contains("STARTTLS"), "no TLS configured: {ehlo:?}");
    c.cmd("MAIL FROM:<Alice@Example.org>", "250 2.1.0").await;
    c.cmd("RCPT TO:<Support@ACME.example>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.cmd("QUIT", "221 2.0.0").await;
    c.expect_eof().await;

    let messages = spool.messages();
    assert_eq!(messages.len(), 1);
    let (env, raw) = &messages[0];
    assert_eq!(
        env,
        &Envelope {
            mail_from: "Alice@Example.org".into(),
            rcpt_to: vec!["support@acme.example".into()],
            client_ip: CLIENT_IP,
            helo: "client.test".into(),
            tls: false,
        }
    );
    assert_eq!(raw, BODY.as_bytes());
}

#[tokio::test]
async fn helo_and_null_sender() {
    let (mut c, spool) = session(cfg()).await;
    // RFC 5321 4.1.1.1 `250 SP Domain`; RFC 2034: no enhanced code in replies to HELO.
    let reply = c.cmd("HELO old.client", "250 ").await;
    assert_eq!(reply, "250 mx.test\r\n");
    c.cmd("MAIL FROM:<>", "250 2.1.0").await;
    c.cmd("RCPT TO:<sales@acme.example>", "250 2.1.5").await;
    c.cmd("RCPT TO:<SALES@acme.example>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(".\r\n").await;
    c.expect("250 2.0.0").await;
    let (env, raw) = &spool.messages()[0];
    assert_eq!(env.mail_from, "");
    assert_eq!(env.rcpt_to, vec!["sales@acme.example".to_string()]);
    assert_eq!(env.helo, "old.client");
    assert!(raw.is_empty());
}

#[tokio::test]
async fn pipelined_transaction_in_one_write() {
    let harness = Harness::new(cfg(), MemSpool::default());
    let (client, server) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let server = CountingIo {
        inner: server,
        writes: Arc::clone(&writes),
    };
    tokio::spawn(handle(server, CLIENT_IP, Arc::clone(&harness.shared)));
    let mut c = Client::new(client);
    c.expect("220 ").await;
    let before = writes.load(Ordering::SeqCst);
    c.send(concat!(
        "EHLO client.test\r\n",
        "MAIL FROM:<alice@example.org>\r\n",
        "RCPT TO:<support@acme.example>\r\n",
        "RCPT TO:<nobody@acme.example>\r\n",
        "RCPT TO:<sales@acme.example>\r\n",
        "DATA\r\n",
    ))
    .await;
    for expected in [
        "250 ",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "354",
    ] {
        c.expect(expected).await;
    }
    assert_eq!(
        writes.load(Ordering::SeqCst) - before,
        1,
        "pipelined replies must go out in one write"
    );
    c.send(&format!("{BODY}.\r\nQUIT\r\n")).await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.expect("221 2.0.0").await;
    let (env, raw) = &harness.spool.messages()[0];
    assert_eq!(env.rcpt_to, ["support@acme.example", "sales@acme.example"]);
    assert_eq!(raw, BODY.as_bytes());
}

#[tokio::test]
async fn rcpt_replies() {
    let table = [
        ("<support@acme.example>", "250 2.1.5"),
        ("<Support@ACME.Example>", "250 2.1.5"),
        ("<support+billing@acme.example>", "250 2.1.5"),
        ("<nobody@acme.example>", "550 5.1.1"),
        ("<paused@acme.example>", "450 4.2.1"),
        ("<support@elsewhere.example>", "550 5.1.1"),
        ("<victim@gmail.com>", "550 5.1.1"),
        ("<@relay.example:support@acme.example>", "250 2.1.5"),
        // `<>` and `<Postmaster>` both reach us as "": neither is a channel.
        ("<>", "550 5.1.1"),
        ("<postmaster>", "550 5.1.1"),
        ("<Postmaster>", "550 5.1.1"),
        ("<postmaster@acme.example>", "550 5.1.1"),
        ("<support@acme.example> NOTIFY=NEVER", "555 5.5.4"),
        ("support@acme.example", "501 5.5.4"),
    ];
    for (addr, expected) in table {
        let (mut c, _) = session(cfg()).await;
        c.cmd("EHLO client.test", "250 ").await;
        c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
        let reply = c.cmd(&format!("RCPT TO:{addr}"), "").await;
        assert!(reply.starts_with(expected), "RCPT TO:{addr}: {reply:?}");
    }
}

#[tokio::test]
async fn command_replies() {
    // Each script runs in a fresh session: (command, expected reply prefix).
    let scripts: &[&[(&str, &str)]] = &[
        &[("MAIL FROM:<a@example.org>", "503 5.5.1")],
        &[("RCPT TO:<support@acme.example>", "503 5.5.1")],
        &[
            ("EHLO c", "250 "),
            ("RCPT TO:<support@acme.example>", "503 5.5.1"),
        ],
        &[("EHLO c", "250 "), ("DATA", "503 5.5.1")],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("DATA", "503 5.5.1"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("RCPT TO:<nobody@acme.example>", "550 5.1.1"),
            ("DATA", "554 5.5.1"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("MAIL FROM:<a@b.example>", "503 5.5.1"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("RSET", "250 2.0.0"),
            ("RCPT TO:<support@acme.example>", "503 5.5.1"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("EHLO c", "250 "),
            ("RCPT TO:<support@acme.example>", "503 5.5.1"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example> SIZE=26214401", "552 5.3.4"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example> SIZE=1000", "250 2.1.0"),
        ],
        &[
            ("EHLO c", "250 "),
            (
                "MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8",
                "250 2.1.0",
            ),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example> BODY=BINARYMIME", "555 5.5.4"),
        ],
        &[
            ("EHLO c", "250 "),
            ("MAIL FROM:<a@b.example> FOO=BAR", "555 5.5.4"),
        ],
        &[("EHLO c", "250 "), ("MAIL FROM:a@b.example", "501 5.5.4")],
        &[("EHLO c", "250 "), ("MAIL FROM:<a@@b>", "501 5.1.7")],
        &[("EHLO", "501 5.5.4")],
        &[("FOO bar", "500 5.5.2")],
        &[("", "500 5.5.2")],
        &[("NOOP", "250 2.0.0")],
        &[("RSET", "250 2.0.0")],
        &[("VRFY support", "252 2.5.0")],
        &[("HELP", "214 2.0.0")],
        &[("EXPN list", "502 5.5.1")],
        &[("AUTH PLAIN AGJvYgBwdw==", "502 5.5.1")],
        &[("STARTTLS", "454 4.7.0")],
        &[("BDAT 0 LAST", "503 5.5.1"), ("NOOP", "250 2.0.0")],
        &[("QUIT", "221 2.0.0")],
    ];
    for script in scripts {
        let (mut c, spool) = session(cfg()).await;
        for (line, expected) in *script {
            let reply = c.cmd(line, expected).await;
            assert!(reply.is_ascii(), "{reply:?}");
        }
        assert!(spool.messages().is_empty());
    }
}

#[tokio::test]
async fn oversize_data_is_read_to_the_end_then_552() {
    let (mut c, spool) = session(SmtpConfig {
        max_message_size: 100,
        ..cfg()
    })
    .await;
    let ehlo = c.cmd("EHLO c", "250 ").await;
    assert!(ehlo.contains("SIZE 100\r\n"));
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    // The body carries commands: they must be swallowed with it, not executed.
    let mut body = "x".repeat(150);
    body.push_str("\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n");
    body.push_str(&"y".repeat(20_000));
    body.push_str("\r\n.\r\n");
    c.send(&body).await;
    c.expect("552 5.3.4").await;
    c.cmd("RCPT TO:<support@acme.example>", "503 5.5.1").await;
    // A message of exactly the limit is fine.
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    c.cmd("RCPT TO:<support@acme.example>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(&format!("{}\r\n.\r\n", "z".repeat(98))).await;
    c.expect("250 2.0.0").await;
    assert_eq!(spool.messages().len(), 1);
    assert_eq!(spool.messages()[0].1.len(), 100);
}

async fn open_after_ehlo<T: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<T>) {
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    c.cmd("RCPT TO:<support@acme.example>", "250 2.1.5").await;
}

#[tokio::test]
async fn too_many_recipients() {
    let (mut c, spool) = session(SmtpConfig {
        max_recipients: 2,
        ..cfg()
    })
    .await;
    c.cmd("EHLO c", "250 ").await;
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    c.cmd("RCPT TO:<support@acme.example>", "250 2.1.5").await;
    c.cmd("RCPT TO:<sales@acme.example>", "250 2.1.5").await;
    c.cmd(
        "RCPT TO:<support+x@acme.example>",
        "452 4.5.3 Too many recipients",
    )
    .await;
    c.cmd("DATA", "354").await;
    c.send(".\r\n").await;
    c.expect("250 2.0.0").await;
    assert_eq!(spool.messages()[0].0.rcpt_to.len(), 2);
}

#[tokio::test]
async fn long_line() {
    let (mut c, _) = session(SmtpConfig {
        max_line_length: 64,
        ..cfg()
    })
    .await;
    // Complete over-long line in one write.
    c.send(&format!("NOOP {}\r\n", "a".repeat(100))).await;
    c.expect("500 5.5.2 Line too long").await;
    c.cmd("NOOP", "250 2.0.0").await;
    // Over-long line arriving in pieces; its tail must not run as a command.
    c.send(&"b".repeat(50)).await;
    c.send(&"c".repeat(50)).await;
    c.expect("500 5.5.2 Line too long").await;
    c.send("\r\nNOOP\r\n").await;
    c.expect("250 2.0.0").await;
    // Exactly at the limit (CRLF included) is fine.
    c.cmd(&format!("NOOP {}", "d".repeat(57)), "250 2.0.0")
        .await;
}

#[tokio::test]
async fn junk_command_limit() {
    let (mut c, _) = session(SmtpConfig {
        max_junk_commands: 3,
        ..cfg()
    })
    .await;
    c.cmd("NOOP", "250 2.0.0").await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("VRFY x", "252 2.5.0").await;
    c.cmd("HELP", "421 4.7.0").await;
    c.expect_eof().await;
}

#[tokio::test]
async fn error_limit() {
    let (mut c, _) = session(SmtpConfig {
        max_errors: 2,
        ..cfg()
    })
    .await;
    c.cmd("FOO", "500 5.5.2").await;
    c.cmd("MAIL FROM:<a@example.org>", "503 5.5.1").await;
    c.cmd("BAR", "421 4.7.0 Too many errors").await;
    c.expect_eof().await;
}

/// `<Postmaster>` is a valid forward-path (RFC 5321 4.1.1.3 / 4.5.1), not a syntax
/// error; not being a channel address, it gets `550 5.1.1` like any unknown recipient.
#[tokio::test]
async fn rcpt_postmaster_is_an_unknown_recipient() {
    for addr in ["<postmaster>", "<Postmaster>", "<POSTMASTER>"] {
        let (mut c, spool) = session(cfg()).await;
        c.cmd("EHLO client.test", "250 ").await;
        c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
        c.cmd(&format!("RCPT TO:{addr}"), "550 5.1.1").await;
        c.cmd("DATA", "554 5.5.1").await;
        assert!(spool.messages().is_empty());
    }
}

/// Every command that moves no mail counts toward `max_junk_commands`, so no
/// command loops before DATA for the whole session timeout; an accepted message
/// resets the count.
/// `max_junk_commands = 0` (no NOOP, RSET…) still lets a client greet and
/// send: only greetings after the first count.
#[tokio::test]
async fn no_junk_allowed_still_takes_a_message() {
    let (mut c, spool) = session(SmtpConfig {
        max_junk_commands: 0,
        ..cfg()
    })
    .await;
    open_transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    c.expect("250 2.0.0").await;
    assert_eq!(spool.messages().len(), 1);
    c.cmd("EHLO again", "421 4.7.0").await;
}

#[tokio::test]
async fn commands_before_data_are_bounded() {
    let limits = || SmtpConfig {
        max_junk_commands: 3,
        max_message_size: 100,
        max_recipients: 2,
        ..cfg()
    };
    // (setup, looping command, its reply until the limit)
    let loops: &[(&[&str], &str, &str)] = &[
        (&[], "EHLO c", "250"),
        (&[], "HELO c", "250 mx.test"),
        (
            &["EHLO c"],
            "MAIL FROM:<a@example.org> SIZE=1000",
            "552 5.3.4",
        ),
        (
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org>",
                "RCPT TO:<support@acme.example>",
            ],
            "RCPT TO:<support@acme.example>",
            "250 2.1.5",
        ),
        (
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org>",
                "RCPT TO:<support@acme.example>",
                "RCPT TO:<sales@acme.example>",
            ],
            "RCPT TO:<support+x@acme.example>",
            "452 4.5.3",
        ),
        (
            &["EHLO c", "MAIL FROM:<a@example.org>"],
            "RCPT TO:<paused@acme.example>",
            "450 4.2.1",
        ),
        (
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org>",
                "RCPT TO:<support@acme.example>",
            ],
            "BDAT 0",
            "250 2.0.0 0 octets",
        ),
    ];
    for (setup, command, reply) in loops {
        let (mut c, _) = session(limits()).await;
        for line in *setup {
            c.cmd(line, "2").await;
        }
        // The session's first greeting is free (in the setup, or the first
        // of a looping EHLO/HELO); every later one counts.
        let free = usize::from(setup.is_empty());
        for _ in 0..3 + free {
            c.cmd(command, reply).await;
        }
        c.cmd(command, "421 4.7.0 Too many commands without mail")
            .await;
        c.expect_eof().await;
    }

    // A refused MAIL for the message rate counts too.
    let harness = Harness::new(
        SmtpConfig {
            max_messages_per_minute_per_ip: 1,
            ..limits()
        },
        MemSpool::default(),
    );
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("MAIL FROM:<a@example.org>", "451 4.7.0").await;
    c.cmd("MAIL FROM:<a@example.org>", "451 4.7.0").await;
    c.cmd("MAIL FROM:<a@example.org>", "421 4.7.0 Too many commands")
        .await;

    // An accepted message resets the count.
    let (mut c, _) = session(limits()).await;
    for _ in 0..3 {
        c.cmd("EHLO c", "250").await;
        open_after_ehlo(&mut c).await;
        c.cmd("BDAT 0 LAST", "250 2.0.0 Ok: queued").await;
    }
    c.cmd("NOOP", "250 2.0.0").await;
}

/// Parameters of extensions EHLO does not advertise (REQUIRETLS, DSN, MT-PRIORITY,
/// …) get `555 5.5.4` (RFC 5321 4.1.1.11 / RFC 1869), not silently dropped; those
/// of advertised ones (SIZE, 8BITMIME, SMTPUTF8) still work.
#[tokio::test]
async fn unadvertised_parameters_get_555() {
    let (mut c, _) = session(cfg()).await;
    let ehlo = c.cmd("EHLO c", "250 ").await;
    assert!(!ehlo.contains("REQUIRETLS") && !ehlo.contains("DSN"));
    for mail in [
        "MAIL FROM:<a@b.example> REQUIRETLS",
        "MAIL FROM:<a@b.example> RET=FULL",
        "MAIL FROM:<a@b.example> ENVID=abc",
        "MAIL FROM:<a@b.example> MT-PRIORITY=3",
        "MAIL FROM:<a@b.example> AUTH=<>",
        "MAIL FROM:<a@b.example> HOLDFOR=10",
        "MAIL FROM:<a@b.example> SIZE=10 BY=120;R",
    ] {
        let (mut c, _) = session(cfg()).await;
        c.cmd("EHLO c", "250 ").await;
        let reply = c.cmd(mail, "").await;
        assert!(reply.starts_with("555 5.5.4"), "{mail}: {reply:?}");
    }
    for rcpt in [
        "RCPT TO:<support@acme.example> NOTIFY=SUCCESS,FAILURE",
        "RCPT TO:<support@acme.example> ORCPT=rfc822;a@b.example",
        "RCPT TO:<support@acme.example> CONNEG",
    ] {
        let (mut c, _) = session(cfg()).await;
        c.cmd("EHLO c", "250 ").await;
        c.cmd("MAIL FROM:<a@b.example>", "250 2.1.0").await;
        let reply = c.cmd(rcpt, "").await;
        assert!(reply.starts_with("555 5.5.4"), "{rcpt}: {reply:?}");
    }
    c.cmd(
        "MAIL FROM:<a@b.example> SIZE=10 BODY=7BIT SMTPUTF8",
        "250 2.1.0",
    )
    .await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("MAIL FROM:<a@b.example> BODY=8BITMIME", "250 2.1.0")
        .await;
    c.cmd("RCPT TO:<support@acme.example>", "250 2.1.5").await;
}

#[tokio::test]
async fn bdat() {
    let (mut c, spool) = session(cfg()).await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    // BDAT bytes are binary and never unstuffed; "\r\n.\r\n" inside is content.
    let chunk1 = "Subject: x\r\n\r\n.\r\n";
    let chunk2 = "..end\r\n";
    c.send(&format!("BDAT {}\r\n{chunk1}", chunk1.len())).await;
    c.expect(&format!("250 2.0.0 {} octets received", chunk1.len()))
        .await;
    c.cmd("DATA", "503 5.5.1").await;
    // Pipelined: last chunk and the next command in one write.
    c.send(&format!("BDAT {} LAST\r\n{chunk2}NOOP\r\n", chunk2.len()))
        .await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.expect("250 2.0.0 Ok").await;
    assert_eq!(
        spool.messages()[0].1,
        format!("{chunk1}{chunk2}").as_bytes()
    );
}

#[tokio::test]
async fn bdat_oversize_and_out_of_order() {
    let (mut c, spool) = session(SmtpConfig {
        max_message_size: 10,
        ..cfg()
    })
    .await;
    c.cmd("EHLO c", "250 ").await;
    // Out of order: the chunk is still read and dropped.
    c.send("BDAT 6\r\nNOOP\r\n").await;
    c.expect("503 5.5.1").await;
    open_after_ehlo(&mut c).await;
    c.send("BDAT 8\r\n12345678").await;
    c.expect("250 2.0.0 8 octets").await;
    c.send("BDAT 8 LAST\r\nRSET\r\n\r\n").await;
    c.expect("552 5.3.4").await;
    c.cmd("NOOP", "250 2.0.0").await;
    assert!(spool.messages().is_empty());
}

#[tokio::test]
async fn smuggling_does_not_end_data() {
    const SMUGGLED: &str =
        "MAIL FROM:<evil@example.org>\r\nRCPT TO:<support@acme.example>\r\nDATA\r\nForged\r\n";
    // (bytes around the fake end, what the message must contain there)
    let table = [
        ("\r\n.\n", "\r\n\n"),  // dot at a real line start: unstuffed, LF is content
        ("\n.\r\n", "\n.\r\n"), // bare LF before the dot
        ("\n.\n", "\n.\n"),     // bare LF both sides
        ("\r.\r\n", "\r.\r\n"), // bare CR before the dot
        ("\r.\r", "\r.\r"),     // bare CR both sides
        ("\r\n.\r\r\n", "\r\n\r\r\n"), // bare CR after the dot (smtp-proto alone ends here)
        ("\r\n.\r\r\r\n", "\r\n\r\r\r\n"),
        ("\n\r.\r\n", "\n\r.\r\n"),
    ];
    for (fake_end, kept) in table {
        let (mut c, spool) = session(cfg()).await;
        c.cmd("EHLO c", "250 ").await;
        open_after_ehlo(&mut c).await;
        c.cmd("DATA", "354").await;
        c.send(&format!("Subject: a{fake_end}{SMUGGLED}.\r\n"))
            .await;
        c.expect("250 2.0.0 Ok: queued as 1").await;
        c.cmd("NOOP", "250 2.0.0 Ok").await;
        let messages = spool.messages();
        assert_eq!(messages.len(), 1, "{fake_end:?}");
        assert_eq!(
            String::from_utf8_lossy(&messages[0].1),
            format!("Subject: a{kept}{SMUGGLED}"),
            "{fake_end:?}"
        );
    }
}

#[test]
fn dot_unstuffing_and_end() {
    // (DATA bytes including the terminator, message)
    let table: &[(&str, &str)] = &[
        (".\r\n", ""),
        ("..\r\n.\r\n", ".\r\n"),
        ("..a\r\n.\r\n", ".a\r\n"),
        ("a\r\n..b\r\n.\r\n", "a\r\n.b\r\n"),
        ("a\r\n...\r\n.\r\n", "a\r\n..\r\n"),
        ("a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n"),
        ("a\r\n\r\n.\r\n", "a\r\n\r\n"),
        ("a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"),
        ("a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n"),
    ];
    for (input, expected) in table {
        let input = input.as_bytes();
        // Whole, byte by byte, and every two-way split must agree.
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![input], input.chunks(1).collect()];
        for i in 1..input.len() {
            splits.push(vec![&input[..i], &input[i..]]);
        }
        for parts in splits {
            let mut rx = DotReceiver::new();
            let mut out = Vec::new();
            let mut ended_at = None;
            let mut total = 0;
            for part in &parts {
                let (used, ended) = rx.ingest(part, &mut out);
                total += used;
                if ended {
                    ended_at = Some(total);
                    break;
                }
                assert_eq!(used, part.len());
            }
            assert_eq!(ended_at, Some(input.len()), "{input:?} {parts:?}");
            assert_eq!(String::from_utf8_lossy(&out), *expected, "{parts:?}");
        }
    }
    // Bytes after the terminator are left for the command parser.
    let mut rx = DotReceiver::new();
    let mut out = Vec::new();
    assert_eq!(rx.ingest(b"hi\r\n.\r\nQUIT\r\n", &mut out), (7, true));
    assert_eq!(out, b"hi\r\n");
}

#[tokio::test]
async fn dot_unstuffing_in_session() {
    let (mut c, spool) = session(cfg()).await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send("..first\r\nmid\r\n..\r\n...x\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    assert_eq!(spool.messages()[0].1, b".first\r\nmid\r\n.\r\n..x\r\n");
}

#[tokio::test]
async fn idle_timeout() {
    let (mut c, _) = session(SmtpConfig {
        idle_timeout_secs: 1,
        ..cfg()
    })
    .await;
    c.cmd("EHLO c", "250 ").await;
    c.expect("421 4.4.2 Idle timeout").await;
    c.expect_eof().await;
}

#[tokio::test]
async fn session_timeout() {
    let (mut c, _) = session(SmtpConfig {
        session_timeout_secs: 1,
        ..cfg()
    })
    .await;
    let mut last = String::new();
    for _ in 0..20 {
        // The server may already have closed: a failed write is fine, the 421 is read.
        let _ = c.io.get_mut().write_all(b"NOOP\r\n").await;
        last = c.reply().await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.starts_with("421 4.4.2"), "{last:?}");
}

#[tokio::test]
async fn spool_errors() {
    let table = [
        (Fail::Full, "452 4.3.1"),
        (Fail::Unavailable, "451 4.3.0"),
        (Fail::ShuttingDown, "421 4.3.2"),
    ];
    for (fail, expected) in table {
        let harness = Harness::new(cfg(), MemSpool::failing(fail));
        let mut c = harness.connect().await;
        c.cmd("EHLO c", "250 ").await;
        open_after_ehlo(&mut c).await;
        c.cmd("DATA", "354").await;
        c.send(&format!("{BODY}.\r\n")).await;
        c.expect(expected).await;
        if matches!(fail, Fail::ShuttingDown) {
            c.expect_eof().await;
        } else {
            c.cmd("NOOP", "250 2.0.0").await;
        }
    }
}

#[tokio::test]
async fn rate_limit() {
    let harness = Harness::new(
        SmtpConfig {
            max_messages_per_minute_per_ip: 1,
            ..cfg()
        },
        MemSpool::default(),
    );
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("MAIL FROM:<a@example.org>", "451 4.7.0").await;
    // Per IP, not per session.
    let mut c2 = harness.connect().await;
    c2.cmd("EHLO c", "250 ").await;
    c2.cmd("MAIL FROM:<a@example.org>", "451 4.7.0").await;

    let exempt = Harness::new(
        SmtpConfig {
            max_messages_per_minute_per_ip: 1,
            rate_limit_exempt: vec!["192.0.2.0/24".parse().unwrap()],
            ..cfg()
        },
        MemSpool::default(),
    );
    let mut c = exempt.connect().await;
    c.cmd("EHLO c", "250 ").await;
    for _ in 0..3 {
        c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
        c.cmd("RSET", "250 2.0.0").await;
    }
}

// ---------------------------------------------------------------- TLS

async fn tls_connect<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
) -> tokio_rustls::client::TlsStream<T> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, io).await.unwrap()
}

#[tokio::test]
async fn starttls_handshake_and_injection() {
    let harness = Harness::new(tls_cfg(), MemSpool::default());
    let mut c = harness.connect().await;
    let ehlo = c.cmd("EHLO plain.client", "250 ").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo:?}");
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
    // Plaintext pipelined after STARTTLS must be thrown away (CVE-2011-0411 style).
    c.send("STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.org>\r\n")
        .await;
    c.expect("220 2.0.0").await;
    let io = c.io.into_inner();
    let mut c = Client::new(tls_connect(io).await);
    // Fresh session: MAIL before EHLO is out of order; no injected replies in between.
    c.cmd("MAIL FROM:<a@example.org>", "503 5.5.1").await;
    let ehlo = c.cmd("EHLO tls.client", "250 ").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo:?}");
    c.cmd("STARTTLS", "503 5.5.1").await;
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.cmd("QUIT", "221 2.0.0").await;
    let (env, raw) = &harness.spool.messages()[0];
    assert!(env.tls);
    assert_eq!(env.helo, "tls.client");
    assert_eq!(env.mail_from, "a@example.org");
    assert_eq!(raw, BODY.as_bytes());
}

#[tokio::test]
async fn require_tls() {
    let harness = Harness::new(
        SmtpConfig {
            require_tls: true,
            ..tls_cfg()
        },
        MemSpool::default(),
    );
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    c.cmd("MAIL FROM:<a@example.org>", "530 5.7.0").await;
    c.cmd("STARTTLS", "220 2.0.0").await;
    let mut c = Client::new(tls_connect(c.io.into_inner()).await);
    c.cmd("EHLO c", "250 ").await;
    c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0").await;
}

#[test]
fn tls_acceptor_config_errors() {
    assert!(tls_acceptor(&cfg()).unwrap().is_none());
    assert!(tls_acceptor(&tls_cfg()).unwrap().is_some());
    let only_cert = SmtpConfig {
        tls_key: None,
        ..tls_cfg()
    };
    assert!(matches!(
        tls_acceptor(&only_cert),
        Err(TlsError::Incomplete)
    ));
    let missing = SmtpConfig {
        tls_cert: Some(fixture("missing.pem")),
        ..tls_cfg()
    };
    assert!(matches!(
        tls_acceptor(&missing),
        Err(TlsError::Certificate { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let no_cert = SmtpConfig {
        tls_cert: Some(empty.clone()),
        ..tls_cfg()
    };
    assert!(matches!(
        tls_acceptor(&no_cert),
        Err(TlsError::NoCertificate { .. })
    ));
    let key_is_cert = SmtpConfig {
        tls_key: Some(fixture("cert.pem")),
        ..tls_cfg()
    };
    let err = tls_acceptor(&key_is_cert).err().expect("must fail");
    assert!(matches!(err, TlsError::Key { .. }), "{err}");
}

// ---------------------------------------------------------------- listener

/// Every `listen` address is served with one set of limits: a client at its
/// per-IP cap on one address is refused on the other, and `max_connections`
/// counts both (before, each address had limits of its own, multiplying them).
#[tokio::test]
async fn limits_count_connections_on_every_address_together() {
    for (max_total, max_per_ip, refusal) in [(10, 1, "421 4.7.0"), (1, 10, "421 4.7.0")] {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let token = CancellationToken::new();
        let config = SmtpConfig {
            max_connections: max_total,
            max_connections_per_ip: max_per_ip,
            ..cfg()
        };
        let task = tokio::spawn(serve(
            vec![a, b],
            Arc::new(config),
            None,
            Arc::new(MemSpool::default()),
            token.clone(),
        ));
        let mut first = tcp(addr_a).await;
        first.expect("220 mx.test").await;
        let mut second = tcp(addr_b).await;
        second.expect(refusal).await;
        // Once the first leaves, the other address takes a client again.
        first.cmd("QUIT", "221").await;
        first.expect_eof().await;
        let mut third = None;
        for _ in 0..50 {
            let mut c = tcp(addr_b).await;
            if c.reply().await.starts_with("220 ") {
                third = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(third.is_some(), "address b never took a client again");
        token.cancel();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
}

/// `listen = []` (a pull-only daemon): serve has nothing to accept but runs
/// until shutdown — the daemon takes a core task that ends for a failure.
#[tokio::test]
async fn serving_no_address_runs_until_shutdown() {
    let token = CancellationToken::new();
    let task = tokio::spawn(serve(
        Vec::new(),
        Arc::new(cfg()),
        None,
        Arc::new(MemSpool::default()),
        token.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "ended without a shutdown");
    token.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn listener_shutdown_idle_session_gets_421() {
    let (addr, _, token, task) = start_listener(cfg()).await;
    let mut c = tcp(addr).await;
    c.expect("220 mx.test ESMTP postdesk").await;
    c.cmd("EHLO c", "250 ").await;
    token.cancel();
    c.expect("421 4.3.2").await;
    c.expect_eof().await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn listener_shutdown_lets_data_finish() {
    let (addr, spool, token, task) = start_listener(cfg()).await;
    let mut c = tcp(addr).await;
    c.expect("220 ").await;
    open_transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send("Subject: slow\r\n\r\nfirst half\r\n").await;
    token.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    c.send("second half\r\n.\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.expect("421 4.3.2").await;
    c.expect_eof().await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(
        spool.messages()[0].1,
        b"Subject: slow\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

/// Like DATA, a BDAT message in progress (between chunks) may finish within the
/// grace period; only then does the session get `421`.
#[tokio::test]
async fn listener_shutdown_lets_bdat_finish() {
    let (addr, spool, token, task) = start_listener(cfg()).await;
    let mut c = tcp(addr).await;
    c.expect("220 ").await;
    open_transaction(&mut c).await;
    c.send("BDAT 14\r\nSubject: x\r\n\r\n").await;
    c.expect("250 2.0.0 14 octets").await;
    token.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    c.send("BDAT 7 LAST\r\nhello\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.expect("421 4.3.2").await;
    c.expect_eof().await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(spool.messages()[0].1, b"Subject: x\r\n\r\nhello\r\n");
}

#[tokio::test]
async fn listener_shutdown_grace_expires_inside_data() {
    let (addr, spool, token, task) = start_listener(SmtpConfig {
        shutdown_grace_secs: 1,
        ..cfg()
    })
    .await;
    let mut c = tcp(addr).await;
    c.expect("220 ").await;
    open_transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send("stalled").await;
    token.cancel();
    c.expect("421 4.3.2").await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(spool.messages().is_empty());
}

#[tokio::test]
async fn per_ip_connection_cap() {
    let (addr, _, token, task) = start_listener(SmtpConfig {
        max_connections_per_ip: 2,
        ..cfg()
    })
    .await;
    let mut a = tcp(addr).await;
    a.expect("220 ").await;
    let mut b = tcp(addr).await;
    b.expect("220 ").await;
    let mut refused = tcp(addr).await;
    refused.expect("421 4.7.0").await;
    refused.expect_eof().await;
    // A slot frees up when a session ends.
    a.cmd("QUIT", "221").await;
    a.expect_eof().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = tcp(addr).await;
    d.expect("220 ").await;
    token.cancel();
    b.expect("421 4.3.2").await;
    d.expect("421 4.3.2").await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn total_connection_cap() {
    let (addr, _, token, task) = start_listener(SmtpConfig {
        max_connections: 1,
        ..cfg()
    })
    .await;
    let mut a = tcp(addr).await;
    a.expect("220 ").await;
    let mut refused = tcp(addr).await;
    refused.expect("421 4.7.0 Too many connections").await;
    token.cancel();
    a.expect("421 4.3.2").await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn listener_starttls_over_tcp() {
    let (addr, spool, token, task) = start_listener(tls_cfg()).await;
    let mut c = tcp(addr).await;
    c.expect("220 ").await;
    c.cmd("EHLO c", "250 ").await;
    c.cmd("STARTTLS", "220 2.0.0").await;
    let mut c = Client::new(tls_connect(c.io.into_inner()).await);
    open_transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    c.expect("250 2.0.0").await;
    token.cancel();
    c.expect("421 4.3.2").await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(spool.messages()[0].0.tls);
}

#[tokio::test]
async fn limits_release_ip_slots() {
    let harness = Harness::new(cfg(), MemSpool::default());
    let limits = Arc::clone(&harness.shared.limits);
    let slot = limits.try_connect(CLIENT_IP).unwrap();
    assert_eq!(limits.open_for(CLIENT_IP), 1);
    drop(slot);
    assert_eq!(limits.open_for(CLIENT_IP), 0);
}

/// DATA as RFC 5321 defines it, over the whole input at once: a line
/// starts after CRLF (DATA's own CRLF counts); a dot starting a line is
/// dropped, or with CRLF after it ends the message. Returns the message and
/// how many bytes the end consumed, if it came.
fn data_by_the_rfc(input: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut data = b"\r\n".to_vec();
    data.extend_from_slice(input);
    let mut out = Vec::new();
    let mut p = 2;
    while p < data.len() {
        if &data[p - 2..p] == b"\r\n" && data[p] == b'.' {
            if data[p + 1..].starts_with(b"\r\n") {
                return (out, Some(p + 3 - 2));
            }
            p += 1;
            continue;
        }
        out.push(data[p]);
        p += 1;
    }
    (out, None)
}

proptest::proptest! {
    /// The streaming receiver agrees with the whole-input definition, however
    /// the bytes are split into reads.
    #[test]
    fn dot_receiver_matches_the_rfc(
        body in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'.', b'a']), 0..80),
        cuts in proptest::collection::vec(0usize..90, 0..6),
    ) {
        let mut input = body;
        input.extend_from_slice(b"\r\n.\r\n");
        let (want, end) = data_by_the_rfc(&input);
        let end = end.expect("the input ends with a terminator");
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut rx = DotReceiver::new();
        let mut out = Vec::new();
        let mut ended_at = None;
        for w in cuts.windows(2) {
            let part = &input[w[0]..w[1]];
            let (used, ended) = rx.ingest(part, &mut out);
            if ended {
                ended_at = Some(w[0] + used);
                break;
            }
            proptest::prop_assert_eq!(used, part.len());
        }
        proptest::prop_assert_eq!(ended_at, Some(end));
        proptest::prop_assert_eq!(out, want);
    }
}

mod fuzz;

// ------------------------------------------------------- arbitrary input

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    /// Pieces a client might send: valid commands, commands in the wrong
    /// place, data terminators and their smuggling variants, and noise.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"EHLO client.test\r\n".to_vec()),
            Just(b"HELO client.test\r\n".to_vec()),
            Just(b"MAIL FROM:<a@customer.test>\r\n".to_vec()),
            Just(b"MAIL FROM:<> SIZE=99999999999999999999\r\n".to_vec()),
            Just(b"RCPT TO:<support@acme.example>\r\n".to_vec()),
            Just(b"RCPT TO:<\"x\\\"y\"@acme.example>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            // A whole opening in one piece, so that messages really start.
            Just(b"EHLO c\r\nMAIL FROM:<a@customer.test>\r\nRCPT TO:<sales@acme.example>\r\nDATA\r\n".to_vec()),
            Just(b"BDAT 5\r\nhello".to_vec()),
            Just(b"BDAT 0 LAST\r\n".to_vec()),
            Just(b"BDAT 18446744073709551615\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(b"RSET\r\nNOOP\r\nVRFY x\r\nHELP\r\n".to_vec()),
            Just(b"\r\n.\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            Just(b"\r.\r".to_vec()),
            Just(b"..\r\n".to_vec()),
            Just(vec![b'A'; 5000]),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever a client sends, the session neither panics nor hangs
        /// once the client goes away, and commits only whole messages.
        #[test]
        fn session_survives_arbitrary_input(pieces in prop::collection::vec(piece(), 0..24)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let harness = Harness::new(cfg(), MemSpool::default());
                let (client, server) = tokio::io::duplex(64 * 1024);
                let task = tokio::spawn(handle(server, CLIENT_IP, Arc::clone(&harness.shared)));
                let (mut rd, mut wr) = tokio::io::split(client);
                // Drain replies so the session never blocks on a full pipe.
                let drain = tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut sink).await;
                    sink
                });
                for p in pieces {
                    if wr.write_all(&p).await.is_err() {
                        break;
                    }
                }
                // The client goes away: end of its byte stream.
                let _ = wr.shutdown().await;
                let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
                prop_assert!(ended.is_ok(), "session did not end after the client left");
                prop_assert!(ended.map(|r| r.is_ok()).unwrap_or(false), "session panicked");
                let replies = drain.await.expect("drain");
                let replies = String::from_utf8_lossy(&replies);
                for line in replies.lines() {
                    let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
                    prop_assert!(code.is_some_and(|c| (200..600).contains(&c)), "malformed reply line {line:?}");
                }
                // Every message the spool holds was answered 250, and none
                // that was answered is missing.
                let queued = replies.lines().filter(|l| l.starts_with("250 2.0.0 Ok: queued as")).count();
                prop_assert_eq!(harness.spool.messages().len(), queued, "{}", replies);
                prop_assert_eq!(harness.shared.budget.used(), 0, "in-flight budget leaked");
                Ok(())
            })?;
        }
    }
}

// ---------------------------------------------------------------- memory and data limits

/// Wait (up to `WAIT`) until `cond` holds on the in-flight budget's count,
/// checking at every look that it never exceeds `limit`.
async fn budget_reaches(harness: &Harness, limit: usize, cond: impl Fn(usize) -> bool) -> usize {
    let start = tokio::time::Instant::now();
    loop {
        let used = harness.shared.budget.used();
        assert!(
            used <= limit,
            "in-flight bytes {used} over the budget {limit}"
        );
        if cond(used) {
            return used;
        }
        assert!(start.elapsed() < WAIT, "budget stuck at {used}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The attack: many sessions each send most of a large message and stall. The
/// bytes they hold together stay within `max_inflight_bytes`; the next message
/// gets `452 4.3.1` (its session goes on); once the stalled sessions drop, their
/// budget is back and a message is accepted.
#[tokio::test]
async fn inflight_budget_bounds_unfinished_data() {
    const MAX: usize = 256 * 1024;
    const LIMIT: usize = 1024 * 1024;
    let harness = Harness::new(
        SmtpConfig {
            max_message_size: MAX,
            max_inflight_bytes: LIMIT,
            ..cfg()
        },
        MemSpool::default(),
    );
    let body = "x".repeat(998) + "\r\n";
    let big: String = body.repeat(200); // 200,000 bytes
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut c = harness.connect().await;
        c.cmd("EHLO c", "250 ").await;
        open_after_ehlo(&mut c).await;
        c.cmd("DATA", "354").await;
        c.send(&big).await;
        stalled.push(c);
    }
    // Four buffers grown by doubling to 256 KiB each: exactly the budget.
    budget_reaches(&harness, LIMIT, |used| used == LIMIT).await;

    let mut late = harness.connect().await;
    late.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut late).await;
    late.cmd("DATA", "354").await;
    late.send(&format!("{big}.\r\n")).await;
    late.expect("452 4.3.1 Insufficient system resources").await;
    late.cmd("NOOP", "250 2.0.0").await;
    assert!(harness.spool.messages().is_empty());
    assert_eq!(
        harness.shared.budget.used(),
        LIMIT,
        "the refused message holds nothing"
    );

    drop(stalled);
    budget_reaches(&harness, LIMIT, |used| used == 0).await;
    open_after_ehlo(&mut late).await;
    late.cmd("DATA", "354").await;
    late.send(&format!("{big}.\r\n")).await;
    late.expect("250 2.0.0").await;
    assert_eq!(harness.spool.messages()[0].1.len(), big.len());
    assert_eq!(
        harness.shared.budget.used(),
        0,
        "given back after the commit"
    );
}

/// A BDAT chunk takes its budget at the BDAT command: one that does not fit is
/// read, dropped and answered `452 4.3.1`, which ends its transaction (RFC 3030);
/// RSET and a commit give budget back.
#[tokio::test]
async fn bdat_chunk_over_the_budget_gets_452() {
    let harness = Harness::new(
        SmtpConfig {
            max_message_size: 100_000,
            max_inflight_bytes: 150_000,
            ..cfg()
        },
        MemSpool::default(),
    );
    let mut holder = harness.connect().await;
    holder.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut holder).await;
    holder
        .send(&format!("BDAT 100000\r\n{}", "a".repeat(100_000)))
        .await;
    holder.expect("250 2.0.0 100000 octets").await;
    assert!(harness.shared.budget.used() >= 100_000);

    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.send(&format!("BDAT 60000 LAST\r\n{}", "b".repeat(60_000)))
        .await;
    c.expect("452 4.3.1").await;
    c.send("BDAT 5 LAST\r\nhello").await;
    c.expect("503 5.5.1").await;

    holder.cmd("BDAT 0 LAST", "250 2.0.0 Ok: queued").await;
    assert_eq!(harness.shared.budget.used(), 0);
    open_after_ehlo(&mut c).await;
    c.send(&format!("BDAT 60000\r\n{}", "b".repeat(60_000)))
        .await;
    c.expect("250 2.0.0 60000 octets").await;
    assert_eq!(harness.shared.budget.used(), 60_000);
    c.cmd("RSET", "250 2.0.0").await;
    assert_eq!(
        harness.shared.budget.used(),
        0,
        "RSET gives the budget back"
    );
    assert_eq!(harness.spool.messages().len(), 1);
}

/// Send `chunk` every `every` for `total`, ignoring write errors (the server may
/// have closed), then return the reply that came.
async fn drip<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Client<T>,
    chunk: &[u8],
    every: Duration,
    total: Duration,
) -> String {
    let start = tokio::time::Instant::now();
    while start.elapsed() < total {
        let _ = c.io.get_mut().write_all(chunk).await;
        let _ = c.io.get_mut().flush().await;
        tokio::time::sleep(every).await;
    }
    c.reply().await
}

fn data_limits(timeout: u64, rate: u64, grace: u64) -> SmtpConfig {
    SmtpConfig {
        data_timeout_secs: timeout,
        min_data_rate: rate,
        min_data_rate_grace_secs: grace,
        ..cfg()
    }
}

/// One byte now and then no longer holds a session for the idle timeout per
/// byte: DATA gets `data_timeout_secs` in all, then `421 4.4.2`, and the partial
/// message is dropped.
#[tokio::test]
async fn data_timeout_ends_a_dripping_transfer() {
    let harness = Harness::new(data_limits(1, 0, 0), MemSpool::default());
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    let reply = drip(
        &mut c,
        b"x",
        Duration::from_millis(100),
        Duration::from_millis(2500),
    )
    .await;
    assert!(
        reply.starts_with("421 4.4.2 Message transfer time limit exceeded"),
        "{reply:?}"
    );
    c.expect_eof().await;
    assert!(harness.spool.messages().is_empty());
    budget_reaches(&harness, usize::MAX, |used| used == 0).await;
}

/// Below `min_data_rate` (after the grace period): `421 4.4.2`, message dropped.
#[tokio::test]
async fn min_data_rate_ends_a_slow_transfer() {
    let harness = Harness::new(data_limits(600, 1000, 1), MemSpool::default());
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    // ≈ 100 bytes/s.
    let reply = drip(
        &mut c,
        b"xxxxxxxxxx",
        Duration::from_millis(100),
        Duration::from_millis(2500),
    )
    .await;
    assert!(
        reply.starts_with("421 4.4.2 Message transfer too slow"),
        "{reply:?}"
    );
    c.expect_eof().await;
    assert!(harness.spool.messages().is_empty());
}

/// A transfer well above `min_data_rate` past the grace period is not cut.
#[tokio::test]
async fn min_data_rate_lets_a_steady_transfer_finish() {
    let harness = Harness::new(data_limits(600, 1000, 1), MemSpool::default());
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.cmd("DATA", "354").await;
    // 2 KiB every 100 ms (≈ 20 KB/s, 20 times the minimum) for 2 s, then the end.
    let line = "y".repeat(2046) + "\r\n";
    for _ in 0..20 {
        c.send(&line).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.send(".\r\n").await;
    c.expect("250 2.0.0").await;
    assert_eq!(harness.spool.messages()[0].1.len(), 20 * 2048);
}

/// Between the chunks of a BDAT message the transfer's clock keeps running.
#[tokio::test]
async fn data_timeout_runs_between_bdat_chunks() {
    let harness = Harness::new(data_limits(1, 0, 0), MemSpool::default());
    let mut c = harness.connect().await;
    c.cmd("EHLO c", "250 ").await;
    open_after_ehlo(&mut c).await;
    c.send("BDAT 5\r\nhello").await;
    c.expect("250 2.0.0 5 octets").await;
    c.expect("421 4.4.2 Message transfer time limit exceeded")
        .await;
    c.expect_eof().await;
    assert!(harness.spool.messages().is_empty());
}

/// The data-limit deadline: the total time, or the moment the average rate drops
/// below the minimum, never inside the grace period.
#[test]
fn transfer_deadline() {
    use super::session::Transfer;
    let start = tokio::time::Instant::now();
    let at = |bytes, cfg: &SmtpConfig| {
        let (when, reply) = Transfer { start, bytes }.deadline(cfg);
        (when - start, reply.text)
    };
    let total = "Message transfer time limit exceeded, closing connection";
    let slow = "Message transfer too slow, closing connection";
    let cfg = data_limits(600, 1024, 30);
    assert_eq!(at(0, &cfg), (Duration::from_secs(30), slow), "grace first");
    assert_eq!(at(1024 * 30, &cfg), (Duration::from_secs(30), slow));
    assert_eq!(at(1024 * 100, &cfg), (Duration::from_secs(100), slow));
    assert_eq!(at(512, &cfg), (Duration::from_secs(30), slow));
    assert_eq!(at(1536 * 100, &cfg), (Duration::from_millis(150_000), slow));
    assert_eq!(at(1024 * 1000, &cfg), (Duration::from_secs(600), total));
    assert_eq!(at(u64::MAX, &cfg), (Duration::from_secs(600), total));
    let huge = data_limits(u64::MAX, 1, u64::MAX);
    assert!(
        at(u64::MAX, &huge).0 >= Duration::from_secs(100 * 365 * 86_400),
        "no overflow"
    );
    let off = data_limits(600, 0, 30);
    assert_eq!(
        at(0, &off),
        (Duration::from_secs(600), total),
        "0 = no rate limit"
    );
}

/// What each open connection keeps while idle is the session task's state:
/// the TLS half (stream, handshake) lives on the heap and only once a
/// client starts TLS, so 10,000 idle sessions stay under 100 MB in all
/// (`scripts/bench-smtp-idle`). The size is the compiler's, fixed for a
/// toolchain: with the TLS half inline it was 6,448 bytes, boxed 2,752
/// (debug build).
#[tokio::test]
async fn an_idle_sessions_state_stays_small() {
    let harness = Harness::new(SmtpConfig::default(), MemSpool::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let session = handle(server, CLIENT_IP, Arc::clone(&harness.shared));
    let size = std::mem::size_of_val(&session);
    assert!(size <= 4096, "a session's state is {size} bytes");
}
