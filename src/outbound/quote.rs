//! Quoted history in replies, inline images (`cid:`) included: pure, no I/O.
//!
//! [`Quote::of`] turns the message a reply answers (the ticket's last
//! customer message, as stored: its text, its HTML, and its raw mail for the
//! images) into a quote; `compose` puts it below the agent's text
//! (`On …, … wrote:` and `> ` lines) and the agent's HTML (a
//! `<blockquote type="cite">`), and sends the images the quoted HTML names
//! by `cid:` as `multipart/related` parts with their Content-IDs — so they
//! show in the customer's mail client as they did in their own message.
//! [`inline_part`] finds a part by Content-ID in stored raw mail (what the
//! API serves for a conversation's `cid:` images).
//!
//! UNTRUSTED INPUT: all of it was written by the customer (or whoever wrote
//! the quoted mail). Only image parts are carried over, with a Content-ID
//! and a media type of plain token characters ([`valid_cid`],
//! [`valid_media_type`]), at most [`MAX_INLINE`] of them and
//! [`MAX_INLINE_BYTES`] in all; the HTML goes back only to the customer who
//! sent it (inside a blockquote, `<script>` and `<style>` elements removed).

use mail_parser::{MessageParser, MimeHeaders, PartType};

pub use crate::store::QuoteSource;

/// Most inline images one quote carries.
pub const MAX_INLINE: usize = 20;
/// Most bytes of inline images one quote carries (the rest are left out;
/// their `cid:` stays, as a broken image, never an error).
pub const MAX_INLINE_BYTES: usize = 10 * 1024 * 1024;

/// One inline image carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineImage {
    /// Content-ID, without angle brackets.
    pub cid: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// A quote ready to compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// `On <date>, <name> <address> wrote:`
    pub attribution: String,
    pub text: String,
    /// The quoted HTML's body content.
    pub html: Option<String>,
    pub images: Vec<InlineImage>,
}

impl Quote {
    /// The quote of `src`: its images are those of its raw mail that its
    /// HTML names by `cid:`.
    pub fn of(src: &QuoteSource) -> Quote {
        let who = match src.from_name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => format!("{n} <{}>", src.from_email),
            _ => src.from_email.clone(),
        };
        let attribution = match src.date.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => format!("On {d}, {who} wrote:"),
            _ => format!("{who} wrote:"),
        };
        let html = src.html.as_deref().map(body_content);
        let images = match (&html, &src.raw) {
            (Some(h), Some(raw)) => images_named(raw, h),
            _ => Vec::new(),
        };
        Quote {
            attribution,
            text: src.text.clone(),
            html,
            images,
        }
    }

    /// The quote as text: the attribution, then each line after `> `.
    pub fn as_text(&self) -> String {
        let mut out = format!("{}\n", self.attribution);
        for line in self.text.trim_end().lines() {
            if line.is_empty() {
                out.push_str(">\n");
            } else {
                out.push_str("> ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The quote as HTML: the attribution, then the quoted HTML (or the
    /// text, escaped) in a `<blockquote type="cite">`.
    pub fn as_html(&self) -> String {
        let inner = match &self.html {
            Some(h) => h.clone(),
            None => super::compose::text_to_html(&self.text),
        };
        format!(
            "<div class=\"postdesk-quote\">\n<p>{}</p>\n<blockquote type=\"cite\" style=\"margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex\">\n{inner}\n</blockquote>\n</div>",
            super::signature::escape_html(&self.attribution)
        )
    }
}

/// The content of an HTML document's `<body>` (all of it when it has none),
/// `<script>` and `<style>` elements removed.
fn body_content(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let start = lower
        .find("<body")
        .and_then(|i| lower[i..].find('>').map(|j| i + j + 1))
        .unwrap_or(0);
    let end = lower[start..]
        .find("</body")
        .map_or(html.len(), |i| start + i);
    let mut out = html[start..end].to_string();
    for tag in ["script", "style"] {
        out = strip_element(&out, tag);
    }
    out.trim().to_string()
}

/// `html` without any `<tag …>…</tag>` element (case-insensitive; an
/// unclosed one runs to the end).
fn strip_element(html: &str, tag: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{tag}");
    let close = format!("</{tag}");
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&open).map(|i| at + i) {
        out.push_str(&html[at..i]);
        at = match lower[i..].find(&close) {
            Some(j) => {
                let after = i + j;
                lower[after..]
                    .find('>')
                    .map_or(html.len(), |k| after + k + 1)
            }
            None => html.len(),
        };
    }
    out.push_str(&html[at..]);
    out
}

/// The Content-IDs `html` names (`cid:…` in attributes), each once.
pub fn cids_named(html: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("cid:") {
        let rest = &html[i + 4..];
        let end = rest
            .find(|c: char| matches!(c, '"' | '\'' | ')' | '>' | ' ') || c.is_whitespace())
            .unwrap_or(rest.len());
        let cid = percent_decode(&rest[..end]);
        if valid_cid(&cid) && !out.contains(&cid) {
            out.push(cid);
        }
    }
    out
}

/// `%40` → `@` (mail clients escape Content-IDs in URLs).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Content-ID we repeat in a header: printable ASCII without spaces or
/// angle brackets, 1 to 250 bytes.
pub fn valid_cid(cid: &str) -> bool {
    !cid.is_empty()
        && cid.len() <= 250
        && cid
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
}

/// `type/subtype` of token characters.
pub fn valid_media_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
    };
    t.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// The image parts of `raw` whose Content-ID `html` names, within the limits.
fn images_named(raw: &[u8], html: &str) -> Vec<InlineImage> {
    let wanted = cids_named(html);
    let mut out: Vec<InlineImage> = Vec::new();
    let mut bytes = 0;
    for cid in wanted {
        if out.len() >= MAX_INLINE {
            break;
        }
        let Some(img) = inline_part(raw, &cid).filter(|i| i.content_type.starts_with("image/"))
        else {
            continue;
        };
        if bytes + img.data.len() > MAX_INLINE_BYTES {
            continue;
        }
        bytes += img.data.len();
        out.push(img);
    }
    out
}

/// The part of raw mail `raw` with Content-ID `cid` (without brackets,
/// case-sensitive as RFC 2392 says), decoded, with its media type — if it
/// is a leaf part with a usable Content-ID and media type.
pub fn inline_part(raw: &[u8], cid: &str) -> Option<InlineImage> {
    if !valid_cid(cid) {
        return None;
    }
    let msg = MessageParser::default().parse(raw)?;
    msg.parts.iter().find_map(|p| {
        let id = p
            .content_id()?
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        if id != cid {
            return None;
        }
        let data = match &p.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
            _ => return None,
        };
        let ct = p.content_type()?;
        let media = format!("{}/{}", ct.ctype(), ct.subtype()?).to_ascii_lowercase();
        valid_media_type(&media).then(|| InlineImage {
            cid: cid.to_string(),
            content_type: media,
            data,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR fake image bytes";

    fn raw() -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
        format!(
            "From: Kim <kim@customer.example>\r\nSubject: Broken\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{{}}</style></head><body><p>See:</p><img src=\"cid:shot%401\"><script>x()</script><img src='cid:missing@1'></body></html>\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <shot@1>\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--r\r\nContent-Type: text/plain\r\nContent-ID: <note@1>\r\n\r\nnot an image\r\n--r--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_quote_carries_the_images_its_html_names() {
        let src = QuoteSource {
            from_email: "kim@customer.example".into(),
            from_name: Some("Kim".into()),
            date: Some("Thu, 26 Nov 2026 10:00:00 +0000".into()),
            text: "See:\n\nthe screenshot".into(),
            html: Some(
                "<html><body><p>See:</p><img src=\"cid:shot%401\"><img src=\"cid:note@1\"><script>x()</script></body></html>".into(),
            ),
            raw: Some(raw()),
        };
        let q = Quote::of(&src);
        assert_eq!(
            q.attribution,
            "On Thu, 26 Nov 2026 10:00:00 +0000, Kim <kim@customer.example> wrote:"
        );
        assert_eq!(
            q.images,
            [InlineImage {
                cid: "shot@1".into(),
                content_type: "image/png".into(),
                data: PNG.to_vec()
            }],
            "only images, only those named"
        );
        let html = q.as_html();
        assert!(html.contains("<img src=\"cid:shot%401\">"), "{html}");
        assert!(
            !html.contains("<script") && !html.contains("<body"),
            "{html}"
        );
        assert_eq!(
            q.as_text(),
            "On Thu, 26 Nov 2026 10:00:00 +0000, Kim <kim@customer.example> wrote:\n> See:\n>\n> the screenshot\n"
        );
    }

    #[test]
    fn content_ids_and_types_from_strangers_are_checked() {
        assert_eq!(
            cids_named("<img src=\"CID:a@b\"> <img src='cid:a@b'> url(cid:c%3Ed) cid:"),
            ["a@b"]
        );
        assert!(!valid_cid("a b") && !valid_cid("a>b") && !valid_cid(""));
        assert!(valid_media_type("image/svg+xml"));
        assert!(!valid_media_type("image/png\r\nBcc: x") && !valid_media_type("image"));
        assert_eq!(
            inline_part(&raw(), "note@1")
                .map(|p| p.content_type)
                .as_deref(),
            Some("text/plain")
        );
        assert_eq!(inline_part(&raw(), "nope"), None);
        assert_eq!(inline_part(b"not mail", "shot@1"), None);
        assert_eq!(
            strip_element("a<SCRIPT src=x>b</script >c<style>", "script"),
            "ac<style>"
        );
    }
}
