//! The HTTP listener's budgets: sends per API token ([`SendLimits`]: replies
//! and `POST /api/v1/tickets`, so a leaked or buggy token cannot turn the
//! daemon into a mail cannon) and open connections, in total and per client
//! IP ([`ConnLimits`]: idle or slow clients cannot take every file
//! descriptor the SMTP listener needs).
//!
//! Must not: decide what a refusal looks like on the wire (the callers
//! answer 429 or 503), or hold a lock across an `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-token send rate limiter; rebuilt when the configured rate changes
/// (a reload), which starts every token afresh.
#[derive(Default)]
pub struct SendLimits {
    /// (per minute, limiter keyed by token hash). std `Mutex`: never held
    /// across an `.await`.
    limiter: Mutex<Option<(u32, Arc<DefaultKeyedRateLimiter<String>>)>>,
    checks: AtomicU64,
}

impl SendLimits {
    /// Take one send for `token_hash` at `per_minute` (`0`: no limit):
    /// `Err(wait)` when over, with how long until the next is allowed.
    pub fn take(&self, token_hash: &str, per_minute: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(per_minute) else {
            return Ok(());
        };
        let limiter = {
            let mut slot = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((q, l)) if *q == per_minute => l.clone(),
                _ => {
                    let l = Arc::new(RateLimiter::keyed(Quota::per_minute(n)));
                    *slot = Some((per_minute, l.clone()));
                    l
                }
            }
        };
        // Now and then forget tokens back at full quota (the map would
        // otherwise keep every token ever used).
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&token_hash.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this IP.
    PerIp,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open-connection counts of one listener. A [`ConnSlot`] is held for each
/// connection and frees its place when dropped.
pub struct ConnLimits {
    max: usize,
    max_per_ip: usize,
    /// Peers counted only towards `max` (trusted reverse proxies).
    exempt: Vec<ipnet::IpNet>,
    counts: Mutex<Counts>,
}

impl ConnLimits {
    pub fn new(max: usize, max_per_ip: usize, exempt: Vec<ipnet::IpNet>) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max,
            max_per_ip,
            exempt,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A place for a connection from `ip`, unless a cap is reached.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refused> {
        let ip = ip.to_canonical();
        let counted = !self.exempt.iter().any(|n| n.contains(&ip));
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max {
            return Err(Refused::Total);
        }
        if counted {
            let n = c.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(ConnSlot {
            limits: self.clone(),
            ip: counted.then_some(ip),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One open connection's place; freed on drop.
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    /// The IP counted per IP (`None`: exempt).
    ip: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn connection_caps_total_per_ip_and_exempt_proxies() {
        let l = ConnLimits::new(4, 2, vec!["10.0.0.0/8".parse().expect("net")]);
        let a1 = l.try_open(ip("192.0.2.1")).expect("a1");
        let _a2 = l.try_open(ip("192.0.2.1")).expect("a2");
        assert_eq!(l.try_open(ip("192.0.2.1")).err(), Some(Refused::PerIp));
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert_eq!(
            l.try_open(ip("::ffff:192.0.2.1")).err(),
            Some(Refused::PerIp)
        );
        // A trusted proxy is not held to the per-IP cap…
        let _p1 = l.try_open(ip("10.1.1.1")).expect("p1");
        let _p2 = l.try_open(ip("10.1.1.1")).expect("p2");
        // …but the total counts it.
        assert_eq!(l.try_open(ip("10.1.1.1")).err(), Some(Refused::Total));
        assert_eq!(l.try_open(ip("192.0.2.9")).err(), Some(Refused::Total));
        assert_eq!(l.open(), 4);
        // A closed connection frees its place, in the total and for its IP.
        drop(a1);
        assert_eq!(l.open(), 3);
        let _a3 = l.try_open(ip("192.0.2.1")).expect("a freed place");
        assert_eq!(l.try_open(ip("192.0.2.1")).err(), Some(Refused::Total));
    }

    #[test]
    fn sends_are_limited_per_token() {
        let s = SendLimits::default();
        for _ in 0..3 {
            assert!(s.take("t1", 3).is_ok());
        }
        let wait = s.take("t1", 3).expect_err("over");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(s.take("t2", 3).is_ok(), "another token has its own budget");
        for _ in 0..100 {
            assert!(s.take("t1", 0).is_ok(), "0 is no limit");
        }
    }
}
