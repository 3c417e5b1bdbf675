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
    for (bad, says) in [
        ("", "empty"),
        ("mysql://x", "not a PostgreSQL"),
        ("postgresql://pd@h/desk?sslmode=require", "TLS"),
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
    let due = s.due_outbox(i64::MAX, 10).await.expect("due");
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
    let submitted = s
        .submit(form_spool.clone(), form.clone(), decide)
        .await
        .expect("submit");
    let resubmitted = s.submit(form_spool, form, decide).await.expect("resubmit");
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
    s.set_mailbox_state(
        "mailbox".into(),
        "INBOX".into(),
        MailboxState::Backoff,
        Some("boom".into()),
        None,
    )
    .await
    .expect("state");
    s.set_mailbox_state(
        "mailbox".into(),
        "INBOX".into(),
        MailboxState::Idle,
        None,
        None,
    )
    .await
    .expect("state");
    let checkpoint = s
        .checkpoint("mailbox".into(), "INBOX".into())
        .await
        .expect("checkpoint");
    let skipped = s
        .skipped_uids("mailbox".into(), "INBOX".into(), 7)
        .await
        .expect("skipped");
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
    s.reset_checkpoint("mailbox".into(), "INBOX".into(), 8)
        .await
        .expect("reset");
    let after_reset = s
        .skipped_uids("mailbox".into(), "INBOX".into(), 7)
        .await
        .expect("skipped");

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
        "queues": s.queues().await.expect("queues"),
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

/// The web inbox's search has no index on PostgreSQL yet: a page with
/// words to search is refused with `Unsupported`, naming the feature and
/// the backend — never answered with the unfiltered list. Blank words are
/// no search and list as usual.
#[tokio::test]
async fn inbox_search_is_refused_not_ignored() {
    let store = super::open_test_store().await;
    let query = |search: &str| InboxQuery {
        view: InboxView::Open,
        status: None,
        owner: None,
        contact: None,
        search: Some(search.into()),
        before: None,
        limit: 50,
    };
    match store.inbox(query("printer")).await {
        Err(StoreError::Unsupported(m)) => {
            assert!(m.contains("search") && m.contains("PostgreSQL"), "{m}")
        }
        other => panic!("search answered {other:?}"),
    }
    assert_eq!(store.inbox(query("  ")).await.expect("blank").len(), 0);
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
