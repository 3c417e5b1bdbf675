//! The store: everything postdesk keeps, behind one trait.
//!
//! Owns the spool (accepted raw mail and its envelope), messages, contacts,
//! tickets, users' and channels' runtime state, the outbox and mailbox
//! checkpoints. Only this module talks SQL; callers use the typed methods of
//! [`Store`], an `Arc<dyn Store>`. [`Store`] is the sum of one trait per role
//! — [`SpoolStore`], [`TicketStore`], [`OutboxStore`], [`MailboxStore`],
//! [`PeopleStore`], [`WebStore`], [`NodeStore`] — plus the counts across
//! them; a caller holding a concrete store (not `dyn Store`) imports the
//! role traits whose methods it calls.
//! The types they take and return live in `types.rs`, what ingest and the
//! store exchange while applying inbound mail in `inbound.rs` (and, for
//! outbound, mailboxes and bounces, next to their SQL), all re-exported
//! here; the conformance suite every backend runs is `tests/`. Errors are
//! backend-neutral ([`StoreError`]); the SQLite backend converts its own at
//! its edge. Writes are durable when their future resolves (`synchronous=FULL`),
//! and concurrent writes are grouped into one transaction (group commit) so a
//! burst of N messages costs far fewer than N fsyncs.
//!
//! Must not: parse mail, make routing, threading, dedupe, bounce or
//! idempotency decisions, call into `ingest` or `outbound`, or block an
//! async worker thread (the SQLite implementation runs on its own threads).
//! Where applying something needs a decision, the caller passes the pure
//! function that takes it ([`Decide`] for inbound mail, [`Replay`] for a
//! reply's idempotency key); the backend reads the facts it asks for inside
//! the transaction ([`InboundFacts`]) and writes its answer
//! ([`Decision`]), so a second backend cannot decide differently.

mod bounce;
pub mod copy;
mod inbound;
mod lease;
mod mailbox;
mod migrations;
mod nodes;
mod outbound;
pub mod postgres;
mod queries;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;
mod types;
mod web;

pub use bounce::BounceLink;
pub use inbound::*;
pub use lease::{Fence, LeaseRequest, mailbox_lease};
pub use mailbox::{
    AlertView, Checkpoint, MailboxGeneration, MailboxState, MailboxStateChange, MailboxStatusView,
    NewAlert, PulledBatch, PulledMessage, PulledOutcome,
};
pub use nodes::{NodeBeat, NodeStore, NodeView};
pub use outbound::{
    ApiTokenInfo, AttemptOutcome, Delivery, EarlierReply, NewApiToken, NewNotice, NewReply,
    OutboxClaim, OutboxCounts, OutboxId, OutboxItem, QueuedReply, QuoteSource, Replay,
    ReplyContext, TOKEN_ID_LEN, TicketUpdate, TokenGrant, TokenRole,
};
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, content_hash, ms_to_rfc3339, now_ms};
pub use types::*;
pub use web::{
    InboxCounts, InboxQuery, InboxView, NewSigninLink, NewWebSession, WebSession, WebStore,
    WebUser, fts_query, search_words,
};

use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by store methods, so `dyn Store` works.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Errors the store reports. Callers act on [`StoreError::is_temporary`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk or database is full (SQLITE_FULL, ENOSPC).
    #[error("storage full")]
    Full,
    /// Another process holds the write lock longer than the busy timeout.
    #[error("database busy")]
    Busy,
    /// The store has been shut down.
    #[error("store closed")]
    Closed,
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A request the store refuses (e.g. a conflicting state change, an
    /// argument that names nothing usable): the caller's to fix.
    #[error("{0}")]
    Invalid(String),
    /// A failure that is not the request's: its group's transaction failed
    /// or was rolled back for another job's I/O error, a task running it
    /// died. The text of the cause; retrying may succeed.
    #[error("{0}")]
    Failed(String),
    /// The database file is newer than this binary or damaged.
    #[error("schema: {0}")]
    Schema(String),
    /// Any other error of the database backend, as its text (prefixed with
    /// the backend's name, e.g. `sqlite: `). Temporary: the cause may pass.
    #[error("{0}")]
    Backend(String),
    /// A write made under a lease (a [`Fence`]) that its node no longer
    /// holds under that epoch: another node took the job over. Not
    /// temporary: the caller stops that job and acquires the lease again.
    #[error("lease lost: {0}")]
    Fenced(String),
    /// I/O around the database file (creating its directory).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// What a write queued for a group commit answers its caller: the
/// transaction's failure if it failed, else the write's own result
/// (`None`: the write never ran, its committer stopped).
pub(crate) fn answer<T>(
    commit: Result<(), StoreError>,
    result: Option<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match (commit, result) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(r)) => r,
        (Ok(()), None) => Err(StoreError::Closed),
    }
}

impl StoreError {
    /// True when retrying later may succeed (full disk, lock contention, shutdown).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::Full | StoreError::Busy | StoreError::Closed
        ) || matches!(self, StoreError::Backend(_) | StoreError::Failed(_))
    }
}

/// The SQLite edge: full disk and lock contention keep their own variants
/// ([`StoreError::Full`], [`StoreError::Busy`]); any other SQLite error is
/// [`StoreError::Backend`] with its text.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            match f.code {
                ErrorCode::DiskFull => return StoreError::Full,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => return StoreError::Busy,
                _ => {}
            }
        }
        StoreError::Backend(format!("sqlite: {e}"))
    }
}

/// Everything the daemon, the CLI and the API need from persistent state:
/// every role below, and the counts across them. Callers hold an
/// `Arc<dyn Store>`; the role traits say which part of the store a method
/// belongs to (and what a second backend implements, piece by piece).
///
/// Every write resolves only after its transaction is durably committed.
pub trait Store:
    SpoolStore
    + TicketStore
    + OutboxStore
    + MailboxStore
    + LeaseStore
    + PeopleStore
    + WebStore
    + NodeStore
    + Send
    + Sync
    + 'static
{
    /// Counts for `status`: the queues, and totals that count every row
    /// (for an operator's `postdesk status`, not for anything polled).
    fn status(&self) -> StoreFuture<'_, StoreStatus>;

    /// What waits in the spool and the outbox. Reads indexes and counters
    /// only, so it costs the same on a year-old store as on a new one: what
    /// `/readyz`, `/metrics` and `outbox status` use.
    fn queues(&self) -> StoreFuture<'_, Queues>;

    /// Changes made by other processes or nodes, as they commit: `None`
    /// when this backend cannot tell (SQLite: the daemon polls, and the
    /// CLI wakes its sender through `outbound::wake`). A subscriber must
    /// still poll now and then — a notification can be lost (the listening
    /// connection drops; the backend then reports every kind once when it
    /// is back).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}

/// What changed in the store, as [`Store::changes`] reports it. Only the
/// kind: the subscriber reads what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A runtime override: a channel enabled or disabled, a user's
    /// availability.
    State,
    /// A reply or notice queued, or the outbox flushed.
    Outbox,
}

/// The spool: accepted mail and submissions, until ingest has applied them
/// (the write of everything a message makes: contact, ticket, routing, message).
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait SpoolStore: Send + Sync {
    /// Commit one accepted message to the spool; returns it as ingest sees it.
    fn spool(&self, msg: NewSpool) -> StoreFuture<'_, SpoolEntry>;

    /// Spool entries still waiting for ingest, oldest first, with id > `after`.
    /// On a store shared by several nodes (PostgreSQL), only those this node
    /// may take — unclaimed, its own, or another node's expired claim — and
    /// they are claimed for it (`[store] lease_secs`).
    fn pending_spool(&self, after: SpoolId, limit: usize) -> StoreFuture<'_, Vec<SpoolEntry>>;

    /// Apply ingest results, in order, each atomically (contacts, tickets,
    /// messages, routing, and marking its spool entry done). One plan's
    /// failure does not undo the others; all share one durable commit.
    ///
    /// Each message of a plan still pending is decided by `decide` (ingest's
    /// `ingest::decide::decide`) over the [`InboundFacts`] the backend reads
    /// in that transaction, and its [`Decision`] written there, message after
    /// message (a later message sees what an earlier one wrote).
    fn apply_inbound(
        &self,
        plans: Vec<InboundPlan>,
        decide: Decide,
    ) -> StoreFuture<'_, Vec<Result<InboundOutcome, StoreError>>>;

    /// Commit a message that arrives already planned — a web form submission,
    /// a ticket opened through the API — in one transaction: its spool row
    /// (`submission.spool.raw` = the submission as received, kept like
    /// mail's raw bytes) and its effect, applied exactly as
    /// [`SpoolStore::apply_inbound`] applies a plan (contact, ticket,
    /// routing, message). The spool row is done when the transaction
    /// commits, so ingest never sees it; on error nothing is stored. When
    /// `decide` finds every message a [`Decision::Duplicate`] (a retried
    /// submission), the answer is those copies and nothing is written, not
    /// even the spool row.
    fn submit(&self, submission: Submission, decide: Decide) -> StoreFuture<'_, InboundOutcome>;

    /// Park a spool entry that ingest could not process, with its reason.
    fn fail_spool(&self, id: SpoolId, reason: String) -> StoreFuture<'_, ()>;

    /// The raw bytes of a spooled message.
    fn raw(&self, id: SpoolId) -> StoreFuture<'_, Vec<u8>>;
}

/// Tickets and what agents do on them (notes, status and owner changes), and
/// what a reply is composed from.
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait TicketStore: Send + Sync {
    /// Tickets, newest first.
    fn list_tickets(&self, filter: TicketFilter) -> StoreFuture<'_, Vec<TicketSummary>>;

    /// One ticket with its messages.
    fn ticket(&self, number: TicketId) -> StoreFuture<'_, TicketDetail>;

    /// Add an internal note by `author` (user id).
    fn add_note(&self, ticket: TicketId, author: String, text: String) -> StoreFuture<'_, ()>;

    /// Change a ticket's status and/or owner.
    fn update_ticket(&self, ticket: TicketId, update: TicketUpdate) -> StoreFuture<'_, ()>;

    /// Open a ticket that starts with our own mail to `contact` (a new
    /// email composed by `owner`, who owns it): the contact is created if
    /// new; no message yet (the reply queued next is its first). With an
    /// idempotency key, the ticket an earlier call by the same owner with
    /// the same key opened is returned instead (in the same transaction).
    fn open_outbound_ticket(&self, opening: OutboundOpening) -> StoreFuture<'_, TicketId>;

    /// A ticket's subject, channel, contact and thread ids (the first and the
    /// `recent` most recent), for composing a reply.
    fn reply_context(&self, ticket: TicketId, recent: usize) -> StoreFuture<'_, ReplyContext>;

    /// The message a reply quotes: the ticket's last inbound message that is
    /// not automatic mail or a bounce, with its raw mail.
    fn quote_source(&self, ticket: TicketId) -> StoreFuture<'_, Option<QuoteSource>>;

    /// The raw mail of the ticket's messages, newest first: inbound as
    /// received, replies as sent (for their `cid:` parts).
    fn ticket_raws(&self, ticket: TicketId) -> StoreFuture<'_, Vec<Vec<u8>>>;
}

/// The outbox: composed replies until delivered, and their delivery attempts.
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait OutboxStore: Send + Sync {
    /// Commit a composed reply: its outbound message (delivery `queued`) and
    /// its outbox row, in one transaction. When the reply is `replayable`,
    /// the reply the channel stores under its dedupe key is read in that
    /// transaction and `replay` (`outbound::replay::replay`) decides: answer
    /// the earlier one, refuse, or write this one.
    fn queue_reply(&self, reply: NewReply, replay: Replay) -> StoreFuture<'_, QueuedReply>;

    /// Commit a notice (mail postdesk sends on its own, on no ticket) to the
    /// outbox: delivered and retried like a reply.
    fn queue_notice(&self, notice: NewNotice) -> StoreFuture<'_, OutboxId>;

    /// The install's random notice key (hex): what notices' loop tags are
    /// signed with (`outbound::notify`). Made once, with the store.
    fn notice_key(&self) -> StoreFuture<'_, String>;

    /// Queued outbox entries due at `now_ms`, oldest first, taken for
    /// `claim`: on PostgreSQL (nodes sharing the store) claimed in the same
    /// statement (`FOR UPDATE SKIP LOCKED`), so two nodes never take the same
    /// entry while its claim is live; SQLite (one node) only reads them.
    fn due_outbox(
        &self,
        claim: OutboxClaim,
        now_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxItem>>;

    /// Extend `claim`'s node's claims on `ids` to `claim.lease_ms` from now
    /// (0: give them up, e.g. at shutdown for entries not attempted).
    /// Entries recorded meanwhile, or claimed by another node, are left.
    fn extend_outbox_claims(&self, claim: OutboxClaim, ids: Vec<OutboxId>) -> StoreFuture<'_, ()>;

    /// When the next queued entry is due (unix ms), if any.
    fn next_outbox_due(&self) -> StoreFuture<'_, Option<i64>>;

    /// Record one delivery attempt on the outbox row and its message.
    fn record_attempt(&self, id: OutboxId, outcome: AttemptOutcome) -> StoreFuture<'_, ()>;

    /// Make every queued entry due now; returns how many.
    fn flush_outbox(&self) -> StoreFuture<'_, usize>;
}

/// Pulled mailboxes: checkpoints, fetched batches, pullers' states.
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait MailboxStore: Send + Sync {
    /// A pulled mailbox's checkpoint, if it has one.
    fn checkpoint(&self, channel: String, folder: String) -> StoreFuture<'_, Option<Checkpoint>>;

    /// Commit a fetched batch to the spool together with its advanced
    /// checkpoint, in one transaction. Messages the channel already has (same
    /// bytes spooled, or same Message-ID stored) are skipped, so a resync or
    /// a re-fetch after a crash does not flood the spool. A batch with a
    /// fence is refused whole ([`StoreError::Fenced`]) unless the fence is
    /// current in that transaction.
    fn spool_pulled(&self, batch: PulledBatch) -> StoreFuture<'_, PulledOutcome>;

    /// The Message-IDs among `ids` that `channel` already has a message with
    /// (a resync fetches only the others' bodies).
    fn known_message_ids(&self, channel: String, ids: Vec<String>) -> StoreFuture<'_, Vec<String>>;

    /// The UIDs of a mailbox (under its UIDVALIDITY) that a committed batch
    /// skipped because the server never returned them, ascending.
    fn skipped_uids(&self, mailbox: MailboxGeneration) -> StoreFuture<'_, Vec<u32>>;

    /// Start a mailbox over under a new UIDVALIDITY (last UID 0). With a
    /// fence, refused ([`StoreError::Fenced`]) unless it is current.
    fn reset_checkpoint(
        &self,
        mailbox: MailboxGeneration,
        fence: Option<Fence>,
    ) -> StoreFuture<'_, ()>;

    /// The X-GM-MSGIDs among `ids` that the Gmail `account` already pulled
    /// (through any channel or label).
    fn known_gmail_ids(&self, account: String, ids: Vec<u64>) -> StoreFuture<'_, Vec<u64>>;

    /// Record a puller's state change (and its error, if any; when a
    /// throttled mailbox resumes, unix ms).
    fn set_mailbox_state(&self, change: MailboxStateChange) -> StoreFuture<'_, ()>;

    /// Every pulled mailbox's persisted status, by channel.
    fn mailbox_status(&self) -> StoreFuture<'_, Vec<MailboxStatusView>>;

    /// The channel's open alert incident, opened now (with the alert's
    /// reason and detail) if it had none; true when it is new.
    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, (AlertView, bool)>;

    /// Record that incident `id`'s email is queued.
    fn alert_notified(&self, id: i64) -> StoreFuture<'_, ()>;

    /// Close the channel's open incident (the mailbox works again); true
    /// when there was one.
    fn resolve_alert(&self, channel: String) -> StoreFuture<'_, bool>;

    /// Every open incident, oldest first.
    fn open_alerts(&self) -> StoreFuture<'_, Vec<AlertView>>;
}

/// Leases: jobs only one node may do at a time (pulling a mailbox), each
/// held by one node under an epoch that every takeover increments; writes
/// made under a lease carry a [`Fence`] and are refused when it is stale
/// (see `lease.rs`). On SQLite the one node always gets every lease.
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait LeaseStore: Send + Sync {
    /// Acquire the lease `request.name` for `request.node` until
    /// `request.ttl_ms` from now (the store's clock), or renew it when that
    /// node holds it: the epoch it is held under (unchanged by a renewal,
    /// incremented by a takeover of another node's expired lease), or
    /// `None` while another node's lease is live. A caller holding an epoch
    /// that comes back different has lost the lease meanwhile.
    fn acquire_lease(&self, request: LeaseRequest) -> StoreFuture<'_, Option<i64>>;

    /// Give the lease up (it expires now) if the fence is still current.
    fn release_lease(&self, fence: Fence) -> StoreFuture<'_, ()>;

    /// `Ok` when the fence is current, [`StoreError::Fenced`] when not: what
    /// a node asks before an action outside the store (an IMAP move) that
    /// only the lease's holder may take.
    fn check_lease(&self, fence: Fence) -> StoreFuture<'_, ()>;

    /// How many unexpired leases `node` holds (for `status`).
    fn leases_held(&self, node: String) -> StoreFuture<'_, u64>;
}

/// People and runtime state: contacts and their owners, users' availability,
/// channels' enable/disable overrides, API tokens.
///
/// Part of [`Store`]; every write resolves only after its transaction is
/// durably committed.
pub trait PeopleStore: Send + Sync {
    /// Contacts, by email.
    fn list_contacts(&self) -> StoreFuture<'_, Vec<ContactView>>;

    /// Set or clear a contact's owner (a user id). Setting one for an
    /// unknown address creates the contact (`true`); clearing it is
    /// `NotFound`.
    fn set_contact_owner(&self, email: String, owner: Option<String>) -> StoreFuture<'_, bool>;

    /// Availability set by hand, per user (absent: as configured / scheduled).
    fn user_overrides(&self) -> StoreFuture<'_, Vec<UserOverride>>;

    /// Set a user's availability by hand, now (`None`: back to as configured
    /// or scheduled). With working hours it holds until the next switch.
    fn set_user_available(&self, user: String, available: Option<bool>) -> StoreFuture<'_, ()>;

    /// Runtime enable/disable overrides of channels (absent: as configured).
    fn channel_overrides(&self) -> StoreFuture<'_, Vec<(String, bool)>>;

    /// Persist a channel's enabled state; `None` clears the override (the
    /// file's `enabled` holds again).
    fn set_channel_enabled(&self, channel: String, enabled: Option<bool>) -> StoreFuture<'_, ()>;

    /// Store an API token (its sha256, hex) for its user, with role and expiry.
    fn add_api_token(&self, token: NewApiToken) -> StoreFuture<'_, ()>;

    /// What an API token's sha256 (hex) grants: user, role, expiry (expired
    /// tokens included: the caller checks).
    fn api_token(&self, token_hash: String) -> StoreFuture<'_, Option<TokenGrant>>;

    /// A user's API tokens (ids, roles, issue and expiry times, never the tokens).
    fn api_tokens(&self, user: String) -> StoreFuture<'_, Vec<ApiTokenInfo>>;

    /// Revoke the user's token whose id starts with `id`, or all of them
    /// (`None`); returns how many. Effective at the next request.
    fn revoke_api_tokens(&self, user: String, id: Option<String>) -> StoreFuture<'_, usize>;
}
