//! Conformance: applying inbound mail — atomic and idempotent plans,
//! submissions, dedupe, threading, contacts, routing, stored bodies.

use super::*;

pub(crate) async fn inbound_apply_is_atomic_and_deduplicated(s: &dyn Store) {
    let ids = spool_many(s, 64).await;
    let plan = inbound(
        ids[1],
        1,
        RoutingPlan::Unassigned {
            reason: "test".into(),
        },
    );
    let first = s
        .apply_inbound(vec![plan.clone()], decide)
        .await
        .expect("apply");
    let d = &first[0].as_ref().expect("ok").delivered[0];
    assert!(d.created && !d.duplicate);
    // Applying the same plan again (a crash between apply and ack) stores nothing new.
    let again = s
        .apply_inbound(vec![plan.clone()], decide)
        .await
        .expect("apply");
    assert!(
        again[0].as_ref().expect("ok").delivered.is_empty(),
        "an applied spool entry is skipped"
    );
    // The same message spooled again (a retry after a lost 250) is a duplicate.
    let id2 = s.spool(spool_msg(1)).await.expect("spool").id;
    let mut retry = plan;
    retry.spool_id = id2;
    let dup = s.apply_inbound(vec![retry], decide).await.expect("apply");
    assert!(dup[0].as_ref().expect("ok").delivered[0].duplicate);
    let st = s.status().await.expect("status");
    assert_eq!((st.tickets, st.messages, st.contacts), (1, 1, 1));
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    assert_eq!(t.head.unassigned_reason.as_deref(), Some("test"));
}

pub(crate) async fn submit_commits_spool_and_ticket_together(s: &dyn Store) {
    let form = |raw: &str, m: &InboundMessage| Submission {
        spool: form_spool(raw.as_bytes()),
        messages: vec![m.clone()],
    };
    let balance = RoutingPlan::Balance {
        users: vec!["ann".into()],
        reason_if_none: "none".into(),
    };
    let mut m = inbound(SpoolId(0), 1, balance).messages.remove(0);
    m.dedupe_key = "form:abc".into();
    let raw = r#"{"form":"support","fields":{"email":"c1@customer.example"},"hidden":{"ref":"x"}}"#;
    let out = s.submit(form(raw, &m), decide).await.expect("submit");
    let d = &out.delivered[0];
    assert!(d.created && !d.duplicate);
    assert_eq!(d.owner.as_deref(), Some("ann"));
    let st = s.status().await.expect("status");
    assert_eq!(
        (
            st.tickets,
            st.messages,
            st.contacts,
            st.spool_total,
            st.spool_pending
        ),
        (1, 1, 1, 1, 0),
        "done at once: ingest never sees it"
    );
    let t = s.ticket(d.ticket).await.expect("ticket");
    assert_eq!(
        t.messages[0].submission.as_ref().expect("submission")["hidden"]["ref"],
        "x"
    );

    // A replay (same dedupe key) answers with the first ticket and stores nothing.
    let again = s.submit(form(raw, &m), decide).await.expect("replay");
    assert_eq!(
        (again.delivered[0].ticket, again.delivered[0].duplicate),
        (d.ticket, true)
    );
    let st2 = s.status().await.expect("status");
    assert_eq!((st2.tickets, st2.messages, st2.spool_total), (1, 1, 1));
}

pub(crate) async fn replies_thread_by_references_and_token(s: &dyn Store) {
    let ids = spool_many(s, 64).await;
    open_ticket(s, ids[2], 1).await;
    // A team member's (authenticated) message naming the customer's mail.
    let mut reply = inbound(ids[3], 2, unassigned());
    reply.messages[0].references = vec!["unknown@x".into(), "m1@customer.example".into()];
    reply.messages[0].trusted_sender = true;
    // Someone the customer sent our reply to: the tag carries the secret.
    let mut by_token = inbound(ids[4], 3, unassigned());
    by_token.messages[0].thread_token = tag(1, Some("secret1"));
    let mut other_channel = inbound(ids[5], 4, unassigned());
    other_channel.messages[0].channel = "sales".into();
    other_channel.messages[0].thread_token = tag(1, Some("secret1"));
    let tickets = apply_all(s, vec![reply, by_token, other_channel]).await;
    assert_eq!(
        tickets,
        [(1, false), (1, false), (2, true)],
        "a token never crosses channels"
    );
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    assert_eq!(t.messages.len(), 3);
    assert_eq!(
        t.participants.len(),
        2,
        "other contacts on the thread are participants"
    );
}

/// The attack: a stranger writes "Re: anything [#1]" (or names the
/// customer's Message-ID, or support+1@) to join ticket 1 and be Cc'd on
/// the agents' replies. Each opens a ticket of its own, noting the mention;
/// the ticket's own contact still continues it with the bare tag, and
/// anyone holding one of our replies' Message-IDs (random) continues it.
pub(crate) async fn strangers_cannot_join_a_ticket_by_guessable_handles(s: &dyn Store) {
    let ids = spool_many(s, 64).await;
    open_ticket(s, ids[0], 1).await;
    let mut bare_tag = inbound(ids[1], 20, unassigned());
    bare_tag.messages[0].thread_token = tag(1, None);
    let mut wrong_secret = inbound(ids[2], 21, unassigned());
    wrong_secret.messages[0].thread_token = tag(1, Some("guessed1"));
    let mut their_id = inbound(ids[3], 22, unassigned());
    their_id.messages[0].in_reply_to = Some("m1@customer.example".into());
    let mut plus = inbound(ids[4], 23, unassigned());
    plus.messages[0].plus_token = Some(TicketId(1));
    let tickets = apply_all(s, vec![bare_tag, wrong_secret, their_id, plus]).await;
    assert_eq!(tickets, [(2, true), (3, true), (4, true), (5, true)]);
    let t1 = s.ticket(TicketId(1)).await.expect("ticket");
    assert!(t1.participants.is_empty(), "{:?}", t1.participants);
    assert_eq!(t1.messages.len(), 1);
    for n in 2..=5 {
        let t = s.ticket(TicketId(n)).await.expect("ticket");
        let note = t.messages[0].thread_note.clone().unwrap_or_default();
        assert!(note.contains("mentions #1"), "ticket {n}: {note:?}");
    }
    // The contact themself, with the bare tag; another customer of theirs
    // is not let in by the contact's tag alone.
    let mut own = inbound(ids[5], 1, unassigned());
    own.messages[0].dedupe_key = "mid:own-followup@customer.example".into();
    own.messages[0].thread_token = tag(1, None);
    // A reply to our reply (its Message-ID is random): whoever got it.
    s.queue_reply(
        reply_on(1, "pd.1.9f8e7d6c5b4a39281706f5e4@desk.acme.example"),
        replay,
    )
    .await
    .expect("reply");
    let mut to_ours = inbound(ids[6], 24, unassigned());
    to_ours.messages[0].in_reply_to =
        Some("pd.1.9f8e7d6c5b4a39281706f5e4@desk.acme.example".into());
    let tickets = apply_all(s, vec![own, to_ours]).await;
    assert_eq!(tickets, [(1, false), (1, false)]);
    let t1 = s.ticket(TicketId(1)).await.expect("ticket");
    let people: Vec<&str> = t1.participants.iter().map(|p| p.email.as_str()).collect();
    assert_eq!(people, ["c24@customer.example"]);
    // Once a participant, the bare tag is theirs to use too.
    let mut again = inbound(ids[7], 24, unassigned());
    again.messages[0].dedupe_key = "mid:again@customer.example".into();
    again.messages[0].thread_token = tag(1, None);
    assert_eq!(apply_all(s, vec![again]).await, [(1, false)]);
}

/// A colleague the customer copied (Cc) answers the customer's mail: they
/// continue the ticket (and become a participant); someone not copied does
/// not.
pub(crate) async fn whom_the_contact_copied_may_continue_the_thread(s: &dyn Store) {
    let ids = spool_many(s, 8).await;
    let mut first = inbound(ids[0], 1, unassigned());
    first.messages[0].cc = vec!["c30@customer.example".into()];
    s.apply_inbound(vec![first], decide).await.expect("apply");
    let answer = |spool, n| {
        let mut p = inbound(spool, n, unassigned());
        p.messages[0].in_reply_to = Some("m1@customer.example".into());
        p
    };
    let tickets = apply_all(s, vec![answer(ids[1], 30), answer(ids[2], 31)]).await;
    assert_eq!(tickets, [(1, false), (2, true)]);
    let t1 = s.ticket(TicketId(1)).await.expect("ticket");
    let people: Vec<&str> = t1.participants.iter().map(|p| p.email.as_str()).collect();
    assert_eq!(people, ["c30@customer.example"]);
}

/// A stranger who sends first with the Message-ID the customer's mail will
/// carry must not make the real message a "duplicate" that is dropped.
pub(crate) async fn a_reused_message_id_from_another_sender_is_not_a_duplicate(s: &dyn Store) {
    let ids = spool_many(s, 8).await;
    let mut forged = inbound(ids[0], 66, unassigned());
    forged.messages[0].dedupe_key = "mid:m1@customer.example".into();
    forged.messages[0].message_id = Some("m1@customer.example".into());
    let real = inbound(ids[1], 1, unassigned());
    // The real sender's retry is still a duplicate.
    let retry = inbound(ids[2], 1, unassigned());
    let out = s
        .apply_inbound(vec![forged, real, retry], decide)
        .await
        .expect("apply");
    let d: Vec<(i64, bool, bool)> = out
        .iter()
        .map(|r| {
            let d = &r.as_ref().expect("ok").delivered[0];
            (d.ticket.0, d.created, d.duplicate)
        })
        .collect();
    assert_eq!(d, [(1, true, false), (2, true, false), (2, false, true)]);
    let t2 = s.ticket(TicketId(2)).await.expect("ticket");
    assert_eq!(t2.head.contact.email, "c1@customer.example");
    assert_eq!(t2.messages.len(), 1);
    // The customer's follow-up to their own message finds their ticket, not
    // the forger's (which used the Message-ID first).
    let mut follow = inbound(ids[3], 1, unassigned());
    follow.messages[0].dedupe_key = "mid:m1-followup@customer.example".into();
    follow.messages[0].in_reply_to = Some("m1@customer.example".into());
    assert_eq!(apply_all(s, vec![follow]).await, [(2, false)]);
}

/// Plans applied together (one ingest round) see what the plans before
/// them wrote, as if applied one by one: a message twice in one round is
/// one ticket, a contact created by one plan is renamed by the next, and a
/// spool entry twice in one round is applied once. (A backend that reads
/// ahead for the whole round must notice what the round wrote since.)
pub(crate) async fn plans_applied_together_see_what_the_earlier_ones_wrote(s: &dyn Store) {
    let ids = spool_many(s, 8).await;
    let quiet = |spool, n| {
        let mut p = inbound(spool, n, unassigned());
        p.messages[0].contact.name = Some("Unproven Name".into());
        p.messages[0].name_verified = false;
        p
    };
    let mut renaming = inbound(ids[1], 1, unassigned());
    renaming.messages[0].dedupe_key = "mid:other@customer.example".into();
    renaming.messages[0].contact.name = Some("Carol Cooper".into());
    // The same spool entry as the first plan, carrying another message: a
    // second copy of an entry writes nothing, whatever it carries.
    let mut again = inbound(ids[0], 2, unassigned());
    again.messages[0].dedupe_key = "mid:again@customer.example".into();
    let out = s
        .apply_inbound(
            vec![quiet(ids[0], 1), renaming, quiet(ids[2], 1), again],
            decide,
        )
        .await
        .expect("apply");
    let d: Vec<Vec<(i64, bool, bool)>> = out
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("ok")
                .delivered
                .iter()
                .map(|d| (d.ticket.0, d.created, d.duplicate))
                .collect()
        })
        .collect();
    assert_eq!(
        d,
        [
            vec![(1, true, false)],
            vec![(2, true, false)],
            vec![(1, false, true)],
            vec![],
        ]
    );
    let st = s.status().await.expect("status");
    assert_eq!((st.tickets, st.messages, st.contacts), (2, 2, 1));
    let names: Vec<(String, Option<String>)> = s
        .list_contacts()
        .await
        .expect("contacts")
        .into_iter()
        .map(|c| (c.email, c.name))
        .collect();
    assert_eq!(
        names,
        [(
            "c1@customer.example".to_string(),
            Some("Carol Cooper".to_string())
        )]
    );
}

/// A forged mail must not rename a customer; mail proven to be theirs may.
pub(crate) async fn only_verified_mail_renames_a_contact(s: &dyn Store) {
    let ids = spool_many(s, 8).await;
    open_ticket(s, ids[0], 1).await;
    let named = |spool, name: &str, verified: bool, key: &str| {
        let mut p = inbound(spool, 1, unassigned());
        p.messages[0].contact.name = Some(name.into());
        p.messages[0].name_verified = verified;
        p.messages[0].dedupe_key = key.into();
        p
    };
    s.apply_inbound(
        vec![named(ids[1], "Mallory Was Here", false, "mid:a@x")],
        decide,
    )
    .await
    .expect("apply");
    let name = |list: Vec<ContactView>| {
        list.into_iter()
            .find(|c| c.email == "c1@customer.example")
            .and_then(|c| c.name)
    };
    assert_eq!(
        name(s.list_contacts().await.expect("contacts")).as_deref(),
        Some("C 1")
    );
    s.apply_inbound(vec![named(ids[2], "Carol Cooper", true, "mid:b@x")], decide)
        .await
        .expect("apply");
    assert_eq!(
        name(s.list_contacts().await.expect("contacts")).as_deref(),
        Some("Carol Cooper")
    );
}

pub(crate) async fn balancing_spreads_by_open_tickets_then_least_recent(s: &dyn Store) {
    let users = |v: &[&str]| RoutingPlan::Balance {
        users: v.iter().map(|u| u.to_string()).collect(),
        reason_if_none: "none".into(),
    };
    let ids = spool_many(s, 64).await;
    let plans: Vec<InboundPlan> = (0..30)
        .map(|n| inbound(ids[n], n, users(&["ann", "bob", "cy"])))
        .collect();
    s.apply_inbound(plans, decide).await.expect("apply");
    let count = |list: &[TicketSummary], u: &str| {
        list.iter()
            .filter(|t| t.head.owner.as_deref() == Some(u))
            .count()
    };
    let all = s.list_tickets(TicketFilter::default()).await.expect("list");
    assert_eq!(
        (count(&all, "ann"), count(&all, "bob"), count(&all, "cy")),
        (10, 10, 10)
    );
    // cy goes away: the next 10 split between ann and bob.
    let plans: Vec<InboundPlan> = (30..40)
        .map(|n| inbound(ids[n], n, users(&["ann", "bob"])))
        .collect();
    s.apply_inbound(plans, decide).await.expect("apply");
    let all = s.list_tickets(TicketFilter::default()).await.expect("list");
    assert_eq!(
        (count(&all, "ann"), count(&all, "bob"), count(&all, "cy")),
        (15, 15, 10)
    );
    // Nobody eligible: unassigned, with the reason on the ticket.
    s.apply_inbound(vec![inbound(ids[40], 40, users(&[]))], decide)
        .await
        .expect("apply");
    let t = s.ticket(TicketId(41)).await.expect("ticket");
    assert_eq!(
        (t.head.owner, t.head.unassigned_reason.as_deref()),
        (None, Some("none"))
    );
}

/// A contact filter finds the contact's tickets however the address is
/// written (contacts are stored trimmed and lower-case). Before, the CLI's
/// `tickets list --contact Carol@…` found nothing while the API, which
/// normalised on its own, found them.
pub(crate) async fn the_contact_filter_ignores_case_and_spaces(s: &dyn Store) {
    let ids = spool_many(s, 2).await;
    open_ticket(s, ids[0], 1).await;
    open_ticket(s, ids[1], 2).await;
    for asked in ["c1@customer.example", " C1@Customer.EXAMPLE "] {
        let found = s
            .list_tickets(TicketFilter {
                contact: Some(asked.into()),
                ..TicketFilter::default()
            })
            .await
            .expect("list");
        let numbers: Vec<i64> = found.iter().map(|t| t.head.number.0).collect();
        assert_eq!(numbers, [1], "{asked:?}");
    }
}

pub(crate) async fn contact_owner_routing(s: &dyn Store) {
    let ids = spool_many(s, 64).await;
    open_ticket(s, ids[9], 1).await;
    s.set_contact_owner("c1@customer.example".into(), Some("bob".into()))
        .await
        .expect("owner");
    let mut eligible = inbound(
        ids[10],
        1,
        RoutingPlan::ContactOwner {
            eligible: vec!["bob".into()],
        },
    );
    eligible.messages[0].dedupe_key = "mid:x1".into();
    eligible.messages[0].message_id = None;
    let mut away = inbound(
        ids[11],
        1,
        RoutingPlan::ContactOwner {
            eligible: vec!["ann".into()],
        },
    );
    away.messages[0].dedupe_key = "mid:x2".into();
    away.messages[0].message_id = None;
    let mut no_owner = inbound(
        ids[12],
        2,
        RoutingPlan::ContactOwner {
            eligible: vec!["bob".into()],
        },
    );
    no_owner.messages[0].dedupe_key = "mid:x3".into();
    let out = s
        .apply_inbound(vec![eligible, away, no_owner], decide)
        .await
        .expect("apply");
    let owners: Vec<Option<String>> = out
        .into_iter()
        .map(|r| r.expect("ok").delivered[0].owner.clone())
        .collect();
    assert_eq!(owners, [Some("bob".to_string()), None, None]);
    let t = s.ticket(TicketId(3)).await.expect("ticket");
    assert!(
        t.head
            .unassigned_reason
            .as_deref()
            .unwrap_or("")
            .contains("not eligible"),
        "{:?}",
        t.head.unassigned_reason
    );
}

/// A body stored by reference into the raw message (`BodyText::RawFrom`)
/// reads back whole, as does one stored inline. Answers the offset it was
/// stored at.
pub(crate) async fn raw_tail_text_reads_back_whole(s: &dyn Store) -> usize {
    let body = "Hello,\r\nthe invoice lists one licence twice — could you check?\r\n";
    let mut m = spool_msg(7);
    m.raw = format!("From: c7@customer.example\r\nSubject: 7\r\n\r\n{body}").into_bytes();
    let raw = m.raw.clone();
    let id = s.spool(m).await.expect("spool").id;
    let mut by_ref = inbound(id, 7, RoutingPlan::Unassigned { reason: "t".into() });
    by_ref.messages[0].text = BodyText::from_raw(&raw, body);
    assert_eq!(
        by_ref.messages[0].text,
        BodyText::RawFrom(raw.len() - body.len())
    );
    // Text that is not in the raw message verbatim (decoded, or a forward's
    // inner part) keeps its own copy.
    let id2 = s.spool(spool_msg(8)).await.expect("spool").id;
    let mut inline = inbound(id2, 8, RoutingPlan::Unassigned { reason: "t".into() });
    inline.messages[0].text = BodyText::from_raw(b"Subject: 8\r\n\r\nQm9keQ==\r\n", "Body");
    assert_eq!(inline.messages[0].text, BodyText::Inline("Body".into()));
    s.apply_inbound(vec![by_ref, inline], decide)
        .await
        .expect("apply");

    let t = s.ticket(TicketId(1)).await.expect("ticket");
    assert_eq!(t.messages[0].text.as_deref(), Some(body));
    let t = s.ticket(TicketId(2)).await.expect("ticket");
    assert_eq!(t.messages[0].text.as_deref(), Some("Body"));
    raw.len() - body.len()
}

/// What chose a new ticket's owner (`routed_by`, a rule or the channel's
/// default) is kept on the ticket and read back with it; a ticket opened
/// without one reads back none.
pub(crate) async fn a_ticket_keeps_what_routed_it(s: &dyn Store) {
    let ids = spool_many(s, 2).await;
    let mut plan = inbound(
        ids[0],
        1,
        RoutingPlan::Balance {
            users: vec!["ann".into()],
            reason_if_none: "none".into(),
        },
    );
    let by = "rule \"german\" (language de) → skills de";
    plan.messages[0].new_ticket.routed_by = Some(by.into());
    s.apply_inbound(vec![plan], decide).await.expect("apply");
    open_ticket(s, ids[1], 2).await;
    let routed = s.ticket(TicketId(1)).await.expect("ticket 1");
    assert_eq!(routed.head.routed_by.as_deref(), Some(by));
    assert_eq!(routed.head.owner.as_deref(), Some("ann"));
    let listed = s.list_tickets(TicketFilter::default()).await.expect("list");
    let of = |n: i64| {
        listed
            .iter()
            .find(|t| t.head.number == TicketId(n))
            .map(|t| t.head.routed_by.clone())
    };
    assert_eq!(of(1), Some(Some(by.to_string())));
    assert_eq!(of(2), Some(None));
}
