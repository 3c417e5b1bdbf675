//! The sender's claims on the outbox entries it takes, for nodes sharing a
//! PostgreSQL store: a batch's entries are claimed for this node for
//! `lease_secs` by the store's `due_outbox`; [`Claims`] renews them every
//! third of that while they are in flight, says whether an entry may still
//! be attempted (its claim live by this node's monotonic clock — not after
//! this process was stopped past it), and gives back at the end of the
//! batch the entries it did not attempt. On SQLite (one node) renewals and
//! releases cost nothing.
//!
//! Must not: attempt an entry whose claim may have run out (another node
//! may be sending it), or hold a claim on an entry no task works on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{OutboxClaim, OutboxId, Store};

/// One batch's claims.
pub(super) struct Claims {
    claim: OutboxClaim,
    /// Claimed entries not recorded (or given up) yet.
    open: Mutex<HashSet<OutboxId>>,
    /// Until when the claims are certainly this node's.
    valid_until: Mutex<Instant>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Claims {
    /// Claims on `ids`, taken by a `due_outbox` sent at `sent`; renewed in
    /// the background until [`Claims::finish`].
    pub(super) fn start(
        store: Arc<dyn Store>,
        claim: OutboxClaim,
        ids: impl IntoIterator<Item = OutboxId>,
        sent: Instant,
    ) -> Arc<Claims> {
        let lease = Duration::from_millis(claim.lease_ms.max(0) as u64);
        let claims = Arc::new(Claims {
            claim,
            open: Mutex::new(ids.into_iter().collect()),
            valid_until: Mutex::new(sent + lease),
            renewer: Mutex::new(None),
        });
        let task = tokio::spawn(renew(store, Arc::downgrade(&claims), lease));
        *lock(&claims.renewer) = Some(task);
        claims
    }

    /// Whether entry `id` may be attempted now: its claim is live by this
    /// node's clock.
    pub(super) fn may_send(&self, id: OutboxId) -> bool {
        let live = Instant::now() < *lock(&self.valid_until);
        if !live {
            tracing::warn!(outbox = %id, "claim on the entry ran out before it was attempted; left to the next round (another node may take it)");
            lock(&self.open).remove(&id);
        }
        live
    }

    /// The entry's attempt is recorded (or given up): no more renewals.
    pub(super) fn done(&self, id: OutboxId) {
        lock(&self.open).remove(&id);
    }

    /// Stop renewing; give the entries never attempted back at once.
    pub(super) async fn finish(&self, store: &dyn Store) {
        if let Some(task) = lock(&self.renewer).take() {
            task.abort();
        }
        let left: Vec<OutboxId> = lock(&self.open).drain().collect();
        if left.is_empty() {
            return;
        }
        let release = OutboxClaim {
            lease_ms: 0,
            ..self.claim.clone()
        };
        if let Err(e) = store.extend_outbox_claims(release, left).await {
            tracing::debug!(error = %e, "cannot give outbox claims back; they expire");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Renew the open claims every third of the lease while the batch runs.
async fn renew(store: Arc<dyn Store>, claims: std::sync::Weak<Claims>, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let Some(c) = claims.upgrade() else { return };
        let ids: Vec<OutboxId> = lock(&c.open).iter().copied().collect();
        if ids.is_empty() {
            continue;
        }
        if Instant::now() >= *lock(&c.valid_until) {
            return; // ran out (this process was stopped): not renewed again
        }
        let sent = Instant::now();
        match store.extend_outbox_claims(c.claim.clone(), ids).await {
            Ok(()) => *lock(&c.valid_until) = sent + lease,
            Err(e) => tracing::warn!(error = %e, "cannot renew outbox claims; retrying"),
        }
    }
}
