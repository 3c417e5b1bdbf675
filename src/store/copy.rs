//! `postdesk store copy`: a SQLite store copied into an empty PostgreSQL
//! store, every table ([`plan`]), ids kept, then checked row for row.
//!
//! The SQLite file is held with an exclusive lock for the whole run (a
//! daemon or any other command that has it open makes the copy refuse, and
//! none can open it meanwhile). The target is migrated to this binary's
//! schema; both must be at the same version. Rows go over in key order, in
//! batches: each batch is one PostgreSQL transaction of a binary `COPY`
//! plus the table's progress marker (`postdesk_store_copy`: the last key
//! copied), with the table's triggers off inside that transaction only (the
//! copied counters `outbox_tally` and `web_activity` are copied like any
//! table). Killed at any point, a run again continues after the last
//! committed batch. Then identity sequences are set past the largest ids,
//! the web inbox's search index (PostgreSQL's own, not copied) is filled
//! for the copied messages, and each table is read again from both sides in key order: row counts
//! and a sha256 over every value ([`rows::Val::digest`]) must be equal,
//! else the copy fails naming the tables and their first differing row.
//! The marker stays: a run on a finished copy verifies again.
//!
//! Must not: write to the SQLite store (beyond migrating it to this
//! binary's schema, as any start would), copy into a database that holds
//! anything but an unfinished copy of the same store, or log the URL.

mod plan;
mod rows;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use futures_util::{StreamExt, pin_mut};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::StoreError;
use super::postgres::pg_err;
use plan::{Table, ident};
use rows::{Typed, Val};

pub use plan::SKIPPED;

/// The marker table in the target: one row per copied table, and one
/// named '' for the whole copy.
const MARKER: &str = "postdesk_store_copy";
/// Session advisory lock: one copy into a database at a time.
const COPY_LOCK: i64 = 0x706f_7374_636f_7079;
/// The `application_name` of the copy's connection.
const APPLICATION: &str = "postdesk store copy";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no SQLite store at {0}")]
    Missing(PathBuf),
    #[error(
        "the SQLite store {0} is in use (a running postdesk daemon or another postdesk command has it open): stop the daemon first"
    )]
    InUse(PathBuf),
    #[error(
        "schema versions differ: the SQLite store is at {sqlite}, the PostgreSQL database at {postgres}"
    )]
    Versions { sqlite: i64, postgres: i64 },
    #[error(
        "the PostgreSQL database is not empty (table {0} has rows) and holds no unfinished copy: copy into a new, empty database"
    )]
    NotEmpty(String),
    #[error(
        "the PostgreSQL database holds a copy of another SQLite store ({0}): copy into a new, empty database"
    )]
    OtherSource(String),
    #[error("the PostgreSQL database is in use: {0}")]
    TargetBusy(String),
    #[error("{0}")]
    Unmapped(String),
    #[error("table {table}, row {key}, column {column}: {problem}")]
    Value {
        table: String,
        key: String,
        column: String,
        problem: String,
    },
    #[error(
        "verification failed: {} differ (see above). If the SQLite store changed between runs or postdesk ran on the PostgreSQL store, create the database anew and copy again",
        .0.join(", ")
    )]
    Mismatch(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Store(e.into())
    }
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyError::Store(pg_err(e))
    }
}

/// How rows are grouped into transactions.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Rows per batch (default 2000).
    pub batch_rows: usize,
    /// Bytes of values per batch, at least one row (default 32 MiB).
    pub batch_bytes: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_rows: 2000,
            batch_bytes: 32 << 20,
        }
    }
}

/// What a successful run did.
#[derive(Debug)]
pub struct CopyReport {
    pub tables: usize,
    pub rows: u64,
    /// The copy had finished before this run, which only verified it.
    pub already_copied: bool,
}

/// Where the copy goes.
pub struct Target<'a> {
    pub config: tokio_postgres::Config,
    pub ca_file: Option<&'a Path>,
}

/// Copy the SQLite store at `source` into the PostgreSQL database of
/// `target`, resuming an unfinished copy, and verify it. `say` gets each
/// line of progress and of the verification.
pub async fn copy_store(
    source: &Path,
    target: Target<'_>,
    options: &CopyOptions,
    say: &mut dyn FnMut(String),
) -> Result<CopyReport, CopyError> {
    let src = open_source(source)?;
    let mut db = open_target(target).await?;
    let sqlite_version: i64 = src.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let pg_version: i32 = db
        .query_one("SELECT COALESCE(MAX(version), 0) FROM postdesk_schema", &[])
        .await?
        .get(0);
    if sqlite_version != i64::from(pg_version) {
        return Err(CopyError::Versions {
            sqlite: sqlite_version,
            postgres: pg_version.into(),
        });
    }
    let plan = plan::plan(&src, &db).await?;
    for (name, why) in &plan.skipped {
        say(format!("{name}: skipped ({why})"));
    }
    for note in &plan.notes {
        say(format!("note: {note}"));
    }
    let name = source.display().to_string();
    let already = start(&db, &plan.tables, &name).await?;
    if already {
        say("already copied: verifying again".into());
    } else {
        let mut batches = 0usize;
        for t in &plan.tables {
            copy_table(&src, &db, t, options, &mut batches, say).await?;
        }
        set_sequences(&db, &plan.tables).await?;
        fill_search(&mut db, say).await?;
    }
    let rows = verify(&src, &db, &plan.tables, say).await?;
    if !already {
        db.execute(
            &format!("UPDATE {MARKER} SET finished_at = $1 WHERE table_name = ''"),
            &[&super::now_ms()],
        )
        .await?;
    }
    Ok(CopyReport {
        tables: plan.tables.len(),
        rows,
        already_copied: already,
    })
}

/// The SQLite store, opened with an exclusive lock held until it is closed
/// (WAL mode: any other open connection makes this fail at once), and
/// migrated to this binary's schema.
fn open_source(path: &Path) -> Result<Connection, CopyError> {
    if !path.is_file() {
        return Err(CopyError::Missing(path.to_path_buf()));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(500))?;
    let _mode: String = conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))?;
    let locked = conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;");
    if let Err(e) = locked {
        return Err(match StoreError::from(e) {
            StoreError::Busy => CopyError::InUse(path.to_path_buf()),
            other => other.into(),
        });
    }
    super::sqlite::migrate(&mut conn)?;
    Ok(conn)
}

/// A connection to the target, migrated, holding the copy's lock, with no
/// postdesk daemon connected to the same database.
async fn open_target(target: Target<'_>) -> Result<Object, CopyError> {
    let mut config = target.config;
    config.application_name(APPLICATION);
    let pool = super::postgres::migrated_pool(config, target.ca_file, 1).await?;
    let db = pool
        .get()
        .await
        .map_err(|e| CopyError::Store(StoreError::Backend(format!("postgres pool: {e}"))))?;
    let locked: bool = db
        .query_one("SELECT pg_try_advisory_lock($1)", &[&COPY_LOCK])
        .await?
        .get(0);
    if !locked {
        return Err(CopyError::TargetBusy(
            "another `postdesk store copy` is copying into it".into(),
        ));
    }
    let daemons: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND application_name = 'postdesk'",
            &[],
        )
        .await?
        .get(0);
    if daemons > 0 {
        return Err(CopyError::TargetBusy(format!(
            "{daemons} connection(s) of a running postdesk: stop it first"
        )));
    }
    Ok(db)
}

/// Check the target and set up the marker on a first run; whether the copy
/// had already finished.
async fn start(db: &Object, tables: &[Table], source: &str) -> Result<bool, CopyError> {
    let marked: bool = db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&MARKER])
        .await?
        .get(0);
    if marked {
        let row = db
            .query_opt(
                &format!("SELECT source, finished_at FROM {MARKER} WHERE table_name = ''"),
                &[],
            )
            .await?;
        let (from, finished): (Option<String>, Option<i64>) =
            row.map_or((None, None), |r| (r.get(0), r.get(1)));
        if from.as_deref() != Some(source) {
            return Err(CopyError::OtherSource(from.unwrap_or_default()));
        }
        mark_tables(db, tables).await?;
        return Ok(finished.is_some());
    }
    for t in tables.iter().filter(|t| !t.seeded) {
        let any: bool = db
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", ident(&t.name)),
                &[],
            )
            .await?
            .get(0);
        if any {
            return Err(CopyError::NotEmpty(t.name.clone()));
        }
    }
    let client: &tokio_postgres::Client = db;
    client
        .batch_execute(&format!(
            "BEGIN;
             CREATE TABLE {MARKER} (
                 table_name   TEXT PRIMARY KEY,   -- '' for the whole copy
                 last_key     TEXT,               -- JSON array: the last row copied
                 copied       BIGINT NOT NULL DEFAULT 0,
                 source       TEXT,
                 finished_at  BIGINT              -- unix ms: copied (''; verified)
             );"
        ))
        .await?;
    client
        .execute(
            &format!("INSERT INTO {MARKER} (table_name, source) VALUES ('', $1)"),
            &[&source],
        )
        .await?;
    mark_tables(client, tables).await?;
    client.batch_execute("COMMIT").await?;
    Ok(false)
}

/// A marker row for every table to copy (kept where there is one).
async fn mark_tables(db: &tokio_postgres::Client, tables: &[Table]) -> Result<(), CopyError> {
    for t in tables {
        db.execute(
            &format!("INSERT INTO {MARKER} (table_name) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&t.name],
        )
        .await?;
    }
    Ok(())
}

/// One SQLite row in the PostgreSQL columns' terms.
fn sqlite_row(t: &Table, row: &rusqlite::Row<'_>) -> Result<Vec<Val>, CopyError> {
    let mut vals = Vec::with_capacity(t.columns.len());
    for (i, c) in t.columns.iter().enumerate() {
        match rows::from_sqlite(row.get_ref(i)?, &c.ty) {
            Ok(v) => vals.push(v),
            Err(problem) => {
                let key: Vec<Val> = t
                    .key
                    .iter()
                    .map(|&k| {
                        row.get_ref(k)
                            .ok()
                            .and_then(|v| rows::from_sqlite(v, &t.columns[k].ty).ok())
                            .unwrap_or(Val::Null)
                    })
                    .collect();
                return Err(CopyError::Value {
                    table: t.name.clone(),
                    key: rows::show_key(&t.key_names(), &key),
                    column: c.name.clone(),
                    problem,
                });
            }
        }
    }
    Ok(vals)
}

fn key_of(t: &Table, row: &[Val]) -> Vec<Val> {
    t.key.iter().map(|&i| row[i].clone()).collect()
}

/// Copy what is left of one table, batch by batch.
async fn copy_table(
    src: &Connection,
    db: &Object,
    t: &Table,
    options: &CopyOptions,
    batches: &mut usize,
    say: &mut dyn FnMut(String),
) -> Result<(), CopyError> {
    let marker = db
        .query_one(
            &format!("SELECT last_key, copied, finished_at FROM {MARKER} WHERE table_name = $1"),
            &[&t.name],
        )
        .await?;
    let last_key: Option<String> = marker.get(0);
    let mut copied: i64 = marker.get(1);
    let finished: Option<i64> = marker.get(2);
    let total: i64 = src.query_row(
        &format!("SELECT COUNT(*) FROM {}", ident(&t.name)),
        [],
        |r| r.get(0),
    )?;
    if finished.is_some() {
        say(format!("{} {copied}/{total} (copied before)", t.name));
        return Ok(());
    }
    let after: Vec<Val> = match &last_key {
        Some(text) => serde_json::from_str::<Vec<serde_json::Value>>(text)
            .map_err(|e| CopyError::Unmapped(format!("{MARKER}: bad key for {}: {e}", t.name)))?
            .iter()
            .map(Val::from_json)
            .collect(),
        None => Vec::new(),
    };
    let triggers: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal)",
            &[&ident(&t.name)],
        )
        .await?
        .get(0);
    let mut stmt = src.prepare(&t.select(false, last_key.is_some()))?;
    let params: Vec<Box<dyn rusqlite::ToSql>> = after
        .iter()
        .map(|v| -> Box<dyn rusqlite::ToSql> {
            match v {
                Val::Int(i) => Box::new(*i),
                Val::Text(s) => Box::new(s.clone()),
                _ => Box::new(rusqlite::types::Null),
            }
        })
        .collect();
    let mut cursor = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut batch: Vec<Vec<Val>> = Vec::new();
    let mut bytes = 0usize;
    let mut shown = Instant::now();
    loop {
        let row = cursor.next()?;
        let end = row.is_none();
        if let Some(row) = row {
            let vals = sqlite_row(t, row)?;
            bytes += vals.iter().map(Val::size).sum::<usize>();
            batch.push(vals);
        }
        if !batch.is_empty()
            && (end || batch.len() >= options.batch_rows || bytes >= options.batch_bytes)
        {
            let first = copied == 0 && last_key.is_none();
            write_batch(db, t, &batch, first && t.seeded, triggers).await?;
            copied += i64::try_from(batch.len()).unwrap_or(i64::MAX);
            batch.clear();
            bytes = 0;
            *batches += 1;
            if shown.elapsed() >= Duration::from_secs(1) {
                say(format!("{} {copied}/{total}", t.name));
                shown = Instant::now();
            }
            pause_for_tests(*batches, say);
        }
        if end {
            break;
        }
    }
    // A table with nothing to copy still replaces the target's seeded rows.
    if copied == 0 && t.seeded {
        db.execute(&format!("DELETE FROM {}", ident(&t.name)), &[])
            .await?;
    }
    say(format!("{} {copied}/{total}", t.name));
    db.execute(
        &format!("UPDATE {MARKER} SET finished_at = $2 WHERE table_name = $1"),
        &[&t.name, &super::now_ms()],
    )
    .await?;
    Ok(())
}

/// One batch in one transaction: the rows by binary COPY (the table's own
/// triggers off meanwhile), and the marker moved past them.
async fn write_batch(
    db: &Object,
    t: &Table,
    batch: &[Vec<Val>],
    replace_seeded: bool,
    triggers: bool,
) -> Result<(), CopyError> {
    let table = ident(&t.name);
    let client: &tokio_postgres::Client = db;
    client.batch_execute("BEGIN").await?;
    let result = async {
        if replace_seeded {
            client.execute(&format!("DELETE FROM {table}"), &[]).await?;
        }
        if triggers {
            client
                .batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER USER"))
                .await?;
        }
        let sink = client
            .copy_in(&format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                t.column_list()
            ))
            .await?;
        let types: Vec<Type> = t.columns.iter().map(|c| c.ty.clone()).collect();
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for row in batch {
            let typed: Vec<Typed<'_>> = row.iter().map(Typed).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                typed.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await?;
        }
        writer.finish().await?;
        if triggers {
            client
                .batch_execute(&format!("ALTER TABLE {table} ENABLE TRIGGER USER"))
                .await?;
        }
        let last = batch.last().map(|r| key_of(t, r)).unwrap_or_default();
        let json = serde_json::Value::Array(last.iter().map(Val::to_json).collect()).to_string();
        let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        client
            .execute(
                &format!(
                    "UPDATE {MARKER} SET last_key = $2, copied = copied + $3 WHERE table_name = $1"
                ),
                &[&t.name, &json, &n],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await?,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
    }
    Ok(())
}

/// Debug builds only: stop (sleep until killed) once `batches` batches
/// were committed, when `POSTDESK_COPY_PAUSE_AFTER_BATCHES` says so, so a
/// test can kill -9 a copy at a known point.
fn pause_for_tests(batches: usize, say: &mut dyn FnMut(String)) {
    #[cfg(debug_assertions)]
    if std::env::var("POSTDESK_COPY_PAUSE_AFTER_BATCHES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(batches)
    {
        say(format!("paused after {batches} batches"));
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (batches, say);
}

/// Identity and serial sequences set past the largest copied id: the next
/// ticket gets the number after the SQLite store's last.
async fn set_sequences(db: &Object, tables: &[Table]) -> Result<(), CopyError> {
    for t in tables.iter().filter(|t| t.key.len() == 1) {
        let col = &t.columns[t.key[0]];
        if rows::is_text(&col.ty) {
            continue;
        }
        let seq: Option<String> = db
            .query_one(
                "SELECT pg_get_serial_sequence($1, $2)",
                &[&ident(&t.name), &col.name],
            )
            .await?
            .get(0);
        if let Some(seq) = seq {
            db.execute(
                &format!(
                    "SELECT setval($1::text::regclass, COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)",
                    ident(&col.name),
                    ident(&t.name)
                ),
                &[&seq],
            )
            .await?;
        }
    }
    Ok(())
}

/// The web inbox's search index (`message_search`, PostgreSQL's own: not
/// copied) filled for the copied messages, whose insert trigger was off.
/// Messages already indexed are left: a resumed run adds the rest.
async fn fill_search(db: &mut Object, say: &mut dyn FnMut(String)) -> Result<(), CopyError> {
    let n = crate::store::postgres::index_missing(db).await?;
    say(format!("message_search: {n} messages indexed"));
    Ok(())
}

/// One table's side of the verification.
#[derive(Default)]
struct Side {
    rows: u64,
    hash: Sha256,
}

impl Side {
    fn add(&mut self, row: &[Val]) {
        self.rows += 1;
        row.iter().for_each(|v| v.digest(&mut self.hash));
    }
}

/// Read every table from both sides in key order; print counts and
/// checksums; fail naming the tables that differ. Returns the rows checked.
async fn verify(
    src: &Connection,
    db: &Object,
    tables: &[Table],
    say: &mut dyn FnMut(String),
) -> Result<u64, CopyError> {
    let mut differ = Vec::new();
    let mut total = 0;
    for t in tables {
        let (sqlite, postgres, first) = compare_table(src, db, t).await?;
        let (a, b) = (
            hex::encode(sqlite.hash.finalize()),
            hex::encode(postgres.hash.finalize()),
        );
        if sqlite.rows == postgres.rows && a == b {
            say(format!(
                "verified {}: {} rows, sha256 {}",
                t.name,
                sqlite.rows,
                &a[..16]
            ));
        } else {
            say(format!(
                "DIFFERS {}: SQLite {} rows sha256 {}, PostgreSQL {} rows sha256 {}; {}",
                t.name,
                sqlite.rows,
                &a[..16],
                postgres.rows,
                &b[..16],
                first.unwrap_or_default()
            ));
            differ.push(t.name.clone());
        }
        total += sqlite.rows;
    }
    if differ.is_empty() {
        Ok(total)
    } else {
        Err(CopyError::Mismatch(differ))
    }
}

/// Both sides of one table, and where they first differ.
async fn compare_table(
    src: &Connection,
    db: &Object,
    t: &Table,
) -> Result<(Side, Side, Option<String>), CopyError> {
    let mut stmt = src.prepare(&t.select(false, false))?;
    let mut left = stmt.query([])?;
    let stream = db
        .query_raw(
            &t.select(true, false),
            std::iter::empty::<&(dyn ToSql + Sync)>(),
        )
        .await?;
    pin_mut!(stream);
    let (mut sqlite, mut postgres) = (Side::default(), Side::default());
    let mut first = None;
    let keys = t.key_names();
    loop {
        let a = match left.next()? {
            Some(row) => Some(sqlite_row(t, row)?),
            None => None,
        };
        let b = match stream.next().await.transpose()? {
            Some(row) => {
                let mut vals = Vec::with_capacity(t.columns.len());
                for (i, c) in t.columns.iter().enumerate() {
                    vals.push(rows::from_pg(&row, i, &c.ty)?);
                }
                Some(vals)
            }
            None => None,
        };
        if a.is_none() && b.is_none() {
            break;
        }
        if first.is_none() && a != b {
            first = Some(describe_difference(t, &keys, a.as_deref(), b.as_deref()));
        }
        a.iter().for_each(|r| sqlite.add(r));
        b.iter().for_each(|r| postgres.add(r));
    }
    Ok((sqlite, postgres, first))
}

fn describe_difference(t: &Table, keys: &[&str], a: Option<&[Val]>, b: Option<&[Val]>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if key_of(t, a) == key_of(t, b) => {
            let cols: Vec<&str> = t
                .columns
                .iter()
                .zip(a.iter().zip(b))
                .filter(|(_, (x, y))| x != y)
                .map(|(c, _)| c.name.as_str())
                .collect();
            format!(
                "first difference: row {} differs in {}",
                rows::show_key(keys, &key_of(t, a)),
                cols.join(", ")
            )
        }
        (Some(a), Some(b)) => format!(
            "first difference: SQLite has row {} where PostgreSQL has row {}",
            rows::show_key(keys, &key_of(t, a)),
            rows::show_key(keys, &key_of(t, b))
        ),
        (Some(a), None) => format!(
            "first difference: row {} is missing in PostgreSQL",
            rows::show_key(keys, &key_of(t, a))
        ),
        (None, Some(b)) => format!(
            "first difference: row {} is only in PostgreSQL",
            rows::show_key(keys, &key_of(t, b))
        ),
        (None, None) => String::new(),
    }
}
