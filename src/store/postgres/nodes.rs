//! Several nodes on one PostgreSQL database: this node's identity
//! (`[store] node_id`, `lease_secs`), the registry of nodes (`nodes`:
//! registration and heartbeat, listed by `status`), and the spool claims
//! that let any node ingest any accepted message exactly once.
//!
//! A spool entry is claimed by the node that accepted it (in the same
//! statement that spools it: its in-memory handoff stays the fast path)
//! until `claim_until`; a scan claims pending entries that are unclaimed,
//! its own, or whose claim expired (`FOR UPDATE SKIP LOCKED`, so two
//! scanning nodes never take the same entry at once). A claim is a hint
//! that spares work, not the guarantee: applying an entry marks it done
//! only while it is still pending (`inbound::apply_plan`), under its row
//! lock, so of two nodes that both hold it one applies and the other skips.
//!
//! Must not: run through the group committer (a claim or a heartbeat lost
//! in a crash costs nothing: the claim expires, the heartbeat is renewed).

use std::time::Duration;

use super::sql::{Db, col, exec, parse_json_vec, rows};
use crate::store::{NodeBeat, NodeView, SpoolEntry, SpoolId, SpoolSource, StoreError, now_ms};

/// This node among the nodes sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `[store] node_id`.
    pub id: String,
    /// `[store] lease_secs`: how long its claims last without renewal.
    pub lease: Duration,
}

impl Node {
    pub fn new(id: impl Into<String>, lease: Duration) -> Node {
        Node {
            id: id.into(),
            lease,
        }
    }

    /// The lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Default for Node {
    /// What a store opened without a node identity (tests, the CLI) uses.
    fn default() -> Node {
        Node::new("postdesk", Duration::from_secs(30))
    }
}

/// Register `node` or renew its heartbeat (one upsert). Warns when another
/// live node registered the same id from another address: two nodes with
/// one id take each other's spool claims for their own (still applied once
/// each, but neither's claims protect it from the other).
pub(super) async fn heartbeat(db: &Db, node: &Node, beat: &NodeBeat) -> Result<(), StoreError> {
    let now = now_ms();
    let before = rows(
        db,
        "SELECT address, last_heartbeat, started_at FROM nodes WHERE id = $1",
        &[&node.id],
    )
    .await?;
    if let Some(r) = before.first() {
        let (address, last, started): (String, i64, i64) = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
        if (address != beat.address || started != beat.started_at) && now - last < node.lease_ms() {
            tracing::warn!(
                node = %node.id,
                registered = %address,
                heartbeat_age_ms = now - last,
                "this node_id is registered by a live node: unless that was this node before a restart, give each node its own [store] node_id"
            );
        }
    }
    exec(
        db,
        "INSERT INTO nodes (id, address, started_at, last_heartbeat, lease_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET address = excluded.address,
             started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
             lease_ms = excluded.lease_ms",
        &[
            &node.id,
            &beat.address,
            &beat.started_at,
            &now,
            &node.lease_ms(),
        ],
    )
    .await?;
    Ok(())
}

/// Remove `node` from the registry (a clean stop).
pub(super) async fn leave(db: &Db, node: &Node) -> Result<(), StoreError> {
    exec(db, "DELETE FROM nodes WHERE id = $1", &[&node.id]).await?;
    Ok(())
}

/// Every registered node with the claims it holds now.
pub(super) async fn list(db: &Db) -> Result<Vec<NodeView>, StoreError> {
    let now = now_ms();
    rows(
        db,
        "SELECT n.id, n.address, n.started_at, n.last_heartbeat, n.lease_ms,
                (SELECT COUNT(*) FROM spool s
                  WHERE s.state = 'pending' AND s.claimed_by = n.id AND s.claim_until > $1)
           FROM nodes n ORDER BY n.id",
        &[&now],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(NodeView {
            id: col(r, 0)?,
            address: col(r, 1)?,
            started_at: col(r, 2)?,
            last_heartbeat: col(r, 3)?,
            lease_ms: col(r, 4)?,
            leases: u64::try_from(col::<i64>(r, 5)?).unwrap_or(0),
        })
    })
    .collect()
}

/// Claim up to `limit` pending spool entries with id > `after` for `node`
/// — unclaimed ones, its own, and those whose claim expired (a dead
/// node's) — skipping rows another node is claiming at this moment; oldest
/// first. The claim lasts `node.lease`.
pub(super) async fn claim_pending(
    db: &Db,
    node: &Node,
    after: SpoolId,
    limit: usize,
) -> Result<Vec<SpoolEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let now = now_ms();
    let until = now.saturating_add(node.lease_ms());
    let mut entries = rows(
        db,
        "WITH c AS (
             SELECT id FROM spool
              WHERE state = 'pending' AND id > $1
                AND (claimed_by IS NULL OR claimed_by = $3 OR claim_until <= $4)
              ORDER BY id LIMIT $2
              FOR UPDATE SKIP LOCKED)
         UPDATE spool s SET claimed_by = $3, claim_until = $5
           FROM c, spool_raw r
          WHERE s.id = c.id AND r.id = c.id
         RETURNING s.id, s.received_at, s.source, s.mail_from, s.rcpt_to, s.channel, r.raw,
                   s.content_hash, s.client_ip, s.helo",
        &[&after.0, &limit, &node.id, &now, &until],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(SpoolEntry {
            id: SpoolId(col(r, 0)?),
            received_at: col(r, 1)?,
            source: SpoolSource::parse(col(r, 2)?),
            mail_from: col(r, 3)?,
            rcpt_to: parse_json_vec(col(r, 4)?),
            channel: col(r, 5)?,
            raw: col(r, 6)?,
            content_hash: col(r, 7)?,
            client_ip: col(r, 8)?,
            helo: col(r, 9)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}
