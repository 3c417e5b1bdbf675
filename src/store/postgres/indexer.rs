//! The search indexer: writes the `message_search` rows of the messages
//! queued in `search_pending` (schema step 21), after the transactions
//! that stored them, so the group committer never waits for it. The words
//! are made here ([`super::words`]), not by PostgreSQL: the server only
//! stores a ready `tsvector`. One task per node; nodes share the queue
//! (`SKIP LOCKED`). Woken by the committer after each commit and every
//! second (another node's messages). When `search_pending` is empty it
//! re-indexes, a batch at a time, the messages of `search_redo` (those
//! indexed by PostgreSQL's own word building before schema step 23), so
//! that every row is spelled as a search now asks.
//!
//! A search does not wait for this task: it indexes what is still queued
//! itself first ([`flush`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, Transaction};
use tokio::sync::Notify;

use super::sql::Savepoints;
use super::{pg_err, pool_err, words};
use crate::store::StoreError;

/// Messages indexed per transaction, at most.
const BATCH: i64 = 500;
/// Bytes of body read per transaction, at most (beyond the first
/// message's): what a batch holds in memory while its words are made.
const BATCH_BYTES: i64 = 16 << 20;
/// Most rounds of [`flush`] before a search (50,000 messages).
const FLUSH_ROUNDS: usize = 100;
/// How long a wake-up waits for more messages to be committed.
const GATHER: Duration = Duration::from_millis(200);
/// How often the queue is looked at without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// The two queues of messages to index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    /// Stored and not indexed yet: what a search waits for.
    Pending,
    /// Indexed before schema step 23, to be indexed again (searches find
    /// them meanwhile).
    Redo,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Pending => "search_pending",
            Queue::Redo => "search_redo",
        }
    }
}

/// The running indexer; stopped when dropped.
pub(super) struct Indexer {
    wake: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl Indexer {
    pub(super) fn start(pool: Pool) -> Indexer {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(pool, wake.clone())).abort_handle();
        Indexer { wake, task }
    }

    /// What the committer calls after a commit that may have queued
    /// messages.
    pub(super) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(pool: Pool, wake: Arc<Notify>) {
    loop {
        let done = match pool.get().await.map_err(pool_err) {
            Ok(mut db) => match index(&mut db, BATCH, false, Queue::Pending).await {
                Ok(0) => index(&mut db, BATCH, false, Queue::Redo).await,
                other => other,
            },
            Err(e) => Err(e),
        };
        match done {
            Ok(n) if n > 0 => {
                metrics::counter!("postdesk_search_indexed_total").increment(n as u64);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "search indexing failed; retrying"),
        }
        if tokio::time::timeout(POLL, wake.notified()).await.is_ok() {
            // Woken by a commit: let more gather, so that the index is
            // written in fewer, larger transactions beside the committer's.
            tokio::time::sleep(GATHER).await;
        }
    }
}

/// Index up to `n` messages of `queue` in one transaction; how many were
/// taken off the queue (indexed, or left out as unindexable). `wait`:
/// also those another indexer is writing at this moment (waiting for it),
/// so that everything committed before is indexed after.
pub(super) async fn index(
    db: &mut Object,
    n: i64,
    wait: bool,
    queue: Queue,
) -> Result<usize, StoreError> {
    let tx = db.transaction().await.map_err(pg_err)?;
    let taken = index_in(&tx, n, wait, queue).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(taken)
}

/// [`index`] inside the transaction `tx` (not committed). The index is
/// written without waiting for its flush: lost in a crash, it is undone
/// whole — the queue rows taken with it — and done again.
pub(super) async fn index_in(
    tx: &Transaction<'_>,
    n: i64,
    wait: bool,
    queue: Queue,
) -> Result<usize, StoreError> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg_err)?;
    let table = queue.table();
    let lock = if wait { "" } else { "SKIP LOCKED" };
    // The queue's first `n` are locked; of those, as many as fit in
    // `BATCH_BYTES` of body (always the first) are taken, so a run of
    // large messages is read a few at a time. A body stored by reference
    // is read from its raw mail; a message gone since it was queued (no
    // `m.id`) is only taken off the queue.
    let take = format!(
        "WITH locked AS (
             SELECT message_id FROM {table} ORDER BY message_id LIMIT $1 FOR UPDATE {lock}),
         sized AS (
             SELECT l.message_id,
                    sum(COALESCE(octet_length(m.text), octet_length(r.raw) - m.text_at, 0))
                        OVER (ORDER BY l.message_id) AS upto,
                    row_number() OVER (ORDER BY l.message_id) AS nth
               FROM locked l
               LEFT JOIN messages m ON m.id = l.message_id
               LEFT JOIN spool_raw r ON r.id = m.spool_id AND m.text IS NULL),
         taken AS (
             DELETE FROM {table} WHERE message_id IN (
                 SELECT message_id FROM sized WHERE upto <= $2::bigint OR nth = 1)
             RETURNING message_id)
         SELECT m.id, m.ticket_id, m.subject, m.text,
                CASE WHEN m.text IS NULL AND m.text_at IS NOT NULL
                     THEN substr(r.raw, (m.text_at + 1)::int) END,
                concat_ws(' ', m.from_email, m.from_name, c.email, c.name)
           FROM taken
           LEFT JOIN messages m ON m.id = taken.message_id
           LEFT JOIN tickets t ON t.id = m.ticket_id
           LEFT JOIN contacts c ON c.id = t.contact_id
           LEFT JOIN spool_raw r ON r.id = m.spool_id AND m.text IS NULL"
    );
    let st = tx.prepare_cached(&take).await.map_err(pg_err)?;
    let rows = tx.query(&st, &[&n, &BATCH_BYTES]).await.map_err(pg_err)?;
    let taken = rows.len();
    let mut found = Vec::with_capacity(taken);
    for r in &rows {
        let id: Option<i64> = r.try_get(0).map_err(pg_err)?;
        let Some(id) = id else { continue };
        found.push(Found {
            id,
            ticket: r.try_get(1).map_err(pg_err)?,
            subject: r.try_get(2).map_err(pg_err)?,
            text: r.try_get(3).map_err(pg_err)?,
            raw_body: r.try_get(4).map_err(pg_err)?,
            sender: r.try_get(5).map_err(pg_err)?,
        });
    }
    if found.is_empty() {
        return Ok(taken);
    }
    let made = tokio::task::spawn_blocking(move || made(found))
        .await
        .map_err(|e| StoreError::Backend(format!("search words: {e}")))?;
    write(tx, &made).await?;
    Ok(taken)
}

/// A queued message as read for its words.
struct Found {
    id: i64,
    ticket: i64,
    subject: Option<String>,
    text: Option<String>,
    /// The body stored by reference: the tail of the raw mail.
    raw_body: Option<Vec<u8>>,
    sender: String,
}

/// Each message's search row: (message, ticket, words as text).
struct Made {
    ids: Vec<i64>,
    tickets: Vec<i64>,
    words: Vec<String>,
}

fn made(found: Vec<Found>) -> Made {
    let mut m = Made {
        ids: Vec::with_capacity(found.len()),
        tickets: Vec::with_capacity(found.len()),
        words: Vec::with_capacity(found.len()),
    };
    for f in found {
        // Checked whole first (fast); character by character only when
        // it is not UTF-8.
        let raw = f.raw_body.as_deref().map(|b| match std::str::from_utf8(b) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(b),
        });
        let body = f.text.as_deref().or(raw.as_deref()).unwrap_or("");
        m.ids.push(f.id);
        m.tickets.push(f.ticket);
        // The body last: one beyond what a `tsvector` holds loses its
        // tail, never the subject or the sender.
        m.words.push(words::vector([
            f.subject.as_deref().unwrap_or(""),
            f.sender.as_str(),
            body,
        ]));
    }
    m
}

const WRITE: &str = "INSERT INTO message_search (message_id, ticket_id, words)
     SELECT u.id, u.ticket, u.words::tsvector
       FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(id, ticket, words)
     ON CONFLICT (message_id) DO UPDATE SET ticket_id = EXCLUDED.ticket_id, words = EXCLUDED.words";

/// Write the rows `m`, all in one statement; when that fails (a message
/// deleted since it was read, a row the server refuses), one by one, each
/// in its savepoint, a row that fails left out of the index with a warning
/// instead of holding the queue.
async fn write(tx: &Transaction<'_>, m: &Made) -> Result<(), StoreError> {
    let st = tx.prepare_cached(WRITE).await.map_err(pg_err)?;
    let st = &st;
    let mut rows = Savepoints::new(tx, "search_words");
    let all = rows
        .run(|tx| {
            Box::pin(async move {
                tx.execute(st, &[&m.ids, &m.tickets, &m.words])
                    .await
                    .map_err(pg_err)
            })
        })
        .await?;
    let Err(e) = all else { return Ok(()) };
    tracing::debug!(error = %e, "search rows one by one");
    for i in 0..m.ids.len() {
        let one = rows
            .run(|tx| {
                Box::pin(async move {
                    let (id, ticket, words) = (&m.ids[i..=i], &m.tickets[i..=i], &m.words[i..=i]);
                    tx.execute(st, &[&id, &ticket, &words])
                        .await
                        .map_err(pg_err)
                })
            })
            .await?;
        if let Err(e) = one {
            tracing::warn!(message = m.ids[i], error = %e, "message left out of the search index");
        }
    }
    Ok(())
}

/// Index every message still queued in `search_pending`, before a search
/// reads the index: until the queue is empty, at most `FLUSH_ROUNDS`
/// rounds while other nodes keep adding.
pub(super) async fn flush(db: &mut Object) -> Result<(), StoreError> {
    for _ in 0..FLUSH_ROUNDS {
        if index(db, BATCH, true, Queue::Pending).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// Queue every message not in the index yet and index them all (`store
/// copy`, whose insert trigger was off); how many.
pub(crate) async fn index_missing(db: &mut Object) -> Result<usize, StoreError> {
    db.execute(
        "INSERT INTO search_pending (message_id)
         SELECT m.id FROM messages m
          WHERE NOT EXISTS (SELECT 1 FROM message_search s WHERE s.message_id = m.id)
         ON CONFLICT (message_id) DO NOTHING",
        &[],
    )
    .await
    .map_err(pg_err)?;
    let mut all = 0;
    loop {
        match index(db, BATCH, true, Queue::Pending).await? {
            0 => return Ok(all),
            n => all += n,
        }
    }
}
