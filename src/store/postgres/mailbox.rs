//! Pulled mailboxes in PostgreSQL: checkpoints, the batch-plus-checkpoint
//! commit (one write of the group committer: one transaction), resync
//! dedupe, skipped UIDs and the per-mailbox status, as `store/mailbox.rs`
//! does for SQLite. Message bytes and Message-IDs from the remote server are
//! only bound as parameters.

use super::inbound::insert_spool;
use super::sql::{Db, col, exec, row, rows, to_u32};
use crate::store::queries::MAILBOX_STATUSES;
use crate::store::{
    AlertView, Checkpoint, MailboxGeneration, MailboxStateChange, MailboxStatusView, NewAlert,
    PulledBatch, PulledMessage, PulledOutcome, StoreError, now_ms,
};

pub(super) async fn checkpoint(
    db: &Db,
    channel: &str,
    folder: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    let r = row(
        db,
        "SELECT uidvalidity, last_uid FROM mailbox_checkpoints WHERE channel = $1 AND folder = $2",
        &[&channel, &folder],
    )
    .await?;
    r.map(|r| {
        Ok(Checkpoint {
            uidvalidity: to_u32(col(&r, 0)?),
            last_uid: to_u32(col(&r, 1)?),
        })
    })
    .transpose()
}

async fn set_checkpoint(
    db: &Db,
    channel: &str,
    folder: &str,
    cp: Checkpoint,
) -> Result<(), StoreError> {
    exec(
        db,
        "INSERT INTO mailbox_checkpoints (channel, folder, uidvalidity, last_uid, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (channel, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
             last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        &[
            &channel,
            &folder,
            &i64::from(cp.uidvalidity),
            &i64::from(cp.last_uid),
            &now_ms(),
        ],
    )
    .await?;
    Ok(())
}

/// The Message-IDs among `ids` that `channel` already has a message with.
pub(super) async fn known_message_ids(
    db: &Db,
    channel: &str,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let keys: Vec<String> = ids.iter().map(|id| format!("mid:{id}")).collect();
    let found = rows(
        db,
        "SELECT dedupe_key FROM messages WHERE channel = $1 AND dedupe_key = ANY($2)",
        &[&channel, &keys],
    )
    .await?;
    let found: std::collections::HashSet<String> = found
        .iter()
        .map(|r| col::<String>(r, 0))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .filter(|id| found.contains(&format!("mid:{id}")))
        .cloned()
        .collect())
}

/// Whether this channel already has the message: the same bytes in the
/// spool, or the same Message-ID among its stored messages.
async fn known(db: &Db, channel: &str, m: &PulledMessage) -> Result<bool, StoreError> {
    let by_hash = row(
        db,
        "SELECT 1 FROM spool WHERE channel = $1 AND content_hash = $2 LIMIT 1",
        &[&channel, &m.content_hash],
    )
    .await?;
    if by_hash.is_some() {
        return Ok(true);
    }
    let Some(id) = &m.message_id else {
        return Ok(false);
    };
    let by_id = row(
        db,
        "SELECT 1 FROM messages WHERE channel = $1 AND dedupe_key = $2 LIMIT 1",
        &[&channel, &format!("mid:{id}")],
    )
    .await?;
    Ok(by_id.is_some())
}

/// Spool a batch's new messages and advance its checkpoint (one write).
pub(super) async fn spool_pulled(
    db: &Db,
    batch: &PulledBatch,
) -> Result<PulledOutcome, StoreError> {
    let mut out = PulledOutcome {
        skipped: batch.known_unfetched,
        ..Default::default()
    };
    for m in &batch.messages {
        let gm = batch.gmail_account.as_deref().zip(m.gm_msgid);
        let gm_known = match gm {
            Some((account, id)) => !known_gmail_ids(db, account, &[id]).await?.is_empty(),
            None => false,
        };
        if gm_known || known(db, &batch.channel, m).await? {
            out.skipped += 1;
        } else {
            insert_spool(db, &m.spool, &m.content_hash, now_ms()).await?;
            out.spooled += 1;
        }
        if let Some((account, id)) = gm {
            exec(
                db,
                "INSERT INTO pulled_gmail (account, msgid, channel, pulled_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                // The id's 64 bits stored as they are (BIGINT is signed).
                &[&account, &(id as i64), &batch.channel, &now_ms()],
            )
            .await?;
        }
    }
    let now = now_ms();
    let uidvalidity = i64::from(batch.checkpoint.uidvalidity);
    for uid in &batch.unreturned {
        exec(
            db,
            "INSERT INTO mailbox_skipped (channel, folder, uidvalidity, uid, skipped_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &batch.channel,
                &batch.folder,
                &uidvalidity,
                &i64::from(*uid),
                &now,
            ],
        )
        .await?;
    }
    set_checkpoint(db, &batch.channel, &batch.folder, batch.checkpoint).await?;
    exec(
        db,
        "INSERT INTO mailbox_status (channel, folder, state, fetched, skipped, updated_at)
         VALUES ($1, $2, 'fetching', $3, $4, $5)
         ON CONFLICT (channel, folder) DO UPDATE
             SET fetched = mailbox_status.fetched + excluded.fetched,
                 skipped = mailbox_status.skipped + excluded.skipped",
        &[
            &batch.channel,
            &batch.folder,
            &(out.spooled as i64),
            &(out.skipped as i64),
            &now,
        ],
    )
    .await?;
    Ok(out)
}

pub(super) async fn skipped_uids(db: &Db, m: &MailboxGeneration) -> Result<Vec<u32>, StoreError> {
    rows(
        db,
        "SELECT uid FROM mailbox_skipped WHERE channel = $1 AND folder = $2 AND uidvalidity = $3
         ORDER BY uid",
        &[&m.channel, &m.folder, &i64::from(m.uidvalidity)],
    )
    .await?
    .iter()
    .map(|r| Ok(to_u32(col(r, 0)?)))
    .collect()
}

/// Start over under a new UIDVALIDITY (last UID 0), forgetting the UIDs
/// skipped under another one.
pub(super) async fn reset_checkpoint(db: &Db, m: &MailboxGeneration) -> Result<(), StoreError> {
    exec(
        db,
        "DELETE FROM mailbox_skipped WHERE channel = $1 AND folder = $2 AND uidvalidity <> $3",
        &[&m.channel, &m.folder, &i64::from(m.uidvalidity)],
    )
    .await?;
    let cp = Checkpoint {
        uidvalidity: m.uidvalidity,
        last_uid: 0,
    };
    set_checkpoint(db, &m.channel, &m.folder, cp).await
}

pub(super) async fn set_state(db: &Db, c: &MailboxStateChange) -> Result<(), StoreError> {
    let now = now_ms();
    let error_at = c.error.as_ref().map(|_| now);
    exec(
        db,
        "INSERT INTO mailbox_status (channel, folder, state, last_error, last_error_at, updated_at, resume_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (channel, folder) DO UPDATE SET state = excluded.state,
             updated_at = excluded.updated_at,
             last_error = COALESCE(excluded.last_error, mailbox_status.last_error),
             last_error_at = COALESCE(excluded.last_error_at, mailbox_status.last_error_at),
             resume_at = excluded.resume_at",
        &[
            &c.channel,
            &c.folder,
            &c.state.as_str(),
            &c.error,
            &error_at,
            &now,
            &c.resume_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn statuses(db: &Db) -> Result<Vec<MailboxStatusView>, StoreError> {
    rows(db, MAILBOX_STATUSES, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(MailboxStatusView {
                channel: col(r, 0)?,
                folder: col(r, 1)?,
                state: col(r, 2)?,
                uidvalidity: col::<Option<i64>>(r, 3)?.map(to_u32),
                last_uid: col::<Option<i64>>(r, 4)?.map(to_u32),
                fetched: col(r, 5)?,
                skipped: col(r, 6)?,
                last_error: col(r, 7)?,
                last_error_at: col(r, 8)?,
                updated_at: col(r, 9)?,
                unreturned: col(r, 10)?,
                resume_at: col(r, 11)?,
            })
        })
        .collect()
}

/// The X-GM-MSGIDs among `ids` that `account` already pulled.
pub(super) async fn known_gmail_ids(
    db: &Db,
    account: &str,
    ids: &[u64],
) -> Result<Vec<u64>, StoreError> {
    let signed: Vec<i64> = ids.iter().map(|id| *id as i64).collect();
    let found = rows(
        db,
        "SELECT msgid FROM pulled_gmail WHERE account = $1 AND msgid = ANY($2)",
        &[&account, &signed],
    )
    .await?;
    let found: std::collections::HashSet<i64> = found
        .iter()
        .map(|r| col::<i64>(r, 0))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .filter(|id| found.contains(&(**id as i64)))
        .copied()
        .collect())
}

const ALERT_COLUMNS: &str = "id, channel, reason, detail, opened_at, notified_at";

fn alert_row(r: &tokio_postgres::Row) -> Result<AlertView, StoreError> {
    Ok(AlertView {
        id: col(r, 0)?,
        channel: col(r, 1)?,
        reason: col(r, 2)?,
        detail: col(r, 3)?,
        opened_at: col(r, 4)?,
        notified_at: col(r, 5)?,
    })
}

/// The channel's open incident, opened now if it had none; whether it is new.
pub(super) async fn open_alert(db: &Db, a: &NewAlert) -> Result<(AlertView, bool), StoreError> {
    let inserted = exec(
        db,
        "INSERT INTO mailbox_alerts (channel, reason, detail, opened_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (channel) WHERE resolved_at IS NULL DO NOTHING",
        &[&a.channel, &a.reason, &a.detail, &now_ms()],
    )
    .await?;
    let open = row(
        db,
        &format!(
            "SELECT {ALERT_COLUMNS} FROM mailbox_alerts WHERE channel = $1 AND resolved_at IS NULL"
        ),
        &[&a.channel],
    )
    .await?
    .ok_or_else(|| StoreError::Failed(format!("no open alert for channel {}", a.channel)))?;
    Ok((alert_row(&open)?, inserted > 0))
}

/// The alert email of incident `id` is queued.
pub(super) async fn alert_notified(db: &Db, id: i64) -> Result<(), StoreError> {
    exec(
        db,
        "UPDATE mailbox_alerts SET notified_at = $2 WHERE id = $1",
        &[&id, &now_ms()],
    )
    .await?;
    Ok(())
}

/// Close the channel's open incident; whether there was one.
pub(super) async fn resolve_alert(db: &Db, channel: &str) -> Result<bool, StoreError> {
    let n = exec(
        db,
        "UPDATE mailbox_alerts SET resolved_at = $2 WHERE channel = $1 AND resolved_at IS NULL",
        &[&channel, &now_ms()],
    )
    .await?;
    Ok(n > 0)
}

/// Every open incident, oldest first.
pub(super) async fn open_alerts(db: &Db) -> Result<Vec<AlertView>, StoreError> {
    rows(
        db,
        &format!(
            "SELECT {ALERT_COLUMNS} FROM mailbox_alerts WHERE resolved_at IS NULL ORDER BY opened_at, id"
        ),
        &[],
    )
    .await?
    .iter()
    .map(alert_row)
    .collect()
}
