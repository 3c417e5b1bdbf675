//! Email addresses as postdesk keys them: users, channels, contacts,
//! forwarders and recipients are all compared in this one form — trimmed,
//! without angle brackets, lower-case. No provider-specific rewriting (dots
//! and `+tags` in Gmail addresses are kept: they may name different people
//! elsewhere).
//!
//! Untrusted input: any text (headers, form fields, API bodies, config).

use std::fmt;

/// An address that is `local@domain` in the keyed form: no whitespace, no
/// control characters, a non-empty local part and domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    /// `s` keyed ([`normalize_email`]) when it is `local@domain`; `None`
    /// for anything else (a name alone, `@x`, spaces inside).
    pub fn parse(s: &str) -> Option<Email> {
        let a = normalize_email(s);
        let (local, domain) = a.rsplit_once('@')?;
        if local.is_empty()
            || domain.is_empty()
            || a.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        Some(Email(a))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// [`Email::parse`] as a `String`: the form contacts and recipients are
/// stored in.
pub fn email_of(s: &str) -> Option<String> {
    Email::parse(s).map(Email::into_string)
}

/// `s` in the keyed form — trimmed, angle brackets and the space inside them
/// removed, lower-case — without judging whether it is an address (lookups
/// and configuration values; [`Email::parse`] also checks the shape).
pub fn normalize_email(s: &str) -> String {
    s.trim()
        .trim_matches(|c| c == '<' || c == '>')
        .trim()
        .to_lowercase()
}

/// Whether `s` is an address we accept where one is required (configured
/// users, channels and recipients, API contacts): a deliberately plain check: `local@domain`, no spaces or specials,
/// dot-separated domain labels.
pub fn is_valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let special = |c: char| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"@".contains(c);
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && !local.chars().any(special)
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// A display name an agent typed for a contact: trimmed; `None` when empty
/// or when it holds a control character (a line break would end the header
/// it is written into).
pub fn typed_name(name: Option<&str>) -> Option<String> {
    name.map(str::trim)
        .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_validation() {
        for ok in [
            "a@b",
            "ann.agent+tag@acme.example",
            "x_y@sub.acme-corp.example",
        ] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "@b", "a@", "a@@b", "a b@c", "a@b..c", ".a@b", "a@-b.c", "<a@b>",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn addresses_are_keyed_one_way() {
        for (input, want) in [
            ("Ann@Acme.Example", Some("ann@acme.example")),
            ("  <Bob@X.Example> ", Some("bob@x.example")),
            ("a.b+tag@gmail.com", Some("a.b+tag@gmail.com")),
            ("no-at-sign", None),
            ("@acme.example", None),
            ("ann@", None),
            ("ann smith@acme.example", None),
            ("ann\u{0}@acme.example", None),
        ] {
            assert_eq!(
                Email::parse(input).as_ref().map(Email::as_str),
                want,
                "{input:?}"
            );
        }
        assert_eq!(normalize_email(" <Ann@Acme.Example> "), "ann@acme.example");
        assert_eq!(normalize_email("Ann Agent"), "ann agent");
    }

    #[test]
    fn a_typed_name_is_trimmed_and_one_line() {
        assert_eq!(typed_name(Some("  Carol  ")).as_deref(), Some("Carol"));
        assert_eq!(typed_name(Some("   ")), None);
        assert_eq!(typed_name(Some("Carol\r\nBcc: x@evil.example")), None);
        assert_eq!(typed_name(None), None);
    }
}
