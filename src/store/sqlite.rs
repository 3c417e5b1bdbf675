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
use super::queries::TICKET_COLUMNS;
use super::web;
use super::*;

/// Size of the queue in front of the writer thread.
const WRITE_QUEUE: usize = 4096;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// Read connections kept open for reuse.
const READ_POOL: usize = 4;

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
        let _ = self.reply.send(super::answer(commit, self.result));
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
    // Plans that do not depend on the values bound. Without it SQLite marks
    // a statement to be compiled again whenever a new value is bound to a
    // parameter that could change its plan (one compared in a join's
    // residual terms, `LIMIT ?`), and the statement cache's cleared bindings
    // then recompile such a statement at every use: the writer's dedupe
    // lookup was compiled again for every message.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
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

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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
pub(crate) fn clone_err(e: &StoreError) -> StoreError {
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

// ---------------------------------------------------------------------------
// Reads

pub(super) fn ticket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketSummary> {
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

/// A WHERE clause built from only the filters a query was given, each value
/// bound as a parameter (`?N`), never written into the SQL. A filter left
/// out is absent from the statement, so SQLite can pick the index of those
/// present (`(?1 IS NULL OR col = ?1)` would make it scan).
#[derive(Default)]
pub(super) struct Filters {
    clauses: Vec<String>,
    pub(super) params: Vec<rusqlite::types::Value>,
}

impl Filters {
    /// Bind `v` as the next parameter; its placeholder.
    pub(super) fn bind(&mut self, v: impl Into<rusqlite::types::Value>) -> String {
        self.params.push(v.into());
        format!("?{}", self.params.len())
    }

    /// Require `clause` (SQL with no values of its own).
    pub(super) fn and(&mut self, clause: impl Into<String>) {
        self.clauses.push(clause.into());
    }

    /// Require `column = value` if a value is given.
    pub(super) fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let p = self.bind(v.to_owned());
            self.and(format!("{column} = {p}"));
        }
    }

    /// `WHERE …` (empty with no clause).
    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The statement and parameters of a ticket list.
pub(super) fn list_tickets_query(f: &TicketFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut w = Filters::default();
    w.eq("t.channel", f.channel.as_deref());
    w.eq("t.status", f.status.as_deref());
    w.eq("t.owner", f.owner.as_deref());
    // Contacts are stored normalised (trimmed, lower-case): so is the filter,
    // whoever asks (CLI, API).
    let contact = f.contact.as_deref().map(crate::mail::normalize_email);
    w.eq("c.email", contact.as_deref());
    let limit = w.bind(f.limit.map(|l| l as i64).unwrap_or(-1));
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN contacts c ON c.id = t.contact_id
         {} ORDER BY t.id DESC LIMIT {limit}",
        w.sql()
    );
    (sql, w.params)
}

fn list_tickets(conn: &Connection, f: &TicketFilter) -> Result<Vec<TicketSummary>, StoreError> {
    let (sql, params) = list_tickets_query(f);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), ticket_row)?;
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
    let mut stmt = conn.prepare(&super::queries::ticket_messages(
        "CAST(substr(r.raw, m.text_at + 1) AS TEXT)",
        "?1",
    ))?;
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
                html: r.get(16)?,
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
        search_pending: 0,
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
                Ok(SpoolEntry::stored(id, received_at, msg, hash))
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
        decide: Decide,
    ) -> StoreFuture<'_, Vec<Result<InboundOutcome, StoreError>>> {
        // Serialised here, on the caller's task, not on the writer thread.
        let ready: Vec<_> = plans.into_iter().map(inbound::Ready::new).collect();
        Box::pin(self.write(move |c| {
            Ok(ready
                .into_iter()
                .map(|r| in_savepoint(c, "plan", |c| inbound::apply_plan(c, &r?, decide)))
                .collect())
        }))
    }

    fn submit(&self, submission: Submission, decide: Decide) -> StoreFuture<'_, InboundOutcome> {
        let Submission { spool, messages } = submission;
        Box::pin(async move {
            let hash = content_hash(&spool.raw);
            let ready = inbound::Ready::new(InboundPlan {
                spool_id: SpoolId(0),
                messages,
                dropped: None,
            })?;
            // The job runs in its own savepoint: an error undoes the spool row too.
            self.write(move |c| inbound::submit(c, &spool, &hash, ready, decide))
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

    fn open_outbound_ticket(&self, opening: OutboundOpening) -> StoreFuture<'_, TicketId> {
        Box::pin(self.write(move |c| inbound::open_outbound_ticket(c, &opening, now_ms())))
    }

    fn reply_context(&self, ticket: TicketId, recent: usize) -> StoreFuture<'_, ReplyContext> {
        Box::pin(self.read(move |c| ob::reply_context(c, ticket, recent)))
    }

    fn quote_source(&self, ticket: TicketId) -> StoreFuture<'_, Option<QuoteSource>> {
        Box::pin(self.read(move |c| ob::quote_source(c, ticket)))
    }

    fn ticket_raws(&self, ticket: TicketId) -> StoreFuture<'_, Vec<Vec<u8>>> {
        Box::pin(self.read(move |c| ob::ticket_raws(c, ticket)))
    }
}

impl OutboxStore for SqliteStore {
    fn queue_reply(&self, reply: NewReply, replay: Replay) -> StoreFuture<'_, QueuedReply> {
        Box::pin(self.write(move |c| ob::queue_reply(c, &reply, replay, now_ms())))
    }

    fn queue_notice(&self, notice: NewNotice) -> StoreFuture<'_, OutboxId> {
        Box::pin(self.write(move |c| ob::queue_notice(c, &notice, now_ms())))
    }

    fn notice_key(&self) -> StoreFuture<'_, String> {
        Box::pin(self.read(ob::notice_key))
    }

    /// One node: nothing to claim against.
    fn due_outbox(
        &self,
        _claim: OutboxClaim,
        now_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxItem>> {
        Box::pin(self.read(move |c| ob::due_outbox(c, now_ms, limit)))
    }

    fn extend_outbox_claims(
        &self,
        _claim: OutboxClaim,
        _ids: Vec<OutboxId>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
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
            if let Some(fence) = &batch.fence {
                super::lease::check(c, fence)?;
            }
            super::mailbox::spool_pulled(c, &batch, |c, m, h| insert_spool(c, m, h, now_ms()))
        }))
    }

    fn known_message_ids(&self, channel: String, ids: Vec<String>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.read(move |c| super::mailbox::known_message_ids(c, &channel, &ids)))
    }

    fn skipped_uids(&self, mailbox: MailboxGeneration) -> StoreFuture<'_, Vec<u32>> {
        Box::pin(self.read(move |c| super::mailbox::skipped_uids(c, &mailbox)))
    }

    fn reset_checkpoint(
        &self,
        mailbox: MailboxGeneration,
        fence: Option<Fence>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            if let Some(fence) = &fence {
                super::lease::check(c, fence)?;
            }
            super::mailbox::reset_checkpoint(c, &mailbox)
        }))
    }

    fn set_mailbox_state(&self, change: MailboxStateChange) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| super::mailbox::set_state(c, &change)))
    }

    fn known_gmail_ids(&self, account: String, ids: Vec<u64>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(self.read(move |c| super::mailbox::known_gmail_ids(c, &account, &ids)))
    }

    fn mailbox_status(&self) -> StoreFuture<'_, Vec<MailboxStatusView>> {
        Box::pin(self.read(super::mailbox::statuses))
    }

    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, (super::AlertView, bool)> {
        Box::pin(self.write(move |c| super::mailbox::open_alert(c, &alert)))
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

impl LeaseStore for SqliteStore {
    fn acquire_lease(&self, request: LeaseRequest) -> StoreFuture<'_, Option<i64>> {
        Box::pin(self.write(move |c| super::lease::acquire(c, &request)))
    }

    fn release_lease(&self, fence: Fence) -> StoreFuture<'_, ()> {
        Box::pin(
            self.write(move |c| super::lease::release(c, &fence.lease, &fence.node, fence.epoch)),
        )
    }

    fn check_lease(&self, fence: Fence) -> StoreFuture<'_, ()> {
        Box::pin(self.read(move |c| super::lease::check(c, &fence)))
    }

    fn leases_held(&self, node: String) -> StoreFuture<'_, u64> {
        Box::pin(self.read(move |c| super::lease::held(c, &node)))
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
        Box::pin(self.write(move |c| {
            let n = ob::revoke_tokens(c, &user, id.as_deref())?;
            // Revoking all of a user's tokens signs their browsers out too.
            if id.is_none() {
                web::end_sessions(c, &user)?;
            }
            Ok(n)
        }))
    }
}

impl WebStore for SqliteStore {
    fn set_web_user(&self, user: String, record: WebUser) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| web::set_web_user(c, &user, &record, now_ms())))
    }

    fn web_user(&self, user: String) -> StoreFuture<'_, Option<WebUser>> {
        Box::pin(self.read(move |c| web::web_user(c, &user)))
    }

    fn create_session(&self, session: NewWebSession) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| web::create_session(c, &session, now_ms())))
    }

    fn web_session(&self, id_hash: String) -> StoreFuture<'_, Option<WebSession>> {
        Box::pin(self.read(move |c| web::web_session(c, &id_hash)))
    }

    fn end_session(&self, id_hash: String) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| web::end_session(c, &id_hash)))
    }

    fn end_sessions(&self, user: String) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |c| web::end_sessions(c, &user)))
    }

    fn create_signin_link(&self, link: NewSigninLink) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| web::create_signin_link(c, &link, now_ms())))
    }

    fn use_signin_link(&self, token_hash: String, now: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.write(move |c| web::use_signin_link(c, &token_hash, now)))
    }

    fn inbox(&self, query: InboxQuery) -> StoreFuture<'_, Vec<TicketSummary>> {
        Box::pin(self.read(move |c| web::inbox(c, &query)))
    }

    fn inbox_counts(&self, user: String) -> StoreFuture<'_, InboxCounts> {
        Box::pin(self.read(move |c| web::inbox_counts(c, &user)))
    }

    fn message_html(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.read(move |c| web::message_html(c, ticket, position)))
    }

    fn message_raw(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(self.read(move |c| web::message_raw(c, ticket, position)))
    }

    fn contact_view(&self, email: String) -> StoreFuture<'_, Option<ContactView>> {
        Box::pin(self.read(move |c| web::contact_view(c, &email)))
    }

    fn activity(&self) -> StoreFuture<'_, i64> {
        Box::pin(self.read(web::activity))
    }
}

mod inbound;
#[cfg(test)]
mod tests;
mod wal_vfs;

/// One implicit node: the process that holds the file. Nothing to record.
impl NodeStore for SqliteStore {
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeView>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn heartbeat(&self, _beat: NodeBeat) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(false) })
    }

    fn leave(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
