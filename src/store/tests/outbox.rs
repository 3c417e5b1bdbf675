//! Conformance: replies and the outbox — bounces on the replies they
//! report, the thread a reply names, outbox counts, idempotency keys.

use super::*;

pub(crate) async fn bounces_join_the_outbound_messages_ticket_and_fail_it(s: &dyn Store) {
    // A fresh spool entry per plan: an applied entry is never applied again.
    let ids = spool_many(s, 4).await;
    open_ticket(s, ids[0], 1).await;
    s.queue_reply(reply_on(1, "pd.1.aa@desk.acme.example"), replay)
        .await
        .expect("queue");
    let outbox_before = s.queues().await.expect("counts").outbox;

    // Matched by the second candidate (the first names nothing of ours; an
    // inbound id never matches).
    let out = s
        .apply_inbound(
            vec![bounce_plan(
                ids[1],
                10,
                &["m1@customer.example", "pd.1.aa@desk.acme.example"],
                true,
            )],
            decide,
        )
        .await
        .expect("apply");
    let d = &out[0].as_ref().expect("ok").delivered[0];
    assert_eq!((d.ticket.0, d.created), (1, false));
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    let outbound = t
        .messages
        .iter()
        .find(|m| m.direction == "outbound")
        .expect("outbound");
    assert_eq!(outbound.delivery.as_deref(), Some("failed"));
    assert!(
        outbound
            .delivery_detail
            .as_deref()
            .is_some_and(|d| d.contains("5.1.1")),
        "{outbound:?}"
    );
    let bounce = t.messages.last().expect("bounce");
    assert_eq!(bounce.direction, "inbound");
    assert_eq!(
        bounce.classification["bounced_message_id"],
        "pd.1.aa@desk.acme.example"
    );
    assert_eq!(bounce.classification["kind"], "bounce");
    assert!(t.participants.is_empty(), "no mailer-daemon participant");
    let contacts = s.list_contacts().await.expect("contacts");
    assert!(
        contacts
            .iter()
            .all(|c| !c.email.starts_with("mailer-daemon")),
        "{contacts:?}"
    );
    // The queued reply is now failed too (never send again to a bounced
    // address); nothing new was queued in answer to the bounce.
    let outbox_after = s.queues().await.expect("counts").outbox;
    assert_eq!(outbox_before.queued + outbox_before.failed, 1);
    assert_eq!((outbox_after.queued, outbox_after.failed), (0, 1));
    assert_eq!(
        s.due_outbox(claim(), i64::MAX, 10)
            .await
            .expect("due")
            .len(),
        0
    );

    // A delayed report joins without failing anything.
    s.queue_reply(reply_on(1, "pd.1.bb@desk.acme.example"), replay)
        .await
        .expect("queue");
    s.apply_inbound(
        vec![bounce_plan(
            ids[2],
            11,
            &["pd.1.bb@desk.acme.example"],
            false,
        )],
        decide,
    )
    .await
    .expect("apply");
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    let second = t
        .messages
        .iter()
        .find(|m| m.message_id.as_deref() == Some("pd.1.bb@desk.acme.example"))
        .expect("second reply");
    assert_eq!(second.delivery.as_deref(), Some("queued"));

    // A bounce that matches nothing: stored as before, on a new ticket.
    let out = s
        .apply_inbound(
            vec![bounce_plan(ids[3], 12, &["nothing@elsewhere"], true)],
            decide,
        )
        .await
        .expect("apply");
    let d = &out[0].as_ref().expect("ok").delivered[0];
    assert!(d.created && d.ticket.0 == 2, "{d:?}");
    let t = s.ticket(TicketId(2)).await.expect("ticket");
    assert_eq!(t.head.contact.email, "mailer-daemon@mx.customer.example");
    assert!(
        t.messages[0]
            .classification
            .get("bounced_message_id")
            .is_none()
    );
}

/// The next reply's In-Reply-To/References never name one of our replies the
/// customer did not get (delivery failed, or it bounced); queued and sent
/// replies stay in the thread.
pub(crate) async fn reply_context_leaves_out_replies_whose_delivery_failed(s: &dyn Store) {
    let ids = spool_many(s, 2).await;
    open_ticket(s, ids[0], 1).await;
    let queue = async |mid: &str| {
        s.queue_reply(reply_on(1, mid), replay)
            .await
            .expect("queue")
            .outbox_id
    };
    // Refused by the relay for good.
    let refused = queue("pd.1.aa@desk.acme.example").await;
    s.record_attempt(
        refused,
        AttemptOutcome::Failed {
            error: "550 5.7.1 rejected".into(),
        },
    )
    .await
    .expect("failed");
    // The next reply answers the customer's mail, not the refused one.
    let thread = s.reply_context(TicketId(1), 10).await.expect("ctx").thread;
    assert_eq!(thread, ["m1@customer.example"]);
    // Accepted by the relay, then bounced.
    let bounced = queue("pd.1.bb@desk.acme.example").await;
    s.record_attempt(
        bounced,
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    s.apply_inbound(
        vec![bounce_plan(
            ids[1],
            10,
            &["pd.1.bb@desk.acme.example"],
            true,
        )],
        decide,
    )
    .await
    .expect("bounce");
    // Delivered, and one still waiting for the relay.
    let sent = queue("pd.1.cc@desk.acme.example").await;
    s.record_attempt(
        sent,
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    queue("pd.1.dd@desk.acme.example").await;

    let t = s.ticket(TicketId(1)).await.expect("ticket");
    let delivery = |mid: &str| {
        t.messages
            .iter()
            .find(|m| m.message_id.as_deref() == Some(mid))
            .and_then(|m| m.delivery.clone())
    };
    assert_eq!(
        delivery("pd.1.aa@desk.acme.example").as_deref(),
        Some("failed")
    );
    assert_eq!(
        delivery("pd.1.bb@desk.acme.example").as_deref(),
        Some("failed")
    );

    for recent in [1, 2, 10] {
        let thread = s
            .reply_context(TicketId(1), recent)
            .await
            .expect("ctx")
            .thread;
        // Neither the failed replies nor the bounce report (m10, from the
        // mailer-daemon, in the ticket but never in the customer's mailbox).
        assert!(
            !thread.iter().any(|m| m == "pd.1.aa@desk.acme.example"
                || m == "pd.1.bb@desk.acme.example"
                || m == "m10@customer.example"),
            "recent {recent}: {thread:?}"
        );
        // The first message, then the most recent ones: the queued reply
        // last (a reply written right after it must still name it).
        assert_eq!(
            thread.first().map(String::as_str),
            Some("m1@customer.example")
        );
        assert_eq!(
            thread.last().map(String::as_str),
            Some("pd.1.dd@desk.acme.example")
        );
        if recent >= 2 {
            assert_eq!(
                thread[thread.len() - 2..],
                ["pd.1.cc@desk.acme.example", "pd.1.dd@desk.acme.example"],
                "recent {recent}: {thread:?}"
            );
        }
    }
}

/// A reply the relay took and that bounced later stays `sent` in the
/// outbox (the relay did take it) and is counted as bounced; a reply that
/// bounced while still queued is `failed`, not bounced.
pub(crate) async fn outbox_counts_tell_the_sent_replies_that_bounced(s: &dyn Store) {
    let ids = spool_many(s, 3).await;
    open_ticket(s, ids[0], 1).await;
    let mut sent = Vec::new();
    for mid in ["pd.1.aa@desk.acme.example", "pd.1.bb@desk.acme.example"] {
        let id = s
            .queue_reply(reply_on(1, mid), replay)
            .await
            .expect("queue")
            .outbox_id;
        s.record_attempt(
            id,
            AttemptOutcome::Sent {
                reply: "250 ok".into(),
            },
        )
        .await
        .expect("sent");
        sent.push(id);
    }
    s.queue_reply(reply_on(1, "pd.1.cc@desk.acme.example"), replay)
        .await
        .expect("queue");
    let c = s.queues().await.expect("counts").outbox;
    assert_eq!((c.queued, c.sent, c.failed, c.bounced), (1, 2, 0, 0));
    s.apply_inbound(
        vec![
            bounce_plan(ids[1], 10, &["pd.1.aa@desk.acme.example"], true),
            bounce_plan(ids[2], 11, &["pd.1.cc@desk.acme.example"], true),
        ],
        decide,
    )
    .await
    .expect("bounces");
    let c = s.queues().await.expect("counts").outbox;
    assert_eq!((c.queued, c.sent, c.failed, c.bounced), (0, 2, 1, 1));
}

/// A reply request carrying an idempotency key that was used before on the
/// same ticket gets the first reply back (nothing new is queued); on another
/// ticket it is refused. Without a key, every request queues its own reply.
pub(crate) async fn an_idempotency_key_replays_its_reply_and_no_other_ticket(s: &dyn Store) {
    let ids = spool_many(s, 2).await;
    open_ticket(s, ids[0], 1).await;
    open_ticket(s, ids[1], 2).await;
    let keyed = |ticket: i64, mid: &str| NewReply {
        dedupe_key: crate::outbound::replay::dedupe_key("ann", mid, Some("retry-1")),
        replayable: true,
        ..reply_on(ticket, mid)
    };
    let first = s
        .queue_reply(keyed(1, "pd.1.first@desk.acme.example"), replay)
        .await
        .expect("queue");
    assert!(!first.replayed);
    let again = s
        .queue_reply(keyed(1, "pd.1.second@desk.acme.example"), replay)
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(
        (again.outbox_id, again.message_id.as_str()),
        (first.outbox_id, "pd.1.first@desk.acme.example")
    );
    match s
        .queue_reply(keyed(2, "pd.2.third@desk.acme.example"), replay)
        .await
    {
        Err(StoreError::Invalid(why)) => assert!(why.contains("ticket 1"), "{why}"),
        other => panic!("the key crossed tickets: {other:?}"),
    }
    s.queue_reply(reply_on(1, "pd.1.unkeyed@desk.acme.example"), replay)
        .await
        .expect("queue");
    let c = s.queues().await.expect("counts").outbox;
    assert_eq!(c.queued, 2, "the keyed reply once, the unkeyed one");
    // Each message's raw mail, by its place in the ticket: the inbound one
    // as received, a reply as composed; nothing past the end.
    let raw = |i| s.message_raw(TicketId(1), i);
    assert_eq!(raw(0).await.expect("raw"), Some(spool_msg(0).raw));
    assert_eq!(
        raw(1).await.expect("raw"),
        Some(reply_on(1, "x").raw),
        "the reply's bytes"
    );
    assert_eq!(raw(3).await.expect("raw"), None);
    assert_eq!(s.message_raw(TicketId(9), 0).await.expect("raw"), None);
}

/// A notice is queued on no ticket: it is due like a reply, with its own
/// sender, recipients and bytes, and counted; once sent it leaves the due
/// list. The store's notice key is 64 hex digits, the same on every read.
pub(crate) async fn notices_queue_without_a_ticket_and_the_key_is_made_once(s: &dyn Store) {
    let id = s
        .queue_notice(NewNotice {
            kind: "assigned".into(),
            mail_from: "desk@acme.example".into(),
            rcpt_to: vec!["ann@acme.example".into()],
            raw: b"notice".to_vec(),
        })
        .await
        .expect("notice");
    let due = s.due_outbox(claim(), i64::MAX, 10).await.expect("due");
    assert_eq!(
        due.iter()
            .map(|i| (i.id, i.mail_from.as_str(), i.rcpt_to.clone(), i.raw.clone()))
            .collect::<Vec<_>>(),
        [(
            id,
            "desk@acme.example",
            vec!["ann@acme.example".to_string()],
            b"notice".to_vec()
        )]
    );
    assert_eq!(s.queues().await.expect("queues").outbox.queued, 1);
    s.record_attempt(
        id,
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    assert!(
        s.due_outbox(claim(), i64::MAX, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(s.queues().await.expect("queues").outbox.sent, 1);
    let key = s.notice_key().await.expect("key");
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(s.notice_key().await.expect("again"), key);
}

/// `only_if_unassigned` sets the owner of a ticket that has none and
/// leaves another's owner alone (a replier takes only unassigned tickets).
pub(crate) async fn only_an_unassigned_ticket_is_taken(s: &dyn Store) {
    for (n, id) in spool_many(s, 2).await.into_iter().enumerate() {
        open_ticket(s, id, n).await;
    }
    let take = |user: &str| TicketUpdate {
        owner: Some(Some(user.to_string())),
        only_if_unassigned: true,
        ..TicketUpdate::default()
    };
    let owner = |t: TicketId| async move { s.ticket(t).await.expect("ticket").head.owner };
    s.update_ticket(TicketId(1), take("ann"))
        .await
        .expect("take");
    assert_eq!(owner(TicketId(1)).await.as_deref(), Some("ann"));
    s.update_ticket(TicketId(1), take("bob"))
        .await
        .expect("not taken");
    assert_eq!(
        owner(TicketId(1)).await.as_deref(),
        Some("ann"),
        "kept by ann"
    );
    assert_eq!(owner(TicketId(2)).await, None, "the other ticket untouched");
}
