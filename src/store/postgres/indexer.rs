//! The search indexer: writes the `message_search` rows of the messages
//! queued in `search_pending` (schema step 21), after the transactions
//! that stored them, so the group committer does not wait for
//! `to_tsvector`. One task per node; nodes share the queue (`SKIP
//! LOCKED`). Woken by the committer after each commit and every second
//! (another node's messages).
//!
//! A search does not wait for this task: it indexes what is still queued
//! itself first ([`flush`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use super::pool_err;
use super::sql::{Db, col, row};
use crate::store::StoreError;

/// Messages indexed per statement.
const BATCH: i32 = 500;
/// Most rounds of [`flush`] before a search (50,000 messages).
const FLUSH_ROUNDS: usize = 100;
/// How long a wake-up waits for more messages to be committed.
const GATHER: Duration = Duration::from_millis(200);
/// How often the queue is looked at without a wake-up.
const POLL: Duration = Duration::from_secs(1);

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
            Ok(db) => index(&db, BATCH, false).await,
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

/// Index up to `n` queued messages in one statement (its own transaction);
/// how many were taken off the queue (indexed, or left out as
/// unindexable). `wait`: also those another indexer is writing at this
/// moment (waiting for it), so that everything committed before is indexed
/// after.
async fn index(db: &Db, n: i32, wait: bool) -> Result<i64, StoreError> {
    match row(db, "SELECT postdesk_search_index($1, $2)", &[&n, &wait]).await? {
        Some(r) => col(&r, 0),
        None => Ok(0),
    }
}

/// Index every message still queued, before a search reads the index:
/// until the queue is empty (a round may take fewer than asked while
/// more are queued: one by one, after a message that cannot be indexed),
/// at most `FLUSH_ROUNDS` rounds while other nodes keep adding.
pub(super) async fn flush(db: &Db) -> Result<(), StoreError> {
    for _ in 0..FLUSH_ROUNDS {
        if index(db, BATCH, true).await? == 0 {
            break;
        }
    }
    Ok(())
}
