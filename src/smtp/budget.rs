//! The in-flight byte budget: one counter of the message bytes all sessions hold in
//! memory together (`[smtp] max_inflight_bytes`), and the per-transaction
//! [`Reservation`] that takes from it and gives back on drop.
//!
//! Design: message buffers stay in memory until [`super::Spool::commit`] (which takes a
//! `Vec<u8>`), and this module bounds their sum. Spilling large messages to a spool
//! file was the alternative; it needs a temp-file lifecycle (clean-up after crashes,
//! disk-full handling, a second copy into SQLite) and still holds the bytes in memory at
//! commit, while a budget is one atomic counter and a drop guard: simpler, and it bounds
//! what actually hurts (RSS). A reservation covers a buffer's *capacity*, not its
//! length, so the count is what the allocator handed out; buffers grow on demand
//! (doubling, capped at the message's limit) and are freed when the transaction ends.
//! One compare-and-swap per growth step (≈ log2 of the message size per message) and
//! one subtraction when it ends: no lock and nothing per read chunk.
//!
//! Must not: leak budget. The reservation gives back everything it holds when
//! dropped — on commit, RSET, a refused message, the connection closing, a panic
//! unwinding or the session task being cancelled. Limits: `max_inflight_bytes`.
//! Untrusted input: none (sizes come from the session, after its own limits).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Smallest buffer a message starts with once its first bytes arrive.
const MIN_BUF: usize = 4096;

/// Bytes of message buffers held by all sessions, against `max_inflight_bytes`.
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// `postdesk_smtp_inflight_bytes`, registered once (an atomic add per change).
    gauge: metrics::Gauge,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            gauge: metrics::gauge!("postdesk_smtp_inflight_bytes"),
        })
    }

    /// Bytes reserved now by all sessions (also the gauge's value).
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `n` bytes if that stays within the limit.
    fn try_take(&self, n: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if taken {
            self.gauge.increment(n as f64);
        }
        taken
    }

    /// Take `n` bytes whatever the limit (the allocator gave more than asked for).
    fn force_take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.gauge.increment(n as f64);
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.gauge.decrement(n as f64);
    }
}

/// The part of the budget one transaction holds; given back when dropped.
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    held: usize,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("held", &self.held)
            .finish()
    }
}

impl Reservation {
    /// An empty reservation (no atomic operation until it grows).
    pub fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            held: 0,
        }
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Hold at least `total` bytes; `false` (holding what it held) when the budget
    /// cannot give the difference.
    pub fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.held {
            return true;
        }
        if !self.budget.try_take(total - self.held) {
            return false;
        }
        self.held = total;
        true
    }

    /// Make `buf` able to hold `need` bytes without reallocating, with its whole
    /// capacity covered by this reservation. Grows by doubling (at least
    /// [`MIN_BUF`], at most `cap` unless `need` is larger), or exactly to `need` when
    /// the budget cannot cover the doubling. `false` when even `need` is not available.
    pub fn fit(&mut self, buf: &mut Vec<u8>, need: usize, cap: usize) -> bool {
        if buf.capacity() >= need {
            return true;
        }
        let doubled = buf
            .capacity()
            .saturating_mul(2)
            .max(MIN_BUF)
            .min(cap)
            .max(need);
        let target = if self.grow_to(doubled) {
            doubled
        } else if self.grow_to(need) {
            need
        } else {
            return false;
        };
        buf.reserve_exact(target - buf.len());
        if buf.capacity() > self.held {
            self.budget.force_take(buf.capacity() - self.held);
            self.held = buf.capacity();
        }
        true
    }

    /// Give back everything (the buffer it covered was freed).
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.held = 0;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_give_back_on_drop() {
        let budget = Budget::new(10_000);
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        assert!(a.grow_to(6_000));
        assert!(!b.grow_to(5_000), "6000 + 5000 > 10000");
        assert_eq!(b.held(), 0);
        assert!(b.grow_to(4_000));
        assert_eq!(budget.used(), 10_000);
        assert!(!a.grow_to(6_001));
        assert_eq!(a.held(), 6_000, "a failed grow keeps what it held");
        drop(a);
        assert_eq!(budget.used(), 4_000);
        b.release();
        assert_eq!(budget.used(), 0);
        drop(b);
        assert_eq!(budget.used(), 0, "no double give-back");
    }

    #[test]
    fn fit_covers_the_capacity_and_grows_on_demand() {
        let budget = Budget::new(100_000);
        let mut r = Reservation::new(&budget);
        let mut buf = Vec::new();
        assert!(r.fit(&mut buf, 10, 50_000));
        assert_eq!(buf.capacity(), MIN_BUF, "starts small, not at the cap");
        assert_eq!(budget.used(), buf.capacity());
        buf.resize(MIN_BUF, 0);
        assert!(r.fit(&mut buf, MIN_BUF + 1, 50_000));
        assert_eq!(buf.capacity(), 2 * MIN_BUF, "doubles");
        assert!(r.fit(&mut buf, 40_001, 50_000));
        assert_eq!(
            buf.capacity(),
            40_001,
            "a bigger need than doubling: the need"
        );
        assert!(r.fit(&mut buf, 40_002, 50_000));
        assert_eq!(buf.capacity(), 50_000, "doubling stops at the cap");
        assert_eq!(budget.used(), 50_000);
        // Another reservation leaves too little for doubling: exactly `need`.
        let mut other = Reservation::new(&budget);
        assert!(other.grow_to(45_000));
        assert!(r.fit(&mut buf, 54_000, 100_000));
        assert_eq!(buf.capacity(), 54_000);
        assert!(
            !r.fit(&mut buf, 56_000, 100_000),
            "54000 + 45000 + 2000 > 100000"
        );
        assert_eq!(budget.used(), 99_000);
        drop(r);
        assert_eq!(budget.used(), 45_000);
    }

    /// A session task that panics (or is aborted) drops its reservation while
    /// unwinding: nothing leaks.
    #[test]
    fn a_panic_gives_the_budget_back() {
        let budget = Budget::new(1_000);
        let b = Arc::clone(&budget);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut r = Reservation::new(&b);
            assert!(r.grow_to(800));
            panic!("session bug");
        }));
        assert!(result.is_err());
        assert_eq!(budget.used(), 0);
    }
}
