//! Addresses as people and mail clients write them inside forwarded blocks.
//!
//! Owns: turning a `From:` value typed into a body (`Name <a@b>`,
//! `"Last, First" <a@b>`, `Name [mailto:a@b]`, `a@b<mailto:a@b>`, a bare
//! address, or only a name) into an [`Address`], keyed as
//! [`crate::mail::normalize_email`] does.
//!
//! Untrusted input: any text. Limits: values longer than [`MAX_VALUE`] bytes are
//! truncated (on a char boundary) before parsing; never panics.

use super::Address;
use crate::mail::normalize_email;

/// Longest header value we look at.
pub(crate) const MAX_VALUE: usize = 2048;

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-'!#$&*/=?^`{|}~".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

/// Find the first plausible `local@domain.tld` in `s`, as (start, end) byte offsets.
pub(crate) fn find_email(s: &str) -> Option<(usize, usize)> {
    for (at, _) in s.match_indices('@') {
        let before = &s[..at];
        let after = &s[at + 1..];
        // No local part before this `@` (`Care @ Globex <care@…>`): try the next.
        let Some(start) = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_local_char(*c))
            .last()
            .map(|(i, _)| i)
        else {
            continue;
        };
        let mut local = &s[start..at];
        let mut start = start;
        // `mailto:` glued in front of the address.
        if let Some(p) = local.to_ascii_lowercase().rfind("mailto:") {
            start += p + 7;
            local = &s[start..at];
        }
        let local_trim = local.trim_start_matches(['.', '\'', '*']);
        start += local.len() - local_trim.len();
        let dom_len: usize = after
            .chars()
            .take_while(|c| is_domain_char(*c))
            .map(char::len_utf8)
            .sum();
        let domain = after[..dom_len].trim_end_matches(['.', '-']);
        if local_trim.is_empty() || !domain.contains('.') || domain.starts_with(['.', '-']) {
            continue;
        }
        let tld = domain.rsplit('.').next().unwrap_or("");
        if tld.chars().count() < 2 || tld.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        return Some((start, at + 1 + domain.len()));
    }
    None
}

/// `t` without one pair of enclosing quotes; a quote at one end only stays
/// (`'Maria Garcia' via Support` is a name, not a quoted one).
fn unquote(t: &str) -> &str {
    for (open, close) in [('"', '"'), ('\'', '\''), ('“', '”')] {
        if let Some(inner) = t.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            return inner;
        }
    }
    t
}

fn clean_name(s: &str) -> Option<String> {
    let t = s
        .trim()
        .trim_end_matches(['<', '[', '(', ','])
        .trim()
        .trim_matches('*')
        .trim();
    let t = unquote(t).trim();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() || t.contains('@') {
        None
    } else {
        Some(t)
    }
}

/// Parse a `From:` value from a body block. `None` when it holds nothing usable;
/// an [`Address`] with an empty email when it holds only a name.
pub(crate) fn parse_loose(value: &str) -> Option<Address> {
    let mut end = value.len().min(MAX_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let value = value[..end].trim();
    if value.is_empty() {
        return None;
    }
    match find_email(value) {
        Some((s, e)) => {
            let email = normalize_email(&value[s..e]);
            // The name is what precedes the first bracket/address.
            let cut = value
                .find(['<', '[', '('])
                .map_or(s, |b| b.min(s))
                .min(value.len());
            let name = clean_name(&value[..cut]).filter(|n| n.to_lowercase() != email);
            Some(Address { email, name })
        }
        None => clean_name(value).map(|n| Address {
            email: String::new(),
            name: Some(n),
        }),
    }
}

/// Convert a mail-parser address (first of the list) into ours.
pub(crate) fn from_parsed(addr: Option<&mail_parser::Address<'_>>) -> Option<Address> {
    let a = addr?.first()?;
    let email = normalize_email(a.address.as_deref().unwrap_or(""));
    let name = a
        .name
        .as_deref()
        .and_then(clean_name)
        .filter(|n| n.to_lowercase() != email);
    if email.is_empty() && name.is_none() {
        return None;
    }
    Some(Address { email, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "John Doe <john@example.com>",
                "john@example.com",
                Some("John Doe"),
            ),
            (
                "\"Doe, John\" <John.Doe@Example.COM>",
                "john.doe@example.com",
                Some("Doe, John"),
            ),
            // Quotes at one end only belong to the name (Google Groups).
            (
                "'Maria Garcia' via Support <support-group@googlegroups.com>",
                "support-group@googlegroups.com",
                Some("'Maria Garcia' via Support"),
            ),
            // An `@` in the name with no local part before it is skipped
            // (the name itself is dropped: names with `@` are not kept).
            (
                "Customer Care @ Globex <care@globex.example>",
                "care@globex.example",
                None,
            ),
            (
                "John Doe [mailto:john@example.com]",
                "john@example.com",
                Some("John Doe"),
            ),
            (
                "john@example.com<mailto:john@example.com>",
                "john@example.com",
                None,
            ),
            (
                "John Doe <john@example.com<mailto:john@example.com>>",
                "john@example.com",
                Some("John Doe"),
            ),
            ("<mailto:jo@ex.org>", "jo@ex.org", None),
            ("jo@ex.org", "jo@ex.org", None),
            (
                "山田 太郎 <taro@example.jp>",
                "taro@example.jp",
                Some("山田 太郎"),
            ),
            (
                "*Marie Curie* <marie@example.fr>",
                "marie@example.fr",
                Some("Marie Curie"),
            ),
            ("Doe, John", "", Some("Doe, John")),
        ];
        for (input, email, name) in cases {
            let a = parse_loose(input).unwrap_or_else(|| panic!("no address in {input}"));
            assert_eq!(a.email, *email, "{input}");
            assert_eq!(a.name.as_deref(), *name, "{input}");
        }
        assert!(parse_loose("   ").is_none());
        assert!(find_email("user@localhost").is_none());
        assert!(find_email("a@1.2.3.4").is_none());
        assert!(find_email("@@@..@").is_none());
    }
}
