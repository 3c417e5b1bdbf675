//! One connection of a puller: log in (LOGIN or XOAUTH2), read the
//! server's capabilities, select the folder and settle the checkpoint
//! against its UIDVALIDITY (a new one: reset to 0, the first round a
//! resync), then rounds of catch-up, the leftover move and a wait — IDLE,
//! renewed at least every [`IDLE_RENEW_MAX`], or polling — until shutdown,
//! a change of the channel's configuration, or an error.
//!
//! Must not: fetch or commit (`catch_up` does), move (`moves` does), pick a
//! back-off delay (`Puller::run` does; a session only resets the back-off
//! once a whole round, its wait included, worked), or lose an announcement
//! of new mail (`* N EXISTS`) heard before the wait.
//! Untrusted input: the server's capabilities, UIDVALIDITY and unsolicited
//! responses.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use tokio_util::sync::CancellationToken;

use crate::config::ChannelConfig;
use crate::store::{Checkpoint, MailboxGeneration, MailboxState};

use super::PullError;
use super::backoff::Backoff;
use super::batch::BatchLimits;
use super::connect::{self, Credentials, Endpoint, ImapSession};
use super::mailbox::{CAP_WAIT_FIRST, COMMAND_TIMEOUT, IDLE_RENEW_MAX, Puller, pause, timed};
use super::moves::{MoveBy, MoveTo, create_target, is_all_mail};
use super::mutf7;

/// Why a connected session returned without error.
pub(super) enum SessionEnd {
    /// Shutdown requested.
    Stopped,
    /// The channel was disabled, removed or reconfigured; re-evaluate.
    Reconsider,
}

impl Puller {
    async fn credentials(&self, ch: &ChannelConfig) -> Result<Credentials, PullError> {
        let imap = ch.imap.as_ref();
        let username = ch.login_user();
        if ch.kind.uses_oauth() {
            let token = self.tokens.access_token(ch).await?;
            return Ok(Credentials::XOAuth2 { username, token });
        }
        let path = imap
            .and_then(|i| i.password_file.clone())
            .ok_or_else(|| PullError::Protocol("no password_file configured".into()))?;
        let password = std::fs::read_to_string(&path)
            .map_err(|source| PullError::Secret {
                path: path.clone(),
                source,
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        Ok(Credentials::Login { username, password })
    }

    /// One connection: log in, catch up, wait, repeat.
    pub(super) async fn session(
        &mut self,
        ch: &ChannelConfig,
        stop: CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd, PullError> {
        let stop = &stop;
        // Seen from here on: a change while this session runs wakes its wait.
        let mut changes = self.live.watch_channels();
        changes.borrow_and_update();
        let ep = Endpoint {
            host: ch
                .effective_imap_host()
                .ok_or_else(|| PullError::Protocol("no imap host".into()))?
                .to_string(),
            port: ch.effective_imap_port(),
            tls: ch.effective_imap_tls(),
        };
        let creds = self.credentials(ch).await?;
        let mut s = match connect::open(&ep, &creds).await {
            Ok(s) => s,
            Err(e) => {
                if matches!(e, PullError::Auth(_)) && ch.kind.uses_oauth() {
                    self.tokens.invalidate(&ch.id).await;
                }
                return Err(e);
            }
        };
        let caps = timed(COMMAND_TIMEOUT, "capability", s.capabilities()).await?;
        if caps.has_str("ID") {
            identify(&mut s, &ch.id).await;
        }
        let can_idle = caps.has_str("IDLE");
        // Gmail's extensions: messages known by X-GM-MSGID across the
        // account's labels, moves by label.
        self.gmail = caps.has_str("X-GM-EXT-1").then(|| {
            format!(
                "{}:{} {}",
                ep.host.to_ascii_lowercase(),
                ep.port,
                ch.login_user().to_lowercase()
            )
        });
        let move_by = if self.gmail.is_some() {
            MoveBy::Labels
        } else if caps.has_str("MOVE") {
            MoveBy::Move
        } else {
            MoveBy::CopyExpunge
        };
        if let Some(folder) = ch.imap.as_ref().and_then(|i| i.move_to.as_deref()) {
            if move_by == MoveBy::CopyExpunge && !caps.has_str("UIDPLUS") {
                return Err(PullError::Protocol(
                    "move_to is set but the server offers neither MOVE nor UIDPLUS (UID EXPUNGE)"
                        .into(),
                ));
            }
            // Opt-in: make sure the target exists ("already exists" is fine;
            // All Mail always does).
            if !(move_by == MoveBy::Labels && is_all_mail(folder)) {
                create_target(&mut s, &mutf7::encode(folder)).await;
            }
        }
        self.set_budget(ch.download_bytes_per_day());
        let mailbox = timed(
            COMMAND_TIMEOUT,
            "select",
            s.select(mutf7::encode(&self.folder)),
        )
        .await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| PullError::Protocol("server sent no UIDVALIDITY".into()))?;
        // A new UIDVALIDITY for a mailbox pulled before: its messages are
        // mostly ones we have, under new UIDs.
        let mut resync = false;
        let mut cp = match self
            .store
            .checkpoint(ch.id.clone(), self.folder.clone())
            .await?
        {
            Some(cp) if cp.uidvalidity == uidvalidity => cp,
            previous => {
                resync = previous.is_some();
                if let Some(old) = previous {
                    tracing::warn!(channel = %ch.id, folder = %self.folder, old = old.uidvalidity, new = uidvalidity,
                        "UIDVALIDITY changed: resyncing the mailbox (already-pulled messages are skipped)");
                }
                self.store
                    .reset_checkpoint(
                        MailboxGeneration {
                            channel: ch.id.clone(),
                            folder: self.folder.clone(),
                            uidvalidity,
                        },
                        self.fence(),
                    )
                    .await?;
                Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                }
            }
        };
        tracing::info!(channel = %ch.id, folder = %self.folder, uidvalidity, last_uid = cp.last_uid, idle = can_idle && ch.imap.as_ref().is_none_or(|i| i.idle), "mailbox connected");

        let (use_idle, interval, limits, move_to) = match &ch.imap {
            Some(i) => (
                i.idle && can_idle,
                Duration::from_secs(i.poll_interval_secs.max(1)),
                BatchLimits {
                    count: i.batch_size.max(1) as usize,
                    bytes: i.batch_bytes.max(1),
                },
                i.move_to
                    .as_deref()
                    .map(|folder| MoveTo::new(folder, move_by, &self.folder)),
            ),
            None => (
                can_idle,
                Duration::from_secs(60),
                BatchLimits {
                    count: 100,
                    bytes: crate::config::BATCH_BYTES,
                },
                None,
            ),
        };
        // Under a download budget no batch is larger than it lets through
        // at once.
        let limits = BatchLimits {
            bytes: self
                .budget_burst()
                .map_or(limits.bytes, |burst| limits.bytes.min(burst)),
            ..limits
        };
        // Whether this round is an extra catch-up for mail announced during
        // the previous one.
        let mut again = false;
        self.move_target(ch, move_to.as_ref());
        let mut session_start = true;
        loop {
            self.catch_up(
                &mut s,
                ch,
                &mut cp,
                (limits, std::mem::take(&mut resync)),
                move_to.as_ref(),
                stop.clone(),
            )
            .await?;
            if stop.is_cancelled() {
                logout(s).await;
                return Ok(SessionEnd::Stopped);
            }
            if self.reconsider(ch) {
                logout(s).await;
                return Ok(SessionEnd::Reconsider);
            }
            // After the session's first round, and after a round once a
            // failed move's wait is over: new mail is pulled first, so a
            // move that keeps failing never holds it up.
            if let Some(to) = &move_to
                && self.leftover_move_due(std::mem::take(&mut session_start))
            {
                self.may_move().await?;
                match self.move_leftovers(&mut s, ch, &cp, to).await {
                    Ok(()) => self.move_worked(),
                    Err(f) => {
                        self.move_failed(ch, to, &f, cp.uidvalidity);
                        // A refusal is not a reason to stop pulling new
                        // mail; a timeout or a dropped connection is: the
                        // session is in doubt, the next one starts after
                        // the back-off.
                        if !matches!(f.error, PullError::MoveRefused { .. }) {
                            return Err(f.error);
                        }
                    }
                }
            }
            let announced = heard_of_new_mail(&mut s)
                | self
                    .announced
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
            // Mail that arrived while catching up (EXISTS, piggybacked on a
            // FETCH or MOVE reply) is fetched now: once IDLE starts the
            // server does not say it again, and it would wait for the next
            // renewal or poll. Once per round, so that a server announcing
            // EXISTS with every reply cannot keep the session busy.
            if announced && !again {
                again = true;
                continue;
            }
            again = false;
            if use_idle {
                self.set_state(MailboxState::Idle, None).await;
                let (back, stopped) =
                    idle(s, interval.min(IDLE_RENEW_MAX), stop.clone(), &mut changes).await?;
                s = back;
                if stopped {
                    logout(s).await;
                    return Ok(SessionEnd::Stopped);
                }
            } else {
                self.set_state(MailboxState::Polling, None).await;
                let stopped = tokio::select! {
                    stopped = pause(stop, interval) => stopped,
                    _ = changes.changed() => false,
                };
                if stopped {
                    logout(s).await;
                    return Ok(SessionEnd::Stopped);
                }
            }
            // Healthy only once a full round worked, the wait included: a
            // server that accepts the login and then fails every fetch, or
            // every IDLE, still backs off.
            backoff.reset();
            self.cap_wait = CAP_WAIT_FIRST;
            self.works(ch).await;
            // Disabled or reconfigured while waiting: not one more fetch.
            if self.reconsider(ch) {
                logout(s).await;
                return Ok(SessionEnd::Reconsider);
            }
        }
    }

    /// Whether the channel's configuration changed under a running session.
    fn reconsider(&self, ch: &ChannelConfig) -> bool {
        let config = self.live.config();
        match self.channel_config(&config) {
            Some(now) => now != *ch || !self.live.channel_enabled(&now),
            None => true,
        }
    }

    /// Remember an announcement of new mail among the responses collected
    /// so far. Called after every fetch and move: a large MOVE's EXPUNGE
    /// responses would otherwise fill async-imap's bounded channel, and a
    /// later EXISTS would be dropped.
    pub(super) fn note_new_mail(&self, s: &mut ImapSession) {
        if heard_of_new_mail(s) {
            self.announced
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How many unsolicited responses async-imap (0.12) keeps; past that it
/// drops them.
const UNSOLICITED_KEPT: usize = 100;

/// Take every unsolicited response collected so far; whether one of them
/// announced new mail (`* N EXISTS`) — or may have: a full channel (a MOVE
/// of 100 messages answers with as many EXPUNGEs) dropped what came after.
pub(super) fn heard_of_new_mail(s: &mut ImapSession) -> bool {
    let (mut exists, mut taken) = (false, 0);
    while let Ok(r) = s.unsolicited_responses.try_recv() {
        taken += 1;
        exists |= matches!(r, async_imap::types::UnsolicitedResponse::Exists(_));
    }
    exists || taken >= UNSOLICITED_KEPT
}

/// Say who we are (IMAP ID, RFC 2971): Gmail and others log it, and some
/// providers treat unnamed clients with suspicion. A refusal is not a
/// reason to stop.
async fn identify(s: &mut ImapSession, channel: &str) {
    let id = [
        ("name", Some("postdesk")),
        ("version", Some(env!("CARGO_PKG_VERSION"))),
        ("vendor", Some("postdesk")),
    ];
    if let Err(e) = timed(COMMAND_TIMEOUT, "id", s.id(id)).await {
        tracing::debug!(channel, error = %e, "IMAP ID refused");
    }
}

async fn logout(mut s: ImapSession) {
    let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
}

/// IDLE until the server reports something, `renew` passes, the channels
/// change (`changes`), or `stop`. Returns the session (after DONE) and
/// whether stop was requested.
async fn idle(
    s: ImapSession,
    renew: Duration,
    stop: CancellationToken,
    changes: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<(ImapSession, bool), PullError> {
    let mut handle = s.idle();
    timed(COMMAND_TIMEOUT, "idle", handle.init()).await?;
    let cancelled = stop.cancelled_owned();
    let stopped = {
        let (wait, _interrupt) = handle.wait_with_timeout(renew);
        tokio::select! {
            r = wait => {
                match r? {
                    IdleResponse::NewData(_) => tracing::trace!("idle: server reported a change"),
                    IdleResponse::Timeout | IdleResponse::ManualInterrupt => {}
                }
                false
            }
            _ = cancelled => true,
            _ = changes.changed() => false,
        }
    };
    let s = timed(COMMAND_TIMEOUT, "idle done", handle.done()).await?;
    Ok((s, stopped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::fake_imap::{Mode, Run};
    use std::sync::atomic::Ordering;

    /// Login and catch-up work, IDLE always fails (a throttling server):
    /// the session still backs off. Before, the back-off was reset after
    /// catch-up and the puller logged in again every 0.5 - 1 s (14 logins
    /// in 10 s); with back-off at most 5 (0.5 + 1 + 2 + 4 s apart at least).
    #[tokio::test]
    async fn a_session_failing_after_catch_up_still_backs_off() {
        let mode = Mode {
            idle_bad: true,
            ..Mode::default()
        };
        let run = Run::start(mode, 1).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = run.logins.load(Ordering::SeqCst);
        run.finish().await;
        assert!(n <= 5, "reconnected {n} times in 10 s: backoff never grows");
    }
}
