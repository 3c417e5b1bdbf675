//! Small helpers every PostgreSQL query uses: cached statements, typed
//! columns without panics, savepoints, JSON columns, the queue counts.

use std::future::Future;
use std::pin::Pin;

use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::pg_err;
use crate::store::{OutboxCounts, Queues, StoreError};

/// What a pooled connection derefs to (its statement cache included).
pub(crate) type Db = deadpool_postgres::ClientWrapper;
/// A boxed future borrowing a connection for `'a`.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// Query parameters.
pub(crate) type Params<'p> = [&'p (dyn ToSql + Sync)];

/// All rows of `sql` (prepared once per connection).
pub(crate) async fn rows(db: &Db, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
    let st = db.prepare_cached(sql).await.map_err(pg_err)?;
    db.query(&st, params).await.map_err(pg_err)
}

/// The row of `sql`, if any.
pub(crate) async fn row(
    db: &Db,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let st = db.prepare_cached(sql).await.map_err(pg_err)?;
    db.query_opt(&st, params).await.map_err(pg_err)
}

/// Run `sql`; the number of rows it changed.
pub(crate) async fn exec(db: &Db, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
    let st = db.prepare_cached(sql).await.map_err(pg_err)?;
    db.execute(&st, params).await.map_err(pg_err)
}

/// Run the prepared `st`. Statements sent together in one round trip
/// (`futures_util::try_join!` of these, prepared beforehand) are sent in
/// the order written: each is sent when first polled, before it waits.
pub(crate) async fn send(
    db: &Db,
    st: &tokio_postgres::Statement,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    db.execute(st, params).await.map_err(pg_err)
}

/// [`send`] when the write needs the statement (`params` given); else
/// nothing (0 rows).
pub(crate) async fn send_if(
    db: &Db,
    st: &tokio_postgres::Statement,
    params: Option<&Params<'_>>,
) -> Result<u64, StoreError> {
    match params {
        Some(p) => send(db, st, p).await,
        None => Ok(0),
    }
}

/// Column `i` of `r` as `T` (a type mismatch is an error, not a panic).
pub(crate) fn col<'r, T: FromSql<'r>>(r: &'r Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(pg_err)
}

/// A `COUNT(*)`-like query's single value.
pub(crate) async fn count(db: &Db, sql: &str) -> Result<i64, StoreError> {
    match row(db, sql, &[]).await? {
        Some(r) => col(&r, 0),
        None => Ok(0),
    }
}

/// Savepoints one after another in a transaction (a batch's writes, a
/// job's plans), each undone alone when its work fails.
///
/// A savepoint costs no round trip of its own: its `SAVEPOINT` (after the
/// previous one's `RELEASE`) is sent in the same write as the work's first
/// statements, which PostgreSQL runs after it (a connection's statements
/// run in the order they were sent). The last one is released by whatever
/// ends the transaction ([`Savepoints::finish`]) or by an enclosing
/// savepoint's release. Only a failed work waits for its
/// `ROLLBACK TO SAVEPOINT`. This is safe because every statement after a
/// failed one, in a transaction, fails too: work sent behind a `SAVEPOINT`
/// that failed never runs.
pub(crate) struct Savepoints<'a, C: Batch + ?Sized = Db> {
    db: &'a C,
    name: &'static str,
    /// The last savepoint is set and its work succeeded: not released yet.
    open: bool,
}

/// What savepoints are set on: a pooled connection (a group commit's
/// transaction, begun with `BEGIN`) or a transaction object (the search
/// indexer's, rolled back if dropped).
pub(crate) trait Batch: Sync {
    /// Run `sql` (statements without parameters).
    fn batch<'s>(&'s self, sql: &'s str) -> BoxFut<'s, Result<(), tokio_postgres::Error>>;
}

impl Batch for Db {
    fn batch<'s>(&'s self, sql: &'s str) -> BoxFut<'s, Result<(), tokio_postgres::Error>> {
        Box::pin(self.batch_execute(sql))
    }
}

impl Batch for deadpool_postgres::Transaction<'_> {
    fn batch<'s>(&'s self, sql: &'s str) -> BoxFut<'s, Result<(), tokio_postgres::Error>> {
        Box::pin(self.batch_execute(sql))
    }
}

impl<'a, C: Batch + ?Sized> Savepoints<'a, C> {
    pub(crate) fn new(db: &'a C, name: &'static str) -> Savepoints<'a, C> {
        Savepoints {
            db,
            name,
            open: false,
        }
    }

    /// Run `f` in a new savepoint: kept on success, rolled back to on
    /// error. The outer `Err` means the transaction itself is gone (the
    /// savepoint could not be set or undone): the caller stops.
    pub(crate) async fn run<'f, T>(
        &mut self,
        f: impl FnOnce(&'a C) -> BoxFut<'f, Result<T, StoreError>>,
    ) -> Result<Result<T, StoreError>, StoreError>
    where
        'a: 'f,
    {
        let name = self.name;
        let head = if self.open {
            format!("RELEASE SAVEPOINT {name}; SAVEPOINT {name}")
        } else {
            format!("SAVEPOINT {name}")
        };
        self.open = false;
        // Polled in this order: the savepoint is sent before the work's
        // first statement.
        let (set, r) = futures_util::future::join(self.db.batch(&head), f(self.db)).await;
        set.map_err(pg_err)?;
        if r.is_ok() {
            self.open = true;
        } else {
            self.db
                .batch(&format!(
                    "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
                ))
                .await
                .map_err(pg_err)?;
        }
        Ok(r)
    }

    /// Release the last savepoint, then run `then` (`COMMIT`), in one round
    /// trip: if the release fails, `then` does not run.
    pub(crate) async fn finish(self, then: &str) -> Result<(), tokio_postgres::Error> {
        let sql = if self.open {
            format!("RELEASE SAVEPOINT {}; {then}", self.name)
        } else {
            then.to_string()
        };
        self.db.batch(&sql).await
    }
}

pub(crate) fn json_vec(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_json_vec(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

pub(crate) fn parse_json(s: Option<String>) -> serde_json::Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// A stored count or id as `usize`/`u32` (negative or too large: 0).
pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The spool's, the outbox's and the search indexer's queues: partial
/// indexes, `outbox_tally` and `search_pending` (small: emptied as it fills).
pub(crate) async fn queues(db: &Db) -> Result<Queues, StoreError> {
    Ok(Queues {
        spool_pending: count(db, "SELECT COUNT(*) FROM spool WHERE state = 'pending'").await?,
        spool_failed: count(db, "SELECT COUNT(*) FROM spool WHERE state = 'failed'").await?,
        outbox: outbox_counts(db).await?,
        search_pending: count(db, "SELECT COUNT(*) FROM search_pending").await?,
    })
}

async fn outbox_counts(db: &Db) -> Result<OutboxCounts, StoreError> {
    let mut c = OutboxCounts::default();
    for r in rows(db, "SELECT state, n FROM outbox_tally", &[]).await? {
        c.count(col(&r, 0)?, col(&r, 1)?);
    }
    Ok(c)
}

/// `clause` with its `#` replaced by the placeholder of `p`, bound next.
pub(crate) fn bind<'a>(
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
    clause: &str,
    p: &'a (dyn ToSql + Sync),
) -> String {
    params.push(p);
    clause.replace('#', &format!("${}", params.len()))
}
