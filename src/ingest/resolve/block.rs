//! The forwarded-header block in a body: find it, parse it, split the text.
//!
//! Owns: scanning plain text (already converted from HTML when needed) for the
//! block a mail client writes when forwarding inline, by one grammar for every
//! client and language (the words are data in `labels.rs`):
//! - a separator line (`---------- Forwarded message ---------`,
//!   `-----Original Message-----`, an Outlook underscore line, `Begin forwarded
//!   message:` and their translations) followed by `Label: value` lines
//!   (From/Date/Sent/Subject/To/Cc in any language, `*bold*`, ` :` with a
//!   (no-break) space, full-width `：`, continuation lines), or such lines alone
//!   when the subject says "forward";
//! - the same block glued into one line (Yahoo: `From: …To: …Subject: …`),
//!   cut into lines by `glued.rs` first;
//! - an attribution line (`On … <a@x> wrote:`, `Am … schrieb …:`, `… 写道：`;
//!   grammar in `attribution.rs`) followed by the quoted text (`>`, 4-space
//!   indent, or unmarked when converted from HTML) — a forward only when the
//!   subject's first prefix says forward, a forward separator came before it,
//!   or the subject has no prefix and there is at most a short note above;
//!   otherwise it opens a quoted reply and nothing below it counts.
//!
//! Lines are read with their `>` quote depth, after `prep.rs` removed BOMs,
//! bidi marks and no-break spaces. Returns the claimed sender, the forwarder's
//! note above and the forwarded text below.
//!
//! Must not: decide ownership (that needs team membership: `mod.rs` does it).
//! Bias: a miss is better than a false positive — ambiguous Outlook blocks count
//! only when the subject is not a reply, separator-less blocks only when the
//! subject says forward, a reply prefix (or `VS:` outside Danish/Norwegian)
//! makes an attribution a reply, and nothing after a reply intro counts.
//!
//! Untrusted input: any text. Limits: [`MAX_LINES`] lines are scanned,
//! [`MAX_HEADER_LINES`] per block, an attribution spans at most
//! [`MAX_ATTRIBUTION_LINES`]; each line is looked at a bounded number of
//! times; never panics.

use super::Address;
use super::address::parse_loose;
use super::attribution::{self, Attribution};
use super::glued;
use super::labels::{
    AMBIGUOUS_PREFIXES, Field, REPLY_INTRO_ENDINGS, SepPhrase, field_for_label, may_start_phrase,
    separator_phrase, wrote_verbs,
};
use super::prep;
use crate::mail::subject::{PrefixKind, first_prefix, first_prefix_word, has_forward_prefix};

/// Lines of a body we scan for a block.
pub(crate) const MAX_LINES: usize = 20_000;
/// Header lines (with continuations) one block may have.
pub(crate) const MAX_HEADER_LINES: usize = 16;
/// Lines a wrapped attribution (`On … <a@x>` / `wrote:`) may span.
pub(crate) const MAX_ATTRIBUTION_LINES: usize = 3;
/// Non-blank lines between a forward separator and the attribution it opens.
pub(crate) const SEPARATOR_GAP: usize = 2;
/// A forwarder's note above an attribution, when the subject says neither
/// forward nor reply, is at most this long (chars, lines): more is a reply.
pub(crate) const SHORT_NOTE: (usize, usize) = (240, 6);

/// The client whose block layout matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Gmail,
    Outlook,
    OutlookWeb,
    Apple,
    Thunderbird,
    Yahoo,
    Generic,
    /// An attribution line (`On … <a@x> wrote:`) opening a forward.
    Attribution,
}

impl Client {
    pub fn method(self) -> &'static str {
        match self {
            Client::Gmail => "body:gmail",
            Client::Outlook => "body:outlook",
            Client::OutlookWeb => "body:outlook-web",
            Client::Apple => "body:apple",
            Client::Thunderbird => "body:thunderbird",
            Client::Yahoo => "body:yahoo",
            Client::Generic => "body:generic",
            Client::Attribution => "body:attribution",
        }
    }
}

/// What the outer message tells the scanner.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Subject of the message whose body this is.
    pub subject: String,
    /// X-Mailer / User-Agent says Microsoft Outlook.
    pub outlook_mailer: bool,
}

/// One parsed forwarded block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub client: Client,
    /// The claimed sender; an empty email when the block names only a person.
    pub from: Address,
    pub date: Option<String>,
    pub subject: Option<String>,
    /// Text above the block (the forwarder's note), trimmed.
    pub note: String,
    /// Text below the block's headers, quote level of the block removed.
    pub body: String,
}

struct Line<'a> {
    raw: &'a str,
    depth: usize,
    text: &'a str,
}

fn split_quote(raw: &str) -> (usize, &str) {
    let mut depth = 0;
    let mut t = raw;
    loop {
        let s = t.trim_start_matches([' ', '\t']);
        match s.strip_prefix('>') {
            Some(r) if depth < 32 => {
                depth += 1;
                t = r.strip_prefix(' ').unwrap_or(r);
            }
            _ => return (depth, t.trim_end()),
        }
    }
}

/// Parse `Label: value` (with `*bold*` markers, French ` :`, full-width `：`).
fn label_line(text: &str) -> Option<(Field, bool, &str)> {
    let t = text.trim_start().trim_start_matches('*').trim_start();
    let idx = t
        .char_indices()
        .take(40)
        .find(|(_, c)| *c == ':' || *c == '：')?
        .0;
    let label = t[..idx].trim().trim_end_matches('*').trim();
    if label.split_whitespace().count() > 3 {
        return None;
    }
    let (field, sent) = field_for_label(label)?;
    let colon_len = t[idx..].chars().next().map_or(1, char::len_utf8);
    let value = t[idx + colon_len..]
        .trim_start_matches(['*', ' ', '\t'])
        .trim();
    Some((field, sent, value))
}

fn is_reply_intro(text: &str) -> bool {
    // Every ending is a colon: most lines are ruled out without lower-casing.
    let t = text.trim();
    if !t.ends_with([':', '：']) {
        return false;
    }
    let t = t.to_lowercase();
    if t.is_empty() || t.chars().count() > 300 {
        return false;
    }
    if REPLY_INTRO_ENDINGS.iter().any(|e| t.ends_with(e)) {
        return true;
    }
    // Any language's verb at the end, on a line that names a time or address
    // ("Customer writes:" alone may be a forwarder's note).
    let core = t.trim_end_matches([':', '：']).trim_end();
    t.contains(|c: char| c == '@' || c.is_ascii_digit()) && wrote_verbs().any(|v| core.ends_with(v))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    Forwarded { dashes: usize, mutt: bool },
    Original,
    Underscore,
    Apple,
}

fn separator(text: &str) -> Option<Sep> {
    let t = text.trim();
    if t.chars().count() > 120 {
        return None;
    }
    let core =
        t.trim_matches(|c: char| c == '-' || c == '_' || c == '=' || c == '*' || c.is_whitespace());
    if core.is_empty() {
        return (t.chars().filter(|c| *c == '_').count() >= 10).then_some(Sep::Underscore);
    }
    if !may_start_phrase(core) {
        return None;
    }
    let core = core.to_lowercase();
    let dashes = t.chars().take_while(|c| *c == '-').count();
    match separator_phrase(&core, dashes > 0)? {
        SepPhrase::Forwarded => Some(Sep::Forwarded {
            dashes,
            mutt: core.contains(" from ") || core.contains(" von "),
        }),
        SepPhrase::Original => Some(Sep::Original),
        SepPhrase::Apple => Some(Sep::Apple),
    }
}

#[derive(Default)]
struct Headers {
    from: Option<String>,
    date: Option<String>,
    subject: Option<String>,
    to: Option<String>,
    sent_label: bool,
    fields: usize,
}

/// Parse header lines starting at `start`; returns headers and the index after.
fn parse_headers(lines: &[Line<'_>], start: usize) -> Option<(Headers, usize, usize)> {
    let mut i = start;
    // Skip up to two blank lines after a separator.
    let mut skipped = 0;
    while i < lines.len() && lines[i].text.trim().is_empty() && skipped < 2 {
        i += 1;
        skipped += 1;
    }
    let depth = lines.get(i)?.depth;
    let mut h = Headers::default();
    let mut last: Option<Field> = None;
    let mut conts = 0;
    let mut used = 0;
    let mut awaiting_value = false;
    while i < lines.len() && used < MAX_HEADER_LINES {
        let line = &lines[i];
        if line.depth != depth {
            break;
        }
        let text = line.text.trim();
        if text.is_empty() {
            // A blank line inside a block only when a new label follows.
            let next = lines[i + 1..]
                .iter()
                .take(2)
                .find(|l| !l.text.trim().is_empty());
            match next.and_then(|l| label_line(l.text)) {
                Some(_) if h.fields > 0 && h.fields < 5 => {
                    i += 1;
                    continue;
                }
                _ => break,
            }
        }
        if let Some((field, sent, value)) = label_line(text) {
            let slot = match field {
                Field::From => &mut h.from,
                Field::Date => &mut h.date,
                Field::Subject => &mut h.subject,
                Field::To => &mut h.to,
                Field::Cc | Field::ReplyTo => &mut None,
            };
            if slot.is_some() {
                break; // the same field twice: the next block (or body) begins
            }
            *slot = Some(value.to_string());
            h.sent_label |= sent && field == Field::Date;
            h.fields += 1;
            last = Some(field);
            conts = 0;
            awaiting_value = value.is_empty();
        } else if h.fields == 0 {
            return None;
        } else {
            let slot = match last {
                Some(Field::From) => &mut h.from,
                Some(Field::Subject) => &mut h.subject,
                Some(Field::To) => &mut h.to,
                Some(Field::Date) => &mut h.date,
                _ => break,
            };
            let prev = slot.clone().unwrap_or_default();
            let ok = awaiting_value
                || conts < 3
                    && match last {
                        Some(Field::From) | Some(Field::To) => {
                            text.contains('@')
                                || prev.ends_with(['<', '[', ',', ';'])
                                || text.starts_with(['<', '['])
                        }
                        Some(Field::Subject) => prev.chars().count() >= 50,
                        _ => false,
                    };
            if !ok {
                break;
            }
            *slot = Some(if prev.is_empty() {
                text.to_string()
            } else {
                format!("{prev} {text}")
            });
            awaiting_value = false;
            conts += 1;
        }
        used += 1;
        i += 1;
    }
    (h.fields > 0).then_some((h, i, depth))
}

fn join_body(lines: &[Line<'_>], depth: usize) -> String {
    let mut out = String::new();
    for l in lines {
        if l.depth < depth {
            // Left the quoted block.
            if !l.text.trim().is_empty() {
                break;
            }
            continue;
        }
        for _ in depth..l.depth {
            out.push_str("> ");
        }
        out.push_str(l.text);
        out.push('\n');
    }
    out.trim().to_string()
}

fn join_raw(lines: &[Line<'_>]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(l.raw.trim_end());
        out.push('\n');
    }
    out.trim().to_string()
}

/// Split the text into lines with their quote depth; a glued header run
/// (`From: …To: …Subject: …` on one line) becomes one line per label.
fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    for raw in text.lines().take(MAX_LINES) {
        let (depth, text) = split_quote(raw);
        let pieces = (text.len() >= 16 && text.contains([':', '：']))
            .then(|| glued::split(text, |head| separator(head).is_some()))
            .flatten();
        match pieces {
            Some(pieces) => lines.extend(pieces.into_iter().map(|p| Line {
                raw: p,
                depth,
                text: p.trim_end(),
            })),
            None => lines.push(Line { raw, depth, text }),
        }
    }
    lines
}

/// An attribution ending at line `end`: (its first line, the parse). Tries the
/// line alone, then joined with up to two lines above it (clients wrap).
fn attribution_at(lines: &[Line<'_>], end: usize) -> Option<(usize, Attribution)> {
    let last = lines.get(end)?;
    let t = last.text.trim();
    if !t.ends_with([':', '：']) || label_line(t).is_some() {
        return None;
    }
    if t.contains('@')
        && let Some(a) = attribution::parse(t)
    {
        return Some((end, a));
    }
    let mut joined = t.to_string();
    for start in (end.saturating_sub(MAX_ATTRIBUTION_LINES - 1)..end).rev() {
        let l = &lines[start];
        let lt = l.text.trim();
        if l.depth != last.depth
            || lt.is_empty()
            || label_line(lt).is_some()
            || separator(lt).is_some()
            || lt.ends_with([':', '：'])
        {
            return None;
        }
        joined = format!("{lt} {joined}");
        if joined.contains('@')
            && let Some(a) = attribution::parse(&joined)
        {
            return Some((start, a));
        }
    }
    None
}

/// The forwarder's note is short enough for a bare attribution to be a
/// forward rather than a reply (see [`SHORT_NOTE`]).
fn short_note(lines: &[Line<'_>]) -> bool {
    let (mut chars, mut count) = (0, 0);
    for l in lines {
        let t = l.text.trim();
        if t.is_empty() {
            continue;
        }
        count += 1;
        chars += t.chars().count();
        if count > SHORT_NOTE.1 || chars > SHORT_NOTE.0 {
            return false;
        }
    }
    true
}

/// The quoted text below an attribution at quote depth `depth`: the deeper
/// quoted lines, else the indented ones (Outlook's 4 spaces), else (HTML
/// converted: the quote marks are gone) everything below.
fn attribution_body(lines: &[Line<'_>], depth: usize) -> (String, bool) {
    let Some(first) = lines.iter().find(|l| !l.text.trim().is_empty()) else {
        return (String::new(), false);
    };
    if first.depth > depth {
        return (join_body(lines, depth + 1), true);
    }
    if first.text.starts_with([' ', '\t']) {
        let mut out = String::new();
        for l in lines {
            if l.depth != depth {
                break;
            }
            let t = l.text;
            if !t.trim().is_empty() && !t.starts_with([' ', '\t']) {
                break;
            }
            let t = t.strip_prefix('\t').unwrap_or_else(|| {
                let n = t.len() - t.trim_start_matches(' ').len();
                &t[n.min(4)..]
            });
            out.push_str(t);
            out.push('\n');
        }
        return (out.trim().to_string(), true);
    }
    (join_body(lines, depth), false)
}

/// Find the first forwarded block in `text`.
pub fn find_block(text: &str, hints: &Hints) -> Option<Block> {
    let text = prep::clean(text);
    let lines = split_lines(&text);
    let subject_kind = first_prefix(&hints.subject);
    let subject_forward = has_forward_prefix(&hints.subject);
    // A forward separator whose headers did not follow (an attribution may,
    // within a few lines: further down it belongs to the forwarded text).
    let mut forward_separator: Option<usize> = None;
    for i in 0..lines.len() {
        let text = lines[i].text;
        if let Some((start, att)) = attribution_at(&lines, i) {
            let (body, quoted) = attribution_body(&lines[i + 1..], lines[i].depth);
            // A forward when the subject or a separator says so, or when the
            // message is the attribution and its quote with at most a short
            // note above and no reply prefix; otherwise a reply quoting.
            let prefix = first_prefix_word(&hints.subject);
            let forward_prefix = match &prefix {
                Some((PrefixKind::Forward, word)) => AMBIGUOUS_PREFIXES
                    .iter()
                    .find(|(p, _)| p == word)
                    .is_none_or(|(_, langs)| att.langs.iter().any(|l| langs.contains(l))),
                _ => false,
            };
            let forward = forward_prefix
                || forward_separator.is_some_and(|at| {
                    lines.get(at + 1..start).is_some_and(|between| {
                        between.iter().filter(|l| !l.text.trim().is_empty()).count()
                            <= SEPARATOR_GAP
                    })
                })
                || prefix.is_none() && short_note(&lines[..start]) && (att.verb || quoted);
            if !forward || body.is_empty() {
                return None;
            }
            return Some(Block {
                client: Client::Attribution,
                from: att.from,
                date: att.date,
                subject: None,
                note: join_raw(&lines[..start]),
                body,
            });
        }
        if is_reply_intro(text) {
            return None; // everything below is a quoted reply
        }
        let sep = separator(text);
        let (headers, end, depth, client) = match sep {
            Some(sep) => {
                let Some((h, end, depth)) = parse_headers(&lines, i + 1) else {
                    if matches!(sep, Sep::Forwarded { .. } | Sep::Apple) {
                        forward_separator = Some(i);
                    }
                    continue;
                };
                let ambiguous = matches!(sep, Sep::Original | Sep::Underscore);
                if ambiguous && subject_kind == Some(PrefixKind::Reply) && !subject_forward {
                    return None; // an Outlook reply quoting the earlier mail
                }
                let client = match sep {
                    Sep::Forwarded { mutt: true, .. } => Client::Generic,
                    Sep::Forwarded { dashes, .. } if dashes >= 9 => Client::Gmail,
                    Sep::Forwarded { dashes, .. } if dashes >= 6 => Client::Thunderbird,
                    Sep::Forwarded { dashes, .. } if dashes >= 3 => Client::Yahoo,
                    Sep::Forwarded { .. } => Client::Generic,
                    Sep::Original => Client::Outlook,
                    Sep::Underscore if hints.outlook_mailer => Client::Outlook,
                    Sep::Underscore => Client::OutlookWeb,
                    Sep::Apple => Client::Apple,
                };
                (h, end, depth, client)
            }
            None => {
                // The block's first label: From, or (GMX/Web.de put `Gesendet:`
                // first, Roundcube `Subject:`) another one with From below.
                if !subject_forward {
                    continue;
                }
                let starts_block = match label_line(text) {
                    Some((Field::From, _, _)) => true,
                    Some((Field::Date | Field::Subject | Field::To, _, _)) => {
                        i == 0 || label_line(lines[i - 1].text).is_none()
                    }
                    _ => false,
                };
                if !starts_block {
                    continue;
                }
                let Some((h, end, depth)) = parse_headers(&lines, i) else {
                    continue;
                };
                let strong = h.date.is_some() && (h.subject.is_some() || h.to.is_some());
                if !strong {
                    continue;
                }
                let client = if hints.outlook_mailer && h.sent_label {
                    Client::Outlook
                } else {
                    Client::Generic
                };
                (h, end, depth, client)
            }
        };
        let Some(from) = headers.from.as_deref().and_then(parse_loose) else {
            continue;
        };
        if headers.fields < 2 {
            continue;
        }
        return Some(Block {
            client,
            from,
            date: headers.date.filter(|d| !d.is_empty()),
            subject: headers.subject.filter(|s| !s.is_empty()),
            note: join_raw(&lines[..i]),
            body: join_body(&lines[end..], depth),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The language walk the phrase index replaced, kept as the reference.
    fn walk(core: &str, dashed: bool) -> Option<SepPhrase> {
        use super::super::labels::LANGS;
        let core = core.trim().trim_end_matches([':', '：']).trim();
        if core.is_empty() {
            return None;
        }
        if !dashed && LANGS.iter().any(|g| g.apple.contains(&core)) {
            return Some(SepPhrase::Apple);
        }
        for g in LANGS {
            if g.forwarded.iter().any(|p| {
                core == *p
                    || core
                        .strip_prefix(p)
                        .is_some_and(|r| r.starts_with(" from ") || r.starts_with(" von "))
            }) {
                return Some(SepPhrase::Forwarded);
            }
            if g.original.contains(&core) {
                return Some(SepPhrase::Original);
            }
            if g.apple.contains(&core) {
                return Some(SepPhrase::Apple);
            }
        }
        None
    }

    #[test]
    fn phrase_index_agrees_with_the_language_walk() {
        use super::super::labels::LANGS;
        let mut cores: Vec<String> = Vec::new();
        for g in LANGS {
            for p in g.forwarded.iter().chain(g.original).chain(g.apple) {
                cores.push(p.to_string());
                cores.push(format!("{p}:"));
                cores.push(format!("{p} from joe <joe@example.com>"));
                cores.push(format!("{p} von jörg"));
                cores.push(format!("{p}x"));
                cores.push(p.chars().skip(1).collect());
            }
        }
        cores.extend(["", "hello", "1xxxxxxxx", "from", "  :"].map(String::from));
        for core in &cores {
            for dashed in [false, true] {
                assert_eq!(
                    separator_phrase(core, dashed),
                    walk(core, dashed),
                    "{core:?} dashed={dashed}"
                );
            }
            if walk(core, false).is_some() || walk(core, true).is_some() {
                assert!(
                    may_start_phrase(core),
                    "{core:?} ruled out by its first char"
                );
                let upper = core.to_uppercase();
                assert!(
                    may_start_phrase(&upper),
                    "{upper:?} ruled out by its first char"
                );
            }
        }
    }

    #[test]
    fn reply_intro_endings_all_end_with_a_colon() {
        // `is_reply_intro` rules lines out by their last character.
        for e in REPLY_INTRO_ENDINGS {
            assert!(e.ends_with([':', '：']), "{e:?}");
        }
    }

    fn hints(subject: &str) -> Hints {
        Hints {
            subject: subject.into(),
            outlook_mailer: false,
        }
    }

    /// (subject, body, expected client, expected email) — `None` = no block.
    type Case = (&'static str, &'static str, Option<(Client, &'static str)>);
    const CASES: &[Case] = &[
        (
            "Fwd: Help",
            "FYI\n\n---------- Forwarded message ---------\nFrom: John Doe <john@example.com>\nDate: Mon, Jan 1, 2024 at 10:00 AM\nSubject: Help\nTo: <ann@acme.example>\n\n\nHi there\n",
            Some((Client::Gmail, "john@example.com")),
        ),
        (
            "WG: Hilfe",
            "---------- Weitergeleitete Nachricht ---------\nVon: Jörg Müller <joerg@beispiel.de>\nDate: Mo., 1. Jan. 2024 um 10:00 Uhr\nSubject: Hilfe\nTo: <ann@acme.example>\n\nHallo",
            Some((Client::Gmail, "joerg@beispiel.de")),
        ),
        (
            "FW: Order",
            "-----Original Message-----\nFrom: Doe, John [mailto:john@example.com] \nSent: Monday, January 1, 2024 10:00 AM\nTo: Ann\nSubject: Order\n\nbody",
            Some((Client::Outlook, "john@example.com")),
        ),
        (
            "TR: Commande",
            "________________________________\nDe : Marie <marie@exemple.fr>\nEnvoyé : lundi 1 janvier 2024 10:00\nÀ : Ann <ann@acme.example>\nObjet : Commande\n\nBonjour",
            Some((Client::OutlookWeb, "marie@exemple.fr")),
        ),
        (
            "Fwd: x",
            "Begin forwarded message:\n\nFrom: Sam <sam@example.org>\nSubject: x\nDate: 1 January 2024 at 10:00:00 GMT\nTo: ann@acme.example\n\nhello",
            Some((Client::Apple, "sam@example.org")),
        ),
        (
            "Fwd: x",
            "-------- Forwarded Message --------\nSubject: \tx\nDate: \tMon, 1 Jan 2024 10:00:00 +0100\nFrom: \tSam <sam@example.org>\nTo: \tann@acme.example\n\nhello",
            Some((Client::Thunderbird, "sam@example.org")),
        ),
        (
            "Fw: x",
            "----- Forwarded Message -----\nFrom: Sam <sam@example.org>\nTo: Ann <ann@acme.example>\nSent: Monday, January 1, 2024, 10:00:00 AM GMT+1\nSubject: x\n\nhello",
            Some((Client::Yahoo, "sam@example.org")),
        ),
        (
            "Fwd: x",
            "> ---------- Forwarded message ---------\n> From: Sam <sam@example.org>\n> Date: Mon\n> Subject: x\n>\n> hello",
            Some((Client::Gmail, "sam@example.org")),
        ),
        (
            "FW: x",
            "note\n*From:* Sam Smith <sam@example.org<mailto:sam@example.org>>\n*Sent:* Monday\n*To:* Ann\n*Subject:* x\n\nhello",
            Some((Client::Generic, "sam@example.org")),
        ),
        (
            "FW: x",
            "-----Original Message-----\nFrom: Sam Smith\nSent: Monday\nTo: Ann\nSubject: x\n\nhello",
            Some((Client::Outlook, "")),
        ),
        (
            "FW: x",
            "-----Original Message-----\nFrom: \"A very long display name, Sam\"\n <sam@example.org>\nSent: Monday\nSubject: x\n\nhello",
            Some((Client::Outlook, "sam@example.org")),
        ),
        (
            "Fwd: x",
            "----- Forwarded message from Sam <sam@example.org> -----\n\nDate: Mon\nFrom: Sam <sam@example.org>\nSubject: x\n\nhi\n\n----- End forwarded message -----",
            Some((Client::Generic, "sam@example.org")),
        ),
        (
            "転送: 質問",
            "---------- Forwarded message ---------\n差出人： 山田 <yamada@example.jp>\n日付： 2024年1月1日\n件名： 質問\n宛先： <ann@acme.example>\n\nこんにちは",
            Some((Client::Gmail, "yamada@example.jp")),
        ),
        // Attribution lines: a forward only when the subject or structure says so.
        (
            "FW: Order",
            "Please.\n\nOn 28/10/2021 12:46, \"John Doe\" <john@example.com> wrote:\n    Hello\n",
            Some((Client::Attribution, "john@example.com")),
        ),
        (
            "Order",
            "FYI\n\nOn 28/10/2021 12:46, John <john@example.com>\nwrote:\n> Hello\n",
            Some((Client::Attribution, "john@example.com")),
        ),
        (
            "VS: Faktura",
            "Se nedenfor.\n\nDen 28.10.2021 kl. 12.46 skrev \"Mette\" <mette@example.dk>:\n> Hej\n",
            Some((Client::Attribution, "mette@example.dk")),
        ),
        (
            "Re: x",
            "---------- Forwarded message ---------\nOn Mon, 4 Mar 2024 at 09:12, Sam <sam@example.org> wrote:\n> hi",
            Some((Client::Attribution, "sam@example.org")),
        ),
        (
            "Fw: x",
            "----- Forwarded Message ----- From: Sam <sam@example.org>To: Ann <ann@acme.example>Sent: Monday, March 4, 2024, 10:00 AM GMT+1Subject: x\n\nhello",
            Some((Client::Yahoo, "sam@example.org")),
        ),
        (
            "Fwd: x",
            "\u{200f}מאת:\u{200f} נועה <noa@example.co.il>\n\u{200f}תאריך:\u{200f} 4 במרץ 2024\n\u{200f}נושא:\u{200f} x\n\nשלום",
            Some((Client::Generic, "noa@example.co.il")),
        ),
        (
            "Fwd: Commande",
            "Le lun. 4 mars 2024 à 09:12, Marie Curie <\nmarie@exemple.fr> a écrit\u{a0}:\n\n> Bonjour\n",
            Some((Client::Attribution, "marie@exemple.fr")),
        ),
        (
            "Fwd: x",
            "> On 4 Mar 2024, at 09:12, Sam <sam@example.org> wrote:\n>\n> hello\n",
            Some((Client::Attribution, "sam@example.org")),
        ),
        (
            "WG: x",
            "Gesendet: Montag, 04. März 2024 um 09:12 Uhr\nVon: Jörg <joerg@beispiel.de>\nAn: ann@acme.example\nBetreff: x\n\nHallo",
            Some((Client::Generic, "joerg@beispiel.de")),
        ),
        // Negatives.
        (
            "AW: x",
            "Erledigt.\n\nGesendet: Montag, 04. März 2024 um 09:12 Uhr\nVon: Jörg <joerg@beispiel.de>\nAn: ann@acme.example\nBetreff: x\n\nHallo",
            None,
        ),
        (
            "Re: Order",
            "Done.\n\nOn 28/10/2021 12:46, \"John Doe\" <john@example.com> wrote:\n> Hello\n",
            None,
        ),
        (
            "VS: Tilaus",
            "Kiitos.\n\n28.10.2021 klo 12.46 \"Aino\" <aino@example.fi> kirjoitti:\n> Hei\n",
            None,
        ),
        (
            "Order",
            "Team, a long status first.\nLine two of it, with detail on what was done and what is left to do.\nLine three, with more detail on the refund and the courier.\nLine four: who owns it.\nLine five: when we call back.\nLine six: and the escalation path.\nLine seven.\n\nOn 28/10/2021 12:46, John <john@example.com> wrote:\n> Hello\n",
            None,
        ),
        (
            "Re: x",
            "---------- Forwarded message ---------\nno headers\nline two\nline three\nOn Mon, 4 Mar 2024 at 09:12, Sam <sam@example.org> wrote:\n> hi",
            None,
        ),
        (
            "Fwd: x",
            "Am 04.03.2024 um 09:12 schrieb Ann <ann@acme.example>:\n",
            None,
        ),
        (
            "Re: Help",
            "Sure.\n\nOn Mon, Jan 1, 2024 at 10:00 AM John <john@example.com> wrote:\n> ---------- Forwarded message ---------\n> From: Sam <sam@example.org>\n> Subject: x\n",
            None,
        ),
        (
            "RE: Order",
            "Thanks\n\n-----Original Message-----\nFrom: John <john@example.com>\nSent: Monday\nSubject: Order\n\nhi",
            None,
        ),
        (
            "Hello",
            "Best,\nAnn\nFrom: the desk of Ann Agent\nPhone: 555",
            None,
        ),
        (
            "Question",
            "Please write to john@example.com.\nFrom: Monday we are closed.\nDate: tbd\nSubject: holidays",
            None,
        ),
        (
            "Fwd: nothing",
            "---------- Forwarded message ---------\nno headers here\n",
            None,
        ),
    ];

    #[test]
    fn block_table() {
        for (subject, body, want) in CASES {
            let got = find_block(body, &hints(subject));
            match (want, got) {
                (None, None) => {}
                (Some((client, email)), Some(b)) => {
                    assert_eq!(b.client, *client, "{body}");
                    assert_eq!(b.from.email, *email, "{body}");
                }
                (w, g) => panic!("{body}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn note_and_body() {
        let b = find_block(
            "Please help this customer.\n\n---------- Forwarded message ---------\nFrom: A <a@example.com>\nDate: Mon\nSubject: Fwd: Broken\n\nIt is broken.\n",
            &hints("Fwd: Broken"),
        )
        .expect("block");
        assert_eq!(b.note, "Please help this customer.");
        assert_eq!(b.body, "It is broken.");
        assert_eq!(b.subject.as_deref(), Some("Fwd: Broken"));
    }
}
