//! MAIL and RCPT: opening a transaction and collecting recipients.
//!
//! Must not: accept a recipient the spool did not accept (never an open relay), or
//! start a transaction before HELO/EHLO, before STARTTLS when `require_tls`, or above
//! the per-IP message rate; or accept a parameter of an extension EHLO does not
//! advertise (`555 5.5.4`). Limits: `max_message_size` against `SIZE=`,
//! `max_recipients`, `max_messages_per_minute_per_ip`; a refused MAIL and a RCPT that
//! adds no recipient (duplicate, over the cap, disabled channel) count toward
//! `max_junk_commands`, an unknown recipient toward `max_errors`. Untrusted input:
//! addresses and parameters (already parsed by smtp-proto, addresses at most 256 bytes).

use smtp_proto::{MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply;
use super::session::{Flow, Session, State, Transaction};
use super::{RcptCheck, Spool, rejected};

impl<S, IO> Session<S, IO>
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            return self.error(reply::NEED_HELO);
        }
        if self.shared.cfg.require_tls && !self.tls {
            rejected("tls_required");
            return self.error(reply::NEED_TLS);
        }
        if !matches!(self.state, State::Idle) {
            return self.error(reply::NESTED_MAIL);
        }
        if !only_advertised(&from) {
            return self.error(reply::UNSUPPORTED_PARAM);
        }
        if from.size > self.shared.cfg.max_message_size {
            rejected("size");
            return self.junk(reply::TOO_BIG);
        }
        if !self.shared.limits.allow_message(self.peer) {
            tracing::info!(client_ip = %self.peer, "message rate exceeded");
            rejected("rate");
            return self.junk(reply::RATE_LIMITED);
        }
        self.state = State::Mail(Transaction::new(from.address, &self.shared.budget));
        self.reply(reply::SENDER_OK);
        Flow::Continue
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let max = self.shared.cfg.max_recipients;
        let State::Mail(tx) = &mut self.state else {
            return self.error(reply::NEED_MAIL);
        };
        if tx.bdat {
            return self.error(reply::NEED_MAIL);
        }
        if to.orcpt.is_some() || to.rrvs != 0 || to.flags != 0 {
            return self.error(reply::UNSUPPORTED_PARAM);
        }
        tx.rcpt_attempts += 1;
        if tx.rcpt_to.len() >= max {
            rejected("too_many_recipients");
            return self.junk(reply::TOO_MANY_RCPTS);
        }
        let addr = to.address.to_lowercase();
        // smtp-proto gives `""` for `<Postmaster>` (and for `<>`): a valid forward-path
        // (RFC 5321 §4.5.1) but no channel address, so `550 5.1.1` like any other.
        let check = if addr.is_empty() {
            RcptCheck::Unknown
        } else {
            self.shared.spool.check_recipient(&addr)
        };
        match check {
            RcptCheck::Accept => {
                if tx.rcpt_to.contains(&addr) {
                    return self.junk(reply::RCPT_OK);
                }
                tx.rcpt_to.push(addr);
                self.reply(reply::RCPT_OK);
                Flow::Continue
            }
            // As Postfix logs a reject: who, from whom, to whom (quoted:
            // the addresses are the client's).
            RcptCheck::Unknown => {
                tracing::info!(client_ip = %self.peer, mail_from = ?tx.mail_from, rcpt = ?addr,
                    "recipient refused: no enabled channel has this address (550)");
                rejected("unknown_recipient");
                self.error(reply::RCPT_UNKNOWN)
            }
            RcptCheck::Disabled => {
                tracing::info!(client_ip = %self.peer, mail_from = ?tx.mail_from, rcpt = ?addr,
                    "recipient deferred: its channel is disabled (450)");
                rejected("disabled_recipient");
                self.junk(reply::RCPT_DISABLED)
            }
        }
    }
}

/// Whether MAIL carries only parameters of extensions EHLO advertises (SIZE, 8BITMIME,
/// SMTPUTF8); anything else smtp-proto parses (REQUIRETLS, DSN's RET/ENVID, BINARYMIME,
/// MT-PRIORITY, AUTH, …) gets `555 5.5.4` (RFC 5321 §4.1.1.11), not silently dropped.
fn only_advertised(from: &MailFrom<String>) -> bool {
    let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
    from.flags & !known == 0
        && from.trans_id.is_none()
        && from.by == 0
        && from.env_id.is_none()
        && from.solicit.is_none()
        && from.mtrk.is_none()
        && from.auth.is_none()
        && from.hold_for == 0
        && from.hold_until == 0
        && from.mt_priority == 0
}
