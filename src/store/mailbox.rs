//! Pulled mailboxes in the store: checkpoints, the batch-plus-checkpoint
//! commit, resync dedupe, the UIDs skipped as never returned, and the
//! per-mailbox status the CLI shows.
//!
//! Owns the SQL for `mailbox_checkpoints`, `mailbox_skipped` and
//! `mailbox_status` and the dedupe lookups on `spool` and `messages` that
//! pulling needs. A batch and its advanced checkpoint are written by one
//! job on the writer thread, so they share one transaction: after a crash
//! either both are there or neither is, and the next start re-fetches at
//! most that batch.
//!
//! Must not: talk IMAP or parse mail (callers pass the Message-ID they
//! extracted). Untrusted input: message bytes and Message-IDs come from a
//! remote server; they are only bound as SQL parameters.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::sqlite::now_ms;
use super::{NewSpool, StoreError};

/// Where a mailbox's pull stands: the last UID committed under a UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub uidvalidity: u32,
    pub last_uid: u32,
}

/// One message fetched from a mailbox, ready for the spool.
#[derive(Debug, Clone)]
pub struct PulledMessage {
    pub spool: NewSpool,
    /// sha256 hex of the raw bytes (computed off the writer thread).
    pub content_hash: String,
    /// Message-ID without angle brackets, when the message has one.
    pub message_id: Option<String>,
    /// Gmail's X-GM-MSGID (the message's id in the account, whatever its
    /// labels), when the server offers Gmail's extensions.
    pub gm_msgid: Option<u64>,
}

/// A fetched batch and the checkpoint it advances to.
#[derive(Debug, Clone)]
pub struct PulledBatch {
    pub channel: String,
    pub folder: String,
    pub checkpoint: Checkpoint,
    pub messages: Vec<PulledMessage>,
    /// Messages of the batch's range not fetched at all because the channel
    /// already has their Message-ID (a resync); counted as skipped.
    pub known_unfetched: usize,
    /// UIDs of the batch's range the server never returned (damaged on the
    /// server, skipped after repeated fetches): not spooled, and recorded so
    /// that `move_to` leaves them in the folder.
    pub unreturned: Vec<u32>,
    /// The Gmail account (server and login) the messages' X-GM-MSGIDs
    /// belong to: a message with one the account already pulled is skipped,
    /// whichever channel or label pulled it.
    pub gmail_account: Option<String>,
    /// The mailbox's lease the batch is pulled under: the batch is refused
    /// whole when another node has taken the mailbox over.
    pub fence: Option<super::Fence>,
}

/// What a pulled batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PulledOutcome {
    /// New spool rows.
    pub spooled: usize,
    /// Messages already known on this channel (same bytes spooled, or the
    /// same Message-ID stored), skipped.
    pub skipped: usize,
}

/// State of a mailbox's puller, as shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxState {
    Connecting,
    Idle,
    Polling,
    Fetching,
    Backoff,
    /// The provider's download cap, or the mailbox's daily download
    /// budget, holds pulling back until `resume_at`.
    Throttled,
    NeedsReauth,
    Disabled,
    Stopped,
}

impl MailboxState {
    pub const ALL: [MailboxState; 9] = [
        MailboxState::Connecting,
        MailboxState::Idle,
        MailboxState::Polling,
        MailboxState::Fetching,
        MailboxState::Backoff,
        MailboxState::Throttled,
        MailboxState::NeedsReauth,
        MailboxState::Disabled,
        MailboxState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailboxState::Connecting => "connecting",
            MailboxState::Idle => "idle",
            MailboxState::Polling => "polling",
            MailboxState::Fetching => "fetching",
            MailboxState::Backoff => "backoff",
            MailboxState::Throttled => "throttled",
            MailboxState::NeedsReauth => "needs_reauth",
            MailboxState::Disabled => "disabled",
            MailboxState::Stopped => "stopped",
        }
    }
}

/// A mailbox's persisted status row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxStatusView {
    pub channel: String,
    pub folder: String,
    pub state: String,
    pub uidvalidity: Option<u32>,
    pub last_uid: Option<u32>,
    /// Messages fetched and committed to the spool since the store was created.
    pub fetched: i64,
    /// Messages fetched but skipped as already known.
    pub skipped: i64,
    /// Messages the server never returned (damaged there), skipped under
    /// the current UIDVALIDITY: in no ticket, still in the folder; their
    /// UIDs are in the log.
    pub unreturned: i64,
    pub last_error: Option<String>,
    /// Unix milliseconds of `last_error`.
    pub last_error_at: Option<i64>,
    /// Unix milliseconds of the last state change.
    pub updated_at: i64,
    /// Unix milliseconds when a `throttled` mailbox resumes pulling.
    pub resume_at: Option<i64>,
}

/// A puller's state change, as [`MailboxStore::set_mailbox_state`] records
/// it.
///
/// [`MailboxStore::set_mailbox_state`]: super::MailboxStore::set_mailbox_state
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStateChange {
    pub channel: String,
    pub folder: String,
    pub state: MailboxState,
    /// The error that made the change, if any: kept as the last error.
    pub error: Option<String>,
    /// Unix milliseconds when a `throttled` mailbox resumes pulling.
    pub resume_at: Option<i64>,
}

/// A pulled mailbox under one UIDVALIDITY, the only one its UIDs mean
/// something under: whose skipped UIDs [`MailboxStore::skipped_uids`]
/// reads, where [`MailboxStore::reset_checkpoint`] starts over.
///
/// [`MailboxStore::skipped_uids`]: super::MailboxStore::skipped_uids
/// [`MailboxStore::reset_checkpoint`]: super::MailboxStore::reset_checkpoint
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxGeneration {
    pub channel: String,
    pub folder: String,
    pub uidvalidity: u32,
}

/// An alert incident to open on a channel whose mailbox stopped (see
/// [`MailboxStore::open_alert`](super::MailboxStore::open_alert)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub channel: String,
    /// `needs_reauth` or `failing`, as in [`AlertView::reason`].
    pub reason: String,
    /// The last error, as the puller saw it.
    pub detail: Option<String>,
}

/// An open alert incident: a pulled mailbox that stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertView {
    pub id: i64,
    pub channel: String,
    /// `needs_reauth` (the OAuth grant refused) or `failing` (failing for
    /// longer than `alert_after_secs`).
    pub reason: String,
    /// The last error, as the puller saw it.
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub opened_at: i64,
    /// When the alert email was queued (unix ms); none while it was not.
    pub notified_at: Option<i64>,
}

/// Schema step 2 (appended to the migrations list).
pub(crate) const MIGRATION_2: &str = r#"
CREATE INDEX spool_channel_hash ON spool(channel, content_hash) WHERE channel IS NOT NULL;
CREATE TABLE mailbox_status (
    channel        TEXT NOT NULL,
    folder         TEXT NOT NULL,
    state          TEXT NOT NULL,
    fetched        INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    last_error_at  INTEGER,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (channel, folder)
);
"#;

/// Schema step 6 (appended to the migrations list).
pub(crate) const MIGRATION_6: &str = r#"
CREATE TABLE mailbox_skipped (
    channel      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    skipped_at   INTEGER NOT NULL,
    PRIMARY KEY (channel, folder, uidvalidity, uid)
);
"#;

/// Schema step 12 (appended to the migrations list): the X-GM-MSGIDs each
/// Gmail account pulled, when a throttled mailbox resumes, and the alert
/// incidents of mailboxes that stopped.
pub(crate) const MIGRATION_13: &str = r#"
CREATE TABLE pulled_gmail (
    account    TEXT NOT NULL,
    msgid      INTEGER NOT NULL,
    channel    TEXT NOT NULL,
    pulled_at  INTEGER NOT NULL,
    PRIMARY KEY (account, msgid)
) WITHOUT ROWID;
ALTER TABLE mailbox_status ADD COLUMN resume_at INTEGER;
CREATE TABLE mailbox_alerts (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT,
    opened_at    INTEGER NOT NULL,
    notified_at  INTEGER,
    resolved_at  INTEGER
);
CREATE UNIQUE INDEX mailbox_alerts_open ON mailbox_alerts(channel) WHERE resolved_at IS NULL;
"#;

pub(crate) fn checkpoint(
    conn: &Connection,
    channel: &str,
    folder: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT uidvalidity, last_uid FROM mailbox_checkpoints WHERE channel = ?1 AND folder = ?2",
        )?
        .query_row(params![channel, folder], |r| {
            Ok(Checkpoint {
                uidvalidity: r.get(0)?,
                last_uid: r.get(1)?,
            })
        })
        .optional()?)
}

fn set_checkpoint(
    conn: &Connection,
    channel: &str,
    folder: &str,
    cp: Checkpoint,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO mailbox_checkpoints (channel, folder, uidvalidity, last_uid, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(channel, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
             last_uid = excluded.last_uid, updated_at = excluded.updated_at",
    )?
    .execute(params![
        channel,
        folder,
        cp.uidvalidity,
        cp.last_uid,
        now_ms()
    ])?;
    Ok(())
}

/// The Message-IDs among `ids` that `channel` already has a message with.
pub(crate) fn known_message_ids(
    conn: &Connection,
    channel: &str,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM messages WHERE channel = ?1 AND dedupe_key = ?2 LIMIT 1")?;
    let mut out = Vec::new();
    for id in ids {
        if stmt
            .query_row(params![channel, format!("mid:{id}")], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .is_some()
        {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The X-GM-MSGIDs among `ids` that `account` already pulled.
pub(crate) fn known_gmail_ids(
    conn: &Connection,
    account: &str,
    ids: &[u64],
) -> Result<Vec<u64>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM pulled_gmail WHERE account = ?1 AND msgid = ?2")?;
    let mut out = Vec::new();
    for id in ids {
        // SQLite integers are signed: the id's 64 bits stored as they are.
        let known: Option<i64> = stmt
            .query_row(params![account, *id as i64], |r| r.get(0))
            .optional()?;
        if known.is_some() {
            out.push(*id);
        }
    }
    Ok(out)
}

/// Whether this channel already has the message: the same bytes in the
/// spool, or the same Message-ID among its stored messages.
fn known(conn: &Connection, channel: &str, m: &PulledMessage) -> Result<bool, StoreError> {
    let by_hash: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM spool WHERE channel = ?1 AND content_hash = ?2 LIMIT 1")?
        .query_row(params![channel, m.content_hash], |r| r.get(0))
        .optional()?;
    if by_hash.is_some() {
        return Ok(true);
    }
    let Some(id) = &m.message_id else {
        return Ok(false);
    };
    let by_id: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM messages WHERE channel = ?1 AND dedupe_key = ?2 LIMIT 1")?
        .query_row(params![channel, format!("mid:{id}")], |r| r.get(0))
        .optional()?;
    Ok(by_id.is_some())
}

/// Spool the new messages of a batch and advance the checkpoint (the caller
/// runs this as one writer job: one transaction).
pub(crate) fn spool_pulled(
    conn: &Connection,
    batch: &PulledBatch,
    insert: impl Fn(&Connection, &NewSpool, &str) -> Result<super::SpoolId, StoreError>,
) -> Result<PulledOutcome, StoreError> {
    let mut out = PulledOutcome {
        skipped: batch.known_unfetched,
        ..Default::default()
    };
    let mut gmail = conn.prepare_cached(
        "INSERT OR IGNORE INTO pulled_gmail (account, msgid, channel, pulled_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for m in &batch.messages {
        let gm = batch.gmail_account.as_deref().zip(m.gm_msgid);
        let gm_known = match gm {
            Some((account, id)) => !known_gmail_ids(conn, account, &[id])?.is_empty(),
            None => false,
        };
        if gm_known || known(conn, &batch.channel, m)? {
            out.skipped += 1;
        } else {
            insert(conn, &m.spool, &m.content_hash)?;
            out.spooled += 1;
        }
        if let Some((account, id)) = gm {
            gmail.execute(params![account, id as i64, batch.channel, now_ms()])?;
        }
    }
    let mut skipped = conn.prepare_cached(
        "INSERT OR IGNORE INTO mailbox_skipped (channel, folder, uidvalidity, uid, skipped_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let now = now_ms();
    for uid in &batch.unreturned {
        skipped.execute(params![
            batch.channel,
            batch.folder,
            batch.checkpoint.uidvalidity,
            uid,
            now
        ])?;
    }
    set_checkpoint(conn, &batch.channel, &batch.folder, batch.checkpoint)?;
    conn.prepare_cached(
        "INSERT INTO mailbox_status (channel, folder, state, fetched, skipped, updated_at)
         VALUES (?1, ?2, 'fetching', ?3, ?4, ?5)
         ON CONFLICT(channel, folder) DO UPDATE SET fetched = fetched + excluded.fetched,
             skipped = skipped + excluded.skipped",
    )?
    .execute(params![
        batch.channel,
        batch.folder,
        out.spooled as i64,
        out.skipped as i64,
        now_ms()
    ])?;
    Ok(out)
}

/// The UIDs of a mailbox (under `uidvalidity`) skipped because the server
/// never returned them, ascending.
pub(crate) fn skipped_uids(
    conn: &Connection,
    m: &MailboxGeneration,
) -> Result<Vec<u32>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uid FROM mailbox_skipped WHERE channel = ?1 AND folder = ?2 AND uidvalidity = ?3
         ORDER BY uid",
    )?;
    let rows = stmt.query_map(params![m.channel, m.folder, m.uidvalidity], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Start over under a new UIDVALIDITY (last UID 0); the UIDs skipped under
/// another one mean nothing now.
pub(crate) fn reset_checkpoint(conn: &Connection, m: &MailboxGeneration) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM mailbox_skipped WHERE channel = ?1 AND folder = ?2 AND uidvalidity <> ?3",
    )?
    .execute(params![m.channel, m.folder, m.uidvalidity])?;
    set_checkpoint(
        conn,
        &m.channel,
        &m.folder,
        Checkpoint {
            uidvalidity: m.uidvalidity,
            last_uid: 0,
        },
    )
}

pub(crate) fn set_state(conn: &Connection, c: &MailboxStateChange) -> Result<(), StoreError> {
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO mailbox_status (channel, folder, state, last_error, last_error_at, updated_at, resume_at)
         VALUES (?1, ?2, ?3, ?4, CASE WHEN ?4 IS NULL THEN NULL ELSE ?5 END, ?5, ?6)
         ON CONFLICT(channel, folder) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
             last_error = COALESCE(excluded.last_error, last_error),
             last_error_at = COALESCE(excluded.last_error_at, last_error_at),
             resume_at = excluded.resume_at",
    )?
    .execute(params![
        c.channel,
        c.folder,
        c.state.as_str(),
        c.error,
        now,
        c.resume_at
    ])?;
    Ok(())
}

const ALERT_COLUMNS: &str = "id, channel, reason, detail, opened_at, notified_at";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertView> {
    Ok(AlertView {
        id: r.get(0)?,
        channel: r.get(1)?,
        reason: r.get(2)?,
        detail: r.get(3)?,
        opened_at: r.get(4)?,
        notified_at: r.get(5)?,
    })
}

/// The channel's open incident, opened now if it had none; whether it is new.
pub(crate) fn open_alert(conn: &Connection, a: &NewAlert) -> Result<(AlertView, bool), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO mailbox_alerts (channel, reason, detail, opened_at)
             SELECT ?1, ?2, ?3, ?4
             WHERE NOT EXISTS (SELECT 1 FROM mailbox_alerts WHERE channel = ?1 AND resolved_at IS NULL)",
        )?
        .execute(params![a.channel, a.reason, a.detail, now_ms()])?;
    let open = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM mailbox_alerts WHERE channel = ?1 AND resolved_at IS NULL"
        ))?
        .query_row(params![a.channel], alert_row)?;
    Ok((open, inserted > 0))
}

/// The alert email of incident `id` is queued.
pub(crate) fn alert_notified(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE mailbox_alerts SET notified_at = ?2 WHERE id = ?1")?
        .execute(params![id, now_ms()])?;
    Ok(())
}

/// Close the channel's open incident; whether there was one.
pub(crate) fn resolve_alert(conn: &Connection, channel: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE mailbox_alerts SET resolved_at = ?2 WHERE channel = ?1 AND resolved_at IS NULL",
        )?
        .execute(params![channel, now_ms()])?;
    Ok(n > 0)
}

/// Every open incident, oldest first.
pub(crate) fn open_alerts(conn: &Connection) -> Result<Vec<AlertView>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ALERT_COLUMNS} FROM mailbox_alerts WHERE resolved_at IS NULL ORDER BY opened_at, id"
    ))?;
    let rows = stmt.query_map([], alert_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn statuses(conn: &Connection) -> Result<Vec<MailboxStatusView>, StoreError> {
    let mut stmt = conn.prepare(super::queries::MAILBOX_STATUSES)?;
    let rows = stmt.query_map([], |r| {
        Ok(MailboxStatusView {
            channel: r.get(0)?,
            folder: r.get(1)?,
            state: r.get(2)?,
            uidvalidity: r.get(3)?,
            last_uid: r.get(4)?,
            fetched: r.get(5)?,
            skipped: r.get(6)?,
            last_error: r.get(7)?,
            last_error_at: r.get(8)?,
            updated_at: r.get(9)?,
            unreturned: r.get(10)?,
            resume_at: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{batch, generation, pulled, state_change};
    use crate::store::{MailboxStore, SqliteStore, Store};

    #[tokio::test]
    async fn batch_checkpoint_dedupe_and_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.sqlite"), 5000, 64).expect("open");
        let (ch, folder) = ("mailbox".to_string(), "INBOX".to_string());
        assert_eq!(
            store
                .checkpoint(ch.clone(), folder.clone())
                .await
                .expect("cp"),
            None
        );

        let out = store
            .spool_pulled(batch(
                7,
                2,
                vec![pulled("a", Some("a@x")), pulled("b", None)],
            ))
            .await
            .expect("batch");
        assert_eq!((out.spooled, out.skipped), (2, 0));
        let cp = store
            .checkpoint(ch.clone(), folder.clone())
            .await
            .expect("cp");
        assert_eq!(
            cp,
            Some(Checkpoint {
                uidvalidity: 7,
                last_uid: 2
            })
        );

        // A resync under a new UIDVALIDITY sees the same bytes again: skipped.
        store
            .reset_checkpoint(generation(8), None)
            .await
            .expect("reset");
        let out = store
            .spool_pulled(batch(
                8,
                3,
                vec![
                    pulled("a", Some("a@x")),
                    pulled("b", None),
                    pulled("c", None),
                ],
            ))
            .await
            .expect("batch");
        assert_eq!((out.spooled, out.skipped), (1, 2));
        assert_eq!(store.status().await.expect("status").spool_total, 3);

        store
            .set_mailbox_state(state_change(MailboxState::Backoff, Some("boom")))
            .await
            .expect("state");
        store
            .set_mailbox_state(state_change(MailboxState::Idle, None))
            .await
            .expect("state");
        let rows = store.mailbox_status().await.expect("rows");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.state.as_str(), r.fetched, r.skipped), ("idle", 3, 2));
        assert_eq!((r.uidvalidity, r.last_uid), (Some(8), Some(3)));
        assert_eq!(r.last_error.as_deref(), Some("boom"), "last error is kept");
        assert!(r.last_error_at.is_some());
    }

    /// UIDs a batch skipped as never returned are kept with its commit, per
    /// UIDVALIDITY, and forgotten when the mailbox starts over under a new one.
    #[tokio::test]
    async fn skipped_uids_are_kept_until_uidvalidity_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.sqlite"), 5000, 64).expect("open");
        let skipped = |v| store.skipped_uids(generation(v));
        for (last, unreturned) in [(3, vec![2]), (9, vec![7, 4]), (10, vec![])] {
            let mut b = batch(7, last, vec![pulled(&format!("m{last}"), None)]);
            b.unreturned = unreturned;
            store.spool_pulled(b).await.expect("batch");
        }
        assert_eq!(skipped(7).await.expect("skipped"), [2, 4, 7]);
        assert_eq!(skipped(8).await.expect("skipped"), [0u32; 0]);
        // `status` counts them (its `skipped` counts known duplicates).
        let rows = store.mailbox_status().await.expect("status");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].unreturned, rows[0].skipped), (3, 0));
        store
            .reset_checkpoint(generation(8), None)
            .await
            .expect("reset");
        assert_eq!(skipped(7).await.expect("skipped"), [0u32; 0]);
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        for round in 0..10 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("s{round}.sqlite"));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || SqliteStore::open(&p, 5000, 8).map(|_| ()))
                })
                .collect();
            for h in handles {
                h.join()
                    .expect("thread")
                    .expect("open while another process migrates");
            }
        }
    }
}
