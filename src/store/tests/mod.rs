//! The store conformance suite: the behaviour every backend must show,
//! written against the [`Store`] traits only (no SQL, no backend type).
//!
//! Each test is a `pub(crate) async fn NAME(s: &dyn Store)` run on a fresh,
//! empty store; [`conformance!`] instantiates every one of them as a
//! `#[tokio::test]` for one backend. A backend's test module adds one line:
//!
//! ```ignore
//! crate::store::tests::conformance!(open_fresh_store);
//! ```
//!
//! where `open_fresh_store` is an `async fn() -> Fixture` (SQLite's is in
//! `sqlite/tests.rs`, module `conformance`). Backend-specific tests (SQLite's
//! WAL, migrations, PRAGMAs, query plans, fault injection by trigger) stay
//! with the backend; the helpers below (plans, replies, spool entries) are
//! shared with them. Inbound plans are applied with ingest's real
//! `decide` and replies queued with outbound's real `replay`, so the suite
//! checks the decisions and the backend's reads and writes together.
//!
//! Ticket numbers are asserted (`TicketId(1)` is the first ticket): a
//! backend numbers tickets 1, 2, 3… in a fresh store.
//!
//! The unit tests of ingest, pull and outbound that need a store open it
//! with [`fresh_store`], which opens the backend named by the environment
//! variable [`TEST_STORE_ENV`] (`sqlite`, the default): running them on
//! another backend is running `cargo test --lib` again with it set, once
//! that backend has its arm in [`fresh_store`].

mod inbound;
mod lease;
mod mailbox;
mod outbox;
mod web;

pub(crate) use inbound::*;
pub(crate) use lease::*;
pub(crate) use mailbox::*;
pub(crate) use outbox::*;
pub(crate) use web::*;

use std::sync::Arc;

pub(crate) use crate::ingest::decide::decide;
pub(crate) use crate::outbound::replay::replay;
pub(crate) use crate::store::*;

/// A fresh, empty store of one backend, and what keeps it alive (a
/// temporary directory, a scratch database): dropped after the test.
pub(crate) struct Fixture {
    pub store: Arc<dyn Store>,
    pub keep: Box<dyn std::any::Any + Send>,
}

/// The environment variable naming the backend [`fresh_store`] opens.
pub(crate) const TEST_STORE_ENV: &str = "POSTDESK_TEST_STORE";

/// A fresh, empty store for a unit test, its files (if any) under `dir`:
/// SQLite unless [`TEST_STORE_ENV`] names another backend. Panics on a
/// backend it does not know (a test run on the wrong backend must not pass).
pub(crate) async fn fresh_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let backend = std::env::var(TEST_STORE_ENV).unwrap_or_default();
    match backend.as_str() {
        "" | "sqlite" => {
            Arc::new(SqliteStore::open(&dir.join("test.sqlite"), 5000, 256).expect("open sqlite"))
        }
        "postgres" => crate::store::postgres::open_test_store().await,
        other => panic!("{TEST_STORE_ENV}={other}: no such test backend"),
    }
}

/// Instantiates every conformance test for one backend: `$open` is a path
/// to an `async fn() -> Fixture` that opens a fresh, empty store.
macro_rules! conformance {
    ($open:path) => {
        $crate::store::tests::conformance!(@each $open;
            inbound_apply_is_atomic_and_deduplicated,
            submit_commits_spool_and_ticket_together,
            replies_thread_by_references_and_token,
            strangers_cannot_join_a_ticket_by_guessable_handles,
            whom_the_contact_copied_may_continue_the_thread,
            a_reused_message_id_from_another_sender_is_not_a_duplicate,
            only_verified_mail_renames_a_contact,
            plans_applied_together_see_what_the_earlier_ones_wrote,
            balancing_spreads_by_open_tickets_then_least_recent,
            the_contact_filter_ignores_case_and_spaces,
            contact_owner_routing,
            raw_tail_text_reads_back_whole,
            bounces_join_the_outbound_messages_ticket_and_fail_it,
            reply_context_leaves_out_replies_whose_delivery_failed,
            only_an_unassigned_ticket_is_taken,
            outbox_counts_tell_the_sent_replies_that_bounced,
            an_idempotency_key_replays_its_reply_and_no_other_ticket,
            web_sessions_and_sign_in_links,
            inbox_views_filters_counts_and_paging,
            inbox_search_words_prefixes_contacts_and_hostile_input,
            one_gmail_message_is_spooled_once_across_channels_and_labels,
            one_open_alert_per_channel,
            a_ticket_keeps_what_routed_it,
            notices_queue_without_a_ticket_and_the_key_is_made_once,
            a_live_lease_is_held_by_one_node,
            an_expired_lease_is_taken_over_once_under_a_new_epoch,
            a_stale_epoch_is_refused,
        );
    };
    (@each $open:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let fixture: $crate::store::tests::Fixture = $open().await;
                $crate::store::tests::$test(&*fixture.store).await;
                drop(fixture.keep);
            }
        )*
    };
}
pub(crate) use conformance;

/// What tests store as a message's resolution.
pub(crate) fn resolved(email: &str) -> SenderResolution {
    let contact = Address {
        email: email.into(),
        name: None,
    };
    SenderResolution {
        resolution: Resolution::only(contact, "from", 1.0),
        authentication: None,
    }
}

pub(crate) fn spool_msg(i: usize) -> NewSpool {
    NewSpool {
        source: SpoolSource::Smtp,
        mail_from: format!("c{i}@customer.example"),
        rcpt_to: vec!["support@acme.example".into()],
        client_ip: Some("127.0.0.1".into()),
        helo: Some("client".into()),
        tls: false,
        channel: None,
        raw: format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes(),
    }
}

/// Fresh spool entries, one per plan: an applied entry is never applied again.
pub(crate) async fn spool_many(s: &dyn Store, n: usize) -> Vec<SpoolId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(s.spool(spool_msg(i)).await.expect("spool").id);
    }
    ids
}

pub(crate) fn inbound(spool: SpoolId, n: usize, routing: RoutingPlan) -> InboundPlan {
    let contact = ContactRef {
        email: format!("c{n}@customer.example"),
        name: Some(format!("C {n}")),
    };
    InboundPlan {
        spool_id: spool,
        dropped: None,
        messages: vec![InboundMessage {
            channel: "support".into(),
            dedupe_key: format!("mid:m{n}@customer.example"),
            message_id: Some(format!("m{n}@customer.example")),
            in_reply_to: None,
            references: vec![],
            thread_token: None,
            plus_token: None,
            trusted_sender: false,
            thread_identity: Some(contact.email.clone()),
            name_verified: true,
            contact: contact.clone(),
            from: contact,
            to: vec!["support@acme.example".into()],
            cc: vec![],
            subject: format!("Subject {n}"),
            date: None,
            text: BodyText::Inline("text".into()),
            html: None,
            classification: Classification::Normal,
            sender_resolution: resolved("c@customer.example"),
            note: None,
            new_ticket: NewTicket {
                subject: format!("Subject {n}"),
                secret: format!("secret{n}"),
                pipeline: None,
                status: Some("new".into()),
                priority: None,
                properties: "{}".into(),
                routing,
                routed_by: None,
            },
            bounce: None,
        }],
    }
}

/// A form submission from c1@customer.example to `support`, as received.
pub(crate) fn form_spool(raw: &[u8]) -> NewSpool {
    NewSpool {
        source: SpoolSource::Form,
        mail_from: "c1@customer.example".into(),
        rcpt_to: vec![],
        client_ip: Some("192.0.2.1".into()),
        helo: None,
        tls: false,
        channel: Some("support".into()),
        raw: raw.to_vec(),
    }
}

pub(crate) fn unassigned() -> RoutingPlan {
    RoutingPlan::Unassigned {
        reason: String::new(),
    }
}

pub(crate) fn tag(n: i64, secret: Option<&str>) -> Option<ThreadToken> {
    Some(ThreadToken {
        ticket: TicketId(n),
        secret: secret.map(str::to_string),
    })
}

/// (ticket, created) of each applied plan.
pub(crate) async fn apply_all(s: &dyn Store, plans: Vec<InboundPlan>) -> Vec<(i64, bool)> {
    s.apply_inbound(plans, decide)
        .await
        .expect("apply")
        .iter()
        .map(|r| {
            let d = &r.as_ref().expect("ok").delivered[0];
            (d.ticket.0, d.created)
        })
        .collect()
}

pub(crate) fn reply_on(ticket: i64, message_id: &str) -> NewReply {
    NewReply {
        ticket: TicketId(ticket),
        channel: "support".into(),
        author: "ann".into(),
        message_id: message_id.into(),
        in_reply_to: Some("m1@customer.example".into()),
        references: vec!["m1@customer.example".into()],
        from_email: "support@acme.example".into(),
        from_name: None,
        to: vec!["c1@customer.example".into()],
        cc: vec![],
        subject: "Re: Subject 1 [#1]".into(),
        date: "Thu, 26 Nov 2026 10:00:00 +0000".into(),
        text: "on it".into(),
        html: None,
        raw: b"Subject: x\r\n\r\nx\r\n".to_vec(),
        dedupe_key: format!("mid:{message_id}"),
        replayable: false,
    }
}

/// Apply message `n` (unassigned, a new ticket unless it threads) from
/// `spool`.
pub(crate) async fn open_ticket(s: &dyn Store, spool: SpoolId, n: usize) {
    s.apply_inbound(
        vec![inbound(
            spool,
            n,
            RoutingPlan::Unassigned {
                reason: String::new(),
            },
        )],
        decide,
    )
    .await
    .expect("apply");
}

pub(crate) fn bounce_plan(
    spool: SpoolId,
    n: usize,
    candidates: &[&str],
    failed: bool,
) -> InboundPlan {
    let mut p = inbound(
        spool,
        n,
        RoutingPlan::Unassigned {
            reason: String::new(),
        },
    );
    let m = &mut p.messages[0];
    m.contact = ContactRef {
        email: "mailer-daemon@mx.customer.example".into(),
        name: None,
    };
    m.from = m.contact.clone();
    m.classification = Classification::Bounce { dsn: None };
    m.bounce = Some(BounceLink {
        candidates: candidates.iter().map(|c| c.to_string()).collect(),
        failed,
        detail: "bounced: c1@customer.example 5.1.1: 550 5.1.1 User unknown".into(),
    });
    p
}

/// The claim tests take due outbox entries with (one node, a long lease).
pub(crate) fn claim() -> OutboxClaim {
    OutboxClaim {
        node: "test-node".into(),
        lease_ms: 60_000,
    }
}
