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

/// The values of a ticket a message opens on `channel`: its subject, the
/// channel's ticket properties and the routing plan. (Used by submissions;
/// mail builds the same values in [`super::plan_entry`].)
pub fn new_ticket(
    config: &Config,
    channel: &ChannelConfig,
    subject: String,
    available: &dyn Fn(&UserConfig) -> bool,
) -> NewTicket {
    let props = &channel.ticket_properties;
    NewTicket {
        subject,
        pipeline: props.pipeline.clone(),
        status: props.status.clone(),
        priority: props.priority.clone(),
        properties: serde_json::to_string(&props.custom).unwrap_or_else(|_| "{}".into()),
        routing: plan(config, channel, available),
    }
}
