//! Reconnect delays: exponential from [`Backoff::BASE`] up to
//! [`Backoff::MAX`], each with "equal jitter" (half fixed, half random) so
//! many mailboxes failing together do not reconnect in lockstep.
//!
//! Pure apart from the random source (std's per-process random hash keys);
//! no clock, no I/O.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delay state of one mailbox.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(300);

    pub fn new() -> Self {
        Backoff { failures: 0 }
    }

    /// Forget past failures (a session got established).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The ceiling for the current failure count (before jitter).
    pub fn ceiling(&self) -> Duration {
        let exp = self.failures.min(16);
        Self::BASE.saturating_mul(1u32 << exp).min(Self::MAX)
    }

    /// Count a failure and return how long to wait: uniformly in
    /// `[ceiling / 2, ceiling]`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A random number in `[0, 1)`.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let mut b = Backoff::new();
        let table = [1u64, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
        for ceiling in table {
            let d = b.next_delay();
            let c = Duration::from_secs(ceiling);
            assert!(d >= c / 2 && d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Backoff::MAX);
        }
        b.reset();
        assert!(b.next_delay() <= Backoff::BASE);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new();
            for _ in 0..5 {
                b.next_delay();
            }
            seen.insert(b.next_delay().as_millis());
        }
        assert!(seen.len() > 1, "jitter produced identical delays");
    }
}
