//! Fuzz harnesses as property tests (stable toolchain, `proptest`).
//!
//! Owns: "no input panics" for the untrusted-input parsers reachable from the
//! public API — MIME parse → classify → resolve → bounce link → ingest plan
//! (`ingest::resolve_one`, `ingest::plan_entry`), the bounce text parsers,
//! the forward-block finder, the config reader (`config::parse`), and web
//! form fields (`ingest::submit::check_form` → ticket subject and text). Seeds
//! are the `fixtures/` files, mutated (see `fuzz/mutate.rs`), plus arbitrary
//! bytes and text. The SMTP session harness needs private items and lives
//! in `src/smtp/tests/fuzz.rs`.
//!
//! Case counts are small by default (CI); `scripts/fuzz SECONDS` sets
//! `PROPTEST_CASES` and loops. Failing seeds are kept in
//! `proptest-regressions/`.

mod fuzz {
    pub mod mutate;
}

use std::path::Path;
use std::sync::OnceLock;

use fuzz::mutate::{self, mail_corpus, mutated_mail};
use postdesk::config::Config;
use postdesk::ingest::auth::{self, Authentication};
use postdesk::ingest::resolve::{Hints, find_block};
use postdesk::ingest::{self, Directory, bounce, parse};
use postdesk::live::Live;
use postdesk::store::{SpoolEntry, SpoolId, SpoolSource};
use proptest::prelude::*;

const CONFIG: &str = r#"
[company]
name = "Acme"
[[users]]
id = "ann"
email = "ann@acme.example"
[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
forwarders = ["support-group@acme.example"]
[[channels]]
id = "sales"
kind = "forward"
address = "sales@acme.example"
original_sender_of_forwards = false
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        postdesk::config::parse(CONFIG, Path::new("fuzz.toml")).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn live() -> &'static Live {
    static L: OnceLock<Live> = OnceLock::new();
    L.get_or_init(|| Live::new(config().clone()))
}

/// Everything ingest does with one message's bytes, short of the store.
fn ingest_all(raw: &[u8], smtp: bool) {
    let config = config();
    let assumed = Authentication::assumed();
    let unproven = Authentication::none("fuzz");
    // What is proven about a message is read from its own headers too.
    let relayed = auth::from_results(raw, "mx.acme.example", "fuzz");
    let _ = relayed.covers("ann@acme.example");
    if let Some(msg) = parse::parse(raw) {
        let fields = parse::fields(&msg);
        for channel in [None, config.channel("support"), config.channel("sales")] {
            for envelope in [None, Some(""), Some("carol@customer.example")] {
                for auth in [&assumed, &unproven] {
                    let (_, class) = ingest::resolve_one(&msg, envelope, config, channel, auth);
                    let _ = bounce::link(Some(&msg), &class, &fields);
                    let _ = bounce::link(None, &class, &fields);
                }
            }
        }
    }
    let entry = SpoolEntry {
        id: SpoolId(1),
        received_at: 0,
        source: if smtp {
            SpoolSource::Smtp
        } else {
            SpoolSource::Imap
        },
        mail_from: "carol@customer.example".into(),
        rcpt_to: vec!["support@acme.example".into(), "sales@acme.example".into()],
        client_ip: Some("192.0.2.1".into()),
        helo: Some("fuzz.example".into()),
        channel: None,
        raw: raw.to_vec(),
        content_hash: "0".into(),
    };
    let dir = Directory::new(config);
    let _ = ingest::plan_entry(&entry, config, &dir, live(), &unproven);
    let _ = ingest::plan_entry(&entry, config, &dir, live(), &relayed);
}

/// Text heavy in what the bounce and block parsers look for.
fn mail_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("Message-ID:".to_string()),
            Just("Received:".to_string()),
            Just("received:".to_string()),
            Just("From:".to_string()),
            Just("Von:".to_string()),
            Just("De :".to_string()),
            Just("件名：".to_string()),
            Just("-----Original Message-----".to_string()),
            Just("---------- Forwarded message ---------".to_string()),
            Just("550 5.1.1".to_string()),
            Just("<a@b.example>".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just(">".to_string()),
            Just("*".to_string()),
            Just("ä".to_string()),
            Just("Mailbox ä full".to_string()),
            Just("日本".to_string()),
            Just("😀".to_string()),
            ".{0,12}",
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

fn text_parsers(text: &str) {
    let _ = bounce::diagnostic_line(text);
    let _ = bounce::message_ids_in_text(text);
    for outlook in [false, true] {
        for subject in ["Fwd: x", "WG: x", "", "転送：x"] {
            let hints = Hints {
                subject: subject.into(),
                outlook_mailer: outlook,
            };
            let _ = find_block(text, &hints);
        }
    }
}

/// Seeds for the config reader: the example config and every fixture config.
fn config_corpus() -> &'static [Vec<u8>] {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/postdesk.example.toml");
        let mut all = vec![std::fs::read(&example).expect("example config")];
        all.extend(mutate::load("config", ".toml"));
        all.push(CONFIG.as_bytes().to_vec());
        all
    })
}

fn parse_config(bytes: &[u8]) {
    let dir = std::env::temp_dir();
    let text = String::from_utf8_lossy(bytes);
    if let Err(e) = postdesk::config::parse(&text, &dir.join("fuzz-postdesk.toml")) {
        // Every diagnostic is a `FILE:LINE:COL` inside the text.
        for d in &e.diagnostics {
            assert!(d.line >= 1 && d.col >= 1, "{d}");
            assert!(d.line <= text.lines().count().max(1) + 1, "{d}");
        }
    }
}

/// The example config (its `contact-form` channel declares fields) and an
/// undeclared form (any fields).
fn form_channels() -> &'static [(Config, String)] {
    static F: OnceLock<Vec<(Config, String)>> = OnceLock::new();
    F.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/postdesk.example.toml");
        let example = postdesk::config::load(&example).unwrap_or_else(|e| panic!("{e}"));
        let open = format!(
            "{CONFIG}[[channels]]\nid = \"web\"\nkind = \"form\"\naddress = \"web@acme.example\"\n"
        );
        let open = postdesk::config::parse(&open, Path::new("fuzz.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        vec![(example, "contact-form".into()), (open, "web".into())]
    })
}

/// Field names a form posts: the usual ones, declared ones, and any text.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "email", "name", "topic", "subject", "message", "website", "product", "phone"
        ])
        .prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("carol@customer.example".to_string()),
        Just("Carol Ä. Müller <carol@customer.example>".to_string()),
        ".{0,80}",
        mail_text(),
        mutated_mail()
            .prop_map(|raw| String::from_utf8_lossy(&raw[..raw.len().min(3000)]).into_owned()),
    ]
}

proptest! {
    #![proptest_config(mutate::config(128, "proptest-regressions/fuzz.txt"))]

    /// Web form fields through the checks and into a ticket's subject and
    /// first message.
    #[test]
    fn form_fields_arbitrary(
        which in any::<prop::sample::Index>(),
        pairs in prop::collection::vec((field_name(), field_value()), 0..12),
    ) {
        let forms = form_channels();
        let (config, id) = &forms[which.index(forms.len())];
        let channel = config.channel(id).expect("form channel");
        if let Ok(ingest::submit::Checked::Accepted(sub)) =
            ingest::submit::check_form(&channel.form, pairs)
        {
            let _ = sub.ticket_subject(&channel.form, channel);
            let _ = sub.conversation_text(&channel.form);
            let _ = sub.to_json(&channel.id);
        }
    }

    /// Mutated fixture mail through parse → classify → resolve → bounce link
    /// → ingest plan.
    #[test]
    fn ingest_mutated_fixtures(raw in mutated_mail(), smtp in any::<bool>()) {
        ingest_all(&raw, smtp);
    }

    /// Arbitrary bytes, and arbitrary bytes after a plausible header block.
    #[test]
    fn ingest_arbitrary_bytes(
        head in prop::sample::select(vec![
            &b""[..],
            b"From: MAILER-DAEMON@x.example\r\nSubject: Undeliverable\r\n\r\n",
            b"From: Ann <ann@acme.example>\r\nSubject: Fwd: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n",
            b"From: postmaster@x\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n",
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut raw = head.to_vec();
        raw.extend_from_slice(&tail);
        ingest_all(&raw, true);
    }

    /// The bounce text parsers and the forward-block finder on arbitrary
    /// and mail-like text.
    #[test]
    fn text_parsers_arbitrary(text in prop_oneof![".{0,400}", mail_text()]) {
        text_parsers(&text);
    }

    /// The same parsers on the (lossy) text of mutated fixture mail.
    #[test]
    fn text_parsers_mutated_fixtures(raw in mutated_mail()) {
        text_parsers(&String::from_utf8_lossy(&raw));
    }

    /// The config reader on arbitrary bytes.
    #[test]
    fn config_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        parse_config(&bytes);
    }

    /// The config reader on mutated example and fixture configs.
    #[test]
    fn config_mutated(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(mutate::mutation(), 0..6),
    ) {
        let corpus = config_corpus();
        let bytes = mutate::apply(&corpus[seed.index(corpus.len())], &edits, corpus);
        parse_config(&bytes);
    }
}

/// The corpus is really there (a harness over nothing proves nothing).
#[test]
fn corpus_is_loaded() {
    assert!(mail_corpus().len() >= 10);
    assert!(config_corpus().len() >= 2);
    // Mutations really change seeds, and do insert non-ASCII.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = mutated_mail();
    let outs: Vec<Vec<u8>> = (0..200)
        .map(|_| strategy.new_tree(&mut runner).expect("value").current())
        .collect();
    assert!(outs.iter().any(|o| !mail_corpus().contains(o)));
    assert!(
        outs.iter()
            .any(|o| o.windows(4).any(|w| w == "😀".as_bytes()))
    );
}
