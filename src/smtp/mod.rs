//! Inbound SMTP listener (docs/architecture.md): ESMTP with PIPELINING, 8BITMIME, SMTPUTF8, SIZE,
//! ENHANCEDSTATUSCODES, CHUNKING and STARTTLS.
//!
//! Owns: the accept loop and connection caps (`listener`), one session per connection
//! (`session`, state enum and envelope; verbs in `hello`, `mail`, `data`), reply texts
//! (`reply`), per-IP counters and the message-rate limiter (`limits`), the in-flight
//! byte budget all sessions' message buffers share (`budget`).
//!
//! Must not: parse MIME, create tickets, route, or touch SQL. Its job ends when the raw
//! bytes and the envelope are committed through [`Spool::commit`]; `250` is sent only then.
//! Protocol bytes are parsed only by smtp-proto (plus the strict `<CRLF>.<CRLF>` guard in
//! `data`).
//!
//! Limits: every one in [`crate::config::SmtpConfig`], each answered with its own reply.
//!
//! Untrusted input: everything a client sends — command lines, addresses, message bytes,
//! timing, number of connections.

mod budget;
mod data;
mod hello;
mod limits;
mod listener;
mod mail;
mod reply;
mod session;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::IpAddr;

pub use listener::{ABORT_MARGIN, serve};

/// Count a refused message or recipient by reason (`postdesk_smtp_rejections_total`).
fn rejected(reason: &'static str) {
    metrics::counter!("postdesk_smtp_rejections_total", "reason" => reason).increment(1);
}

/// What the client asked for, handed to the spool with the raw message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse path without angle brackets; `""` for the null sender `<>`.
    pub mail_from: String,
    /// Accepted recipients, lower-cased, in RCPT order, without duplicates.
    pub rcpt_to: Vec<String>,
    pub client_ip: IpAddr,
    /// The HELO/EHLO argument (client-supplied, unverified).
    pub helo: String,
    /// Whether the message arrived over STARTTLS.
    pub tls: bool,
}

/// The spool's verdict on one RCPT address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptCheck {
    /// An address of an enabled channel (or one of its plus-addresses).
    Accept,
    /// Not ours: `550 5.1.1`. Foreign domains land here too, so we are never a relay.
    Unknown,
    /// A disabled channel: `450 4.2.1`, so the sender retries later.
    Disabled,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `452 4.3.1`
    #[error("storage full")]
    Full,
    /// `451 4.3.0`
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// `421 4.3.2`, then the session closes.
    #[error("shutting down")]
    ShuttingDown,
}

pub trait Spool: Send + Sync + 'static {
    /// Decide whether `addr` (already lower-cased, as given in RCPT) may receive mail. Plus-addresses are the spool's job.
    fn check_recipient(&self, addr: &str) -> RcptCheck;
    /// Durably commit one message; returns only after fsync. 250 must be sent only on Ok.
    fn commit(
        &self,
        envelope: Envelope,
        raw: Vec<u8>,
    ) -> impl Future<Output = Result<i64, SpoolError>> + Send;
}
