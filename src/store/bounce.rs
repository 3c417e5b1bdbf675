//! Bounces on the outbound message they report on (docs/sender-resolution.md, bounces).
//!
//! Owns the SQL behind linking an inbound bounce to one of our outbound
//! messages: the lookup of an outbound message by Message-ID
//! ([`FIND_OUTBOUND`], for [`crate::store::InboundFacts::outbound`]) and the
//! writes of a [`crate::store::Decision::Bounce`] ([`record`]: the outbound
//! message failed when ingest said so). Runs inside `apply_inbound`'s
//! savepoint, so the bounce, the link and the failed mark commit together or
//! not at all.
//!
//! Must not: parse mail or decide (ingest hands over a [`BounceLink`] and
//! decides which candidate names our message, `ingest::bounce::reported_on`),
//! create contacts or tickets (a matched bounce joins the outbound message's
//! ticket; an unmatched one is stored as any other mail), or queue mail —
//! nothing automatic ever answers a bounce.

use rusqlite::{Connection, params};

use super::{OutboundRef, StoreError};

/// What ingest extracted from a bounce for linking it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BounceLink {
    /// Message-IDs (without angle brackets) that may be our bounced outbound
    /// message, most trusted first: the DSN's original, In-Reply-To /
    /// References, then ids found in returned headers.
    pub candidates: Vec<String>,
    /// The report says delivery failed (false for `delayed`, `relayed`…
    /// reports: those are attached but do not fail the message).
    pub failed: bool,
    /// One line for the outbound message's `delivery_detail`: status and
    /// diagnostic.
    pub detail: String,
}

/// The most recent outbound message of a channel with a Message-ID.
pub(crate) const FIND_OUTBOUND: &str = "SELECT id, ticket_id FROM messages
     WHERE message_id = ?1 AND channel = ?2 AND direction = 'outbound'
     ORDER BY id DESC LIMIT 1";

/// After the bounce itself was stored on `b.ticket`: mark the outbound
/// message failed with `fail`'s detail when ingest decided so (its outbox
/// row too, if it is somehow still queued: never send again to an address
/// that bounced), and touch the ticket.
pub(crate) fn record(
    conn: &Connection,
    b: &OutboundRef,
    fail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(detail) = fail {
        conn.prepare_cached(
            "UPDATE messages SET delivery = 'failed', delivery_detail = ?1 WHERE id = ?2",
        )?
        .execute(params![detail, b.row])?;
        conn.prepare_cached(
            "UPDATE outbox SET state = 'failed', last_error = ?1 WHERE message_id = ?2 AND state = 'queued'",
        )?
        .execute(params![detail, b.row])?;
    }
    conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
        .execute(params![now, b.ticket.0])?;
    b.log_bounce(fail.is_some());
    Ok(())
}
