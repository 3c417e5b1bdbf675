//! Catching up: fetch every message above the checkpoint, batch by batch,
//! and commit each batch with its advanced checkpoint; after a UIDVALIDITY
//! change, a resync that downloads only the messages the channel lacks.
//!
//! Exactly once: a batch's spool rows and its checkpoint commit together, so
//! a crash re-fetches at most the batch that was not committed, and the
//! store skips messages the channel already has (same bytes, or same
//! Message-ID). A UIDVALIDITY change resets the checkpoint to 0 and refetches
//! the mailbox, relying on that same skip: no duplicate spool rows or tickets.
//!
//! Must not: set `\Seen` or any flag (`BODY.PEEK[]` only), move the
//! checkpoint past a message the server did not return (unless skipped
//! after [`MISSING_TRIES`] fetches, logged and counted), or trust the
//! reported sizes beyond shaping the batches.
//! Untrusted input: UIDs, sizes, headers and message bytes.

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use crate::config::ChannelConfig;
use crate::store::{
    Checkpoint, MailboxState, NewSpool, PulledBatch, PulledMessage, SpoolSource, content_hash,
};

use super::PullError;
use super::batch::{
    BatchLimits, SIZE_WINDOW_BATCHES, bound_bytes, chunks_by_size, fetch_timeout, uid_range,
    uid_set,
};
use super::connect::ImapSession;
use super::fetch::uid_fetch;
use super::mailbox::{COMMAND_TIMEOUT, FETCH_TIMEOUT, Puller, timed};
use super::moves::{MoveTo, move_committed};
use super::session::heard_of_new_mail;

/// The Message-ID of raw mail, without angle brackets (headers only).
fn message_id(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    msg.message_id().and_then(crate::mail::clean_message_id)
}

/// Fetches in a row that may miss the same message before it is skipped.
const MISSING_TRIES: u32 = 3;

impl Puller {
    /// Fetch every message above the checkpoint, batch by batch; each batch's
    /// commit overlaps the next batch's fetch. The sizes of all of them are
    /// asked first, in one command, and the batches cut by `limits` (count
    /// and bytes, see [`chunks_by_size`]), so that a mailbox of large
    /// attachments is not held in memory a hundred messages at a time. With
    /// `resync` (the first round under a new UIDVALIDITY) each batch's
    /// headers are fetched first and only the messages whose Message-ID the
    /// channel does not have are downloaded: a resync of a large mailbox
    /// costs its headers, not its bytes again (Gmail caps IMAP downloads per
    /// day).
    pub(super) async fn catch_up(
        &mut self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &mut Checkpoint,
        (limits, resync): (BatchLimits, bool),
        move_to: Option<&MoveTo>,
        stop: CancellationToken,
    ) -> Result<(), PullError> {
        let query = format!("UID {}:*", cp.last_uid.saturating_add(1));
        let found = timed(COMMAND_TIMEOUT, "search", s.uid_search(&query)).await?;
        // What was announced up to here, this SEARCH has found.
        heard_of_new_mail(s);
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > cp.last_uid).collect();
        if uids.is_empty() {
            return Ok(());
        }
        uids.sort_unstable();
        self.set_state(MailboxState::Fetching, None).await;
        // Sizes for a window of batches at a time: a first pull of a large
        // mailbox must not wait for one answer covering all its messages.
        let window = limits.count.saturating_mul(SIZE_WINDOW_BATCHES).max(1);
        for uids in uids.chunks(window) {
            if stop.is_cancelled() {
                break;
            }
            self.catch_up_window(s, ch, cp, (limits, resync), move_to, (&stop, uids))
                .await?;
        }
        Ok(())
    }

    /// `catch_up` for one window of new UIDs (sorted): their sizes, then
    /// their batches.
    async fn catch_up_window(
        &mut self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &mut Checkpoint,
        (limits, resync): (BatchLimits, bool),
        move_to: Option<&MoveTo>,
        (stop, uids): (&CancellationToken, &[u32]),
    ) -> Result<(), PullError> {
        let sizes = self.fetch_sizes(s, uids).await?;
        let chunks = chunks_by_size(uids, &sizes, limits);
        let bytes: u64 = sizes.iter().flatten().map(|b| u64::from(*b)).sum();
        let no_size = sizes.iter().filter(|b| b.is_none()).count();
        tracing::debug!(channel = %ch.id, uids = %uid_range(uids), new = uids.len(), bytes, no_size,
            batches = chunks.len(), "fetching new messages");
        if chunks.is_empty() {
            return Ok(());
        }
        let bytes = bound_bytes(uids, &sizes, &chunks);
        if resync {
            let sized: Vec<(&[u32], u64)> = chunks.iter().copied().zip(bytes).collect();
            return self.resync(s, ch, cp, &sized, move_to, stop).await;
        }
        let mut fetched = self
            .fetch(s, ch, cp.uidvalidity, chunks[0], bytes[0])
            .await?;
        for i in 0..chunks.len() {
            let batch = fetched;
            let last = batch.checkpoint.last_uid;
            let count = batch.messages.len();
            let unreturned = batch.unreturned.clone();
            let commit = self.store.spool_pulled(batch);
            let next = chunks.get(i + 1).filter(|_| !stop.is_cancelled());
            let (committed, next_fetch) = match next {
                Some(chunk) => {
                    let more = bytes.get(i + 1).copied().unwrap_or(0);
                    let (c, n) =
                        tokio::join!(commit, self.fetch(s, ch, cp.uidvalidity, chunk, more));
                    (c, Some(n))
                }
                None => (commit.await, None),
            };
            let outcome = committed?;
            tracing::debug!(channel = %ch.id, uids = %uid_range(chunks[i]), last_uid = last, fetched = count, spooled = outcome.spooled, "batch committed");
            self.committed(
                s,
                ch,
                cp,
                outcome,
                (chunks[i][0], last, &unreturned),
                move_to,
            )
            .await?;
            match next_fetch {
                Some(n) => fetched = n?,
                None => break,
            }
        }
        Ok(())
    }

    /// `catch_up` for a resync (a session interrupted half-way finishes the
    /// mailbox the plain way, duplicates still skipped at commit): per chunk,
    /// the headers (for the Message-IDs) first, then the bodies of the
    /// messages the channel does not have (or that have no Message-ID); the
    /// chunk's checkpoint commits with them as usual. The
    /// chunks are cut by bytes as well as by count, so that the bodies of
    /// one — all of them when none is known — stay within the budget too.
    async fn resync(
        &mut self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &mut Checkpoint,
        chunks: &[(&[u32], u64)],
        move_to: Option<&MoveTo>,
        stop: &CancellationToken,
    ) -> Result<(), PullError> {
        for &(chunk, bytes) in chunks {
            if stop.is_cancelled() {
                break;
            }
            let (first, last) = match (chunk.first(), chunk.last()) {
                (Some(f), Some(l)) => (*f, *l),
                _ => continue,
            };
            let set = uid_range(chunk);
            let heads = timed(
                FETCH_TIMEOUT,
                "fetch",
                uid_fetch(s, &set, "(UID BODY.PEEK[HEADER])"),
            )
            .await?;
            self.heard(heads.announced);
            let ids: Vec<(u32, Option<String>)> = heads
                .items
                .iter()
                .filter_map(|f| {
                    let uid = f.uid.filter(|u| (first..=last).contains(u))?;
                    Some((uid, message_id(f.header.as_deref()?)))
                })
                .collect();
            let no_header = self.all_returned(ch, chunk, ids.iter().map(|(uid, _)| *uid))?;
            let known: HashSet<String> = self
                .store
                .known_message_ids(
                    ch.id.clone(),
                    ids.iter().filter_map(|(_, id)| id.clone()).collect(),
                )
                .await?
                .into_iter()
                .collect();
            let gm_known = self.gm_known();
            let mut wanted: Vec<u32> = ids
                .iter()
                .filter(|(_, id)| id.as_ref().is_none_or(|id| !known.contains(id)))
                .map(|(uid, _)| *uid)
                .filter(|uid| !gm_known.contains(uid))
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            let mut batch = if wanted.is_empty() {
                self.batch(ch, cp.uidvalidity, last, Vec::new())
            } else {
                let list = wanted
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                self.fetch_set(s, ch, cp.uidvalidity, &list, &wanted, (first, last, bytes))
                    .await?
            };
            batch.known_unfetched = ids.len().saturating_sub(wanted.len());
            batch.unreturned.extend(no_header);
            let unreturned = batch.unreturned.clone();
            let outcome = self.store.spool_pulled(batch).await?;
            tracing::info!(channel = %ch.id, last_uid = last, known = ids.len() - wanted.len(),
                fetched = wanted.len(), spooled = outcome.spooled, "resync batch committed");
            self.committed(s, ch, cp, outcome, (first, last, &unreturned), move_to)
                .await?;
        }
        Ok(())
    }

    /// After a batch for UIDs `first..=last` committed: the checkpoint in
    /// hand, the metric, ingest woken, the batch moved if `move_to` is set —
    /// all of it but the `unreturned` UIDs, which were not spooled.
    async fn committed(
        &self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &mut Checkpoint,
        outcome: crate::store::PulledOutcome,
        (first, last, unreturned): (u32, u32, &[u32]),
        move_to: Option<&MoveTo>,
    ) -> Result<(), PullError> {
        cp.last_uid = last;
        metrics::counter!("postdesk_pull_messages_total", "channel" => ch.id.clone())
            .increment(outcome.spooled as u64);
        if outcome.skipped > 0 {
            tracing::info!(channel = %ch.id, skipped = outcome.skipped, "already-pulled messages skipped");
        }
        if outcome.spooled > 0 {
            self.wake.notify_one();
        }
        // While a refused move waits for its retry, the batch waits with it
        // (the leftover move takes everything at or below the checkpoint).
        let moved = match (move_to, uid_set(first, last, unreturned)) {
            (Some(to), Some(set)) if self.moving_now() => {
                // Only the lease's holder moves: a node woken after losing
                // it must not take messages from under the new holder.
                self.may_move().await?;
                move_committed(s, &ch.id, &set, to).await
            }
            _ => Ok(()),
        };
        self.note_new_mail(s);
        if let (Err(f), Some(to)) = (&moved, move_to) {
            self.move_failed(ch, to, f, cp.uidvalidity);
        }
        match moved {
            Ok(()) => Ok(()),
            // New mail matters more than a tidy folder: pulling goes on.
            Err(f) if matches!(f.error, PullError::MoveRefused { .. }) => Ok(()),
            Err(f) => Err(f.error),
        }
    }

    /// A batch of `messages` that advances the checkpoint to `last`.
    fn batch(
        &self,
        ch: &ChannelConfig,
        uidvalidity: u32,
        last: u32,
        messages: Vec<PulledMessage>,
    ) -> PulledBatch {
        PulledBatch {
            channel: ch.id.clone(),
            folder: self.folder.clone(),
            checkpoint: Checkpoint {
                uidvalidity,
                last_uid: last,
            },
            messages,
            known_unfetched: 0,
            unreturned: Vec::new(),
            gmail_account: self.gmail.clone(),
            fence: self.fence(),
        }
    }

    /// Every UID of `asked` must be among `got`. A FETCH the server ends
    /// with NO ("Some messages could not be FETCHed", a temporary fault)
    /// still yields the lines before it — async-imap does not report the
    /// tagged NO — and a batch committed from it would move the checkpoint
    /// past messages never spooled. So the session fails and the next one
    /// fetches from the checkpoint again; a message expunged meanwhile is no
    /// longer asked for. A message the server fails to return
    /// [`MISSING_TRIES`] times in a row (damaged on the server) is skipped
    /// then, logged as an error and counted in
    /// `postdesk_pull_skipped_total`, so that it does not stop the mailbox;
    /// the skipped UIDs are returned (the batch records them, and `move_to`
    /// leaves them in the folder).
    fn all_returned(
        &self,
        ch: &ChannelConfig,
        asked: &[u32],
        got: impl Iterator<Item = u32>,
    ) -> Result<Vec<u32>, PullError> {
        let got: HashSet<u32> = got.collect();
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        let absent: Vec<u32> = asked.iter().copied().filter(|u| !got.contains(u)).collect();
        let Some(&uid) = absent.first() else {
            *missing = None;
            return Ok(Vec::new());
        };
        let tries = match *missing {
            Some((u, n)) if u == uid => n + 1,
            _ => 1,
        };
        if tries < MISSING_TRIES {
            *missing = Some((uid, tries));
            return Err(PullError::Protocol(format!(
                "FETCH returned {} of {} messages (UID {uid} missing); fetched again next session",
                got.len(),
                asked.len()
            )));
        }
        *missing = None;
        tracing::error!(channel = %ch.id, folder = %self.folder, uids = ?absent, tries,
            "the server did not return these messages in {tries} fetches; skipped: they are in no ticket (still in the folder)");
        metrics::counter!("postdesk_pull_skipped_total", "channel" => ch.id.clone())
            .increment(absent.len() as u64);
        Ok(absent)
    }

    /// The sizes the server reports (RFC822.SIZE) for `uids` (sorted), in
    /// their order; `None` for a UID it reports none for (an answer cut short
    /// by a NO, a message expunged meanwhile). One command for the whole
    /// list: its answer is a few dozen bytes per message, like the SEARCH
    /// before it, where a command per batch would cost a round trip each.
    /// A lone UID (the usual new mail while idle) is not asked about: it is
    /// fetched alone whatever its size. The sizes only shape the batches:
    /// what a fetch returns is checked against the UIDs asked
    /// ([`Puller::all_returned`]), never against them.
    ///
    /// On a server with Gmail's extensions the same command asks each
    /// message's X-GM-MSGID (a lone UID too): the messages of this account
    /// already pulled — under another label, by another channel, before a
    /// UIDVALIDITY change — are remembered in `gm_known`, weigh nothing in
    /// the batches and are not downloaded again.
    async fn fetch_sizes(
        &self,
        s: &mut ImapSession,
        uids: &[u32],
    ) -> Result<Vec<Option<u32>>, PullError> {
        let mut sizes = vec![None; uids.len()];
        self.gm_known_set(Default::default());
        let gmail = self.gmail.clone();
        if uids.len() < 2 && gmail.is_none() {
            return Ok(sizes);
        }
        let set = uid_range(uids);
        let items = if gmail.is_some() {
            "(UID RFC822.SIZE X-GM-MSGID)"
        } else {
            "(UID RFC822.SIZE)"
        };
        let got = timed(FETCH_TIMEOUT, "fetch sizes", uid_fetch(s, &set, items)).await?;
        self.heard(got.announced);
        let mut ids: Vec<(usize, u64)> = Vec::new();
        for f in &got.items {
            if let Some(uid) = f.uid
                && let Ok(i) = uids.binary_search(&uid)
            {
                if let Some(size) = f.size {
                    sizes[i] = Some(size);
                }
                if let Some(id) = f.gm_msgid {
                    ids.push((i, id));
                }
            }
        }
        if let Some(account) = gmail
            && !ids.is_empty()
        {
            let known: HashSet<u64> = self
                .store
                .known_gmail_ids(account, ids.iter().map(|(_, id)| *id).collect())
                .await?
                .into_iter()
                .collect();
            let mut skip = HashSet::new();
            for (i, id) in ids {
                if known.contains(&id) {
                    skip.insert(uids[i]);
                    sizes[i] = Some(0);
                }
            }
            self.gm_known_set(skip);
        }
        Ok(sizes)
    }

    /// Fetch one chunk of UIDs (consecutive in the mailbox's sorted UID list).
    async fn fetch(
        &self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        uidvalidity: u32,
        chunk: &[u32],
        bytes: u64,
    ) -> Result<PulledBatch, PullError> {
        let (first, last) = match (chunk.first(), chunk.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => {
                return Err(PullError::Protocol("empty fetch chunk".into()));
            }
        };
        let known = self.gm_known();
        let wanted: Vec<u32> = chunk
            .iter()
            .copied()
            .filter(|u| !known.contains(u))
            .collect();
        let set = if wanted.len() == chunk.len() {
            uid_range(chunk)
        } else {
            wanted
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut batch = if wanted.is_empty() {
            self.batch(ch, uidvalidity, last, Vec::new())
        } else {
            self.fetch_set(s, ch, uidvalidity, &set, &wanted, (first, last, bytes))
                .await?
        };
        batch.known_unfetched += chunk.len() - wanted.len();
        Ok(batch)
    }

    /// Fetch the messages of UID `set` (within `first..=last`, `bytes` by
    /// the reported sizes), which must return every UID of `asked`; the
    /// batch's checkpoint is `last`.
    async fn fetch_set(
        &self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        uidvalidity: u32,
        set: &str,
        asked: &[u32],
        (first, last, bytes): (u32, u32, u64),
    ) -> Result<PulledBatch, PullError> {
        // Each response is reduced to its UID and body as it arrives (one
        // server response held at a time, responses outside the range
        // dropped at once), not collected whole and copied afterwards.
        self.spend(bytes).await?;
        let items = if self.gmail.is_some() {
            "(UID X-GM-MSGID BODY.PEEK[])"
        } else {
            "(UID BODY.PEEK[])"
        };
        let got = timed(fetch_timeout(bytes), "fetch", uid_fetch(s, set, items)).await?;
        self.heard(got.announced);
        self.note_new_mail(s);
        let bodies: Vec<(u32, Option<u64>, Vec<u8>)> = got
            .items
            .into_iter()
            .filter_map(|f| {
                let uid = f.uid.filter(|u| (first..=last).contains(u))?;
                Some((uid, f.gm_msgid, f.body?))
            })
            .collect();
        let address = ch.address.clone().map(|a| vec![a]).unwrap_or_default();
        let mut messages: Vec<(u32, PulledMessage)> = bodies
            .into_iter()
            .map(|(uid, gm_msgid, raw)| {
                let hash = content_hash(&raw);
                let mid = message_id(&raw);
                (
                    uid,
                    PulledMessage {
                        spool: NewSpool {
                            source: SpoolSource::Imap,
                            mail_from: String::new(),
                            rcpt_to: address.clone(),
                            client_ip: None,
                            helo: None,
                            tls: false,
                            channel: Some(ch.id.clone()),
                            raw,
                        },
                        content_hash: hash,
                        message_id: mid,
                        gm_msgid,
                    },
                )
            })
            .collect();
        messages.sort_by_key(|(uid, _)| *uid);
        messages.dedup_by_key(|(uid, _)| *uid);
        let unreturned = self.all_returned(ch, asked, messages.iter().map(|(uid, _)| *uid))?;
        let bytes: usize = messages.iter().map(|(_, m)| m.spool.raw.len()).sum();
        metrics::counter!("postdesk_pull_bytes_total", "channel" => ch.id.clone())
            .increment(bytes as u64);
        let mut batch = self.batch(
            ch,
            uidvalidity,
            last,
            messages.into_iter().map(|(_, m)| m).collect(),
        );
        batch.unreturned = unreturned;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::fake_imap::{LARGE, Mode, Run};

    #[test]
    fn message_id_table() {
        let table: &[(&[u8], Option<&str>)] = &[
            (
                b"Message-ID: <a@b.example>\r\nSubject: x\r\n\r\nbody",
                Some("a@b.example"),
            ),
            (b"Message-Id:   <  c@d >\r\n\r\n", Some("c@d")),
            (b"Subject: none\r\n\r\nbody", None),
            (b"", None),
            (b"\xff\xfe garbage", None),
        ];
        for (raw, want) in table {
            assert_eq!(
                message_id(raw).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// The first UID FETCH returns UID 1 of 1:2 and ends with a tagged NO
    /// (a server's temporary fault); every later one returns both. Before,
    /// the batch was committed with checkpoint 2 and UID 2 was never fetched
    /// again.
    #[tokio::test]
    async fn a_fetch_ending_in_no_does_not_move_the_checkpoint_past_what_it_missed() {
        let mode = Mode {
            first_fetch_fails: true,
            ..Mode::default()
        };
        let (both, fetches, last) = Run::start(mode, 1).await.pulled(2, 10).await;
        assert!(
            both,
            "UID 2 not spooled; checkpoint {last:?} after {fetches} fetches"
        );
        assert_eq!(last, Some(2));
    }

    /// A message the server never returns (damaged on the server) fails
    /// MISSING_TRIES fetches, then is skipped: the mail after it is pulled
    /// and the checkpoint moves on, instead of the mailbox stopping for good.
    #[tokio::test]
    async fn a_message_the_server_never_returns_is_skipped_after_three_tries() {
        let mode = Mode {
            damaged: true,
            ..Mode::default()
        };
        let (done, fetches, last) = Run::start(mode, 1).await.pulled(2, 30).await;
        assert!(done, "UIDs 1 and 3 never spooled");
        assert_eq!(fetches, MISSING_TRIES as usize);
        assert_eq!(last, Some(3));
    }

    /// Mail announced (`* 3 EXISTS`) while the puller was fetching is
    /// fetched at once, not after the poll interval (60 s here): the
    /// announcement is not repeated.
    #[tokio::test]
    async fn mail_announced_during_a_fetch_is_fetched_at_once() {
        let mode = Mode {
            grows: true,
            ..Mode::default()
        };
        let (all, fetches, _) = Run::start(mode, 60).await.pulled(3, 10).await;
        assert!(all, "UID 3 waits for the next poll");
        assert_eq!(fetches, 2);
    }

    /// UIDs 1-5 reported as 20 MiB each but UID 4 (no size), under a
    /// 40 MiB budget: the sizes are asked once for all of them, and the
    /// bodies fetched as 1:2 (40 MiB), 3, 4 (no size: alone) and 5; each
    /// comes once, the checkpoint reaches 5. Before, one fetch of 1:5
    /// (100 MiB by the sizes).
    #[tokio::test]
    async fn fetches_stay_within_the_byte_budget() {
        let mode = Mode {
            large: true,
            ..Mode::default()
        };
        let run = Run::start_with(mode, 60, &format!("batch_bytes = {}\n", 2 * LARGE)).await;
        let ([sizes, bodies], (all, total, last)) = run
            .settle(5, 10, ["(UID RFC822.SIZE)", "(UID BODY.PEEK[])"])
            .await;
        assert!(all, "not all spooled; fetched {bodies:?}");
        assert_eq!(sizes, ["1:5"], "sizes asked: {sizes:?}");
        assert_eq!(bodies, ["1:2", "3:3", "4:4", "5:5"]);
        assert_eq!((total, last), (5, Some(5)));
    }

    /// The same in a resync (the checkpoint was under UIDVALIDITY 6): the
    /// headers are fetched per budget-sized chunk, and the bodies of each
    /// chunk's unknown messages (all of them here) within the budget.
    #[tokio::test]
    async fn a_resync_stays_within_the_byte_budget() {
        let mode = Mode {
            large: true,
            ..Mode::default()
        };
        let run = Run::start_resyncing(mode, &format!("batch_bytes = {}\n", 2 * LARGE), 6).await;
        let ([heads, bodies], (all, total, last)) = run
            .settle(5, 10, ["(UID BODY.PEEK[HEADER])", "(UID BODY.PEEK[])"])
            .await;
        assert!(all, "not all spooled; fetched {heads:?} {bodies:?}");
        assert_eq!(heads, ["1:2", "3:3", "4:4", "5:5"]);
        assert_eq!(bodies, ["1,2", "3", "4", "5"]);
        assert_eq!((total, last), (5, Some(5)));
    }

    /// A first pull of more messages than a window of batches asks the
    /// sizes a window at a time (here 20 batches of one message): a large
    /// mailbox's first pull does not wait for one answer covering all of
    /// it. Before, one `UID FETCH 1:45 (UID RFC822.SIZE)`.
    #[tokio::test]
    async fn sizes_are_asked_a_window_of_batches_at_a_time() {
        let mode = Mode {
            many: true,
            ..Mode::default()
        };
        let run = Run::start_with(mode, 60, "batch_size = 1\n").await;
        let ([sizes, bodies], (all, total, last)) = run
            .settle(45, 20, ["(UID RFC822.SIZE)", "(UID BODY.PEEK[])"])
            .await;
        assert!(all, "not all spooled; fetched {bodies:?}");
        assert_eq!(sizes, ["1:20", "21:40", "41:45"]);
        assert_eq!(bodies.len(), 45);
        assert_eq!((total, last), (45, Some(45)));
    }

    /// The server refuses the sizes FETCH (NO): the mailbox is still pulled
    /// whole — sizes unknown count as the byte budget, so one message per
    /// fetch, each under the plain 300 s bound — not stalled on the refusal.
    #[tokio::test]
    async fn a_refused_sizes_fetch_still_pulls_every_message() {
        let mode = Mode {
            many: true,
            refuse: Some("UID FETCH 1:45 (UID RFC822.SIZE)"),
            ..Mode::default()
        };
        let run = Run::start_with(mode, 60, "").await;
        let ([sizes, bodies], (all, total, last)) = run
            .settle(45, 20, ["(UID RFC822.SIZE)", "(UID BODY.PEEK[])"])
            .await;
        assert!(all, "not all spooled; fetched {bodies:?}");
        assert_eq!(sizes, ["1:45"], "asked once, refused");
        assert_eq!(bodies.len(), 45, "{bodies:?}");
        // One message per fetch, in order.
        let one_each: Vec<String> = (1..=45).map(|u| format!("{u}:{u}")).collect();
        assert_eq!(bodies, one_each);
        assert_eq!((total, last), (45, Some(45)));
    }
}
