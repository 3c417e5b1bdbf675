//! Per-client-IP accounting shared by all sessions: the open-connection count per IP
//! (a map whose entries are released by a drop guard) and the per-IP message rate
//! (governor keyed limiter, checked at MAIL).
//!
//! Must not: block (std `Mutex`, never held across an `.await`), or grow without bound
//! (map entries are removed at zero; the limiter is pruned by `retain_recent`).
//!
//! "Per IP" means per [`client_key`]: an IPv4 address, or an IPv6 /64 — one
//! customer's subnet, where a client picks any of 2^64 addresses at will, so
//! counting those one by one would be no limit at all. IPv4-mapped IPv6 counts as
//! the IPv4 address.
//!
//! Limits: `max_connections_per_ip`, `max_messages_per_minute_per_ip` (0 = off),
//! `rate_limit_exempt` (matched against the full address). Untrusted input: the peer
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::config::SmtpConfig;

/// The unit the per-IP limits count: an IPv4 address (also when IPv4-mapped), or
/// an IPv6 address's /64 network (`prefix` 64; 128 for an exempt address, so an
/// exempt relay's connections do not use up its /64 neighbours' cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    net: IpAddr,
    prefix: u8,
}

/// The [`ClientKey`] of a non-exempt `ip`.
pub(crate) fn client_key(ip: IpAddr) -> ClientKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => ClientKey {
            net: IpAddr::V4(v4),
            prefix: 32,
        },
        IpAddr::V6(v6) => ClientKey {
            net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            prefix: 64,
        },
    }
}

/// The [`ClientKey`] of an exempt `ip`: the address itself.
fn exempt_key(ip: IpAddr) -> ClientKey {
    let net = ip.to_canonical();
    let prefix = if net.is_ipv4() { 32 } else { 128 };
    ClientKey { net, prefix }
}

pub(crate) struct Limits {
    /// Open connections per client key ([`client_key`]). std `Mutex`: the lock never spans an `.await`.
    per_ip: Mutex<HashMap<ClientKey, usize>>,
    max_per_ip: usize,
    /// `None` when the message rate limit is off.
    rate: Option<DefaultKeyedRateLimiter<ClientKey>>,
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

    fn map(&self) -> MutexGuard<'_, HashMap<ClientKey, usize>> {
        // A poisoned map still holds valid counts; never panic on it.
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take one connection slot for `ip`; `None` when the per-IP cap is
    /// reached (never for an exempt network: it is still counted).
    pub fn try_connect(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let exempt = self.is_exempt(ip);
        let key = if exempt {
            exempt_key(ip)
        } else {
            client_key(ip)
        };
        let mut map = self.map();
        let count = map.entry(key).or_insert(0);
        if *count >= self.max_per_ip && !exempt {
            if *count == 0 {
                map.remove(&key);
            }
            return None;
        }
        *count += 1;
        metrics::gauge!("postdesk_smtp_connections").increment(1.0);
        Some(IpSlot {
            limits: Arc::clone(self),
            key,
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
        rate.check_key(&client_key(ip)).is_ok()
    }

    /// In `rate_limit_exempt`: neither per-IP limit applies (the upstream
    /// MTA relaying everything, as Postfix's client-limit exceptions).
    fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    /// Drop limiter state of clients that are back at full quota.
    pub fn retain_recent(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    /// Open connections counted for `ip`'s client key.
    #[cfg(test)]
    pub fn open_for(&self, ip: IpAddr) -> usize {
        let key = if self.is_exempt(ip) {
            exempt_key(ip)
        } else {
            client_key(ip)
        };
        self.map().get(&key).copied().unwrap_or(0)
    }
}

/// One open connection of one client key; releases its slot when dropped.
pub(crate) struct IpSlot {
    limits: Arc<Limits>,
    key: ClientKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        metrics::gauge!("postdesk_smtp_connections").decrement(1.0);
        let mut map = self.limits.map();
        if let Some(count) = map.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.key);
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn client_key_is_the_ipv4_address_or_the_ipv6_64() {
        let key = |net: &str, prefix| ClientKey {
            net: ip(net),
            prefix,
        };
        assert_eq!(client_key(ip("192.0.2.7")), key("192.0.2.7", 32));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), key("192.0.2.7", 32));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            key("2001:db8:1:2::", 64)
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(client_key(ip("192.0.2.7")), client_key(ip("192.0.2.8")));
    }

    /// Addresses of one IPv6 /64 share one connection cap and one message rate;
    /// the next /64 and each IPv4 address have their own; IPv4-mapped IPv6 is
    /// the IPv4 address.
    #[test]
    fn per_ip_limits_count_an_ipv6_64_as_one_client() {
        let cfg = SmtpConfig {
            max_connections_per_ip: 2,
            max_messages_per_minute_per_ip: 2,
            ..SmtpConfig::default()
        };
        let limits = Arc::new(Limits::new(&cfg));
        let a = limits.try_connect(ip("2001:db8::1")).expect("first");
        let b = limits.try_connect(ip("2001:db8::ffff:2")).expect("second");
        assert!(
            limits.try_connect(ip("2001:db8::3")).is_none(),
            "a third address of the same /64 is over the cap"
        );
        assert_eq!(limits.open_for(ip("2001:db8::abcd")), 2);
        let other = limits.try_connect(ip("2001:db8:0:1::1")).expect("next /64");
        drop(a);
        let c = limits
            .try_connect(ip("2001:db8::4"))
            .expect("a slot came back");
        drop((b, c, other));
        assert_eq!(
            limits.open_for(ip("2001:db8::1")),
            0,
            "entries removed at zero"
        );

        assert!(limits.allow_message(ip("2001:db8::10")));
        assert!(limits.allow_message(ip("2001:db8::20")));
        assert!(
            !limits.allow_message(ip("2001:db8::30")),
            "one rate per /64"
        );
        assert!(limits.allow_message(ip("2001:db8:0:1::10")));

        let v4 = limits.try_connect(ip("192.0.2.7")).expect("v4");
        let mapped = limits.try_connect(ip("::ffff:192.0.2.7")).expect("mapped");
        assert!(
            limits.try_connect(ip("192.0.2.7")).is_none(),
            "mapped counts as IPv4"
        );
        assert!(
            limits.try_connect(ip("192.0.2.8")).is_some(),
            "IPv4 stays per address"
        );
        drop((v4, mapped));
    }

    #[test]
    fn exempt_ipv6_address_is_matched_in_full() {
        let cfg = SmtpConfig {
            max_connections_per_ip: 1,
            rate_limit_exempt: vec!["2001:db8::25/128".parse().expect("net")],
            ..SmtpConfig::default()
        };
        let limits = Arc::new(Limits::new(&cfg));
        let relay: Vec<_> = (0..3)
            .filter_map(|_| limits.try_connect(ip("2001:db8::25")))
            .collect();
        assert_eq!(relay.len(), 3, "the exempt relay is not capped");
        assert_eq!(limits.open_for(ip("2001:db8::25")), 3, "but counted");
        let neighbour = limits.try_connect(ip("2001:db8::26"));
        assert!(
            neighbour.is_some(),
            "the relay does not use up its /64's cap"
        );
        assert!(
            limits.try_connect(ip("2001:db8::27")).is_none(),
            "the rest of its /64 is one client"
        );
    }
}
