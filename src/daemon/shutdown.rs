//! Stopping the daemon in order, after a SIGTERM or a core task's failure.
//!
//! `/readyz` turns 503 and systemd hears STOPPING; the SMTP listeners stop
//! accepting and idle sessions get `421`, sessions in DATA finish up to
//! `smtp.shutdown_grace_secs`, and mailbox pullers commit the batch in hand
//! and log out (same deadline); then ingest drains the spool (bounded by the
//! same grace); then HTTP stops; then the outbound sender finishes the sends
//! in flight (same grace); last the node leaves the registry. Whatever ingest
//! did not finish stays in the durable spool, and unsent replies in the
//! outbox, for the next start. It must not wait without a deadline, nor
//! decide whether the daemon failed: [`super::run`] does.

use std::time::Duration;

use super::notify;
use super::start::{Daemon, Task};

/// Stop every task of `daemon`, in order, each within its deadline.
pub(super) async fn shut_down(daemon: Daemon) {
    let (grace, tasks) = (daemon.grace, daemon.tasks);
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: closing smtp listeners");
    stop_intake(tasks.smtp, tasks.pull, grace).await;
    tracing::info!("stopping: draining ingest");
    drain_ingest(tasks.ingest, grace).await;
    tasks.http.stop.cancel();
    tasks.refresher.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.http.handle).await;
    tracing::info!("stopping: finishing sends in flight");
    tasks.sender.stop.cancel();
    if tokio::time::timeout(grace, tasks.sender.handle)
        .await
        .is_err()
    {
        tracing::warn!("sends still in flight at the deadline; they stay queued and are retried");
    }
    if let Some(task) = tasks.wake_socket {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tasks.heartbeat.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.heartbeat.handle).await;
    tracing::info!("postdesk stopped");
}

/// Stop taking mail in: the SMTP listeners and the mailbox pullers, within
/// the grace period.
async fn stop_intake(smtp: Task<()>, pull: Task<()>, grace: Duration) {
    smtp.stop.cancel();
    pull.stop.cancel();
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
    // The listener lets sessions in DATA finish within the grace period, then
    // aborts the rest itself and gives them ABORT_MARGIN to unwind: wait for
    // that. Aborting it sooner could cut a session whose message is being
    // committed — stored, but never answered 250, so sent again.
    let smtp_deadline = deadline + crate::smtp::ABORT_MARGIN;
    let smtp_done = async {
        let mut smtp_task = smtp.handle;
        if tokio::time::timeout_at(smtp_deadline, &mut smtp_task)
            .await
            .is_err()
        {
            tracing::warn!("smtp listener still busy past its own deadline; aborting it");
            smtp_task.abort();
        }
    };
    let pull_done = async {
        if tokio::time::timeout_at(deadline, pull.handle)
            .await
            .is_err()
        {
            tracing::warn!(
                "mailbox pullers still busy at the deadline; uncommitted batches are fetched again next start"
            );
        }
    };
    tokio::join!(smtp_done, pull_done);
}

/// Let ingest drain the spool within the grace period; the rest stays in
/// the spool for the next start.
async fn drain_ingest(ingest: Task<()>, grace: Duration) {
    ingest.stop.cancel();
    let ingest_deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(ingest_deadline, ingest.handle).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ingest failed; what it did not finish stays in the spool")
        }
        Err(_) => {
            tracing::warn!("ingest did not drain before the deadline; the rest stays in the spool")
        }
    }
}
