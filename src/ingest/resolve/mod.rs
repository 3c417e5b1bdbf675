//! TEMPORARY stand-in until the real sender resolution lands: plain From.
use mail_parser::Message;
use serde::Serialize;
use std::collections::HashSet;

pub struct ResolveContext<'a> {
    pub team_addresses: &'a HashSet<String>,
    pub forwarders: &'a [String],
    pub original_sender_of_forwards: bool,
    pub own_message_id_domain: &'a str,
}
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Address {
    pub email: String,
    pub name: Option<String>,
}
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    pub contact: Address,
    pub method: String,
    pub confidence: f32,
    pub forwarder: Option<Address>,
    pub claimed_original: Option<Address>,
    pub note: Option<String>,
    pub original: Option<OriginalMessage>,
}
#[derive(Debug, Clone, Serialize)]
pub struct OriginalMessage {
    pub subject: Option<String>,
    pub date: Option<String>,
    pub text: String,
    pub message_id: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classification {
    Normal,
    AutoReply { reason: String },
    Bulk { reason: String },
    Bounce { dsn: Option<()> },
    Loop { reason: String },
}
pub fn resolve(msg: &Message<'_>, _ctx: &ResolveContext<'_>) -> Resolution {
    let from = msg.from().and_then(|a| a.first());
    Resolution {
        contact: Address {
            email: from
                .and_then(|a| a.address())
                .map(|a| a.to_lowercase())
                .unwrap_or_default(),
            name: from.and_then(|a| a.name()).map(str::to_string),
        },
        method: "from".into(),
        confidence: 1.0,
        forwarder: None,
        claimed_original: None,
        note: None,
        original: None,
    }
}
pub fn classify(
    msg: &Message<'_>,
    _envelope_from: Option<&str>,
    ctx: &ResolveContext<'_>,
) -> Classification {
    if msg.header("X-Postdesk-Loop").is_some()
        || msg
            .message_id()
            .is_some_and(|m| m.ends_with(&format!("@{}", ctx.own_message_id_domain)))
    {
        return Classification::Loop {
            reason: "own mail".into(),
        };
    }
    Classification::Normal
}
pub fn strip_subject_prefixes(s: &str) -> String {
    s.to_string()
}
