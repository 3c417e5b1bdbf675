//! Outbound: agents' replies, from request to the relay's 250.
//!
//! DESCRIPTION
//!   [`Outbound::reply`] (used by the HTTP API and `postdesk reply` alike)
//!   looks up the ticket, its channel and the agent, composes the mail
//!   ([`compose`], pure; [`signature`]), optionally DKIM-signs it ([`dkim`]),
//!   and commits the outbound message (delivery `queued`) and its outbox row in
//!   one transaction before it returns. [`sender::Sender`] delivers the outbox in
//!   the background with lettre: pooled connections to `[relay]` (none, STARTTLS
//!   or implicit TLS; AUTH with `password_file`), or — for `gmail` and
//!   `office365` channels when an [`AccessTokens`] source is installed — the
//!   provider's SMTP with XOAUTH2. The state is on the message: `queued`,
//!   `sent` (with the relay's reply), `failed` (with the relay's reply).
//!
//! RETRIES
//!   4xx replies and connection/TLS/timeout errors are deferred with exponential
//!   backoff (`retry_base_secs` doubling up to `retry_max_secs`); once
//!   `max_lifetime_secs` has passed since the reply was queued the next failure
//!   marks it failed. 5xx replies fail at once. A restart resumes the queue.
//!
//! EXACTLY ONCE, AND ITS ONE WINDOW
//!   A reply is recorded `sent` only after the relay accepted it (250 to the
//!   end of DATA). If the process dies after that 250 and before the `sent`
//!   row is durably committed, the reply is still `queued` at the next start and
//!   is sent again — with the same Message-ID and bytes, so receivers that
//!   dedupe on Message-ID show it once. Everything else is exactly once: a reply
//!   is never attempted twice concurrently (one sender task per node; nodes
//!   sharing a PostgreSQL store claim the entries they take, see [`claims`]),
//!   and a crash before the relay's 250 simply retries — on another node
//!   once the crashed node's claims expire (`[store] lease_secs`). On the way in, a client that
//!   retries a request whose answer it lost sends the same `Idempotency-Key`
//!   and gets the first reply back instead of a second one.
//!
//! MUST NOT
//!   Parse inbound mail, route tickets, or touch SQL (it calls the store).
//!
//! UNTRUSTED INPUT
//!   Everything in a reply request (text, HTML, subject, attachment names and
//!   types) and the ticket subject; see [`compose`] for the header rules.
//!   Relay replies are shown to agents as text, never interpreted.

mod claims;
pub mod compose;
pub mod dkim;
pub mod notify;
pub mod pool;
pub mod quote;
pub mod replay;
pub mod sender;
pub mod signature;
pub mod wake;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::live::Live;
use crate::store::{NewReply, QueuedReply, Store, StoreError, TicketId};
pub use compose::{Attachment, ComposeError};

/// Largest total attachment size in one reply (bytes).
pub const MAX_ATTACHMENTS_BYTES: usize = 20 * 1024 * 1024;
/// Longest reply body (text or HTML), bytes: a new ticket's longest text.
pub const MAX_BODY_BYTES: usize = crate::mail::opening::MAX_TEXT_BYTES;

/// Why a reply was not queued.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("channel {0:?} cannot send replies: {1}")]
    Channel(String, String),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error("{0}")]
    TooLarge(String),
    #[error("dkim: {0}")]
    Dkim(String),
    #[error(transparent)]
    Store(StoreError),
    /// A new email's recipient, subject or text is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// A new email to a contact, from a channel (opens a ticket).
#[derive(Debug, Clone)]
pub struct ComposeRequest {
    pub channel: String,
    pub contact: crate::store::ContactRef,
    pub subject: String,
    /// The agent's user id: the author and the new ticket's owner.
    pub author: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    pub idempotency_key: Option<String>,
}

impl From<crate::mail::OpeningError> for OutboundError {
    fn from(e: crate::mail::OpeningError) -> Self {
        match e {
            crate::mail::OpeningError::TextTooLong => OutboundError::TooLarge(e.to_string()),
            other => OutboundError::Invalid(other.to_string()),
        }
    }
}

impl From<StoreError> for OutboundError {
    fn from(e: StoreError) -> Self {
        OutboundError::Store(e)
    }
}

/// What an agent asks to send.
#[derive(Debug, Clone)]
pub struct ReplyRequest {
    pub ticket: TicketId,
    /// The agent's user id.
    pub author: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Replaces `Re: <ticket subject>`; the `[#N]` token is kept.
    pub subject: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Cc the ticket's other participants (contacts who wrote in the thread).
    pub cc_thread: bool,
    /// Repeat-safe key (API `Idempotency-Key`): the same author and key on the
    /// same ticket queue one reply, however often the request is retried.
    pub idempotency_key: Option<String>,
    /// Quote the ticket's last customer message below the reply, its inline
    /// images included. `None`: `[outbound] quote_history`.
    pub quote_history: Option<bool>,
}

impl ReplyRequest {
    /// What refuses a reply before anything is read: body and attachment
    /// sizes and the idempotency key. (The subject and the attachments'
    /// names and types are [`compose::compose`]'s to check.)
    fn check(&self) -> Result<(), OutboundError> {
        if self.text.as_ref().is_some_and(|t| t.len() > MAX_BODY_BYTES)
            || self.html.as_ref().is_some_and(|t| t.len() > MAX_BODY_BYTES)
        {
            return Err(OutboundError::TooLarge(format!(
                "reply body over {MAX_BODY_BYTES} bytes"
            )));
        }
        if let Some(k) = &self.idempotency_key {
            compose::check_agent_header("idempotency key", k, 200)?;
        }
        let total: usize = self.attachments.iter().map(|a| a.data.len()).sum();
        if total > MAX_ATTACHMENTS_BYTES {
            return Err(OutboundError::TooLarge(format!(
                "attachments over {MAX_ATTACHMENTS_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// Queues replies and wakes the sender.
#[derive(Clone)]
pub struct Outbound {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    /// Notified after each queued reply (the sender waits on it).
    pub wake: Arc<Notify>,
}

pub use crate::store::now_ms;

/// A fresh Message-ID (without brackets) on `domain`: a reply id signed
/// under the install's key (`key`, [`crate::mail::tags`]) — 96 random bits,
/// so a stranger cannot guess one to thread their mail into a ticket, and a
/// MAC, so ingest knows this reply if it ever comes back in.
pub fn new_message_id(ticket: TicketId, domain: &str, key: &[u8]) -> String {
    format!(
        "{}@{domain}",
        crate::mail::tags::new_reply_id(ticket.0, key)
    )
}

impl Outbound {
    /// Open a ticket for a new email to a contact and queue the email as its
    /// first message (subject as given, with the ticket's tag). Everything
    /// is checked before the ticket is opened. With an idempotency key, a
    /// retry finds the ticket the first request opened (the store keeps
    /// the key with it) and its email (the reply's own replay): one ticket,
    /// one email, however often it is retried. `plan` gives the new
    /// ticket's properties (ingest's routing decides them; the author owns
    /// the ticket) from the channel, subject, text and contact address.
    pub async fn compose(
        &self,
        req: ComposeRequest,
        plan: impl FnOnce(
            &crate::config::Config,
            &crate::config::ChannelConfig,
            &str,
            &str,
            &str,
        ) -> crate::store::NewTicket,
    ) -> Result<QueuedReply, OutboundError> {
        let config = self.live.config();
        let channel = config
            .channel(&req.channel)
            .ok_or_else(|| OutboundError::Invalid(format!("unknown channel {:?}", req.channel)))?;
        if channel.address.is_none() {
            return Err(OutboundError::Channel(
                channel.id.clone(),
                "it has no address".into(),
            ));
        }
        if config.user(&req.author).is_none() {
            return Err(OutboundError::UnknownUser(req.author));
        }
        let typed = crate::mail::check_opening(
            &req.contact.email,
            req.contact.name.as_deref(),
            &req.subject,
            &req.text,
        )?;
        let (email, name, subject) = (typed.email, typed.name, typed.subject);
        if config.channel_for_recipient(&email).is_some() {
            return Err(OutboundError::Invalid(format!(
                "{email} is one of our own channel addresses"
            )));
        }
        let ticket = plan(&config, channel, &subject, &req.text, &email);
        let mut first = ReplyRequest {
            // Known once the ticket is opened, below.
            ticket: TicketId(0),
            author: req.author,
            text: Some(req.text),
            html: None,
            subject: Some(subject),
            attachments: req.attachments,
            cc_thread: false,
            idempotency_key: req.idempotency_key,
            // A new ticket has nothing to quote.
            quote_history: Some(false),
        };
        // What would refuse the email refuses it before a ticket is opened
        // (compose checks the subject and attachments again, as for any
        // reply).
        first.check()?;
        compose::check_parts(first.subject.as_deref(), &first.attachments)?;
        first.ticket = self
            .store
            .open_outbound_ticket(crate::store::OutboundOpening {
                channel: channel.id.clone(),
                contact: crate::store::ContactRef { email, name },
                ticket,
                owner: first.author.clone(),
                idempotency_key: first.idempotency_key.clone(),
            })
            .await?;
        self.queue_checked(first).await
    }

    /// A [`notify::Notifier`] sharing this queue's store, configuration and
    /// sender wake-up.
    pub fn notifier(&self) -> notify::Notifier {
        notify::Notifier {
            store: self.store.clone(),
            live: self.live.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Compose and durably queue a reply. Returns once it is committed.
    pub async fn reply(&self, req: ReplyRequest) -> Result<QueuedReply, OutboundError> {
        req.check()?;
        self.queue_checked(req).await
    }

    /// [`Outbound::reply`] for a request [`ReplyRequest::check`] passed.
    async fn queue_checked(&self, req: ReplyRequest) -> Result<QueuedReply, OutboundError> {
        let config = self.live.config();
        let ticket = match self
            .store
            .reply_context(req.ticket, compose::MAX_REFERENCES - 1)
            .await
        {
            Ok(t) => t,
            Err(StoreError::NotFound(_)) => return Err(OutboundError::TicketNotFound(req.ticket)),
            Err(e) => return Err(e.into()),
        };
        let agent = config
            .user(&req.author)
            .ok_or_else(|| OutboundError::UnknownUser(req.author.clone()))?;
        let channel = config.channel(&ticket.channel).ok_or_else(|| {
            OutboundError::Channel(ticket.channel.clone(), "not in the configuration".into())
        })?;
        let from_email = channel.address.clone().ok_or_else(|| {
            OutboundError::Channel(channel.id.clone(), "it has no address".into())
        })?;
        let from_name = config.sender_display_name(channel, Some(agent));
        let signature = signature::render(&channel.signature_html, agent);
        let thread = ticket.thread;
        // Cc: the thread's other participants, never our own addresses.
        let cc: Vec<(String, Option<String>)> = if req.cc_thread {
            ticket
                .participants
                .iter()
                .filter(|p| p.email != ticket.contact.email)
                .filter(|p| config.channel_for_recipient(&p.email).is_none())
                .filter(|p| config.user_by_email(&p.email).is_none())
                .map(|p| (p.email.clone(), p.name.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let quote_source = if req.quote_history.unwrap_or(config.outbound.quote_history) {
            self.store.quote_source(req.ticket).await?
        } else {
            None
        };
        let domain = config.message_id_domain().to_string();
        let key = match self.live.notice_key() {
            Some(k) => k.to_vec(),
            None => self.store.notice_key().await?.into_bytes(),
        };
        let message_id = new_message_id(req.ticket, &domain, &key);
        // The loop header names our host and repeats the signed reply id, for
        // a relay that rewrites the Message-ID but keeps other headers.
        let loop_value = format!(
            "{}; id={}",
            config.smtp.hostname,
            message_id.split('@').next().unwrap_or_default()
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let input = compose::ReplyInput {
            from_email: &from_email,
            from_name: from_name.as_deref(),
            to_email: &ticket.contact.email,
            to_name: ticket.contact.name.as_deref(),
            cc: &cc,
            ticket: req.ticket.0,
            ticket_secret: &ticket.secret,
            ticket_subject: &ticket.subject,
            subject_override: req.subject.as_deref(),
            thread: &thread,
            message_id: &message_id,
            date: now,
            text: req.text.as_deref(),
            html: req.html.as_deref(),
            signature: &signature,
            attachments: &req.attachments,
            loop_value: &loop_value,
            quote: None,
        };
        let quote = quote_source.map(|src| quote::Quote::of(&src));
        let input = compose::ReplyInput {
            quote: quote.as_ref(),
            ..input
        };
        let composed = compose::compose(&input)?;
        let raw = match &config.outbound.dkim {
            // An RSA signature takes a millisecond or more of CPU: not on the
            // runtime's workers, which serve every SMTP session.
            Some(d) => {
                let (d, raw) = (d.clone(), composed.raw);
                tokio::task::spawn_blocking(move || dkim::sign(&d, raw))
                    .await
                    .map_err(|e| OutboundError::Dkim(e.to_string()))?
                    .map_err(|e| OutboundError::Dkim(e.to_string()))?
            }
            None => composed.raw,
        };
        let dedupe_key = replay::dedupe_key(&agent.id, &message_id, req.idempotency_key.as_deref());
        let reply = NewReply {
            ticket: req.ticket,
            channel: channel.id.clone(),
            author: agent.id.clone(),
            message_id,
            in_reply_to: composed.in_reply_to,
            references: composed.references,
            from_email: from_email.clone(),
            from_name,
            to: vec![ticket.contact.email.clone()],
            cc: cc.into_iter().map(|(a, _)| a).collect(),
            subject: composed.subject,
            date: mail_builder::headers::date::Date::new(now).to_rfc822(),
            text: composed.text,
            html: composed.html,
            raw,
            dedupe_key,
            replayable: req.idempotency_key.is_some(),
        };
        let queued = self.store.queue_reply(reply, replay::replay).await?;
        if !queued.replayed {
            metrics::counter!("postdesk_outbox_queued_total").increment(1);
            self.wake.notify_one();
        }
        Ok(queued)
    }
}
