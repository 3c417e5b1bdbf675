//! Conformance: leases — one node holds a lease until it expires, a
//! takeover increments the epoch (one winner among racing nodes), and a
//! write fenced with a stale epoch is refused whole.

use super::*;
use crate::store::tests::mailbox::{batch, generation, pulled};

const LONG: i64 = 60_000;

fn fence(node: &str, epoch: i64) -> Fence {
    Fence {
        lease: mailbox_lease("mailbox"),
        node: node.into(),
        epoch,
    }
}

async fn acquire(s: &dyn Store, node: &str, ttl_ms: i64) -> Option<i64> {
    s.acquire_lease(LeaseRequest {
        name: mailbox_lease("mailbox"),
        node: node.into(),
        ttl_ms,
    })
    .await
    .expect("acquire")
}

/// A lease is granted to the first node, renewed under the same epoch, and
/// refused to another node while it is live; it counts for its holder only.
pub(crate) async fn a_live_lease_is_held_by_one_node(s: &dyn Store) {
    assert_eq!(acquire(s, "a", LONG).await, Some(1));
    assert_eq!(
        acquire(s, "a", LONG).await,
        Some(1),
        "renewal keeps the epoch"
    );
    assert_eq!(acquire(s, "b", LONG).await, None);
    assert_eq!(s.leases_held("a".into()).await.expect("held"), 1);
    assert_eq!(s.leases_held("b".into()).await.expect("held"), 0);
    s.check_lease(fence("a", 1)).await.expect("a is current");
    // Released, another node takes it at once, under a new epoch.
    s.release_lease(fence("a", 1)).await.expect("release");
    assert_eq!(s.leases_held("a".into()).await.expect("held"), 0);
    assert_eq!(acquire(s, "b", LONG).await, Some(2));
}

/// An expired lease goes to exactly one of the nodes racing for it, under
/// the next epoch; the former holder's renewal is refused.
pub(crate) async fn an_expired_lease_is_taken_over_once_under_a_new_epoch(s: &dyn Store) {
    assert_eq!(acquire(s, "a", 0).await, Some(1));
    let racers = ["b", "c", "d", "e", "f"];
    let answers = futures_util::future::join_all(racers.iter().map(|n| acquire(s, n, LONG))).await;
    let winners: Vec<(&str, i64)> = racers
        .iter()
        .zip(&answers)
        .filter_map(|(n, a)| a.map(|e| (*n, e)))
        .collect();
    assert_eq!(winners.len(), 1, "one winner: {answers:?}");
    assert_eq!(winners[0].1, 2);
    assert_eq!(acquire(s, "a", LONG).await, None, "a lost it");
    assert_eq!(s.leases_held(winners[0].0.into()).await.expect("held"), 1);
}

/// A node paused past its lease wakes with its old epoch: its batch (spool
/// rows and checkpoint) is refused whole, as is its checkpoint reset and
/// its release; the current holder's writes go through.
pub(crate) async fn a_stale_epoch_is_refused(s: &dyn Store) {
    assert_eq!(acquire(s, "a", 0).await, Some(1));
    let fenced = |node: &str, epoch, last_uid, raw: &str| PulledBatch {
        fence: Some(fence(node, epoch)),
        ..batch(7, last_uid, vec![pulled(raw, None)])
    };
    let first = s
        .spool_pulled(fenced("a", 1, 5, "Subject: 1\r\n\r\none"))
        .await
        .expect("a's batch while it holds the lease");
    assert_eq!(first.spooled, 1);
    assert_eq!(acquire(s, "b", LONG).await, Some(2), "b takes over");
    // a wakes up with a batch fetched before: refused, nothing written.
    let stale = s
        .spool_pulled(fenced("a", 1, 3, "Subject: 2\r\n\r\ntwo"))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Fenced(_))),
        "stale batch: {stale:?}"
    );
    assert!(!stale.expect_err("fenced").is_temporary());
    let cp = s
        .checkpoint("mailbox".into(), "INBOX".into())
        .await
        .expect("checkpoint");
    assert_eq!(cp.map(|c| c.last_uid), Some(5), "not moved back");
    let pending = s.pending_spool(SpoolId(0), 100).await.expect("pending");
    assert_eq!(pending.len(), 1, "the stale batch's message is not spooled");
    let reset = s.reset_checkpoint(generation(9), Some(fence("a", 1))).await;
    assert!(matches!(reset, Err(StoreError::Fenced(_))), "{reset:?}");
    assert!(matches!(
        s.check_lease(fence("a", 1)).await,
        Err(StoreError::Fenced(_))
    ));
    // A stale release gives nothing away.
    s.release_lease(fence("a", 1)).await.expect("release");
    assert_eq!(acquire(s, "a", LONG).await, None);
    // The holder writes.
    s.check_lease(fence("b", 2)).await.expect("b is current");
    let b = s
        .spool_pulled(fenced("b", 2, 8, "Subject: 3\r\n\r\nthree"))
        .await
        .expect("b's batch");
    assert_eq!(b.spooled, 1);
    let cp = s
        .checkpoint("mailbox".into(), "INBOX".into())
        .await
        .expect("checkpoint");
    assert_eq!(cp.map(|c| c.last_uid), Some(8));
    // A fence on a lease nobody ever held is refused too.
    let never = Fence {
        lease: mailbox_lease("other"),
        ..fence("b", 1)
    };
    assert!(matches!(
        s.check_lease(never).await,
        Err(StoreError::Fenced(_))
    ));
}
