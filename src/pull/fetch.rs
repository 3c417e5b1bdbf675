//! `UID FETCH` read response by response, with its tagged answer: the
//! items pulling uses (UID, RFC822.SIZE, Gmail's X-GM-MSGID, the body or
//! the header) reduced as each response arrives, announcements of new mail
//! (`* N EXISTS`) noted, and the command's NO or BAD kept — async-imap's
//! own fetch stream ends at the tagged answer without saying which it was,
//! and a NO is how Gmail says its daily download cap is reached
//! (`NO [OVERQUOTA] Account exceeded command or bandwidth limits`).
//!
//! Must not: interpret what the items mean (the callers check every UID
//! asked came back), or keep more than one server response at a time.
//! Untrusted input: every response; async-imap's parser reads them.

use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, MessageSection, Response, SectionPath, Status,
};

use super::PullError;
use super::connect::ImapSession;
use crate::mail::short;

/// What one `* N FETCH` response carried.
#[derive(Debug, Default)]
pub(super) struct Item {
    pub(super) uid: Option<u32>,
    pub(super) size: Option<u32>,
    pub(super) gm_msgid: Option<u64>,
    /// `BODY[]`.
    pub(super) body: Option<Vec<u8>>,
    /// `BODY[HEADER]`.
    pub(super) header: Option<Vec<u8>>,
}

/// A whole `UID FETCH`: its items, whether new mail was announced meanwhile,
/// and the server's text when it ended with NO or BAD (what came before is
/// still returned).
#[derive(Debug, Default)]
pub(super) struct Fetched {
    pub(super) items: Vec<Item>,
    pub(super) announced: bool,
    pub(super) refused: Option<String>,
}

/// Whether a server's text says the account's download (or command) cap
/// is reached: Gmail's `[OVERQUOTA]` answer to a fetch or its "Account
/// exceeded command or bandwidth limits" (at login too). Not asked of
/// moves, where `[OVERQUOTA]` means the target folder is full.
pub fn is_download_cap(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("[overquota]") || t.contains("exceeded command or bandwidth limits")
}

/// Run `UID FETCH {set} {items}` and read its answer. A tagged NO that
/// [`is_download_cap`] is [`PullError::DownloadCap`]; another NO or BAD is
/// in [`Fetched::refused`].
pub(super) async fn uid_fetch(
    s: &mut ImapSession,
    set: &str,
    items: &str,
) -> Result<Fetched, PullError> {
    let tag = s.run_command(format!("UID FETCH {set} {items}")).await?;
    let mut out = Fetched::default();
    loop {
        let resp = s
            .read_response()
            .await
            .map_err(PullError::Io)?
            .ok_or_else(|| PullError::Protocol("connection closed during FETCH".into()))?;
        match resp.parsed() {
            Response::Fetch(_, attrs) => out.items.push(item(attrs)),
            Response::MailboxData(MailboxDatum::Exists(_)) => out.announced = true,
            Response::Done {
                tag: done,
                status,
                outcome,
                ..
            } if *done == tag => {
                if matches!(status, Status::No | Status::Bad) {
                    let text = short(outcome.information.as_deref().unwrap_or("(no text)"));
                    if is_download_cap(&text) {
                        return Err(PullError::DownloadCap(text));
                    }
                    out.refused = Some(text);
                }
                return Ok(out);
            }
            _ => {}
        }
    }
}

fn item(attrs: &[AttributeValue<'_>]) -> Item {
    let mut it = Item::default();
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => it.uid = Some(*u),
            AttributeValue::Rfc822Size(n) => it.size = Some(*n),
            AttributeValue::GmailMsgId(id) => it.gm_msgid = Some(*id),
            AttributeValue::BodySection {
                section: None,
                data: Some(body),
                ..
            }
            | AttributeValue::Rfc822(Some(body)) => it.body = Some(body.to_vec()),
            AttributeValue::BodySection {
                section: Some(SectionPath::Full(MessageSection::Header)),
                data: Some(header),
                ..
            }
            | AttributeValue::Rfc822Header(Some(header)) => it.header = Some(header.to_vec()),
            _ => {}
        }
    }
    it
}

#[cfg(test)]
mod tests {
    use super::is_download_cap;

    #[test]
    fn download_cap_texts() {
        assert!(is_download_cap(
            "[OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)"
        ));
        assert!(is_download_cap(
            "[ALERT] Account exceeded command or bandwidth limits. (Failure)"
        ));
        assert!(!is_download_cap(
            "Some messages could not be FETCHed (Failure)"
        ));
        assert!(!is_download_cap("[UNAVAILABLE] Temporary failure"));
    }
}
