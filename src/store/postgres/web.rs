//! The web inbox's part of the store in PostgreSQL: web users, sessions,
//! one-time sign-in links, the inbox's pages and counts, a message's HTML
//! and the activity counter — what `store/web.rs` does for SQLite, same
//! rules. Full-text search reads `message_search` (schema step 17: a
//! `tsvector` per message, written by the indexer): the words typed, split
//! as [`crate::store::search_words`] splits them for SQLite, are folded and
//! made a `tsquery` by [`super::words::query`] (each part a quoted lexeme,
//! so nothing typed is read as query syntax) and bound as one parameter —
//! never spliced into the SQL.

use tokio_postgres::types::ToSql;

use super::sql::{Db, bind, col, exec, row, rows};
use super::tickets::ticket_row;
use crate::store::queries::{CLOSED_STATUSES, MESSAGE_RAW, TICKET_COLUMNS};
use crate::store::{
    ContactView, InboxCounts, InboxQuery, InboxView, NewSigninLink, NewWebSession, StoreError,
    TicketId, TicketSummary, TokenRole, WebSession, WebUser,
};

pub(super) async fn set_web_user(
    db: &Db,
    user: &str,
    record: &WebUser,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        db,
        "INSERT INTO web_users (user_id, password, role, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET password = $2, role = $3, updated_at = $4",
        &[&user, &record.password, &record.role.as_str(), &now],
    )
    .await?;
    end_sessions(db, user).await?;
    Ok(())
}

pub(super) async fn web_user(db: &Db, user: &str) -> Result<Option<WebUser>, StoreError> {
    match row(
        db,
        "SELECT password, role FROM web_users WHERE user_id = $1",
        &[&user],
    )
    .await?
    {
        Some(r) => Ok(Some(WebUser {
            password: col(&r, 0)?,
            role: TokenRole::parse(col(&r, 1)?).unwrap_or(TokenRole::Agent),
        })),
        None => Ok(None),
    }
}

pub(super) async fn create_session(db: &Db, s: &NewWebSession, now: i64) -> Result<(), StoreError> {
    // Expired sessions go when anyone signs in (they are refused anyway).
    exec(
        db,
        "DELETE FROM web_sessions WHERE expires_at <= $1",
        &[&now],
    )
    .await?;
    exec(
        db,
        "INSERT INTO web_sessions (id_hash, user_id, csrf, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&s.id_hash, &s.user, &s.csrf, &now, &s.expires_at],
    )
    .await?;
    Ok(())
}

pub(super) async fn web_session(db: &Db, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
    match row(
        db,
        "SELECT s.user_id, COALESCE(w.role, 'agent'), s.csrf, s.expires_at
           FROM web_sessions s LEFT JOIN web_users w ON w.user_id = s.user_id
          WHERE s.id_hash = $1",
        &[&id_hash],
    )
    .await?
    {
        Some(r) => Ok(Some(WebSession {
            user: col(&r, 0)?,
            role: TokenRole::parse(col(&r, 1)?).unwrap_or(TokenRole::Agent),
            csrf: col(&r, 2)?,
            expires_at: col(&r, 3)?,
        })),
        None => Ok(None),
    }
}

pub(super) async fn end_session(db: &Db, id_hash: &str) -> Result<(), StoreError> {
    exec(
        db,
        "DELETE FROM web_sessions WHERE id_hash = $1",
        &[&id_hash],
    )
    .await?;
    Ok(())
}

pub(super) async fn end_sessions(db: &Db, user: &str) -> Result<usize, StoreError> {
    let n = exec(db, "DELETE FROM web_sessions WHERE user_id = $1", &[&user]).await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) async fn create_signin_link(
    db: &Db,
    link: &NewSigninLink,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        db,
        "DELETE FROM signin_links WHERE expires_at <= $1",
        &[&now],
    )
    .await?;
    exec(
        db,
        "INSERT INTO signin_links (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        &[&link.token_hash, &link.user, &now, &link.expires_at],
    )
    .await?;
    Ok(())
}

/// Delete the link, answering its user if it had not expired at `now`.
pub(super) async fn use_signin_link(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    match row(
        db,
        "DELETE FROM signin_links WHERE token_hash = $1 RETURNING user_id, expires_at",
        &[&token_hash],
    )
    .await?
    {
        Some(r) => {
            let expires: i64 = col(&r, 1)?;
            Ok((expires > now).then(|| col(&r, 0)).transpose()?)
        }
        None => Ok(None),
    }
}

/// One page of an inbox view. The WHERE clause holds only the filters
/// given, each with a bound parameter.
pub(super) async fn inbox(
    db: &mut deadpool_postgres::Object,
    q: &InboxQuery,
) -> Result<Vec<TicketSummary>, StoreError> {
    let words: Vec<String> = q
        .search
        .as_deref()
        .map(crate::store::search_words)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_string)
        .collect();
    // `None` inside: words typed, none with a letter or digit to look
    // for (the query is NULL: nothing matches).
    let search = (!words.is_empty()).then(|| super::words::query(&words));
    let contact = q.contact.as_deref().map(crate::mail::normalize_email);
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let open = format!("COALESCE(t.status, '') NOT IN {CLOSED_STATUSES}");
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    match &q.view {
        InboxView::Mine(user) => {
            clauses.push(bind(&mut params, "t.owner = #", user));
            clauses.push(open.clone());
        }
        InboxView::Unassigned => clauses.push(format!("t.owner IS NULL AND {open}")),
        InboxView::Open => clauses.push(open.clone()),
        InboxView::Channel(c) => {
            clauses.push(bind(&mut params, "t.channel = #", c));
            clauses.push(open.clone());
        }
        InboxView::Closed => clauses.push(format!("t.status IN {CLOSED_STATUSES}")),
    }
    if let Some(s) = &q.status {
        clauses.push(bind(&mut params, "t.status = #", s));
    }
    if let Some(o) = &q.owner {
        clauses.push(bind(&mut params, "t.owner = #", o));
    }
    if let Some(c) = &contact {
        clauses.push(bind(&mut params, "c.email = #", c));
    }
    if let Some(tsquery) = &search {
        // Every message committed before this search is in its index.
        super::indexer::flush(db).await?;
        // The tsquery in a scalar subquery: computed once per page, whatever
        // plan reads `message_search` (as a plain cast it would be made for
        // each row a sequential scan filters).
        clauses.push(bind(
            &mut params,
            "t.id IN (SELECT s.ticket_id FROM message_search s
                       WHERE s.words @@ (SELECT #::text::tsquery))",
            tsquery,
        ));
    }
    if let Some((at, id)) = &q.before {
        let a = bind(&mut params, "#", at);
        let i = bind(&mut params, "#", id);
        clauses.push(format!(
            "(t.updated_at < {a} OR (t.updated_at = {a} AND t.id < {i}))"
        ));
    }
    let l = bind(&mut params, "#", &limit);
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id
         WHERE {} ORDER BY t.updated_at DESC, t.id DESC LIMIT {l}",
        clauses.join(" AND ")
    );
    rows(db, &sql, &params)
        .await?
        .iter()
        .map(ticket_row)
        .collect()
}

pub(super) async fn inbox_counts(db: &Db, user: &str) -> Result<InboxCounts, StoreError> {
    let open = format!("(COALESCE(status, '') NOT IN {CLOSED_STATUSES})");
    // One pass over the covering index `tickets_counts` (step 18), by channel.
    let per_channel = rows(
        db,
        &format!(
            "SELECT channel, COUNT(*) FILTER (WHERE owner = $1 AND {open}),
                    COUNT(*) FILTER (WHERE owner IS NULL AND {open}),
                    COUNT(*) FILTER (WHERE {open}), COUNT(*) FILTER (WHERE NOT {open})
               FROM tickets GROUP BY channel ORDER BY channel COLLATE \"C\""
        ),
        &[&user],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(crate::store::web::ChannelCounts {
            channel: col(r, 0)?,
            mine: col(r, 1)?,
            unassigned: col(r, 2)?,
            open: col(r, 3)?,
            closed: col(r, 4)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(InboxCounts::from_channels(per_channel))
}

pub(super) async fn message_html(
    db: &Db,
    ticket: TicketId,
    position: usize,
) -> Result<Option<String>, StoreError> {
    let offset = i64::try_from(position).unwrap_or(i64::MAX);
    match row(
        db,
        "SELECT html FROM messages WHERE ticket_id = $1 ORDER BY id LIMIT 1 OFFSET $2",
        &[&ticket.0, &offset],
    )
    .await?
    {
        Some(r) => col(&r, 0),
        None => Ok(None),
    }
}

pub(super) async fn message_raw(
    db: &Db,
    ticket: TicketId,
    position: usize,
) -> Result<Option<Vec<u8>>, StoreError> {
    let offset = i64::try_from(position).unwrap_or(i64::MAX);
    match row(
        db,
        &format!(
            "SELECT {MESSAGE_RAW}
           FROM messages m WHERE m.ticket_id = $1 ORDER BY m.id LIMIT 1 OFFSET $2"
        ),
        &[&ticket.0, &offset],
    )
    .await?
    {
        Some(r) => col(&r, 0),
        None => Ok(None),
    }
}

pub(super) async fn contact_view(db: &Db, email: &str) -> Result<Option<ContactView>, StoreError> {
    match row(
        db,
        "SELECT c.email, c.name, c.owner, (SELECT COUNT(*) FROM tickets t WHERE t.contact_id = c.id)
           FROM contacts c WHERE c.email = $1",
        &[&email],
    )
    .await?
    {
        Some(r) => Ok(Some(ContactView {
            email: col(&r, 0)?,
            name: col(&r, 1)?,
            owner: col(&r, 2)?,
            tickets: col(&r, 3)?,
        })),
        None => Ok(None),
    }
}

pub(super) async fn activity(db: &Db) -> Result<i64, StoreError> {
    match row(db, "SELECT n FROM web_activity WHERE id = 1", &[]).await? {
        Some(r) => col(&r, 0),
        None => Err(StoreError::Schema("web_activity has no row".into())),
    }
}
