//! Fuzz harness for the SMTP session (property test; needs the session's
//! private `handle` and the test spool, so it lives beside the session tests).
//!
//! Owns: "whatever a client sends, the session does not panic, ends when
//! the client leaves, answers only well-formed reply lines and commits only
//! messages it answered 250". Input: sequences of real commands, mutated
//! commands, arbitrary bytes, and fixture messages (mutated by
//! `tests/fuzz/mutate.rs`) sent with DATA or BDAT. Case count: 128, or
//! `PROPTEST_CASES` (`scripts/fuzz`); failing seeds in
//! `proptest-regressions/smtp-fuzz.txt`.

use proptest::prelude::*;

use super::*;

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.test\r\n",
    b"HELO client.test\r\n",
    b"MAIL FROM:<a@customer.test>\r\n",
    b"MAIL FROM:<> SIZE=99999999999999999999 BODY=8BITMIME SMTPUTF8\r\n",
    "MAIL FROM:<jörg@kunde.test> SMTPUTF8\r\n".as_bytes(),
    b"RCPT TO:<support@acme.example>\r\n",
    b"RCPT TO:<sales+7@acme.example> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b"BDAT 3 LAST\r\nabc",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY support\r\n",
    b"HELP\r\n",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    b"QUIT\r\n",
];

const OPENING: &[u8] =
    b"EHLO c\r\nMAIL FROM:<a@customer.test>\r\nRCPT TO:<support@acme.example>\r\n";

/// What one write of the client holds.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(COMMANDS).prop_map(<[u8]>::to_vec),
        // A command with byte flips, non-ASCII, truncation.
        2 => (
            prop::sample::select(COMMANDS),
            prop::collection::vec(mutate::mutation(), 1..4),
        )
            .prop_map(|(c, edits)| mutate::apply(c, &edits, &[])),
        2 => prop::collection::vec(any::<u8>(), 0..200),
        // A whole (mutated) fixture message after DATA, dot-stuffed or not.
        2 => (mutate::mutated_mail(), any::<bool>()).prop_map(|(raw, stuff)| {
            let mut p = OPENING.to_vec();
            p.extend_from_slice(b"DATA\r\n");
            let text = if stuff {
                raw.split(|&b| b == b'\n')
                    .map(|l| if l.starts_with(b".") { [b".", l].concat() } else { l.to_vec() })
                    .collect::<Vec<_>>()
                    .join(&b'\n')
            } else {
                raw
            };
            p.extend_from_slice(&text);
            p.extend_from_slice(b"\r\n.\r\n");
            p
        }),
        // The same through BDAT, with a right or wrong chunk size.
        1 => (mutate::mutated_mail(), -3i64..3).prop_map(|(raw, off)| {
            let mut p = OPENING.to_vec();
            let size = (raw.len() as i64 + off).max(0);
            p.extend_from_slice(format!("BDAT {size} LAST\r\n").as_bytes());
            p.extend_from_slice(&raw);
            p
        }),
    ]
}

proptest! {
    #![proptest_config(mutate::config(128, "proptest-regressions/smtp-fuzz.txt"))]

    #[test]
    fn smtp_session_fuzz(pieces in prop::collection::vec(piece(), 0..16)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let harness = Harness::new(cfg(), MemSpool::default());
            let (client, server) = tokio::io::duplex(64 * 1024);
            let task = tokio::spawn(handle(server, CLIENT_IP, Arc::clone(&harness.shared)));
            let (mut rd, mut wr) = tokio::io::split(client);
            let drain = tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut sink).await;
                sink
            });
            for p in pieces {
                if wr.write_all(&p).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
            let ended = tokio::time::timeout(WAIT, task).await;
            prop_assert!(ended.is_ok(), "session did not end after the client left");
            prop_assert!(ended.map(|r| r.is_ok()).unwrap_or(false), "session panicked");
            let replies = drain.await.expect("drain");
            let replies = String::from_utf8_lossy(&replies);
            for line in replies.lines() {
                let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
                prop_assert!(code.is_some_and(|c| (200..600).contains(&c)), "malformed reply line {line:?}");
            }
            let queued = replies.lines().filter(|l| l.starts_with("250 2.0.0 Ok: queued as")).count();
            prop_assert_eq!(harness.spool.messages().len(), queued, "{}", replies);
            Ok(())
        })?;
    }
}
