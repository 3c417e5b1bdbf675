//! A message's search words, made here and handed to PostgreSQL ready:
//! the `tsvector` a message is indexed with and the `tsquery` a search
//! asks, both as PostgreSQL's text form, both from one folding
//! ([`tokens`]), so what a search asks is always spelled as the index
//! wrote it. Building them in PostgreSQL (`to_tsvector` over a folded
//! copy of the body) took about half of the database server's CPU while
//! mail was being ingested (docs/performance.md); here it is one pass
//! over the text on the indexer's blocking thread.
//!
//! Folding: lower case, accents dropped (Unicode canonical decomposition,
//! combining marks U+0300–U+036F removed), and a word is a run of letters
//! and digits (anything else — punctuation, spaces, symbols — separates
//! words), so `c1@customer.example` is the words c1, customer, example,
//! as SQLite's `unicode61` tokenizer splits it.

use std::collections::HashMap;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;

/// Longest word kept, in bytes (PostgreSQL refuses a lexeme of 2,047).
const MAX_WORD_BYTES: usize = 2_046;
/// The position every word from this one on is given (PostgreSQL's
/// largest).
const MAX_POSITION: u16 = 16_383;
/// Positions kept for one word (as many as PostgreSQL's `to_tsvector`
/// keeps).
const MAX_POSITIONS: usize = 255;
/// Bytes of one message's vector as PostgreSQL counts them ([`size`]): it
/// refuses a `tsvector` beyond 1 MB. Words and positions past this are
/// left out; the message is indexed with the rest, never refused.
const MAX_VECTOR_BYTES: usize = 1_000_000;

/// What a word of `len` bytes with `positions` takes in a `tsvector`'s
/// data: the word padded to an even length, a count, two bytes a
/// position.
fn size(len: usize, positions: usize) -> usize {
    len.next_multiple_of(2) + 2 + 2 * positions
}

/// Combining marks dropped by the folding.
const MARKS: std::ops::RangeInclusive<char> = '\u{300}'..='\u{36f}';

/// Call `each` with every folded word of `text`, in order. The text is
/// split at what is neither a letter, a digit nor a mark the folding
/// drops (a decomposed accent joins the letters around it); a word all in
/// ASCII (most of them) is only lowered, others are folded whole (lower
/// case, decomposed, marks dropped) and split again.
pub(super) fn each_word(text: &str, mut each: impl FnMut(&str)) {
    let mut folded = String::new();
    for w in text.split(|c: char| !(c.is_alphanumeric() || MARKS.contains(&c))) {
        if w.is_empty() {
            continue;
        }
        folded.clear();
        if w.is_ascii() {
            folded.push_str(w);
            folded.make_ascii_lowercase();
            if folded.len() <= MAX_WORD_BYTES {
                each(&folded);
            }
            continue;
        }
        folded.extend(
            w.chars()
                .flat_map(char::to_lowercase)
                .nfd()
                .filter(|c| !MARKS.contains(c)),
        );
        for part in folded.split(|c: char| !c.is_alphanumeric()) {
            if !part.is_empty() && part.len() <= MAX_WORD_BYTES {
                each(part);
            }
        }
    }
}

/// The folded words of `text`, in order.
pub(super) fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    each_word(text, |w| out.push(w.to_string()));
    out
}

/// The `tsvector` (text form) of a message whose `parts` (subject, body,
/// sender…) are read one after the other: each word with its positions.
pub(super) fn vector<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut positions: HashMap<String, Vec<u16>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    let mut at: u16 = 0;
    for part in parts {
        each_word(part, |word| {
            at = (at + 1).min(MAX_POSITION);
            if let Some(p) = positions.get_mut(word) {
                if p.len() < MAX_POSITIONS && p.last() != Some(&at) && bytes + 2 <= MAX_VECTOR_BYTES
                {
                    p.push(at);
                    bytes += 2;
                }
                return;
            }
            let more = size(word.len(), 1);
            if bytes + more > MAX_VECTOR_BYTES {
                return;
            }
            bytes += more;
            order.push(word.to_string());
            positions.insert(word.to_string(), vec![at]);
        });
    }
    let mut out = String::with_capacity(bytes + order.len() * 8);
    for word in &order {
        if !out.is_empty() {
            out.push(' ');
        }
        quote(&mut out, word);
        for (i, p) in positions[word].iter().enumerate() {
            out.push(if i == 0 { ':' } else { ',' });
            let _ = write!(out, "{p}");
        }
    }
    out
}

/// The `tsquery` (text form) for the words a user typed (each as
/// [`crate::store::search_words`] splits them): every word required, a
/// word of several parts (`c1@customer`) those parts in a row, the last
/// part a prefix. `None` when no word has a part (nothing can match).
pub(super) fn query(words: &[String]) -> Option<String> {
    let mut out = String::new();
    for word in words {
        let parts = tokens(word);
        if parts.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(" & ");
        }
        out.push('(');
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push_str(" <-> ");
            }
            quote(&mut out, part);
        }
        out.push_str(":*)");
    }
    (!out.is_empty()).then_some(out)
}

/// `word` as a quoted lexeme. A word is letters and digits only, so the
/// doubling of `'` and `\` never happens today; it keeps the text form
/// valid should the folding change.
fn quote(out: &mut String, word: &str) {
    out.push('\'');
    for c in word.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokens(text)
    }

    /// The folding as first written: the whole text folded, then split.
    fn reference(text: &str) -> Vec<String> {
        let folded: String = text
            .chars()
            .flat_map(char::to_lowercase)
            .nfd()
            .filter(|c| !MARKS.contains(c))
            .collect();
        folded
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && w.len() <= MAX_WORD_BYTES)
            .map(str::to_string)
            .collect()
    }

    /// Splitting first and folding each word (the fast path) gives what
    /// folding the whole text first gives: every character up to U+2FFF
    /// alone, between letters and doubled, decomposed accents, mixed
    /// scripts.
    #[test]
    fn folding_word_by_word_is_folding_the_whole_text() {
        let mut samples: Vec<String> = (1..0x3000u32)
            .filter_map(char::from_u32)
            .flat_map(|c| [c.to_string(), format!("a{c}b{c}{c}"), format!("{c}Z{c}")])
            .collect();
        samples.extend(
            [
                "Crème brûlée à São Paulo — Zoë's naïve café",
                "e\u{301} \u{301}\u{300}x İSTANBUL ǅemal ΣΊΣΥΦΟΣ",
                "Ελληνικά Ünïcödé 日本語のテキスト 😀👍 ß ﬁ Ǆ ﬀ ℌ Ω Å",
            ]
            .map(str::to_string),
        );
        let differ: Vec<&String> = samples
            .iter()
            .filter(|t| words(t) != reference(t))
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
        // The comparison sees a difference.
        assert_ne!(words("AB"), reference("A B"));
    }

    #[test]
    fn words_are_folded_runs_of_letters_and_digits() {
        assert_eq!(words("c1@Customer.example"), ["c1", "customer", "example"]);
        assert_eq!(
            words("Ünïcode  CAFÉ — naïve,façade"),
            ["unicode", "cafe", "naive", "facade"]
        );
        // Decomposed input folds as composed input does.
        assert_eq!(words("Cafe\u{301}"), words("Café"));
        assert_eq!(words("Ärger über Öl"), ["arger", "uber", "ol"]);
        assert_eq!(words("Заявка №42: Ошибка"), ["заявка", "42", "ошибка"]);
        assert_eq!(words("注文 番号12"), ["注文", "番号12"]);
        assert_eq!(
            words("don't_stop\tnow\0ever"),
            ["don", "t", "stop", "now", "ever"]
        );
        assert!(words(" -- !! ").is_empty());
        // A capital whose lower case has a combining mark (İ → i + U+0307).
        assert_eq!(words("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn a_vector_gives_each_word_its_positions_across_parts() {
        assert_eq!(
            vector(["Invoice 7", "the invoice, again", "a@b.example"]),
            "'invoice':1,4 '7':2 'the':3 'again':5 'a':6 'b':7 'example':8"
        );
        assert_eq!(vector(["", " ; "]), "");
    }

    #[test]
    fn a_vector_keeps_within_postgres_limits() {
        // A word longer than PostgreSQL takes is left out, and takes no
        // position.
        let long = "x".repeat(MAX_WORD_BYTES + 1);
        assert_eq!(vector([format!("a {long} b").as_str()]), "'a':1 'b':2");
        assert_eq!(words(&"y".repeat(MAX_WORD_BYTES)).len(), 1);
        // Positions stop at the largest, and a word keeps at most 256.
        let many = "w ".repeat(20_000);
        let v = vector([many.as_str(), "z"]);
        let positions: Vec<&str> = v
            .trim_start_matches("'w':")
            .split(' ')
            .next()
            .unwrap_or("")
            .split(',')
            .collect();
        assert_eq!(positions.len(), MAX_POSITIONS);
        assert!(v.ends_with("'z':16383"), "{}", &v[v.len() - 20..]);
        // Distinct words beyond the size PostgreSQL takes are left out;
        // the ones already there still are.
        let distinct: String = (0..200_000).map(|n| format!("w{n:07} ")).collect();
        let v = vector([distinct.as_str(), "w0000000 last"]);
        let kept: usize = v
            .split(' ')
            .map(|e| {
                let (word, at) = e.split_once(':').unwrap_or((e, ""));
                size(word.len() - 2, at.split(',').count())
            })
            .sum();
        assert!(kept <= MAX_VECTOR_BYTES, "{kept}");
        assert!(kept > MAX_VECTOR_BYTES - 20, "{kept}");
        assert!(!v.contains("'last'"));
        assert!(v.starts_with("'w0000000':1,"));
    }

    #[test]
    fn a_query_requires_every_word_and_reads_the_last_part_as_a_prefix() {
        let q = |typed: &[&str]| query(&typed.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        assert_eq!(q(&["Invoice"]), Some("('invoice':*)".into()));
        assert_eq!(
            q(&["c1@Customer.ex", "Café"]),
            Some("('c1' <-> 'customer' <-> 'ex':*) & ('cafe':*)".into())
        );
        assert_eq!(q(&["--", "x"]), Some("('x':*)".into()));
        assert_eq!(q(&["--"]), None);
        // What tsquery syntax a stranger types is only words.
        assert_eq!(
            q(&["a'b", "x:*|y", "!z&", "<->w)"]),
            Some("('a' <-> 'b':*) & ('x' <-> 'y':*) & ('z':*) & ('w':*)".into())
        );
        assert_eq!(q(&[]), None);
    }

    #[test]
    fn a_quote_in_a_word_is_doubled() {
        let mut out = String::new();
        quote(&mut out, r"it's\");
        assert_eq!(out, r"'it''s\\'");
    }
}
