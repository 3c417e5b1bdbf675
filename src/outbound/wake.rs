//! Waking a running daemon's sender from another process: a reply the CLI
//! queues (`postdesk reply`, `compose`, `outbox flush`) goes out at once,
//! as one the API queues does (an in-process [`Notify`]), instead of at the
//! sender's next look at the outbox (`[outbound] poll_secs`).
//!
//! The daemon binds a Unix datagram socket next to its SQLite store,
//! `<store path>.wake`, with the store file's permission bits: whoever may
//! write the store may wake the sender, no one else (authenticated by the
//! filesystem). Any datagram is a wake-up and its content is ignored; a
//! wake-up only makes the sender read the outbox now, and wake-ups pending
//! together are one, so the socket gives nothing away and a flood costs
//! only outbox reads.
//!
//! A socket file left by a daemon that died (nobody receives on it) is
//! replaced at the next start; one another live daemon receives on is left
//! to it (this one logs a warning and relies on its poll). A PostgreSQL
//! store has no socket: a reply queued there sends a notification every
//! node hears (`store/postgres/listen.rs`, passed on by `Live::follow`).
//!
//! Must not: fail a command or the daemon — without the socket (a path
//! longer than the kernel's 107 bytes, a read-only directory) replies still
//! go out at the next poll; the CLI's wake-up is one non-blocking datagram.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreKind};

/// The wake-up socket of the daemon running on `config`'s store: `None`
/// for a PostgreSQL store.
pub fn socket_path(config: &Config) -> Option<PathBuf> {
    if config.store.kind != StoreKind::Sqlite {
        return None;
    }
    let mut path = config.store.path.clone().into_os_string();
    path.push(".wake");
    Some(PathBuf::from(path))
}

/// Wake the sender of a daemon running on `config`'s store, if one
/// listens. True when a daemon's socket took the datagram; false when there
/// is none (no daemon, another host's, a PostgreSQL store): its poll finds
/// the reply then.
pub fn wake_daemon(config: &Config) -> bool {
    let Some(path) = socket_path(config) else {
        return false;
    };
    match send(&path) {
        Ok(()) => {
            tracing::debug!(socket = %path.display(), "daemon's sender woken");
            true
        }
        Err(e) => {
            tracing::debug!(socket = %path.display(), error = %e, "no daemon woken; its poll finds the reply");
            false
        }
    }
}

fn send(path: &Path) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.send_to(b"wake", path).map(|_| ())
}

/// Bind `config`'s wake-up socket and notify `wake` on every datagram
/// until `stop`; then remove the socket. `None` when there is no socket to
/// bind (a PostgreSQL store, another daemon's, an error: logged).
pub fn listen(
    config: &Config,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = socket_path(config)?;
    let socket = match bind(&path, &config.store.path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::warn!(socket = %path.display(), "another daemon receives on this store's wake-up socket; replies from the command line wait for the poll");
            return None;
        }
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "no wake-up socket; replies from the command line wait for the poll");
            return None;
        }
    };
    tracing::info!(socket = %path.display(), "wake-up socket listening");
    Some(tokio::spawn(async move {
        let mut buf = [0u8; 16];
        loop {
            tokio::select! {
                r = socket.recv(&mut buf) => match r {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up socket failed; replies from the command line wait for the poll");
                        break;
                    }
                },
                _ = stop.cancelled() => break,
            }
        }
        drop(socket);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!(socket = %path.display(), error = %e, "wake-up socket not removed");
        }
    }))
}

/// Bind at `path` (replacing a dead daemon's socket), with the permission
/// bits of the store file. `Ok(None)`: a live daemon receives there.
fn bind(path: &Path, store: &Path) -> std::io::Result<Option<tokio::net::UnixDatagram>> {
    if std::fs::symlink_metadata(path).is_ok() {
        if send(path).is_ok() {
            return Ok(None);
        }
        std::fs::remove_file(path)?;
    }
    let socket = tokio::net::UnixDatagram::bind(path)?;
    let mode = std::fs::metadata(store).map_or(0o600, |m| m.permissions().mode() & 0o666);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(Some(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let text = format!("[store]\npath = {:?}\n", dir.join("desk.sqlite"));
        crate::config::parse(&text, &dir.join("postdesk.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A datagram to the socket wakes the listener; a dead daemon's socket
    /// file is replaced; the socket goes at stop, after which nobody is woken.
    #[tokio::test]
    async fn the_cli_wakes_the_daemon_through_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        std::fs::write(&config.store.path, b"").expect("store file");
        let path = socket_path(&config).expect("sqlite has a socket");
        assert!(!wake_daemon(&config), "nobody listens yet");
        // A socket file nobody receives on, as a daemon killed leaves it.
        drop(std::os::unix::net::UnixDatagram::bind(&path).expect("stale"));
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = listen(&config, wake.clone(), stop.clone()).expect("bound");
        let woken = wake.notified();
        assert!(wake_daemon(&config));
        tokio::time::timeout(std::time::Duration::from_secs(30), woken)
            .await
            .expect("woken");
        // A second daemon on the same store leaves the socket to the first.
        assert!(listen(&config, Arc::new(Notify::new()), stop.clone()).is_none());
        stop.cancel();
        task.await.expect("listener");
        assert!(!path.exists(), "socket removed at stop");
        assert!(!wake_daemon(&config));
    }
}
