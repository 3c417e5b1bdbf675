//! Notices: mail postdesk sends on its own — to a ticket's owner (assigned
//! to them, their customer wrote again, a contact of theirs wrote while they
//! are away), to admins (a mailbox alert) — never to a customer and never in
//! a ticket's conversation.
//!
//! DESCRIPTION
//!   [`send`] composes a [`Notice`] (plain text, from `[notifications] from`)
//!   and commits it to the outbox ([`crate::store::OutboxStore::queue_notice`]):
//!   the sender delivers it through `[relay]` and retries it exactly like a
//!   reply (durable once `send` returns). [`Notifier`] bundles what `send`
//!   needs and wakes the sender.
//!
//! LOOPS
//!   Every notice carries a tag, `pdn.<random>.<mac>`, in its Message-ID and
//!   in `X-Postdesk-Notice`, where `<mac>` is an HMAC-SHA256 of the random
//!   part under the install's own random key (made once with the store, never
//!   configured or shown). If a notice comes back in — an agent's
//!   auto-forward or redirect, a vacation reply naming it in In-Reply-To, a
//!   bounce quoting its headers — ingest finds a tag that verifies
//!   ([`crate::mail::tags::returned_notice`]) and drops the message instead of opening or
//!   joining a ticket. A stranger cannot make their mail dropped by writing
//!   such a header: without the key their tag does not verify, and the mail
//!   is ticketed as usual. Notices also say `Auto-Submitted: auto-generated`,
//!   so responders that honour RFC 3834 do not answer them at all.
//!
//! MUST NOT
//!   Send to a channel's address (that would open a ticket), write a ticket
//!   message, or decide who is told what (the callers do: ingest for
//!   owners, the puller for alerts).
//!
//! UNTRUSTED INPUT
//!   The subject and text may quote a customer's subject: header values go
//!   through [`super::compose::clean_header_value`], mail-builder encodes
//!   the rest.

use std::borrow::Cow;
use std::sync::Arc;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use tokio::sync::Notify;

use super::compose::{MAX_HEADER_VALUE, clean_header_value};
use crate::config::Config;
use crate::live::Live;
use crate::mail::normalize_email;
use crate::mail::tags::new_notice_tag;
use crate::store::{NewNotice, OutboxId, Store, StoreError};

/// The header naming a notice's kind and tag.
pub const NOTICE_HEADER: &str = "X-Postdesk-Notice";

/// One notice to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about, one word (`assigned`, `customer_replied`,
    /// `owner_away`, `mailbox_alert`): kept on the outbox row, in the log and
    /// in the `X-Postdesk-Notice` header.
    pub kind: String,
    /// Recipients' addresses (agents, admins). Never a customer's.
    pub to: Vec<String>,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
}

/// Why a notice was not queued.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `[notifications] from` is not set: notices are off.
    #[error("notices are off: [notifications] from is not set")]
    Off,
    /// No recipient, an invalid one, or one of postdesk's own channels.
    #[error("notice recipient refused: {0}")]
    Recipient(String),
    /// The notice kind is not one word of `a-z`, `0-9`, `_`, `-`.
    #[error("notice kind {0:?} must be one word of a-z, 0-9, _ and -")]
    Kind(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What sending notices needs, cheap to clone: the store, the live
/// configuration, and the sender's wake-up (without one, the sender finds the
/// notice at its next poll).
#[derive(Clone)]
pub struct Notifier {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub wake: Arc<Notify>,
}

impl Notifier {
    /// Queue `notice` durably (see [`send`]) and wake the sender.
    pub async fn send(&self, notice: Notice) -> Result<OutboxId, NotifyError> {
        let config = self.live.config();
        let id = send(self.store.as_ref(), &config, notice).await?;
        self.wake.notify_one();
        Ok(id)
    }
}

/// Compose `notice` and commit it to the outbox; returns once durable. The
/// sender delivers it through `[relay]`, retried like a reply.
pub async fn send(
    store: &dyn Store,
    config: &Config,
    notice: Notice,
) -> Result<OutboxId, NotifyError> {
    let from = config.notifications.from.clone().ok_or(NotifyError::Off)?;
    check_kind(&notice.kind)?;
    let to = recipients(config, &notice.to)?;
    let key = store.notice_key().await?;
    let tag = new_notice_tag(key.as_bytes());
    let raw = compose(config, &from, &to, &notice, &tag, now_secs());
    let id = store
        .queue_notice(NewNotice {
            kind: notice.kind.clone(),
            mail_from: from,
            rcpt_to: to,
            raw,
        })
        .await?;
    metrics::counter!("postdesk_notices_queued_total", "kind" => notice.kind.clone()).increment(1);
    tracing::info!(outbox = %id, kind = %notice.kind, "notice queued");
    Ok(id)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn check_kind(kind: &str) -> Result<(), NotifyError> {
    let ok = !kind.is_empty()
        && kind.len() <= 40
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NotifyError::Kind(kind.to_string()))
    }
}

/// The recipients, normalised, deduplicated; a channel's address (mail to it
/// would open a ticket) or an invalid address refuses the notice.
fn recipients(config: &Config, to: &[String]) -> Result<Vec<String>, NotifyError> {
    let mut out: Vec<String> = Vec::new();
    for a in to {
        let a = normalize_email(a);
        if !crate::mail::is_valid_email(&a) {
            return Err(NotifyError::Recipient(format!("{a:?} is not an address")));
        }
        if config.channel_for_recipient(&a).is_some() {
            return Err(NotifyError::Recipient(format!(
                "{a} is a channel's address"
            )));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(NotifyError::Recipient("no recipient".into()));
    }
    Ok(out)
}

/// The notice as sent: From the system address, the tag in Message-ID and
/// `X-Postdesk-Notice`, `Auto-Submitted: auto-generated`, text only.
fn compose(
    config: &Config,
    from: &str,
    to: &[String],
    notice: &Notice,
    tag: &str,
    date: i64,
) -> Vec<u8> {
    let name = clean_header_value(&config.notifications.from_name, MAX_HEADER_VALUE);
    let name = (!name.is_empty()).then_some(name);
    let to = Address::new_list(
        to.iter()
            .map(|a| Address::new_address(None::<String>, a.clone()))
            .collect(),
    );
    let mut text = notice.text.trim_end().to_string();
    text.push('\n');
    MessageBuilder::new()
        .from(Address::new_address(name, from.to_string()))
        .to(to)
        .subject(Text::new(clean_header_value(
            &notice.subject,
            MAX_HEADER_VALUE,
        )))
        .date(date)
        .message_id(MessageId::new(format!(
            "{tag}@{}",
            config.message_id_domain()
        )))
        .header("Auto-Submitted", Text::new("auto-generated"))
        // Raw: folded at spaces only, never encoded, so the tag stays whole
        // (the kind is checked to be one plain word).
        .header(
            NOTICE_HEADER,
            Raw::new(format!("{}; tag={tag}", notice.kind)),
        )
        .text_body(Cow::Owned(text))
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::tags::returned_notice;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn config() -> Config {
        let text = "[notifications]\nfrom = \"Desk@Acme.example\"\nfrom_name = \"Acme desk\"\n\
            [outbound]\nmessage_id_domain = \"desk.acme.example\"\n\
            [[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n";
        crate::config::parse(text, std::path::Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn notice() -> Notice {
        Notice {
            kind: "assigned".into(),
            to: vec!["Ann@Acme.example".into()],
            subject: "Ticket #7 is yours:\r\nBcc: x@evil.example".into(),
            text: "Hello".into(),
        }
    }

    /// A notice's own tag verifies (in its Message-ID and header, and when a
    /// bounce quotes it); a tag made with another key, a changed digit, or
    /// a made-up one does not.
    #[test]
    fn only_tags_made_with_the_key_verify() {
        let c = config();
        let tag = new_notice_tag(KEY);
        let mut long = notice();
        long.kind = "a_rather_long_notice_kind_name".into();
        let raw = compose(
            &c,
            "desk@acme.example",
            &["ann@acme.example".into()],
            &long,
            &tag,
            0,
        );
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            text.contains(&format!(" tag={tag}\r\n")),
            "the tag is whole: {text}"
        );
        let raw = compose(
            &c,
            "desk@acme.example",
            &["ann@acme.example".into()],
            &notice(),
            &tag,
            0,
        );
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            text.contains(&format!("Message-ID: <{tag}@desk.acme.example>")),
            "{text}"
        );
        assert!(text.contains("X-Postdesk-Notice: assigned;"), "{text}");
        assert!(text.contains(&format!(" tag={tag}")), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        assert!(!text.contains("\r\nBcc:"), "header injection: {text}");
        assert!(returned_notice(&raw, KEY).is_some());
        let bounce = format!(
            "From: MAILER-DAEMON@mx.example\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{tag}@desk.acme.example>\r\n--b--\r\n"
        );
        assert!(returned_notice(bounce.as_bytes(), KEY).is_some());
        assert_eq!(returned_notice(&raw, b"another install's key"), None);
        let mut forged = tag.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(returned_notice(&forged, KEY), None);
        let made_up = format!(
            "X-Postdesk-Notice: assigned; tag=pdn.{}.{}",
            "a".repeat(24),
            "b".repeat(32)
        );
        assert_eq!(returned_notice(made_up.as_bytes(), KEY), None);
        assert_eq!(returned_notice(b"pdn.", KEY), None);
        assert_eq!(returned_notice(b"pdn.zz", KEY), None);
    }

    /// Never to a channel (it would open a ticket); addresses normalised and
    /// deduplicated; no recipient or a bad one refused.
    #[test]
    fn recipients_are_checked() {
        let c = config();
        assert_eq!(
            recipients(&c, &["Ann@Acme.example".into(), "ann@acme.example".into()]).expect("ok"),
            vec!["ann@acme.example".to_string()]
        );
        for bad in [
            vec!["support@acme.example".to_string()],
            vec!["support+7@acme.example".to_string()],
            vec![],
            vec!["not an address".to_string()],
        ] {
            assert!(
                matches!(recipients(&c, &bad), Err(NotifyError::Recipient(_))),
                "{bad:?}"
            );
        }
        assert!(check_kind("mailbox_alert").is_ok());
        for bad in ["", "Assigned", "a b", "x\r\ny"] {
            assert!(check_kind(bad).is_err(), "{bad:?}");
        }
    }
}
