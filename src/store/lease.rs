//! Leases in the store: which node does a job that only one node may do at
//! a time (pulling a mailbox), until when, under which epoch — and the SQL
//! of the `leases` table for SQLite.
//!
//! A lease is a row (name, owner node, epoch, expiry). A node acquires a
//! free or expired lease, or renews its own, with one statement; taking
//! over another node's expired lease increments the epoch. The epoch is the
//! fencing token: a write made under a lease carries a [`Fence`] and is
//! refused ([`StoreError::Fenced`]) in its own transaction when the row's
//! owner or epoch is no longer the fence's — so a node that was paused
//! past its lease (SIGSTOP, a long GC-like stall, a network partition)
//! cannot write once another node has taken the job over.
//!
//! On SQLite one node holds every lease (no other node shares the file):
//! the same rows, the same answers, never contended.
//!
//! Must not: decide lease durations or names (the callers do), or compare
//! clocks of different machines (on PostgreSQL the database's clock is the
//! only one used).

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::sqlite::now_ms;

/// A write's claim to be made under a lease: refused unless `node` still
/// holds `lease` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name (e.g. `mailbox:CHANNEL`).
    pub lease: String,
    pub node: String,
    pub epoch: i64,
}

/// A node asking for a lease (or to renew the one it holds): see
/// [`LeaseStore::acquire_lease`](super::LeaseStore::acquire_lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The lease's name (e.g. `mailbox:CHANNEL`).
    pub name: String,
    pub node: String,
    /// How long it is held from now, in milliseconds (the store's clock).
    pub ttl_ms: i64,
}

/// The name of the lease on a pulled channel's mailbox.
pub fn mailbox_lease(channel: &str) -> String {
    format!("mailbox:{channel}")
}

/// Schema step 15 (SQLite's part): the leases table.
pub(crate) const MIGRATION_15: &str = r#"
CREATE TABLE leases (
    name         TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,      -- node id
    epoch        INTEGER NOT NULL,   -- incremented on every takeover
    expires_at   INTEGER NOT NULL,   -- unix ms
    acquired_at  INTEGER NOT NULL    -- unix ms, of this epoch
) WITHOUT ROWID;
"#;

/// Acquire the lease for the requesting node for its `ttl_ms` from now, or
/// renew it: the epoch the node holds it under, or `None` while another
/// node's lease is live.
pub(crate) fn acquire(conn: &Connection, req: &LeaseRequest) -> Result<Option<i64>, StoreError> {
    let now = now_ms();
    Ok(conn
        .prepare_cached(
            "INSERT INTO leases (name, owner, epoch, expires_at, acquired_at)
             VALUES (?1, ?2, 1, ?3 + ?4, ?3)
             ON CONFLICT(name) DO UPDATE SET
                 epoch = CASE WHEN owner = excluded.owner THEN epoch ELSE epoch + 1 END,
                 acquired_at = CASE WHEN owner = excluded.owner THEN acquired_at ELSE ?3 END,
                 owner = excluded.owner,
                 expires_at = excluded.expires_at
             WHERE owner = excluded.owner OR expires_at <= ?3
             RETURNING epoch",
        )?
        .query_row(params![req.name, req.node, now, req.ttl_ms.max(0)], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Give up `name` if `node` holds it under `epoch`: it expires now.
pub(crate) fn release(
    conn: &Connection,
    name: &str,
    node: &str,
    epoch: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE leases SET expires_at = ?4 WHERE name = ?1 AND owner = ?2 AND epoch = ?3",
    )?
    .execute(params![name, node, epoch, now_ms()])?;
    Ok(())
}

/// Refuse unless `fence` is current: its node owns the lease under its epoch.
pub(crate) fn check(conn: &Connection, fence: &Fence) -> Result<(), StoreError> {
    let held: Option<(String, i64)> = conn
        .prepare_cached("SELECT owner, epoch FROM leases WHERE name = ?1")?
        .query_row(params![fence.lease], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    refuse_stale(fence, held)
}

/// The answer to a fence given the lease row's (owner, epoch).
pub(crate) fn refuse_stale(fence: &Fence, held: Option<(String, i64)>) -> Result<(), StoreError> {
    match held {
        Some((owner, epoch)) if owner == fence.node && epoch == fence.epoch => Ok(()),
        Some((owner, epoch)) => Err(StoreError::Fenced(format!(
            "lease {} is held by {owner} under epoch {epoch}, not by {} under epoch {}",
            fence.lease, fence.node, fence.epoch
        ))),
        None => Err(StoreError::Fenced(format!(
            "lease {} is held by no node",
            fence.lease
        ))),
    }
}

/// How many unexpired leases `node` holds.
pub(crate) fn held(conn: &Connection, node: &str) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM leases WHERE owner = ?1 AND expires_at > ?2")?
        .query_row(params![node, now_ms()], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}
