//! Supervising the started daemon until shutdown: announce readiness to
//! systemd, check every second that no core task has ended (one that did has
//! failed: the daemon stops and exits non-zero), ping the watchdog, and apply
//! a SIGHUP's reload, logging what a reload cannot apply
//! ([`reload_warnings`]). It must not start or stop a task: a failed task
//! only cancels the daemon's `shutdown` token, and [`super::shutdown`] does
//! the rest.

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::notify;
use super::start::{Daemon, Tasks};
use crate::config::Config;
use crate::live::Live;

/// Announce readiness and supervise until `shutdown` is cancelled; the name
/// of the core task that ended, if that is why it stopped.
pub(super) async fn supervise(
    daemon: &Daemon,
    shutdown: &CancellationToken,
    reload: &Notify,
) -> Option<&'static str> {
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("postdesk ready");
    reload_outcome(true);
    let watchdog = sd_notify::watchdog_enabled();
    let ping = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600));
    // Intervals, not a sleep per loop pass: another branch firing (the
    // health check every second) must not restart the ping's clock.
    let mut ping = tokio::time::interval(ping);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    // What the store, listeners and logging run with until a restart.
    let started = daemon.live.config();

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = health.tick() => {
                if let Some(name) = ended_task(&daemon.tasks) {
                    tracing::error!(task = name, "a core task ended unexpectedly; stopping (no more watchdog pings)");
                    // /readyz answers 503 from now on, as for a SIGTERM.
                    shutdown.cancel();
                    return Some(name);
                }
            }
            _ = reload.notified() => apply_reload(daemon, &started).await,
            _ = ping.tick() => {
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
}

/// The first core task that has ended. Each runs until told to stop: one
/// that ended has failed.
fn ended_task(tasks: &Tasks) -> Option<&'static str> {
    [
        ("smtp", tasks.smtp.handle.is_finished()),
        ("ingest", tasks.ingest.handle.is_finished()),
        ("pull", tasks.pull.handle.is_finished()),
        ("sender", tasks.sender.handle.is_finished()),
        ("http", tasks.http.handle.is_finished()),
    ]
    .into_iter()
    .find_map(|(name, done)| done.then_some(name))
}

/// SIGHUP: re-read the configuration file and swap it in, or keep the old
/// one if the new one does not pass `check`.
async fn apply_reload(daemon: &Daemon, started: &Config) {
    let (live, config_path) = (&daemon.live, &daemon.config_path);
    notify(&[sd_notify::NotifyState::Reloading]);
    // The overrides as the store has them now (a `channels enable` a moment
    // ago included): what the conflict warnings compare the new file against.
    if let Err(e) = live.refresh(daemon.store.as_ref()).await {
        tracing::warn!(error = %e, "could not read run-time overrides before the reload");
    }
    match crate::config::load(config_path) {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            for w in reload_warnings(started, &live.config(), &new, live) {
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

/// What a reload from `old` to `new` does not do, for the log: sections only
/// a restart applies, compared with what the daemon `started` with (the
/// store, the SMTP listener and its limits and TLS, the HTTP address,
/// logging — CLI commands read the file and use the new values at once), and
/// channels whose changed `enabled` a runtime override outweighs.
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
