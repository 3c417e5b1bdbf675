//! `postdesk resolve FILE`: parse, classification, sender resolution and
//! routing of one message without storing it ("why did this ticket go to
//! X?"); with `--peer`, authenticated as mail received over SMTP.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::exit::usage;
use super::print_json;
use crate::config::Config;

pub(super) async fn resolve(
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
    let msg = crate::ingest::parse::parse(&raw).context("not a mail message (no headers)")?;
    let ch = match &channel {
        Some(id) => Some(
            config
                .channel(id)
                .ok_or_else(|| usage(format!("unknown channel {id:?}")))?,
        ),
        None => {
            let fields = crate::ingest::parse::fields(&msg);
            fields
                .to
                .iter()
                .find_map(|a| config.channel_for_recipient(a))
        }
    };
    // With --peer, the envelope sender is the Return-Path the file carries.
    let return_path = msg
        .header_raw("Return-Path")
        .and_then(crate::mail::email_of)
        .unwrap_or_default();
    let auth = match peer {
        None => crate::ingest::auth::Authentication::assumed(),
        Some(ip) => {
            use crate::ingest::{Directory, auth::Authenticator};
            let fields = crate::ingest::parse::fields(&msg);
            let return_path = return_path.clone();
            let entry = crate::store::SpoolEntry {
                id: crate::store::SpoolId(0),
                received_at: 0,
                source: crate::store::SpoolSource::Smtp,
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
    let (r, class) = crate::ingest::resolve_one(&msg, envelope, &config, ch, &auth);
    // For a bounce: the ids ingest would look our reply up by, and the detail.
    let fields = crate::ingest::parse::fields(&msg);
    let bounce = crate::ingest::bounce::link(Some(&msg), &class, &fields);
    // Availability as configured: the store's overrides are the daemon's.
    let routing =
        ch.map(|c| crate::ingest::routing_preview(&msg, &config, c, &r, &|u| u.available));
    let v = serde_json::json!({
        "contact": r.contact,
        "forwarder": r.forwarder,
        "method": r.method,
        "confidence": crate::ingest::resolve::rounded(r.confidence),
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
