//! Submissions that arrive over HTTP rather than through the spool: web form
//! posts and tickets opened through the tickets API.
//!
//! They are checked here and planned into the same [`InboundMessage`] as mail,
//! so the store applies them on the inbound path (contact by email, a new
//! ticket with the channel's ticket properties, routing by [`super::route`]).
//!
//! Pure: no I/O, clock or DB; the caller passes the submission's id and date.
//!
//! Limits: at most [`MAX_FIELDS`] fields, names up to [`MAX_NAME_LEN`] bytes,
//! each value up to the form's `max_field_size`.
//!
//! Untrusted input: every field name and value (a website visitor's, or a
//! bot's). Values are only stored and shown as text; nothing is interpreted.

use std::collections::BTreeMap;

use serde::Serialize;

use super::resolve::{Address, Classification, Resolution};
use super::route;
use crate::config::{ChannelConfig, Config, FormConfig, FormFieldType, UserConfig};
use crate::mail::without_nul;
use crate::store::{ContactRef, InboundMessage, SenderResolution};

/// Most fields one submission may post.
pub const MAX_FIELDS: usize = 100;
/// Longest field name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a submission is refused. Each maps to one HTTP answer in `api/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("field `{0}` is required")]
    Missing(String),
    #[error("field `{field}`: `{value}` is not a valid email address")]
    InvalidEmail { field: String, value: String },
    #[error("field `{0}` must be a number")]
    InvalidNumber(String),
    #[error("field `{field}` is larger than {max} bytes")]
    TooLarge { field: String, max: usize },
    #[error("field name longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
}

impl SubmitError {
    /// True for size limits (HTTP 413), false for invalid content (400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            SubmitError::TooLarge { .. } | SubmitError::NameTooLong | SubmitError::TooManyFields
        )
    }
}

/// One kept field of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmittedField {
    pub name: String,
    pub label: String,
    pub value: String,
    pub hidden: bool,
}

/// A checked form submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Kept fields: declared ones in form order, else as posted.
    pub fields: Vec<SubmittedField>,
    /// The email field, normalised.
    pub email: String,
    pub name: Option<String>,
    pub subject: Option<String>,
    pub description: Option<String>,
}

/// What a form post turns out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Accepted(Submission),
    /// The honeypot field was filled: answer as a success, store nothing.
    Honeypot,
}

/// Check posted `(name, value)` pairs against `form`. Repeated names (a
/// multi-select) are joined with `", "`.
pub fn check_form(form: &FormConfig, pairs: Vec<(String, String)>) -> Result<Checked, SubmitError> {
    if pairs.len() > MAX_FIELDS {
        return Err(SubmitError::TooManyFields);
    }
    let mut posted: Vec<(String, String)> = Vec::new();
    for (name, value) in pairs {
        if name.len() > MAX_NAME_LEN {
            return Err(SubmitError::NameTooLong);
        }
        if value.len() > form.max_field_size {
            return Err(SubmitError::TooLarge {
                field: name,
                max: form.max_field_size,
            });
        }
        match posted.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) if !value.is_empty() => {
                if !v.is_empty() {
                    v.push_str(", ");
                }
                v.push_str(&value);
                if v.len() > form.max_field_size {
                    return Err(SubmitError::TooLarge {
                        field: name,
                        max: form.max_field_size,
                    });
                }
            }
            Some(_) => {}
            None => posted.push((name, value)),
        }
    }
    let get = |name: &str| {
        posted
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    if let Some(h) = &form.honeypot_field
        && get(h).is_some()
    {
        return Ok(Checked::Honeypot);
    }

    let fields: Vec<SubmittedField> = if form.fields.is_empty() {
        posted
            .iter()
            .filter(|(n, v)| Some(n) != form.honeypot_field.as_ref() && !v.trim().is_empty())
            .map(|(n, v)| SubmittedField {
                name: n.clone(),
                label: n.clone(),
                value: without_nul(v.trim().to_string()),
                hidden: false,
            })
            .collect()
    } else {
        let mut out = Vec::new();
        for f in &form.fields {
            let value = get(&f.name).unwrap_or("");
            if value.is_empty() {
                if f.required {
                    return Err(SubmitError::Missing(f.name.clone()));
                }
                continue;
            }
            match f.kind {
                FormFieldType::Email if !valid_email(value) => {
                    return Err(SubmitError::InvalidEmail {
                        field: f.name.clone(),
                        value: value.to_string(),
                    });
                }
                FormFieldType::Number if value.parse::<f64>().is_err() => {
                    return Err(SubmitError::InvalidNumber(f.name.clone()));
                }
                _ => {}
            }
            out.push(SubmittedField {
                name: f.name.clone(),
                label: f.label().to_string(),
                value: without_nul(value.to_string()),
                hidden: f.hidden,
            });
        }
        out
    };
    let value = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.clone())
    };
    let email =
        value(&form.email_field).ok_or_else(|| SubmitError::Missing(form.email_field.clone()))?;
    if !valid_email(&email) {
        return Err(SubmitError::InvalidEmail {
            field: form.email_field.clone(),
            value: email,
        });
    }
    Ok(Checked::Accepted(Submission {
        email: crate::mail::normalize_email(&email),
        name: value(&form.name_field).map(|n| one_line(&n)),
        subject: value(&form.subject_field).map(|s| one_line(&s)),
        description: value(&form.description_field),
        fields,
    }))
}

/// A plausible `local@domain.tld` address.
fn valid_email(s: &str) -> bool {
    let s = s.trim();
    crate::mail::is_valid_email(s) && s.rsplit_once('@').is_some_and(|(_, d)| d.contains('.'))
}

/// Control characters (line breaks included) become spaces: names and
/// subjects are one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

impl Submission {
    /// The ticket name: the subject field, else `"{label}: {name or email}"`.
    pub fn ticket_subject(&self, form: &FormConfig, channel: &ChannelConfig) -> String {
        match &self.subject {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!(
                "{}: {}",
                form.label.as_deref().unwrap_or(&channel.id),
                self.name.as_deref().unwrap_or(&self.email)
            ),
        }
    }

    /// The conversation text: the description, then `Label: value` for the
    /// other visible fields. Hidden fields are left out.
    pub fn conversation_text(&self, form: &FormConfig) -> String {
        let roles = [
            &form.email_field,
            &form.name_field,
            &form.subject_field,
            &form.description_field,
        ];
        let mut text = self.description.clone().unwrap_or_default();
        let extra: Vec<String> = self
            .fields
            .iter()
            .filter(|f| !f.hidden && !roles.contains(&&f.name))
            .map(|f| format!("{}: {}", f.label, f.value))
            .collect();
        if !extra.is_empty() {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&extra.join("\n"));
        }
        text
    }

    /// The whole submission as stored (the message's raw bytes): every kept
    /// field, visible ones under `fields`, hidden ones under `hidden`.
    pub fn to_json(&self, channel: &str) -> serde_json::Value {
        let pick = |hidden: bool| -> BTreeMap<&str, &str> {
            self.fields
                .iter()
                .filter(|f| f.hidden == hidden)
                .map(|f| (f.name.as_str(), f.value.as_str()))
                .collect()
        };
        serde_json::json!({
            "form": channel,
            "fields": pick(false),
            "hidden": pick(true),
        })
    }
}

/// Where a planned submission comes from, and its identity.
pub struct Origin<'a> {
    /// Unique id of this submission (its dedupe key's tail).
    pub id: &'a str,
    /// `form` or `api`: the sender resolution method shown on the message.
    pub method: &'static str,
    /// RFC 2822 date of receipt.
    pub date: String,
}

/// A ticket's first message from a submission (form or API), for the store's
/// inbound path. Always opens a new ticket: no thread ids.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    config: &Config,
    channel: &ChannelConfig,
    origin: Origin<'_>,
    contact: ContactRef,
    subject: String,
    text: String,
    fields: &BTreeMap<String, String>,
    available: &dyn Fn(&UserConfig) -> bool,
) -> InboundMessage {
    let facts = super::rules::Facts::new(&subject, &text, &contact.email, fields);
    let new_ticket = route::new_ticket(config, channel, subject.clone(), available, &facts);
    let who = Address {
        email: contact.email.clone(),
        name: contact.name.clone(),
    };
    let resolution = Resolution::only(who, origin.method, 1.0);
    InboundMessage {
        channel: channel.id.clone(),
        dedupe_key: format!("{}:{}", origin.method, origin.id),
        message_id: None,
        in_reply_to: None,
        references: Vec::new(),
        thread_token: None,
        plus_token: None,
        trusted_sender: false,
        thread_identity: None,
        name_verified: false,
        from: contact.clone(),
        contact,
        to: channel.address.iter().cloned().collect(),
        cc: Vec::new(),
        subject: subject.clone(),
        date: Some(origin.date),
        text: crate::store::BodyText::Inline(text),
        html: None,
        classification: Classification::Normal,
        sender_resolution: SenderResolution {
            resolution,
            authentication: None,
        },
        note: None,
        new_ticket,
        bounce: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FormField;

    fn form() -> FormConfig {
        let field = |name: &str, kind, required, hidden| FormField {
            name: name.into(),
            label: Some(name.to_uppercase()),
            kind,
            required,
            hidden,
        };
        FormConfig {
            fields: vec![
                field("email", FormFieldType::Email, true, false),
                field("name", FormFieldType::Text, false, false),
                field("message", FormFieldType::Textarea, true, false),
                field("plan", FormFieldType::Select, false, false),
                field("qty", FormFieldType::Number, false, false),
                field("utm", FormFieldType::Text, false, true),
            ],
            honeypot_field: Some("website".into()),
            max_field_size: 20,
            ..FormConfig::default()
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// (posted pairs, expected outcome) — `Ok(None)` = honeypot.
    #[allow(clippy::type_complexity)]
    const CASES: &[(&[(&str, &str)], Result<Option<&str>, &str>)] = &[
        (
            &[("email", " A@X.example "), ("message", "hi")],
            Ok(Some("a@x.example")),
        ),
        (&[("message", "hi")], Err("field `email` is required")),
        (
            &[("email", "x"), ("message", "hi")],
            Err("not a valid email"),
        ),
        (
            &[("email", "a@localhost"), ("message", "hi")],
            Err("not a valid email"),
        ),
        (
            &[("email", "a@x.example")],
            Err("field `message` is required"),
        ),
        (
            &[("email", "a@x.example"), ("message", "  ")],
            Err("field `message` is required"),
        ),
        (
            &[
                ("email", "a@x.example"),
                ("message", "123456789012345678901"),
            ],
            Err("larger than 20 bytes"),
        ),
        (
            &[("email", "a@x.example"), ("message", "hi"), ("qty", "two")],
            Err("`qty` must be a number"),
        ),
        (&[("email", "x"), ("website", "http://spam")], Ok(None)),
        (
            &[("email", "a@x.example"), ("message", "hi"), ("website", "")],
            Ok(Some("a@x.example")),
        ),
    ];

    #[test]
    fn form_checks() {
        for (input, expected) in CASES {
            let got = check_form(&form(), pairs(input));
            match (expected, got) {
                (Ok(Some(email)), Ok(Checked::Accepted(s))) => assert_eq!(&s.email, email),
                (Ok(None), Ok(Checked::Honeypot)) => {}
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{input:?}: {e}"),
                (exp, got) => panic!("{input:?}: expected {exp:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn hidden_fields_are_stored_but_not_in_the_text() {
        let f = form();
        let Ok(Checked::Accepted(s)) = check_form(
            &f,
            pairs(&[
                ("email", "a@x.example"),
                ("message", "Hello"),
                ("plan", "pro"),
                ("plan", "team"),
                ("utm", "ad-42"),
                ("junk", "dropped"),
            ]),
        ) else {
            panic!("not accepted");
        };
        let text = s.conversation_text(&f);
        assert_eq!(text, "Hello\n\nPLAN: pro, team");
        let json = s.to_json("web");
        assert_eq!(json["hidden"]["utm"], "ad-42");
        assert_eq!(json["fields"]["plan"], "pro, team");
        assert!(json["fields"].get("junk").is_none() && json["fields"].get("utm").is_none());
    }

    #[test]
    fn undeclared_form_keeps_every_field_visible() {
        let f = FormConfig::default();
        let Ok(Checked::Accepted(s)) = check_form(
            &f,
            pairs(&[
                ("email", "a@x.example"),
                ("subject", "Hi\r\nthere"),
                ("x", "1"),
            ]),
        ) else {
            panic!("not accepted");
        };
        assert_eq!(s.subject.as_deref(), Some("Hi  there"));
        assert_eq!(s.conversation_text(&f), "x: 1");
    }
}
