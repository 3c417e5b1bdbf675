//! The store's outbound and agent-facing half: replies and their outbox rows,
//! internal notes, ticket and contact updates, users' availability and API
//! tokens.
//!
//! Owns the SQL for the `outbox` table, outbound/note rows of `messages`,
//! `api_tokens` and the `available` column of `user_state`. Free functions
//! take a `&Connection`; `sqlite.rs` runs them on its writer thread (inside the
//! group transaction) or on a read connection.
//!
//! Must not: build or parse mail, talk SMTP, or decide retry policy (the
//! caller passes the next attempt time). A reply's message row and its outbox
//! row are written by one function, so they commit together or not at all.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{ContactRef, StoreError, TicketId};

/// Row id of an outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OutboxId(pub i64);

impl std::fmt::Display for OutboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Delivery state of an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Queued,
    Sent,
    Failed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
        }
    }

    /// A stored delivery state (`queued` for anything unknown).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("sent") => Delivery::Sent,
            Some("failed") => Delivery::Failed,
            _ => Delivery::Queued,
        }
    }
}

/// A composed reply to commit: the ticket's outbound message plus the exact
/// bytes to hand to the relay.
#[derive(Debug, Clone)]
pub struct NewReply {
    pub ticket: TicketId,
    pub channel: String,
    /// User id of the agent.
    pub author: String,
    /// Message-ID without angle brackets.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Channel address (envelope sender and From address).
    pub from_email: String,
    pub from_name: Option<String>,
    /// `To` recipients.
    pub to: Vec<String>,
    /// `Cc` recipients (also envelope recipients).
    pub cc: Vec<String>,
    pub subject: String,
    pub date: String,
    pub text: String,
    pub html: Option<String>,
    pub raw: Vec<u8>,
    /// The message's dedupe key (unique per channel): from the client's
    /// idempotency key when the request carried one, else from the
    /// Message-ID (`outbound::replay::dedupe_key`).
    pub dedupe_key: String,
    /// The request carried an idempotency key: a reply stored under the same
    /// dedupe key is an earlier request's, and [`Replay`] decides what this
    /// one gets.
    pub replayable: bool,
}

/// The reply a channel already stores under a replayable reply's dedupe key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierReply {
    pub outbox_id: OutboxId,
    pub message_id: String,
    pub delivery: Delivery,
    pub ticket: TicketId,
}

/// Whether a reply replays an earlier one, decided outside the store
/// (`outbound::replay::replay`) over the reply stored under its key:
/// `Ok(Some)` answers the earlier reply and writes nothing, `Ok(None)` writes
/// this one, `Err` refuses it.
pub type Replay = fn(&NewReply, Option<EarlierReply>) -> Result<Option<QueuedReply>, StoreError>;

/// What committing a reply produced.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedReply {
    pub ticket: TicketId,
    pub outbox_id: OutboxId,
    pub message_id: String,
    pub delivery: Delivery,
    /// True when an earlier request with the same idempotency key already
    /// queued this reply (nothing new was written).
    pub replayed: bool,
}

/// An outbox entry the sender is to attempt.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: OutboxId,
    pub channel: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

/// Whose sender takes due outbox entries, and for how long: on a store
/// shared by nodes, the entries it takes are claimed for `node` until
/// `lease_ms` from now (renewed while the attempt runs), and no other
/// node takes them until the claim expires or the attempt is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxClaim {
    pub node: String,
    pub lease_ms: i64,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The relay accepted the message.
    Sent { reply: String },
    /// Temporary failure: try again at `next_attempt_at` (unix ms).
    Deferred { error: String, next_attempt_at: i64 },
    /// Permanent failure (or lifetime exceeded): give up.
    Failed { error: String },
}

/// Ticket fields an agent may change. `None` leaves a field as it is;
/// `owner: Some(None)` unassigns.
#[derive(Debug, Clone, Default)]
pub struct TicketUpdate {
    pub status: Option<String>,
    pub owner: Option<Option<String>>,
    pub priority: Option<String>,
    /// Set `owner` only if the ticket has none (a replier taking an
    /// unassigned ticket): decided in the same statement, so two agents
    /// replying at once cannot both take it, and nothing is read first.
    pub only_if_unassigned: bool,
}

pub(crate) fn ticket_channel(conn: &Connection, ticket: TicketId) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT channel FROM tickets WHERE id = ?1")?
        .query_row([ticket.0], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("ticket {ticket}")))
}

/// Insert the outbound message (delivery = queued) and its outbox row.
pub(crate) fn queue_reply(
    conn: &Connection,
    r: &NewReply,
    replay: Replay,
    now: i64,
) -> Result<QueuedReply, StoreError> {
    let channel = ticket_channel(conn, r.ticket)?;
    if channel != r.channel {
        return Err(StoreError::Invalid(format!(
            "ticket {} is on channel {channel}, not {}",
            r.ticket, r.channel
        )));
    }
    let earlier = if r.replayable {
        conn.prepare_cached(
            "SELECT o.id, m.message_id, m.delivery, m.ticket_id FROM messages m JOIN outbox o ON o.message_id = m.id
             WHERE m.channel = ?1 AND m.dedupe_key = ?2",
        )?
        .query_row(params![r.channel, r.dedupe_key], |row| {
            Ok(EarlierReply {
                outbox_id: OutboxId(row.get(0)?),
                message_id: row.get(1)?,
                delivery: Delivery::parse(row.get::<_, Option<String>>(2)?.as_deref()),
                ticket: TicketId(row.get(3)?),
            })
        })
        .optional()?
    } else {
        None
    };
    if let Some(answer) = replay(r, earlier)? {
        return Ok(answer);
    }
    let to = serde_json::to_string(&r.to).unwrap_or_else(|_| "[]".into());
    let rcpt: Vec<&String> = r.to.iter().chain(r.cc.iter()).collect();
    let rcpt = serde_json::to_string(&rcpt).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO messages (ticket_id, channel, direction, dedupe_key, message_id, in_reply_to, refs,
                               from_email, from_name, to_addrs, subject, date, text, html, author,
                               delivery, created_at)
         VALUES (?1, ?2, 'outbound', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'queued', ?15)",
    )?
    .execute(params![
        r.ticket.0,
        r.channel,
        r.dedupe_key,
        r.message_id,
        r.in_reply_to,
        r.references.join(" "),
        r.from_email,
        r.from_name,
        to,
        r.subject,
        r.date,
        r.text,
        r.html,
        r.author,
        now
    ])?;
    let message_row = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO outbox (message_id, channel, mail_from, rcpt_to, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![message_row, r.channel, r.from_email, rcpt, now])?;
    let outbox_id = OutboxId(conn.last_insert_rowid());
    conn.prepare_cached("INSERT INTO outbox_raw (id, raw) VALUES (?1, ?2)")?
        .execute(params![outbox_id.0, r.raw])?;
    conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
        .execute(params![now, r.ticket.0])?;
    Ok(QueuedReply {
        ticket: r.ticket,
        outbox_id,
        message_id: r.message_id.clone(),
        delivery: Delivery::Queued,
        replayed: false,
    })
}

/// A notice to commit to the outbox: mail postdesk sends on its own (to an
/// agent, to admins), on no ticket and in no conversation.
#[derive(Debug, Clone)]
pub struct NewNotice {
    /// What kind of notice (`assigned`, `owner_away`, …), kept on the row.
    pub kind: String,
    /// Envelope sender: the configured system address.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The composed message, as handed to the relay.
    pub raw: Vec<u8>,
}

/// Insert a notice's outbox row (no message row: it belongs to no ticket).
pub(crate) fn queue_notice(
    conn: &Connection,
    n: &NewNotice,
    now: i64,
) -> Result<OutboxId, StoreError> {
    let rcpt = serde_json::to_string(&n.rcpt_to).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO outbox (message_id, notice, channel, mail_from, rcpt_to, next_attempt_at, created_at)
         VALUES (NULL, ?1, '', ?2, ?3, ?4, ?4)",
    )?
    .execute(params![n.kind, n.mail_from, rcpt, now])?;
    let id = OutboxId(conn.last_insert_rowid());
    conn.prepare_cached("INSERT INTO outbox_raw (id, raw) VALUES (?1, ?2)")?
        .execute(params![id.0, n.raw])?;
    Ok(id)
}

/// The install's notice key (hex), made once by migration 12.
pub(crate) fn notice_key(conn: &Connection) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT value FROM install_secrets WHERE name = 'notice_key'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Schema("install_secrets has no notice_key".into()))
}

/// Queued entries due at `now`, oldest first, with id not in `skip`.
pub(crate) fn due_outbox(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<OutboxItem>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.channel, o.mail_from, o.rcpt_to, r.raw, o.attempts, o.created_at
         FROM outbox o JOIN outbox_raw r ON r.id = o.id
         WHERE o.state = 'queued' AND o.next_attempt_at <= ?1
         ORDER BY o.next_attempt_at, o.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit as i64], |r| {
        Ok(OutboxItem {
            id: OutboxId(r.get(0)?),
            channel: r.get(1)?,
            mail_from: r.get(2)?,
            rcpt_to: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
            raw: r.get(4)?,
            attempts: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// When the next queued entry is due (unix ms), if any.
pub(crate) fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued'")?
        .query_row([], |r| r.get(0))?)
}

impl AttemptOutcome {
    /// What an attempt writes: the outbox row's state, its detail (reply or
    /// error), and the next attempt's time when deferred. Every backend
    /// writes these.
    pub(crate) fn as_row(&self) -> (Delivery, &str, Option<i64>) {
        match self {
            AttemptOutcome::Sent { reply } => (Delivery::Sent, reply.as_str(), None),
            AttemptOutcome::Deferred {
                error,
                next_attempt_at,
            } => (Delivery::Queued, error.as_str(), Some(*next_attempt_at)),
            AttemptOutcome::Failed { error } => (Delivery::Failed, error.as_str(), None),
        }
    }
}

/// A reply's thread ids, oldest first: the first message the customer saw
/// and the most recent ones (`recent`, newest first as read), without
/// naming the first twice. Every backend builds it from its two reads.
pub(crate) fn thread_ids(
    first: Option<(i64, String)>,
    mut recent: Vec<(i64, String)>,
) -> Vec<String> {
    recent.reverse();
    let mut thread = Vec::with_capacity(recent.len() + 1);
    if let Some((id, mid)) = first
        && recent.first().is_none_or(|(l, _)| *l != id)
    {
        thread.push(mid);
    }
    thread.extend(recent.into_iter().map(|(_, m)| m));
    thread
}

/// Record one attempt's outcome on the outbox row and its message.
pub(crate) fn record_attempt(
    conn: &Connection,
    id: OutboxId,
    outcome: &AttemptOutcome,
    now: i64,
) -> Result<(), StoreError> {
    let (state, detail, next) = outcome.as_row();
    let changed = conn
        .prepare_cached(
            "UPDATE outbox SET state = ?1, attempts = attempts + 1, last_error = ?2,
                    next_attempt_at = COALESCE(?3, next_attempt_at),
                    sent_at = CASE WHEN ?1 = 'sent' THEN ?4 ELSE sent_at END
             WHERE id = ?5 AND state = 'queued'",
        )?
        .execute(params![state.as_str(), detail, next, now, id.0])?;
    if changed == 0 {
        return Err(StoreError::Invalid(format!(
            "outbox entry {id} is not queued"
        )));
    }
    conn.prepare_cached(
        "UPDATE messages SET delivery = ?1, delivery_detail = ?2
         WHERE id = (SELECT message_id FROM outbox WHERE id = ?3)",
    )?
    .execute(params![state.as_str(), detail, id.0])?;
    Ok(())
}

/// Make every queued entry due now (`postdesk outbox flush`).
pub(crate) fn flush_outbox(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE outbox SET next_attempt_at = ?1 WHERE state = 'queued'")?
        .execute([now])?)
}

pub(crate) fn add_note(
    conn: &Connection,
    ticket: TicketId,
    author: &str,
    text: &str,
    now: i64,
) -> Result<(), StoreError> {
    let channel = ticket_channel(conn, ticket)?;
    conn.prepare_cached(
        "INSERT INTO messages (ticket_id, channel, direction, author, text, created_at)
         VALUES (?1, ?2, 'note', ?3, ?4, ?5)",
    )?
    .execute(params![ticket.0, channel, author, text, now])?;
    conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
        .execute(params![now, ticket.0])?;
    Ok(())
}

pub(crate) fn update_ticket(
    conn: &Connection,
    ticket: TicketId,
    u: &TicketUpdate,
    now: i64,
) -> Result<(), StoreError> {
    ticket_channel(conn, ticket)?;
    if let Some(status) = &u.status {
        conn.prepare_cached("UPDATE tickets SET status = ?1, updated_at = ?2 WHERE id = ?3")?
            .execute(params![status, now, ticket.0])?;
    }
    if let Some(priority) = &u.priority {
        conn.prepare_cached("UPDATE tickets SET priority = ?1, updated_at = ?2 WHERE id = ?3")?
            .execute(params![priority, now, ticket.0])?;
    }
    if let Some(owner) = &u.owner {
        let reason = owner.is_none().then_some("unassigned by an agent");
        conn.prepare_cached(if u.only_if_unassigned {
            "UPDATE tickets SET owner = ?1, unassigned_reason = ?2, updated_at = ?3
             WHERE id = ?4 AND owner IS NULL"
        } else {
            "UPDATE tickets SET owner = ?1, unassigned_reason = ?2, updated_at = ?3 WHERE id = ?4"
        })?
        .execute(params![owner, reason, now, ticket.0])?;
    }
    Ok(())
}

/// Set (or clear) a contact's owner; setting one for an address postdesk
/// has not seen yet creates the contact (an admin assigning a key account
/// before its first mail). Returns whether the contact was created.
pub(crate) fn set_contact_owner(
    conn: &Connection,
    email: &str,
    owner: Option<&str>,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE contacts SET owner = ?1 WHERE email = ?2")?
        .execute(params![owner, email])?;
    match (n, owner) {
        (0, None) => Err(StoreError::NotFound(format!("contact {email}"))),
        (0, Some(_)) if !crate::mail::is_valid_email(email) => Err(StoreError::Invalid(format!(
            "{email:?} is not an email address"
        ))),
        (0, Some(owner)) => {
            conn.prepare_cached(
                "INSERT INTO contacts (email, owner, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![email, owner, super::sqlite::now_ms()])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub(crate) fn set_user_available(
    conn: &Connection,
    user: &str,
    available: Option<bool>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO user_state (id, available, available_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET available = excluded.available, available_at = excluded.available_at",
    )?
    .execute(params![user, available, super::sqlite::now_ms()])?;
    Ok(())
}

/// What an API token may do: `agent` (work tickets, set one's own
/// availability) or `admin` (also channels, contact owners, others'
/// availability, opening tickets for any address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    Agent,
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Agent => "agent",
            TokenRole::Admin => "admin",
        }
    }

    /// `agent` or `admin`.
    pub fn parse(s: &str) -> Option<TokenRole> {
        match s {
            "agent" => Some(TokenRole::Agent),
            "admin" => Some(TokenRole::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role column as stored; anything unknown reads as the weaker `agent`.
fn role_of(s: &str) -> TokenRole {
    TokenRole::parse(s).unwrap_or(TokenRole::Agent)
}

/// A new API token: its sha256 (hex), user, role and expiry (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub hash: String,
    pub user: String,
    pub role: TokenRole,
    pub expires_at: Option<i64>,
}

pub(crate) fn insert_token(conn: &Connection, t: &NewApiToken, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO api_tokens (token_hash, user_id, created_at, role, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![t.hash, t.user, now, t.role.as_str(), t.expires_at])?;
    Ok(())
}

/// What a presented token grants: whose it is, its role, its expiry. The
/// caller compares `expires_at` with the time (an expired token is kept,
/// so that its user is told why, and listed until revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub user: String,
    pub role: TokenRole,
    pub expires_at: Option<i64>,
}

pub(crate) fn token_grant(conn: &Connection, hash: &str) -> Result<Option<TokenGrant>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT user_id, role, expires_at FROM api_tokens WHERE token_hash = ?1")?
        .query_row([hash], |r| {
            Ok(TokenGrant {
                user: r.get(0)?,
                role: role_of(&r.get::<_, String>(1)?),
                expires_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// An API token as an admin sees it: never the token, only an id (the
/// start of its sha256), its role, when it was issued and when it expires
/// (unix ms; `None`: never).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApiTokenInfo {
    pub id: String,
    pub role: TokenRole,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// Hex digits of a token's sha256 that name it for `users tokens`/`revoke`.
pub const TOKEN_ID_LEN: usize = 12;

pub(crate) fn tokens_of(conn: &Connection, user: &str) -> Result<Vec<ApiTokenInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT substr(token_hash, 1, ?2), created_at, role, expires_at FROM api_tokens
          WHERE user_id = ?1 ORDER BY created_at, token_hash",
    )?;
    let rows = stmt.query_map(params![user, TOKEN_ID_LEN as i64], |r| {
        Ok(ApiTokenInfo {
            id: r.get(0)?,
            role: role_of(&r.get::<_, String>(2)?),
            created_at: r.get(1)?,
            expires_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Delete `user`'s tokens whose id starts with `id` (at least 8 hex digits,
/// naming one token), or all of them; returns how many.
pub(crate) fn revoke_tokens(
    conn: &Connection,
    user: &str,
    id: Option<&str>,
) -> Result<usize, StoreError> {
    let Some(id) = id else {
        return Ok(conn
            .prepare_cached("DELETE FROM api_tokens WHERE user_id = ?1")?
            .execute([user])?);
    };
    let id = id.to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid(format!(
            "token id {id:?}: give 8 to 64 hex digits, as `users tokens` shows them"
        )));
    }
    let pattern = format!("{id}%");
    let matching: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = ?1 AND token_hash LIKE ?2",
        )?
        .query_row(params![user, pattern], |r| r.get(0))?;
    match matching {
        0 => Err(StoreError::NotFound(format!(
            "no token {id} for user {user}"
        ))),
        1 => Ok(conn
            .prepare_cached("DELETE FROM api_tokens WHERE user_id = ?1 AND token_hash LIKE ?2")?
            .execute(params![user, pattern])?),
        n => Err(StoreError::Invalid(format!(
            "token id {id} names {n} tokens of {user}: give more digits"
        ))),
    }
}

/// Outbox counts by state, for metrics and `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxCounts {
    pub queued: i64,
    /// Taken by the relay (bounced ones included).
    pub sent: i64,
    pub failed: i64,
    /// Of `sent`: reported undeliverable afterwards by a bounce.
    pub bounced: i64,
}

impl OutboxCounts {
    /// Count `n` rows in `state` (a row of `outbox_tally`); other states
    /// are not counted.
    pub(crate) fn count(&mut self, state: &str, n: i64) {
        match state {
            "queued" => self.queued = n,
            "sent" => self.sent = n,
            "failed" => self.failed = n,
            "bounced" => self.bounced = n,
            _ => {}
        }
    }
}

/// The triggers that keep `outbox_tally` in step (migration 7; created again
/// by migration 12, which rebuilds the outbox).
macro_rules! outbox_tally_triggers {
    () => {
        r#"
CREATE TRIGGER outbox_tally_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_tally (state, n) VALUES (new.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
    UPDATE outbox_tally SET n = n + 1
     WHERE state = 'bounced' AND new.state = 'sent'
       AND (SELECT delivery FROM messages WHERE id = new.message_id) IS 'failed';
END;
CREATE TRIGGER outbox_tally_update AFTER UPDATE OF state ON outbox
WHEN old.state IS NOT new.state BEGIN
    UPDATE outbox_tally SET n = n - 1 WHERE state = old.state;
    INSERT INTO outbox_tally (state, n) VALUES (new.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
    UPDATE outbox_tally SET n = n + (new.state = 'sent') - (old.state = 'sent')
     WHERE state = 'bounced'
       AND (SELECT delivery FROM messages WHERE id = new.message_id) IS 'failed';
END;
CREATE TRIGGER outbox_tally_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_tally SET n = n - 1 WHERE state = old.state;
    UPDATE outbox_tally SET n = n - 1
     WHERE state = 'bounced' AND old.state = 'sent'
       AND (SELECT delivery FROM messages WHERE id = old.message_id) IS 'failed';
END;
CREATE TRIGGER outbox_tally_delivery AFTER UPDATE OF delivery ON messages
WHEN (old.delivery IS 'failed') <> (new.delivery IS 'failed') BEGIN
    INSERT INTO outbox_tally (state, n)
        SELECT 'bounced', (CASE WHEN new.delivery IS 'failed' THEN 1 ELSE -1 END) * COUNT(*)
          FROM outbox WHERE message_id = new.id AND state = 'sent'
        ON CONFLICT (state) DO UPDATE SET n = n + excluded.n;
END;
"#
    };
}

/// Migration 7: the outbox counted as it changes, so that `/metrics`,
/// `/readyz` and `outbox status` read four rows instead of scanning an outbox
/// that only ever grows. Triggers keep `outbox_tally` in step with every
/// insert, state change and delete of an outbox row, and with a message's
/// delivery turning `failed` or back (a bounce after `sent`), whichever code
/// path makes the change. `bounced` counts the `sent` rows whose message's
/// delivery is `failed`; `outbox_message` lets the delivery trigger find a
/// message's rows without a scan. Not followed (nothing here does either):
/// an outbox row pointed at another message, a message deleted under its
/// outbox rows.
pub(crate) const MIGRATION_7: &str = concat!(
    r#"
CREATE TABLE outbox_tally (
    state  TEXT PRIMARY KEY,   -- an outbox state, or 'bounced'
    n      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO outbox_tally (state, n) SELECT state, COUNT(*) FROM outbox GROUP BY state;
INSERT INTO outbox_tally (state, n)
    SELECT 'bounced', COUNT(*) FROM outbox o JOIN messages m ON m.id = o.message_id
     WHERE o.state = 'sent' AND m.delivery = 'failed';
CREATE INDEX outbox_message ON outbox(message_id);

"#,
    outbox_tally_triggers!()
);

/// Migration 12: notices (mail postdesk sends on its own, to agents and
/// admins: `outbound::notify`) go through the outbox like replies, but
/// belong to no ticket: `outbox.message_id` becomes nullable and `notice`
/// says what kind of notice a row is. SQLite cannot drop a NOT NULL, so the
/// outbox (and `outbox_raw`, which references it) is rebuilt, ids kept; the
/// tally triggers are dropped first and made again. `install_secrets` holds
/// a random key made once per store: notices carry a tag signed with it, so
/// that one coming back in is recognised and a stranger cannot forge one.
pub(crate) const MIGRATION_12: &str = concat!(
    r#"
DROP TRIGGER outbox_tally_insert;
DROP TRIGGER outbox_tally_update;
DROP TRIGGER outbox_tally_delete;
DROP TRIGGER outbox_tally_delivery;
CREATE TABLE outbox_next (
    id               INTEGER PRIMARY KEY,
    message_id       INTEGER REFERENCES messages(id), -- NULL for a notice
    notice           TEXT,                            -- a notice's kind
    channel          TEXT NOT NULL,                   -- '' for a notice
    mail_from        TEXT NOT NULL,
    rcpt_to          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
INSERT INTO outbox_next (id, message_id, channel, mail_from, rcpt_to, state, attempts,
                         next_attempt_at, last_error, created_at, sent_at)
    SELECT id, message_id, channel, mail_from, rcpt_to, state, attempts,
           next_attempt_at, last_error, created_at, sent_at FROM outbox;
CREATE TABLE outbox_raw_next (
    id   INTEGER PRIMARY KEY REFERENCES outbox_next(id),
    raw  BLOB NOT NULL
);
INSERT INTO outbox_raw_next (id, raw) SELECT id, raw FROM outbox_raw;
DROP TABLE outbox_raw;
DROP TABLE outbox;
ALTER TABLE outbox_next RENAME TO outbox;
ALTER TABLE outbox_raw_next RENAME TO outbox_raw;
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'queued';
CREATE INDEX outbox_message ON outbox(message_id);
CREATE TABLE install_secrets (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO install_secrets (name, value) VALUES ('notice_key', lower(hex(randomblob(32))));
ALTER TABLE tickets ADD COLUMN routed_by TEXT; -- which routing rule chose the owner
"#,
    outbox_tally_triggers!()
);

pub(crate) const OUTBOX_TALLY: &str = "SELECT state, n FROM outbox_tally";

/// The outbox by state, read from `outbox_tally` (a few rows, whatever the
/// outbox's size).
pub(crate) fn outbox_counts(conn: &Connection) -> Result<OutboxCounts, StoreError> {
    let mut c = OutboxCounts::default();
    let mut stmt = conn.prepare_cached(OUTBOX_TALLY)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        c.count(&state, n);
    }
    Ok(c)
}

/// What a reply quotes: the ticket's last message from its customer side
/// (inbound, not automatic mail or a bounce), as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuoteSource {
    /// Who wrote it (address, name).
    pub from_email: String,
    pub from_name: Option<String>,
    /// Its Date header, as written.
    pub date: Option<String>,
    /// Its text as the ticket shows it.
    pub text: String,
    /// Its HTML, if it had a real HTML part (`cid:` references as sent).
    pub html: Option<String>,
    /// Its raw mail (none for form and API messages).
    pub raw: Option<Vec<u8>>,
}

pub(crate) fn quote_source(
    conn: &Connection,
    ticket: TicketId,
) -> Result<Option<QuoteSource>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT m.from_email, m.from_name, m.date,
                    COALESCE(m.text, CAST(substr(r.raw, m.text_at + 1) AS TEXT)),
                    m.html, CASE WHEN s.source IN ('smtp', 'imap') THEN r.raw END
               FROM messages m
               LEFT JOIN spool s ON s.id = m.spool_id
               LEFT JOIN spool_raw r ON r.id = m.spool_id
              WHERE m.ticket_id = ?1 AND m.direction = 'inbound'
                AND CASE WHEN json_valid(m.classification) THEN m.classification ->> '$.kind' END IS 'normal'
              ORDER BY m.id DESC LIMIT 1",
        )?
        .query_row([ticket.0], |r| {
            Ok(QuoteSource {
                from_email: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                from_name: r.get(1)?,
                date: r.get(2)?,
                text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                html: r.get(4)?,
                raw: r.get(5)?,
            })
        })
        .optional()?)
}

/// The raw mail of a ticket's messages that have one, newest first: the
/// customer side's as received, our replies as sent (where `cid:` images of
/// the conversation are found).
pub(crate) fn ticket_raws(conn: &Connection, ticket: TicketId) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(
                    (SELECT r.raw FROM spool s JOIN spool_raw r ON r.id = s.id
                      WHERE s.id = m.spool_id AND s.source IN ('smtp', 'imap')),
                    (SELECT x.raw FROM outbox o JOIN outbox_raw x ON x.id = o.id
                      WHERE o.message_id = m.id))
           FROM messages m WHERE m.ticket_id = ?1 AND m.direction != 'note' ORDER BY m.id DESC",
    )?;
    let rows = stmt.query_map([ticket.0], |r| r.get::<_, Option<Vec<u8>>>(0))?;
    let mut out = Vec::new();
    for raw in rows {
        out.extend(raw?);
    }
    Ok(out)
}

/// What composing a reply needs from a ticket, without loading every message.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub ticket: TicketId,
    pub subject: String,
    /// The ticket's secret for the subject tag (`[#N-secret]`).
    pub secret: String,
    pub channel: String,
    pub contact: ContactRef,
    /// Message ids of the thread (inbound and outbound), oldest first: the
    /// first one and the most recent `recent` ones. What the customer never
    /// saw is left out: our replies whose delivery failed (refused, expired
    /// or bounced) and the bounce reports themselves. Queued and sent
    /// replies stay.
    pub thread: Vec<String>,
    /// Other contacts who wrote in the ticket (candidates for Cc).
    pub participants: Vec<ContactRef>,
}

/// The ticket's (`?1`) messages a reply's References may name, as `id,
/// message_id`: those with a Message-ID the customer saw — not notes, not
/// our replies whose delivery failed, not bounce reports. One text for the
/// first and the recent ones.
macro_rules! thread_seen_by_customer {
    () => {
        "SELECT id, message_id FROM messages WHERE ticket_id = ?1 AND direction != 'note'
         AND message_id IS NOT NULL AND delivery IS NOT 'failed'
         AND CASE WHEN json_valid(classification) THEN classification ->> '$.kind' END IS NOT 'bounce'"
    };
}

pub(crate) fn reply_context(
    conn: &Connection,
    ticket: TicketId,
    recent: usize,
) -> Result<ReplyContext, StoreError> {
    let (subject, channel, email, name, secret) = conn
        .prepare_cached(
            "SELECT t.subject, t.channel, c.email, c.name, t.secret FROM tickets t
             JOIN contacts c ON c.id = t.contact_id WHERE t.id = ?1",
        )?
        .query_row([ticket.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("ticket {ticket}")))?;
    let first: Option<(i64, String)> = conn
        .prepare_cached(concat!(thread_seen_by_customer!(), " ORDER BY id LIMIT 1"))?
        .query_row([ticket.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut stmt = conn.prepare_cached(concat!(
        thread_seen_by_customer!(),
        " ORDER BY id DESC LIMIT ?2"
    ))?;
    let last: Vec<(i64, String)> = stmt
        .query_map(params![ticket.0, recent as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let thread = thread_ids(first, last);
    let mut stmt = conn.prepare_cached(
        "SELECT c.email, c.name FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
         WHERE p.ticket_id = ?1 ORDER BY c.email",
    )?;
    let participants = stmt
        .query_map([ticket.0], |r| {
            Ok(ContactRef {
                email: r.get(0)?,
                name: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReplyContext {
        ticket,
        subject,
        secret,
        channel,
        contact: ContactRef { email, name },
        thread,
        participants,
    })
}
