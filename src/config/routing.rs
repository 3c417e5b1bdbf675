//! Checks of `[[channels.routing.rules]]` and of what notices need
//! (`[notifications]`, users' `notify`), after reading: each problem at its
//! key, FILE:LINE:COL, like the rest of `validate.rs`.
//!
//! A rule requiring a skill that no user has is an error (most likely a
//! typo: the rule could never choose anyone). A rule whose skills some users
//! have, but none it may choose (unlicensed, or outside its users and
//! teams), is a warning: the configuration is consistent, the rule just
//! passes its mail to the channel's default until someone qualifies (the
//! only German-speaking agent left; the next one is not configured yet).

use super::read::{Draft, Reader};
use super::validate::known_ids;
use super::{ChannelConfig, ChannelKind};

pub(super) fn check_rules(r: &mut Reader<'_>, d: &Draft, path: &str, ch: &ChannelConfig) {
    for (i, rule) in ch.routing.rules.iter().enumerate() {
        let at = format!("{path}.routing.rules[{i}]");
        if !rule.has_condition() {
            r.error_at(
                &at,
                format!(
                    "routing rule \"{}\" has no condition (keywords, subject_keywords, languages, sender_domains, properties or fields): it would take every ticket",
                    rule.name
                ),
            );
        }
        for (j, lang) in rule.languages.iter().enumerate() {
            if crate::mail::language::code(lang).is_none() {
                r.error_at(
                    &format!("{at}.languages[{j}]"),
                    format!("unknown language `{lang}`: use an ISO 639-1 or 639-3 code such as \"de\" or \"deu\""),
                );
            }
        }
        if !rule.fields.is_empty()
            && r.valid(&format!("{path}.kind"))
            && ch.kind != ChannelKind::Form
        {
            r.warning_at(
                &format!("{at}.fields"),
                format!(
                    "`fields` only match web form submissions; {} channels never have any",
                    ch.kind.as_str()
                ),
            );
        }
        if !ch.form.fields.is_empty() {
            for name in rule.fields.keys() {
                if ch.form.field(name).is_none() {
                    r.error_at(
                        &format!("{at}.fields.{name}"),
                        format!(
                            "routing rule names unknown form field `{name}`{}",
                            known_ids(ch.form.fields.iter().map(|f| f.name.as_str()))
                        ),
                    );
                }
            }
        }
        for (j, id) in rule.users.iter().enumerate() {
            if !d.users.iter().any(|(_, u)| &u.id == id) {
                r.error_at(
                    &format!("{at}.users[{j}]"),
                    format!(
                        "routing rule names unknown user `{id}`{}",
                        known_ids(d.users.iter().map(|(_, u)| u.id.as_str()))
                    ),
                );
            }
        }
        for (j, id) in rule.teams.iter().enumerate() {
            if !d.teams.iter().any(|(_, t)| &t.id == id) {
                r.error_at(
                    &format!("{at}.teams[{j}]"),
                    format!(
                        "routing rule names unknown team `{id}`{}",
                        known_ids(d.teams.iter().map(|(_, t)| t.id.as_str()))
                    ),
                );
            }
        }
        let mut unknown = false;
        for (j, skill) in rule.skills.iter().enumerate() {
            if !d.users.iter().any(|(_, u)| u.skills.contains(skill)) {
                unknown = true;
                let mut all: Vec<&str> = d
                    .users
                    .iter()
                    .flat_map(|(_, u)| u.skills.iter().map(String::as_str))
                    .collect();
                all.sort_unstable();
                r.error_at(
                    &format!("{at}.skills[{j}]"),
                    format!(
                        "routing rule \"{}\" requires skill `{skill}`, which no user has{}",
                        rule.name,
                        known_ids(all.into_iter())
                    ),
                );
            }
        }
        if unknown {
            continue;
        }
        let (users, teams) = if rule.users.is_empty() && rule.teams.is_empty() {
            (&ch.routing.users, &ch.routing.teams)
        } else {
            (&rule.users, &rule.teams)
        };
        let everyone = users.is_empty() && teams.is_empty();
        let qualified = d.users.iter().any(|(_, u)| {
            u.licensed
                && (everyone || users.contains(&u.id) || u.teams.iter().any(|t| teams.contains(t)))
                && rule.skills.iter().all(|s| u.skills.contains(s))
        });
        if !qualified {
            r.warning_at(
                &at,
                format!(
                    "routing rule \"{}\" can choose nobody: no licensed user it may choose has skills {}; its mail goes to the channel's default",
                    rule.name,
                    rule.skills.join(", ")
                ),
            );
        }
    }
}

/// `[notifications]` and users' `notify`.
pub(super) fn check_notifications(r: &mut Reader<'_>, d: &Draft) {
    let from = d.config.notifications.from.as_deref();
    if let Some(from) = from {
        if !crate::mail::is_valid_email(from) {
            r.error_at(
                "notifications.from",
                format!("invalid email address `{from}`"),
            );
        } else if d
            .channels
            .iter()
            .any(|(_, c)| c.address.as_deref() == Some(from))
        {
            r.warning_at(
                "notifications.from",
                format!("`{from}` is a channel's address: bounces and automatic answers to notices come back to that channel (they are recognised and dropped, but use an address of its own)"),
            );
        }
    }
    if from.is_some() {
        return;
    }
    for (i, user) in &d.users {
        if !user.notify.is_empty() {
            r.warning_at(
                &format!("users[{i}].notify"),
                format!(
                    "user `{}` asks for notices, but [notifications] from is not set: none are sent",
                    user.id
                ),
            );
        }
    }
}
