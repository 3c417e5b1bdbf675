//! Config tests: the example file, defaults, one table row per error kind
//! (`LINE:COL: substring`), several errors at once, and recipient matching.

use std::path::{Path, PathBuf};

use super::*;

/// Parse `text` as `postdesk.toml` in the current directory (so relative
/// secret paths are reported as written).
fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new("postdesk.toml"))
}

fn errors_of(text: &str) -> Vec<String> {
    errors_in(text, Path::new("postdesk.toml"))
}

/// `errors_of` for a config read as `config` (so relative paths resolve
/// against its directory).
fn errors_in(text: &str, config: &Path) -> Vec<String> {
    match parse(text, config) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .diagnostics
            .iter()
            .filter(|d| !is_secret_mode_warning(d))
            .map(|d| {
                let mut line = format!("{}:{}: ", d.line, d.col);
                if d.severity == Severity::Warning {
                    line.push_str("warning: ");
                }
                line.push_str(&d.message);
                line
            })
            .collect(),
    }
}

/// The warning about a group/world-readable secret file: the tables here
/// use `Cargo.toml` (mode 0644) as a readable secret and test other things;
/// the secret-mode warning has its own tests at the end.
fn is_secret_mode_warning(d: &Diagnostic) -> bool {
    d.severity == Severity::Warning && d.message.starts_with("secret file ")
}

const ONE_USER: &str = r#"
[[users]]
id = "ann"
email = "ann@acme.example"
"#;

#[test]
fn example_file_parses_without_errors_or_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let cfg = match load(&dir.join("postdesk.example.toml")) {
        Ok(cfg) => cfg,
        Err(e) => panic!("example config failed:\n{e}"),
    };
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.store.path, dir.join("var/postdesk.sqlite"));
    assert_eq!(cfg.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(cfg.http.listen, "127.0.0.1:8025".parse().unwrap());
    assert_eq!(cfg.http.trusted_proxies.len(), 2);
    assert_eq!(
        (cfg.relay.host.as_str(), cfg.relay.port),
        ("127.0.0.1", 2526)
    );
    assert_eq!(cfg.relay.tls, TlsMode::None);
    assert!(cfg.relay.password_file.is_none() && cfg.outbound.dkim.is_none());
    assert_eq!(cfg.company.name.as_deref(), Some("Acme"));
    assert_eq!(cfg.teams.len(), 2);
    let ids: Vec<&str> = cfg.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["ann", "bob", "cy"]);
    assert!(!cfg.user("cy").unwrap().licensed);
    assert_eq!(cfg.team_members("sales").count(), 2);

    let support = cfg.channel("support").unwrap();
    assert_eq!(support.kind, ChannelKind::Forward);
    assert_eq!(support.sender_name, SenderName::AgentAndCompany);
    assert!(support.signature_html.contains("{{ sender.full_name }}"));
    assert_eq!(
        support.ticket_properties.pipeline.as_deref(),
        Some("support")
    );
    assert_eq!(support.ticket_properties.custom["source"], "email");
    assert_eq!(support.routing.assign, Assign::UsersAndTeams);
    let ann = cfg.user("ann").unwrap();
    assert_eq!(
        cfg.sender_display_name(support, Some(ann)).as_deref(),
        Some("Ann Agent at Acme Support")
    );

    let form = cfg.channel("contact-form").unwrap();
    assert_eq!(form.kind, ChannelKind::Form);
    assert_eq!(form.form.subject_field, "topic");
    assert_eq!(form.form.honeypot_field.as_deref(), Some("website"));
    assert_eq!(form.form.fields.len(), 5);
    let page = form.form.field("page").unwrap();
    assert!(page.hidden && page.kind == FormFieldType::Url);
    assert_eq!(form.form.field("email").unwrap().kind, FormFieldType::Email);
    assert!(form.form.allows_origin("https://www.acme.example"));
    assert!(!form.form.allows_origin("https://evil.example"));
    assert_eq!(
        form.form.redirect_url.as_deref(),
        Some("https://www.acme.example/thanks")
    );

    let sales = cfg.channel("sales").unwrap();
    assert_eq!(sales.sender_name, SenderName::Company);
    assert_eq!(sales.routing.assign, Assign::ContactOwner);
    assert_eq!(
        cfg.sender_display_name(sales, Some(ann)).as_deref(),
        Some("Acme")
    );
}

#[test]
fn minimal_config_gets_all_defaults() {
    let text = format!(
        "{ONE_USER}\n[[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \" Support@Acme.Example \"\n"
    );
    let cfg = parse(&text, Path::new("/etc/postdesk/postdesk.toml")).unwrap();
    assert!(cfg.warnings.is_empty());
    assert_eq!(cfg.path, PathBuf::from("/etc/postdesk/postdesk.toml"));
    assert_eq!(
        cfg.store.path,
        PathBuf::from("/etc/postdesk/var/postdesk.sqlite")
    );
    assert_eq!(cfg.store.busy_timeout_ms, 5000);
    assert_eq!(cfg.store.group_commit_max, 256);
    assert_eq!(cfg.smtp, SmtpConfig::default());
    assert_eq!(cfg.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(cfg.smtp.max_message_size, 26_214_400);
    assert_eq!(cfg.smtp.max_messages_per_minute_per_ip, 0);
    assert_eq!(cfg.smtp.max_inflight_bytes, 256 << 20);
    assert_eq!(cfg.smtp.data_timeout_secs, 600);
    assert_eq!(cfg.smtp.min_data_rate, 1024);
    assert_eq!(cfg.smtp.min_data_rate_grace_secs, 30);
    assert_eq!(cfg.http, HttpConfig::default());
    assert_eq!(
        (
            cfg.http.header_timeout_secs,
            cfg.http.body_timeout_secs,
            cfg.http.max_connections,
            cfg.http.max_connections_per_ip,
            cfg.http.sends_per_minute_per_token,
        ),
        (10, 30, 256, 32, 30)
    );
    assert!(cfg.http.metrics_listen.is_none() && cfg.http.metrics_token_file.is_none());
    assert_eq!(cfg.relay, RelayConfig::default());
    assert_eq!(cfg.relay.tls, TlsMode::Starttls);
    assert_eq!(cfg.outbound, OutboundConfig::default());
    assert_eq!(cfg.outbound.max_lifetime_secs, 432_000);
    assert_eq!(cfg.message_id_domain(), "localhost");
    assert_eq!(cfg.company, CompanyConfig::default());
    assert_eq!(cfg.log, LogConfig::default());
    assert!(cfg.teams.is_empty());

    let user = &cfg.users[0];
    assert_eq!(
        (user.first_name.as_str(), user.last_name.as_str()),
        ("", "")
    );
    assert!(user.licensed && user.available && user.teams.is_empty());
    assert_eq!(user.full_name(), "ann@acme.example");

    let ch = &cfg.channels[0];
    assert_eq!(ch.address.as_deref(), Some("support@acme.example"));
    assert!(ch.enabled && ch.original_sender_of_forwards);
    assert_eq!(ch.sender_name, SenderName::Company);
    assert_eq!(ch.sender_name_format, None);
    assert_eq!(ch.company_name, None);
    assert_eq!(ch.signature_html, "");
    assert!(ch.forwarders.is_empty());
    assert_eq!(ch.ticket_properties, TicketProperties::default());
    assert_eq!(ch.routing, RoutingConfig::default());
    assert!(ch.routing.only_available);
    assert!(ch.imap.is_none() && ch.oauth.is_none());
    assert_eq!(cfg.company_name_for(ch), None);
}

/// A table present but empty reads as the defaults declared with its keys,
/// as an absent one does (`Default`): both come from one declaration.
#[test]
fn an_empty_table_reads_as_its_declared_defaults() {
    let tables = "[store]\n[smtp]\n[http]\n[relay]\n[outbound]\n[company]\n[notifications]\n[alerts]\n[log]\n";
    assert_eq!(parse_str(tables).unwrap(), parse_str("").unwrap());
    let channel = format!(
        "{ONE_USER}\n[[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n"
    );
    let with_routing = format!("{channel}[channels.routing]\n");
    assert_eq!(
        parse_str(&with_routing).unwrap(),
        parse_str(&channel).unwrap()
    );
}

#[test]
fn empty_config_is_valid() {
    let cfg = parse_str("").unwrap();
    assert!(cfg.users.is_empty() && cfg.channels.is_empty());
}

/// One row per error kind: (input, expected `LINE:COL: substring`).
const ERROR_CASES: &[(&str, &str)] = &[
    // Unknown keys, with suggestions.
    (
        "[smtp]\nhostnme = \"x\"",
        "2:1: unknown key `hostnme` in [smtp]; did you mean `hostname`?",
    ),
    ("colour = 1", "1:1: unknown key `colour` in the top level"),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.routing]\nasign = \"nobody\"",
        "5:1: unknown key `asign` in [channels.routing]; did you mean `assign`?",
    ),
    (
        "[[users]]\nid = \"a\"\nemail = \"a@x.example\"\nlicenced = true",
        "4:1: unknown key `licenced` in [[users]]; did you mean `licensed`?",
    ),
    ("[smtp]\nzzz = 1", "2:1: unknown key `zzz` in [smtp]"),
    // Wrong types and ranges.
    (
        "[smtp]\nmax_message_size = \"big\"",
        "2:20: invalid type for `smtp.max_message_size`: expected a non-negative integer, found string",
    ),
    (
        "[smtp]\nrequire_tls = \"yes\"",
        "2:15: invalid type for `smtp.require_tls`: expected a boolean",
    ),
    (
        "[relay]\nport = 70000",
        "2:8: `relay.port` must be between 0 and 65535",
    ),
    (
        "[store]\nbusy_timeout_ms = -1",
        "2:19: `store.busy_timeout_ms` must be between 0 and",
    ),
    (
        "smtp = 5",
        "1:8: invalid type for `smtp`: expected a table, found integer",
    ),
    (
        "[users]\nid = \"a\"",
        "1:1: invalid type for `users`: expected an array of tables ([[users]])",
    ),
    (
        "[smtp]\nlisten = \"127.0.0.1:25\"",
        "2:10: invalid type for `smtp.listen`: expected an array",
    ),
    (
        "[smtp]\nlisten = [\"localhost:25\"]",
        "2:11: invalid socket address \"localhost:25\" for `smtp.listen`",
    ),
    (
        "[smtp]\nrate_limit_exempt = [\"10.0.0.0/33\"]",
        "2:22: invalid network \"10.0.0.0/33\"",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.ticket_properties]\nweight = 3",
        "5:10: invalid type for `channels.ticket_properties.weight`: expected a string, found integer",
    ),
    // Missing required keys, at the table.
    (
        "[[users]]\nid = \"ann\"",
        "1:1: missing required key `email` in [[users]]",
    ),
    (
        "[[teams]]\nname = \"T\"",
        "1:1: missing required key `id` in [[teams]]",
    ),
    (
        "\n[[channels]]\nid = \"c\"\nkind = \"forward\"",
        "2:1: missing required key `address` in [[channels]] (required for forward channels)",
    ),
    (
        "[[channels]]\nid = \"c\"\naddress = \"c@x.example\"",
        "1:1: missing required key `kind` in [[channels]]",
    ),
    ("[[teams]]\nid = \"\"", "2:6: team id must not be empty"),
    // A missing required key does not hide the entry's other errors.
    (
        "[[channels]]\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"x\"\nrefresh_token_file = \"secrets/rt\"",
        "6:22: cannot read secrets/rt: No such file or directory",
    ),
    // Enumerations list their values.
    (
        "[relay]\ntls = \"ssl\"",
        "2:7: invalid value for `relay.tls`: unknown variant `ssl`, expected one of `none`, `starttls`, `implicit`",
    ),
    (
        "[log]\nformat = \"xml\"",
        "2:10: invalid value for `log.format`: unknown variant `xml`, expected `human` or `json`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"fax\"",
        "3:8: invalid value for `channels.kind`: unknown variant `fax`, expected one of `forward`, `gmail`, `office365`, `imap`, `form`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\nsender_name = \"agent\"",
        "4:15: invalid value for `channels.sender_name`: unknown variant `agent`, expected `agent_and_company` or `company`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\nrouting = { assign = \"random\" }",
        "4:22: invalid value for `channels.routing.assign`: unknown variant `random`",
    ),
    // Duplicates.
    (
        "[[users]]\nid = \"ann\"\nemail = \"a1@x.example\"\n[[users]]\nid = \"ann\"\nemail = \"a2@x.example\"",
        "5:6: duplicate user id `ann` (first defined on line 2)",
    ),
    (
        "[[users]]\nid = \"a\"\nemail = \"ann@x.example\"\n[[users]]\nid = \"b\"\nemail = \"ANN@x.example\"",
        "6:9: duplicate user email `ann@x.example`",
    ),
    (
        "[[teams]]\nid = \"t\"\n[[teams]]\nid = \"t\"",
        "4:6: duplicate team id `t` (first defined on line 2)",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[[channels]]\nid = \"c\"\nkind = \"form\"",
        "5:6: duplicate channel id `c` (first defined on line 2)",
    ),
    (
        "[[channels]]\nid = \"a\"\nkind = \"forward\"\naddress = \"Support@Acme.example\"\n[[channels]]\nid = \"b\"\nkind = \"forward\"\naddress = \"support@acme.EXAMPLE\"",
        "8:11: duplicate channel address `support@acme.example` (first defined on line 4)",
    ),
    // Channel address vs users.
    (
        "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[[channels]]\nid = \"c\"\nkind = \"forward\"\naddress = \"Ann@acme.example\"",
        "7:11: channel address `ann@acme.example` is also the address of user `ann`",
    ),
    // Invalid addresses.
    (
        "[[users]]\nid = \"a\"\nemail = \"ann-at-acme\"",
        "3:9: invalid email address `ann-at-acme`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"forward\"\naddress = \"sup port@acme.example\"",
        "4:11: invalid email address `sup port@acme.example`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\nforwarders = [\"ok@x.example\", \"bad@\"]",
        "4:31: invalid email address `bad@`",
    ),
    // References.
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.routing]\nassign = \"users_and_teams\"\nusers = [\"zed\"]",
        "6:10: routing names unknown user `zed`",
    ),
    (
        "[[teams]]\nid = \"t1\"\n[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.routing]\nteams = [\"t1\", \"t9\"]",
        "7:16: routing names unknown team `t9`; known: t1",
    ),
    (
        "[[users]]\nid = \"cy\"\nemail = \"cy@x.example\"\nlicensed = false\n[[channels]]\nid = \"c\"\nkind = \"form\"\nrouting.users = [\"cy\"]",
        "8:18: routing names user `cy`, who has no licence",
    ),
    (
        "[[users]]\nid = \"a\"\nemail = \"a@x.example\"\nteams = [\"ghost\"]",
        "4:10: unknown team `ghost` (none are defined)",
    ),
    // Sender names.
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\nsender_name = \"agent_and_company\"",
        "4:15: sender_name = \"agent_and_company\" needs a company name",
    ),
    (
        "[company]\nname = \"Acme\"\n[[channels]]\nid = \"c\"\nkind = \"form\"\nsender_name_format = \"{agent} @ {firm}\"",
        "6:22: unknown placeholder `{firm}`",
    ),
    // Forms.
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[[channels.form.fields]]\nname = \"email\"\ntype = \"phone\"",
        "6:8: invalid value for `channels.form.fields.type`: unknown variant `phone`",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[[channels.form.fields]]\nlabel = \"E\"",
        "4:1: missing required key `name` in [[channels.form.fields]]",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[[channels.form.fields]]\nname = \"email\"\n[[channels.form.fields]]\nname = \"email\"",
        "7:8: duplicate form field name `email` (first defined on line 5)",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nemail_field = \"mail\"\n[[channels.form.fields]]\nname = \"email\"",
        "5:15: `email_field` names unknown form field `mail`; known: email",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nhoneypot_field = \"email\"\n[[channels.form.fields]]\nname = \"email\"",
        "5:18: honeypot field `email` must not also be a declared form field",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[[channels.form.fields]]\nname = \"email\"\nhidden = true",
        "the email field `email` must not be hidden",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nmax_field_size = 0",
        "5:18: `max_field_size` must be at least 1",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nmax_feild_size = 5",
        "5:1: unknown key `max_feild_size` in [channels.form]; did you mean `max_field_size`?",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"forward\"\naddress = \"c@x.example\"\n[channels.form]\nlabel = \"x\"\ncolour = 1",
        "5:1: warning: [channels.form] is ignored for forward channels",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nredirect_url = \"thanks.html\"",
        "5:16: redirect_url `thanks.html` must be an http(s) URL or a path starting with /",
    ),
    (
        "[[channels]]\nid = \"c\"\nkind = \"form\"\n[channels.form]\nallowed_origins = [\"https://ok.example\", \"www.acme.example/x\"]",
        "5:42: invalid origin `www.acme.example/x`",
    ),
    // Secret files.
    (
        "[relay]\nusername = \"u\"\npassword_file = \"secrets/x\"",
        "3:17: cannot read secrets/x: No such file or directory",
    ),
    (
        "[relay]\nusername = \"u\"",
        "2:12: `relay.username` is set without `relay.password_file`",
    ),
    (
        "[relay]\ntls = \"starttls\"\nca_file = \"secrets/relay-ca.pem\"",
        "3:11: cannot read secrets/relay-ca.pem: No such file or directory",
    ),
    (
        "[smtp]\ntls_cert = \"secrets/cert.pem\"\ntls_key = \"secrets/key.pem\"",
        "2:12: cannot read secrets/cert.pem: No such file or directory",
    ),
    (
        "[smtp]\ntls_cert = \"secrets/cert.pem\"\ntls_key = \"secrets/key.pem\"",
        "3:11: cannot read secrets/key.pem: No such file or directory",
    ),
    (
        "[outbound.dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey_file = \"secrets/dkim.pem\"",
        "4:12: cannot read secrets/dkim.pem: No such file or directory",
    ),
    (
        "[outbound.dkim]\ndomain = \"acme.example\"",
        "1:1: missing required key `selector` in [outbound.dkim]",
    ),
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nclient_secret_file = \"secrets/cs\"\nrefresh_token_file = \"secrets/rt\"",
        "7:22: cannot read secrets/cs: No such file or directory",
    ),
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nclient_secret_file = \"secrets/cs\"\nrefresh_token_file = \"secrets/rt\"",
        "8:22: cannot read secrets/rt: No such file or directory",
    ),
    (
        "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"secrets/imap\"",
        "7:17: cannot read secrets/imap: No such file or directory",
    ),
    // Channel kinds and their tables.
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"",
        "3:8: gmail channel `g` needs a [channels.oauth] table",
    ),
    (
        "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"",
        "3:8: office365 channel `o` needs a [channels.oauth] table",
    ),
    (
        "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"",
        "3:8: imap channel `m` needs a [channels.imap] table",
    ),
    (
        "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\npassword_file = \"Cargo.toml\"",
        "5:1: missing required key `host` in [channels.imap]",
    ),
    (
        "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\nbatch_bytes = 0",
        "8:15: `batch_bytes` must be at least 1",
    ),
    (
        "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\nbatch_size = 0",
        "8:14: `batch_size` must be at least 1",
    ),
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nrefresh_token_file = \"Cargo.toml\"",
        "5:1: missing required key `client_id` in [channels.oauth]",
    ),
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"Cargo.toml\"\n[channels.smtp]\nca_file = \"secrets/ca.pem\"",
        "9:11: cannot read secrets/ca.pem: No such file or directory",
    ),
    (
        "[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"s@acme.example\"\n[channels.smtp]\nhost = \"127.0.0.1\"\n[smtp]\nrequire_tls = true",
        "5:1: warning: [channels.smtp] is ignored for forward channels (they send through [relay])",
    ),
    (
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"Cargo.toml\"\n[channels.smtp]\ntls = \"ssl\"",
        "9:7: ",
    ),
    // SMTP TLS.
    (
        "[smtp]\ntls_cert = \"Cargo.toml\"",
        "2:12: `smtp.tls_cert` is set without `smtp.tls_key`",
    ),
    (
        "[smtp]\nrequire_tls = true",
        "2:15: `smtp.require_tls` needs `smtp.tls_cert`",
    ),
    // SMTP memory and data rate.
    (
        "[smtp]\nmax_inflight_bytes = 1000",
        "2:22: `smtp.max_inflight_bytes` (1000) must be larger than `smtp.max_message_size` (26214400)",
    ),
    (
        "[smtp]\nmax_message_size = 300000000",
        "2:20: `smtp.max_inflight_bytes` (268435456) must be larger than `smtp.max_message_size` (300000000)",
    ),
    (
        "[smtp]\ndata_timeout_secs = 0",
        "2:21: `smtp.data_timeout_secs` must be at least 1",
    ),
    (
        "[smtp]\nmin_data_rate = -1",
        "2:17: `smtp.min_data_rate` must be between 0 and",
    ),
    // Warnings ride along with errors.
    (
        "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\nsender_name = \"agent_and_company\"\ncompany_name = \"Acme\"",
        "5:15: warning: sender_name = \"agent_and_company\" has no effect: Office 365 ignores custom display names",
    ),
    (
        "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\nsender_name_format = \"{company}\"",
        "5:22: warning: sender_name_format has no effect: Office 365 ignores custom display names",
    ),
    (
        "[http]\nheader_timeout_secs = 0",
        "2:23: `http.header_timeout_secs` must be at least 1",
    ),
    (
        "[http]\nbody_timeout_secs = 0",
        "2:21: `http.body_timeout_secs` must be at least 1",
    ),
    (
        "[http]\nmax_connections = 0",
        "2:19: `http.max_connections` must be at least 1",
    ),
    (
        "[http]\nmax_connections_per_ip = 0",
        "2:26: `http.max_connections_per_ip` must be at least 1",
    ),
    (
        "[http]\nlisten = \"127.0.0.1:8025\"\nmetrics_listen = \"127.0.0.1:8025\"",
        "3:18: `http.metrics_listen` (127.0.0.1:8025) is the same address as `http.listen`",
    ),
    (
        "[http]\npublic_url = \"desk.acme.example\"",
        "2:14: `http.public_url` \"desk.acme.example\" must start with https:// or http://",
    ),
    (
        "[http]\npublic_url = \"https://desk.acme.example/?next=x\"",
        "2:14: `http.public_url` \"https://desk.acme.example/?next=x\" must not contain spaces, quotes, `?` or `#`",
    ),
    (
        "[http]\nmetrics_listen = \"nope\"",
        "2:18: invalid socket address \"nope\" for `http.metrics_listen`",
    ),
    (
        "[http]\nsends_per_minute_per_token = -1",
        "2:30: `http.sends_per_minute_per_token` must be between 0 and 4294967295, found -1",
    ),
    (
        "[http]\nmetrics_token_file = \"no/such/metrics-token\"",
        "2:22: cannot read no/such/metrics-token",
    ),
    // Syntax errors stop before validation.
    ("[smtp]\nhostname = ", "2:12: TOML syntax error"),
    ("a = 1\na = 2", "2:1: TOML syntax error: duplicate key"),
    // Columns count characters, not bytes.
    (
        "[company]\nname = \"Äcme\"\n[[users]]\nid = \"ü\"\nemail = \"ü\"",
        "5:9: invalid email address `ü`",
    ),
];

#[test]
fn each_error_kind_is_reported_at_its_position() {
    let mut failures = Vec::new();
    for (input, expected) in ERROR_CASES {
        let got = errors_of(input);
        if !got.iter().any(|g| g.contains(expected)) {
            failures.push(format!(
                "input:\n{input}\nexpected: {expected}\ngot: {got:#?}\n"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let text = r#"[smtp]
hostnme = "x"
max_message_size = "big"

[relay]
tls = "ssl"

[[users]]
id = "ann"
email = "not-an-address"

[[users]]
id = "ann"
email = "bob@acme.example"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
sender_name = "agent_and_company"
[channels.routing]
users = ["nobody-here"]
"#;
    let err = parse_str(text).unwrap_err();
    let got: Vec<(usize, usize)> = err.diagnostics.iter().map(|d| (d.line, d.col)).collect();
    assert_eq!(
        got,
        [
            (2, 1),
            (3, 20),
            (6, 7),
            (10, 9),
            (13, 6),
            (20, 15),
            (22, 10)
        ],
        "{err}"
    );
    assert_eq!(err.errors().count(), 7);
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 7);
    assert!(
        shown.starts_with("postdesk.toml:2:1: unknown key `hostnme`"),
        "{shown}"
    );
}

#[test]
fn display_prints_file_line_col_and_warning_prefix() {
    let err = parse_str(
        "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\nsender_name_format = \"{agent}\"\n",
    )
    .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("postdesk.toml:3:8: office365 channel `o` needs"),
        "{shown}"
    );
    assert!(
        shown.contains("postdesk.toml:5:22: warning: sender_name_format"),
        "{shown}"
    );
}

#[test]
fn warnings_do_not_fail_and_secret_paths_resolve_against_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/rt"), "token").unwrap();
    std::fs::set_permissions(
        dir.path().join("secrets/rt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let path = dir.path().join("postdesk.toml");
    std::fs::write(
        &path,
        r#"
[company]
name = "Acme"
[[channels]]
id = "o365"
kind = "office365"
address = "info@acme.example"
sender_name = "agent_and_company"
[channels.oauth]
client_id = "cid"
refresh_token_file = "secrets/rt"
"#,
    )
    .unwrap();
    let cfg = load(&path).unwrap();
    assert_eq!(cfg.warnings.len(), 1);
    assert_eq!(cfg.warnings[0].severity, Severity::Warning);
    assert_eq!((cfg.warnings[0].line, cfg.warnings[0].col), (8, 15));
    let ch = &cfg.channels[0];
    let oauth = ch.oauth.as_ref().unwrap();
    assert_eq!(
        oauth.refresh_token_file,
        Some(dir.path().join("secrets/rt"))
    );
    assert_eq!(ch.effective_imap_host(), Some("outlook.office365.com"));
    assert_eq!(ch.effective_imap_port(), 993);
    assert_eq!(
        ch.effective_token_url().as_deref(),
        Some("https://login.microsoftonline.com/common/oauth2/v2.0/token")
    );
}

#[test]
fn missing_config_file_is_one_diagnostic() {
    let err = load(Path::new("/nonexistent/postdesk.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/postdesk.toml:1:1: cannot read config file: No such file or directory"
    );
}

#[test]
fn imap_channel_defaults() {
    let text = r#"
[[channels]]
id = "m"
kind = "imap"
address = "Help@Acme.example"
[channels.imap]
host = "127.0.0.1"
tls = "none"
password_file = "Cargo.toml"
"#;
    let cfg = parse_str(text).unwrap();
    let ch = &cfg.channels[0];
    let imap = ch.imap.as_ref().unwrap();
    assert_eq!(imap.username, "help@acme.example");
    assert_eq!(imap.folder, "INBOX");
    assert!(imap.idle);
    assert_eq!((imap.poll_interval_secs, imap.batch_size), (60, 100));
    assert_eq!(imap.batch_bytes, 32 * 1024 * 1024);
    assert_eq!(imap.move_to, None);
    assert_eq!(ch.effective_imap_port(), 143);
    assert_eq!(ch.effective_imap_host(), Some("127.0.0.1"));
    assert_eq!(ch.effective_token_url(), None);
}

/// Folder names that differ only in case: the same folder on Gmail and
/// Office 365 (an error there), perhaps on another IMAP server (a warning).
#[test]
fn move_to_differing_only_in_case_is_refused_for_providers_and_warned_for_imap() {
    let imap = "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\nfolder = \"Support\"\nmove_to = \"SUPPORT\"\n";
    let mut cfg = parse_str(imap).unwrap_or_else(|e| panic!("{e}"));
    cfg.warnings.retain(|d| !is_secret_mode_warning(d));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert_eq!((cfg.warnings[0].line, cfg.warnings[0].col), (9, 11));
    assert!(
        cfg.warnings[0].message.contains("only in case"),
        "{:?}",
        cfg.warnings[0]
    );
    let o365 = "[company]\nname = \"Acme\"\n[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"Cargo.toml\"\n[channels.imap]\nfolder = \"Support\"\nmove_to = \"support\"\n";
    assert_eq!(
        errors_of(o365),
        [
            "12:11: move_to `support` is the folder this channel pulls (`Support`); name another folder"
        ]
    );
}

/// `move_to` naming the folder the channel pulls would move each message
/// into the folder it came from: a new UID, pulled and moved again every
/// round. Refused at `move_to`; `INBOX` is one folder in any case, other
/// names compare exactly for `imap` channels (providers: the test above).
/// (folder line, move_to, refused)
#[test]
fn move_to_the_pulled_folder_is_refused() {
    let cases: &[(&str, &str, bool)] = &[
        ("", "INBOX", true),
        ("", "inbox", true),
        ("folder = \"Inbox\"\n", "INBOX", true),
        ("folder = \"Support\"\n", "Support", true),
        ("folder = \"Geprüft\"\n", "Geprüft", true),
        ("", "Processed", false),
        ("", "INBOX.Processed", false),
        ("folder = \"Support\"\n", "support", false),
        ("folder = \"Support\"\n", "INBOX", false),
    ];
    let channel = |folder: &str, move_to: &str| {
        format!(
            "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\n{folder}move_to = \"{move_to}\"\n"
        )
    };
    for (folder, move_to, refused) in cases {
        let got = errors_of(&channel(folder, move_to));
        let want: Vec<String> = if *refused {
            let line = if folder.is_empty() { 8 } else { 9 };
            let pulled = folder.split('"').nth(1).unwrap_or("INBOX");
            vec![format!(
                "{line}:11: move_to `{move_to}` is the folder this channel pulls (`{pulled}`); name another folder"
            )]
        } else {
            Vec::new()
        };
        assert_eq!(got, want, "folder {folder:?}, move_to {move_to:?}");
    }
    // Reported with the file's other errors, in file order.
    let text = format!(
        "{}[[channels]]\nid = \"n\"\nkind = \"imap\"\naddress = \"n@acme.example\"\n[channels.imap]\nhost = \"127.0.0.1\"\npassword_file = \"Cargo.toml\"\nfolder = \"Support\"\nmove_to = \"Support\"\nidel = true\n",
        channel("", "Inbox")
    );
    let err = parse_str(&text).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown
        .lines()
        .filter(|l| !l.contains(": warning: secret file "))
        .collect();
    assert_eq!(err.errors().count(), 3, "{shown}");
    assert!(
        lines[0].starts_with("postdesk.toml:8:11: move_to `Inbox` is the folder"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("postdesk.toml:17:11: move_to `Support` is the folder"),
        "{shown}"
    );
    assert!(
        lines[2].starts_with("postdesk.toml:18:1: unknown key `idel`"),
        "{shown}"
    );
}

#[test]
fn provider_smtp_defaults_and_overrides() {
    let text = r#"
[[channels]]
id = "g"
kind = "gmail"
address = "g@acme.example"
[channels.oauth]
client_id = "id"
refresh_token_file = "Cargo.toml"

[[channels]]
id = "o"
kind = "office365"
address = "o@acme.example"
[channels.oauth]
client_id = "id"
refresh_token_file = "Cargo.toml"
[channels.smtp]
host = "127.0.0.1"
port = 2525
tls = "none"

[[channels]]
id = "i"
kind = "gmail"
address = "i@acme.example"
[channels.oauth]
client_id = "id"
refresh_token_file = "Cargo.toml"
[channels.smtp]
tls = "implicit"
ca_file = "Cargo.toml"

[[channels]]
id = "f"
kind = "forward"
address = "f@acme.example"
"#;
    let cfg = parse_str(text).unwrap();
    let smtp = |id: &str| cfg.channel(id).unwrap().effective_smtp();
    assert_eq!(
        smtp("g"),
        Some(("smtp.gmail.com", 587, TlsMode::Starttls, None))
    );
    assert_eq!(smtp("o"), Some(("127.0.0.1", 2525, TlsMode::None, None)));
    assert_eq!(
        smtp("i"),
        Some((
            "smtp.gmail.com",
            465,
            TlsMode::Implicit,
            Some(Path::new("Cargo.toml"))
        ))
    );
    assert_eq!(smtp("f"), None);
}

#[test]
fn channel_for_recipient_matches_case_and_plus_addresses() {
    let text = r#"
[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
[[channels]]
id = "sales"
kind = "forward"
address = "sales@acme.example"
enabled = false
[[channels]]
id = "tagged"
kind = "forward"
address = "support+vip@acme.example"
"#;
    let cfg = parse_str(text).unwrap();
    let found = |addr: &str| cfg.channel_for_recipient(addr).map(|c| c.id.as_str());
    let cases = [
        ("support@acme.example", Some("support")),
        ("SUPPORT@Acme.Example", Some("support")),
        (" support@acme.example ", Some("support")),
        ("support+urgent@acme.example", Some("support")),
        ("Support+a+b@ACME.example", Some("support")),
        ("support+vip@acme.example", Some("tagged")),
        ("sales@acme.example", Some("sales")),
        ("support@other.example", None),
        ("supportx@acme.example", None),
        ("+support@acme.example", None),
        ("support", None),
        ("", None),
    ];
    for (addr, want) in cases {
        assert_eq!(found(addr), want, "{addr:?}");
    }
}

#[test]
fn user_lookups_and_names() {
    let text = r#"
[[users]]
id = "ann"
email = " Ann@Acme.Example "
first_name = "Ann"
[[users]]
id = "bob"
email = "bob@acme.example"
first_name = "Bob"
last_name = "Builder"
"#;
    let cfg = parse_str(text).unwrap();
    assert_eq!(cfg.user("ann").unwrap().email, "ann@acme.example");
    assert_eq!(cfg.user_by_email("ANN@acme.example").unwrap().id, "ann");
    assert!(cfg.user("zed").is_none());
    assert_eq!(cfg.user("ann").unwrap().full_name(), "Ann");
    assert_eq!(cfg.user("bob").unwrap().full_name(), "Bob Builder");
}

#[test]
fn working_hours_parse_with_defaults_and_errors() {
    let ok = "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[users.working_hours]\ntimezone = \"America/New_York\"\nstart = \"08:30\"\nend = \"17:00\"\n";
    let c = parse_str(ok).expect("valid");
    let h = c.users[0].working_hours.as_ref().expect("hours");
    assert_eq!(h.timezone_name, "America/New_York");
    assert_eq!(h.days.len(), 5, "Monday to Friday by default");
    assert_eq!(
        (h.start.hour(), h.start.minute(), h.end.hour()),
        (8, 30, 17)
    );

    let cases = [
        (
            "timezone = \"Mars/Olympus\"\nstart = \"09:00\"\nend = \"17:00\"",
            "5:12: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "timezone = \"UTC\"\nstart = \"9am\"\nend = \"17:00\"",
            "6:9: invalid time \"9am\"",
        ),
        (
            "timezone = \"UTC\"\nstart = \"17:00\"\nend = \"17:00\"",
            "4:1: working_hours: start and end are both 17:00:00",
        ),
        (
            "timezone = \"UTC\"\ndays = [\"mon\", \"funday\"]\nstart = \"09:00\"\nend = \"17:00\"",
            "6:16: invalid day \"funday\"",
        ),
        (
            "start = \"09:00\"\nend = \"17:00\"",
            "4:1: missing required key `timezone`",
        ),
    ];
    for (body, want) in cases {
        let text = format!(
            "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[users.working_hours]\n{body}\n"
        );
        let errors = errors_of(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "want {want:?} in {errors:?}\n{text}"
        );
    }
}

// ---- files the daemon must be able to use, and working days ----

/// The test certificate and its (P-256) key, as `src/smtp/tests.rs` uses them.
fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

/// A fresh Ed25519 private key as PKCS#8 PEM (a DKIM key `sign` accepts).
fn ed25519_pem() -> String {
    use base64::Engine;
    let pkcs8 = mail_auth::common::crypto::Ed25519Key::generate_pkcs8().expect("generate");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// `check` (and reload) build the STARTTLS acceptor as `postdesk run` does:
/// readable files that hold no certificate, no key, or a mismatched pair are
/// errors at the key, not a daemon that exits 1 at start-up.
#[test]
fn check_rejects_tls_files_the_daemon_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("postdesk.toml");
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(d.join("other-key.pem"), ed25519_pem()).unwrap();
    let cert = tls_fixture("cert.pem");
    let key = tls_fixture("key.pem");
    let smtp = |cert: &Path, key: &Path| {
        format!(
            "[smtp]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };

    // The real pair passes, and the daemon could start with it.
    let cfg = parse(&smtp(&cert, &key), &config).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        crate::keys::tls_acceptor(cfg.smtp.tls_cert.as_deref(), cfg.smtp.tls_key.as_deref())
            .unwrap()
            .is_some()
    );
    // Relative paths resolve against the config directory, as before.
    std::fs::copy(&cert, d.join("cert.pem")).unwrap();
    std::fs::copy(&key, d.join("key.pem")).unwrap();
    let text = "[smtp]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
    assert_eq!(errors_in(text, &config), Vec::<String>::new());

    let junk = d.join("junk.pem");
    let cases = [
        (
            "[smtp]\ntls_cert = \"junk.pem\"\ntls_key = \"key.pem\"\n".to_owned(),
            format!(
                "2:12: unusable STARTTLS files: no certificate found in {}",
                junk.display()
            ),
        ),
        (
            "[smtp]\ntls_cert = \"cert.pem\"\ntls_key = \"junk.pem\"\n".to_owned(),
            format!(
                "3:11: unusable STARTTLS files: cannot read TLS private key {}",
                junk.display()
            ),
        ),
        (
            // A key, but not the certificate's.
            smtp(&cert, &d.join("other-key.pem")),
            "3:11: unusable STARTTLS files: invalid TLS certificate/key pair".to_owned(),
        ),
    ];
    for (text, want) in cases {
        // Errors only: these files have no channels (a warning of its own).
        let errors: Vec<String> = errors_in(&text, &config)
            .into_iter()
            .filter(|e| !e.contains(": warning: "))
            .collect();
        assert!(
            errors.len() == 1 && errors[0].starts_with(&want),
            "want only {want:?}, got {errors:?}\n{text}"
        );
    }
    // An unreadable file is still reported once, as unreadable.
    let errors: Vec<String> = errors_in(
        "[smtp]\ntls_cert = \"missing.pem\"\ntls_key = \"key.pem\"\n",
        &config,
    )
    .into_iter()
    .filter(|e| !e.contains(": warning: "))
    .collect();
    assert!(
        errors.len() == 1 && errors[0].starts_with("2:12: cannot read missing.pem"),
        "{errors:?}"
    );
}

/// `check` (and reload) parse the DKIM key as `dkim::sign` does: a key file
/// every reply would fail to sign with is an error at `key_file`.
#[test]
fn check_rejects_a_dkim_key_that_cannot_sign() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("postdesk.toml");
    std::fs::write(d.join("junk.pem"), "not a key\n").unwrap();
    std::fs::write(d.join("ed25519.pem"), ed25519_pem()).unwrap();
    let dkim = |key: &str| {
        format!(
            "[outbound.dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey_file = \"{key}\"\n"
        )
    };

    // A usable key passes, and signing with it works.
    let cfg = parse(&dkim("ed25519.pem"), &config).unwrap_or_else(|e| panic!("{e}"));
    let signed = crate::outbound::dkim::sign(
        cfg.outbound.dkim.as_ref().unwrap(),
        b"From: a@acme.example\r\n\r\nhi\r\n".to_vec(),
    );
    assert!(signed.is_ok(), "{:?}", signed.err());

    let junk = d.join("junk.pem");
    let ec_key = tls_fixture("key.pem");
    let cases = [
        (
            dkim("junk.pem"),
            format!(
                "4:12: unusable DKIM key: key file {} holds no usable RSA or Ed25519 private key: no unencrypted PEM private key (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`)",
                junk.display()
            ),
        ),
        (
            // The STARTTLS key (P-256): a private key, but neither RSA nor Ed25519.
            dkim(&ec_key.display().to_string()),
            format!(
                "4:12: unusable DKIM key: key file {} holds no usable RSA or Ed25519 private key: not a usable RSA key (WrongAlgorithm); not a usable Ed25519 key (WrongAlgorithm)",
                ec_key.display()
            ),
        ),
    ];
    for (text, want) in cases {
        // Errors only: these files have no channels (a warning of its own).
        let errors: Vec<String> = errors_in(&text, &config)
            .into_iter()
            .filter(|e| !e.contains(": warning: "))
            .collect();
        assert!(
            errors.len() == 1 && errors[0].starts_with(&want),
            "want only {want:?}, got {errors:?}\n{text}"
        );
    }
}

/// An empty file runs, but accepts nothing: `check` says so.
#[test]
fn a_file_without_channels_is_valid_but_warned() {
    let cfg = parse_str("[company]\nname = \"Acme\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.message.contains("no [[channels]]")),
        "{:?}",
        cfg.warnings
    );
}

/// An end before the start is a night shift, read as written (hours.rs
/// runs it into the next day).
#[test]
fn a_night_shift_is_read_as_written() {
    let cfg = parse_str(
        "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[users.working_hours]\ntimezone = \"UTC\"\nstart = \"22:00\"\nend = \"06:00\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let h = cfg
        .user("ann")
        .and_then(|u| u.working_hours.as_ref())
        .expect("hours");
    assert_eq!(
        (h.start.to_string(), h.end.to_string()),
        ("22:00:00".into(), "06:00:00".into())
    );
}

/// `days = []` would leave the user never available (hours.rs relies on at
/// least one working day): an error at `days`.
#[test]
fn check_rejects_empty_working_days() {
    let text = "[[users]]\nid = \"ann\"\nemail = \"ann@acme.example\"\n[users.working_hours]\ntimezone = \"Europe/Berlin\"\ndays = []\nstart = \"09:00\"\nend = \"17:00\"\n[[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n";
    assert_eq!(
        errors_of(text),
        [
            "6:8: working_hours: `days` must name at least one working day (with none the user is never available)"
        ]
    );
    // One day is enough.
    let one = text.replace("days = []", "days = [\"wed\"]");
    assert_eq!(errors_of(&one), Vec::<String>::new());
}

#[test]
fn smtp_memory_and_data_rate_keys_are_read() {
    let text = format!(
        "{ONE_USER}\n[smtp]\nmax_inflight_bytes = 1000000000\ndata_timeout_secs = 60\nmin_data_rate = 0\nmin_data_rate_grace_secs = 5\n"
    );
    let cfg = parse_str(&text).unwrap();
    assert_eq!(cfg.smtp.max_inflight_bytes, 1_000_000_000);
    assert_eq!(cfg.smtp.data_timeout_secs, 60);
    assert_eq!(cfg.smtp.min_data_rate, 0);
    assert_eq!(cfg.smtp.min_data_rate_grace_secs, 5);
}

/// `[http]`'s keys are read; `metrics_token_file` resolves against the
/// config's directory and must hold a token.
#[test]
fn http_limits_and_the_metrics_token_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/metrics-token"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("secrets/empty"), "\n").unwrap();
    let path = dir.path().join("postdesk.toml");
    let text = |file: &str| {
        format!(
            "[http]\nheader_timeout_secs = 2\nbody_timeout_secs = 3\nmax_connections = 40\nmax_connections_per_ip = 4\nsends_per_minute_per_token = 0\nmetrics_listen = \"127.0.0.1:9025\"\nmetrics_token_file = \"{file}\"\n"
        )
    };
    let cfg = parse(&text("secrets/metrics-token"), &path).unwrap();
    let h = &cfg.http;
    assert_eq!(
        (
            h.header_timeout_secs,
            h.body_timeout_secs,
            h.max_connections,
            h.max_connections_per_ip,
            h.sends_per_minute_per_token
        ),
        (2, 3, 40, 4, 0)
    );
    assert_eq!(h.metrics_listen, Some("127.0.0.1:9025".parse().unwrap()));
    assert_eq!(
        h.metrics_token_file.as_deref(),
        Some(dir.path().join("secrets/metrics-token").as_path())
    );
    let warned = parse_str("[http]\nmax_connections = 4\nmax_connections_per_ip = 8")
        .expect("only a warning");
    assert!(
        warned.warnings.iter().any(|w| (w.line, w.col) == (3, 26)
            && w.message.contains(
                "`http.max_connections_per_ip` (8) is larger than `http.max_connections` (4)"
            )),
        "{:?}",
        warned.warnings
    );
    let errors = errors_in(&text("secrets/empty"), &path);
    assert!(
        errors.contains(&"8:22: secrets/empty holds no token (empty or not UTF-8)".to_string()),
        "{errors:?}"
    );
}

/// `[smtp]`'s trust keys: relays need an authserv-id; a resolver is
/// "system", "off" or IP:PORT; with neither DNS nor a relay, `check` warns
/// that team forwards over SMTP can never count.
#[test]
fn smtp_trust_keys() {
    let cfg = parse_str(
        "[smtp]\ntrusted_relays = [\"10.0.0.0/8\", \"192.0.2.1\"]\nauthserv_id = \"mx.acme.example\"\ndns_resolver = \"127.0.0.1:5353\"\n",
    )
    .expect("valid");
    assert_eq!(cfg.smtp.trusted_relays.len(), 2);
    assert_eq!(cfg.smtp.authserv_id.as_deref(), Some("mx.acme.example"));
    assert_eq!(
        cfg.smtp.dns_resolver,
        DnsResolver::Server("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(
        parse_str("").unwrap().smtp.dns_resolver,
        DnsResolver::System
    );
    let missing = errors_of("[smtp]\ntrusted_relays = [\"10.0.0.0/8\"]\n");
    assert!(
        missing.contains(&"2:18: `smtp.trusted_relays` needs `smtp.authserv_id`: the id in the relays' Authentication-Results headers".to_string()),
        "{missing:?}"
    );
    let bad = errors_of("[smtp]\ndns_resolver = \"8.8.8.8\"\n");
    assert!(
        bad.iter()
            .any(|e| e.starts_with("2:16: invalid resolver \"8.8.8.8\"")),
        "{bad:?}"
    );
    let off = parse_str("[smtp]\ndns_resolver = \"off\"\n").expect("only a warning");
    assert!(
        off.warnings
            .iter()
            .any(|w| w.line == 2 && w.message.contains("never authenticated")),
        "{:?}",
        off.warnings
    );
    let relayed = parse_str(
        "[smtp]\ndns_resolver = \"off\"\ntrusted_relays = [\"127.0.0.1\"]\nauthserv_id = \"mx\"\n",
    )
    .expect("valid");
    assert!(
        !relayed
            .warnings
            .iter()
            .any(|w| w.message.contains("never authenticated")),
        "{:?}",
        relayed.warnings
    );
    let gmail = parse_str(
        "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"Cargo.toml\"\n",
    )
    .expect("a gmail channel");
    assert_eq!(
        gmail.channels[0].effective_authserv_id(),
        Some("mx.google.com")
    );
}

/// The warnings of a config that must parse, as `LINE:COL: message`.
fn warnings_in(text: &str, config: &Path) -> Vec<String> {
    let cfg = parse(text, config).unwrap_or_else(|e| panic!("{e}"));
    cfg.warnings
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            format!("{}:{}: {}", d.line, d.col, d.message)
        })
        .collect()
}

#[test]
fn group_or_world_readable_secret_files_warn() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = |name: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, "s3cret\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    secret("relay-pw", 0o640);
    secret("imap-pw", 0o644);
    secret("cs", 0o604);
    secret("rt", 0o600);
    secret("rt2", 0o400);
    std::fs::write(dir.path().join("ca.pem"), "not secret").expect("write");
    let text = r#"[relay]
username = "u"
password_file = "relay-pw"
ca_file = "ca.pem"
[[channels]]
id = "m"
kind = "imap"
address = "m@acme.example"
[channels.imap]
host = "127.0.0.1"
tls = "none"
password_file = "imap-pw"
[[channels]]
id = "g"
kind = "gmail"
address = "g@acme.example"
[channels.oauth]
client_id = "id"
client_secret_file = "cs"
refresh_token_file = "rt"
[[channels]]
id = "o"
kind = "office365"
address = "o@acme.example"
[channels.oauth]
client_id = "id"
refresh_token_file = "rt2"
"#;
    let config = dir.path().join("postdesk.toml");
    assert_eq!(
        warnings_in(text, &config),
        [
            "3:17: secret file relay-pw is readable by its group (mode 0640); make it 0600 or 0400 (chmod go-rwx)",
            "12:17: secret file imap-pw is readable by its group and everyone (mode 0644); make it 0600 or 0400 (chmod go-rwx)",
            "19:22: secret file cs is readable by everyone (mode 0604); make it 0600 or 0400 (chmod go-rwx)",
        ]
    );
    // Shown as FILE:LINE:COL: warning: …, like every other warning.
    let cfg = parse(text, &config).expect("parses");
    let shown = cfg.warnings[0].to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:3:17: warning: secret file relay-pw",
            config.display()
        )),
        "{shown}"
    );
    // Fixed modes: no warning.
    for f in ["relay-pw", "imap-pw", "cs"] {
        let p = dir.path().join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    assert_eq!(warnings_in(text, &config), Vec::<String>::new());
}

#[test]
fn tls_keys_and_dkim_keys_are_secrets_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (from, to) in [
        ("tls/cert.pem", "cert.pem"),
        ("tls/key.pem", "key.pem"),
        ("dkim/rsa2048.pkcs8.pem", "dkim.pem"),
    ] {
        std::fs::copy(fixtures.join(from), dir.path().join(to)).expect("copy");
        let p = dir.path().join(to);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let text = "[smtp]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n[outbound.dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey_file = \"dkim.pem\"\n[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"s@acme.example\"\n";
    let w = warnings_in(text, &dir.path().join("postdesk.toml"));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("3:11: secret file key.pem is readable"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("7:12: secret file dkim.pem is readable"),
        "{w:?}"
    );
}

#[test]
fn logins_in_clear_to_another_host_warn() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["pw", "rt"] {
        let p = dir.path().join(f);
        std::fs::write(&p, "s3cret\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let config = dir.path().join("postdesk.toml");
    let relay = |host: &str, tls: &str, user: bool| {
        let user = if user {
            "username = \"u\"\npassword_file = \"pw\"\n"
        } else {
            ""
        };
        format!(
            "[relay]\nhost = \"{host}\"\ntls = \"{tls}\"\n{user}[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"s@acme.example\"\n"
        )
    };
    assert_eq!(
        warnings_in(&relay("mail.example.net", "none", true), &config),
        [
            "3:7: SMTP AUTH to mail.example.net with tls = \"none\": the relay password crosses the network in clear (use \"starttls\" or \"implicit\")"
        ]
    );
    for (host, tls, user) in [
        ("127.0.0.1", "none", true),
        ("localhost", "none", true),
        ("::1", "none", true),
        ("mail.example.net", "starttls", true),
        ("mail.example.net", "implicit", true),
        ("mail.example.net", "none", false),
    ] {
        assert_eq!(
            warnings_in(&relay(host, tls, user), &config),
            Vec::<String>::new(),
            "{host} {tls} {user}"
        );
    }

    let imap = "[[channels]]\nid = \"m\"\nkind = \"imap\"\naddress = \"m@acme.example\"\n[channels.imap]\nhost = \"imap.example.net\"\ntls = \"none\"\npassword_file = \"pw\"\n";
    assert_eq!(
        warnings_in(imap, &config),
        [
            "7:7: tls = \"none\" to imap.example.net: the IMAP LOGIN password crosses the network in clear (use \"starttls\" or \"implicit\")"
        ]
    );
    let gmail = "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nrefresh_token_file = \"rt\"\n[channels.imap]\ntls = \"none\"\n[channels.smtp]\ntls = \"none\"\n";
    assert_eq!(
        warnings_in(gmail, &config),
        [
            "9:7: tls = \"none\" to imap.gmail.com: the IMAP XOAUTH2 access token crosses the network in clear (use \"starttls\" or \"implicit\")",
            "11:7: tls = \"none\" to smtp.gmail.com: the SMTP AUTH XOAUTH2 access token crosses the network in clear (use \"starttls\" or \"implicit\")",
        ]
    );
    let local = gmail.replace("tls = \"none\"\n", "host = \"127.0.0.1\"\ntls = \"none\"\n");
    assert_eq!(warnings_in(&local, &config), Vec::<String>::new());
}

/// `[store] kind = "postgres"`: `url_file` is required, resolved against the
/// config's directory, must hold a URL this backend can use (reported at
/// the key, never with the URL's text), and a database on another host is
/// warned about (no TLS). `pool_size` defaults to 16 and must be positive.
#[test]
fn a_postgres_store_needs_a_usable_url_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let secret = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("secrets").join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    secret("local", "postgresql://postdesk:pw@127.0.0.1/postdesk\n");
    secret("remote", "postgresql://postdesk:pw@db.internal/postdesk\n");
    secret(
        "tls",
        "postgresql://postdesk:pw@db.internal/postdesk?sslmode=verify-full\n",
    );
    secret("ca.pem", "no certificate here\n");
    secret("junk", "mysql://nope\n");
    let path = dir.path().join("postdesk.toml");
    let text = |file: &str| format!("[store]\nkind = \"postgres\"\nurl_file = \"{file}\"\n");
    // What is said about the store (not the warning about having no channels).
    let about_store = |all: Vec<String>| -> Vec<String> {
        all.into_iter()
            .filter(|e| !e.contains("[[channels]]"))
            .collect()
    };

    let cfg = parse(&text("secrets/local"), &path).unwrap();
    assert_eq!(cfg.store.kind, StoreKind::Postgres);
    assert_eq!(cfg.store.pool_size, 16);
    assert_eq!(
        cfg.store.url_file.as_deref(),
        Some(dir.path().join("secrets/local").as_path())
    );
    assert!(
        !cfg.warnings
            .iter()
            .any(|w| w.message.contains("url_file") || w.message.contains("in clear")),
        "{:?}",
        cfg.warnings
    );

    let cfg = parse(&text("secrets/remote"), &path).unwrap();
    assert!(
        cfg.warnings
            .iter()
            .any(|w| (w.line, w.col) == (3, 12) && w.message.contains("in clear")),
        "{:?}",
        cfg.warnings
    );

    // TLS to a remote database: no warning; a ca_file must hold certificates.
    let cfg = parse(&text("secrets/tls"), &path).unwrap();
    assert!(
        !cfg.warnings.iter().any(|w| w.message.contains("in clear")),
        "{:?}",
        cfg.warnings
    );
    let with_ca = format!("{}ca_file = \"secrets/ca.pem\"\n", text("secrets/tls"));
    let errors = about_store(errors_in(&with_ca, &path));
    assert!(
        errors.len() == 1
            && errors[0].starts_with("4:11: ca_file ")
            && errors[0].contains("no certificate"),
        "{errors:?}"
    );
    let unused = format!("{}ca_file = \"secrets/ca.pem\"\n", text("secrets/local"));
    let errors = about_store(errors_in(&unused, &path));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("4:11: warning: `store.ca_file` is unused")),
        "{errors:?}"
    );

    for (file, says) in [
        (
            "secrets/junk",
            "3:12: secrets/junk: not a PostgreSQL connection URL",
        ),
        ("secrets/none", "3:12: cannot read secrets/none"),
    ] {
        let errors = about_store(errors_in(&text(file), &path));
        assert!(
            errors.len() == 1 && errors[0].starts_with(says),
            "{file}: {errors:?}"
        );
        assert!(!errors[0].contains("pw@"), "{errors:?}");
    }
    assert_eq!(
        about_store(errors_of("[store]\nkind = \"postgres\"\n")),
        [
            "2:8: missing required key `url_file` in [store] (required for kind = \"postgres\"): a file holding the postgresql:// URL"
        ]
    );
    assert_eq!(
        errors_of("[store]\nkind = \"oracle\"\n")
            .iter()
            .filter(|e| e.starts_with("2:8: invalid value for `store.kind`"))
            .count(),
        1
    );
    assert_eq!(
        about_store(errors_of("[store]\npool_size = 0\n")),
        ["2:13: `store.pool_size` must be between 1 and 1024"]
    );
    assert_eq!(
        about_store(errors_of("[store]\nlease_secs = 2\nnode_id = \"a b\"\n")),
        [
            "2:14: `store.lease_secs` must be between 5 and 3600",
            "3:11: `store.node_id` \"a b\" is not a node name: 1 to 64 letters, digits, `.`, `_` or `-`"
        ]
    );
    let cfg = parse_str("[store]\nnode_id = \"pd-2.acme\"\n").expect("loads");
    assert_eq!(cfg.store.node_id.as_deref(), Some("pd-2.acme"));
    assert_eq!(cfg.store.node_name(), "pd-2.acme");
    assert_eq!(cfg.store.lease_secs, 30);
}

#[test]
fn a_node_without_node_id_is_named_after_its_host() {
    assert_eq!(
        super::host_node_name("desk-1.acme.example"),
        "desk-1.acme.example"
    );
    assert_eq!(super::host_node_name("desk 1 (spare)"), "desk1spare");
    assert_eq!(super::host_node_name(""), "postdesk");
    assert_eq!(super::host_node_name(&"x".repeat(80)), "x".repeat(64));
    let cfg = parse_str("").expect("loads");
    assert!(super::validate::valid_node_id(&cfg.store.node_name()));
}

/// The errors of `text`, or the warnings of a config that loads.
fn findings(text: &str) -> Vec<String> {
    match parse_str(text) {
        Ok(cfg) => cfg
            .warnings
            .iter()
            .map(|d| format!("{}:{}: warning: {}", d.line, d.col, d.message))
            .collect(),
        Err(_) => errors_of(text),
    }
}

/// `[channels.oauth] flow = "client_credentials"` (Office 365 app-only):
/// the keys it needs and refuses, each reported at its line and column.
#[test]
fn client_credentials_flow_is_checked_against_kind_and_keys() {
    const O365: &str = "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nflow = \"client_credentials\"\n";
    let table: &[(String, &str)] = &[
        (
            format!("{O365}tenant = \"acme.example\""),
            "5:1: missing required key `client_secret_file` in [channels.oauth] (required with flow = \"client_credentials\")",
        ),
        (
            format!("{O365}client_secret_file = \"Cargo.toml\""),
            "7:8: flow = \"client_credentials\" needs `tenant`",
        ),
        (
            format!("{O365}client_secret_file = \"Cargo.toml\"\ntenant = \"acme/../x\""),
            "9:10: tenant `acme/../x` is not a directory id or domain",
        ),
        (
            format!(
                "{O365}client_secret_file = \"Cargo.toml\"\ntenant = \"acme.example\"\nrefresh_token_file = \"Cargo.toml\""
            ),
            "10:22: warning: `refresh_token_file` is ignored with flow = \"client_credentials\"",
        ),
        (
            "[[channels]]\nid = \"g\"\nkind = \"gmail\"\naddress = \"g@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nflow = \"client_credentials\"\nclient_secret_file = \"Cargo.toml\"".to_string(),
            "7:8: flow = \"client_credentials\" is for office365 channels",
        ),
        (
            format!("{O365}client_secret_file = \"Cargo.toml\"\ntenant = \"acme.example\"\nflow = \"implicit\""),
            "duplicate key",
        ),
        (
            "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\n[channels.oauth]\nclient_id = \"id\"\nflow = \"implicit\"".to_string(),
            "7:8: invalid value for `channels.oauth.flow`",
        ),
        (
            "[[channels]]\nid = \"o\"\nkind = \"office365\"\naddress = \"o@acme.example\"\n[channels.oauth]\nclient_id = \"id\"".to_string(),
            "5:1: missing required key `refresh_token_file` in [channels.oauth]",
        ),
    ];
    for (text, want) in table {
        let errs = findings(text);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{text}\nwant {want}\ngot {errs:?}"
        );
    }
    // A complete app-only channel: the tenant's endpoint and the default scope.
    let cfg = parse_str(&format!(
        "{O365}client_secret_file = \"Cargo.toml\"\ntenant = \"acme.example\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let ch = &cfg.channels[0];
    let oauth = ch.oauth.as_ref().expect("oauth");
    assert_eq!(oauth.flow, OAuthFlow::ClientCredentials);
    assert_eq!(oauth.refresh_token_file, None);
    assert_eq!(
        ch.effective_token_url().as_deref(),
        Some("https://login.microsoftonline.com/acme.example/oauth2/v2.0/token")
    );
    assert_eq!(
        ch.effective_app_scope(),
        Some("https://outlook.office365.com/.default")
    );
}

/// `[alerts]`: admins' addresses (never a channel's), a positive delay,
/// and a warning when nothing can send the emails.
#[test]
fn alerts_are_checked() {
    const CH: &str =
        "[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n";
    let table: &[(String, &str)] = &[
        (
            format!("[alerts]\nto = [\"ops@acme.example\", \"nobody\"]\n{CH}"),
            "2:27: invalid email address `nobody`",
        ),
        (
            format!(
                "[notifications]\nfrom = \"pd@acme.example\"\n[alerts]\nto = [\"Support@Acme.example\"]\n{CH}"
            ),
            "4:7: `support@acme.example` is a channel's address",
        ),
        (
            "[alerts]\nalert_after_secs = 0\n".to_string(),
            "2:20: `alert_after_secs` must be at least 1",
        ),
        (
            "[alerts]\nto = [\"ops@acme.example\"]\n".to_string(),
            "2:6: warning: alerts are not emailed while [notifications] from is not set",
        ),
        (
            "[alerts]\nsend_to = []\n".to_string(),
            "2:1: unknown key `send_to`",
        ),
    ];
    for (text, want) in table {
        let got = findings(text);
        assert!(
            got.iter().any(|e| e.contains(want)),
            "{text}\nwant {want}\ngot {got:?}"
        );
    }
    let cfg = parse_str(
        "[alerts]\nto = [\" Ops@Acme.example \"]\n[notifications]\nfrom = \"pd@acme.example\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.alerts.to, ["ops@acme.example"]);
    assert_eq!(cfg.alerts.alert_after_secs, ALERT_AFTER_SECS);
}
