//! Per-client-IP accounting shared by all sessions: the open-connection count per IP
//! (a map whose entries are released by a drop guard) and the per-IP message rate
//! (governor keyed limiter, checked at MAIL).
//!
//! Must not: block (std `Mutex`, never held across an `.await`), or grow without bound
//! (map entries are removed at zero; the limiter is pruned by `retain_recent`).
//!
//! Limits: `max_connections_per_ip`, `max_messages_per_minute_per_ip` (0 = off),
//! `rate_limit_exempt`. Untrusted input: the peer address (canonicalised by the caller).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::config::SmtpConfig;

pub(crate) struct Limits {
    /// Open connections per client IP. std `Mutex`: the lock never spans an `.await`.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// `None` when the message rate limit is off.
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    exempt: Vec<IpNet>,
}

impl Limits {
    pub fn new(cfg: &SmtpConfig) -> Self {
        let rate = NonZeroU32::new(cfg.max_messages_per_minute_per_ip)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Self {
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: cfg.max_connections_per_ip,
            rate,
            exempt: cfg.rate_limit_exempt.clone(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A poisoned map still holds valid counts; never panic on it.
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take one connection slot for `ip`; `None` when the per-IP cap is
    /// reached (never for an exempt network: it is still counted).
    pub fn try_connect(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut map = self.map();
        let count = map.entry(ip).or_insert(0);
        if *count >= self.max_per_ip && !self.is_exempt(ip) {
            if *count == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *count += 1;
        metrics::gauge!("postdesk_smtp_connections").increment(1.0);
        Some(IpSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Whether `ip` may start one more message now (always true when off or exempt).
    pub fn allow_message(&self, ip: IpAddr) -> bool {
        let Some(rate) = &self.rate else {
            return true;
        };
        if self.is_exempt(ip) {
            return true;
        }
        rate.check_key(&ip).is_ok()
    }

    /// In `rate_limit_exempt`: neither per-IP limit applies (the upstream
    /// MTA relaying everything, as Postfix's client-limit exceptions).
    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    /// Drop limiter state of clients that are back at full quota.
    pub fn retain_recent(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub fn open_for(&self, ip: IpAddr) -> usize {
        self.map().get(&ip).copied().unwrap_or(0)
    }
}

/// One open connection of one IP; releases its slot when dropped.
pub(crate) struct IpSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        metrics::gauge!("postdesk_smtp_connections").decrement(1.0);
        let mut map = self.limits.map();
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rate_limit_exempt` lifts both per-IP limits (the connection cap and
    /// the message rate); other clients keep them.
    #[test]
    fn exempt_networks_have_no_per_ip_limits() {
        let cfg = SmtpConfig {
            max_connections_per_ip: 2,
            max_messages_per_minute_per_ip: 1,
            rate_limit_exempt: vec!["10.0.0.0/8".parse().expect("net")],
            ..SmtpConfig::default()
        };
        let limits = Arc::new(Limits::new(&cfg));
        let (relay, client): (IpAddr, IpAddr) = (
            "10.1.2.3".parse().expect("ip"),
            "192.0.2.7".parse().expect("ip"),
        );
        let relay_slots: Vec<_> = (0..5).filter_map(|_| limits.try_connect(relay)).collect();
        assert_eq!(relay_slots.len(), 5, "the exempt relay is not capped");
        assert_eq!(limits.open_for(relay), 5, "but counted");
        let client_slots: Vec<_> = (0..5).filter_map(|_| limits.try_connect(client)).collect();
        assert_eq!(client_slots.len(), 2, "others are capped");
        assert!((0..5).all(|_| limits.allow_message(relay)));
        assert!(limits.allow_message(client));
        assert!(!limits.allow_message(client), "one message a minute");
        drop(relay_slots);
        assert_eq!(limits.open_for(relay), 0);
    }
}
