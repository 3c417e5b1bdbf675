//! `postdesk status`: open mailbox alerts first, then whether a daemon
//! answers (its `/readyz`), the store's counts, the nodes sharing it, the
//! channels and the pulled mailboxes.

use anyhow::Result;

use super::channels::channel_states;
use super::{open_store, print_json};
use crate::config::Config;
use crate::store::Store;

pub(super) async fn status(config: Config, json: bool) -> Result<()> {
    let store = open_store(&config).await?;
    let channels = channel_states(&config, store.as_ref()).await?;
    let counts = store.status().await?;
    let mailboxes = mailbox_states(&config, store.as_ref()).await?;
    let alerts = store.open_alerts().await?;
    let nodes = store.nodes().await?;
    let daemon = daemon_state(&config).await;
    let v = serde_json::json!({
        "alerts": alerts,
        "nodes": nodes,
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
    print_nodes(&nodes);
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

/// The nodes sharing the store, as `status` lists them: id, addresses,
/// last heartbeat's age (and whether it is within the node's lease), the
/// claims it holds. SQLite has one implicit node.
fn print_nodes(nodes: &[crate::store::NodeView]) {
    if nodes.is_empty() {
        println!("nodes: single node");
        return;
    }
    let now = crate::store::now_ms();
    println!("nodes:");
    for n in nodes {
        let age = (now - n.last_heartbeat).max(0) / 1000;
        let state = if n.alive(now) {
            "alive"
        } else {
            "lease expired"
        };
        println!(
            "  {:<20} {:<44} heartbeat {age}s ago ({state})  leases {}",
            n.id, n.address, n.leases
        );
    }
}

/// One open mailbox alert, as `status` shows it first.
fn alert_line(a: &crate::store::AlertView) -> String {
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
) -> Result<Vec<crate::store::MailboxStatusView>> {
    let mut rows = store.mailbox_status().await?;
    for c in config.channels.iter().filter(|c| c.kind.is_pulled()) {
        let folder = c
            .imap
            .as_ref()
            .map_or_else(|| "INBOX".to_string(), |i| i.folder.clone());
        if !rows.iter().any(|r| r.channel == c.id && r.folder == folder) {
            rows.push(crate::store::MailboxStatusView {
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

/// Whether a daemon answers on the configured HTTP address, and what its
/// `/readyz` says (the store alone cannot tell a running daemon).
#[derive(serde::Serialize)]
pub(super) struct DaemonState {
    pub(super) http: String,
    /// `ready`, `stopping`, `not ready`, or `not running` (nothing answers).
    pub(super) state: String,
    pub(super) smtp: Vec<String>,
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

pub(super) async fn daemon_state(config: &Config) -> DaemonState {
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
