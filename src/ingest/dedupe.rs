//! Dedupe: whether an inbound message is a copy of one the channel already
//! stores, or under which key it is stored when it is not.
//!
//! Pure. A message's dedupe key is `mid:<Message-ID>` (or `sha256:<hash>`
//! of its bytes, a submission's `<method>:<id>`). The store looks the keys
//! up on the message's channel inside the ingest transaction, when
//! [`check`] asks for them ([`crate::store::InboundFacts::keyed`], from
//! [`super::decide`]), and writes what it answers.
//!
//! The rule: the same key from the same sender (the same From, or the same
//! resolved contact) is a copy, stored once. A Message-ID reused by another
//! sender is no copy: that message is stored under a key of its own
//! (`mid:<id>#from:<address>`), so that a stranger who sends first cannot
//! suppress the real message. Keys that are not Message-IDs (a hash of the
//! bytes, a submission's id) are copies whoever sends them.

use crate::store::TicketId;

/// The message ingest is about to store.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Its dedupe key, as planned.
    pub key: &'a str,
    /// Its From address.
    pub from: &'a str,
    /// The email of the contact it was resolved to.
    pub contact: &'a str,
}

/// A message the channel already stores under a key the store was asked
/// about (its ticket, its From, its ticket's contact).
pub use crate::store::KeyedMessage as Stored;

/// What [`check`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A copy of a message already stored in this ticket: nothing is written.
    Copy(TicketId),
    /// A new message: stored under its planned key (`None`) or, when another
    /// sender already used its Message-ID, under this key of its own.
    New(Option<String>),
}

/// Whether `m` is a copy of a message the channel stores. `stored(key)`
/// answers the message the channel stores under `key`, if any (the store's
/// read, inside the transaction); it is asked about the planned key first
/// and, when another sender used that Message-ID, about `m`'s own key
/// (`<key>#from:<from>`). When both are taken by other senders, `m` is kept
/// apart under `<key>#from:<from>#<now_ms>`.
pub fn check<E>(
    m: Incoming<'_>,
    now_ms: i64,
    mut stored: impl FnMut(&str) -> Result<Option<Stored>, E>,
) -> Result<Verdict, E> {
    let mut key = m.key.to_string();
    for _ in 0..2 {
        let Some(row) = stored(&key)? else {
            return Ok(Verdict::New((key != m.key).then_some(key)));
        };
        let same = row.from.as_deref() == Some(m.from) || row.contact == m.contact;
        if same || !key.starts_with("mid:") {
            return Ok(Verdict::Copy(row.ticket));
        }
        if key != m.key {
            break;
        }
        key = format!("{}#from:{}", m.key, m.from);
    }
    // Two others already used this Message-ID: keep this one apart as well.
    Ok(Verdict::New(Some(format!(
        "{}#from:{}#{}",
        m.key, m.from, now_ms
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stored(ticket: i64, from: Option<&str>, contact: &str) -> Stored {
        Stored {
            ticket: TicketId(ticket),
            from: from.map(str::to_string),
            contact: contact.into(),
        }
    }

    /// Runs [`check`] against `rows` (key → stored message); answers the
    /// verdict and the keys asked about, in order.
    fn run(m: Incoming<'_>, rows: &[(&str, Stored)]) -> (Verdict, Vec<String>) {
        let rows: HashMap<&str, &Stored> = rows.iter().map(|(k, s)| (*k, s)).collect();
        let mut asked = Vec::new();
        let v = check::<()>(m, 42, |k| {
            asked.push(k.to_string());
            Ok(rows.get(k).map(|s| (*s).clone()))
        })
        .expect("no read error");
        (v, asked)
    }

    const ANN: Incoming<'static> = Incoming {
        key: "mid:<a@x>",
        from: "ann@x.example",
        contact: "ann@x.example",
    };

    /// (what, message, stored rows, verdict, keys read)
    type Case<'a> = (
        &'a str,
        Incoming<'a>,
        Vec<(&'a str, Stored)>,
        Verdict,
        Vec<&'a str>,
    );

    /// The same key from the same sender is a copy; a reused Message-ID gets
    /// a key of its own; the keys read are the planned one, then the own one.
    #[test]
    fn copies_are_the_same_key_from_the_same_sender() {
        let own = "mid:<a@x>#from:ann@x.example";
        let cases: Vec<Case<'_>> = vec![
            (
                "unseen key: new under its own key",
                ANN,
                vec![],
                Verdict::New(None),
                vec!["mid:<a@x>"],
            ),
            (
                "same key, same From: a copy",
                ANN,
                vec![(
                    "mid:<a@x>",
                    stored(7, Some("ann@x.example"), "bob@y.example"),
                )],
                Verdict::Copy(TicketId(7)),
                vec!["mid:<a@x>"],
            ),
            (
                "same key, same resolved contact (another From): a copy",
                Incoming {
                    from: "fwd@acme.example",
                    ..ANN
                },
                vec![(
                    "mid:<a@x>",
                    stored(7, Some("other@z.example"), "ann@x.example"),
                )],
                Verdict::Copy(TicketId(7)),
                vec!["mid:<a@x>"],
            ),
            (
                "a stored message without From matches by contact only",
                ANN,
                vec![("mid:<a@x>", stored(7, None, "eve@evil.example"))],
                Verdict::New(Some(own.into())),
                vec!["mid:<a@x>", own],
            ),
            (
                "Message-ID reused by another sender: stored under a key of its own",
                ANN,
                vec![(
                    "mid:<a@x>",
                    stored(7, Some("eve@evil.example"), "eve@evil.example"),
                )],
                Verdict::New(Some(own.into())),
                vec!["mid:<a@x>", own],
            ),
            (
                "own key already stored (the real sender's copy): a copy",
                ANN,
                vec![
                    (
                        "mid:<a@x>",
                        stored(7, Some("eve@evil.example"), "eve@evil.example"),
                    ),
                    (own, stored(8, Some("ann@x.example"), "ann@x.example")),
                ],
                Verdict::Copy(TicketId(8)),
                vec!["mid:<a@x>", own],
            ),
            (
                "own key taken by yet another contact: kept apart with the time",
                ANN,
                vec![
                    (
                        "mid:<a@x>",
                        stored(7, Some("eve@evil.example"), "eve@evil.example"),
                    ),
                    (own, stored(8, Some("mal@evil.example"), "mal@evil.example")),
                ],
                Verdict::New(Some(format!("{own}#42"))),
                vec!["mid:<a@x>", own],
            ),
            (
                "a hash key is a copy whoever sent it",
                Incoming {
                    key: "sha256:ab",
                    ..ANN
                },
                vec![(
                    "sha256:ab",
                    stored(9, Some("eve@evil.example"), "eve@evil.example"),
                )],
                Verdict::Copy(TicketId(9)),
                vec!["sha256:ab"],
            ),
            (
                "a submission's key is a copy whoever sent it",
                Incoming {
                    key: "form:17",
                    ..ANN
                },
                vec![("form:17", stored(3, None, "eve@evil.example"))],
                Verdict::Copy(TicketId(3)),
                vec!["form:17"],
            ),
        ];
        for (what, m, rows, verdict, asked) in cases {
            let (v, a) = run(m, &rows);
            assert_eq!(v, verdict, "{what}");
            assert_eq!(a, asked, "{what}: keys read");
        }
    }

    /// A read error stops the check and is the caller's.
    #[test]
    fn a_read_error_is_returned() {
        let r = check(ANN, 0, |_| Err::<Option<Stored>, _>("disk"));
        assert_eq!(r, Err("disk"));
    }
}
