//! Whole-config checks after reading: references, uniqueness, secrets (readable;
//! a warning when group/world-readable or sent in clear to another host), and
//! the resolution of relative paths against the config file's directory.

use crate::mail::is_valid_email;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::diagnostic::io_message;
use super::read::{Draft, Reader};
use super::{Assign, ChannelConfig, ChannelKind, OAuthConfig, OAuthFlow, SenderName, TlsMode};

pub(super) fn validate(r: &mut Reader<'_>, d: &mut Draft, config_path: &Path) {
    let base = config_path.parent().unwrap_or(Path::new(""));
    check_alerts(r, d);
    check_people(r, d);
    check_channels(r, d, base);
    check_services(r, d, base);
    check_store(r, d, base);
    super::routing::check_notifications(r, d);
    resolve_paths(d, base);
}

fn check_people(r: &mut Reader<'_>, d: &Draft) {
    let mut ids = Unique::new("team id");
    for (i, team) in &d.teams {
        ids.check(r, &format!("teams[{i}].id"), &team.id);
    }
    let mut ids = Unique::new("user id");
    let mut emails = Unique::new("user email");
    for (i, user) in &d.users {
        let path = format!("users[{i}]");
        ids.check(r, &format!("{path}.id"), &user.id);
        let email_path = format!("{path}.email");
        if r.valid(&email_path) && check_email(r, &email_path, &user.email) {
            emails.check(r, &email_path, &user.email);
        }
        for (j, team) in user.teams.iter().enumerate() {
            if !d.teams.iter().any(|(_, t)| &t.id == team) {
                r.error_at(
                    &format!("{path}.teams[{j}]"),
                    format!(
                        "unknown team `{team}`{}",
                        known_ids(d.teams.iter().map(|(_, t)| t.id.as_str()))
                    ),
                );
            }
        }
    }
}

fn check_channels(r: &mut Reader<'_>, d: &Draft, base: &Path) {
    if d.channels.is_empty() {
        // Valid (the daemon runs), but it accepts nothing: most likely not
        // what an admin running `check` meant.
        r.warning_at(
            "channels",
            "no [[channels]]: every recipient is refused (550) and nothing is pulled",
        );
    }
    let mut ids = Unique::new("channel id");
    let mut addresses = Unique::new("channel address");
    for (i, ch) in &d.channels {
        let path = format!("channels[{i}]");
        let p = |key: &str| format!("{path}.{key}");
        ids.check(r, &p("id"), &ch.id);
        // A missing or invalid kind (reported) reads as `form`: skip kind checks.
        let kind_known = r.valid(&p("kind"));

        match &ch.address {
            None if kind_known && ch.kind.is_mail() => r.error_at(
                &path,
                format!(
                    "missing required key `address` in [[channels]] (required for {} channels)",
                    ch.kind.as_str()
                ),
            ),
            Some(address) if check_email(r, &p("address"), address) => {
                addresses.check(r, &p("address"), address);
                if let Some((_, user)) = d.users.iter().find(|(_, u)| &u.email == address) {
                    r.error_at(
                        &p("address"),
                        format!(
                            "channel address `{address}` is also the address of user `{}`",
                            user.id
                        ),
                    );
                }
            }
            _ => {}
        }
        for (j, forwarder) in ch.forwarders.iter().enumerate() {
            check_email(r, &format!("{path}.forwarders[{j}]"), forwarder);
        }

        check_mailbox(r, &path, ch, kind_known, base);
        check_sender_name(r, d, &path, ch);
        check_routing(r, d, &path, ch);
        check_form(r, &path, ch, kind_known);
    }
}

/// `[channels.form]`: only on form channels; unique field names; the role
/// fields (email, name, subject, description) name declared fields; the
/// honeypot is not a declared field.
fn check_form(r: &mut Reader<'_>, path: &str, ch: &ChannelConfig, kind_known: bool) {
    let form_path = format!("{path}.form");
    if kind_known && ch.kind != ChannelKind::Form && r.has(&form_path) {
        r.warning_at(
            &form_path,
            format!(
                "[channels.form] is ignored for {} channels",
                ch.kind.as_str()
            ),
        );
        return;
    }
    let form = &ch.form;
    let mut names = Unique::new("form field name");
    for (j, field) in form.fields.iter().enumerate() {
        names.check(r, &format!("{form_path}.fields[{j}].name"), &field.name);
    }
    if !form.fields.is_empty() {
        let declared = || form.fields.iter().map(|f| f.name.as_str());
        let roles = [
            ("email_field", &form.email_field, true),
            (
                "name_field",
                &form.name_field,
                r.has(&format!("{form_path}.name_field")),
            ),
            (
                "subject_field",
                &form.subject_field,
                r.has(&format!("{form_path}.subject_field")),
            ),
            (
                "description_field",
                &form.description_field,
                r.has(&format!("{form_path}.description_field")),
            ),
        ];
        for (key, name, must_exist) in roles {
            if must_exist && form.field(name).is_none() {
                r.error_at(
                    &format!("{form_path}.{key}"),
                    format!(
                        "`{key}` names unknown form field `{name}`{}",
                        known_ids(declared())
                    ),
                );
            }
        }
        if let Some(f) = form.field(&form.email_field)
            && f.hidden
        {
            r.error_at(
                &format!("{form_path}.email_field"),
                format!("the email field `{}` must not be hidden", f.name),
            );
        }
    }
    if let Some(honeypot) = &form.honeypot_field
        && form.field(honeypot).is_some()
    {
        r.error_at(
            &format!("{form_path}.honeypot_field"),
            format!("honeypot field `{honeypot}` must not also be a declared form field"),
        );
    }
    if let Some(url) = &form.redirect_url
        && !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/'))
    {
        r.error_at(
            &format!("{form_path}.redirect_url"),
            format!("redirect_url `{url}` must be an http(s) URL or a path starting with /"),
        );
    }
    for (j, origin) in form.allowed_origins.iter().enumerate() {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let ok = origin == "*"
            || rest.is_some_and(|host| {
                let host = host.trim_end_matches('/');
                !host.is_empty() && !host.contains(['/', '?', '#', ' '])
            });
        if !ok {
            r.error_at(
                &format!("{form_path}.allowed_origins[{j}]"),
                format!(
                    "invalid origin `{origin}`: expected scheme://host[:port] (e.g. \"https://www.acme.example\") or \"*\""
                ),
            );
        }
    }
    if form.max_field_size == 0 {
        r.error_at(
            &format!("{form_path}.max_field_size"),
            "`max_field_size` must be at least 1",
        );
    }
}

/// `[channels.imap]` / `[channels.oauth]` against the kind, and their secrets.
fn check_mailbox(
    r: &mut Reader<'_>,
    path: &str,
    ch: &ChannelConfig,
    kind_known: bool,
    base: &Path,
) {
    let kind = ch.kind.as_str();
    let imap_path = format!("{path}.imap");
    let oauth_path = format!("{path}.oauth");
    if let Some(file) = ch.imap.as_ref().and_then(|i| i.password_file.as_ref()) {
        check_secret(r, &format!("{imap_path}.password_file"), file, base);
    }
    if let Some(oauth) = &ch.oauth {
        if let Some(file) = &oauth.client_secret_file {
            check_secret(r, &format!("{oauth_path}.client_secret_file"), file, base);
        }
        if let Some(file) = &oauth.refresh_token_file {
            check_secret(r, &format!("{oauth_path}.refresh_token_file"), file, base);
        }
    }
    if !kind_known {
        return;
    }
    if let Some(oauth) = &ch.oauth {
        check_oauth_flow(r, ch, oauth, &oauth_path);
    }
    if ch.kind.uses_oauth() && !r.has(&oauth_path) {
        r.error_at(
            &format!("{path}.kind"),
            format!("{kind} channel `{}` needs a [channels.oauth] table", ch.id),
        );
    }
    if !ch.kind.uses_oauth() && r.has(&oauth_path) {
        r.warning_at(
            &oauth_path,
            format!("[channels.oauth] is ignored for {kind} channels"),
        );
    }
    let smtp_path = format!("{path}.smtp");
    if !ch.kind.uses_oauth() && r.has(&smtp_path) {
        r.warning_at(
            &smtp_path,
            format!("[channels.smtp] is ignored for {kind} channels (they send through [relay])"),
        );
    }
    if let Some(file) = ch.smtp.as_ref().and_then(|s| s.ca_file.as_ref()) {
        check_readable(r, &format!("{smtp_path}.ca_file"), file, base);
    }
    check_clear_text_logins(r, ch, &imap_path, &smtp_path);
    if ch.kind == ChannelKind::Imap && !r.has(&imap_path) {
        r.error_at(
            &format!("{path}.kind"),
            format!("imap channel `{}` needs a [channels.imap] table", ch.id),
        );
    }
    if !ch.kind.is_pulled() && r.has(&imap_path) {
        r.warning_at(
            &imap_path,
            format!("[channels.imap] is ignored for {kind} channels"),
        );
    }
    if let Some(imap) = &ch.imap {
        if ch.kind == ChannelKind::Imap {
            if imap.host.is_none() {
                r.error_at(
                    &imap_path,
                    "missing required key `host` in [channels.imap] (required for imap channels)",
                );
            }
            if imap.password_file.is_none() {
                r.error_at(
                    &imap_path,
                    "missing required key `password_file` in [channels.imap] (required for imap channels)",
                );
            }
        }
        if imap.username.is_empty() && ch.kind.is_pulled() {
            r.error_at(
                &imap_path,
                "missing required key `username` in [channels.imap] (no channel address to default to)",
            );
        }
        if imap.batch_size == 0 {
            r.error_at(
                &format!("{imap_path}.batch_size"),
                "`batch_size` must be at least 1",
            );
        }
        if imap.batch_bytes == 0 {
            r.error_at(
                &format!("{imap_path}.batch_bytes"),
                "`batch_bytes` must be at least 1",
            );
        }
        // Moving each pulled message into the folder it was read from gives it
        // a new UID, pulled and moved again every round.
        // Gmail and Exchange compare folder names ignoring case; other
        // servers may or may not.
        if let Some(to) = &imap.move_to {
            let folder = &imap.folder;
            let at = format!("{imap_path}.move_to");
            let provider = matches!(ch.kind, ChannelKind::Gmail | ChannelKind::Office365);
            if same_folder(to, folder) || (provider && same_ignoring_case(to, folder)) {
                r.error_at(
                    &at,
                    format!(
                        "move_to `{to}` is the folder this channel pulls (`{folder}`); name another folder"
                    ),
                );
            } else if same_ignoring_case(to, folder) {
                r.warning_at(
                    &at,
                    format!(
                        "move_to `{to}` differs from the pulled folder `{folder}` only in case: on a server that ignores case in folder names it is the same folder, and every message would be pulled and moved again each round"
                    ),
                );
            }
        }
    }
}

/// `[alerts]`: addresses that can be mailed (never a channel's: the alert
/// would open a ticket), a positive delay, and a sender for the emails.
fn check_alerts(r: &mut Reader<'_>, d: &Draft) {
    for (i, to) in d.config.alerts.to.iter().enumerate() {
        let at = format!("alerts.to[{i}]");
        if !is_valid_email(to) {
            r.error_at(&at, format!("invalid email address `{to}`"));
        } else if d
            .channels
            .iter()
            .any(|(_, c)| c.address.as_deref() == Some(to.as_str()))
        {
            r.error_at(
                &at,
                format!("`{to}` is a channel's address: an alert sent there would open a ticket; name an admin's own address"),
            );
        }
    }
    if d.config.alerts.alert_after_secs == 0 {
        r.error_at(
            "alerts.alert_after_secs",
            "`alert_after_secs` must be at least 1",
        );
    }
    if !d.config.alerts.to.is_empty() && d.config.notifications.from.is_none() {
        r.warning_at(
            "alerts.to",
            "alerts are not emailed while [notifications] from is not set (the metric and `postdesk status` still show them)",
        );
    }
}

/// `[channels.oauth]`'s flow against the kind and the keys it needs.
fn check_oauth_flow(r: &mut Reader<'_>, ch: &ChannelConfig, oauth: &OAuthConfig, at: &str) {
    let kind = ch.kind.as_str();
    if let Some(tenant) = &oauth.tenant {
        let ok = !tenant.is_empty()
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            r.error_at(
                &format!("{at}.tenant"),
                format!("tenant `{tenant}` is not a directory id or domain (letters, digits, `-` and `.` only)"),
            );
        }
        if ch.kind != ChannelKind::Office365 {
            r.warning_at(
                &format!("{at}.tenant"),
                format!("`tenant` is ignored for {kind} channels (Office 365 only)"),
            );
        }
    }
    match oauth.flow {
        OAuthFlow::RefreshToken => {
            if oauth.scope.is_some() {
                r.warning_at(
                    &format!("{at}.scope"),
                    "`scope` is ignored with flow = \"refresh_token\" (the refresh token carries the scopes consented to)",
                );
            }
        }
        OAuthFlow::ClientCredentials => {
            if ch.kind == ChannelKind::Gmail {
                r.error_at(
                    &format!("{at}.flow"),
                    format!("flow = \"client_credentials\" is for office365 channels; {kind} mailboxes need a person's consent (flow = \"refresh_token\")"),
                );
            }
            if oauth.client_secret_file.is_none() {
                r.error_at(
                    at,
                    "missing required key `client_secret_file` in [channels.oauth] (required with flow = \"client_credentials\")",
                );
            }
            if oauth.refresh_token_file.is_some() {
                r.warning_at(
                    &format!("{at}.refresh_token_file"),
                    "`refresh_token_file` is ignored with flow = \"client_credentials\" (app-only access has no refresh token)",
                );
            }
            if ch.kind == ChannelKind::Office365
                && oauth.tenant.is_none()
                && oauth.token_url.is_none()
            {
                r.error_at(
                    &format!("{at}.flow"),
                    "flow = \"client_credentials\" needs `tenant` (your directory id or domain) or `token_url`: app-only tokens come from the tenant's endpoint, not /common",
                );
            }
        }
    }
}

/// Whether two IMAP folder names name the same folder: `INBOX` in any case
/// (RFC 3501 5.1), other names exactly.
fn same_folder(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn check_sender_name(r: &mut Reader<'_>, d: &Draft, path: &str, ch: &ChannelConfig) {
    let has_company = ch.company_name.is_some() || d.config.company.name.is_some();
    if ch.sender_name == SenderName::AgentAndCompany && !has_company {
        r.error_at(
            &format!("{path}.sender_name"),
            "sender_name = \"agent_and_company\" needs a company name: set `company_name` on the channel or `name` in [company]",
        );
    }
    if let Some(format) = &ch.sender_name_format
        && let Some(bad) = bad_placeholder(format)
    {
        r.error_at(
            &format!("{path}.sender_name_format"),
            format!(
                "unknown placeholder `{bad}` in sender_name_format; use {{agent}} and {{company}}"
            ),
        );
    }
    if ch.kind == ChannelKind::Office365 {
        const IGNORED: &str = "has no effect: Office 365 ignores custom display names";
        if ch.sender_name == SenderName::AgentAndCompany {
            r.warning_at(
                &format!("{path}.sender_name"),
                format!("sender_name = \"agent_and_company\" {IGNORED}"),
            );
        }
        if ch.sender_name_format.is_some() {
            r.warning_at(
                &format!("{path}.sender_name_format"),
                format!("sender_name_format {IGNORED}"),
            );
        }
    }
}

fn check_routing(r: &mut Reader<'_>, d: &Draft, path: &str, ch: &ChannelConfig) {
    let routing = &ch.routing;
    for (j, id) in routing.users.iter().enumerate() {
        let at = format!("{path}.routing.users[{j}]");
        match d.users.iter().find(|(_, u)| &u.id == id) {
            None => r.error_at(
                &at,
                format!(
                    "routing names unknown user `{id}`{}",
                    known_ids(d.users.iter().map(|(_, u)| u.id.as_str()))
                ),
            ),
            Some((_, user)) if !user.licensed => r.error_at(
                &at,
                format!("routing names user `{id}`, who has no licence (licensed = false); only licensed users can be assigned"),
            ),
            Some(_) => {}
        }
    }
    for (j, id) in routing.teams.iter().enumerate() {
        if !d.teams.iter().any(|(_, t)| &t.id == id) {
            r.error_at(
                &format!("{path}.routing.teams[{j}]"),
                format!(
                    "routing names unknown team `{id}`{}",
                    known_ids(d.teams.iter().map(|(_, t)| t.id.as_str()))
                ),
            );
        }
    }
    if routing.assign == Assign::UsersAndTeams
        && routing.users.is_empty()
        && routing.teams.is_empty()
    {
        r.warning_at(
            &format!("{path}.routing.assign"),
            "assign = \"users_and_teams\" with no users or teams leaves every ticket unassigned",
        );
    }
    super::routing::check_rules(r, d, path, ch);
}

/// `[smtp]`, `[relay]`, `[outbound]`.
fn check_services(r: &mut Reader<'_>, d: &Draft, base: &Path) {
    let smtp = &d.config.smtp;
    if smtp.hostname.trim().is_empty() {
        r.error_at("smtp.hostname", "`smtp.hostname` must not be empty");
    }
    match (&smtp.tls_cert, &smtp.tls_key) {
        (Some(_), None) => r.error_at(
            "smtp.tls_cert",
            "`smtp.tls_cert` is set without `smtp.tls_key`",
        ),
        (None, Some(_)) => r.error_at(
            "smtp.tls_key",
            "`smtp.tls_key` is set without `smtp.tls_cert`",
        ),
        _ => {}
    }
    if !smtp.trusted_relays.is_empty()
        && smtp
            .authserv_id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty())
    {
        r.error_at(
            "smtp.trusted_relays",
            "`smtp.trusted_relays` needs `smtp.authserv_id`: the id in the relays' Authentication-Results headers",
        );
    }
    if smtp.trusted_relays.is_empty() && smtp.dns_resolver == super::DnsResolver::Off {
        r.warning_at(
            "smtp.dns_resolver",
            "with `dns_resolver = \"off\"` and no `trusted_relays`, mail received over SMTP is never authenticated: team members' forwards and forwarders' group mail count as strangers' mail",
        );
    }
    if smtp.max_inflight_bytes <= smtp.max_message_size {
        // Point at the key the file set (a raised max_message_size with the default budget).
        let key = if r.has("smtp.max_inflight_bytes") || !r.has("smtp.max_message_size") {
            "smtp.max_inflight_bytes"
        } else {
            "smtp.max_message_size"
        };
        r.error_at(
            key,
            format!(
                "`smtp.max_inflight_bytes` ({}) must be larger than `smtp.max_message_size` ({}): \
                 a message of the largest size must fit",
                smtp.max_inflight_bytes, smtp.max_message_size
            ),
        );
    }
    if smtp.data_timeout_secs == 0 {
        r.error_at(
            "smtp.data_timeout_secs",
            "`smtp.data_timeout_secs` must be at least 1",
        );
    }
    if smtp.require_tls && smtp.tls_cert.is_none() {
        r.error_at(
            "smtp.require_tls",
            "`smtp.require_tls` needs `smtp.tls_cert` and `smtp.tls_key` (STARTTLS)",
        );
    }
    let cert_ok = smtp
        .tls_cert
        .as_ref()
        .is_some_and(|file| check_readable(r, "smtp.tls_cert", file, base));
    let key_ok = smtp
        .tls_key
        .as_ref()
        .is_some_and(|file| check_secret(r, "smtp.tls_key", file, base));
    if cert_ok && key_ok {
        check_tls_files(r, smtp, base);
    }

    check_http(r, d, base);

    let relay = &d.config.relay;
    if relay.username.is_some() && relay.password_file.is_none() {
        r.error_at(
            "relay.username",
            "`relay.username` is set without `relay.password_file`",
        );
    }
    if let Some(file) = &relay.password_file {
        check_secret(r, "relay.password_file", file, base);
    }
    if relay.username.is_some() && relay.tls == TlsMode::None && !is_loopback(&relay.host) {
        r.warning_at(
            "relay.tls",
            format!(
                "SMTP AUTH to {} with tls = \"none\": the relay password crosses the network in clear (use \"starttls\" or \"implicit\")",
                relay.host
            ),
        );
    }
    if let Some(file) = &relay.ca_file {
        check_readable(r, "relay.ca_file", file, base);
    }

    let out = &d.config.outbound;
    if out.retry_base_secs == 0 {
        r.error_at(
            "outbound.retry_base_secs",
            "`outbound.retry_base_secs` must be at least 1",
        );
    }
    if out.poll_secs == 0 {
        r.error_at(
            "outbound.poll_secs",
            "`outbound.poll_secs` must be at least 1",
        );
    }
    if out.retry_base_secs > out.retry_max_secs {
        r.error_at(
            "outbound.retry_base_secs",
            format!(
                "`outbound.retry_base_secs` ({}) is larger than `outbound.retry_max_secs` ({})",
                out.retry_base_secs, out.retry_max_secs
            ),
        );
    }
    if let Some(dkim) = &out.dkim
        && check_secret(r, "outbound.dkim.key_file", &dkim.key_file, base)
        && let Err(e) = crate::keys::read_dkim_key(&resolve(base, &dkim.key_file))
    {
        r.error_at("outbound.dkim.key_file", format!("unusable DKIM key: {e}"));
    }
}

/// `[http]`: timeouts and caps of at least 1, a per-IP cap within the
/// total, a metrics listener apart from the API's, a non-empty metrics token.
fn check_http(r: &mut Reader<'_>, d: &Draft, base: &Path) {
    let http = &d.config.http;
    let at_least_one = [
        ("header_timeout_secs", http.header_timeout_secs == 0),
        ("body_timeout_secs", http.body_timeout_secs == 0),
        ("max_connections", http.max_connections == 0),
        ("max_connections_per_ip", http.max_connections_per_ip == 0),
    ];
    for (key, zero) in at_least_one {
        if zero {
            r.error_at(
                &format!("http.{key}"),
                format!("`http.{key}` must be at least 1"),
            );
        }
    }
    if http.max_connections_per_ip > http.max_connections && http.max_connections > 0 {
        r.warning_at(
            "http.max_connections_per_ip",
            format!(
                "`http.max_connections_per_ip` ({}) is larger than `http.max_connections` ({}): the total cap applies first",
                http.max_connections_per_ip, http.max_connections
            ),
        );
    }
    if http.metrics_listen == Some(http.listen) {
        r.error_at(
            "http.metrics_listen",
            format!(
                "`http.metrics_listen` ({}) is the same address as `http.listen`",
                http.listen
            ),
        );
    }
    if let Some(url) = &http.public_url
        && let Err(why) = check_public_url(url)
    {
        r.error_at(
            "http.public_url",
            format!("`http.public_url` {url:?} {why}"),
        );
    }
    if let Some(file) = &http.metrics_token_file
        && check_readable(r, "http.metrics_token_file", file, base)
    {
        let token = std::fs::read_to_string(resolve(base, file)).unwrap_or_default();
        if token.trim().is_empty() {
            r.error_at(
                "http.metrics_token_file",
                format!("{} holds no token (empty or not UTF-8)", file.display()),
            );
        }
    }
}

/// `http://` or `https://`, a host, and nothing a link could not carry
/// (no space, control character, query or fragment).
pub(super) fn check_public_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err("must name a host (and no user)");
    }
    if url.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '<' | '>' | '\\')
    }) {
        return Err("must not contain spaces, quotes, `?` or `#`");
    }
    Ok(())
}

/// Build the STARTTLS acceptor as the daemon does at start-up, so a file
/// without a certificate, an unreadable key or a mismatched pair is reported
/// here (and refuses a reload) rather than stopping `postdesk run`.
fn check_tls_files(r: &mut Reader<'_>, smtp: &super::SmtpConfig, base: &Path) {
    use crate::keys::TlsError;
    let cert = smtp.tls_cert.as_deref().map(|f| resolve(base, f));
    let key = smtp.tls_key.as_deref().map(|f| resolve(base, f));
    let Err(e) = crate::keys::tls_acceptor(cert.as_deref(), key.as_deref()) else {
        return;
    };
    let at = match e {
        TlsError::Incomplete => return, // reported above
        TlsError::Certificate { .. } | TlsError::NoCertificate { .. } => "smtp.tls_cert",
        TlsError::Key { .. } | TlsError::Rustls(_) => "smtp.tls_key",
    };
    r.error_at(at, format!("unusable STARTTLS files: {e}"));
}

/// Remembers the first path of each value; reports later duplicates.
struct Unique {
    what: &'static str,
    seen: HashMap<String, String>,
}

impl Unique {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            seen: HashMap::new(),
        }
    }

    /// Also rejects an empty value that was set explicitly; a missing one
    /// (`""`, already reported) is skipped.
    fn check(&mut self, r: &mut Reader<'_>, path: &str, value: &str) {
        if value.trim().is_empty() {
            if r.valid(path) {
                r.error_at(path, format!("{} must not be empty", self.what));
            }
            return;
        }
        if let Some(first) = self.seen.get(value) {
            let line = r.lines.line(r.pos(first));
            r.error_at(
                path,
                format!(
                    "duplicate {} `{value}` (first defined on line {line})",
                    self.what
                ),
            );
        } else {
            self.seen.insert(value.to_owned(), path.to_owned());
        }
    }
}

/// `; known: a, b` for unknown-reference messages.
pub(super) fn known_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    // Each once (a file may define an id twice: that has its own error).
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<&str> = ids.filter(|id| seen.insert(*id)).collect();
    if ids.is_empty() {
        String::from(" (none are defined)")
    } else {
        format!("; known: {}", ids.join(", "))
    }
}

/// Report `value` at `path` unless it is a plausible `local@domain` address.
fn check_email(r: &mut Reader<'_>, path: &str, value: &str) -> bool {
    let ok = is_valid_email(value);
    if !ok {
        r.error_at(path, format!("invalid email address `{value}`"));
    }
    ok
}

/// The first placeholder other than `{agent}`/`{company}`, or an unclosed `{`.
fn bad_placeholder(format: &str) -> Option<String> {
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Some(format!("{{{after}"));
        };
        let name = &after[..close];
        if name != "agent" && name != "company" {
            return Some(format!("{{{name}}}"));
        }
        rest = &after[close + 1..];
    }
    None
}

/// A node name as `[store] node_id` takes it.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[store]`: a PostgreSQL store needs a readable `url_file` holding a URL
/// this backend can use (checked here, then dropped: the daemon reads it);
/// without TLS, a database on another host gets a warning. Nothing is
/// connected to (`check --connect` does that).
fn check_store(r: &mut Reader<'_>, d: &Draft, base: &Path) {
    let store = &d.config.store;
    for (key, value, max) in [
        ("pool_size", store.pool_size, 1024),
        ("group_commit_max", store.group_commit_max, 65_536),
    ] {
        if value == 0 || value > max {
            r.error_at(
                &format!("store.{key}"),
                format!("`store.{key}` must be between 1 and {max}"),
            );
        }
    }
    if !(5..=3600).contains(&store.lease_secs) {
        r.error_at(
            "store.lease_secs",
            "`store.lease_secs` must be between 5 and 3600",
        );
    }
    if let Some(id) = &store.node_id
        && !valid_node_id(id)
    {
        r.error_at(
            "store.node_id",
            format!(
                "`store.node_id` {id:?} is not a node name: 1 to 64 letters, digits, `.`, `_` or `-`"
            ),
        );
    }
    if store.kind != super::StoreKind::Postgres {
        for (key, set) in [
            ("url_file", store.url_file.is_some()),
            ("ca_file", store.ca_file.is_some()),
        ] {
            if set {
                r.warning_at(
                    &format!("store.{key}"),
                    format!("`store.{key}` is ignored: `store.kind` is not \"postgres\""),
                );
            }
        }
        return;
    }
    let Some(file) = &store.url_file else {
        r.error_at(
            "store.kind",
            "missing required key `url_file` in [store] (required for kind = \"postgres\"): a file holding the postgresql:// URL",
        );
        return;
    };
    if !check_secret(r, "store.url_file", file, base) {
        return;
    }
    let text = std::fs::read_to_string(resolve(base, file));
    match text
        .map_err(|e| io_message(&e))
        .and_then(|t| crate::store::postgres::parse_url(&t))
    {
        Err(e) => r.error_at("store.url_file", format!("{}: {e}", file.display())),
        Ok(url) => check_store_tls(r, &url, store.ca_file.as_deref(), base),
    }
}

/// `[store] ca_file` must hold certificates; a remote database without
/// TLS, or a `ca_file` that TLS-less connections ignore, gets a warning.
fn check_store_tls(
    r: &mut Reader<'_>,
    url: &tokio_postgres::Config,
    ca: Option<&Path>,
    base: &Path,
) {
    use crate::store::postgres::{is_local, tls};
    let uses_tls = tls::uses_tls(url);
    if let Some(file) = ca {
        if check_readable(r, "store.ca_file", file, base)
            && let Err(e) = tls::connector(Some(&resolve(base, file)), true)
        {
            r.error_at("store.ca_file", e);
        }
        if !uses_tls {
            r.warning_at(
                "store.ca_file",
                format!(
                    "`store.ca_file` is unused: the URL's sslmode does not ask for TLS ({})",
                    tls::tls_modes()
                ),
            );
        }
    }
    if !uses_tls && !is_local(url) {
        r.warning_at(
            "store.url_file",
            "the database is on another host and postdesk connects without TLS: its password and every message cross the network in clear (add sslmode=verify-full to the URL, or use a unix socket, 127.0.0.1 or a tunnel; see docs/postgres.md)",
        );
    }
}

/// Report `file` at `path` unless it can be opened and read; whether it can.
fn check_readable(r: &mut Reader<'_>, path: &str, file: &Path, base: &Path) -> bool {
    let resolved = resolve(base, file);
    let result = std::fs::File::open(&resolved).and_then(|mut f| f.read(&mut [0u8; 1]));
    if let Err(e) = result {
        let mut message = format!("cannot read {}: {}", file.display(), io_message(&e));
        if resolved != file {
            message.push_str(&format!(" (looked for {})", resolved.display()));
        }
        r.error_at(path, message);
        return false;
    }
    true
}

/// [`check_readable`] for a secret (password, client secret, refresh token,
/// private key), plus a warning when its group or others may read it.
fn check_secret(r: &mut Reader<'_>, path: &str, file: &Path, base: &Path) -> bool {
    if !check_readable(r, path, file, base) {
        return false;
    }
    use std::os::unix::fs::PermissionsExt;
    // The mode of what a symlink points at (systemd credentials, /etc/ssl/…).
    let Ok(meta) = std::fs::metadata(resolve(base, file)) else {
        return true;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (true, true) => "its group and everyone",
        (true, false) => "its group",
        (false, true) => "everyone",
        (false, false) => return true,
    };
    r.warning_at(
        path,
        format!(
            "secret file {} is readable by {who} (mode {mode:04o}); make it 0600 or 0400 (chmod go-rwx)",
            file.display()
        ),
    );
    true
}

/// Whether `host` is this machine (`localhost`, 127.0.0.0/8, ::1): a secret
/// sent there in clear does not cross a network.
fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Warnings for a mailbox channel that would send its password (IMAP
/// LOGIN) or access token (IMAP / SMTP XOAUTH2) in clear to another host.
fn check_clear_text_logins(
    r: &mut Reader<'_>,
    ch: &ChannelConfig,
    imap_path: &str,
    smtp_path: &str,
) {
    let imap_secret = if ch.kind.uses_oauth() {
        Some("IMAP XOAUTH2 access token")
    } else if ch.kind == ChannelKind::Imap
        && ch.imap.as_ref().is_some_and(|i| i.password_file.is_some())
    {
        Some("IMAP LOGIN password")
    } else {
        None
    };
    if let (Some(what), Some(host)) = (imap_secret, ch.effective_imap_host())
        && ch.effective_imap_tls() == TlsMode::None
        && !is_loopback(host)
    {
        r.warning_at(
            &format!("{imap_path}.tls"),
            format!(
                "tls = \"none\" to {host}: the {what} crosses the network in clear (use \"starttls\" or \"implicit\")"
            ),
        );
    }
    if ch.kind.uses_oauth()
        && let Some((host, _, tls, _)) = ch.effective_smtp()
        && tls == TlsMode::None
        && !is_loopback(host)
    {
        r.warning_at(
            &format!("{smtp_path}.tls"),
            format!(
                "tls = \"none\" to {host}: the SMTP AUTH XOAUTH2 access token crosses the network in clear (use \"starttls\" or \"implicit\")"
            ),
        );
    }
}

fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    }
}

fn resolve_paths(d: &mut Draft, base: &Path) {
    let fix = |p: &mut PathBuf| *p = resolve(base, p);
    fix(&mut d.config.store.path);
    d.config.store.url_file.iter_mut().for_each(fix);
    d.config.store.ca_file.iter_mut().for_each(fix);
    d.config.smtp.tls_cert.iter_mut().for_each(fix);
    d.config.smtp.tls_key.iter_mut().for_each(fix);
    d.config.relay.password_file.iter_mut().for_each(fix);
    d.config.http.metrics_token_file.iter_mut().for_each(fix);
    d.config.relay.ca_file.iter_mut().for_each(fix);
    if let Some(dkim) = &mut d.config.outbound.dkim {
        fix(&mut dkim.key_file);
    }
    for (_, ch) in &mut d.channels {
        if let Some(imap) = &mut ch.imap {
            imap.password_file.iter_mut().for_each(fix);
        }
        if let Some(smtp) = &mut ch.smtp {
            smtp.ca_file.iter_mut().for_each(fix);
        }
        if let Some(oauth) = &mut ch.oauth {
            oauth.client_secret_file.iter_mut().for_each(fix);
            oauth.refresh_token_file.iter_mut().for_each(fix);
        }
    }
}

#[cfg(test)]
mod tests {
    /// An id defined twice (its own error) is named once among the known
    /// ones: before, "known: email, email".
    #[test]
    fn known_ids_names_each_once() {
        assert_eq!(
            super::known_ids(["email", "name", "email"].into_iter()),
            "; known: email, name"
        );
        assert_eq!(super::known_ids(std::iter::empty()), " (none are defined)");
    }
}
