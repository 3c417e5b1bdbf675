//! Attachments on the ticket page: each message's attachments (name, size,
//! media type), found in the raw mail it came in or went out with
//! ([`crate::store::WebStore::message_raw`]), and their download.
//!
//! A download is served `Content-Disposition: attachment` with `nosniff`
//! and a `sandbox` policy: whatever a customer attached (HTML, SVG, a
//! script) is saved, never rendered in our origin. Signed-in agents only.
//!
//! Untrusted input: the path, and all of the mail — part names and media
//! types are a stranger's ([`disposition`] makes a header of any name).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use mail_parser::{MessageParser, MimeHeaders};

use super::session::Agent;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::store::TicketId;

/// One attachment of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Its place among the message's attachments (the download URL's).
    pub index: usize,
    /// The name it was sent with (`attachment-N` when it has none).
    pub name: String,
    /// Decoded bytes.
    pub size: usize,
    /// `type/subtype`, or `application/octet-stream` when the mail's is unusable.
    pub content_type: String,
}

/// Longest name kept (characters).
const MAX_NAME: usize = 200;

fn info(index: usize, part: &mail_parser::MessagePart<'_>) -> AttachmentInfo {
    let name: String = part
        .attachment_name()
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .map(|c| if matches!(c, '/' | '\\') { '_' } else { c })
                .take(MAX_NAME)
                .collect::<String>()
        })
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("attachment-{}", index + 1));
    let content_type = part
        .content_type()
        .and_then(|ct| Some(format!("{}/{}", ct.ctype(), ct.subtype()?).to_ascii_lowercase()))
        .filter(|t| crate::outbound::quote::valid_media_type(t))
        .unwrap_or_else(|| "application/octet-stream".into());
    AttachmentInfo {
        index,
        name,
        size: part.len(),
        content_type,
    }
}

/// The attachments of raw mail `raw`, in order.
pub fn list(raw: &[u8]) -> Vec<AttachmentInfo> {
    MessageParser::default()
        .parse(raw)
        .map(|m| {
            m.attachments()
                .enumerate()
                .map(|(i, p)| info(i, p))
                .collect()
        })
        .unwrap_or_default()
}

/// Attachment `index` of raw mail `raw`, with its bytes.
pub fn get(raw: &[u8], index: usize) -> Option<(AttachmentInfo, Vec<u8>)> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.attachment(u32::try_from(index).ok()?)?;
    Some((info(index, part), part.contents().to_vec()))
}

/// A `Content-Disposition: attachment` value for any name: an ASCII
/// fallback (`filename="…"`, nothing but safe characters) and the name
/// itself percent-encoded (`filename*=UTF-8''…`, RFC 6266).
pub fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A byte count as agents read it (`512 B`, `3.4 KB`, `1.2 MB`).
pub fn human_size(n: usize) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KB", n as f64 / 1024.0),
        n => format!("{:.1} MB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// The attachments of each message of a ticket, by position (empty for a
/// note, a form message, or a message without any).
pub async fn of_ticket(
    s: &AppState,
    n: TicketId,
    messages: usize,
) -> Result<Vec<Vec<AttachmentInfo>>, ApiError> {
    let mut out = Vec::with_capacity(messages);
    for i in 0..messages {
        let found = match s.store.message_raw(n, i).await? {
            Some(raw) => tokio::task::spawn_blocking(move || list(&raw))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?,
            None => Vec::new(),
        };
        out.push(found);
    }
    Ok(out)
}

/// `GET /tickets/{n}/messages/{i}/attachments/{j}`: the download.
pub async fn download(
    State(s): State<AppState>,
    _agent: Agent,
    Path((n, i, j)): Path<(String, usize, usize)>,
) -> Response {
    let found = async {
        let n = crate::api::tickets::ticket_number(&n)?;
        let not_found = || ApiError::not_found(format!("no attachment {j} on message {i}"));
        let raw = s.store.message_raw(n, i).await?.ok_or_else(not_found)?;
        tokio::task::spawn_blocking(move || get(&raw, j))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(not_found)
    }
    .await;
    match found {
        Ok((a, data)) => {
            let mut resp = data.into_response();
            let h = resp.headers_mut();
            let set = |h: &mut axum::http::HeaderMap, k, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(k, v);
                }
            };
            set(h, header::CONTENT_TYPE, &a.content_type);
            set(h, header::CONTENT_DISPOSITION, &disposition(&a.name));
            // `nosniff` comes with every web response (`security_headers`),
            // which keeps this policy instead of the pages' own.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox; default-src 'none'"),
            );
            resp
        }
        Err(e) => (e.status, format!("{}\n", e.message)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: a@customer.example\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b\r\nContent-Type: text/html; name=\"../evil.html\"\r\nContent-Disposition: attachment; filename=\"../evil.html\"\r\n\r\n\
<script>alert(1)</script>\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"=?utf-8?q?Rechnung_M=C3=A4rz.pdf?=\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";

    #[test]
    fn attachments_are_listed_with_safe_names_and_their_bytes() {
        let l = list(RAW);
        let names: Vec<_> = l.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, [".._evil.html", "Rechnung März.pdf"]);
        assert_eq!(l[1].content_type, "application/pdf");
        assert_eq!(l[1].size, 9);
        let (a, data) = get(RAW, 1).expect("pdf");
        assert_eq!((a.index, data.as_slice()), (1, b"%PDF-1.4\n".as_slice()));
        assert_eq!(get(RAW, 2), None);
        assert_eq!(list(b"not mail at all"), Vec::new());
    }

    #[test]
    fn any_name_makes_a_safe_header() {
        assert_eq!(
            disposition("Rechnung März \"x\".pdf\r\nSet-Cookie: a=b"),
            "attachment; filename=\"Rechnung M_rz _x_.pdf__Set-Cookie_ a_b\"; \
             filename*=UTF-8''Rechnung%20M%C3%A4rz%20%22x%22.pdf%0D%0ASet-Cookie%3A%20a%3Db"
        );
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KB");
    }
}
