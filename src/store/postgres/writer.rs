//! The group committer: one task per node that runs every waiting write in
//! one PostgreSQL transaction (each in its own savepoint) and answers each
//! write only after the COMMIT returned, so a burst of N SMTP commits costs
//! one WAL flush instead of N.
//!
//! A write whose own statements fail is rolled back to its savepoint and
//! answered with its error; the others commit. When the transaction itself
//! fails (connection lost, COMMIT refused) every write of the batch is
//! answered with that error, nothing of them is acknowledged, and the next
//! batch takes a fresh pooled connection.
//!
//! New spool rows (SMTP commits) are not closures but data: all of a
//! batch's are inserted by one statement first ([`inbound::insert_spools`]),
//! so a burst of N commits costs one round trip for its rows instead of N.
//! If that statement is refused (one row's own error), it is undone and
//! the rows are inserted one by one, each in its savepoint, so only the
//! bad row fails.
//!
//! Several nodes on one database: each batch holds a transaction-level
//! advisory lock ([`WRITER_LOCK`]), so the nodes' batches commit one after
//! the other instead of deadlocking on the rows they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::inbound::{self, SpoolInsert};
use super::sql::{BoxFut, Db, Savepoints};
use super::{pg_err, pool_err};
use crate::store::sqlite::clone_err;
use crate::store::{NewSpool, SpoolId, StoreError, now_ms};

/// The advisory lock every node's committer holds for its transaction
/// ("pdwriter").
const WRITER_LOCK: i64 = 0x7064_7772_6974_6572;

/// Writes that may wait for the committer (callers wait when it is full).
const QUEUE: usize = 4096;

/// Writes (each in a savepoint of its own) one transaction takes at most.
/// PostgreSQL keeps 64 subtransactions of a transaction in shared memory;
/// past that, every snapshot taken beside it, on any node, has to look
/// further. With the spool rows' savepoint and an ingest job's inner one
/// (two a job), 30 writes stay under it.
const MAX_WRITES: usize = 30;

/// A write's work: run against the batch's connection, inside its savepoint.
type WorkFn<T> = Box<dyn for<'c> FnOnce(&'c Db) -> BoxFut<'c, Result<T, StoreError>> + Send>;

/// One write waiting for the committer.
trait WriteJob: Send {
    /// Run the write's statements (inside the savepoint the committer
    /// set), keeping its result for its answer; `Err` (a copy of the
    /// write's own error) when its savepoint must be undone.
    fn run<'c>(&'c mut self, db: &'c Db) -> BoxFut<'c, Result<(), StoreError>>;
    /// Answer the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Job<T> {
    work: Option<WorkFn<T>>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> WriteJob for Job<T> {
    fn run<'c>(&'c mut self, db: &'c Db) -> BoxFut<'c, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Ok(());
            };
            let r = work(db).await;
            let undo = r.as_ref().err().map(clone_err);
            self.result = Some(r);
            undo.map_or(Ok(()), Err)
        })
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let _ = self.reply.send(crate::store::answer(commit, self.result));
    }
}

/// A new spool row for [`Writer::spool`]: the message, its content hash
/// and its claim (node id, lease in ms from its `received_at`), if any.
pub(super) struct SpoolRow {
    pub msg: NewSpool,
    pub hash: String,
    pub claim: Option<(String, i64)>,
}

/// A stored spool row: its id, `received_at`, and the row given.
pub(super) type Spooled = (SpoolId, i64, SpoolRow);

struct SpoolJob {
    row: SpoolRow,
    received_at: i64,
    result: Option<Result<SpoolId, StoreError>>,
    reply: oneshot::Sender<Result<Spooled, StoreError>>,
}

impl SpoolJob {
    fn insert(&self) -> SpoolInsert<'_> {
        SpoolInsert {
            msg: &self.row.msg,
            hash: &self.row.hash,
            received_at: self.received_at,
            claim: self
                .row
                .claim
                .as_ref()
                .map(|(node, lease)| (node.as_str(), self.received_at.saturating_add(*lease))),
        }
    }

    fn finish(self, commit: Result<(), StoreError>) {
        let (received_at, row) = (self.received_at, self.row);
        let out = crate::store::answer(commit, self.result).map(|id| (id, received_at, row));
        let _ = self.reply.send(out);
    }
}

/// What waits for the committer.
enum Item {
    Work(Box<dyn WriteJob>),
    Spool(Box<SpoolJob>),
}

impl Item {
    fn finish(self, commit: Result<(), StoreError>) {
        match self {
            Item::Work(job) => job.finish(commit),
            Item::Spool(job) => job.finish(commit),
        }
    }
}

/// The handle writes are sent through.
pub(super) struct Writer {
    tx: mpsc::Sender<Item>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Start the committer task; it stops when the last handle is dropped.
    /// `committed` is woken after each commit (the search indexer).
    pub(super) fn start(pool: Pool, max: usize, committed: Arc<Notify>) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(committer(pool, rx, max, commits.clone(), committed));
        Writer { tx, commits }
    }

    pub(super) fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Run `work` in the current batch; resolves after the durable commit.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Db) -> BoxFut<'c, Result<T, StoreError>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            work: Some(Box::new(work)),
            result: None,
            reply,
        });
        self.tx
            .send(Item::Work(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Insert `row` into the spool in the current batch (with the batch's
    /// other new rows, in one statement); resolves after the durable
    /// commit.
    pub(super) async fn spool(&self, row: SpoolRow) -> Result<Spooled, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = SpoolJob {
            row,
            received_at: 0,
            result: None,
            reply,
        };
        self.tx
            .send(Item::Spool(Box::new(job)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn committer(
    pool: Pool,
    mut rx: mpsc::Receiver<Item>,
    max: usize,
    commits: Arc<AtomicU64>,
    committed: Arc<Notify>,
) {
    let mut batch: Vec<Item> = Vec::with_capacity(max);
    let mut carry = None;
    while next_batch(&mut rx, &mut carry, &mut batch, max).await {
        let outcome = run_batch(&pool, &mut batch).await;
        match &outcome {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                committed.notify_one();
                metrics::counter!("postdesk_store_commits_total").increment(1);
                metrics::histogram!("postdesk_store_commit_batch").record(batch.len() as f64);
            }
            Err(e) => tracing::warn!(error = %e, jobs = batch.len(), "store transaction failed"),
        }
        for job in batch.drain(..) {
            job.finish(outcome.as_ref().map(|_| ()).map_err(clone_err));
        }
    }
    tracing::debug!("postgres store writer stopped");
}

/// Fill `batch` with the next transaction's items: the first waited for,
/// then whatever else is queued, up to `max` items of which at most
/// [`MAX_WRITES`] writes; the first write beyond that waits in `carry` for
/// the next batch (spool rows share one savepoint: they do not count).
/// `false` once the channel is closed and nothing is left.
async fn next_batch(
    rx: &mut mpsc::Receiver<Item>,
    carry: &mut Option<Item>,
    batch: &mut Vec<Item>,
    max: usize,
) -> bool {
    let first = match carry.take() {
        Some(item) => item,
        None => match rx.recv().await {
            Some(item) => item,
            None => return false,
        },
    };
    let mut writes = usize::from(matches!(first, Item::Work(_)));
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item @ Item::Work(_)) if writes == MAX_WRITES => {
                *carry = Some(item);
                break;
            }
            Ok(item) => {
                writes += usize::from(matches!(item, Item::Work(_)));
                batch.push(item);
            }
            Err(_) => break,
        }
    }
    true
}

async fn run_batch(pool: &Pool, batch: &mut [Item]) -> Result<(), StoreError> {
    let db = pool.get().await.map_err(pool_err)?;
    // Acknowledged means flushed: whatever the server's default, this
    // transaction's commit waits for its WAL to reach the disk.
    // Nodes sharing the database take turns: their writes lock the same
    // hot rows (a ticket, the outbox and activity counters) in whatever
    // order their batches hold, and two batches interleaved would deadlock
    // (one of them failing as busy). One batch at a time across nodes.
    db.batch_execute(&format!(
        "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
    ))
    .await
    .map_err(pg_err)?;
    let mut jobs: Savepoints<'_> = Savepoints::new(&db, "job");
    let mut failed = insert_spools(&mut jobs, batch).await.err();
    for item in batch.iter_mut() {
        let Item::Work(job) = item else { continue };
        if failed.is_some() {
            break;
        }
        // A write's own error is its answer (its savepoint undone); an
        // error here means the transaction is gone.
        if let Err(e) = jobs.run(|db| job.run(db)).await {
            failed = Some(e);
        }
    }
    let end = match &failed {
        None => jobs.finish("COMMIT").await,
        Some(_) => db.batch_execute("ROLLBACK").await,
    };
    if let Err(e) = end {
        // The connection's state is unknown: never hand it out again.
        let _ = deadpool_postgres::Object::take(db);
        return Err(failed.unwrap_or_else(|| pg_err(e)));
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Insert the batch's new spool rows: all in one statement, or, if it is
/// refused, one by one (each in its savepoint: a bad row fails alone).
/// `Err`: the transaction is gone.
async fn insert_spools<'a>(
    jobs: &mut Savepoints<'a>,
    batch: &mut [Item],
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut spools: Vec<&mut SpoolJob> = batch
        .iter_mut()
        .filter_map(|item| match item {
            Item::Spool(job) => Some(&mut **job),
            Item::Work(_) => None,
        })
        .collect();
    if spools.is_empty() {
        return Ok(());
    }
    for job in spools.iter_mut() {
        job.received_at = now;
    }
    let all = {
        let rows: Vec<SpoolInsert<'_>> = spools.iter().map(|job| job.insert()).collect();
        jobs.run(|db| Box::pin(inbound::insert_spools(db, &rows)))
            .await?
    };
    match all {
        Ok(ids) => {
            for (job, id) in spools.iter_mut().zip(ids) {
                job.result = Some(Ok(id));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, rows = spools.len(), "spool rows refused together; one by one");
            for job in spools.iter_mut() {
                let row = job.insert();
                let one = jobs
                    .run(|db| {
                        Box::pin(inbound::insert_claimed_spool(
                            db,
                            row.msg,
                            row.hash,
                            row.received_at,
                            row.claim,
                        ))
                    })
                    .await?;
                job.result = Some(one);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> Item {
        let (reply, _) = oneshot::channel::<Result<(), StoreError>>();
        Item::Work(Box::new(Job {
            work: None,
            result: None,
            reply,
        }))
    }

    fn spool() -> Item {
        let (reply, _) = oneshot::channel();
        Item::Spool(Box::new(SpoolJob {
            row: SpoolRow {
                msg: crate::store::tests::spool_msg(0),
                hash: String::new(),
                claim: None,
            },
            received_at: 0,
            result: None,
            reply,
        }))
    }

    fn shape(batch: &[Item]) -> (usize, usize) {
        let writes = batch.iter().filter(|i| matches!(i, Item::Work(_))).count();
        (writes, batch.len() - writes)
    }

    /// A burst of writes (replies' outcomes recorded at once, say) is
    /// committed in transactions of at most MAX_WRITES savepoints, none
    /// lost or reordered across them; spool rows, which share one
    /// savepoint, are not held back by the limit, and `max` still bounds
    /// a batch.
    #[tokio::test]
    async fn a_burst_of_writes_is_split_under_postgresql_subtransaction_cache() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        for n in 0..100 {
            let item = if n % 4 == 3 { spool() } else { write() };
            assert!(tx.try_send(item).is_ok());
        }
        drop(tx);
        let (mut carry, mut batch, mut shapes) = (None, Vec::new(), Vec::new());
        while next_batch(&mut rx, &mut carry, &mut batch, 256).await {
            shapes.push(shape(&batch));
            batch.clear();
        }
        // 75 writes and 25 spool rows, every fourth item a spool row: 30
        // writes with the 10 spool rows among them, as many again, the
        // last 15 with 5.
        assert_eq!(shapes, [(30, 10), (30, 10), (15, 5)]);
        let (tx, mut rx) = mpsc::channel(QUEUE);
        for _ in 0..10 {
            assert!(tx.try_send(spool()).is_ok());
        }
        drop(tx);
        let mut sizes = Vec::new();
        while next_batch(&mut rx, &mut carry, &mut batch, 4).await {
            sizes.push(batch.len());
            batch.clear();
        }
        assert_eq!(sizes, [4, 4, 2]);
    }
}
