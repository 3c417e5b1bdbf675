//! The daemon: open the store, bind the listeners, run SMTP, ingest and HTTP
//! until told to stop, reload configuration on request.
//!
//! Shutdown order (SIGTERM): `/readyz` turns 503 and systemd hears STOPPING;
//! the SMTP listeners stop accepting and idle sessions get `421`, sessions in
//! DATA finish up to `smtp.shutdown_grace_secs`, and mailbox pullers commit
//! the batch in hand and log out (same deadline); then ingest drains the spool
//! (bounded by the same grace); then HTTP stops; then the outbound sender
//! finishes the sends in flight (same grace). Whatever ingest did not finish
//! stays in the durable spool, and unsent replies in the outbox, for the next
//! start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::StoreKind;
use crate::ingest::Ingestor;
use crate::live::Live;
use crate::smtp::{Envelope, RcptCheck, Spool, SpoolError};
use crate::store::{NewSpool, PostgresStore, SpoolSource, SqliteStore, Store, StoreError};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    // The cause is in the message and not a `source`: the CLI prints the
    // chain (`{:#}`), which would say it twice.
    #[error("store {path}: {error}")]
    Store { path: PathBuf, error: StoreError },
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("smtp tls: {0}")]
    Tls(String),
    /// A task the daemon cannot work without ended while it ran (a panic
    /// outside the per-message guards): exit non-zero, so that systemd's
    /// `Restart=on-failure` starts it again, instead of running on without it.
    #[error(
        "the {0} task ended unexpectedly; exiting so that the service manager restarts postdesk"
    )]
    TaskEnded(&'static str),
}

/// The SMTP listener's view of the spool: recipients from the live config,
/// commits into the store, a wake-up for ingest after each commit.
pub struct SmtpSpool {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub wake: Arc<Notify>,
    pub handoff: Arc<crate::ingest::handoff::Handoff>,
}

impl Spool for SmtpSpool {
    fn check_recipient(&self, addr: &str) -> RcptCheck {
        let config = self.live.config();
        match config.channel_for_recipient(addr) {
            Some(c) if self.live.channel_enabled(c) => RcptCheck::Accept,
            Some(_) => RcptCheck::Disabled,
            None => RcptCheck::Unknown,
        }
    }

    fn commit(
        &self,
        envelope: Envelope,
        raw: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<i64, SpoolError>> + Send {
        let msg = NewSpool {
            source: SpoolSource::Smtp,
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            client_ip: Some(envelope.client_ip.to_string()),
            helo: Some(envelope.helo),
            tls: envelope.tls,
            channel: None,
            raw,
        };
        async move {
            let started = std::time::Instant::now();
            let committed = self.store.spool(msg).await;
            // Time a session waits for its durable commit (the 250's delay).
            metrics::histogram!("postdesk_spool_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            match committed {
                Ok(entry) => {
                    let id = entry.id.0;
                    self.handoff.push(entry);
                    self.wake.notify_one();
                    Ok(id)
                }
                Err(StoreError::Full) => Err(SpoolError::Full),
                Err(StoreError::Closed) => Err(SpoolError::ShuttingDown),
                Err(e) => Err(SpoolError::Unavailable(e.to_string())),
            }
        }
    }
}

/// Listeners bound before the daemon starts (tests bind port 0).
pub struct Bound {
    pub smtp: Vec<TcpListener>,
    pub http: TcpListener,
    /// `[http] metrics_listen`, when set.
    pub metrics: Option<TcpListener>,
}

impl Bound {
    /// Bind every address the configuration names.
    pub async fn bind(config: &Config) -> Result<Bound, DaemonError> {
        let mut smtp = Vec::new();
        for addr in &config.smtp.listen {
            smtp.push(
                TcpListener::bind(addr)
                    .await
                    .map_err(|error| DaemonError::Bind { addr: *addr, error })?,
            );
        }
        let addr = config.http.listen;
        let http = TcpListener::bind(addr)
            .await
            .map_err(|error| DaemonError::Bind { addr, error })?;
        let metrics = match config.http.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|error| DaemonError::Bind { addr, error })?,
            ),
            None => None,
        };
        Ok(Bound {
            smtp,
            http,
            metrics,
        })
    }
}

/// Open the configured store: the SQLite file, or the PostgreSQL database
/// `url_file` names (connected, migrated).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, DaemonError> {
    let group = config.store.group_commit_max;
    if config.store.kind == StoreKind::Postgres {
        let file = config.store.url_file.clone().unwrap_or_default();
        let url = crate::store::postgres::load_url(&file).map_err(|e| DaemonError::Store {
            path: file.clone(),
            error: StoreError::Invalid(e),
        })?;
        let ca = config.store.ca_file.as_deref();
        return PostgresStore::open_tls(url, ca, config.store.pool_size, group)
            .await
            .map(|s| Arc::new(s.with_node(node_of(config))) as Arc<dyn Store>)
            .map_err(|error| DaemonError::Store { path: file, error });
    }
    let path = config.store.path.clone();
    let busy = config.store.busy_timeout_ms;
    let p = path.clone();
    tokio::task::spawn_blocking(move || SqliteStore::open(&p, busy, group))
        .await
        .map_err(|e| DaemonError::Store {
            path: path.clone(),
            error: StoreError::Failed(e.to_string()),
        })?
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|error| DaemonError::Store { path, error })
}

/// This node among the nodes sharing a PostgreSQL store: `[store] node_id`
/// (default: the host name) and `lease_secs`.
fn node_of(config: &Config) -> crate::store::postgres::Node {
    crate::store::postgres::Node::new(
        config.store.node_name(),
        Duration::from_secs(config.store.lease_secs),
    )
}

/// Register this node in the store's node registry and renew its heartbeat
/// every third of `lease_secs` until `stop`; then leave the registry. A
/// SQLite store keeps no registry: the task ends at once.
fn spawn_heartbeat(
    store: Arc<dyn Store>,
    config: &Config,
    bound: &Bound,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut smtp: Vec<String> = bound
        .smtp
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    if smtp.is_empty() {
        smtp.push("-".into());
    }
    let http = bound
        .http
        .local_addr()
        .map_or_else(|_| "-".to_string(), |a| a.to_string());
    let beat = crate::store::NodeBeat {
        address: format!("smtp {} http {http}", smtp.join(",")),
        started_at: crate::store::now_ms(),
    };
    let every = Duration::from_secs(config.store.lease_secs).div_f64(3.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            match store.heartbeat(beat.clone()).await {
                Ok(true) => {}
                Ok(false) => return, // one implicit node (SQLite)
                Err(e) => tracing::warn!(error = %e, "node heartbeat failed"),
            }
        }
        if let Err(e) = store.leave().await {
            tracing::warn!(error = %e, "could not leave the node registry");
        }
    })
}

/// What `check --connect` says about the configured store: PostgreSQL's
/// version and schema (nothing written), or the SQLite file.
pub async fn probe_store(config: &Config) -> Result<String, DaemonError> {
    if config.store.kind != StoreKind::Postgres {
        return Ok(format!(
            "SQLite at {} (nothing to connect to)",
            config.store.path.display()
        ));
    }
    let file = config.store.url_file.clone().unwrap_or_default();
    let err = |error| DaemonError::Store {
        path: file.clone(),
        error,
    };
    let url = crate::store::postgres::load_url(&file).map_err(|e| err(StoreError::Invalid(e)))?;
    crate::store::postgres::try_connect(url, config.store.ca_file.as_deref())
        .await
        .map_err(err)
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Run the daemon until `shutdown` is cancelled. `reload` is notified to
/// re-read the configuration file (SIGHUP).
pub async fn run(
    config: Config,
    bound: Bound,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> Result<(), DaemonError> {
    let store: Arc<dyn Store> = open_store(&config).await?;
    let tls = crate::keys::tls_acceptor(
        config.smtp.tls_cert.as_deref(),
        config.smtp.tls_key.as_deref(),
    )
    .map_err(|e| DaemonError::Tls(e.to_string()))?;
    let config_path = config.path.clone();
    let smtp_cfg = Arc::new(config.smtp.clone());
    let grace = Duration::from_secs(config.smtp.shutdown_grace_secs);
    let live = Arc::new(Live::new(config));
    if let Err(e) = live.refresh(store.as_ref()).await {
        tracing::warn!(error = %e, "cannot read runtime overrides; using configuration");
    }
    let wake = Arc::new(Notify::new());
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = spawn_heartbeat(
        store.clone(),
        &live.config(),
        &bound,
        heartbeat_stop.clone(),
    );

    let smtp_stop = CancellationToken::new();
    let ingest_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();

    let handoff = Arc::new(crate::ingest::handoff::Handoff::default());
    let spool = Arc::new(SmtpSpool {
        store: store.clone(),
        live: live.clone(),
        wake: wake.clone(),
        handoff: handoff.clone(),
    });
    for listener in &bound.smtp {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "smtp listening");
        }
    }
    // One loop for every address: the connection and rate limits are the
    // daemon's, not each address's.
    let smtp_task = tokio::spawn(crate::smtp::serve(
        bound.smtp,
        smtp_cfg.clone(),
        tls.clone(),
        spool.clone(),
        smtp_stop.clone(),
    ));

    let ingestor = Ingestor {
        store: store.clone(),
        live: live.clone(),
        wake: wake.clone(),
        handoff,
        // The resolver is chosen at start (a reload keeps it).
        auth: Arc::new(crate::ingest::auth::Authenticator::new(
            live.config().smtp.dns_resolver,
        )),
    };
    let ingest_task = tokio::spawn(ingestor.run(ingest_stop.clone()));

    // One token source for the process: every user of a channel's OAuth
    // tokens (pull, and the sender's XOAUTH2 SMTP) must share it, so a rotated
    // refresh token is used by all and refreshes are serialised per channel.
    let tokens = Arc::new(crate::oauth::TokenSource::new());
    // Outbound: replies queued by the API wake the sender at once; the CLI's
    // (another process) through the wake-up socket next to the store.
    let outbound_stop = CancellationToken::new();
    let out_wake = Arc::new(Notify::new());
    let wake_socket =
        crate::outbound::wake::listen(&live.config(), out_wake.clone(), outbound_stop.clone());
    let outbound = crate::outbound::Outbound {
        store: store.clone(),
        live: live.clone(),
        wake: out_wake.clone(),
    };
    let pull_stop = CancellationToken::new();
    let puller = crate::pull::Supervisor {
        store: store.clone(),
        live: live.clone(),
        wake: wake.clone(),
        tokens: tokens.clone(),
        notifier: Some(outbound.notifier()),
    };
    let pull_task = tokio::spawn(puller.run(pull_stop.clone()));
    let sender = crate::outbound::sender::Sender {
        store: store.clone(),
        live: live.clone(),
        wake: out_wake.clone(),
        tokens: Some(Arc::new(crate::oauth::ChannelTokens {
            tokens: tokens.clone(),
            live: live.clone(),
        })),
    };
    let sender_task = tokio::spawn(sender.run(outbound_stop.clone()));

    if let Ok(addr) = bound.http.local_addr() {
        tracing::info!(%addr, "http listening");
    }
    if let Some(Ok(addr)) = bound.metrics.as_ref().map(|l| l.local_addr()) {
        tracing::info!(%addr, "metrics listening");
    }
    let app = crate::api::AppState {
        store: store.clone(),
        live: live.clone(),
        outbound,
        metrics,
        stopping: shutdown.clone(),
        sends: Default::default(),
    };
    let pages = crate::web::router(app.clone());
    let http_task = tokio::spawn(crate::api::serve(
        bound.http,
        bound.metrics,
        app,
        pages,
        http_stop.clone(),
    ));

    // Overrides changed by the CLI (another process) or another node, and
    // replies they queued, are picked up here.
    let refresher = {
        let (store, live, stop) = (store.clone(), live.clone(), shutdown.clone());
        let sender = out_wake.clone();
        tokio::spawn(async move { live.follow(store.as_ref(), &sender, &stop).await })
    };

    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("postdesk ready");
    reload_outcome(true);
    let watchdog = sd_notify::watchdog_enabled();
    let ping = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600));
    // Intervals, not a sleep per loop pass: another branch firing (the
    // health check every second) must not restart the ping's clock.
    let mut ping = tokio::time::interval(ping);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let mut failed = None;
    // What the store, listeners and logging run with until a restart.
    let started = live.config();

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = health.tick() => {
                // Each runs until told to stop: one that ended has failed.
                let ended = [
                    ("smtp", smtp_task.is_finished()),
                    ("ingest", ingest_task.is_finished()),
                    ("pull", pull_task.is_finished()),
                    ("sender", sender_task.is_finished()),
                    ("http", http_task.is_finished()),
                ]
                .into_iter()
                .find_map(|(name, done)| done.then_some(name));
                if let Some(name) = ended {
                    tracing::error!(task = name, "a core task ended unexpectedly; stopping (no more watchdog pings)");
                    failed = Some(name);
                    // /readyz answers 503 from now on, as for a SIGTERM.
                    shutdown.cancel();
                    break;
                }
            }
            _ = reload.notified() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                // The overrides as the store has them now (a `channels
                // enable` a moment ago included): what the conflict warnings
                // compare the new file against.
                if let Err(e) = live.refresh(store.as_ref()).await {
                    tracing::warn!(error = %e, "could not read run-time overrides before the reload");
                }
                match crate::config::load(&config_path) {
                    Ok(new) => {
                        for w in &new.warnings {
                            tracing::warn!("{w}");
                        }
                        for w in reload_warnings(&started, &live.config(), &new, &live) {
                            tracing::warn!("{w}");
                        }
                        live.replace_config(new);
                        tracing::info!(path = %config_path.display(), "configuration reloaded");
                        reload_outcome(true);
                    }
                    Err(errors) => {
                        tracing::error!(path = %config_path.display(), "configuration refused, keeping the old one:\n{errors}");
                        reload_outcome(false);
                    }
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = ping.tick() => {
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: closing smtp listeners");
    smtp_stop.cancel();
    pull_stop.cancel();
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
    // The listener lets sessions in DATA finish within the grace period, then
    // aborts the rest itself and gives them ABORT_MARGIN to unwind: wait for
    // that. Aborting it sooner could cut a session whose message is being
    // committed — stored, but never answered 250, so sent again.
    let smtp_deadline = deadline + crate::smtp::ABORT_MARGIN;
    let smtp_done = async {
        let mut smtp_task = smtp_task;
        if tokio::time::timeout_at(smtp_deadline, &mut smtp_task)
            .await
            .is_err()
        {
            tracing::warn!("smtp listener still busy past its own deadline; aborting it");
            smtp_task.abort();
        }
    };
    let pull_done = async {
        if tokio::time::timeout_at(deadline, pull_task).await.is_err() {
            tracing::warn!(
                "mailbox pullers still busy at the deadline; uncommitted batches are fetched again next start"
            );
        }
    };
    tokio::join!(smtp_done, pull_done);
    tracing::info!("stopping: draining ingest");
    ingest_stop.cancel();
    let ingest_deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(ingest_deadline, ingest_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ingest failed; what it did not finish stays in the spool")
        }
        Err(_) => {
            tracing::warn!("ingest did not drain before the deadline; the rest stays in the spool")
        }
    }
    http_stop.cancel();
    refresher.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    tracing::info!("stopping: finishing sends in flight");
    outbound_stop.cancel();
    if tokio::time::timeout(grace, sender_task).await.is_err() {
        tracing::warn!("sends still in flight at the deadline; they stay queued and are retried");
    }
    if let Some(task) = wake_socket {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    heartbeat_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
    tracing::info!("postdesk stopped");
    match failed {
        Some(name) => Err(DaemonError::TaskEnded(name)),
        None => Ok(()),
    }
}

/// What a reload from `old` to `new` does not do, for the log: sections only
/// a restart applies, compared with what the daemon `started` with (the
/// store, the SMTP listener and its limits and TLS, the HTTP address,
/// logging — CLI commands read the file and use the new values at once), and
/// channels whose changed `enabled` a runtime override outweighs.
/// What a SIGHUP did, for monitoring: `systemctl reload` only sends the
/// signal and reports success whatever the daemon made of it (as
/// Prometheus' own `prometheus_config_last_reload_successful`).
fn reload_outcome(ok: bool) {
    metrics::gauge!("postdesk_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        metrics::gauge!("postdesk_config_last_reload_success_timestamp_seconds").set(now);
    }
}

/// The `[http]` settings the listeners take at start (a reload keeps them).
fn http_listeners(h: &crate::config::HttpConfig) -> impl PartialEq + use<> {
    (
        h.metrics_listen,
        h.header_timeout_secs,
        h.max_connections,
        h.max_connections_per_ip,
    )
}

/// The `[smtp]` settings a reload does not change: all but what ingest
/// reads from the live configuration (the trusted relays and their id).
fn smtp_at_start(s: &crate::config::SmtpConfig) -> crate::config::SmtpConfig {
    crate::config::SmtpConfig {
        trusted_relays: Vec::new(),
        authserv_id: None,
        ..s.clone()
    }
}

fn reload_warnings(started: &Config, old: &Config, new: &Config, live: &Live) -> Vec<String> {
    let mut out = Vec::new();
    let restart = [
        ("[store]", started.store != new.store),
        // Ingest reads the trusted relays from the live configuration.
        (
            "[smtp]",
            smtp_at_start(&started.smtp) != smtp_at_start(&new.smtp),
        ),
        ("http.listen", started.http.listen != new.http.listen),
        (
            "http's listeners (metrics_listen, header_timeout_secs, max_connections, max_connections_per_ip)",
            http_listeners(&started.http) != http_listeners(&new.http),
        ),
        ("[log]", started.log != new.log),
    ];
    for (what, changed) in restart {
        if changed {
            out.push(format!(
                "{what} differs from what the daemon started with: it keeps those values until it is restarted"
            ));
        }
    }
    for ch in &new.channels {
        let was = old.channel(&ch.id).map(|c| c.enabled);
        if let (Some(was), Some(set)) = (was, live.channel_override(&ch.id))
            && was != ch.enabled
            && set != ch.enabled
        {
            let cmd = if ch.enabled { "enable" } else { "disable" };
            out.push(format!(
                "channel {}: the file now says enabled = {}, but `postdesk channels` set it {} at run time, which wins; run `postdesk channels {cmd} {}`",
                ch.id,
                ch.enabled,
                if set { "enabled" } else { "disabled" },
                ch.id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("/etc/postdesk/postdesk.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const CHANNEL: &str =
        "[[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n";

    /// A reload names what it cannot apply, and a channel whose new
    /// `enabled` a runtime override outweighs; a plain reload says nothing.
    #[test]
    fn a_reload_says_what_it_does_not_apply() {
        let old = config(&format!("[store]\npath = \"a.sqlite\"\n{CHANNEL}"));
        let live = Live::new(old.clone());
        assert!(reload_warnings(&old, &old, &old, &live).is_empty());

        let moved = config(&format!(
            "[store]\npath = \"b.sqlite\"\n[smtp]\nmax_recipients = 5\n{CHANNEL}"
        ));
        let w = reload_warnings(&old, &old, &moved, &live);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("[store] differs") && w[1].starts_with("[smtp] differs"),
            "{w:?}"
        );
        // Reloaded again unchanged: still not what it runs with.
        assert_eq!(reload_warnings(&old, &moved, &moved, &live).len(), 2);
        let relays = config(&format!(
            "[store]\npath = \"a.sqlite\"\n[smtp]\ntrusted_relays = [\"10.0.0.1\"]\nauthserv_id = \"mx\"\n{CHANNEL}"
        ));
        assert!(
            reload_warnings(&old, &old, &relays, &live).is_empty(),
            "trusted relays apply at once"
        );
        // Back to what it started with: nothing to say.
        assert!(reload_warnings(&old, &moved, &old, &live).is_empty());

        let off = config(&format!(
            "[store]\npath = \"a.sqlite\"\n{CHANNEL}enabled = false\n"
        ));
        assert!(
            reload_warnings(&old, &old, &off, &live).is_empty(),
            "no override: the file wins"
        );
        live.set_channel_enabled("support", true);
        let w = reload_warnings(&old, &old, &off, &live);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("postdesk channels disable support"), "{w:?}");
    }
}
