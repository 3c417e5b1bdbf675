//! Accept loop: connection caps (total via a semaphore, per client IP via `limits`),
//! one task per session, limiter pruning, and graceful shutdown.
//!
//! All of `[smtp] listen`'s sockets are served by one loop with one set of
//! limits: `max_connections`, the per-IP caps and the message rate count a
//! client's connections on every address together.
//!
//! Must not: speak SMTP beyond the one-line `421` refusal of an over-cap connection
//! (written with `try_write`, never awaited), or stop listening because accept
//! fails (out of file descriptors, a connection reset before it was taken):
//! it backs off, at most [`MAX_BACKOFF`] between tries, and goes on.
//!
//! Limits: `max_connections`, `max_connections_per_ip`, `shutdown_grace_secs`.
//! Untrusted input: inbound connections and their peer addresses.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Spool;
use super::reply::{self, Reply};
use super::session::{self, Shared};
use crate::config::SmtpConfig;

/// Accept-error back-off doubles from 10 ms up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the per-IP rate limiter forgets idle clients.
const RETAIN_INTERVAL: Duration = Duration::from_secs(60);
/// After the grace period, how long aborted sessions get to unwind. The
/// daemon waits for the listener at least this long past the grace period.
pub const ABORT_MARGIN: Duration = Duration::from_secs(5);

/// Serve `listeners` until `shutdown` is cancelled. On cancel: stop accepting,
/// sessions not inside a message get `421 4.3.2` and close, sessions inside
/// a DATA or BDAT message (or its commit) may finish up to
/// shutdown_grace_secs; returns when all sessions ended.
pub async fn serve<S: Spool>(
    listeners: Vec<TcpListener>,
    cfg: Arc<SmtpConfig>,
    tls: Option<TlsAcceptor>,
    spool: Arc<S>,
    shutdown: CancellationToken,
) {
    if listeners.is_empty() {
        // No SMTP (a pull-only setup): nothing to serve until the end.
        shutdown.cancelled().await;
        return;
    }
    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    let slots = Arc::new(Semaphore::new(
        cfg.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    // A child token: a failing listener stops its own sessions, not the whole daemon.
    let stop = shutdown.child_token();
    let shared = Arc::new(Shared::new(cfg, spool, tls, stop.clone()));
    let mut sessions = JoinSet::new();
    let mut retain = tokio::time::interval(RETAIN_INTERVAL);
    let mut backoff = Duration::ZERO;

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "SMTP session task failed");
                }
            }
            _ = retain.tick() => shared.limits.retain_recent(),
            accepted = accept_any(&listeners) => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    let ip = peer.ip().to_canonical();
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        refuse(&stream, ip, reply::TOO_MANY_CONNECTIONS, "connections");
                        continue;
                    };
                    let Some(slot) = shared.limits.try_connect(ip) else {
                        refuse(&stream, ip, reply::TOO_MANY_CONNECTIONS_IP, "connections_per_ip");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let span = tracing::info_span!("smtp", client_ip = %ip);
                    sessions.spawn(
                        async move {
                            tracing::debug!("connected");
                            session::handle(stream, ip, shared).await;
                            tracing::debug!("disconnected");
                            drop((permit, slot));
                        }
                        .instrument(span),
                    );
                }
                Err(error) => {
                    // Out of file descriptors (EMFILE/ENFILE) or the like:
                    // the sessions that end free them. Never stop listening.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            },
        }
    }

    drop(listeners);
    stop.cancel();
    tracing::info!(sessions = sessions.len(), "SMTP listener draining");
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(grace + ABORT_MARGIN, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = sessions.len(),
            "aborting SMTP sessions after grace period"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
    tracing::info!("SMTP listener stopped");
}

/// The next connection on any of `listeners` (not empty). `accept` is
/// cancel-safe: the futures of the listeners that did not win are dropped.
async fn accept_any(
    listeners: &[TcpListener],
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    if let [one] = listeners {
        return one.accept().await;
    }
    let all = listeners.iter().map(|l| Box::pin(l.accept()));
    futures_util::future::select_all(all).await.0
}

/// Best-effort one-line refusal; never waits on the client.
fn refuse(stream: &TcpStream, ip: std::net::IpAddr, reply: Reply, reason: &'static str) {
    tracing::info!(client_ip = %ip, reason, "connection refused");
    super::rejected(reason);
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = stream.try_write(&out);
}
