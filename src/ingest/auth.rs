//! Authentication of inbound mail: for which domains a message is proven to
//! come from, so that a team member's or forwarder's address counts as theirs
//! only when the message really came from them.
//!
//! Three sources, chosen per spool entry by [`Authenticator::authenticate`]:
//! - SMTP from a `[smtp] trusted_relays` address: that relay's
//!   `Authentication-Results` header (authserv-id `[smtp] authserv_id`);
//! - other SMTP mail that claims a team or forwarder address: our own DKIM and
//!   SPF checks (mail-auth, over `[smtp] dns_resolver`);
//! - pulled mail: the provider's `Authentication-Results` header
//!   ([`ChannelConfig::effective_authserv_id`]).
//!
//! Only the topmost `Authentication-Results` header with the expected
//! authserv-id is read: a relay adds its own above the message's headers, and
//! anything below it was written by the sender (a relay should also remove
//! headers claiming its id, RFC 8601 §5). A domain counts when a DKIM
//! signature of it (or of a parent or child domain: relaxed alignment) passed,
//! SPF passed for an envelope sender in it, or DMARC passed for it.
//!
//! Must not: fail ingest (every problem yields "not authenticated", with the
//! reason in [`Authentication::by`]) or log message content.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};
use mail_parser::MessageParser;

use crate::config::{ChannelConfig, Config, DnsResolver};
use crate::store::{SpoolEntry, SpoolSource};

/// Longest time our own DKIM + SPF checks of one message may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most `Authentication-Results` bytes read from one header.
const MAX_RESULTS_LEN: usize = 8 * 1024;

/// What is proven about where a message comes from (plain data, kept with
/// the store's types: it is stored with each message's resolution).
pub use crate::store::Authentication;

impl Authentication {
    /// Nothing proven, for `reason`.
    pub fn none(reason: impl Into<String>) -> Self {
        Authentication {
            domains: Vec::new(),
            by: reason.into(),
            assumed: false,
        }
    }

    /// Everything counts (`postdesk resolve FILE` without `--peer`).
    pub fn assumed() -> Self {
        Authentication {
            domains: Vec::new(),
            by: "assumed: judged as if a trusted relay had passed it".into(),
            assumed: true,
        }
    }

    /// Whether the message is proven to come from `email`'s domain.
    pub fn covers(&self, email: &str) -> bool {
        if self.assumed {
            return true;
        }
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        let domain = normal_domain(domain);
        !domain.is_empty() && self.domains.iter().any(|d| aligned(d, &domain))
    }
}

fn normal_domain(d: &str) -> String {
    d.trim()
        .trim_end_matches('.')
        .trim_matches(|c| c == '<' || c == '>')
        .to_ascii_lowercase()
}

/// Alignment without a public-suffix list: the same domain, or the proven
/// domain is a parent of the sender's (`acme.example` proves
/// `eu.acme.example`: signing for a domain needs its DNS). The other
/// direction (a signature of `em.acme.example` for `acme.example`) needs the
/// organizational domain, which only DMARC knows: a DMARC pass covers it.
fn aligned(proven: &str, domain: &str) -> bool {
    proven == domain
        || (domain.len() > proven.len() + 1
            && domain.ends_with(proven)
            && domain.as_bytes()[domain.len() - proven.len() - 1] == b'.')
}

/// The domains an `Authentication-Results` header value says passed, when its
/// authserv-id is `authserv_id` (`""`: a header without one, as Microsoft
/// writes). `None` when the header is another server's.
pub fn parse_results(value: &str, authserv_id: &str) -> Option<Vec<String>> {
    let cleaned = strip_comments(value);
    let mut segments = split_unquoted(&cleaned, |c| c == ';').into_iter();
    let first = segments.next().unwrap_or("").trim();
    let (id, rest): (&str, Vec<&str>) = if first.contains('=') {
        // No authserv-id: the first segment is already a result.
        ("", std::iter::once(first).chain(segments).collect())
    } else {
        (
            first.split_whitespace().next().unwrap_or(""),
            segments.collect(),
        )
    };
    if !id.eq_ignore_ascii_case(authserv_id.trim()) {
        return None;
    }
    // A header cut at the cap could end inside a domain ("header.d=com" of
    // "com.evil.example"): believe nothing of an over-long one.
    if value.chars().count() > MAX_RESULTS_LEN {
        return Some(Vec::new());
    }
    let mut domains = Vec::new();
    for segment in rest {
        let mut words = split_unquoted(segment, char::is_whitespace)
            .into_iter()
            .filter(|w| !w.is_empty());
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
            continue;
        };
        if !result.eq_ignore_ascii_case("pass") {
            continue;
        }
        let method = method.split('/').next().unwrap_or("").to_ascii_lowercase();
        let wanted: &[&str] = match method.as_str() {
            "dkim" => &["header.d", "header.i"],
            "spf" => &["smtp.mailfrom"],
            "dmarc" => &["header.from"],
            _ => continue,
        };
        for prop in words {
            let Some((name, v)) = prop.split_once('=') else {
                continue;
            };
            if wanted.iter().any(|w| name.eq_ignore_ascii_case(w)) {
                // A quoted local part is the sender's text: only its domain
                // (after the last `@`, outside the quotes) counts.
                let domain = normal_domain(v.rsplit_once('@').map_or(v, |(_, d)| d));
                if is_domain(&domain) && !domains.contains(&domain) {
                    domains.push(domain);
                }
                break;
            }
        }
    }
    Some(domains)
}

/// `s` split at `sep` outside double quotes (RFC 8601 values may be quoted
/// strings, and a relay echoes the sender's envelope into them).
fn split_unquoted(s: &str, sep: impl Fn(char) -> bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && sep(c) {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// A domain name worth believing: at least two labels of letters, digits and
/// hyphens (no bare top-level domain, nothing quoted).
fn is_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    labels.len() >= 2
        && d.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `value` without RFC 5322 comments (nested parentheses, quoted text kept).
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_RESULTS_LEN));
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars().take(MAX_RESULTS_LEN) {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(' ');
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The topmost `Authentication-Results` header of `raw` with `authserv_id`.
pub fn from_results(raw: &[u8], authserv_id: &str, by: &str) -> Authentication {
    let Some(msg) = MessageParser::new().parse_headers(raw) else {
        return Authentication::none(format!("{by}: no headers"));
    };
    for h in msg.headers() {
        if !h.name().eq_ignore_ascii_case("Authentication-Results") {
            continue;
        }
        let Some(value) = header_raw_text(raw, h) else {
            continue;
        };
        if let Some(domains) = parse_results(&value, authserv_id) {
            let what = if domains.is_empty() {
                "nothing passed".to_string()
            } else {
                format!("passed for {}", domains.join(", "))
            };
            return Authentication {
                domains,
                by: format!("{by}: {what}"),
                assumed: false,
            };
        }
    }
    let id = if authserv_id.is_empty() {
        "without an authserv-id".to_string()
    } else {
        format!("from {authserv_id}")
    };
    Authentication::none(format!("{by}: no Authentication-Results {id}"))
}

/// A header's value as written (unfolded), whatever mail-parser made of it.
fn header_raw_text(raw: &[u8], h: &mail_parser::Header<'_>) -> Option<String> {
    let bytes = raw.get(h.offset_start() as usize..h.offset_end() as usize)?;
    let text = String::from_utf8_lossy(bytes);
    Some(text.replace(['\r', '\n'], " "))
}

/// The addresses a message claims to be from, before any parsing of bodies:
/// From, Sender and Resent-From/Resent-Sender, normalised.
fn claimed_senders(raw: &[u8]) -> Vec<String> {
    let Some(msg) = MessageParser::new().parse_headers(raw) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in [
        msg.from(),
        msg.sender(),
        msg.resent_from(),
        msg.resent_sender(),
    ]
    .into_iter()
    .flatten()
    {
        for addr in a.iter() {
            if let Some(e) = addr.address() {
                out.push(crate::mail::normalize_email(e));
            }
        }
    }
    out
}

/// Decides [`Authentication`] for spool entries; holds the DNS resolver for
/// our own checks.
pub struct Authenticator {
    dns: Option<MessageAuthenticator>,
    dns_error: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("dns", &self.dns.is_some())
            .finish()
    }
}

impl Authenticator {
    /// An authenticator using `resolver` for DKIM and SPF lookups.
    pub fn new(resolver: DnsResolver) -> Self {
        use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        let built = match resolver {
            DnsResolver::Off => return Authenticator::off("dns_resolver = \"off\""),
            DnsResolver::System => MessageAuthenticator::new_system_conf(),
            DnsResolver::Server(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], vec![ns]), opts)
            }
        };
        match built {
            Ok(a) => Authenticator {
                dns: Some(a),
                dns_error: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: DKIM/SPF of direct mail not checked");
                Authenticator::off(&format!("no DNS resolver ({e})"))
            }
        }
    }

    /// No DNS checks.
    pub fn off(why: &str) -> Self {
        Authenticator {
            dns: None,
            dns_error: Some(why.to_string()),
        }
    }

    /// What is proven about `entry`'s origin. `trusted` are the addresses
    /// whose claims matter (team members and forwarders): mail claiming none
    /// of them is not checked over DNS.
    pub async fn authenticate(
        &self,
        entry: &SpoolEntry,
        config: &Config,
        trusted: &HashSet<String>,
    ) -> Authentication {
        match entry.source {
            SpoolSource::Smtp => {
                let ip = entry
                    .client_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
                    .map(|ip| ip.to_canonical());
                self.smtp(entry, ip, config, trusted).await
            }
            SpoolSource::Imap => {
                let channel = entry.channel.as_deref().and_then(|c| config.channel(c));
                pulled(&entry.raw, channel)
            }
            SpoolSource::Form | SpoolSource::Api => {
                Authentication::none("web form or API submission")
            }
        }
    }

    /// Mail received over SMTP from `ip`.
    pub async fn smtp(
        &self,
        entry: &SpoolEntry,
        ip: Option<IpAddr>,
        config: &Config,
        trusted: &HashSet<String>,
    ) -> Authentication {
        if let (Some(ip), Some(id)) = (ip, config.smtp.authserv_id.as_deref())
            && config.smtp.trusted_relays.iter().any(|n| n.contains(&ip))
        {
            return from_results(&entry.raw, id, &format!("trusted relay {ip}"));
        }
        let claims = claimed_senders(&entry.raw);
        if !claims.iter().any(|c| trusted.contains(c)) {
            return Authentication::none("not checked: claims no team or forwarder address");
        }
        let Some(dns) = &self.dns else {
            return Authentication::none(format!(
                "not checked: {}",
                self.dns_error.as_deref().unwrap_or("no DNS")
            ));
        };
        let helo = entry.helo.as_deref().unwrap_or("");
        let check = check_dns(
            dns,
            &entry.raw,
            ip,
            helo,
            &entry.mail_from,
            &config.smtp.hostname,
        );
        match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(a) => a,
            Err(_) => Authentication::none("DKIM/SPF check timed out"),
        }
    }
}

/// The provider's verdict on pulled mail.
pub fn pulled(raw: &[u8], channel: Option<&ChannelConfig>) -> Authentication {
    match channel.and_then(|c| c.effective_authserv_id()) {
        Some(id) => from_results(raw, id, "provider"),
        None => Authentication::none(
            "pulled mail: the channel names no authserv_id ([channels.imap] authserv_id)",
        ),
    }
}

/// Our own DKIM and SPF checks.
async fn check_dns(
    dns: &MessageAuthenticator,
    raw: &[u8],
    ip: Option<IpAddr>,
    helo: &str,
    mail_from: &str,
    host: &str,
) -> Authentication {
    let mut domains = Vec::new();
    let mut said = Vec::new();
    let Some(msg) = AuthenticatedMessage::parse(raw) else {
        return Authentication::none("checked: not a parsable message");
    };
    let dkim = dns.verify_dkim(&msg).await;
    if dkim.is_empty() {
        said.push("no DKIM signature".to_string());
    }
    for r in &dkim {
        let d = r
            .signature()
            .map(|s| normal_domain(&s.d))
            .unwrap_or_default();
        if *r.result() == DkimResult::Pass && !d.is_empty() {
            said.push(format!("dkim pass d={d}"));
            push_new(&mut domains, d);
        } else {
            said.push(format!("dkim {} d={d}", dkim_word(r.result())));
        }
    }
    let envelope_domain = mail_from.rsplit_once('@').map(|(_, d)| normal_domain(d));
    let spf = match (ip, &envelope_domain) {
        (Some(ip), Some(d)) => {
            let spf = dns
                .verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    ip, helo, host, mail_from,
                ))
                .await;
            if spf.result() == SpfResult::Pass {
                said.push(format!("spf pass {d}"));
                push_new(&mut domains, d.clone());
            } else {
                said.push(format!("spf {:?} {d}", spf.result()).to_lowercase());
            }
            Some(spf)
        }
        _ => {
            said.push("no SPF (no client address or null sender)".to_string());
            None
        }
    };
    // DMARC knows the organizational domain: a pass covers the From domain
    // even when the signature was a sibling's (em.acme.example).
    if let Some(spf) = &spf {
        let dmarc = dns
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                &msg,
                &dkim,
                envelope_domain.as_deref().unwrap_or(""),
                spf,
            ))
            .await;
        if *dmarc.dkim_result() == DmarcResult::Pass || *dmarc.spf_result() == DmarcResult::Pass {
            let d = normal_domain(dmarc.domain());
            said.push(format!("dmarc pass {d}"));
            push_new(&mut domains, d);
        }
    }
    Authentication {
        domains,
        by: format!("checked: {}", said.join(", ")),
        assumed: false,
    }
}

fn push_new(v: &mut Vec<String>, d: String) {
    if !d.is_empty() && !v.contains(&d) {
        v.push(d);
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_the_named_server_only() {
        let v = "mx.acme.example; dkim=pass (2048-bit key) header.d=acme.example header.s=s1; spf=fail smtp.mailfrom=x@evil.example; dmarc=pass (p=reject) header.from=acme.example";
        assert_eq!(
            parse_results(v, "mx.acme.example"),
            Some(vec!["acme.example".to_string()])
        );
        assert_eq!(parse_results(v, "mx.other.example"), None);
        let spf = "mx.acme.example 1; spf=pass smtp.mailfrom=Ann@Mail.Acme.Example";
        assert_eq!(
            parse_results(spf, "mx.acme.example"),
            Some(vec!["mail.acme.example".to_string()])
        );
        let none = "mx.acme.example; dkim=fail header.d=acme.example; spf=softfail smtp.mailfrom=acme.example";
        assert_eq!(parse_results(none, "mx.acme.example"), Some(vec![]));
    }

    #[test]
    fn microsoft_results_have_no_authserv_id() {
        let v = "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=acme.example; dkim=pass (signature was verified) header.d=acme.example;dmarc=pass action=none header.from=acme.example;compauth=pass reason=100";
        assert_eq!(parse_results(v, ""), Some(vec!["acme.example".to_string()]));
        assert_eq!(parse_results(v, "mx.google.com"), None);
    }

    #[test]
    fn comments_cannot_smuggle_a_result() {
        let v =
            "mx.acme.example; dkim=fail (dkim=pass header.d=acme.example) header.d=evil.example";
        assert_eq!(parse_results(v, "mx.acme.example"), Some(vec![]));
        let v = "mx.acme.example (dmarc=pass header.from=acme.example); none";
        assert_eq!(parse_results(v, "mx.acme.example"), Some(vec![]));
    }

    #[test]
    fn alignment_is_relaxed_but_not_loose() {
        let a = Authentication {
            domains: vec!["acme.example".into()],
            by: String::new(),
            assumed: false,
        };
        assert!(a.covers("ann@acme.example"));
        assert!(a.covers("ann@EU.Acme.Example"));
        assert!(!a.covers("ann@notacme.example"));
        assert!(!a.covers("ann@acme.example.evil.test"));
        assert!(!a.covers("ann@example"));
        assert!(!a.covers("no-at-sign"));
        let sub = Authentication {
            domains: vec!["mail.acme.example".into()],
            ..a.clone()
        };
        assert!(!sub.covers("ann@acme.example"), "only DMARC knows that one");
        assert!(sub.covers("ann@x.mail.acme.example"));
        assert!(!Authentication::none("x").covers("ann@acme.example"));
        assert!(Authentication::assumed().covers("anyone@anywhere.example"));
    }

    #[test]
    fn the_topmost_header_of_the_relay_wins() {
        // A forged header of the same id below the relay's own is not read.
        let raw = b"Authentication-Results: mx.acme.example; dkim=none; spf=none smtp.mailfrom=evil.example\r\nReceived: from evil\r\nAuthentication-Results: mx.acme.example; dmarc=pass header.from=acme.example\r\nFrom: ann@acme.example\r\n\r\nhi\r\n";
        let a = from_results(raw, "mx.acme.example", "trusted relay 127.0.0.1");
        assert!(!a.covers("ann@acme.example"), "{a:?}");
        let raw = b"Authentication-Results: other.example; dkim=pass header.d=evil.example\r\nAuthentication-Results: mx.acme.example;\r\n dkim=pass header.d=acme.example\r\nFrom: ann@acme.example\r\n\r\nhi\r\n";
        let a = from_results(raw, "mx.acme.example", "relay");
        assert!(a.covers("ann@acme.example"), "{a:?}");
        assert!(!a.covers("x@evil.example"), "{a:?}");
    }

    /// Pulled mail: the provider's own header (Gmail's authserv-id by
    /// default); a plain IMAP channel names none, so nothing is believed.
    #[test]
    fn pulled_mail_is_judged_by_the_providers_header() {
        let config = |kind: &str, extra: &str| {
            crate::config::parse(
                &format!(
                    "[[channels]]\nid = \"c\"\nkind = \"{kind}\"\naddress = \"c@acme.example\"\n{extra}"
                ),
                std::path::Path::new("t.toml"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let raw = b"Authentication-Results: mx.google.com;\r\n dkim=pass header.i=@acme.example header.s=g1;\r\n spf=pass smtp.mailfrom=ann@acme.example\r\nAuthentication-Results: mx.google.com; dmarc=pass header.from=evil.example\r\nFrom: ann@acme.example\r\n\r\nhi\r\n";
        let gmail = config(
            "gmail",
            "[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"Cargo.toml\"\n",
        );
        let a = pulled(raw, gmail.channel("c"));
        assert!(a.covers("ann@acme.example"), "{a:?}");
        assert!(
            !a.covers("x@evil.example"),
            "only the topmost header: {a:?}"
        );
        let imap = config(
            "imap",
            "[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\n",
        );
        assert!(!pulled(raw, imap.channel("c")).covers("ann@acme.example"));
        let named = config(
            "imap",
            "[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\nauthserv_id = \"mx.google.com\"\n",
        );
        assert!(pulled(raw, named.channel("c")).covers("ann@acme.example"));
    }

    /// Review finds: a `;` inside a quoted local part (the relay echoes the
    /// sender's MAIL FROM) starts no result of its own; a header longer
    /// than the cap, whose tail could end inside a domain, proves nothing;
    /// a bare top-level domain proves nothing.
    #[test]
    fn quoted_values_long_headers_and_bare_tlds_prove_nothing() {
        let v = r#"mx.acme.example; spf=fail smtp.mailfrom="x;dkim=pass header.d=acme.example z"@evil.example"#;
        assert_eq!(parse_results(v, "mx.acme.example"), Some(vec![]));
        let v = r#"mx.acme.example; spf=pass smtp.mailfrom="x;dkim=pass header.d=acme.example z"@evil.example"#;
        assert_eq!(
            parse_results(v, "mx.acme.example"),
            Some(vec!["evil.example".to_string()])
        );
        let padding = "dkim=fail header.d=pad.example; ".repeat(400);
        let long = format!("mx.acme.example; {padding}dkim=pass header.d=com");
        assert_eq!(parse_results(&long, "mx.acme.example"), Some(vec![]));
        let tld = "mx.acme.example; dkim=pass header.d=com; dmarc=pass header.from=example";
        assert_eq!(parse_results(tld, "mx.acme.example"), Some(vec![]));
    }

    /// A relay's IPv4 address matches `trusted_relays` also when a
    /// dual-stack listener recorded it as an IPv4-mapped IPv6 address.
    #[tokio::test]
    async fn a_mapped_ipv4_relay_is_still_trusted() {
        let config = crate::config::parse(
            "[smtp]\ntrusted_relays = [\"192.0.2.25\"]\nauthserv_id = \"mx.acme.example\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let entry = SpoolEntry {
            id: crate::store::SpoolId(1),
            received_at: 0,
            source: SpoolSource::Smtp,
            mail_from: "ann@acme.example".into(),
            rcpt_to: vec![],
            client_ip: Some("::ffff:192.0.2.25".into()),
            helo: None,
            channel: None,
            raw: b"Authentication-Results: mx.acme.example; dmarc=pass header.from=acme.example\r\nFrom: ann@acme.example\r\n\r\nhi\r\n".to_vec(),
            content_hash: String::new(),
        };
        let a = Authenticator::off("test")
            .authenticate(&entry, &config, &HashSet::new())
            .await;
        assert!(a.covers("ann@acme.example"), "{a:?}");
    }

    /// A resolver that does not answer: the team member's claim is simply
    /// not authenticated (with the reason), and ingest goes on.
    #[tokio::test]
    async fn no_dns_answer_means_not_authenticated() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port");
        let config = crate::config::parse(
            "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let entry = SpoolEntry {
            id: crate::store::SpoolId(1),
            received_at: 0,
            source: SpoolSource::Smtp,
            mail_from: "ann@acme.example".into(),
            rcpt_to: vec![],
            client_ip: Some("192.0.2.9".into()),
            helo: Some("x.example".into()),
            channel: None,
            raw: b"DKIM-Signature: v=1; a=ed25519-sha256; d=acme.example; s=s1; h=from; bh=AAAA; b=AAAA\r\nFrom: ann@acme.example\r\n\r\nhi\r\n".to_vec(),
            content_hash: String::new(),
        };
        let trusted: HashSet<String> = ["ann@acme.example".to_string()].into();
        let a = Authenticator::new(DnsResolver::Server(closed))
            .authenticate(&entry, &config, &trusted)
            .await;
        assert!(!a.covers("ann@acme.example"), "{a:?}");
        assert!(
            a.by.contains("dkim") || a.by.contains("timed out"),
            "the reason is said: {a:?}"
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        for v in [
            "",
            ";;;",
            "(((",
            "a; =; dkim=; =pass; dkim=pass header.d=",
            "é; dkim=pass header.d=é",
            "\\",
        ] {
            let _ = parse_results(v, "a");
            let _ = parse_results(v, "");
        }
    }
}
