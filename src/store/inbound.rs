//! What ingest and the store exchange while an inbound message is applied.
//!
//! Owns the plain data both sides share, so that the dependency points one
//! way (ingest uses the store; the store never calls into ingest):
//!
//! - what ingest judged about a message, carried typed to the store and
//!   serialised once, when the message row is written: [`Classification`]
//!   and [`SenderResolution`] (with the [`Resolution`] and the
//!   [`Authentication`] behind it);
//! - the facts a backend reads inside the applying transaction
//!   ([`InboundFacts`]: keyed messages, outbound messages, tickets' people,
//!   users' loads, contacts' owners);
//! - the [`Decision`] ingest's pure decide function returns over them, which
//!   the backend writes ([`Decide`] is that function's type: callers pass
//!   `ingest::decide::decide` to [`crate::store::SpoolStore::apply_inbound`]).
//!
//! - for a backend whose reads are asynchronous, [`decide_async`]: it runs
//!   the same [`Decide`] over the facts loaded so far and asks the backend
//!   for each one it lacks, as a [`FactQuery`] answered by a [`FactAnswer`].
//!
//! Must not: decide anything. Every rule (dedupe, bounce linking, threading,
//! routing) lives in `ingest`; a backend only answers [`InboundFacts`] and
//! writes the [`Decision`].

use serde::Serialize;

use super::{InboundMessage, StoreError, TicketId};

/// What a message is, as ingest classified it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classification {
    Normal,
    AutoReply { reason: String },
    Bulk { reason: String },
    Bounce { dsn: Option<Dsn> },
    Loop { reason: String },
}

/// An RFC 3464 delivery status report, as far as it was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dsn {
    pub recipients: Vec<DsnRecipient>,
    pub original_message_id: Option<String>,
    pub reporting_mta: Option<String>,
}

/// One recipient of a [`Dsn`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DsnRecipient {
    pub recipient: String,
    pub action: String,
    pub status: String,
    pub diagnostic: Option<String>,
}

/// The classification as stored with a message: a linked bounce notes the
/// Message-ID of our outbound message it reports on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredClassification<'a> {
    #[serde(flatten)]
    pub class: &'a Classification,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounced_message_id: Option<&'a str>,
}

/// An address with its display name, as a message gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Address {
    pub email: String,
    pub name: Option<String>,
}

/// A confidence as people read it: two decimals.
pub fn rounded(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}

fn two_decimals<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rounded(*v))
}

/// Who really wrote a message, and how ingest decided it.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// Who owns the ticket.
    pub contact: Address,
    /// `rfc822` | `resent` | `body:<client>` | `list:x-original-from` |
    /// `list:x-original-sender` | `list:reply-to` | `from` | `forwarder`
    /// (`envelope`, `form`, `api` outside resolution).
    pub method: String,
    /// 0.0..=1.0 (written with two decimals: `0.9`, not the f32's
    /// `0.8999999761581421`).
    #[serde(serialize_with = "two_decimals")]
    pub confidence: f32,
    /// The team member / trusted forwarder who forwarded, if any.
    pub forwarder: Option<Address>,
    /// An untrusted claimed original, or a name-only block (email "").
    pub claimed_original: Option<Address>,
    /// The forwarder's own text above the forwarded block (an internal note).
    pub note: Option<String>,
    /// The customer's message when extracted from a forward.
    pub original: Option<OriginalMessage>,
    /// Why a team member's, forwarder's or group's claim was not believed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distrusted: Option<String>,
}

impl Resolution {
    /// A resolution that is its contact only (no forwarder, note, original
    /// or doubt), decided by `method` with `confidence`.
    pub fn only(contact: Address, method: &str, confidence: f32) -> Self {
        Resolution {
            contact,
            method: method.to_string(),
            confidence,
            forwarder: None,
            claimed_original: None,
            note: None,
            original: None,
            distrusted: None,
        }
    }
}

/// The customer's message inside a forward.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalMessage {
    /// Forward/reply prefixes removed.
    pub subject: Option<String>,
    /// As written.
    pub date: Option<String>,
    pub text: String,
    pub message_id: Option<String>,
}

/// What is proven about where a message comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Authentication {
    /// Domains the message is proven to come from, lower-case.
    pub domains: Vec<String>,
    /// How this was decided, for people reading `resolve` or `tickets show`.
    pub by: String,
    /// Every domain counts: a file judged by `postdesk resolve` as if a
    /// trusted relay had passed it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub assumed: bool,
}

/// The sender resolution as stored with a message: the resolution, and for
/// mail what authenticated it (a submission has none).
#[derive(Debug, Clone, Serialize)]
pub struct SenderResolution {
    #[serde(flatten)]
    pub resolution: Resolution,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

/// A message a channel stores under a dedupe key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedMessage {
    /// The ticket it went to.
    pub ticket: TicketId,
    /// Its From address, if it had one.
    pub from: Option<String>,
    /// The email of its ticket's contact.
    pub contact: String,
}

/// One of our outbound messages (a bounce may report on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRef {
    /// The backend's row id of the outbound message.
    pub row: i64,
    pub ticket: TicketId,
    /// Its Message-ID, without angle brackets.
    pub message_id: String,
}

impl OutboundRef {
    /// Log that a bounce was stored on this message's ticket (each
    /// backend's bounce record calls it once written).
    pub(crate) fn log_bounce(&self, failed: bool) {
        tracing::info!(
            ticket = self.ticket.0,
            message_id = %self.message_id,
            failed,
            "bounce linked to its outbound message"
        );
    }
}

/// A message of a channel that a Message-ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHit {
    pub ticket: TicketId,
    /// One of our replies (else an inbound message).
    pub outbound: bool,
}

/// The people of a ticket, for deciding who may continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketPeople {
    /// The ticket's contact, normalised.
    pub contact: String,
    /// Its secret (empty for none).
    pub secret: String,
    /// Its participants, and whom the contact addressed (To/Cc of the
    /// contact's own inbound messages in it), normalised.
    pub participants: Vec<String>,
}

/// How loaded one user of a [`crate::store::RoutingPlan::Balance`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLoad {
    /// The user's id.
    pub user: String,
    /// Tickets the user owns that are not closed, resolved or solved.
    pub open: i64,
    /// When the user was last given a ticket by balancing: a store-wide
    /// sequence number, 0 for never.
    pub last_assigned: i64,
}

/// The owner chosen for a new ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChoice {
    /// The owner, if any.
    pub owner: Option<String>,
    /// Why the ticket stays unassigned (shown on it), when `owner` is `None`.
    pub unassigned_reason: Option<String>,
    /// The owner was picked by balancing: the store records the assignment
    /// (the user's next `last_assigned` is the highest so far + 1).
    pub record_assignment: bool,
}

/// What to write for one inbound message. `key`: the dedupe key to store it
/// under when it is not the planned one (another sender used its
/// Message-ID).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A copy of a message the channel stores, in this ticket: write nothing.
    Duplicate(TicketId),
    /// A bounce of our outbound message: store it on that message's ticket
    /// (no contact, no new ticket), its classification noting the outbound
    /// Message-ID; with `fail`, mark the outbound message (and its outbox
    /// row, if still queued) failed with this detail.
    Bounce {
        key: Option<String>,
        outbound: OutboundRef,
        fail: Option<String>,
    },
    /// Continue this ticket: the message's contact becomes a participant.
    Join {
        key: Option<String>,
        ticket: TicketId,
    },
    /// Open a ticket with the message's `new_ticket` values and this owner;
    /// `thread_note`: why a ticket the message named was not continued.
    Open {
        key: Option<String>,
        owner: OwnerChoice,
        thread_note: Option<String>,
    },
}

/// The reads the inbound decisions need, answered by a backend inside the
/// transaction that then writes the [`Decision`] (so nothing changes between
/// the read and the write). Every address is normalised; every lookup is
/// confined to `channel`.
pub trait InboundFacts {
    /// The message `channel` stores under dedupe key `key`, if any.
    fn keyed(&mut self, channel: &str, key: &str) -> Result<Option<KeyedMessage>, StoreError>;

    /// The most recent of our outbound messages of `channel` with this
    /// Message-ID.
    fn outbound(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<OutboundRef>, StoreError>;

    /// The messages of `channel` that Message-ID `message_id` names, most
    /// recent first (at most 8): inbound ones by their dedupe key — also the
    /// copies another sender's reuse of the id pushed to keys of their own
    /// (`mid:<id>#from:<address>`) — and our outbound ones.
    fn by_message_id(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Vec<MessageHit>, StoreError>;

    /// Ticket `ticket`'s people, if it exists on `channel`.
    fn ticket_people(
        &mut self,
        channel: &str,
        ticket: TicketId,
    ) -> Result<Option<TicketPeople>, StoreError>;

    /// `user`'s open tickets and last balancing assignment.
    fn user_load(&mut self, user: &str) -> Result<UserLoad, StoreError>;

    /// The owner of the contact with this email, if it exists and has one.
    fn contact_owner(&mut self, email: &str) -> Result<Option<String>, StoreError>;
}

/// The decisions for one message: ingest's pure function over the facts the
/// backend reads (`ingest::decide::decide`); `now_ms` is the transaction's
/// clock.
pub type Decide = fn(&InboundMessage, i64, &mut dyn InboundFacts) -> Result<Decision, StoreError>;

/// One read of [`InboundFacts`], as data: what [`decide_async`] asks a
/// backend whose reads are asynchronous to load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FactQuery {
    Keyed { channel: String, key: String },
    Outbound { channel: String, message_id: String },
    ByMessageId { channel: String, message_id: String },
    TicketPeople { channel: String, ticket: TicketId },
    UserLoad { user: String },
    ContactOwner { email: String },
}

/// The answer to a [`FactQuery`] (the variant of the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactAnswer {
    Keyed(Option<KeyedMessage>),
    Outbound(Option<OutboundRef>),
    ByMessageId(Vec<MessageHit>),
    TicketPeople(Option<TicketPeople>),
    UserLoad(UserLoad),
    ContactOwner(Option<String>),
}

/// [`InboundFacts`] answered from the answers loaded so far; a read it
/// cannot answer is noted (the first one) and fails.
#[derive(Debug, Default)]
struct Snapshot {
    answers: std::collections::HashMap<FactQuery, FactAnswer>,
    missing: Option<FactQuery>,
}

impl Snapshot {
    fn ask(&mut self, q: FactQuery) -> Result<FactAnswer, StoreError> {
        match self.answers.get(&q) {
            Some(a) => Ok(a.clone()),
            None => {
                self.missing.get_or_insert(q);
                Err(StoreError::Failed("a fact not loaded yet".into()))
            }
        }
    }
}

/// A [`FactAnswer`] of the wrong variant for its query: the backend's bug.
fn mismatched(what: &str) -> StoreError {
    StoreError::Failed(format!("the backend answered another fact than {what}"))
}

impl InboundFacts for Snapshot {
    fn keyed(&mut self, channel: &str, key: &str) -> Result<Option<KeyedMessage>, StoreError> {
        let q = FactQuery::Keyed {
            channel: channel.into(),
            key: key.into(),
        };
        match self.ask(q)? {
            FactAnswer::Keyed(a) => Ok(a),
            _ => Err(mismatched("keyed")),
        }
    }

    fn outbound(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<OutboundRef>, StoreError> {
        let q = FactQuery::Outbound {
            channel: channel.into(),
            message_id: message_id.into(),
        };
        match self.ask(q)? {
            FactAnswer::Outbound(a) => Ok(a),
            _ => Err(mismatched("outbound")),
        }
    }

    fn by_message_id(
        &mut self,
        channel: &str,
        message_id: &str,
    ) -> Result<Vec<MessageHit>, StoreError> {
        let q = FactQuery::ByMessageId {
            channel: channel.into(),
            message_id: message_id.into(),
        };
        match self.ask(q)? {
            FactAnswer::ByMessageId(a) => Ok(a),
            _ => Err(mismatched("by_message_id")),
        }
    }

    fn ticket_people(
        &mut self,
        channel: &str,
        ticket: TicketId,
    ) -> Result<Option<TicketPeople>, StoreError> {
        let q = FactQuery::TicketPeople {
            channel: channel.into(),
            ticket,
        };
        match self.ask(q)? {
            FactAnswer::TicketPeople(a) => Ok(a),
            _ => Err(mismatched("ticket_people")),
        }
    }

    fn user_load(&mut self, user: &str) -> Result<UserLoad, StoreError> {
        match self.ask(FactQuery::UserLoad { user: user.into() })? {
            FactAnswer::UserLoad(a) => Ok(a),
            _ => Err(mismatched("user_load")),
        }
    }

    fn contact_owner(&mut self, email: &str) -> Result<Option<String>, StoreError> {
        match self.ask(FactQuery::ContactOwner {
            email: email.into(),
        })? {
            FactAnswer::ContactOwner(a) => Ok(a),
            _ => Err(mismatched("contact_owner")),
        }
    }
}

/// Run `decide` for a backend whose reads are asynchronous (a network
/// database): `decide` runs over the facts loaded so far; when it asks for
/// one not loaded, `read` loads it (inside the backend's transaction) and
/// `decide` runs again from the start — it is pure, so a rerun decides
/// exactly as one pass over the same facts would, and every backend decides
/// alike. One `read` per fact, in the order `decide` asks for them (as a
/// synchronous backend reads them). Stops after `MAX_READS` reads.
///
/// `known`: facts the backend read ahead (in the round trip that took the
/// message's locks); `decide` finds them answered, read or not.
pub async fn decide_async<R, Fut>(
    decide: Decide,
    m: &InboundMessage,
    now_ms: i64,
    known: Vec<(FactQuery, FactAnswer)>,
    mut read: R,
) -> Result<Decision, StoreError>
where
    R: FnMut(FactQuery) -> Fut,
    Fut: std::future::Future<Output = Result<FactAnswer, StoreError>>,
{
    /// Far more than one message needs: 2 dedupe keys, 16 bounce
    /// candidates, the thread ids parse keeps (each with up to 8 tickets),
    /// a tag, a plus-address, the routed users.
    const MAX_READS: usize = 4096;
    let mut facts = Snapshot::default();
    facts.answers.extend(known);
    for _ in 0..MAX_READS {
        let decided = decide(m, now_ms, &mut facts);
        match facts.missing.take() {
            None => return decided,
            Some(q) => {
                let answer = read(q.clone()).await?;
                facts.answers.insert(q, answer);
            }
        }
    }
    Err(StoreError::Failed(format!(
        "no decision after {MAX_READS} reads"
    )))
}
