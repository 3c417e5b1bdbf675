//! `postdesk run`: the daemon — metrics recorder, listeners bound, then
//! [`crate::daemon::run`] until SIGTERM or SIGINT; SIGHUP reloads.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon;

pub(super) async fn run_daemon(config: Config) -> Result<()> {
    let metrics = crate::api::metric_help::exporter()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    crate::api::metric_help::describe();
    let bound = daemon::Bound::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    spawn_signals(shutdown.clone(), reload.clone())?;
    daemon::run(config, bound, metrics, shutdown, reload).await?;
    Ok(())
}

fn spawn_signals(shutdown: CancellationToken, reload: Arc<Notify>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading configuration"); reload.notify_one(); }
            }
        }
    });
    Ok(())
}
