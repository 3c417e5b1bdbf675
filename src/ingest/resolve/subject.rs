//! Subject prefixes of replies and forwards, in many languages.
//!
//! Owns: [`strip_subject_prefixes`] and the "does this subject say forward /
//! reply" questions the block scanner asks. The prefix words are data in
//! `labels.rs`. Untrusted input: any subject. Limits: at most
//! [`MAX_PREFIXES`] prefixes are removed; never panics.

use super::labels::{FORWARD_PREFIXES, REPLY_PREFIXES};

/// How many stacked prefixes we remove at most.
pub(crate) const MAX_PREFIXES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixKind {
    Forward,
    Reply,
}

/// If `s` starts with a known prefix (`Fwd:`, `RE[2]:`, `Aw :`, `転送：`), return
/// its kind and the rest after the colon.
fn split_prefix(s: &str) -> Option<(PrefixKind, &str)> {
    let s = s.trim_start();
    let word_len: usize = s
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == '\u{307}')
        .map(char::len_utf8)
        .sum();
    if word_len == 0 {
        return None;
    }
    let word = s[..word_len].to_lowercase();
    let mut rest = &s[word_len..];
    // Optional counter: `RE[2]:` or `Re(3):` or `Re^2:`.
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(r) = rest.strip_prefix(open)
            && let Some(end) = r.find(close)
            && r[..end].chars().all(|c| c.is_ascii_digit())
        {
            rest = &r[end + 1..];
        }
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))?;
    let kind = if FORWARD_PREFIXES.contains(&word.as_str()) {
        PrefixKind::Forward
    } else if REPLY_PREFIXES.contains(&word.as_str()) {
        PrefixKind::Reply
    } else {
        return None;
    };
    Some((kind, rest))
}

/// Remove reply/forward prefixes (`Re:`, `Fwd:`, `WG:`, `AW:`, `TR:`, `RV:`,
/// `Doorst:`, `VS:`, `SV:`, `Fw:`, `Rif:`, `R:`, `Odp:`, `Vá:`, `İlt:`, `ВС:`,
/// `Пересл:`, `転送:` …), repeated, any case. Also drops a `[Fwd: …]` wrapper.
pub fn strip_subject_prefixes(subject: &str) -> String {
    let mut s = subject.trim();
    for _ in 0..MAX_PREFIXES {
        match split_prefix(s) {
            Some((_, rest)) => s = rest.trim_start(),
            None => break,
        }
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && split_prefix(inner).is_some()
    {
        return strip_subject_prefixes(inner);
    }
    s.trim().to_string()
}

/// The first prefix's kind and word (lower-case), if any.
pub(crate) fn first_prefix_word(subject: &str) -> Option<(PrefixKind, String)> {
    let (kind, rest) = split_prefix(subject)?;
    let s = subject.trim_start();
    let word_len = s.len() - rest.len();
    let word: String = s
        .get(..word_len)
        .unwrap_or("")
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == '\u{307}')
        .collect();
    Some((kind, word.to_lowercase()))
}

/// The kind of the first prefix, if any.
pub(crate) fn first_prefix(subject: &str) -> Option<PrefixKind> {
    split_prefix(subject).map(|(k, _)| k)
}

/// Whether any of the stacked prefixes says forward.
pub(crate) fn has_forward_prefix(subject: &str) -> bool {
    let mut s = subject;
    for _ in 0..MAX_PREFIXES {
        match split_prefix(s) {
            Some((PrefixKind::Forward, _)) => return true,
            Some((PrefixKind::Reply, rest)) => s = rest,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_table() {
        let cases: &[(&str, &str)] = &[
            ("Re: Fwd: Hello", "Hello"),
            ("RE: RE: FW: Order 42", "Order 42"),
            ("WG: AW: Rechnung", "Rechnung"),
            ("TR: Facture", "Facture"),
            ("RV: Pedido", "Pedido"),
            ("Doorst: Vraag", "Vraag"),
            ("VS: SV: Spørgsmål", "Spørgsmål"),
            ("Fw: hi", "hi"),
            ("Rif: R: Ordine", "Ordine"),
            ("Odp: Pytanie", "Pytanie"),
            ("Vá: Kérdés", "Kérdés"),
            ("İlt: Soru", "Soru"),
            ("ВС: Пересл: Вопрос", "Вопрос"),
            ("転送: 質問", "質問"),
            ("転送：質問", "質問"),
            ("Re[2]: x", "x"),
            ("re : x", "x"),
            ("Re(3): x", "x"),
            ("[Fwd: Old style]", "Old style"),
            ("Trade: offer", "Trade: offer"),
            ("Ireland: trip", "Ireland: trip"),
            ("Hello", "Hello"),
            ("", ""),
            ("Re:", ""),
            ("ENC: Orçamento", "Orçamento"),
            ("I: Preventivo", "Preventivo"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_subject_prefixes(input), *want, "{input}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(first_prefix("Fwd: x"), Some(PrefixKind::Forward));
        assert_eq!(first_prefix("AW: WG: x"), Some(PrefixKind::Reply));
        assert!(has_forward_prefix("AW: WG: x"));
        assert!(!has_forward_prefix("Re: x"));
        assert_eq!(first_prefix("x"), None);
    }
}
