//! Alerts when a mailbox stops: its OAuth grant refused (a revoked or
//! expired refresh token, a client secret gone) or its sessions failing for
//! longer than `[alerts] alert_after_secs`. Either opens an incident — one
//! open per channel, kept in the store so a restart neither forgets nor
//! repeats it — shown first by `postdesk status`, counted in
//! `postdesk_mailbox_alerts_total{channel,reason}`, flagged by
//! `postdesk_mailbox_alert{channel}`, and emailed once to `[alerts] to`
//! through `outbound::notify`. A round that works resolves it.
//!
//! Must not: send more than one email per incident (a queued email is
//! recorded on the incident), count the mailbox's own download budget as a
//! failure (that is pacing, not a stop), or stop pulling when an alert
//! cannot be recorded or sent (logged only).
//! Untrusted input: the error texts (servers' and the token endpoint's),
//! quoted in the email as text.

use std::time::{Duration, Instant};

use crate::config::ChannelConfig;
use crate::outbound::notify::{Notice, NotifyError};
use crate::store::NewAlert;

use super::PullError;
use super::mailbox::Puller;

/// Why an incident was opened.
fn reason_text(reason: &str, after: Duration) -> String {
    match reason {
        "needs_reauth" => "its OAuth grant was refused (the refresh token revoked or expired, or the client secret no longer valid). Only a person can fix it: write a new refresh token (or client secret) to the file named in [channels.oauth]; postdesk tries again as soon as the file changes.".to_string(),
        _ => format!(
            "pulling it has failed for more than {} s (it keeps retrying with back-off).",
            after.as_secs()
        ),
    }
}

impl Puller {
    /// A session failed with `e`: an incident if the grant was refused, or
    /// if the mailbox has been failing for longer than `alert_after_secs`.
    pub(super) async fn failed(&mut self, ch: &ChannelConfig, e: &PullError) {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let after = Duration::from_secs(self.live.config().alerts.alert_after_secs.max(1));
        let reason = if e.needs_reauth() {
            "needs_reauth"
        } else if since.elapsed() >= after {
            "failing"
        } else {
            return;
        };
        self.alert(ch, reason, &e.to_string(), after).await;
    }

    /// A round worked: the mailbox is not failing, and an open incident
    /// (this run's, or one left by an earlier run) is resolved.
    pub(super) async fn works(&mut self, ch: &ChannelConfig) {
        let failed = self.failing_since.take().is_some();
        if !failed && self.alert_open == Some(false) {
            return;
        }
        match self.store.resolve_alert(ch.id.clone()).await {
            Ok(resolved) => {
                if resolved {
                    tracing::info!(channel = %ch.id, "mailbox works again; its alert is resolved");
                }
                metrics::gauge!("postdesk_mailbox_alert", "channel" => ch.id.clone()).set(0.0);
                self.alert_open = Some(false);
                self.alert_sent = false;
            }
            Err(e) => {
                tracing::warn!(channel = %ch.id, error = %e, "cannot resolve the mailbox alert")
            }
        }
    }

    /// Open (or find) the incident and email it, once.
    async fn alert(&mut self, ch: &ChannelConfig, reason: &str, detail: &str, after: Duration) {
        if self.alert_sent {
            return;
        }
        let (incident, new) = match self
            .store
            .open_alert(NewAlert {
                channel: ch.id.clone(),
                reason: reason.to_string(),
                detail: Some(detail.to_string()),
            })
            .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(channel = %ch.id, error = %e, "cannot record the mailbox alert");
                return;
            }
        };
        self.alert_open = Some(true);
        metrics::gauge!("postdesk_mailbox_alert", "channel" => ch.id.clone()).set(1.0);
        if new {
            metrics::counter!("postdesk_mailbox_alerts_total", "channel" => ch.id.clone(), "reason" => reason.to_string())
                .increment(1);
            tracing::error!(channel = %ch.id, reason, error = detail, "mailbox stopped: alert opened");
        }
        if incident.notified_at.is_some() {
            self.alert_sent = true;
            return;
        }
        let config = self.live.config();
        let (Some(notifier), false) = (&self.notifier, config.alerts.to.is_empty()) else {
            // Nobody to email: the metric and `status` carry it.
            self.alert_sent = true;
            return;
        };
        let opened = jiff::Timestamp::from_millisecond(incident.opened_at)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let address = ch.address.as_deref().unwrap_or("-");
        let notice = Notice {
            kind: "mailbox_alert".into(),
            to: config.alerts.to.clone(),
            subject: format!(
                "Mailbox {} ({address}) stopped: new mail is not arriving",
                ch.id
            ),
            text: format!(
                "The {kind} mailbox of channel `{id}` ({address}) is not being pulled: mail sent to it does not reach the help desk.\n\n\
                 Why: {why}\n\n\
                 Last error: {detail}\n\
                 Since: {opened}\n\n\
                 `postdesk status` shows it first. This is the only email about this incident; the next one comes only after the mailbox has worked again and stopped again.\n",
                kind = ch.kind.as_str(),
                id = ch.id,
                why = reason_text(&incident.reason, after),
            ),
        };
        match notifier.send(notice).await {
            Ok(_) => {
                self.alert_sent = true;
                if let Err(e) = self.store.alert_notified(incident.id).await {
                    tracing::warn!(channel = %ch.id, error = %e, "cannot record that the alert was emailed");
                }
            }
            Err(e @ (NotifyError::Off | NotifyError::Recipient(_) | NotifyError::Kind(_))) => {
                // Not going to work by trying again.
                self.alert_sent = true;
                tracing::warn!(channel = %ch.id, error = %e, "mailbox alert not emailed");
            }
            Err(e) => {
                tracing::warn!(channel = %ch.id, error = %e, "mailbox alert not emailed; tried again at the next failure")
            }
        }
    }
}
