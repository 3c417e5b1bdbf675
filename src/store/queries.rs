//! SQL text both backends send alike: the ticket statuses that count as
//! closed, the column lists whose order each backend's row readers
//! follow, the raw mail of a message, and the mailbox status listing. One
//! copy here keeps SQLite and PostgreSQL from drifting apart.
//!
//! Must not: hold placeholders (`?1` for SQLite, `$1` for PostgreSQL) or
//! dialect-specific expressions; the caller splices those in.

/// Ticket statuses that do not count as open (owner balancing, inbox views).
pub(crate) const CLOSED_STATUSES: &str = "('closed', 'resolved', 'solved')";

/// A ticket summary's columns, over `tickets t JOIN contacts c`.
pub(crate) const TICKET_COLUMNS: &str =
    "t.id, t.subject, t.channel, c.email, c.name, t.status, t.priority, t.pipeline, t.owner,
     t.unassigned_reason, t.properties, t.created_at, t.updated_at,
     (SELECT COUNT(*) FROM messages m WHERE m.ticket_id = t.id), t.routed_by";

/// A ticket's messages, oldest first, for its detail view; `body` is the
/// dialect's expression for a text stored by reference into the raw mail
/// (`m.text_at` into `spool_raw r` of `m.spool_id`), `ticket` its
/// placeholder for the ticket id.
pub(crate) fn ticket_messages(body: &str, ticket: &str) -> String {
    format!(
        "SELECT m.direction, m.from_email, m.from_name, m.to_addrs, m.subject, m.message_id, m.date,
                COALESCE(m.text, (SELECT {body} FROM spool_raw r WHERE r.id = m.spool_id)),
                m.author, m.classification, m.sender_resolution, m.delivery, m.delivery_detail,
                m.created_at,
                (SELECT r.raw FROM spool s JOIN spool_raw r ON r.id = s.id
                 WHERE s.id = m.spool_id AND s.source = 'form'),
                m.thread_note, m.html
         FROM messages m WHERE m.ticket_id = {ticket} ORDER BY m.id"
    )
}

/// A message's raw mail, over `messages m`: an inbound message as received
/// by mail (not a form submission's), a reply as composed for the relay;
/// NULL for anything else.
pub(crate) const MESSAGE_RAW: &str = "CASE m.direction
                      WHEN 'inbound' THEN (SELECT r.raw FROM spool s JOIN spool_raw r ON r.id = s.id
                                            WHERE s.id = m.spool_id AND s.source IN ('smtp', 'imap'))
                      WHEN 'outbound' THEN (SELECT x.raw FROM outbox o JOIN outbox_raw x ON x.id = o.id
                                             WHERE o.message_id = m.id)
                    END";

/// Every pulled mailbox's status row with its checkpoint and the UIDs
/// skipped under the checkpoint's UIDVALIDITY, by channel and folder.
pub(crate) const MAILBOX_STATUSES: &str =
    "SELECT s.channel, s.folder, s.state, c.uidvalidity, c.last_uid, s.fetched, s.skipped,
                s.last_error, s.last_error_at, s.updated_at,
                (SELECT COUNT(*) FROM mailbox_skipped k WHERE k.channel = s.channel
                   AND k.folder = s.folder AND k.uidvalidity = c.uidvalidity),
                s.resume_at
         FROM mailbox_status s LEFT JOIN mailbox_checkpoints c
           ON c.channel = s.channel AND c.folder = s.folder
         ORDER BY s.channel, s.folder";
