//! The spool and applying ingest's plans in PostgreSQL: spool rows (raw
//! bytes as `bytea` in `spool_raw`), pending entries, and the write of
//! everything a message makes (contact, ticket, routing, message, bounce
//! link), in the caller's savepoint.
//!
//! Decisions are not made here: the rows they depend on are read inside
//! the transaction and [`thread::may_join`], [`dedupe::check`] and
//! [`route::choose_owner`] decide, exactly as for SQLite.

use std::collections::HashMap;

use super::sql::{Db, col, exec, json_vec, parse_json_vec, row, rows};
use super::tickets::touch;
use crate::ingest::{dedupe, route, thread};
use crate::store::{
    BodyText, ContactRef, Delivered, InboundMessage, InboundOutcome, InboundPlan, NewSpool,
    RoutingPlan, SpoolEntry, SpoolId, SpoolSource, StoreError, TicketId, now_ms,
};

/// Insert a spool row and its raw bytes (one statement); its id.
pub(super) async fn insert_spool(
    db: &Db,
    msg: &NewSpool,
    hash: &str,
    received_at: i64,
) -> Result<SpoolId, StoreError> {
    let r = row(
        db,
        "WITH s AS (
             INSERT INTO spool (received_at, source, mail_from, rcpt_to, client_ip, helo, tls,
                                channel, size, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id)
         INSERT INTO spool_raw (id, raw) SELECT id, $11 FROM s RETURNING id",
        &[
            &received_at,
            &msg.source.as_str(),
            &msg.mail_from,
            &json_vec(&msg.rcpt_to),
            &msg.client_ip,
            &msg.helo,
            &msg.tls,
            &msg.channel,
            &(msg.raw.len() as i64),
            &hash,
            &msg.raw,
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Failed("spool insert returned no id".into()))?;
    Ok(SpoolId(col(&r, 0)?))
}

pub(super) async fn pending_spool(
    db: &Db,
    after: SpoolId,
    limit: usize,
) -> Result<Vec<SpoolEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        db,
        "SELECT s.id, s.received_at, s.source, s.mail_from, s.rcpt_to, s.channel, r.raw,
                s.content_hash, s.client_ip, s.helo
         FROM spool s JOIN spool_raw r ON r.id = s.id
         WHERE s.state = 'pending' AND s.id > $1 ORDER BY s.id LIMIT $2",
        &[&after.0, &limit],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(SpoolEntry {
            id: SpoolId(col(r, 0)?),
            received_at: col(r, 1)?,
            source: SpoolSource::parse(col(r, 2)?),
            mail_from: col(r, 3)?,
            rcpt_to: parse_json_vec(col(r, 4)?),
            channel: col(r, 5)?,
            raw: col(r, 6)?,
            content_hash: col(r, 7)?,
            client_ip: col(r, 8)?,
            helo: col(r, 9)?,
        })
    })
    .collect()
}

pub(super) async fn fail_spool(db: &Db, id: SpoolId, reason: &str) -> Result<(), StoreError> {
    exec(
        db,
        "UPDATE spool SET state = 'failed', error = $1, attempts = attempts + 1, processed_at = $2
         WHERE id = $3 AND state = 'pending'",
        &[&reason, &now_ms(), &id.0],
    )
    .await?;
    Ok(())
}

pub(super) async fn raw(db: &Db, id: SpoolId) -> Result<Vec<u8>, StoreError> {
    match row(db, "SELECT raw FROM spool_raw WHERE id = $1", &[&id.0]).await? {
        Some(r) => col(&r, 0),
        None => Err(StoreError::NotFound(format!("spool entry {id}"))),
    }
}

/// A planned submission (web form, API): nothing if every message is a
/// retried copy; else its spool row and its effect, in the caller's savepoint.
pub(super) async fn submit(
    db: &Db,
    spool: NewSpool,
    hash: String,
    messages: Vec<InboundMessage>,
) -> Result<InboundOutcome, StoreError> {
    let mut replay = InboundOutcome::default();
    for m in &messages {
        if let Ok(dup) = duplicate(db, m).await? {
            replay.delivered.push(dup);
        }
    }
    if !messages.is_empty() && replay.delivered.len() == messages.len() {
        return Ok(replay);
    }
    let spool_id = insert_spool(db, &spool, &hash, now_ms()).await?;
    let plan = InboundPlan {
        spool_id,
        messages,
        dropped: None,
    };
    apply_inbound(db, &plan).await
}

/// Apply one plan (the caller's savepoint undoes it all on error).
pub(super) async fn apply_inbound(
    db: &Db,
    plan: &InboundPlan,
) -> Result<InboundOutcome, StoreError> {
    let mut out = InboundOutcome::default();
    // Done first, and only if still pending: an entry applied before (seen
    // twice, or before a crash lost the acknowledgement) changes nothing.
    let claimed = exec(
        db,
        "UPDATE spool SET state = 'done', error = $1, processed_at = $2
         WHERE id = $3 AND state = 'pending'",
        &[&plan.dropped, &now_ms(), &plan.spool_id.0],
    )
    .await?;
    if claimed == 0 || plan.dropped.is_some() {
        return Ok(out);
    }
    for m in &plan.messages {
        let own_key;
        let m = match duplicate(db, m).await? {
            Ok(dup) => {
                out.delivered.push(dup);
                continue;
            }
            Err(Some(key)) => {
                own_key = InboundMessage {
                    dedupe_key: key,
                    ..m.clone()
                };
                &own_key
            }
            Err(None) => m,
        };
        if let Some(d) = link_bounce(db, plan.spool_id, m).await? {
            out.delivered.push(d);
            continue;
        }
        let contact_id = upsert_contact(db, &m.contact, m.name_verified).await?;
        let (ticket, created, owner, note) = match find_thread(db, m).await? {
            Ok(t) => {
                exec(
                    db,
                    "INSERT INTO ticket_participants (ticket_id, contact_id)
                     SELECT id, $2 FROM tickets WHERE id = $1 AND contact_id <> $2
                     ON CONFLICT DO NOTHING",
                    &[&t, &contact_id],
                )
                .await?;
                touch(db, t, now_ms()).await?;
                (t, false, None, None)
            }
            Err(refused) => {
                let (t, owner) = create_ticket(db, m, contact_id).await?;
                (t, true, owner, refused)
            }
        };
        insert_message(db, ticket, plan.spool_id, m, note.as_deref()).await?;
        out.delivered.push(Delivered {
            channel: m.channel.clone(),
            ticket: TicketId(ticket),
            created,
            duplicate: false,
            owner,
        });
    }
    Ok(out)
}

/// Whether `m` copies a message its channel stores, as [`dedupe::check`]
/// decides over the rows under the keys it may ask about (read first: the
/// planned key and its `#from:` variant).
async fn duplicate(
    db: &Db,
    m: &InboundMessage,
) -> Result<Result<Delivered, Option<String>>, StoreError> {
    let keys = vec![
        m.dedupe_key.clone(),
        format!("{}#from:{}", m.dedupe_key, m.from.email),
    ];
    let found = rows(
        db,
        "SELECT m.dedupe_key, m.ticket_id, m.from_email, c.email FROM messages m
           JOIN tickets t ON t.id = m.ticket_id JOIN contacts c ON c.id = t.contact_id
          WHERE m.channel = $1 AND m.dedupe_key = ANY($2)",
        &[&m.channel, &keys],
    )
    .await?;
    let mut stored = HashMap::new();
    for r in &found {
        stored.insert(
            col::<String>(r, 0)?,
            dedupe::Stored {
                ticket: TicketId(col(r, 1)?),
                from: col(r, 2)?,
                contact: col(r, 3)?,
            },
        );
    }
    let incoming = dedupe::Incoming {
        key: &m.dedupe_key,
        from: &m.from.email,
        contact: &m.contact.email,
    };
    let verdict = dedupe::check(incoming, now_ms(), |key| {
        Ok::<_, StoreError>(stored.get(key).cloned())
    })?;
    Ok(match verdict {
        dedupe::Verdict::Copy(ticket) => Ok(Delivered {
            channel: m.channel.clone(),
            ticket,
            created: false,
            duplicate: true,
            owner: None,
        }),
        dedupe::Verdict::New(key) => Err(key),
    })
}

/// A bounce of our own reply joins that reply's ticket (no contact for the
/// mailer-daemon, no new ticket) and marks it failed when the report says so.
async fn link_bounce(
    db: &Db,
    spool: SpoolId,
    m: &InboundMessage,
) -> Result<Option<Delivered>, StoreError> {
    let Some(link) = &m.bounce else {
        return Ok(None);
    };
    let mut bounced = None;
    for id in link
        .candidates
        .iter()
        .take(crate::store::bounce::MAX_CANDIDATES)
    {
        let hit = row(
            db,
            "SELECT id, ticket_id FROM messages
              WHERE message_id = $1 AND channel = $2 AND direction = 'outbound'
              ORDER BY id DESC LIMIT 1",
            &[id, &m.channel],
        )
        .await?;
        if let Some(r) = hit {
            bounced = Some(crate::store::bounce::Bounced {
                row: col(&r, 0)?,
                ticket: col(&r, 1)?,
                message_id: id.clone(),
            });
            break;
        }
    }
    let Some(b) = bounced else {
        return Ok(None);
    };
    let noted = InboundMessage {
        classification: crate::store::bounce::classification_with(&m.classification, &b),
        ..m.clone()
    };
    insert_message(db, b.ticket, spool, &noted, None).await?;
    if link.failed {
        exec(
            db,
            "UPDATE messages SET delivery = 'failed', delivery_detail = $1 WHERE id = $2",
            &[&link.detail, &b.row],
        )
        .await?;
        exec(
            db,
            "UPDATE outbox SET state = 'failed', last_error = $1
              WHERE message_id = $2 AND state = 'queued'",
            &[&link.detail, &b.row],
        )
        .await?;
    }
    touch(db, b.ticket, now_ms()).await?;
    tracing::info!(
        ticket = b.ticket,
        message_id = %b.message_id,
        failed = link.failed,
        "bounce linked to its outbound message"
    );
    Ok(Some(Delivered {
        channel: m.channel.clone(),
        ticket: TicketId(b.ticket),
        created: false,
        duplicate: false,
        owner: None,
    }))
}

/// The contact's id, creating it. A stored name is replaced only by a name
/// from mail proven to be the contact's own (`verified`).
async fn upsert_contact(db: &Db, c: &ContactRef, verified: bool) -> Result<i64, StoreError> {
    let existing = row(
        db,
        "SELECT id, name FROM contacts WHERE email = $1",
        &[&c.email],
    )
    .await?;
    match existing {
        Some(r) => {
            let id: i64 = col(&r, 0)?;
            let stored: Option<String> = col(&r, 1)?;
            let stored = stored.as_deref().unwrap_or("");
            if let Some(n) = c.name.as_deref().filter(|n| !n.is_empty())
                && n != stored
                && (stored.is_empty() || verified)
            {
                exec(
                    db,
                    "UPDATE contacts SET name = $1 WHERE id = $2",
                    &[&n, &id],
                )
                .await?;
            }
            Ok(id)
        }
        None => {
            let r = row(
                db,
                "INSERT INTO contacts (email, name, created_at) VALUES ($1, $2, $3) RETURNING id",
                &[&c.email, &c.name, &now_ms()],
            )
            .await?
            .ok_or_else(|| StoreError::Failed("contact insert returned no id".into()))?;
            col(&r, 0)
        }
    }
}

/// Messages of `$2` (channel) with Message-ID `$1`: inbound by dedupe key
/// (and the `#from:` copies of another sender's reuse), outbound by their
/// own index; most recent first.
const BY_MESSAGE_ID: &str = "SELECT ticket_id, direction FROM (
       SELECT id, ticket_id, direction FROM messages
        WHERE channel = $2 AND dedupe_key = 'mid:' || $1
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE channel = $2 AND dedupe_key > 'mid:' || $1 || '#from:'
          AND dedupe_key < 'mid:' || $1 || '#from;'
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE message_id = $1 AND channel = $2 AND direction = 'outbound') x
     ORDER BY id DESC LIMIT 8";

/// What [`thread::may_join`] needs to know of ticket `t` (of `channel`).
async fn candidate(
    db: &Db,
    t: i64,
    channel: &str,
    found: impl FnOnce(&str) -> thread::Found,
) -> Result<Option<thread::Candidate>, StoreError> {
    let head = row(
        db,
        "SELECT c.email, t.secret FROM tickets t JOIN contacts c ON c.id = t.contact_id
         WHERE t.id = $1 AND t.channel = $2",
        &[&t, &channel],
    )
    .await?;
    let Some(head) = head else {
        return Ok(None);
    };
    let contact: String = col(&head, 0)?;
    let secret: &str = col(&head, 1)?;
    let mut participants = rows(
        db,
        "SELECT c.email FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
         WHERE p.ticket_id = $1",
        &[&t],
    )
    .await?
    .iter()
    .map(|r| col::<String>(r, 0))
    .collect::<Result<Vec<_>, _>>()?;
    // Whom the contact addressed (To/Cc of their own messages).
    let addressed = rows(
        db,
        "SELECT to_addrs, cc_addrs FROM messages
          WHERE ticket_id = $1 AND direction = 'inbound' AND from_email = $2",
        &[&t, &contact],
    )
    .await?;
    for r in &addressed {
        for i in 0..2 {
            if let Some(list) = col::<Option<&str>>(r, i)? {
                participants.extend(parse_json_vec(list));
            }
        }
    }
    Ok(Some(thread::Candidate {
        ticket: t,
        found: found(secret),
        contact,
        participants,
    }))
}

/// The ticket a message continues (In-Reply-To/References, then its
/// subject tag, then its plus-address; same channel; only where
/// [`thread::may_join`] allows). `Err`: none, with the first refusal.
async fn find_thread(
    db: &Db,
    m: &InboundMessage,
) -> Result<Result<i64, Option<String>>, StoreError> {
    let asker = thread::Asker {
        contact: m.thread_identity.as_deref(),
        trusted: m.trusted_sender,
    };
    let mut refused: Option<String> = None;
    let mut consider = |c: Option<thread::Candidate>| -> Option<i64> {
        let c = c?;
        match thread::may_join(&c, asker) {
            Ok(()) => Some(c.ticket),
            Err(why) => {
                refused.get_or_insert(why);
                None
            }
        }
    };
    for id in m.in_reply_to.iter().chain(m.references.iter().rev()) {
        let hits = rows(db, BY_MESSAGE_ID, &[id, &m.channel]).await?;
        for r in &hits {
            let t: i64 = col(r, 0)?;
            let found = if col::<&str>(r, 1)? == "outbound" {
                thread::Found::OurMessageId
            } else {
                thread::Found::TheirMessageId
            };
            if let Some(t) = consider(candidate(db, t, &m.channel, |_| found).await?) {
                return Ok(Ok(t));
            }
        }
    }
    if let Some(tok) = &m.thread_token {
        let c = candidate(db, tok.ticket.0, &m.channel, |secret| thread::Found::Tag {
            secret_matches: !secret.is_empty() && tok.secret.as_deref() == Some(secret),
        })
        .await?;
        if let Some(t) = consider(c) {
            return Ok(Ok(t));
        }
    }
    if let Some(TicketId(n)) = m.plus_token {
        let c = candidate(db, n, &m.channel, |_| thread::Found::PlusAddress).await?;
        if let Some(t) = consider(c) {
            return Ok(Ok(t));
        }
    }
    Ok(Err(refused))
}

/// Ticket statuses that do not count as open for balancing.
const CLOSED_STATUSES: &str = "('closed', 'resolved', 'solved')";

/// Choose a new ticket's owner: read what [`route::choose_owner`] needs,
/// ask it, record a balancing assignment. (owner, reason when unassigned).
async fn assign_owner(
    db: &Db,
    plan: &RoutingPlan,
    contact_id: i64,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let mut loads = Vec::new();
    let mut contact_owner: Option<String> = None;
    match plan {
        RoutingPlan::Unassigned { .. } => {}
        RoutingPlan::Balance { users, .. } => {
            let open_sql = format!(
                "SELECT COUNT(*) FROM tickets
                  WHERE owner = $1 AND COALESCE(status, '') NOT IN {CLOSED_STATUSES}"
            );
            for u in users {
                let open: i64 = match row(db, &open_sql, &[u]).await? {
                    Some(r) => col(&r, 0)?,
                    None => 0,
                };
                let last_assigned = match row(
                    db,
                    "SELECT last_assigned_seq FROM user_state WHERE id = $1",
                    &[u],
                )
                .await?
                {
                    Some(r) => col::<Option<i64>>(&r, 0)?.unwrap_or(0),
                    None => 0,
                };
                loads.push(route::UserLoad {
                    user: u.clone(),
                    open,
                    last_assigned,
                });
            }
        }
        RoutingPlan::ContactOwner { .. } => {
            if let Some(r) = row(
                db,
                "SELECT owner FROM contacts WHERE id = $1",
                &[&contact_id],
            )
            .await?
            {
                contact_owner = col(&r, 0)?;
            }
        }
    }
    let choice = route::choose_owner(plan, &loads, contact_owner.as_deref());
    if let (true, Some(u)) = (choice.record_assignment, &choice.owner) {
        exec(
            db,
            "INSERT INTO user_state (id, last_assigned_seq)
             VALUES ($1, (SELECT COALESCE(MAX(last_assigned_seq), 0) + 1 FROM user_state))
             ON CONFLICT (id) DO UPDATE SET last_assigned_seq = excluded.last_assigned_seq",
            &[u],
        )
        .await?;
    }
    Ok((choice.owner, choice.unassigned_reason))
}

async fn create_ticket(
    db: &Db,
    m: &InboundMessage,
    contact_id: i64,
) -> Result<(i64, Option<String>), StoreError> {
    let t = &m.new_ticket;
    let (owner, reason) = assign_owner(db, &t.routing, contact_id).await?;
    let now = now_ms();
    let r = row(
        db,
        "INSERT INTO tickets (channel, contact_id, subject, pipeline, status, priority, properties,
                              owner, unassigned_reason, created_at, updated_at, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING id",
        &[
            &m.channel,
            &contact_id,
            &t.subject,
            &t.pipeline,
            &t.status,
            &t.priority,
            &t.properties,
            &owner,
            &reason,
            &now,
            &t.secret,
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Failed("ticket insert returned no id".into()))?;
    Ok((col(&r, 0)?, owner))
}

async fn insert_message(
    db: &Db,
    ticket: i64,
    spool: SpoolId,
    m: &InboundMessage,
    thread_note: Option<&str>,
) -> Result<(), StoreError> {
    let (text, text_at) = match &m.text {
        BodyText::Inline(t) => (Some(t.as_str()), None),
        BodyText::RawFrom(at) => (None, Some(*at as i64)),
    };
    let cc = (!m.cc.is_empty()).then(|| json_vec(&m.cc));
    let now = now_ms();
    exec(
        db,
        "INSERT INTO messages (ticket_id, channel, direction, spool_id, dedupe_key, message_id,
                               in_reply_to, refs, from_email, from_name, to_addrs, subject, date,
                               text, text_at, html, classification, sender_resolution, created_at,
                               thread_note, cc_addrs)
         VALUES ($1, $2, 'inbound', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19, $20)",
        &[
            &ticket,
            &m.channel,
            &spool.0,
            &m.dedupe_key,
            &m.message_id,
            &m.in_reply_to,
            &m.references.join(" "),
            &m.from.email,
            &m.from.name,
            &json_vec(&m.to),
            &m.subject,
            &m.date,
            &text,
            &text_at,
            &m.html,
            &m.classification,
            &m.sender_resolution,
            &now,
            &thread_note,
            &cc,
        ],
    )
    .await?;
    if let Some(note) = &m.note {
        exec(
            db,
            "INSERT INTO messages (ticket_id, channel, direction, from_email, from_name, subject,
                                   text, created_at)
             VALUES ($1, $2, 'note', $3, $4, $5, $6, $7)",
            &[
                &ticket,
                &m.channel,
                &note.from.email,
                &note.from.name,
                &m.subject,
                &note.text,
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}
