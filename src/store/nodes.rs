//! The nodes sharing one store: a registry each node on PostgreSQL writes
//! itself into at start and renews (its heartbeat), which `status` lists.
//! SQLite has one implicit node (the process that holds the file) and
//! records nothing.
//!
//! Must not: decide who may take over another node's work — that is each
//! claim's own expiry (spool claims, leases), not the registry's heartbeat.

use serde::Serialize;

use super::StoreFuture;

/// One node as the registry has it, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// `[store] node_id` (default: the machine's host name).
    pub id: String,
    /// Its SMTP and HTTP listen addresses, as it registered them.
    pub address: String,
    /// Unix milliseconds: when it (last) started.
    pub started_at: i64,
    /// Unix milliseconds: its last heartbeat.
    pub last_heartbeat: i64,
    /// Its `[store] lease_secs`, in milliseconds: a node whose heartbeat is
    /// older than this is presumed dead.
    pub lease_ms: i64,
    /// Claims it holds now that have not expired (pending spool entries
    /// it is ingesting; mailbox and outbox leases).
    pub leases: u64,
}

impl NodeView {
    /// Whether its last heartbeat is younger than its lease at `now_ms`.
    pub fn alive(&self, now_ms: i64) -> bool {
        now_ms - self.last_heartbeat < self.lease_ms
    }
}

/// What a node says of itself when it registers or renews its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// Its SMTP and HTTP listen addresses.
    pub address: String,
    /// Unix milliseconds: when this process started.
    pub started_at: i64,
}

/// The node registry. Part of [`super::Store`].
pub trait NodeStore: Send + Sync {
    /// Every registered node, by id. Empty on SQLite (one implicit node).
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeView>>;

    /// Register this node or renew its heartbeat (idempotent: the same
    /// call does both). `false` when the store keeps no registry (SQLite).
    fn heartbeat(&self, beat: NodeBeat) -> StoreFuture<'_, bool>;

    /// Remove this node from the registry (a clean stop).
    fn leave(&self) -> StoreFuture<'_, ()>;
}
