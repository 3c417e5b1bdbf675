//! Tickets in PostgreSQL: lists, one ticket with its messages, notes,
//! status and owner changes, and what a reply is composed from — the
//! queries `sqlite.rs` and `store/outbound.rs` run for SQLite.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::sql::{Db, bind, col, exec, parse_json, parse_json_vec, row, rows};
use crate::store::queries::TICKET_COLUMNS;
use crate::store::{
    ContactRef, MessageView, OutboundOpening, QuoteSource, ReplyContext, StoreError, TicketDetail,
    TicketFilter, TicketHead, TicketId, TicketSummary, TicketUpdate,
};

pub(super) async fn ticket_channel(db: &Db, ticket: TicketId) -> Result<String, StoreError> {
    match row(
        db,
        "SELECT channel FROM tickets WHERE id = $1",
        &[&ticket.0],
    )
    .await?
    {
        Some(r) => col(&r, 0),
        None => Err(StoreError::NotFound(format!("ticket {ticket}"))),
    }
}

pub(super) fn ticket_row(r: &Row) -> Result<TicketSummary, StoreError> {
    Ok(TicketSummary {
        head: TicketHead {
            number: TicketId(col(r, 0)?),
            subject: col(r, 1)?,
            channel: col(r, 2)?,
            contact: ContactRef {
                email: col(r, 3)?,
                name: col(r, 4)?,
            },
            status: col(r, 5)?,
            priority: col(r, 6)?,
            pipeline: col(r, 7)?,
            owner: col(r, 8)?,
            unassigned_reason: col(r, 9)?,
            properties: parse_json(col(r, 10)?),
            created_at: col(r, 11)?,
            updated_at: col(r, 12)?,
            routed_by: col(r, 14)?,
        },
        messages: col(r, 13)?,
    })
}

/// Only the filters given are in the WHERE clause (each a bound
/// parameter), so the planner can use their index.
pub(super) async fn list_tickets(
    db: &Db,
    f: &TicketFilter,
) -> Result<Vec<TicketSummary>, StoreError> {
    // Contacts are stored normalised: so is the filter, whoever asks.
    let contact = f.contact.as_deref().map(crate::mail::normalize_email);
    let limit = f.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut clauses = Vec::new();
    for (column, value) in [
        ("t.channel", &f.channel),
        ("t.status", &f.status),
        ("t.owner", &f.owner),
        ("c.email", &contact),
    ] {
        if let Some(v) = value {
            clauses.push(bind(&mut params, &format!("{column} = #"), v));
        }
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let limit = bind(&mut params, "#", &limit);
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id
         {filter} ORDER BY t.id DESC LIMIT {limit}"
    );
    rows(db, &sql, &params)
        .await?
        .iter()
        .map(ticket_row)
        .collect()
}

pub(super) async fn ticket(db: &Db, n: TicketId) -> Result<TicketDetail, StoreError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id WHERE t.id = $1"
    );
    let summary = match row(db, &sql, &[&n.0]).await? {
        Some(r) => ticket_row(&r)?,
        None => return Err(StoreError::NotFound(format!("ticket {n}"))),
    };
    let sql = crate::store::queries::ticket_messages(
        "convert_from(substr(r.raw, (m.text_at + 1)::int), 'UTF8')",
        "$1",
    );
    let messages = rows(db, &sql, &[&n.0])
        .await?
        .iter()
        .map(|r| {
            Ok(MessageView {
                direction: col(r, 0)?,
                from: col(r, 1)?,
                from_name: col(r, 2)?,
                to: parse_json_vec(col::<Option<&str>>(r, 3)?.unwrap_or_default()),
                subject: col(r, 4)?,
                message_id: col(r, 5)?,
                date: col(r, 6)?,
                text: col(r, 7)?,
                author: col(r, 8)?,
                classification: parse_json(col(r, 9)?),
                sender_resolution: parse_json(col(r, 10)?),
                delivery: col(r, 11)?,
                delivery_detail: col(r, 12)?,
                created_at: col(r, 13)?,
                submission: col::<Option<Vec<u8>>>(r, 14)?
                    .and_then(|raw| serde_json::from_slice(&raw).ok()),
                thread_note: col(r, 15)?,
                html: col(r, 16)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let participants = participants(db, n).await?;
    Ok(TicketDetail {
        head: summary.head,
        participants,
        messages,
    })
}

async fn participants(db: &Db, n: TicketId) -> Result<Vec<ContactRef>, StoreError> {
    rows(
        db,
        "SELECT c.email, c.name FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
         WHERE p.ticket_id = $1 ORDER BY c.email",
        &[&n.0],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ContactRef {
            email: col(r, 0)?,
            name: col(r, 1)?,
        })
    })
    .collect()
}

pub(super) async fn add_note(
    db: &Db,
    ticket: TicketId,
    author: &str,
    text: &str,
    now: i64,
) -> Result<(), StoreError> {
    let channel = ticket_channel(db, ticket).await?;
    exec(
        db,
        "INSERT INTO messages (ticket_id, channel, direction, author, text, created_at)
         VALUES ($1, $2, 'note', $3, $4, $5)",
        &[&ticket.0, &channel, &author, &text, &now],
    )
    .await?;
    touch(db, ticket.0, now).await
}

/// Mark a ticket as changed now.
pub(super) async fn touch(db: &Db, ticket: i64, now: i64) -> Result<(), StoreError> {
    exec(
        db,
        "UPDATE tickets SET updated_at = $1 WHERE id = $2",
        &[&now, &ticket],
    )
    .await?;
    Ok(())
}

pub(super) async fn update_ticket(
    db: &Db,
    ticket: TicketId,
    u: &TicketUpdate,
    now: i64,
) -> Result<(), StoreError> {
    ticket_channel(db, ticket).await?;
    if let Some(status) = &u.status {
        exec(
            db,
            "UPDATE tickets SET status = $1, updated_at = $2 WHERE id = $3",
            &[status, &now, &ticket.0],
        )
        .await?;
    }
    if let Some(priority) = &u.priority {
        exec(
            db,
            "UPDATE tickets SET priority = $1, updated_at = $2 WHERE id = $3",
            &[priority, &now, &ticket.0],
        )
        .await?;
    }
    if let Some(owner) = &u.owner {
        let reason = owner.is_none().then_some("unassigned by an agent");
        exec(
            db,
            if u.only_if_unassigned {
                "UPDATE tickets SET owner = $1, unassigned_reason = $2, updated_at = $3
                 WHERE id = $4 AND owner IS NULL"
            } else {
                "UPDATE tickets SET owner = $1, unassigned_reason = $2, updated_at = $3 WHERE id = $4"
            },
            &[owner, &reason, &now, &ticket.0],
        )
        .await?;
    }
    Ok(())
}

/// The ticket's messages a reply's References may name (`id, message_id`):
/// those the customer saw — not notes, not our failed replies, not bounces.
const THREAD_SEEN_BY_CUSTOMER: &str =
    "SELECT id, message_id FROM messages WHERE ticket_id = $1 AND direction <> 'note'
       AND message_id IS NOT NULL AND delivery IS DISTINCT FROM 'failed'
       AND postdesk_json_kind(classification) IS DISTINCT FROM 'bounce'";

pub(super) async fn reply_context(
    db: &Db,
    ticket: TicketId,
    recent: usize,
) -> Result<ReplyContext, StoreError> {
    let head = row(
        db,
        "SELECT t.subject, t.channel, c.email, c.name, t.secret FROM tickets t
         JOIN contacts c ON c.id = t.contact_id WHERE t.id = $1",
        &[&ticket.0],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("ticket {ticket}")))?;
    let first_sql = format!("{THREAD_SEEN_BY_CUSTOMER} ORDER BY id LIMIT 1");
    let first: Option<(i64, String)> = match row(db, &first_sql, &[&ticket.0]).await? {
        Some(r) => Some((col(&r, 0)?, col(&r, 1)?)),
        None => None,
    };
    let recent_sql = format!("{THREAD_SEEN_BY_CUSTOMER} ORDER BY id DESC LIMIT $2");
    let recent = i64::try_from(recent).unwrap_or(i64::MAX);
    let last: Vec<(i64, String)> = rows(db, &recent_sql, &[&ticket.0, &recent])
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
    let thread = crate::store::outbound::thread_ids(first, last);
    Ok(ReplyContext {
        ticket,
        subject: col(&head, 0)?,
        secret: col(&head, 4)?,
        channel: col(&head, 1)?,
        contact: ContactRef {
            email: col(&head, 2)?,
            name: col(&head, 3)?,
        },
        thread,
        participants: participants(db, ticket).await?,
    })
}

/// Open a ticket that starts with our own mail to `contact`, owned by
/// `owner` (SQLite: `sqlite/inbound.rs`, same rules).
pub(super) async fn open_outbound_ticket(
    db: &Db,
    o: &OutboundOpening,
    now: i64,
) -> Result<TicketId, StoreError> {
    let (t, owner, idempotency_key) = (&o.ticket, &o.owner, o.idempotency_key.as_deref());
    if let Some(key) = idempotency_key
        && let Some(r) = row(
            db,
            "SELECT ticket_id FROM compose_keys WHERE author = $1 AND key = $2",
            &[&owner, &key],
        )
        .await?
    {
        return Ok(TicketId(col(&r, 0)?));
    }
    let contact_id = super::inbound::upsert_contact(db, &o.contact, false).await?;
    let r = row(
        db,
        "INSERT INTO tickets (channel, contact_id, subject, pipeline, status, priority, properties, owner, created_at, updated_at, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
        &[&o.channel, &contact_id, &t.subject, &t.pipeline, &t.status, &t.priority, &t.properties, &owner, &now, &t.secret],
    )
    .await?
    .ok_or_else(|| StoreError::Failed("INSERT … RETURNING gave no row".into()))?;
    let id: i64 = col(&r, 0)?;
    if let Some(key) = idempotency_key {
        exec(
            db,
            "INSERT INTO compose_keys (author, key, ticket_id, created_at) VALUES ($1, $2, $3, $4)",
            &[&owner, &key, &id, &now],
        )
        .await?;
    }
    Ok(TicketId(id))
}

/// What a reply quotes (SQLite: `store/outbound.rs`, same rules): the
/// ticket's last inbound message of kind `normal`, with its raw mail when it
/// came by mail.
pub(super) async fn quote_source(
    db: &Db,
    ticket: TicketId,
) -> Result<Option<QuoteSource>, StoreError> {
    let r = row(
        db,
        "SELECT m.from_email, m.from_name, m.date,
                COALESCE(m.text, convert_from(substr(r.raw, (m.text_at + 1)::int), 'UTF8')),
                m.html, CASE WHEN s.source IN ('smtp', 'imap') THEN r.raw END
           FROM messages m
           LEFT JOIN spool s ON s.id = m.spool_id
           LEFT JOIN spool_raw r ON r.id = m.spool_id
          WHERE m.ticket_id = $1 AND m.direction = 'inbound'
            AND postdesk_json_kind(m.classification) = 'normal'
          ORDER BY m.id DESC LIMIT 1",
        &[&ticket.0],
    )
    .await?;
    let Some(r) = r else { return Ok(None) };
    Ok(Some(QuoteSource {
        from_email: col::<Option<String>>(&r, 0)?.unwrap_or_default(),
        from_name: col(&r, 1)?,
        date: col(&r, 2)?,
        text: col::<Option<String>>(&r, 3)?.unwrap_or_default(),
        html: col(&r, 4)?,
        raw: col(&r, 5)?,
    }))
}

/// The raw mail of a ticket's messages, newest first (SQLite:
/// `store/outbound.rs`): inbound as received, replies as sent.
pub(super) async fn ticket_raws(db: &Db, ticket: TicketId) -> Result<Vec<Vec<u8>>, StoreError> {
    rows(
        db,
        "SELECT COALESCE(
                    (SELECT r.raw FROM spool s JOIN spool_raw r ON r.id = s.id
                      WHERE s.id = m.spool_id AND s.source IN ('smtp', 'imap')),
                    (SELECT x.raw FROM outbox o JOIN outbox_raw x ON x.id = o.id
                      WHERE o.message_id = m.id))
           FROM messages m WHERE m.ticket_id = $1 AND m.direction <> 'note' ORDER BY m.id DESC",
        &[&ticket.0],
    )
    .await?
    .iter()
    .filter_map(|r| col::<Option<Vec<u8>>>(r, 0).transpose())
    .collect()
}
