//! Owner notices: after a message is applied, who is told by email, and what
//! ([`decide`], pure), then queued through [`crate::outbound::notify`]
//! ([`tell_owners`]).
//!
//! - A new ticket given to a contact's owner who is away (`contact_owner`
//!   routing): the ticket stays theirs and they get the message by email
//!   (`owner_away`), whatever their `notify` says.
//! - A new ticket assigned to a user with `notify = ["assigned"]`
//!   (`assigned`).
//! - A customer's message joining a ticket owned by a user with
//!   `notify = ["customer_replied"]` (`customer_replied`). Not for automatic
//!   mail (auto-replies, bounces, lists) nor for a team member's mail.
//!
//! Notices go to the user's own address only, never to a customer. They are
//! queued after the message's transaction has committed: a crash between
//! the two loses the notice (never the message); nothing is sent twice.
//! Off without `[notifications] from`.

use crate::config::{Assign, Config, NotifyEvent, UserConfig};
use crate::live::Live;
use crate::outbound::notify::{self, Notice};
use crate::store::{BodyText, Delivered, InboundMessage, RoutingPlan, Store, TicketId};

/// Longest excerpt of the customer's text a notice quotes (bytes).
pub const EXCERPT: usize = 16 * 1024;

/// What a notice needs of one applied message, taken from its plan before
/// the store consumes it.
#[derive(Debug, Clone)]
pub struct Brief {
    pub channel: String,
    /// The new ticket's subject (for a message that opens one), else the
    /// message's.
    pub subject: String,
    /// The customer (the contact).
    pub contact: String,
    /// The message's text, cut at [`EXCERPT`].
    pub text: String,
    /// Owner chosen as the contact's owner (not by a rule).
    pub by_contact_owner: bool,
    /// Written by the customer: normal mail, not from a team member.
    pub from_customer: bool,
}

impl Brief {
    /// The brief of `m`, whose raw bytes (for a body stored by reference)
    /// are `raw`.
    pub fn of(m: &InboundMessage, raw: &[u8], config: &Config) -> Brief {
        let text = match &m.text {
            BodyText::Inline(t) => t.clone(),
            BodyText::RawFrom(at) => {
                String::from_utf8_lossy(raw.get(*at..).unwrap_or_default()).into_owned()
            }
        };
        let normal = matches!(m.classification, crate::store::Classification::Normal);
        Brief {
            channel: m.channel.clone(),
            subject: m.new_ticket.subject.clone(),
            contact: m.contact.email.clone(),
            text: excerpt(&text),
            by_contact_owner: matches!(m.new_ticket.routing, RoutingPlan::ContactOwner { .. }),
            from_customer: normal
                && !m.trusted_sender
                && config.user_by_email(&m.from.email).is_none(),
        }
    }
}

/// Each delivered message with its brief (matched by channel: a plan has
/// one message per channel).
pub fn pair(delivered: &[Delivered], briefs: Vec<Brief>) -> Vec<(Delivered, Brief)> {
    briefs
        .into_iter()
        .filter_map(|b| {
            let d = delivered.iter().find(|d| d.channel == b.channel)?;
            Some((d.clone(), b))
        })
        .collect()
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].trim_end().to_string();
    if end < text.len() {
        out.push_str("\n[…]");
    }
    out
}

/// The notice for one applied message, if any. `owner`: the ticket's owner
/// (for a joined ticket, as stored now); `available`: whether a user is
/// available now.
pub fn decide(
    config: &Config,
    d: &Delivered,
    brief: &Brief,
    owner: Option<&str>,
    available: &dyn Fn(&UserConfig) -> bool,
) -> Option<Notice> {
    if d.duplicate {
        return None;
    }
    let user = config.user(owner?)?;
    let wants = |e: NotifyEvent| user.notify.contains(&e);
    let contact_owner_channel = config
        .channel(&d.channel)
        .is_some_and(|c| c.routing.assign == Assign::ContactOwner);
    let n = d.ticket.0;
    let (kind, subject, lead) = if d.created {
        if brief.by_contact_owner && contact_owner_channel && !available(user) {
            (
                "owner_away",
                format!(
                    "[#{n}] {} — from your contact while you are away",
                    brief.subject
                ),
                format!(
                    "{} wrote while you are away. Ticket #{n} on {} is still yours; the message follows.",
                    brief.contact, d.channel
                ),
            )
        } else if wants(NotifyEvent::Assigned) {
            (
                "assigned",
                format!("[#{n}] assigned to you: {}", brief.subject),
                format!(
                    "Ticket #{n} on {} from {} was assigned to you.",
                    d.channel, brief.contact
                ),
            )
        } else {
            return None;
        }
    } else if brief.from_customer && wants(NotifyEvent::CustomerReplied) {
        (
            "customer_replied",
            format!("[#{n}] {} wrote again: {}", brief.contact, brief.subject),
            format!(
                "{} wrote again on ticket #{n} ({}), which you own.",
                brief.contact, d.channel
            ),
        )
    } else {
        return None;
    };
    Some(Notice {
        kind: kind.to_string(),
        to: vec![user.email.clone()],
        subject,
        text: format!(
            "{lead}\n\nSee it with: postdesk tickets show {n}\n\n-- \n{}\n",
            brief.text
        ),
    })
}

/// Decide and queue the notices for applied messages (each with its brief),
/// with users' availability as `live` has it now.
/// Joined tickets' owners are read from the store only when some user asks
/// for `customer_replied`. Failures are logged: a notice never holds up mail.
pub async fn tell_owners(
    store: &dyn Store,
    config: &Config,
    live: &Live,
    applied: Vec<(Delivered, Brief)>,
) {
    if config.notifications.from.is_none() {
        return;
    }
    let replies_wanted = config
        .users
        .iter()
        .any(|u| u.notify.contains(&NotifyEvent::CustomerReplied));
    for (d, brief) in applied {
        let owner = match (&d.owner, d.created) {
            (Some(o), _) => Some(o.clone()),
            (None, false) if replies_wanted && !d.duplicate && brief.from_customer => {
                owner_of(store, d.ticket).await
            }
            _ => None,
        };
        let available = |u: &UserConfig| live.user_available(u);
        let Some(notice) = decide(config, &d, &brief, owner.as_deref(), &available) else {
            continue;
        };
        let kind = notice.kind.clone();
        if let Err(e) = notify::send(store, config, notice).await {
            tracing::warn!(ticket = d.ticket.0, %kind, error = %e, "owner notice not queued");
        }
    }
}

async fn owner_of(store: &dyn Store, ticket: TicketId) -> Option<String> {
    match store.ticket(ticket).await {
        Ok(t) => t.head.owner,
        Err(e) => {
            tracing::warn!(ticket = ticket.0, error = %e, "cannot read the ticket's owner for a notice");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[notifications]\nfrom = \"desk@acme.example\"\n\
        [[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\nnotify = [\"assigned\", \"customer_replied\"]\n\
        [[users]]\nid = \"bob\"\nemail = \"bob@acme.example\"\n\
        [[channels]]\nid = \"sales\"\nkind = \"forward\"\naddress = \"sales@acme.example\"\n\
        [channels.routing]\nassign = \"contact_owner\"\n\
        [[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n\
        [channels.routing]\nassign = \"users_and_teams\"\nusers = [\"ann\", \"bob\"]\n";

    fn delivered(channel: &str, created: bool, owner: Option<&str>) -> Delivered {
        Delivered {
            channel: channel.into(),
            ticket: TicketId(7),
            created,
            duplicate: false,
            owner: owner.map(str::to_string),
        }
    }

    fn brief(channel: &str, by_contact_owner: bool, from_customer: bool) -> Brief {
        Brief {
            channel: channel.into(),
            subject: "Invoice".into(),
            contact: "kim@customer.example".into(),
            text: "Please help".into(),
            by_contact_owner,
            from_customer,
        }
    }

    /// (kind, recipient) of the notice decided, if any.
    fn kind(
        d: &Delivered,
        b: &Brief,
        owner: Option<&str>,
        away: bool,
    ) -> Option<(String, Vec<String>)> {
        let config = crate::config::parse(CONFIG, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        decide(&config, d, b, owner, &|_| !away).map(|n| (n.kind, n.to))
    }

    #[test]
    fn who_is_told_what() {
        let ann = Some(("assigned".to_string(), vec!["ann@acme.example".to_string()]));
        // Assigned: only to a user who asked.
        assert_eq!(
            kind(
                &delivered("support", true, Some("ann")),
                &brief("support", false, true),
                Some("ann"),
                false
            ),
            ann
        );
        assert_eq!(
            kind(
                &delivered("support", true, Some("bob")),
                &brief("support", false, true),
                Some("bob"),
                false
            ),
            None
        );
        // A contact's owner away: always told, whatever they asked for.
        for who in ["ann", "bob"] {
            let got = kind(
                &delivered("sales", true, Some(who)),
                &brief("sales", true, true),
                Some(who),
                true,
            );
            assert_eq!(got.map(|(k, _)| k).as_deref(), Some("owner_away"), "{who}");
        }
        // Present: an ordinary assignment.
        assert_eq!(
            kind(
                &delivered("sales", true, Some("bob")),
                &brief("sales", true, true),
                Some("bob"),
                false
            ),
            None
        );
        // A customer's reply on an owned ticket; not automatic mail or a colleague's.
        let replied = kind(
            &delivered("support", false, None),
            &brief("support", false, true),
            Some("ann"),
            false,
        );
        assert_eq!(replied.map(|(k, _)| k).as_deref(), Some("customer_replied"));
        assert_eq!(
            kind(
                &delivered("support", false, None),
                &brief("support", false, false),
                Some("ann"),
                false
            ),
            None
        );
        // Unowned, duplicates, unknown owners: nothing.
        assert_eq!(
            kind(
                &delivered("support", true, None),
                &brief("support", false, true),
                None,
                false
            ),
            None
        );
        let mut dup = delivered("support", false, None);
        dup.duplicate = true;
        assert_eq!(
            kind(&dup, &brief("support", false, true), Some("ann"), false),
            None
        );
        assert_eq!(
            kind(
                &delivered("support", true, Some("zed")),
                &brief("support", false, true),
                Some("zed"),
                false
            ),
            None
        );
    }

    #[test]
    fn excerpts_are_cut_on_a_character() {
        let long = "ä".repeat(EXCERPT);
        let e = excerpt(&long);
        assert!(e.len() <= EXCERPT + "\n[…]".len(), "{}", e.len());
        assert!(e.ends_with("[…]"));
        assert_eq!(excerpt("short\n"), "short");
    }
}
