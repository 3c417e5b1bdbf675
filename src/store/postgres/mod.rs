//! PostgreSQL implementation of [`Store`] (`[store] kind = "postgres"`).
//!
//! A `deadpool-postgres` pool of `tokio-postgres` connections (TLS when the
//! URL's `sslmode` asks for it, verified: [`tls`]; see docs/postgres.md). Reads take a
//! pooled connection each. Writes go through one group committer per node
//! ([`writer`]), as the SQLite store's writer thread does: every write
//! waiting when a transaction starts (up to `group_commit_max`) runs in it,
//! each in its own savepoint so that one failing write does not undo the
//! others, and each is answered only after the COMMIT returned — with
//! `synchronous_commit = on`, after PostgreSQL flushed its WAL. The schema
//! is migrated at open ([`migrations`]), once, under an advisory lock.
//!
//! Must not: make routing, threading or dedupe decisions (it reads the rows
//! they need inside the transaction and asks `ingest`, as SQLite does), log
//! the connection URL (it may hold a password), or trust what mail says (all
//! of it is bound as parameters).

#[cfg(test)]
pub(crate) mod cluster;
mod inbound;
mod indexer;
mod lease;
mod listen;
mod mailbox;
mod migrations;
mod nodes;
mod outbox;
mod people;
mod sql;
mod tickets;
pub mod tls;
mod web;
mod words;
mod writer;

#[cfg(test)]
mod tests;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

pub(crate) use indexer::index_missing;
pub use migrations::MIGRATIONS;
pub use nodes::Node;

use super::*;
use sql::Db;

/// How long a connection attempt may take when the URL sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// What `url_file` holds, parsed: its text must be a libpq URL
/// (`postgresql://user:password@host:port/db?…`) or key=value string that
/// this backend can use. The error never repeats the text (it may hold a
/// password).
pub fn parse_url(text: &str) -> Result<tokio_postgres::Config, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "the file is empty: write a libpq URL such as postgresql://postdesk@127.0.0.1/postdesk"
                .into(),
        );
    }
    let mut config: tokio_postgres::Config = tls::normalize_sslmode(text)
        .parse()
        .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
    if !tls::uses_tls(&config) {
        // `prefer` (tokio-postgres's default): TLS if offered, unverified.
        // postdesk uses TLS only when asked, and then verified.
        config.ssl_mode(SslMode::Disable);
    }
    if config.get_dbname().is_none() {
        return Err("the URL names no database (postgresql://user@host/DATABASE)".into());
    }
    Ok(config)
}

/// Read and parse the URL file (`[store] url_file`).
pub fn load_url(file: &std::path::Path) -> Result<tokio_postgres::Config, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    parse_url(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Whether every host of `config` is this machine (a unix socket,
/// `localhost`, a loopback address): a password sent there stays on it.
pub fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// A PostgreSQL error as the store reports it: full disk and contention
/// keep their own variants, a lost connection is temporary, the rest is
/// [`StoreError::Backend`] with its text.
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(code) = e.code() {
        if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
            return StoreError::Full;
        }
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            return StoreError::Busy;
        }
    }
    // A DbError's Display is only its message: say which statement failed
    // to whoever reads the log.
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // tokio-postgres's Display leaves out the cause ("error performing
        // TLS handshake"): add it ("invalid peer certificate: UnknownIssuer").
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    };
    StoreError::Backend(format!("postgres: {detail}"))
}

/// A connection failure's text with `hint` appended (what TLS checked).
fn hinted(e: StoreError, hint: &str) -> StoreError {
    match e {
        StoreError::Backend(m) => StoreError::Backend(format!("{m}{hint}")),
        other => other,
    }
}

/// A pool error: no connection to be had (timeout, refused) is temporary.
fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_err(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(_) => StoreError::Busy,
        other => StoreError::Backend(format!("postgres pool: {other}")),
    }
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    pool: Pool,
    writer: writer::Writer,
    /// Indexes the words of stored messages for search (schema step 21).
    _indexer: indexer::Indexer,
    /// What `status` shows as the store's path: host and database, never
    /// the user or password.
    describe: String,
    /// This node among those sharing the database ([`PostgresStore::with_node`]).
    node: Node,
    /// How to open the connection that listens for other nodes' changes.
    listen_with: (tokio_postgres::Config, tls::Connector),
    /// That connection's task, started by the first [`Store::changes`].
    listener: std::sync::OnceLock<listen::Listener>,
    /// A test store's private cluster, stopped when the store is dropped.
    #[cfg(test)]
    cluster: Option<cluster::Cluster>,
}

impl PostgresStore {
    /// [`PostgresStore::open_tls`] with the system's roots for TLS.
    pub async fn open(
        config: tokio_postgres::Config,
        pool_size: usize,
        group_commit_max: usize,
    ) -> Result<Self, StoreError> {
        Self::open_tls(config, None, pool_size, group_commit_max).await
    }

    /// Connect (pool of `pool_size`; TLS verified against `ca_file` or the
    /// system's roots when the URL asks for TLS), migrate the schema, start
    /// the group committer. Fails when the server cannot be reached.
    pub async fn open_tls(
        config: tokio_postgres::Config,
        ca_file: Option<&std::path::Path>,
        pool_size: usize,
        group_commit_max: usize,
    ) -> Result<Self, StoreError> {
        let describe = describe(&config);
        let config = with_defaults(config);
        let connector =
            tls::connector(ca_file, tls::uses_tls(&config)).map_err(StoreError::Invalid)?;
        let listen_with = (config.clone(), connector);
        let pool = migrated_pool(config, ca_file, pool_size.max(2)).await?;
        let indexer = indexer::Indexer::start(pool.clone());
        let writer = writer::Writer::start(pool.clone(), group_commit_max.max(1), indexer.waker());
        Ok(PostgresStore {
            pool,
            writer,
            _indexer: indexer,
            describe,
            node: Node::default(),
            listen_with,
            listener: std::sync::OnceLock::new(),
            #[cfg(test)]
            cluster: None,
        })
    }

    /// This store as node `node` (its id and lease): whose spool claims it
    /// takes and renews, what it registers. Default [`Node::default`].
    pub fn with_node(mut self, node: Node) -> Self {
        self.node = node;
        self
    }

    /// Transactions the group committer has committed since open.
    pub fn commit_count(&self) -> u64 {
        self.writer.commit_count()
    }

    /// A pooled connection for a read.
    async fn db(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// `config` with what the URL left out: a connect timeout, and
/// `application_name` (what `pg_stat_activity` shows).
fn with_defaults(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("postdesk");
    }
    config
}

/// A pool of `size` connections to a database migrated to this binary's
/// schema (the store's, and `store copy`'s target).
pub(crate) async fn migrated_pool(
    config: tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
    size: usize,
) -> Result<Pool, StoreError> {
    let config = with_defaults(config);
    let explain = tls::explain(&config, ca_file);
    let connector = tls::connector(ca_file, tls::uses_tls(&config)).map_err(StoreError::Invalid)?;
    let manager = Manager::from_config(
        config,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
    let mut conn = pool
        .get()
        .await
        .map_err(|e| hinted(pool_err(e), &explain))?;
    migrations::migrate(&mut conn).await?;
    drop(conn);
    Ok(pool)
}

/// A fresh, empty store on a private cluster of its own (stopped when the
/// store is dropped): what the conformance suite and the unit tests of
/// ingest, pull and outbound open on this backend.
#[cfg(test)]
pub(crate) async fn open_test_store() -> std::sync::Arc<dyn Store> {
    let cluster = cluster::Cluster::start();
    let config = parse_url(&cluster.url("postdesk")).expect("url");
    let mut store = PostgresStore::open(config, 8, 256).await.expect("open");
    store.cluster = Some(cluster);
    std::sync::Arc::new(store)
}

/// `postgres://HOST/DB` for `status`: where the store is, no credentials.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "postgres://{host}/{}",
        config.get_dbname().unwrap_or_default()
    )
}

/// Try the configured database: connect, and read its schema version.
/// What `postdesk check --connect` runs; nothing is written.
pub async fn try_connect(
    config: tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> Result<String, StoreError> {
    let mut config = config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let connector = tls::connector(ca_file, tls::uses_tls(&config)).map_err(StoreError::Invalid)?;
    let (client, conn) = config
        .connect(connector)
        .await
        .map_err(|e| hinted(pg_err(e), &tls::explain(&config, ca_file)))?;
    let task = tokio::spawn(conn);
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    let schema = client
        .query_opt(
            "SELECT MAX(version) FROM postdesk_schema WHERE to_regclass('postdesk_schema') IS NOT NULL",
            &[],
        )
        .await;
    let schema = match schema {
        Ok(Some(row)) => row.try_get::<_, Option<i32>>(0).ok().flatten(),
        _ => None,
    };
    drop(client);
    task.abort();
    Ok(match schema {
        Some(v) => format!(
            "PostgreSQL {version}, schema version {v} (this postdesk: {})",
            MIGRATIONS.len()
        ),
        None => format!("PostgreSQL {version}, empty (postdesk creates its schema at start)"),
    })
}

/// Run `db`-taking async work: `sql::Db` is what pooled connections deref to.
type Work<'c, T> = sql::BoxFut<'c, Result<T, StoreError>>;

impl PostgresStore {
    /// Run `f` in the group committer's current transaction; resolves after
    /// the durable commit.
    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Db) -> Work<'c, T> + Send + 'static,
    {
        Box::pin(self.writer.run(f))
    }
}

impl Store for PostgresStore {
    fn status(&self) -> StoreFuture<'_, StoreStatus> {
        Box::pin(async move {
            let db = self.db().await?;
            let q = sql::queues(&db).await?;
            let count = |table: &'static str| {
                let db = &db;
                async move { sql::count(db, &format!("SELECT COUNT(*) FROM {table}")).await }
            };
            Ok(StoreStatus {
                path: self.describe.clone(),
                spool_pending: q.spool_pending,
                spool_failed: q.spool_failed,
                spool_total: count("spool").await?,
                tickets: count("tickets").await?,
                messages: count("messages").await?,
                contacts: count("contacts").await?,
                outbox_queued: q.outbox.queued,
                outbox_failed: q.outbox.failed,
            })
        })
    }

    fn queues(&self) -> StoreFuture<'_, Queues> {
        Box::pin(async move { sql::queues(&*self.db().await?).await })
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        let listener = self.listener.get_or_init(|| {
            let (config, connector) = self.listen_with.clone();
            listen::Listener::start(config, connector)
        });
        Some(listener.subscribe())
    }
}

impl SpoolStore for PostgresStore {
    fn spool(&self, msg: NewSpool) -> StoreFuture<'_, SpoolEntry> {
        // Hash on the caller's task, not in the committer.
        let hash = content_hash(&msg.raw);
        // Claimed by this node: its handoff ingests it; another node only
        // once the claim expired (this node died before ingesting it).
        let claim = Some((self.node.id.clone(), self.node.lease_ms()));
        Box::pin(async move {
            let (id, received_at, row) = self
                .writer
                .spool(writer::SpoolRow { msg, hash, claim })
                .await?;
            Ok(SpoolEntry::stored(id, received_at, row.msg, row.hash))
        })
    }

    fn pending_spool(&self, after: SpoolId, limit: usize) -> StoreFuture<'_, Vec<SpoolEntry>> {
        Box::pin(
            async move { nodes::claim_pending(&*self.db().await?, &self.node, after, limit).await },
        )
    }

    fn apply_inbound(
        &self,
        plans: Vec<InboundPlan>,
        decide: Decide,
    ) -> StoreFuture<'_, Vec<Result<InboundOutcome, StoreError>>> {
        self.write(move |db| {
            Box::pin(async move {
                // Most jobs have no plan that fails: all plans run under one
                // savepoint, one subtransaction rather than one a plan (a
                // transaction with more than 64 makes every snapshot taken
                // beside it look further, and each costs its statements).
                // If one fails, that is undone and the plans run again one
                // by one, each in its own savepoint, so a bad plan fails
                // alone. The last savepoint is released with the job's.
                let mut together = sql::Savepoints::new(db, "plans");
                let all = together
                    .run(|db| {
                        Box::pin(async {
                            let out = inbound::apply_plans(db, &plans, decide).await?;
                            Ok(out.into_iter().map(Ok).collect::<Vec<_>>())
                        })
                    })
                    .await?;
                if let Ok(out) = all {
                    return Ok(out);
                }
                let mut out = Vec::with_capacity(plans.len());
                let mut each = sql::Savepoints::new(db, "plan");
                for plan in &plans {
                    out.push(
                        each.run(|db| Box::pin(inbound::apply_plan(db, plan, decide)))
                            .await?,
                    );
                }
                Ok(out)
            })
        })
    }

    fn submit(&self, submission: Submission, decide: Decide) -> StoreFuture<'_, InboundOutcome> {
        let Submission { spool, messages } = submission;
        let hash = content_hash(&spool.raw);
        self.write(move |db| Box::pin(inbound::submit(db, spool, hash, messages, decide)))
    }

    fn fail_spool(&self, id: SpoolId, reason: String) -> StoreFuture<'_, ()> {
        self.write(move |db| Box::pin(async move { inbound::fail_spool(db, id, &reason).await }))
    }

    fn raw(&self, id: SpoolId) -> StoreFuture<'_, Vec<u8>> {
        Box::pin(async move { inbound::raw(&*self.db().await?, id).await })
    }
}

impl TicketStore for PostgresStore {
    fn list_tickets(&self, filter: TicketFilter) -> StoreFuture<'_, Vec<TicketSummary>> {
        Box::pin(async move { tickets::list_tickets(&*self.db().await?, &filter).await })
    }

    fn ticket(&self, number: TicketId) -> StoreFuture<'_, TicketDetail> {
        Box::pin(async move { tickets::ticket(&*self.db().await?, number).await })
    }

    fn add_note(&self, ticket: TicketId, author: String, text: String) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { tickets::add_note(db, ticket, &author, &text, now_ms()).await })
        })
    }

    fn update_ticket(&self, ticket: TicketId, update: TicketUpdate) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { tickets::update_ticket(db, ticket, &update, now_ms()).await })
        })
    }

    fn open_outbound_ticket(&self, opening: OutboundOpening) -> StoreFuture<'_, TicketId> {
        self.write(move |db| {
            Box::pin(async move { tickets::open_outbound_ticket(db, &opening, now_ms()).await })
        })
    }

    fn reply_context(&self, ticket: TicketId, recent: usize) -> StoreFuture<'_, ReplyContext> {
        Box::pin(async move { tickets::reply_context(&*self.db().await?, ticket, recent).await })
    }

    fn quote_source(&self, ticket: TicketId) -> StoreFuture<'_, Option<QuoteSource>> {
        Box::pin(async move { tickets::quote_source(&*self.db().await?, ticket).await })
    }

    fn ticket_raws(&self, ticket: TicketId) -> StoreFuture<'_, Vec<Vec<u8>>> {
        Box::pin(async move { tickets::ticket_raws(&*self.db().await?, ticket).await })
    }
}

impl OutboxStore for PostgresStore {
    fn queue_reply(&self, reply: NewReply, replay: Replay) -> StoreFuture<'_, QueuedReply> {
        self.write(move |db| {
            Box::pin(async move { outbox::queue_reply(db, &reply, replay, now_ms()).await })
        })
    }

    fn queue_notice(&self, notice: NewNotice) -> StoreFuture<'_, OutboxId> {
        self.write(move |db| {
            Box::pin(async move { outbox::queue_notice(db, &notice, now_ms()).await })
        })
    }

    fn notice_key(&self) -> StoreFuture<'_, String> {
        Box::pin(async move { outbox::notice_key(&*self.db().await?).await })
    }

    fn due_outbox(
        &self,
        claim: OutboxClaim,
        now_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxItem>> {
        Box::pin(async move { outbox::claim_due(&*self.db().await?, &claim, now_ms, limit).await })
    }

    fn extend_outbox_claims(&self, claim: OutboxClaim, ids: Vec<OutboxId>) -> StoreFuture<'_, ()> {
        Box::pin(async move { outbox::extend_claims(&*self.db().await?, &claim, &ids).await })
    }

    fn next_outbox_due(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move { outbox::next_due(&*self.db().await?).await })
    }

    fn record_attempt(&self, id: OutboxId, outcome: AttemptOutcome) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { outbox::record_attempt(db, id, &outcome, now_ms()).await })
        })
    }

    fn flush_outbox(&self) -> StoreFuture<'_, usize> {
        self.write(|db| Box::pin(outbox::flush_outbox(db, now_ms())))
    }
}

impl MailboxStore for PostgresStore {
    fn checkpoint(&self, channel: String, folder: String) -> StoreFuture<'_, Option<Checkpoint>> {
        Box::pin(async move { mailbox::checkpoint(&*self.db().await?, &channel, &folder).await })
    }

    fn spool_pulled(&self, batch: PulledBatch) -> StoreFuture<'_, PulledOutcome> {
        self.write(move |db| {
            Box::pin(async move {
                if let Some(fence) = &batch.fence {
                    lease::check(db, fence).await?;
                }
                mailbox::spool_pulled(db, &batch).await
            })
        })
    }

    fn known_message_ids(&self, channel: String, ids: Vec<String>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(
            async move { mailbox::known_message_ids(&*self.db().await?, &channel, &ids).await },
        )
    }

    fn skipped_uids(&self, mailbox: MailboxGeneration) -> StoreFuture<'_, Vec<u32>> {
        Box::pin(async move { mailbox::skipped_uids(&*self.db().await?, &mailbox).await })
    }

    fn reset_checkpoint(
        &self,
        mailbox: MailboxGeneration,
        fence: Option<Fence>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move {
                if let Some(fence) = &fence {
                    lease::check(db, fence).await?;
                }
                mailbox::reset_checkpoint(db, &mailbox).await
            })
        })
    }

    fn set_mailbox_state(&self, change: MailboxStateChange) -> StoreFuture<'_, ()> {
        self.write(move |db| Box::pin(async move { mailbox::set_state(db, &change).await }))
    }

    fn known_gmail_ids(&self, account: String, ids: Vec<u64>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(async move { mailbox::known_gmail_ids(&*self.db().await?, &account, &ids).await })
    }

    fn mailbox_status(&self) -> StoreFuture<'_, Vec<MailboxStatusView>> {
        Box::pin(async move { mailbox::statuses(&*self.db().await?).await })
    }

    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, (AlertView, bool)> {
        self.write(move |db| Box::pin(async move { mailbox::open_alert(db, &alert).await }))
    }

    fn alert_notified(&self, id: i64) -> StoreFuture<'_, ()> {
        self.write(move |db| Box::pin(async move { mailbox::alert_notified(db, id).await }))
    }

    fn resolve_alert(&self, channel: String) -> StoreFuture<'_, bool> {
        self.write(move |db| Box::pin(async move { mailbox::resolve_alert(db, &channel).await }))
    }

    fn open_alerts(&self) -> StoreFuture<'_, Vec<AlertView>> {
        Box::pin(async move { mailbox::open_alerts(&*self.db().await?).await })
    }
}

impl LeaseStore for PostgresStore {
    fn acquire_lease(&self, request: LeaseRequest) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move { lease::acquire(&*self.db().await?, &request).await })
    }

    fn release_lease(&self, fence: Fence) -> StoreFuture<'_, ()> {
        Box::pin(async move { lease::release(&*self.db().await?, &fence).await })
    }

    fn check_lease(&self, fence: Fence) -> StoreFuture<'_, ()> {
        Box::pin(async move { lease::check(&*self.db().await?, &fence).await })
    }

    fn leases_held(&self, node: String) -> StoreFuture<'_, u64> {
        Box::pin(async move { lease::held(&*self.db().await?, &node).await })
    }
}

impl PeopleStore for PostgresStore {
    fn list_contacts(&self) -> StoreFuture<'_, Vec<ContactView>> {
        Box::pin(async move { people::list_contacts(&*self.db().await?).await })
    }

    fn set_contact_owner(&self, email: String, owner: Option<String>) -> StoreFuture<'_, bool> {
        self.write(move |db| {
            Box::pin(async move { people::set_contact_owner(db, &email, owner.as_deref()).await })
        })
    }

    fn user_overrides(&self) -> StoreFuture<'_, Vec<UserOverride>> {
        Box::pin(async move { people::user_overrides(&*self.db().await?).await })
    }

    fn set_user_available(&self, user: String, available: Option<bool>) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { people::set_user_available(db, &user, available).await })
        })
    }

    fn channel_overrides(&self) -> StoreFuture<'_, Vec<(String, bool)>> {
        Box::pin(async move { people::channel_overrides(&*self.db().await?).await })
    }

    fn set_channel_enabled(&self, channel: String, enabled: Option<bool>) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { people::set_channel_enabled(db, &channel, enabled).await })
        })
    }

    fn add_api_token(&self, token: NewApiToken) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { people::insert_token(db, &token, now_ms()).await })
        })
    }

    fn api_token(&self, token_hash: String) -> StoreFuture<'_, Option<TokenGrant>> {
        Box::pin(async move { people::token_grant(&*self.db().await?, &token_hash).await })
    }

    fn api_tokens(&self, user: String) -> StoreFuture<'_, Vec<ApiTokenInfo>> {
        Box::pin(async move { people::tokens_of(&*self.db().await?, &user).await })
    }

    fn revoke_api_tokens(&self, user: String, id: Option<String>) -> StoreFuture<'_, usize> {
        self.write(move |db| {
            Box::pin(async move {
                let n = people::revoke_tokens(db, &user, id.as_deref()).await?;
                // Revoking all of a user's tokens signs their browsers out too.
                if id.is_none() {
                    web::end_sessions(db, &user).await?;
                }
                Ok(n)
            })
        })
    }
}

impl WebStore for PostgresStore {
    fn set_web_user(&self, user: String, record: WebUser) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { web::set_web_user(db, &user, &record, now_ms()).await })
        })
    }

    fn web_user(&self, user: String) -> StoreFuture<'_, Option<WebUser>> {
        Box::pin(async move { web::web_user(&*self.db().await?, &user).await })
    }

    fn create_session(&self, session: NewWebSession) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { web::create_session(db, &session, now_ms()).await })
        })
    }

    fn web_session(&self, id_hash: String) -> StoreFuture<'_, Option<WebSession>> {
        Box::pin(async move { web::web_session(&*self.db().await?, &id_hash).await })
    }

    fn end_session(&self, id_hash: String) -> StoreFuture<'_, ()> {
        self.write(move |db| Box::pin(async move { web::end_session(db, &id_hash).await }))
    }

    fn end_sessions(&self, user: String) -> StoreFuture<'_, usize> {
        self.write(move |db| Box::pin(async move { web::end_sessions(db, &user).await }))
    }

    fn create_signin_link(&self, link: NewSigninLink) -> StoreFuture<'_, ()> {
        self.write(move |db| {
            Box::pin(async move { web::create_signin_link(db, &link, now_ms()).await })
        })
    }

    fn use_signin_link(&self, token_hash: String, now: i64) -> StoreFuture<'_, Option<String>> {
        self.write(move |db| {
            Box::pin(async move { web::use_signin_link(db, &token_hash, now).await })
        })
    }

    fn inbox(&self, query: InboxQuery) -> StoreFuture<'_, Vec<TicketSummary>> {
        Box::pin(async move { web::inbox(&mut self.db().await?, &query).await })
    }

    fn inbox_counts(&self, user: String) -> StoreFuture<'_, InboxCounts> {
        Box::pin(async move { web::inbox_counts(&*self.db().await?, &user).await })
    }

    fn message_html(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move { web::message_html(&*self.db().await?, ticket, position).await })
    }

    fn message_raw(&self, ticket: TicketId, position: usize) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move { web::message_raw(&*self.db().await?, ticket, position).await })
    }

    fn contact_view(&self, email: String) -> StoreFuture<'_, Option<ContactView>> {
        Box::pin(async move { web::contact_view(&*self.db().await?, &email).await })
    }

    fn activity(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move { web::activity(&*self.db().await?).await })
    }
}

impl NodeStore for PostgresStore {
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeView>> {
        Box::pin(async move { nodes::list(&*self.db().await?).await })
    }

    fn heartbeat(&self, beat: NodeBeat) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            nodes::heartbeat(&*self.db().await?, &self.node, &beat).await?;
            Ok(true)
        })
    }

    fn leave(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { nodes::leave(&*self.db().await?, &self.node).await })
    }
}
