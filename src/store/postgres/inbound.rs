//! The spool and applying ingest's decisions in PostgreSQL: spool rows
//! (raw bytes as `bytea` in `spool_raw`), pending entries, the facts the
//! decisions read and the write of each [`Decision`] (contact, ticket,
//! routing, message, bounce marks), in the caller's savepoint.
//!
//! Must not: decide. The [`Decide`] function the caller passes
//! (`ingest::decide::decide`) reads [`InboundFacts`] synchronously;
//! PostgreSQL answers asynchronously, so it runs through [`decide_async`]:
//! each fact it asks for is read here, in this transaction, and it decides
//! again over the facts read so far.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;

use tokio_postgres::types::ToSql;

use super::pg_err;
use super::sql::{BoxFut, Db, col, exec, json_vec, parse_json_vec, row, rows, send, send_if};
use crate::store::queries::CLOSED_STATUSES;
use crate::store::{
    BodyText, ContactRef, Decide, Decision, Delivered, FactAnswer, FactQuery, InboundMessage,
    InboundOutcome, InboundPlan, KeyedMessage, MessageHit, NewSpool, OutboundRef, OwnerChoice,
    SpoolId, StoreError, StoredClassification, TicketId, TicketPeople, UserLoad, decide_async,
    now_ms,
};

/// Insert a spool row and its raw bytes (one statement), unclaimed: any
/// node's scan may take it. Its id.
pub(super) async fn insert_spool(
    db: &Db,
    msg: &NewSpool,
    hash: &str,
    received_at: i64,
) -> Result<SpoolId, StoreError> {
    insert_claimed_spool(db, msg, hash, received_at, None).await
}

/// Insert a spool row and its raw bytes (one statement), claimed by
/// `claim` (node id, until) when given; its id.
pub(super) async fn insert_claimed_spool(
    db: &Db,
    msg: &NewSpool,
    hash: &str,
    received_at: i64,
    claim: Option<(&str, i64)>,
) -> Result<SpoolId, StoreError> {
    let row = SpoolInsert {
        msg,
        hash,
        received_at,
        claim,
    };
    insert_spools(db, &[row])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Failed("spool insert returned no id".into()))
}

/// A spool row to insert: the message, its content hash, when it was
/// received and its claim (node id, until), if any.
pub(super) struct SpoolInsert<'a> {
    pub msg: &'a NewSpool,
    pub hash: &'a str,
    pub received_at: i64,
    pub claim: Option<(&'a str, i64)>,
}

/// Insert spool rows and their raw bytes, all in one statement (a batch
/// of SMTP commits costs one round trip, not one each); their ids, in the
/// order of `rows`. If one row is refused (a NUL in a text field), the
/// whole statement fails: the caller retries the rows one by one.
pub(super) async fn insert_spools(
    db: &Db,
    new: &[SpoolInsert<'_>],
) -> Result<Vec<SpoolId>, StoreError> {
    let received_at: Vec<i64> = new.iter().map(|r| r.received_at).collect();
    let source: Vec<&str> = new.iter().map(|r| r.msg.source.as_str()).collect();
    let mail_from: Vec<&str> = new.iter().map(|r| r.msg.mail_from.as_str()).collect();
    let rcpt_to: Vec<String> = new.iter().map(|r| json_vec(&r.msg.rcpt_to)).collect();
    let client_ip: Vec<Option<&str>> = new.iter().map(|r| r.msg.client_ip.as_deref()).collect();
    let helo: Vec<Option<&str>> = new.iter().map(|r| r.msg.helo.as_deref()).collect();
    let tls: Vec<bool> = new.iter().map(|r| r.msg.tls).collect();
    let channel: Vec<Option<&str>> = new.iter().map(|r| r.msg.channel.as_deref()).collect();
    let size: Vec<i64> = new.iter().map(|r| r.msg.raw.len() as i64).collect();
    let hash: Vec<&str> = new.iter().map(|r| r.hash).collect();
    let raw: Vec<&[u8]> = new.iter().map(|r| r.msg.raw.as_slice()).collect();
    let claimed_by: Vec<Option<&str>> = new.iter().map(|r| r.claim.map(|c| c.0)).collect();
    let claim_until: Vec<Option<i64>> = new.iter().map(|r| r.claim.map(|c| c.1)).collect();
    // Ids drawn in the order of the rows (`ord`), handed back with it.
    let found = rows(
        db,
        "WITH u AS (
             SELECT nextval(pg_get_serial_sequence('spool', 'id')) AS id, u.*
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::bool[], $8::text[], $9::bigint[], $10::text[],
                           $11::bytea[], $12::text[], $13::bigint[])
                    WITH ORDINALITY AS u(received_at, source, mail_from, rcpt_to, client_ip,
                                         helo, tls, channel, size, content_hash, raw,
                                         claimed_by, claim_until, ord)),
         s AS (
             INSERT INTO spool (id, received_at, source, mail_from, rcpt_to, client_ip, helo,
                                tls, channel, size, content_hash, claimed_by, claim_until)
             SELECT id, received_at, source, mail_from, rcpt_to, client_ip, helo, tls,
                    channel, size, content_hash, claimed_by, claim_until FROM u),
         r AS (INSERT INTO spool_raw (id, raw) SELECT id, raw FROM u)
         SELECT id FROM u ORDER BY ord",
        &[
            &received_at,
            &source,
            &mail_from,
            &rcpt_to,
            &client_ip,
            &helo,
            &tls,
            &channel,
            &size,
            &hash,
            &raw,
            &claimed_by,
            &claim_until,
        ],
    )
    .await?;
    if found.len() != new.len() {
        return Err(StoreError::Failed(format!(
            "spool insert of {} rows returned {} ids",
            new.len(),
            found.len()
        )));
    }
    found.iter().map(|r| Ok(SpoolId(col(r, 0)?))).collect()
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

/// `decide`'s answer for `m` over this transaction's rows, through
/// [`decide_async`] (each fact it asks for read here, then decide again),
/// with the facts `ahead` read.
///
/// Several nodes may decide at once, each in its own READ COMMITTED
/// transaction, and a decision read-then-written is only right if no other
/// transaction writes what it read in between. Two transaction-level
/// advisory locks serialise what matters, held until COMMIT:
/// - `m`'s dedupe key in its channel, before anything is read
///   ([`look_ahead`]): a message accepted by two nodes (a client's retry
///   after a lost `250`) is decided by one after the other committed, and
///   the second finds it a duplicate (the unique index `messages_dedupe`
///   is the backstop, not the rule);
/// - balancing, before the first user's load is read: loads count open
///   tickets across channels and the assignment sequence is global, so a
///   node reads them only after the ticket another node balanced is
///   committed. Taken only by messages that open a balanced ticket.
///
/// Writes still `sent` (in flight) are answered before a fact is read,
/// so the connection never holds a read's answer behind theirs.
async fn decide_here(
    db: &Db,
    m: &InboundMessage,
    decide: Decide,
    ahead: &mut Ahead,
    sent: Option<&Sent<'_>>,
) -> Result<Decision, StoreError> {
    let known = ahead.keyed.take().map(|k| {
        let q = FactQuery::Keyed {
            channel: m.channel.clone(),
            key: m.dedupe_key.clone(),
        };
        (q, FactAnswer::Keyed(k))
    });
    let balancing = AtomicBool::new(false);
    decide_async(decide, m, now_ms(), known.into_iter().collect(), |q| {
        let balancing = &balancing;
        async move {
            if let Some(sent) = sent {
                sent.answer().await?;
            }
            if matches!(q, FactQuery::UserLoad { .. }) && !balancing.swap(true, Ordering::Relaxed) {
                xact_lock(db, BALANCE_LOCK).await?;
            }
            read(db, q).await
        }
    })
    .await
}

/// What the round trip before a message's decision reads, its dedupe lock
/// taken first: the message stored under its dedupe key (the first fact
/// `decide` asks for; `None` once handed over) and its contact (what the
/// write needs).
struct Ahead {
    keyed: Option<Option<KeyedMessage>>,
    contact: Option<StoredContact>,
}

/// A contact row: its id and name.
struct StoredContact {
    id: i64,
    name: Option<String>,
}

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
/// The message a channel (`$1`) stores under a dedupe key (`$2`).
macro_rules! keyed_sql {
    () => {
        "SELECT m.ticket_id, m.from_email, c.email FROM messages m
           JOIN tickets t ON t.id = m.ticket_id JOIN contacts c ON c.id = t.contact_id
          WHERE m.channel = $1 AND m.dedupe_key = $2"
    };
}
const KEYED_SQL: &str = keyed_sql!();
const CONTACT_SQL: &str = "SELECT id, name FROM contacts WHERE email = $1";
/// A look-ahead's two reads in one statement (one row, NULLs for what is
/// not there): the keyed message (`$1`, `$2`) and the contact (`$3`).
const AHEAD_READS_SQL: &str = concat!(
    "SELECT k.ticket_id, k.from_email, k.email, c.id, c.name FROM (SELECT 1) one
       LEFT JOIN (",
    keyed_sql!(),
    ") k ON true
       LEFT JOIN (SELECT id, name FROM contacts WHERE email = $3) c ON true"
);
/// Mark a plan's spool entry (`$3`) done, with its drop reason (`$1`) at
/// `$2`, only while still pending: an entry applied before (by this node
/// or another) changes nothing.
macro_rules! claim_sql {
    () => {
        "UPDATE spool SET state = 'done', error = $1, processed_at = $2
          WHERE id = $3 AND state = 'pending'"
    };
}
const CLAIM_SQL: &str = claim_sql!();
/// A plan's claim ([`CLAIM_SQL`]) and its first message's dedupe lock
/// (`$4`) in one statement; the rows the claim changed.
const CLAIM_AND_LOCK_SQL: &str = concat!(
    "WITH claimed AS (",
    claim_sql!(),
    " RETURNING 1)
     SELECT (SELECT COUNT(*) FROM claimed), pg_advisory_xact_lock(hashtextextended($4, 0))"
);

/// Take `m`'s dedupe lock, then read [`Ahead`] — one round trip: the
/// statements are sent together and PostgreSQL runs them in that order,
/// so the reads see what the lock's holder committed. With `claim`, the
/// plan's spool entry is marked done first, in the same round trip; the
/// rows that changed (0: applied before, nothing to do).
async fn look_ahead(
    db: &Db,
    m: &InboundMessage,
    claim: Option<&InboundPlan>,
) -> Result<(u64, Ahead), StoreError> {
    AheadQuery::prepare(db, m, claim).await?.send(db).await
}

/// [`look_ahead`]'s statements, prepared (once per connection): sending
/// them is all that is left, so a job's can all go out together
/// ([`apply_plans`]).
struct AheadQuery<'a> {
    m: &'a InboundMessage,
    claim: Option<&'a InboundPlan>,
    /// [`CLAIM_AND_LOCK_SQL`] with a claim, else [`LOCK_SQL`].
    lock: tokio_postgres::Statement,
    reads: tokio_postgres::Statement,
}

impl<'a> AheadQuery<'a> {
    async fn prepare(
        db: &Db,
        m: &'a InboundMessage,
        claim: Option<&'a InboundPlan>,
    ) -> Result<AheadQuery<'a>, StoreError> {
        let lock = match claim {
            Some(_) => CLAIM_AND_LOCK_SQL,
            None => LOCK_SQL,
        };
        Ok(AheadQuery {
            m,
            claim,
            lock: prepared(db, lock).await?,
            reads: prepared(db, AHEAD_READS_SQL).await?,
        })
    }

    /// Send the two statements, in order (claim and lock, then the reads:
    /// a statement's snapshot is taken when it starts, so the reads must
    /// come after the lock), and read the answers: the rows the claim
    /// changed (1 without one) and [`Ahead`].
    async fn send(&self, db: &Db) -> Result<(u64, Ahead), StoreError> {
        let m = self.m;
        let name = format!("dedupe\n{}\n{}", m.channel, m.dedupe_key);
        let now = now_ms();
        let (claimed, r) = futures_util::try_join!(
            async {
                match self.claim {
                    Some(p) => {
                        let r = db
                            .query_one(&self.lock, &[&p.dropped, &now, &p.spool_id.0, &name])
                            .await
                            .map_err(pg_err)?;
                        Ok(u64::try_from(col::<i64>(&r, 0)?).unwrap_or(0))
                    }
                    None => {
                        db.execute(&self.lock, &[&name]).await.map_err(pg_err)?;
                        Ok(1)
                    }
                }
            },
            async {
                db.query_one(&self.reads, &[&m.channel, &m.dedupe_key, &m.contact.email])
                    .await
                    .map_err(pg_err)
            },
        )?;
        let keyed = match col::<Option<i64>>(&r, 0)? {
            Some(ticket) => Some(KeyedMessage {
                ticket: TicketId(ticket),
                from: col(&r, 1)?,
                contact: col(&r, 2)?,
            }),
            None => None,
        };
        let contact = match col::<Option<i64>>(&r, 3)? {
            Some(id) => Some(StoredContact {
                id,
                name: col(&r, 4)?,
            }),
            None => None,
        };
        Ok((
            claimed,
            Ahead {
                keyed: Some(keyed),
                contact,
            },
        ))
    }
}

async fn prepared(db: &Db, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    db.prepare_cached(sql).await.map_err(pg_err)
}

/// The advisory lock every balanced assignment takes.
const BALANCE_LOCK: &str = "balance";

/// Wait for the transaction-level advisory lock named `name` (a 64-bit hash
/// of it); released at COMMIT or ROLLBACK.
async fn xact_lock(db: &Db, name: &str) -> Result<(), StoreError> {
    exec(
        db,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&name],
    )
    .await?;
    Ok(())
}

/// Read one fact.
async fn read(db: &Db, q: FactQuery) -> Result<FactAnswer, StoreError> {
    Ok(match q {
        FactQuery::Keyed { channel, key } => FactAnswer::Keyed(keyed(db, &channel, &key).await?),
        FactQuery::Outbound {
            channel,
            message_id: id,
        } => {
            let r = row(
                db,
                "SELECT id, ticket_id FROM messages
                  WHERE message_id = $1 AND channel = $2 AND direction = 'outbound'
                  ORDER BY id DESC LIMIT 1",
                &[&id, &channel],
            )
            .await?;
            FactAnswer::Outbound(match r {
                Some(r) => Some(OutboundRef {
                    row: col(&r, 0)?,
                    ticket: TicketId(col(&r, 1)?),
                    message_id: id,
                }),
                None => None,
            })
        }
        FactQuery::ByMessageId {
            channel,
            message_id: id,
        } => FactAnswer::ByMessageId(
            rows(db, BY_MESSAGE_ID, &[&id, &channel])
                .await?
                .iter()
                .map(|r| {
                    Ok(MessageHit {
                        ticket: TicketId(col(r, 0)?),
                        outbound: col::<&str>(r, 1)? == "outbound",
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        ),
        FactQuery::TicketPeople { channel, ticket } => {
            FactAnswer::TicketPeople(people(db, &channel, ticket).await?)
        }
        FactQuery::UserLoad { user } => FactAnswer::UserLoad(user_load(db, &user).await?),
        FactQuery::ContactOwner { email } => FactAnswer::ContactOwner(
            match row(db, "SELECT owner FROM contacts WHERE email = $1", &[&email]).await? {
                Some(r) => col(&r, 0)?,
                None => None,
            },
        ),
    })
}

async fn keyed(db: &Db, channel: &str, key: &str) -> Result<Option<KeyedMessage>, StoreError> {
    row(db, KEYED_SQL, &[&channel, &key])
        .await?
        .map(|r| keyed_message(&r))
        .transpose()
}

fn keyed_message(r: &tokio_postgres::Row) -> Result<KeyedMessage, StoreError> {
    Ok(KeyedMessage {
        ticket: TicketId(col(r, 0)?),
        from: col(r, 1)?,
        contact: col(r, 2)?,
    })
}

/// Messages of `$2` (channel) with Message-ID `$1`: inbound by dedupe key
/// (and the `#from:` copies of another sender's reuse: a range, byte order
/// by the column's "C" collation), outbound by their own index; most
/// recent first.
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

async fn people(db: &Db, channel: &str, t: TicketId) -> Result<Option<TicketPeople>, StoreError> {
    let head = row(
        db,
        "SELECT c.email, t.secret FROM tickets t JOIN contacts c ON c.id = t.contact_id
         WHERE t.id = $1 AND t.channel = $2",
        &[&t.0, &channel],
    )
    .await?;
    let Some(head) = head else {
        return Ok(None);
    };
    let contact: String = col(&head, 0)?;
    let mut participants = rows(
        db,
        "SELECT c.email FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
         WHERE p.ticket_id = $1",
        &[&t.0],
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
        &[&t.0, &contact],
    )
    .await?;
    for r in &addressed {
        for i in 0..2 {
            if let Some(list) = col::<Option<&str>>(r, i)? {
                participants.extend(parse_json_vec(list));
            }
        }
    }
    Ok(Some(TicketPeople {
        secret: col(&head, 1)?,
        contact,
        participants,
    }))
}

async fn user_load(db: &Db, user: &str) -> Result<UserLoad, StoreError> {
    let open_sql = format!(
        "SELECT COUNT(*) FROM tickets
          WHERE owner = $1 AND COALESCE(status, '') NOT IN {CLOSED_STATUSES}"
    );
    let open: i64 = match row(db, &open_sql, &[&user]).await? {
        Some(r) => col(&r, 0)?,
        None => 0,
    };
    let last_assigned = match row(
        db,
        "SELECT last_assigned_seq FROM user_state WHERE id = $1",
        &[&user],
    )
    .await?
    {
        Some(r) => col::<Option<i64>>(&r, 0)?.unwrap_or(0),
        None => 0,
    };
    Ok(UserLoad {
        user: user.to_string(),
        open,
        last_assigned,
    })
}

/// A planned submission (web form, API): nothing if `decide` finds every
/// message a copy (a retry); else its spool row and its plan.
pub(super) async fn submit(
    db: &Db,
    spool: NewSpool,
    hash: String,
    messages: Vec<InboundMessage>,
    decide: Decide,
) -> Result<InboundOutcome, StoreError> {
    let mut replay = InboundOutcome::default();
    for m in &messages {
        let (_, mut ahead) = look_ahead(db, m, None).await?;
        if let Decision::Duplicate(ticket) = decide_here(db, m, decide, &mut ahead, None).await? {
            replay.delivered.push(Delivered::duplicate(m, ticket));
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
    apply_plan(db, &plan, decide).await
}

/// Apply one plan: [`apply_plans`] of it alone.
pub(super) async fn apply_plan(
    db: &Db,
    plan: &InboundPlan,
    decide: Decide,
) -> Result<InboundOutcome, StoreError> {
    let mut out = apply_plans(db, std::slice::from_ref(plan), decide).await?;
    out.pop()
        .ok_or_else(|| StoreError::Failed("a plan applied without an outcome".into()))
}

/// Apply plans in turn, an outcome each: claim a plan's spool entry (only
/// while still pending: an entry applied before changes nothing), then
/// decide and write each of its messages. The caller's savepoint undoes
/// it all on error.
///
/// Round trips, not statements, are what a job waits for, so a job's are
/// few:
/// 1. every plan's claim and every message's lock and reads
///    ([`look_ahead`]) go out together, first;
/// 2. each message is decided in turn and its writes are sent without
///    waiting for their answers ([`Sent`]): PostgreSQL runs a connection's
///    statements in the order sent, so whatever is read after them (a
///    fact `decide` asks for, a look-ahead read again) sees them;
/// 3. the answers are read at the end.
///
/// A look-ahead read in step 1 is read again, after the writes before it,
/// when one of them wrote the same dedupe key or created or renamed the
/// same contact. A write that needs an answer before its next statement
/// (a new participant's contact, a bounce, a forwarder's note) is sent
/// and answered alone, after the writes in flight.
pub(super) async fn apply_plans(
    db: &Db,
    plans: &[InboundPlan],
    decide: Decide,
) -> Result<Vec<InboundOutcome>, StoreError> {
    let st = WriteStatements::prepare(db).await?;
    let claim_st = prepared(db, CLAIM_SQL).await?;
    // Step 1: the claims of dropped plans, the look-aheads of the others
    // (each plan's first with its claim), in order.
    let mut queries = Vec::new();
    for plan in plans.iter().filter(|p| p.dropped.is_none()) {
        for (j, m) in plan.messages.iter().enumerate() {
            let claim = (j == 0).then_some(plan);
            queries.push(AheadQuery::prepare(db, m, claim).await?);
        }
    }
    let now = now_ms();
    let drops = plans
        .iter()
        .filter(|p| p.dropped.is_some() || p.messages.is_empty());
    let (_, reads) = futures_util::try_join!(
        futures_util::future::try_join_all(drops.map(|p| async {
            db.execute(&claim_st, &[&p.dropped, &now, &p.spool_id.0])
                .await
                .map_err(pg_err)
        })),
        in_order(queries.iter().map(|q| q.send(db))),
    )?;
    let mut reads = reads.into_iter();
    // Step 2.
    let sent = Sent::default();
    // What the job's writes so far stored (channel, dedupe key) and whose
    // contact they created or renamed: a few dozen at most.
    let mut written_keys: Vec<(&str, String)> = Vec::new();
    let mut touched_contacts: Vec<&str> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if plan.dropped.is_some() {
            continue;
        }
        let mut claimed = true;
        for (j, m) in plan.messages.iter().enumerate() {
            let (rows, mut here) = reads
                .next()
                .ok_or_else(|| StoreError::Failed("a look-ahead read went missing".into()))?;
            if j == 0 {
                claimed = rows > 0;
            }
            if !claimed {
                continue;
            }
            let key_written = written_keys
                .iter()
                .any(|(c, k)| *c == m.channel && *k == m.dedupe_key);
            if key_written || touched_contacts.contains(&m.contact.email.as_str()) {
                sent.answer().await?;
                here = look_ahead(db, m, None).await?.1;
            }
            let decision = decide_here(db, m, decide, &mut here, Some(&sent)).await?;
            if let Some(key) = written_key(&decision, m) {
                written_keys.push((m.channel.as_str(), key.to_string()));
            }
            let contact_changes = match &here.contact {
                None => !matches!(decision, Decision::Duplicate(_)),
                Some(c) => renamed(&m.contact, m.name_verified, c.name.as_deref()).is_some(),
            };
            if contact_changes {
                touched_contacts.push(m.contact.email.as_str());
            }
            let whole = sends_whole(m, &decision, here.contact.as_ref());
            let write = write(db, &st, plan.spool_id, m, decision, here.contact);
            if whole {
                sent.send(i, j, Box::pin(write))?;
            } else {
                sent.answer().await?;
                sent.done(i, j, write.await?);
            }
        }
    }
    // Step 3.
    sent.answer().await?;
    let mut outcomes: Vec<InboundOutcome> =
        plans.iter().map(|_| InboundOutcome::default()).collect();
    for ((i, _), delivered) in sent.into_delivered() {
        if let Some(out) = outcomes.get_mut(i) {
            out.delivered.push(delivered);
        }
    }
    Ok(outcomes)
}

/// Futures polled once each, in order (a statement is sent on its first
/// poll: [`send`]), then all awaited: statements sent in that order in one
/// round trip.
async fn in_order<'f, T>(
    futs: impl Iterator<Item = impl std::future::Future<Output = Result<T, StoreError>> + Send + 'f>,
) -> Result<Vec<T>, StoreError> {
    let mut all: Vec<BoxFut<'f, Result<T, StoreError>>> = Vec::new();
    let mut early: Vec<Option<Result<T, StoreError>>> = Vec::new();
    for f in futs {
        let mut f: BoxFut<'f, Result<T, StoreError>> = Box::pin(f);
        early.push((&mut f).now_or_never());
        all.push(f);
    }
    let mut out = Vec::with_capacity(all.len());
    for (f, e) in all.into_iter().zip(early) {
        out.push(match e {
            Some(r) => r?,
            None => f.await?,
        });
    }
    Ok(out)
}

/// The dedupe key `decision` stores `m` under, if it stores it.
fn written_key<'d>(decision: &'d Decision, m: &'d InboundMessage) -> Option<&'d str> {
    match decision {
        Decision::Duplicate(_) => None,
        Decision::Bounce { key, .. } | Decision::Join { key, .. } | Decision::Open { key, .. } => {
            Some(key.as_deref().unwrap_or(&m.dedupe_key))
        }
    }
}

/// Whether `write` of `decision` sends all its statements at once (on its
/// first poll) and needs no answer before the next message: no contact
/// to create first for a join, no bounce, no forwarder's note.
fn sends_whole(m: &InboundMessage, decision: &Decision, contact: Option<&StoredContact>) -> bool {
    m.note.is_none()
        && match decision {
            Decision::Duplicate(_) | Decision::Open { .. } => true,
            Decision::Join { .. } => contact.is_some(),
            Decision::Bounce { .. } => false,
        }
}

/// A message's write, sent or to be sent.
type WriteFut<'a> = BoxFut<'a, Result<Delivered, StoreError>>;

/// A job's writes sent and not answered yet, in the order sent, and the
/// answers read so far (by plan and message), shared by the loop that
/// sends and the fact reads that must first answer them.
#[derive(Default)]
struct Sent<'a> {
    waiting: Mutex<Vec<((usize, usize), WriteFut<'a>)>>,
    answered: Mutex<Vec<((usize, usize), Delivered)>>,
}

impl<'a> Sent<'a> {
    /// Send `write` (message `j` of plan `i`): poll it once, which sends
    /// its statements, and keep it for its answer.
    fn send(&self, i: usize, j: usize, mut write: WriteFut<'a>) -> Result<(), StoreError> {
        match (&mut write).now_or_never() {
            // Answered at once (nothing to send, or refused before sending).
            Some(r) => self.done(i, j, r?),
            None => lock(&self.waiting).push(((i, j), write)),
        }
        Ok(())
    }

    fn done(&self, i: usize, j: usize, d: Delivered) {
        lock(&self.answered).push(((i, j), d));
    }

    /// Read the answers of every write sent, in order; the first error.
    async fn answer(&self) -> Result<(), StoreError> {
        let waiting = std::mem::take(&mut *lock(&self.waiting));
        for (at, write) in waiting {
            let d = write.await?;
            lock(&self.answered).push((at, d));
        }
        Ok(())
    }

    /// The answers, in plan and message order.
    fn into_delivered(self) -> Vec<((usize, usize), Delivered)> {
        let mut all = self
            .answered
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        all.sort_by_key(|(at, _)| *at);
        all
    }
}

/// A lock that a panic elsewhere does not make unusable (the data is a
/// list of futures and answers, whole at every step).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The statements a message's write sends, prepared (once per connection)
/// before any is sent, so that a write's statements go out together on
/// its first poll.
struct WriteStatements {
    insert: tokio_postgres::Statement,
    rename: tokio_postgres::Statement,
    participant: tokio_postgres::Statement,
    touch: tokio_postgres::Statement,
    assign: tokio_postgres::Statement,
    /// Open a ticket for a stored contact ($30: its id).
    open_stored: tokio_postgres::Statement,
    /// Open a ticket and its new contact ($30, $31: email, name).
    open_new: tokio_postgres::Statement,
}

impl WriteStatements {
    async fn prepare(db: &Db) -> Result<WriteStatements, StoreError> {
        Ok(WriteStatements {
            insert: prepared(db, INSERT_MESSAGE_SQL).await?,
            rename: prepared(db, RENAME_SQL).await?,
            participant: prepared(db, PARTICIPANT_SQL).await?,
            touch: prepared(db, TOUCH_SQL).await?,
            assign: prepared(db, ASSIGN_SQL).await?,
            open_stored: prepared(db, &open_sql("SELECT $30::bigint AS id")).await?,
            open_new: prepared(
                db,
                &open_sql(
                    "INSERT INTO contacts (email, name, created_at) VALUES ($30, $31, $27)
                 ON CONFLICT (email) DO UPDATE SET email = excluded.email RETURNING id",
                ),
            )
            .await?,
        })
    }
}

/// Write `decision` for `m` (`contact`: its contact as [`look_ahead`] read
/// it): the statements that do not depend on each other's answers are sent
/// together, in order, so a message costs one round trip here (two for a
/// new participant's contact or a bounce, one more for a forwarder's
/// note). When [`sends_whole`], all go out on the first poll.
async fn write(
    db: &Db,
    st: &WriteStatements,
    spool: SpoolId,
    m: &InboundMessage,
    decision: Decision,
    contact: Option<StoredContact>,
) -> Result<Delivered, StoreError> {
    let now = now_ms();
    let (ticket, out) = match decision {
        Decision::Duplicate(ticket) => return Ok(Delivered::duplicate(m, ticket)),
        Decision::Bounce {
            key,
            outbound,
            fail,
        } => {
            let cols = MessageCols::new(
                m,
                spool,
                key.as_deref(),
                Some(&outbound.message_id),
                None,
                now,
            )?;
            let mut params = cols.params();
            params.push(&outbound.ticket.0);
            futures_util::try_join!(
                send(db, &st.insert, &params),
                record_bounce(db, &outbound, fail.as_deref(), now),
            )?;
            (outbound.ticket, Delivered::joined(m, outbound.ticket))
        }
        Decision::Join { key, ticket } => {
            let contact = match contact {
                Some(c) => c,
                None => StoredContact {
                    id: create_contact(db, &m.contact, now).await?,
                    name: m.contact.name.clone(),
                },
            };
            let cols = MessageCols::new(m, spool, key.as_deref(), None, None, now)?;
            let rename = renamed(&m.contact, m.name_verified, contact.name.as_deref());
            let mut params = cols.params();
            params.push(&ticket.0);
            let rename = rename
                .as_ref()
                .map(|n| [n as &(dyn ToSql + Sync), &contact.id]);
            let join = [&ticket.0 as &(dyn ToSql + Sync), &contact.id];
            let touch = [&now as &(dyn ToSql + Sync), &ticket.0];
            futures_util::try_join!(
                send_if(db, &st.rename, rename.as_ref().map(|p| &p[..])),
                send(db, &st.participant, &join),
                send(db, &st.touch, &touch),
                send(db, &st.insert, &params),
            )?;
            (ticket, Delivered::joined(m, ticket))
        }
        Decision::Open {
            key,
            owner,
            thread_note,
        } => {
            let cols =
                MessageCols::new(m, spool, key.as_deref(), None, thread_note.as_deref(), now)?;
            let ticket = open_ticket(db, st, m, &cols, contact, &owner, now).await?;
            (ticket, Delivered::opened(m, ticket, owner.owner))
        }
    };
    if let Some(note) = &m.note {
        exec(
            db,
            "INSERT INTO messages (ticket_id, channel, direction, from_email, from_name, subject,
                                   text, created_at)
             VALUES ($1, $2, 'note', $3, $4, $5, $6, $7)",
            &[
                &ticket.0,
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
    Ok(out)
}

const RENAME_SQL: &str = "UPDATE contacts SET name = $1 WHERE id = $2";
const PARTICIPANT_SQL: &str = "INSERT INTO ticket_participants (ticket_id, contact_id)
     SELECT id, $2 FROM tickets WHERE id = $1 AND contact_id <> $2
     ON CONFLICT DO NOTHING";
const TOUCH_SQL: &str = "UPDATE tickets SET updated_at = $1 WHERE id = $2";

/// After a bounce was stored on its outbound message's ticket: mark that
/// message failed when ingest decided so (its outbox row too, if still
/// queued), and touch the ticket — sent together.
async fn record_bounce(
    db: &Db,
    b: &OutboundRef,
    fail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let failed = prepared(
        db,
        "UPDATE messages SET delivery = 'failed', delivery_detail = $1 WHERE id = $2",
    )
    .await?;
    let outbox = prepared(
        db,
        "UPDATE outbox SET state = 'failed', last_error = $1
          WHERE message_id = $2 AND state = 'queued'",
    )
    .await?;
    let touch = prepared(db, TOUCH_SQL).await?;
    let marked = fail
        .as_ref()
        .map(|detail| [detail as &(dyn ToSql + Sync), &b.row]);
    let touched = [&now as &(dyn ToSql + Sync), &b.ticket.0];
    futures_util::try_join!(
        send_if(db, &failed, marked.as_ref().map(|p| &p[..])),
        send_if(db, &outbox, marked.as_ref().map(|p| &p[..])),
        send(db, &touch, &touched),
    )?;
    b.log_bounce(fail.is_some());
    Ok(())
}

/// The name to store for contact `c` over the `stored` one: a name from
/// mail replaces a stored name only when proven to be the contact's own
/// (`verified`), and fills an empty one always.
fn renamed<'a>(c: &'a ContactRef, verified: bool, stored: Option<&str>) -> Option<&'a str> {
    let stored = stored.unwrap_or("");
    c.name
        .as_deref()
        .filter(|n| !n.is_empty() && *n != stored && (stored.is_empty() || verified))
}

/// Create contact `c`; its id. Another node may create the same contact at
/// the same moment: the insert then waits for that transaction and yields
/// its row (the name stays the one stored first).
const CREATE_CONTACT_SQL: &str =
    "INSERT INTO contacts (email, name, created_at) VALUES ($1, $2, $3)
     ON CONFLICT (email) DO UPDATE SET email = excluded.email RETURNING id";

async fn create_contact(db: &Db, c: &ContactRef, now: i64) -> Result<i64, StoreError> {
    let r = row(db, CREATE_CONTACT_SQL, &[&c.email, &c.name, &now])
        .await?
        .ok_or_else(|| StoreError::Failed("contact insert returned no id".into()))?;
    col(&r, 0)
}

/// The contact's id, creating it ([`create_contact`]). A stored name is
/// replaced only as [`renamed`] allows.
pub(super) async fn upsert_contact(
    db: &Db,
    c: &ContactRef,
    verified: bool,
) -> Result<i64, StoreError> {
    let Some(r) = row(db, CONTACT_SQL, &[&c.email]).await? else {
        return create_contact(db, c, now_ms()).await;
    };
    let id: i64 = col(&r, 0)?;
    let stored: Option<String> = col(&r, 1)?;
    if let Some(n) = renamed(c, verified, stored.as_deref()) {
        exec(db, RENAME_SQL, &[&n, &id]).await?;
    }
    Ok(id)
}

/// A balancing assignment: the next of `user_assign_seq` as the user's
/// sequence, under the balance lock [`decide_here`] took.
const ASSIGN_SQL: &str = "INSERT INTO user_state (id, last_assigned_seq)
     VALUES ($1, nextval('user_assign_seq'))
     ON CONFLICT (id) DO UPDATE SET last_assigned_seq = excluded.last_assigned_seq";

/// The statement opening a ticket with its first message, its contact's
/// id from `contact_cte`.
fn open_sql(contact_cte: &str) -> String {
    format!(
        "WITH c AS ({contact_cte}),
              t AS (INSERT INTO tickets (channel, contact_id, subject, pipeline, status,
                                         priority, properties, owner, unassigned_reason,
                                         created_at, updated_at, secret, routed_by)
                    VALUES ($1, (SELECT id FROM c), $20, $21, $22, $23, $24, $25, $26,
                            $27, $27, $28, $29) RETURNING id)
         INSERT INTO messages (ticket_id, {MESSAGE_COLUMNS})
         VALUES ((SELECT id FROM t), {MESSAGE_VALUES}) RETURNING ticket_id"
    )
}

/// Open the ticket `m` starts, owned as `owner` says, with `m` as its first
/// message — one statement (contact when new, ticket, message), sent with
/// the owner's balancing record ([`ASSIGN_SQL`]) and the contact's new name
/// when there are.
async fn open_ticket(
    db: &Db,
    st: &WriteStatements,
    m: &InboundMessage,
    cols: &MessageCols<'_>,
    contact: Option<StoredContact>,
    owner: &OwnerChoice,
    now: i64,
) -> Result<TicketId, StoreError> {
    let t = &m.new_ticket;
    let mut params = cols.params();
    params.extend_from_slice(&[
        &t.subject,
        &t.pipeline,
        &t.status,
        &t.priority,
        &t.properties,
        &owner.owner,
        &owner.unassigned_reason,
        &now,
        &t.secret,
        &t.routed_by,
    ]);
    let id = contact.as_ref().map(|c| c.id);
    let open = match &id {
        Some(id) => {
            params.push(id);
            &st.open_stored
        }
        None => {
            params.push(&m.contact.email);
            params.push(&m.contact.name);
            &st.open_new
        }
    };
    let rename = contact
        .as_ref()
        .and_then(|c| renamed(&m.contact, m.name_verified, c.name.as_deref()).map(|n| (n, c.id)));
    let assigned = match (owner.record_assignment, &owner.owner) {
        (true, Some(u)) => Some(u),
        _ => None,
    };
    let assigned = assigned.map(|u| [u as &(dyn ToSql + Sync)]);
    let rename = rename
        .as_ref()
        .map(|(n, id)| [n as &(dyn ToSql + Sync), id]);
    let (_, _, r) = futures_util::try_join!(
        send_if(db, &st.assign, assigned.as_ref().map(|p| &p[..])),
        send_if(db, &st.rename, rename.as_ref().map(|p| &p[..])),
        async { db.query_one(open, &params).await.map_err(pg_err) },
    )?;
    Ok(TicketId(col(&r, 0)?))
}

/// The columns of an inbound message row after `ticket_id`.
const MESSAGE_COLUMNS: &str = "channel, direction, spool_id, dedupe_key, message_id, in_reply_to,
     refs, from_email, from_name, to_addrs, subject, date, text, text_at, html, classification,
     sender_resolution, created_at, thread_note, cc_addrs";
/// Their values: [`MessageCols::params`] as `$1`–`$19`.
const MESSAGE_VALUES: &str = "$1, 'inbound', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19";
/// An inbound message on the ticket `$20`.
const INSERT_MESSAGE_SQL: &str = "INSERT INTO messages (ticket_id, channel, direction, spool_id,
     dedupe_key, message_id, in_reply_to, refs, from_email, from_name, to_addrs, subject, date,
     text, text_at, html, classification, sender_resolution, created_at, thread_note, cc_addrs)
     VALUES ($20, $1, 'inbound', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
             $16, $17, $18, $19)";

/// An inbound message row's values, its classification and resolution
/// serialised here, once.
struct MessageCols<'a> {
    m: &'a InboundMessage,
    spool: i64,
    key: &'a str,
    refs: String,
    to: String,
    text: Option<&'a str>,
    text_at: Option<i64>,
    classification: String,
    resolution: String,
    now: i64,
    thread_note: Option<&'a str>,
    cc: Option<String>,
}

impl<'a> MessageCols<'a> {
    fn new(
        m: &'a InboundMessage,
        spool: SpoolId,
        key: Option<&'a str>,
        bounced: Option<&'a str>,
        thread_note: Option<&'a str>,
        now: i64,
    ) -> Result<MessageCols<'a>, StoreError> {
        let (text, text_at) = match &m.text {
            BodyText::Inline(t) => (Some(t.as_str()), None),
            BodyText::RawFrom(at) => (None, Some(*at as i64)),
        };
        let classification = serde_json::to_string(&StoredClassification {
            class: &m.classification,
            bounced_message_id: bounced,
        })
        .map_err(|e| StoreError::Invalid(format!("classification: {e}")))?;
        let resolution = serde_json::to_string(&m.sender_resolution)
            .map_err(|e| StoreError::Invalid(format!("sender resolution: {e}")))?;
        Ok(MessageCols {
            m,
            spool: spool.0,
            key: key.unwrap_or(&m.dedupe_key),
            refs: m.references.join(" "),
            to: json_vec(&m.to),
            text,
            text_at,
            classification,
            resolution,
            now,
            thread_note,
            cc: (!m.cc.is_empty()).then(|| json_vec(&m.cc)),
        })
    }

    /// `$1`–`$19` of [`MESSAGE_VALUES`].
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let m = self.m;
        vec![
            &m.channel,
            &self.spool,
            &self.key,
            &m.message_id,
            &m.in_reply_to,
            &self.refs,
            &m.from.email,
            &m.from.name,
            &self.to,
            &m.subject,
            &m.date,
            &self.text,
            &self.text_at,
            &m.html,
            &self.classification,
            &self.resolution,
            &self.now,
            &self.thread_note,
            &self.cc,
        ]
    }
}
