//! Pull: read Gmail, Office 365 and plain IMAP mailboxes into the spool.
//!
//! DESCRIPTION
//!   [`Supervisor::run`] starts one [`mailbox::Puller`] task per pulled
//!   channel (`gmail`, `office365`, `imap`) and keeps the set in step with
//!   the live configuration. Each puller connects ([`connect`]: TCP, TLS
//!   none/STARTTLS/implicit, LOGIN or XOAUTH2 with a token from
//!   [`crate::oauth::TokenSource`]), selects its folder, fetches every UID above its
//!   checkpoint with `BODY.PEEK[]` in batches and commits each batch with the
//!   advanced checkpoint in one store transaction, then waits for new mail
//!   with IDLE (when offered and enabled) or by polling. Failures reconnect
//!   after an exponential, jittered [`backoff::Backoff`]. A puller's jobs
//!   have a module each: `session` (one connection: select, UIDVALIDITY,
//!   the rounds), `catch_up` (fetch and commit), `batch` (cutting batches,
//!   UID sets), `moves` (`move_to`); `fake_imap` is the tests' scripted
//!   IMAP server.
//!
//! MUST NOT
//!   Modify the provider's mailbox (PEEK only; `move_to` is the one opt-in
//!   exception, done after the commit), parse mail or make tickets (ingest
//!   does, woken after each commit), let one mailbox's failure reach another
//!   (each puller is its own task with its own connection and backoff), or
//!   log secrets.
//!
//! LIMITS
//!   A batch (at most `imap.batch_size` messages and `imap.batch_bytes`
//!   bytes by the sizes the server reports, or one larger message alone) is
//!   held in memory, two while one commits and the next is fetched;
//!   connection steps time out after [`connect::STEP_TIMEOUT`], a batch fetch
//!   after [`mailbox::FETCH_TIMEOUT`]. On shutdown a puller finishes the
//!   batch it is committing and logs out.
//!
//! UNTRUSTED INPUT
//!   Everything the IMAP server and the token endpoint send. Message bytes go
//!   to the spool unchanged; server texts are shortened before they are kept.

mod alerts;
pub mod backoff;
mod batch;
mod budget;
mod catch_up;
pub mod connect;
#[cfg(test)]
mod fake_imap;
mod fetch;
mod lease;
pub mod mailbox;
mod moves;
pub mod mutf7;
mod session;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::live::Live;
use crate::store::{Store, StoreError};

/// Why a pull session ended.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("network: {0}")]
    Io(std::io::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("imap: {0}")]
    Protocol(String),
    /// The server answered a command of a move with NO or BAD (the target
    /// folder over quota, no right to it): the session goes on pulling.
    #[error("imap: {text}")]
    MoveRefused { text: String },
    #[error("login refused: {0}")]
    Auth(String),
    #[error("oauth: {0}")]
    OAuth(#[from] crate::oauth::OAuthError),
    #[error("cannot read {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The provider's daily download cap refused a fetch (Gmail's
    /// `[OVERQUOTA]`): wait long, do not reconnect at once.
    #[error("download cap reached: {0}")]
    DownloadCap(String),
    /// The mailbox's own daily download budget is used up until `resume_at`.
    #[error("download budget of {per_day} bytes/day used up")]
    Throttled {
        resume_at: std::time::SystemTime,
        per_day: u64,
    },
}

impl From<async_imap::error::Error> for PullError {
    fn from(e: async_imap::error::Error) -> Self {
        match e {
            async_imap::error::Error::Io(io) => PullError::Io(io),
            other => PullError::Protocol(crate::mail::short(other)),
        }
    }
}

impl PullError {
    /// Only a person can fix it; do not retry until the OAuth files change.
    pub fn needs_reauth(&self) -> bool {
        matches!(self, PullError::OAuth(e) if e.needs_reauth())
    }

    /// The provider's download cap answered: at a fetch, or at login
    /// (Gmail: "Account exceeded command or bandwidth limits").
    pub fn download_cap(&self) -> bool {
        match self {
            PullError::DownloadCap(_) => true,
            PullError::Auth(text) | PullError::Protocol(text) => fetch::is_download_cap(text),
            _ => false,
        }
    }
}

/// How often the supervisor looks for added or removed pulled channels.
const RESCAN: Duration = Duration::from_secs(5);

/// Runs one puller per pulled channel.
pub struct Supervisor {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    /// Ingest's wake-up, notified after each committed batch.
    pub wake: Arc<Notify>,
    pub tokens: Arc<crate::oauth::TokenSource>,
    /// Where mailbox alerts are emailed (`[alerts] to`).
    pub notifier: Option<crate::outbound::notify::Notifier>,
}

impl Supervisor {
    /// Run until `stop` is cancelled, then wait for every puller to finish
    /// its current batch.
    pub async fn run(self, stop: CancellationToken) {
        let mut tasks: JoinSet<String> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        loop {
            let config = self.live.config();
            for ch in config.channels.iter().filter(|c| c.kind.is_pulled()) {
                if running.insert(ch.id.clone()) {
                    let puller = mailbox::Puller::new(
                        ch.id.clone(),
                        self.store.clone(),
                        self.live.clone(),
                        self.wake.clone(),
                        self.tokens.clone(),
                    )
                    .with_notifier(self.notifier.clone());
                    let stop = stop.clone();
                    let id = ch.id.clone();
                    tracing::info!(channel = %id, "mailbox puller starting");
                    tasks.spawn(async move {
                        // A panic in one puller must not end the others;
                        // the supervisor restarts it on its next scan.
                        let run = std::panic::AssertUnwindSafe(puller.run(stop));
                        if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                            tracing::error!(channel = %id, "mailbox puller panicked; restarting");
                        }
                        id
                    });
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RESCAN) => {}
                Some(done) = tasks.join_next() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}
