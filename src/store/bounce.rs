//! Bounces on the outbound message they report on (docs/sender-resolution.md, bounces).
//!
//! Owns the SQL that links an inbound bounce to one of our outbound
//! messages: find it by the candidate Message-IDs ingest extracted (most
//! trusted first), mark it `failed` with the report's detail, and note the
//! link on the stored bounce. Runs inside `apply_inbound`'s savepoint, so the
//! bounce, the link and the failed mark commit together or not at all.
//!
//! Must not: parse mail (ingest hands over a [`BounceLink`]), create contacts
//! or tickets (a matched bounce joins the outbound message's ticket; an
//! unmatched one is stored as any other mail), or queue mail — nothing
//! automatic ever answers a bounce.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// Most candidate Message-IDs looked up for one bounce.
pub const MAX_CANDIDATES: usize = 16;

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

/// Our outbound message a bounce reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounced {
    /// `messages.id` of the outbound message.
    pub row: i64,
    pub ticket: i64,
    pub message_id: String,
}

/// The most recent outbound message of a channel with a Message-ID.
pub(crate) const FIND_OUTBOUND: &str = "SELECT id, ticket_id FROM messages
     WHERE message_id = ?1 AND channel = ?2 AND direction = 'outbound'
     ORDER BY id DESC LIMIT 1";

/// The first candidate that names an outbound message of `channel`.
pub(crate) fn find_outbound(
    conn: &Connection,
    channel: &str,
    link: &BounceLink,
) -> Result<Option<Bounced>, StoreError> {
    let mut stmt = conn.prepare_cached(FIND_OUTBOUND)?;
    for id in link.candidates.iter().take(MAX_CANDIDATES) {
        if let Some((row, ticket)) = stmt
            .query_row(params![id, channel], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            return Ok(Some(Bounced {
                row,
                ticket,
                message_id: id.clone(),
            }));
        }
    }
    Ok(None)
}

/// `classification` (JSON) with the bounced message's Message-ID noted in it
/// (`bounced_message_id`), for the bounce's own message row.
pub(crate) fn classification_with(classification: &str, b: &Bounced) -> String {
    let mut v: serde_json::Value = serde_json::from_str(classification)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    v["bounced_message_id"] = serde_json::Value::String(b.message_id.clone());
    v.to_string()
}

/// After the bounce itself was stored on `b.ticket` (with
/// [`classification_with`]): mark the outbound message failed when the
/// report says so (its outbox row too, if it is somehow still queued: never
/// send again to an address that bounced).
pub(crate) fn record(
    conn: &Connection,
    b: &Bounced,
    link: &BounceLink,
    now: i64,
) -> Result<(), StoreError> {
    if link.failed {
        conn.prepare_cached(
            "UPDATE messages SET delivery = 'failed', delivery_detail = ?1 WHERE id = ?2",
        )?
        .execute(params![link.detail, b.row])?;
        conn.prepare_cached(
            "UPDATE outbox SET state = 'failed', last_error = ?1 WHERE message_id = ?2 AND state = 'queued'",
        )?
        .execute(params![link.detail, b.row])?;
    }
    conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
        .execute(params![now, b.ticket])?;
    tracing::info!(
        ticket = b.ticket,
        message_id = %b.message_id,
        failed = link.failed,
        "bounce linked to its outbound message"
    );
    Ok(())
}
