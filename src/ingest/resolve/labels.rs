//! Localised vocabulary of forwarded-header blocks, as DATA.
//!
//! Owns: the header labels (From/Date/To/Cc/Subject) each mail client writes in
//! each language, the separator lines that open a forwarded block, the intro
//! lines of quoted replies ("On … wrote:") and the subject prefixes of replies and
//! forwards. Adding a language or a client spelling is adding a row here, never a
//! code branch elsewhere. Everything is compared case-insensitively after the
//! caller has trimmed dashes, underscores, `*` and whitespace.
//!
//! Limits: matching is exact on the trimmed phrase (no fuzzy matching), so a
//! client's rare spelling that is not listed is a miss, never a false positive.

/// Which header of the forwarded message a label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    From,
    Date,
    To,
    Cc,
    Subject,
    ReplyTo,
}

/// One language's labels and separator phrases (union over the clients).
pub(crate) struct Lang {
    #[allow(dead_code)]
    pub code: &'static str,
    pub from: &'static [&'static str],
    /// "Date"/"Sent" labels; `sent` ones are kept apart because they mark Outlook.
    pub date: &'static [&'static str],
    pub sent: &'static [&'static str],
    pub to: &'static [&'static str],
    pub cc: &'static [&'static str],
    pub subject: &'static [&'static str],
    /// Gmail / Thunderbird / Yahoo / generic: `--- Forwarded message ---`.
    pub forwarded: &'static [&'static str],
    /// Outlook and generic: `-----Original Message-----`.
    pub original: &'static [&'static str],
    /// Apple Mail: `Begin forwarded message:` (compared without the colon).
    pub apple: &'static [&'static str],
}

pub(crate) const LANGS: &[Lang] = &[
    Lang {
        code: "en",
        from: &["from"],
        date: &["date"],
        sent: &["sent"],
        to: &["to"],
        cc: &["cc"],
        subject: &["subject"],
        forwarded: &["forwarded message", "forwarded e-mail", "forwarded email"],
        original: &["original message", "original e-mail"],
        apple: &["begin forwarded message"],
    },
    Lang {
        code: "de",
        from: &["von"],
        date: &["datum"],
        sent: &["gesendet"],
        to: &["an"],
        cc: &["cc", "kopie"],
        subject: &["betreff"],
        forwarded: &["weitergeleitete nachricht", "weitergeleitete e-mail"],
        original: &["ursprüngliche nachricht", "originalnachricht"],
        apple: &[
            "anfang der weitergeleiteten nachricht",
            "anfang der weitergeleiteten e-mail",
        ],
    },
    Lang {
        code: "fr",
        from: &["de", "expéditeur"],
        date: &["date"],
        sent: &["envoyé", "envoyé le"],
        to: &["à", "a", "pour", "destinataire"],
        cc: &["cc", "copie"],
        subject: &["objet", "sujet"],
        forwarded: &["message transféré", "e-mail transféré"],
        original: &["message d'origine", "message d’origine", "message original"],
        apple: &["début du message réexpédié", "début du message transféré"],
    },
    Lang {
        code: "es",
        from: &["de", "remitente"],
        date: &["fecha"],
        sent: &["enviado", "enviado el", "enviada"],
        to: &["para", "a"],
        cc: &["cc", "copia"],
        subject: &["asunto"],
        forwarded: &["mensaje reenviado", "mensaje original reenviado"],
        original: &["mensaje original"],
        apple: &["inicio del mensaje reenviado"],
    },
    Lang {
        code: "it",
        from: &["da", "mittente"],
        date: &["data"],
        sent: &["inviato", "inviato il"],
        to: &["a", "destinatario"],
        cc: &["cc", "copia"],
        subject: &["oggetto"],
        forwarded: &["messaggio inoltrato"],
        original: &["messaggio originale"],
        apple: &["inizio messaggio inoltrato"],
    },
    Lang {
        code: "pt",
        from: &["de", "remetente"],
        date: &["data"],
        sent: &["enviada", "enviado", "enviado em", "enviada em"],
        to: &["para"],
        cc: &["cc", "cópia"],
        subject: &["assunto"],
        forwarded: &["mensagem encaminhada", "mensagem reencaminhada"],
        original: &["mensagem original"],
        apple: &[
            "início da mensagem reencaminhada",
            "início da mensagem encaminhada",
        ],
    },
    Lang {
        code: "nl",
        from: &["van"],
        date: &["datum"],
        sent: &["verzonden"],
        to: &["aan"],
        cc: &["cc"],
        subject: &["onderwerp"],
        forwarded: &["doorgestuurd bericht"],
        original: &["oorspronkelijk bericht", "origineel bericht"],
        apple: &["begin doorgestuurd bericht"],
    },
    Lang {
        code: "da",
        from: &["fra"],
        date: &["dato"],
        sent: &["sendt"],
        to: &["til"],
        cc: &["cc"],
        subject: &["emne"],
        forwarded: &["videresendt besked", "videresendt meddelelse"],
        original: &["oprindelig meddelelse", "original meddelelse"],
        apple: &["start på videresendt besked", "videresendt besked"],
    },
    Lang {
        code: "sv",
        from: &["från"],
        date: &["datum"],
        sent: &["skickat"],
        to: &["till"],
        cc: &["kopia"],
        subject: &["ämne"],
        forwarded: &["vidarebefordrat meddelande"],
        original: &["ursprungligt meddelande", "originalmeddelande"],
        apple: &["vidarebefordrat mejl", "början på vidarebefordrat brev"],
    },
    Lang {
        code: "no",
        from: &["fra"],
        date: &["dato"],
        sent: &["sendt"],
        to: &["til"],
        cc: &["kopi"],
        subject: &["emne"],
        forwarded: &["videresendt melding"],
        original: &["opprinnelig melding", "original melding"],
        apple: &["videresendt melding", "start på videresendt melding"],
    },
    Lang {
        code: "fi",
        from: &["lähettäjä"],
        date: &["päivämäärä", "päiväys"],
        sent: &["lähetetty"],
        to: &["vastaanottaja"],
        cc: &["kopio"],
        subject: &["aihe"],
        forwarded: &["välitetty viesti"],
        original: &["alkuperäinen viesti"],
        apple: &["välitetty viesti alkaa", "välitetty viesti"],
    },
    Lang {
        code: "pl",
        from: &["od"],
        date: &["data"],
        sent: &["wysłano", "wysłane"],
        to: &["do"],
        cc: &["dw", "kopia"],
        subject: &["temat"],
        forwarded: &["przekazana wiadomość", "wiadomość przekazana dalej"],
        original: &["wiadomość oryginalna", "oryginalna wiadomość"],
        apple: &["początek przekazywanej wiadomości"],
    },
    Lang {
        code: "cs",
        from: &["od"],
        date: &["datum"],
        sent: &["odesláno"],
        to: &["komu"],
        cc: &["kopie"],
        subject: &["předmět"],
        forwarded: &["přeposlaná zpráva", "přeposlaná zpráva"],
        original: &["původní zpráva"],
        apple: &["začátek přeposílané zprávy"],
    },
    Lang {
        code: "sk",
        from: &["od"],
        date: &["dátum"],
        sent: &["odoslané"],
        to: &["komu"],
        cc: &["kópia"],
        subject: &["predmet"],
        forwarded: &["preposlaná správa"],
        original: &["pôvodná správa"],
        apple: &["začiatok preposlanej správy"],
    },
    Lang {
        code: "hu",
        from: &["feladó"],
        date: &["dátum"],
        sent: &["elküldve", "küldve"],
        to: &["címzett"],
        cc: &["másolatot kap", "másolat"],
        subject: &["tárgy"],
        forwarded: &["továbbított levél", "továbbított üzenet"],
        original: &["eredeti üzenet"],
        apple: &["továbbított levél kezdete", "továbbított üzenet kezdete"],
    },
    Lang {
        code: "ro",
        from: &["de la"],
        date: &["dată", "data"],
        sent: &["trimis"],
        to: &["către", "catre"],
        cc: &["cc"],
        subject: &["subiect"],
        forwarded: &[
            "mesaj redirecționat",
            "mesaj redirectionat",
            "mesaj transmis",
        ],
        original: &["mesaj original"],
        apple: &["început mesaj redirecționat"],
    },
    Lang {
        code: "hr",
        from: &["šalje", "od"],
        date: &["datum"],
        sent: &["poslano"],
        to: &["prima", "za"],
        cc: &["kopija"],
        subject: &["predmet"],
        forwarded: &["proslijeđena poruka", "proslijeđena poruka"],
        original: &["izvorna poruka", "originalna poruka"],
        apple: &["početak proslijeđene poruke"],
    },
    Lang {
        code: "tr",
        from: &["kimden", "gönderen"],
        date: &["tarih"],
        sent: &["gönderildi", "gönderilme"],
        to: &["kime", "alıcı"],
        cc: &["bilgi", "cc"],
        subject: &["konu"],
        forwarded: &["iletilen ileti", "iletilmiş ileti", "i̇letilen ileti"],
        original: &["özgün i̇leti", "özgün ileti", "orijinal ileti"],
        apple: &["i̇letilen ileti başlangıcı", "iletilen ileti başlangıcı"],
    },
    Lang {
        code: "ru",
        from: &["от"],
        date: &["дата"],
        sent: &["отправлено"],
        to: &["кому"],
        cc: &["копия"],
        subject: &["тема"],
        forwarded: &["пересылаемое сообщение", "пересланное сообщение"],
        original: &["исходное сообщение", "оригинальное сообщение"],
        apple: &["начало переадресованного сообщения"],
    },
    Lang {
        code: "uk",
        from: &["від"],
        date: &["дата"],
        sent: &["надіслано"],
        to: &["кому"],
        cc: &["копія"],
        subject: &["тема"],
        forwarded: &["переслане повідомлення", "пересилане повідомлення"],
        original: &["оригінальне повідомлення", "вихідне повідомлення"],
        apple: &[
            "початок листа, що пересилається",
            "початок пересланого листа",
        ],
    },
    Lang {
        code: "et",
        from: &["saatja", "kellelt"],
        date: &["kuupäev"],
        sent: &["saadetud"],
        to: &["adressaat", "kellele", "saaja"],
        cc: &["koopia"],
        subject: &["teema"],
        forwarded: &["edastatud kiri", "edasisaadetud kiri"],
        original: &["algsõnum", "algne kiri"],
        apple: &["edastatud kirja algus"],
    },
    Lang {
        code: "ja",
        from: &["差出人", "送信者", "送信元"],
        date: &["日付"],
        sent: &["送信日時", "送信日"],
        to: &["宛先", "to"],
        cc: &["cc"],
        subject: &["件名"],
        forwarded: &["転送されたメッセージ", "転送メッセージ"],
        original: &["元のメッセージ", "元メッセージ"],
        apple: &["転送されたメッセージ"],
    },
];

/// Labels shared by every language (what clients write when not localised).
pub(crate) const REPLY_TO_LABELS: &[&str] = &["reply-to", "antwort an", "répondre à"];

/// Picks one label list out of a [`Lang`].
type LabelsOf = fn(&Lang) -> &'static [&'static str];

/// Look a label up in every language. `sent` is true for Outlook-style "Sent".
pub(crate) fn field_for_label(label: &str) -> Option<(Field, bool)> {
    let l = label.trim().to_lowercase();
    if l.is_empty() {
        return None;
    }
    if REPLY_TO_LABELS.contains(&l.as_str()) {
        return Some((Field::ReplyTo, false));
    }
    // From first: "de"/"da"/"od" are From in their languages; the ambiguous
    // "a" (Italian/Spanish To) never collides with a From label.
    let tables: [(Field, LabelsOf, bool); 6] = [
        (Field::From, |g| g.from, false),
        (Field::Subject, |g| g.subject, false),
        (Field::Date, |g| g.date, false),
        (Field::Date, |g| g.sent, true),
        (Field::To, |g| g.to, false),
        (Field::Cc, |g| g.cc, false),
    ];
    for (field, get, sent) in tables {
        if LANGS.iter().any(|g| get(g).contains(&l.as_str())) {
            return Some((field, sent));
        }
    }
    None
}

/// What kind of separator a phrase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SepPhrase {
    Forwarded,
    Original,
    Apple,
}

/// Every separator phrase by its exact text, and the first characters any of
/// them starts with: built once from [`LANGS`] so that classifying a line is
/// a lookup, not a walk over every language.
struct PhraseIndex {
    /// Forwarded and original phrases; where a spelling is both, the first
    /// language (and within it "forwarded") wins, as in [`LANGS`] order.
    framed: std::collections::HashMap<&'static str, SepPhrase>,
    apple: std::collections::HashSet<&'static str>,
    first_chars: std::collections::HashSet<char>,
}

static PHRASES: std::sync::LazyLock<PhraseIndex> = std::sync::LazyLock::new(|| {
    let mut framed = std::collections::HashMap::new();
    for g in LANGS {
        for p in g.forwarded {
            framed.entry(*p).or_insert(SepPhrase::Forwarded);
        }
        for p in g.original {
            framed.entry(*p).or_insert(SepPhrase::Original);
        }
    }
    let apple: std::collections::HashSet<&'static str> =
        LANGS.iter().flat_map(|g| g.apple.iter().copied()).collect();
    let first_chars = framed
        .keys()
        .chain(apple.iter())
        .filter_map(|p| p.chars().next())
        .collect();
    PhraseIndex {
        framed,
        apple,
        first_chars,
    }
});

/// Whether a separator core could be a phrase at all, judged by its first
/// character: a cheap test that spares lower-casing ordinary body lines.
pub(crate) fn may_start_phrase(core: &str) -> bool {
    core.chars()
        .next()
        .is_some_and(|c| c.to_lowercase().any(|l| PHRASES.first_chars.contains(&l)))
}

/// Classify a separator core (dashes/underscores already trimmed, lower-cased).
/// `dashed` says whether the line was framed by dashes (Apple's intro never
/// is): an undashed phrase that Apple Mail uses is Apple's, a dashed one is
/// the forwarded/original phrase of the same spelling.
pub(crate) fn separator_phrase(core: &str, dashed: bool) -> Option<SepPhrase> {
    let core = core.trim().trim_end_matches([':', '：']).trim();
    if core.is_empty() {
        return None;
    }
    let index = &*PHRASES;
    if !dashed && index.apple.contains(core) {
        return Some(SepPhrase::Apple);
    }
    if let Some(kind) = index.framed.get(core) {
        return Some(*kind);
    }
    // Mutt: "Forwarded message from Joe <joe@example.com>".
    if (core.contains(" from ") || core.contains(" von "))
        && LANGS.iter().flat_map(|g| g.forwarded.iter()).any(|p| {
            core.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(" from ") || rest.starts_with(" von "))
        })
    {
        return Some(SepPhrase::Forwarded);
    }
    index.apple.contains(core).then_some(SepPhrase::Apple)
}

/// Endings of the line that introduces a quoted reply ("On … wrote:").
/// A block found after such a line is part of a quote, not a forward.
pub(crate) const REPLY_INTRO_ENDINGS: &[&str] = &[
    "wrote:",
    "wrote :",
    "schrieb:",
    "geschrieben:",
    "a écrit :",
    "a écrit:",
    "a écrit :",
    "escribió:",
    "ha scritto:",
    "escreveu:",
    "schreef:",
    "het volgende geschreven:",
    "skrev:",
    "skrev følgende:",
    "kirjoitti:",
    "napisał:",
    "napisała:",
    "napisał(a):",
    "napsal:",
    "napsala:",
    "napsal(a):",
    "napísal:",
    "napísala:",
    "napísal(a):",
    "írta:",
    "a scris:",
    "je napisao:",
    "je napisala:",
    "napisao je:",
    "yazdı:",
    "пишет:",
    "написал:",
    "написала:",
    "написал(а):",
    "пише:",
    "написав:",
    "написав(ла):",
    "kirjutas:",
    "書きました:",
    "書きました：",
    "のメッセージ:",
    "のメッセージ：",
];

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
];

/// Subject starts that mark an automatic reply (used only with other evidence
/// absent: a human writing such a subject still gets a ticket, just flagged).
pub(crate) const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "automatic reply:",
    "auto-reply:",
    "autoreply:",
    "out of office:",
    "out of office reply",
    "automatische antwort:",
    "abwesenheitsnotiz",
    "réponse automatique :",
    "réponse automatique:",
    "respuesta automática:",
    "risposta automatica:",
    "resposta automática:",
    "automatisch antwoord:",
    "autosvar:",
    "automaattinen vastaus:",
    "automatyczna odpowiedź:",
    "automatická odpověď:",
    "automatická odpoveď:",
    "automatikus válasz:",
    "răspuns automat:",
    "automatski odgovor:",
    "otomatik yanıt:",
    "otomatik cevap:",
    "автоматический ответ:",
    "автоматична відповідь:",
    "automaatvastus:",
    "自動応答:",
    "自動返信:",
];
