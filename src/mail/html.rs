//! HTML body → plain text, keeping the line structure forwarded blocks need.
//!
//! Owns: a small tag stripper that turns block elements (`br`, `p`, `div`, `tr`,
//! `li`, `h1`–`h6`, `table`, `blockquote`) into line breaks and `hr` into an
//! Outlook-style underscore line, drops `head`/`style`/`script`/comments, and
//! decodes the common entities. mail-parser's own converter joins `div`s and
//! table rows onto one line, which hides Outlook and Thunderbird header blocks.
//!
//! Untrusted input: any HTML, possibly broken. Limits: output is capped at
//! [`MAX_TEXT`] bytes; linear time; never panics.

/// Largest text we produce from one HTML body.
pub(crate) const MAX_TEXT: usize = 512 * 1024;
/// The longest entity name looked for after `&` (`#x10FFFF` is 8).
const ENTITY_MAX: usize = 10;

const BLOCK_TAGS: &[&str] = &[
    "br",
    "p",
    "div",
    "tr",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "blockquote",
    "ul",
    "ol",
    "pre",
    "section",
    "article",
    "header",
    "footer",
];

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "rsquo" | "lsquo" => '\'',
        "ldquo" | "rdquo" => '"',
        "hellip" => '…',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            let c = char::from_u32(code)?;
            if c == '\u{a0}' { ' ' } else { c }
        }
    })
}

/// Convert HTML to text with one line per block element.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(MAX_TEXT) / 2);
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut pending_space = false;
    while !rest.is_empty() && out.len() < MAX_TEXT {
        if let Some(end_tag) = skip_until {
            match find_ci(rest, end_tag) {
                Some(i) => {
                    let after = &rest[i + end_tag.len()..];
                    rest = after.find('>').map_or("", |j| &after[j + 1..]);
                    skip_until = None;
                }
                None => break,
            }
            continue;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let close = rest.find('>').unwrap_or(rest.len());
            let inner = &rest[1..close];
            rest = rest.get(close + 1..).unwrap_or("");
            let closing = inner.starts_with('/');
            let name: String = inner
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            match name.as_str() {
                "head" | "style" | "script" | "title" if !closing => {
                    skip_until = Some(match name.as_str() {
                        "head" => "</head",
                        "style" => "</style",
                        "script" => "</script",
                        _ => "</title",
                    });
                }
                "hr" => {
                    newline(&mut out);
                    out.push_str("________________________________\n");
                }
                "td" | "th" if closing => pending_space = true,
                n if BLOCK_TAGS.contains(&n) => {
                    if n == "br" {
                        out.push('\n');
                    } else {
                        newline(&mut out);
                    }
                    pending_space = false;
                }
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let chunk = &rest[..next];
        rest = &rest[next..];
        let mut chars = chunk.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if out.len() >= MAX_TEXT {
                break;
            }
            let c = if c == '&' {
                let tail = &chunk[i + 1..];
                // An entity's name is at most 10 bytes: look no further for
                // its `;` (a text of `&`s must stay linear).
                match tail.as_bytes()[..tail.len().min(ENTITY_MAX + 1)]
                    .iter()
                    .position(|&b| b == b';')
                    .and_then(|j| entity(&tail[..j]).map(|e| (e, j)))
                {
                    Some((e, j)) => {
                        for _ in 0..=j {
                            chars.next();
                        }
                        e
                    }
                    None => '&',
                }
            } else {
                c
            };
            if c.is_whitespace() {
                pending_space = true;
                continue;
            }
            if pending_space && !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    // Collapse runs of blank lines to one.
    let mut cleaned = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        cleaned.push_str(line);
        cleaned.push('\n');
    }
    cleaned
}

fn newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::{MAX_TEXT, html_to_text};

    #[test]
    fn html_table() {
        let cases: &[(&str, &str)] = &[
            ("a<br>b", "a\nb\n"),
            ("<div>a</div><div>b</div>", "a\nb\n"),
            ("<p><b>From:</b> J &lt;j@x.io&gt;</p>", "From: J <j@x.io>\n"),
            (
                "<table><tr><th>Subject: </th><td>Hi</td></tr><tr><th>Date:</th><td>Mon</td></tr></table>",
                "Subject: Hi\nDate: Mon\n",
            ),
            ("<style>p{}</style>x&nbsp;y&#233;", "x yé\n"),
            ("a<hr>b", "a\n________________________________\nb\n"),
            ("<!-- c -->t", "t\n"),
            ("<broken", ""),
            ("&#xZZ; &", "&#xZZ; &\n"),
            // A `;` beyond an entity name's length ends no entity.
            (
                "&amp &abcdefghijk; &#x10FFFF;",
                "&amp &abcdefghijk; \u{10FFFF}\n",
            ),
            ("&&amp;&", "&&&\n"),
        ];
        for (html, text) in cases {
            assert_eq!(html_to_text(html), *text, "{html}");
        }
    }

    /// One text run of 8 MiB of `&` (any sender's HTML-only mail reaches
    /// this before any trust check): the output stops at MAX_TEXT, and each
    /// `&` looks at most ENTITY_MAX bytes ahead for its `;`. Before, every `&`
    /// searched the rest of the run (a 1 MiB run took 80 s in a debug build,
    /// holding up all of ingest) and the cap was checked only between tags.
    /// The worker thread and its deadline only turn such a regression into a
    /// failure instead of a hang: linear, this takes milliseconds.
    #[test]
    fn a_run_of_ampersands_is_capped_and_linear() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let html = format!("<p>{}</p>", "&".repeat(8 << 20));
            let _ = tx.send(html_to_text(&html).len());
        });
        let len = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("html_to_text of 8 MiB of '&' did not finish");
        assert!(len <= MAX_TEXT + 1, "output {len} bytes, cap {MAX_TEXT}");
        assert!(
            len >= MAX_TEXT,
            "output {len} bytes: the text was cut short"
        );
    }
}
