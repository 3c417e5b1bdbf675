//! The opt-in `move_to`: moving committed messages out of the pulled
//! folder, and the retry state ([`MoveRetry`]) of moves that failed.
//!
//! Committed messages move with MOVE (RFC 6851) or, on a server without
//! it, with UID COPY, `\Deleted` and UID EXPUNGE of exactly those UIDs
//! (UIDPLUS, RFC 4315; a plain EXPUNGE could remove what another client
//! marked deleted, so without UIDPLUS `move_to` is refused). A move that
//! failed after its commit is made good later by moving whatever is still
//! at or below the checkpoint, after a wait (1 min, doubling up to 1 h);
//! batches committed meanwhile wait for that move. A refusal (NO or BAD)
//! leaves the session pulling; a timeout or a dropped connection ends it
//! (the next one pulls first). A refusal to delete originals already copied
//! (the COPY fallback without a delete right, or a transient `[INUSE]`) —
//! or a timeout or a dropped connection between the copy and the deletion —
//! is retried the same way, by deleting those originals again before
//! anything else is moved, never by copying them a second time; the set
//! belongs to its mailbox (server, login, folder, target) and UIDVALIDITY.
//!
//! Must not: move a message before its commit, move a message skipped
//! because the server never returned it (it stays in the folder, where an
//! admin can find it), expunge anything but the UIDs it copied, or hold up
//! the pulling of new mail.
//! Untrusted input: UIDs and server texts.

use std::time::{Duration, Instant};

use crate::config::ChannelConfig;
use crate::store::{Checkpoint, MailboxGeneration};

use super::PullError;
use super::batch::uid_set;
use super::connect::ImapSession;
use super::mailbox::{COMMAND_TIMEOUT, Puller, timed};

/// How committed messages leave the folder when `move_to` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MoveBy {
    /// `UID MOVE` (RFC 6851).
    Move,
    /// `UID COPY`, `UID STORE +FLAGS.SILENT (\Deleted)`, `UID EXPUNGE` of the
    /// same set (UIDPLUS), for servers without MOVE.
    CopyExpunge,
    /// Gmail's labels (X-GM-EXT-1): `UID STORE +X-GM-LABELS (target)`, then
    /// `UID STORE -X-GM-LABELS (pulled folder's label)`. A Gmail folder is
    /// a label: removing the pulled folder's label is what takes a message
    /// out of it — archiving, when the target is All Mail (nothing added).
    /// No `\Deleted` and no EXPUNGE, which Gmail may turn into "move to
    /// Trash" depending on the account's IMAP settings.
    Labels,
}

#[derive(Debug, Clone)]
pub(super) struct MoveTo {
    /// As IMAP commands carry it (modified UTF-7).
    pub(super) folder: String,
    pub(super) by: MoveBy,
    /// [`MoveBy::Labels`]: the label removed (`\Inbox` for INBOX, else
    /// the pulled folder's name, quoted), and whether the target is All
    /// Mail (archive: no label added).
    pub(super) source_label: String,
    pub(super) archive: bool,
}

impl MoveTo {
    /// How `move_to = folder` is done on a server moving `by`, pulling
    /// `pulled` (both names as configured).
    pub(super) fn new(folder: &str, by: MoveBy, pulled: &str) -> MoveTo {
        MoveTo {
            folder: super::mutf7::encode(folder).into_owned(),
            by,
            source_label: if pulled.eq_ignore_ascii_case("INBOX") {
                "\\Inbox".to_string()
            } else {
                quoted(&super::mutf7::encode(pulled))
            },
            archive: is_all_mail(folder),
        }
    }
}

/// Gmail's All Mail folder (by its English names; other interface
/// languages name it otherwise — then a label of that name is added).
pub fn is_all_mail(folder: &str) -> bool {
    ["[Gmail]/All Mail", "[Google Mail]/All Mail"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(folder))
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Move the UIDs in `set` (already committed to the spool) to the folder.
/// Each command must be answered OK: a NO or BAD (say, the target over
/// quota) fails the move, logged here with the channel and the set, and the
/// messages stay where they are for the leftover move (`move_leftovers`).
/// A target answered with `[TRYCREATE]` (deleted meanwhile) is created and
/// the move tried once more. A failure part-way leaves copies behind at
/// worst, never a lost message: the copy comes first, and a message pulled
/// again is skipped as a duplicate.
pub(super) async fn move_committed(
    s: &mut ImapSession,
    channel: &str,
    set: &str,
    to: &MoveTo,
) -> Result<(), MoveFailed> {
    let moved = async {
        put_in_target(s, channel, set, to).await?;
        if to.by == MoveBy::Move {
            return Ok(());
        }
        delete_copied(s, set, to).await
    }
    .await;
    if let Err(f) = &moved {
        move_failure(channel, set, to, &f.error);
    }
    moved
}

/// A move that failed, and the originals it left in both folders: the UID
/// set whose COPY succeeded when its STORE or EXPUNGE did not — refused,
/// timed out or cut off. The retry deletes those; it never copies them again.
#[derive(Debug)]
pub(super) struct MoveFailed {
    pub(super) error: PullError,
    pub(super) copied: Option<String>,
}

impl From<PullError> for MoveFailed {
    fn from(error: PullError) -> Self {
        MoveFailed {
            error,
            copied: None,
        }
    }
}

/// Log and count a failed move of `set`.
fn move_failure(channel: &str, set: &str, to: &MoveTo, e: &PullError) {
    tracing::warn!(channel, uids = set, to = %to.folder, error = %e,
        "moving committed messages failed; they stay in the folder (a copy may be in the target)");
    metrics::counter!("postdesk_pull_move_failed_total", "channel" => channel.to_string())
        .increment(1);
}

/// The second half of the COPY fallback: flag the originals in `set` deleted
/// and expunge them. Any failure names `set` as copied, so that a retry
/// deletes them again without copying them a second time (flagging and
/// expunging what is already gone is harmless).
async fn delete_copied(s: &mut ImapSession, set: &str, to: &MoveTo) -> Result<(), MoveFailed> {
    // async-imap's uid_store and uid_expunge streams end at the tagged reply
    // without telling OK from NO; as plain commands their answer is checked.
    let deleted = async {
        if to.by == MoveBy::Labels {
            let remove = format!("UID STORE {set} -X-GM-LABELS ({})", to.source_label);
            return move_step("UID STORE", set, s.run_command_and_check_ok(remove)).await;
        }
        let store = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
        let expunge = format!("UID EXPUNGE {set}");
        move_step("UID STORE", set, s.run_command_and_check_ok(store)).await?;
        move_step("UID EXPUNGE", set, s.run_command_and_check_ok(expunge)).await
    };
    deleted.await.map_err(|error| MoveFailed {
        error,
        copied: Some(set.to_string()),
    })
}

/// The step that puts the messages into the target: UID MOVE, or the UID
/// COPY of the fallback. A target the server says does not exist (`NO
/// [TRYCREATE]`: deleted meanwhile) is created and the step tried once more.
async fn put_in_target(
    s: &mut ImapSession,
    channel: &str,
    set: &str,
    to: &MoveTo,
) -> Result<(), PullError> {
    match put_once(s, set, to).await {
        Err(e) if wants_create(&e) => {
            tracing::info!(channel, to = %to.folder, "move_to folder missing; creating it");
            create_target(s, &to.folder).await;
            put_once(s, set, to).await
        }
        other => other,
    }
}

async fn put_once(s: &mut ImapSession, set: &str, to: &MoveTo) -> Result<(), PullError> {
    match to.by {
        MoveBy::Move => move_step("UID MOVE", set, s.uid_mv(set, &to.folder)).await,
        MoveBy::CopyExpunge => move_step("UID COPY", set, s.uid_copy(set, &to.folder)).await,
        MoveBy::Labels if to.archive => Ok(()),
        MoveBy::Labels => {
            let add = format!("UID STORE {set} +X-GM-LABELS ({})", quoted(&to.folder));
            move_step("UID STORE", set, s.run_command_and_check_ok(add)).await
        }
    }
}

/// The server said the target folder does not exist (`NO [TRYCREATE]`).
fn wants_create(e: &PullError) -> bool {
    matches!(e, PullError::MoveRefused { text, .. } if text.to_ascii_lowercase().contains("trycreate"))
}

/// Create the `move_to` folder (as IMAP carries the name); "already
/// exists" and other refusals are left to the move that follows.
pub(super) async fn create_target(s: &mut ImapSession, folder: &str) {
    let _ = timed(COMMAND_TIMEOUT, "create", s.create(folder)).await;
}

/// One command of a move, bounded by [`COMMAND_TIMEOUT`]; a tagged NO or BAD
/// is an error naming the command and its UID set.
async fn move_step(
    command: &'static str,
    set: &str,
    f: impl Future<Output = async_imap::error::Result<()>>,
) -> Result<(), PullError> {
    use async_imap::error::Error;
    timed(COMMAND_TIMEOUT, command, async {
        f.await.map_err(|e| match e {
            Error::No(_) | Error::Bad(_) => PullError::MoveRefused {
                text: format!("{command} {set} refused: {}", crate::mail::short(e)),
            },
            other => other.into(),
        })
    })
    .await
}

/// What a move's retry state is about: the server, the login, the pulled
/// folder and the target.
fn move_key(ch: &ChannelConfig, folder: &str, to: &MoveTo) -> String {
    format!(
        "{}:{} {} {folder} -> {}",
        ch.effective_imap_host().unwrap_or_default(),
        ch.effective_imap_port(),
        ch.login_user(),
        to.folder
    )
}

/// Wait after a refused move before the leftover move tries again; it
/// doubles with each refusal in a row, up to [`MOVE_RETRY_MAX`].
pub(super) const MOVE_RETRY_FIRST: Duration = Duration::from_secs(60);
const MOVE_RETRY_MAX: Duration = Duration::from_secs(3600);

/// What refused moves leave for later.
pub(super) struct MoveRetry {
    /// The leftover move is owed, not before this instant.
    due: Option<Instant>,
    /// The wait after the next refusal.
    delay: Duration,
    /// The first wait ([`MOVE_RETRY_FIRST`]; shorter in tests).
    first: Duration,
    /// Originals already copied to the target whose deletion failed
    /// (refused: no delete right, a transient `[INUSE]`; or timed out, cut
    /// off): the UIDVALIDITY and UID set the next try deletes — with UID
    /// STORE and UID EXPUNGE only — before it moves anything else. Kept in
    /// memory: after a restart the leftover move copies them once more.
    copied: Option<(u32, String)>,
    /// The mailbox and target this state is about ([`move_key`]): another
    /// one (a reload pointing the channel elsewhere) starts afresh, since
    /// UIDs mean nothing outside their own mailbox.
    about: Option<String>,
}

impl MoveRetry {
    /// Nothing owed, for the mailbox and target `about`.
    pub(super) fn new(first: Duration, about: Option<String>) -> MoveRetry {
        MoveRetry {
            due: None,
            delay: first,
            first,
            copied: None,
            about,
        }
    }
}

/// Messages moved per command when moving what earlier sessions left.
const LEFTOVER_CHUNK: usize = 500;

impl Puller {
    /// Move what is still in the folder at or below the checkpoint: messages
    /// committed by an earlier session whose move failed (a timeout, a
    /// dropped connection or a refusal right after the commit), or pulled
    /// before `move_to` was set. `catch_up` never looks below the checkpoint
    /// again, and every UID there was committed (UIDs only grow) except the
    /// ones skipped as never returned, which the store lists and which stay.
    pub(super) async fn move_leftovers(
        &self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &Checkpoint,
        to: &MoveTo,
    ) -> Result<(), MoveFailed> {
        if let Some(set) = self.copied_left(ch, cp.uidvalidity) {
            let deleted = delete_copied(s, &set, to).await;
            if let Err(f) = &deleted {
                move_failure(&ch.id, &set, to, &f.error);
            }
            deleted?;
            tracing::info!(channel = %ch.id, folder = %self.folder, uids = set, to = %to.folder,
                "originals already copied to the target deleted");
            self.copied_deleted();
        }
        if cp.last_uid == 0 {
            return Ok(());
        }
        let skipped = self
            .store
            .skipped_uids(MailboxGeneration {
                channel: ch.id.clone(),
                folder: self.folder.clone(),
                uidvalidity: cp.uidvalidity,
            })
            .await
            .map_err(PullError::from)?;
        let query = format!("UID 1:{}", cp.last_uid);
        let found = timed(COMMAND_TIMEOUT, "search", s.uid_search(&query)).await?;
        let mut left: Vec<u32> = found
            .into_iter()
            .filter(|u| *u <= cp.last_uid && skipped.binary_search(u).is_err())
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort_unstable();
        tracing::info!(channel = %ch.id, folder = %self.folder, count = left.len(), to = %to.folder,
            "moving messages pulled earlier but not moved yet");
        // A mailbox's whole history (move_to newly set) goes in pieces, each
        // well inside the command timeout.
        for piece in left.chunks(LEFTOVER_CHUNK) {
            if let (Some(first), Some(last)) = (piece.first(), piece.last())
                && let Some(set) = uid_set(*first, *last, &skipped)
            {
                move_committed(s, &ch.id, &set, to).await?;
            }
        }
        Ok(())
    }

    fn move_retry(&self) -> std::sync::MutexGuard<'_, MoveRetry> {
        self.move_retry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a batch is moved right after its commit: not while a refused
    /// move waits for its retry.
    pub(super) fn moving_now(&self) -> bool {
        let r = self.move_retry();
        r.due.is_none() && r.copied.is_none()
    }

    /// Whether the leftover move runs now: after a session's first round,
    /// and once a failed move's wait is over.
    pub(super) fn leftover_move_due(&self, session_start: bool) -> bool {
        match self.move_retry().due {
            None => session_start,
            Some(at) => Instant::now() >= at,
        }
    }

    pub(super) fn move_worked(&self) {
        let mut r = self.move_retry();
        r.due = None;
        r.delay = r.first;
    }

    /// Tests: the first wait after a refused move.
    #[cfg(test)]
    pub(super) fn retry_moves_after(&self, wait: Duration) {
        let mut r = self.move_retry();
        r.first = wait;
        r.delay = wait;
    }

    /// A move failed (logged by `move_committed`): try again after a
    /// growing wait. Originals it had already copied (`copied`) are only
    /// deleted by that try, not copied again.
    pub(super) fn move_failed(
        &self,
        ch: &ChannelConfig,
        to: &MoveTo,
        f: &MoveFailed,
        uidvalidity: u32,
    ) {
        let mut r = self.move_retry();
        if let Some(set) = &f.copied {
            r.copied = Some((uidvalidity, set.clone()));
        }
        r.due = Some(Instant::now() + r.delay);
        if r.copied.is_some() {
            tracing::warn!(channel = %ch.id, folder = %self.folder, to = %to.folder, retry_in = ?r.delay,
                "messages copied to the target could not be deleted here (no delete right?); they are in both folders until the next try deletes them (without copying again)");
        } else {
            tracing::warn!(channel = %ch.id, folder = %self.folder, to = %to.folder, retry_in = ?r.delay,
                "move failed; new mail is still pulled, the move is tried again later");
        }
        r.delay = (r.delay * 2).min(MOVE_RETRY_MAX);
    }

    /// At a session's start: a mailbox or `move_to` other than the one the
    /// retry state is about (a reload changed the server, the login, the
    /// folder or the target) starts afresh.
    pub(super) fn move_target(&self, ch: &ChannelConfig, to: Option<&MoveTo>) {
        let mut r = self.move_retry();
        let about = to.map(|to| move_key(ch, &self.folder, to));
        if r.about != about {
            *r = MoveRetry::new(r.first, about);
        }
    }

    /// The originals a refused deletion left behind, to delete before any
    /// other move; dropped when the folder's UIDVALIDITY changed since (its
    /// UIDs name other messages now).
    fn copied_left(&self, ch: &ChannelConfig, uidvalidity: u32) -> Option<String> {
        let mut r = self.move_retry();
        match r.copied.take() {
            Some((v, set)) if v == uidvalidity => {
                r.copied = Some((v, set.clone()));
                Some(set)
            }
            Some((_, set)) => {
                tracing::warn!(channel = %ch.id, folder = %self.folder, uids = set,
                    "UIDVALIDITY changed: originals left after a copy to move_to are no longer deleted by UID");
                None
            }
            None => None,
        }
    }

    fn copied_deleted(&self) {
        self.move_retry().copied = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::fake_imap::{Mode, Run, covers, setup};
    use std::sync::atomic::Ordering;

    /// The same when the announcement comes after a MOVE of many messages
    /// (move_to): async-imap keeps 100 unsolicited responses and drops the
    /// rest, so the EXISTS behind 150 EXPUNGEs is lost — a full channel
    /// counts as a possible announcement.
    #[tokio::test]
    async fn mail_announced_behind_a_large_move_is_fetched_at_once() {
        let mode = Mode {
            floods_on_move: true,
            ..Mode::default()
        };
        let run = Run::start_moving(mode, 60).await;
        let all = run.spooled_within(3, 10).await;
        run.finish().await;
        assert!(all, "UID 3 waits for the next poll");
    }

    /// The server answers the UID STORE, or the UID EXPUNGE, of a move with
    /// NO twice (no MOVE, so COPY + STORE + EXPUNGE; say, no delete right
    /// until an admin grants it, or a transient `[INUSE]`): the messages are
    /// in both folders then. The retries after the growing wait delete the
    /// originals again — STORE and EXPUNGE of the same set — and never copy
    /// them again; the third try succeeds. Pulling goes on in the same
    /// session meanwhile (UID 3, announced during the first fetch, comes in
    /// without a new login). Before: moving was switched off until a restart
    /// (and earlier still, retried with a copy per round or per session).
    #[tokio::test]
    async fn a_refused_store_or_expunge_is_retried_without_copying_again() {
        for refused in ["UID STORE", "UID EXPUNGE"] {
            let mode = Mode {
                uidplus: true,
                grows: true,
                refuse: Some(refused),
                refuse_times: 2,
                move_wait_ms: 200,
                ..Mode::default()
            };
            let run = Run::start_moving(mode, 1).await;
            let spooled = run.spooled_within(3, 10).await;
            // Until the third try of the refused command (the first that
            // succeeds), and what follows it.
            let mut seen = Vec::new();
            for _ in 0..150 {
                seen = run.copy_fallback();
                if seen.iter().filter(|c| c.starts_with(refused)).count() >= 3
                    && seen.iter().any(|c| c.starts_with("UID EXPUNGE"))
                    && seen.last().is_some_and(|c| c.starts_with("UID EXPUNGE"))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Rounds after the deletion: UID 3 is moved, 1 and 2 never again.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let after = run.copy_fallback();
            let logins = run.logins.load(Ordering::SeqCst);
            let total = run.store.status().await.expect("status").spool_total;
            let last = run.finish().await;
            assert!(spooled, "{refused}: UIDs 1-3 never spooled");
            let copies: Vec<_> = after.iter().filter(|c| c.starts_with("UID COPY")).collect();
            assert!(
                copies.iter().skip(1).all(|c| c.starts_with("UID COPY 3 ")),
                "{refused}: copied again after the deletion: {after:?}"
            );
            let third = seen
                .iter()
                .enumerate()
                .filter(|(_, c)| c.starts_with(refused))
                .nth(2)
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("{refused}: not tried three times: {seen:?}"));
            let until = &seen[..=third];
            let copies: Vec<_> = until.iter().filter(|c| c.starts_with("UID COPY")).collect();
            assert_eq!(copies.len(), 1, "{refused}: copied again: {until:?}");
            assert!(until[0].starts_with("UID COPY 1:2 "), "{until:?}");
            assert!(
                until[1..]
                    .iter()
                    .all(|c| c.starts_with("UID STORE 1:2 ") || c == "UID EXPUNGE 1:2"),
                "{refused}: the retries name other UIDs: {until:?}"
            );
            if refused == "UID STORE" {
                assert!(
                    !until.iter().any(|c| c.starts_with("UID EXPUNGE")),
                    "expunged after a refused STORE: {until:?}"
                );
            }
            // The successful try expunged them.
            let after = seen.get(third + 1).map(String::as_str);
            let done = refused == "UID EXPUNGE" || after == Some("UID EXPUNGE 1:2");
            assert!(done, "{refused}: {seen:?}");
            assert_eq!(logins, 1, "{refused}: the refusal ended the session");
            assert_eq!((total, last), (3, Some(3)), "{refused}: pulled twice?");
        }
    }

    /// The server refuses a UID MOVE (the target over quota): pulling goes
    /// on in the same session (UID 3 comes in without a new login), the
    /// batches committed meanwhile are not moved one by one, and the
    /// leftover move tries again after a wait that doubles (1 s, 2 s here)
    /// — not before every round.
    #[tokio::test]
    async fn a_refused_move_is_tried_again_after_a_growing_wait() {
        let mode = Mode {
            offers_move: true,
            grows: true,
            refuse: Some("UID MOVE"),
            ..Mode::default()
        };
        let run = Run::start_moving(mode, 1).await;
        let spooled = run.spooled_within(3, 10).await;
        let mut moves = Vec::new();
        for _ in 0..100 {
            moves = run.commands("UID MOVE");
            if moves.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Polled every second; the next tries come after 1 s, then 2 s more.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = run.commands("UID MOVE");
        let logins = run.logins.load(Ordering::SeqCst);
        let last = run.finish().await;
        assert!(spooled, "UIDs 1-3 never spooled");
        assert_eq!(logins, 1, "the refusal ended the session");
        assert_eq!(last, Some(3));
        assert!(moves.len() >= 2, "never tried again: {moves:?}");
        assert!(moves[0].starts_with("UID MOVE 1:2 "), "{moves:?}");
        // UID 3's batch waits for the leftover move (1:3, or 1:2 if that
        // came before UID 3's commit), never moved alone.
        assert!(
            later
                .iter()
                .skip(1)
                .all(|m| m.starts_with("UID MOVE 1:3 ") || m.starts_with("UID MOVE 1:2 ")),
            "{later:?}"
        );
        // About 4.5 s of rounds every second: at most the first move and
        // retries after 1, 2 (and 4) s, not one per round.
        assert!(later.len() <= 4, "retried every round: {later:?}");
    }

    /// Every UID MOVE loses the connection: each session ends at its move,
    /// yet pulls first — UID 3, which arrives during the first session,
    /// comes in with the second. Before, a session began with the leftover
    /// move, so once its wait had passed (1 ms here, shorter than the
    /// back-off) it ended before pulling anything.
    #[tokio::test]
    async fn a_move_that_drops_the_connection_never_holds_up_new_mail() {
        let mode = Mode {
            offers_move: true,
            grows: true,
            drops_on_move: true,
            move_wait_ms: 1,
            ..Mode::default()
        };
        let run = Run::start_moving(mode, 1).await;
        let spooled = run.spooled_within(3, 20).await;
        let logins = run.logins.load(Ordering::SeqCst);
        let total = run.store.status().await.expect("status").spool_total;
        let last = run.finish().await;
        assert!(spooled, "UID 3 never pulled ({logins} logins)");
        assert!(logins >= 2, "{logins}");
        assert_eq!((total, last), (3, Some(3)), "pulled twice?");
    }

    /// The target folder was deleted after the session started: the MOVE
    /// gets `NO [TRYCREATE]`, the folder is created and the move tried once
    /// more, in the same breath. Before, CREATE ran only at a session's
    /// start, and every round's move was refused until a reconnect.
    #[tokio::test]
    async fn a_deleted_target_folder_is_created_again() {
        let mode = Mode {
            offers_move: true,
            target_deleted: true,
            ..Mode::default()
        };
        let run = Run::start_moving(mode, 1).await;
        let spooled = run.spooled_within(2, 10).await;
        let mut moves = Vec::new();
        for _ in 0..100 {
            moves = run.commands("UID MOVE");
            if moves.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let creates = run.commands("CREATE");
        let last = run.finish().await;
        assert!(spooled);
        assert_eq!(last, Some(2));
        // The refused move and its retry (the fake server keeps moved
        // messages, so a leftover move after the round may name them again).
        assert!(moves.len() >= 2, "{moves:?}");
        assert!(
            moves.iter().all(|m| m.starts_with("UID MOVE 1:2 ")),
            "{moves:?}"
        );
        // One CREATE at the session's start, one after the TRYCREATE.
        assert_eq!(creates.len(), 2, "{creates:?}");
    }

    /// A message the server never returns (UID 2 of 1-3, skipped after
    /// MISSING_TRIES fetches) stays in the folder under move_to: neither the
    /// move after the commit nor the leftover move names it, by MOVE or by
    /// COPY. (The move is refused here so that there is a leftover move.)
    /// Before, both moved `1:3`, UID 2 included.
    #[tokio::test]
    async fn a_skipped_message_is_never_moved() {
        let by_move = Mode {
            damaged: true,
            offers_move: true,
            refuse: Some("UID MOVE"),
            ..Mode::default()
        };
        let by_copy = Mode {
            damaged: true,
            uidplus: true,
            refuse: Some("UID COPY"),
            ..Mode::default()
        };
        for (command, mode) in [("UID MOVE", by_move), ("UID COPY", by_copy)] {
            let run = Run::start_moving(mode, 1).await;
            let spooled = run.spooled_within(2, 30).await;
            // The move after the commit, then the leftover move.
            let mut moves = Vec::new();
            for _ in 0..300 {
                moves = run.commands(command);
                if moves.len() >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let skipped = run
                .store
                .skipped_uids(crate::store::tests::generation(7))
                .await
                .expect("skipped");
            let last = run.finish().await;
            assert!(spooled, "{command}: UIDs 1 and 3 never spooled");
            assert_eq!(last, Some(3), "{command}");
            assert!(moves.len() >= 2, "{command}: no leftover move: {moves:?}");
            for m in &moves {
                let set = m.split(' ').nth(2).unwrap_or("");
                assert!(!covers(set, 2), "the skipped UID 2 is moved: {m}");
            }
            assert_eq!(skipped, [2], "{command}");
        }
    }

    /// A reload that changes `move_to`, or the pulled folder, starts the
    /// move's retry state afresh: originals left copied from another mailbox
    /// are not this one's to delete (its UIDs name other messages, even
    /// under an equal UIDVALIDITY), and a pending wait is dropped. The
    /// copied set is kept for the same mailbox, target and UIDVALIDITY only.
    #[tokio::test]
    async fn another_mailbox_or_move_to_starts_the_retry_state_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, mut puller) = setup(&dir, 1, 60, "move_to = \"Done\"\n").await;
        let config = puller.live.config();
        let ch = config.channel("mailbox").expect("channel");
        let done = MoveTo::new("Done", MoveBy::CopyExpunge, "INBOX");
        let archive = MoveTo::new("Archive", MoveBy::CopyExpunge, "INBOX");
        let copied = || MoveFailed {
            error: PullError::MoveRefused {
                text: "UID STORE 1:2 refused".into(),
            },
            copied: Some("1:2".into()),
        };
        puller.move_target(ch, Some(&done));
        puller.move_failed(ch, &done, &copied(), 7);
        assert!(!puller.moving_now() && !puller.leftover_move_due(true));
        // The same mailbox and target at the next session: still owed, for
        // UIDVALIDITY 7 only.
        puller.move_target(ch, Some(&done));
        assert!(!puller.moving_now());
        assert_eq!(puller.copied_left(ch, 7).as_deref(), Some("1:2"));
        assert_eq!(puller.copied_left(ch, 8), None, "another UIDVALIDITY");
        assert_eq!(puller.copied_left(ch, 7), None, "dropped with it");
        // Another target: afresh.
        puller.move_failed(ch, &done, &copied(), 7);
        puller.move_target(ch, Some(&archive));
        assert!(puller.moving_now() && puller.leftover_move_due(true));
        assert_eq!(puller.copied_left(ch, 7), None);
        // Another folder pulled (a reload of imap.folder), same target and
        // UIDVALIDITY: afresh too.
        puller.move_failed(ch, &archive, &copied(), 7);
        puller.folder = "Support".into();
        puller.move_target(ch, Some(&archive));
        assert_eq!(
            puller.copied_left(ch, 7),
            None,
            "deleted UIDs of another folder"
        );
        assert!(puller.moving_now() && puller.leftover_move_due(true));
        // A refusal without copies waits; a new target drops the wait.
        puller.move_failed(
            ch,
            &archive,
            &MoveFailed::from(PullError::MoveRefused {
                text: "UID MOVE 1:2 refused".into(),
            }),
            7,
        );
        assert!(!puller.moving_now() && !puller.leftover_move_due(true));
        puller.move_target(ch, Some(&done));
        assert!(puller.moving_now() && puller.leftover_move_due(true));
    }

    /// The COPY of a move went through, then the connection dropped at its
    /// UID STORE (a server restart, a network cut): the next session
    /// deletes those originals (STORE, EXPUNGE) and never copies them
    /// again. Before, only a refusal kept the set: the next session's
    /// leftover move copied them a second time.
    #[tokio::test]
    async fn a_connection_lost_after_the_copy_is_not_copied_again() {
        let mode = Mode {
            uidplus: true,
            drops_on_first: Some("UID STORE"),
            move_wait_ms: 1,
            ..Mode::default()
        };
        let run = Run::start_moving(mode, 1).await;
        let spooled = run.spooled_within(2, 10).await;
        let mut seen = Vec::new();
        for _ in 0..150 {
            seen = run.copy_fallback();
            if seen.iter().any(|c| c.starts_with("UID EXPUNGE")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A few more rounds: nothing is copied again.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = run.copy_fallback();
        let logins = run.logins.load(Ordering::SeqCst);
        let last = run.finish().await;
        assert!(spooled, "UIDs 1-2 never spooled");
        assert_eq!(last, Some(2));
        assert!(
            logins >= 2,
            "the dropped connection did not end the session"
        );
        assert_eq!(
            after,
            [
                "UID COPY 1:2 \"DONE\"",
                "UID STORE 1:2 +FLAGS.SILENT (\\DELETED)",
                "UID STORE 1:2 +FLAGS.SILENT (\\DELETED)",
                "UID EXPUNGE 1:2",
            ],
            "{seen:?}"
        );
    }
}
