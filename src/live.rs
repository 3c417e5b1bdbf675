//! Live state shared by the daemon's tasks: the current configuration (swapped
//! whole on SIGHUP) and the runtime overrides kept in the store (channels
//! enabled/disabled, users' availability), cached in memory so the SMTP hot
//! path never queries the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config, UserConfig};
use crate::store::{Change, Store, StoreError};

/// How often the overrides are read again whatever the store reports: all
/// there is on SQLite (the CLI, another process, changes them), the
/// fallback for a lost notification on PostgreSQL.
pub const STATE_POLL: Duration = Duration::from_secs(2);

/// The configuration and overrides in force right now.
pub struct Live {
    config: RwLock<Arc<Config>>,
    channel_enabled: RwLock<HashMap<String, bool>>,
    /// Manual availability per user: (available, when).
    user_available: RwLock<HashMap<String, (bool, jiff::Timestamp)>>,
    /// Bumped whenever what a channel does may have changed (configuration
    /// swapped, a channel enabled or disabled): pullers waiting in IDLE
    /// reconsider at once instead of at the next renewal.
    channels_changed: tokio::sync::watch::Sender<u64>,
    /// The store's notice key (`outbound::notify`), read once by `refresh`.
    notice_key: std::sync::OnceLock<Vec<u8>>,
}

impl Live {
    pub fn new(config: Config) -> Self {
        Live {
            config: RwLock::new(Arc::new(config)),
            channel_enabled: RwLock::new(HashMap::new()),
            user_available: RwLock::new(HashMap::new()),
            channels_changed: tokio::sync::watch::Sender::new(0),
            notice_key: std::sync::OnceLock::new(),
        }
    }

    /// A receiver that sees every later change to channels (see
    /// `channels_changed`).
    pub fn watch_channels(&self) -> tokio::sync::watch::Receiver<u64> {
        self.channels_changed.subscribe()
    }

    fn channels_changed(&self) {
        self.channels_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A snapshot of the current configuration.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swap in a new, already validated configuration.
    pub fn replace_config(&self, config: Config) {
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
        self.channels_changed();
    }

    /// The runtime override of a channel's `enabled` (`channels enable` /
    /// `disable`), if one was made.
    pub fn channel_override(&self, id: &str) -> Option<bool> {
        self.channel_enabled.read().ok()?.get(id).copied()
    }

    /// Whether a channel takes new mail now (runtime override, else config).
    pub fn channel_enabled(&self, channel: &ChannelConfig) -> bool {
        self.channel_enabled
            .read()
            .ok()
            .and_then(|m| m.get(&channel.id).copied())
            .unwrap_or(channel.enabled)
    }

    /// Whether a user counts as available now: with working hours, the
    /// schedule unless a manual change was made since its last switch;
    /// without, the last manual change, else the configured value.
    pub fn user_available(&self, user: &UserConfig) -> bool {
        self.user_available_at(user, jiff::Timestamp::now())
    }

    /// [`Live::user_available`] at a given instant.
    pub fn user_available_at(&self, user: &UserConfig, now: jiff::Timestamp) -> bool {
        let manual = self
            .user_available
            .read()
            .ok()
            .and_then(|m| m.get(&user.id).cloned());
        match &user.working_hours {
            Some(hours) => hours.available(now, manual),
            None => manual.map(|(v, _)| v).unwrap_or(user.available),
        }
    }

    /// Record a channel override made in this process (API).
    pub fn set_channel_enabled(&self, id: &str, enabled: bool) {
        let changed = match self.channel_enabled.write() {
            Ok(mut m) => m.insert(id.to_string(), enabled) != Some(enabled),
            Err(_) => false,
        };
        if changed {
            self.channels_changed();
        }
    }

    /// Record a user availability override made in this process (API).
    pub fn set_user_available(&self, id: &str, available: bool) {
        if let Ok(mut m) = self.user_available.write() {
            m.insert(id.to_string(), (available, jiff::Timestamp::now()));
        }
    }

    /// The store's notice key, once `refresh` has read it.
    pub fn notice_key(&self) -> Option<&[u8]> {
        self.notice_key.get().map(Vec::as_slice)
    }

    /// Reload the overrides from the store (they may be changed by the CLI,
    /// another process); read the notice key the first time.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        if self.notice_key.get().is_none() {
            let key = store.notice_key().await?;
            let _ = self.notice_key.set(key.into_bytes());
        }
        // Both reads at once: this runs before every ingest batch.
        let (channels, users) = tokio::join!(store.channel_overrides(), store.user_overrides());
        let channels: HashMap<_, _> = channels?.into_iter().collect();
        let users: HashMap<_, _> = users?
            .into_iter()
            .map(|o| {
                let at =
                    jiff::Timestamp::from_millisecond(o.at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                (o.id, (o.available, at))
            })
            .collect();
        let changed = match self.channel_enabled.write() {
            Ok(mut m) if *m != channels => {
                *m = channels;
                true
            }
            _ => false,
        };
        if changed {
            self.channels_changed();
        }
        if let Ok(mut m) = self.user_available.write() {
            *m = users;
        }
        Ok(())
    }
}

impl Live {
    /// Until `stop`: keep the overrides current and wake the sender
    /// (`sender`) for replies queued elsewhere — at once for each change the
    /// store reports ([`Store::changes`]: on PostgreSQL, other nodes' and
    /// the CLI's writes), and every [`STATE_POLL`] in any case.
    pub async fn follow(&self, store: &dyn Store, sender: &Notify, stop: &CancellationToken) {
        let mut changes = store.changes();
        // The daemon has just read the overrides: the first poll is due later.
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + STATE_POLL, STATE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (state, outbox) = tokio::select! {
                _ = stop.cancelled() => return,
                _ = poll.tick() => (true, false),
                heard = next_change(&mut changes) => match heard {
                    Ok(Change::State) => (true, false),
                    Ok(Change::Outbox) => (false, true),
                    // Changes were missed: any of them may have happened.
                    Err(RecvError::Lagged(_)) => (true, true),
                    Err(RecvError::Closed) => {
                        changes = None;
                        continue;
                    }
                },
            };
            if outbox {
                sender.notify_one();
            }
            if state && let Err(e) = self.refresh(store).await {
                tracing::debug!(error = %e, "override refresh failed");
            }
        }
    }
}

/// The next change reported, or never when the store reports none.
async fn next_change(changes: &mut Option<Receiver<Change>>) -> Result<Change, RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pullers_hear_of_channel_changes_only() {
        let cfg = match crate::config::parse(
            "[company]\nname = \"Acme\"\n",
            std::path::Path::new("t.toml"),
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let live = Live::new(cfg.clone());
        let mut rx = live.watch_channels();
        rx.borrow_and_update();
        live.set_user_available("ann", false);
        assert!(
            !rx.has_changed().unwrap_or(true),
            "availability is not a channel change"
        );
        live.set_channel_enabled("support", false);
        assert!(rx.has_changed().unwrap_or(false));
        rx.borrow_and_update();
        live.set_channel_enabled("support", false);
        assert!(
            !rx.has_changed().unwrap_or(true),
            "the same state again is no change"
        );
        live.replace_config(cfg);
        assert!(
            rx.has_changed().unwrap_or(false),
            "a new configuration may change channels"
        );
    }
}
