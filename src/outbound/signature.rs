//! The channel's HTML signature, personalised for the replying agent.
//!
//! Tokens `{{ sender.full_name }}`, `{{ sender.first_name }}` and
//! `{{ sender.last_name }}` (spaces inside the braces optional) are replaced
//! by the agent's values, HTML-escaped. Unknown tokens are left as written.
//! The text rendering for the `text/plain` part uses the same HTML-to-text
//! converter as ingest.
//!
//! Untrusted input: the agent's names come from the config; they are escaped
//! so a name like `<b>O'Brien & Co</b>` shows as written and cannot add markup.
//! The signature template itself is operator-written HTML and used as is.

use crate::config::UserConfig;

/// A rendered signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    pub html: String,
    pub text: String,
}

/// Escape `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replace the sender tokens in `template` with `agent`'s escaped values.
pub fn render_html(template: &str, agent: &UserConfig) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = match after[..end].trim() {
            "sender.full_name" => Some(agent.full_name()),
            "sender.first_name" => Some(agent.first_name.trim().to_string()),
            "sender.last_name" => Some(agent.last_name.trim().to_string()),
            _ => None,
        };
        match value {
            Some(v) => out.push_str(&escape_html(&v)),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Render the channel signature for `agent`: HTML and its text rendering.
pub fn render(template: &str, agent: &UserConfig) -> Signature {
    if template.trim().is_empty() {
        return Signature::default();
    }
    let html = render_html(template, agent);
    let text = crate::mail::html::html_to_text(&html)
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    Signature { html, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(first: &str, last: &str) -> UserConfig {
        UserConfig {
            id: "ann".into(),
            email: "ann@acme.example".into(),
            first_name: first.into(),
            last_name: last.into(),
            licensed: true,
            available: true,
            teams: vec![],
            skills: vec![],
            notify: vec![],
            working_hours: None,
        }
    }

    #[test]
    fn tokens_table() {
        let a = agent("Ann", "Agent");
        let cases = [
            ("<p>{{ sender.full_name }}</p>", "<p>Ann Agent</p>"),
            ("{{sender.first_name}}/{{  sender.last_name }}", "Ann/Agent"),
            ("{{ sender.unknown }} x", "{{ sender.unknown }} x"),
            ("open {{ never closed", "open {{ never closed"),
            ("", ""),
        ];
        for (tpl, want) in cases {
            assert_eq!(render_html(tpl, &a), want, "{tpl}");
        }
    }

    #[test]
    fn names_are_escaped() {
        let a = agent("<b>O'Brien", "& Co</b>");
        let s = render("<p>{{ sender.full_name }}<br>Acme Support</p>", &a);
        assert_eq!(
            s.html,
            "<p>&lt;b&gt;O&#39;Brien &amp; Co&lt;/b&gt;<br>Acme Support</p>"
        );
        assert_eq!(s.text, "<b>O'Brien & Co</b>\nAcme Support");
    }
}
