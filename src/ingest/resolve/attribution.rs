//! Attribution lines: `On 28/10/2021 12:46, "John Doe" <john@x> wrote:` in any
//! language, as the intro of a quoted reply or of an Outlook 2019 / Apple Mail
//! forward.
//!
//! Owns: [`parse`], the grammar of one attribution (already joined when the
//! client wrapped it): `[intro] DATE [,] [verb] NAME <ADDRESS> [verb] :` where
//! the verb is a row of `labels.rs` (`wrote`, `schrieb`, `a écrit`, `写道`,
//! `님이 작성`…) either right after the address or anywhere before it (German,
//! Dutch, Scandinavian, Estonian, Arabic put it before the name), or absent
//! when the line ends with the address itself (Gmail in Russian, Japanese,
//! Hebrew: `пн, 4 мар. 2024 г. в 09:12, Иван <ivan@x>:`). A DATE is any of the
//! locale formats recognised by [`has_date`]: a time `9:12`/`09.12`/`9：12`, a
//! year 1970–2099, or a numeric date `28/10/2021`, `04.03.24`, `2024-03-04`,
//! `2024/03/04` — in ASCII, Arabic-Indic, Persian, Devanagari, Thai or
//! full-width digits (`2024年3月4日`, `2024년 3월 4일`, `2024. márc. 4.` have
//! their year).
//!
//! Must not: decide whether the attribution opens a forward or a reply (that
//! needs the subject and the text around: `block.rs`).
//! Untrusted input: any text. Limits: candidates longer than
//! [`MAX_ATTRIBUTION`] chars are refused; linear; never panics.

use super::Address;
use super::address::{find_email, parse_loose};
use super::labels::{field_for_label, verb_langs, wrote_verbs};

/// Longest attribution (joined) we read, in chars.
pub(crate) const MAX_ATTRIBUTION: usize = 400;
/// Longest text between the address and the colon when a verb follows it.
const MAX_TAIL: usize = 80;

/// One parsed attribution line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attribution {
    pub from: Address,
    /// The date as written (intro and verb left in), when before the name.
    pub date: Option<String>,
    /// A verb (`wrote`…) was seen; without one the line ends with the address.
    pub verb: bool,
    /// The languages whose verb it is (`skrev`: da, sv, no).
    pub langs: Vec<&'static str>,
}

/// A digit of any of the scripts mail clients write dates in.
fn digit(c: char) -> Option<u32> {
    let base = match c {
        '0'..='9' => '0',
        '\u{660}'..='\u{669}' => '\u{660}',
        '\u{6f0}'..='\u{6f9}' => '\u{6f0}',
        '\u{966}'..='\u{96f}' => '\u{966}',
        '\u{e50}'..='\u{e59}' => '\u{e50}',
        '\u{ff10}'..='\u{ff19}' => '\u{ff10}',
        _ => return None,
    };
    Some(c as u32 - base as u32)
}

/// Whether `s` holds a date or time in one of the locale formats (see the
/// module doc).
pub(crate) fn has_date(s: &str) -> bool {
    let chars: Vec<char> = s.chars().take(MAX_ATTRIBUTION).collect();
    let at = |i: usize| chars.get(i).copied();
    let is_digit = |i: usize| at(i).and_then(digit).is_some();
    // Length of the digit run starting at `i`, and its value.
    let run = |mut i: usize| -> (usize, u32) {
        let start = i;
        let mut v: u32 = 0;
        while let Some(d) = at(i).and_then(digit) {
            v = v.saturating_mul(10).saturating_add(d);
            i += 1;
        }
        (i - start, v)
    };
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(i) || i > 0 && is_digit(i - 1) {
            i += 1;
            continue;
        }
        let (n, v) = run(i);
        let after = i + n;
        if n == 4 && (1970..=2099).contains(&v) {
            return true;
        }
        if (1..=2).contains(&n)
            && matches!(at(after), Some(':' | '：' | '.' | 'h'))
            && run(after + 1).0 == 2
        {
            return true; // 9:12, 09.12, 14h05 (or a d.mm date)
        }
        if (1..=4).contains(&n)
            && let Some(sep @ ('/' | '.' | '-')) = at(after)
        {
            let (n2, _) = run(after + 1);
            if (1..=2).contains(&n2) && at(after + 1 + n2) == Some(sep) {
                let (n3, _) = run(after + 2 + n2);
                if (2..=4).contains(&n3) {
                    return true;
                }
            }
        }
        i = after;
    }
    false
}

fn contains_verb(lower: &str) -> bool {
    wrote_verbs().any(|v| lower.contains(v))
}

/// Closers and duplicated `<mailto:…>` after the address.
fn skip_closers(mut t: &str) -> &str {
    for _ in 0..4 {
        t = t.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, '>' | ']' | ')' | '"' | '\'' | '»' | '”')
        });
        let lower_start: String = t.chars().take(8).collect::<String>().to_lowercase();
        if lower_start.starts_with("<mailto:") || lower_start.starts_with("[mailto:") {
            let close = if t.starts_with('<') { '>' } else { ']' };
            match t.find(close) {
                Some(i) => t = &t[i + 1..],
                None => return "",
            }
        } else {
            break;
        }
    }
    t
}

/// The person's name just before the address, if it reads as one.
fn name_before(head: &str) -> (Option<String>, usize) {
    let h = head
        .trim_end()
        .trim_end_matches(['<', '[', '(', '"', '\'', '«', '“'])
        .trim_end();
    let h = h.strip_suffix("mailto:").unwrap_or(h).trim_end();
    // The name follows the last comma (or the last digit-bearing token,
    // verb or label word) of the head.
    let piece_start = h
        .rfind([',', '，', '、', '،'])
        .map_or(0, |i| i + h[i..].chars().next().map_or(1, char::len_utf8));
    let mut start = piece_start;
    let mut pos = piece_start;
    for token in h[piece_start..].split_inclusive(char::is_whitespace) {
        let before = pos;
        pos += token.len();
        let word = token.trim().to_lowercase();
        // Filler words (`AM`, `Uhr`, `מאת`) only right after the date part.
        let filler = start == before
            && (matches!(
                word.as_str(),
                "am" | "pm" | "a.m." | "p.m." | "uhr" | "h" | "um" | "at" | "kl." | "kl"
            ) || field_for_label(&word).is_some());
        if filler || word.chars().any(|c| digit(c).is_some()) || wrote_verbs().any(|v| v == word) {
            start = pos;
        }
    }
    let name = h[start..].trim();
    let addr = parse_loose(name).filter(|a| a.email.is_empty());
    let name = addr.and_then(|a| a.name).filter(|n| {
        n.chars().count() <= 80
            && !n.chars().any(|c| digit(c).is_some())
            && !contains_verb(&n.to_lowercase())
    });
    let date_end = if name.is_some() { start } else { h.len() };
    (name, date_end)
}

/// Parse one (joined) attribution line. `None` when it is not one.
pub(crate) fn parse(line: &str) -> Option<Attribution> {
    let t = line.trim();
    let t = t.strip_suffix([':', '：'])?.trim_end();
    if t.is_empty() || t.chars().count() > MAX_ATTRIBUTION {
        return None;
    }
    let (s, e) = find_email(t)?;
    let from = parse_loose(&t[s..e]).filter(|a| !a.email.is_empty())?;
    let head = &t[..s];
    let tail = skip_closers(&t[e..]).trim();
    let langs = if tail.is_empty() {
        if !has_date(head) {
            return None; // cheap before the verb search
        }
        verb_langs(&head.to_lowercase())
    } else {
        if tail.chars().count() > MAX_TAIL {
            return None;
        }
        let langs = verb_langs(&tail.to_lowercase());
        if langs.is_empty() {
            return None;
        }
        langs
    };
    let verb = !langs.is_empty();
    if !(has_date(head) || verb && has_date(tail)) {
        return None;
    }
    let (name, date_end) = name_before(head);
    let date = head[..date_end]
        .trim()
        .trim_end_matches([',', '，', '、', '،'])
        .trim();
    let date = (!date.is_empty() && has_date(date)).then(|| date.to_string());
    Some(Attribution {
        from: Address {
            email: from.email,
            name,
        },
        date,
        verb,
        langs,
    })
}

#[cfg(test)]
mod tests {
    use super::{has_date, parse};

    /// (email, name) of an attribution.
    type Want = Option<(&'static str, Option<&'static str>)>;
    /// (line, email, name) — `None`: not an attribution.
    const CASES: &[(&str, Want)] = &[
        (
            "On 28/10/2021 12:46, \"John Doe\" <john.doe@acme.com> wrote:",
            Some(("john.doe@acme.com", Some("John Doe"))),
        ),
        (
            "On Mon, Mar 4, 2024 at 9:12 AM John Carter <john.carter@example.com> wrote:",
            Some(("john.carter@example.com", Some("John Carter"))),
        ),
        (
            "Le lun. 4 mars 2024 à 09:12, Élodie Lefèvre <elodie@exemple.fr> a écrit :",
            Some(("elodie@exemple.fr", Some("Élodie Lefèvre"))),
        ),
        (
            "Am 04.03.2024 um 09:12 schrieb Jörg Müller <joerg@beispiel.de>:",
            Some(("joerg@beispiel.de", Some("Jörg Müller"))),
        ),
        (
            "пн, 4 мар. 2024 г. в 09:12, Иван Петров <ivan@primer.ru>:",
            Some(("ivan@primer.ru", Some("Иван Петров"))),
        ),
        (
            "4 марта 2024 г., в 9:12, Иван Петров <ivan@primer.ru> написал(а):",
            Some(("ivan@primer.ru", Some("Иван Петров"))),
        ),
        (
            "Kovács Péter <kovacs@pelda.hu> ezt írta (időpont: 2024. márc. 4., H, 9:12):",
            Some(("kovacs@pelda.hu", Some("Kovács Péter"))),
        ),
        (
            "李明 <liming@example.cn> 于2024年3月4日周一 09:12写道：",
            Some(("liming@example.cn", Some("李明"))),
        ),
        (
            "2024년 3월 4일 (월) 오전 9:12, 김민수 <minsu@example.kr>님이 작성:",
            Some(("minsu@example.kr", Some("김민수"))),
        ),
        (
            "في الاثنين، ٤ مارس ٢٠٢٤ في ٩:١٢ ص، كتب أحمد علي <ahmed@example.eg>:",
            Some(("ahmed@example.eg", Some("أحمد علي"))),
        ),
        (
            "On 4 Mar 2024, at 09:12, sam@example.org<mailto:sam@example.org> wrote:",
            Some(("sam@example.org", None)),
        ),
        // Not attributions.
        ("I wrote to john@example.com at 10:00 about this:", None),
        ("Please call john@example.com:", None),
        ("On Monday John <john@example.com> wrote:", None), // no date
        ("On Mon, Mar 4, 2024 at 9:12 AM John Carter wrote:", None), // no address
        ("On 4 Mar 2024 John <john@example.com> wrote", None), // no colon
    ];

    #[test]
    fn attribution_table() {
        for (line, want) in CASES {
            let got = parse(line);
            match (want, &got) {
                (None, None) => {}
                (Some((email, name)), Some(a)) => {
                    assert_eq!(a.from.email, *email, "{line}");
                    assert_eq!(a.from.name.as_deref(), *name, "{line}");
                }
                _ => panic!("{line}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn date_formats() {
        for yes in [
            "28/10/2021",
            "04.03.24",
            "2024-03-04",
            "9:12",
            "09.12",
            "2024年3月4日",
            "٤ مارس ٢٠٢٤",
            "९:१२",
            "１２：３０",
            "14h05",
        ] {
            assert!(has_date(yes), "{yes}");
        }
        for no in ["", "Monday", "12", "123456", "v1.2", "3000"] {
            assert!(!has_date(no), "{no}");
        }
    }
}
