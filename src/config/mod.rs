//! Configuration: the one place that reads the TOML file and turns it into a
//! validated, typed [`Config`].
//!
//! DESCRIPTION
//!   [`load`] reads the file, [`parse`] does the work: the text is parsed into a
//!   spanned TOML tree (`toml::de::DeTable`), walked into typed structs
//!   (`read.rs`; each table below, and `[users.working_hours]` in `hours.rs`,
//!   declares its keys once, with type and default, through
//!   `config_section!`, which generates the table's reader and `Default`), then checked as a whole (`validate.rs`): references between
//!   users, teams and channels, duplicate ids and addresses, secret files that
//!   must be readable, and the STARTTLS pair and DKIM key, which must load the
//!   way the daemon loads them (`keys`), so a
//!   `check` (or SIGHUP reload) that passes leaves nothing the daemon refuses
//!   later. Every problem becomes a [`Diagnostic`] with `FILE:LINE:COL`
//!   pointing at the offending key or value; all of them are reported at once.
//!   Warnings never fail a load; they travel in [`Config::warnings`].
//!
//! MUST NOT
//!   Read secrets into memory for later use (it only checks they are readable,
//!   or usable, and drops them; the modules that need a secret read its file), open sockets, or touch the store.
//!
//! UNTRUSTED INPUT
//!   The config file is operator input: parsing never panics, unknown keys are
//!   errors (except custom `ticket_properties`), and every value is type- and
//!   range-checked before it reaches a struct.
//!
//! Relative paths (`store.path`, TLS files, secret files, DKIM key) are resolved
//! against the directory of the config file, so a config and its `secrets/`
//! folder can be moved together.
//!
//! `config/postdesk.example.toml` documents every key; keep it in step with the
//! `///` comments below (`example_tests.rs` checks that it shows every key
//! declared here, and no other).

mod diagnostic;
mod hours;
mod read;
mod routing;
mod section;
mod validate;

#[cfg(test)]
mod example_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use diagnostic::{ConfigErrors, Diagnostic, Severity};
pub use hours::WorkingHours;
use section::config_section;

/// Read, parse and validate the config file at `path`.
///
/// Warnings do not fail the load; they are in [`Config::warnings`].
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors {
            diagnostics: vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                col: 1,
                severity: Severity::Error,
                message: format!("cannot read config file: {}", diagnostic::io_message(&e)),
            }],
        }),
    }
}

/// Parse and validate config `text` as if read from `path`.
///
/// `path` names the file in diagnostics, and its directory is the base for
/// relative paths in the config. Secret files are checked for readability.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    read::parse_and_validate(text, path)
}

/// The whole validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file this was loaded from (as given, not canonicalised).
    pub path: PathBuf,
    /// Non-fatal findings of validation (`postdesk check` prints them).
    pub warnings: Vec<Diagnostic>,
    /// `[store]`: where tickets, spool and outbox live.
    pub store: StoreConfig,
    /// `[smtp]`: the inbound SMTP listener.
    pub smtp: SmtpConfig,
    /// `[http]`: API, health and metrics listener.
    pub http: HttpConfig,
    /// `[relay]`: the outbound relay replies are sent through.
    pub relay: RelayConfig,
    /// `[outbound]`: reply sending (Message-ID, retries, DKIM).
    pub outbound: OutboundConfig,
    /// `[company]`: company-wide defaults.
    pub company: CompanyConfig,
    /// `[notifications]`: mail postdesk sends on its own (to agents).
    pub notifications: NotificationsConfig,
    /// `[alerts]`: who is told when a pulled mailbox stops.
    pub alerts: AlertsConfig,
    /// `[log]`: tracing output.
    pub log: LogConfig,
    /// `[[teams]]`, default none.
    pub teams: Vec<TeamConfig>,
    /// `[[users]]` (agents), default none.
    pub users: Vec<UserConfig>,
    /// `[[channels]]`, default none.
    pub channels: Vec<ChannelConfig>,
}

impl Config {
    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The user with this email address (case-insensitive, trimmed).
    pub fn user_by_email(&self, email: &str) -> Option<&UserConfig> {
        let email = crate::mail::normalize_email(email);
        self.users.iter().find(|u| u.email == email)
    }

    /// The team with this id.
    pub fn team(&self, id: &str) -> Option<&TeamConfig> {
        self.teams.iter().find(|t| t.id == id)
    }

    /// Users that list `team_id` in their `teams`.
    pub fn team_members<'a>(&'a self, team_id: &'a str) -> impl Iterator<Item = &'a UserConfig> {
        self.users
            .iter()
            .filter(move |u| u.teams.iter().any(|t| t == team_id))
    }

    /// The channel with this id.
    pub fn channel(&self, id: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// The channel whose address receives mail for `addr`.
    ///
    /// Case-insensitive; `local+anything@domain` matches `local@domain`.
    /// Disabled channels are returned too: the caller decides how to refuse.
    pub fn channel_for_recipient(&self, addr: &str) -> Option<&ChannelConfig> {
        let addr = crate::mail::normalize_email(addr);
        let by_addr = |a: &str| {
            self.channels
                .iter()
                .find(|c| c.address.as_deref() == Some(a))
        };
        if let Some(c) = by_addr(&addr) {
            return Some(c);
        }
        let (local, domain) = addr.rsplit_once('@')?;
        let (base, _tag) = local.split_once('+')?;
        if base.is_empty() {
            return None;
        }
        by_addr(&format!("{base}@{domain}"))
    }

    /// The company name shown for `channel`: its `company_name`, else `[company] name`.
    pub fn company_name_for<'a>(&'a self, channel: &'a ChannelConfig) -> Option<&'a str> {
        channel
            .company_name
            .as_deref()
            .or(self.company.name.as_deref())
    }

    /// The domain for Message-IDs of replies: `outbound.message_id_domain`,
    /// else `smtp.hostname`.
    pub fn message_id_domain(&self) -> &str {
        self.outbound
            .message_id_domain
            .as_deref()
            .unwrap_or(&self.smtp.hostname)
    }

    /// The From display name for a reply on `channel` written by `agent`.
    ///
    /// `company`: the company name. `agent_and_company`: `sender_name_format`
    /// (default `"{agent} from {company}"`) with `{agent}` = the agent's full
    /// name and `{company}` = the company name; without an agent, the company
    /// name. `None` when no company name is configured.
    pub fn sender_display_name(
        &self,
        channel: &ChannelConfig,
        agent: Option<&UserConfig>,
    ) -> Option<String> {
        let company = self.company_name_for(channel);
        match (channel.sender_name, agent) {
            (SenderName::AgentAndCompany, Some(agent)) => {
                let format = channel
                    .sender_name_format
                    .as_deref()
                    .unwrap_or(DEFAULT_SENDER_NAME_FORMAT);
                Some(
                    format
                        .replace("{agent}", &agent.full_name())
                        .replace("{company}", company.unwrap_or("")),
                )
            }
            _ => company.map(str::to_owned),
        }
    }
}

/// Format of `agent_and_company` sender names when a channel sets none.
pub const DEFAULT_SENDER_NAME_FORMAT: &str = "{agent} from {company}";

config_section! {
    /// `[store]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StoreConfig {
        /// Which database: `"sqlite"` (default, embedded) or `"postgres"`.
        pub kind: StoreKind = StoreKind::Sqlite,
        /// SQLite database file. Default `"var/postdesk.sqlite"`, resolved relative
        /// to the config file's directory.
        pub path: PathBuf = PathBuf::from("var/postdesk.sqlite"),
        /// SQLite busy timeout in milliseconds. Default `5000`.
        pub busy_timeout_ms: u64 = 5000,
        /// Most writes committed in one transaction by the group committer. Default `256`.
        pub group_commit_max: usize = 256,
        /// PostgreSQL: a file holding the libpq connection URL
        /// (`postgresql://user:password@host/db`), never the URL inline.
        /// Required with `kind = "postgres"`.
        pub url_file: Option<PathBuf> = None,
        /// PostgreSQL with TLS (`sslmode=verify-full` in the URL): PEM
        /// certificates of the CA(s) to trust instead of the system's roots.
        pub ca_file: Option<PathBuf> = None,
        /// PostgreSQL: connections in this node's pool. Default `16`.
        pub pool_size: usize = 16,
        /// PostgreSQL: this node's name among the nodes sharing the store
        /// (letters, digits, `.`, `_`, `-`; at most 64). Default: the machine's
        /// host name.
        pub node_id: Option<String> = None,
        /// PostgreSQL: how long a node's claim on a mailbox, a spooled message or
        /// a reply lasts without renewal before another node takes it over.
        /// Default `30`.
        pub lease_secs: u64 = 30,
    }
}

impl StoreConfig {
    /// This node's name: `node_id`, else the machine's host name (reduced
    /// to the characters a node id takes), else `postdesk`.
    pub fn node_name(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        host_node_name(&host)
    }
}

/// A node id made of a host name: letters, digits, `.`, `_`, `-` kept, at
/// most 64; `postdesk` when nothing is left.
fn host_node_name(host: &str) -> String {
    let name: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if validate::valid_node_id(&name) {
        name
    } else {
        "postdesk".into()
    }
}

/// `[store] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One SQLite file on this machine (the default).
    Sqlite,
    /// A PostgreSQL database, possibly shared by several nodes.
    Postgres,
}

config_section! {
    /// `[smtp]`: the inbound listener. Limits follow Postfix's spirit: explicit,
    /// generous, on by default.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SmtpConfig {
        /// Addresses to listen on. Default `["127.0.0.1:2525"]` (loopback only).
        pub listen: Vec<SocketAddr> = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2525)],
        /// Name in the greeting and EHLO reply. Default `"localhost"`.
        pub hostname: String = "localhost".to_owned(),
        /// Largest message accepted (SIZE), in bytes. Default `26214400` (25 MiB).
        pub max_message_size: usize = 26_214_400,
        /// Most RCPT TO per transaction. Default `100`.
        pub max_recipients: usize = 100,
        /// Longest command line, in bytes (a message's lines are bounded only by
        /// `max_message_size`). Default `4096`.
        pub max_line_length: usize = 4096,
        /// Most concurrent connections. Default `512`.
        pub max_connections: usize = 512,
        /// Most concurrent connections from one IP. Default `64`.
        pub max_connections_per_ip: usize = 64,
        /// Messages per minute accepted from one IP; `0` = no limit (like Postfix). Default `0`.
        pub max_messages_per_minute_per_ip: u32 = 0,
        /// Networks exempt from both per-IP limits (connections and message
        /// rate; `max_connections` still counts them). Default `[]`.
        pub rate_limit_exempt: Vec<ipnet::IpNet> = Vec::new(),
        /// Commands that move no mail (NOOP, RSET, VRFY, HELP, EHLO/HELO, a refused MAIL, a
        /// RCPT adding no recipient, an empty BDAT chunk) tolerated between accepted
        /// messages. Default `100`.
        pub max_junk_commands: usize = 100,
        /// Error replies tolerated before the session is closed. Default `10`.
        pub max_errors: usize = 10,
        /// Seconds a client may stay silent. Default `300`.
        pub idle_timeout_secs: u64 = 300,
        /// Longest session, in seconds. Default `3600`.
        pub session_timeout_secs: u64 = 3600,
        /// Message bytes all sessions together may hold in memory before commit; a
        /// session that would need more gets `452 4.3.1` at the end of its message
        /// (or of its BDAT chunk). Must be larger than `max_message_size`. Default
        /// `268435456` (256 MiB): ten messages of the largest default size, or
        /// thousands of ordinary ones, at once — while 512 connections × 25 MiB
        /// would otherwise allow 12.5 GiB.
        pub max_inflight_bytes: usize = 268_435_456,
        /// Longest one DATA or BDAT transfer may take, in seconds (from `354` or the
        /// first BDAT to the end of the message); then `421 4.4.2` and the partial
        /// message is dropped. Default `600`.
        pub data_timeout_secs: u64 = 600,
        /// Slowest average rate a DATA/BDAT transfer may keep, in bytes per second,
        /// once it is older than `min_data_rate_grace_secs`; below it, `421 4.4.2` and
        /// the partial message is dropped. `0` = off. Default `1024`.
        pub min_data_rate: u64 = 1024,
        /// Seconds a transfer may take before `min_data_rate` applies. Default `30`.
        pub min_data_rate_grace_secs: u64 = 30,
        /// PEM certificate chain for STARTTLS (relative to the config dir). Default none.
        /// `check` builds the acceptor from this and `tls_key`, as `postdesk run` does.
        pub tls_cert: Option<PathBuf> = None,
        /// PEM private key for STARTTLS (relative to the config dir). Default none.
        pub tls_key: Option<PathBuf> = None,
        /// Refuse MAIL FROM before STARTTLS. Default `false`.
        pub require_tls: bool = false,
        /// Seconds running sessions get to finish on shutdown. Default `30`.
        pub shutdown_grace_secs: u64 = 30,
        /// Upstream MTAs (IPs or CIDRs) whose `Authentication-Results` headers
        /// from [`authserv_id`](Self::authserv_id) are believed: typically the
        /// Postfix that receives the company's mail, checks SPF/DKIM/DMARC and
        /// forwards to postdesk. Needs `authserv_id`. Default `[]`.
        pub trusted_relays: Vec<ipnet::IpNet> = Vec::new(),
        /// The authserv-id the trusted relays write in their
        /// `Authentication-Results` (e.g. `"mx.acme.example"`); headers with
        /// another id are ignored. Default none.
        pub authserv_id: Option<String> = None,
        /// DNS used to check DKIM and SPF ourselves, for mail that does not come
        /// from a trusted relay and claims to be from a team member or a
        /// forwarder: `"system"` (resolv.conf), `"off"` (such mail counts as
        /// unauthenticated) or `"IP:PORT"` of a resolver. Default `"system"`.
        pub dns_resolver: DnsResolver = DnsResolver::System,
    }
}

/// `[smtp] dns_resolver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResolver {
    /// The system's resolvers (`/etc/resolv.conf`).
    System,
    /// No DNS checks: only trusted relays authenticate mail.
    Off,
    /// This resolver, over UDP and TCP.
    Server(SocketAddr),
}

config_section! {
    /// `[http]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HttpConfig {
        /// API, `/healthz`, `/readyz` and `/metrics` listener. Default `"127.0.0.1:8025"`.
        pub listen: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8025),
        /// Reverse proxies whose `X-Forwarded-For` is believed: a request from
        /// one of these networks counts as coming from the last address in that
        /// header that is not itself a trusted proxy (form rate limits are per
        /// client IP). Default `[]` (the TCP peer is the client).
        pub trusted_proxies: Vec<ipnet::IpNet> = Vec::new(),
        /// Seconds a client has to send a request's whole header (also the
        /// longest a kept-alive connection waits for its next request); then
        /// the connection is closed. Default `10`.
        pub header_timeout_secs: u64 = 10,
        /// Seconds a request's body has to arrive once its header has; then
        /// 408 `request_timeout` and the connection is closed. Default `30`.
        pub body_timeout_secs: u64 = 30,
        /// Most concurrent connections (the `metrics_listen` listener has its
        /// own). One over is answered 503 and closed at once. Default `256`.
        pub max_connections: usize = 256,
        /// Most concurrent connections from one IP (a `trusted_proxies` peer
        /// counts only towards `max_connections`). Default `32`.
        pub max_connections_per_ip: usize = 32,
        /// Replies and `POST /api/v1/tickets` accepted per minute per API token
        /// (a burst of this many, then one every 60/N seconds); over it: 429
        /// `rate_limited` with `Retry-After`. `0` = no limit. Default `30`.
        pub sends_per_minute_per_token: u32 = 30,
        /// Serve `/metrics` on this address only (not on `listen`). Default
        /// none: `/metrics` is on `listen`.
        pub metrics_listen: Option<SocketAddr> = None,
        /// File holding the bearer token `/metrics` requires (relative to the
        /// config dir; read at each scrape, so it can be rotated). Default none:
        /// `/metrics` needs no token.
        pub metrics_token_file: Option<PathBuf> = None,
        /// The web inbox's address as agents' browsers reach it (scheme, host,
        /// optional port and path prefix; no trailing slash), e.g.
        /// `https://desk.acme.example`: one-time sign-in links mailed to agents
        /// point there. Default none: no sign-in links (the request's `Host`
        /// is never used for them — a stranger could name their own).
        pub public_url: Option<String> = None => map read::without_trailing_slash,
    }
}

/// TLS on a client or listener connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text.
    None,
    /// Plain text upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

config_section! {
    /// `[relay]`: the SMTP relay replies are sent through.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RelayConfig {
        /// Relay host name or IP. Default `"127.0.0.1"`.
        pub host: String = "127.0.0.1".to_owned(),
        /// Relay port. Default `25`.
        pub port: u16 = 25,
        /// TLS to the relay. Default `starttls`.
        pub tls: TlsMode = TlsMode::Starttls,
        /// SMTP AUTH user; needs `password_file`. Default none (no AUTH).
        pub username: Option<String> = None,
        /// File holding the SMTP AUTH password (relative to the config dir). Default none.
        pub password_file: Option<PathBuf> = None,
        /// PEM certificate(s) trusted for the relay's TLS instead of the system
        /// roots, e.g. a private relay's CA or self-signed certificate (relative to
        /// the config dir). Default none (system roots).
        pub ca_file: Option<PathBuf> = None,
        /// Connect/command timeout in seconds (a message's transaction gets one
        /// per command, as a whole). Default `30`.
        pub timeout_secs: u64 = 30,
        /// Pooled connections to the relay. Default `4`.
        pub pool_size: u32 = 4,
    }
}

config_section! {
    /// `[outbound]`: sending replies.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OutboundConfig {
        /// Right-hand side of generated Message-IDs. Default none = `smtp.hostname`
        /// (see [`Config::message_id_domain`]).
        pub message_id_domain: Option<String> = None,
        /// First retry delay in seconds; doubles per attempt. Default `30`.
        pub retry_base_secs: u64 = 30,
        /// Longest retry delay in seconds. Default `3600`.
        pub retry_max_secs: u64 = 3600,
        /// Give up (mark failed) after this many seconds. Default `432000` (5 days, like Postfix).
        pub max_lifetime_secs: u64 = 432_000,
        /// Seconds between the sender's looks at the outbox when nothing wakes
        /// it: replies the API and the command line queue wake it at once (the
        /// command line through the wake-up socket, `outbound::wake`); other
        /// nodes' replies and a CLI without the socket wait for this. Default `1`.
        pub poll_secs: u64 = 1,
        /// `[outbound.dkim]`: sign replies. Default none (no signing).
        pub dkim: Option<DkimConfig> = None => read read::dkim,
        /// Quote the conversation's last customer message below a reply's own
        /// text (`On … wrote:`), inline images (`cid:`) included. A reply
        /// request may say otherwise. Default `false`.
        pub quote_history: bool = false,
    }
}

config_section! {
    /// `[outbound.dkim]`: all keys required when the table is present (else
    /// there is none: `read::dkim`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DkimConfig {
        /// Signing domain (`d=`). Required.
        pub domain: String = String::new() => required,
        /// Selector (`s=`). Required.
        pub selector: String = String::new() => required,
        /// PEM private key file (relative to the config dir). Required; must hold an
        /// RSA or Ed25519 key that `dkim::sign` can use.
        pub key_file: PathBuf = PathBuf::new() => required,
    }
}

config_section! {
    /// `[notifications]`: notices postdesk sends on its own — to a ticket's
    /// owner when it is assigned to them, when its customer writes again, when
    /// they are away and a contact of theirs writes (see `outbound::notify`).
    /// Never to a customer; sent through `[relay]` like replies.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NotificationsConfig {
        /// The system address notices come from (From and envelope sender),
        /// lower-cased. Default none: no notices are sent. Should not be a
        /// channel's address (bounces of notices would come back as mail).
        pub from: Option<String> = None => map read::normalize_optional_email,
        /// The From display name. Default `"postdesk"`.
        pub from_name: String = "postdesk".to_owned(),
    }
}

config_section! {
    /// `[alerts]`: a pulled mailbox that stopped — its OAuth grant refused
    /// (revoked or expired refresh token, a client secret gone), or failing for
    /// longer than `alert_after_secs` — opens an incident: a metric, first in
    /// `postdesk status`, and one email to `to` (through `[relay]`, from
    /// `[notifications] from`) per incident.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AlertsConfig {
        /// The admins emailed, lower-cased; never a channel's address. Default
        /// `[]` (metric and status only).
        pub to: Vec<String> = Vec::new() => map read::normalize_emails,
        /// How long a mailbox may fail (reconnecting with back-off) before it is
        /// an incident. Default [`ALERT_AFTER_SECS`]; at least 1.
        pub alert_after_secs: u64 = ALERT_AFTER_SECS,
    }
}

/// Default `[alerts] alert_after_secs` (15 minutes): long enough for a
/// server restart or a network blip, short enough that a help desk notices
/// before customers do.
pub const ALERT_AFTER_SECS: u64 = 900;

/// What a user asks to be told by email (`[[users]] notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A new ticket was assigned to them by routing.
    Assigned,
    /// The customer of a ticket they own wrote again.
    CustomerReplied,
}

config_section! {
    /// `[company]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CompanyConfig {
        /// Company name for sender names, unless a channel sets `company_name`. Default none.
        pub name: Option<String> = None,
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

config_section! {
    /// `[log]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogConfig {
        /// Output format. Default `human`.
        pub format: LogFormat = LogFormat::Human,
        /// `tracing` filter directive (as `RUST_LOG`). Default `"info"`.
        pub level: String = "info".to_owned(),
    }
}

config_section! {
    /// `[[teams]]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TeamConfig {
        /// Unique team id. Required.
        pub id: String = String::new() => required,
        /// Display name. Default none (the id is shown).
        pub name: Option<String> = None,
    }
}

config_section! {
    /// `[[users]]`: an agent.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UserConfig {
        /// Unique user id. Required.
        pub id: String = String::new() => required,
        /// The agent's own address, lower-cased and trimmed. Required, unique.
        pub email: String = String::new() => read read::user_email,
        /// Default `""`.
        pub first_name: String = String::new(),
        /// Default `""`.
        pub last_name: String = String::new(),
        /// Has a paid seat; only licensed users may be named in routing. Default `true`.
        pub licensed: bool = true,
        /// Available for assignment at startup. Default `true`.
        pub available: bool = true,
        /// Team ids this user belongs to. Default `[]`.
        pub teams: Vec<String> = Vec::new(),
        /// What the user can handle (`"billing"`, `"de"`), lower-cased: routing
        /// rules require skills. Default `[]`.
        pub skills: Vec<String> = Vec::new() => map read::lower,
        /// Events the user is told of by email (needs `[notifications] from`).
        /// Default `[]`. (An owner who is away when a contact of theirs writes
        /// is always told, see `contact_owner`.)
        pub notify: Vec<NotifyEvent> = Vec::new(),
        /// `[users.working_hours]`: a weekly schedule that switches availability
        /// automatically. Default none (availability changes only by hand).
        pub working_hours: Option<WorkingHours> = None => read read::working_hours,
    }
}

impl UserConfig {
    /// `"First Last"`, or whichever part is set; the email when neither is.
    pub fn full_name(&self) -> String {
        let name = format!("{} {}", self.first_name.trim(), self.last_name.trim());
        let name = name.trim();
        if name.is_empty() {
            self.email.clone()
        } else {
            name.to_owned()
        }
    }
}

/// How mail reaches a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Forwarded or relayed to our SMTP listener.
    Forward,
    /// Gmail mailbox pulled over IMAP with OAuth 2.
    Gmail,
    /// Office 365 mailbox pulled over IMAP with OAuth 2.
    Office365,
    /// Any IMAP server, password login.
    Imap,
    /// Web form submissions over HTTP.
    Form,
}

impl ChannelKind {
    /// The config spelling (`"office365"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Gmail => "gmail",
            Self::Office365 => "office365",
            Self::Imap => "imap",
            Self::Form => "form",
        }
    }

    /// Mail kinds need an `address`; `form` does not.
    pub fn is_mail(self) -> bool {
        !matches!(self, Self::Form)
    }

    /// Kinds pulled over IMAP (need `[channels.imap]` or kind defaults).
    pub fn is_pulled(self) -> bool {
        matches!(self, Self::Gmail | Self::Office365 | Self::Imap)
    }

    /// Kinds that log in with OAuth 2 (need `[channels.oauth]`).
    pub fn uses_oauth(self) -> bool {
        matches!(self, Self::Gmail | Self::Office365)
    }
}

/// What customers see in From on replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderName {
    /// `"{agent} from {company}"` (or the channel's `sender_name_format`).
    AgentAndCompany,
    /// The company name only.
    #[default]
    Company,
}

/// How new tickets are assigned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assign {
    /// Unassigned.
    #[default]
    Nobody,
    /// One of `users` or members of `teams`, balanced by open-ticket count.
    UsersAndTeams,
    /// The contact's owner, if eligible; else unassigned.
    ContactOwner,
}

config_section! {
    /// `[[channels]]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ChannelConfig {
        /// Unique channel id. Required.
        pub id: String = String::new() => required,
        /// `forward | gmail | office365 | imap | form`. Required.
        pub kind: ChannelKind = ChannelKind::Form => required,
        /// The team address, lower-cased and trimmed. Required for mail kinds,
        /// unique across channels, never a user's address. Default none (forms).
        pub address: Option<String> = None => map read::normalize_optional_email,
        /// A disabled channel accepts no new mail but keeps its tickets. Default `true`.
        pub enabled: bool = true,
        /// From display name on replies. Default `company`.
        pub sender_name: SenderName = SenderName::Company,
        /// Format for `agent_and_company` with `{agent}` and `{company}` tokens.
        /// Default none = `"{agent} from {company}"`.
        pub sender_name_format: Option<String> = None,
        /// Company name for this channel. Default none = `[company] name`.
        pub company_name: Option<String> = None,
        /// HTML signature appended to help-desk replies; `{{ sender.full_name }}`,
        /// `{{ sender.first_name }}`, `{{ sender.last_name }}` are replaced. Default `""`.
        pub signature_html: String = String::new(),
        /// A team member's forward belongs to the original sender. Default `true`.
        pub original_sender_of_forwards: bool = true,
        /// Extra addresses trusted to forward (e.g. a Google Group), lower-cased. Default `[]`.
        pub forwarders: Vec<String> = Vec::new() => map read::normalize_emails,
        /// `[channels.ticket_properties]`: values set on new tickets. Default empty.
        pub ticket_properties: TicketProperties = TicketProperties::default() => read read::ticket_properties,
        /// `[channels.routing]`: assignment of new tickets. Default `assign = "nobody"`.
        pub routing: RoutingConfig = RoutingConfig::default() => section RoutingConfig::read,
        /// `[channels.imap]`: mailbox to pull. Required for `imap`; optional
        /// overrides for `gmail`/`office365`. Default none.
        pub imap: Option<ImapConfig> = None => optional_section ImapConfig::read,
        /// `[channels.oauth]`: OAuth 2 login. Required for `gmail`/`office365`. Default none.
        pub oauth: Option<OAuthConfig> = None => read read::oauth,
        /// `[channels.smtp]`: the provider's SMTP server replies are sent through
        /// with XOAUTH2 (`gmail`/`office365` only). Default none = per kind
        /// (see [`ChannelConfig::effective_smtp`]).
        pub smtp: Option<ChannelSmtpConfig> = None => optional_section ChannelSmtpConfig::read,
        /// `[channels.form]`: the web form of a `form` channel. Default
        /// [`FormConfig::default`] (any fields; `email`, `name`, `subject`, `message`).
        pub form: FormConfig = FormConfig::default() => section FormConfig::read,
    }
}

impl ChannelConfig {
    /// IMAP host: `imap.host`, else `imap.gmail.com` (gmail) /
    /// `outlook.office365.com` (office365); `None` for other kinds without one.
    pub fn effective_imap_host(&self) -> Option<&str> {
        if let Some(host) = self.imap.as_ref().and_then(|i| i.host.as_deref()) {
            return Some(host);
        }
        match self.kind {
            ChannelKind::Gmail => Some("imap.gmail.com"),
            ChannelKind::Office365 => Some("outlook.office365.com"),
            _ => None,
        }
    }

    /// The authserv-id whose `Authentication-Results` header is believed on
    /// this channel's pulled mail: `imap.authserv_id`, else the provider's
    /// (see [`ImapConfig::authserv_id`]).
    pub fn effective_authserv_id(&self) -> Option<&str> {
        if let Some(id) = self.imap.as_ref().and_then(|i| i.authserv_id.as_deref()) {
            return Some(id);
        }
        match self.kind {
            ChannelKind::Gmail => Some("mx.google.com"),
            ChannelKind::Office365 => Some(""),
            _ => None,
        }
    }

    /// IMAP port: `imap.port`, else 993 for implicit TLS (the default) and 143 otherwise.
    pub fn effective_imap_port(&self) -> u16 {
        match &self.imap {
            Some(ImapConfig { port: Some(p), .. }) => *p,
            Some(ImapConfig {
                tls: TlsMode::None | TlsMode::Starttls,
                ..
            }) => 143,
            _ => 993,
        }
    }

    /// The daily download budget in bytes: `imap.download_bytes_per_day`,
    /// else [`GMAIL_DOWNLOAD_BYTES_PER_DAY`] for gmail; 0 = no limit.
    pub fn download_bytes_per_day(&self) -> u64 {
        match self.imap.as_ref().and_then(|i| i.download_bytes_per_day) {
            Some(n) => n,
            None if self.kind == ChannelKind::Gmail => GMAIL_DOWNLOAD_BYTES_PER_DAY,
            None => 0,
        }
    }

    /// IMAP TLS mode: `imap.tls`, default implicit.
    pub fn effective_imap_tls(&self) -> TlsMode {
        self.imap.as_ref().map_or(TlsMode::Implicit, |i| i.tls)
    }

    /// Provider SMTP for replies (host, port, TLS, CA file): `[channels.smtp]`
    /// keys, else `smtp.gmail.com` (gmail) / `smtp.office365.com` (office365)
    /// on port 587 with STARTTLS; `None` for kinds that send through `[relay]`.
    /// The user the channel logs in as (IMAP, and XOAUTH2 SMTP):
    /// `imap.username`, else its address.
    pub fn login_user(&self) -> String {
        self.imap
            .as_ref()
            .map(|i| i.username.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| self.address.clone())
            .unwrap_or_default()
    }

    pub fn effective_smtp(&self) -> Option<(&str, u16, TlsMode, Option<&Path>)> {
        let default_host = match self.kind {
            ChannelKind::Gmail => "smtp.gmail.com",
            ChannelKind::Office365 => "smtp.office365.com",
            _ => return None,
        };
        let s = self.smtp.as_ref();
        let tls = s.map_or(TlsMode::Starttls, |s| s.tls);
        let port = s.and_then(|s| s.port).unwrap_or(match tls {
            TlsMode::Implicit => 465,
            _ => 587,
        });
        Some((
            s.and_then(|s| s.host.as_deref()).unwrap_or(default_host),
            port,
            tls,
            s.and_then(|s| s.ca_file.as_deref()),
        ))
    }

    /// Most connections to the provider's SMTP server at once (`[channels.smtp]
    /// connections`, default [`PROVIDER_CONNECTIONS`]).
    pub fn smtp_connections(&self) -> usize {
        self.smtp
            .as_ref()
            .map_or(PROVIDER_CONNECTIONS, |s| s.connections)
            .max(1) as usize
    }

    /// OAuth token endpoint: `oauth.token_url`, else Google's (gmail) or
    /// Microsoft's common endpoint (office365); `None` for other kinds without one.
    pub fn effective_token_url(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        let oauth = self.oauth.as_ref();
        if let Some(url) = oauth.and_then(|o| o.token_url.as_deref()) {
            return Some(Cow::Borrowed(url));
        }
        match self.kind {
            ChannelKind::Gmail => Some(Cow::Borrowed("https://oauth2.googleapis.com/token")),
            ChannelKind::Office365 => Some(match oauth.and_then(|o| o.tenant.as_deref()) {
                Some(tenant) => Cow::Owned(format!(
                    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
                )),
                None => Cow::Borrowed("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
            }),
            _ => None,
        }
    }

    /// The scope of the `client_credentials` flow: `oauth.scope`, else
    /// [`O365_APP_SCOPE`] on office365.
    pub fn effective_app_scope(&self) -> Option<&str> {
        if let Some(scope) = self.oauth.as_ref().and_then(|o| o.scope.as_deref()) {
            return Some(scope);
        }
        (self.kind == ChannelKind::Office365).then_some(O365_APP_SCOPE)
    }
}

config_section! {
    /// `[channels.ticket_properties]`: any key besides these three is a custom
    /// string property.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TicketProperties {
        /// Default none (shown as `-`).
        pub pipeline: Option<String> = None,
        /// Default none: new tickets then get `ingest::route::DEFAULT_STATUS`.
        pub status: Option<String> = None,
        /// Default none.
        pub priority: Option<String> = None,
        /// Other keys, string values only. Default empty.
        pub custom: BTreeMap<String, String> = BTreeMap::new() => rest read::custom_properties,
    }
}

config_section! {
    /// `[channels.routing]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RoutingConfig {
        /// Strategy. Default `nobody`.
        pub assign: Assign = Assign::Nobody,
        /// Licensed user ids eligible under `users_and_teams`. Default `[]`.
        pub users: Vec<String> = Vec::new(),
        /// Team ids whose licensed members are eligible under `users_and_teams`. Default `[]`.
        pub teams: Vec<String> = Vec::new(),
        /// Assign only to users available now, else leave unassigned. Default
        /// `true`. (Under `contact_owner` the owner keeps the ticket while away
        /// and is told by email.)
        pub only_available: bool = true,
        /// `[[channels.routing.rules]]`: tried in order before `assign`; the
        /// first rule that matches the message and has an eligible user with
        /// its skills chooses the owner. Default `[]`.
        pub rules: Vec<RoutingRule> = Vec::new() => read read::routing_rules,
    }
}

config_section! {
    /// `[[channels.routing.rules]]`: when a new ticket's first message matches
    /// every condition given (each list: any of its values), its owner is
    /// chosen by balancing among the eligible users with all of `skills`. At
    /// least one condition is required.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RoutingRule {
        /// Shown on the ticket as what chose its owner. Default `"rule N"`
        /// (N counted from 1 in the channel).
        pub name: String = String::new() => read read::rule_name,
        /// Words found in the subject or the body (case-insensitive). Default `[]`.
        pub keywords: Vec<String> = Vec::new(),
        /// Words found in the subject (case-insensitive). Default `[]`.
        pub subject_keywords: Vec<String> = Vec::new(),
        /// Languages detected in the subject and body, ISO 639-1 (`"de"`) or
        /// 639-3 (`"deu"`) codes, lower-cased. Default `[]`.
        pub languages: Vec<String> = Vec::new() => map read::lower,
        /// The sender's domain, or a domain it is under (`"acme.example"`
        /// matches `eu.acme.example`), lower-cased. Default `[]`.
        pub sender_domains: Vec<String> = Vec::new() => map read::lower,
        /// The new ticket's properties (`pipeline`, `status`, `priority` or a
        /// custom one) equal to these values. Default empty.
        pub properties: BTreeMap<String, String> = BTreeMap::new() => read read::string_map,
        /// A web form's fields equal to these values (case-insensitive; form
        /// channels). Default empty.
        pub fields: BTreeMap<String, String> = BTreeMap::new() => read read::string_map,
        /// Skills the owner must have, every one, lower-cased. Default `[]`.
        pub skills: Vec<String> = Vec::new() => map read::lower,
        /// Users to choose among; with `teams` empty too, the channel's routing
        /// `users` and `teams`, and if it names none, every user. Default `[]`.
        pub users: Vec<String> = Vec::new(),
        /// Teams whose members to choose among (see `users`). Default `[]`.
        pub teams: Vec<String> = Vec::new(),
    }
}

impl RoutingRule {
    /// Whether the rule has at least one condition (a rule without any would
    /// match everything: `check` refuses it).
    pub fn has_condition(&self) -> bool {
        !(self.keywords.is_empty()
            && self.subject_keywords.is_empty()
            && self.languages.is_empty()
            && self.sender_domains.is_empty()
            && self.properties.is_empty()
            && self.fields.is_empty())
    }
}

config_section! {
    /// `[channels.imap]`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ImapConfig {
        /// Server. Default none = per kind (see [`ChannelConfig::effective_imap_host`]);
        /// required for `imap` channels.
        pub host: Option<String> = None,
        /// Port. Default none = 993 for implicit TLS, 143 otherwise.
        pub port: Option<u16> = None,
        /// Default `implicit`.
        pub tls: TlsMode = TlsMode::Implicit,
        /// Login name. Default the channel's `address`.
        pub username: String = String::new(),
        /// File holding the password (relative to the config dir); required for
        /// `imap` channels, unused with OAuth. Default none.
        pub password_file: Option<PathBuf> = None,
        /// Folder to pull. Default `"INBOX"`.
        pub folder: String = "INBOX".to_owned(),
        /// Use IDLE when the server offers it. Default `true`.
        pub idle: bool = true,
        /// Seconds between polls without IDLE (and between IDLE renewals). Default `60`.
        pub poll_interval_secs: u64 = 60,
        /// Most messages fetched per round. Default `100`.
        pub batch_size: u32 = 100,
        /// Most bytes fetched per round, by the sizes the server reports
        /// (RFC822.SIZE); a message larger than this, or of no reported size, is
        /// fetched alone. A batch is held in memory while it is committed and the
        /// next one fetched, so a mailbox holds up to about twice this. Default
        /// [`BATCH_BYTES`]; at least 1.
        pub batch_bytes: u64 = BATCH_BYTES,
        /// Folder to move pulled mail to, after it is committed (created if missing;
        /// needs the server's MOVE, or UIDPLUS for COPY + EXPUNGE); must not be
        /// `folder` itself. Default none (mailbox left untouched).
        pub move_to: Option<String> = None,
        /// The authserv-id of the provider's own `Authentication-Results`
        /// header, which says whether pulled mail passed SPF/DKIM/DMARC. Only
        /// the topmost such header is believed. Default per kind:
        /// `"mx.google.com"` (gmail), `""` (office365: Microsoft writes its
        /// header without an id), none (imap: pulled mail is unauthenticated).
        pub authserv_id: Option<String> = None,
        /// Most bytes downloaded a day (by the sizes the server reports): a
        /// backlog is pulled at this rate, an hour's share at most at once.
        /// Default none = [`GMAIL_DOWNLOAD_BYTES_PER_DAY`] for gmail (Gmail
        /// refuses more than 2,500 MB a day, shared with the account's other
        /// clients), no limit for others; `0` = no limit.
        pub download_bytes_per_day: Option<u64> = None,
    }
}

/// Default `download_bytes_per_day` of gmail channels: 2,000 MB, leaving a
/// fifth of Gmail's daily 2,500 MB to the account's other clients.
pub const GMAIL_DOWNLOAD_BYTES_PER_DAY: u64 = 2_000_000_000;

/// Default `[channels.imap] batch_bytes` (32 MiB): a batch of 100 messages
/// with large attachments must not take gigabytes of memory.
pub const BATCH_BYTES: u64 = 32 * 1024 * 1024;

config_section! {
    /// `[channels.smtp]`: where a `gmail`/`office365` channel's replies go (SASL
    /// XOAUTH2 with the channel's OAuth token). Every key optional.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ChannelSmtpConfig {
        /// Server. Default none = `smtp.gmail.com` (gmail) / `smtp.office365.com` (office365).
        pub host: Option<String> = None,
        /// Port. Default none = 465 for implicit TLS, 587 otherwise.
        pub port: Option<u16> = None,
        /// Default `starttls`.
        pub tls: TlsMode = TlsMode::Starttls,
        /// PEM certificate(s) trusted instead of the system roots (relative to the
        /// config dir). Default none (system roots).
        pub ca_file: Option<PathBuf> = None,
        /// Most connections open to the provider at once for this channel's
        /// replies; they are reused from one reply to the next. Default
        /// [`PROVIDER_CONNECTIONS`]; at least 1.
        pub connections: u32 = PROVIDER_CONNECTIONS,
    }
}

/// Default `[channels.smtp] connections`: providers limit concurrent SMTP
/// sessions per mailbox, and a backlog of replies must not open one each.
pub const PROVIDER_CONNECTIONS: u32 = 3;

config_section! {
    /// `[channels.form]`: how a `form` channel reads `POST /api/v1/forms/{id}/submissions`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FormConfig {
        /// `[[channels.form.fields]]`: the form's fields. Default `[]` = accept any
        /// posted field as visible text. When fields are declared, other posted
        /// keys are ignored (not stored).
        pub fields: Vec<FormField> = Vec::new() => read read::form_fields,
        /// Field holding the customer's address (the contact). Default `"email"`.
        pub email_field: String = "email".to_owned(),
        /// Field holding the customer's name. Default `"name"`.
        pub name_field: String = "name".to_owned(),
        /// Field holding the ticket name (subject). Default `"subject"`; when the
        /// submission has none, the ticket is named `"{label}: {name or email}"`.
        pub subject_field: String = "subject".to_owned(),
        /// Field holding the description (the first message's text). Default `"message"`.
        pub description_field: String = "message".to_owned(),
        /// A field real visitors leave empty (hidden by the site's CSS); a
        /// submission that fills it is answered as a success and not stored.
        /// Default none.
        pub honeypot_field: Option<String> = None,
        /// Submissions accepted per minute from one client IP; `0` = no limit. Default `10`.
        pub rate_limit_per_minute: u32 = 10,
        /// Largest value of one field, in bytes. Default `65536`.
        pub max_field_size: usize = 65_536,
        /// Shown in ticket names. Default none = the channel id.
        pub label: Option<String> = None,
        /// Where a browser posting a plain HTML form (URL-encoded) is sent after
        /// a successful submission (303 See Other), e.g. the site's thank-you
        /// page. Default none (answer 201 JSON).
        pub redirect_url: Option<String> = None,
        /// Web origins (`https://www.acme.example`, or `"*"`) whose pages may post
        /// with JavaScript (CORS). Default `[]` (server-side and plain HTML form
        /// posts only).
        pub allowed_origins: Vec<String> = Vec::new(),
    }
}

impl FormConfig {
    /// The declared field with this name.
    pub fn field(&self, name: &str) -> Option<&FormField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether pages from `origin` may post with JavaScript.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

config_section! {
    /// `[[channels.form.fields]]`: one field of a web form.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FormField {
        /// The posted key (`<input name=...>`). Required, unique in the form.
        pub name: String = String::new() => required,
        /// Shown next to the value in the conversation. Default the name.
        pub label: Option<String> = None,
        /// Input type; `email` and `number` values are checked. Default `text`.
        pub kind: FormFieldType = FormFieldType::Text => key "type",
        /// A submission without a non-empty value is refused (400). Default `false`.
        pub required: bool = false,
        /// Stored with the submission but not shown in the conversation. Default `false`.
        pub hidden: bool = false,
    }
}

impl FormField {
    /// The label, else the name.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// A form field's `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormFieldType {
    /// One line of text.
    #[default]
    Text,
    /// Several lines of text.
    Textarea,
    /// An email address (checked).
    Email,
    /// A number (checked).
    Number,
    /// A telephone number.
    Tel,
    /// A URL.
    Url,
    /// A choice among options.
    Select,
    /// A checkbox (any value = checked).
    Checkbox,
}

config_section! {
    /// `[channels.oauth]`: `client_id` required when present; `refresh_token_file`
    /// for the delegated flow (`read::oauth`), `client_secret_file` for the
    /// app-only one.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OAuthConfig {
        /// How access tokens are obtained. Default `refresh_token` (delegated).
        pub flow: OAuthFlow = OAuthFlow::RefreshToken,
        /// Token endpoint. Default none = per kind (see [`ChannelConfig::effective_token_url`]).
        pub token_url: Option<String> = None,
        /// Office 365: the directory (tenant id or domain) whose token endpoint
        /// is used, `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
        /// Default none (the `common` endpoint; `client_credentials` needs one or
        /// `token_url`).
        pub tenant: Option<String> = None,
        /// OAuth client id. Required.
        pub client_id: String = String::new() => required,
        /// File holding the client secret (relative to the config dir). Default
        /// none (public client); required for `client_credentials`.
        pub client_secret_file: Option<PathBuf> = None,
        /// File holding the refresh token (relative to the config dir). Required
        /// for `refresh_token`, must be readable; unused for `client_credentials`.
        /// Rewritten (atomically, mode 0600) when the provider rotates the token, so its
        /// directory must be writable by postdesk.
        pub refresh_token_file: Option<PathBuf> = None,
        /// Scope asked for in the `client_credentials` flow. Default
        /// [`O365_APP_SCOPE`] (office365).
        pub scope: Option<String> = None,
    }
}

/// The scope of an Office 365 app-only token for IMAP and SMTP.
pub const O365_APP_SCOPE: &str = "https://outlook.office365.com/.default";

/// `[channels.oauth] flow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// Delegated: a person consented once; the refresh token in
    /// `refresh_token_file` is exchanged for access tokens (and rotated).
    #[default]
    RefreshToken,
    /// App-only (Office 365): the client id and secret alone are exchanged
    /// for an access token to any mailbox the app was granted; no refresh
    /// token, nothing written back.
    ClientCredentials,
}

impl OAuthConfig {
    /// The files whose change ends a `needs_reauth` pause: the refresh
    /// token's and the client secret's.
    pub fn secret_files(&self) -> impl Iterator<Item = &PathBuf> {
        self.refresh_token_file
            .iter()
            .chain(self.client_secret_file.iter())
    }
}
