//! Thread stage helpers: ticket tokens in subjects and plus-addresses.
//!
//! Pure functions; the store does the lookups (In-Reply-To/References, token)
//! inside the ingest transaction.

use crate::store::TicketId;

/// The ticket number in a `[#N]` subject token (the last one wins, as
/// replies may quote older tokens first).
pub fn subject_token(subject: &str) -> Option<TicketId> {
    let mut found = None;
    let mut rest = subject;
    while let Some(i) = rest.find("[#") {
        let after = &rest[i + 2..];
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty()
            && after[digits.len()..].starts_with(']')
            && let Ok(n) = digits.parse::<i64>()
        {
            found = Some(TicketId(n));
        }
        rest = after;
    }
    found
}

/// The ticket number carried by a plus-address (`support+123@…` or
/// `support+t123@…`) of `channel_address`.
pub fn plus_token(recipient: &str, channel_address: &str) -> Option<TicketId> {
    let (local, domain) = recipient.rsplit_once('@')?;
    let (c_local, c_domain) = channel_address.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(c_domain) {
        return None;
    }
    let (base, tag) = local.split_once('+')?;
    if !base.eq_ignore_ascii_case(c_local) {
        return None;
    }
    let digits = tag.strip_prefix('t').unwrap_or(tag);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(TicketId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens() {
        let cases = [
            ("Re: Help [#12]", Some(12)),
            ("[#3] Re: [#45] old", Some(45)),
            ("No token", None),
            ("[#] empty", None),
            ("[#12 unclosed", None),
            ("[#99999999999999999999] overflow", None),
            ("Ünïcödé [#7]", Some(7)),
        ];
        for (s, want) in cases {
            assert_eq!(subject_token(s), want.map(TicketId), "{s}");
        }
    }

    #[test]
    fn plus_tokens() {
        let c = "support@acme.example";
        let cases = [
            ("support+12@acme.example", Some(12)),
            ("Support+t7@ACME.example", Some(7)),
            ("support+sales@acme.example", None),
            ("support@acme.example", None),
            ("sales+12@acme.example", None),
            ("support+12@other.example", None),
        ];
        for (r, want) in cases {
            assert_eq!(plus_token(r, c), want.map(TicketId), "{r}");
        }
    }
}
