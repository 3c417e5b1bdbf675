//! One mailbox's puller: connect, catch up from the checkpoint in batches,
//! wait for new mail (IDLE or polling), and on failure back off and
//! reconnect — forever, until shutdown or until its channel is removed.
//!
//! Owns the [`Puller`] (the state its sessions share), its life cycle
//! ([`Puller::run`]: paused while the channel is disabled or awaits
//! re-authorisation, backing off after a failed session), the time bounds
//! of IMAP commands, and the mailbox's state as shown in `status` and the
//! metric `postdesk_mailbox_state{channel,state}` (1 for the current state,
//! 0 for the others); both change on state transitions, not per message.
//! Its jobs have a module each: one connection in `session`, fetching and
//! committing in `catch_up` (batches cut by `batch`), `move_to` in `moves`.
//!
//! Must not: set `\Seen` or any flag (`BODY.PEEK[]`), expunge, or block
//! other pullers — except for the opt-in `move_to` (`moves`).
//! Untrusted input: UIDs, message bytes and server texts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config};
use crate::live::Live;
use crate::store::{MailboxState, Store};

use super::backoff::Backoff;
use super::moves::{MOVE_RETRY_FIRST, MoveRetry};
use super::session::SessionEnd;
use super::{PullError, TokenSource};

/// Bound on one FETCH: the sizes of a window of batches, a batch's
/// headers, or — plus its bytes at `batch::SLOW_LINK_BYTES_PER_SEC` — a
/// batch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on other commands (SELECT, SEARCH, NOOP, LOGOUT, IDLE setup).
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// IDLE is re-issued at least this often (servers drop it after 30 minutes).
pub const IDLE_RENEW_MAX: Duration = Duration::from_secs(25 * 60);
/// How often a paused (disabled, needs re-authorisation) puller looks again.
const PAUSE_CHECK: Duration = Duration::from_secs(2);

pub(super) async fn timed<T, E: Into<PullError>>(
    limit: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, PullError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(PullError::Timeout(what)),
    }
}

/// The mailbox of one pulled channel.
pub struct Puller {
    channel: String,
    pub(super) store: Arc<dyn Store>,
    pub(super) live: Arc<Live>,
    pub(super) wake: Arc<Notify>,
    pub(super) tokens: Arc<TokenSource>,
    pub(super) folder: String,
    state: Option<MailboxState>,
    /// The first UID the server did not return, and in how many fetches in
    /// a row (see [`Puller::all_returned`]).
    pub(super) missing: std::sync::Mutex<Option<(u32, u32)>>,
    /// The server announced new mail (`* N EXISTS`) after this round's
    /// SEARCH: catch up again before waiting.
    pub(super) announced: std::sync::atomic::AtomicBool,
    /// Refused moves: when the leftover move tries again, and what it must
    /// delete first.
    pub(super) move_retry: std::sync::Mutex<MoveRetry>,
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
    pub(super) async fn set_state(&mut self, state: MailboxState, error: Option<String>) {
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

    pub(super) fn channel_config(&self, config: &Config) -> Option<ChannelConfig> {
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
}

/// Wait `d` or until stopped; true when stopped.
pub(super) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    let stop = stop.clone();
    tokio::select! {
        _ = stop.cancelled_owned() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
