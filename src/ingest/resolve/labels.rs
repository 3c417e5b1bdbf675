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
    /// The verb of an attribution line (`On … John <j@x> wrote:`), lower-case;
    /// matched as a substring of the line next to the address.
    pub wrote: &'static [&'static str],
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
        wrote: &["wrote", "writes"],
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
        wrote: &["schrieb", "geschrieben"],
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
        wrote: &["a écrit", "écrivait"],
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
        wrote: &["escribió"],
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
        wrote: &["ha scritto", "scrisse"],
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
        wrote: &["escreveu"],
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
        wrote: &["schreef", "het volgende geschreven"],
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
        wrote: &["skrev"],
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
        wrote: &["skrev"],
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
        wrote: &["skrev"],
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
        wrote: &["kirjoitti"],
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
        wrote: &["napisał", "napisała", "napisał(a)", "pisze"],
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
        original: &["původní zpráva", "původní e-mail"],
        apple: &["začátek přeposílané zprávy"],
        wrote: &["napsal", "napsala", "napsal(a)"],
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
        wrote: &["napísal", "napísala", "napísal(a)"],
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
        wrote: &["írta"],
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
            "mesaj redirecţionat",
            "mesaj transmis",
        ],
        original: &["mesaj original"],
        apple: &[
            "început mesaj redirecționat",
            "început mesaj redirecţionat",
            "inceput mesaj redirectionat",
        ],
        wrote: &["a scris"],
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
        wrote: &["napisao", "napisala"],
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
        wrote: &["yazdı"],
    },
    Lang {
        code: "ru",
        from: &["от", "от кого"],
        date: &["дата"],
        sent: &["отправлено"],
        to: &["кому"],
        cc: &["копия"],
        subject: &["тема"],
        forwarded: &["пересылаемое сообщение", "пересланное сообщение"],
        original: &["исходное сообщение", "оригинальное сообщение"],
        apple: &["начало переадресованного сообщения"],
        wrote: &["написал", "написала", "написал(а)", "пишет"],
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
            "початок пересланого повідомлення",
        ],
        wrote: &["написав", "написала", "написав(ла)", "пише"],
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
        wrote: &["kirjutas"],
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
        wrote: &["書きました", "のメッセージ", "のメール"],
    },
    Lang {
        code: "el",
        from: &["από"],
        date: &["ημερομηνία"],
        sent: &["εστάλη", "στάλθηκε"],
        to: &["προς"],
        cc: &["κοιν", "κοιν."],
        subject: &["θέμα"],
        forwarded: &["προωθημένο μήνυμα", "μήνυμα που προωθήθηκε"],
        original: &["αρχικό μήνυμα"],
        apple: &["αρχή προωθημένου μηνύματος"],
        wrote: &["έγραψε"],
    },
    Lang {
        code: "he",
        from: &["מאת"],
        date: &["תאריך"],
        sent: &["נשלח"],
        to: &["אל"],
        cc: &["עותק"],
        subject: &["נושא"],
        forwarded: &["הודעה שהועברה", "הודעה שהועברה הלאה"],
        original: &["הודעה מקורית", "ההודעה המקורית"],
        apple: &["תחילת הודעה שהועברה", "תחילת ההודעה שהועברה"],
        wrote: &["כתב", "כתבה", "כתב/ה"],
    },
    Lang {
        code: "ar",
        from: &["من"],
        date: &["التاريخ"],
        sent: &["تم الإرسال", "أرسل", "أرسلت"],
        to: &["إلى", "الى"],
        cc: &["نسخة", "نسخة إلى"],
        subject: &["الموضوع"],
        forwarded: &[
            "الرسالة المعاد توجيهها",
            "الرسالة المُعاد توجيهها",
            "رسالة معاد توجيهها",
            "رسالة مُعاد توجيهها",
        ],
        original: &["الرسالة الأصلية", "رسالة أصلية"],
        apple: &[
            "بداية الرسالة المعاد توجيهها",
            "بداية الرسالة المُعاد توجيهها",
        ],
        wrote: &["كتب", "كتبت", "كتب/ت"],
    },
    Lang {
        code: "zh",
        from: &["发件人", "寄件者", "寄件人", "發件人"],
        date: &["日期"],
        sent: &["发送时间", "寄件日期", "發送時間", "时间", "发送日期"],
        to: &["收件人", "收件者"],
        cc: &["抄送", "副本", "抄送人"],
        subject: &["主题", "主旨", "主題"],
        forwarded: &[
            "转发的邮件",
            "轉寄的郵件",
            "转发邮件",
            "已轉寄郵件",
            "转发邮件信息",
        ],
        original: &["原始邮件", "原始郵件"],
        apple: &["转发的邮件", "開始轉寄郵件", "转发邮件"],
        wrote: &["写道", "寫道"],
    },
    Lang {
        code: "ko",
        from: &["보낸 사람", "보낸사람"],
        date: &["날짜"],
        sent: &["보낸 날짜", "보낸날짜"],
        to: &["받는 사람", "받는사람"],
        cc: &["참조"],
        subject: &["제목"],
        forwarded: &["전달된 메일", "전달된 메시지"],
        original: &["원본 메시지", "원래 메시지", "원본 메일"],
        apple: &["전달된 메일", "전달된 메시지 시작"],
        wrote: &["작성", "님이 작성", "님이 씀"],
    },
    Lang {
        code: "vi",
        from: &["từ", "người gửi"],
        date: &["ngày"],
        sent: &["đã gửi", "ngày gửi"],
        to: &["đến", "tới", "người nhận"],
        cc: &["cc", "đồng gửi"],
        subject: &["chủ đề", "tiêu đề"],
        forwarded: &["thư đã chuyển tiếp", "thư được chuyển tiếp"],
        original: &["thư gốc", "thư ban đầu"],
        apple: &["bắt đầu thư được chuyển tiếp", "bắt đầu thư chuyển tiếp"],
        wrote: &["đã viết"],
    },
    Lang {
        code: "hi",
        from: &["प्रेषक", "से"],
        date: &["दिनांक", "तारीख़", "तारीख"],
        sent: &["भेजा गया", "भेजा"],
        to: &["प्रति", "को"],
        cc: &["प्रतिलिपि"],
        subject: &["विषय"],
        forwarded: &["अग्रेषित संदेश", "फ़ॉरवर्ड किया गया संदेश"],
        original: &["मूल संदेश"],
        apple: &["अग्रेषित संदेश प्रारंभ", "अग्रेषित संदेश की शुरुआत"],
        wrote: &["ने लिखा", "लिखा"],
    },
    Lang {
        code: "bg",
        from: &["от"],
        date: &["дата"],
        sent: &["изпратено"],
        to: &["до"],
        cc: &["копие"],
        subject: &["относно"],
        forwarded: &["препратено писмо", "препратено съобщение"],
        original: &["оригинално съобщение", "първоначално съобщение"],
        apple: &["начало на препратеното съобщение"],
        wrote: &["написа"],
    },
    Lang {
        code: "sr",
        from: &["šalje", "od", "шаље", "од"],
        date: &["datum", "датум"],
        sent: &["poslato", "послато"],
        to: &["prima", "za", "прима", "за"],
        cc: &["kopija", "копија"],
        subject: &["predmet", "предмет", "tema"],
        forwarded: &["prosleđena poruka", "прослеђена порука"],
        original: &["originalna poruka", "оригинална порука"],
        apple: &["početak prosleđene poruke", "почетак прослеђене поруке"],
        wrote: &["je napisao", "je napisala", "је написао", "написао"],
    },
    Lang {
        code: "sl",
        from: &["od", "pošiljatelj"],
        date: &["datum"],
        sent: &["poslano"],
        to: &["za", "prejemnik"],
        cc: &["kp", "kopija"],
        subject: &["zadeva"],
        forwarded: &["posredovano sporočilo"],
        original: &["izvirno sporočilo"],
        apple: &["začetek posredovanega sporočila"],
        wrote: &["je napisal", "je napisala", "napisal(a)"],
    },
    Lang {
        code: "lt",
        from: &["nuo", "siuntėjas"],
        date: &["data"],
        sent: &["išsiųsta"],
        to: &["kam", "gavėjas"],
        cc: &["kopija"],
        subject: &["tema"],
        forwarded: &["persiųstas laiškas"],
        original: &["pradinis laiškas", "originalus laiškas"],
        apple: &["persiunčiamo laiško pradžia"],
        wrote: &["rašė", "parašė"],
    },
    Lang {
        code: "lv",
        from: &["no", "sūtītājs"],
        date: &["datums"],
        sent: &["nosūtīts"],
        to: &["kam", "adresāts"],
        cc: &["kopija"],
        subject: &["temats", "tēma"],
        forwarded: &["pārsūtīta ziņa", "pārsūtīts ziņojums"],
        original: &["sākotnējais ziņojums", "sākotnējā ziņa"],
        apple: &["pārsūtītā ziņojuma sākums"],
        wrote: &["rakstīja"],
    },
    Lang {
        code: "id",
        from: &["dari", "pengirim"],
        date: &["tanggal"],
        sent: &["terkirim", "dikirim"],
        to: &["kepada", "ke"],
        cc: &["cc", "tembusan"],
        subject: &["subjek", "perihal"],
        forwarded: &["pesan terusan", "pesan yang diteruskan"],
        original: &["pesan asli"],
        apple: &["awal pesan terusan"],
        wrote: &["menulis"],
    },
    Lang {
        code: "th",
        from: &["จาก"],
        date: &["วันที่"],
        sent: &["ส่ง", "ส่งเมื่อ"],
        to: &["ถึง"],
        cc: &["สำเนาถึง", "สำเนา"],
        subject: &["เรื่อง", "หัวเรื่อง"],
        forwarded: &["ข้อความที่ส่งต่อ"],
        original: &["ข้อความต้นฉบับ"],
        apple: &["เริ่มข้อความที่ส่งต่อ"],
        wrote: &["เขียนว่า", "เขียน"],
    },
    Lang {
        code: "ca",
        from: &["de"],
        date: &["data"],
        sent: &["enviat", "enviat el"],
        to: &["a", "per a"],
        cc: &["a/c", "cc"],
        subject: &["assumpte", "tema"],
        forwarded: &["missatge reenviat"],
        original: &["missatge original"],
        apple: &["inici del missatge reenviat"],
        wrote: &["va escriure", "ha escrit"],
    },
    Lang {
        code: "fa",
        from: &["از", "فرستنده"],
        date: &["تاریخ"],
        sent: &["ارسال شده"],
        to: &["به", "گیرنده"],
        cc: &["رونوشت"],
        subject: &["موضوع"],
        forwarded: &["پیام بازارسال شده", "پیام هدایت‌شده"],
        original: &["پیام اصلی"],
        apple: &["شروع پیام بازارسال شده"],
        wrote: &["نوشت"],
    },
];

/// Labels shared by every language (what clients write when not localised).
pub(crate) const REPLY_TO_LABELS: &[&str] = &["reply-to", "antwort an", "répondre à"];

/// Picks one label list out of a [`Lang`].
type LabelsOf = fn(&Lang) -> &'static [&'static str];

/// Every label by its lower-case text: built once from [`LANGS`] so that a
/// lookup is one hash probe, not a walk over every language's lists.
static LABELS: std::sync::LazyLock<std::collections::HashMap<&'static str, (Field, bool)>> =
    std::sync::LazyLock::new(|| {
        // From first: "de"/"da"/"od" are From in their languages; the
        // ambiguous "a" (Italian/Spanish To) never collides with a From label.
        let tables: [(Field, LabelsOf, bool); 6] = [
            (Field::From, |g| g.from, false),
            (Field::Subject, |g| g.subject, false),
            (Field::Date, |g| g.date, false),
            (Field::Date, |g| g.sent, true),
            (Field::To, |g| g.to, false),
            (Field::Cc, |g| g.cc, false),
        ];
        let mut map = std::collections::HashMap::new();
        for l in REPLY_TO_LABELS {
            map.insert(*l, (Field::ReplyTo, false));
        }
        for (field, get, sent) in tables {
            for g in LANGS {
                for l in get(g) {
                    map.entry(*l).or_insert((field, sent));
                }
            }
        }
        map
    });

/// The longest label, in chars (a longer candidate is no label).
pub(crate) static MAX_LABEL_CHARS: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| LABELS.keys().map(|l| l.chars().count()).max().unwrap_or(0));

/// Look a label up in every language. `sent` is true for Outlook-style "Sent".
pub(crate) fn field_for_label(label: &str) -> Option<(Field, bool)> {
    let l = label.trim();
    if l.is_empty() || l.len() > 64 {
        return None;
    }
    if let Some(hit) = LABELS.get(l) {
        return Some(*hit);
    }
    let lower = l.to_lowercase();
    // Runs of inner whitespace (`Envoyé  le`) count as one space.
    let lower = if lower.contains(char::is_whitespace) {
        lower.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        lower
    };
    LABELS.get(lower.as_str()).copied()
}

/// Every attribution verb of every language (see [`Lang::wrote`]).
pub(crate) fn wrote_verbs() -> impl Iterator<Item = &'static str> {
    LANGS.iter().flat_map(|g| g.wrote.iter().copied())
}

/// The languages (codes) whose attribution verb `lower` (lower-cased) holds.
pub(crate) fn verb_langs(lower: &str) -> Vec<&'static str> {
    LANGS
        .iter()
        .filter(|g| g.wrote.iter().any(|v| lower.contains(v)))
        .map(|g| g.code)
        .collect()
}

/// Subject prefixes that are a forward in some languages and a reply in
/// others, with the languages where they mean forward: Danish/Norwegian
/// `VS:` (videresendt) is Finnish `VS:` (vastaus). Such a prefix says
/// forward to an attribution line only in a language of its list.
pub(crate) const AMBIGUOUS_PREFIXES: &[(&str, &[&str])] = &[("vs", &["da", "no", "sv"])];

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
