//! The outbox in PostgreSQL: a reply's message row and outbox row written
//! by one function (one savepoint: both or neither), due entries, attempts,
//! flush — as `store/outbound.rs` does for SQLite, same rules (the
//! idempotency key is the message's dedupe key, unique per channel) — and,
//! for nodes sharing the store, claims: a node's sender takes due entries
//! with a claim (node, expiry) that keeps the others off them until it
//! expires or the attempt is recorded.

use super::lease::NOW_MS;
use super::listen;
use super::sql::{Db, col, exec, json_vec, parse_json_vec, row, rows};
use super::tickets::ticket_channel;
use crate::store::{
    AttemptOutcome, Delivery, EarlierReply, NewNotice, NewReply, OutboxClaim, OutboxId, OutboxItem,
    QueuedReply, Replay, StoreError, TicketId,
};

pub(super) async fn queue_reply(
    db: &Db,
    r: &NewReply,
    replay: Replay,
    now: i64,
) -> Result<QueuedReply, StoreError> {
    let channel = ticket_channel(db, r.ticket).await?;
    if channel != r.channel {
        return Err(StoreError::Invalid(format!(
            "ticket {} is on channel {channel}, not {}",
            r.ticket, r.channel
        )));
    }
    // The reply stored under the key, read in this transaction; `replay`
    // decides what this request gets.
    let earlier = match r.replayable {
        false => None,
        true => match row(
            db,
            "SELECT o.id, m.message_id, m.delivery, m.ticket_id
               FROM messages m JOIN outbox o ON o.message_id = m.id
              WHERE m.channel = $1 AND m.dedupe_key = $2",
            &[&r.channel, &r.dedupe_key],
        )
        .await?
        {
            Some(e) => Some(EarlierReply {
                outbox_id: OutboxId(col(&e, 0)?),
                message_id: col(&e, 1)?,
                delivery: match col::<Option<&str>>(&e, 2)? {
                    Some("sent") => Delivery::Sent,
                    Some("failed") => Delivery::Failed,
                    _ => Delivery::Queued,
                },
                ticket: TicketId(col(&e, 3)?),
            }),
            None => None,
        },
    };
    if let Some(answer) = replay(r, earlier)? {
        return Ok(answer);
    }
    let rcpt: Vec<String> = r.to.iter().chain(r.cc.iter()).cloned().collect();
    let message_row: i64 = match row(
        db,
        "INSERT INTO messages (ticket_id, channel, direction, dedupe_key, message_id, in_reply_to, refs,
                               from_email, from_name, to_addrs, subject, date, text, html, author,
                               delivery, created_at)
         VALUES ($1, $2, 'outbound', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'queued', $15)
         RETURNING id",
        &[
            &r.ticket.0,
            &r.channel,
            &r.dedupe_key,
            &r.message_id,
            &r.in_reply_to,
            &r.references.join(" "),
            &r.from_email,
            &r.from_name,
            &json_vec(&r.to),
            &r.subject,
            &r.date,
            &r.text,
            &r.html,
            &r.author,
            &now,
        ],
    )
    .await?
    {
        Some(row) => col(&row, 0)?,
        None => return Err(StoreError::Failed("insert returned no id".into())),
    };
    let outbox_id: i64 = match row(
        db,
        "WITH o AS (
             INSERT INTO outbox (message_id, channel, mail_from, rcpt_to, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id)
         INSERT INTO outbox_raw (id, raw) SELECT id, $6 FROM o RETURNING id",
        &[
            &message_row,
            &r.channel,
            &r.from_email,
            &json_vec(&rcpt),
            &now,
            &r.raw,
        ],
    )
    .await?
    {
        Some(row) => col(&row, 0)?,
        None => return Err(StoreError::Failed("insert returned no id".into())),
    };
    exec(
        db,
        "UPDATE tickets SET updated_at = $1 WHERE id = $2",
        &[&now, &r.ticket.0],
    )
    .await?;
    listen::notify(db, listen::OUTBOX).await?;
    Ok(QueuedReply {
        ticket: r.ticket,
        outbox_id: OutboxId(outbox_id),
        message_id: r.message_id.clone(),
        delivery: Delivery::Queued,
        replayed: false,
    })
}

/// Insert a notice's outbox row (no message row: it belongs to no ticket).
pub(super) async fn queue_notice(db: &Db, n: &NewNotice, now: i64) -> Result<OutboxId, StoreError> {
    match row(
        db,
        "WITH o AS (
             INSERT INTO outbox (message_id, notice, channel, mail_from, rcpt_to, next_attempt_at, created_at)
             VALUES (NULL, $1, '', $2, $3, $4, $4) RETURNING id)
         INSERT INTO outbox_raw (id, raw) SELECT id, $5 FROM o RETURNING id",
        &[&n.kind, &n.mail_from, &json_vec(&n.rcpt_to), &now, &n.raw],
    )
    .await?
    {
        Some(r) => {
            listen::notify(db, listen::OUTBOX).await?;
            Ok(OutboxId(col(&r, 0)?))
        }
        None => Err(StoreError::Failed("insert returned no id".into())),
    }
}

/// The install's notice key (hex), made once by schema step 12.
pub(super) async fn notice_key(db: &Db) -> Result<String, StoreError> {
    match row(
        db,
        "SELECT value FROM install_secrets WHERE name = 'notice_key'",
        &[],
    )
    .await?
    {
        Some(r) => col(&r, 0),
        None => Err(StoreError::Schema(
            "install_secrets has no notice_key".into(),
        )),
    }
}

/// Claim up to `limit` entries due at `now` for `claim`'s node, oldest
/// first, in one statement: rows another node is claiming right now are
/// skipped (`SKIP LOCKED`), rows whose claim is live are not due. The
/// claim's expiry is by the database's clock.
pub(super) async fn claim_due(
    db: &Db,
    claim: &OutboxClaim,
    now: i64,
    limit: usize,
) -> Result<Vec<OutboxItem>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "WITH due AS (
             SELECT id FROM outbox
              WHERE state = 'queued' AND next_attempt_at <= $1
                AND (claimed_until IS NULL OR claimed_until <= {NOW_MS})
              ORDER BY next_attempt_at, id LIMIT $2
              FOR UPDATE SKIP LOCKED)
         UPDATE outbox o SET claimed_by = $3, claimed_until = {NOW_MS} + $4
           FROM due, outbox_raw r
          WHERE o.id = due.id AND r.id = o.id
         RETURNING o.id, o.channel, o.mail_from, o.rcpt_to, r.raw, o.attempts, o.created_at,
                   o.next_attempt_at"
    );
    let mut items = rows(
        db,
        &sql,
        &[&now, &limit, &claim.node, &claim.lease_ms.max(0)],
    )
    .await?
    .iter()
    .map(|r| {
        let item = OutboxItem {
            id: OutboxId(col(r, 0)?),
            channel: col(r, 1)?,
            mail_from: col(r, 2)?,
            rcpt_to: parse_json_vec(col(r, 3)?),
            raw: col(r, 4)?,
            attempts: i64::from(col::<i32>(r, 5)?),
            created_at: col(r, 6)?,
        };
        Ok((col::<i64>(r, 7)?, item))
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    items.sort_by_key(|(due, item)| (*due, item.id.0));
    Ok(items.into_iter().map(|(_, item)| item).collect())
}

/// Extend (or, with a lease of 0, give up) the node's claims on `ids`.
pub(super) async fn extend_claims(
    db: &Db,
    claim: &OutboxClaim,
    ids: &[OutboxId],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
    let sql = format!(
        "UPDATE outbox SET claimed_until = {NOW_MS} + $1
          WHERE id = ANY($2) AND claimed_by = $3 AND state = 'queued'"
    );
    exec(db, &sql, &[&claim.lease_ms.max(0), &ids, &claim.node]).await?;
    Ok(())
}

pub(super) async fn next_due(db: &Db) -> Result<Option<i64>, StoreError> {
    match row(
        db,
        "SELECT MIN(GREATEST(next_attempt_at, claimed_until)) FROM outbox WHERE state = 'queued'",
        &[],
    )
    .await?
    {
        Some(r) => col(&r, 0),
        None => Ok(None),
    }
}

pub(super) async fn record_attempt(
    db: &Db,
    id: OutboxId,
    outcome: &AttemptOutcome,
    now: i64,
) -> Result<(), StoreError> {
    let (state, detail, next) = outcome.as_row();
    let sent_at = (state == Delivery::Sent).then_some(now);
    let changed = exec(
        db,
        "UPDATE outbox SET state = $1, attempts = attempts + 1, last_error = $2,
                next_attempt_at = COALESCE($3, next_attempt_at),
                sent_at = COALESCE($4, sent_at), claimed_by = NULL, claimed_until = NULL
         WHERE id = $5 AND state = 'queued'",
        &[&state.as_str(), &detail, &next, &sent_at, &id.0],
    )
    .await?;
    if changed == 0 {
        return Err(StoreError::Invalid(format!(
            "outbox entry {id} is not queued"
        )));
    }
    exec(
        db,
        "UPDATE messages SET delivery = $1, delivery_detail = $2
         WHERE id = (SELECT message_id FROM outbox WHERE id = $3)",
        &[&state.as_str(), &detail, &id.0],
    )
    .await?;
    Ok(())
}

pub(super) async fn flush_outbox(db: &Db, now: i64) -> Result<usize, StoreError> {
    let n = exec(
        db,
        "UPDATE outbox SET next_attempt_at = $1 WHERE state = 'queued'",
        &[&now],
    )
    .await?;
    listen::notify(db, listen::OUTBOX).await?;
    Ok(n as usize)
}
