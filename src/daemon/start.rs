//! Starting the daemon: open the store, read the run-time overrides, and
//! spawn every task on the listeners already bound — the node heartbeat,
//! SMTP, ingest, the mailbox pullers, the outbound sender and its wake-up
//! socket, HTTP, and the refresher of run-time overrides. It owns the SMTP
//! listener's view of the spool ([`SmtpSpool`]). It must not wait on a task
//! or decide when one stops: that is [`super::supervise`]'s and
//! [`super::shutdown`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Bound, DaemonError, open_store};
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::ingest::handoff::Handoff;
use crate::live::Live;
use crate::smtp::{Envelope, RcptCheck, Spool, SpoolError};
use crate::store::{NewSpool, SpoolSource, Store, StoreError};

/// A started task and the token that tells it to stop.
pub(super) struct Task<T> {
    pub handle: JoinHandle<T>,
    pub stop: CancellationToken,
}

/// Spawn `run` with a fresh stop token.
fn spawn<F: Future<Output = T> + Send + 'static, T: Send + 'static>(
    run: impl FnOnce(CancellationToken) -> F,
) -> Task<T> {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(stop.clone()));
    Task { handle, stop }
}

/// Every task the daemon started, handed from [`start`] to supervision and
/// then to the shutdown, which stops them in its order.
pub(super) struct Tasks {
    pub smtp: Task<()>,
    pub ingest: Task<()>,
    pub pull: Task<()>,
    pub sender: Task<()>,
    /// The wake-up socket of the sender for the CLI; stops with the
    /// sender's token.
    pub wake_socket: Option<JoinHandle<()>>,
    pub http: Task<std::io::Result<()>>,
    /// Runs until the daemon's `shutdown` token; aborted after HTTP stops.
    pub refresher: JoinHandle<()>,
    pub heartbeat: Task<()>,
}

/// The started daemon.
pub(super) struct Daemon {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    /// The file a SIGHUP re-reads.
    pub config_path: PathBuf,
    /// `smtp.shutdown_grace_secs` as started (a reload keeps it).
    pub grace: Duration,
    pub tasks: Tasks,
}

/// Open the store and start every task. `shutdown` is the daemon's own
/// token: the API's readiness and the override refresher watch it.
pub(super) async fn start(
    config: Config,
    bound: Bound,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: &CancellationToken,
) -> Result<Daemon, DaemonError> {
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
    let heartbeat = spawn_heartbeat(store.clone(), &live.config(), &bound);
    let handoff = Arc::new(Handoff::default());
    let spool = Arc::new(SmtpSpool {
        store: store.clone(),
        live: live.clone(),
        wake: wake.clone(),
        handoff: handoff.clone(),
    });
    let smtp = spawn_smtp(bound.smtp, smtp_cfg, tls, spool);
    let ingest = spawn_ingest(&store, &live, &wake, handoff);
    let (pull, sender, wake_socket, outbound) = spawn_pull_and_sender(&store, &live, &wake);
    let sender_wake = outbound.wake.clone();
    let app = crate::api::AppState {
        store: store.clone(),
        live: live.clone(),
        outbound,
        metrics,
        stopping: shutdown.clone(),
        sends: Default::default(),
    };
    let http = spawn_http(bound.http, bound.metrics, app);
    let refresher = spawn_refresher(store.clone(), live.clone(), sender_wake, shutdown.clone());
    let tasks = Tasks {
        smtp,
        ingest,
        pull,
        sender,
        wake_socket,
        http,
        refresher,
        heartbeat,
    };
    Ok(Daemon {
        store,
        live,
        config_path,
        grace,
        tasks,
    })
}

/// One SMTP loop for every address: the connection and rate limits are the
/// daemon's, not each address's.
fn spawn_smtp(
    listeners: Vec<TcpListener>,
    cfg: Arc<crate::config::SmtpConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    spool: Arc<SmtpSpool>,
) -> Task<()> {
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "smtp listening");
        }
    }
    spawn(|stop| crate::smtp::serve(listeners, cfg, tls, spool, stop))
}

/// Ingest: from the spool (woken by SMTP and the pullers) to tickets.
fn spawn_ingest(
    store: &Arc<dyn Store>,
    live: &Arc<Live>,
    wake: &Arc<Notify>,
    handoff: Arc<Handoff>,
) -> Task<()> {
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
    spawn(|stop| ingestor.run(stop))
}

/// The mailbox pullers and the outbound sender, with the sender's wake-up
/// socket, and the outbound handle the API queues replies through.
fn spawn_pull_and_sender(
    store: &Arc<dyn Store>,
    live: &Arc<Live>,
    wake: &Arc<Notify>,
) -> (
    Task<()>,
    Task<()>,
    Option<JoinHandle<()>>,
    crate::outbound::Outbound,
) {
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
    let puller = crate::pull::Supervisor {
        store: store.clone(),
        live: live.clone(),
        wake: wake.clone(),
        tokens: tokens.clone(),
        notifier: Some(outbound.notifier()),
    };
    let pull = spawn(|stop| puller.run(stop));
    let sender = crate::outbound::sender::Sender {
        store: store.clone(),
        live: live.clone(),
        wake: out_wake,
        tokens: Some(Arc::new(crate::oauth::ChannelTokens {
            tokens,
            live: live.clone(),
        })),
    };
    let sender = Task {
        handle: tokio::spawn(sender.run(outbound_stop.clone())),
        stop: outbound_stop,
    };
    (pull, sender, wake_socket, outbound)
}

/// The API and the web inbox on the HTTP listener, `/metrics` on its own
/// when `[http] metrics_listen` is set.
fn spawn_http(
    http: TcpListener,
    metrics: Option<TcpListener>,
    app: crate::api::AppState,
) -> Task<std::io::Result<()>> {
    if let Ok(addr) = http.local_addr() {
        tracing::info!(%addr, "http listening");
    }
    if let Some(Ok(addr)) = metrics.as_ref().map(|l| l.local_addr()) {
        tracing::info!(%addr, "metrics listening");
    }
    let pages = crate::web::router(app.clone());
    spawn(|stop| crate::api::serve(http, metrics, app, pages, stop))
}

/// Until `stop`: overrides changed by the CLI (another process) or another
/// node are read again, and replies they queued wake the sender
/// (`sender_wake`) — at each change the store reports, and every two seconds
/// ([`Live::follow`]).
fn spawn_refresher(
    store: Arc<dyn Store>,
    live: Arc<Live>,
    sender_wake: Arc<Notify>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move { live.follow(store.as_ref(), &sender_wake, &stop).await })
}

/// Register this node in the store's node registry and renew its heartbeat
/// every third of `lease_secs` until `stop`; then leave the registry. A
/// SQLite store keeps no registry: the task ends at once.
fn spawn_heartbeat(store: Arc<dyn Store>, config: &Config, bound: &Bound) -> Task<()> {
    let stop = CancellationToken::new();
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
    let token = stop.clone();
    let handle = tokio::spawn(async move {
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
    });
    Task {
        handle,
        stop: token,
    }
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
