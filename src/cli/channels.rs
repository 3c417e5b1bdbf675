//! `postdesk channels list|enable|disable|reset`: the channels with their
//! state now (the file's `enabled`, or a run-time override the daemon picks
//! up within seconds), also listed by `status`.

use anyhow::Result;

use super::{ChannelsCmd, open_store, print_json};
use crate::api::actions::Caller;
use crate::config::Config;
use crate::store::Store;

pub(super) async fn channels(cmd: ChannelsCmd, config: Config) -> Result<()> {
    let (id, enabled) = match cmd {
        ChannelsCmd::List { json } => {
            let store = open_store(&config).await?;
            let list = channel_states(&config, store.as_ref()).await?;
            if json {
                return print_json(&list);
            }
            for c in list {
                println!("{}", c.line());
            }
            return Ok(());
        }
        ChannelsCmd::Enable { id } => (id, Some(true)),
        ChannelsCmd::Disable { id } => (id, Some(false)),
        ChannelsCmd::Reset { id } => (id, None),
    };
    // The API's and the web inbox's action, as the operator.
    let s = super::app(config).await?;
    crate::api::actions::set_channel_override(&s, Caller::Operator(None), &id, enabled).await?;
    match enabled {
        Some(true) => println!("channel {id} enabled"),
        Some(false) => println!("channel {id} disabled"),
        None => {
            let file = s.live.config().channel(&id).is_some_and(|c| c.enabled);
            println!(
                "channel {id}: run-time override cleared; the file says {}",
                if file { "enabled" } else { "disabled" }
            );
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
pub(super) struct ChannelState {
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
    pub(super) fn line(&self) -> String {
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

pub(super) async fn channel_states(
    config: &Config,
    store: &dyn Store,
) -> Result<Vec<ChannelState>> {
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
