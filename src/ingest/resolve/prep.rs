//! Invisible characters out of a body before the block scanner reads it.
//!
//! Owns: [`clean`], which drops a UTF-8 BOM, zero-width characters and the
//! bidirectional marks and embeddings right-to-left clients put around labels
//! and addresses (U+200E/U+200F/U+061C, U+202A–U+202E, U+2066–U+2069), and turns
//! the no-break spaces French typography puts before a colon (U+00A0, U+202F,
//! U+2007) into plain spaces, so that `De\u{a0}:` and `\u{200f}מאת:` are labels.
//!
//! Untrusted input: any text. Limits: linear; an ASCII text is returned as is
//! (borrowed) without a second pass; never panics.

use std::borrow::Cow;

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{feff}'
            | '\u{200b}'..='\u{200f}'
            | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{00ad}'
    )
}

fn odd_space(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{202f}' | '\u{2007}' | '\u{2009}' | '\u{3000}'
    )
}

/// `text` with invisible marks removed and odd spaces made plain.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || !text.chars().any(|c| invisible(c) || odd_space(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if invisible(c) {
            continue;
        }
        out.push(if odd_space(c) { ' ' } else { c });
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_table() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("\u{feff}On x wrote:", "On x wrote:"),
            ("De\u{a0}: Marie", "De : Marie"),
            ("Objet\u{202f}: x", "Objet : x"),
            ("\u{200f}מאת:\u{200f} <a@b.co>", "מאת: <a@b.co>"),
            ("\u{202b}من: x\u{202c}", "من: x"),
            ("é\u{200b}", "é"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), *want, "{input:?}");
        }
    }
}
