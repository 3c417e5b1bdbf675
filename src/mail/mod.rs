//! Mail: what several layers share about mail itself — a leaf module that
//! imports no other postdesk module.
//!
//! Owns: [`address`] (email addresses keyed one way, and judged), [`html`] (HTML bodies as text, for resolution and replies), [`language`] (language codes),
//! [`opening`] (a new ticket's contact, subject and text as a person types them, checked),
//! [`subject`] (reply and forward prefixes in many languages), [`random`] (unpredictable bytes for secrets, tags and Message-IDs)
//! and [`tags`] (the signed tags that let postdesk recognise its own mail
//! when it comes back: notices and replies), [`check_typed_line`] (one rule
//! for a header line a person types) and [`without_nul`].

pub mod address;
pub mod html;
pub mod language;
pub mod opening;
pub mod random;
pub mod subject;
pub mod tags;

pub use address::{Email, email_of, is_valid_email, normalize_email};
pub use opening::{OpeningError, check_opening};
pub use random::random_bytes;

/// Why a line a person typed for a header cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// A line break or another control character.
    ControlCharacter,
    /// Over the caller's limit, in characters.
    TooLong,
    /// Nothing but white space.
    Empty,
}

/// Check one header line a person typed (a subject, a file name, a key):
/// refused, never repaired — no line break or other control character, not
/// blank, at most `max` characters.
pub fn check_typed_line(s: &str, max: usize) -> Result<(), LineError> {
    if s.chars().any(char::is_control) {
        Err(LineError::ControlCharacter)
    } else if s.chars().count() > max {
        Err(LineError::TooLong)
    } else if s.trim().is_empty() {
        Err(LineError::Empty)
    } else {
        Ok(())
    }
}

/// A Message-ID as stored and compared: without angle brackets, surrounding
/// space or NULs; `None` when nothing is left.
pub fn clean_message_id(id: &str) -> Option<String> {
    let id = id.trim().trim_matches(|c| c == '<' || c == '>').trim();
    (!id.is_empty()).then(|| without_nul(id.to_string()))
}

/// At most 200 characters of a peer's text (an IMAP server's answer, a token
/// endpoint's error) for status and logs.
pub fn short(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// `s` with every NUL character replaced by U+FFFD. Mail and form posts may
/// carry NULs (a stranger's choice, or a broken encoder); PostgreSQL's text
/// cannot hold them, and no reader wants them: every text a message or a
/// submission stores passes through here, whichever backend stores it.
pub fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_keeps_200_chars() {
        assert_eq!(super::short("abc"), "abc");
        let long = "é".repeat(300);
        assert_eq!(super::short(&long).chars().count(), 201);
    }

    #[test]
    fn nuls_become_replacement_characters() {
        assert_eq!(super::without_nul("a\0b\0".into()), "a\u{fffd}b\u{fffd}");
        assert_eq!(super::without_nul("plain".into()), "plain");
    }

    #[test]
    fn a_typed_line_is_checked_not_repaired() {
        use super::{LineError, check_typed_line};
        assert_eq!(check_typed_line("Your order", 10), Ok(()));
        assert_eq!(
            check_typed_line("Ré: ça", 6),
            Ok(()),
            "counted in characters"
        );
        assert_eq!(check_typed_line("Ré: ça!", 6), Err(LineError::TooLong));
        assert_eq!(
            check_typed_line("a\r\nBcc: x", 99),
            Err(LineError::ControlCharacter)
        );
        assert_eq!(
            check_typed_line("tab\there", 99),
            Err(LineError::ControlCharacter)
        );
        assert_eq!(check_typed_line(" \u{3000} ", 99), Err(LineError::Empty));
    }
}
