//! The SQLite side of applying inbound mail: the facts ingest's decisions
//! read ([`InboundFacts`] over the writer's connection) and the writes of
//! each [`Decision`] — inside the writer's group transaction, one savepoint
//! per plan.
//!
//! Must not: decide. Which ticket, which key, which owner, whether a bounce
//! fails a reply: all come from the [`Decide`] function the caller passes
//! (`ingest::decide::decide`); this module only reads and writes rows.

use rusqlite::{Connection, OptionalExtension, params};

use super::{insert_spool, json_vec, now_ms, parse_json_vec};
use crate::store::queries::CLOSED_STATUSES;
use crate::store::*;

/// The messages of `channel` (`?2`) that Message-ID `?1` names, most recent
/// first: inbound ones by their dedupe key, outbound ones by their own
/// index (see migration 4). Answers (ticket, direction).
/// Also the copies another sender's reuse of the Message-ID pushed to keys of
/// their own (`mid:<id>#from:<address>`, a range of the same index), most
/// recent first: a follow-up is not lost to whoever used the id first.
pub(crate) const BY_MESSAGE_ID: &str = "SELECT ticket_id, direction FROM (
       SELECT id, ticket_id, direction FROM messages WHERE channel = ?2 AND dedupe_key = 'mid:' || ?1
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE channel = ?2 AND dedupe_key > 'mid:' || ?1 || '#from:'
          AND dedupe_key < 'mid:' || ?1 || '#from;'
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE message_id = ?1 AND channel = ?2 AND direction = 'outbound')
     ORDER BY id DESC LIMIT 8";

/// The message of channel `?2` stored under dedupe key `?1`, with its
/// ticket's contact.
pub(crate) const KEYED: &str = "SELECT m.ticket_id, m.from_email, c.email FROM messages m
       JOIN tickets t ON t.id = m.ticket_id JOIN contacts c ON c.id = t.contact_id
      WHERE m.channel = ?2 AND m.dedupe_key = ?1";

/// [`InboundFacts`] read on the writer's connection, inside the transaction
/// that writes the decision.
struct Facts<'c>(&'c Connection);

impl InboundFacts for Facts<'_> {
    fn keyed(&mut self, channel: &str, key: &str) -> Result<Option<KeyedMessage>, StoreError> {
        Ok(self
            .0
            .prepare_cached(KEYED)?
            .query_row(params![key, channel], |r| {
                Ok(KeyedMessage {
                    ticket: TicketId(r.get(0)?),
                    from: r.get(1)?,
                    contact: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn outbound(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<OutboundRef>, StoreError> {
        Ok(self
            .0
            .prepare_cached(crate::store::bounce::FIND_OUTBOUND)?
            .query_row(params![message_id, channel], |r| {
                Ok(OutboundRef {
                    row: r.get(0)?,
                    ticket: TicketId(r.get(1)?),
                    message_id: message_id.to_string(),
                })
            })
            .optional()?)
    }

    fn by_message_id(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Vec<MessageHit>, StoreError> {
        Ok(self
            .0
            .prepare_cached(BY_MESSAGE_ID)?
            .query_map(params![message_id, channel], |r| {
                Ok(MessageHit {
                    ticket: TicketId(r.get(0)?),
                    outbound: r.get::<_, String>(1)? == "outbound",
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn ticket_people(
        &mut self,
        channel: &str,
        ticket: TicketId,
    ) -> Result<Option<TicketPeople>, StoreError> {
        let conn = self.0;
        let row: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT c.email, t.secret FROM tickets t JOIN contacts c ON c.id = t.contact_id
                 WHERE t.id = ?1 AND t.channel = ?2",
            )?
            .query_row(params![ticket.0, channel], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((contact, secret)) = row else {
            return Ok(None);
        };
        let mut participants = conn
            .prepare_cached(
                "SELECT c.email FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
                 WHERE p.ticket_id = ?1",
            )?
            .query_map([ticket.0], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        // Whom the contact addressed (To/Cc of their own messages).
        let mut addressed = conn.prepare_cached(
            "SELECT to_addrs, cc_addrs FROM messages
              WHERE ticket_id = ?1 AND direction = 'inbound' AND from_email = ?2",
        )?;
        let rows = addressed.query_map(params![ticket.0, contact], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?;
        for row in rows {
            let (to, cc) = row?;
            for list in [to, cc].into_iter().flatten() {
                participants.extend(parse_json_vec(&list));
            }
        }
        Ok(Some(TicketPeople {
            contact,
            secret,
            participants,
        }))
    }

    fn user_load(&mut self, user: &str) -> Result<UserLoad, StoreError> {
        let open: i64 = self
            .0
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM tickets WHERE owner = ?1 AND COALESCE(status, '') NOT IN {CLOSED_STATUSES}"
            ))?
            .query_row([user], |r| r.get(0))?;
        let last_assigned = self
            .0
            .prepare_cached("SELECT last_assigned_seq FROM user_state WHERE id = ?1")?
            .query_row([user], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten()
            .unwrap_or(0);
        Ok(UserLoad {
            user: user.to_string(),
            open,
            last_assigned,
        })
    }

    fn contact_owner(&mut self, email: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT owner FROM contacts WHERE email = ?1")?
            .query_row([email], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }
}

/// A plan whose messages' sender resolutions are already serialised, on
/// the caller's task: the one writer thread only decides and writes (a
/// forward's resolution carries the customer's whole message).
pub(super) struct Ready {
    plan: InboundPlan,
    resolutions: Vec<String>,
}

impl Ready {
    pub(super) fn new(plan: InboundPlan) -> Result<Self, StoreError> {
        let resolutions = plan
            .messages
            .iter()
            .map(|m| {
                serde_json::to_string(&m.sender_resolution)
                    .map_err(|e| StoreError::Invalid(format!("sender resolution: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Ready { plan, resolutions })
    }
}

/// Apply one plan: claim its spool entry (only while still pending: an
/// entry already applied changes nothing), then decide and write each
/// message in turn. The caller's savepoint undoes everything on error.
pub(super) fn apply_plan(
    conn: &Connection,
    ready: &Ready,
    decide: Decide,
) -> Result<InboundOutcome, StoreError> {
    let plan = &ready.plan;
    let mut out = InboundOutcome::default();
    let claimed = conn
        .prepare_cached(
            "UPDATE spool SET state = 'done', error = ?1, processed_at = ?2
             WHERE id = ?3 AND state = 'pending'",
        )?
        .execute(params![plan.dropped, now_ms(), plan.spool_id.0])?;
    if claimed == 0 || plan.dropped.is_some() {
        return Ok(out);
    }
    for (m, resolution) in plan.messages.iter().zip(&ready.resolutions) {
        let decision = decide(m, now_ms(), &mut Facts(conn))?;
        out.delivered
            .push(write(conn, plan.spool_id, m, resolution, decision)?);
    }
    Ok(out)
}

/// Apply a submission: unless `decide` finds every message a copy (a
/// retried submission: answered with the copies, nothing written), its
/// spool row and its plan.
pub(super) fn submit(
    conn: &Connection,
    spool: &NewSpool,
    hash: &str,
    mut ready: Ready,
    decide: Decide,
) -> Result<InboundOutcome, StoreError> {
    let messages = &ready.plan.messages;
    let mut replay = InboundOutcome::default();
    for m in messages {
        if let Decision::Duplicate(ticket) = decide(m, now_ms(), &mut Facts(conn))? {
            replay.delivered.push(Delivered::duplicate(m, ticket));
        }
    }
    if !messages.is_empty() && replay.delivered.len() == messages.len() {
        return Ok(replay);
    }
    ready.plan.spool_id = insert_spool(conn, spool, hash, now_ms())?;
    apply_plan(conn, &ready, decide)
}

/// Write `decision` for `m`.
fn write(
    conn: &Connection,
    spool: SpoolId,
    m: &InboundMessage,
    resolution: &str,
    decision: Decision,
) -> Result<Delivered, StoreError> {
    Ok(match decision {
        Decision::Duplicate(ticket) => Delivered::duplicate(m, ticket),
        // A bounce of our own reply joins that reply's ticket: no contact
        // for the mailer-daemon, no new ticket.
        Decision::Bounce {
            key,
            outbound,
            fail,
        } => {
            let row = Row {
                key: key.as_deref(),
                resolution,
                bounced: Some(&outbound.message_id),
                thread_note: None,
            };
            insert_message(conn, outbound.ticket, spool, m, row)?;
            crate::store::bounce::record(conn, &outbound, fail.as_deref(), now_ms())?;
            Delivered::joined(m, outbound.ticket)
        }
        Decision::Join { key, ticket } => {
            let contact_id = upsert_contact(conn, &m.contact, m.name_verified)?;
            conn.prepare_cached(
                "INSERT OR IGNORE INTO ticket_participants (ticket_id, contact_id)
                 SELECT id, ?2 FROM tickets WHERE id = ?1 AND contact_id != ?2",
            )?
            .execute(params![ticket.0, contact_id])?;
            conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
                .execute(params![now_ms(), ticket.0])?;
            let row = Row {
                key: key.as_deref(),
                resolution,
                bounced: None,
                thread_note: None,
            };
            insert_message(conn, ticket, spool, m, row)?;
            Delivered::joined(m, ticket)
        }
        Decision::Open {
            key,
            owner,
            thread_note,
        } => {
            let contact_id = upsert_contact(conn, &m.contact, m.name_verified)?;
            let ticket = create_ticket(conn, m, contact_id, &owner)?;
            let row = Row {
                key: key.as_deref(),
                resolution,
                bounced: None,
                thread_note: thread_note.as_deref(),
            };
            insert_message(conn, ticket, spool, m, row)?;
            Delivered::opened(m, ticket, owner.owner)
        }
    })
}

/// The contact's id, creating it. A stored name is replaced only by a name
/// from mail proven to be the contact's own (`verified`); other mail may
/// only fill in a missing one — a forged From must not rename a customer.
fn upsert_contact(conn: &Connection, c: &ContactRef, verified: bool) -> Result<i64, StoreError> {
    let existing: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT id, name FROM contacts WHERE email = ?1")?
        .query_row([&c.email], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match existing {
        Some((id, name)) => {
            let stored = name.as_deref().unwrap_or("");
            if let Some(n) = c.name.as_deref().filter(|n| !n.is_empty())
                && n != stored
                && (stored.is_empty() || verified)
            {
                conn.prepare_cached("UPDATE contacts SET name = ?1 WHERE id = ?2")?
                    .execute(params![n, id])?;
            }
            Ok(id)
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO contacts (email, name, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![c.email, c.name, now_ms()])?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// Insert the ticket `m` opens, owned as `owner` says (recording a balancing
/// assignment: the user's `last_assigned_seq` becomes the highest + 1).
fn create_ticket(
    conn: &Connection,
    m: &InboundMessage,
    contact_id: i64,
    owner: &OwnerChoice,
) -> Result<TicketId, StoreError> {
    if let (true, Some(u)) = (owner.record_assignment, &owner.owner) {
        conn.prepare_cached(
            "INSERT INTO user_state (id, last_assigned_seq)
             VALUES (?1, (SELECT COALESCE(MAX(last_assigned_seq), 0) + 1 FROM user_state))
             ON CONFLICT(id) DO UPDATE SET last_assigned_seq = excluded.last_assigned_seq",
        )?
        .execute([u])?;
    }
    let t = &m.new_ticket;
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO tickets (channel, contact_id, subject, pipeline, status, priority, properties, owner, unassigned_reason, created_at, updated_at, secret, routed_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
    )?
    .execute(params![m.channel, contact_id, t.subject, t.pipeline, t.status, t.priority, t.properties, owner.owner, owner.unassigned_reason, now, t.secret, t.routed_by])?;
    Ok(TicketId(conn.last_insert_rowid()))
}

/// What a message row takes from its decision.
struct Row<'a> {
    /// The dedupe key, when not the planned one.
    key: Option<&'a str>,
    /// The sender resolution, serialised.
    resolution: &'a str,
    /// The Message-ID of our outbound message this bounce reports on.
    bounced: Option<&'a str>,
    thread_note: Option<&'a str>,
}

/// Insert `m` on `ticket` (and the forwarder's note after it). Its
/// classification is serialised here, once (a linked bounce's notes the
/// outbound Message-ID).
fn insert_message(
    conn: &Connection,
    ticket: TicketId,
    spool: SpoolId,
    m: &InboundMessage,
    row: Row<'_>,
) -> Result<(), StoreError> {
    let (text, text_at) = match &m.text {
        BodyText::Inline(t) => (Some(t.as_str()), None),
        BodyText::RawFrom(at) => (None, Some(*at as i64)),
    };
    let classification = serde_json::to_string(&StoredClassification {
        class: &m.classification,
        bounced_message_id: row.bounced,
    })
    .map_err(|e| StoreError::Invalid(format!("classification: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO messages (ticket_id, channel, direction, spool_id, dedupe_key, message_id, in_reply_to, refs,
                               from_email, from_name, to_addrs, subject, date, text, text_at, html,
                               classification, sender_resolution, created_at, thread_note, cc_addrs)
         VALUES (?1, ?2, 'inbound', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        ticket.0,
        m.channel,
        spool.0,
        row.key.unwrap_or(&m.dedupe_key),
        m.message_id,
        m.in_reply_to,
        m.references.join(" "),
        m.from.email,
        m.from.name,
        json_vec(&m.to),
        m.subject,
        m.date,
        text,
        text_at,
        m.html,
        classification,
        row.resolution,
        now_ms(),
        row.thread_note,
        (!m.cc.is_empty()).then(|| json_vec(&m.cc))
    ])?;
    if let Some(note) = &m.note {
        conn.prepare_cached(
            "INSERT INTO messages (ticket_id, channel, direction, from_email, from_name, subject, text, created_at)
             VALUES (?1, ?2, 'note', ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            ticket.0,
            m.channel,
            note.from.email,
            note.from.name,
            m.subject,
            note.text,
            now_ms()
        ])?;
    }
    Ok(())
}

/// Open a ticket that starts with our own mail to `contact` (a new email
/// composed by `owner`, who owns it): the contact is created if new, and
/// its stored name is only filled in, never replaced.
pub(super) fn open_outbound_ticket(
    conn: &Connection,
    o: &OutboundOpening,
    now: i64,
) -> Result<TicketId, StoreError> {
    let (t, owner, idempotency_key) = (&o.ticket, &o.owner, o.idempotency_key.as_deref());
    if let Some(key) = idempotency_key {
        let earlier: Option<i64> = conn
            .prepare_cached("SELECT ticket_id FROM compose_keys WHERE author = ?1 AND key = ?2")?
            .query_row(params![owner, key], |r| r.get(0))
            .optional()?;
        if let Some(id) = earlier {
            return Ok(TicketId(id));
        }
    }
    let contact_id = upsert_contact(conn, &o.contact, false)?;
    conn.prepare_cached(
        "INSERT INTO tickets (channel, contact_id, subject, pipeline, status, priority, properties, owner, created_at, updated_at, secret)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
    )?
    .execute(params![o.channel, contact_id, t.subject, t.pipeline, t.status, t.priority, t.properties, owner, now, t.secret])?;
    let id = conn.last_insert_rowid();
    if let Some(key) = idempotency_key {
        conn.prepare_cached(
            "INSERT INTO compose_keys (author, key, ticket_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![owner, key, id, now])?;
    }
    Ok(TicketId(id))
}
