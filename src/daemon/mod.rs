//! The daemon: open the store, bind the listeners, run SMTP, ingest, pull,
//! the sender and HTTP until told to stop, reload configuration on request.
//!
//! [`run`] reads as its three steps, one file each: [`start`] (open the
//! store, spawn every task), [`supervise`] (readiness, health of the tasks,
//! watchdog, SIGHUP reloads) and [`shutdown`] (the ordered stop). This file
//! owns the daemon's errors, the listeners bound before it starts, and
//! opening or probing the configured store (also used by the CLI). It must
//! not hold the daemon's logic itself: that is the wiring of the layers
//! below, which do the work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::StoreKind;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};

mod shutdown;
mod start;
mod supervise;

pub use start::SmtpSpool;

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

/// Tell systemd (when it is listening) the daemon's state; a failure is only
/// logged.
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
    let daemon = start::start(config, bound, metrics, &shutdown).await?;
    let failed = supervise::supervise(&daemon, &shutdown, &reload).await;
    shutdown::shut_down(daemon).await;
    match failed {
        Some(name) => Err(DaemonError::TaskEnded(name)),
        None => Ok(()),
    }
}
