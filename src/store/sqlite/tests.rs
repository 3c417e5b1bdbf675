//! SQLite store tests: the conformance suite (`src/store/tests/`) on SQLite,
//! and what only this backend has — group commit and its writer thread,
//! savepoints, migrations, the WAL, query plans, file modes, the outbox
//! tally's triggers, fault injection by trigger.

use super::inbound::BY_MESSAGE_ID;
use super::*;
use crate::store::tests::*;
use rusqlite::ffi;

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(&dir.path().join("db/test.sqlite"), 5000, 256).expect("open");
    (dir, Arc::new(s))
}

/// The conformance suite (`src/store/tests/`), on SQLite.
mod conformance {
    /// A fresh store in a temporary directory.
    async fn open() -> crate::store::tests::Fixture {
        let (dir, store) = super::store();
        crate::store::tests::Fixture {
            store,
            keep: Box::new(dir),
        }
    }

    crate::store::tests::conformance!(open);
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
        .submit(
            Submission {
                spool: form.clone(),
                messages: vec![m.clone()],
            },
            decide,
        )
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
    let submission = Submission {
        spool: form,
        messages: vec![m],
    };
    let out = s.submit(submission, decide).await.expect("submit");
    assert_eq!(out.delivered[0].ticket, TicketId(1));
    assert!(!out.delivered[0].duplicate);
    let st = s.status().await.expect("status");
    assert_eq!(
        (st.spool_total, st.contacts, st.tickets, st.messages),
        (1, 1, 1, 1)
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
    let ids = spool_many(&*s, 3).await;
    open_ticket(&*s, ids[0], 1).await;
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
            s.queue_reply(reply_on(1, &mid), replay)
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
    s.apply_inbound(
        vec![
            bounce_plan(ids[1], 10, &["pd.1.a@desk.acme.example"], true),
            // A second report for the same reply counts it once.
            bounce_plan(ids[2], 11, &["pd.1.a@desk.acme.example"], true),
        ],
        decide,
    )
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

/// A database at `path` as a postdesk of schema `version` left it: the
/// first `version` migrations, then `data` (which sets `user_version`), in
/// one transaction.
fn database_at(path: &std::path::Path, version: usize, data: &str) {
    let mut c = Connection::open(path).expect("open raw");
    c.execute_batch("PRAGMA journal_mode = WAL;").expect("wal");
    let tx = c.transaction().expect("tx");
    for sql in &MIGRATIONS[..version] {
        tx.execute_batch(sql).expect("migration");
    }
    tx.execute_batch(data).expect("old data");
    tx.commit().expect("commit");
}

/// A store of schema 6 with replies in every state gets a tally equal to
/// what it holds.
#[tokio::test]
async fn migration_7_counts_the_outbox_already_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v6.sqlite");
    database_at(
        &path,
        6,
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
    );
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let tally = s.queues().await.expect("queues").outbox;
    assert_eq!(tuple(&tally), (1, 3, 1, 2));
    let full = s.read(|c| Ok(counted(c)?)).await.expect("count");
    assert_eq!(tuple(&tally), tuple(&full));
}

/// The body that is the raw message's tail is stored as an offset, not a
/// second copy; text that is not keeps its own copy.
#[tokio::test]
async fn text_that_is_the_raw_tail_is_stored_once() {
    let (_dir, s) = store();
    let at = raw_tail_text_reads_back_whole(&*s).await;
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
        vec![(None, Some(at as i64)), (Some("Body".into()), None)]
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

/// The inbox's view counts, on every inbox page, read the covering index
/// (step 18), not the tickets' rows.
#[tokio::test]
async fn the_view_counts_read_a_covering_index() {
    let (_dir, s) = store();
    let plan = s
        .read(|c| {
            let mut st = c.prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                crate::store::web::counts_sql()
            ))?;
            let rows = st.query_map(["ann"], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("plan");
    assert!(
        plan.iter()
            .any(|d| d.contains("COVERING INDEX tickets_counts")),
        "{plan:?}"
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
    // A database as a postdesk of schema 4 left it, with a reply queued.
    database_at(
        &path,
        4,
        "INSERT INTO contacts (id, email, created_at) VALUES (1, 'c@customer.example', 0);
         INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
           VALUES (1, 'support', 1, 'Hi', 0, 0);
         INSERT INTO messages (id, ticket_id, channel, direction, message_id, created_at)
           VALUES (1, 1, 'support', 'outbound', 'r1@acme.example', 0);
         INSERT INTO outbox (id, message_id, channel, mail_from, rcpt_to, raw, next_attempt_at, created_at)
           VALUES (7, 1, 'support', 'support@acme.example', '[\"c@customer.example\"]',
                   X'5375626A6563743A2048690D0A0D0A6F6B0D0A', 0, 0);
         PRAGMA user_version = 4;",
    );
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let due = s.due_outbox(claim(), 1, 10).await.expect("due");
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
    database_at(
        &path,
        8,
        "INSERT INTO api_tokens (token_hash, user_id, created_at) VALUES ('aa11', 'ann', 5);
         PRAGMA user_version = 8;",
    );
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
    database_at(
        &path,
        10,
        "INSERT INTO contacts (id, email, created_at) VALUES (1, 'c@customer.example', 0);
         INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
           VALUES (1, 'support', 1, 'Hi', 0, 0);
         INSERT INTO messages (id, ticket_id, channel, direction, message_id, delivery, created_at)
           VALUES (1, 1, 'support', 'outbound', 'r1@acme.example', 'queued', 0);
         INSERT INTO outbox (id, message_id, channel, mail_from, rcpt_to, state, next_attempt_at, created_at)
           VALUES (7, 1, 'support', 's@acme.example', '[\"c@customer.example\"]', 'queued', 0, 0);
         INSERT INTO outbox_raw (id, raw) VALUES (7, X'6869');
         PRAGMA user_version = 10;",
    );
    let s = SqliteStore::open(&path, 1000, 8).expect("migrates");
    let due = s.due_outbox(claim(), i64::MAX, 10).await.expect("due");
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

fn sqlite_error(code: std::ffi::c_int) -> StoreError {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), None).into()
}

/// The SQLite edge keeps full disk and lock contention apart and turns
/// any other error into the backend-neutral `Backend`, with the text it
/// always had; all of them stay temporary.
#[test]
fn sqlite_errors_map_to_backend_neutral_variants() {
    assert!(matches!(sqlite_error(ffi::SQLITE_FULL), StoreError::Full));
    assert!(matches!(sqlite_error(ffi::SQLITE_BUSY), StoreError::Busy));
    assert!(matches!(sqlite_error(ffi::SQLITE_LOCKED), StoreError::Busy));
    let other = sqlite_error(ffi::SQLITE_CORRUPT);
    assert!(matches!(other, StoreError::Backend(_)), "{other:?}");
    assert!(other.to_string().starts_with("sqlite: "), "{other}");
    let rows = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
    assert_eq!(rows.to_string(), "sqlite: Query returned no rows");
    for e in [
        sqlite_error(ffi::SQLITE_FULL),
        sqlite_error(ffi::SQLITE_BUSY),
        other,
        rows,
    ] {
        assert!(e.is_temporary(), "{e:?}");
    }
    assert!(!StoreError::NotFound("ticket 9".into()).is_temporary());
}

/// The web inbox's lists: views, filters, newest activity first, paged by
/// cursor; counts; the activity counter. (Search, on both backends: the
/// conformance suite's `inbox_search_words_prefixes_contacts_and_hostile_input`.)
#[tokio::test]
async fn inbox_views_and_paging() {
    let (_d, s) = store();
    let ids = spool_many(&*s, 4).await;
    let before = s.activity().await.expect("activity");
    let mut plans = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut p = inbound(*id, n, unassigned());
        let m = &mut p.messages[0];
        m.text = match n {
            0 => BodyText::Inline("The printer is on fire".into()),
            // spool_msg's raw ends with its body: stored by reference.
            1 => BodyText::RawFrom(format!("Subject: {n}\r\n\r\n").len()),
            _ => BodyText::Inline("nothing to see".into()),
        };
        plans.push(p);
    }
    apply_all(&*s, plans).await;
    assert!(s.activity().await.expect("activity") > before);
    s.update_ticket(
        TicketId(3),
        TicketUpdate {
            status: Some("closed".into()),
            ..TicketUpdate::default()
        },
    )
    .await
    .expect("close");
    s.update_ticket(
        TicketId(4),
        TicketUpdate {
            owner: Some(Some("ann".into())),
            ..TicketUpdate::default()
        },
    )
    .await
    .expect("assign");
    let q = |view: InboxView, search: Option<&str>| InboxQuery {
        view,
        status: None,
        owner: None,
        contact: None,
        search: search.map(str::to_string),
        before: None,
        limit: 50,
    };
    let numbers = |v: Vec<TicketSummary>| v.iter().map(|t| t.head.number.0).collect::<Vec<_>>();
    let open = s.inbox(q(InboxView::Open, None)).await.expect("open");
    assert_eq!(
        numbers(open),
        [4, 2, 1],
        "last activity first, closed left out"
    );
    assert_eq!(
        numbers(s.inbox(q(InboxView::Closed, None)).await.expect("closed")),
        [3]
    );
    assert_eq!(
        numbers(
            s.inbox(q(InboxView::Mine("ann".into()), None))
                .await
                .expect("mine")
        ),
        [4]
    );
    assert_eq!(
        numbers(s.inbox(q(InboxView::Unassigned, None)).await.expect("un")),
        [2, 1]
    );
    // Paging: the cursor of the first page's last ticket.
    let mut first = q(InboxView::Open, None);
    first.limit = 2;
    let page1 = s.inbox(first.clone()).await.expect("page 1");
    let last = page1.last().expect("a ticket").head.clone();
    first.before = Some((last.updated_at, last.number.0));
    assert_eq!(numbers(page1), [4, 2]);
    assert_eq!(numbers(s.inbox(first).await.expect("page 2")), [1]);
    let counts = s.inbox_counts("ann".into()).await.expect("counts");
    assert_eq!(
        (counts.mine, counts.unassigned, counts.open, counts.closed),
        (1, 2, 3, 1)
    );
    assert_eq!(counts.channels, [("support".to_string(), 3)]);
}

/// A ticket list or inbox page filtered by contact, owner or status finds
/// its tickets through an index, not a scan of every ticket: the WHERE
/// clause holds only the filters given (200,000 tickets: a scan took 0.5 s
/// for `tickets list --contact`, the index 0.01 s).
#[tokio::test]
async fn ticket_filters_search_their_index() {
    let (_dir, s) = store();
    let some = |v: &str| Some(v.to_string());
    let inbox = |view: InboxView, contact: Option<String>| InboxQuery {
        view,
        status: None,
        owner: None,
        contact,
        search: None,
        before: None,
        limit: 50,
    };
    let queries = vec![
        (
            "list --contact",
            list_tickets_query(&TicketFilter {
                contact: some(" X@Example.com "),
                ..TicketFilter::default()
            }),
            ["sqlite_autoindex_contacts_1", "tickets_contact"].as_slice(),
        ),
        (
            "list --owner",
            list_tickets_query(&TicketFilter {
                owner: some("ann"),
                limit: Some(20),
                ..TicketFilter::default()
            }),
            ["tickets_owner"].as_slice(),
        ),
        (
            "list --owner --status",
            list_tickets_query(&TicketFilter {
                owner: some("ann"),
                status: some("open"),
                ..TicketFilter::default()
            }),
            ["tickets_owner"].as_slice(),
        ),
        (
            "inbox open, contact",
            web::inbox_query(&inbox(InboxView::Open, some("x@example.com"))),
            ["sqlite_autoindex_contacts_1", "tickets_contact"].as_slice(),
        ),
        (
            "inbox mine",
            web::inbox_query(&inbox(InboxView::Mine("ann".into()), None)),
            ["tickets_owner"].as_slice(),
        ),
    ];
    for (what, (sql, params), indexes) in queries {
        // Only the filters given are bound: no `?N IS NULL` left behind.
        assert!(!sql.contains("IS NULL OR"), "{what}: {sql}");
        let plan = query_plan(&s, sql, params).await;
        assert!(
            !plan.iter().any(|d| d.starts_with("SCAN t")),
            "{what}: {plan:?}"
        );
        for index in indexes {
            assert!(
                plan.iter().any(|d| d.contains(&format!("INDEX {index} "))),
                "{what}: no {index} in {plan:?}"
            );
        }
    }
}

/// A search reads the matching tickets off the full-text index (its rowid
/// carries the ticket, schema step 20): no lookup of each matching message,
/// which cost a common word's search ≈ 150 ms on a million messages.
#[tokio::test]
async fn a_search_reads_tickets_off_its_index() {
    let (_dir, s) = store();
    let (sql, params) = web::inbox_query(&InboxQuery {
        view: InboxView::Open,
        status: None,
        owner: None,
        contact: None,
        search: Some("invoice".into()),
        before: None,
        limit: 50,
    });
    let plan = query_plan(&s, sql, params).await;
    assert!(
        plan.iter()
            .any(|d| d.contains("message_search VIRTUAL TABLE")),
        "{plan:?}"
    );
    assert!(
        !plan
            .iter()
            .any(|d| d.starts_with("SEARCH m USING INTEGER PRIMARY KEY")),
        "a lookup of each matching message: {plan:?}"
    );
}

/// Step 20 re-indexes the messages already stored under their ticket: a
/// store of schema 19 finds its old messages by a word of their subject,
/// body or sender, in the right ticket, and the messages stored after it.
#[tokio::test]
async fn migration_20_reindexes_the_messages_already_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v19.sqlite");
    database_at(
        &path,
        19,
        "INSERT INTO contacts (id, email, name, created_at)
           VALUES (1, 'c@customer.example', 'Carla Customer', 0),
                  (2, 'd@customer.example', NULL, 0);
         INSERT INTO tickets (id, channel, contact_id, subject, created_at, updated_at)
           VALUES (1, 'support', 1, 'Printer', 0, 1), (2, 'support', 2, 'Invoice', 0, 2);
         INSERT INTO messages (id, ticket_id, channel, direction, subject, text, from_email, created_at)
           VALUES (1, 1, 'support', 'inbound', 'Printer', 'it jams', 'c@customer.example', 0),
                  (2, 2, 'support', 'inbound', 'Invoice', 'twice charged', 'd@customer.example', 0),
                  (3, 1, 'support', 'inbound', 'Re: Printer', 'still jammed', 'c@customer.example', 0);
         PRAGMA user_version = 19;",
    );
    let s = Arc::new(SqliteStore::open(&path, 1000, 8).expect("migrates"));
    let found = |words: &str| {
        let s = s.clone();
        let words = words.to_string();
        async move {
            let q = InboxQuery {
                view: InboxView::Open,
                status: None,
                owner: None,
                contact: None,
                search: Some(words),
                before: None,
                limit: 50,
            };
            let mut n: Vec<i64> = s
                .inbox(q)
                .await
                .expect("search")
                .iter()
                .map(|t| t.head.number.0)
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(found("jam").await, [1], "a body word, two messages");
    assert_eq!(found("charged").await, [2]);
    assert_eq!(found("carla").await, [1], "the contact's name");
    assert_eq!(found("invoice").await, [2], "a subject");
    assert_eq!(found("nowhere").await, Vec::<i64>::new());
    let ticket_of = s
        .read(|c| {
            let mut st = c.prepare(
                "SELECT rowid >> 32, rowid & 4294967295 FROM message_search
                  WHERE message_search MATCH 'customer' ORDER BY rowid",
            )?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("rowids");
    assert_eq!(ticket_of, [(1, 1), (1, 3), (2, 2)]);
    // A message stored after the migration is indexed under its ticket.
    let ids = spool_many(&*s, 1).await;
    let mut p = inbound(ids[0], 7, unassigned());
    p.messages[0].text = BodyText::Inline("a toner question".into());
    apply_all(&*s, vec![p]).await;
    let newest = found("toner").await;
    assert_eq!(newest.len(), 1);
    assert!(newest[0] > 2, "{newest:?}");
}

/// What `EXPLAIN QUERY PLAN` says of `sql` with `params`: one line a step.
async fn query_plan(
    s: &SqliteStore,
    sql: String,
    params: Vec<rusqlite::types::Value>,
) -> Vec<String> {
    s.read(move |c| {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
    .await
    .expect("plan")
}

/// The queries the writer asks while deciding inbound mail (its
/// `InboundFacts`), on a connection set up as the store's: compiled once and
/// reused from the statement cache, never compiled again because a new value
/// is bound. (SQLite marks a statement for recompiling at each new binding
/// when a bound value could change its plan, and rusqlite clears a cached
/// statement's bindings when it returns to the cache, which then expires
/// such a statement every time: measured at ≈ 9 % of the writer's CPU while
/// pulling mail, all of it the `keyed` query.)
#[test]
fn the_writers_fact_queries_are_compiled_once() {
    let (dir, s) = store();
    drop(s);
    let path = dir.path().join("db/test.sqlite");
    let c = wal_open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE, 1000).expect("open");
    let queries = [
        (
            "keyed",
            super::inbound::KEYED,
            ["mid:a@x", "mid:b@x", "sha256:00"],
        ),
        ("by message id", BY_MESSAGE_ID, ["a@x", "b@x", "c@x"]),
        (
            "outbound",
            crate::store::bounce::FIND_OUTBOUND,
            ["a@x", "b@x", "c@x"],
        ),
    ];
    for (name, sql, values) in queries {
        for v in values {
            let mut stmt = c.prepare_cached(sql).expect(name);
            let mut rows = stmt.query(rusqlite::params![v, "support"]).expect(name);
            while rows.next().expect(name).is_some() {}
        }
        let again = c
            .prepare_cached(sql)
            .expect(name)
            .get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(again, 0, "{name} was compiled again {again} times");
    }
}
