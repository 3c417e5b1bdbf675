//! Header runs without line breaks: `From: A <a@x>To: B <b@y>Sent: …Subject: …`.
//!
//! Owns: [`split`], which cuts one line holding a whole forwarded-header block
//! (Yahoo Mail writes its block so in every language, sometimes after its
//! `----- Forwarded Message -----` separator on the same line) into one piece
//! per label, so that the ordinary header grammar in `block.rs` reads it. A
//! label is any of `labels.rs`'s, followed by a colon; inside a run it must
//! start where a label can (after a non-letter, with a capital, or in a script
//! without case) — `Datum:` after `SELČ` or `GMT+1Subject:` split, the `to:` in
//! `auto:` does not.
//!
//! Must not: decide anything — `block.rs` checks the pieces as it checks lines.
//! Untrusted input: any text. Limits: lines longer than [`MAX_RUN`] bytes are
//! not split; the first label must start within [`FIRST_LABEL_WITHIN`] chars;
//! at most [`MAX_PIECES`] pieces; linear in the line; never panics.

use super::labels::{Field, MAX_LABEL_CHARS, field_for_label};

/// Longest line we try to split.
pub(crate) const MAX_RUN: usize = 4096;
/// The run's first label (From) starts within this many chars.
pub(crate) const FIRST_LABEL_WITHIN: usize = 160;
/// Pieces one run gives at most.
pub(crate) const MAX_PIECES: usize = 12;

fn is_colon(c: char) -> bool {
    c == ':' || c == '：'
}

/// Whether a label may start at a char `c` that follows `prev`.
fn may_start(prev: Option<char>, c: char) -> bool {
    if !c.is_alphabetic() {
        return false;
    }
    match prev {
        None => true,
        Some(p) if !p.is_alphanumeric() => true,
        // A cased letter glued to the text before it: only a capital.
        Some(_) if c.is_lowercase() => false,
        Some(_) => true,
    }
}

/// The label starting at byte `at` of `text`, as (field, byte end after the colon).
fn label_at(text: &str, at: usize) -> Option<(Field, usize)> {
    let rest = text.get(at..)?;
    let max = *MAX_LABEL_CHARS + 2;
    let (colon, c) = rest.char_indices().take(max).find(|(_, c)| is_colon(*c))?;
    let label = rest[..colon].trim_end().trim_end_matches('*').trim_end();
    if label.is_empty()
        || label.contains(|c: char| c.is_ascii_digit() || "<>@[](),;\"".contains(c))
        || label.split_whitespace().count() > 3
    {
        return None;
    }
    let (field, _) = field_for_label(label)?;
    Some((field, at + colon + c.len_utf8()))
}

/// Cut a glued header run into pieces, one per label; the text before the
/// first label (a separator, or nothing) is the first piece when not blank.
/// `None` when `text` is no run: fewer than three labels, or the first is not
/// From. `prefix_ok` judges the text before the first label.
pub(crate) fn split(text: &str, prefix_ok: impl Fn(&str) -> bool) -> Option<Vec<&str>> {
    if text.len() > MAX_RUN || text.len() < 16 {
        return None;
    }
    let colons = text.bytes().filter(|b| *b == b':').count() + text.matches('：').count();
    if colons < 3 {
        return None;
    }
    let mut starts: Vec<usize> = Vec::new();
    let mut prev: Option<char> = None;
    let mut skip_to = 0;
    for (n, (i, c)) in text.char_indices().enumerate() {
        if starts.is_empty() && n > FIRST_LABEL_WITHIN {
            return None;
        }
        if i >= skip_to
            && may_start(prev, c)
            && let Some((field, end)) = label_at(text, i)
        {
            if starts.is_empty() && field != Field::From {
                return None;
            }
            starts.push(i);
            skip_to = end;
            if starts.len() >= MAX_PIECES {
                break;
            }
        }
        prev = Some(c);
    }
    if starts.len() < 3 {
        return None;
    }
    let first = starts[0];
    let head = text[..first].trim().trim_end_matches('*').trim();
    if !head.is_empty() && !prefix_ok(head) {
        return None;
    }
    let mut pieces = Vec::with_capacity(starts.len() + 1);
    if !head.is_empty() {
        pieces.push(&text[..first]);
    }
    for (k, s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        pieces.push(&text[*s..end]);
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::split;

    fn run(text: &str) -> Option<Vec<&str>> {
        split(text, |h| {
            h.contains("Forwarded") || h.contains("Přeposlaná")
        })
    }

    #[test]
    fn glued_table() {
        let got = run(
            "----- Forwarded Message ----- From: John Doe <john@x.example>To: Ann <ann@acme.example>Cc: Bob <bob@y.example>Sent: Monday, March 4, 2024, 10:00:00 AM GMT+1Subject: Help",
        );
        assert_eq!(
            got,
            Some(vec![
                "----- Forwarded Message ----- ",
                "From: John Doe <john@x.example>",
                "To: Ann <ann@acme.example>",
                "Cc: Bob <bob@y.example>",
                "Sent: Monday, March 4, 2024, 10:00:00 AM GMT+1",
                "Subject: Help",
            ])
        );
        let cs = run("----- Přeposlaná zpráva ----- Od: Jan Novák <jan@x.example>Komu: Ann <ann@acme.example>Kopie: Datum: pondělí 4. března 2024 10:00 SELČPředmět: Faktura").unwrap_or_default();
        assert_eq!(cs.len(), 6, "{cs:?}");
        assert_eq!(cs[5], "Předmět: Faktura");
        assert_eq!(cs[3], "Kopie: ");
        let ja = run("差出人: 山田 <t@x.example>宛先: ann@acme.example送信日時: 2024年3月4日 10:00件名: 質問")
            .unwrap_or_default();
        assert_eq!(ja.len(), 4, "{ja:?}");
        // Not runs.
        assert_eq!(run("Meeting at 10:00: agenda: budget: more"), None);
        assert_eq!(run("Subject: x To: y Date: z"), None); // From first
        assert_eq!(
            run("Some prose here From: a <a@x.example>To: b Subject: c"),
            None
        );
        assert_eq!(run("From: ann@acme.example about: the plan: x"), None);
        // A lower-case label glued to a word is no label.
        assert_eq!(run("From: a <a@x.example>auto: xto: ydate: z"), None);
        assert_eq!(run("From: a"), None);
    }
}
