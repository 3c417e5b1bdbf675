//! What a person types to open a ticket — the contact's address and name,
//! a subject, a first text — checked by one set of rules for every way in
//! (an integration's `POST /api/v1/tickets`, a new email an agent
//! composes). Each caller answers a [`OpeningError`] in its own terms (an
//! API error code, an outbound error).

use super::address::{is_valid_email, normalize_email, typed_name};

/// Longest subject, in characters (RFC 5322's line limit, in bytes, is
/// kept by encoding and folding).
pub const MAX_SUBJECT: usize = 998;
/// Longest text, in bytes.
pub const MAX_TEXT_BYTES: usize = 2 * 1024 * 1024;

/// Why what was typed cannot open a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    #[error("{0:?} is not a valid email address")]
    Email(String),
    #[error("the subject must be 1-{MAX_SUBJECT} characters on one line")]
    Subject,
    #[error("the text is empty")]
    EmptyText,
    #[error("the text is over {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
}

/// What was typed, checked and cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The contact's address, normalised.
    pub email: String,
    /// The contact's name, if one usable was typed ([`typed_name`]).
    pub name: Option<String>,
    /// The subject, trimmed.
    pub subject: String,
}

/// Check a new ticket's contact address, contact name, subject and text.
pub fn check_opening(
    email: &str,
    name: Option<&str>,
    subject: &str,
    text: &str,
) -> Result<Opening, OpeningError> {
    let normalized = normalize_email(email);
    if !is_valid_email(&normalized) {
        return Err(OpeningError::Email(email.to_string()));
    }
    let subject = subject.trim();
    super::check_typed_line(subject, MAX_SUBJECT).map_err(|_| OpeningError::Subject)?;
    if text.trim().is_empty() {
        return Err(OpeningError::EmptyText);
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(OpeningError::TextTooLong);
    }
    Ok(Opening {
        email: normalized,
        name: typed_name(name),
        subject: subject.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opening_is_checked_and_cleaned() {
        assert_eq!(
            check_opening(" Ann@Customer.Example ", Some("  Ann  "), "  Hello ", "hi"),
            Ok(Opening {
                email: "ann@customer.example".into(),
                name: Some("Ann".into()),
                subject: "Hello".into(),
            })
        );
        // A name with a line break is no name (header injection).
        assert_eq!(
            check_opening("a@b.example", Some("Ann\r\nBcc: x@y"), "s", "t").map(|o| o.name),
            Ok(None)
        );
    }

    #[test]
    fn what_cannot_open_a_ticket_says_why() {
        let long_subject = "s".repeat(MAX_SUBJECT + 1);
        let long_text = "t".repeat(MAX_TEXT_BYTES + 1);
        for (email, subject, text, why) in [
            (
                "not an address",
                "s",
                "t",
                OpeningError::Email("not an address".into()),
            ),
            ("a@b.example", "  ", "t", OpeningError::Subject),
            ("a@b.example", "two\nlines", "t", OpeningError::Subject),
            ("a@b.example", &long_subject, "t", OpeningError::Subject),
            ("a@b.example", "s", " \n ", OpeningError::EmptyText),
            ("a@b.example", "s", &long_text, OpeningError::TextTooLong),
        ] {
            assert_eq!(check_opening(email, None, subject, text), Err(why));
        }
        assert!(check_opening("a@b.example", None, &"s".repeat(MAX_SUBJECT), "t").is_ok());
    }
}
