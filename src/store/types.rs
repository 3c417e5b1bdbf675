//! Typed values passed in and out of the store.

use serde::Serialize;

/// Row id of a spooled (accepted, raw) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SpoolId(pub i64);

/// A ticket's number, as shown to agents and in `[#N]` subject tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TicketId(pub i64);

impl std::fmt::Display for SpoolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a spooled message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolSource {
    Smtp,
    Imap,
    /// A web form submission (raw = the submission, JSON).
    Form,
    /// A ticket opened through the tickets API (raw = the request, JSON).
    Api,
}

impl SpoolSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolSource::Smtp => "smtp",
            SpoolSource::Imap => "imap",
            SpoolSource::Form => "form",
            SpoolSource::Api => "api",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "imap" => SpoolSource::Imap,
            "form" => SpoolSource::Form,
            "api" => SpoolSource::Api,
            _ => SpoolSource::Smtp,
        }
    }
}

/// A message to commit to the spool, with its envelope.
#[derive(Debug, Clone)]
pub struct NewSpool {
    pub source: SpoolSource,
    /// Envelope sender; empty for the null reverse path.
    pub mail_from: String,
    /// Envelope recipients, lower-cased.
    pub rcpt_to: Vec<String>,
    pub client_ip: Option<String>,
    pub helo: Option<String>,
    pub tls: bool,
    /// Set when the source already knows the channel (pulled mail).
    pub channel: Option<String>,
    /// Exact bytes as received.
    pub raw: Vec<u8>,
}

/// A spooled message as ingest sees it.
#[derive(Debug, Clone)]
pub struct SpoolEntry {
    pub id: SpoolId,
    pub received_at: i64,
    pub source: SpoolSource,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The SMTP client's address (SMTP only).
    pub client_ip: Option<String>,
    /// The SMTP client's EHLO/HELO name (SMTP only).
    pub helo: Option<String>,
    pub channel: Option<String>,
    pub raw: Vec<u8>,
    pub content_hash: String,
}

impl SpoolEntry {
    /// `msg` as stored: its id, when it was received and its content hash.
    pub fn stored(id: SpoolId, received_at: i64, msg: NewSpool, content_hash: String) -> Self {
        SpoolEntry {
            id,
            received_at,
            source: msg.source,
            mail_from: msg.mail_from,
            rcpt_to: msg.rcpt_to,
            client_ip: msg.client_ip,
            helo: msg.helo,
            channel: msg.channel,
            raw: msg.raw,
            content_hash,
        }
    }
}

/// A contact as parsed from mail: normalised email plus display name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactRef {
    pub email: String,
    pub name: Option<String>,
}

/// How a new ticket gets its owner, decided by ingest from config; the store
/// applies it against current open-ticket counts inside the transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutingPlan {
    /// Leave unassigned, with the reason shown on the ticket.
    Unassigned { reason: String },
    /// Pick among these eligible users: fewest open tickets, ties to the
    /// least recently assigned. Empty means unassigned with `reason_if_none`.
    Balance {
        users: Vec<String>,
        reason_if_none: String,
    },
    /// The contact's owner if they are in `eligible`, else unassigned.
    ContactOwner { eligible: Vec<String> },
}

/// Values for a ticket opened by this message.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: String,
    /// The ticket's secret for outgoing subject tags (`[#N-secret]`).
    pub secret: String,
    pub pipeline: Option<String>,
    pub status: Option<String>,
    pub priority: Option<String>,
    /// Custom string properties, JSON object text.
    pub properties: String,
    pub routing: RoutingPlan,
    /// What chose the routing plan (a rule, the channel's default), kept on
    /// the ticket.
    pub routed_by: Option<String>,
}

/// A ticket that starts with our own mail (an agent's new email): see
/// [`TicketStore::open_outbound_ticket`](super::TicketStore::open_outbound_ticket).
#[derive(Debug, Clone)]
pub struct OutboundOpening {
    pub channel: String,
    /// Created if new; a stored name is only filled in, never replaced.
    pub contact: ContactRef,
    pub ticket: NewTicket,
    /// The agent who writes the first mail and owns the ticket.
    pub owner: String,
    /// With a key, an earlier opening by the same owner with the same key
    /// is returned instead of a new ticket.
    pub idempotency_key: Option<String>,
}

/// What a team member (or trusted forwarder) wrote above the mail they
/// forwarded: an internal note on the ticket, from their address — not the
/// customer's. Without an author: see `ingest::forwarder_note`.
#[derive(Debug, Clone)]
pub struct ForwarderNote {
    pub text: String,
    /// The forwarder's address and name, as the mail's From gives them.
    pub from: ContactRef,
}

/// One message, as stored for one channel.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub channel: String,
    /// `mid:<message-id>` or `sha256:<hash>`: unique per channel.
    pub dedupe_key: String,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// `[#N]` / `[#N-secret]` from the subject, when present.
    pub thread_token: Option<ThreadToken>,
    /// `support+N@…`: the ticket a plus-address names.
    pub plus_token: Option<TicketId>,
    /// An authenticated team member sent or forwarded it: it may continue
    /// any ticket it names.
    pub trusted_sender: bool,
    /// Who the message is when matched against a ticket's contact and
    /// participants; `None` when its sender is one of our own addresses it is
    /// not proven to come from (it matches nobody).
    pub thread_identity: Option<String>,
    /// The contact's display name comes from mail proven to be the
    /// contact's own: it may replace a name already stored.
    pub name_verified: bool,
    /// Who the ticket belongs to (after sender resolution).
    pub contact: ContactRef,
    pub from: ContactRef,
    pub to: Vec<String>,
    /// Cc addresses: with `to`, the people the sender addressed (who may
    /// continue the ticket by its guessable handles when the sender was
    /// its contact).
    pub cc: Vec<String>,
    pub subject: String,
    pub date: Option<String>,
    pub text: BodyText,
    pub html: Option<String>,
    /// What the message is (stored as JSON when the message is written).
    pub classification: super::Classification,
    /// Who wrote it and how that was decided (stored as JSON likewise).
    pub sender_resolution: super::SenderResolution,
    /// The forwarder's own note, stored as an internal note on the ticket.
    pub note: Option<ForwarderNote>,
    /// Used only when no existing ticket matches.
    pub new_ticket: NewTicket,
    /// Set for bounces: how to find the outbound message it reports on.
    pub bounce: Option<super::BounceLink>,
}

/// A ticket handle from a subject tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadToken {
    pub ticket: TicketId,
    /// The secret after the number (`[#7-k3f9q2ab]`), lower-cased.
    pub secret: Option<String>,
}

/// A message's plain-text body as the ticket shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyText {
    /// Stored as its own copy.
    Inline(String),
    /// The raw message's bytes from this offset to the end are the text (a
    /// single-part, unencoded UTF-8 body): stored by reference, not twice.
    RawFrom(usize),
}

impl BodyText {
    /// The text, referring into `raw` when it lies there verbatim: most mail
    /// is plain text whose body needs no decoding, and storing it a second
    /// time would double the bytes every message writes.
    pub fn from_raw(raw: &[u8], text: &str) -> BodyText {
        if !text.is_empty() && raw.ends_with(text.as_bytes()) {
            BodyText::RawFrom(raw.len() - text.len())
        } else {
            BodyText::Inline(text.to_string())
        }
    }
}

/// The ingest result for one spool entry: one message per addressed channel,
/// or a reason to drop it (a mail loop).
#[derive(Debug, Clone)]
pub struct InboundPlan {
    pub spool_id: SpoolId,
    pub messages: Vec<InboundMessage>,
    /// Set when the message is deliberately not turned into a ticket.
    pub dropped: Option<String>,
}

/// A message that arrives already planned (a web form submission, a ticket
/// opened through the API): see [`SpoolStore::submit`](super::SpoolStore::submit).
#[derive(Debug, Clone)]
pub struct Submission {
    /// Its spool row; `raw` is the submission as received.
    pub spool: NewSpool,
    /// Its messages, as an [`InboundPlan`]'s.
    pub messages: Vec<InboundMessage>,
}

/// What happened to one channel's copy of a message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivered {
    pub channel: String,
    pub ticket: TicketId,
    /// True when this message opened the ticket.
    pub created: bool,
    /// True when the message was already stored (dedupe), nothing written.
    pub duplicate: bool,
    pub owner: Option<String>,
}

impl Delivered {
    /// `m` was written to the existing ticket `ticket`.
    pub fn joined(m: &InboundMessage, ticket: TicketId) -> Self {
        Delivered {
            channel: m.channel.clone(),
            ticket,
            created: false,
            duplicate: false,
            owner: None,
        }
    }

    /// `m` opened `ticket`, routed to `owner` (none: left unassigned).
    pub fn opened(m: &InboundMessage, ticket: TicketId, owner: Option<String>) -> Self {
        Delivered {
            created: true,
            owner,
            ..Self::joined(m, ticket)
        }
    }

    /// `m` was stored before, in `ticket`: nothing written for it.
    pub fn duplicate(m: &InboundMessage, ticket: TicketId) -> Self {
        Delivered {
            duplicate: true,
            ..Self::joined(m, ticket)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InboundOutcome {
    pub delivered: Vec<Delivered>,
}

/// Filters for listing tickets.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub channel: Option<String>,
    pub status: Option<String>,
    pub owner: Option<String>,
    pub contact: Option<String>,
    pub limit: Option<usize>,
}

/// The fields every view of a ticket shares.
#[derive(Debug, Clone, Serialize)]
pub struct TicketHead {
    pub number: TicketId,
    pub subject: String,
    pub channel: String,
    pub contact: ContactRef,
    pub status: Option<String>,
    pub priority: Option<String>,
    pub pipeline: Option<String>,
    pub owner: Option<String>,
    pub unassigned_reason: Option<String>,
    /// What chose the owner when the ticket was opened: a routing rule
    /// (`rule "german" (language de) → skills de`) or the channel's default.
    pub routed_by: Option<String>,
    pub properties: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A ticket in a list (the `tickets list --json` shape).
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    #[serde(flatten)]
    pub head: TicketHead,
    /// Number of messages (inbound, outbound and notes).
    pub messages: i64,
}

/// One message of a ticket (the `tickets show --json` shape).
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub direction: String,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub text: Option<String>,
    /// The HTML part as received or sent, `cid:` references to inline
    /// images intact (served by `GET /api/v1/tickets/{n}/inline/{cid}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub author: Option<String>,
    pub classification: serde_json::Value,
    pub sender_resolution: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_detail: Option<String>,
    /// The whole stored submission of a form message (hidden fields
    /// included, which `text` leaves out); absent for mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission: Option<serde_json::Value>,
    /// Why this message, which named another ticket, was opened apart
    /// ("mentions #7 …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_note: Option<String>,
    pub created_at: i64,
}

/// A ticket with its messages.
#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub head: TicketHead,
    pub participants: Vec<ContactRef>,
    pub messages: Vec<MessageView>,
}

/// A contact (the `contacts list --json` shape).
#[derive(Debug, Clone, Serialize)]
pub struct ContactView {
    pub email: String,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub tickets: i64,
}

/// What waits, from [`crate::store::Store::queues`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Queues {
    /// Spool entries not yet ingested.
    pub spool_pending: i64,
    /// Spool entries ingest gave up on (kept for `postdesk status`).
    pub spool_failed: i64,
    pub outbox: crate::store::OutboxCounts,
    /// Messages waiting for the search indexer (PostgreSQL; SQLite indexes
    /// a message with it: always 0).
    pub search_pending: i64,
}

/// Store-wide counts for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStatus {
    pub path: String,
    pub spool_pending: i64,
    pub spool_failed: i64,
    pub spool_total: i64,
    pub tickets: i64,
    pub messages: i64,
    pub contacts: i64,
    pub outbox_queued: i64,
    pub outbox_failed: i64,
}

/// A user's availability set by hand (API or CLI), and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserOverride {
    pub id: String,
    pub available: bool,
    /// Unix milliseconds.
    pub at: i64,
}
