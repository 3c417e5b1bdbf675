//! Versioned schema migrations for the SQLite store.
//!
//! Each entry in [`MIGRATIONS`] moves the schema from version `i` to `i + 1`
//! (`PRAGMA user_version`). Migrations only ever get appended; a database whose
//! version is newer than this binary knows is refused rather than guessed at.

/// Schema steps, applied in order inside one transaction each.
pub const MIGRATIONS: &[&str] = &[
    // 1: spool, messages, contacts, tickets, users' and channels' state,
    //    outbox and mailbox checkpoints.
    r#"
CREATE TABLE spool (
    id            INTEGER PRIMARY KEY,
    received_at   INTEGER NOT NULL,          -- unix milliseconds
    source        TEXT NOT NULL,             -- smtp | imap | form | api
    mail_from     TEXT NOT NULL,             -- envelope sender, '' for <>
    rcpt_to       TEXT NOT NULL,             -- JSON array of envelope recipients
    client_ip     TEXT,
    helo          TEXT,
    tls           INTEGER NOT NULL DEFAULT 0,
    channel       TEXT,                      -- set when the source names it (pull, form)
    size          INTEGER NOT NULL,          -- bytes of raw
    content_hash  TEXT NOT NULL,             -- sha256 hex of raw
    state         TEXT NOT NULL DEFAULT 'pending', -- pending | done | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    processed_at  INTEGER
);
CREATE INDEX spool_pending ON spool(id) WHERE state = 'pending';

-- The exact bytes of each spooled message, never modified. Kept apart from
-- `spool` so that state changes rewrite a small row, not the whole message.
CREATE TABLE spool_raw (
    id   INTEGER PRIMARY KEY REFERENCES spool(id),
    raw  BLOB NOT NULL
);

CREATE TABLE contacts (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,        -- normalised: trimmed, lower-case
    name        TEXT,
    owner       TEXT,                        -- user id
    created_at  INTEGER NOT NULL
);

CREATE TABLE tickets (
    id                 INTEGER PRIMARY KEY,  -- the ticket number
    channel            TEXT NOT NULL,
    contact_id         INTEGER NOT NULL REFERENCES contacts(id),
    subject            TEXT NOT NULL,
    pipeline           TEXT,
    status             TEXT,
    priority           TEXT,
    properties         TEXT NOT NULL DEFAULT '{}', -- custom string properties, JSON
    owner              TEXT,                 -- user id or NULL
    unassigned_reason  TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX tickets_owner ON tickets(owner, status);
CREATE INDEX tickets_contact ON tickets(contact_id);

CREATE TABLE ticket_participants (
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id),
    contact_id  INTEGER NOT NULL REFERENCES contacts(id),
    PRIMARY KEY (ticket_id, contact_id)
);

CREATE TABLE messages (
    id                 INTEGER PRIMARY KEY,
    ticket_id          INTEGER NOT NULL REFERENCES tickets(id),
    channel            TEXT NOT NULL,
    direction          TEXT NOT NULL,        -- inbound | outbound | note
    spool_id           INTEGER REFERENCES spool(id), -- raw bytes of inbound mail
    dedupe_key         TEXT,                 -- 'mid:<message-id>' or 'sha256:<hash>'
    message_id         TEXT,                 -- without angle brackets
    in_reply_to        TEXT,
    refs               TEXT,                 -- space separated message ids
    from_email         TEXT,
    from_name          TEXT,
    to_addrs           TEXT,                 -- JSON array
    subject            TEXT,
    date               TEXT,
    text               TEXT,
    html               TEXT,
    author             TEXT,                 -- user id for outbound and notes
    classification     TEXT,                 -- JSON
    sender_resolution  TEXT,                 -- JSON
    delivery           TEXT,                 -- outbound: queued | sent | failed
    delivery_detail    TEXT,
    created_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_dedupe ON messages(channel, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_ticket ON messages(ticket_id, id);

CREATE TABLE user_state (
    id                TEXT PRIMARY KEY,
    available         INTEGER,               -- NULL: as configured (or as the working hours say)
    available_at      INTEGER,               -- unix ms of the manual change
    last_assigned_seq INTEGER            -- global sequence: larger = assigned more recently
);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,            -- sha256 hex of the bearer token
    user_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE channel_state (
    id       TEXT PRIMARY KEY,
    enabled  INTEGER                          -- NULL: as configured
);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    message_id       INTEGER NOT NULL REFERENCES messages(id),
    channel          TEXT NOT NULL,
    mail_from        TEXT NOT NULL,
    rcpt_to          TEXT NOT NULL,           -- JSON array
    raw              BLOB NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued', -- queued | sent | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'queued';

CREATE TABLE mailbox_checkpoints (
    channel      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (channel, folder)
);
"#,
    // 2: pulled mailboxes' status and the spool's (channel, hash) dedupe index.
    super::mailbox::MIGRATION_2,
    // 3: inbound text stored by reference into the raw message when it is
    //    the raw message's tail verbatim (`text` is then NULL).
    r#"
ALTER TABLE messages ADD COLUMN text_at INTEGER; -- byte offset into spool_raw.raw
"#,
    // 4: inbound mail is found by Message-ID through messages_dedupe (its key
    //    is 'mid:' || message_id); only outbound replies need an index of
    //    their own. A random-keyed index costs a page write per message.
    r#"
DROP INDEX messages_message_id;
CREATE INDEX messages_outbound_id ON messages(message_id, channel) WHERE direction = 'outbound';
"#,
    // 5: the composed bytes of each outbox entry in a table of their own (as
    //    spool_raw): every attempt and the final `sent` rewrite a small row,
    //    not the whole message.
    r#"
CREATE TABLE outbox_raw (
    id   INTEGER PRIMARY KEY REFERENCES outbox(id),
    raw  BLOB NOT NULL
);
INSERT INTO outbox_raw (id, raw) SELECT id, raw FROM outbox;
ALTER TABLE outbox DROP COLUMN raw;
"#,
    // 6: UIDs a pulled mailbox skipped because the server never returned
    //    them (left in the folder by move_to).
    super::mailbox::MIGRATION_6,
    // 7: the outbox counted by triggers (`outbox_tally`): what metrics,
    //    readiness and `outbox status` read stays a few rows.
    super::outbound::MIGRATION_7,
    // 8: failed spool entries indexed (rare), so counting them reads the
    //    index instead of the whole spool.
    r#"
CREATE INDEX spool_failed ON spool(id) WHERE state = 'failed';
"#,
    // 9: a secret per ticket for outgoing subject tags (`[#N-secret]`):
    //    only mail naming it (or from the ticket's own people) continues a
    //    ticket by tag. Existing tickets get one too. `thread_note` says why
    //    a message that named a ticket was opened apart from it; `cc_addrs`
    //    whom an inbound message also addressed.
    r#"
ALTER TABLE tickets ADD COLUMN secret TEXT NOT NULL DEFAULT '';
UPDATE tickets SET secret = lower(hex(randomblob(5)));
ALTER TABLE messages ADD COLUMN thread_note TEXT;
ALTER TABLE messages ADD COLUMN cc_addrs TEXT;               -- JSON array, inbound
"#,
    // 10: API tokens carry a role (`agent` | `admin`) and an optional expiry
    //     (unix ms). Tokens issued before roles existed could do everything:
    //     they become `admin`; new ones default to `agent` (the CLI's).
    r#"
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
"#,
    // 11: the agents' web inbox: users' password hashes (argon2id, PHC
    //     strings) with their web role, sign-in sessions and one-time
    //     sign-in links (both stored as sha256 of their secret), the ticket
    //     list's order (last activity, which a delivery change also bumps),
    //     a counter of changes for live pages, and a full-text index of messages (subject, body, sender) kept in
    //     step by triggers.
    super::web::MIGRATION_11,
    // 12: notices in the outbox (no ticket message), the install's notice
    //     key, and which routing rule chose a ticket's owner.
    super::outbound::MIGRATION_12,
    // 13: Gmail X-GM-MSGIDs per account (one ticket per message whatever its
    //     labels), when a throttled mailbox resumes, mailbox alert incidents.
    super::mailbox::MIGRATION_13,
    // 14: nothing on SQLite. PostgreSQL's step 14 makes the store shareable
    //     by several nodes (the node registry, spool claims, the balancing
    //     sequence); a SQLite file has one node, so its schema does not
    //     change (the step keeps both backends' numbers equal).
    "",
    // 15: leases (a job one node does at a time, e.g. pulling a mailbox:
    //     owner, epoch, expiry). On SQLite one node holds them all.
    super::lease::MIGRATION_15,
    // 16: a new email's Idempotency-Key (per author) and the ticket it
    //     opened: a retried compose opens no second ticket.
    r#"
CREATE TABLE compose_keys (
    author      TEXT NOT NULL,
    key         TEXT NOT NULL,
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (author, key)
);
"#,
    // 17: nothing on SQLite. PostgreSQL's step 17 adds the web inbox's
    //     full-text index, which SQLite has had since step 11 (FTS5,
    //     `message_search`); the step keeps both backends' numbers equal.
    "",
    // 18: the inbox's view counts read one covering index, not the tickets.
    "CREATE INDEX tickets_counts ON tickets(channel, status, owner);",
    // 19: nothing on SQLite. PostgreSQL's step 19 makes its search index's
    //     accent and punctuation folding cheaper (same words).
    "",
    // 20: a search reads each match's ticket off the full-text index's
    //     rowid instead of looking the message up.
    super::web::MIGRATION_20,
    // 21: nothing on SQLite. PostgreSQL's step 21 indexes a message's words
    //     after its transaction instead of inside it; SQLite's index is
    //     written with the message (one process, no one waits on its lock).
    "",
    // 22: nothing on SQLite. PostgreSQL's step 22 compresses raw spool
    //     bytes and bodies with lz4 (SQLite stores them uncompressed).
    "",
    // 23: nothing on SQLite. PostgreSQL's step 23 has postdesk make the
    //     search words instead of the server (SQLite's FTS5 makes them in
    //     process already).
    "",
];
