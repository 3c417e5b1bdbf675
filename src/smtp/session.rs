//! One SMTP session over any `AsyncRead + AsyncWrite + Unpin` stream: the state enum
//! (idle / MAIL transaction / reading DATA / reading a BDAT chunk), the envelope being
//! built, command-line framing, pipelined reply batching, timeouts and per-session
//! limits. Verbs live in `hello` (EHLO/HELO/STARTTLS), `mail` (MAIL/RCPT) and `data`
//! (DATA/BDAT/commit); the small ones (RSET/NOOP/VRFY/HELP/QUIT) are here.
//!
//! Must not: parse SMTP syntax itself (smtp-proto does), echo client text in replies,
//! buffer without bound, or panic/unwrap on anything the client sends.
//!
//! Limits: one read buffer, of `CMD_BUF` bytes between messages (an idle session
//! holds little) and `READ_BUF` inside one or for a client that pipelines more
//! than `CMD_BUF` of commands at once; a command line of at most
//! `max_line_length` bytes (CRLF included); `max_errors` (error replies) and
//! `max_junk_commands` (commands that move no mail, see `Session::over_junk_limit`), so
//! the commands before DATA are bounded; `idle_timeout_secs` on every read and write,
//! `session_timeout_secs` overall; inside a message also `data_timeout_secs` and
//! `min_data_rate` after `min_data_rate_grace_secs` (see [`Transfer`]); message bytes
//! capped in `data` and by the shared in-flight budget (`budget`).
//!
//! Untrusted input: every byte read from the stream, and how slowly it arrives.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smtp_proto::request::receiver::RequestReceiver;
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Spool;
use super::budget::{Budget, Reservation};
use super::data::{BdatChunk, DotReceiver};
use super::limits::Limits;
use super::reply::{self, Reply};
use crate::config::SmtpConfig;

/// Bytes read from the socket at once inside a message, and between messages
/// once a client's pipelined commands filled [`CMD_BUF`]; also bounds how many
/// pipelined commands are answered in one batch.
pub(crate) const READ_BUF: usize = 8192;
/// The read buffer between messages: commands are short, and most of the time a
/// session waits for its next one (thousands of idle sessions must not hold
/// `READ_BUF` each).
pub(crate) const CMD_BUF: usize = 512;

/// The read buffer for the next read: `READ_BUF` inside a message, or when the
/// last read of commands filled the buffer (a client pipelining a lot);
/// otherwise `CMD_BUF`, so a session waiting for its next command holds little.
fn read_buf_size(in_message: bool, last_read_filled: bool, last_read_in_message: bool) -> usize {
    if in_message || (last_read_filled && !last_read_in_message) {
        READ_BUF
    } else {
        CMD_BUF
    }
}

#[cfg(test)]
#[test]
fn the_read_buffer_is_small_between_messages() {
    // (inside a message, last read filled its buffer, last read was a message's)
    let cases = [
        ((false, false, false), CMD_BUF),
        ((true, false, false), READ_BUF),
        ((true, true, true), READ_BUF),
        // Commands filled the small buffer: pipelining, read more at once.
        ((false, true, false), READ_BUF),
        // A message filled the big one, and it ended: back to small.
        ((false, true, true), CMD_BUF),
        ((false, false, true), CMD_BUF),
    ];
    for ((m, f, w), want) in cases {
        assert_eq!(read_buf_size(m, f, w), want, "{m} {f} {w}");
    }
}

/// Everything sessions share: config, spool, TLS, per-IP limits, shutdown.
pub(crate) struct Shared<S> {
    pub cfg: Arc<SmtpConfig>,
    pub spool: Arc<S>,
    pub tls: Option<TlsAcceptor>,
    pub limits: Arc<Limits>,
    /// Message bytes held in memory by all sessions (`max_inflight_bytes`).
    pub budget: Arc<Budget>,
    pub shutdown: CancellationToken,
    /// Set once, by the first session that sees the shutdown: sessions inside a message
    /// (DATA, or BDAT up to its LAST chunk) may finish until then. One instant for all, so a slow client cannot extend it.
    grace_deadline: OnceLock<Instant>,
    /// The EHLO reply without and with STARTTLS (`hello::ehlo_reply`).
    pub ehlo: [Vec<u8>; 2],
}

impl<S: Spool> Shared<S> {
    pub fn new(
        cfg: Arc<SmtpConfig>,
        spool: Arc<S>,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) -> Self {
        let limits = Arc::new(Limits::new(&cfg));
        let budget = Budget::new(cfg.max_inflight_bytes);
        let ehlo = [
            super::hello::ehlo_reply(&cfg, false),
            super::hello::ehlo_reply(&cfg, true),
        ];
        Self {
            ehlo,
            cfg,
            spool,
            tls,
            limits,
            budget,
            shutdown,
            grace_deadline: OnceLock::new(),
        }
    }

    /// Resolves when shutdown was requested and the grace period has passed.
    async fn grace_expired(&self) {
        self.shutdown.cancelled().await;
        let grace = Duration::from_secs(self.cfg.shutdown_grace_secs);
        let deadline = *self.grace_deadline.get_or_init(|| Instant::now() + grace);
        sleep_until(deadline).await;
    }
}

/// One mail transaction: from MAIL until the message is committed or reset.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// RCPT commands seen, accepted or not (picks 503 vs 554 at DATA).
    pub rcpt_attempts: usize,
    /// Message bytes so far (dot-unstuffed DATA, or BDAT chunks).
    pub raw: Vec<u8>,
    /// The in-flight budget `raw`'s capacity is taken from; given back when the
    /// transaction ends, however it ends.
    pub mem: Reservation,
    /// Set when the message is refused at its end: `raw` is kept empty (its budget
    /// given back) and the rest of the message is read and discarded.
    pub discard: Option<Discard>,
    /// A BDAT chunk was received: DATA is no longer allowed.
    pub bdat: bool,
    /// Since `354` or the first BDAT: the transfer's clock for the data limits.
    pub transfer: Option<Transfer>,
}

/// Why a message's bytes are being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Over `max_message_size`: `552 5.3.4`.
    TooLarge,
    /// The in-flight budget is spent: `452 4.3.1`.
    NoMemory,
}

impl Transaction {
    pub fn new(mail_from: String, budget: &Arc<Budget>) -> Self {
        Self {
            mail_from,
            rcpt_to: Vec::new(),
            rcpt_attempts: 0,
            raw: Vec::new(),
            mem: Reservation::new(budget),
            discard: None,
            bdat: false,
            transfer: None,
        }
    }

    /// Refuse the message at its end: free its bytes and budget now.
    pub fn discard(&mut self, why: Discard) {
        self.discard.get_or_insert(why);
        self.raw = Vec::new();
        self.mem.release();
    }
}

/// One DATA/BDAT transfer's clock: when it started and the bytes it moved (raw, as
/// read, discarded ones included), against `data_timeout_secs` and `min_data_rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub start: Instant,
    pub bytes: u64,
}

impl Transfer {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// When this transfer breaks a data limit if no more bytes arrive, and the reply
    /// then: the total time limit, or the moment the average rate since `start`
    /// drops below `min_data_rate` (never before the grace period; 0 = off).
    pub fn deadline(&self, cfg: &SmtpConfig) -> (Instant, Reply) {
        let total = Duration::from_secs(cfg.data_timeout_secs);
        // The average stays at or above the minimum until bytes / rate seconds
        // (`None`: the rate limit is off).
        let covered = self
            .bytes
            .saturating_mul(1000)
            .checked_div(cfg.min_data_rate)
            .map(Duration::from_millis);
        let (after, reply) = match covered {
            Some(covered) => {
                let slow = covered.max(Duration::from_secs(cfg.min_data_rate_grace_secs));
                if slow < total {
                    (slow, reply::DATA_TOO_SLOW)
                } else {
                    (total, reply::DATA_TIMEOUT)
                }
            }
            None => (total, reply::DATA_TIMEOUT),
        };
        // A configured limit past what an `Instant` holds means no limit: a century.
        let at = self
            .start
            .checked_add(after)
            .unwrap_or_else(|| self.start + Duration::from_secs(100 * 365 * 86_400));
        (at, reply)
    }
}

/// Where the session is; each variant holds what that phase needs.
pub(crate) enum State {
    /// No transaction (before or after HELO; `Session::helo` tells which).
    Idle,
    /// MAIL accepted; RCPT and BDAT may follow.
    Mail(Transaction),
    /// After `354`: message bytes until `<CRLF>.<CRLF>`.
    Data(Transaction, DotReceiver),
    /// Inside one BDAT chunk.
    Bdat(BdatChunk),
}

/// What the caller does next.
pub(crate) enum Flow {
    Continue,
    Close,
    StartTls,
}

/// How a session ended.
pub(crate) enum End<IO> {
    Closed,
    /// `220` to STARTTLS was sent; the stream is handed back for the handshake.
    StartTls(IO, Carry),
}

/// What survives STARTTLS: limits already used up and the session deadline. The
/// protocol state (HELO, transaction) does not (RFC 3207 §4.2).
pub(crate) struct Carry {
    deadline: Instant,
    errors: usize,
    junk: usize,
}

enum Fill {
    Read,
    Eof,
    Stop(Reply),
    Failed,
}

pub(crate) struct Session<S, IO> {
    pub shared: Arc<Shared<S>>,
    io: IO,
    pub peer: IpAddr,
    pub tls: bool,
    pub helo: Option<String>,
    pub state: State,
    /// Pending replies, written when the input is drained (pipelining, RFC 2920).
    pub out: Vec<u8>,
    pub rbuf: Box<[u8]>,
    /// Next unread byte in `rbuf`.
    pub pos: usize,
    /// Bytes of `rbuf` holding input.
    pub filled: usize,
    /// The last read was of a message's bytes (its buffer size says nothing
    /// about how the client sends commands).
    was_message: bool,
    /// The command line being assembled (at most `max_line_length`).
    line: Vec<u8>,
    /// Discarding the rest of an over-long line.
    skipping: bool,
    deadline: Instant,
    errors: usize,
    pub junk: usize,
}

/// Serve one connection: greeting, commands, optional STARTTLS and the TLS session.
pub(crate) async fn handle<S, IO>(io: IO, peer: IpAddr, shared: Arc<Shared<S>>)
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session::new(io, peer, Arc::clone(&shared), false, None);
    let greeting = format!("220 {} ESMTP postdesk\r\n", shared.cfg.hostname);
    session.out.extend_from_slice(greeting.as_bytes());
    let (io, carry) = match session.run().await {
        End::Closed => return,
        End::StartTls(io, carry) => (io, carry),
    };
    // The TLS half on the heap: a session that never starts TLS (or sits
    // idle before it does) keeps only the plain half's state, not the size
    // of a TLS stream and handshake besides.
    Box::pin(serve_tls(io, peer, shared, carry)).await;
}

/// After `STARTTLS`: the handshake, then the session again over TLS.
async fn serve_tls<S, IO>(io: IO, peer: IpAddr, shared: Arc<Shared<S>>, carry: Carry)
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(acceptor) = shared.tls.clone() else {
        return;
    };
    let idle = Duration::from_secs(shared.cfg.idle_timeout_secs);
    match timeout(idle, acceptor.accept(io)).await {
        Ok(Ok(stream)) => {
            tracing::debug!(client_ip = %peer, "TLS established");
            let session = Session::new(stream, peer, shared, true, Some(carry));
            // STARTTLS is refused once TLS is active, so this cannot ask for it again.
            let _ = session.run().await;
        }
        Ok(Err(error)) => tracing::info!(client_ip = %peer, %error, "TLS handshake failed"),
        Err(_) => tracing::info!(client_ip = %peer, "TLS handshake timed out"),
    }
}

impl<S, IO> Session<S, IO>
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn new(io: IO, peer: IpAddr, shared: Arc<Shared<S>>, tls: bool, carry: Option<Carry>) -> Self {
        let carry = carry.unwrap_or_else(|| Carry {
            deadline: Instant::now() + Duration::from_secs(shared.cfg.session_timeout_secs),
            errors: 0,
            junk: 0,
        });
        Self {
            shared,
            io,
            peer,
            tls,
            helo: None,
            state: State::Idle,
            out: Vec::with_capacity(512),
            rbuf: vec![0u8; CMD_BUF].into_boxed_slice(),
            pos: 0,
            filled: 0,
            was_message: false,
            line: Vec::new(),
            skipping: false,
            deadline: carry.deadline,
            errors: carry.errors,
            junk: carry.junk,
        }
    }

    pub fn cfg(&self) -> &SmtpConfig {
        &self.shared.cfg
    }

    /// Queue one reply.
    pub fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    /// Queue an error reply caused by the client; too many of them end the session.
    pub fn error(&mut self, reply: Reply) -> Flow {
        self.errors += 1;
        if self.errors > self.cfg().max_errors {
            tracing::info!(client_ip = %self.peer, "too many errors");
            super::rejected("too_many_errors");
            self.reply(reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        self.reply(reply);
        Flow::Continue
    }

    /// Count a command that moves no mail toward `max_junk_commands`: NOOP, RSET, VRFY,
    /// HELP, EHLO/HELO, a refused MAIL, a RCPT that adds no recipient, an empty
    /// non-LAST BDAT. `true` when that ends the session (the `421` is queued). Reset
    /// when a message is accepted.
    pub fn over_junk_limit(&mut self) -> bool {
        self.junk += 1;
        if self.junk > self.cfg().max_junk_commands {
            tracing::info!(client_ip = %self.peer, "too many junk commands");
            super::rejected("junk_commands");
            self.reply(reply::TOO_MANY_JUNK);
            return true;
        }
        false
    }

    /// Queue the reply to a command that moves no mail, counting it (see
    /// [`Self::over_junk_limit`]).
    pub fn junk(&mut self, reply: Reply) -> Flow {
        if self.over_junk_limit() {
            return Flow::Close;
        }
        self.reply(reply);
        Flow::Continue
    }

    pub(crate) async fn run(mut self) -> End<IO> {
        let end = self.serve().await;
        // Drop any transaction (its bytes and budget) before the last reply, so a
        // client told `421` finds the budget already back.
        self.state = State::Idle;
        if matches!(end, Flow::StartTls) {
            if self.flush().await {
                let carry = Carry {
                    deadline: self.deadline,
                    errors: self.errors,
                    junk: self.junk,
                };
                return End::StartTls(self.io, carry);
            }
            return End::Closed;
        }
        if self.flush().await {
            let idle = Duration::from_secs(self.cfg().idle_timeout_secs);
            let _ = timeout(idle.min(Duration::from_secs(5)), self.io.shutdown()).await;
        }
        End::Closed
    }

    async fn serve(&mut self) -> Flow {
        loop {
            // Inside DATA or a BDAT chunk, or between the chunks of a BDAT message: on
            // shutdown the message may still finish within the grace period.
            let in_message = match &self.state {
                State::Idle => false,
                State::Mail(tx) => tx.bdat,
                State::Data(..) | State::Bdat(..) => true,
            };
            if !in_message && self.shared.shutdown.is_cancelled() {
                self.reply(reply::SHUTTING_DOWN);
                return Flow::Close;
            }
            if self.pos >= self.filled {
                if !self.flush().await {
                    return Flow::Close;
                }
                let data_limit = self.data_limit();
                match self.fill(in_message, data_limit).await {
                    Fill::Read => {}
                    Fill::Eof | Fill::Failed => return Flow::Close,
                    Fill::Stop(reply) => {
                        self.reply(reply);
                        return Flow::Close;
                    }
                }
            }
            let flow = match self.state {
                State::Data(..) => self.on_data_bytes().await,
                State::Bdat(..) => self.on_bdat_bytes().await,
                State::Idle | State::Mail(_) => self.on_command_bytes().await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => return Flow::Close,
                Flow::StartTls => {
                    // RFC 3207: anything pipelined after STARTTLS is discarded (command
                    // injection), and the session starts over.
                    self.pos = self.filled;
                    return Flow::StartTls;
                }
            }
        }
    }

    /// Write queued replies. `false` when the client is gone or too slow.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let idle = Duration::from_secs(self.shared.cfg.idle_timeout_secs);
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        let ok = matches!(timeout(idle, write).await, Ok(Ok(())));
        self.out.clear();
        ok
    }

    /// The data limits' deadline while a transfer runs (see [`Transfer::deadline`]).
    fn data_limit(&self) -> Option<(Instant, Reply)> {
        let tx = match &self.state {
            State::Idle => None,
            State::Mail(tx) | State::Data(tx, _) => Some(tx),
            State::Bdat(chunk) => chunk.tx(),
        };
        let transfer = tx?.transfer?;
        Some(transfer.deadline(&self.shared.cfg))
    }

    /// Read more input, bounded by the idle and session timeouts, the data limits
    /// inside a message, and by shutdown (which, inside a DATA or BDAT message, waits
    /// for the grace period instead).
    async fn fill(&mut self, in_message: bool, data_limit: Option<(Instant, Reply)>) -> Fill {
        let idle = Duration::from_secs(self.shared.cfg.idle_timeout_secs);
        let now = Instant::now();
        let (mut limit, mut on_timeout) = if self.deadline <= now + idle {
            (self.deadline, reply::SESSION_TIMEOUT)
        } else {
            (now + idle, reply::IDLE_TIMEOUT)
        };
        if let Some((at, reply)) = data_limit
            && at < limit
        {
            (limit, on_timeout) = (at, reply);
        }
        // Size the (empty) buffer for what comes next: a message's bytes, or a
        // pipelining client's commands (the last read filled the buffer), get
        // READ_BUF; a session between messages goes back to CMD_BUF.
        let want = read_buf_size(in_message, self.filled == self.rbuf.len(), self.was_message);
        if self.rbuf.len() != want {
            self.rbuf = vec![0u8; want].into_boxed_slice();
            self.pos = 0;
            self.filled = 0;
        }
        self.was_message = in_message;
        let shared = Arc::clone(&self.shared);
        let read = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled(), if !in_message => {
                return Fill::Stop(reply::SHUTTING_DOWN);
            }
            _ = shared.grace_expired(), if in_message => {
                tracing::info!(client_ip = %self.peer, "shutdown grace expired inside DATA");
                return Fill::Stop(reply::SHUTTING_DOWN);
            }
            _ = sleep_until(limit) => {
                tracing::info!(client_ip = %self.peer, reply = on_timeout.text, "timeout");
                if on_timeout == reply::DATA_TOO_SLOW || on_timeout == reply::DATA_TIMEOUT {
                    super::rejected("data_timeout");
                }
                return Fill::Stop(on_timeout);
            }
            read = self.io.read(&mut self.rbuf) => read,
        };
        match read {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.pos = 0;
                self.filled = n;
                Fill::Read
            }
            Err(error) => {
                tracing::debug!(client_ip = %self.peer, %error, "read failed");
                Fill::Failed
            }
        }
    }

    /// Take buffered input into the command line; run the command once it is complete.
    async fn on_command_bytes(&mut self) -> Flow {
        let avail = &self.rbuf[self.pos..self.filled];
        let max = self.shared.cfg.max_line_length;
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                if self.skipping {
                    self.skipping = false;
                    return Flow::Continue;
                }
                if self.line.len() + i + 1 > max {
                    self.line.clear();
                    return self.error(reply::LINE_TOO_LONG);
                }
                self.line.extend_from_slice(&avail[..=i]);
                let line = std::mem::take(&mut self.line);
                let flow = self.command(&line).await;
                self.line = line;
                self.line.clear();
                flow
            }
            None => {
                self.pos = self.filled;
                if self.skipping {
                    return Flow::Continue;
                }
                if self.line.len() + avail.len() >= max {
                    // Reply now; the rest of the line is dropped as it arrives.
                    self.line.clear();
                    self.skipping = true;
                    return self.error(reply::LINE_TOO_LONG);
                }
                self.line.extend_from_slice(avail);
                Flow::Continue
            }
        }
    }

    /// One complete command line (terminator included).
    async fn command(&mut self, line: &[u8]) -> Flow {
        let mut receiver = RequestReceiver::default();
        let request = match receiver.ingest(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(error) => return self.parse_error(error),
        };
        match request {
            Request::Ehlo { host } => self.ehlo(host),
            Request::Helo { host } => self.helo_cmd(host),
            Request::StartTls => self.starttls(),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                if matches!(self.state, State::Mail(_)) {
                    self.state = State::Idle;
                }
                self.junk(reply::OK)
            }
            Request::Noop { .. } => self.junk(reply::OK),
            Request::Vrfy { .. } => self.junk(reply::VRFY),
            Request::Help { .. } => self.junk(reply::HELP),
            Request::Quit => {
                self.reply(reply::BYE);
                Flow::Close
            }
            Request::Lhlo { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(reply::NOT_IMPLEMENTED),
        }
    }

    fn parse_error(&mut self, error: ProtoError) -> Flow {
        let reply = match error {
            ProtoError::InvalidSenderAddress => reply::BAD_SENDER,
            ProtoError::InvalidRecipientAddress => reply::BAD_RCPT,
            ProtoError::SyntaxError { .. } | ProtoError::InvalidParameter { .. } => reply::SYNTAX,
            ProtoError::UnsupportedParameter { .. } => reply::UNSUPPORTED_PARAM,
            ProtoError::ResponseTooLong => reply::LINE_TOO_LONG,
            ProtoError::UnknownCommand
            | ProtoError::NeedsMoreData { .. }
            | ProtoError::InvalidResponse { .. } => reply::UNKNOWN_COMMAND,
        };
        self.error(reply)
    }
}
