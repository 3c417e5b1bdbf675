//! One mailbox's puller: connect, catch up from the checkpoint in batches,
//! wait for new mail (IDLE or polling), and on failure back off and
//! reconnect — forever, until shutdown or until its channel is removed.
//!
//! Owns the mailbox's state as shown in `status` and the metric
//! `postdesk_mailbox_state{channel,state}` (1 for the current state, 0 for
//! the others); both change on state transitions, not per message.
//!
//! Exactly once: a batch's spool rows and its checkpoint commit together, so
//! a crash re-fetches at most the batch that was not committed, and the
//! store skips messages the channel already has (same bytes, or same
//! Message-ID). A UIDVALIDITY change resets the checkpoint to 0 and refetches
//! the mailbox, relying on that same skip: no duplicate spool rows or tickets.
//!
//! Limits: a batch is at most `batch_size` messages and `batch_bytes` bytes
//! by the sizes the server reports (RFC822.SIZE, asked before the bodies; a
//! larger message, or one of no reported size, is fetched alone). One batch
//! is committed while the next is fetched, so about two are in memory.
//!
//! Must not: set `\Seen` or any flag (`BODY.PEEK[]`), expunge, or block
//! other pullers — except for the opt-in `move_to`, which moves committed
//! messages with MOVE (RFC 6851) or, on a server without it, with UID COPY,
//! `\Deleted` and UID EXPUNGE of exactly those UIDs (UIDPLUS, RFC 4315; a
//! plain EXPUNGE could remove what another client marked deleted, so
//! without UIDPLUS `move_to` is refused). A move that failed after its commit
//! is made good later by moving whatever is still at or below the
//! checkpoint, after a wait (1 min, doubling up to 1 h); batches committed
//! meanwhile wait for that move. A refusal (NO or BAD) leaves the session
//! pulling; a timeout or a dropped connection ends it (the next one pulls
//! first). A refusal to delete originals already copied (the COPY fallback
//! without a delete right, or a transient `[INUSE]`) — or a timeout or a
//! dropped connection between the copy and the deletion — is retried the
//! same way, by deleting those originals again before anything else is
//! moved, never by copying them a second time; the set belongs to its
//! mailbox (server, login, folder, target) and UIDVALIDITY. A message skipped
//! because the server never returned it is never moved: it stays in the
//! folder, where an admin can find it.
//! Untrusted input: UIDs, message bytes and server texts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use futures_util::TryStreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config};
use crate::live::Live;
use crate::store::{
    Checkpoint, MailboxState, NewSpool, PulledBatch, PulledMessage, SpoolSource, Store,
    content_hash,
};

use super::backoff::Backoff;
use super::connect::{self, Credentials, Endpoint, ImapSession};
use super::mutf7;
use super::{PullError, TokenSource};

/// How committed messages leave the folder when `move_to` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveBy {
    /// `UID MOVE` (RFC 6851).
    Move,
    /// `UID COPY`, `UID STORE +FLAGS.SILENT (\Deleted)`, `UID EXPUNGE` of the
    /// same set (UIDPLUS), for servers without MOVE.
    CopyExpunge,
}

#[derive(Debug, Clone)]
struct MoveTo {
    /// As IMAP commands carry it (modified UTF-7).
    folder: String,
    by: MoveBy,
}

/// Move the UIDs in `set` (already committed to the spool) to the folder.
/// Each command must be answered OK: a NO or BAD (say, the target over
/// quota) fails the move, logged here with the channel and the set, and the
/// messages stay where they are for the leftover move (`move_leftovers`).
/// A target answered with `[TRYCREATE]` (deleted meanwhile) is created and
/// the move tried once more. A failure part-way leaves copies behind at
/// worst, never a lost message: the copy comes first, and a message pulled
/// again is skipped as a duplicate.
async fn move_committed(
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
        delete_copied(s, set).await
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
struct MoveFailed {
    error: PullError,
    copied: Option<String>,
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
async fn delete_copied(s: &mut ImapSession, set: &str) -> Result<(), MoveFailed> {
    // async-imap's uid_store and uid_expunge streams end at the tagged reply
    // without telling OK from NO; as plain commands their answer is checked.
    let store = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
    let expunge = format!("UID EXPUNGE {set}");
    let deleted = async {
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
    }
}

/// The server said the target folder does not exist (`NO [TRYCREATE]`).
fn wants_create(e: &PullError) -> bool {
    matches!(e, PullError::MoveRefused { text, .. } if text.to_ascii_lowercase().contains("trycreate"))
}

/// Create the `move_to` folder (as IMAP carries the name); "already
/// exists" and other refusals are left to the move that follows.
async fn create_target(s: &mut ImapSession, folder: &str) {
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
                text: format!("{command} {set} refused: {}", connect::short(e)),
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
const MOVE_RETRY_FIRST: Duration = Duration::from_secs(60);
const MOVE_RETRY_MAX: Duration = Duration::from_secs(3600);

/// What refused moves leave for later.
struct MoveRetry {
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
    fn new(first: Duration, about: Option<String>) -> MoveRetry {
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
/// The slowest link a fetch is given time for, in bytes per second: a
/// batch's bound grows by its reported bytes at this rate, so one large
/// message on a slow link is not cut off at every try (and the mailbox
/// stalled behind it).
const SLOW_LINK_BYTES_PER_SEC: u64 = 64 * 1024;

/// The bound on fetching `bytes` (by the reported sizes).
fn fetch_timeout(bytes: u64) -> Duration {
    FETCH_TIMEOUT.saturating_add(Duration::from_secs(bytes / SLOW_LINK_BYTES_PER_SEC))
}

/// The bytes the server reported for `chunk` (a run of `uids`, whose sizes
/// are `sizes`); a size not reported counts as `unknown`.
fn reported_bytes(uids: &[u32], sizes: &[Option<u32>], chunk: &[u32], unknown: u64) -> u64 {
    chunk
        .iter()
        .map(|u| {
            uids.binary_search(u)
                .ok()
                .and_then(|i| sizes.get(i).copied().flatten())
                .map_or(unknown, u64::from)
        })
        .fold(0, u64::saturating_add)
}

/// The bytes each chunk's fetch bound grows by ([`fetch_timeout`]): the sizes
/// the server reported. A size not reported adds nothing — a lone new
/// message is never asked its size ([`Puller::fetch_sizes`]), and counting
/// it as the whole byte budget made the commonest fetch, new mail while
/// idle, wait ≈ 812 s instead of 300 s before a hung server was noticed.
fn bound_bytes(uids: &[u32], sizes: &[Option<u32>], chunks: &[&[u32]]) -> Vec<u64> {
    chunks
        .iter()
        .map(|c| reported_bytes(uids, sizes, c, 0))
        .collect()
}

/// Batches whose sizes one `UID FETCH … RFC822.SIZE` asks for.
const SIZE_WINDOW_BATCHES: usize = 20;
/// Bound on one FETCH: the sizes of a window of batches, a batch's
/// headers, or — plus its bytes at [`SLOW_LINK_BYTES_PER_SEC`] — a batch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on other commands (SELECT, SEARCH, NOOP, LOGOUT, IDLE setup).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// IDLE is re-issued at least this often (servers drop it after 30 minutes).
pub const IDLE_RENEW_MAX: Duration = Duration::from_secs(25 * 60);
/// How often a paused (disabled, needs re-authorisation) puller looks again.
const PAUSE_CHECK: Duration = Duration::from_secs(2);

async fn timed<T, E: Into<PullError>>(
    limit: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, PullError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(PullError::Timeout(what)),
    }
}

/// The Message-ID of raw mail, without angle brackets (headers only).
fn message_id(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    msg.message_id().and_then(crate::ingest::parse::clean_id)
}

/// The mailbox of one pulled channel.
pub struct Puller {
    channel: String,
    store: Arc<dyn Store>,
    live: Arc<Live>,
    wake: Arc<Notify>,
    tokens: Arc<TokenSource>,
    folder: String,
    state: Option<MailboxState>,
    /// The first UID the server did not return, and in how many fetches in
    /// a row (see [`Puller::all_returned`]).
    missing: std::sync::Mutex<Option<(u32, u32)>>,
    /// The server announced new mail (`* N EXISTS`) after this round's
    /// SEARCH: catch up again before waiting.
    announced: std::sync::atomic::AtomicBool,
    /// Refused moves: when the leftover move tries again, and what it must
    /// delete first.
    move_retry: std::sync::Mutex<MoveRetry>,
}

/// Fetches in a row that may miss the same message before it is skipped.
const MISSING_TRIES: u32 = 3;

/// Why a connected session returned without error.
enum SessionEnd {
    /// Shutdown requested.
    Stopped,
    /// The channel was disabled, removed or reconfigured; re-evaluate.
    Reconsider,
}

impl Puller {
    pub fn new(
        channel: String,
        store: Arc<dyn Store>,
        live: Arc<Live>,
        wake: Arc<Notify>,
        tokens: Arc<TokenSource>,
    ) -> Self {
        Puller {
            channel,
            store,
            live,
            wake,
            tokens,
            folder: "INBOX".into(),
            state: None,
            missing: std::sync::Mutex::new(None),
            announced: std::sync::atomic::AtomicBool::new(false),
            move_retry: std::sync::Mutex::new(MoveRetry::new(MOVE_RETRY_FIRST, None)),
        }
    }

    /// Record a state change (store + metric). Store errors are logged only:
    /// status is informative and must not stop pulling.
    async fn set_state(&mut self, state: MailboxState, error: Option<String>) {
        if self.state == Some(state) && error.is_none() {
            return;
        }
        for s in MailboxState::ALL {
            metrics::gauge!("postdesk_mailbox_state", "channel" => self.channel.clone(), "state" => s.as_str())
                .set(if s == state { 1.0 } else { 0.0 });
        }
        self.state = Some(state);
        if let Err(e) = self
            .store
            .set_mailbox_state(self.channel.clone(), self.folder.clone(), state, error)
            .await
        {
            tracing::warn!(channel = %self.channel, error = %e, "cannot record mailbox state");
        }
    }

    fn channel_config(&self, config: &Config) -> Option<ChannelConfig> {
        config
            .channel(&self.channel)
            .filter(|c| c.kind.is_pulled())
            .cloned()
    }

    /// Pull until `stop` is cancelled or the channel leaves the configuration.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        while !stop.is_cancelled() {
            let config = self.live.config();
            let Some(ch) = self.channel_config(&config) else {
                tracing::info!(channel = %self.channel, "channel no longer pulled; puller ends");
                break;
            };
            self.folder = ch
                .imap
                .as_ref()
                .map_or_else(|| "INBOX".to_string(), |i| i.folder.clone());
            if !self.live.channel_enabled(&ch) {
                self.set_state(MailboxState::Disabled, None).await;
                pause(&stop, PAUSE_CHECK).await;
                continue;
            }
            if ch.kind.uses_oauth() && self.tokens.awaiting_reauth(&ch).await {
                self.set_state(MailboxState::NeedsReauth, None).await;
                pause(&stop, PAUSE_CHECK).await;
                continue;
            }
            self.set_state(MailboxState::Connecting, None).await;
            match self.session(&ch, stop.clone(), &mut backoff).await {
                Ok(SessionEnd::Stopped) => break,
                Ok(SessionEnd::Reconsider) => continue,
                Err(e) if e.needs_reauth() => {
                    tracing::warn!(channel = %self.channel, error = %e, "mailbox needs re-authorisation; paused until the token files change");
                    self.set_state(MailboxState::NeedsReauth, Some(e.to_string()))
                        .await;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(channel = %self.channel, error = %e, retry_in_ms = delay.as_millis() as u64, "mailbox session failed");
                    self.set_state(MailboxState::Backoff, Some(e.to_string()))
                        .await;
                    pause(&stop, delay).await;
                }
            }
        }
        self.set_state(MailboxState::Stopped, None).await;
    }

    async fn credentials(&self, ch: &ChannelConfig) -> Result<Credentials, PullError> {
        let imap = ch.imap.as_ref();
        let username = ch.login_user();
        if ch.kind.uses_oauth() {
            let token = self.tokens.access_token(ch).await?;
            return Ok(Credentials::XOAuth2 { username, token });
        }
        let path = imap
            .and_then(|i| i.password_file.clone())
            .ok_or_else(|| PullError::Protocol("no password_file configured".into()))?;
        let password = std::fs::read_to_string(&path)
            .map_err(|source| PullError::Secret {
                path: path.clone(),
                source,
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        Ok(Credentials::Login { username, password })
    }

    /// One connection: log in, catch up, wait, repeat.
    async fn session(
        &mut self,
        ch: &ChannelConfig,
        stop: CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd, PullError> {
        let stop = &stop;
        // Seen from here on: a change while this session runs wakes its wait.
        let mut changes = self.live.watch_channels();
        changes.borrow_and_update();
        let ep = Endpoint {
            host: ch
                .effective_imap_host()
                .ok_or_else(|| PullError::Protocol("no imap host".into()))?
                .to_string(),
            port: ch.effective_imap_port(),
            tls: ch.effective_imap_tls(),
        };
        let creds = self.credentials(ch).await?;
        let mut s = match connect::open(&ep, &creds).await {
            Ok(s) => s,
            Err(e) => {
                if matches!(e, PullError::Auth(_)) && ch.kind.uses_oauth() {
                    self.tokens.invalidate(&ch.id).await;
                }
                return Err(e);
            }
        };
        let caps = timed(COMMAND_TIMEOUT, "capability", s.capabilities()).await?;
        let can_idle = caps.has_str("IDLE");
        let move_by = if caps.has_str("MOVE") {
            MoveBy::Move
        } else {
            MoveBy::CopyExpunge
        };
        if let Some(folder) = ch.imap.as_ref().and_then(|i| i.move_to.as_deref()) {
            if move_by == MoveBy::CopyExpunge && !caps.has_str("UIDPLUS") {
                return Err(PullError::Protocol(
                    "move_to is set but the server offers neither MOVE nor UIDPLUS (UID EXPUNGE)"
                        .into(),
                ));
            }
            // Opt-in: make sure the target exists ("already exists" is fine).
            create_target(&mut s, &mutf7::encode(folder)).await;
        }
        let mailbox = timed(
            COMMAND_TIMEOUT,
            "select",
            s.select(mutf7::encode(&self.folder)),
        )
        .await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| PullError::Protocol("server sent no UIDVALIDITY".into()))?;
        // A new UIDVALIDITY for a mailbox pulled before: its messages are
        // mostly ones we have, under new UIDs.
        let mut resync = false;
        let mut cp = match self
            .store
            .checkpoint(ch.id.clone(), self.folder.clone())
            .await?
        {
            Some(cp) if cp.uidvalidity == uidvalidity => cp,
            previous => {
                resync = previous.is_some();
                if let Some(old) = previous {
                    tracing::warn!(channel = %ch.id, folder = %self.folder, old = old.uidvalidity, new = uidvalidity,
                        "UIDVALIDITY changed: resyncing the mailbox (already-pulled messages are skipped)");
                }
                self.store
                    .reset_checkpoint(ch.id.clone(), self.folder.clone(), uidvalidity)
                    .await?;
                Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                }
            }
        };
        tracing::info!(channel = %ch.id, folder = %self.folder, uidvalidity, last_uid = cp.last_uid, idle = can_idle && ch.imap.as_ref().is_none_or(|i| i.idle), "mailbox connected");

        let (use_idle, interval, limits, move_to) = match &ch.imap {
            Some(i) => (
                i.idle && can_idle,
                Duration::from_secs(i.poll_interval_secs.max(1)),
                BatchLimits {
                    count: i.batch_size.max(1) as usize,
                    bytes: i.batch_bytes.max(1),
                },
                i.move_to.as_deref().map(|folder| MoveTo {
                    folder: mutf7::encode(folder).into_owned(),
                    by: move_by,
                }),
            ),
            None => (
                can_idle,
                Duration::from_secs(60),
                BatchLimits {
                    count: 100,
                    bytes: crate::config::BATCH_BYTES,
                },
                None,
            ),
        };
        // Whether this round is an extra catch-up for mail announced during
        // the previous one.
        let mut again = false;
        self.move_target(ch, move_to.as_ref());
        let mut session_start = true;
        loop {
            self.catch_up(
                &mut s,
                ch,
                &mut cp,
                (limits, std::mem::take(&mut resync)),
                move_to.as_ref(),
                stop.clone(),
            )
            .await?;
            if stop.is_cancelled() {
                logout(s).await;
                return Ok(SessionEnd::Stopped);
            }
            if self.reconsider(ch) {
                logout(s).await;
                return Ok(SessionEnd::Reconsider);
            }
            // After the session's first round, and after a round once a
            // failed move's wait is over: new mail is pulled first, so a
            // move that keeps failing never holds it up.
            if let Some(to) = &move_to
                && self.leftover_move_due(std::mem::take(&mut session_start))
            {
                match self.move_leftovers(&mut s, ch, &cp, to).await {
                    Ok(()) => self.move_worked(),
                    Err(f) => {
                        self.move_failed(ch, to, &f, cp.uidvalidity);
                        // A refusal is not a reason to stop pulling new
                        // mail; a timeout or a dropped connection is: the
                        // session is in doubt, the next one starts after
                        // the back-off.
                        if !matches!(f.error, PullError::MoveRefused { .. }) {
                            return Err(f.error);
                        }
                    }
                }
            }
            let announced = heard_of_new_mail(&mut s)
                | self
                    .announced
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
            // Mail that arrived while catching up (EXISTS, piggybacked on a
            // FETCH or MOVE reply) is fetched now: once IDLE starts the
            // server does not say it again, and it would wait for the next
            // renewal or poll. Once per round, so that a server announcing
            // EXISTS with every reply cannot keep the session busy.
            if announced && !again {
                again = true;
                continue;
            }
            again = false;
            if use_idle {
                self.set_state(MailboxState::Idle, None).await;
                let (back, stopped) =
                    idle(s, interval.min(IDLE_RENEW_MAX), stop.clone(), &mut changes).await?;
                s = back;
                if stopped {
                    logout(s).await;
                    return Ok(SessionEnd::Stopped);
                }
            } else {
                self.set_state(MailboxState::Polling, None).await;
                let stopped = tokio::select! {
                    stopped = pause(stop, interval) => stopped,
                    _ = changes.changed() => false,
                };
                if stopped {
                    logout(s).await;
                    return Ok(SessionEnd::Stopped);
                }
            }
            // Healthy only once a full round worked, the wait included: a
            // server that accepts the login and then fails every fetch, or
            // every IDLE, still backs off.
            backoff.reset();
            // Disabled or reconfigured while waiting: not one more fetch.
            if self.reconsider(ch) {
                logout(s).await;
                return Ok(SessionEnd::Reconsider);
            }
        }
    }

    /// Move what is still in the folder at or below the checkpoint: messages
    /// committed by an earlier session whose move failed (a timeout, a
    /// dropped connection or a refusal right after the commit), or pulled
    /// before `move_to` was set. `catch_up` never looks below the checkpoint
    /// again, and every UID there was committed (UIDs only grow) except the
    /// ones skipped as never returned, which the store lists and which stay.
    async fn move_leftovers(
        &self,
        s: &mut ImapSession,
        ch: &ChannelConfig,
        cp: &Checkpoint,
        to: &MoveTo,
    ) -> Result<(), MoveFailed> {
        if let Some(set) = self.copied_left(ch, cp.uidvalidity) {
            let deleted = delete_copied(s, &set).await;
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
            .skipped_uids(ch.id.clone(), self.folder.clone(), cp.uidvalidity)
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

    /// Whether the channel's configuration changed under a running session.
    fn reconsider(&self, ch: &ChannelConfig) -> bool {
        let config = self.live.config();
        match self.channel_config(&config) {
            Some(now) => now != *ch || !self.live.channel_enabled(&now),
            None => true,
        }
    }

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
    async fn catch_up(
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
            let heads: Vec<async_imap::types::Fetch> = timed(FETCH_TIMEOUT, "fetch", async {
                let stream = s.uid_fetch(&set, "(UID BODY.PEEK[HEADER])").await?;
                stream.try_collect().await
            })
            .await?;
            let ids: Vec<(u32, Option<String>)> = heads
                .iter()
                .filter_map(|f| {
                    let uid = f.uid.filter(|u| (first..=last).contains(u))?;
                    Some((uid, message_id(f.header()?)))
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
            let mut wanted: Vec<u32> = ids
                .iter()
                .filter(|(_, id)| id.as_ref().is_none_or(|id| !known.contains(id)))
                .map(|(uid, _)| *uid)
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
            (Some(to), Some(set)) if self.moving_now() => move_committed(s, &ch.id, &set, to).await,
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

    fn move_retry(&self) -> std::sync::MutexGuard<'_, MoveRetry> {
        self.move_retry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a batch is moved right after its commit: not while a refused
    /// move waits for its retry.
    fn moving_now(&self) -> bool {
        let r = self.move_retry();
        r.due.is_none() && r.copied.is_none()
    }

    /// Whether the leftover move runs now: after a session's first round,
    /// and once a failed move's wait is over.
    fn leftover_move_due(&self, session_start: bool) -> bool {
        match self.move_retry().due {
            None => session_start,
            Some(at) => Instant::now() >= at,
        }
    }

    fn move_worked(&self) {
        let mut r = self.move_retry();
        r.due = None;
        r.delay = r.first;
    }

    /// Tests: the first wait after a refused move.
    #[cfg(test)]
    fn retry_moves_after(&self, wait: Duration) {
        let mut r = self.move_retry();
        r.first = wait;
        r.delay = wait;
    }

    /// A move failed (logged by `move_committed`): try again after a
    /// growing wait. Originals it had already copied (`copied`) are only
    /// deleted by that try, not copied again.
    fn move_failed(&self, ch: &ChannelConfig, to: &MoveTo, f: &MoveFailed, uidvalidity: u32) {
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
    fn move_target(&self, ch: &ChannelConfig, to: Option<&MoveTo>) {
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

    /// Remember an announcement of new mail among the responses collected
    /// so far. Called after every fetch and move: a large MOVE's EXPUNGE
    /// responses would otherwise fill async-imap's bounded channel, and a
    /// later EXISTS would be dropped.
    fn note_new_mail(&self, s: &mut ImapSession) {
        if heard_of_new_mail(s) {
            self.announced
                .store(true, std::sync::atomic::Ordering::Relaxed);
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
    async fn fetch_sizes(
        &self,
        s: &mut ImapSession,
        uids: &[u32],
    ) -> Result<Vec<Option<u32>>, PullError> {
        let mut sizes = vec![None; uids.len()];
        if uids.len() < 2 {
            return Ok(sizes);
        }
        let set = uid_range(uids);
        timed(FETCH_TIMEOUT, "fetch sizes", async {
            let mut stream = s.uid_fetch(&set, "(UID RFC822.SIZE)").await?;
            while let Some(f) = stream.try_next().await? {
                if let (Some(uid), Some(size)) = (f.uid, f.size)
                    && let Ok(i) = uids.binary_search(&uid)
                    && let Some(slot) = sizes.get_mut(i)
                {
                    *slot = Some(size);
                }
            }
            Ok::<(), async_imap::error::Error>(())
        })
        .await?;
        self.note_new_mail(s);
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
        self.fetch_set(
            s,
            ch,
            uidvalidity,
            &uid_range(chunk),
            chunk,
            (first, last, bytes),
        )
        .await
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
        let mut bodies: Vec<(u32, Vec<u8>)> = Vec::new();
        timed(fetch_timeout(bytes), "fetch", async {
            let mut stream = s.uid_fetch(set, "(UID BODY.PEEK[])").await?;
            while let Some(f) = stream.try_next().await? {
                if let (Some(uid), Some(body)) = (f.uid, f.body())
                    && (first..=last).contains(&uid)
                {
                    bodies.push((uid, body.to_vec()));
                }
            }
            Ok::<(), async_imap::error::Error>(())
        })
        .await?;
        self.note_new_mail(s);
        let address = ch.address.clone().map(|a| vec![a]).unwrap_or_default();
        let mut messages: Vec<(u32, PulledMessage)> = bodies
            .into_iter()
            .map(|(uid, raw)| {
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

/// How much one fetch may carry (`[channels.imap]` `batch_size`, `batch_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchLimits {
    /// Most messages; at least 1.
    count: usize,
    /// Most bytes, by the sizes the server reports; at least 1.
    bytes: u64,
}

/// Cut `uids` (sorted) into runs to fetch one after the other, each of at
/// most `limits.count` messages whose sizes (`sizes[i]` for `uids[i]`, as
/// the server reported them) add up to at most `limits.bytes` — but never
/// empty: a message larger than the budget goes alone. So does a message of
/// no reported size, which counts as the whole budget; every message counts
/// at least one byte, so that sizes of 0 cannot keep it company. The server
/// can still understate sizes; then the count is the bound.
fn chunks_by_size<'a>(
    uids: &'a [u32],
    sizes: &[Option<u32>],
    limits: BatchLimits,
) -> Vec<&'a [u32]> {
    let mut chunks = Vec::new();
    // Where the current chunk starts, and its bytes so far.
    let (mut start, mut bytes) = (0, 0u64);
    for i in 0..uids.len() {
        let size = match sizes.get(i).copied().flatten() {
            Some(b) => u64::from(b).max(1),
            None => limits.bytes,
        };
        if i > start && (i - start >= limits.count || bytes.saturating_add(size) > limits.bytes) {
            chunks.push(&uids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < uids.len() {
        chunks.push(&uids[start..]);
    }
    chunks
}

/// `first:last` of sorted `uids`, for logs and commands covering them all.
fn uid_range(uids: &[u32]) -> String {
    match (uids.first(), uids.last()) {
        (Some(first), Some(last)) => format!("{first}:{last}"),
        _ => String::new(),
    }
}

/// The UID set `first:last` without the UIDs in `except`, as IMAP writes it
/// (`1:4,6,8:9`); `None` when nothing is left.
fn uid_set(first: u32, last: u32, except: &[u32]) -> Option<String> {
    let mut skip: Vec<u32> = except
        .iter()
        .copied()
        .filter(|u| (first..=last).contains(u))
        .collect();
    skip.sort_unstable();
    skip.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    // Where the current run starts; `None` past `u32::MAX`.
    let mut from = Some(first);
    for u in skip {
        if let Some(f) = from
            && f < u
        {
            runs.push((f, u - 1));
        }
        from = u.checked_add(1);
    }
    if let Some(f) = from
        && f <= last
    {
        runs.push((f, last));
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// How many unsolicited responses async-imap (0.12) keeps; past that it
/// drops them.
const UNSOLICITED_KEPT: usize = 100;

/// Take every unsolicited response collected so far; whether one of them
/// announced new mail (`* N EXISTS`) — or may have: a full channel (a MOVE
/// of 100 messages answers with as many EXPUNGEs) dropped what came after.
fn heard_of_new_mail(s: &mut ImapSession) -> bool {
    let (mut exists, mut taken) = (false, 0);
    while let Ok(r) = s.unsolicited_responses.try_recv() {
        taken += 1;
        exists |= matches!(r, async_imap::types::UnsolicitedResponse::Exists(_));
    }
    exists || taken >= UNSOLICITED_KEPT
}

/// Wait `d` or until stopped; true when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    let stop = stop.clone();
    tokio::select! {
        _ = stop.cancelled_owned() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn logout(mut s: ImapSession) {
    let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
}

/// IDLE until the server reports something, `renew` passes, the channels
/// change (`changes`), or `stop`. Returns the session (after DONE) and
/// whether stop was requested.
async fn idle(
    s: ImapSession,
    renew: Duration,
    stop: CancellationToken,
    changes: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<(ImapSession, bool), PullError> {
    let mut handle = s.idle();
    timed(COMMAND_TIMEOUT, "idle", handle.init()).await?;
    let cancelled = stop.cancelled_owned();
    let stopped = {
        let (wait, _interrupt) = handle.wait_with_timeout(renew);
        tokio::select! {
            r = wait => {
                match r? {
                    IdleResponse::NewData(_) => tracing::trace!("idle: server reported a change"),
                    IdleResponse::Timeout | IdleResponse::ManualInterrupt => {}
                }
                false
            }
            _ = cancelled => true,
            _ = changes.changed() => false,
        }
    };
    let s = timed(COMMAND_TIMEOUT, "idle done", handle.done()).await?;
    Ok((s, stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn uid_set_table() {
        let table: &[(u32, u32, &[u32], Option<&str>)] = &[
            (1, 2, &[], Some("1:2")),
            (5, 5, &[], Some("5")),
            (1, 3, &[2], Some("1,3")),
            (1, 9, &[5, 2, 99, 2], Some("1,3:4,6:9")),
            (1, 3, &[1, 3], Some("2")),
            (1, 2, &[1, 2], None),
            (u32::MAX - 1, u32::MAX, &[u32::MAX], Some("4294967294")),
        ];
        for (first, last, except, want) in table {
            assert_eq!(
                uid_set(*first, *last, except).as_deref(),
                *want,
                "{first}:{last} without {except:?}"
            );
        }
    }

    /// A batch's fetch bound grows with its reported bytes at the slowest
    /// link rate (64 KiB/s): 300 s for small mail, ≈ 11 min more for 40 MiB
    /// — before, 300 s whatever the size, so a 40 MB message on a link under
    /// ≈ 130 KB/s timed out at every try and stalled its mailbox. A size
    /// not reported counts as the budget.
    #[test]
    fn fetch_bound_grows_with_the_reported_bytes() {
        assert_eq!(fetch_timeout(0), FETCH_TIMEOUT);
        assert_eq!(fetch_timeout(64 * 1024 - 1), FETCH_TIMEOUT);
        assert_eq!(
            fetch_timeout(40 << 20),
            FETCH_TIMEOUT + Duration::from_secs(640)
        );
        assert!(fetch_timeout(u64::MAX) > FETCH_TIMEOUT);
        let uids = [3, 5, 9];
        let sizes = [Some(100), None, Some(u32::MAX)];
        assert_eq!(reported_bytes(&uids, &sizes, &uids[..1], 7), 100);
        assert_eq!(reported_bytes(&uids, &sizes, &uids[..2], 7), 107);
        assert_eq!(
            reported_bytes(&uids, &sizes, &uids, u64::MAX),
            u64::MAX,
            "saturates"
        );
        // A lone new message (its size not asked): the plain bound, as
        // before the bound grew with sizes.
        let lone = bound_bytes(&[7], &[None], &[&[7]]);
        assert_eq!(lone, [0]);
        assert_eq!(fetch_timeout(lone[0]), FETCH_TIMEOUT);
        assert_eq!(bound_bytes(&uids, &sizes, &[&uids[..2]]), [100]);
    }

    /// (sizes of UIDs 1.., batch_size, batch_bytes, the chunks). Before,
    /// batches were cut by count only.
    #[test]
    fn chunks_by_size_table() {
        type Case = (
            &'static [Option<u32>],
            usize,
            u64,
            &'static [&'static [u32]],
        );
        let table: &[Case] = &[
            // The count limit.
            (&[Some(1); 5], 2, 100, &[&[1, 2], &[3, 4], &[5]]),
            (&[Some(10); 7], 3, 100, &[&[1, 2, 3], &[4, 5, 6], &[7]]),
            // The byte limit: at most the budget, exactly the budget is fine.
            (&[Some(40); 4], 100, 100, &[&[1, 2], &[3, 4]]),
            (&[Some(50); 3], 100, 100, &[&[1, 2], &[3]]),
            (&[Some(30), Some(80), Some(20)], 100, 100, &[&[1], &[2, 3]]),
            // A message over the budget goes alone, first or not.
            (
                &[Some(10), Some(500), Some(10), Some(10)],
                100,
                100,
                &[&[1], &[2], &[3, 4]],
            ),
            (&[Some(500), Some(10)], 100, 100, &[&[1], &[2]]),
            (&[Some(500); 3], 100, 100, &[&[1], &[2], &[3]]),
            // A missing size counts as the budget: alone, even among 0s.
            (
                &[Some(10), None, Some(10), Some(10)],
                100,
                100,
                &[&[1], &[2], &[3, 4]],
            ),
            (&[None; 3], 100, 100, &[&[1], &[2], &[3]]),
            (&[Some(0), None, Some(0)], 100, 100, &[&[1], &[2], &[3]]),
            // Large sizes do not overflow.
            (&[Some(u32::MAX); 3], 100, u64::MAX, &[&[1, 2, 3]]),
            (&[], 100, 100, &[]),
        ];
        for (sizes, count, bytes, want) in table {
            let uids: Vec<u32> = (1..=sizes.len() as u32).collect();
            let limits = BatchLimits {
                count: *count,
                bytes: *bytes,
            };
            assert_eq!(
                chunks_by_size(&uids, sizes, limits),
                *want,
                "sizes {sizes:?}, {count} messages, {bytes} bytes"
            );
        }
    }

    #[test]
    fn short_keeps_200_chars() {
        use super::connect::short;
        assert_eq!(short("abc"), "abc");
        let long = "é".repeat(300);
        assert_eq!(short(&long).chars().count(), 201);
    }
}

#[cfg(test)]
/// Against a scripted IMAP server on a socket: server behaviours Dovecot
/// cannot be made to show on demand.
mod fake_server {
    use super::*;
    use crate::store::SqliteStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    fn msg(n: u32) -> String {
        format!(
            "Message-ID: <m{n}@x.example>\r\nFrom: a@x.example\r\nTo: help@acme.example\r\nSubject: m{n}\r\n\r\nbody {n}\r\n"
        )
    }

    /// How the scripted server misbehaves. Default: a mailbox with UIDs 1
    /// and 2 (UIDVALIDITY 7), no IDLE, every fetch answered in full, each
    /// message's RFC822.SIZE its true size.
    #[derive(Clone, Copy, Default)]
    struct Mode {
        /// The first UID FETCH returns UID 1 only and ends with a tagged NO
        /// (as Dovecot/Gmail/O365 do on a temporary failure).
        first_fetch_fails: bool,
        /// Offer IDLE and answer it with BAD (a throttling server).
        idle_bad: bool,
        /// UIDs 1-3; no fetch ever returns UID 2 (each ends with NO).
        damaged: bool,
        /// UID 3 arrives during the first fetch, announced by an unsolicited
        /// `* 3 EXISTS` in that fetch's reply.
        grows: bool,
        /// Offer MOVE; a UID MOVE answers with 150 EXPUNGEs and then
        /// `* 3 EXISTS` (UID 3 arrived meanwhile).
        floods_on_move: bool,
        /// Offer UIDPLUS (and not MOVE): moves go by UID COPY, UID STORE
        /// and UID EXPUNGE.
        uidplus: bool,
        /// Offer MOVE (moves answered with a plain OK).
        offers_move: bool,
        /// Commands starting with this (`UID STORE`…) are answered with a
        /// tagged NO.
        refuse: Option<&'static str>,
        /// Only the first this many of them (0: all).
        refuse_times: usize,
        /// The first UID MOVE is answered `NO [TRYCREATE]` (the target
        /// folder was deleted after the session started).
        target_deleted: bool,
        /// UIDs 1-5, reported (RFC822.SIZE) as [`LARGE`] bytes each, except
        /// UID 4, whose size is not reported; the bodies are small. Every
        /// fetch returns exactly the UIDs asked.
        large: bool,
        /// UIDs 1-45, small; every fetch returns exactly the UIDs asked.
        many: bool,
        /// Close the connection on a UID MOVE (a server or network dying
        /// mid-move).
        drops_on_move: bool,
        /// Close the connection on the first command starting with this
        /// (`UID STORE`…): the command is lost with it.
        drops_on_first: Option<&'static str>,
        /// Not the server's: the puller's first wait after a failed move, in
        /// ms (0: 1 s).
        move_wait_ms: u64,
    }

    /// The size `Mode::large` reports.
    const LARGE: u32 = 20 << 20;

    /// The mailbox's UIDs once `fetched` bodies were fetched.
    fn mailbox(mode: Mode, fetched: usize) -> Vec<u32> {
        let arrived = (mode.grows || mode.floods_on_move) && fetched > 0;
        if mode.large {
            (1..=5).collect()
        } else if mode.many {
            (1..=45).collect()
        } else if mode.damaged || arrived {
            vec![1, 2, 3]
        } else {
            vec![1, 2]
        }
    }

    /// The RFC822.SIZE the server reports for `uid`.
    fn size(mode: Mode, uid: u32) -> Option<u32> {
        match (mode.large, uid) {
            (true, 4) => None,
            (true, _) => Some(LARGE),
            (false, _) => Some(msg(uid).len() as u32),
        }
    }

    /// The UIDs of the mailbox that the UID set of `UID FETCH <set> …` names.
    fn asked(cmd: &str, mailbox: &[u32]) -> Vec<u32> {
        let set = cmd.split(' ').nth(2).unwrap_or("");
        mailbox
            .iter()
            .copied()
            .filter(|u| covers(set, *u))
            .collect()
    }

    /// The headers of `msg(n)`.
    fn head(n: u32) -> String {
        let m = msg(n);
        m.split_once("\r\n\r\n")
            .map_or_else(|| m.clone(), |(h, _)| format!("{h}\r\n\r\n"))
    }

    /// Serve IMAP on `l` as `mode` says; counts body fetches (not those of
    /// sizes or headers) and logins, and keeps every command (without its
    /// tag) in `commands`. A UID EXPUNGE answered OK removes its UIDs from
    /// what UID SEARCH finds afterwards (fetches are scripted by the mode).
    async fn serve(
        l: TcpListener,
        mode: Mode,
        fetches: Arc<AtomicUsize>,
        logins: Arc<AtomicUsize>,
        commands: Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let gone: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let fetches = fetches.clone();
            let logins = logins.clone();
            let commands = commands.clone();
            let gone = gone.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"* OK fake ready\r\n").await.ok();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut it = line.trim_end().splitn(2, ' ');
                    let tag = it.next().unwrap_or("").to_string();
                    let cmd = it.next().unwrap_or("").to_ascii_uppercase();
                    let (first_move, refusing, drop_now) = {
                        let mut all = commands.lock().expect("commands");
                        all.push(cmd.clone());
                        let seen = |p: &str| all.iter().filter(|c| c.starts_with(p)).count();
                        (
                            cmd.starts_with("UID MOVE") && seen("UID MOVE") == 1,
                            mode.refuse.is_some_and(|r| {
                                cmd.starts_with(r)
                                    && (mode.refuse_times == 0 || seen(r) <= mode.refuse_times)
                            }),
                            mode.drops_on_first
                                .is_some_and(|p| cmd.starts_with(p) && seen(p) == 1),
                        )
                    };
                    if drop_now {
                        return;
                    }
                    // Refusals used up: answered as if never scripted.
                    let mode = Mode {
                        refuse: mode.refuse.filter(|_| refusing),
                        ..mode
                    };
                    if mode.drops_on_move && cmd.starts_with("UID MOVE") {
                        return;
                    }
                    let mut out = if mode.target_deleted && first_move {
                        format!("{tag} NO [TRYCREATE] Mailbox doesn't exist: Done\r\n")
                    } else {
                        reply(mode, &tag, &cmd, &fetches, &logins)
                    };
                    {
                        let mut gone = gone.lock().expect("gone");
                        if cmd.starts_with("UID EXPUNGE") && out.contains(&format!("{tag} OK")) {
                            gone.extend(asked(&cmd, &(1..=64).collect::<Vec<u32>>()));
                        } else if cmd.starts_with("UID SEARCH") {
                            out = out
                                .split_inclusive("\r\n")
                                .map(|l| match l.strip_prefix("* SEARCH") {
                                    Some(uids) => {
                                        let kept: Vec<&str> = uids
                                            .split_whitespace()
                                            .filter(|u| {
                                                u.parse().is_ok_and(|u: u32| !gone.contains(&u))
                                            })
                                            .collect();
                                        format!("* SEARCH {}\r\n", kept.join(" "))
                                    }
                                    None => l.to_string(),
                                })
                                .collect();
                        }
                    }
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// The server's answer to one command.
    fn reply(
        mode: Mode,
        tag: &str,
        cmd: &str,
        fetches: &AtomicUsize,
        logins: &AtomicUsize,
    ) -> String {
        let mut out = String::new();
        if mode.refuse.is_some_and(|r| cmd.starts_with(r)) {
            out += &format!("{tag} NO [OVERQUOTA] refused\r\n");
        } else if cmd.starts_with("IDLE") {
            out += &format!("{tag} BAD try later\r\n");
        } else if cmd.starts_with("CAPABILITY") {
            out += "* CAPABILITY IMAP4rev1";
            if mode.idle_bad {
                out += " IDLE";
            }
            if mode.floods_on_move || mode.offers_move {
                out += " MOVE";
            }
            if mode.uidplus {
                out += " UIDPLUS";
            }
            out += &format!("\r\n{tag} OK done\r\n");
        } else if cmd.starts_with("LOGIN") {
            logins.fetch_add(1, Ordering::SeqCst);
            out += &format!("{tag} OK logged in\r\n");
        } else if cmd.starts_with("SELECT") {
            out += if mode.damaged {
                "* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n"
            } else {
                "* 2 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 3] ok\r\n"
            };
            out += &format!("{tag} OK [READ-WRITE] done\r\n");
        } else if cmd.starts_with("UID SEARCH") {
            let uids = mailbox(mode, fetches.load(Ordering::SeqCst));
            let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
            out += &format!("* SEARCH {}\r\n{tag} OK done\r\n", uids.join(" "));
        } else if cmd.starts_with("UID FETCH") && cmd.contains("RFC822.SIZE") {
            // Not counted in `fetches`: the modes script the body fetches.
            for u in asked(cmd, &mailbox(mode, fetches.load(Ordering::SeqCst))) {
                out += &match size(mode, u) {
                    Some(b) => format!("* {u} FETCH (UID {u} RFC822.SIZE {b})\r\n"),
                    None => format!("* {u} FETCH (UID {u})\r\n"),
                };
            }
            out += &format!("{tag} OK done\r\n");
        } else if cmd.starts_with("UID FETCH") && cmd.contains("BODY.PEEK[HEADER]") {
            for u in asked(cmd, &mailbox(mode, fetches.load(Ordering::SeqCst))) {
                let h = head(u);
                out += &format!(
                    "* {u} FETCH (UID {u} BODY[HEADER] {{{}}}\r\n{h})\r\n",
                    h.len()
                );
            }
            out += &format!("{tag} OK done\r\n");
        } else if cmd.starts_with("UID FETCH") {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            let short = (n == 0 && mode.first_fetch_fails) || mode.damaged;
            let uids: Vec<u32> = if mode.large || mode.many {
                asked(cmd, &mailbox(mode, n))
            } else if mode.damaged {
                vec![1, 3]
            } else if (mode.grows || mode.floods_on_move) && n > 0 {
                vec![3]
            } else if short {
                vec![1]
            } else {
                vec![1, 2]
            };
            for u in uids {
                let m = msg(u);
                out += &format!("* {u} FETCH (UID {u} BODY[] {{{}}}\r\n{m})\r\n", m.len());
            }
            if mode.grows && n == 0 {
                out += "* 3 EXISTS\r\n";
            }
            if short {
                out += &format!("{tag} NO [UNAVAILABLE] Some messages could not be FETCHed\r\n");
            } else {
                out += &format!("{tag} OK done\r\n");
            }
        } else if cmd.starts_with("UID MOVE") {
            for _ in 0..150 {
                out += "* 1 EXPUNGE\r\n";
            }
            out += "* 3 EXISTS\r\n";
            out += &format!("{tag} OK moved\r\n");
        } else if cmd.starts_with("LOGOUT") {
            out += &format!("* BYE bye\r\n{tag} OK done\r\n");
        } else {
            out += &format!("{tag} OK done\r\n");
        }
        out
    }

    /// A puller running against the scripted server.
    struct Run {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        fetches: Arc<AtomicUsize>,
        logins: Arc<AtomicUsize>,
        commands: Arc<std::sync::Mutex<Vec<String>>>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Run {
        /// Start the server in `mode` and a puller polling every `poll` s.
        async fn start(mode: Mode, poll: u64) -> Run {
            Self::start_with(mode, poll, "").await
        }

        /// As `start`, moving pulled mail to `Done`.
        async fn start_moving(mode: Mode, poll: u64) -> Run {
            Self::start_with(mode, poll, "move_to = \"Done\"\n").await
        }

        async fn start_with(mode: Mode, poll: u64, imap_extra: &str) -> Run {
            Self::start_full(mode, poll, imap_extra, None).await
        }

        /// As `start_with`, the mailbox pulled before under `uidvalidity`
        /// (the server says 7): the first round is a resync.
        async fn start_resyncing(mode: Mode, imap_extra: &str, uidvalidity: u32) -> Run {
            Self::start_full(mode, 1, imap_extra, Some(uidvalidity)).await
        }

        async fn start_full(
            mode: Mode,
            poll: u64,
            imap_extra: &str,
            uidvalidity: Option<u32>,
        ) -> Run {
            let dir = tempfile::tempdir().expect("tempdir");
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = l.local_addr().expect("addr").port();
            let (fetches, logins, commands) = (Arc::default(), Arc::default(), Arc::default());
            tokio::spawn(serve(
                l,
                mode,
                Arc::clone(&fetches),
                Arc::clone(&logins),
                Arc::clone(&commands),
            ));
            let (store, puller) = setup(&dir, port, poll, imap_extra);
            puller.retry_moves_after(Duration::from_millis(match mode.move_wait_ms {
                0 => 1000,
                ms => ms,
            }));
            if let Some(v) = uidvalidity {
                store
                    .reset_checkpoint("mailbox".into(), "INBOX".into(), v)
                    .await
                    .expect("checkpoint");
            }
            let stop = CancellationToken::new();
            let task = tokio::spawn(puller.run(stop.clone()));
            Run {
                _dir: dir,
                store,
                fetches,
                logins,
                commands,
                stop,
                task,
            }
        }

        /// Whether `n` messages are spooled within `secs`.
        async fn spooled_within(&self, n: i64, secs: u64) -> bool {
            for _ in 0..secs * 10 {
                if self.store.status().await.expect("status").spool_total == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }

        /// Stop the puller; the checkpoint's last UID.
        async fn finish(self) -> Option<u32> {
            self.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
            self.store
                .checkpoint("mailbox".into(), "INBOX".into())
                .await
                .expect("checkpoint")
                .map(|c| c.last_uid)
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        /// Wait until `n` messages are spooled (at most `secs`), then stop:
        /// the UID sets fetched with each of `items`, and (all spooled,
        /// spool total, checkpoint).
        async fn settle<const K: usize>(
            self,
            n: i64,
            secs: u64,
            items: [&str; K],
        ) -> ([Vec<String>; K], (bool, i64, Option<u32>)) {
            let all = self.spooled_within(n, secs).await;
            let sets = items.map(|i| fetch_sets(&self, i));
            let total = self.store.status().await.expect("status").spool_total;
            let last = self.finish().await;
            (sets, (all, total, last))
        }

        /// Wait until `n` messages are spooled (at most `secs`), then stop:
        /// (all spooled, body fetches so far, checkpoint).
        async fn pulled(self, n: i64, secs: u64) -> (bool, usize, Option<u32>) {
            let all = self.spooled_within(n, secs).await;
            let fetches = self.fetches();
            (all, fetches, self.finish().await)
        }

        /// The commands received so far that start with `prefix`.
        fn commands(&self, prefix: &str) -> Vec<String> {
            let all = self.commands.lock().expect("commands");
            all.iter()
                .filter(|c| c.starts_with(prefix))
                .cloned()
                .collect()
        }

        /// The COPY fallback's commands received so far (UID COPY, UID
        /// STORE, UID EXPUNGE), in order.
        fn copy_fallback(&self) -> Vec<String> {
            let all = self.commands.lock().expect("commands");
            all.iter()
                .filter(|c| {
                    ["UID COPY", "UID STORE", "UID EXPUNGE"]
                        .iter()
                        .any(|p| c.starts_with(p))
                })
                .cloned()
                .collect()
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

    /// Login and catch-up work, IDLE always fails (a throttling server):
    /// the session still backs off. Before, the back-off was reset after
    /// catch-up and the puller logged in again every 0.5 - 1 s (14 logins
    /// in 10 s); with back-off at most 5 (0.5 + 1 + 2 + 4 s apart at least).
    #[tokio::test]
    async fn a_session_failing_after_catch_up_still_backs_off() {
        let mode = Mode {
            idle_bad: true,
            ..Mode::default()
        };
        let run = Run::start(mode, 1).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = run.logins.load(Ordering::SeqCst);
        run.finish().await;
        assert!(n <= 5, "reconnected {n} times in 10 s: backoff never grows");
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
                .skipped_uids("mailbox".into(), "INBOX".into(), 7)
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

    /// A reload that changes `move_to`, or the pulled folder, starts the
    /// move's retry state afresh: originals left copied from another mailbox
    /// are not this one's to delete (its UIDs name other messages, even
    /// under an equal UIDVALIDITY), and a pending wait is dropped. The
    /// copied set is kept for the same mailbox, target and UIDVALIDITY only.
    #[test]
    fn another_mailbox_or_move_to_starts_the_retry_state_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, mut puller) = setup(&dir, 1, 60, "move_to = \"Done\"\n");
        let config = puller.live.config();
        let ch = config.channel("mailbox").expect("channel");
        let done = MoveTo {
            folder: "Done".into(),
            by: MoveBy::CopyExpunge,
        };
        let archive = MoveTo {
            folder: "Archive".into(),
            by: MoveBy::CopyExpunge,
        };
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

    /// The UID sets of the `UID FETCH <set> <items>` commands received.
    fn fetch_sets(run: &Run, items: &str) -> Vec<String> {
        run.commands("UID FETCH")
            .iter()
            .filter(|c| c.ends_with(items))
            .filter_map(|c| c.split(' ').nth(2).map(str::to_string))
            .collect()
    }

    /// Whether the IMAP UID set `set` (`1:3,5`) names `uid`.
    fn covers(set: &str, uid: u32) -> bool {
        set.split(',').any(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            let (a, b): (u32, u32) = (a.parse().expect("uid"), b.parse().expect("uid"));
            (a.min(b)..=a.max(b)).contains(&uid)
        })
    }

    /// A puller for the scripted server, polling every `poll` seconds.
    fn setup(
        dir: &tempfile::TempDir,
        port: u16,
        poll: u64,
        imap_extra: &str,
    ) -> (Arc<dyn Store>, Puller) {
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").expect("pw");
        let text = format!(
            r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"

[[channels]]
id = "mailbox"
kind = "imap"
address = "help@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
password_file = {pw:?}
poll_interval_secs = {poll}
{imap_extra}"#
        );
        let config = crate::config::parse(&text, &dir.path().join("postdesk.toml"))
            .unwrap_or_else(|e| panic!("config: {e:?}"));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("s.sqlite"), 5000, 64).expect("open"));
        let live = Arc::new(Live::new(config));
        let puller = Puller::new(
            "mailbox".into(),
            store.clone(),
            live,
            Arc::new(Notify::new()),
            Arc::new(TokenSource::new()),
        );
        (store, puller)
    }
}
