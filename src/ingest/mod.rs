//! Ingest: from the durable spool to tickets.
//!
//! Stages, each in its own module: [`parse`] (mail-parser), classification
//! and sender resolution ([`resolve`]), then the plan of each channel's
//! message (contact, content, thread handles from [`thread`], the route of
//! a ticket it would open from [`route`], the bounce link from [`bounce`]):
//! [`plan_entry`]. The plan carries what was judged typed
//! ([`Classification`], [`SenderResolution`]); the store serialises it.
//!
//! Ingest also owns the decisions taken while the store applies a plan:
//! [`decide::decide`], which the store calls inside its transaction over
//! the facts it reads there (so any backend decides alike) — whether a
//! message is a copy and under which key it is stored ([`dedupe::check`]),
//! which of our replies a bounce reports on ([`bounce::reported_on`]),
//! which ticket it continues ([`thread::find`], [`thread::may_join`]), and
//! who owns a new ticket ([`route::owner`], [`route::choose_owner`]).
//!
//! Runs after acceptance; idempotent, because each spool entry's whole effect
//! (and its `done` mark) is one transaction: a crash at any point leaves the
//! entry pending and it is processed again, once.
//!
//! Must not: talk SMTP, drop an entry (an entry that cannot be processed is
//! parked as `failed` with its reason), or block the async runtime with
//! parsing (done on the blocking pool).

pub mod auth;
pub mod bounce;
pub mod decide;
pub mod dedupe;
pub mod handoff;
pub mod notices;
pub mod parse;
pub mod resolve;
pub mod route;
pub mod rules;
pub mod submit;
pub mod thread;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config};
use crate::live::Live;
use crate::mail::normalize_email;
use crate::store::{
    BodyText, ContactRef, InboundMessage, InboundPlan, SenderResolution, SpoolEntry, SpoolId,
    Store, StoreError,
};
use resolve::{Classification, ResolveContext};

/// Spool entries taken per round (and so at most per group commit).
const BATCH: usize = 32;
/// Longest time between two scans of the spool while mail flows through the
/// handoff.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Scan interval when nothing happens.
const IDLE_SCAN: Duration = Duration::from_secs(5);
/// How long a wake-up waits for more of a burst before the round starts: one
/// refresh, one planning hand-off and one apply job then serve many commit
/// groups instead of one each. Small next to how soon an agent looks.
const GATHER: Duration = Duration::from_millis(5);

/// Why an entry could not be planned; it is parked as failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no channel takes any of the recipients {0:?}")]
    NoChannel(Vec<String>),
    /// A bug met this message: it is parked, not retried forever, so one bad
    /// message never stops ingest.
    #[error("ingest failed on this message: {0}")]
    Panicked(String),
}

/// Run `plan` for one entry, turning a panic into [`IngestError::Panicked`].
fn guarded(
    plan: impl FnOnce() -> Result<InboundPlan, IngestError>,
) -> Result<InboundPlan, IngestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(plan)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Err(IngestError::Panicked(what))
    })
}

/// Normalised addresses of every user (team members may forward).
pub fn team_addresses(config: &Config) -> HashSet<String> {
    config
        .users
        .iter()
        .map(|u| u.email.trim().to_lowercase())
        .collect()
}

/// The channels a spool entry is for, each with the recipient that named it.
fn channels_for<'c>(
    entry: &SpoolEntry,
    config: &'c Config,
) -> Vec<(&'c ChannelConfig, Option<String>)> {
    if let Some(id) = &entry.channel {
        return config.channel(id).map(|c| (c, None)).into_iter().collect();
    }
    let mut out: Vec<(&ChannelConfig, Option<String>)> = Vec::new();
    for rcpt in &entry.rcpt_to {
        if let Some(c) = config.channel_for_recipient(rcpt)
            && !out.iter().any(|(o, _)| o.id == c.id)
        {
            out.push((c, Some(rcpt.clone())));
        }
    }
    out
}

/// What sender resolution needs from the configuration, derived once per
/// ingest batch rather than once per message.
pub struct Directory {
    team: HashSet<String>,
    /// Every channel's address, normalised.
    channels: HashSet<String>,
    /// Team members and every channel's forwarders: the addresses whose
    /// claims are worth authenticating.
    trusted: HashSet<String>,
    /// The install's key for signed tags: recognises our replies come back.
    loop_key: Option<Vec<u8>>,
}

impl Directory {
    pub fn new(config: &Config) -> Self {
        let team = team_addresses(config);
        let mut trusted = team.clone();
        for c in &config.channels {
            trusted.extend(c.forwarders.iter().cloned());
        }
        Directory {
            team,
            channels: config
                .channels
                .iter()
                .filter_map(|c| c.address.as_deref().and_then(crate::mail::email_of))
                .collect(),
            trusted,
            loop_key: None,
        }
    }

    /// With the install's key for signed tags ([`crate::mail::tags`]), so
    /// our own replies coming back are recognised as loops.
    pub fn with_loop_key(mut self, key: Option<&[u8]>) -> Self {
        self.loop_key = key.map(<[u8]>::to_vec);
        self
    }

    /// Team members' and forwarders' addresses, normalised.
    pub fn trusted(&self) -> &HashSet<String> {
        &self.trusted
    }

    /// A team member's, a forwarder's or a channel's address, also with a
    /// `+tag` (a group's bounce address, a plus-address).
    fn is_ours(&self, email: &str) -> bool {
        let base = base_address(email);
        [email, base.as_str()]
            .iter()
            .any(|a| self.trusted.contains(*a) || self.channels.contains(*a))
    }
}

/// Sender resolution and classification for one message on one channel —
/// also what `postdesk resolve` prints. `auth`: what is proven about where
/// the message comes from.
pub fn resolve_one(
    msg: &mail_parser::Message<'_>,
    envelope_from: Option<&str>,
    config: &Config,
    channel: Option<&ChannelConfig>,
    auth: &auth::Authentication,
) -> (resolve::Resolution, Classification) {
    resolve_with(&Directory::new(config), msg, envelope_from, channel, auth)
}

fn resolve_with(
    dir: &Directory,
    msg: &mail_parser::Message<'_>,
    envelope_from: Option<&str>,
    channel: Option<&ChannelConfig>,
    auth: &auth::Authentication,
) -> (resolve::Resolution, Classification) {
    let empty = Vec::new();
    let ctx = ResolveContext {
        team_addresses: &dir.team,
        forwarders: channel.map(|c| &c.forwarders).unwrap_or(&empty),
        original_sender_of_forwards: channel.is_none_or(|c| c.original_sender_of_forwards),
        loop_key: dir.loop_key.as_deref(),
        auth,
    };
    let class = resolve::classify(msg, envelope_from, &ctx);
    let mut r = resolve::resolve(msg, &ctx);
    spoofed_team_sender(&mut r, &ctx, dir, envelope_from);
    (r, class)
}

/// What routing would do with `msg` as a new ticket on `channel` (what
/// `postdesk resolve` shows): what chooses the owner, and the language
/// detected (ISO 639-3), with availability as `available` says.
pub fn routing_preview(
    msg: &mail_parser::Message<'_>,
    config: &Config,
    channel: &ChannelConfig,
    r: &resolve::Resolution,
    available: &dyn Fn(&crate::config::UserConfig) -> bool,
) -> (String, Option<&'static str>) {
    let fields = parse::fields(msg);
    let original = r.original.as_ref();
    let subject = original
        .and_then(|o| o.subject.clone())
        .unwrap_or(fields.subject);
    let subject = resolve::strip_subject_prefixes(&subject).trim().to_string();
    let text = original.map_or(fields.text.as_str(), |o| o.text.as_str());
    let none = std::collections::BTreeMap::new();
    let sender = normalize_email(&r.contact.email);
    let facts = rules::Facts::new(&subject, text, &sender, &none);
    let routed = route::plan(config, channel, available, &facts);
    (routed.by, facts.language())
}

/// Mail whose From is a team member's or forwarder's address but is not
/// authenticated as theirs is a stranger's: it belongs to the envelope
/// sender when that is another address (the one the forger could receive
/// replies at), not to the colleague whose address was forged.
fn spoofed_team_sender(
    r: &mut resolve::Resolution,
    ctx: &ResolveContext<'_>,
    dir: &Directory,
    envelope_from: Option<&str>,
) {
    let from = normalize_email(&r.contact.email);
    let own_channel = dir.channels.contains(&base_address(&from));
    if own_channel && r.method == "from" && r.distrusted.is_none() && !ctx.auth.covers(&from) {
        r.distrusted = Some(format!(
            "From {from} is this help desk's own channel address, and the message is not authenticated as ours ({}): treated as a stranger's",
            ctx.auth.by
        ));
    }
    if r.method != "from" || r.distrusted.is_none() || !dir.is_ours(&from) {
        return;
    }
    let Some(envelope) = envelope_from.and_then(crate::mail::email_of) else {
        return;
    };
    if envelope == from || dir.is_ours(&envelope) {
        return;
    }
    r.contact = resolve::Address {
        email: envelope,
        name: None,
    };
    r.method = "envelope".into();
    r.confidence = 0.5;
}

/// What a message may do, from its resolution.
struct Standing {
    /// An authenticated team member sent or forwarded it: it may continue
    /// any ticket of the channel it names. A configured forwarder (a group
    /// anyone can post to) does not give this: its posts are judged by their
    /// authors.
    trusted_sender: bool,
    /// The contact's display name comes from mail proven to be theirs.
    name_verified: bool,
    /// Who the message is, for matching a ticket's contact or participants;
    /// `None` for one of our own addresses (a team member's, a forwarder's, a
    /// channel's) that this message is not proven to come from.
    thread_identity: Option<String>,
}

fn standing(r: &resolve::Resolution, dir: &Directory, auth: &auth::Authentication) -> Standing {
    let team = |e: &str| dir.team.contains(e);
    let forwarded_by_team = r.forwarder.as_ref().is_some_and(|f| {
        let f = normalize_email(&f.email);
        team(&f) && auth.covers(&f)
    });
    let contact = normalize_email(&r.contact.email);
    let from_team = r.method == "from" && team(&contact) && auth.covers(&contact);
    let name_verified = r.method == "from" && auth.covers(&contact);
    let ours = dir.is_ours(&contact);
    Standing {
        trusted_sender: forwarded_by_team || from_team,
        name_verified,
        thread_identity: (!contact.is_empty() && (!ours || auth.covers(&contact)))
            .then_some(contact),
    }
}

/// `local+tag@domain` → `local@domain`.
fn base_address(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => email.to_string(),
        },
        None => email.to_string(),
    }
}

/// Plan the effect of one spool entry, stage by stage: a notice of ours
/// that came back (its loop tag signed with the install's key,
/// `outbound::notify`) is dropped first; else [`parse`] once, then for each
/// channel it is addressed to: classify and resolve (`judge`),
/// drop a mail loop, and build the channel's message (`message_for`:
/// contact, content, thread handles, route).
/// Pure apart from reading `live`.
pub fn plan_entry(
    entry: &SpoolEntry,
    config: &Config,
    dir: &Directory,
    live: &Live,
    auth: &auth::Authentication,
) -> Result<InboundPlan, IngestError> {
    let channels = channels_for(entry, config);
    if channels.is_empty() {
        return Err(IngestError::NoChannel(entry.rcpt_to.clone()));
    }
    if let Some(tag) = live
        .notice_key()
        .and_then(|key| crate::mail::tags::returned_notice(&entry.raw, key))
    {
        tracing::info!(spool = entry.id.0, %tag, "a postdesk notice came back: dropped, not ticketed");
        return Ok(InboundPlan {
            spool_id: entry.id,
            messages: Vec::new(),
            dropped: Some(format!("mail loop: postdesk notice {tag} came back")),
        });
    }
    let mail = Mail::parse(entry);
    let stage = Stage {
        config,
        dir,
        live,
        auth,
    };
    let mut messages = Vec::with_capacity(channels.len());
    for (channel, rcpt) in channels {
        let (resolution, class) = judge(&mail, dir, channel, auth);
        if let Classification::Loop { reason } = &class {
            tracing::info!(spool = entry.id.0, %reason, "mail loop: dropped, not ticketed");
            return Ok(InboundPlan {
                spool_id: entry.id,
                messages: Vec::new(),
                dropped: Some(format!("mail loop: {reason}")),
            });
        }
        messages.push(message_for(
            &mail,
            channel,
            rcpt.as_deref(),
            resolution,
            class,
            &stage,
        ));
    }
    Ok(InboundPlan {
        spool_id: entry.id,
        messages,
        dropped: None,
    })
}

/// The parse stage: what every channel's copy of a spool entry shares.
struct Mail<'a> {
    entry: &'a SpoolEntry,
    /// `None` when mail-parser gave up (the bytes are then the text).
    parsed: Option<mail_parser::Message<'a>>,
    fields: parse::Parsed,
    /// The SMTP envelope sender (unknown for pulled mail).
    envelope_from: Option<&'a str>,
    /// `mid:<Message-ID>`, else `sha256:<the bytes' hash>`.
    dedupe_key: String,
    /// From, else the envelope sender, else `unknown@invalid`.
    sender: String,
}

impl<'a> Mail<'a> {
    fn parse(entry: &'a SpoolEntry) -> Self {
        let parsed = parse::parse(&entry.raw);
        let fields = parsed
            .as_ref()
            .map(parse::fields)
            .unwrap_or_else(|| parse::Parsed {
                text: String::from_utf8_lossy(&entry.raw).into_owned(),
                ..Default::default()
            });
        let envelope_from = match entry.source {
            crate::store::SpoolSource::Smtp => Some(entry.mail_from.as_str()),
            _ => None,
        };
        let dedupe_key = match &fields.message_id {
            Some(id) => format!("mid:{id}"),
            None => format!("sha256:{}", entry.content_hash),
        };
        let sender = fields
            .from_email
            .clone()
            .or_else(|| crate::mail::email_of(&entry.mail_from))
            .unwrap_or_else(|| "unknown@invalid".to_string());
        Mail {
            entry,
            parsed,
            fields,
            envelope_from,
            dedupe_key,
            sender,
        }
    }
}

/// The classify and resolve stages for one channel: what the message is,
/// and who wrote it (an unparsable message is its sender's, normal).
fn judge(
    mail: &Mail<'_>,
    dir: &Directory,
    channel: &ChannelConfig,
    auth: &auth::Authentication,
) -> (resolve::Resolution, Classification) {
    match &mail.parsed {
        Some(m) => resolve_with(dir, m, mail.envelope_from, Some(channel), auth),
        None => (plain_resolution(&mail.sender, None), Classification::Normal),
    }
}

/// What the later stages read besides the message.
struct Stage<'a> {
    config: &'a Config,
    dir: &'a Directory,
    live: &'a Live,
    auth: &'a auth::Authentication,
}

/// What the ticket shows of a message: the customer's original inside a
/// forward, else the message itself.
struct Content {
    from: ContactRef,
    subject: String,
    date: Option<String>,
    text: BodyText,
    html: Option<String>,
    /// The subject of a ticket it opens: reply/forward prefixes removed,
    /// `(no subject)` when that leaves nothing.
    ticket_subject: String,
}

/// The content stage: what of `mail` the ticket shows, `contact` being who
/// the resolution says wrote it.
fn content(mail: &Mail<'_>, resolution: &resolve::Resolution, contact: &ContactRef) -> Content {
    let fields = &mail.fields;
    let original = resolution.original.as_ref();
    let subject = original
        .and_then(|o| o.subject.clone())
        .unwrap_or_else(|| fields.subject.clone());
    let mut ticket_subject = resolve::strip_subject_prefixes(&subject).trim().to_string();
    if ticket_subject.is_empty() {
        ticket_subject = "(no subject)".into();
    }
    let raw = &mail.entry.raw;
    match original {
        Some(o) => Content {
            from: contact.clone(),
            subject,
            date: o.date.clone().or(fields.date.clone()),
            text: BodyText::from_raw(raw, &o.text),
            html: None,
            ticket_subject,
        },
        None => Content {
            from: ContactRef {
                email: mail.sender.clone(),
                name: fields.from_name.clone(),
            },
            subject,
            date: fields.date.clone(),
            text: BodyText::from_raw(raw, &fields.text),
            html: fields.html.clone(),
            ticket_subject,
        },
    }
}

/// The message for one channel, from the judged mail, stage by stage:
/// contact, content, thread handles (subject tag, plus-address), what its
/// sender may do, the route of the ticket it would open, its bounce link.
fn message_for(
    mail: &Mail<'_>,
    channel: &ChannelConfig,
    rcpt: Option<&str>,
    resolution: resolve::Resolution,
    class: Classification,
    stage: &Stage<'_>,
) -> InboundMessage {
    let fields = &mail.fields;
    let contact = ContactRef {
        email: crate::mail::email_of(&resolution.contact.email)
            .unwrap_or_else(|| mail.sender.clone()),
        name: resolution
            .contact
            .name
            .clone()
            .map(crate::mail::without_nul),
    };
    let content = content(mail, &resolution, &contact);
    let plus_token = rcpt
        .zip(channel.address.as_deref())
        .and_then(|(r, a)| thread::plus_token(r, a));
    let standing = standing(&resolution, stage.dir, stage.auth);
    let live = stage.live;
    let text = resolution
        .original
        .as_ref()
        .map_or(fields.text.as_str(), |o| o.text.as_str());
    let no_fields = std::collections::BTreeMap::new();
    let facts = rules::Facts::new(&content.ticket_subject, text, &contact.email, &no_fields);
    let new_ticket = route::new_ticket(
        stage.config,
        channel,
        content.ticket_subject.clone(),
        &|u| live.user_available(u),
        &facts,
    );
    InboundMessage {
        channel: channel.id.clone(),
        dedupe_key: mail.dedupe_key.clone(),
        message_id: fields.message_id.clone(),
        in_reply_to: fields.in_reply_to.clone(),
        references: fields.references.clone(),
        thread_token: thread::subject_token(&fields.subject),
        plus_token,
        trusted_sender: standing.trusted_sender,
        name_verified: standing.name_verified,
        thread_identity: standing.thread_identity,
        contact,
        from: content.from,
        to: fields.to.clone(),
        cc: fields.cc.clone(),
        subject: content.subject,
        date: content.date,
        text: content.text,
        html: content.html,
        note: forwarder_note(&resolution, &mail.sender),
        new_ticket,
        bounce: bounce::link(mail.parsed.as_ref(), &class, fields),
        classification: class,
        sender_resolution: SenderResolution {
            resolution,
            authentication: Some(stage.auth.clone()),
        },
    }
}

/// The forwarder's own text above a forward, as an internal note from the
/// forwarder's address. No author (user id): the address comes from the
/// mail's From header, which anyone can write — a note with an author reads
/// as one an agent wrote in the help desk.
fn forwarder_note(
    resolution: &resolve::Resolution,
    fallback_sender: &str,
) -> Option<crate::store::ForwarderNote> {
    let text = resolution.note.clone().filter(|n| !n.trim().is_empty())?;
    let from = match &resolution.forwarder {
        Some(f) => ContactRef {
            email: crate::mail::email_of(&f.email)
                .unwrap_or_else(|| crate::mail::without_nul(f.email.clone())),
            name: f.name.clone().map(crate::mail::without_nul),
        },
        None => ContactRef {
            email: fallback_sender.to_string(),
            name: None,
        },
    };
    Some(crate::store::ForwarderNote { text, from })
}

fn plain_resolution(email: &str, name: Option<String>) -> resolve::Resolution {
    let contact = resolve::Address {
        email: email.to_string(),
        name,
    };
    resolve::Resolution::only(contact, "envelope", 0.5)
}

/// What one ingest round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Spool entries processed (applied, skipped as already applied, or parked).
    pub handled: usize,
    /// Whether they were read from the spool rather than handed over.
    pub scanned: bool,
}

/// The ingest worker: waits for spool commits, processes pending entries in
/// batches, and — once `shutdown` is cancelled — drains what is pending and
/// returns.
pub struct Ingestor {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub wake: Arc<Notify>,
    /// Entries the SMTP listener just committed, handed over in memory.
    pub handoff: Arc<handoff::Handoff>,
    /// Decides what is proven about each entry's origin.
    pub auth: Arc<auth::Authenticator>,
}

impl Ingestor {
    /// Process one batch: what the SMTP listener handed over, or — with
    /// `scan`, or after the handoff overflowed — what the spool holds
    /// pending.
    pub async fn run_once(&self, scan: bool) -> Result<Round, StoreError> {
        // A scan leaves the handoff alone: what it holds is taken next round
        // (and skipped then if the scan already applied it).
        let next = if scan {
            handoff::Next::Scan
        } else {
            self.handoff.take(BATCH)
        };
        let (batch, scanned) = match (scan, next) {
            (false, handoff::Next::Entries(entries)) => (entries, false),
            (false, handoff::Next::Empty) => {
                return Ok(Round {
                    handled: 0,
                    scanned: false,
                });
            }
            // Entries still in the handoff may be in this scan too: the
            // store skips whichever copy comes second.
            (true, _) | (_, handoff::Next::Scan) => {
                (self.store.pending_spool(SpoolId(0), BATCH).await?, true)
            }
        };
        let round = Round {
            handled: batch.len(),
            scanned,
        };
        if batch.is_empty() {
            return Ok(round);
        }
        let n = batch.len();
        // Availability and channel state may have been changed by another
        // process (the CLI) a moment ago: route with what is true now.
        if let Err(e) = self.live.refresh(self.store.as_ref()).await {
            tracing::debug!(error = %e, "override refresh failed; routing with cached values");
        }
        let now_ms = crate::store::now_ms();
        for e in &batch {
            // Time from durable accept to this ingest round.
            metrics::histogram!("postdesk_ingest_lag_seconds")
                .record((now_ms - e.received_at).max(0) as f64 / 1000.0);
        }
        let config = self.live.config();
        let notice_config = config.clone();
        let live = self.live.clone();
        let dir = Directory::new(&config).with_loop_key(self.live.notice_key());
        let auths = futures_util::future::join_all(
            batch
                .iter()
                .map(|e| self.auth.authenticate(e, &config, &dir.trusted)),
        )
        .await;
        let planned = tokio::task::spawn_blocking(move || {
            batch
                .iter()
                .zip(&auths)
                .map(|(e, a)| {
                    let plan = guarded(|| plan_entry(e, &config, &dir, &live, a));
                    let briefs: Vec<notices::Brief> = plan
                        .as_ref()
                        .map(|p| {
                            p.messages
                                .iter()
                                .map(|m| notices::Brief::of(m, &e.raw, &config))
                                .collect()
                        })
                        .unwrap_or_default();
                    (e.id, plan, briefs)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| StoreError::Failed(format!("ingest planning failed: {e}")))?;
        let mut plans = Vec::with_capacity(n);
        let mut briefs = Vec::with_capacity(n);
        for (id, p, b) in planned {
            match p {
                Ok(plan) => {
                    plans.push(plan);
                    briefs.push(b);
                }
                Err(e) => {
                    tracing::warn!(spool = %id, error = %e, "ingest parked a message");
                    metrics::counter!("postdesk_ingest_failed_total").increment(1);
                    self.store.fail_spool(id, e.to_string()).await?;
                }
            }
        }
        let ids: Vec<SpoolId> = plans.iter().map(|p| p.spool_id).collect();
        let results = self.store.apply_inbound(plans, decide::decide).await?;
        let mut temporary = None;
        let mut applied = Vec::new();
        for ((id, r), b) in ids.into_iter().zip(results).zip(briefs) {
            match r {
                Ok(outcome) => {
                    applied.extend(notices::pair(&outcome.delivered, b));
                    for d in outcome.delivered {
                        metrics::counter!("postdesk_ingest_messages_total", "result" => if d.duplicate { "duplicate" } else { "stored" }).increment(1);
                        tracing::info!(spool = id.0, channel = %d.channel, ticket = d.ticket.0, created = d.created, duplicate = d.duplicate, owner = ?d.owner, "ingested");
                    }
                }
                Err(e) if e.is_temporary() => temporary = Some(e),
                Err(e) => {
                    tracing::warn!(spool = %id, error = %e, "ingest parked a message");
                    self.store.fail_spool(id, e.to_string()).await?;
                }
            }
        }
        notices::tell_owners(self.store.as_ref(), &notice_config, &self.live, applied).await;
        match temporary {
            Some(e) => Err(e),
            None => Ok(round),
        }
    }

    /// Run until `shutdown` is cancelled and the spool is drained.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        // Drain the spool at start (whatever a crash left), then take from
        // the handoff; drain again when woken with nothing handed over (a
        // puller committed mail), after an overflow, and at shutdown.
        let mut drain = true;
        let mut last_scan = tokio::time::Instant::now();
        loop {
            // Under sustained SMTP load the handoff never runs dry: still look
            // at the spool regularly for mail that came another way.
            let scan = drain || last_scan.elapsed() >= SCAN_EVERY;
            if scan {
                last_scan = tokio::time::Instant::now();
            }
            match self.run_once(scan).await {
                Ok(round) if round.handled == 0 => {
                    backoff = Duration::from_millis(100);
                    if shutdown.is_cancelled() {
                        if round.scanned {
                            break; // drained: the spool has nothing pending
                        }
                        drain = true;
                        continue;
                    }
                    let woken = tokio::select! {
                        _ = self.wake.notified() => true,
                        _ = tokio::time::sleep(IDLE_SCAN) => false,
                        _ = shutdown.cancelled() => false,
                    };
                    if woken && self.handoff.len() < BATCH {
                        tokio::select! {
                            _ = tokio::time::sleep(GATHER) => {}
                            _ = shutdown.cancelled() => {}
                        }
                    }
                    drain = !woken || self.handoff.is_empty();
                }
                Ok(round) => {
                    backoff = Duration::from_millis(100);
                    // A full batch from the spool: there may be more.
                    if round.scanned {
                        drain = round.handled >= BATCH;
                    }
                }
                Err(e) => {
                    drain = true;
                    tracing::warn!(error = %e, retry_in = ?backoff, "ingest round failed");
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::info!("ingest stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewSpool, SpoolSource, StoreStatus};

    const CONFIG: &str = "[company]\nname = \"Acme\"\n[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n";

    async fn ingestor(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Ingestor) {
        let config = crate::config::parse(CONFIG, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::tests::fresh_store(dir.path()).await;
        let ingestor = Ingestor {
            store: store.clone(),
            live: Arc::new(Live::new(config)),
            wake: Arc::new(Notify::new()),
            handoff: Arc::new(handoff::Handoff::default()),
            auth: Arc::new(auth::Authenticator::off("tests")),
        };
        (store, ingestor)
    }

    /// Commit `n` distinct messages to the spool (grouped, as sessions do).
    async fn spool(store: &Arc<dyn Store>, n: usize) -> Vec<SpoolEntry> {
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
            let commits = chunk.iter().map(|i| {
                store.spool(NewSpool {
                    source: SpoolSource::Smtp,
                    mail_from: format!("c{i}@customer.example"),
                    rcpt_to: vec!["support@acme.example".into()],
                    client_ip: None,
                    helo: None,
                    tls: false,
                    channel: None,
                    raw: format!(
                        "From: c{i}@customer.example\r\nMessage-ID: <m{i}@customer.example>\r\nSubject: {i}\r\n\r\nhello\r\n"
                    )
                    .into_bytes(),
                })
            });
            for e in futures_util::future::join_all(commits).await {
                out.push(e.expect("spool"));
            }
        }
        out
    }

    async fn status(store: &Arc<dyn Store>) -> StoreStatus {
        store.status().await.expect("status")
    }

    #[tokio::test]
    async fn an_overflowing_handoff_falls_back_to_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ingest) = ingestor(&dir).await;
        let n = handoff::MAX_ENTRIES + 5;
        for e in spool(&store, n).await {
            ingest.handoff.push(e);
        }
        // The handoff dropped what it held: the next round reads the spool.
        let round = ingest.run_once(false).await.expect("round");
        assert_eq!(
            round,
            Round {
                handled: BATCH,
                scanned: true
            }
        );
        // Then it is empty (not scanned again) until a scan drains the rest.
        let round = ingest.run_once(false).await.expect("round");
        assert_eq!(
            round,
            Round {
                handled: 0,
                scanned: false
            }
        );
        let mut rounds = 0;
        while ingest.run_once(true).await.expect("round").handled > 0 {
            rounds += 1;
        }
        assert_eq!(rounds, (n - BATCH).div_ceil(BATCH));
        let st = status(&store).await;
        assert_eq!((st.tickets, st.spool_pending), (n as i64, 0), "{st:?}");
    }

    #[tokio::test]
    async fn run_drains_what_a_crash_left_then_stops_when_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ingest) = ingestor(&dir).await;
        // Committed but never handed over, as after a crash.
        spool(&store, 100).await;
        let stop = CancellationToken::new();
        let running = tokio::spawn(ingest.run(stop.clone()));
        let mut done = false;
        for _ in 0..500 {
            if status(&store).await.tickets == 100 {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(done, "not drained: {:?}", status(&store).await);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stopped")
            .expect("no panic");
        assert_eq!(status(&store).await.spool_pending, 0);
    }

    #[test]
    fn a_panic_in_planning_parks_the_message() {
        let r = guarded(|| panic!("unexpected input"));
        match r {
            Err(IngestError::Panicked(m)) => assert!(m.contains("unexpected input"), "{m}"),
            other => panic!("not parked: {other:?}"),
        }
        let ok = guarded(|| Err(IngestError::NoChannel(vec!["x@y".into()])));
        assert!(matches!(ok, Err(IngestError::NoChannel(_))));
    }
}
