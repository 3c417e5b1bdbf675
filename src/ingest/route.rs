//! Route stage: turn a channel's routing (its rules, by skill, then its
//! `assign`) into a [`RoutingPlan`] of eligible users and what chose it
//! ([`plan`]), and pick the owner of a new ticket from that plan
//! ([`choose_owner`]).
//!
//! Eligible = licensed, named by the rule (directly or through a team, or
//! having a matched rule's skills), and — with `only_available` — available
//! now. Pure: config, availability and the message's facts in, plan out;
//! plan and the users' loads in, owner out. [`owner`] reads the loads (open
//! tickets, last assignment) or the contact's owner through the store's
//! [`InboundFacts`], inside the transaction that creates the ticket, and
//! asks [`choose_owner`]; the store writes the answer — so every backend
//! balances alike.

use super::rules;
use crate::config::{Assign, ChannelConfig, Config, RoutingRule, UserConfig};
use crate::store::{InboundFacts, NewTicket, RoutingPlan, StoreError};

/// A new ticket's routing plan, and what chose it (kept on the ticket as
/// `routed_by`, shown by `tickets show` and the API).
#[derive(Debug, Clone)]
pub struct Routed {
    pub plan: RoutingPlan,
    pub by: String,
}

/// The plan for a new ticket on `channel` whose first message is `facts`;
/// `available` says whether a user is available now.
///
/// The channel's `[[channels.routing.rules]]` first, in order: the first
/// rule the message matches ([`rules::matches`]) that has an eligible user
/// with all its skills gives a balancing plan over those users. A rule that
/// matches but has nobody eligible is passed over (and said so in `by`).
/// Then the channel's `assign`. Eligible = licensed and, with
/// `only_available`, available now — except under `contact_owner`, where
/// the contact's owner keeps their contacts while away (ingest then tells
/// them by email).
pub fn plan(
    config: &Config,
    channel: &ChannelConfig,
    available: &dyn Fn(&UserConfig) -> bool,
    facts: &rules::Facts<'_>,
) -> Routed {
    let rule = &channel.routing;
    let eligible = |u: &UserConfig| u.licensed && (!rule.only_available || available(u));
    let property = |name: &str| ticket_property(channel, name);
    let mut passed = Vec::new();
    for r in &rule.rules {
        let Some(why) = rules::matches(r, facts, &property) else {
            continue;
        };
        let skills = if r.skills.is_empty() {
            String::new()
        } else {
            format!(" → skills {}", r.skills.join(", "))
        };
        let users: Vec<String> = rule_pool(config, channel, r)
            .filter(|u| r.skills.iter().all(|s| u.skills.contains(s)))
            .filter(|u| eligible(u))
            .map(|u| u.id.clone())
            .collect();
        if users.is_empty() {
            passed.push(format!(
                "rule \"{}\" matched ({why}) but no {} user has skills {}",
                r.name,
                if rule.only_available {
                    "available licensed"
                } else {
                    "licensed"
                },
                r.skills.join(", ")
            ));
            continue;
        }
        return Routed {
            plan: RoutingPlan::Balance {
                users,
                reason_if_none: format!("rule \"{}\" has no eligible user", r.name),
            },
            by: format!("rule \"{}\" ({why}){skills}", r.name),
        };
    }
    let mut by = format!("channel default (assign = {})", assign_name(rule.assign));
    for p in passed {
        by.push_str("; ");
        by.push_str(&p);
    }
    Routed {
        plan: default_plan(config, channel, &eligible),
        by,
    }
}

/// The channel's `assign` as a plan (no rule chose).
fn default_plan(
    config: &Config,
    channel: &ChannelConfig,
    eligible: &dyn Fn(&UserConfig) -> bool,
) -> RoutingPlan {
    let rule = &channel.routing;
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
        // The owner keeps the ticket while away: licence only.
        Assign::ContactOwner => RoutingPlan::ContactOwner {
            eligible: config
                .users
                .iter()
                .filter(|u| u.licensed)
                .map(|u| u.id.clone())
                .collect(),
        },
    }
}

/// The users a rule chooses among: its own `users` and `teams`, else the
/// channel's routing `users` and `teams`, else every user.
fn rule_pool<'c>(
    config: &'c Config,
    channel: &'c ChannelConfig,
    r: &'c RoutingRule,
) -> impl Iterator<Item = &'c UserConfig> + 'c {
    let (users, teams) = if !r.users.is_empty() || !r.teams.is_empty() {
        (&r.users, &r.teams)
    } else {
        (&channel.routing.users, &channel.routing.teams)
    };
    let everyone = users.is_empty() && teams.is_empty();
    config.users.iter().filter(move |u| {
        everyone || users.contains(&u.id) || u.teams.iter().any(|t| teams.contains(t))
    })
}

/// The config spelling of `assign`.
fn assign_name(a: Assign) -> &'static str {
    match a {
        Assign::Nobody => "nobody",
        Assign::UsersAndTeams => "users_and_teams",
        Assign::ContactOwner => "contact_owner",
    }
}

/// A property a new ticket on `channel` gets: `pipeline`, `status` (with
/// [`DEFAULT_STATUS`]), `priority` or a custom one.
fn ticket_property(channel: &ChannelConfig, name: &str) -> Option<String> {
    let p = &channel.ticket_properties;
    match name {
        "pipeline" => p.pipeline.clone(),
        "status" => Some(p.status.clone().unwrap_or_else(|| DEFAULT_STATUS.into())),
        "priority" => p.priority.clone(),
        other => p.custom.get(other).cloned(),
    }
}

/// How loaded one user of a [`RoutingPlan::Balance`] is, as the store reads
/// it inside the ticket's transaction; and the owner [`choose_owner`] picks.
pub use crate::store::{OwnerChoice, UserLoad};

impl OwnerChoice {
    fn unassigned(reason: String) -> Self {
        OwnerChoice {
            owner: None,
            unassigned_reason: Some(reason),
            record_assignment: false,
        }
    }
}

/// The owner of a new ticket under `plan`.
///
/// - `Unassigned`: nobody, with the plan's reason.
/// - `Balance`: among the plan's users, the one with the fewest open
///   tickets, ties to the least recently assigned, further ties to the
///   first in the plan's order; `loads` gives each user's figures (a user
///   missing from it counts as 0 open, never assigned). No users: nobody,
///   with `reason_if_none`.
/// - `ContactOwner`: `contact_owner` (the contact's owner as stored) when it
///   is among the plan's eligible users, else nobody with why.
pub fn choose_owner(
    plan: &RoutingPlan,
    loads: &[UserLoad],
    contact_owner: Option<&str>,
) -> OwnerChoice {
    match plan {
        RoutingPlan::Unassigned { reason } => OwnerChoice::unassigned(reason.clone()),
        RoutingPlan::Balance {
            users,
            reason_if_none,
        } => {
            let load = |u: &str| {
                loads
                    .iter()
                    .find(|l| l.user == u)
                    .map_or((0, 0), |l| (l.open, l.last_assigned))
            };
            let mut best: Option<((i64, i64), &String)> = None;
            for u in users {
                let key = load(u);
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, u));
                }
            }
            match best {
                Some((_, u)) => OwnerChoice {
                    owner: Some(u.clone()),
                    unassigned_reason: None,
                    record_assignment: true,
                },
                None => OwnerChoice::unassigned(reason_if_none.clone()),
            }
        }
        RoutingPlan::ContactOwner { eligible } => match contact_owner {
            None => OwnerChoice::unassigned("contact has no owner".into()),
            Some(o) if eligible.iter().any(|e| e == o) => OwnerChoice {
                owner: Some(o.to_string()),
                unassigned_reason: None,
                record_assignment: false,
            },
            Some(o) => OwnerChoice::unassigned(format!(
                "contact owner {o} is not eligible (unlicensed or away)"
            )),
        },
    }
}

/// The owner of a new ticket of `contact` under `plan`: reads what
/// [`choose_owner`] needs through `facts` (the balanced users' loads, or the
/// contact's owner) and asks it.
pub fn owner(
    plan: &RoutingPlan,
    contact: &str,
    facts: &mut dyn InboundFacts,
) -> Result<OwnerChoice, StoreError> {
    let mut loads = Vec::new();
    let mut contact_owner = None;
    match plan {
        RoutingPlan::Unassigned { .. } => {}
        RoutingPlan::Balance { users, .. } => {
            for u in users {
                loads.push(facts.user_load(u)?);
            }
        }
        RoutingPlan::ContactOwner { .. } => contact_owner = facts.contact_owner(contact)?,
    }
    Ok(choose_owner(plan, &loads, contact_owner.as_deref()))
}

/// The status of a new ticket whose channel sets none.
pub const DEFAULT_STATUS: &str = "new";

/// The values of a ticket a message (mail or a submission) opens on
/// `channel`: its subject, the channel's ticket properties (status
/// [`DEFAULT_STATUS`] when it sets none) and the routing plan for its first
/// message, `facts`.
/// The ticket a new email an agent composes opens: the channel's properties
/// as routing would set them for this subject, text and contact, but no
/// routing rule's owner — the author owns what they compose.
pub fn composed_ticket(
    config: &Config,
    channel: &ChannelConfig,
    subject: &str,
    text: &str,
    contact: &str,
) -> NewTicket {
    let no_fields = std::collections::BTreeMap::new();
    let facts = rules::Facts::new(subject, text, contact, &no_fields);
    let mut ticket = new_ticket(config, channel, subject.to_string(), &|_| true, &facts);
    ticket.routed_by = None;
    ticket
}

pub fn new_ticket(
    config: &Config,
    channel: &ChannelConfig,
    subject: String,
    available: &dyn Fn(&UserConfig) -> bool,
    facts: &rules::Facts<'_>,
) -> NewTicket {
    let props = &channel.ticket_properties;
    let routed = plan(config, channel, available, facts);
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
        routing: routed.plan,
        routed_by: Some(routed.by),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(user: &str, open: i64, last_assigned: i64) -> UserLoad {
        UserLoad {
            user: user.into(),
            open,
            last_assigned,
        }
    }

    fn balance(users: &[&str]) -> RoutingPlan {
        RoutingPlan::Balance {
            users: users.iter().map(|u| u.to_string()).collect(),
            reason_if_none: "no eligible user is available".into(),
        }
    }

    /// (owner, unassigned reason, record the assignment)
    type Chosen = (Option<String>, Option<String>, bool);

    fn chosen(c: OwnerChoice) -> Chosen {
        (c.owner, c.unassigned_reason, c.record_assignment)
    }

    fn owner(name: &str) -> Chosen {
        (Some(name.into()), None, true)
    }

    /// Balancing: fewest open tickets, then least recently assigned, then
    /// the plan's order; loads of users outside the plan never count.
    #[test]
    fn balance_picks_fewest_open_then_least_recent_then_first() {
        let cases: &[(&str, &[&str], Vec<UserLoad>, &str)] = &[
            (
                "fewest open wins",
                &["ann", "bob"],
                vec![load("ann", 3, 1), load("bob", 1, 2)],
                "bob",
            ),
            (
                "open tie: least recently assigned",
                &["ann", "bob"],
                vec![load("ann", 2, 5), load("bob", 2, 4)],
                "bob",
            ),
            (
                "full tie: first in the plan",
                &["bob", "ann"],
                vec![load("ann", 0, 0), load("bob", 0, 0)],
                "bob",
            ),
            (
                "missing load counts as idle and never assigned",
                &["ann", "cid"],
                vec![load("ann", 0, 3)],
                "cid",
            ),
            (
                "a user outside the plan is never picked",
                &["ann"],
                vec![load("zed", 0, 0), load("ann", 9, 9)],
                "ann",
            ),
            (
                "open count beats recency",
                &["ann", "bob"],
                vec![load("ann", 1, 0), load("bob", 0, 99)],
                "bob",
            ),
        ];
        for (what, users, loads, want) in cases {
            assert_eq!(
                chosen(choose_owner(&balance(users), loads, None)),
                owner(want),
                "{what}"
            );
        }
    }

    /// Nobody to balance over (all away or unlicensed): unassigned with the
    /// plan's reason, and nothing to record; the contact's owner plays no
    /// part in balancing.
    #[test]
    fn balance_without_users_is_unassigned_with_the_plans_reason() {
        let c = choose_owner(&balance(&[]), &[load("ann", 0, 0)], Some("ann"));
        assert_eq!(
            chosen(c),
            (None, Some("no eligible user is available".into()), false)
        );
        let plan = RoutingPlan::Unassigned {
            reason: "channel routing assigns nobody".into(),
        };
        assert_eq!(
            chosen(choose_owner(&plan, &[load("ann", 0, 0)], Some("ann"))),
            (None, Some("channel routing assigns nobody".into()), false)
        );
    }

    /// The contact's owner gets the ticket only when eligible; never
    /// recorded as a balancing assignment.
    #[test]
    fn contact_owner_only_when_eligible() {
        let plan = RoutingPlan::ContactOwner {
            eligible: vec!["ann".into(), "bob".into()],
        };
        let cases: &[(Option<&str>, Chosen)] = &[
            (Some("bob"), (Some("bob".into()), None, false)),
            (None, (None, Some("contact has no owner".into()), false)),
            (
                Some("cid"),
                (
                    None,
                    Some("contact owner cid is not eligible (unlicensed or away)".into()),
                    false,
                ),
            ),
        ];
        for (contact_owner, want) in cases {
            assert_eq!(
                chosen(choose_owner(&plan, &[], *contact_owner)),
                *want,
                "{contact_owner:?}"
            );
        }
        let nobody = RoutingPlan::ContactOwner { eligible: vec![] };
        assert_eq!(
            chosen(choose_owner(&nobody, &[], Some("ann"))),
            (
                None,
                Some("contact owner ann is not eligible (unlicensed or away)".into()),
                false
            )
        );
    }

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
            let none = std::collections::BTreeMap::new();
            let facts = rules::Facts::new("Hi", "", "c@customer.example", &none);
            new_ticket(&config, ch, "Hi".into(), &|_| true, &facts)
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
