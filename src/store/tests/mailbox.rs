//! Conformance: pulled mailboxes — Gmail's X-GM-MSGID dedupe across
//! channels and labels, one open alert incident per channel.

use super::*;

pub(crate) fn pulled(raw: &str, mid: Option<&str>) -> PulledMessage {
    PulledMessage {
        spool: NewSpool {
            source: SpoolSource::Imap,
            mail_from: String::new(),
            rcpt_to: vec!["help@acme.example".into()],
            client_ip: None,
            helo: None,
            tls: false,
            channel: Some("mailbox".into()),
            raw: raw.as_bytes().to_vec(),
        },
        content_hash: content_hash(raw.as_bytes()),
        message_id: mid.map(String::from),
        gm_msgid: None,
    }
}

pub(crate) fn batch(uidvalidity: u32, last_uid: u32, messages: Vec<PulledMessage>) -> PulledBatch {
    PulledBatch {
        known_unfetched: 0,
        unreturned: Vec::new(),
        gmail_account: None,
        fence: None,
        channel: "mailbox".into(),
        folder: "INBOX".into(),
        checkpoint: Checkpoint {
            uidvalidity,
            last_uid,
        },
        messages,
    }
}

/// The mailbox [`batch`] pulls (`mailbox`, `INBOX`) under `uidvalidity`.
pub(crate) fn generation(uidvalidity: u32) -> MailboxGeneration {
    MailboxGeneration {
        channel: "mailbox".into(),
        folder: "INBOX".into(),
        uidvalidity,
    }
}

/// The mailbox [`batch`] pulls put in `state`, with `error` if any.
pub(crate) fn state_change(state: MailboxState, error: Option<&str>) -> MailboxStateChange {
    MailboxStateChange {
        channel: "mailbox".into(),
        folder: "INBOX".into(),
        state,
        error: error.map(String::from),
        resume_at: None,
    }
}

/// The same Gmail message (one X-GM-MSGID) pulled by two channels of
/// one account — INBOX and a label — is spooled once, whatever its bytes
/// and Message-ID; another account's message with that id is its own.
pub(crate) async fn one_gmail_message_is_spooled_once_across_channels_and_labels(
    store: &dyn Store,
) {
    let gm = |raw: &str, id: u64| PulledMessage {
        gm_msgid: Some(id),
        ..pulled(raw, None)
    };
    let of = |channel: &str, account: &str, m: PulledMessage| PulledBatch {
        channel: channel.into(),
        gmail_account: Some(account.into()),
        ..batch(1, 1, vec![m])
    };
    let a = store
        .spool_pulled(of("mailbox", "acct", gm("Subject: a\r\n\r\nx", 77)))
        .await
        .expect("a");
    assert_eq!((a.spooled, a.skipped), (1, 0));
    let b = store
        .spool_pulled(of(
            "billing",
            "acct",
            gm("Subject: other bytes\r\n\r\ny", 77),
        ))
        .await
        .expect("b");
    assert_eq!(
        (b.spooled, b.skipped),
        (0, 1),
        "the label's copy was spooled again"
    );
    let c = store
        .spool_pulled(of("other", "acct2", gm("Subject: c\r\n\r\nz", 77)))
        .await
        .expect("c");
    assert_eq!(c.spooled, 1);
    let known = store
        .known_gmail_ids("acct".into(), vec![76, 77, u64::MAX])
        .await
        .expect("known");
    assert_eq!(known, vec![77]);
}

/// One open incident per channel: opening again returns it (not new);
/// once resolved, the next problem is a new incident.
pub(crate) async fn one_open_alert_per_channel(store: &dyn Store) {
    let open = |reason: &str| {
        store.open_alert(NewAlert {
            channel: "gmail".into(),
            reason: reason.into(),
            detail: Some("boom".into()),
        })
    };
    let (a, new) = open("needs_reauth").await.expect("open");
    assert!(new);
    let (b, new) = open("failing").await.expect("again");
    assert!(!new);
    assert_eq!((b.id, b.reason.as_str()), (a.id, "needs_reauth"));
    assert_eq!(b.notified_at, None);
    store.alert_notified(a.id).await.expect("notified");
    let listed = store.open_alerts().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].notified_at.is_some());
    assert!(store.resolve_alert("gmail".into()).await.expect("resolve"));
    assert!(!store.resolve_alert("gmail".into()).await.expect("resolve"));
    assert!(store.open_alerts().await.expect("list").is_empty());
    let (c, new) = open("failing").await.expect("next incident");
    assert!(new && c.id != a.id);
}
