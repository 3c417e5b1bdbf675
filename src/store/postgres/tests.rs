//! The PostgreSQL store against a real, private PostgreSQL cluster: schema
//! migrations, group commit, and one scenario through every role trait run
//! on both backends, whose answers must be the same.

use std::sync::Arc;

use super::cluster::Cluster;
use super::*;
use crate::store::tests::{self as suite, decide, replay, spool_msg};

async fn open(cluster: &Cluster) -> PostgresStore {
    open_db(cluster, "postdesk").await
}

async fn open_db(cluster: &Cluster, db: &str) -> PostgresStore {
    let config = parse_url(&cluster.url(db)).expect("url");
    PostgresStore::open(config, 8, 256).await.expect("open")
}

#[tokio::test]
async fn migrates_and_reopens() {
    let cluster = Cluster::start();
    let store = open(&cluster).await;
    assert_eq!(store.status().await.expect("status").tickets, 0);
    drop(store);
    let _again = open(&cluster).await;
    assert_eq!(
        cluster.psql("postdesk", "SELECT MAX(version) FROM postdesk_schema"),
        MIGRATIONS.len().to_string()
    );
}

/// Step 22: the large values are compressed with lz4 (Debian's server has
/// it; the conformance suite reads stored bodies back whole).
#[tokio::test]
async fn large_values_are_compressed_with_lz4() {
    let cluster = Cluster::start();
    let _store = open(&cluster).await;
    let methods = cluster.psql(
        "postdesk",
        "SELECT string_agg(attrelid::regclass || '.' || attname || '=' || attcompression::text, ' '
                           ORDER BY attrelid::regclass::text, attname)
           FROM pg_attribute
          WHERE (attrelid = 'spool_raw'::regclass AND attname = 'raw')
             OR (attrelid = 'messages'::regclass AND attname IN ('text', 'html'))",
    );
    assert_eq!(methods, "messages.html=l messages.text=l spool_raw.raw=l");
}

/// Several nodes starting together on an empty database: each opens, and
/// every step ran exactly once (the advisory lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let cluster = Cluster::start();
    let url = cluster.url("postdesk");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = parse_url(&url).expect("url");
            tokio::spawn(async move { PostgresStore::open(config, 2, 8).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await
            .expect("task")
            .expect("open while another node migrates");
    }
    let steps = cluster.psql(
        "postdesk",
        "SELECT COUNT(*), COUNT(DISTINCT version) FROM postdesk_schema",
    );
    let n = MIGRATIONS.len();
    assert_eq!(steps, format!("{n}|{n}"));
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let cluster = Cluster::start();
    drop(open(&cluster).await);
    cluster.psql(
        "postdesk",
        "INSERT INTO postdesk_schema (version, applied_at) VALUES (99, 0)",
    );
    let config = parse_url(&cluster.url("postdesk")).expect("url");
    match PostgresStore::open(config, 2, 8).await {
        Err(StoreError::Schema(m)) => assert!(m.contains("99"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

/// A burst of concurrent SMTP commits: every one stored and answered, in
/// far fewer transactions than messages (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spool_writes_share_commits() {
    let cluster = Cluster::start();
    let s = Arc::new(open(&cluster).await);
    let before = s.commit_count();
    let n = 300;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.spool(spool_msg(i)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("spool").id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "one id each");
    let commits = s.commit_count() - before;
    assert!(commits < n as u64, "{commits} commits for {n} messages");
    let pending = s.pending_spool(SpoolId(0), 1000).await.expect("pending");
    assert_eq!(pending.len(), n);
    let raw = s.raw(pending[7].id).await.expect("raw");
    assert_eq!(raw, pending[7].raw);
    assert_eq!(pending[7].content_hash, content_hash(&raw));
    assert_eq!(s.queues().await.expect("queues").spool_pending, n as i64);
}

/// A batch's new spool rows go in one statement; when PostgreSQL refuses
/// one of them (a NUL in a text field), only that row fails: the others,
/// retried one by one in the same transaction, are stored and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_spool_row_fails_alone_in_its_batch() {
    let cluster = Cluster::start();
    let s = Arc::new(open(&cluster).await);
    let before = s.commit_count();
    let n = 200;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut m = spool_msg(i);
                if i % 10 == 3 {
                    m.helo = Some("bad\0helo".into());
                }
                (i, s.spool(m).await)
            })
        })
        .collect();
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        let (i, r) = t.await.expect("task");
        match r {
            Ok(e) if i % 10 != 3 => stored.push((e.id, e.raw)),
            Ok(e) => panic!("row {i} with a NUL was stored as {}", e.id),
            Err(e) if i % 10 == 3 => refused.push(e.to_string()),
            Err(e) => panic!("row {i} failed beside a bad one: {e}"),
        }
    }
    assert_eq!(stored.len(), n - n / 10);
    assert_eq!(refused.len(), n / 10);
    assert!(refused[0].contains("0x00"), "{}", refused[0]);
    let commits = s.commit_count() - before;
    assert!(commits < n as u64, "{commits} commits for {n} rows");
    for (id, raw) in &stored {
        assert_eq!(&s.raw(*id).await.expect("raw"), raw, "{id}");
    }
    let pending = s.pending_spool(SpoolId(0), 1000).await.expect("pending");
    assert_eq!(pending.len(), stored.len());
}

/// A write that fails (its own mistake) is answered with its error; the
/// writes committed beside it stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_undo_its_batch_neighbours() {
    let cluster = Cluster::start();
    let s = Arc::new(open(&cluster).await);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                if i % 4 == 0 {
                    // No such outbox entry: Invalid.
                    s.record_attempt(
                        OutboxId(1_000 + i as i64),
                        AttemptOutcome::Failed { error: "x".into() },
                    )
                    .await
                    .map(|_| None)
                } else {
                    s.spool(spool_msg(i)).await.map(|e| Some(e.id))
                }
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(Some(_)) => ok += 1,
            Err(StoreError::Invalid(_)) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, refused), (30, 10));
    assert_eq!(s.queues().await.expect("queues").spool_pending, 30);
}

/// Plans whose statements PostgreSQL refuses — at the look-ahead (a NUL in
/// the contact's address) and at the write (a NUL in the subject), sent
/// pipelined behind their savepoints — fail alone: the plans beside them,
/// before and after, in the same job, are stored, and the failed ones'
/// spool entries stay pending.
#[tokio::test]
async fn a_plan_postgres_refuses_fails_alone_in_its_batch() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    let ids = suite::spool_many(&s, 5).await;
    let mut plans: Vec<InboundPlan> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| inbound(*id, n, suite::unassigned()))
        .collect();
    plans[1].messages[0].contact.email = "c\0@customer.example".into();
    plans[3].messages[0].new_ticket.subject = "bad\0subject".into();
    plans[3].messages[0].subject = "bad\0subject".into();
    let results = s.apply_inbound(plans, decide).await.expect("the job");
    let shape: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(shape, [true, false, true, false, true], "{results:?}");
    assert_eq!(
        cluster.psql("postdesk", "SELECT COUNT(*) FROM tickets"),
        "3"
    );
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT string_agg(subject, ',' ORDER BY id) FROM tickets"
        ),
        cluster.psql(
            "postdesk",
            "SELECT string_agg(subject, ',' ORDER BY id) FROM messages WHERE direction = 'inbound'"
        )
    );
    assert_eq!(s.queues().await.expect("queues").spool_pending, 2);
    // The transaction went on after them: a later write commits.
    let more = suite::spool_many(&s, 6).await;
    suite::apply_all(&s, vec![inbound(more[5], 5, suite::unassigned())]).await;
    assert_eq!(
        cluster.psql("postdesk", "SELECT COUNT(*) FROM tickets"),
        "4"
    );
}

/// The next change `heard` reports (a minute at most: none is a failure).
async fn next_change(heard: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    match tokio::time::timeout(std::time::Duration::from_secs(60), heard.recv()).await {
        Ok(Ok(c)) => c,
        other => panic!("no change reported: {other:?}"),
    }
}

/// Another node's writes are heard as they commit: a channel switched and
/// an availability set are `State`, a queued notice and a flush `Outbox`.
/// When the server restarts, the listener reconnects by itself and reports
/// both kinds once (what was sent meanwhile is lost), then hears again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_hear_changes_as_they_commit() {
    let mut cluster = Cluster::start();
    let a = open(&cluster).await;
    let b = open(&cluster).await;
    let mut heard = a.changes().expect("PostgreSQL reports changes");
    // Listening: both kinds once, since nothing was heard before.
    let first = [next_change(&mut heard).await, next_change(&mut heard).await];
    assert_eq!(first, [Change::State, Change::Outbox]);

    b.set_channel_enabled("support".into(), Some(false))
        .await
        .expect("disable");
    assert_eq!(next_change(&mut heard).await, Change::State);
    b.set_user_available("ann".into(), Some(false))
        .await
        .expect("away");
    assert_eq!(next_change(&mut heard).await, Change::State);
    b.queue_notice(NewNotice {
        kind: "assigned".into(),
        mail_from: "desk@acme.example".into(),
        rcpt_to: vec!["ann@acme.example".into()],
        raw: b"notice".to_vec(),
    })
    .await
    .expect("notice");
    assert_eq!(next_change(&mut heard).await, Change::Outbox);
    b.flush_outbox().await.expect("flush");
    assert_eq!(next_change(&mut heard).await, Change::Outbox);
    // A write that fails (no such outbox entry) sends nothing: the next
    // change heard is the one after it.
    assert!(
        b.record_attempt(OutboxId(999), AttemptOutcome::Failed { error: "x".into() })
            .await
            .is_err()
    );
    b.set_channel_enabled("support".into(), None)
        .await
        .expect("enable");
    assert_eq!(next_change(&mut heard).await, Change::State);

    cluster.restart();
    let again = [next_change(&mut heard).await, next_change(&mut heard).await];
    assert_eq!(
        again,
        [Change::State, Change::Outbox],
        "reported after reconnecting"
    );
    // The pool's connections died with the server: a write may need a retry.
    let mut done = false;
    for _ in 0..30 {
        if b.set_channel_enabled("support".into(), Some(true))
            .await
            .is_ok()
        {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(done, "b writes again after the restart");
    assert_eq!(next_change(&mut heard).await, Change::State);
}

/// The store's path in `status` names host and database, never the
/// password of the URL.
#[test]
fn urls_are_parsed_and_described_without_credentials() {
    let c = parse_url("postgresql://pd:s3cret@db.internal:5433/desk\n").expect("url");
    assert_eq!(describe(&c), "postgres://db.internal/desk");
    assert!(!is_local(&c));
    let c = parse_url("postgresql://pd@127.0.0.1/desk").expect("url");
    assert!(is_local(&c));
    let c = parse_url("host=/run/postgresql dbname=desk user=pd").expect("key=value");
    assert!(is_local(&c));
    // TLS only when asked for (then verified); `prefer` connects without.
    for (url, tls) in [
        ("postgresql://pd@h/desk?sslmode=require", true),
        ("postgresql://pd@h/desk?sslmode=verify-full", true),
        ("host=h dbname=desk sslmode=verify-ca", true),
        ("postgresql://pd@h/desk?sslmode=prefer", false),
        ("postgresql://pd@h/desk", false),
    ] {
        let c = parse_url(url).expect(url);
        assert_eq!(tls::uses_tls(&c), tls, "{url}");
    }
    for (bad, says) in [
        ("", "empty"),
        ("mysql://x", "not a PostgreSQL"),
        ("postgresql://pd@h/desk?sslmode=allow", "not a PostgreSQL"),
        ("postgresql://pd:pw@h", "no database"),
    ] {
        let e = parse_url(bad).expect_err(bad);
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!e.contains("pw"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// One scenario through every role, on both backends.

/// The suite's plan for message `n`, copying cc@ and with its text stored
/// by reference into the raw message `spool_msg(n)` spools.
fn inbound(spool: SpoolId, n: usize, routing: RoutingPlan) -> InboundPlan {
    let mut p = suite::inbound(spool, n, routing);
    let m = &mut p.messages[0];
    m.cc = vec!["cc@customer.example".into()];
    m.text = BodyText::RawFrom(format!("Subject: {n}\r\n\r\n").len());
    m.new_ticket.properties = r#"{"tier":"gold"}"#.into();
    p
}

fn reply_on(ticket: i64, message_id: &str, key: Option<&str>) -> NewReply {
    NewReply {
        dedupe_key: crate::outbound::replay::dedupe_key("ann", message_id, key),
        replayable: key.is_some(),
        ..suite::reply_on(ticket, message_id)
    }
}

/// Everything a backend answers in the scenario, times left out.
async fn scenario(s: &dyn Store) -> serde_json::Value {
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(s.spool(spool_msg(i)).await.expect("spool").id);
    }
    let balance = RoutingPlan::Balance {
        users: vec!["ann".into(), "bob".into()],
        reason_if_none: "nobody".into(),
    };
    // Two new tickets, balanced over ann and bob; then a copy of the first.
    let out = s
        .apply_inbound(
            vec![
                inbound(ids[0], 1, balance.clone()),
                inbound(ids[1], 2, balance.clone()),
            ],
            decide,
        )
        .await
        .expect("apply");
    let copy = s
        .apply_inbound(vec![inbound(ids[2], 1, balance.clone())], decide)
        .await
        .expect("apply copy");
    // An answer by References joins ticket 1, and makes its sender a participant.
    let mut answer = inbound(ids[3], 3, balance.clone());
    answer.messages[0].references = vec!["m1@customer.example".into()];
    answer.messages[0].thread_identity = Some("c1@customer.example".into());
    let joined = s
        .apply_inbound(vec![answer], decide)
        .await
        .expect("apply answer");
    // A stranger naming ticket 1 by its tag without the secret: a ticket of its own.
    let mut stranger = inbound(ids[4], 4, balance.clone());
    stranger.messages[0].thread_token = Some(ThreadToken {
        ticket: TicketId(1),
        secret: None,
    });
    let apart = s
        .apply_inbound(vec![stranger], decide)
        .await
        .expect("apply stranger");

    // Replies: queued, replayed by key, attempted; a bounce fails one.
    let r1 = s
        .queue_reply(reply_on(1, "pd.1@desk.acme.example", Some("k1")), replay)
        .await
        .expect("queue");
    let again = s
        .queue_reply(reply_on(1, "pd.1b@desk.acme.example", Some("k1")), replay)
        .await
        .expect("replay");
    let r2 = s
        .queue_reply(reply_on(1, "pd.2@desk.acme.example", None), replay)
        .await
        .expect("queue 2");
    let due = s
        .due_outbox(suite::claim(), i64::MAX, 10)
        .await
        .expect("due");
    s.record_attempt(
        r1.outbox_id,
        AttemptOutcome::Sent {
            reply: "250 ok".into(),
        },
    )
    .await
    .expect("sent");
    let twice = s
        .record_attempt(
            r1.outbox_id,
            AttemptOutcome::Sent {
                reply: "250 ok".into(),
            },
        )
        .await;
    s.record_attempt(
        r2.outbox_id,
        AttemptOutcome::Deferred {
            error: "451 later".into(),
            next_attempt_at: i64::MAX - 1,
        },
    )
    .await
    .expect("deferred");
    let next_due = s.next_outbox_due().await.expect("next due");
    let flushed = s.flush_outbox().await.expect("flush");
    let mut bounce = inbound(ids[5], 5, balance.clone());
    let b = &mut bounce.messages[0];
    b.contact = ContactRef {
        email: "mailer-daemon@mx.customer.example".into(),
        name: None,
    };
    b.from = b.contact.clone();
    b.classification = Classification::Bounce { dsn: None };
    b.bounce = Some(BounceLink {
        candidates: vec!["nothing@else".into(), "pd.1@desk.acme.example".into()],
        failed: true,
        detail: "550 5.1.1 unknown".into(),
    });
    let bounced = s.apply_inbound(vec![bounce], decide).await.expect("bounce");
    let context = s.reply_context(TicketId(1), 5).await.expect("context");

    // Agents' changes.
    s.add_note(TicketId(1), "ann".into(), "called them".into())
        .await
        .expect("note");
    s.update_ticket(
        TicketId(2),
        TicketUpdate {
            status: Some("closed".into()),
            owner: Some(None),
            priority: None,
            only_if_unassigned: false,
        },
    )
    .await
    .expect("update");
    let missing = s.add_note(TicketId(99), "ann".into(), "x".into()).await;

    // Submissions: stored with their spool row; a retry stores nothing.
    let mut form = inbound(SpoolId(0), 7, balance.clone()).messages;
    form[0].text = BodyText::Inline("form text".into());
    let mut form_spool = spool_msg(7);
    form_spool.source = SpoolSource::Form;
    form_spool.raw = br#"{"name":"C 7"}"#.to_vec();
    let submission = Submission {
        spool: form_spool,
        messages: form,
    };
    let submitted = s.submit(submission.clone(), decide).await.expect("submit");
    let resubmitted = s.submit(submission, decide).await.expect("resubmit");
    let failed_spool = s.spool(spool_msg(8)).await.expect("spool 8").id;
    s.fail_spool(failed_spool, "unparsable".into())
        .await
        .expect("fail");

    // People and runtime state.
    let created = s
        .set_contact_owner("vip@customer.example".into(), Some("bob".into()))
        .await
        .expect("owner");
    let unknown = s
        .set_contact_owner("nobody@customer.example".into(), None)
        .await;
    s.set_user_available("ann".into(), Some(false))
        .await
        .expect("away");
    s.set_channel_enabled("sales".into(), Some(false))
        .await
        .expect("disable");
    s.set_channel_enabled("support".into(), Some(true))
        .await
        .expect("enable");
    s.set_channel_enabled("support".into(), None)
        .await
        .expect("clear");
    for (hash, role) in [
        ("ab12cd34ef", TokenRole::Admin),
        ("ab12cd99ff", TokenRole::Agent),
    ] {
        s.add_api_token(NewApiToken {
            hash: hash.into(),
            user: "ann".into(),
            role,
            expires_at: Some(5),
        })
        .await
        .expect("token");
    }
    let grant = s.api_token("ab12cd34ef".into()).await.expect("grant");
    let ambiguous = s
        .revoke_api_tokens("ann".into(), Some("ab12cd".into()))
        .await;
    let short = s
        .revoke_api_tokens("ann".into(), Some("ab12cd34".into()))
        .await;
    let tokens = s.api_tokens("ann".into()).await.expect("tokens");

    // Mailboxes.
    let pulled = |raw: &str, mid: Option<&str>| PulledMessage {
        spool: NewSpool {
            source: SpoolSource::Imap,
            channel: Some("mailbox".into()),
            raw: raw.as_bytes().to_vec(),
            ..spool_msg(0)
        },
        content_hash: content_hash(raw.as_bytes()),
        message_id: mid.map(String::from),
        gm_msgid: None,
    };
    let batch = |last_uid, messages, unreturned| PulledBatch {
        channel: "mailbox".into(),
        folder: "INBOX".into(),
        checkpoint: Checkpoint {
            uidvalidity: 7,
            last_uid,
        },
        messages,
        known_unfetched: 1,
        unreturned,
        gmail_account: None,
        fence: None,
    };
    let first = s
        .spool_pulled(batch(
            3,
            vec![pulled("a", Some("a@x")), pulled("b", None)],
            vec![2],
        ))
        .await
        .expect("batch");
    let second = s
        .spool_pulled(batch(5, vec![pulled("a", None), pulled("c", None)], vec![]))
        .await
        .expect("batch 2");
    s.set_mailbox_state(suite::state_change(MailboxState::Backoff, Some("boom")))
        .await
        .expect("state");
    s.set_mailbox_state(suite::state_change(MailboxState::Idle, None))
        .await
        .expect("state");
    let checkpoint = s
        .checkpoint("mailbox".into(), "INBOX".into())
        .await
        .expect("checkpoint");
    let skipped = s.skipped_uids(suite::generation(7)).await.expect("skipped");
    let known = s
        .known_message_ids(
            "support".into(),
            vec!["m1@customer.example".into(), "zz".into()],
        )
        .await
        .expect("known");
    let mut statuses = s.mailbox_status().await.expect("status");
    for st in &mut statuses {
        st.updated_at = 0;
        st.last_error_at = st.last_error_at.map(|_| 1);
    }
    s.reset_checkpoint(suite::generation(8), None)
        .await
        .expect("reset");
    let after_reset = s.skipped_uids(suite::generation(7)).await.expect("skipped");

    let tickets = s.list_tickets(TicketFilter::default()).await.expect("list");
    let by_contact = s
        .list_tickets(TicketFilter {
            contact: Some(" C1@Customer.Example ".into()),
            ..Default::default()
        })
        .await
        .expect("by contact");
    let mut details = Vec::new();
    for t in &tickets {
        details.push(s.ticket(t.head.number).await.expect("ticket"));
    }
    let mut status = s.status().await.expect("status");
    status.path = String::new();
    let err = |r: Result<(), StoreError>| r.err().map(|e| e.to_string());
    let value = serde_json::json!({
        "applied": out.into_iter().map(Result::ok).collect::<Vec<_>>(),
        "copy": copy.into_iter().map(Result::ok).collect::<Vec<_>>(),
        "joined": joined.into_iter().map(Result::ok).collect::<Vec<_>>(),
        "apart": apart.into_iter().map(Result::ok).collect::<Vec<_>>(),
        "bounced": bounced.into_iter().map(Result::ok).collect::<Vec<_>>(),
        "replies": [r1, again, r2],
        "due": due.iter().map(|d| (d.id, &d.rcpt_to, d.raw.len(), d.attempts)).collect::<Vec<_>>(),
        "sent_twice": err(twice),
        "next_due": next_due,
        "flushed": flushed,
        "context": (context.thread, context.secret, context.participants),
        "missing_note": err(missing),
        "submitted": (submitted, resubmitted),
        "contact_created": created,
        "unknown_contact": unknown.err().map(|e| e.to_string()),
        "contacts": s.list_contacts().await.expect("contacts"),
        "users": s.user_overrides().await.expect("users").iter().map(|u| (&u.id, u.available)).collect::<Vec<_>>(),
        "channels": s.channel_overrides().await.expect("channels"),
        "grant": grant.map(|g| (g.user, g.role, g.expires_at)),
        "ambiguous": ambiguous.err().map(|e| e.to_string()),
        "revoked": short.ok(),
        "tokens": tokens.iter().map(|t| (&t.id, t.role, t.expires_at)).collect::<Vec<_>>(),
        "pulled": [(first.spooled, first.skipped), (second.spooled, second.skipped)],
        "checkpoint": checkpoint,
        "skipped": (skipped, after_reset),
        "known": known,
        "mailboxes": statuses,
        "tickets": tickets,
        "by_contact": by_contact.len(),
        "details": details,
        "status": status,
        // The search queue is PostgreSQL's alone (its indexer's timing): not
        // compared.
        "queues": Queues {
            search_pending: 0,
            ..s.queues().await.expect("queues")
        },
    });
    without_times(value)
}

/// The scenario's answers with every `created_at`/`updated_at` zeroed.
fn without_times(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "created_at" || k == "updated_at" {
                        *x = serde_json::Value::from(0);
                    } else {
                        walk(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Both backends answer the whole scenario alike, and the answers are the
/// ones the rules give (spot-checked here; the SQLite tests check each
/// rule in depth).
#[tokio::test]
async fn both_backends_answer_the_scenario_alike() {
    let cluster = Cluster::start();
    let pg = open(&cluster).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite"), 5000, 64).expect("sqlite");
    let on_pg = scenario(&pg).await;
    let on_sqlite = scenario(&sqlite).await;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    assert_eq!(pretty(&on_pg), pretty(&on_sqlite));

    let v = &on_pg;
    // Balanced: ticket 1 to ann, 2 to bob; the copy is a duplicate of 1.
    assert_eq!(v["applied"][0]["delivered"][0]["owner"], "ann");
    assert_eq!(v["applied"][1]["delivered"][0]["owner"], "bob");
    assert_eq!(v["copy"][0]["delivered"][0]["duplicate"], true);
    assert_eq!(v["joined"][0]["delivered"][0]["ticket"], 1);
    assert_eq!(v["apart"][0]["delivered"][0]["created"], true);
    assert_eq!(v["bounced"][0]["delivered"][0]["ticket"], 1);
    assert_eq!(v["replies"][1]["replayed"], true);
    assert!(
        v["sent_twice"]
            .as_str()
            .is_some_and(|e| e.contains("not queued"))
    );
    assert_eq!(v["flushed"], 1);
    assert_eq!(v["submitted"][1]["delivered"][0]["duplicate"], true);
    assert_eq!(v["revoked"], 1);
    assert_eq!(v["pulled"], serde_json::json!([[2, 1], [1, 2]]));
    assert_eq!(v["skipped"], serde_json::json!([[2], []]));
    assert_eq!(v["known"], serde_json::json!(["m1@customer.example"]));
    assert_eq!(v["by_contact"], 1);
    // The text stored by reference into the raw message reads back whole.
    let first = &v["details"]
        .as_array()
        .expect("details")
        .last()
        .expect("ticket 1");
    assert_eq!(first["number"], 1);
    assert_eq!(first["messages"][0]["text"], "body 1\r\n");
    assert_eq!(v["queues"]["outbox"]["bounced"], 1);
    assert_eq!(v["status"]["spool_failed"], 1);
}

/// One job whose messages depend on each other, in one order: a new
/// contact, the same contact again under a new (verified) name, a copy of
/// the first message, a dropped entry, an answer from a new participant,
/// an answer of the contact's to the second ticket, a message without a
/// Message-ID and its copy ([`before_the_job`] stored its contact and
/// ticket 1).
/// What the store holds before [`dependent_job`]: contact c6, ticket 1.
async fn before_the_job(s: &dyn Store) {
    let id = s.spool(spool_msg(9)).await.expect("spool").id;
    let mut p = inbound(
        id,
        9,
        RoutingPlan::Unassigned {
            reason: "nobody".into(),
        },
    );
    let m = &mut p.messages[0];
    m.contact.email = "c6@customer.example".into();
    m.contact.name = Some("C 6".into());
    m.from = m.contact.clone();
    s.apply_inbound(vec![p], decide)
        .await
        .expect("before the job")
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "{r:?}"));
}

fn dependent_job(ids: &[SpoolId]) -> Vec<InboundPlan> {
    let balance = RoutingPlan::Balance {
        users: vec!["ann".into(), "bob".into()],
        reason_if_none: "nobody".into(),
    };
    let plan = |at: usize, n: usize| inbound(ids[at], n, balance.clone());
    // Message `n` from c1, under the name "C One".
    let from_c_one = |at: usize, n: usize| {
        let mut p = plan(at, n);
        let m = &mut p.messages[0];
        m.contact = ContactRef {
            email: "c1@customer.example".into(),
            name: Some("C One".into()),
        };
        m.from = m.contact.clone();
        m.thread_identity = Some(m.contact.email.clone());
        p
    };
    let first = plan(0, 1);
    let renamed = from_c_one(1, 2);
    let mut copy = plan(2, 1);
    copy.messages[0].text = BodyText::Inline("the same message again".into());
    let mut dropped = plan(3, 4);
    dropped.dropped = Some("auto-reply".into());
    let mut answer = plan(4, 3);
    answer.messages[0].references = vec!["m1@customer.example".into()];
    answer.messages[0].thread_identity = Some("c1@customer.example".into());
    let mut again = from_c_one(5, 5);
    again.messages[0].references = vec!["m2@customer.example".into()];
    // A message without a Message-ID (known by its content's key alone),
    // from a contact stored before the job, then its copy.
    let mut bare = plan(6, 6);
    let m = &mut bare.messages[0];
    m.message_id = None;
    m.dedupe_key = "sha:0123456789abcdef".into();
    let bare_copy = InboundPlan {
        spool_id: ids[7],
        ..bare.clone()
    };
    vec![
        first, renamed, copy, dropped, answer, again, bare, bare_copy,
    ]
}

/// A job's messages are decided against what the messages before them
/// wrote, though PostgreSQL's statements for a whole job go out together
/// (look-aheads first, writes without waiting): the copy is a duplicate,
/// (by Message-ID or by content), the renamed contact keeps its new
/// name, balancing counts the ticket
/// opened just before, answers join the tickets opened in the same job.
/// Run without the fallback (one plan at a time after a failure), so a
/// stale read cannot hide behind it; SQLite answers the same.
#[tokio::test]
async fn a_jobs_messages_see_what_the_messages_before_them_wrote() {
    let cluster = Cluster::start();
    let pg = open(&cluster).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite"), 5000, 64).expect("sqlite");
    before_the_job(&pg).await;
    let pg_ids = suite::spool_many(&pg, 8).await;
    let db = pg.db().await.expect("connection");
    db.batch_execute("BEGIN").await.expect("begin");
    let on_pg = inbound::apply_plans(&db, &dependent_job(&pg_ids), decide)
        .await
        .expect("the job in one pass");
    db.batch_execute("COMMIT").await.expect("commit");
    before_the_job(&sqlite).await;
    let sqlite_ids = suite::spool_many(&sqlite, 8).await;
    let on_sqlite: Vec<InboundOutcome> = sqlite
        .apply_inbound(dependent_job(&sqlite_ids), decide)
        .await
        .expect("sqlite job")
        .into_iter()
        .map(|r| r.expect("sqlite plan"))
        .collect();
    assert_eq!(on_pg, on_sqlite);
    let firsts: Vec<_> = on_pg
        .iter()
        .map(|o| {
            o.delivered
                .first()
                .map(|d| (d.ticket.0, d.created, d.duplicate))
        })
        .collect();
    assert_eq!(
        firsts,
        [
            Some((2, true, false)),
            Some((3, true, false)),
            Some((2, false, true)),
            None,
            Some((2, false, false)),
            Some((3, false, false)),
            Some((4, true, false)),
            Some((4, false, true)),
        ]
    );
    let owners: Vec<_> = on_pg[..2]
        .iter()
        .map(|o| o.delivered[0].owner.clone())
        .collect();
    assert_eq!(owners, [Some("ann".to_string()), Some("bob".to_string())]);
    for s in [&pg as &dyn Store, &sqlite] {
        let contacts = s.list_contacts().await.expect("contacts");
        let c1 = contacts
            .iter()
            .find(|c| c.email == "c1@customer.example")
            .expect("c1");
        assert_eq!(c1.name.as_deref(), Some("C One"));
        for (t, n) in [(2, 2), (4, 1)] {
            let detail = s.ticket(TicketId(t)).await.expect("ticket");
            assert_eq!(detail.messages.len(), n, "ticket {t}: a copy stored?");
        }
        let status = s.status().await.expect("status");
        assert_eq!(
            status.spool_pending, 0,
            "every entry claimed, the dropped one too"
        );
    }
}

/// The conformance suite (`src/store/tests/`), on PostgreSQL: each test on
/// a fresh database of its own private cluster.
mod conformance {
    use crate::store::tests::Fixture;

    async fn open() -> Fixture {
        Fixture {
            store: super::super::open_test_store().await,
            keep: Box::new(()),
        }
    }

    crate::store::tests::conformance!(open);
}

/// An inbox page searching for `words` (open tickets): their numbers.
async fn search(s: &dyn Store, words: &str) -> Vec<i64> {
    let query = InboxQuery {
        view: InboxView::Open,
        status: None,
        owner: None,
        contact: None,
        search: Some(words.into()),
        before: None,
        limit: 50,
    };
    s.inbox(query)
        .await
        .expect("search")
        .iter()
        .map(|t| t.head.number.0)
        .collect()
}

/// `n` new tickets of one message each (bodies stored by reference, no
/// owner), as the conformance suite's plans make them.
async fn store_tickets(s: &dyn Store, n: usize) {
    let ids = suite::spool_many(s, n).await;
    let plans = ids
        .iter()
        .enumerate()
        .map(|(n, id)| inbound(*id, n, suite::unassigned()))
        .collect();
    suite::apply_all(s, plans).await;
}

/// Two tickets of one message each (bodies stored by reference), indexed
/// for search (as the trigger of steps 17 – 20 did in the message's
/// transaction), by a store closed afterwards.
async fn store_two_tickets(cluster: &Cluster) {
    let s = open(cluster).await;
    store_tickets(&s, 2).await;
    assert_eq!(search(&s, "customer").await, [2, 1]);
}

/// Schema step 17 indexes the messages already stored: a database whose
/// messages predate it (the step and its index undone here, as a store
/// migrated by an older postdesk has them) is searchable once migrated,
/// bodies stored by reference and contacts included, and messages after
/// it are indexed by the trigger.
#[tokio::test]
async fn step_17_indexes_the_messages_already_stored() {
    let cluster = Cluster::start();
    store_two_tickets(&cluster).await;
    // A database at step 16: steps 17 and later undone.
    cluster.psql(
        "postdesk",
        "DROP TRIGGER message_search_insert ON messages;
         DROP TABLE message_search;
         DROP FUNCTION postdesk_message_search();
         DROP INDEX tickets_counts;
         DROP TABLE search_pending, search_redo;
         DELETE FROM postdesk_schema WHERE version >= 17;",
    );
    let s = open(&cluster).await;
    assert_eq!(
        cluster.psql("postdesk", "SELECT COUNT(*) FROM message_search"),
        "2"
    );
    assert_eq!(search(&s, "body 1").await, [2], "a body by reference");
    assert_eq!(search(&s, "c0@customer").await, [1], "the contact");
    let more = suite::spool_many(&s, 3).await;
    suite::apply_all(&s, vec![inbound(more[2], 2, suite::unassigned())]).await;
    assert_eq!(search(&s, "C 2").await, [3], "indexed by the trigger");
}

/// Schema step 20 gives each search row its message's ticket: a database
/// at step 19 (the column and the writers that fill it undone here) gets
/// the ticket of every row already there, searches find them, and the
/// trigger fills it for messages after it.
#[tokio::test]
async fn step_20_gives_the_search_rows_their_ticket() {
    let cluster = Cluster::start();
    store_two_tickets(&cluster).await;
    let step_17 = migrations::MIGRATION_17;
    let writers = &step_17[step_17
        .find("CREATE OR REPLACE FUNCTION postdesk_message_search")
        .expect("step 17's writers")
        ..step_17
            .find("CREATE TRIGGER message_search_insert")
            .expect("step 17's trigger")];
    cluster.psql(
        "postdesk",
        &format!(
            "ALTER TABLE message_search DROP COLUMN ticket_id;
             {}
             {writers}
             DROP TABLE search_pending, search_redo;
             DELETE FROM postdesk_schema WHERE version >= 20;",
            server_word_building()
        ),
    );
    let s = open(&cluster).await;
    let rows = "SELECT string_agg(s.message_id || ':' || s.ticket_id, ',' ORDER BY s.message_id),
                       bool_and(s.ticket_id = m.ticket_id)
                  FROM message_search s JOIN messages m ON m.id = s.message_id";
    assert_eq!(cluster.psql("postdesk", rows), "1:1,2:2|t");
    assert_eq!(search(&s, "body 1").await, [2]);
    assert_eq!(search(&s, "c0@customer").await, [1]);
    let more = suite::spool_many(&s, 3).await;
    suite::apply_all(&s, vec![inbound(more[2], 2, suite::unassigned())]).await;
    assert_eq!(
        search(&s, "C 2").await,
        [3],
        "indexed after its transaction"
    );
    assert_eq!(cluster.psql("postdesk", rows), "1:1,2:2,3:3|t");
}

/// Messages are indexed for search after their transaction, by the
/// node's indexer (no search needed); and a search waits for what an
/// indexer is writing at that moment, so it finds every message
/// committed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_indexed_after_commit_and_a_search_waits_for_the_indexer() {
    let cluster = Cluster::start();
    let s = Arc::new(open(&cluster).await);
    store_tickets(&*s, 3).await;
    settled(&cluster, "3/0").await;
    // An indexer in the middle of indexing message 1: queued again, and
    // locked by this transaction (retried if the node's indexer took it
    // first).
    let mut db = s.db().await.expect("db");
    let tx = loop {
        cluster.psql(
            "postdesk",
            "DELETE FROM message_search WHERE message_id = 1;
             INSERT INTO search_pending (message_id) VALUES (1);",
        );
        let tx = db.transaction().await.expect("begin");
        let held = tx
            .query(
                "SELECT 1 FROM search_pending WHERE message_id = 1 FOR UPDATE",
                &[],
            )
            .await
            .expect("lock");
        if held.len() == 1 {
            break tx;
        }
        tx.rollback().await.expect("rollback");
    };
    assert_eq!(s.queues().await.expect("queues").search_pending, 1);
    let searching = tokio::spawn({
        let s = s.clone();
        async move { search(&*s, "body 0").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !searching.is_finished(),
        "the search did not wait for the indexer"
    );
    indexer::index_in(&tx, 10, false, indexer::Queue::Pending)
        .await
        .expect("index");
    tx.commit().await.expect("commit");
    assert_eq!(searching.await.expect("search"), [1]);
}

/// A message whose search row the server refuses (here: a trigger that
/// fails on message 1) is left out of the index alone: the 59 messages
/// taken in the same batch are written one by one, searches find them,
/// and the queue empties.
#[tokio::test]
async fn a_message_that_cannot_be_indexed_blocks_nothing() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    cluster.psql(
        "postdesk",
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.message_id = 1 THEN RAISE EXCEPTION 'cannot index'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_one BEFORE INSERT ON message_search
             FOR EACH ROW EXECUTE FUNCTION refuse_one();",
    );
    store_tickets(&s, 60).await;
    assert_eq!(search(&s, "body 59").await, [60]);
    assert_eq!(search(&s, "body 30").await, [31]);
    assert_eq!(search(&s, "body 0").await, Vec::<i64>::new());
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT (SELECT MIN(message_id) || '-' || MAX(message_id) || ':' || COUNT(*)
                       FROM message_search)
                 || '/' || (SELECT COUNT(*) FROM search_pending)"
        ),
        "2-60:59/0"
    );
}

/// The server's word building of steps 17 – 22 (its functions, which
/// step 23 drops), to make a database as those steps left it.
fn server_word_building() -> String {
    let m17 = migrations::MIGRATION_17;
    let start = m17
        .find("CREATE FUNCTION postdesk_search_text")
        .expect("step 17's folding");
    let end = m17
        .find("CREATE TABLE message_search")
        .expect("step 17's table");
    format!("{}\n{}", &m17[start..end], migrations::MIGRATION_19)
}

/// Until step 23's redo reaches them, rows the server indexed are found by
/// searches postdesk makes: over text in many scripts, accents (composed
/// and decomposed), addresses, punctuation runs and long bodies, the
/// server's words (steps 19 – 22) and postdesk's are the same vector.
#[tokio::test]
async fn words_made_by_postdesk_are_the_servers_words() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    cluster.psql("postdesk", &server_word_building());
    let mut samples: Vec<String> = [
        "Crème brûlée à São Paulo, Zoë's naïve café",
        "e\u{301}te\u{301} x\u{301}\u{300}y",
        "c1@customer.example <John Carter> \"quoted\" [#42-k3f9] 50%!",
        "Re: Fwd: AW: Invoice #2024-001 (overdue) -- please/advise; thanks_a_lot",
        "Grüße aus München, Straße 5 / Ärger über Öl",
        "día, año, pingüino; garçon, œuvre, Åse, Øystein",
        "",
        " ",
        "!!!",
        "a--b..c__d",
        "x1y2 3z 42 3.14 1,000,000",
        "https://example.com/path?q=1&r=2#frag user+tag@sub.example.org",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    samples.push("Grüße, Frank! ".repeat(500));
    samples.push("plain ascii words, ".repeat(2_000));
    let db = s.db().await.expect("db");
    // A database of locale C lowers only ASCII letters (documented): there
    // the samples are compared in lower case already.
    let ctype: String = db
        .query_one("SHOW lc_ctype", &[])
        .await
        .expect("lc_ctype")
        .get(0);
    if matches!(ctype.as_str(), "C" | "POSIX") {
        samples = samples.iter().map(|t| t.to_lowercase()).collect();
    }
    let mut differ = Vec::new();
    for t in &samples {
        let ours = words::vector([t.as_str()]);
        let r = db
            .query_one(
                "SELECT to_tsvector('simple', postdesk_search_text($1)) = $2::text::tsvector,
                        to_tsvector('simple', postdesk_search_text($1))::text",
                &[t, &ours],
            )
            .await
            .expect("compare");
        if !r.get::<_, bool>(0) {
            differ.push(format!(
                "{t:.60}: server {:.200}, postdesk {ours:.200}",
                r.get::<_, String>(1)
            ));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
    // The comparison sees a difference.
    let off: bool = db
        .query_one(
            "SELECT to_tsvector('simple', postdesk_search_text($1)) = $2::text::tsvector",
            &[&"one two", &words::vector(["one two three"])],
        )
        .await
        .expect("compare")
        .get(0);
    assert!(!off);
}

/// Schema step 23 queues the rows the server indexed for indexing again:
/// a database at step 22 (the server's word building restored here, and
/// its rows marked) has them all in `search_redo` once migrated; the
/// indexer works through it and each row becomes postdesk's vector, found
/// by search all along.
#[tokio::test]
async fn step_23_indexes_the_servers_rows_again() {
    let (step_20, step_21) = (migrations::MIGRATION_20, migrations::MIGRATION_21);
    let cluster = Cluster::start();
    store_two_tickets(&cluster).await;
    cluster.psql(
        "postdesk",
        &format!(
            "{}
             {}
             {}
             DROP TABLE search_redo;
             UPDATE message_search s SET words = words || to_tsvector('simple', 'server');
             DELETE FROM postdesk_schema WHERE version >= 23;",
            server_word_building(),
            &step_21[step_21
                .find("CREATE FUNCTION postdesk_message_words")
                .expect("step 21's functions")..],
            &step_20[step_20
                .find("CREATE OR REPLACE FUNCTION postdesk_search_fill")
                .expect("step 20's fill")
                ..step_20
                    .find("UPDATE message_search")
                    .expect("step 20's update")]
        ),
    );
    let s = open(&cluster).await;
    let left = "SELECT (SELECT COUNT(*) FROM search_redo) || '/' ||
                       (SELECT COUNT(*) FROM message_search WHERE words @@ 'server'::tsquery)";
    let first = cluster.psql("postdesk", left);
    assert!(
        ["2/2", "1/1", "0/0"].contains(&first.as_str()),
        "queued for redo: {first}"
    );
    assert_eq!(search(&s, "body 1").await, [2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.psql("postdesk", left) != "0/0" {
        assert!(
            std::time::Instant::now() < deadline,
            "not redone: {}",
            cluster.psql("postdesk", left)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(search(&s, "body 1").await, [2]);
    assert_eq!(search(&s, "c0@customer").await, [1]);
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*) FROM pg_proc
              WHERE proname LIKE 'postdesk_search%' OR proname = 'postdesk_message_words'"
        ),
        "0",
        "the server's word building is gone"
    );
}

/// A body of more distinct words than a `tsvector` holds (1 MB) is stored
/// all the same, and found by the words of its start; the index takes any
/// word, however long.
#[tokio::test]
async fn a_body_beyond_a_tsvector_is_stored_and_found_by_its_start() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    let ids = suite::spool_many(&s, 1).await;
    let mut p = suite::inbound(ids[0], 0, suite::unassigned());
    let words: Vec<String> = (0..80_000u64)
        .map(|i| format!("w{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let body = format!("{} {}", words.join(" "), "z".repeat(5000));
    p.messages[0].text = BodyText::Inline(body);
    suite::apply_all(&s, vec![p]).await;
    assert_eq!(search(&s, &words[0]).await, [1]);
    assert_eq!(search(&s, &words[1000]).await, [1]);
    assert_eq!(search(&s, "c0@customer.example").await, [1], "the sender");
    let t = s.ticket(TicketId(1)).await.expect("ticket");
    let whole = t.messages[0].text.as_deref().map_or(0, str::len);
    assert!(whole > 1_000_000, "the body is whole: {whole}");
}

/// Large raw messages into `bytea`: the time of `spool()` and of reading the
/// bytes back, and this process's peak resident memory, for 10 MB and 25 MB.
/// A measurement, not a check: run it by hand (docs/performance.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --lib large_messages -- --ignored --nocapture"]
async fn large_messages() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    let peak = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|st| {
                st.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
            })
            .unwrap_or_default()
    };
    for mb in [10usize, 25] {
        let mut msg = spool_msg(mb);
        let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
        let mut raw = b"Subject: big\r\n\r\n".to_vec();
        while raw.len() < mb << 20 {
            raw.extend_from_slice(line);
        }
        msg.raw = raw;
        let len = msg.raw.len();
        let t = std::time::Instant::now();
        let id = s.spool(msg).await.expect("spool").id;
        let write = t.elapsed();
        let t = std::time::Instant::now();
        let back = s.raw(id).await.expect("raw");
        let read = t.elapsed();
        assert_eq!(back.len(), len);
        println!(
            "{mb} MB: spool {write:?}, read back {read:?}, peak RSS of the test process {}",
            peak()
        );
    }
}

/// Outbox claims (nodes sharing the store): nodes claiming at once get
/// disjoint entries; a live claim keeps every other node off its entries
/// (a flush included) until it is given up or runs out; a node extends
/// only its own claims; a recorded attempt is due for no one.
#[tokio::test]
async fn outbox_claims_keep_nodes_off_each_others_entries() {
    use std::collections::HashSet;
    let store = open_test_store().await;
    let s = &*store;
    let spool = suite::spool_many(s, 1).await;
    suite::open_ticket(s, spool[0], 1).await;
    for i in 0..4 {
        let id = format!("pd.{i}@desk.acme.example");
        s.queue_reply(suite::reply_on(1, &id), replay)
            .await
            .expect("queue");
    }
    let node = |n: &str, lease_ms| OutboxClaim {
        node: n.into(),
        lease_ms,
    };
    let due = |n: &'static str| async move {
        s.due_outbox(node(n, 60_000), i64::MAX, 10)
            .await
            .expect("due")
            .iter()
            .map(|i| i.id)
            .collect::<HashSet<OutboxId>>()
    };
    let (a, b) = tokio::join!(
        s.due_outbox(node("a", 60_000), i64::MAX, 2),
        s.due_outbox(node("b", 60_000), i64::MAX, 10)
    );
    let a: HashSet<OutboxId> = a.expect("a").iter().map(|i| i.id).collect();
    let b: HashSet<OutboxId> = b.expect("b").iter().map(|i| i.id).collect();
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    assert_eq!(a.len() + b.len(), 4, "{a:?} {b:?}");
    s.flush_outbox().await.expect("flush");
    assert!(
        due("c").await.is_empty(),
        "claimed entries are no one else's"
    );
    // c cannot give up (or extend) b's claims; a gives its own up.
    s.extend_outbox_claims(node("c", 0), b.iter().copied().collect())
        .await
        .expect("extend");
    s.extend_outbox_claims(node("a", 0), a.iter().copied().collect())
        .await
        .expect("release");
    assert_eq!(due("c").await, a, "a's entries, given up, go to c");
    for id in &a {
        s.record_attempt(
            *id,
            AttemptOutcome::Sent {
                reply: "250 ok".into(),
            },
        )
        .await
        .expect("sent");
    }
    // b's claims run out (as if b died): d takes exactly them.
    s.extend_outbox_claims(node("b", 0), b.iter().copied().collect())
        .await
        .expect("expire");
    assert_eq!(due("d").await, b);
}

/// Several nodes on one database: spool claims, the registry, dedupe and
/// balancing under concurrent transactions of different nodes.
mod nodes {
    use std::time::Duration;

    use super::*;

    /// A store as node `id` with claims lasting `lease`.
    async fn node(cluster: &Cluster, id: &str, lease: Duration) -> Arc<PostgresStore> {
        Arc::new(open(cluster).await.with_node(Node::new(id, lease)))
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn nobody() -> RoutingPlan {
        RoutingPlan::Unassigned {
            reason: "nobody".into(),
        }
    }

    fn ids(entries: &[SpoolEntry]) -> Vec<SpoolId> {
        entries.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn spool_claims_keep_to_their_node_until_they_expire() {
        let cluster = Cluster::start();
        let a = node(&cluster, "a", HOUR).await;
        let b = node(&cluster, "b", HOUR).await;
        // A node that dies at once: its claims are expired when made.
        let dead = node(&cluster, "dead", Duration::ZERO).await;
        let mine = a.spool(spool_msg(1)).await.expect("spool").id;
        let orphan = dead.spool(spool_msg(2)).await.expect("spool").id;

        // b may take the dead node's entry, never a's live one.
        let taken = b.pending_spool(SpoolId(0), 10).await.expect("scan");
        assert_eq!(ids(&taken), [orphan]);
        assert_eq!(taken[0].raw, spool_msg(2).raw);
        // a still has its own; the orphan is b's now.
        assert_eq!(
            ids(&a.pending_spool(SpoolId(0), 10).await.expect("scan")),
            [mine]
        );
        assert_eq!(
            cluster.psql("postdesk", "SELECT claimed_by FROM spool ORDER BY id"),
            "a\nb"
        );
        // Both nodes apply the orphan at once: one ticket.
        let plan = || vec![suite::inbound(orphan, 2, nobody())];
        let (x, y) = tokio::join!(
            a.apply_inbound(plan(), decide),
            b.apply_inbound(plan(), decide)
        );
        let delivered: usize = [x, y]
            .into_iter()
            .flat_map(|r| r.expect("apply"))
            .map(|r| r.expect("plan").delivered.len())
            .sum();
        assert_eq!(delivered, 1);
        assert_eq!(
            cluster.psql("postdesk", "SELECT COUNT(*) FROM tickets"),
            "1"
        );
    }

    #[tokio::test]
    async fn nodes_register_heartbeat_and_leave() {
        let cluster = Cluster::start();
        let a = node(&cluster, "a", HOUR).await;
        let b = node(&cluster, "b", Duration::from_secs(5)).await;
        assert!(a.nodes().await.expect("nodes").is_empty());
        for (s, addr) in [
            (&a, "smtp 127.0.0.1:25 http 127.0.0.1:80"),
            (&b, "smtp x http y"),
        ] {
            let beat = NodeBeat {
                address: addr.into(),
                started_at: 7,
            };
            assert!(s.heartbeat(beat).await.expect("beat"));
        }
        a.spool(spool_msg(1)).await.expect("spool");
        let listed = b.nodes().await.expect("nodes");
        let now = now_ms();
        let summary: Vec<_> = listed
            .iter()
            .map(|n| {
                (
                    n.id.as_str(),
                    n.address.as_str(),
                    n.started_at,
                    n.leases,
                    n.alive(now),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", "smtp 127.0.0.1:25 http 127.0.0.1:80", 7, 1, true),
                ("b", "smtp x http y", 7, 0, true)
            ]
        );
        assert_eq!(listed[1].lease_ms, 5000);
        // A heartbeat older than the lease: presumed dead.
        assert!(!listed[1].alive(listed[1].last_heartbeat + 5000));
        a.leave().await.expect("leave");
        let left: Vec<String> = b
            .nodes()
            .await
            .expect("nodes")
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(left, ["b"]);
    }

    /// The same message accepted by two nodes (a retry after a lost 250),
    /// each node ingesting its copy at the same moment: one ticket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_accepted_by_two_nodes_is_one_ticket() {
        let cluster = Cluster::start();
        let a = node(&cluster, "a", HOUR).await;
        let b = node(&cluster, "b", HOUR).await;
        for round in 0..20 {
            let n = 100 + round;
            let on_a = a.spool(spool_msg(n)).await.expect("spool").id;
            let on_b = b.spool(spool_msg(n)).await.expect("spool").id;
            let plan = |id| vec![suite::inbound(id, n, nobody())];
            let (x, y) = tokio::join!(
                a.apply_inbound(plan(on_a), decide),
                b.apply_inbound(plan(on_b), decide)
            );
            let outcomes: Vec<_> = [x, y]
                .into_iter()
                .flat_map(|r| r.expect("apply"))
                .flat_map(|r| r.expect("plan").delivered)
                .collect();
            assert_eq!(
                outcomes.iter().filter(|d| d.duplicate).count(),
                1,
                "{outcomes:?}"
            );
            assert_eq!(outcomes[0].ticket, outcomes[1].ticket);
        }
        assert_eq!(
            cluster.psql(
                "postdesk",
                "SELECT COUNT(*), COUNT(DISTINCT dedupe_key) FROM messages"
            ),
            "20|20"
        );
    }

    /// 30 new tickets balanced over three agents by three nodes at once:
    /// 10 each, whichever node took which.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn balancing_across_nodes_is_even() {
        let cluster = Cluster::start();
        let mut stores = Vec::new();
        for id in ["a", "b", "c"] {
            stores.push(node(&cluster, id, HOUR).await);
        }
        let balance = RoutingPlan::Balance {
            users: vec!["ann".into(), "bob".into(), "cy".into()],
            reason_if_none: "nobody".into(),
        };
        let mut tasks = Vec::new();
        for n in 0..30 {
            let s = stores[n % 3].clone();
            let balance = balance.clone();
            tasks.push(tokio::spawn(async move {
                let id = s.spool(spool_msg(n)).await.expect("spool").id;
                let out = s
                    .apply_inbound(vec![suite::inbound(id, n, balance)], decide)
                    .await
                    .expect("apply");
                out.into_iter().all(|r| r.is_ok())
            }));
        }
        for t in tasks {
            assert!(t.await.expect("task"));
        }
        assert_eq!(
            cluster.psql(
                "postdesk",
                "SELECT owner || '=' || COUNT(*) FROM tickets GROUP BY owner ORDER BY owner"
            ),
            "ann=10\nbob=10\ncy=10"
        );
    }
}

/// The indexer outlives its database going away: with the server stopped
/// its rounds fail (and are logged), and once the server is back it takes
/// the queue up again by itself — no search, no restart of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_resumes_after_the_database_comes_back() {
    let mut cluster = Cluster::start();
    let s = open(&cluster).await;
    store_tickets(&s, 3).await;
    settled(&cluster, "3/0").await;
    cluster.stop();
    // Longer than the indexer's poll: at least one of its rounds fails.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    cluster.restart();
    cluster.psql(
        "postdesk",
        "DELETE FROM message_search;
         INSERT INTO search_pending (message_id) SELECT id FROM messages;",
    );
    assert_eq!(cluster.psql("postdesk", SEARCH_STATE), "0/3");
    settled(&cluster, "3/0").await;
}

/// Messages indexed / still queued.
const SEARCH_STATE: &str =
    "SELECT (SELECT COUNT(*) FROM message_search) || '/' || (SELECT COUNT(*) FROM search_pending)";

/// Wait (20 s at most) until [`SEARCH_STATE`] reads `want`.
async fn settled(cluster: &Cluster, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.psql("postdesk", SEARCH_STATE) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "want {want}, have {}",
            cluster.psql("postdesk", SEARCH_STATE)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The indexer reads a bounded amount of body a round: of three queued
/// messages with 9 MB bodies (inline, stored by reference in its raw mail,
/// inline) no round takes two (16 MB a round), so a burst of large mail is
/// never held in memory at once; the third goes with the small ones after
/// it. (A body by reference counted as nothing would be taken with the
/// third: `[1, 7]`.)
#[tokio::test]
async fn an_index_round_reads_a_bounded_amount_of_body() {
    let cluster = Cluster::start();
    let s = open(&cluster).await;
    let big = "word ".repeat((9 << 20) / 5);
    let mut plans = Vec::new();
    for n in 0..3 {
        let mut msg = spool_msg(n);
        let head = format!("Subject: {n}\r\n\r\n");
        msg.raw = format!("{head}{big}").into_bytes();
        let id = s.spool(msg).await.expect("spool").id;
        let mut p = inbound(id, n, suite::unassigned());
        p.messages[0].text = if n == 1 {
            BodyText::RawFrom(head.len())
        } else {
            BodyText::Inline(big.clone())
        };
        plans.push(p);
    }
    for (n, id) in suite::spool_many(&s, 8)
        .await
        .into_iter()
        .enumerate()
        .skip(3)
    {
        plans.push(inbound(id, n, suite::unassigned()));
    }
    suite::apply_all(&s, plans).await;
    settled(&cluster, "8/0").await;
    // The node gone (its indexer with it), every message queued again and
    // indexed by the rounds below alone.
    drop(s);
    cluster.psql(
        "postdesk",
        "DELETE FROM message_search; INSERT INTO search_pending (message_id) SELECT id FROM messages;",
    );
    let config = parse_url(&cluster.url("postdesk")).expect("url");
    let pool = migrated_pool(config, None, 2).await.expect("pool");
    let mut db = pool.get().await.expect("db");
    let mut rounds = Vec::new();
    loop {
        match indexer::index(&mut db, 500, true, indexer::Queue::Pending).await {
            Ok(0) => break,
            Ok(n) => rounds.push(n),
            Err(e) => panic!("index: {e}"),
        }
    }
    assert_eq!(rounds, [1, 1, 6]);
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*) FROM message_search WHERE words @@ 'word'::tsquery"
        ),
        "3"
    );
}
