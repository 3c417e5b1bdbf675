//! Walks the spanned TOML tree into typed structs, collecting every problem.
//!
//! Each reader asks its table for every key it knows (`key`/`required`/
//! `section`), so the keys it never asked for are unknown keys (`finish`).
//! The readers of the tables are generated from their declaration in
//! `mod.rs` (`config_section!`); the functions here add what spans keys
//! (`dkim` complete or absent, `oauth`'s refresh token for the delegated
//! flow, `working_hours` as a whole) or is no plain key (the top level,
//! arrays of tables, custom `ticket_properties`). `TABLES` (tests only)
//! gathers every table's keys, which the example configuration must show
//! (`example_tests.rs`).
//! A bad value is reported at its span and replaced by the default, so one
//! mistake never hides the next. Cross-entry checks live in `validate.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{ConfigErrors, Diagnostic, LineIndex, Severity};
use super::hours::WorkingHoursKeys;
use super::{
    AlertsConfig, Assign, ChannelConfig, ChannelKind, CompanyConfig, Config, DkimConfig,
    DnsResolver, FormField, FormFieldType, HttpConfig, LogConfig, LogFormat, NotificationsConfig,
    NotifyEvent, OAuthConfig, OAuthFlow, OutboundConfig, RelayConfig, RoutingRule, SenderName,
    SmtpConfig, StoreConfig, StoreKind, TeamConfig, TicketProperties, TlsMode, UserConfig,
};
use crate::mail::normalize_email;

type Value<'i> = Spanned<DeValue<'i>>;

/// Entry point behind [`super::parse`].
pub(super) fn parse_and_validate(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut r = Reader::new(text, path);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut lines_seen = Vec::new();
        for e in syntax {
            let at = e.span().map_or(0, |s| s.start);
            let line = r.lines.line(at);
            // Recovery can cascade; the first error on a line is the useful one.
            if !lines_seen.contains(&line) {
                lines_seen.push(line);
                r.error(at, format!("TOML syntax error: {}", e.message()));
            }
        }
        return Err(ConfigErrors {
            diagnostics: r.into_diagnostics(),
        });
    }
    let mut draft = read_root(&mut r, &root);
    super::validate::validate(&mut r, &mut draft, path);
    let config = Config {
        path: path.to_path_buf(),
        teams: draft.teams.into_iter().map(|(_, t)| t).collect(),
        users: draft.users.into_iter().map(|(_, u)| u).collect(),
        channels: draft.channels.into_iter().map(|(_, c)| c).collect(),
        ..draft.config
    };
    let diagnostics = r.into_diagnostics();
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        Err(ConfigErrors { diagnostics })
    } else {
        Ok(Config {
            warnings: diagnostics,
            ..config
        })
    }
}

/// The typed config before validation. List entries keep their index in the
/// file (for span look-ups); a required key that is missing or invalid (already
/// reported) reads as `""` (ids, emails) or `form` (kind) so that the rest of
/// the entry is still checked; `Reader::valid` tells them apart.
pub(super) struct Draft {
    /// The tables (`[store]` … `[log]`); its lists stay empty until the
    /// entries below, validated, take their place.
    pub config: Config,
    pub teams: Vec<(usize, TeamConfig)>,
    pub users: Vec<(usize, UserConfig)>,
    pub channels: Vec<(usize, ChannelConfig)>,
}

/// Collects diagnostics and remembers the span of every value and table read,
/// by path (`channels[1].routing.users[0]`), for `validate.rs`.
pub(super) struct Reader<'s> {
    pub(super) lines: LineIndex<'s>,
    file: PathBuf,
    diags: Vec<(usize, Severity, String)>,
    spans: HashMap<String, Range<usize>>,
    /// Paths whose value was present but rejected (already reported).
    invalid: HashSet<String>,
    /// Each table read (its display path) with the keys its reader asked
    /// for, to hold [`TABLES`] to what the readers do.
    #[cfg(test)]
    pub(super) tables: Vec<(String, Vec<&'static str>)>,
}

impl<'s> Reader<'s> {
    fn new(text: &'s str, file: &Path) -> Self {
        Self {
            lines: LineIndex::new(text),
            file: file.to_path_buf(),
            diags: Vec::new(),
            spans: HashMap::new(),
            invalid: HashSet::new(),
            #[cfg(test)]
            tables: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, at: usize, message: impl Into<String>) {
        self.diags.push((at, Severity::Error, message.into()));
    }

    /// Error at the value (or table) recorded under `path`, else its nearest parent.
    pub(super) fn error_at(&mut self, path: &str, message: impl Into<String>) {
        let at = self.pos(path);
        self.error(at, message);
    }

    pub(super) fn warning_at(&mut self, path: &str, message: impl Into<String>) {
        let at = self.pos(path);
        self.diags.push((at, Severity::Warning, message.into()));
    }

    /// Byte offset of `path`, falling back to its parents, then the file start.
    pub(super) fn pos(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(span) = self.spans.get(p) {
                return span.start;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return 0,
            }
        }
    }

    /// Whether the file set `path` (a key or table).
    pub(super) fn has(&self, path: &str) -> bool {
        self.spans.contains_key(path)
    }

    /// Whether the file set `path` to a value that was read without error.
    pub(super) fn valid(&self, path: &str) -> bool {
        self.has(path) && !self.invalid.contains(path)
    }

    fn into_diagnostics(self) -> Vec<Diagnostic> {
        let mut diags: Vec<Diagnostic> = self
            .diags
            .into_iter()
            .map(|(at, severity, message)| {
                let (line, col) = self.lines.line_col(at);
                Diagnostic {
                    file: self.file.clone(),
                    line,
                    col,
                    severity,
                    message,
                }
            })
            .collect();
        diags.sort_by_key(|d| (d.line, d.col));
        diags
    }

    fn type_error(&mut self, path: &str, v: &Value<'_>, expected: &str) {
        self.error(
            v.span().start,
            format!(
                "invalid type for `{}`: expected {expected}, found {}",
                display_path(path),
                v.get_ref().type_str()
            ),
        );
    }

    fn string<'v>(&mut self, path: &str, v: &'v Value<'_>) -> Option<&'v str> {
        let s = v.get_ref().as_str();
        if s.is_none() {
            self.type_error(path, v, "a string");
        }
        s
    }

    /// Read optional `key` of `t`; `None` when absent or invalid (reported).
    pub(super) fn key<T: FromToml>(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
    ) -> Option<T> {
        t.known.push(key);
        let v = t.table.get(key)?;
        let path = join(&t.path, key);
        self.spans.insert(path.clone(), v.span());
        let value = T::from_toml(self, &path, v);
        if value.is_none() {
            self.invalid.insert(path);
        }
        value
    }

    /// Read `key` of `t`, reporting it at the table when absent.
    pub(super) fn required<T: FromToml>(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
    ) -> Option<T> {
        if !t.table.contains_key(key) {
            t.known.push(key);
            self.missing(t, key);
            return None;
        }
        self.key(t, key)
    }

    /// Report `key`, which `t` must have, missing (at the table).
    pub(super) fn missing(&mut self, t: &Table<'_, '_>, key: &str) {
        self.error(
            t.start,
            format!("missing required key `{key}` in {}", t.describe()),
        );
    }

    /// Whether every key `t`'s reader asked for is set to a valid value.
    pub(super) fn all_valid(&self, t: &Table<'_, '_>) -> bool {
        t.known.iter().all(|k| self.valid(&join(&t.path, k)))
    }

    /// Sub-table `key` of `t`, if present and a table.
    fn table<'a, 'i>(&mut self, t: &mut Table<'a, 'i>, key: &'static str) -> Option<Table<'a, 'i>> {
        t.known.push(key);
        let v = t.table.get(key)?;
        let path = join(&t.path, key);
        self.spans.insert(path.clone(), v.span());
        match v.get_ref() {
            DeValue::Table(table) => Some(Table::new(path, table, v.span().start)),
            _ => {
                self.type_error(&path, v, "a table");
                None
            }
        }
    }

    /// Read sub-table `key` with `f` (defaults when absent), then check its keys.
    pub(super) fn section<T: Default>(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        f: impl FnOnce(&mut Self, &mut Table<'_, '_>) -> T,
    ) -> T {
        self.optional_section(t, key, f).unwrap_or_default()
    }

    /// Like `section`, `None` when the table is absent.
    pub(super) fn optional_section<T>(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        f: impl FnOnce(&mut Self, &mut Table<'_, '_>) -> T,
    ) -> Option<T> {
        let mut sub = self.table(t, key)?;
        let value = f(self, &mut sub);
        self.finish(sub);
        Some(value)
    }

    /// Each table of the array of tables `key` (`[[key]]`), with its index.
    fn array_of_tables<T>(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        f: impl Fn(&mut Self, &mut Table<'_, '_>) -> T,
    ) -> Vec<(usize, T)> {
        t.known.push(key);
        let Some(v) = t.table.get(key) else {
            return Vec::new();
        };
        let path = join(&t.path, key);
        self.spans.insert(path.clone(), v.span());
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(&path, v, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            self.spans.insert(item_path.clone(), item.span());
            let DeValue::Table(table) = item.get_ref() else {
                self.type_error(&item_path, item, "a table");
                continue;
            };
            let mut sub = Table::new(item_path, table, item.span().start);
            let value = f(self, &mut sub);
            self.finish(sub);
            out.push((i, value));
        }
        out
    }

    /// Report every key of `t` that its reader did not ask for.
    fn finish(&mut self, t: Table<'_, '_>) {
        #[cfg(test)]
        self.record(&t);
        for (k, _) in t.table.iter() {
            let name: &str = k.get_ref();
            if t.known.contains(&name) {
                continue;
            }
            let mut message = format!("unknown key `{name}` in {}", t.describe());
            if let Some(best) = did_you_mean(name, &t.known) {
                message.push_str(&format!("; did you mean `{best}`?"));
            }
            self.error(k.span().start, message);
        }
    }
}

#[cfg(test)]
impl Reader<'_> {
    /// Remember that `t` was read, with the keys its reader asked for.
    fn record(&mut self, t: &Table<'_, '_>) {
        self.tables.push((display_path(&t.path), t.known.clone()));
    }
}

/// A TOML table being read: its path, and the keys its reader knows.
pub(super) struct Table<'a, 'i> {
    path: String,
    table: &'a DeTable<'i>,
    start: usize,
    known: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    fn new(path: String, table: &'a DeTable<'i>, start: usize) -> Self {
        Self {
            path,
            table,
            start,
            known: Vec::new(),
        }
    }

    /// `[smtp]`, `[[channels]]`, `[channels.routing]` or `the top level`.
    fn describe(&self) -> String {
        if self.path.is_empty() {
            "the top level".to_owned()
        } else if self.path.ends_with(']') {
            format!("[[{}]]", display_path(&self.path))
        } else {
            format!("[{}]", display_path(&self.path))
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `channels[1].routing.users[0]` → `channels.routing.users` (for messages).
pub(super) fn display_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The known key closest to `name`, if close enough to be a likely typo.
fn did_you_mean<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A value that can be read from one TOML value, reporting its own errors.
pub(super) trait FromToml: Sized {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self>;
}

impl FromToml for String {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        r.string(path, v).map(str::to_owned)
    }
}

/// An optional key: absent or invalid (reported), it reads as `None`.
impl<T: FromToml> FromToml for Option<T> {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        T::from_toml(r, path, v).map(Some)
    }
}

impl FromToml for bool {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            r.type_error(path, v, "a boolean (true or false)");
        }
        b
    }
}

macro_rules! unsigned_from_toml {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
                let Some(int) = v.get_ref().as_integer() else {
                    r.type_error(path, v, "a non-negative integer");
                    return None;
                };
                let n = i128::from_str_radix(int.as_str(), int.radix()).ok();
                let value = n.and_then(|n| <$t>::try_from(n).ok());
                if value.is_none() {
                    r.error(
                        v.span().start,
                        format!(
                            "`{}` must be between 0 and {}, found {}",
                            display_path(path),
                            <$t>::MAX,
                            int.as_str()
                        ),
                    );
                }
                value
            }
        }
    )*};
}
unsigned_from_toml!(u16, u32, u64, usize);

impl FromToml for PathBuf {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let s = r.string(path, v)?;
        if s.is_empty() {
            r.error(
                v.span().start,
                format!("`{}` must not be empty", display_path(path)),
            );
            return None;
        }
        Some(PathBuf::from(s))
    }
}

impl FromToml for SocketAddr {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let s = r.string(path, v)?;
        let addr = s.parse().ok();
        if addr.is_none() {
            r.error(
                v.span().start,
                format!(
                    "invalid socket address \"{s}\" for `{}`: expected IP:PORT, e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"",
                    display_path(path)
                ),
            );
        }
        addr
    }
}

impl FromToml for Spanned<String> {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        r.string(path, v)
            .map(|s| Spanned::new(v.span(), s.to_owned()))
    }
}

impl FromToml for jiff::civil::Weekday {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        use jiff::civil::Weekday::*;
        let s = r.string(path, v)?;
        let day = match s.to_ascii_lowercase().as_str() {
            "mon" | "monday" => Monday,
            "tue" | "tuesday" => Tuesday,
            "wed" | "wednesday" => Wednesday,
            "thu" | "thursday" => Thursday,
            "fri" | "friday" => Friday,
            "sat" | "saturday" => Saturday,
            "sun" | "sunday" => Sunday,
            _ => {
                r.error(
                    v.span().start,
                    format!(
                        "invalid day \"{s}\" in `{}`: expected mon, tue, wed, thu, fri, sat or sun",
                        display_path(path)
                    ),
                );
                return None;
            }
        };
        Some(day)
    }
}

impl FromToml for jiff::civil::Time {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let s = r.string(path, v)?;
        let parsed = s.split_once(':').and_then(|(h, m)| {
            let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
            jiff::civil::Time::new(h, m, 0, 0).ok()
        });
        if parsed.is_none() {
            r.error(
                v.span().start,
                format!(
                    "invalid time \"{s}\" for `{}`: expected HH:MM, e.g. \"09:00\"",
                    display_path(path)
                ),
            );
        }
        parsed
    }
}

impl FromToml for ipnet::IpNet {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let s = r.string(path, v)?;
        let net = s
            .parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from));
        if net.is_none() {
            r.error(
                v.span().start,
                format!(
                    "invalid network \"{s}\" for `{}`: expected an IP or CIDR, e.g. \"10.0.0.0/8\"",
                    display_path(path)
                ),
            );
        }
        net
    }
}

impl FromToml for DnsResolver {
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let s = r.string(path, v)?;
        let parsed = match s {
            "system" => Some(DnsResolver::System),
            "off" => Some(DnsResolver::Off),
            other => other.parse::<SocketAddr>().ok().map(DnsResolver::Server),
        };
        if parsed.is_none() {
            r.error(
                v.span().start,
                format!(
                    "invalid resolver \"{s}\" for `{}`: expected \"system\", \"off\" or IP:PORT, e.g. \"127.0.0.1:53\"",
                    display_path(path)
                ),
            );
        }
        parsed
    }
}

impl<T: FromToml> FromToml for Vec<T> {
    /// Bad elements are reported and skipped.
    fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
        let Some(items) = v.get_ref().as_array() else {
            r.type_error(path, v, "an array");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            r.spans.insert(item_path.clone(), item.span());
            out.extend(T::from_toml(r, &item_path, item));
        }
        Some(out)
    }
}

macro_rules! enum_from_toml {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            fn from_toml(r: &mut Reader<'_>, path: &str, v: &Value<'_>) -> Option<Self> {
                use serde::Deserialize as _;
                use serde::de::value::{Error, StrDeserializer};
                let s = r.string(path, v)?;
                match <$t>::deserialize(StrDeserializer::<Error>::new(s)) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        r.error(
                            v.span().start,
                            format!("invalid value for `{}`: {e}", display_path(path)),
                        );
                        None
                    }
                }
            }
        }
    )*};
}
enum_from_toml!(
    StoreKind,
    TlsMode,
    LogFormat,
    ChannelKind,
    SenderName,
    Assign,
    FormFieldType,
    OAuthFlow,
    NotifyEvent
);

/// Read `text` as [`super::parse`] does, without validating: what reading
/// reports, and each table read with the keys its reader asked for.
#[cfg(test)]
pub(super) fn read_tables(text: &str) -> (Vec<Diagnostic>, Vec<(String, Vec<&'static str>)>) {
    let mut r = Reader::new(text, Path::new("postdesk.toml"));
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        r.error(
            e.span().map_or(0, |s| s.start),
            format!("TOML syntax error: {}", e.message()),
        );
    }
    read_root(&mut r, &root);
    let tables = std::mem::take(&mut r.tables);
    (r.into_diagnostics(), tables)
}

/// A table of the file for the tests: its path (an array of tables
/// without `[]`), its keys, and whether it takes custom keys besides.
#[cfg(test)]
pub(super) struct TableKeys {
    pub path: &'static str,
    pub keys: &'static [&'static str],
    pub custom: bool,
}

/// Every table of the file, with the keys its reader asks for (`KEYS` of
/// its declaration; the top level's next to `read_root`): what
/// `config/postdesk.example.toml` must show (`example_tests.rs`).
#[cfg(test)]
pub(super) const TABLES: &[TableKeys] = {
    macro_rules! declared {
        ($path:literal, $ty:ty) => {
            TableKeys {
                path: $path,
                keys: <$ty>::KEYS,
                custom: <$ty>::CUSTOM_KEYS,
            }
        };
    }
    &[
        TableKeys {
            path: "",
            keys: ROOT_KEYS,
            custom: false,
        },
        declared!("store", StoreConfig),
        declared!("smtp", SmtpConfig),
        declared!("http", HttpConfig),
        declared!("relay", RelayConfig),
        declared!("outbound", OutboundConfig),
        declared!("outbound.dkim", DkimConfig),
        declared!("company", CompanyConfig),
        declared!("notifications", NotificationsConfig),
        declared!("alerts", AlertsConfig),
        declared!("log", LogConfig),
        declared!("teams", TeamConfig),
        declared!("users", UserConfig),
        declared!("users.working_hours", WorkingHoursKeys),
        declared!("channels", ChannelConfig),
        declared!("channels.ticket_properties", TicketProperties),
        declared!("channels.routing", super::RoutingConfig),
        declared!("channels.routing.rules", RoutingRule),
        declared!("channels.imap", super::ImapConfig),
        declared!("channels.oauth", OAuthConfig),
        declared!("channels.smtp", super::ChannelSmtpConfig),
        declared!("channels.form", super::FormConfig),
        declared!("channels.form.fields", FormField),
    ]
};

/// The keys `read_root` asks for.
#[cfg(test)]
pub(super) const ROOT_KEYS: &[&str] = &[
    "store",
    "smtp",
    "http",
    "relay",
    "outbound",
    "company",
    "notifications",
    "alerts",
    "log",
    "teams",
    "users",
    "channels",
];

fn read_root(r: &mut Reader<'_>, root: &Spanned<DeTable<'_>>) -> Draft {
    let mut t = Table::new(String::new(), root.get_ref(), root.span().start);
    let draft = Draft {
        config: Config {
            store: r.section(&mut t, "store", StoreConfig::read),
            smtp: r.section(&mut t, "smtp", SmtpConfig::read),
            http: r.section(&mut t, "http", HttpConfig::read),
            relay: r.section(&mut t, "relay", RelayConfig::read),
            outbound: r.section(&mut t, "outbound", OutboundConfig::read),
            company: r.section(&mut t, "company", CompanyConfig::read),
            notifications: r.section(&mut t, "notifications", NotificationsConfig::read),
            alerts: r.section(&mut t, "alerts", AlertsConfig::read),
            log: r.section(&mut t, "log", LogConfig::read),
            ..Config::default()
        },
        teams: r.array_of_tables(&mut t, "teams", TeamConfig::read),
        users: r.array_of_tables(&mut t, "users", UserConfig::read),
        channels: r.array_of_tables(&mut t, "channels", read_channel),
    };
    r.finish(t);
    draft
}

/// `[outbound.dkim]`, all of whose keys are required; `None` when absent
/// or incomplete (reported).
pub(super) fn dkim(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Option<DkimConfig> {
    r.optional_section(t, key, |r, t| {
        let dkim = DkimConfig::read(r, t);
        // Every key is required: one missing or wrong, no signing.
        r.all_valid(t).then_some(dkim)
    })
    .flatten()
}

/// A URL without its trailing slashes.
pub(super) fn without_trailing_slash(url: Option<String>) -> Option<String> {
    url.map(|u| u.trim_end_matches('/').to_string())
}

/// An address as the rest of postdesk compares it ([`normalize_email`]).
pub(super) fn normalize_optional_email(address: Option<String>) -> Option<String> {
    address.map(|a| normalize_email(&a))
}

/// Each address as the rest of postdesk compares it ([`normalize_email`]).
pub(super) fn normalize_emails(addresses: Vec<String>) -> Vec<String> {
    addresses.iter().map(|a| normalize_email(a)).collect()
}

/// `[[users]] email`, required, as the rest of postdesk compares it.
pub(super) fn user_email(r: &mut Reader<'_>, t: &mut Table<'_, '_>, key: &'static str) -> String {
    normalize_email(&r.required::<String>(t, key).unwrap_or_default())
}

/// `[users.working_hours]`; `None` when absent or wrong (reported).
pub(super) fn working_hours(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Option<super::WorkingHours> {
    r.optional_section(t, key, |r, t| {
        let WorkingHoursKeys {
            timezone,
            days,
            start,
            end,
        } = WorkingHoursKeys::read(r, t);
        // hours.rs relies on at least one working day a week.
        let no_days = days.is_empty();
        if no_days {
            r.error_at(
                &join(&t.path, "days"),
                "working_hours: `days` must name at least one working day (with none the user is never available)",
            );
        }
        let timezone_name = timezone?;
        let tz = match jiff::tz::TimeZone::get(timezone_name.get_ref()) {
            Ok(tz) => tz,
            Err(_) => {
                r.error(
                    timezone_name.span().start,
                    format!(
                        "unknown time zone \"{}\": use an IANA name such as \"Europe/Berlin\"",
                        timezone_name.get_ref()
                    ),
                );
                return None;
            }
        };
        let (start, end) = (start?, end?);
        // End before start: a night shift into the next day.
        if start == end {
            r.error(
                t.start,
                format!("working_hours: start and end are both {start}: give the end of the working day (before the start for a night shift)"),
            );
            return None;
        }
        if no_days {
            return None;
        }
        Some(super::WorkingHours {
            timezone_name: timezone_name.into_inner(),
            timezone: tz,
            days,
            start,
            end,
        })
    })
    .flatten()
}

fn read_channel(r: &mut Reader<'_>, t: &mut Table<'_, '_>) -> ChannelConfig {
    let mut channel = ChannelConfig::read(r, t);
    // Without a valid `username`, IMAP logs in as the channel's address.
    if let Some(imap) = &mut channel.imap
        && !r.valid(&join(&t.path, "imap.username"))
    {
        imap.username = channel.address.clone().unwrap_or_default();
    }
    channel
}

/// `[channels.oauth]`: `client_id` required, `refresh_token_file` too for
/// the delegated flow; `None` when absent or incomplete (reported).
pub(super) fn oauth(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Option<OAuthConfig> {
    r.optional_section(t, key, |r, t| {
        let oauth = OAuthConfig::read(r, t);
        // The delegated flow needs its refresh token.
        if oauth.flow == OAuthFlow::RefreshToken && oauth.refresh_token_file.is_none() {
            if !r.has(&join(&t.path, "refresh_token_file")) {
                r.missing(t, "refresh_token_file");
            }
            return None;
        }
        r.valid(&join(&t.path, "client_id")).then_some(oauth)
    })
    .flatten()
}

/// A rule's `name`; a rule without one is `rule N`.
pub(super) fn rule_name(r: &mut Reader<'_>, t: &mut Table<'_, '_>, key: &'static str) -> String {
    let n = t
        .path
        .rsplit_once('[')
        .and_then(|(_, i)| i.trim_end_matches(']').parse::<usize>().ok())
        .map_or(0, |i| i + 1);
    r.key(t, key).unwrap_or_else(|| format!("rule {n}"))
}

/// Each value lower-cased and trimmed.
pub(super) fn lower(values: Vec<String>) -> Vec<String> {
    values.iter().map(|v| v.trim().to_lowercase()).collect()
}

/// A table of string values (`properties = { priority = "high" }`).
pub(super) fn string_map(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(sub) = r.table(t, key) else {
        return out;
    };
    for (k, v) in sub.table.iter() {
        let path = join(&sub.path, k.get_ref());
        r.spans.insert(path.clone(), v.span());
        if let Some(value) = String::from_toml(r, &path, v) {
            out.insert(k.get_ref().to_string(), value);
        }
    }
    out
}

/// `[[channels.form.fields]]`.
pub(super) fn form_fields(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Vec<FormField> {
    r.array_of_tables(t, key, FormField::read)
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

/// `[[channels.routing.rules]]`.
pub(super) fn routing_rules(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Vec<RoutingRule> {
    r.array_of_tables(t, key, RoutingRule::read)
        .into_iter()
        .map(|(_, rule)| rule)
        .collect()
}

/// `[channels.ticket_properties]`: read without checking for unknown keys
/// (`section` would), since the keys besides the three named are custom.
pub(super) fn ticket_properties(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> TicketProperties {
    match r.table(t, key) {
        Some(mut sub) => {
            let properties = TicketProperties::read(r, &mut sub);
            #[cfg(test)]
            r.record(&sub);
            properties
        }
        None => TicketProperties::default(),
    }
}

/// The keys of `[channels.ticket_properties]` besides the named ones read
/// before: custom properties, string values only.
pub(super) fn custom_properties(
    r: &mut Reader<'_>,
    t: &mut Table<'_, '_>,
) -> BTreeMap<String, String> {
    let mut custom = BTreeMap::new();
    for (k, v) in t.table.iter() {
        let name: &str = k.get_ref();
        if t.known.contains(&name) {
            continue;
        }
        let path = join(&t.path, name);
        r.spans.insert(path.clone(), v.span());
        if let Some(value) = String::from_toml(r, &path, v) {
            custom.insert(name.to_owned(), value);
        }
    }
    custom
}
