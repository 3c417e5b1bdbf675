//! Signed tags: how postdesk recognises its own mail when it comes back.
//!
//! Two kinds, each `<prefix><random hex>.<mac hex>` where the MAC is an
//! HMAC-SHA256 (truncated to 128 bits) under the install's own random key
//! (made once with the store, never configured or shown), with a label per
//! kind so one kind's tag never verifies as the other's:
//!
//! - **notice tags** `pdn.<random>.<mac>`: in a notice's Message-ID and its
//!   `X-Postdesk-Notice` header. A notice that comes back in any form — an
//!   agent's redirect, a vacation reply naming it in In-Reply-To, a bounce
//!   quoting its headers — holds one somewhere: [`returned_notice`] looks
//!   through the whole message.
//! - **reply ids** `pd.<ticket>.<random>.<mac>`: the local part of every
//!   reply's Message-ID, repeated in its `X-Postdesk-Loop` header. Only the
//!   message's *own* Message-ID and loop headers are checked
//!   ([`is_own_reply_id`]): a customer's answer names our reply in
//!   In-Reply-To and quotes it, and is of course not a loop.
//!
//! A stranger cannot make their mail look like ours: a made-up tag, a tag
//! copied with one digit changed, or another postdesk install's (another
//! key) does not verify, and the mail is judged like any other.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::random_bytes;

/// What every notice tag starts with.
const NOTICE_PREFIX: &[u8] = b"pdn.";
/// What every reply id starts with.
const REPLY_PREFIX: &str = "pd.";
/// Random bytes in a tag (hex: twice as many characters).
const RANDOM_LEN: usize = 12;
/// MAC bytes kept in a tag (128 bits).
const MAC_LEN: usize = 16;

fn mac(key: &[u8], label: &[u8], signed: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut out = [0u8; MAC_LEN];
    if let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) {
        m.update(label);
        m.update(signed);
        out.copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
    }
    out
}

fn notice_mac(key: &[u8], random_hex: &[u8]) -> [u8; MAC_LEN] {
    mac(key, b"postdesk notice tag\0", random_hex)
}

fn reply_mac(key: &[u8], unsigned: &[u8]) -> [u8; MAC_LEN] {
    mac(key, b"postdesk reply id\0", unsigned)
}

/// Whether `given` (hex) is the MAC `expected`, in constant time.
fn mac_matches(given: &[u8], expected: &[u8; MAC_LEN]) -> bool {
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    given.len() == MAC_LEN
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh notice tag `pdn.<random hex>.<mac hex>` under `key`.
pub fn new_notice_tag(key: &[u8]) -> String {
    let random = hex::encode(random_bytes::<RANDOM_LEN>());
    let m = hex::encode(notice_mac(key, random.as_bytes()));
    format!("pdn.{random}.{m}")
}

/// Whether `raw` (a whole message, headers and body, parts included) holds a
/// notice tag that verifies under `key`: then it is one of our notices come
/// back, and the tag (`pdn.<random>`) is returned. Tags that do not verify
/// are a stranger's: ignored.
pub fn returned_notice(raw: &[u8], key: &[u8]) -> Option<String> {
    let hex_len = 2 * RANDOM_LEN;
    let mac_len = 2 * MAC_LEN;
    for at in memchr::memmem::find_iter(raw, NOTICE_PREFIX) {
        let rest = &raw[at + NOTICE_PREFIX.len()..];
        let (Some(random), Some(given)) = (
            rest.get(..hex_len),
            rest.get(hex_len + 1..hex_len + 1 + mac_len),
        ) else {
            continue;
        };
        if rest[hex_len] != b'.' || !random.iter().all(u8::is_ascii_hexdigit) {
            continue;
        }
        let random = random.to_ascii_lowercase();
        if mac_matches(given, &notice_mac(key, &random)) {
            return Some(format!("pdn.{}", String::from_utf8_lossy(&random)));
        }
    }
    None
}

/// A fresh reply id `pd.<ticket>.<random hex>.<mac hex>` under `key`: the
/// local part of a reply's Message-ID.
pub fn new_reply_id(ticket: i64, key: &[u8]) -> String {
    let unsigned = format!(
        "{REPLY_PREFIX}{ticket}.{}",
        hex::encode(random_bytes::<RANDOM_LEN>())
    );
    let m = hex::encode(reply_mac(key, unsigned.as_bytes()));
    format!("{unsigned}.{m}")
}

/// Whether `id` — a Message-ID (with or without `<>` and domain) or a token
/// of an `X-Postdesk-Loop` header — is a reply id made under `key`.
pub fn is_own_reply_id(id: &str, key: &[u8]) -> bool {
    let id = id.trim().trim_start_matches('<');
    let local = id.split(['@', '>', ' ', ';']).next().unwrap_or_default();
    let Some((unsigned, given)) = local.rsplit_once('.') else {
        return false;
    };
    let Some(rest) = unsigned.strip_prefix(REPLY_PREFIX) else {
        return false;
    };
    let Some((ticket, random)) = rest.split_once('.') else {
        return false;
    };
    !ticket.is_empty()
        && ticket.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 2 * RANDOM_LEN
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && mac_matches(
            given.as_bytes(),
            &reply_mac(key, unsigned.to_ascii_lowercase().as_bytes()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// Flip the last character of a tag (a hex digit).
    fn altered(tag: &str) -> String {
        let mut b = tag.as_bytes().to_vec();
        let last = b.len() - 1;
        b[last] = if b[last] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).expect("ascii")
    }

    /// A reply id verifies as a Message-ID (bracketed, with its domain) and
    /// as a header token; with another key, one digit changed, a made-up
    /// MAC, another ticket number or a notice's label, it does not.
    #[test]
    fn only_reply_ids_made_with_the_key_verify() {
        let id = new_reply_id(7, KEY);
        assert!(id.starts_with("pd.7."), "{id}");
        assert!(is_own_reply_id(&id, KEY));
        assert!(is_own_reply_id(&format!("<{id}@desk.acme.example>"), KEY));
        assert!(is_own_reply_id(&format!("{id}; host=desk"), KEY));
        assert!(!is_own_reply_id(&id, b"another install's key"));
        assert!(!is_own_reply_id(&altered(&id), KEY));
        let (unsigned, _) = id.rsplit_once('.').expect("dot");
        assert!(!is_own_reply_id(
            &format!("{unsigned}.{}", "b".repeat(32)),
            KEY
        ));
        let other_ticket = id.replacen("pd.7.", "pd.8.", 1);
        assert!(!is_own_reply_id(&other_ticket, KEY));
        for junk in [
            "",
            "pd.",
            "pd.7",
            "pd.7.x.y",
            "pd..aa.bb",
            "desk.acme.example",
        ] {
            assert!(!is_own_reply_id(junk, KEY), "{junk:?}");
        }
        // A notice tag is not a reply id, nor the other way round.
        let notice = new_notice_tag(KEY);
        assert!(!is_own_reply_id(&notice, KEY));
        assert_eq!(returned_notice(id.as_bytes(), KEY), None);
    }

    /// A notice tag verifies wherever it sits in a message; a forged one
    /// does not.
    #[test]
    fn only_notice_tags_made_with_the_key_verify() {
        let tag = new_notice_tag(KEY);
        let raw = format!("Subject: x\r\nIn-Reply-To: <{tag}@desk>\r\n\r\nhi\r\n");
        assert!(returned_notice(raw.as_bytes(), KEY).is_some());
        assert_eq!(returned_notice(raw.as_bytes(), b"other"), None);
        assert_eq!(returned_notice(altered(&tag).as_bytes(), KEY), None);
        let made_up = format!("pdn.{}.{}", "a".repeat(24), "b".repeat(32));
        assert_eq!(returned_notice(made_up.as_bytes(), KEY), None);
        assert_eq!(returned_notice(b"pdn.", KEY), None);
        assert_eq!(returned_notice(b"pdn.zz", KEY), None);
    }
}
