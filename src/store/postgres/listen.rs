//! Change notifications between the nodes sharing a database: PostgreSQL's
//! `LISTEN`/`NOTIFY`.
//!
//! A write that other nodes should hear of at once sends `NOTIFY` inside
//! its own transaction ([`notify`]): PostgreSQL delivers it at `COMMIT` and
//! drops it with a rollback (of the transaction or of the write's
//! savepoint), so a listener never hears of a change it cannot yet read.
//! Two topics: [`STATE`] (a channel enabled or disabled, a user's
//! availability) and [`OUTBOX`] (a reply or notice queued, the outbox
//! flushed — by another node's API or by the CLI).
//!
//! Each node holds one connection outside the pool that listens to both
//! ([`Listener`], started the first time [`Store::changes`] is asked for:
//! the CLI never opens it) and passes them on as [`Change`]s. Notifications
//! sent while it is not connected are lost, so after every (re)connection it
//! reports both kinds once; until it is back, subscribers rely on their
//! polling.
//!
//! Must not: carry data in a notification (its payload is empty: a
//! subscriber reads what changed from the store), or fail a write because
//! nobody listens.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::sql::{Db, exec};
use super::tls::Connector;
use super::{StoreError, pg_err};
use crate::store::Change;

/// The topic of runtime overrides.
pub(crate) const STATE: &str = "postdesk_state";
/// The topic of the outbox.
pub(crate) const OUTBOX: &str = "postdesk_outbox";

/// Longest wait between two attempts to reconnect the listening connection.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Send `topic` to every listening node when the current transaction commits.
pub(crate) async fn notify(db: &Db, topic: &'static str) -> Result<(), StoreError> {
    exec(db, "SELECT pg_notify($1, '')", &[&topic]).await?;
    Ok(())
}

fn change_of(topic: &str) -> Option<Change> {
    match topic {
        STATE => Some(Change::State),
        OUTBOX => Some(Change::Outbox),
        _ => None,
    }
}

/// The listening connection's task; stopped when dropped.
pub(crate) struct Listener {
    sender: broadcast::Sender<Change>,
    stop: CancellationToken,
}

impl Listener {
    /// Start listening on a connection of its own (reconnected with backoff).
    pub(crate) fn start(config: tokio_postgres::Config, connector: Connector) -> Self {
        let (sender, _) = broadcast::channel(64);
        let stop = CancellationToken::new();
        tokio::spawn(run(config, connector, sender.clone(), stop.clone()));
        Listener { sender, stop }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    config: tokio_postgres::Config,
    connector: Connector,
    sender: broadcast::Sender<Change>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match listen(&config, &connector, &sender, &stop).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                error = %e,
                "store change notifications interrupted; polling until the listening connection is back"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Listen on one connection until it fails (`Err`) or the store is
/// dropped (`Ok`).
async fn listen(
    config: &tokio_postgres::Config,
    connector: &Connector,
    sender: &broadcast::Sender<Change>,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(connector.clone()).await.map_err(pg_err)?;
    // The connection's messages (notifications among them) arrive only
    // while it is polled: a task of its own polls it and hands them over.
    let (topics, mut heard) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if topics.send(n.channel().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let listening = client
        .batch_execute(&format!("LISTEN {STATE}; LISTEN {OUTBOX}"))
        .await;
    if let Err(e) = listening {
        driver.abort();
        return Err(pg_err(e));
    }
    tracing::debug!("listening for store changes");
    // What was sent while nobody listened is lost: everything may have changed.
    let _ = sender.send(Change::State);
    let _ = sender.send(Change::Outbox);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                driver.abort();
                return Ok(());
            }
            topic = heard.recv() => match topic {
                Some(topic) => {
                    if let Some(change) = change_of(&topic) {
                        let _ = sender.send(change);
                    }
                }
                None => {
                    return Err(match driver.await {
                        Ok(Err(e)) => pg_err(e),
                        _ => StoreError::Backend(
                            "postgres: the listening connection closed".into(),
                        ),
                    });
                }
            }
        }
    }
}
