//! Thread stage: which ticket a message continues, and who may continue one.
//!
//! Pure functions. [`find`] gathers the candidates (tickets named by
//! In-Reply-To/References, a `[#N]` or `[#N-secret]` subject tag, a
//! plus-address) through the store's [`InboundFacts`], inside the ingest
//! transaction, and asks [`may_join`] about each; the first one allowed is
//! continued.
//!
//! The rule: a message continues a ticket found by one of *our* Message-IDs
//! (random, seen only by the thread's recipients) or by a tag carrying the
//! ticket's secret. Found by a guessable handle — a bare `[#N]`, a
//! plus-address, a customer's Message-ID — it continues the ticket only when
//! its sender is the ticket's contact, a participant, or an authenticated
//! team member or forwarder; anyone else opens a ticket of their own, which
//! notes the refusal ("mentions #N").

use crate::mail::random_bytes;
pub use crate::store::ThreadToken;
use crate::store::{InboundFacts, InboundMessage, StoreError, TicketId};

/// Characters of a ticket secret: lower-case letters and digits without the
/// look-alikes (0/o, 1/l/i).
const SECRET_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Length of a new ticket secret: 31^8 ≈ 8.5e11 guesses.
const SECRET_LEN: usize = 8;

/// A fresh per-ticket secret for outgoing subjects (`[#7-k3f9q2ab]`).
///
/// Each character is drawn uniformly: random bytes at or above the largest
/// multiple of the alphabet's length (248 = 8 × 31) are thrown away, so no
/// letter is likelier than another.
pub fn new_secret() -> String {
    let n = SECRET_ALPHABET.len();
    let unbiased = 256 - 256 % n;
    let mut out = String::with_capacity(SECRET_LEN);
    while out.len() < SECRET_LEN {
        for b in random_bytes::<32>() {
            if usize::from(b) < unbiased && out.len() < SECRET_LEN {
                out.push(SECRET_ALPHABET[usize::from(b) % n] as char);
            }
        }
    }
    out
}

/// The `[#N]` or `[#N-secret]` tag of a subject (the last one wins, as
/// replies may quote older tags first), as a thread token.
pub fn subject_token(subject: &str) -> Option<ThreadToken> {
    crate::mail::subject::last_ticket_tag(subject).map(|t| ThreadToken {
        ticket: TicketId(t.ticket),
        secret: t.secret,
    })
}

/// How a candidate ticket was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// In-Reply-To/References naming one of our replies.
    OurMessageId,
    /// In-Reply-To/References naming an inbound message (guessable, and
    /// known to everyone who received it).
    TheirMessageId,
    /// A subject tag; `true` when it carried the ticket's secret.
    Tag { secret_matches: bool },
    /// A plus-address (`support+7@…`).
    PlusAddress,
}

/// What the store knows about a candidate ticket.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub ticket: i64,
    pub found: Found,
    /// The ticket's contact, normalised.
    pub contact: String,
    /// Its participants' addresses, normalised.
    pub participants: Vec<String>,
}

/// The message asking to continue a ticket.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// Who the message is (after sender resolution), normalised; `None`:
    /// nobody a ticket could name (one of our own addresses, unproven).
    pub contact: Option<&'a str>,
    /// An authenticated team member or configured forwarder sent it.
    pub trusted: bool,
}

/// Whether `asker` may continue `c`; `Err` says why not (for the agent).
pub fn may_join(c: &Candidate, asker: Asker<'_>) -> Result<(), String> {
    let guessable = match c.found {
        Found::OurMessageId
        | Found::Tag {
            secret_matches: true,
        } => return Ok(()),
        Found::TheirMessageId => "a Message-ID of that ticket",
        Found::Tag {
            secret_matches: false,
        } => "its tag without the ticket's secret",
        Found::PlusAddress => "its plus-address",
    };
    let known = asker
        .contact
        .is_some_and(|a| a == c.contact || c.participants.iter().any(|p| p == a));
    if asker.trusted || known {
        return Ok(());
    }
    Err(format!(
        "mentions #{} ({guessable}), but {} is not that ticket's contact or a participant: opened apart",
        c.ticket,
        asker
            .contact
            .unwrap_or("the sender (an address of ours it is not proven to come from)")
    ))
}

/// The ticket `m` continues: by In-Reply-To/References (most recent first),
/// else by its subject tag, else by its plus-address; always on its channel,
/// and only where [`may_join`] allows. `Err`: no ticket, with the first
/// refusal (for the agent) if one was named.
pub fn find(
    m: &InboundMessage,
    facts: &mut dyn InboundFacts,
) -> Result<Result<TicketId, Option<String>>, StoreError> {
    let asker = Asker {
        contact: m.thread_identity.as_deref(),
        trusted: m.trusted_sender,
    };
    let mut refused: Option<String> = None;
    let mut consider = |facts: &mut dyn InboundFacts,
                        ticket: TicketId,
                        found: &dyn Fn(&str) -> Found|
     -> Result<bool, StoreError> {
        let Some(people) = facts.ticket_people(&m.channel, ticket)? else {
            return Ok(false);
        };
        let c = Candidate {
            ticket: ticket.0,
            found: found(&people.secret),
            contact: people.contact,
            participants: people.participants,
        };
        match may_join(&c, asker) {
            Ok(()) => Ok(true),
            Err(why) => {
                refused.get_or_insert(why);
                Ok(false)
            }
        }
    };
    for id in m.in_reply_to.iter().chain(m.references.iter().rev()) {
        for hit in facts.by_message_id(&m.channel, id)? {
            let found = if hit.outbound {
                Found::OurMessageId
            } else {
                Found::TheirMessageId
            };
            if consider(facts, hit.ticket, &|_| found)? {
                return Ok(Ok(hit.ticket));
            }
        }
    }
    if let Some(tok) = &m.thread_token {
        let by_tag = |secret: &str| Found::Tag {
            secret_matches: !secret.is_empty() && tok.secret.as_deref() == Some(secret),
        };
        if consider(facts, tok.ticket, &by_tag)? {
            return Ok(Ok(tok.ticket));
        }
    }
    if let Some(t) = m.plus_token
        && consider(facts, t, &|_| Found::PlusAddress)?
    {
        return Ok(Ok(t));
    }
    Ok(Err(refused))
}

/// The ticket number carried by a plus-address (`support+123@…` or
/// `support+t123@…`) of `channel_address`.
pub fn plus_token(recipient: &str, channel_address: &str) -> Option<TicketId> {
    let (local, domain) = recipient.rsplit_once('@')?;
    let (c_local, c_domain) = channel_address.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(c_domain) {
        return None;
    }
    let (base, tag) = local.split_once('+')?;
    if !base.eq_ignore_ascii_case(c_local) {
        return None;
    }
    let digits = tag.strip_prefix('t').unwrap_or(tag);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(TicketId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens() {
        let t = |n: i64, s: Option<&str>| {
            Some(ThreadToken {
                ticket: TicketId(n),
                secret: s.map(str::to_string),
            })
        };
        let cases = [
            ("Re: Help [#12]", t(12, None)),
            ("[#3] Re: [#45] old", t(45, None)),
            ("Re: Help [#12-k3f9q2ab]", t(12, Some("k3f9q2ab"))),
            ("Re: Help [#12-K3F9Q2AB]", t(12, Some("k3f9q2ab"))),
            ("[#12-k3f9q2ab] then [#13]", t(13, None)),
            ("[#12-ab]", None),
            ("[#12-k3f9 q2ab]", None),
            ("[#12-]", None),
            ("No token", None),
            ("[#] empty", None),
            ("[#12 unclosed", None),
            ("[#99999999999999999999] overflow", None),
            ("Ünïcödé [#7]", t(7, None)),
            ("[#7-ünïcödé]", None),
        ];
        for (s, want) in cases {
            assert_eq!(subject_token(s), want, "{s}");
        }
    }

    #[test]
    fn secrets_are_fresh_and_from_the_alphabet() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.bytes().all(|c| SECRET_ALPHABET.contains(&c)), "{a}");
    }

    #[test]
    fn who_may_join_a_ticket() {
        let c = |found| Candidate {
            ticket: 7,
            found,
            contact: "carol@customer.example".into(),
            participants: vec!["dave@customer.example".into()],
        };
        let stranger = Asker {
            contact: Some("mallory@evil.example"),
            trusted: false,
        };
        // Unguessable handles: anyone holding them was sent them.
        assert!(may_join(&c(Found::OurMessageId), stranger).is_ok());
        assert!(
            may_join(
                &c(Found::Tag {
                    secret_matches: true
                }),
                stranger
            )
            .is_ok()
        );
        // Guessable ones: only the people of the ticket, or the team.
        for found in [
            Found::Tag {
                secret_matches: false,
            },
            Found::TheirMessageId,
            Found::PlusAddress,
        ] {
            let why = may_join(&c(found), stranger).expect_err("stranger refused");
            assert!(why.contains("mentions #7"), "{why}");
            for who in ["carol@customer.example", "dave@customer.example"] {
                let a = Asker {
                    contact: Some(who),
                    trusted: false,
                };
                assert!(may_join(&c(found), a).is_ok(), "{who} {found:?}");
            }
            let team = Asker {
                contact: Some("mallory@evil.example"),
                trusted: true,
            };
            assert!(may_join(&c(found), team).is_ok());
            // An address of ours, unproven, matches nobody (even when the
            // customer copied it).
            let ours = Asker {
                contact: None,
                trusted: false,
            };
            assert!(may_join(&c(found), ours).is_err());
        }
    }

    #[test]
    fn plus_tokens() {
        let c = "support@acme.example";
        let cases = [
            ("support+12@acme.example", Some(12)),
            ("Support+t7@ACME.example", Some(7)),
            ("support+sales@acme.example", None),
            ("support@acme.example", None),
            ("sales+12@acme.example", None),
            ("support+12@other.example", None),
        ];
        for (r, want) in cases {
            assert_eq!(plus_token(r, c), want.map(TicketId), "{r}");
        }
    }
}
