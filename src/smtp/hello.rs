//! EHLO, HELO and STARTTLS.
//!
//! Must not: advertise STARTTLS without a TLS acceptor or once TLS is active; keep any
//! protocol state across STARTTLS (the session layer discards pipelined bytes and starts
//! a fresh session over TLS), or put an enhanced status code in the reply to EHLO/HELO
//! (RFC 2034). Limits: the HELO name is at most 255 bytes (smtp-proto); an EHLO/HELO
//! after the session's first (or the first over TLS) counts toward `max_junk_commands`.
//! Untrusted input: the HELO/EHLO name, kept only for the envelope and logs.

use smtp_proto::{
    EXT_8BIT_MIME, EXT_CHUNKING, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE,
    EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::SmtpConfig;

use super::Spool;
use super::reply;
use super::session::{Flow, Session, State};

/// The reply to EHLO, with or without STARTTLS among the extensions: built
/// once per listener (it depends on the configuration only), not per session.
/// smtp-proto's first line reads `250-<hostname> you had me at EHLO`: ours is
/// `250-<hostname>`, as the HELO reply, so a transcript in a mail admin's log
/// is plain.
pub(super) fn ehlo_reply(cfg: &SmtpConfig, starttls: bool) -> Vec<u8> {
    let mut response = EhloResponse::new(cfg.hostname.as_str());
    response.capabilities = EXT_PIPELINING
        | EXT_8BIT_MIME
        | EXT_SMTP_UTF8
        | EXT_SIZE
        | EXT_ENHANCED_STATUS_CODES
        | EXT_CHUNKING;
    if starttls {
        response.capabilities |= EXT_START_TLS;
    }
    response.size = cfg.max_message_size;
    // Writing into a Vec cannot fail.
    let mut lines = Vec::new();
    let _ = response.write(&mut lines);
    let first_end = memchr::memmem::find(&lines, b"\r\n").unwrap_or(lines.len());
    let first = format!("250-{}", cfg.hostname);
    match lines.get(..first_end) {
        Some(l) if l.starts_with(first.as_bytes()) => {
            let mut out = first.into_bytes();
            out.extend_from_slice(lines.get(first_end..).unwrap_or_default());
            out
        }
        _ => lines,
    }
}

impl<S, IO> Session<S, IO>
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn starttls_offered(&self) -> bool {
        self.shared.tls.is_some() && !self.tls
    }

    /// A greeting after the session's first (or the first after STARTTLS,
    /// which starts the session afresh) moves no mail: it counts toward
    /// `max_junk_commands`, so a client cannot loop on it — while even
    /// `max_junk_commands = 0` lets every client say hello. `true`: closing.
    fn repeated_hello(&mut self) -> bool {
        self.helo.is_some() && self.over_junk_limit()
    }

    pub(super) fn ehlo(&mut self, host: String) -> Flow {
        if self.repeated_hello() {
            return Flow::Close;
        }
        self.helo = Some(host);
        self.state = State::Idle;
        let reply = &self.shared.ehlo[usize::from(self.starttls_offered())];
        self.out.extend_from_slice(reply);
        Flow::Continue
    }

    pub(super) fn helo_cmd(&mut self, host: String) -> Flow {
        if self.repeated_hello() {
            return Flow::Close;
        }
        self.helo = Some(host);
        self.state = State::Idle;
        // `250 <hostname>`: no enhanced status code in replies to HELO/EHLO (RFC 2034 §3).
        let reply = format!("250 {}\r\n", self.shared.cfg.hostname);
        self.out.extend_from_slice(reply.as_bytes());
        Flow::Continue
    }

    pub(super) fn starttls(&mut self) -> Flow {
        if self.tls {
            return self.error(reply::ALREADY_TLS);
        }
        if self.shared.tls.is_none() {
            return self.error(reply::TLS_UNAVAILABLE);
        }
        self.reply(reply::TLS_READY);
        Flow::StartTls
    }
}
