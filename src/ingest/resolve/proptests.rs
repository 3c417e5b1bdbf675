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
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, own_message_id_domain: "desk.acme.example", auth: &crate::ingest::auth::Authentication::assumed() };
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
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, own_message_id_domain: "d.example", auth: &crate::ingest::auth::Authentication::assumed() };
            let want = if outsider { "zed@outside.example" } else { "ann@acme.example" };
            prop_assert_eq!(resolve(&msg, &ctx).contact.email, want);
        }
    }

    #[test]
    fn outsider_any_body_keeps_sender(body in ".{0,400}", subject in ".{0,40}") {
        let raw = mail("Zed <zed@outside.example>", &subject.replace(['\r', '\n'], " "), &body);
        if let Some(msg) = MessageParser::default().parse(raw.as_bytes()) {
            let t = team();
            let ctx = ResolveContext { team_addresses: &t, forwarders: &[], original_sender_of_forwards: true, own_message_id_domain: "d.example", auth: &crate::ingest::auth::Authentication::assumed() };
            prop_assert_eq!(resolve(&msg, &ctx).contact.email, "zed@outside.example");
        }
    }

    #[test]
    fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Some(msg) = MessageParser::default().parse(&raw) {
            let t = team();
            let fw = vec!["g@groups.example".to_string()];
            let ctx = ResolveContext { team_addresses: &t, forwarders: &fw, original_sender_of_forwards: true, own_message_id_domain: "d.example", auth: &crate::ingest::auth::Authentication::assumed() };
            let _ = resolve(&msg, &ctx);
            let _ = super::classify(&msg, Some(""), &ctx);
        }
        let text = String::from_utf8_lossy(&raw);
        let _ = find_block(&text, &Hints { subject: "Fwd: x".into(), outlook_mailer: true });
        let _ = super::html_to_text(&text);
        let _ = super::strip_subject_prefixes(&text);
    }
}
