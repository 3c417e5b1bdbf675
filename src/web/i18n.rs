//! English and German: the language comes from the `lang` cookie (the
//! page's switch) or else the browser's `Accept-Language`; English is the
//! default. Texts are looked up by their English wording ([`Lang::t`]).

use axum::http::{HeaderMap, header};

/// A page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

/// (English, German) pairs.
const DE: &[(&str, &str)] = &[
    ("Inbox", "Posteingang"),
    ("Mine", "Meine"),
    ("Unassigned", "Nicht zugewiesen"),
    ("All open", "Alle offenen"),
    ("Closed", "Geschlossen"),
    ("Sign in", "Anmelden"),
    ("Sign out", "Abmelden"),
    ("Email", "E-Mail"),
    ("Password", "Passwort"),
    ("Search", "Suchen"),
    ("Status", "Status"),
    ("Owner", "Zuständig"),
    ("Contact", "Kontakt"),
    ("Channel", "Kanal"),
    ("Subject", "Betreff"),
    ("Last activity", "Letzte Aktivität"),
    ("Older tickets", "Ältere Tickets"),
    ("No tickets.", "Keine Tickets."),
    ("Reply", "Antworten"),
    ("Send reply", "Antwort senden"),
    ("Add note", "Notiz hinzufügen"),
    ("Internal note", "Interne Notiz"),
    ("Note", "Notiz"),
    ("Save", "Speichern"),
    ("Priority", "Priorität"),
    ("unassigned", "nicht zugewiesen"),
    (
        "Cc the thread's other participants",
        "Weitere Beteiligte in Cc",
    ),
    ("What the customer will see", "Was der Kunde sieht"),
    ("Show images", "Bilder anzeigen"),
    (
        "Remote images are blocked.",
        "Externe Bilder sind blockiert.",
    ),
    ("Quoted text", "Zitierter Text"),
    ("forwarded by", "weitergeleitet von"),
    ("original sender", "ursprünglicher Absender"),
    ("auto-reply", "automatische Antwort"),
    ("bounce", "Unzustellbar"),
    ("queued", "wartend"),
    ("sent", "gesendet"),
    ("failed", "fehlgeschlagen"),
    ("Other tickets", "Weitere Tickets"),
    ("Wrong email or password.", "E-Mail oder Passwort falsch."),
    (
        "Too many attempts; wait a minute.",
        "Zu viele Versuche; bitte eine Minute warten.",
    ),
    ("Back", "Zurück"),
    ("Filter", "Filtern"),
    ("Attachments", "Anhänge"),
    ("Available", "Verfügbar"),
    ("Away", "Abwesend"),
    ("Preview as", "Vorschau als"),
    ("Show", "Anzeigen"),
    ("From line", "Absenderzeile"),
    ("Signature", "Signatur"),
    ("enabled", "aktiv"),
    ("disabled", "deaktiviert"),
    ("Enable", "Aktivieren"),
    ("Disable", "Deaktivieren"),
    ("Users", "Benutzer"),
    ("Name", "Name"),
    ("Licence", "Lizenz"),
    ("New email", "Neue E-Mail"),
    ("Text", "Text"),
    ("Send", "Senden"),
    (
        "Or get a one-time sign-in link by email:",
        "Oder einen einmaligen Anmeldelink per E-Mail erhalten:",
    ),
    ("Email me a link", "Link per E-Mail senden"),
    ("Contact owner", "Kontakt-Betreuer"),
    ("attached message", "angehängte Nachricht"),
    ("Resent headers", "Resent-Kopfzeilen"),
    ("mailing list", "Mailingliste"),
    ("From", "Von"),
    ("To", "An"),
    ("bulk", "Massenmail"),
    ("loop", "Mailschleife"),
    ("Admin", "Verwaltung"),
    ("ID", "ID"),
    ("Kind", "Art"),
    ("Address", "Adresse"),
    (
        "Quote the customer's last message",
        "Letzte Nachricht des Kunden zitieren",
    ),
    ("none", "keiner"),
    (
        "If the address belongs to an agent, a link is on its way.",
        "Wenn die Adresse zu einem Agenten gehört, ist ein Link unterwegs.",
    ),
    (
        "Sign in with the link from your mail.",
        "Mit dem Link aus Ihrer E-Mail anmelden.",
    ),
    (
        "This sign-in link cannot be used (used already, expired or unknown). Ask for a new one.",
        "Dieser Anmeldelink gilt nicht (schon benutzt, abgelaufen oder unbekannt). Bitte einen neuen anfordern.",
    ),
];

impl Lang {
    /// The `lang` cookie if set, else the first of `Accept-Language` we speak.
    pub fn of(headers: &HeaderMap) -> Lang {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == "lang")
            .map(|(_, v)| v.trim().to_string());
        if let Some(l) = cookie.as_deref().and_then(Lang::parse) {
            return l;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .filter_map(|part| part.split(';').next())
            .find_map(|tag| Lang::parse(tag.trim().split('-').next().unwrap_or("")))
            .unwrap_or(Lang::En)
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// `en` in this language (itself when there is no translation).
    pub fn t(self, en: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::De => DE.iter().find(|(e, _)| *e == en).map_or(en, |(_, d)| d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_cookie_then_accept_language() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of(&h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            "fr-CH, de-DE;q=0.8, en;q=0.5".parse().expect("hv"),
        );
        assert_eq!(Lang::of(&h), Lang::De);
        h.insert(header::COOKIE, "lang=en".parse().expect("hv"));
        assert_eq!(Lang::of(&h), Lang::En);
        assert_eq!(Lang::De.t("Inbox"), "Posteingang");
        assert_eq!(Lang::De.t("no such text"), "no such text");
    }

    /// Every text the pages look up (`t("…")` in the web module's sources,
    /// and the texts handed to a helper that looks them up) has a German
    /// entry, and no English text has two.
    #[test]
    fn every_text_the_pages_use_is_in_german() {
        let sources = [
            include_str!("admin.rs"),
            include_str!("attachments.rs"),
            include_str!("compose.rs"),
            include_str!("link.rs"),
            include_str!("mod.rs"),
            include_str!("pages.rs"),
            include_str!("session.rs"),
            include_str!("ticket.rs"),
        ];
        let mut used = Vec::new();
        for src in sources {
            for marker in [".t(\"", "answer(", "fail("] {
                for (at, _) in src.match_indices(marker) {
                    let rest = &src[at + marker.len()..];
                    // A helper's text is the next string literal in its call.
                    let rest = if marker.ends_with('"') {
                        rest
                    } else {
                        match rest.get(..120).unwrap_or(rest).find('"') {
                            Some(i) => &rest[i + 1..],
                            None => continue,
                        }
                    };
                    if let Some(end) = rest.find('"') {
                        used.push(rest[..end].to_string());
                    }
                }
            }
        }
        assert!(used.len() > 50, "the scan finds the pages' texts: {used:?}");
        let missing: Vec<_> = used
            .iter()
            .filter(|en| !DE.iter().any(|(e, _)| e == en))
            .collect();
        assert!(missing.is_empty(), "no German for {missing:?}");
        for (i, (en, _)) in DE.iter().enumerate() {
            assert!(!DE[..i].iter().any(|(e, _)| e == en), "{en:?} twice");
        }
    }
}
