//! Subject prefixes of replies and forwards, in many languages.
//!
//! Owns: [`strip_subject_prefixes`], the ticket tags (`[#N-secret]`) replies
//! carry and inbound subjects are searched for, and the "does this subject say forward /
//! reply" questions the forwarded-block scanner asks, with the prefix words
//! (data, at the end of this file). Untrusted input: any subject. Limits: at most
//! [`MAX_PREFIXES`] prefixes are removed; never panics.

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

/// Subject prefixes, lower-case, without the colon.
pub(crate) const FORWARD_PREFIXES: &[&str] = &[
    "fwd",
    "fw",
    "wg",
    "tr",
    "rv",
    "enc",
    "i",
    "doorst",
    "vs",
    "vb",
    "vl",
    "pd",
    "rif",
    "ilt",
    "i̇lt",
    "továbbítás",
    "pfwd",
    "пересл",
    "перес",
    "fwd",
    "転送",
    "edasi",
    "redirecționare",
    "prosl",
    "转发",
    "轉寄",
    "转寄",
    "전달",
    "הועבר",
    "προώθ",
];
pub(crate) const REPLY_PREFIXES: &[&str] = &[
    "re",
    "aw",
    "sv",
    "antw",
    "odp",
    "r",
    "vá",
    "ynt",
    "вс",
    "отв",
    "ответ",
    "відп",
    "返信",
    "res",
    "atb",
    "vs",
    "odg",
    "răsp",
    "rsp",
    "vast",
    "回复",
    "回覆",
    "답장",
    "απ",
    "σχετ",
    "השב",
    "رد",
];

/// A ticket's tag in a subject: `[#N]`, or `[#N-secret]` with the ticket's
/// secret (lower-cased) — how replies name the ticket they continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTag {
    pub ticket: i64,
    pub secret: Option<String>,
}

/// The tag of `ticket` for outgoing subjects: `[#N-secret]`, or `[#N]` for
/// a ticket without a secret.
pub fn ticket_tag(ticket: i64, secret: &str) -> String {
    if secret.is_empty() {
        format!("[#{ticket}]")
    } else {
        format!("[#{ticket}-{secret}]")
    }
}

/// The `[#N]` or `[#N-secret]` tag of a subject (the last one wins, as
/// replies may quote older tags first).
pub fn last_ticket_tag(subject: &str) -> Option<TicketTag> {
    let mut found = None;
    let mut rest = subject;
    while let Some(i) = rest.find("[#") {
        let after = &rest[i + 2..];
        if let Some(t) = parse_tag(after) {
            found = Some(t);
        }
        rest = after;
    }
    found
}

/// `N]` or `N-secret]` at the start of `s`.
fn parse_tag(s: &str) -> Option<TicketTag> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: i64 = s.get(..digits)?.parse().ok()?;
    let rest = s.get(digits..)?;
    if rest.starts_with(']') {
        return Some(TicketTag {
            ticket: n,
            secret: None,
        });
    }
    let rest = rest.strip_prefix('-')?;
    let len = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
    let secret = rest.get(..len)?;
    if !(4..=32).contains(&len) || !rest.get(len..)?.starts_with(']') {
        return None;
    }
    Some(TicketTag {
        ticket: n,
        secret: Some(secret.to_ascii_lowercase()),
    })
}

/// `subject` without any `[#N]` / `[#N-secret]` tag of `ticket`.
pub fn strip_ticket_tags(subject: &str, ticket: i64) -> String {
    let mut out = String::with_capacity(subject.len());
    let mut rest = subject;
    while let Some(i) = rest.find("[#") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match parse_tag(after).filter(|t| t.ticket == ticket) {
            Some(_) => {
                let end = after.find(']').map_or(after.len(), |e| e + 1);
                rest = &after[end..];
            }
            None => {
                out.push_str("[#");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_only_for_their_ticket() {
        assert_eq!(
            strip_ticket_tags("Re: Help [#12-k3f9q2ab] x", 12),
            "Re: Help  x"
        );
        assert_eq!(
            strip_ticket_tags("Re: Help [#12] [#13]", 12),
            "Re: Help  [#13]"
        );
        assert_eq!(strip_ticket_tags("[# [#12", 12), "[# [#12");
        assert_eq!(ticket_tag(7, "k3f9q2ab"), "[#7-k3f9q2ab]");
        assert_eq!(ticket_tag(7, ""), "[#7]");
        let subject = format!("Re: x {}", ticket_tag(7, "k3f9q2ab"));
        assert_eq!(last_ticket_tag(&subject).map(|t| t.ticket), Some(7));
    }

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
