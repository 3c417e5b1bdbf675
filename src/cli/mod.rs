//! The `postdesk` command line: its arguments (clap definitions, here,
//! which are `postdesk --help`), the entry the binary calls ([`main`]) and
//! the dispatch to one module per job:
//!
//! - [`check`]: `check` (the configuration, and `--connect` the store);
//! - [`run`]: `run`, the daemon with its signal handling;
//! - [`tickets`]: `tickets list|show`, `reply`, `compose`;
//! - [`contacts`], [`channels`], [`users`] (list, availability, web
//!   password), [`tokens`] (`users token|tokens|revoke`), [`outbox`];
//! - [`status`]: `status` and what it says about a running daemon;
//! - [`store`]: `store copy`; [`resolve`]: `resolve`.
//!
//! [`exit`] maps errors to exit codes, [`logging`] sets up tracing.
//!
//! Every command reads the same configuration file and the same store the
//! daemon uses (SQLite in WAL mode: safe while the daemon runs). Read
//! commands take `--json` for scripts; exit codes: 0 ok, 1 runtime error,
//! 2 bad configuration or usage. This is the CLI's edge: errors are
//! `anyhow` here and nowhere else in the library.

mod channels;
mod check;
mod contacts;
mod exit;
mod logging;
mod outbox;
mod resolve;
mod run;
mod status;
mod store;
mod tickets;
mod tokens;
mod users;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::daemon;
use crate::store::Store;
use exit::exit_code;

#[derive(Parser)]
#[command(
    name = "postdesk",
    version,
    about = "Support mail to help-desk tickets"
)]
pub struct Cli {
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
        #[command(flatten)]
        reply: tickets::Reply,
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
    /// The store itself: copy a SQLite store into PostgreSQL.
    #[command(subcommand)]
    Store(StoreCmd),
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
enum StoreCmd {
    /// Copy this configuration's SQLite store (the daemon stopped) into the
    /// empty PostgreSQL store of another configuration: every table, ids
    /// kept, resumable after an interruption, verified row for row at the
    /// end (exit 1 naming the tables that differ). Run again after a
    /// finished copy, it only verifies.
    Copy {
        /// The configuration whose `[store]` (kind = "postgres") receives
        /// the copy.
        #[arg(long, value_name = "NEW.toml")]
        to_config: PathBuf,
        /// Rows per transaction.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
        batch_rows: u32,
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
        #[arg(long, value_parser = crate::api::auth::parse_lifetime)]
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

/// Run the parsed command line: the whole of `postdesk` after clap.
pub fn main(cli: Cli) -> ExitCode {
    crate::install_crypto_provider();
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
        return check::check(&cli.config, connect);
    }
    let config = match load_config(&cli.config, daemon) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(Some(&config), cli.log_format);
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

async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    Ok(daemon::open_store(config).await?)
}

/// What the API's handlers act with, over this process's store and
/// configuration: the commands that do what an API endpoint does call the
/// same [`crate::api::actions`], as the operator ([`Caller::Operator`]).
///
/// [`Caller::Operator`]: crate::api::actions::Caller::Operator
async fn app(config: Config) -> Result<crate::api::AppState> {
    let store = open_store(&config).await?;
    let live = Arc::new(crate::live::Live::new(config));
    let outbound = crate::outbound::Outbound {
        store: store.clone(),
        live: live.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    Ok(crate::api::AppState {
        store,
        live,
        outbound,
        metrics: None,
        stopping: tokio_util::sync::CancellationToken::new(),
        sends: Default::default(),
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn dispatch(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Check { .. } => Ok(()),
        Command::Run => run::run_daemon(config).await,
        Command::Tickets(TicketsCmd::List {
            channel,
            status,
            owner,
            contact,
            limit,
            json,
        }) => {
            let filter = crate::store::TicketFilter {
                channel,
                status,
                owner,
                contact,
                limit,
            };
            tickets::list(config, filter, json).await
        }
        Command::Tickets(TicketsCmd::Show { number, json }) => {
            tickets::show(config, number, json).await
        }
        Command::Contacts(ContactsCmd::List { json }) => contacts::list(config, json).await,
        Command::Contacts(ContactsCmd::Owner {
            email,
            user,
            clear: _,
        }) => contacts::owner(config, email, user).await,
        Command::Channels(cmd) => channels::channels(cmd, config).await,
        Command::Users(cmd) => users::users(cmd, config).await,
        Command::Reply { reply, json } => tickets::reply(config, reply, json).await,
        Command::Compose {
            channel,
            to,
            name,
            subject,
            as_user,
            text,
            json,
        } => {
            let request = crate::outbound::ComposeRequest {
                channel,
                contact: crate::store::ContactRef { email: to, name },
                subject,
                author: as_user,
                text,
                attachments: Vec::new(),
                idempotency_key: None,
            };
            tickets::compose(config, request, json).await
        }
        Command::Outbox(OutboxCmd::Flush) => outbox::flush(config).await,
        Command::Outbox(OutboxCmd::Status { json }) => outbox::status(config, json).await,
        Command::Status { json } => status::status(config, json).await,
        Command::Store(StoreCmd::Copy {
            to_config,
            batch_rows,
        }) => store::copy(&config, &to_config, batch_rows).await,
        Command::Resolve {
            file,
            channel,
            json,
            peer,
        } => resolve::resolve(file, channel, config, json, peer).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap's own checks of the whole command tree (unique names and
    /// groups, valid defaults), which it otherwise makes only when a
    /// subcommand is first parsed — at a user's prompt.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
