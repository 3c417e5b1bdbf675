//! Route stage: turn a channel's routing rule into a [`RoutingPlan`] of
//! eligible users. The store applies the plan against open-ticket counts in
//! the same transaction that creates the ticket.
//!
//! Eligible = licensed, named by the rule (directly or through a team), and —
//! with `only_available` — available now. Pure: config and availability in,
//! plan out.

use crate::config::{Assign, ChannelConfig, Config, UserConfig};
use crate::store::{NewTicket, RoutingPlan};

/// The plan for a new ticket on `channel`; `available` says whether a user is
/// available now.
pub fn plan(
    config: &Config,
    channel: &ChannelConfig,
    available: &dyn Fn(&UserConfig) -> bool,
) -> RoutingPlan {
    let rule = &channel.routing;
    let eligible = |u: &UserConfig| u.licensed && (!rule.only_available || available(u));
    match rule.assign {
        Assign::Nobody => RoutingPlan::Unassigned {
            reason: "channel routing assigns nobody".into(),
        },
        Assign::UsersAndTeams => {
            let named: Vec<&UserConfig> = config
                .users
                .iter()
                .filter(|u| {
                    rule.users.contains(&u.id) || u.teams.iter().any(|t| rule.teams.contains(t))
                })
                .collect();
            let users: Vec<String> = named
                .iter()
                .filter(|u| eligible(u))
                .map(|u| u.id.clone())
                .collect();
            let reason_if_none = if named.iter().any(|u| u.licensed) {
                "no eligible user is available".to_string()
            } else {
                "no licensed user is named by the routing rule".to_string()
            };
            RoutingPlan::Balance {
                users,
                reason_if_none,
            }
        }
        Assign::ContactOwner => RoutingPlan::ContactOwner {
            eligible: config
                .users
                .iter()
                .filter(|u| eligible(u))
                .map(|u| u.id.clone())
                .collect(),
        },
    }
}

/// The status of a new ticket whose channel sets none.
pub const DEFAULT_STATUS: &str = "new";

/// The values of a ticket a message (mail or a submission) opens on
/// `channel`: its subject, the channel's ticket properties (status
/// [`DEFAULT_STATUS`] when it sets none) and the routing plan.
pub fn new_ticket(
    config: &Config,
    channel: &ChannelConfig,
    subject: String,
    available: &dyn Fn(&UserConfig) -> bool,
) -> NewTicket {
    let props = &channel.ticket_properties;
    NewTicket {
        subject,
        secret: super::thread::new_secret(),
        pipeline: props.pipeline.clone(),
        status: Some(
            props
                .status
                .clone()
                .unwrap_or_else(|| DEFAULT_STATUS.to_string()),
        ),
        priority: props.priority.clone(),
        properties: serde_json::to_string(&props.custom).unwrap_or_else(|_| "{}".into()),
        routing: plan(config, channel, available),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel without `[channels.ticket_properties]` opens tickets with
    /// status "new" (before: none, so `--status new` missed them, while the
    /// example config promised a first status); a channel's own values win.
    #[test]
    fn new_tickets_get_the_channels_properties_or_status_new() {
        let text = "[company]\nname = \"Acme\"\n\
            [[channels]]\nid = \"bare\"\nkind = \"forward\"\naddress = \"bare@acme.example\"\n\
            [[channels]]\nid = \"set\"\nkind = \"forward\"\naddress = \"set@acme.example\"\n\
            [channels.ticket_properties]\npipeline = \"billing\"\nstatus = \"open\"\npriority = \"high\"\nsource = \"email\"\n";
        let config = crate::config::parse(text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let ticket = |id: &str| {
            let ch = config.channel(id).expect("channel");
            new_ticket(&config, ch, "Hi".into(), &|_| true)
        };
        let bare = ticket("bare");
        assert_eq!(
            (
                bare.pipeline.as_deref(),
                bare.status.as_deref(),
                bare.priority.as_deref()
            ),
            (None, Some("new"), None)
        );
        assert_eq!(bare.properties, "{}");
        let set = ticket("set");
        assert_eq!(
            (
                set.pipeline.as_deref(),
                set.status.as_deref(),
                set.priority.as_deref()
            ),
            (Some("billing"), Some("open"), Some("high"))
        );
        assert_eq!(set.properties, r#"{"source":"email"}"#);
    }
}
