//! Ingest CPU cost per message: parse + classify + resolve (the planning
//! half of ingest, without the store), over the forward fixtures and a plain
//! 5 KB message like Postfix's smtp-source sends.
//!
//! `cargo bench --bench ingest` prints microseconds per message for each.

use std::time::Instant;

use postdesk::config;
use postdesk::ingest::{parse, resolve_one};

fn main() {
    let cfg_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/config/bench-ingest.toml"
    );
    let cfg_text = match std::fs::read_to_string(cfg_path) {
        Ok(t) => t,
        Err(e) => panic!("{cfg_path}: {e}"),
    };
    let assumed = postdesk::ingest::auth::Authentication::assumed();
    let config = match config::parse(&cfg_text, std::path::Path::new(cfg_path)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let channel = config.channel("support");
    let plain = format!(
        "From: <a@example.com>\r\nTo: <support@acme.example>\r\nDate: Thu, 26 Nov 2026 02:30:02 +0000\r\nMessage-Id: <68d7.0003.0001@vm>\r\n\r\n{}",
        "1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n".repeat(64)
    )
    .into_bytes();
    // Ordinary prose: lines that start with letters, as customers write.
    let prose = format!(
        "From: Jane Roe <jane@example.com>\r\nTo: <support@acme.example>\r\nSubject: Invoice question\r\nDate: Thu, 26 Nov 2026 02:30:02 +0000\r\nMessage-Id: <prose.1@example.com>\r\n\r\n{}",
        "Hello team, the invoice we received last week lists two licences twice.\r\nCould you check it and send a corrected copy? Thanks, and best regards.\r\n".repeat(35)
    )
    .into_bytes();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/forwards");
    let mut fixtures: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    fixtures.sort();

    let run = |name: &str, corpus: &[Vec<u8>], rounds: usize| {
        let start = Instant::now();
        let mut n = 0usize;
        for _ in 0..rounds {
            for raw in corpus {
                if let Some(msg) = parse::parse(raw) {
                    let f = parse::fields(&msg);
                    let (r, c) =
                        resolve_one(&msg, Some("a@example.com"), &config, channel, &assumed);
                    std::hint::black_box((f, r, c));
                }
                n += 1;
            }
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("{name:<28} {per:8.1} µs/message  ({n} messages)");
    };
    run(
        "plain 5 KB (smtp-source)",
        std::slice::from_ref(&plain),
        5000,
    );
    run("plain 5 KB (prose)", std::slice::from_ref(&prose), 5000);
    run("forward fixtures (mixed)", &fixtures, 20);

    // What ingest adds before planning, for SMTP mail from an untrusted
    // client that claims no team or forwarder address (the customer path):
    // a scan of the headers, no DNS.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let auth = postdesk::ingest::auth::Authenticator::off("bench");
    let dir = postdesk::ingest::Directory::new(&config);
    let entry = |raw: &[u8]| postdesk::store::SpoolEntry {
        id: postdesk::store::SpoolId(1),
        received_at: 0,
        source: postdesk::store::SpoolSource::Smtp,
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["support@acme.example".into()],
        client_ip: Some("192.0.2.1".into()),
        helo: None,
        channel: None,
        raw: raw.to_vec(),
        content_hash: String::new(),
    };
    let plain_entry = entry(&plain);
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        let a = rt.block_on(auth.authenticate(&plain_entry, &config, dir.trusted()));
        std::hint::black_box(a);
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!(
        "{:<28} {per:8.1} µs/message  ({rounds} messages)",
        "authentication (customer)"
    );
}
