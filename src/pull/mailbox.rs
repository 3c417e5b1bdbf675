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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config};
use crate::live::Live;
use crate::outbound::notify::Notifier;
use crate::store::{MailboxState, MailboxStateChange, Store, StoreError};

use super::PullError;
use super::backoff::Backoff;
use super::budget::DownloadBudget;
use super::lease::{self, Hold};
use super::moves::{MOVE_RETRY_FIRST, MoveRetry};
use super::session::SessionEnd;
use crate::oauth::TokenSource;

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
    /// The session's server offers Gmail's extensions (X-GM-EXT-1): the
    /// account whose X-GM-MSGIDs identify messages (server and login).
    pub(super) gmail: Option<String>,
    /// UIDs of the current window whose X-GM-MSGID this account already
    /// pulled: not downloaded again.
    pub(super) gm_known: std::sync::Mutex<HashSet<u32>>,
    /// The daily download budget, and the `download_bytes_per_day` it was
    /// made for.
    budget: Option<DownloadBudget>,
    /// The wait after the provider's download cap refused us; doubles up
    /// to [`CAP_WAIT_MAX`], back to [`CAP_WAIT_FIRST`] once a round works.
    pub(super) cap_wait: Duration,
    /// Shutdown, for waits inside a session.
    stop: CancellationToken,
    /// Where alert emails go (none in unit tests).
    pub(super) notifier: Option<Notifier>,
    /// Since when sessions have been failing (none while they work).
    pub(super) failing_since: Option<std::time::Instant>,
    /// Whether an alert incident is open (none: not looked yet — one may be
    /// left from an earlier run).
    pub(super) alert_open: Option<bool>,
    /// The open incident's email is queued (or cannot be).
    pub(super) alert_sent: bool,
    /// The mailbox's lease, while this node holds it (none: not acquired
    /// yet, lost, or a test driving a session directly — unfenced).
    pub(super) hold: Option<Hold>,
    /// Another node's lease was found: said once, until this node pulls.
    standby: bool,
}

/// The first wait after the provider's download cap (Gmail: "Account
/// exceeded command or bandwidth limits"): the cap is counted over a day,
/// so reconnecting within seconds only gets the same answer.
pub const CAP_WAIT_FIRST: Duration = Duration::from_secs(3600);
/// The longest wait after the download cap.
pub const CAP_WAIT_MAX: Duration = Duration::from_secs(8 * 3600);
/// A wait for the download budget up to this long is spent inside the
/// session; a longer one ends it (state `throttled`) and the puller
/// reconnects once it is over.
const BUDGET_WAIT_INLINE: Duration = Duration::from_secs(300);

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
            gmail: None,
            gm_known: std::sync::Mutex::new(HashSet::new()),
            budget: None,
            cap_wait: CAP_WAIT_FIRST,
            stop: CancellationToken::new(),
            notifier: None,
            failing_since: None,
            alert_open: None,
            alert_sent: false,
            hold: None,
            standby: false,
        }
    }

    /// Email alerts through `notifier`.
    pub fn with_notifier(mut self, notifier: Option<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// New mail was announced during a command this puller read itself.
    pub(super) fn heard(&self, announced: bool) {
        if announced {
            self.announced
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn gm_known(&self) -> HashSet<u32> {
        self.gm_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn gm_known_set(&self, uids: HashSet<u32>) {
        *self.gm_known.lock().unwrap_or_else(|p| p.into_inner()) = uids;
    }

    /// The budget for `download_bytes_per_day` (kept while it is unchanged,
    /// so a reconnect does not refill it).
    pub(super) fn set_budget(&mut self, per_day: u64) {
        if self.budget.as_ref().map(DownloadBudget::per_day) != Some(per_day) {
            self.budget = DownloadBudget::new(per_day);
        }
    }

    /// The most bytes a batch may have under the budget.
    pub(super) fn budget_burst(&self) -> Option<u64> {
        self.budget.as_ref().map(DownloadBudget::burst_bytes)
    }

    /// Take `bytes` from the daily budget before downloading them: at once,
    /// after a short wait, or — the budget used up for longer — end the
    /// session with [`PullError::Throttled`].
    pub(super) async fn spend(&self, bytes: u64) -> Result<(), PullError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        loop {
            let wait = match budget.take(bytes) {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            let resume_at = std::time::SystemTime::now() + wait;
            if wait > BUDGET_WAIT_INLINE || pause(&self.stop, wait).await {
                return Err(PullError::Throttled {
                    resume_at,
                    per_day: budget.per_day(),
                });
            }
        }
    }

    /// Record a state change (store + metric). Store errors are logged only:
    /// status is informative and must not stop pulling.
    pub(super) async fn set_state(&mut self, state: MailboxState, error: Option<String>) {
        self.set_state_until(state, error, None).await;
    }

    /// [`Puller::set_state`] with the time the puller resumes (a throttled
    /// mailbox).
    pub(super) async fn set_state_until(
        &mut self,
        state: MailboxState,
        error: Option<String>,
        resume_at: Option<std::time::SystemTime>,
    ) {
        if self.state == Some(state) && error.is_none() {
            return;
        }
        let resume_at = resume_at.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64)
        });
        for s in MailboxState::ALL {
            metrics::gauge!("postdesk_mailbox_state", "channel" => self.channel.clone(), "state" => s.as_str())
                .set(if s == state { 1.0 } else { 0.0 });
        }
        self.state = Some(state);
        if let Err(e) = self
            .store
            .set_mailbox_state(MailboxStateChange {
                channel: self.channel.clone(),
                folder: self.folder.clone(),
                state,
                error,
                resume_at,
            })
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
        self.stop = stop.clone();
        let node = self.live.config().store.node_name();
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
                self.let_go().await;
                self.set_state(MailboxState::Disabled, None).await;
                pause(&stop, PAUSE_CHECK).await;
                continue;
            }
            if ch.kind.uses_oauth() && self.tokens.awaiting_reauth(&ch).await {
                self.set_state(MailboxState::NeedsReauth, None).await;
                pause(&stop, PAUSE_CHECK).await;
                continue;
            }
            let Some(session_stop) = self.hold_lease(&node, config.store.lease_secs).await else {
                continue;
            };
            self.set_state(MailboxState::Connecting, None).await;
            match self.session(&ch, session_stop, &mut backoff).await {
                Ok(SessionEnd::Stopped) if stop.is_cancelled() => break,
                // Stopped without shutdown: the lease was lost.
                Ok(SessionEnd::Stopped) | Err(PullError::Store(StoreError::Fenced(_))) => {
                    tracing::warn!(channel = %self.channel, node = %node, "mailbox lease lost; this node stops pulling it and tries to acquire it again");
                    self.hold = None;
                }
                Ok(SessionEnd::Reconsider) => continue,
                Err(e) if e.needs_reauth() => {
                    self.failed(&ch, &e).await;
                    tracing::warn!(channel = %self.channel, error = %e, "mailbox needs re-authorisation; paused until the token files change");
                    self.set_state(MailboxState::NeedsReauth, Some(e.to_string()))
                        .await;
                }
                Err(PullError::Throttled { resume_at, per_day }) => {
                    let wait = resume_at
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    tracing::info!(channel = %self.channel, per_day, resume_in_secs = wait.as_secs(),
                        "daily download budget used up; pulling resumes when it has refilled");
                    let why = format!(
                        "download budget of {per_day} bytes/day used up; the backlog is pulled at that rate"
                    );
                    self.set_state_until(MailboxState::Throttled, Some(why), Some(resume_at))
                        .await;
                    pause(&stop, wait).await;
                }
                Err(e) if e.download_cap() => {
                    self.failed(&ch, &e).await;
                    let wait = self.cap_wait;
                    self.cap_wait = (wait * 2).min(CAP_WAIT_MAX);
                    tracing::warn!(channel = %self.channel, error = %e, retry_in_secs = wait.as_secs(),
                        "the provider's download cap is reached; waiting before trying again");
                    let resume_at = std::time::SystemTime::now() + wait;
                    self.set_state_until(
                        MailboxState::Throttled,
                        Some(e.to_string()),
                        Some(resume_at),
                    )
                    .await;
                    pause(&stop, wait).await;
                }
                Err(e) => {
                    self.failed(&ch, &e).await;
                    let delay = backoff.next_delay();
                    tracing::warn!(channel = %self.channel, error = %e, retry_in_ms = delay.as_millis() as u64, "mailbox session failed");
                    self.set_state(MailboxState::Backoff, Some(e.to_string()))
                        .await;
                    pause(&stop, delay).await;
                }
            }
        }
        self.set_state(MailboxState::Stopped, None).await;
        self.let_go().await;
    }

    /// The mailbox's lease, held or acquired now: the token that ends this
    /// node's session when the lease is lost (or at shutdown). `None` (after
    /// a wait of one renewal period) while another node holds it.
    async fn hold_lease(&mut self, node: &str, lease_secs: u64) -> Option<CancellationToken> {
        if let Some(h) = &self.hold
            && !h.lost.is_cancelled()
        {
            return Some(h.lost.clone());
        }
        self.hold = None;
        match lease::acquire(&self.store, &self.channel, node, lease_secs, &self.stop).await {
            Ok(Some(h)) => {
                tracing::info!(channel = %self.channel, node, epoch = h.fence.epoch, "mailbox lease acquired; this node pulls it");
                self.standby = false;
                let lost = h.lost.clone();
                self.hold = Some(h);
                Some(lost)
            }
            Ok(None) => {
                if !std::mem::replace(&mut self.standby, true) {
                    tracing::info!(channel = %self.channel, node, "another node holds the mailbox lease; standing by");
                }
                pause(&self.stop, lease::periods(lease_secs).1).await;
                None
            }
            Err(e) => {
                tracing::warn!(channel = %self.channel, error = %e, "cannot acquire the mailbox lease");
                pause(&self.stop, PAUSE_CHECK).await;
                None
            }
        }
    }

    /// Give the lease up, if held (paused or stopping).
    async fn let_go(&mut self) {
        if let Some(h) = self.hold.take() {
            h.release(self.store.as_ref()).await;
        }
    }

    /// `Ok` when this puller may act outside the store (move messages):
    /// it holds its lease by its own clock and in the store, or holds none
    /// (a session driven directly by a test).
    pub(super) async fn may_move(&self) -> Result<(), PullError> {
        match &self.hold {
            Some(h) => Ok(h.may_act(self.store.as_ref()).await?),
            None => Ok(()),
        }
    }

    /// The fence the puller's writes carry.
    pub(super) fn fence(&self) -> Option<crate::store::Fence> {
        self.hold.as_ref().map(|h| h.fence.clone())
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
