//! Decide: what the store writes for one inbound message, over the facts it
//! reads in the transaction that writes it.
//!
//! Pure apart from those reads. [`decide`] is the sequence every backend
//! runs (passed to [`crate::store::SpoolStore::apply_inbound`] and
//! [`crate::store::SpoolStore::submit`] as their [`crate::store::Decide`]):
//!
//! 1. dedupe ([`dedupe::check`]): a copy of a stored message writes nothing;
//!    a Message-ID another sender used gets a key of its own;
//! 2. bounce linking ([`bounce::reported_on`]): a bounce of one of our
//!    replies joins that reply's ticket, and fails the reply when the report
//!    says delivery failed;
//! 3. threading ([`thread::find`]): the ticket the message may continue;
//! 4. routing ([`route::owner`]): else the owner of the ticket it opens,
//!    with why a ticket it named was not continued.
//!
//! The backend then writes the [`Decision`] (contact, participant, ticket,
//! message, bounce marks, assignment) in the same transaction.
//!
//! Must not: write, read the clock (the caller passes `now_ms`), or read
//! anything but the [`InboundFacts`] it is given.

use super::{bounce, dedupe, route, thread};
use crate::store::{Decision, InboundFacts, InboundMessage, StoreError};

/// The [`Decision`] for `m` (see the module doc for the order).
pub fn decide(
    m: &InboundMessage,
    now_ms: i64,
    facts: &mut dyn InboundFacts,
) -> Result<Decision, StoreError> {
    let incoming = dedupe::Incoming {
        key: &m.dedupe_key,
        from: &m.from.email,
        contact: &m.contact.email,
    };
    let key = match dedupe::check(incoming, now_ms, |k| facts.keyed(&m.channel, k))? {
        dedupe::Verdict::Copy(ticket) => return Ok(Decision::Duplicate(ticket)),
        dedupe::Verdict::New(key) => key,
    };
    if let Some(link) = &m.bounce
        && let Some(outbound) = bounce::reported_on(&m.channel, link, facts)?
    {
        return Ok(Decision::Bounce {
            key,
            outbound,
            fail: link.failed.then(|| link.detail.clone()),
        });
    }
    Ok(match thread::find(m, facts)? {
        Ok(ticket) => Decision::Join { key, ticket },
        Err(thread_note) => Decision::Open {
            key,
            owner: route::owner(&m.new_ticket.routing, &m.contact.email, facts)?,
            thread_note,
        },
    })
}
