//! postdesk: a mail daemon that turns a company's support mail into help-desk
//! tickets.
//!
//! Mail flows one way through the modules:
//!
//! - [`smtp`]: the SMTP listener; ends when raw bytes and envelope are durably
//!   in the spool.
//! - [`store`]: the store trait and its SQLite implementation (spool,
//!   messages, contacts, tickets, runtime state).
//! - [`ingest`]: spool → parse → classify → resolve the sender → contact →
//!   thread → route → ticket.
//! - [`pull`]: pulls Gmail, Office 365 and IMAP mailboxes into the spool
//!   (one isolated task per mailbox, OAuth token refresh).
//! - [`oauth`]: OAuth 2 access tokens for Gmail and Office 365 mailboxes,
//!   shared by the puller (IMAP) and the sender (SMTP).
//! - [`outbound`]: agents' replies: compose, durable outbox, relay sender.
//! - [`api`]: the HTTP listener: the agents' JSON API, health, metrics.
//! - [`daemon`]: wires the above together, shutdown and reload.
//! - [`cli`]: the `postdesk` command line (the daemon and the operator's
//!   tools); the one place errors are `anyhow`.
//! - [`config`]: the one validated, typed configuration; [`live`]: the
//!   configuration and runtime overrides in force now.
//! - [`keys`]: the STARTTLS certificate and the DKIM key read from their
//!   files, by the daemon and by `check` alike.
//! - [`mail`]: what the layers share about mail itself (signed tags,
//!   randomness); imports nothing else of postdesk.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod ingest;
pub mod keys;
pub mod live;
pub mod mail;
pub mod oauth;
pub mod outbound;
pub mod pull;
pub mod smtp;
pub mod store;
pub mod web;

/// Install aws-lc-rs as the process-wide rustls provider (exactly one
/// provider is compiled in; this makes `ClientConfig::builder()` safe).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
