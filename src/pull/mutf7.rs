//! Mailbox names on the wire: IMAP's modified UTF-7 (RFC 3501 §5.1.3).
//!
//! Owns: turning a folder name from the config (`folder`, `move_to`) into the
//! form IMAP commands carry. A name with non-ASCII characters is encoded
//! (`Geprüft` → `Gepr&APw-ft`, `&` → `&-`); an all-ASCII name is sent as
//! written, so a name an administrator already wrote in modified UTF-7 keeps
//! working. Nothing here decodes: postdesk never lists mailboxes.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// `name` as IMAP commands carry it.
pub fn encode(name: &str) -> Cow<'_, str> {
    if name.is_ascii() {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() * 2);
    let mut run: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut run, &mut out);
    Cow::Owned(out)
}

/// A run of other characters: UTF-16BE in base64 with `,` for `/`, no
/// padding, between `&` and `-`.
fn flush(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    out.push_str(&STANDARD_NO_PAD.encode(bytes).replace('/', ","));
    out.push('-');
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn names_on_the_wire() {
        for (name, wire) in [
            // RFC 3501 §5.1.3's example.
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Geprüft", "Gepr&APw-ft"),
            ("Soporte/Técnico", "Soporte/T&AOk-cnico"),
            ("R&D Prüfung", "R&-D Pr&APw-fung"),
            ("Erledigt 😀", "Erledigt &2D3eAA-"),
            // All ASCII: as written (possibly already modified UTF-7).
            ("Processed", "Processed"),
            ("T&AOk-cnico", "T&AOk-cnico"),
        ] {
            assert_eq!(encode(name), wire, "{name}");
        }
    }
}
