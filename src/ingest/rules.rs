//! Routing rules: whether a new ticket's first message matches a channel's
//! `[[channels.routing.rules]]` entry ([`matches`]), and the language it is
//! written in ([`Facts::language`], by `whatlang`).
//!
//! Pure: the message's facts in, a yes or no (and why) out. [`super::route`]
//! tries the rules in order and turns the first that matches and has an
//! eligible user with its skills into the ticket's routing plan.
//!
//! UNTRUSTED INPUT: everything in [`Facts`] comes from a stranger's mail or
//! form post (a sender domain is what the From header says, unless the
//! message is authenticated): rules choose *which agent* looks first, never
//! what a message may do, so a forged domain or keyword only moves a ticket
//! to another queue. Language detection reads at most [`DETECT_BYTES`].

use std::cell::OnceCell;
use std::collections::BTreeMap;

use crate::config::RoutingRule;

/// Most bytes of subject and body language detection reads.
pub const DETECT_BYTES: usize = 4096;

/// What rules look at in a new ticket's first message.
pub struct Facts<'a> {
    /// The subject (without `Re:`/`Fwd:`), as the ticket is named.
    pub subject: &'a str,
    /// The body text (a forward's original text, a form's description).
    pub body: &'a str,
    /// The contact's address (the customer).
    pub sender: &'a str,
    /// A web form's fields, name → value (empty for mail).
    pub fields: &'a BTreeMap<String, String>,
    language: OnceCell<Option<&'static str>>,
}

impl<'a> Facts<'a> {
    pub fn new(
        subject: &'a str,
        body: &'a str,
        sender: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> Self {
        Facts {
            subject,
            body,
            sender,
            fields,
            language: OnceCell::new(),
        }
    }

    /// The language of the subject and body (quoted lines left out) as an
    /// ISO 639-3 code (`"deu"`), when `whatlang` is confident; detected once,
    /// on first use.
    pub fn language(&self) -> Option<&'static str> {
        *self.language.get_or_init(|| {
            let mut text = String::with_capacity(DETECT_BYTES);
            text.push_str(self.subject);
            text.push('\n');
            for line in self.body.lines() {
                if text.len() >= DETECT_BYTES {
                    break;
                }
                if !line.trim_start().starts_with('>') {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            let mut end = text.len().min(DETECT_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            whatlang::detect(&text[..end])
                .filter(whatlang::Info::is_reliable)
                .map(|info| info.lang().code())
        })
    }
}

/// Whether the message matches every condition of `rule` (each list: any
/// of its values); `property` gives the new ticket's property by name.
/// `Some(why)` — the conditions that matched, for the ticket — or `None`.
pub fn matches(
    rule: &RoutingRule,
    facts: &Facts<'_>,
    property: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if !rule.has_condition() {
        return None;
    }
    let mut why: Vec<String> = Vec::new();
    if !rule.keywords.is_empty() {
        let hit = rule
            .keywords
            .iter()
            .find(|k| contains_word(facts.subject, k) || contains_word(facts.body, k))?;
        why.push(format!("keyword {hit:?}"));
    }
    if !rule.subject_keywords.is_empty() {
        let hit = rule
            .subject_keywords
            .iter()
            .find(|k| contains_word(facts.subject, k))?;
        why.push(format!("subject keyword {hit:?}"));
    }
    if !rule.languages.is_empty() {
        let lang = facts.language()?;
        let hit = rule
            .languages
            .iter()
            .find(|l| crate::mail::language::code(l) == Some(lang))?;
        why.push(format!("language {hit}"));
    }
    if !rule.sender_domains.is_empty() {
        let domain = facts
            .sender
            .rsplit_once('@')
            .map(|(_, d)| d.trim().to_lowercase())?;
        let hit = rule.sender_domains.iter().find(|d| {
            domain == **d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })?;
        why.push(format!("sender domain {hit}"));
    }
    for (name, want) in &rule.properties {
        let have = property(name)?;
        if !have.trim().eq_ignore_ascii_case(want.trim()) {
            return None;
        }
        why.push(format!("{name} = {want:?}"));
    }
    for (name, want) in &rule.fields {
        let have = facts.fields.get(name)?;
        if !have.trim().eq_ignore_ascii_case(want.trim()) {
            return None;
        }
        why.push(format!("field {name} = {want:?}"));
    }
    Some(why.join(", "))
}

/// `needle` (a word or phrase) in `haystack`, case-insensitive, not inside
/// a longer word: `invoice` matches "the invoice." but not "invoices".
fn contains_word(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim().to_lowercase();
    if needle.is_empty() {
        return false;
    }
    let hay = haystack.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    hay.match_indices(&needle).any(|(at, m)| {
        !word(hay[..at].chars().next_back()) && !word(hay[at + m.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RoutingRule {
        RoutingRule {
            name: "r".into(),
            ..Default::default()
        }
    }

    fn facts<'a>(
        subject: &'a str,
        body: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> Facts<'a> {
        Facts::new(subject, body, "Kim@EU.BigCorp.example", fields)
    }

    const GERMAN: &str = "Guten Tag, meine letzte Rechnung ist doppelt abgebucht worden. \
        Könnten Sie bitte den Betrag zurückerstatten? Vielen Dank und freundliche Grüße";
    const ENGLISH: &str = "Hello, my last invoice was charged twice. Could you please \
        refund the amount? Thank you and kind regards";

    #[test]
    fn languages_are_detected_and_codes_of_either_standard_match() {
        let none = BTreeMap::new();
        assert_eq!(facts("Rechnung", GERMAN, &none).language(), Some("deu"));
        assert_eq!(facts("Invoice", ENGLISH, &none).language(), Some("eng"));
        // Quoted lines are someone else's words.
        let quoted = format!("{ENGLISH}\n> {GERMAN}\n> {GERMAN}");
        assert_eq!(facts("Invoice", &quoted, &none).language(), Some("eng"));
        let de = RoutingRule {
            languages: vec!["de".into()],
            ..rule()
        };
        let deu = RoutingRule {
            languages: vec!["deu".into()],
            ..rule()
        };
        for r in [&de, &deu] {
            assert!(matches(r, &facts("Rechnung", GERMAN, &none), &|_| None).is_some());
            assert!(matches(r, &facts("Invoice", ENGLISH, &none), &|_| None).is_none());
        }
        // Too little text to tell: no language, no match.
        assert!(matches(&de, &facts("Hallo", "", &none), &|_| None).is_none());
        assert_eq!(crate::mail::language::code("DE"), Some("deu"));
        assert_eq!(crate::mail::language::code("xx"), None);
    }

    #[test]
    fn every_condition_must_hold_and_each_list_needs_one_value() {
        let none = BTreeMap::new();
        let f = facts("Invoice question", ENGLISH, &none);
        let r = RoutingRule {
            keywords: vec!["refund".into(), "chargeback".into()],
            sender_domains: vec!["bigcorp.example".into()],
            ..rule()
        };
        assert_eq!(
            matches(&r, &f, &|_| None).as_deref(),
            Some("keyword \"refund\", sender domain bigcorp.example")
        );
        // Another domain (and one that merely ends the same way): no match.
        for d in ["other.example", "corp.example", "gbigcorp.example"] {
            let r = RoutingRule {
                sender_domains: vec![d.into()],
                ..r.clone()
            };
            assert!(matches(&r, &f, &|_| None).is_none(), "{d}");
        }
        // Whole words only.
        let r = RoutingRule {
            subject_keywords: vec!["invoices".into()],
            ..rule()
        };
        assert!(matches(&r, &f, &|_| None).is_none());
        // No condition at all: never matches.
        assert!(matches(&rule(), &f, &|_| None).is_none());
    }

    #[test]
    fn properties_and_form_fields() {
        let fields = BTreeMap::from([("product".to_string(), " Pro ".to_string())]);
        let f = facts("Question", "", &fields);
        let r = RoutingRule {
            properties: BTreeMap::from([("priority".into(), "high".into())]),
            fields: BTreeMap::from([("product".into(), "pro".into())]),
            ..rule()
        };
        let high = |n: &str| (n == "priority").then(|| "High".to_string());
        assert_eq!(
            matches(&r, &f, &high).as_deref(),
            Some("priority = \"high\", field product = \"pro\"")
        );
        assert!(matches(&r, &f, &|_| None).is_none());
        let none = BTreeMap::new();
        assert!(matches(&r, &facts("Question", "", &none), &high).is_none());
    }
}
