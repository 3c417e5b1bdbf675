//! SQLite implementation of [`Store`].
//!
//! One dedicated writer thread owns the only write connection. Callers hand
//! it jobs; it runs every job that is waiting (up to `group_commit_max`) in
//! one `BEGIN IMMEDIATE … COMMIT`, each job inside its own savepoint so one
//! failing job does not undo the others, and answers each job only after the
//! COMMIT returned (WAL + `synchronous=FULL`: the commit is fsynced). Reads use
//! a small pool of read-only connections on the blocking thread pool. The
//! writer and the checkpointer open the database through [`wal_vfs`]: one
//! `write` per commit into the WAL, and a database file that grows in 1 MiB
//! steps.
//!
//! Limits: the job queue is bounded (callers wait when it is full); the
//! database file must be on a local filesystem (WAL needs shared memory).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::migrations::MIGRATIONS;
use super::outbound as ob;
use super::*;
use crate::ingest::{dedupe, route, thread};

/// Size of the queue in front of the writer thread.
const WRITE_QUEUE: usize = 4096;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// Read connections kept open for reuse.
const READ_POOL: usize = 4;
/// Ticket statuses that do not count as open for balancing.
const CLOSED_STATUSES: &str = "('closed', 'resolved', 'solved')";

/// Milliseconds since the Unix epoch (the time unit of every stored timestamp).
/// A stored time (unix ms) as RFC 3339 UTC, as logs and the CLI show it;
/// empty if out of range.
pub fn ms_to_rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// sha256 of `bytes`, lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One unit of work for the writer thread.
trait WriteJob: Send {
    /// Run inside the open transaction (the job sets its own savepoint).
    fn run(&mut self, conn: &Connection);
    /// Deliver the result once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
    /// The job's own error, if it failed.
    fn failed_with(&self) -> Option<StoreError>;
}

struct Job<T, F> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(f) = self.f.take() {
            self.result = Some(in_savepoint(conn, "job", f));
        }
    }

    fn failed_with(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) => Some(clone_err(e)),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let out = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(out);
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    /// Transactions committed by the writer (group commit makes this far
    /// smaller than the number of writes).
    commits: Arc<std::sync::atomic::AtomicU64>,
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    busy_timeout_ms: u64,
}

fn open_conn(
    path: &Path,
    flags: OpenFlags,
    busy_timeout_ms: u64,
) -> Result<Connection, StoreError> {
    finish_open(Connection::open_with_flags(path, flags)?, busy_timeout_ms)
}

fn finish_open(conn: Connection, busy_timeout_ms: u64) -> Result<Connection, StoreError> {
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
    // One group commit (spool inserts, an applied plan with a new ticket,
    // the savepoints around them) uses more distinct statements than
    // rusqlite's default cache of 16 holds: with LRU eviction every one of
    // them would be prepared again for every message.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // temp_store: savepoint sub-journals stay in memory instead of temp files.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

/// A connection through [`wal_vfs`], which is only safe while every commit
/// syncs the WAL: `finish_open` sets synchronous=FULL, checked here.
fn wal_open(path: &Path, flags: OpenFlags, busy_timeout_ms: u64) -> Result<Connection, StoreError> {
    let conn = finish_open(wal_vfs::open(path, flags)?, busy_timeout_ms)?;
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if level < 2 {
        return Err(StoreError::Schema(format!(
            "synchronous is {level}, the WAL writer needs FULL (2) or EXTRA (3)"
        )));
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Schema(format!(
            "database schema version {version} is newer than this postdesk knows ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        // Another process (the CLI next to a starting daemon) may migrate at
        // the same time: take the write lock first, then re-check the version.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
}

fn open_and_migrate(path: &Path, busy_timeout_ms: u64) -> Result<Connection, StoreError> {
    // The writer's WAL writes go out one per commit (see `wal_vfs`);
    // `finish_open` sets the synchronous=FULL that requires.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = wal_open(path, flags, busy_timeout_ms)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Schema(format!(
            "cannot switch {} to WAL (got {mode})",
            path.display()
        )));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Create the database file, empty, with mode 0600 when it does not exist
/// yet. SQLite then gives the `-wal` and `-shm` files it creates the
/// database file's mode, so none of the three is readable by anyone else,
/// whatever the umask (SQLite's own default is 0644 less the umask). An
/// existing file keeps its mode (an administrator's, or systemd's).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path);
    match created {
        // The umask may have taken bits from 0600: set exactly 0600.
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Open (creating if needed, mode 0600) the database at `path`, migrate it and start
    /// the writer thread.
    pub fn open(
        path: &Path,
        busy_timeout_ms: u64,
        group_commit_max: usize,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        create_private(path)?;
        // Two processes opening a new database at once (the CLI next to a
        // starting daemon) can see SQLITE_BUSY from the WAL switch or the
        // migration without the busy handler being consulted: retry briefly.
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(busy_timeout_ms.max(1000));
        let conn = loop {
            match open_and_migrate(path, busy_timeout_ms) {
                Err(StoreError::Busy) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        // Checkpoints: a thread of their own copies WAL pages into the
        // database, every CHECKPOINT_BUSY while the WAL grows, so that the
        // writer does not spend its time (and its sessions' commit latency)
        // on it. Under sustained load that thread never reaches the WAL's
        // last frames, so the writer also checkpoints (PASSIVE, never
        // waiting; only the few frames not yet copied) once the WAL holds
        // WAL_FRAMES frames. That lets the next transaction start the WAL
        // from the beginning again: it stays bounded, and commits overwrite
        // its blocks instead of extending the file (an fsync of appended
        // blocks costs twice as much here).
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WAL_FRAMES}; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))?;
        // No busy wait on this connection: a checkpoint that would have to
        // wait for readers (or block the writer while it waits) gives up and
        // is tried again on the next round.
        let checkpointer = wal_open(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            0,
        )?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let max = group_commit_max.max(1);
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, max, &counter))?;
        let weak = tx.downgrade();
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, weak))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            commits,
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            busy_timeout_ms,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions the writer has committed since open.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes waiting for the writer thread.
    pub fn queued_writes(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Run `f` on the writer thread inside the current group transaction;
    /// resolves after the durable commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            f: Some(f),
            result: None,
            reply,
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` with a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let busy = self.busy_timeout_ms;
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    busy,
                )?,
            };
            let r = f(&conn);
            if let Ok(mut v) = readers.lock()
                && v.len() < READ_POOL
            {
                v.push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Failed(format!("reader task failed: {e}")))?
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    max: usize,
    commits: &std::sync::atomic::AtomicU64,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&mut conn, &mut batch);
        if outcome.is_ok() {
            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            let r = match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(clone_err(e)),
            };
            job.finish(r);
        }
    }
    tracing::debug!("store writer stopped");
}

/// WAL frames (pages, 16 MB) after which the writer checkpoints itself.
const WAL_FRAMES: u32 = 4000;
/// Checkpoint interval while the WAL grows, and while nothing happens.
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(20);
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL frames (64 MB) above which the checkpointer asks for a RESTART
/// checkpoint: the WAL outgrew the writer's backstop (a long reader held it),
/// and RESTART waits for readers to let go. The WAL file is cut back to the
/// same size once it restarts (`journal_size_limit`), so a spike does not keep
/// its disk space.
const WAL_RESTART_FRAMES: i64 = 16_384;
const WAL_SIZE_LIMIT: i64 = 64 << 20;

fn checkpoint_loop(conn: Connection, alive: mpsc::WeakSender<Box<dyn WriteJob>>) {
    // (frames in the WAL, frames copied) after the last round.
    let mut last = (0i64, 0i64);
    let mut busy = false;
    loop {
        std::thread::sleep(if busy {
            CHECKPOINT_BUSY
        } else {
            CHECKPOINT_IDLE
        });
        if alive.upgrade().is_none() {
            break;
        }
        let mode = if last.0 > WAL_RESTART_FRAMES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        match conn.query_row(&sql, [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
            Ok(now) => {
                busy = now != last && now.0 > 0;
                last = now;
            }
            Err(e) => {
                // Mostly SQLITE_BUSY: the writer is checkpointing itself, so
                // the WAL is busy too.
                busy = true;
                tracing::debug!(error = %e, mode, "checkpoint failed");
            }
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}

fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        job.run(conn);
        // Some errors (I/O, a full disk) make SQLite roll the whole
        // transaction back. The jobs after it must not run: outside a
        // transaction each would commit on its own, and then be answered
        // as failed with the rest.
        if conn.is_autocommit() {
            let e = job
                .failed_with()
                .unwrap_or_else(|| StoreError::Failed("transaction rolled back by SQLite".into()));
            tracing::warn!(error = %e, jobs = batch.len(), "store transaction rolled back");
            return Err(e);
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        tracing::warn!(error = %e, jobs = batch.len(), "store commit failed");
        return Err(e.into());
    }
    metrics::counter!("postdesk_store_commits_total").increment(1);
    metrics::histogram!("postdesk_store_commit_batch").record(batch.len() as f64);
    Ok(())
}

/// The batch outcome goes to every job; `StoreError` is not `Clone` because of
/// rusqlite's error, so keep what callers act on.
fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full => StoreError::Full,
        StoreError::Busy => StoreError::Busy,
        StoreError::Closed => StoreError::Closed,
        // What the caller did wrong stays so; anything else is a failure
        // of the batch, not of this job's request.
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        other => StoreError::Failed(other.to_string()),
    }
}

fn json_vec(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_json_vec(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn parse_json(s: Option<String>) -> serde_json::Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------
// Writes

fn insert_spool(
    conn: &Connection,
    msg: &NewSpool,
    hash: &str,
    received_at: i64,
) -> Result<SpoolId, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO spool (received_at, source, mail_from, rcpt_to, client_ip, helo, tls, channel, size, content_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    stmt.execute(params![
        received_at,
        msg.source.as_str(),
        msg.mail_from,
        json_vec(&msg.rcpt_to),
        msg.client_ip,
        msg.helo,
        msg.tls,
        msg.channel,
        msg.raw.len() as i64,
        hash
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO spool_raw (id, raw) VALUES (?1, ?2)")?
        .execute(params![id, msg.raw])?;
    Ok(SpoolId(id))
}

/// The contact's id, creating it. A stored name is replaced only by a name
/// from mail proven to be the contact's own (`verified`); other mail may
/// only fill in a missing one — a forged From must not rename a customer.
fn upsert_contact(conn: &Connection, c: &ContactRef, verified: bool) -> Result<i64, StoreError> {
    let existing: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT id, name FROM contacts WHERE email = ?1")?
        .query_row([&c.email], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match existing {
        Some((id, name)) => {
            let stored = name.as_deref().unwrap_or("");
            if let Some(n) = c.name.as_deref().filter(|n| !n.is_empty())
                && n != stored
                && (stored.is_empty() || verified)
            {
                conn.prepare_cached("UPDATE contacts SET name = ?1 WHERE id = ?2")?
                    .execute(params![n, id])?;
            }
            Ok(id)
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO contacts (email, name, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![c.email, c.name, now_ms()])?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// The most recent message of `channel` with Message-ID `?1` (`?2` the
/// channel): inbound ones by their dedupe key, outbound ones by their own
/// index (see migration 4). Answers (ticket, direction).
/// Also the copies another sender's reuse of the Message-ID pushed to keys of
/// their own (`mid:<id>#from:<address>`, a range of the same index), most
/// recent first: a follow-up is not lost to whoever used the id first.
const BY_MESSAGE_ID: &str = "SELECT ticket_id, direction FROM (
       SELECT id, ticket_id, direction FROM messages WHERE channel = ?2 AND dedupe_key = 'mid:' || ?1
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE channel = ?2 AND dedupe_key > 'mid:' || ?1 || '#from:'
          AND dedupe_key < 'mid:' || ?1 || '#from;'
       UNION ALL
       SELECT id, ticket_id, direction FROM messages
        WHERE message_id = ?1 AND channel = ?2 AND direction = 'outbound')
     ORDER BY id DESC LIMIT 8";

/// What [`thread::may_join`] needs to know of ticket `t` (of `channel`).
fn candidate(
    conn: &Connection,
    t: i64,
    channel: &str,
    found: impl FnOnce(&str) -> thread::Found,
) -> Result<Option<thread::Candidate>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT c.email, t.secret FROM tickets t JOIN contacts c ON c.id = t.contact_id
             WHERE t.id = ?1 AND t.channel = ?2",
        )?
        .query_row(params![t, channel], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((contact, secret)) = row else {
        return Ok(None);
    };
    let mut participants = conn
        .prepare_cached(
            "SELECT c.email FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
             WHERE p.ticket_id = ?1",
        )?
        .query_map([t], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    // Whom the contact addressed (To/Cc of their own messages): a colleague
    // they copied may answer in the thread.
    let mut addressed = conn.prepare_cached(
        "SELECT to_addrs, cc_addrs FROM messages
          WHERE ticket_id = ?1 AND direction = 'inbound' AND from_email = ?2",
    )?;
    let rows = addressed.query_map(params![t, contact], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, Option<String>>(1)?,
        ))
    })?;
    for row in rows {
        let (to, cc) = row?;
        for list in [to, cc].into_iter().flatten() {
            participants.extend(parse_json_vec(&list));
        }
    }
    Ok(Some(thread::Candidate {
        ticket: t,
        found: found(&secret),
        contact,
        participants,
    }))
}

/// The ticket a message continues: by In-Reply-To/References (most recent
/// first), else by its subject tag, else by its plus-address; always on the
/// same channel, and only where [`thread::may_join`] allows. `Err`: no
/// ticket, with the first refusal (for the agent) if one was named.
fn find_thread(
    conn: &Connection,
    m: &InboundMessage,
) -> Result<Result<i64, Option<String>>, StoreError> {
    let asker = thread::Asker {
        contact: m.thread_identity.as_deref(),
        trusted: m.trusted_sender,
    };
    let mut refused: Option<String> = None;
    let mut consider = |c: Option<thread::Candidate>| -> Option<i64> {
        let c = c?;
        match thread::may_join(&c, asker) {
            Ok(()) => Some(c.ticket),
            Err(why) => {
                refused.get_or_insert(why);
                None
            }
        }
    };
    let ids = m.in_reply_to.iter().chain(m.references.iter().rev());
    for id in ids {
        let hits: Vec<(i64, String)> = conn
            .prepare_cached(BY_MESSAGE_ID)?
            .query_map(params![id, m.channel], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (t, direction) in hits {
            let found = if direction == "outbound" {
                thread::Found::OurMessageId
            } else {
                thread::Found::TheirMessageId
            };
            if let Some(t) = consider(candidate(conn, t, &m.channel, |_| found)?) {
                return Ok(Ok(t));
            }
        }
    }
    if let Some(tok) = &m.thread_token {
        let c = candidate(conn, tok.ticket.0, &m.channel, |secret| {
            thread::Found::Tag {
                secret_matches: !secret.is_empty() && tok.secret.as_deref() == Some(secret),
            }
        })?;
        if let Some(t) = consider(c) {
            return Ok(Ok(t));
        }
    }
    if let Some(TicketId(n)) = m.plus_token {
        let c = candidate(conn, n, &m.channel, |_| thread::Found::PlusAddress)?;
        if let Some(t) = consider(c) {
            return Ok(Ok(t));
        }
    }
    Ok(Err(refused))
}

/// Choose an owner for a new ticket: read what [`route::choose_owner`]
/// needs under `plan` (the balanced users' open tickets and last assignment,
/// or the contact's owner), ask it, and record a balancing assignment.
/// Returns (owner, reason when unassigned).
fn assign_owner(
    conn: &Connection,
    plan: &RoutingPlan,
    contact_id: i64,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let mut loads = Vec::new();
    let mut contact_owner: Option<String> = None;
    match plan {
        RoutingPlan::Unassigned { .. } => {}
        RoutingPlan::Balance { users, .. } => {
            let mut count = conn.prepare_cached(&format!(
                "SELECT COUNT(*) FROM tickets WHERE owner = ?1 AND COALESCE(status, '') NOT IN {CLOSED_STATUSES}"
            ))?;
            let mut seq =
                conn.prepare_cached("SELECT last_assigned_seq FROM user_state WHERE id = ?1")?;
            for u in users {
                let open: i64 = count.query_row([u], |r| r.get(0))?;
                let last_assigned: i64 = seq
                    .query_row([u], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                    .flatten()
                    .unwrap_or(0);
                loads.push(route::UserLoad {
                    user: u.clone(),
                    open,
                    last_assigned,
                });
            }
        }
        RoutingPlan::ContactOwner { .. } => {
            contact_owner = conn
                .prepare_cached("SELECT owner FROM contacts WHERE id = ?1")?
                .query_row([contact_id], |r| r.get(0))?;
        }
    }
    let choice = route::choose_owner(plan, &loads, contact_owner.as_deref());
    if let (true, Some(u)) = (choice.record_assignment, &choice.owner) {
        conn.prepare_cached(
            "INSERT INTO user_state (id, last_assigned_seq)
             VALUES (?1, (SELECT COALESCE(MAX(last_assigned_seq), 0) + 1 FROM user_state))
             ON CONFLICT(id) DO UPDATE SET last_assigned_seq = excluded.last_assigned_seq",
        )?
        .execute([u])?;
    }
    Ok((choice.owner, choice.unassigned_reason))
}

fn create_ticket(
    conn: &Connection,
    m: &InboundMessage,
    contact_id: i64,
) -> Result<(i64, Option<String>), StoreError> {
    let t = &m.new_ticket;
    let (owner, reason) = assign_owner(conn, &t.routing, contact_id)?;
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO tickets (channel, contact_id, subject, pipeline, status, priority, properties, owner, unassigned_reason, created_at, updated_at, secret, routed_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
    )?
    .execute(params![m.channel, contact_id, t.subject, t.pipeline, t.status, t.priority, t.properties, owner, reason, now, t.secret, t.routed_by])?;
    Ok((conn.last_insert_rowid(), owner))
}

fn insert_message(
    conn: &Connection,
    ticket: i64,
    spool: SpoolId,
    m: &InboundMessage,
    thread_note: Option<&str>,
) -> Result<(), StoreError> {
    let (text, text_at) = match &m.text {
        BodyText::Inline(t) => (Some(t.as_str()), None),
        BodyText::RawFrom(at) => (None, Some(*at as i64)),
    };
    conn.prepare_cached(
        "INSERT INTO messages (ticket_id, channel, direction, spool_id, dedupe_key, message_id, in_reply_to, refs,
                               from_email, from_name, to_addrs, subject, date, text, text_at, html,
                               classification, sender_resolution, created_at, thread_note, cc_addrs)
         VALUES (?1, ?2, 'inbound', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        ticket,
        m.channel,
        spool.0,
        m.dedupe_key,
        m.message_id,
        m.in_reply_to,
        m.references.join(" "),
        m.from.email,
        m.from.name,
        json_vec(&m.to),
        m.subject,
        m.date,
        text,
        text_at,
        m.html,
        m.classification,
        m.sender_resolution,
        now_ms(),
        thread_note,
        (!m.cc.is_empty()).then(|| json_vec(&m.cc))
    ])?;
    if let Some(note) = &m.note {
        conn.prepare_cached(
            "INSERT INTO messages (ticket_id, channel, direction, from_email, from_name, subject, text, created_at)
             VALUES (?1, ?2, 'note', ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            ticket,
            m.channel,
            note.from.email,
            note.from.name,
            m.subject,
            note.text,
            now_ms()
        ])?;
    }
    Ok(())
}

/// Run `f` inside a named savepoint: released on success, rolled back on error.
fn in_savepoint<T>(
    conn: &Connection,
    name: &str,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Every caller runs inside the writer's group transaction. If SQLite
    // rolled that back (an I/O error in an earlier plan of the same job), a
    // SAVEPOINT here would open a transaction of its own and its RELEASE
    // commit it outside the group, while the job is answered as failed.
    if conn.is_autocommit() {
        return Err(StoreError::Failed(
            "transaction rolled back by SQLite".into(),
        ));
    }
    conn.prepare_cached(&format!("SAVEPOINT {name}"))?
        .execute([])?;
    let r = f(conn);
    let end = if r.is_ok() {
        conn.prepare_cached(&format!("RELEASE {name}"))
            .and_then(|mut s| s.execute([]))
    } else {
        conn.prepare_cached(&format!("ROLLBACK TO {name}"))
            .and_then(|mut s| s.execute([]))
            .and_then(|_| conn.prepare_cached(&format!("RELEASE {name}")))
            .and_then(|mut s| s.execute([]))
    };
    match end {
        Ok(_) => r,
        Err(e) => Err(e.into()),
    }
}

/// Whether `m` is a copy of a message its channel already stores, as
/// [`dedupe::check`] decides over the messages stored under the keys it
/// asks about. `Ok`: the copy's delivery (nothing to write); `Err(Some(key))`:
/// a new message to store under this key of its own; `Err(None)`: under its
/// planned key.
fn duplicate(
    conn: &Connection,
    m: &InboundMessage,
) -> Result<Result<Delivered, Option<String>>, StoreError> {
    let mut lookup = conn.prepare_cached(
        "SELECT m.ticket_id, m.from_email, c.email FROM messages m
           JOIN tickets t ON t.id = m.ticket_id JOIN contacts c ON c.id = t.contact_id
          WHERE m.channel = ?1 AND m.dedupe_key = ?2",
    )?;
    let incoming = dedupe::Incoming {
        key: &m.dedupe_key,
        from: &m.from.email,
        contact: &m.contact.email,
    };
    let verdict = dedupe::check(incoming, now_ms(), |key| {
        lookup
            .query_row(params![m.channel, key], |r| {
                Ok(dedupe::Stored {
                    ticket: TicketId(r.get(0)?),
                    from: r.get(1)?,
                    contact: r.get(2)?,
                })
            })
            .optional()
    })?;
    Ok(match verdict {
        dedupe::Verdict::Copy(ticket) => Ok(Delivered {
            channel: m.channel.clone(),
            ticket,
            created: false,
            duplicate: true,
            owner: None,
        }),
        dedupe::Verdict::New(key) => Err(key),
    })
}

fn apply_inbound(conn: &Connection, plan: &InboundPlan) -> Result<InboundOutcome, StoreError> {
    let mut out = InboundOutcome::default();
    // Mark the entry done first, and only if it is still pending: an entry
    // already applied (seen both through the in-memory handoff and a scan,
    // or applied before a crash lost the acknowledgement) changes nothing.
    // The caller's savepoint undoes the mark if anything below fails.
    let claimed = conn
        .prepare_cached(
            "UPDATE spool SET state = 'done', error = ?1, processed_at = ?2
             WHERE id = ?3 AND state = 'pending'",
        )?
        .execute(params![plan.dropped, now_ms(), plan.spool_id.0])?;
    if claimed == 0 || plan.dropped.is_some() {
        return Ok(out);
    }
    for m in &plan.messages {
        let own_key;
        let m = match duplicate(conn, m)? {
            Ok(dup) => {
                out.delivered.push(dup);
                continue;
            }
            Err(Some(key)) => {
                own_key = InboundMessage {
                    dedupe_key: key,
                    ..m.clone()
                };
                &own_key
            }
            Err(None) => m,
        };
        // A bounce of our own reply joins that reply's ticket: no contact
        // for the mailer-daemon, no new ticket.
        let bounced = match &m.bounce {
            Some(link) => super::bounce::find_outbound(conn, &m.channel, link)?,
            None => None,
        };
        if let (Some(b), Some(link)) = (&bounced, &m.bounce) {
            let noted = InboundMessage {
                classification: super::bounce::classification_with(&m.classification, b),
                ..m.clone()
            };
            insert_message(conn, b.ticket, plan.spool_id, &noted, None)?;
            super::bounce::record(conn, b, link, now_ms())?;
            out.delivered.push(Delivered {
                channel: m.channel.clone(),
                ticket: TicketId(b.ticket),
                created: false,
                duplicate: false,
                owner: None,
            });
            continue;
        }
        let contact_id = upsert_contact(conn, &m.contact, m.name_verified)?;
        let (ticket, created, owner, note) = match find_thread(conn, m)? {
            Ok(t) => {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO ticket_participants (ticket_id, contact_id)
                     SELECT id, ?2 FROM tickets WHERE id = ?1 AND contact_id != ?2",
                )?
                .execute(params![t, contact_id])?;
                conn.prepare_cached("UPDATE tickets SET updated_at = ?1 WHERE id = ?2")?
                    .execute(params![now_ms(), t])?;
                (t, false, None, None)
            }
            Err(refused) => {
                let (t, owner) = create_ticket(conn, m, contact_id)?;
                (t, true, owner, refused)
            }
        };
        insert_message(conn, ticket, plan.spool_id, m, note.as_deref())?;
        out.delivered.push(Delivered {
            channel: m.channel.clone(),
            ticket: TicketId(ticket),
            created,
            duplicate: false,
            owner,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reads

const TICKET_COLUMNS: &str =
    "t.id, t.subject, t.channel, c.email, c.name, t.status, t.priority, t.pipeline, t.owner,
     t.unassigned_reason, t.properties, t.created_at, t.updated_at,
     (SELECT COUNT(*) FROM messages m WHERE m.ticket_id = t.id), t.routed_by";

fn ticket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketSummary> {
    Ok(TicketSummary {
        head: TicketHead {
            number: TicketId(r.get(0)?),
            subject: r.get(1)?,
            channel: r.get(2)?,
            contact: ContactRef {
                email: r.get(3)?,
                name: r.get(4)?,
            },
            status: r.get(5)?,
            priority: r.get(6)?,
            pipeline: r.get(7)?,
            owner: r.get(8)?,
            unassigned_reason: r.get(9)?,
            properties: parse_json(r.get(10)?),
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
            routed_by: r.get(14)?,
        },
        messages: r.get(13)?,
    })
}

fn list_tickets(conn: &Connection, f: &TicketFilter) -> Result<Vec<TicketSummary>, StoreError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id
         WHERE (?1 IS NULL OR t.channel = ?1) AND (?2 IS NULL OR t.status = ?2)
           AND (?3 IS NULL OR t.owner = ?3) AND (?4 IS NULL OR c.email = ?4)
         ORDER BY t.id DESC LIMIT ?5"
    );
    let limit = f.limit.map(|l| l as i64).unwrap_or(-1);
    // Contacts are stored normalised (trimmed, lower-case): so is the filter,
    // whoever asks (CLI, API).
    let contact = f.contact.as_deref().map(crate::config::normalize_email);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![f.channel, f.status, f.owner, contact, limit],
        ticket_row,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn ticket(conn: &Connection, n: TicketId) -> Result<TicketDetail, StoreError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id WHERE t.id = ?1"
    );
    let summary = conn
        .query_row(&sql, [n.0], ticket_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("ticket {n}")))?;
    let mut stmt = conn.prepare(
        "SELECT m.direction, m.from_email, m.from_name, m.to_addrs, m.subject, m.message_id, m.date,
                COALESCE(m.text, (SELECT CAST(substr(r.raw, m.text_at + 1) AS TEXT)
                                  FROM spool_raw r WHERE r.id = m.spool_id)),
                m.author, m.classification, m.sender_resolution, m.delivery, m.delivery_detail,
                m.created_at,
                (SELECT r.raw FROM spool s JOIN spool_raw r ON r.id = s.id
                 WHERE s.id = m.spool_id AND s.source = 'form'),
                m.thread_note
         FROM messages m WHERE m.ticket_id = ?1 ORDER BY m.id",
    )?;
    let messages = stmt
        .query_map([n.0], |r| {
            Ok(MessageView {
                direction: r.get(0)?,
                from: r.get(1)?,
                from_name: r.get(2)?,
                to: parse_json_vec(&r.get::<_, Option<String>>(3)?.unwrap_or_default()),
                subject: r.get(4)?,
                message_id: r.get(5)?,
                date: r.get(6)?,
                text: r.get(7)?,
                author: r.get(8)?,
                classification: parse_json(r.get(9)?),
                sender_resolution: parse_json(r.get(10)?),
                delivery: r.get(11)?,
                delivery_detail: r.get(12)?,
                created_at: r.get(13)?,
                submission: r
                    .get::<_, Option<Vec<u8>>>(14)?
                    .and_then(|raw| serde_json::from_slice(&raw).ok()),
                thread_note: r.get(15)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT c.email, c.name FROM ticket_participants p JOIN contacts c ON c.id = p.contact_id
         WHERE p.ticket_id = ?1 ORDER BY c.email",
    )?;
    let participants = stmt
        .query_map([n.0], |r| {
            Ok(ContactRef {
                email: r.get(0)?,
                name: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TicketDetail {
        head: summary.head,
        participants,
        messages,
    })
}

fn pending_spool(
    conn: &Connection,
    after: SpoolId,
    limit: usize,
) -> Result<Vec<SpoolEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.received_at, s.source, s.mail_from, s.rcpt_to, s.channel, r.raw, s.content_hash,
                s.client_ip, s.helo
         FROM spool s JOIN spool_raw r ON r.id = s.id
         WHERE s.state = 'pending' AND s.id > ?1 ORDER BY s.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after.0, limit as i64], |r| {
        Ok(SpoolEntry {
            id: SpoolId(r.get(0)?),
            received_at: r.get(1)?,
            source: SpoolSource::parse(&r.get::<_, String>(2)?),
            mail_from: r.get(3)?,
            rcpt_to: parse_json_vec(&r.get::<_, String>(4)?),
            channel: r.get(5)?,
            raw: r.get(6)?,
            content_hash: r.get(7)?,
            client_ip: r.get(8)?,
            helo: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn count(conn: &Connection, sql: &str) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
}

/// The queries behind [`queues`]: each reads a partial index or
/// `outbox_tally`, never a table that grows with the store's age (the
/// `queue_counts_never_scan_a_table` test checks their query plans).
pub(crate) const QUEUE_COUNTS: [&str; 2] = [
    "SELECT COUNT(*) FROM spool WHERE state = 'pending'",
    "SELECT COUNT(*) FROM spool WHERE state = 'failed'",
];

fn queues(conn: &Connection) -> Result<Queues, StoreError> {
    Ok(Queues {
        spool_pending: count(conn, QUEUE_COUNTS[0])?,
        spool_failed: count(conn, QUEUE_COUNTS[1])?,
        outbox: ob::outbox_counts(conn)?,
    })
}

impl Store for SqliteStore {
    fn status(&self) -> StoreFuture<'_, StoreStatus> {
        let path = self.path.display().to_string();
        Box::pin(self.read(move |c| {
            let q = queues(c)?;
            Ok(StoreStatus {
                path,
                spool_pending: q.spool_pending,
                spool_failed: q.spool_failed,
                spool_total: count(c, "SELECT COUNT(*) FROM spool")?,
                tickets: count(c, "SELECT COUNT(*) FROM tickets")?,
                messages: count(c, "SELECT COUNT(*) FROM messages")?,
                contacts: count(c, "SELECT COUNT(*) FROM contacts")?,
                outbox_queued: q.outbox.queued,
                outbox_failed: q.outbox.failed,
            })
        }))
    }

    fn queues(&self) -> StoreFuture<'_, Queues> {
        Box::pin(self.read(queues))
    }
}

impl SpoolStore for SqliteStore {
    fn spool(&self, msg: NewSpool) -> StoreFuture<'_, SpoolEntry> {
        Box::pin(async move {
            // Hash on the caller's task, not on the single writer thread.
            let hash = content_hash(&msg.raw);
            self.write(move |c| {
                let received_at = now_ms();
                let id = insert_spool(c, &msg, &hash, received_at)?;
                Ok(SpoolEntry {
                    id,
                    received_at,
                    source: msg.source,
                    mail_from: msg.mail_from,
                    rcpt_to: msg.rcpt_to,
                    client_ip: msg.client_ip,
                    helo: msg.helo,
                    channel: msg.channel,
                    raw: msg.raw,
                    content_hash: hash,
                })
            })
            .await
        })
    }

    fn pending_spool(&self, after: SpoolId, limit: usize) -> StoreFuture<'_, Vec<SpoolEntry>> {
        Box::pin(self.read(move |c| pending_spool(c, after, limit)))
    }

    fn apply_inbound(
        &self,
        plans: Vec<InboundPlan>,
    ) -> StoreFuture<'_, Vec<Result<InboundOutcome, StoreError>>> {
        Box::pin(self.write(move |c| {
            Ok(plans
                .iter()
                .map(|plan| in_savepoint(c, "plan", |c| apply_inbound(c, plan)))
                .collect())
        }))
    }

    fn submit(
        &self,
        spool: NewSpool,
        messages: Vec<InboundMessage>,
    ) -> StoreFuture<'_, InboundOutcome> {
        Box::pin(async move {
            let hash = content_hash(&spool.raw);
            // The job runs in its own savepoint: an error undoes the spool row too.
            self.write(move |c| {
                // A retried submission (same dedupe key): answer with what the
                // first one did, and store nothing, not even a spool row.
                let mut replay = InboundOutcome::default();
                for m in &messages {
                    if let Ok(dup) = duplicate(c, m)? {
                        replay.delivered.push(dup);
                    }
                }
                if !messages.is_empty() && replay.delivered.len() == messages.len() {
                    return Ok(replay);
                }
                let spool_id = insert_spool(c, &spool, &hash, now_ms())?;
                apply_inbound(
                    c,
                    &InboundPlan {
                        spool_id,
                        messages,
                        dropped: None,
                    },
                )
            })
            .await
        })
    }

    fn fail_spool(&self, id: SpoolId, reason: String) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "UPDATE spool SET state = 'failed', error = ?1, attempts = attempts + 1, processed_at = ?2
                 WHERE id = ?3 AND state = 'pending'",
            )?
            .execute(params![reason, now_ms(), id.0])?;
            Ok(())
        }))
    }

    fn raw(&self, id: SpoolId) -> StoreFuture<'_, Vec<u8>> {
        Box::pin(self.read(move |c| {
            c.query_row("SELECT raw FROM spool_raw WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("spool entry {id}")))
        }))
    }
}

impl TicketStore for SqliteStore {
    fn list_tickets(&self, filter: TicketFilter) -> StoreFuture<'_, Vec<TicketSummary>> {
        Box::pin(self.read(move |c| list_tickets(c, &filter)))
    }

    fn ticket(&self, number: TicketId) -> StoreFuture<'_, TicketDetail> {
        Box::pin(self.read(move |c| ticket(c, number)))
    }

    fn add_note(&self, ticket: TicketId, author: String, text: String) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| ob::add_note(c, ticket, &author, &text, now_ms())))
    }

    fn update_ticket(&self, ticket: TicketId, update: TicketUpdate) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| ob::update_ticket(c, ticket, &update, now_ms())))
    }

    fn reply_context(&self, ticket: TicketId, recent: usize) -> StoreFuture<'_, ReplyContext> {
        Box::pin(self.read(move |c| ob::reply_context(c, ticket, recent)))
    }
}

impl OutboxStore for SqliteStore {
    fn queue_reply(&self, reply: NewReply) -> StoreFuture<'_, QueuedReply> {
        Box::pin(self.write(move |c| ob::queue_reply(c, &reply, now_ms())))
    }

    fn queue_notice(&self, notice: NewNotice) -> StoreFuture<'_, OutboxId> {
        Box::pin(self.write(move |c| ob::queue_notice(c, &notice, now_ms())))
    }

    fn notice_key(&self) -> StoreFuture<'_, String> {
        Box::pin(self.read(ob::notice_key))
    }

    fn due_outbox(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxItem>> {
        Box::pin(self.read(move |c| ob::due_outbox(c, now_ms, limit)))
    }

    fn next_outbox_due(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(self.read(ob::next_due))
    }

    fn record_attempt(&self, id: OutboxId, outcome: AttemptOutcome) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| ob::record_attempt(c, id, &outcome, now_ms())))
    }

    fn flush_outbox(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.write(|c| ob::flush_outbox(c, now_ms())))
    }
}

impl MailboxStore for SqliteStore {
    fn checkpoint(&self, channel: String, folder: String) -> StoreFuture<'_, Option<Checkpoint>> {
        Box::pin(self.read(move |c| super::mailbox::checkpoint(c, &channel, &folder)))
    }

    fn spool_pulled(&self, batch: PulledBatch) -> StoreFuture<'_, PulledOutcome> {
        Box::pin(self.write(move |c| {
            super::mailbox::spool_pulled(c, &batch, |c, m, h| insert_spool(c, m, h, now_ms()))
        }))
    }

    fn known_message_ids(&self, channel: String, ids: Vec<String>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.read(move |c| super::mailbox::known_message_ids(c, &channel, &ids)))
    }

    fn skipped_uids(
        &self,
        channel: String,
        folder: String,
        uidvalidity: u32,
    ) -> StoreFuture<'_, Vec<u32>> {
        Box::pin(
            self.read(move |c| super::mailbox::skipped_uids(c, &channel, &folder, uidvalidity)),
        )
    }

    fn reset_checkpoint(
        &self,
        channel: String,
        folder: String,
        uidvalidity: u32,
    ) -> StoreFuture<'_, ()> {
        Box::pin(
            self.write(move |c| {
                super::mailbox::reset_checkpoint(c, &channel, &folder, uidvalidity)
            }),
        )
    }

    fn set_mailbox_state(
        &self,
        channel: String,
        folder: String,
        state: MailboxState,
        error: Option<String>,
        resume_at: Option<i64>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            super::mailbox::set_state(c, &channel, &folder, state, error.as_deref(), resume_at)
        }))
    }

    fn known_gmail_ids(&self, account: String, ids: Vec<u64>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(self.read(move |c| super::mailbox::known_gmail_ids(c, &account, &ids)))
    }

    fn mailbox_status(&self) -> StoreFuture<'_, Vec<MailboxStatusView>> {
        Box::pin(self.read(super::mailbox::statuses))
    }

    fn open_alert(
        &self,
        channel: String,
        reason: String,
        detail: Option<String>,
    ) -> StoreFuture<'_, (super::AlertView, bool)> {
        Box::pin(
            self.write(move |c| {
                super::mailbox::open_alert(c, &channel, &reason, detail.as_deref())
            }),
        )
    }

    fn alert_notified(&self, id: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| super::mailbox::alert_notified(c, id)))
    }

    fn resolve_alert(&self, channel: String) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |c| super::mailbox::resolve_alert(c, &channel)))
    }

    fn open_alerts(&self) -> StoreFuture<'_, Vec<super::AlertView>> {
        Box::pin(self.read(super::mailbox::open_alerts))
    }
}

impl PeopleStore for SqliteStore {
    fn list_contacts(&self) -> StoreFuture<'_, Vec<ContactView>> {
        Box::pin(self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT c.email, c.name, c.owner, (SELECT COUNT(*) FROM tickets t WHERE t.contact_id = c.id)
                 FROM contacts c ORDER BY c.email",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ContactView { email: r.get(0)?, name: r.get(1)?, owner: r.get(2)?, tickets: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn set_contact_owner(&self, email: String, owner: Option<String>) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |c| ob::set_contact_owner(c, &email, owner.as_deref())))
    }

    fn user_overrides(&self) -> StoreFuture<'_, Vec<UserOverride>> {
        Box::pin(self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, available, COALESCE(available_at, 0) FROM user_state WHERE available IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok(UserOverride { id: r.get(0)?, available: r.get(1)?, at: r.get(2)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn set_user_available(&self, user: String, available: Option<bool>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| ob::set_user_available(c, &user, available)))
    }

    fn channel_overrides(&self) -> StoreFuture<'_, Vec<(String, bool)>> {
        Box::pin(self.read(|c| {
            let mut stmt =
                c.prepare("SELECT id, enabled FROM channel_state WHERE enabled IS NOT NULL")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn set_channel_enabled(&self, channel: String, enabled: Option<bool>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.execute(
                "INSERT INTO channel_state (id, enabled) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET enabled = excluded.enabled",
                params![channel, enabled],
            )?;
            Ok(())
        }))
    }

    fn add_api_token(&self, token: NewApiToken) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| ob::insert_token(c, &token, now_ms())))
    }

    fn api_token(&self, token_hash: String) -> StoreFuture<'_, Option<TokenGrant>> {
        Box::pin(self.read(move |c| ob::token_grant(c, &token_hash)))
    }

    fn api_tokens(&self, user: String) -> StoreFuture<'_, Vec<ApiTokenInfo>> {
        Box::pin(self.read(move |c| ob::tokens_of(c, &user)))
    }

    fn revoke_api_tokens(&self, user: String, id: Option<String>) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |c| ob::revoke_tokens(c, &user, id.as_deref())))
    }
}

#[cfg(test)]
mod tests;
mod wal_vfs;
