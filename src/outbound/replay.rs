//! Reply idempotency: what a reply request carrying an `Idempotency-Key`
//! gets when an earlier request used the key.
//!
//! Pure. [`dedupe_key`] names the reply's message row (unique per channel):
//! `idem:<author>:<key>` for a request with a key, `mid:<Message-ID>`
//! otherwise. The store reads the reply stored under that key inside the
//! transaction that would queue the new one, and [`replay`] decides: the same
//! ticket gets the earlier reply back (nothing new is written or sent),
//! another ticket is refused, no earlier reply means this one is queued.
//!
//! Untrusted input: the key (checked by `compose::check_agent_header` before
//! it gets here); keys are per author, so one agent's key never answers
//! another agent's request.

use crate::store::{EarlierReply, NewReply, QueuedReply, StoreError};

/// The dedupe key of `author`'s reply with Message-ID `message_id`.
pub fn dedupe_key(author: &str, message_id: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(k) => format!("idem:{author}:{k}"),
        None => format!("mid:{message_id}"),
    }
}

/// What `reply` gets, given the reply stored under its dedupe key.
pub fn replay(
    reply: &NewReply,
    earlier: Option<EarlierReply>,
) -> Result<Option<QueuedReply>, StoreError> {
    let Some(e) = earlier else {
        return Ok(None);
    };
    if e.ticket != reply.ticket {
        return Err(StoreError::Invalid(format!(
            "idempotency key already used for ticket {}",
            e.ticket
        )));
    }
    Ok(Some(QueuedReply {
        ticket: reply.ticket,
        outbox_id: e.outbox_id,
        message_id: e.message_id,
        delivery: e.delivery,
        replayed: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Delivery, OutboxId, TicketId};

    fn reply(ticket: i64) -> NewReply {
        NewReply {
            ticket: TicketId(ticket),
            channel: "support".into(),
            author: "ann".into(),
            message_id: "pd.1.new@desk".into(),
            in_reply_to: None,
            references: Vec::new(),
            from_email: "support@acme.example".into(),
            from_name: None,
            to: vec!["carol@customer.example".into()],
            cc: Vec::new(),
            subject: "Re: x".into(),
            date: "Thu, 1 Jan 2026 00:00:00 +0000".into(),
            text: "hi".into(),
            html: None,
            raw: b"raw".to_vec(),
            dedupe_key: dedupe_key("ann", "pd.1.new@desk", Some("k1")),
            replayable: true,
        }
    }

    fn earlier(ticket: i64) -> EarlierReply {
        EarlierReply {
            outbox_id: OutboxId(4),
            message_id: "pd.1.first@desk".into(),
            delivery: Delivery::Sent,
            ticket: TicketId(ticket),
        }
    }

    #[test]
    fn keys_are_per_author_else_the_message_id() {
        assert_eq!(dedupe_key("ann", "m@x", Some("k1")), "idem:ann:k1");
        assert_ne!(
            dedupe_key("ann", "m@x", Some("k1")),
            dedupe_key("bob", "m@x", Some("k1"))
        );
        assert_eq!(dedupe_key("ann", "m@x", None), "mid:m@x");
    }

    /// No earlier reply: queue this one. The same ticket: the earlier reply,
    /// as it stands (its Message-ID and delivery), marked replayed. Another
    /// ticket: refused, naming it.
    #[test]
    fn an_earlier_reply_answers_its_ticket_and_refuses_another() {
        assert!(matches!(replay(&reply(1), None), Ok(None)));
        let again = replay(&reply(1), Some(earlier(1)))
            .expect("replayed")
            .expect("an answer");
        assert_eq!(
            (again.outbox_id, again.message_id.as_str(), again.delivery),
            (OutboxId(4), "pd.1.first@desk", Delivery::Sent)
        );
        assert!(again.replayed);
        match replay(&reply(2), Some(earlier(1))) {
            Err(StoreError::Invalid(why)) => assert!(why.contains("ticket 1"), "{why}"),
            other => panic!("not refused: {other:?}"),
        }
    }
}
