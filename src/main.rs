//! The `postdesk` command: the daemon and the operator's tools.
//!
//! Every command reads the same configuration file and the same store the
//! daemon uses (SQLite in WAL mode: safe while the daemon runs). Read
//! commands take `--json` for scripts; exit codes: 0 ok, 1 runtime error,
//! 2 bad configuration or usage.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use postdesk::config::{self, Config, LogFormat};
use postdesk::daemon;
use postdesk::store::{Store, StoreError, TicketFilter, TicketId};

#[derive(Parser)]
#[command(
    name = "postdesk",
    version,
    about = "Support mail to help-desk tickets"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "POSTDESK_CONFIG",
        default_value = "/etc/postdesk/postdesk.toml"
    )]
    config: PathBuf,
    /// Log format (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Validate the configuration: exit 0, or 2 with FILE:LINE:COL: message lines.
    Check {
        /// Also connect to the configured store (PostgreSQL: its server and
        /// schema version); exit 1 when it cannot be reached.
        #[arg(long)]
        connect: bool,
    },
    /// Tickets.
    #[command(subcommand)]
    Tickets(TicketsCmd),
    /// Contacts.
    #[command(subcommand)]
    Contacts(ContactsCmd),
    /// Channels: list, enable, disable, reset.
    #[command(subcommand)]
    Channels(ChannelsCmd),
    /// Reply to a ticket as an agent: composed and durably queued (the
    /// daemon's sender delivers it). Same code path as the HTTP API.
    #[command(group(
        clap::ArgGroup::new("body").required(true).multiple(true).args(["text", "html"])
    ))]
    Reply {
        /// The ticket number.
        number: i64,
        /// The agent (user id) the reply is from.
        #[arg(long = "as", value_name = "USER_ID")]
        as_user: String,
        /// Plain-text body (this, --html, or both).
        #[arg(long)]
        text: Option<String>,
        /// HTML body (a text part is made from it when --text is absent).
        #[arg(long)]
        html: Option<String>,
        /// Subject instead of `Re: <ticket subject>` (the `[#N]` token is kept).
        #[arg(long)]
        subject: Option<String>,
        /// Attach a file (repeatable).
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Cc the ticket's other participants.
        #[arg(long)]
        cc_thread: bool,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Write a new email to a contact from a channel: opens a ticket owned by
    /// the agent, with the email queued as its first message.
    Compose {
        /// The channel it is sent from (its address is the From).
        #[arg(long)]
        channel: String,
        /// The contact's address.
        #[arg(long)]
        to: String,
        /// The contact's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        subject: String,
        /// The agent (user id) it is from.
        #[arg(long = "as", value_name = "USER_ID")]
        as_user: String,
        /// Plain-text body.
        #[arg(long)]
        text: String,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Users: list, availability, API tokens.
    #[command(subcommand)]
    Users(UsersCmd),
    /// The outbox of replies.
    #[command(subcommand)]
    Outbox(OutboxCmd),
    /// Channels, queues and store counts.
    Status {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Run parse, classification and sender resolution on one message without
    /// storing it ("why did this ticket go to X?"). FILE may be `-`.
    Resolve {
        file: PathBuf,
        /// Resolve as if received on this channel (default: the first
        /// channel whose address is among the message's recipients).
        #[arg(long)]
        channel: Option<String>,
        /// Judge the file as mail received over SMTP from this address:
        /// a trusted relay's Authentication-Results, or our own DKIM/SPF
        /// checks. Without it, the file is judged as if a trusted relay had
        /// passed it (team members' forwards count).
        #[arg(long)]
        peer: Option<std::net::IpAddr>,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TicketsCmd {
    /// List tickets, newest first.
    List {
        /// Only this channel's (a channel id).
        #[arg(long)]
        channel: Option<String>,
        /// Only tickets with this status (e.g. new).
        #[arg(long)]
        status: Option<String>,
        /// Only this user's (a user id).
        #[arg(long)]
        owner: Option<String>,
        /// Only this contact's (an email address, any case).
        #[arg(long)]
        contact: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket with its messages.
    Show {
        /// The ticket number.
        number: i64,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ContactsCmd {
    /// List contacts.
    List {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Set the owner of a contact (used by `contact_owner` routing).
    Owner {
        email: String,
        /// A user id.
        #[arg(required_unless_present = "clear")]
        user: Option<String>,
        /// Remove the owner instead.
        #[arg(long, conflicts_with = "user")]
        clear: bool,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// List users with licence, teams and availability now.
    List {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Mark a user available (holds until their working hours next switch).
    Available { id: String },
    /// Mark a user away: routing skips them (with `only_available`).
    Away { id: String },
    /// Issue a new API bearer token for USER; printed once, stored hashed
    /// (its id, for `revoke`, goes to stderr).
    Token {
        user: String,
        /// `agent`: read, reply, note, update tickets, own availability.
        /// `admin`: also channels, contact owners, others' availability,
        /// opening tickets (`POST /api/v1/tickets`).
        #[arg(long, default_value = "agent", value_parser = ["agent", "admin"])]
        role: String,
        /// Lifetime, e.g. `90d`, `12h`, `30m`. Default: no expiry.
        #[arg(long, value_parser = postdesk::api::auth::parse_lifetime)]
        expires: Option<std::time::Duration>,
    },
    /// Set USER's web inbox password, read from standard input (one line;
    /// at least 8 characters), and their web role; stored as an argon2id
    /// hash. Signs their browsers out. `--clear` removes the password.
    Password {
        user: String,
        /// `agent`, or `admin` (the web inbox's admin pages).
        #[arg(long, default_value = "agent", value_parser = ["agent", "admin"])]
        role: String,
        /// Remove the password (sign-in links still work).
        #[arg(long)]
        clear: bool,
    },
    /// List USER's API tokens: id, role, when issued and when they expire
    /// (never the tokens).
    Tokens {
        user: String,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of USER's API tokens by its id (at least 8 hex digits, as
    /// `tokens` shows them), or all of them; effective at the next request.
    Revoke {
        user: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ChannelsCmd {
    /// List channels with their state.
    List {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Enable a channel (persisted; the daemon picks it up within seconds).
    Enable { id: String },
    /// Disable a channel: SMTP answers 450 for it, its tickets stay.
    Disable { id: String },
    /// Drop the run-time enable/disable of a channel: the file's `enabled`
    /// holds again (the daemon picks it up within seconds).
    Reset { id: String },
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Make every queued reply due now (like `postqueue -f`).
    Flush,
    /// Counts by state.
    Status {
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

/// Log targets of dependencies that write protocol lines verbatim — IMAP
/// `LOGIN` with the password, `AUTHENTICATE` responses with OAuth tokens,
/// SMTP `AUTH` — and whole messages: always off, whatever `RUST_LOG` or
/// `[log] level` says (lettre's `tracing` feature is also off in Cargo.toml).
const SECRET_LOGGING_TARGETS: &[&str] = &["async_imap::imap_stream", "lettre"];

fn init_logging(config: Option<&Config>, arg: Option<LogFormatArg>) {
    use tracing_subscriber::EnvFilter;
    let level = config
        .map(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    for target in SECRET_LOGGING_TARGETS {
        if let Ok(d) = format!("{target}=off").parse() {
            filter = filter.add_directive(d);
        }
    }
    let json = match arg {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Human) => false,
        None => config.is_some_and(|c| matches!(c.log.format, LogFormat::Json)),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The configuration; its warnings are printed unless `quiet` (the daemon
/// logs them instead, so that a JSON log stays JSON).
fn load_config(path: &Path, quiet: bool) -> Result<Config, ExitCode> {
    match config::load(path) {
        Ok(c) => {
            if !quiet {
                for w in &c.warnings {
                    eprintln!("{w}");
                }
            }
            Ok(c)
        }
        Err(errors) => {
            eprint!("{errors}");
            if !errors.to_string().ends_with('\n') {
                eprintln!();
            }
            Err(ExitCode::from(2))
        }
    }
}

/// `check --connect`: reach the configured store and say what is there.
fn check_connect(config: &Config) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt
            .block_on(daemon::probe_store(config))
            .map_err(anyhow::Error::from),
        Err(e) => Err(anyhow::anyhow!("cannot start a runtime: {e}")),
    };
    match result {
        Ok(what) => {
            println!("store: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("store: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    postdesk::install_crypto_provider();
    let daemon = matches!(cli.command, Command::Run);
    if !daemon {
        // A command's output piped into `head` ends it quietly, as for any
        // Unix tool, instead of a panic in println! on the broken pipe. The
        // daemon keeps Rust's default (SIGPIPE ignored: a peer that went
        // away is an EPIPE on its socket, handled there).
        // SAFETY: called before any thread is started; SIG_DFL is a valid
        // disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Check { connect } = cli.command {
        return match load_config(&cli.config, false) {
            Ok(c) => {
                println!(
                    "{}: ok ({} channels, {} users, {} teams)",
                    cli.config.display(),
                    c.channels.len(),
                    c.users.len(),
                    c.teams.len()
                );
                for note in c
                    .channels
                    .iter()
                    .filter_map(postdesk::pull::oauth::permissions_needed)
                {
                    println!("note: {note}");
                }
                if connect {
                    check_connect(&c)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(code) => code,
        };
    }
    let config = match load_config(&cli.config, daemon) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(Some(&config), cli.log_format);
    if daemon {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postdesk: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postdesk: {e:#}");
            exit_code(&e)
        }
    }
}

/// A command line that names something that does not exist (a user, a
/// channel, a ticket, a contact) or asks for something invalid: exit 2, as
/// a bad configuration or clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn usage(message: String) -> anyhow::Error {
    Usage(message).into()
}

/// 2 for usage errors (ours, and the store's or the outbound path's
/// "not found" / "invalid"), 1 for everything else (runtime errors).
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use postdesk::outbound::OutboundError;
    let usage = e.downcast_ref::<Usage>().is_some()
        || matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::NotFound(_) | StoreError::Invalid(_))
        )
        || matches!(
            e.downcast_ref::<OutboundError>(),
            Some(
                OutboundError::TicketNotFound(_)
                    | OutboundError::UnknownUser(_)
                    | OutboundError::Compose(_)
                    | OutboundError::TooLarge(_)
                    | OutboundError::Invalid(_)
                    | OutboundError::Store(StoreError::NotFound(_) | StoreError::Invalid(_))
            )
        );
    if usage {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    Ok(daemon::open_store(config).await?)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn dispatch(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Check { .. } => Ok(()),
        Command::Run => run_daemon(config).await,
        Command::Tickets(TicketsCmd::List {
            channel,
            status,
            owner,
            contact,
            limit,
            json,
        }) => {
            // A typo in a filter would list nothing, as if there were no
            // such tickets: say so — on stderr, and list anyway, since a
            // user or channel removed from the file still has its tickets
            // (an ex-agent's, to reassign).
            if let Some(c) = channel.as_deref().filter(|c| config.channel(c).is_none()) {
                eprintln!("postdesk: note: no channel {c:?} in the configuration");
            }
            if let Some(u) = owner.as_deref().filter(|u| config.user(u).is_none()) {
                eprintln!("postdesk: note: no user {u:?} in the configuration");
            }
            let store = open_store(&config).await?;
            let tickets = store
                .list_tickets(TicketFilter {
                    channel,
                    status,
                    owner,
                    contact,
                    limit,
                })
                .await?;
            if json {
                return print_json(&tickets);
            }
            println!(
                "{:>6}  {:<12} {:<10} {:<10} {:<30} {:>4}  SUBJECT",
                "NUMBER", "CHANNEL", "STATUS", "OWNER", "CONTACT", "MSGS"
            );
            for t in tickets {
                let h = &t.head;
                println!(
                    "{:>6}  {:<12} {:<10} {:<10} {:<30} {:>4}  {}",
                    // The number itself: TicketId's Display ignores widths.
                    h.number.0,
                    h.channel,
                    h.status.as_deref().unwrap_or("-"),
                    h.owner.as_deref().unwrap_or("-"),
                    h.contact.email,
                    t.messages,
                    h.subject
                );
            }
            Ok(())
        }
        Command::Tickets(TicketsCmd::Show { number, json }) => {
            let store = open_store(&config).await?;
            let t = store.ticket(TicketId(number)).await?;
            if json {
                return print_json(&t);
            }
            let h = &t.head;
            println!("Ticket #{} — {}", h.number, h.subject);
            println!(
                "  channel: {}  status: {}  priority: {}  pipeline: {}",
                h.channel,
                h.status.as_deref().unwrap_or("-"),
                h.priority.as_deref().unwrap_or("-"),
                h.pipeline.as_deref().unwrap_or("-")
            );
            match h.contact.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => println!("  contact: {name} <{}>", h.contact.email),
                None => println!("  contact: {}", h.contact.email),
            }
            match (&h.owner, &h.unassigned_reason) {
                (Some(o), _) => println!("  owner: {o}"),
                (None, Some(r)) => println!("  owner: none ({r})"),
                (None, None) => println!("  owner: none"),
            }
            if let Some(by) = &h.routed_by {
                println!("  routed by: {by}");
            }
            for m in &t.messages {
                println!();
                // A note is its author's (a user id), else its sender's (a
                // forwarder who is not a user); a message without a Date
                // header shows when it was stored.
                let who = match m.direction.as_str() {
                    "note" => m.author.as_deref().or(m.from.as_deref()),
                    _ => m.from.as_deref().or(m.author.as_deref()),
                };
                let stored = postdesk::store::ms_to_rfc3339(m.created_at);
                println!(
                    "--- {} from {} at {}",
                    m.direction,
                    who.unwrap_or("?"),
                    m.date.as_deref().unwrap_or(&stored)
                );
                if let Some(method) = m.sender_resolution.get("method").and_then(|v| v.as_str()) {
                    println!("    sender resolution: {method}");
                }
                if let Some(d) = &m.delivery {
                    println!(
                        "    delivery: {d} {}",
                        m.delivery_detail.as_deref().unwrap_or("")
                    );
                }
                println!("{}", m.text.as_deref().unwrap_or("").trim_end());
            }
            Ok(())
        }
        Command::Contacts(ContactsCmd::List { json }) => {
            let store = open_store(&config).await?;
            let contacts = store.list_contacts().await?;
            if json {
                return print_json(&contacts);
            }
            println!("{:<40} {:<30} {:<10} TICKETS", "EMAIL", "NAME", "OWNER");
            for c in contacts {
                println!(
                    "{:<40} {:<30} {:<10} {}",
                    c.email,
                    c.name.as_deref().unwrap_or("-"),
                    c.owner.as_deref().unwrap_or("-"),
                    c.tickets
                );
            }
            Ok(())
        }
        Command::Contacts(ContactsCmd::Owner {
            email,
            user,
            clear: _,
        }) => {
            if let Some(u) = &user
                && config.user(u).is_none()
            {
                return Err(usage(format!("unknown user {u:?}")));
            }
            let store = open_store(&config).await?;
            let email = postdesk::config::normalize_email(&email);
            let created = store.set_contact_owner(email.clone(), user.clone()).await?;
            match (user, created) {
                (Some(u), true) => println!("contact {email} created, owned by {u}"),
                (Some(u), false) => println!("contact {email} owned by {u}"),
                (None, _) => println!("contact {email} has no owner"),
            }
            Ok(())
        }
        Command::Channels(cmd) => channels(cmd, config).await,
        Command::Users(cmd) => users(cmd, config).await,
        Command::Reply {
            number,
            as_user,
            text,
            html,
            subject,
            attach,
            cc_thread,
            json,
        } => {
            let mut attachments = Vec::new();
            for path in attach {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let filename = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .with_context(|| format!("{} has no file name", path.display()))?;
                attachments.push(postdesk::outbound::Attachment {
                    content_type: postdesk::outbound::compose::content_type_for(&filename).into(),
                    filename,
                    data,
                });
            }
            let store: Arc<dyn Store> = open_store(&config).await?;
            let outbound = postdesk::outbound::Outbound {
                store,
                live: Arc::new(postdesk::live::Live::new(config)),
                wake: Arc::new(Notify::new()),
            };
            let queued = outbound
                .reply(postdesk::outbound::ReplyRequest {
                    ticket: TicketId(number),
                    author: as_user,
                    text,
                    html,
                    subject,
                    attachments,
                    cc_thread,
                    idempotency_key: None,
                })
                .await?;
            if json {
                return print_json(&queued);
            }
            println!(
                "reply queued on ticket #{} as <{}>",
                queued.ticket, queued.message_id
            );
            Ok(())
        }
        Command::Compose {
            channel,
            to,
            name,
            subject,
            as_user,
            text,
            json,
        } => {
            let store: Arc<dyn Store> = open_store(&config).await?;
            let outbound = postdesk::outbound::Outbound {
                store,
                live: Arc::new(postdesk::live::Live::new(config)),
                wake: Arc::new(Notify::new()),
            };
            let queued = outbound
                .compose(postdesk::outbound::ComposeRequest {
                    channel,
                    contact: postdesk::store::ContactRef { email: to, name },
                    subject,
                    author: as_user,
                    text,
                    attachments: Vec::new(),
                    idempotency_key: None,
                })
                .await?;
            if json {
                return print_json(&queued);
            }
            println!(
                "ticket #{} opened, email queued as <{}>",
                queued.ticket, queued.message_id
            );
            Ok(())
        }
        Command::Outbox(OutboxCmd::Flush) => {
            let store = open_store(&config).await?;
            let n = store.flush_outbox().await?;
            println!("{n} queued replies due now");
            Ok(())
        }
        Command::Outbox(OutboxCmd::Status { json }) => {
            let store = open_store(&config).await?;
            let c = store.queues().await?.outbox;
            if json {
                return print_json(&c);
            }
            println!(
                "outbox: {} queued, {} sent ({} of them bounced since), {} failed",
                c.queued, c.sent, c.bounced, c.failed
            );
            Ok(())
        }
        Command::Status { json } => status(config, json).await,
        Command::Resolve {
            file,
            channel,
            json,
            peer,
        } => resolve(file, channel, config, json, peer).await,
    }
}

async fn channels(cmd: ChannelsCmd, config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    match cmd {
        ChannelsCmd::List { json } => {
            let list = channel_states(&config, store.as_ref()).await?;
            if json {
                return print_json(&list);
            }
            for c in list {
                println!("{}", c.line());
            }
            Ok(())
        }
        ChannelsCmd::Enable { id } | ChannelsCmd::Disable { id }
            if config.channel(&id).is_none() =>
        {
            Err(usage(format!("unknown channel {id:?}")))
        }
        ChannelsCmd::Enable { id } => {
            store.set_channel_enabled(id.clone(), Some(true)).await?;
            println!("channel {id} enabled");
            Ok(())
        }
        ChannelsCmd::Disable { id } => {
            store.set_channel_enabled(id.clone(), Some(false)).await?;
            println!("channel {id} disabled");
            Ok(())
        }
        ChannelsCmd::Reset { id } => {
            let Some(ch) = config.channel(&id) else {
                return Err(usage(format!("unknown channel {id:?}")));
            };
            store.set_channel_enabled(id.clone(), None).await?;
            println!(
                "channel {id}: run-time override cleared; the file says {}",
                if ch.enabled { "enabled" } else { "disabled" }
            );
            Ok(())
        }
    }
}

async fn users(cmd: UsersCmd, config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    // A user gone from the file keeps their tokens in the store: listing
    // and revoking them works, but only if there are some (a typo must not
    // look like a clean-up done).
    if let UsersCmd::Tokens { user, .. } | UsersCmd::Revoke { user, .. } = &cmd
        && config.user(user).is_none()
    {
        if store.api_tokens(user.clone()).await?.is_empty() {
            return Err(usage(format!(
                "unknown user {user:?} (not in the configuration, no tokens in the store)"
            )));
        }
        eprintln!("postdesk: note: no user {user:?} in the configuration");
    }
    match cmd {
        UsersCmd::List { json } => {
            let live = postdesk::live::Live::new(config.clone());
            live.refresh(store.as_ref()).await?;
            let list: Vec<serde_json::Value> = config
                .users
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "id": u.id,
                        "email": u.email,
                        // `full_name` as the API's /users says it; `name`
                        // kept for scripts written before.
                        "full_name": u.full_name(),
                        "name": u.full_name(),
                        "licensed": u.licensed,
                        "teams": u.teams,
                        "available": live.user_available(u),
                        "working_hours": u.working_hours.as_ref().map(|h| serde_json::json!({
                            "timezone": h.timezone_name,
                            "days": h.days.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
                            "start": h.start.to_string(),
                            "end": h.end.to_string(),
                        })),
                    })
                })
                .collect();
            if json {
                return print_json(&list);
            }
            for u in list {
                println!(
                    "{:<12} {:<32} {:<10} {}",
                    u["id"].as_str().unwrap_or(""),
                    u["email"].as_str().unwrap_or(""),
                    if u["available"] == true {
                        "available"
                    } else {
                        "away"
                    },
                    if u["licensed"] == true {
                        ""
                    } else {
                        "(no licence)"
                    }
                );
            }
            Ok(())
        }
        UsersCmd::Password { user, role, clear } => {
            if config.user(&user).is_none() {
                return Err(usage(format!("unknown user {user:?}")));
            }
            let role = postdesk::store::TokenRole::parse(&role)
                .ok_or_else(|| usage(format!("unknown role {role:?}")))?;
            let hash = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']);
                if password.chars().count() < 8 {
                    return Err(usage("the password must have at least 8 characters".into()));
                }
                if password.len() > postdesk::web::session::MAX_PASSWORD {
                    return Err(usage("the password is too long".into()));
                }
                Some(postdesk::web::session::hash_password(password).map_err(anyhow::Error::msg)?)
            };
            store.set_web_user(user.clone(), hash, role).await?;
            eprintln!(
                "web password of {user} {}, role {role}; their sessions ended",
                if clear { "cleared" } else { "set" }
            );
            Ok(())
        }
        UsersCmd::Token {
            user,
            role,
            expires,
        } => {
            if config.user(&user).is_none() {
                return Err(usage(format!("unknown user {user:?}")));
            }
            let role = postdesk::store::TokenRole::parse(&role)
                .ok_or_else(|| usage(format!("unknown role {role:?}")))?;
            let expires_at = expires.map(|d| {
                postdesk::store::now_ms()
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            });
            let token = postdesk::api::auth::new_token().context("reading /dev/urandom")?;
            let hash = postdesk::api::auth::token_hash(&token);
            let id = hash
                .get(..postdesk::store::TOKEN_ID_LEN)
                .unwrap_or(&hash)
                .to_string();
            store
                .add_api_token(postdesk::store::NewApiToken {
                    hash,
                    user: user.clone(),
                    role,
                    expires_at,
                })
                .await?;
            println!("{token}");
            let until = expires_at
                .map(|at| format!(", expires {}", postdesk::store::ms_to_rfc3339(at)))
                .unwrap_or_default();
            eprintln!(
                "token id {id}, role {role}{until} (`postdesk users revoke {user} {id}` revokes it)"
            );
            Ok(())
        }
        // A user removed from the file keeps their tokens in the store (the
        // API refuses them meanwhile; they work again if the user comes
        // back): listing and revoking them must still work.
        UsersCmd::Tokens { user, json } => {
            let tokens = store.api_tokens(user.clone()).await?;
            if json {
                return print_json(&tokens);
            }
            println!("{:<14} {:<6} {:<26} EXPIRES", "ID", "ROLE", "ISSUED");
            let now = postdesk::store::now_ms();
            for t in &tokens {
                let issued = postdesk::store::ms_to_rfc3339(t.created_at);
                let expires = match t.expires_at {
                    None => "never".to_string(),
                    Some(at) if at <= now => {
                        format!("{} (expired)", postdesk::store::ms_to_rfc3339(at))
                    }
                    Some(at) => postdesk::store::ms_to_rfc3339(at),
                };
                println!("{:<14} {:<6} {issued:<26} {expires}", t.id, t.role);
            }
            if tokens.is_empty() {
                eprintln!("{user} has no API tokens");
            }
            Ok(())
        }
        UsersCmd::Revoke { user, id, .. } => {
            let all = id.is_none();
            let n = store.revoke_api_tokens(user.clone(), id).await?;
            println!("revoked {n} token(s) of {user}");
            if all {
                eprintln!("their web inbox sessions ended too");
            }
            Ok(())
        }
        UsersCmd::Available { id } | UsersCmd::Away { id } if config.user(&id).is_none() => {
            Err(usage(format!("unknown user {id:?}")))
        }
        UsersCmd::Available { id } => {
            store.set_user_available(id.clone(), Some(true)).await?;
            println!("{id} is available");
            Ok(())
        }
        UsersCmd::Away { id } => {
            store.set_user_available(id.clone(), Some(false)).await?;
            println!("{id} is away");
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct ChannelState {
    id: String,
    kind: String,
    address: Option<String>,
    /// In force now.
    enabled: bool,
    /// What the file says.
    configured: bool,
    /// `channels enable|disable` (or the API) set it at run time.
    overridden: bool,
}

impl ChannelState {
    /// One line of `channels list` and `status`: id, kind, address, state —
    /// and, under a run-time override, what the file says.
    fn line(&self) -> String {
        let word = |on: bool| if on { "enabled" } else { "disabled" };
        let state = if self.overridden {
            format!(
                "{} (run-time; the file says {}: `channels reset {}`)",
                word(self.enabled),
                word(self.configured),
                self.id
            )
        } else {
            word(self.enabled).to_string()
        };
        format!(
            "{:<16} {:<10} {:<32} {state}",
            self.id,
            self.kind,
            self.address.as_deref().unwrap_or("-")
        )
    }
}

async fn channel_states(config: &Config, store: &dyn Store) -> Result<Vec<ChannelState>> {
    let overrides: std::collections::HashMap<String, bool> =
        store.channel_overrides().await?.into_iter().collect();
    Ok(config
        .channels
        .iter()
        .map(|c| ChannelState {
            id: c.id.clone(),
            kind: c.kind.as_str().to_string(),
            address: c.address.clone(),
            enabled: overrides.get(&c.id).copied().unwrap_or(c.enabled),
            configured: c.enabled,
            overridden: overrides.contains_key(&c.id),
        })
        .collect())
}

/// Whether a daemon answers on the configured HTTP address, and what its
/// `/readyz` says (the store alone cannot tell a running daemon).
#[derive(serde::Serialize)]
struct DaemonState {
    http: String,
    /// `ready`, `stopping`, `not ready`, or `not running` (nothing answers).
    state: String,
    smtp: Vec<String>,
}

impl DaemonState {
    fn line(&self) -> String {
        format!(
            "{} (http {}, smtp {})",
            self.state,
            self.http,
            self.smtp.join(", ")
        )
    }
}

async fn daemon_state(config: &Config) -> DaemonState {
    let http = config.http.listen;
    let url = format!("http://{http}/readyz");
    let answer = async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .no_proxy()
            .build()
            .ok()?;
        let r = client.get(&url).send().await.ok()?;
        let ok = r.status().is_success();
        let body = r.text().await.unwrap_or_default();
        Some(match (ok, body.trim()) {
            (true, _) => "ready".to_string(),
            (false, "stopping") => "stopping".to_string(),
            (false, b) => format!("not ready ({b})"),
        })
    };
    DaemonState {
        http: http.to_string(),
        state: answer.await.unwrap_or_else(|| "not running".to_string()),
        smtp: config.smtp.listen.iter().map(|a| a.to_string()).collect(),
    }
}

async fn status(config: Config, json: bool) -> Result<()> {
    let store = open_store(&config).await?;
    let channels = channel_states(&config, store.as_ref()).await?;
    let counts = store.status().await?;
    let mailboxes = mailbox_states(&config, store.as_ref()).await?;
    let alerts = store.open_alerts().await?;
    let daemon = daemon_state(&config).await;
    let v = serde_json::json!({
        "alerts": alerts,
        "daemon": daemon,
        "channels": channels,
        "store": counts,
        "mailboxes": mailboxes,
    });
    if json {
        return print_json(&v);
    }
    // First: a mailbox that stopped is mail silently not arriving.
    for a in &alerts {
        println!("{}", alert_line(a));
    }
    println!("daemon: {}", daemon.line());
    println!("store: {}", counts.path);
    println!(
        "  spool: {} pending, {} failed, {} total",
        counts.spool_pending, counts.spool_failed, counts.spool_total
    );
    println!(
        "  tickets: {}  messages: {}  contacts: {}",
        counts.tickets, counts.messages, counts.contacts
    );
    println!(
        "  outbox: {} queued, {} failed",
        counts.outbox_queued, counts.outbox_failed
    );
    println!("channels:");
    for c in channels {
        println!("  {}", c.line());
    }
    if !mailboxes.is_empty() {
        println!("mailboxes:");
        for m in &mailboxes {
            let unreturned = if m.unreturned > 0 {
                format!("never returned {} ", m.unreturned)
            } else {
                String::new()
            };
            println!(
                "  {:<16} {:<10} {:<13} last uid {:<8} fetched {:<8} {unreturned}{}",
                m.channel,
                m.folder,
                m.state,
                m.last_uid
                    .map_or_else(|| "-".to_string(), |u| u.to_string()),
                m.fetched,
                m.last_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// One open mailbox alert, as `status` shows it first.
fn alert_line(a: &postdesk::store::AlertView) -> String {
    let since = jiff::Timestamp::from_millisecond(a.opened_at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let why = match a.reason.as_str() {
        "needs_reauth" => "needs re-authorisation (OAuth grant refused)",
        _ => "failing",
    };
    let emailed = if a.notified_at.is_some() {
        "admins emailed"
    } else {
        "not emailed"
    };
    format!(
        "ALERT: mailbox {} stopped since {since}: {why}; {emailed}; last error: {}",
        a.channel,
        a.detail.as_deref().unwrap_or("-")
    )
}

/// Every pulled channel's mailbox as the daemon last recorded it
/// (`not_started` when it never ran).
async fn mailbox_states(
    config: &Config,
    store: &dyn Store,
) -> Result<Vec<postdesk::store::MailboxStatusView>> {
    let mut rows = store.mailbox_status().await?;
    for c in config.channels.iter().filter(|c| c.kind.is_pulled()) {
        let folder = c
            .imap
            .as_ref()
            .map_or_else(|| "INBOX".to_string(), |i| i.folder.clone());
        if !rows.iter().any(|r| r.channel == c.id && r.folder == folder) {
            rows.push(postdesk::store::MailboxStatusView {
                channel: c.id.clone(),
                folder,
                state: "not_started".into(),
                uidvalidity: None,
                last_uid: None,
                fetched: 0,
                skipped: 0,
                unreturned: 0,
                last_error: None,
                last_error_at: None,
                updated_at: 0,
                resume_at: None,
            });
        }
    }
    rows.retain(|r| {
        config
            .channel(&r.channel)
            .is_some_and(|c| c.kind.is_pulled())
    });
    Ok(rows)
}

async fn resolve(
    file: PathBuf,
    channel: Option<String>,
    config: Config,
    json: bool,
    peer: Option<std::net::IpAddr>,
) -> Result<()> {
    let mut raw = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("reading standard input")?;
    } else {
        raw = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    }
    let msg = postdesk::ingest::parse::parse(&raw).context("not a mail message (no headers)")?;
    let ch = match &channel {
        Some(id) => Some(
            config
                .channel(id)
                .ok_or_else(|| usage(format!("unknown channel {id:?}")))?,
        ),
        None => {
            let fields = postdesk::ingest::parse::fields(&msg);
            fields
                .to
                .iter()
                .find_map(|a| config.channel_for_recipient(a))
        }
    };
    // With --peer, the envelope sender is the Return-Path the file carries.
    let return_path = msg
        .header_raw("Return-Path")
        .and_then(postdesk::ingest::parse::normalise_address)
        .unwrap_or_default();
    let auth = match peer {
        None => postdesk::ingest::auth::Authentication::assumed(),
        Some(ip) => {
            use postdesk::ingest::{Directory, auth::Authenticator};
            let fields = postdesk::ingest::parse::fields(&msg);
            let return_path = return_path.clone();
            let entry = postdesk::store::SpoolEntry {
                id: postdesk::store::SpoolId(0),
                received_at: 0,
                source: postdesk::store::SpoolSource::Smtp,
                mail_from: return_path,
                rcpt_to: fields.to.clone(),
                client_ip: Some(ip.to_string()),
                helo: None,
                channel: None,
                raw: raw.clone(),
                content_hash: String::new(),
            };
            let dir = Directory::new(&config);
            Authenticator::new(config.smtp.dns_resolver)
                .authenticate(&entry, &config, dir.trusted())
                .await
        }
    };
    let envelope = peer.and(Some(return_path.as_str()).filter(|r| !r.is_empty()));
    let (r, class) = postdesk::ingest::resolve_one(&msg, envelope, &config, ch, &auth);
    // For a bounce: the ids ingest would look our reply up by, and the detail.
    let fields = postdesk::ingest::parse::fields(&msg);
    let bounce = postdesk::ingest::bounce::link(Some(&msg), &class, &fields);
    // Availability as configured: the store's overrides are the daemon's.
    let routing =
        ch.map(|c| postdesk::ingest::routing_preview(&msg, &config, c, &r, &|u| u.available));
    let v = serde_json::json!({
        "contact": r.contact,
        "forwarder": r.forwarder,
        "method": r.method,
        "confidence": postdesk::ingest::resolve::rounded(r.confidence),
        "classification": class,
        "claimed_original": r.claimed_original,
        "distrusted": r.distrusted,
        "authentication": auth,
        "channel": ch.map(|c| c.id.clone()),
        "bounce": bounce,
        "routed_by": routing.as_ref().map(|(by, _)| by),
        "language": routing.as_ref().and_then(|(_, l)| *l),
    });
    if json {
        return print_json(&v);
    }
    println!(
        "contact:        {} {}",
        r.contact.email,
        r.contact.name.as_deref().unwrap_or("")
    );
    println!(
        "method:         {} (confidence {:.2})",
        r.method, r.confidence
    );
    if let Some(f) = &r.forwarder {
        println!("forwarder:      {}", f.email);
    }
    if let Some(c) = &r.claimed_original {
        println!("claimed:        {} (not believed)", c.email);
    }
    println!("authenticated:  {}", auth.by);
    if let Some(why) = &r.distrusted {
        println!("not believed:   {why}");
    }
    println!("classification: {}", serde_json::to_string(&class)?);
    if let Some((by, lang)) = &routing {
        println!("language:       {}", lang.unwrap_or("(not detected)"));
        println!("routed by:      {by}");
    }
    if let Some(b) = &bounce {
        let ids = if b.candidates.is_empty() {
            "(no Message-ID found)".to_string()
        } else {
            b.candidates.join(" ")
        };
        println!("bounce of:      {ids}");
        println!("bounce detail:  {}", b.detail);
    }
    Ok(())
}

async fn run_daemon(config: Config) -> Result<()> {
    let metrics = postdesk::api::metric_help::exporter()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    postdesk::api::metric_help::describe();
    let bound = daemon::Bound::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    spawn_signals(shutdown.clone(), reload.clone())?;
    daemon::run(config, bound, metrics, shutdown, reload).await?;
    Ok(())
}

fn spawn_signals(shutdown: CancellationToken, reload: Arc<Notify>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading configuration"); reload.notify_one(); }
            }
        }
    });
    Ok(())
}
