//! Store tests: group commit, atomic ingest, dedupe, threading and balancing.

use super::*;

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(&dir.path().join("db/test.sqlite"), 5000, 256).expect("open");
    (dir, Arc::new(s))
}

fn spool_msg(i: usize) -> NewSpool {
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
async fn spool_many(s: &SqliteStore, n: usize) -> Vec<SpoolId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(s.spool(spool_msg(i)).await.expect("spool").id);
    }
    ids
}

fn inbound(spool: SpoolId, n: usize, routing: RoutingPlan) -> InboundPlan {
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
            classification: "{}".into(),
            sender_resolution: "{}".into(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spool_writes_share_commits() {
    let (_dir, s) = store();
    // Hold the writer busy so that the burst queues up behind it, as it does
    // while the writer waits for an fsync under load.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let blocker = {
        let s = s.clone();
        tokio::spawn(async move {
            s.write(move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
        })
    };
    started_rx.await.expect("writer runs the blocker");
    let before = s.commit_count();
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.spool(spool_msg(i)).await }));
    }
    let queued = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while s.queued_writes() < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    queued
        .await
        .expect("the burst queued behind the busy writer");
    release_tx.send(()).expect("release");
    blocker.await.expect("join").expect("blocker");
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join").expect("spooled"));
    }
    let mut ids: Vec<SpoolId> = ids.into_iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every write got its own id");
    let commits = s.commit_count() - before;
    assert!(commits <= 3, "{n} queued writes took {commits} commits");
    let pending = s.pending_spool(SpoolId(0), 1000).await.expect("pending");
    assert_eq!(pending.len(), n);
}

#[tokio::test]
async fn failing_job_does_not_undo_its_batch_neighbours() {
    let (_dir, s) = store();
    let a = s.spool(spool_msg(1));
    let bad = s.write(|c| {
        c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
        Ok(())
    });
    let b = s.spool(spool_msg(2));
    let (a, bad, b) = tokio::join!(a, bad, b);
    assert!(a.is_ok() && b.is_ok());
    assert!(bad.is_err());
    assert_eq!(s.status().await.expect("status").spool_total, 2);
}

/// A job of `run_batch`'s batch, and where its answer arrives.
fn job<F>(f: F) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), StoreError>>)
where
    F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Job {
        f: Some(f),
        result: None,
        reply,
    };
    (Box::new(job), rx)
}

/// Some errors (an I/O error, a full disk while spilling or committing) make
/// SQLite roll the whole group transaction back, not only the statement. The
/// jobs after that one must not run: outside a transaction each would commit
/// on its own, and still be answered as failed with the rest.
#[test]
fn jobs_after_a_transaction_sqlite_rolled_back_do_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = open_and_migrate(&dir.path().join("t.sqlite"), 1000).expect("open");
    conn.execute_batch("CREATE TABLE t (x INTEGER)")
        .expect("table");
    let insert = |x: i64| {
        move |c: &Connection| -> Result<(), StoreError> {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(())
        }
    };
    let (a, a_rx) = job(insert(1));
    // What SQLite does on such an error: the transaction is gone.
    let (b, b_rx) = job(|c: &Connection| {
        c.execute_batch("ROLLBACK")?;
        Err(StoreError::Full)
    });
    let (c, c_rx) = job(insert(3));
    let mut batch = vec![a, b, c];
    let outcome = run_batch(&mut conn, &mut batch);
    assert!(outcome.is_err(), "the group must fail");
    for job in batch.drain(..) {
        job.finish(outcome.as_ref().map(|_| ()).map_err(clone_err));
    }
    for (name, rx) in [("first", a_rx), ("failing", b_rx), ("later", c_rx)] {
        let r = rx.blocking_recv().expect("answered");
        assert!(r.is_err(), "the {name} job is answered as failed: {r:?}");
    }
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 0, "nothing of a failed group is stored");
    assert!(conn.is_autocommit(), "no transaction is left open");
}

#[tokio::test]
async fn inbound_apply_is_atomic_and_deduplicated() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 64).await;
    let plan = inbound(
        ids[1],
        1,
        RoutingPlan::Unassigned {
            reason: "test".into(),
        },
    );
    let first = s.apply_inbound(vec![plan.clone()]).await.expect("apply");
    let d = &first[0].as_ref().expect("ok").delivered[0];
    assert!(d.created && !d.duplicate);
    // Applying the same plan again (a crash between apply and ack) stores nothing new.
    let again = s.apply_inbound(vec![plan.clone()]).await.expect("apply");
    assert!(
        again[0].as_ref().expect("ok").delivered.is_empty(),
        "an applied spool entry is skipped"
    );
    // The same message spooled again (a retry after a lost 250) is a duplicate.
    let id2 = s.spool(spool_msg(1)).await.expect("spool").id;
    let mut retry = plan;
    retry.spool_id = id2;
    let dup = s.apply_inbound(vec![retry]).await.expect("apply");
    assert!(dup[0].as_ref().expect("ok").delivered[0].duplicate);
    let st = s.status().await.expect("status");
    assert_eq!((st.tickets, st.messages, st.contacts), (1, 1, 1));
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    assert_eq!(t.head.unassigned_reason.as_deref(), Some("test"));
}

/// A form submission from c1@customer.example to `support`, as received.
fn form_spool(raw: &[u8]) -> NewSpool {
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

#[tokio::test]
async fn submit_commits_spool_and_ticket_together() {
    let (_dir, s) = store();
    let form = |raw: &str| form_spool(raw.as_bytes());
    let balance = RoutingPlan::Balance {
        users: vec!["ann".into()],
        reason_if_none: "none".into(),
    };
    let mut m = inbound(SpoolId(0), 1, balance).messages.remove(0);
    m.dedupe_key = "form:abc".into();
    let raw = r#"{"form":"support","fields":{"email":"c1@customer.example"},"hidden":{"ref":"x"}}"#;
    let out = s.submit(form(raw), vec![m.clone()]).await.expect("submit");
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
    let again = s.submit(form(raw), vec![m]).await.expect("replay");
    assert_eq!(
        (again.delivered[0].ticket, again.delivered[0].duplicate),
        (d.ticket, true)
    );
    let st2 = s.status().await.expect("status");
    assert_eq!((st2.tickets, st2.messages, st2.spool_total), (1, 1, 1));
}

/// A submission whose apply fails half-way (here: its message row cannot be
/// written) stores nothing — no spool row, contact or ticket — and the same
/// submission succeeds once the cause is gone.
#[tokio::test]
async fn a_submission_that_fails_half_way_stores_nothing() {
    let (dir, s) = store();
    let form = form_spool(br#"{"form":"support","fields":{"email":"c1@customer.example"}}"#);
    let unassigned = RoutingPlan::Unassigned {
        reason: "test".into(),
    };
    let mut m = inbound(SpoolId(0), 1, unassigned).messages.remove(0);
    m.dedupe_key = "form:half-way".into();
    // Fault injection from outside the store: the message insert (after the
    // spool row, the contact and the ticket) aborts.
    let side = Connection::open(dir.path().join("db/test.sqlite")).expect("open");
    side.execute_batch(
        "CREATE TRIGGER injected BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .expect("trigger");
    let err = s
        .submit(form.clone(), vec![m.clone()])
        .await
        .expect_err("the insert fails");
    assert!(err.to_string().contains("injected"), "{err}");
    let st = s.status().await.expect("status");
    assert_eq!(
        (st.spool_total, st.contacts, st.tickets, st.messages),
        (0, 0, 0, 0),
        "nothing of the failed submission is stored"
    );
    side.execute_batch("DROP TRIGGER injected").expect("drop");
    let out = s.submit(form, vec![m]).await.expect("submit");
    assert_eq!(out.delivered[0].ticket, TicketId(1));
    assert!(!out.delivered[0].duplicate);
    let st = s.status().await.expect("status");
    assert_eq!(
        (st.spool_total, st.contacts, st.tickets, st.messages),
        (1, 1, 1, 1)
    );
}

fn unassigned() -> RoutingPlan {
    RoutingPlan::Unassigned {
        reason: String::new(),
    }
}

fn tag(n: i64, secret: Option<&str>) -> Option<ThreadToken> {
    Some(ThreadToken {
        ticket: TicketId(n),
        secret: secret.map(str::to_string),
    })
}

/// (ticket, created) of each applied plan.
async fn apply_all(s: &SqliteStore, plans: Vec<InboundPlan>) -> Vec<(i64, bool)> {
    s.apply_inbound(plans)
        .await
        .expect("apply")
        .iter()
        .map(|r| {
            let d = &r.as_ref().expect("ok").delivered[0];
            (d.ticket.0, d.created)
        })
        .collect()
}

#[tokio::test]
async fn replies_thread_by_references_and_token() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 64).await;
    open_ticket(&s, ids[2], 1).await;
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
    let tickets = apply_all(&s, vec![reply, by_token, other_channel]).await;
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
#[tokio::test]
async fn strangers_cannot_join_a_ticket_by_guessable_handles() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 64).await;
    open_ticket(&s, ids[0], 1).await;
    let mut bare_tag = inbound(ids[1], 20, unassigned());
    bare_tag.messages[0].thread_token = tag(1, None);
    let mut wrong_secret = inbound(ids[2], 21, unassigned());
    wrong_secret.messages[0].thread_token = tag(1, Some("guessed1"));
    let mut their_id = inbound(ids[3], 22, unassigned());
    their_id.messages[0].in_reply_to = Some("m1@customer.example".into());
    let mut plus = inbound(ids[4], 23, unassigned());
    plus.messages[0].plus_token = Some(TicketId(1));
    let tickets = apply_all(&s, vec![bare_tag, wrong_secret, their_id, plus]).await;
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
    s.queue_reply(reply_on(
        1,
        "pd.1.9f8e7d6c5b4a39281706f5e4@desk.acme.example",
    ))
    .await
    .expect("reply");
    let mut to_ours = inbound(ids[6], 24, unassigned());
    to_ours.messages[0].in_reply_to =
        Some("pd.1.9f8e7d6c5b4a39281706f5e4@desk.acme.example".into());
    let tickets = apply_all(&s, vec![own, to_ours]).await;
    assert_eq!(tickets, [(1, false), (1, false)]);
    let t1 = s.ticket(TicketId(1)).await.expect("ticket");
    let people: Vec<&str> = t1.participants.iter().map(|p| p.email.as_str()).collect();
    assert_eq!(people, ["c24@customer.example"]);
    // Once a participant, the bare tag is theirs to use too.
    let mut again = inbound(ids[7], 24, unassigned());
    again.messages[0].dedupe_key = "mid:again@customer.example".into();
    again.messages[0].thread_token = tag(1, None);
    assert_eq!(apply_all(&s, vec![again]).await, [(1, false)]);
}

/// A colleague the customer copied (Cc) answers the customer's mail: they
/// continue the ticket (and become a participant); someone not copied does
/// not.
#[tokio::test]
async fn whom_the_contact_copied_may_continue_the_thread() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 8).await;
    let mut first = inbound(ids[0], 1, unassigned());
    first.messages[0].cc = vec!["c30@customer.example".into()];
    s.apply_inbound(vec![first]).await.expect("apply");
    let answer = |spool, n| {
        let mut p = inbound(spool, n, unassigned());
        p.messages[0].in_reply_to = Some("m1@customer.example".into());
        p
    };
    let tickets = apply_all(&s, vec![answer(ids[1], 30), answer(ids[2], 31)]).await;
    assert_eq!(tickets, [(1, false), (2, true)]);
    let t1 = s.ticket(TicketId(1)).await.expect("ticket");
    let people: Vec<&str> = t1.participants.iter().map(|p| p.email.as_str()).collect();
    assert_eq!(people, ["c30@customer.example"]);
}

/// A stranger who sends first with the Message-ID the customer's mail will
/// carry must not make the real message a "duplicate" that is dropped.
#[tokio::test]
async fn a_reused_message_id_from_another_sender_is_not_a_duplicate() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 8).await;
    let mut forged = inbound(ids[0], 66, unassigned());
    forged.messages[0].dedupe_key = "mid:m1@customer.example".into();
    forged.messages[0].message_id = Some("m1@customer.example".into());
    let real = inbound(ids[1], 1, unassigned());
    // The real sender's retry is still a duplicate.
    let retry = inbound(ids[2], 1, unassigned());
    let out = s
        .apply_inbound(vec![forged, real, retry])
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
    assert_eq!(apply_all(&s, vec![follow]).await, [(2, false)]);
}

/// A forged mail must not rename a customer; mail proven to be theirs may.
#[tokio::test]
async fn only_verified_mail_renames_a_contact() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 8).await;
    open_ticket(&s, ids[0], 1).await;
    let named = |spool, name: &str, verified: bool, key: &str| {
        let mut p = inbound(spool, 1, unassigned());
        p.messages[0].contact.name = Some(name.into());
        p.messages[0].name_verified = verified;
        p.messages[0].dedupe_key = key.into();
        p
    };
    s.apply_inbound(vec![named(ids[1], "Mallory Was Here", false, "mid:a@x")])
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
    s.apply_inbound(vec![named(ids[2], "Carol Cooper", true, "mid:b@x")])
        .await
        .expect("apply");
    assert_eq!(
        name(s.list_contacts().await.expect("contacts")).as_deref(),
        Some("Carol Cooper")
    );
}

#[tokio::test]
async fn balancing_spreads_by_open_tickets_then_least_recent() {
    let (_dir, s) = store();
    let users = |v: &[&str]| RoutingPlan::Balance {
        users: v.iter().map(|u| u.to_string()).collect(),
        reason_if_none: "none".into(),
    };
    let ids = spool_many(&s, 64).await;
    let plans: Vec<InboundPlan> = (0..30)
        .map(|n| inbound(ids[n], n, users(&["ann", "bob", "cy"])))
        .collect();
    s.apply_inbound(plans).await.expect("apply");
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
    s.apply_inbound(plans).await.expect("apply");
    let all = s.list_tickets(TicketFilter::default()).await.expect("list");
    assert_eq!(
        (count(&all, "ann"), count(&all, "bob"), count(&all, "cy")),
        (15, 15, 10)
    );
    // Nobody eligible: unassigned, with the reason on the ticket.
    s.apply_inbound(vec![inbound(ids[40], 40, users(&[]))])
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
#[tokio::test]
async fn the_contact_filter_ignores_case_and_spaces() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 2).await;
    open_ticket(&s, ids[0], 1).await;
    open_ticket(&s, ids[1], 2).await;
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

#[tokio::test]
async fn contact_owner_routing() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 64).await;
    open_ticket(&s, ids[9], 1).await;
    s.write(|c| {
        c.execute(
            "UPDATE contacts SET owner = 'bob' WHERE email = 'c1@customer.example'",
            [],
        )?;
        Ok(())
    })
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
        .apply_inbound(vec![eligible, away, no_owner])
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

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.sqlite");
    drop(SqliteStore::open(&path, 1000, 8).expect("open"));
    let c = Connection::open(&path).expect("open raw");
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    match SqliteStore::open(&path, 1000, 8) {
        Err(StoreError::Schema(m)) => assert!(m.contains("99"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

fn reply_on(ticket: i64, message_id: &str) -> NewReply {
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
        idempotency_key: None,
    }
}

/// Apply message `n` (unassigned, a new ticket unless it threads) from
/// `spool`.
async fn open_ticket(s: &SqliteStore, spool: SpoolId, n: usize) {
    s.apply_inbound(vec![inbound(
        spool,
        n,
        RoutingPlan::Unassigned {
            reason: String::new(),
        },
    )])
    .await
    .expect("apply");
}

fn bounce_plan(spool: SpoolId, n: usize, candidates: &[&str], failed: bool) -> InboundPlan {
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
    m.classification = r#"{"kind":"bounce","dsn":null}"#.into();
    m.bounce = Some(BounceLink {
        candidates: candidates.iter().map(|c| c.to_string()).collect(),
        failed,
        detail: "bounced: c1@customer.example 5.1.1: 550 5.1.1 User unknown".into(),
    });
    p
}

#[tokio::test]
async fn bounces_join_the_outbound_messages_ticket_and_fail_it() {
    let (_dir, s) = store();
    // A fresh spool entry per plan: an applied entry is never applied again.
    let ids = spool_many(&s, 4).await;
    open_ticket(&s, ids[0], 1).await;
    s.queue_reply(reply_on(1, "pd.1.aa@desk.acme.example"))
        .await
        .expect("queue");
    let outbox_before = s.queues().await.expect("counts").outbox;

    // Matched by the second candidate (the first names nothing of ours; an
    // inbound id never matches).
    let out = s
        .apply_inbound(vec![bounce_plan(
            ids[1],
            10,
            &["m1@customer.example", "pd.1.aa@desk.acme.example"],
            true,
        )])
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
    assert_eq!(s.due_outbox(i64::MAX, 10).await.expect("due").len(), 0);

    // A delayed report joins without failing anything.
    s.queue_reply(reply_on(1, "pd.1.bb@desk.acme.example"))
        .await
        .expect("queue");
    s.apply_inbound(vec![bounce_plan(
        ids[2],
        11,
        &["pd.1.bb@desk.acme.example"],
        false,
    )])
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
        .apply_inbound(vec![bounce_plan(ids[3], 12, &["nothing@elsewhere"], true)])
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
#[tokio::test]
async fn reply_context_leaves_out_replies_whose_delivery_failed() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 2).await;
    open_ticket(&s, ids[0], 1).await;
    let queue = async |mid: &str| {
        s.queue_reply(reply_on(1, mid))
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
    s.apply_inbound(vec![bounce_plan(
        ids[1],
        10,
        &["pd.1.bb@desk.acme.example"],
        true,
    )])
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
#[tokio::test]
async fn outbox_counts_tell_the_sent_replies_that_bounced() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 3).await;
    open_ticket(&s, ids[0], 1).await;
    let mut sent = Vec::new();
    for mid in ["pd.1.aa@desk.acme.example", "pd.1.bb@desk.acme.example"] {
        let id = s
            .queue_reply(reply_on(1, mid))
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
    s.queue_reply(reply_on(1, "pd.1.cc@desk.acme.example"))
        .await
        .expect("queue");
    let c = s.queues().await.expect("counts").outbox;
    assert_eq!((c.queued, c.sent, c.failed, c.bounced), (1, 2, 0, 0));
    s.apply_inbound(vec![
        bounce_plan(ids[1], 10, &["pd.1.aa@desk.acme.example"], true),
        bounce_plan(ids[2], 11, &["pd.1.cc@desk.acme.example"], true),
    ])
    .await
    .expect("bounces");
    let c = s.queues().await.expect("counts").outbox;
    assert_eq!((c.queued, c.sent, c.failed, c.bounced), (0, 2, 1, 1));
}

/// The outbox counted the slow way: what `outbox_tally` must always equal.
fn counted(c: &Connection) -> rusqlite::Result<OutboxCounts> {
    let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(OutboxCounts {
        queued: n("SELECT COUNT(*) FROM outbox WHERE state = 'queued'")?,
        sent: n("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")?,
        failed: n("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")?,
        bounced: n(
            "SELECT COUNT(*) FROM outbox o JOIN messages m ON m.id = o.message_id
                    WHERE o.state = 'sent' AND m.delivery = 'failed'",
        )?,
    })
}

fn tuple(c: &OutboxCounts) -> (i64, i64, i64, i64) {
    (c.queued, c.sent, c.failed, c.bounced)
}

/// Every way an outbox row or its message's delivery can change — through
/// the store and behind its back — keeps the tally equal to a full count.
#[tokio::test]
async fn the_outbox_tally_follows_every_change_a_full_count_sees() {
    let (_dir, s) = store();
    let ids = spool_many(&s, 3).await;
    open_ticket(&s, ids[0], 1).await;
    let check = |step: &'static str| {
        let s = s.clone();
        async move {
            let tally = s.queues().await.expect("queues").outbox;
            let full = s.read(|c| Ok(counted(c)?)).await.expect("count");
            assert_eq!(tuple(&tally), tuple(&full), "after {step}");
            tuple(&tally)
        }
    };
    assert_eq!(check("nothing").await, (0, 0, 0, 0));
    let mut rows = Vec::new();
    for mid in ["a", "b", "c", "d"] {
        let mid = format!("pd.1.{mid}@desk.acme.example");
        rows.push(
            s.queue_reply(reply_on(1, &mid))
                .await
                .expect("queue")
                .outbox_id,
        );
    }
    assert_eq!(check("four queued").await, (4, 0, 0, 0));
    let sent = AttemptOutcome::Sent {
        reply: "250 ok".into(),
    };
    for id in &rows[..3] {
        s.record_attempt(*id, sent.clone()).await.expect("sent");
    }
    s.record_attempt(
        rows[3],
        AttemptOutcome::Deferred {
            error: "451 later".into(),
            next_attempt_at: 0,
        },
    )
    .await
    .expect("deferred");
    assert_eq!(check("three sent, one deferred").await, (1, 3, 0, 0));
    s.record_attempt(
        rows[3],
        AttemptOutcome::Failed {
            error: "550 no".into(),
        },
    )
    .await
    .expect("failed");
    assert_eq!(check("one failed").await, (0, 3, 1, 0));
    s.apply_inbound(vec![
        bounce_plan(ids[1], 10, &["pd.1.a@desk.acme.example"], true),
        // A second report for the same reply counts it once.
        bounce_plan(ids[2], 11, &["pd.1.a@desk.acme.example"], true),
    ])
    .await
    .expect("bounces");
    assert_eq!(check("a sent reply bounced twice").await, (0, 3, 1, 1));
    // Behind the store's back (an operator's SQL, a later code path): a
    // delivery set right again, a sent row deleted, a row inserted as sent
    // for a message that failed, a row's state rewritten.
    s.write(|c| {
        c.execute_batch(
            "UPDATE messages SET delivery = 'sent' WHERE message_id = 'pd.1.a@desk.acme.example';",
        )?;
        Ok(())
    })
    .await
    .expect("delivery back");
    assert_eq!(check("delivery set back to sent").await, (0, 3, 1, 0));
    s.write(|c| {
        c.execute_batch(
            "UPDATE messages SET delivery = 'failed' WHERE message_id = 'pd.1.b@desk.acme.example';
             DELETE FROM outbox_raw WHERE id = (SELECT o.id FROM outbox o JOIN messages m
                 ON m.id = o.message_id WHERE m.message_id = 'pd.1.b@desk.acme.example');
             DELETE FROM outbox WHERE message_id = (SELECT id FROM messages
                 WHERE message_id = 'pd.1.b@desk.acme.example');",
        )?;
        Ok(())
    })
    .await
    .expect("delete");
    assert_eq!(check("a bounced row deleted").await, (0, 2, 1, 0));
    s.write(|c| {
        c.execute_batch(
            "INSERT INTO outbox (message_id, channel, mail_from, rcpt_to, state, next_attempt_at, created_at)
               SELECT id, 'support', 'support@acme.example', '[]', 'sent', 0, 0 FROM messages
                WHERE message_id = 'pd.1.b@desk.acme.example';
             UPDATE outbox SET state = 'queued' WHERE message_id = (SELECT id FROM messages
                 WHERE message_id = 'pd.1.c@desk.acme.example');",
        )?;
        Ok(())
    })
    .await
    .expect("insert");
    assert_eq!(
        check("a sent row for a failed message, a sent row requeued").await,
        (1, 2, 1, 1)
    );
}

/// What `/readyz` and `/metrics` read on every poll must not grow with the
/// store: each query reads a partial index or the tally, never a table scan.
#[tokio::test]
async fn queue_counts_never_scan_a_table() {
    let (_dir, s) = store();
    let plans = s
        .read(|c| {
            let mut out = Vec::new();
            let sqls = QUEUE_COUNTS.iter().copied().chain([
                super::super::outbound::OUTBOX_TALLY,
                // The delivery trigger's look-up of a message's outbox rows.
                "SELECT COUNT(*) FROM outbox WHERE message_id = 1 AND state = 'sent'",
            ]);
            for sql in sqls {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = st.query_map([], |r| r.get::<_, String>(3))?;
                out.push(rows.collect::<Result<Vec<_>, _>>()?);
            }
            Ok(out)
        })
        .await
        .expect("plans");
    let wanted = [
        "INDEX spool_pending",
        "INDEX spool_failed",
        "outbox_tally",
        "INDEX outbox_message",
    ];
    assert_eq!(plans.len(), wanted.len());
    for (plan, want) in plans.iter().zip(wanted) {
        assert!(
            !plan.is_empty() && plan.iter().all(|d| d.contains(want)),
            "{want}: {plan:?}"
        );
    }
}

/// A store of schema 6 with replies in every state gets a tally equal to
/// what it holds.
#[tokio::test]
async fn migration_7_counts_the_outbox_already_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v6.sqlite");
    {
        let mut c = Connection::open(&path).expect("open raw");
        c.execute_batch("PRAGMA journal_mode = WAL;").expect("wal");
        let tx = c.transaction().expect("tx");
        for sql in &MIGRATIONS[..6] {
            tx.execute_batch(sql).expect("migration");
        }
        tx.execute_batch(
            "INSERT INTO contacts (id, email, created_at) VALUES (1, 'c@customer.example', 0);
             INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
               VALUES (1, 'support', 1, 'Hi', 0, 0);
             INSERT INTO messages (id, ticket_id, channel, direction, message_id, delivery, created_at)
               VALUES (1, 1, 'support', 'outbound', 'r1@acme.example', 'queued', 0),
                      (2, 1, 'support', 'outbound', 'r2@acme.example', 'sent', 0),
                      (3, 1, 'support', 'outbound', 'r3@acme.example', 'failed', 0),
                      (4, 1, 'support', 'outbound', 'r4@acme.example', 'failed', 0),
                      (5, 1, 'support', 'outbound', 'r5@acme.example', 'failed', 0);
             INSERT INTO outbox (message_id, channel, mail_from, rcpt_to, state, next_attempt_at, created_at)
               VALUES (1, 'support', 's@acme.example', '[]', 'queued', 0, 0),
                      (2, 'support', 's@acme.example', '[]', 'sent', 0, 0),
                      (3, 'support', 's@acme.example', '[]', 'sent', 0, 0),
                      (4, 'support', 's@acme.example', '[]', 'sent', 0, 0),
                      (5, 'support', 's@acme.example', '[]', 'failed', 0, 0);
             PRAGMA user_version = 6;",
        )
        .expect("v6 data");
        tx.commit().expect("commit");
    }
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let tally = s.queues().await.expect("queues").outbox;
    assert_eq!(tuple(&tally), (1, 3, 1, 2));
    let full = s.read(|c| Ok(counted(c)?)).await.expect("count");
    assert_eq!(tuple(&tally), tuple(&full));
}

#[tokio::test]
async fn text_that_is_the_raw_tail_is_stored_once_and_read_back_whole() {
    let (_dir, s) = store();
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
    s.apply_inbound(vec![by_ref, inline]).await.expect("apply");

    let t = s.ticket(TicketId(1)).await.expect("ticket");
    assert_eq!(t.messages[0].text.as_deref(), Some(body));
    let t = s.ticket(TicketId(2)).await.expect("ticket");
    assert_eq!(t.messages[0].text.as_deref(), Some("Body"));
    let stored: Vec<(Option<String>, Option<i64>)> = s
        .read(|c| {
            let mut st = c.prepare("SELECT text, text_at FROM messages ORDER BY id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("read");
    assert_eq!(
        stored,
        vec![
            (None, Some((raw.len() - body.len()) as i64)),
            (Some("Body".into()), None)
        ]
    );
}

#[tokio::test]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let (dir, s) = store();
    // 40 writers keep the writer busy without a pause, as an SMTP burst
    // does: ~60 MB of messages pass through a WAL that must not grow with
    // them (checkpointed and restarted from its beginning as it goes; the
    // writer's own checkpoint starts at 16 MB).
    let body = "x".repeat(5000);
    let mut tasks = Vec::new();
    for w in 0..40 {
        let s = s.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300 {
                let mut m = spool_msg(w * 1000 + i);
                m.raw = format!("Subject: {w}/{i}\r\n\r\n{body}\r\n").into_bytes();
                s.spool(m).await.expect("spool");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let wal = dir.path().join("db/test.sqlite-wal");
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        size < 24 << 20,
        "WAL is {size} bytes after ~60 MB of writes"
    );
}

#[tokio::test]
async fn message_id_lookups_search_an_index() {
    let (_dir, s) = store();
    let plans = s
        .read(|c| {
            let mut out = Vec::new();
            for sql in [BY_MESSAGE_ID, super::super::bounce::FIND_OUTBOUND] {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = st.query_map(["x@example.com", "support"], |r| r.get::<_, String>(3))?;
                out.push(rows.collect::<Result<Vec<_>, _>>()?);
            }
            Ok(out)
        })
        .await
        .expect("plans");
    // Threading and bounces look up one Message-ID among every message ever
    // stored: a full scan of `messages` would grow with the mailbox's history.
    for plan in &plans {
        assert!(
            plan.iter()
                .all(|d| !d.starts_with("SCAN messages") && !d.is_empty()),
            "{plan:?}"
        );
    }
    assert!(
        plans[0].iter().any(|d| d.contains("messages_dedupe")),
        "{:?}",
        plans[0]
    );
    assert!(
        plans[0].iter().any(|d| d.contains("messages_outbound_id")),
        "{:?}",
        plans[0]
    );
    assert!(
        plans[1].iter().any(|d| d.contains("messages_outbound_id")),
        "{:?}",
        plans[1]
    );
}

#[tokio::test]
async fn a_version_4_database_keeps_its_queued_replies_through_migration_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v4.sqlite");
    {
        // A database as a postdesk of schema 4 left it, with a reply queued.
        let mut c = Connection::open(&path).expect("open raw");
        c.execute_batch("PRAGMA journal_mode = WAL;").expect("wal");
        let tx = c.transaction().expect("tx");
        for sql in &MIGRATIONS[..4] {
            tx.execute_batch(sql).expect("migration");
        }
        tx.execute_batch(
            "INSERT INTO contacts (id, email, created_at) VALUES (1, 'c@customer.example', 0);
             INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
               VALUES (1, 'support', 1, 'Hi', 0, 0);
             INSERT INTO messages (id, ticket_id, channel, direction, message_id, created_at)
               VALUES (1, 1, 'support', 'outbound', 'r1@acme.example', 0);
             INSERT INTO outbox (id, message_id, channel, mail_from, rcpt_to, raw, next_attempt_at, created_at)
               VALUES (7, 1, 'support', 'support@acme.example', '[\"c@customer.example\"]',
                       X'5375626A6563743A2048690D0A0D0A6F6B0D0A', 0, 0);
             PRAGMA user_version = 4;",
        )
        .expect("v4 data");
        tx.commit().expect("commit");
    }
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let due = s.due_outbox(1, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, OutboxId(7));
    assert_eq!(due[0].raw, b"Subject: Hi\r\n\r\nok\r\n".to_vec());
    let columns: Vec<String> = s
        .read(|c| {
            let mut st = c.prepare("SELECT name FROM pragma_table_info('outbox')")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("columns");
    assert!(!columns.iter().any(|c| c == "raw"), "{columns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_grown_behind_a_long_reader_shrinks_back() {
    let (dir, s) = store();
    let db = dir.path().join("db/test.sqlite");
    let wal = dir.path().join("db/test.sqlite-wal");
    s.spool(spool_msg(0)).await.expect("spool");
    // A reader holding one snapshot: no checkpoint can pass it, so the WAL
    // grows past every bound while it lasts.
    let reader = Connection::open(&db).expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))
        .expect("snapshot");
    let body = "x".repeat(5000);
    let write = |n: usize| {
        let s = s.clone();
        let body = body.clone();
        async move {
            let mut tasks = Vec::new();
            for w in 0..16 {
                let s = s.clone();
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..n {
                        let mut m = spool_msg(w * 100_000 + i);
                        m.raw = format!("Subject: {w}/{i}\r\n\r\n{body}\r\n").into_bytes();
                        s.spool(m).await.expect("spool");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("join");
            }
        }
    };
    write(1100).await;
    let grown = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        grown > 80 << 20,
        "the reader did not hold the WAL: {grown} bytes"
    );
    reader.execute_batch("COMMIT").expect("end snapshot");
    drop(reader);
    // Once the reader is gone the WAL is checkpointed, restarts, and is cut
    // back to journal_size_limit.
    let mut size = grown;
    for _ in 0..100 {
        write(2).await;
        size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size <= WAL_SIZE_LIMIT as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        size <= WAL_SIZE_LIMIT as u64,
        "WAL still {size} bytes (was {grown})"
    );
}

/// A plan after SQLite rolled the group's transaction back (an earlier
/// plan's I/O error) must not run: its SAVEPOINT would open a transaction
/// of its own, committed by its RELEASE outside the group while the job is
/// answered as failed. Outside a transaction, `in_savepoint` refuses.
#[test]
fn no_savepoint_outside_the_group_transaction() {
    let c = Connection::open_in_memory().expect("db");
    c.execute_batch("CREATE TABLE t (x INTEGER)")
        .expect("table");
    let r = in_savepoint(&c, "plan", |c| {
        c.execute("INSERT INTO t VALUES (1)", [])?;
        Ok(())
    });
    assert!(matches!(r, Err(StoreError::Failed(_))), "{r:?}");
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 0, "committed outside the group");
    // Inside a transaction it runs as before.
    c.execute_batch("BEGIN").expect("begin");
    in_savepoint(&c, "plan", |c| {
        c.execute("INSERT INTO t VALUES (1)", [])?;
        Ok(())
    })
    .expect("inside");
    c.execute_batch("COMMIT").expect("commit");
}

/// Migration 10: a token issued before roles existed could do everything,
/// so it becomes `admin` and never expires; tokens issued after carry the
/// role and expiry they were given.
#[tokio::test]
async fn migration_10_makes_existing_tokens_admins_without_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v8.sqlite");
    {
        let mut c = Connection::open(&path).expect("open raw");
        c.execute_batch("PRAGMA journal_mode = WAL;").expect("wal");
        let tx = c.transaction().expect("tx");
        for sql in &MIGRATIONS[..8] {
            tx.execute_batch(sql).expect("migration");
        }
        tx.execute_batch(
            "INSERT INTO api_tokens (token_hash, user_id, created_at) VALUES ('aa11', 'ann', 5);
             PRAGMA user_version = 8;",
        )
        .expect("v8 data");
        tx.commit().expect("commit");
    }
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let old = s.api_token("aa11".into()).await.expect("read");
    assert_eq!(
        old,
        Some(TokenGrant {
            user: "ann".into(),
            role: TokenRole::Admin,
            expires_at: None
        })
    );
    s.add_api_token(NewApiToken {
        hash: "bb22".into(),
        user: "ann".into(),
        role: TokenRole::Agent,
        expires_at: Some(1_000),
    })
    .await
    .expect("add");
    let new = s.api_token("bb22".into()).await.expect("read");
    assert_eq!(
        new.map(|g| (g.role, g.expires_at)),
        Some((TokenRole::Agent, Some(1_000)))
    );
    let listed = s.api_tokens("ann".into()).await.expect("list");
    let roles: Vec<_> = listed.iter().map(|t| (t.role, t.expires_at)).collect();
    assert_eq!(
        roles,
        [(TokenRole::Admin, None), (TokenRole::Agent, Some(1_000))]
    );
    assert_eq!(s.api_token("cc33".into()).await.expect("read"), None);
    let version: i64 = s
        .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .await
        .expect("version");
    assert_eq!(version, MIGRATIONS.len() as i64);
}

/// Migration 12 rebuilds the outbox: a queued reply of schema 10 keeps its
/// id, bytes and tally, and stays deliverable; a notice then queues beside
/// it without a ticket message, is delivered and counted like a reply; each
/// store has its own notice key.
#[tokio::test]
async fn migration_12_keeps_the_outbox_and_adds_notices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v10.sqlite");
    {
        let mut c = Connection::open(&path).expect("open raw");
        c.execute_batch("PRAGMA journal_mode = WAL;").expect("wal");
        let tx = c.transaction().expect("tx");
        for sql in &MIGRATIONS[..10] {
            tx.execute_batch(sql).expect("migration");
        }
        tx.execute_batch(
            "INSERT INTO contacts (id, email, created_at) VALUES (1, 'c@customer.example', 0);
             INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
               VALUES (1, 'support', 1, 'Hi', 0, 0);
             INSERT INTO messages (id, ticket_id, channel, direction, message_id, delivery, created_at)
               VALUES (1, 1, 'support', 'outbound', 'r1@acme.example', 'queued', 0);
             INSERT INTO outbox (id, message_id, channel, mail_from, rcpt_to, state, next_attempt_at, created_at)
               VALUES (7, 1, 'support', 's@acme.example', '[\"c@customer.example\"]', 'queued', 0, 0);
             INSERT INTO outbox_raw (id, raw) VALUES (7, X'6869');
             PRAGMA user_version = 10;",
        )
        .expect("v10 data");
        tx.commit().expect("commit");
    }
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let due = s.due_outbox(i64::MAX, 10).await.expect("due");
    assert_eq!(
        due.iter()
            .map(|i| (i.id.0, i.raw.clone(), i.rcpt_to.clone()))
            .collect::<Vec<_>>(),
        [(7, b"hi".to_vec(), vec!["c@customer.example".to_string()])]
    );
    let id = s
        .queue_notice(NewNotice {
            kind: "assigned".into(),
            mail_from: "desk@acme.example".into(),
            rcpt_to: vec!["ann@acme.example".into()],
            raw: b"notice".to_vec(),
        })
        .await
        .expect("notice");
    assert!(id.0 > 7, "{id}");
    assert_eq!(
        tuple(&s.queues().await.expect("queues").outbox),
        (2, 0, 0, 0)
    );
    s.record_attempt(
        id,
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    s.record_attempt(
        OutboxId(7),
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    let tally = s.queues().await.expect("queues").outbox;
    assert_eq!(tuple(&tally), (0, 2, 0, 0));
    let full = s.read(|c| Ok(counted(c)?)).await.expect("count");
    assert_eq!(tuple(&tally), tuple(&full));
    // The reply's message row followed; the notice has none.
    let delivery: String = s
        .read(|c| {
            Ok(
                c.query_row("SELECT delivery FROM messages WHERE id = 1", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
        .expect("delivery");
    assert_eq!(delivery, "sent");
    let key = s.notice_key().await.expect("key");
    assert_eq!(key.len(), 64, "{key}");
    let (_dir2, other) = store();
    assert_ne!(other.notice_key().await.expect("key"), key);
}

/// A database postdesk creates is 0600, and so are its `-wal` and `-shm`
/// (SQLite gives them the database file's mode); an existing file keeps
/// the mode it has.
#[tokio::test]
async fn a_new_database_and_its_wal_and_shm_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("var/postdesk.sqlite");
    let s = SqliteStore::open(&path, 5000, 8).expect("open");
    s.spool(spool_msg(1)).await.expect("spool");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    drop(s);

    let other = dir.path().join("shared.sqlite");
    std::fs::write(&other, "").expect("create");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    drop(SqliteStore::open(&other, 5000, 8).expect("open"));
    let mode = std::fs::metadata(&other)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}
