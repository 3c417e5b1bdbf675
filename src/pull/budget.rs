//! A mailbox's daily download budget (`imap.download_bytes_per_day`):
//! Gmail refuses IMAP downloads past 2,500 MB a day per account, and that
//! allowance is shared with every other client of the account, so a
//! backlog is pulled at a bounded rate instead of as fast as the link
//! allows. A token bucket (governor's GCRA) in KiB: it refills at the
//! daily budget spread over the day and holds at most an hour's share,
//! which is also the most one batch may take ([`DownloadBudget::burst_bytes`]).
//!
//! Must not: sleep (the puller decides whether to wait or end the session),
//! or be trusted across restarts (kept in memory; the provider's own cap
//! and its long back-off are the safety net).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The budget of one mailbox.
pub struct DownloadBudget {
    per_day: u64,
    burst_kib: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

impl DownloadBudget {
    /// A budget of `per_day` bytes a day; `None` for 0 (no limit).
    pub fn new(per_day: u64) -> Option<DownloadBudget> {
        let kib_per_day = (per_day / 1024).max(1);
        if per_day == 0 {
            return None;
        }
        let burst = u32::try_from((kib_per_day / 24).max(1)).unwrap_or(u32::MAX);
        let burst_kib = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(DAY.div_f64(kib_per_day as f64))?.allow_burst(burst_kib);
        Some(DownloadBudget {
            per_day,
            burst_kib,
            limiter: RateLimiter::direct(quota),
        })
    }

    /// The configured bytes per day.
    pub fn per_day(&self) -> u64 {
        self.per_day
    }

    /// The most bytes that can be taken at once (an hour's share): batches
    /// are cut no larger.
    pub fn burst_bytes(&self) -> u64 {
        u64::from(self.burst_kib.get()) * 1024
    }

    /// Take `bytes` (at most the burst) now, or say how long until they
    /// can be taken (nothing is taken then).
    pub fn take(&self, bytes: u64) -> Result<(), Duration> {
        let kib = bytes
            .div_ceil(1024)
            .clamp(1, u64::from(self.burst_kib.get()));
        let n = NonZeroU32::new(u32::try_from(kib).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            // Not reachable: n is at most the burst.
            Err(_) => Err(DAY / 24),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 24 MiB a day: 1 MiB an hour may be taken at once; what is taken
    /// beyond waits for the refill (about 2.5 min per 64 KiB), and a take
    /// that must wait takes nothing.
    #[test]
    fn an_hours_share_at_once_then_the_daily_rate() {
        let b = DownloadBudget::new(24 << 20).expect("budget");
        assert_eq!(b.burst_bytes(), 1 << 20);
        assert_eq!(b.take(600 << 10), Ok(()));
        assert_eq!(b.take(400 << 10), Ok(()));
        let wait = b.take(64 << 10).expect_err("budget used up");
        assert!(
            wait > Duration::from_secs(120) && wait <= Duration::from_secs(150),
            "{wait:?}"
        );
        // Refused takes are not counted: the same wait again.
        let again = b.take(64 << 10).expect_err("still used up");
        assert!(
            again <= wait && again > Duration::from_secs(120),
            "{again:?}"
        );
        // More than the burst asks for the whole bucket (one large message).
        assert!(b.take(5 << 20).is_err());
        assert!(DownloadBudget::new(0).is_none());
    }
}
