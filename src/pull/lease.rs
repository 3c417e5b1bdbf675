//! A puller's lease on its mailbox: only the node holding it pulls.
//!
//! [`Puller::run`] acquires the lease `mailbox:CHANNEL` before each
//! session; a [`Hold`] renews it every `lease_secs / 3` on a task of its
//! own, and ends (its token cancelled, which ends the session) when a
//! renewal finds the lease taken over, or when the lease ran out by this
//! node's own monotonic clock before a renewal came through (the store
//! unreachable, or this process stopped — SIGSTOP — for longer than the
//! lease). Every batch and checkpoint reset carries the hold's [`Fence`]
//! and the store refuses it once stale; before each IMAP move the puller
//! asks [`Hold::may_act`] (still valid by its clock, and current in the
//! store), so a node woken after losing the lease neither moves its
//! checkpoint back nor moves messages another node is pulling.
//!
//! Must not: wait for a lease longer than one renewal period between
//! looks, or act on a lease it cannot prove (the store's answer, and the
//! local clock, both say yes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::{Fence, LeaseRequest, Store, StoreError, mailbox_lease};

/// A lease this puller holds, renewed in the background until dropped.
pub(super) struct Hold {
    pub(super) fence: Fence,
    /// Cancelled when the lease is lost (or shutdown: a child of it).
    pub(super) lost: CancellationToken,
    /// Until when the lease is certainly ours: the send time of the last
    /// renewal the store granted, plus the lease.
    valid_until: Arc<Mutex<Instant>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// How long leases last, and how often they are renewed, from `lease_secs`.
pub(super) fn periods(lease_secs: u64) -> (Duration, Duration) {
    let ttl = Duration::from_secs(lease_secs.max(1));
    (ttl, ttl / 3)
}

/// Try to acquire `channel`'s mailbox lease for `node`: the hold, or
/// `None` while another node holds it.
pub(super) async fn acquire(
    store: &Arc<dyn Store>,
    channel: &str,
    node: &str,
    lease_secs: u64,
    stop: &CancellationToken,
) -> Result<Option<Hold>, StoreError> {
    let (ttl, every) = periods(lease_secs);
    let name = mailbox_lease(channel);
    let sent = Instant::now();
    let Some(epoch) = store
        .acquire_lease(LeaseRequest {
            name: name.clone(),
            node: node.to_string(),
            ttl_ms: ttl.as_millis() as i64,
        })
        .await?
    else {
        return Ok(None);
    };
    let fence = Fence {
        lease: name,
        node: node.to_string(),
        epoch,
    };
    let lost = stop.child_token();
    let valid_until = Arc::new(Mutex::new(sent + ttl));
    let renewer = tokio::spawn(renew(
        store.clone(),
        fence.clone(),
        (ttl, every),
        lost.clone(),
        valid_until.clone(),
    ));
    Ok(Some(Hold {
        fence,
        lost,
        valid_until,
        renewer,
    }))
}

/// Renew every `every` until the lease is lost; then cancel `lost`.
async fn renew(
    store: Arc<dyn Store>,
    fence: Fence,
    (ttl, every): (Duration, Duration),
    lost: CancellationToken,
    valid_until: Arc<Mutex<Instant>>,
) {
    let until = |v: &Mutex<Instant>| *v.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Woken after the lease ran out (the process was stopped, the
        // store unreachable): whatever the store says now, another node
        // may have pulled meanwhile — start over from the checkpoint.
        if Instant::now() >= until(&valid_until) {
            tracing::warn!(lease = %fence.lease, epoch = fence.epoch, "lease ran out before it was renewed; pulling stops");
            lost.cancel();
            return;
        }
        let sent = Instant::now();
        let answer = store
            .acquire_lease(LeaseRequest {
                name: fence.lease.clone(),
                node: fence.node.clone(),
                ttl_ms: ttl.as_millis() as i64,
            })
            .await;
        match answer {
            Ok(Some(epoch)) if epoch == fence.epoch => {
                *valid_until.lock().unwrap_or_else(|p| p.into_inner()) = sent + ttl;
            }
            Ok(other) => {
                tracing::warn!(lease = %fence.lease, epoch = fence.epoch, now = ?other,
                    "lease taken over by another node; pulling stops");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %fence.lease, error = %e, "cannot renew lease; retrying");
            }
        }
    }
}

impl Hold {
    /// Whether the holder may still act outside the store (move messages):
    /// the lease is valid by this node's clock and current in the store.
    pub(super) async fn may_act(&self, store: &dyn Store) -> Result<(), StoreError> {
        let until = *self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        if self.lost.is_cancelled() || Instant::now() >= until {
            self.lost.cancel();
            return Err(StoreError::Fenced(format!(
                "lease {} ran out before it was renewed",
                self.fence.lease
            )));
        }
        store.check_lease(self.fence.clone()).await
    }

    /// Give the lease up (the puller stops or pauses): another node may
    /// take it at once instead of after it expires.
    pub(super) async fn release(self, store: &dyn Store) {
        self.renewer.abort();
        // A stale fence releases nothing (the store checks it).
        if let Err(e) = store.release_lease(self.fence.clone()).await {
            tracing::debug!(lease = %self.fence.lease, error = %e, "cannot release lease");
        }
    }
}
