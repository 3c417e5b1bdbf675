//! Property tests for the resolver (test-only).
//!
//! Owns: "random text around a valid block still finds it", "random bodies with
//! no block never give an owner other than the sender", and "no input panics".
//! Inputs are generated; limits are proptest's default case counts.

use std::collections::HashSet;

use mail_parser::MessageParser;
use proptest::prelude::*;

use super::{Hints, ResolveContext, find_block, resolve};

fn team() -> HashSet<String> {
    ["ann@acme.example".to_string()].into_iter().collect()
}

fn mail(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: support@acme.example\r\nSubject: {subject}\r\nMessage-ID: <p@x.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

const BLOCKS: &[&str] = &[
    "---------- Forwarded message ---------\nFrom: Cust Omer <cust@example.com>\nDate: Mon, Mar 4, 2024\nSubject: Help\nTo: <ann@acme.example>\n",
    "-----Original Message-----\nFrom: Omer, Cust [mailto:cust@example.com]\nSent: Monday\nTo: Ann\nSubject: Help\n",
    "Begin forwarded message:\n\nFrom: Cust <cust@example.com>\nSubject: Help\nDate: 4 March 2024\nTo: ann@acme.example\n",
    "-------- Weitergeleitete Nachricht --------\nBetreff: \tHilfe\nDatum: \tMon\nVon: \tCust <cust@example.com>\nAn: \tann@acme.example\n",
    "________________________________\nDe : Cust <cust@example.com>\nEnvoyé : lundi\nÀ : Ann\nObjet : Aide\n",
];

/// Free text with no colons: it can never form a label line or reply intro.
fn prose() -> impl Strategy<Value = String> {
    proptest::collection::vec("[A-Za-z0-9 ,.!?'()]{0,60}", 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #[test]
    fn block_found_in_noise(before in prose(), after in prose(), which in 0..BLOCKS.len()) {
        let body = format!("{before}\n\n{}\n{after}\n", BLOCKS[which]);
        let hints = Hints { subject: "Fwd: Help".into(), outlook_mailer: false };
        let b = find_block(&body, &hints);
        prop_assert!(b.is_some(), "no block in {body:?}");
        prop_assert_eq!(b.map(|b| b.from.email), Some("cust@example.com".to_string()));

        // And end to end through resolve, from a team member.
        let raw = mail("Ann <ann@acme.example>", "Fwd: Help", &body.replace('\n', "\r\n"));
        let msg = MessageParser::default().parse(raw.as_bytes());
        prop_assert!(msg.is_some());
        if let Some(msg) = msg {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            prop_assert_eq!(resolve(&msg, &ctx).contact.email, "cust@example.com");
        }
    }

    #[test]
    fn no_block_keeps_sender(
        lines in proptest::collection::vec(prop_oneof![
            "[A-Za-z0-9 ,.!?]{0,50}",
            Just("From the desk of Ann".to_string()),
            Just("Sent from my iPhone".to_string()),
            Just("write to cust@example.com".to_string()),
            Just("> quoted line".to_string()),
            Just("Subject to change".to_string()),
            Just("----------".to_string()),
            Just("Regards, Ann".to_string()),
        ], 0..20),
        subject in prop_oneof![Just("Fwd: x"), Just("Re: x"), Just("hello"), Just("WG: AW: y")],
        outsider in any::<bool>(),
    ) {
        let from = if outsider { "Zed <zed@outside.example>" } else { "Ann <ann@acme.example>" };
        let raw = mail(from, subject, &lines.join("\r\n"));
        if let Some(msg) = MessageParser::default().parse(raw.as_bytes()) {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            let want = if outsider { "zed@outside.example" } else { "ann@acme.example" };
            prop_assert_eq!(resolve(&msg, &ctx).contact.email, want);
        }
    }

    #[test]
    fn outsider_any_body_keeps_sender(body in ".{0,400}", subject in ".{0,40}") {
        let raw = mail("Zed <zed@outside.example>", &subject.replace(['\r', '\n'], " "), &body);
        if let Some(msg) = MessageParser::default().parse(raw.as_bytes()) {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            prop_assert_eq!(resolve(&msg, &ctx).contact.email, "zed@outside.example");
        }
    }

    #[test]
    fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Some(msg) = MessageParser::default().parse(&raw) {
            let t = team();
            let fw = vec!["g@groups.example".to_string()];
            let ctx = ResolveContext { team_addresses: &t, forwarders: &fw, original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            let _ = resolve(&msg, &ctx);
            let _ = super::classify(&msg, Some(""), &ctx);
        }
        let text = String::from_utf8_lossy(&raw);
        let _ = find_block(&text, &Hints { subject: "Fwd: x".into(), outlook_mailer: true });
        let _ = super::html_to_text(&text);
        let _ = super::strip_subject_prefixes(&text);
    }
}

/// One forward layout per family issue 15 named: (subject, body, owner,
/// method). The forwarder is always `ann@acme.example` (a team member).
const LAYOUTS: &[(&str, &str, &str, &str)] = &[
    (
        "FW: Help",
        "Please handle.\n\nOn 28/10/2021 12:46, \"Cust Omer\" <cust@example.com> wrote:\n    Hello,\n    it is broken.\n",
        "cust@example.com",
        "body:attribution",
    ),
    (
        "Fwd: Hilfe",
        "Bitte übernehmen.\n\nAm 04.03.2024 um 09:12 schrieb Jörg Müller <joerg@beispiel.de>:\n\n> Hallo,\n> es geht nicht.\n",
        "joerg@beispiel.de",
        "body:attribution",
    ),
    (
        "Fwd: 问题",
        "请跟进。\n\n在 2024年3月4日 09:12，\"王芳\" <wang@example.cn> 写道：\n\n> 您好：\n> 发票有误。\n",
        "wang@example.cn",
        "body:attribution",
    ),
    (
        "Fw: Faktura",
        "Prosím.\n\n----- Přeposlaná zpráva ----- Od: Jan Novák <jan@example.cz>Komu: Ann <ann@acme.example>Kopie: Odesláno: pondělí 4. března 2024 9:12Předmět: Faktura\n\nDobrý den,\nfaktura je špatně.\n",
        "jan@example.cz",
        "body:yahoo",
    ),
    (
        "Fwd: Счёт",
        "Посмотрите.\n\nНачало переадресованного сообщения:\n\nОт кого: Иван Петров <ivan@example.ru>\nТема: Счёт\nДата: 4 марта 2024 г., 9:12\nКому: Ann <ann@acme.example>\n\nЗдравствуйте!\n",
        "ivan@example.ru",
        "body:apple",
    ),
    (
        "Fwd: בעיה",
        "\u{200f}תחילת הודעה שהועברה:\u{200f}\n\n\u{200f}מאת:\u{200f} נועה <noa@example.co.il>\n\u{200f}נושא:\u{200f} בעיה\n\u{200f}תאריך:\u{200f} 4 במרץ 2024\n\u{200f}אל:\u{200f} ann@acme.example\n\nשלום\n",
        "noa@example.co.il",
        "body:apple",
    ),
    (
        "TR: Facture",
        "Pour le support.\n\n________________________________\nDe\u{a0}: Marie Curie <marie@exemple.fr>\nEnvoyé\u{202f}: lundi 4 mars 2024 09:12\nÀ\u{a0}: Ann <ann@acme.example>\nObjet\u{a0}: Facture\n\nBonjour,\n",
        "marie@exemple.fr",
        "body:outlook-web",
    ),
    (
        "FW: Order",
        "________________________________\nFrom: Sam Smith <sam@example.org>\nSent: Monday, March 4, 2024 9:12 AM\nTo: Ann Agent <ann@acme.example>\nSubject: Order\n",
        "sam@example.org",
        "body:outlook-web",
    ),
];

/// Quoted-printable with a soft break every `width` chars (never inside an
/// `=XX`), CRLF line ends.
fn qp_encode(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        let mut col = 0;
        for b in line.bytes() {
            let piece = if (b' '..=b'~').contains(&b) && b != b'=' {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if col + piece.len() > width {
                out.push_str("=\r\n");
                col = 0;
            }
            col += piece.len();
            out.push_str(&piece);
        }
        out.push_str("\r\n");
    }
    out
}

fn html_of(text: &str) -> String {
    let mut out = String::from("<html><body>");
    for line in text.lines() {
        let esc = line
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        if esc.trim().is_empty() {
            out.push_str("<div><br></div>");
        } else {
            out.push_str(&format!("<div>{esc}</div>"));
        }
    }
    out + "</body></html>"
}

/// How a layout is wrapped for the property below.
#[derive(Debug, Clone, Copy)]
enum Wire {
    EightBit,
    Qp(usize),
    Base64,
}

fn wrapped(subject: &str, body: &str, wire: Wire, html: bool, crlf: bool) -> Vec<u8> {
    use base64::Engine;
    let ctype = if html { "text/html" } else { "text/plain" };
    let body = if html {
        html_of(body)
    } else {
        body.to_string()
    };
    let (cte, encoded) = match wire {
        Wire::EightBit => ("8bit", body.clone()),
        Wire::Qp(w) => ("quoted-printable", qp_encode(&body, w)),
        Wire::Base64 => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(body.as_bytes()),
        ),
    };
    let mut raw = format!(
        "From: Ann Agent <ann@acme.example>\nTo: support@acme.example\nSubject: {subject}\nMessage-ID: <l@x.example>\nMIME-Version: 1.0\nContent-Type: {ctype}; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n{encoded}"
    );
    raw = raw.replace("\r\n", "\n");
    if crlf {
        raw = raw.replace('\n', "\r\n");
    }
    raw.into_bytes()
}

proptest! {
    /// Every family's layout resolves to the same owner by the same rule
    /// however it travels: QP soft breaks anywhere, base64 or 8bit, a BOM,
    /// CRLF or LF, the whole body `>`-quoted, or HTML only (converted back).
    #[test]
    fn layouts_resolve_the_same_however_wrapped(
        which in 0..LAYOUTS.len(),
        wire in prop_oneof![
            Just(Wire::EightBit),
            (8usize..76).prop_map(Wire::Qp),
            Just(Wire::Base64),
        ],
        bom in any::<bool>(),
        quoted in any::<bool>(),
        html in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let (subject, body, owner, method) = LAYOUTS[which];
        let mut text = body.to_string();
        if quoted {
            text = text
                .lines()
                .map(|l| if l.is_empty() { ">".to_string() } else { format!("> {l}") })
                .collect::<Vec<_>>()
                .join("\n");
        }
        if bom {
            text.insert(0, '\u{feff}');
        }
        let raw = wrapped(subject, &text, wire, html, crlf);
        let msg = crate::ingest::parse::parse(&raw);
        prop_assert!(msg.is_some());
        if let Some(msg) = msg {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            let r = resolve(&msg, &ctx);
            prop_assert_eq!(&r.contact.email, owner, "{:?}", String::from_utf8_lossy(&raw));
            prop_assert_eq!(&r.method, method);
        }
    }

    /// The same attribution in a reply (`Re:` with the agent's own answer
    /// above) is no forward, however wrapped.
    #[test]
    fn a_reply_quoting_is_never_a_forward(
        which in 0..3usize,
        answer in "[A-Za-z ,.!]{1,60}",
        wire in prop_oneof![Just(Wire::EightBit), (8usize..76).prop_map(Wire::Qp)],
        html in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let (_, body, _, _) = LAYOUTS[which];
        let quote_start = body.find("\n\n").map_or(0, |i| i + 2);
        let text = format!("{answer}\n\n{}", &body[quote_start..]);
        let raw = wrapped("Re: Help", &text, wire, html, crlf);
        if let Some(msg) = crate::ingest::parse::parse(&raw) {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, loop_key: None, auth: &crate::ingest::auth::Authentication::assumed() };
            let r = resolve(&msg, &ctx);
            prop_assert_eq!(r.contact.email, "ann@acme.example");
            prop_assert_eq!(r.method, "from");
        }
    }

    /// Text made of the characters the new grammar looks at (colons of both
    /// widths, brackets, `@`, digits, bidi marks, no-break spaces, labels of
    /// several scripts) never panics the scanner.
    #[test]
    fn label_soup_never_panics(
        text in "[a-zA-Z0-9:：<>@ .,/\u{200f}\u{202b}\u{a0}\u{202f}\u{feff}\n>ОтКомуТемаמאתمنإلى差出人件名年月日-]{0,400}",
        subject in prop_oneof![Just("Fwd: x"), Just("Re: x"), Just("x"), Just("VS: x")],
    ) {
        let _ = find_block(&text, &Hints { subject: subject.into(), outlook_mailer: false });
        let _ = super::attribution::parse(&text);
        let _ = super::glued::split(&text, |_| true);
    }
}
