//! The background sender: delivers due outbox entries and records each
//! attempt's outcome.
//!
//! Owns the connection pool to `[relay]` ([`super::pool`], rebuilt when a
//! reload changes `[relay]`; the old pool's idle connections are closed
//! within a poll, in flight ones when done), and one pool of XOAUTH2 connections per
//! `gmail`/`office365` channel to its provider (at most `[channels.smtp]
//! connections`, rebuilt when the access token changes) when an
//! [`AccessTokens`] source is installed (the daemon always installs one; without one, those
//! channels send through `[relay]` too). The provider is
//! `smtp.gmail.com` / `smtp.office365.com` on 587 with STARTTLS unless the
//! channel's `[channels.smtp]` says otherwise. No token (refused grant,
//! token endpoint down) or a refused token keeps the reply queued with the
//! reason as its detail, retried with backoff until `max_lifetime_secs`;
//! other channels are not held up.
//!
//! Loop: take up to [`BATCH`] due entries, send them with at most
//! `relay.pool_size` in flight, record each outcome as soon as it is known
//! (`sent` only after the relay's 250; an outcome the store cannot take — a
//! full disk — is kept in memory and retried each round, its entry not sent
//! again meanwhile), repeat; when nothing is due, sleep
//! until the next due time, a wake-up from a newly queued reply (the API's
//! in this process; the CLI's through [`super::wake`]'s socket; on
//! PostgreSQL, another node's or the CLI's through the store's
//! notification), or `[outbound] poll_secs` (default [`IDLE_POLL`]: what a
//! lost wake-up missed).
//!
//! Shutdown: stop taking entries; entries waiting for a connection are left
//! queued untouched; transactions already started finish (bounded by
//! `relay.timeout_secs` per command, summed over the transaction) and are
//! recorded; then return.
//!
//! Must not: compose or alter messages (bytes are sent exactly as queued), or
//! mark anything `sent` before the relay accepted it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::pool::{Pool, ProviderPools, SmtpTarget};
use crate::config::{ChannelConfig, Config, OutboundConfig, RelayConfig, TlsMode};
use crate::live::Live;
use crate::oauth::AccessTokens;
use crate::store::{AttemptOutcome, OutboxClaim, OutboxId, OutboxItem, Store};

use super::claims::Claims;

/// Entries taken from the store per round.
pub const BATCH: usize = 1024;
/// Longest sleep when nothing is due: the default `[outbound] poll_secs`.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// Tries to record an attempt's outcome before it is kept in memory and
/// retried every round instead (a full disk).
const RECORD_TRIES: u32 = 4;

/// Outcomes the store could not take yet, by entry. Their entries are not
/// sent again while they wait: the relay's verdict is never lost, and a
/// delivered reply is never delivered twice because its `sent` could not be
/// written.
#[derive(Default)]
struct Unrecorded(Mutex<HashMap<OutboxId, AttemptOutcome>>);

impl Unrecorded {
    fn keep(&self, id: OutboxId, out: AttemptOutcome) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, out);
        }
    }

    fn holds(&self, id: OutboxId) -> bool {
        self.0.lock().map(|m| m.contains_key(&id)).unwrap_or(false)
    }

    fn take(&self) -> Vec<(OutboxId, AttemptOutcome)> {
        self.0
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default()
    }

    /// Try each kept outcome once more; what still fails for a temporary
    /// reason stays kept.
    async fn retry(&self, store: &dyn Store) {
        for (id, out) in self.take() {
            match store.record_attempt(id, out.clone()).await {
                Ok(()) => tracing::info!(outbox = %id, "attempt recorded late"),
                Err(e) if e.is_temporary() => self.keep(id, out),
                Err(e) => {
                    tracing::error!(outbox = %id, error = %e, "attempt outcome dropped: the store refuses it")
                }
            }
        }
    }
}

/// Why one attempt did not deliver.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Try again later (4xx, connection, TLS, timeout, no token yet).
    #[error("{0}")]
    Temporary(String),
    /// Give up (5xx, unusable envelope).
    #[error("{0}")]
    Permanent(String),
    /// The provider refused our XOAUTH2 token: retried (after the token
    /// source forgot the token) like a temporary failure.
    #[error("{0}")]
    AuthRejected(String),
    /// Shutdown came before the attempt started: nothing sent, nothing to record.
    #[error("cancelled before sending")]
    Cancelled,
}

impl SendError {
    /// The same error naming the relay it came from (`host:port: …`), as
    /// the log and the message's `delivery_detail` show it. An XOAUTH2
    /// refusal already names its server.
    pub fn at(self, relay: &str) -> SendError {
        match self {
            SendError::Temporary(e) => SendError::Temporary(format!("{relay}: {e}")),
            SendError::Permanent(e) => SendError::Permanent(format!("{relay}: {e}")),
            other => other,
        }
    }
}

/// Backoff after `attempts` failed attempts: base × 2^(attempts−1), capped.
pub fn backoff_secs(cfg: &OutboundConfig, attempts: i64) -> u64 {
    let exp = (attempts.max(1) - 1).min(32) as u32;
    cfg.retry_base_secs
        .max(1)
        .saturating_mul(2u64.saturating_pow(exp))
        .min(cfg.retry_max_secs.max(1))
}

/// The outcome to record for an attempt that ended with `result`.
/// `attempts` counts this attempt; times are unix ms.
pub fn outcome(
    cfg: &OutboundConfig,
    result: Result<String, SendError>,
    attempts: i64,
    created_at: i64,
    now: i64,
) -> AttemptOutcome {
    match result {
        Ok(reply) => AttemptOutcome::Sent { reply },
        Err(SendError::Permanent(error)) => AttemptOutcome::Failed { error },
        Err(SendError::Cancelled) => AttemptOutcome::Deferred {
            error: "not attempted: shutting down".into(),
            next_attempt_at: now,
        },
        Err(SendError::Temporary(error) | SendError::AuthRejected(error)) => {
            let next = now + backoff_secs(cfg, attempts) as i64 * 1000;
            let deadline = created_at + cfg.max_lifetime_secs as i64 * 1000;
            if now >= deadline {
                AttemptOutcome::Failed {
                    error: format!("gave up after {attempts} attempts: {error}"),
                }
            } else {
                AttemptOutcome::Deferred {
                    error,
                    next_attempt_at: next.min(deadline),
                }
            }
        }
    }
}

/// One line, bounded: relay replies are shown to agents.
fn clean_reply(s: &str) -> String {
    super::compose::clean_header_value(s, 500)
}

fn relay_target(relay: &RelayConfig, hostname: &str) -> Result<SmtpTarget, String> {
    let credentials = match (&relay.username, &relay.password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read relay password file {}: {e}", file.display()))?;
            Some(Credentials::new(
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        _ => None,
    };
    Ok(SmtpTarget {
        host: relay.host.clone(),
        port: relay.port,
        tls: relay.tls,
        hello: hostname.to_string(),
        timeout: Duration::from_secs(relay.timeout_secs.max(1)),
        ca_file: relay.ca_file.clone(),
        credentials,
        mechanisms: Vec::new(),
    })
}

/// Delivers the outbox.
pub struct Sender {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub wake: Arc<Notify>,
    /// Access tokens for XOAUTH2 to gmail/office365; `None`: everything via `[relay]`.
    pub tokens: Option<Arc<dyn AccessTokens>>,
}

/// The relay pool for one `[relay]` configuration.
struct Relay {
    config: RelayConfig,
    pool: Result<Arc<Pool>, String>,
}

impl Sender {
    /// The pool for the current `[relay]`, rebuilt when a reload changed it.
    async fn relay(
        &self,
        current: &mut Option<Relay>,
        config: &Config,
    ) -> Result<Arc<Pool>, String> {
        let stale = current.as_ref().is_none_or(|r| r.config != config.relay);
        if stale {
            if let Some(Relay { pool: Ok(old), .. }) = current.take() {
                old.close().await;
            }
            let pool = relay_target(&config.relay, &config.smtp.hostname)
                .map(|t| Arc::new(Pool::new(t, config.relay.pool_size.max(1) as usize)));
            if let Err(e) = &pool {
                tracing::error!(error = %e, "relay unusable; replies stay queued");
            }
            *current = Some(Relay {
                config: config.relay.clone(),
                pool,
            });
        }
        match current {
            Some(r) => r.pool.clone(),
            None => Err("relay not configured".into()),
        }
    }

    /// Run until `shutdown` is cancelled; sends in flight are finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut relay: Option<Relay> = None;
        let providers = Arc::new(ProviderPools::default());
        let unrecorded = Arc::new(Unrecorded::default());
        let mut backoff = Duration::from_millis(200);
        // Nodes sharing the store: what this node takes is claimed for it.
        let claim = {
            let store = &self.live.config().store;
            OutboxClaim {
                node: store.node_name(),
                lease_ms: i64::try_from(store.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            }
        };
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            unrecorded.retry(self.store.as_ref()).await;
            let now = super::now_ms();
            let sent = std::time::Instant::now();
            let taken = self.store.due_outbox(claim.clone(), now, BATCH).await;
            let (due, held) = match taken {
                Ok(d) => {
                    let all = d.len();
                    let d: Vec<_> = d
                        .into_iter()
                        .filter(|item| !unrecorded.holds(item.id))
                        .collect();
                    let held = d.len() < all;
                    (d, held)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox read failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            if due.is_empty() {
                // A reload that changed `[relay]` closes the old pool now,
                // not when the next reply is due.
                if relay.is_some() {
                    let config = self.live.config();
                    let _ = self.relay(&mut relay, &config).await;
                }
                // `[outbound] poll_secs`: IDLE_POLL unless configured.
                let idle = Duration::from_secs(self.live.config().outbound.poll_secs.max(1));
                let wait = match self.store.next_outbox_due().await {
                    // Due entries whose outcome waits to be recorded: retry
                    // that each poll, not in a busy loop.
                    _ if held => idle,
                    Ok(Some(at)) => Duration::from_millis((at - now).max(0) as u64).min(idle),
                    _ => idle,
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let config = self.live.config();
            let pool = self.relay(&mut relay, &config).await;
            let claims = Claims::start(
                self.store.clone(),
                claim.clone(),
                due.iter().map(|i| i.id),
                sent,
            );
            self.send_batch(
                due,
                &config,
                pool,
                &providers,
                (&unrecorded, &claims),
                &shutdown,
            )
            .await;
            claims.finish(self.store.as_ref()).await;
        }
        unrecorded.retry(self.store.as_ref()).await;
        for (id, _) in unrecorded.take() {
            tracing::error!(outbox = %id, "attempt outcome not recorded at shutdown; the entry will be tried again");
        }
        if let Some(Relay { pool: Ok(p), .. }) = relay {
            p.close().await;
        }
        providers.close().await;
        tracing::info!("outbound sender stopped");
    }

    async fn send_batch(
        &self,
        due: Vec<OutboxItem>,
        config: &Arc<Config>,
        pool: Result<Arc<Pool>, String>,
        providers: &Arc<ProviderPools>,
        (unrecorded, claims): (&Arc<Unrecorded>, &Arc<Claims>),
        shutdown: &CancellationToken,
    ) {
        // The pool bounds the connections; tasks beyond it wait for one. Many
        // tasks, so that those waiting for their outcome's durable commit do
        // not hold back new sends (their commits are grouped).
        let limit = BATCH;
        let mut tasks: JoinSet<()> = JoinSet::new();
        for item in due {
            if shutdown.is_cancelled() {
                break;
            }
            while tasks.len() >= limit {
                let _ = tasks.join_next().await;
            }
            let (store, config, pool, providers, tokens, stop, unrecorded, claims) = (
                self.store.clone(),
                config.clone(),
                pool.clone(),
                providers.clone(),
                self.tokens.clone(),
                shutdown.clone(),
                unrecorded.clone(),
                claims.clone(),
            );
            tasks.spawn(async move {
                let relays = Relays {
                    relay: pool,
                    providers: &providers,
                    tokens: tokens.as_deref(),
                };
                let relay = relays.label(&config, &item.channel);
                // Another node may have taken it once the claim ran out.
                if !claims.may_send(item.id) {
                    return;
                }
                let result = deliver(&item, &config, relays, &relay, &stop).await;
                if result == Err(SendError::Cancelled) {
                    return; // not attempted: stays queued as it was
                }
                let now = super::now_ms();
                let out = outcome(
                    &config.outbound,
                    result,
                    item.attempts + 1,
                    item.created_at,
                    now,
                );
                record(store.as_ref(), item.id, out, &unrecorded, &relay).await;
                claims.done(item.id);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn record(
    store: &dyn Store,
    id: OutboxId,
    out: AttemptOutcome,
    unrecorded: &Unrecorded,
    relay: &str,
) {
    let label = match &out {
        AttemptOutcome::Sent { .. } => "sent",
        AttemptOutcome::Deferred { .. } => "deferred",
        AttemptOutcome::Failed { .. } => "failed",
    };
    match &out {
        AttemptOutcome::Sent { reply } => {
            tracing::info!(outbox = %id, %relay, %reply, "reply sent")
        }
        AttemptOutcome::Deferred {
            error,
            next_attempt_at,
        } => {
            let retry_at = crate::store::ms_to_rfc3339(*next_attempt_at);
            tracing::info!(outbox = %id, %relay, %error, %retry_at, "reply deferred")
        }
        AttemptOutcome::Failed { error } => {
            tracing::warn!(outbox = %id, %relay, %error, "reply failed")
        }
    }
    metrics::counter!("postdesk_outbox_attempts_total", "result" => label).increment(1);
    // The relay's verdict must not be lost to a store error: retry a little,
    // then keep it for the next rounds (the entry is not sent meanwhile).
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=RECORD_TRIES {
        match store.record_attempt(id, out.clone()).await {
            Ok(()) => return,
            Err(e) if attempt < RECORD_TRIES && e.is_temporary() => {
                tracing::warn!(outbox = %id, error = %e, "cannot record attempt; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) if e.is_temporary() => {
                tracing::error!(outbox = %id, error = %e, "cannot record attempt; kept until the store takes it");
                unrecorded.keep(id, out);
                return;
            }
            // Refused for good (e.g. a bounce already failed the entry while
            // it was being sent): retrying cannot help.
            Err(e) => {
                tracing::error!(outbox = %id, error = %e, "attempt outcome dropped: the store refuses it");
                return;
            }
        }
    }
}

/// Where a reply can go: `[relay]`, or its channel's provider.
struct Relays<'a> {
    relay: Result<Arc<Pool>, String>,
    providers: &'a ProviderPools,
    tokens: Option<&'a dyn AccessTokens>,
}

/// A provider's SMTP server: host, port, TLS, CA file (`effective_smtp`).
type ProviderSmtp<'c> = (&'c str, u16, TlsMode, Option<&'c Path>);

impl Relays<'_> {
    /// Where a channel's replies go, the one place that decides it: its
    /// provider's SMTP server (gmail, office365, with a token source), else
    /// `[relay]`.
    fn provider<'c>(
        &self,
        config: &'c Config,
        channel: &str,
    ) -> Option<(&'c ChannelConfig, ProviderSmtp<'c>)> {
        self.tokens?;
        let ch = config.channel(channel)?;
        ch.effective_smtp().map(|p| (ch, p))
    }

    /// That relay as `host:port`, for the log and `delivery_detail`.
    fn label(&self, config: &Config, channel: &str) -> String {
        match self.provider(config, channel) {
            Some((_, (host, port, ..))) => format!("{host}:{port}"),
            None => format!("{}:{}", config.relay.host, config.relay.port),
        }
    }
}

async fn deliver(
    item: &OutboxItem,
    config: &Config,
    via: Relays<'_>,
    relay: &str,
    stop: &CancellationToken,
) -> Result<String, SendError> {
    if stop.is_cancelled() {
        return Err(SendError::Cancelled);
    }
    let from = item
        .mail_from
        .parse()
        .map_err(|e| SendError::Permanent(format!("bad sender {:?}: {e}", item.mail_from)))?;
    let to = item
        .rcpt_to
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|e| SendError::Permanent(format!("bad recipient {r:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = Envelope::new(Some(from), to)
        .map_err(|e| SendError::Permanent(format!("bad envelope: {e}")))?;
    let response = match (via.provider(config, &item.channel), via.tokens) {
        (Some((channel, (host, port, tls, ca_file))), Some(tokens)) => {
            let token = tokens.access_token(&channel.id).await.map_err(|e| {
                SendError::Temporary(clean_reply(&format!(
                    "channel {}: no OAuth access token for XOAUTH2: {e}",
                    channel.id
                )))
            })?;
            let user = channel.login_user();
            let target = SmtpTarget {
                host: host.to_string(),
                port,
                tls,
                hello: config.smtp.hostname.clone(),
                timeout: Duration::from_secs(config.relay.timeout_secs.max(1)),
                ca_file: ca_file.map(Path::to_path_buf),
                credentials: Some(Credentials::new(user, token)),
                mechanisms: vec![Mechanism::Xoauth2],
            };
            let pool = via
                .providers
                .pool(&channel.id, &target, channel.smtp_connections())
                .await;
            match pool.send(&envelope, &item.raw, stop).await {
                Err(SendError::AuthRejected(e)) => {
                    via.providers.forget(&channel.id, &target).await;
                    tokens.rejected(&channel.id).await;
                    return Err(SendError::AuthRejected(clean_reply(&format!(
                        "{relay} refused the XOAUTH2 token: {e}"
                    ))));
                }
                other => other.map_err(|e| e.at(relay))?,
            }
        }
        _ => {
            let pool = via.relay.map_err(|e| SendError::Temporary(e).at(relay))?;
            pool.send(&envelope, &item.raw, stop)
                .await
                .map_err(|e| e.at(relay))?
        }
    };
    let text = response.message().collect::<Vec<_>>().join(" ");
    Ok(clean_reply(&format!("{} {text}", response.code())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome the store refuses for good (its entry is no longer queued:
    /// a bounce failed it while it was being sent; here it is gone
    /// altogether) is dropped after one try, not kept in memory — a kept
    /// outcome holds its entry back from sending for as long as the daemon
    /// runs. The same for one kept earlier and retried.
    #[tokio::test]
    async fn an_outcome_the_store_refuses_for_good_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::tests::fresh_store(dir.path()).await;
        let unrecorded = Unrecorded::default();
        let id = OutboxId(999);
        let sent = AttemptOutcome::Sent {
            reply: "250 ok".into(),
        };
        record(&*store, id, sent.clone(), &unrecorded, "relay:25").await;
        assert!(!unrecorded.holds(id), "a refused outcome was kept");
        unrecorded.keep(id, sent);
        unrecorded.retry(&*store).await;
        assert!(!unrecorded.holds(id), "kept after the store refused it");
    }

    fn cfg() -> OutboundConfig {
        OutboundConfig {
            retry_base_secs: 30,
            retry_max_secs: 3600,
            max_lifetime_secs: 86_400,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_table() {
        let c = cfg();
        for (attempts, want) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (50, 3600)] {
            assert_eq!(backoff_secs(&c, attempts), want, "attempt {attempts}");
        }
    }

    #[test]
    fn outcomes() {
        let c = cfg();
        let t0 = 1_000_000;
        assert_eq!(
            outcome(&c, Ok("250 ok".into()), 1, t0, t0),
            AttemptOutcome::Sent {
                reply: "250 ok".into()
            }
        );
        assert_eq!(
            outcome(&c, Err(SendError::Permanent("550 no".into())), 1, t0, t0),
            AttemptOutcome::Failed {
                error: "550 no".into()
            }
        );
        assert_eq!(
            outcome(
                &c,
                Err(SendError::Temporary("451 later".into())),
                2,
                t0,
                t0 + 5
            ),
            AttemptOutcome::Deferred {
                error: "451 later".into(),
                next_attempt_at: t0 + 5 + 60_000
            }
        );
        // A refused XOAUTH2 token is retried like a temporary failure.
        assert_eq!(
            outcome(
                &c,
                Err(SendError::AuthRejected("535 5.7.8 not accepted".into())),
                1,
                t0,
                t0
            ),
            AttemptOutcome::Deferred {
                error: "535 5.7.8 not accepted".into(),
                next_attempt_at: t0 + 30_000
            }
        );
        // Past the lifetime: failed, with the last error.
        let late = t0 + 86_400_000;
        match outcome(
            &c,
            Err(SendError::Temporary("451 later".into())),
            9,
            t0,
            late,
        ) {
            AttemptOutcome::Failed { error } => assert!(error.contains("451 later"), "{error}"),
            other => panic!("{other:?}"),
        }
        // A retry is never scheduled after the deadline.
        let near = t0 + 86_400_000 - 10_000;
        match outcome(&c, Err(SendError::Temporary("x".into())), 9, t0, near) {
            AttemptOutcome::Deferred {
                next_attempt_at, ..
            } => {
                assert!(next_attempt_at <= t0 + 86_400_000)
            }
            other => panic!("{other:?}"),
        }
    }
}
