//! `postdesk outbox flush|status`: the queue of replies the daemon's
//! sender delivers.

use anyhow::Result;

use super::{open_store, print_json};
use crate::config::Config;

/// `outbox flush`: every queued reply due now (like `postqueue -f`).
pub(super) async fn flush(config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    let n = store.flush_outbox().await?;
    crate::outbound::wake::wake_daemon(&config);
    println!("{n} queued replies due now");
    Ok(())
}

/// `outbox status`: counts by state.
pub(super) async fn status(config: Config, json: bool) -> Result<()> {
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
