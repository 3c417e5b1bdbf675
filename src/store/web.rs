//! What the agents' web inbox keeps: users' password hashes and web roles,
//! sign-in sessions and one-time sign-in links, the inbox's ticket lists
//! (views, filters, full-text search, paging by last activity) and counts.
//!
//! The trait [`WebStore`] is the backend-neutral part (plain types); the
//! SQLite statements below are its implementation's. Secrets are never
//! stored: a session or sign-in link is kept as the sha256 (hex) of its
//! token, a password as its argon2id PHC string (hashed by the caller).

use rusqlite::{Connection, OptionalExtension, params};

use super::{ContactView, StoreFuture, TicketId, TicketSummary, TokenRole};
use crate::store::StoreError;

/// The full-text index of messages (subject, body, sender), the trigger
/// that indexes each new message and the statement that indexes those
/// already stored; `$new` / `$old` the rowid of the new message `new` /
/// a stored one `m`. Only the index is kept (`content = ''`), so the words
/// of a message are the text it had when it was indexed.
macro_rules! search_index {
    ($new:literal, $old:literal) => {
        concat!(
            "CREATE VIRTUAL TABLE message_search USING fts5(
    subject, body, sender, content = '', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (rowid, subject, body, sender) VALUES (
        ", $new, ",
        new.subject,
        COALESCE(new.text, (SELECT CAST(substr(r.raw, new.text_at + 1) AS TEXT)
                            FROM spool_raw r WHERE r.id = new.spool_id)),
        concat_ws(' ', new.from_email, new.from_name,
                  (SELECT c.email || ' ' || COALESCE(c.name, '')
                     FROM tickets t JOIN contacts c ON c.id = t.contact_id
                    WHERE t.id = new.ticket_id)));
END;
INSERT INTO message_search (rowid, subject, body, sender)
    SELECT ", $old, ", m.subject,
           COALESCE(m.text, (SELECT CAST(substr(r.raw, m.text_at + 1) AS TEXT)
                             FROM spool_raw r WHERE r.id = m.spool_id)),
           concat_ws(' ', m.from_email, m.from_name, c.email, c.name)
      FROM messages m JOIN tickets t ON t.id = m.ticket_id JOIN contacts c ON c.id = t.contact_id;
"
        )
    };
}

/// The schema: web users, sessions, sign-in links, the activity index and
/// the full-text index of messages with the triggers that keep it.
pub(crate) const MIGRATION_11: &str = concat!(
    r#"
CREATE TABLE web_users (
    user_id     TEXT PRIMARY KEY,
    password    TEXT,                        -- argon2id PHC string; NULL: sign-in links only
    role        TEXT NOT NULL DEFAULT 'agent', -- agent | admin
    updated_at  INTEGER NOT NULL
);
CREATE TABLE web_sessions (
    id_hash     TEXT PRIMARY KEY,            -- sha256 hex of the cookie's token
    user_id     TEXT NOT NULL,
    csrf        TEXT NOT NULL,               -- the forms' token for this session
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
CREATE TABLE signin_links (
    token_hash  TEXT PRIMARY KEY,            -- sha256 hex of the link's token
    user_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX tickets_activity ON tickets(updated_at, id);

-- A delivery change (queued -> sent, failed, bounced) is activity on its ticket.
CREATE TRIGGER messages_delivery_activity AFTER UPDATE OF delivery ON messages
WHEN old.delivery IS NOT new.delivery BEGIN
    UPDATE tickets
       SET updated_at = max(updated_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
     WHERE id = new.ticket_id;
END;

-- A counter of changes to tickets and messages: live pages poll it.
CREATE TABLE web_activity (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   INTEGER NOT NULL
);
INSERT INTO web_activity (id, n) VALUES (1, 0);
CREATE TRIGGER tickets_insert_activity AFTER INSERT ON tickets BEGIN
    UPDATE web_activity SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tickets_update_activity AFTER UPDATE ON tickets BEGIN
    UPDATE web_activity SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER messages_insert_activity AFTER INSERT ON messages BEGIN
    UPDATE web_activity SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER messages_update_activity AFTER UPDATE OF delivery, delivery_detail ON messages BEGIN
    UPDATE web_activity SET n = n + 1 WHERE id = 1;
END;

"#,
    search_index!("new.id", "m.id")
);

/// Step 20: the search index's rowid carries the message's ticket —
/// `ticket_id << 32 | message id` — so a search reads ticket numbers off the
/// index (`rowid >> 32`) instead of looking up every matching message: on
/// a million messages, a common word's 200,000 matches cost ≈ 150 ms of
/// lookups before. Rebuilt from the messages (the index keeps no text of
/// its own). Message ids stay below 2^32 (4 billion messages) and tickets
/// never change (no message moves to another ticket).
pub(crate) const MIGRATION_20: &str = concat!(
    "DROP TRIGGER message_search_insert;\nDROP TABLE message_search;\n",
    search_index!(
        "(new.ticket_id << 32) | new.id",
        "(m.ticket_id << 32) | m.id"
    )
);

/// A signed-in browser's session, as its cookie's hash finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSession {
    pub user: String,
    /// The user's web role (`users password --role`), read at each request.
    pub role: TokenRole,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewWebSession {
    /// sha256 hex of the cookie's token.
    pub id_hash: String,
    pub user: String,
    pub csrf: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// A one-time sign-in link to store: the sha256 (hex) of its token, for
/// `user`, until `expires_at`.
#[derive(Debug, Clone)]
pub struct NewSigninLink {
    /// sha256 hex of the link's token.
    pub token_hash: String,
    pub user: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// A user's web sign-in record.
#[derive(Debug, Clone, PartialEq)]
pub struct WebUser {
    /// argon2id PHC string, if a password is set.
    pub password: Option<String>,
    pub role: TokenRole,
}

/// Which tickets an inbox view shows (open = any status but closed,
/// resolved or solved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxView {
    /// Open tickets owned by the user.
    Mine(String),
    /// Open tickets without an owner.
    Unassigned,
    /// Every open ticket.
    Open,
    /// Open tickets of one channel.
    Channel(String),
    /// Closed, resolved or solved tickets.
    Closed,
}

/// One page of an inbox: a view, optional filters and words to search,
/// most recent activity first, after the cursor `before` if given.
#[derive(Debug, Clone)]
pub struct InboxQuery {
    pub view: InboxView,
    pub status: Option<String>,
    pub owner: Option<String>,
    pub contact: Option<String>,
    /// Words that must all occur (subject, body or sender/contact), each as
    /// a prefix; FTS syntax in them is taken literally.
    pub search: Option<String>,
    /// (updated_at, ticket number) of the last ticket of the previous page.
    pub before: Option<(i64, i64)>,
    pub limit: usize,
}

/// Open tickets per view, for the inbox's navigation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboxCounts {
    pub mine: i64,
    pub unassigned: i64,
    pub open: i64,
    pub closed: i64,
    /// Open tickets per channel id (channels with none are absent).
    pub channels: Vec<(String, i64)>,
}

/// The web inbox's part of the store.
///
/// Part of [`super::Store`]; every write resolves only after its transaction
/// is durably committed.
pub trait WebStore: Send + Sync {
    /// Set a user's web sign-in record: password hash (`None` clears it)
    /// and web role. Ends the user's sessions: a new password signs every
    /// browser out.
    fn set_web_user(&self, user: String, record: WebUser) -> StoreFuture<'_, ()>;

    /// A user's web sign-in record, if any.
    fn web_user(&self, user: String) -> StoreFuture<'_, Option<WebUser>>;

    /// Store a new session.
    fn create_session(&self, session: NewWebSession) -> StoreFuture<'_, ()>;

    /// The session whose token hashes to `id_hash` (expired ones included:
    /// the caller checks).
    fn web_session(&self, id_hash: String) -> StoreFuture<'_, Option<WebSession>>;

    /// End one session (sign out); ending an unknown one is not an error.
    fn end_session(&self, id_hash: String) -> StoreFuture<'_, ()>;

    /// End every session of `user`; returns how many.
    fn end_sessions(&self, user: String) -> StoreFuture<'_, usize>;

    /// Store a one-time sign-in link's hash for its user, until it expires.
    fn create_signin_link(&self, link: NewSigninLink) -> StoreFuture<'_, ()>;

    /// Use a sign-in link: delete it, returning its user if it existed and
    /// had not expired at `now`.
    fn use_signin_link(&self, token_hash: String, now: i64) -> StoreFuture<'_, Option<String>>;

    /// One page of an inbox view.
    fn inbox(&self, query: InboxQuery) -> StoreFuture<'_, Vec<TicketSummary>>;

    /// Tickets per view for `user`.
    fn inbox_counts(&self, user: String) -> StoreFuture<'_, InboxCounts>;

    /// The HTML part of a ticket's message at `position` (0-based, in the
    /// ticket's order), if it has one.
    fn message_html(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<String>>;

    /// The raw mail of a ticket's message at `position` (0-based, in the
    /// ticket's order): an inbound message as received by mail, a reply as
    /// composed for the relay; `None` for a note, a form submission, or no
    /// such message.
    fn message_raw(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// One contact by address (normalised by the caller), with its owner
    /// and its number of tickets.
    fn contact_view(&self, email: String) -> StoreFuture<'_, Option<ContactView>>;

    /// A counter that grows whenever any ticket changes (a message, a
    /// note, a status or owner, a delivery): live pages poll it.
    fn activity(&self) -> StoreFuture<'_, i64>;
}

pub(crate) fn set_web_user(
    conn: &Connection,
    user: &str,
    record: &WebUser,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO web_users (user_id, password, role, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id) DO UPDATE SET password = ?2, role = ?3, updated_at = ?4",
    )?
    .execute(params![user, record.password, record.role.as_str(), now])?;
    end_sessions(conn, user)?;
    Ok(())
}

pub(crate) fn web_user(conn: &Connection, user: &str) -> Result<Option<WebUser>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT password, role FROM web_users WHERE user_id = ?1")?
        .query_row([user], |r| {
            Ok(WebUser {
                password: r.get(0)?,
                role: TokenRole::parse(&r.get::<_, String>(1)?).unwrap_or(TokenRole::Agent),
            })
        })
        .optional()?)
}

pub(crate) fn create_session(
    conn: &Connection,
    s: &NewWebSession,
    now: i64,
) -> Result<(), StoreError> {
    // Expired sessions go when anyone signs in (they are refused anyway).
    conn.prepare_cached("DELETE FROM web_sessions WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.prepare_cached(
        "INSERT INTO web_sessions (id_hash, user_id, csrf, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![s.id_hash, s.user, s.csrf, now, s.expires_at])?;
    Ok(())
}

pub(crate) fn web_session(
    conn: &Connection,
    id_hash: &str,
) -> Result<Option<WebSession>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT s.user_id, COALESCE(w.role, 'agent'), s.csrf, s.expires_at
               FROM web_sessions s LEFT JOIN web_users w ON w.user_id = s.user_id
              WHERE s.id_hash = ?1",
        )?
        .query_row([id_hash], |r| {
            Ok(WebSession {
                user: r.get(0)?,
                role: TokenRole::parse(&r.get::<_, String>(1)?).unwrap_or(TokenRole::Agent),
                csrf: r.get(2)?,
                expires_at: r.get(3)?,
            })
        })
        .optional()?)
}

pub(crate) fn end_session(conn: &Connection, id_hash: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM web_sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

pub(crate) fn end_sessions(conn: &Connection, user: &str) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM web_sessions WHERE user_id = ?1")?
        .execute([user])?)
}

pub(crate) fn create_signin_link(
    conn: &Connection,
    link: &NewSigninLink,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM signin_links WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.prepare_cached(
        "INSERT INTO signin_links (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![link.token_hash, link.user, now, link.expires_at])?;
    Ok(())
}

pub(crate) fn use_signin_link(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let found: Option<(String, i64)> = conn
        .prepare_cached("SELECT user_id, expires_at FROM signin_links WHERE token_hash = ?1")?
        .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    conn.prepare_cached("DELETE FROM signin_links WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(found.and_then(|(user, expires)| (expires > now).then_some(user)))
}

/// The words of a search as typed: split at white space, control
/// characters (NUL included) and `"`, those with a letter or digit, at
/// most 16. Both backends search for exactly these, each as a prefix, all
/// required (SQLite: [`fts_query`]; PostgreSQL: `postdesk_search_query`,
/// its schema step 17).
pub fn search_words(words: &str) -> Vec<&str> {
    words
        .split(|c: char| c.is_whitespace() || c.is_control() || c == '"')
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .take(16)
        .collect()
}

/// `words` as an FTS5 query: every word a quoted prefix (so `"` and FTS
/// operators in them are plain text), all required. `None` if no word.
pub fn fts_query(words: &str) -> Option<String> {
    let terms: Vec<String> = search_words(words)
        .into_iter()
        .map(|w| format!("\"{w}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

/// The statement and parameters of an inbox page: only the filters given
/// are in its WHERE clause, each value bound as a parameter.
pub(crate) fn inbox_query(q: &InboxQuery) -> (String, Vec<rusqlite::types::Value>) {
    let closed = super::queries::CLOSED_STATUSES;
    let columns = super::queries::TICKET_COLUMNS;
    let open = format!("COALESCE(t.status, '') NOT IN {closed}");
    let mut w = super::sqlite::Filters::default();
    match &q.view {
        InboxView::Mine(user) => w.eq("t.owner", Some(user)),
        InboxView::Unassigned => w.and("t.owner IS NULL"),
        InboxView::Open => {}
        InboxView::Channel(c) => w.eq("t.channel", Some(c)),
        InboxView::Closed => w.and(format!("t.status IN {closed}")),
    }
    if q.view != InboxView::Closed {
        w.and(open);
    }
    w.eq("t.status", q.status.as_deref());
    w.eq("t.owner", q.owner.as_deref());
    let contact = q.contact.as_deref().map(crate::mail::normalize_email);
    w.eq("c.email", contact.as_deref());
    if let Some(search) = q.search.as_deref().and_then(fts_query) {
        let p = w.bind(search);
        w.and(format!(
            "t.id IN (SELECT rowid >> 32 FROM message_search WHERE message_search MATCH {p})"
        ));
    }
    if let Some((at, id)) = q.before {
        let (at, id) = (w.bind(at), w.bind(id));
        w.and(format!(
            "(t.updated_at < {at} OR (t.updated_at = {at} AND t.id < {id}))"
        ));
    }
    let limit = w.bind(q.limit as i64);
    let sql = format!(
        "SELECT {columns} FROM tickets t JOIN contacts c ON c.id = t.contact_id
         {} ORDER BY t.updated_at DESC, t.id DESC LIMIT {limit}",
        w.sql()
    );
    (sql, w.params)
}

pub(crate) fn inbox(conn: &Connection, q: &InboxQuery) -> Result<Vec<TicketSummary>, StoreError> {
    let (sql, params) = inbox_query(q);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params_from_iter(params),
        super::sqlite::ticket_row,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The views' counts by channel: one pass over the covering index
/// `tickets_counts` (step 18). `?1` is the user whose *Mine* it counts.
pub(crate) fn counts_sql() -> String {
    let closed = super::queries::CLOSED_STATUSES;
    let open = format!("(COALESCE(status, '') NOT IN {closed})");
    format!(
        "SELECT channel, SUM(owner = ?1 AND {open}), SUM(owner IS NULL AND {open}),
                SUM({open}), SUM(NOT {open})
           FROM tickets GROUP BY channel ORDER BY channel"
    )
}

pub(crate) fn inbox_counts(conn: &Connection, user: &str) -> Result<InboxCounts, StoreError> {
    let mut stmt = conn.prepare_cached(&counts_sql())?;
    let per_channel = stmt
        .query_map([user], |r| {
            Ok(ChannelCounts {
                channel: r.get(0)?,
                mine: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                unassigned: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                open: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                closed: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InboxCounts::from_channels(per_channel))
}

/// One channel's counts, as both backends read them in one pass.
pub(crate) struct ChannelCounts {
    pub channel: String,
    pub mine: i64,
    pub unassigned: i64,
    pub open: i64,
    pub closed: i64,
}

impl InboxCounts {
    /// The views' counts from each channel's, in the channels' order;
    /// the per-channel views list the channels with open tickets.
    pub(crate) fn from_channels(per_channel: Vec<ChannelCounts>) -> Self {
        let mut counts = InboxCounts {
            mine: 0,
            unassigned: 0,
            open: 0,
            closed: 0,
            channels: Vec::new(),
        };
        for c in per_channel {
            counts.mine += c.mine;
            counts.unassigned += c.unassigned;
            counts.open += c.open;
            counts.closed += c.closed;
            if c.open > 0 {
                counts.channels.push((c.channel, c.open));
            }
        }
        counts
    }
}

pub(crate) fn message_html(
    conn: &Connection,
    ticket: TicketId,
    position: usize,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT html FROM messages WHERE ticket_id = ?1 ORDER BY id LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![ticket.0, position as i64], |r| r.get(0))
        .optional()?
        .flatten())
}

pub(crate) fn message_raw(
    conn: &Connection,
    ticket: TicketId,
    position: usize,
) -> Result<Option<Vec<u8>>, StoreError> {
    let raw = super::queries::MESSAGE_RAW;
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {raw}
               FROM messages m WHERE m.ticket_id = ?1 ORDER BY m.id LIMIT 1 OFFSET ?2"
        ))?
        .query_row(params![ticket.0, position as i64], |r| r.get(0))
        .optional()?
        .flatten())
}

pub(crate) fn contact_view(
    conn: &Connection,
    email: &str,
) -> Result<Option<ContactView>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT c.email, c.name, c.owner, (SELECT COUNT(*) FROM tickets t WHERE t.contact_id = c.id)
               FROM contacts c WHERE c.email = ?1",
        )?
        .query_row([email], |r| {
            Ok(ContactView {
                email: r.get(0)?,
                name: r.get(1)?,
                owner: r.get(2)?,
                tickets: r.get(3)?,
            })
        })
        .optional()?)
}

pub(crate) fn activity(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT n FROM web_activity WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    /// Whatever an agent types is words, never FTS syntax: quotes,
    /// operators and column filters are taken literally.
    #[test]
    fn search_words_become_quoted_prefixes() {
        assert_eq!(fts_query("  "), None);
        assert_eq!(fts_query("\"\" - *"), None);
        assert_eq!(
            fts_query("invoice OR x"),
            Some("\"invoice\"* AND \"OR\"* AND \"x\"*".into())
        );
        assert_eq!(
            fts_query("subject:foo\"bar"),
            Some("\"subject:foo\"* AND \"bar\"*".into())
        );
        assert_eq!(fts_query("a\0b\u{7}"), Some("\"a\"* AND \"b\"*".into()));
    }
}
