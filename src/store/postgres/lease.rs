//! Leases in PostgreSQL, as `store/lease.rs` does for SQLite, with the
//! database's clock (`clock_timestamp()`) as the only clock: nodes whose
//! clocks differ still agree on who holds a lease.
//!
//! Acquiring, renewing and releasing are single statements on a pooled
//! connection (autocommit, not the group committer): a takeover waits only
//! for transactions that hold the row, never queues behind a burst of
//! writes. A fenced write checks its fence `FOR SHARE` inside its own
//! transaction, so a takeover cannot commit between the check and the
//! write's commit — and fenced writes of several nodes never block each
//! other.

use super::sql::{Db, col, exec, row};
use crate::store::lease::refuse_stale;
use crate::store::{Fence, LeaseRequest, StoreError};

/// The database's clock in unix milliseconds, as SQL.
pub(super) const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

pub(super) async fn acquire(db: &Db, req: &LeaseRequest) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "INSERT INTO leases AS l (name, owner, epoch, expires_at, acquired_at)
         VALUES ($1, $2, 1, {NOW_MS} + $3, {NOW_MS})
         ON CONFLICT (name) DO UPDATE SET
             epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
             acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at
                                ELSE excluded.acquired_at END,
             owner = excluded.owner,
             expires_at = excluded.expires_at
         WHERE l.owner = excluded.owner OR l.expires_at <= {NOW_MS}
         RETURNING epoch"
    );
    let held = row(db, &sql, &[&req.name, &req.node, &req.ttl_ms.max(0)]).await?;
    held.map(|h| col(&h, 0)).transpose()
}

pub(super) async fn release(db: &Db, fence: &Fence) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE leases SET expires_at = {NOW_MS} WHERE name = $1 AND owner = $2 AND epoch = $3"
    );
    exec(db, &sql, &[&fence.lease, &fence.node, &fence.epoch]).await?;
    Ok(())
}

/// Refuse unless `fence` is current; inside a transaction, the lease row
/// stays as read (shared lock) until it ends.
pub(super) async fn check(db: &Db, fence: &Fence) -> Result<(), StoreError> {
    let r = row(
        db,
        "SELECT owner, epoch FROM leases WHERE name = $1 FOR SHARE",
        &[&fence.lease],
    )
    .await?;
    let held = r
        .map(|r| Ok::<_, StoreError>((col::<String>(&r, 0)?, col::<i64>(&r, 1)?)))
        .transpose()?;
    refuse_stale(fence, held)
}

pub(super) async fn held(db: &Db, node: &str) -> Result<u64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM leases WHERE owner = $1 AND expires_at > {NOW_MS}");
    let n: i64 = match row(db, &sql, &[&node]).await? {
        Some(r) => col(&r, 0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}
