//! Decide: what the store writes for one inbound message, over the facts it
//! reads in the transaction that writes it.
//!
//! Pure apart from those reads. [`decide`] is the sequence every backend
//! runs (passed to [`crate::store::SpoolStore::apply_inbound`] and
//! [`crate::store::SpoolStore::submit`] as their [`crate::store::Decide`]):
//!
//! 1. dedupe ([`dedupe::check`]): a copy of a stored message writes nothing;
//!    a Message-ID another sender used gets a key of its own;
//! 2. bounce linking ([`bounce::reported_on`]): a bounce of one of our
//!    replies joins that reply's ticket, and fails the reply when the report
//!    says delivery failed;
//! 3. threading ([`thread::find`]): the ticket the message may continue;
//! 4. routing ([`route::owner`]): else the owner of the ticket it opens,
//!    with why a ticket it named was not continued.
//!
//! The backend then writes the [`Decision`] (contact, participant, ticket,
//! message, bounce marks, assignment) in the same transaction.
//!
//! Must not: write, read the clock (the caller passes `now_ms`), or read
//! anything but the [`InboundFacts`] it is given.

use super::{bounce, dedupe, route, thread};
use crate::store::{Decision, InboundFacts, InboundMessage, StoreError};

/// The [`Decision`] for `m` (see the module doc for the order).
pub fn decide(
    m: &InboundMessage,
    now_ms: i64,
    facts: &mut dyn InboundFacts,
) -> Result<Decision, StoreError> {
    let incoming = dedupe::Incoming {
        key: &m.dedupe_key,
        from: &m.from.email,
        contact: &m.contact.email,
    };
    let key = match dedupe::check(incoming, now_ms, |k| facts.keyed(&m.channel, k))? {
        dedupe::Verdict::Copy(ticket) => return Ok(Decision::Duplicate(ticket)),
        dedupe::Verdict::New(key) => key,
    };
    if let Some(link) = &m.bounce
        && let Some(outbound) = bounce::reported_on(&m.channel, link, facts)?
    {
        return Ok(Decision::Bounce {
            key,
            outbound,
            fail: link.failed.then(|| link.detail.clone()),
        });
    }
    Ok(match thread::find(m, facts)? {
        Ok(ticket) => Decision::Join { key, ticket },
        Err(thread_note) => Decision::Open {
            key,
            owner: route::owner(&m.new_ticket.routing, &m.contact.email, facts)?,
            thread_note,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::store::tests::{inbound, tag};
    use crate::store::{
        BounceLink, FactAnswer, FactQuery, KeyedMessage, MessageHit, OutboundRef, OwnerChoice,
        RoutingPlan, SpoolId, TicketId, TicketPeople, UserLoad, decide_async,
    };

    /// Facts held in maps; every read is logged, to show what the sequence
    /// asks and where it stops.
    #[derive(Default)]
    struct Facts {
        keyed: HashMap<String, KeyedMessage>,
        outbound: HashMap<String, OutboundRef>,
        hits: HashMap<String, Vec<MessageHit>>,
        people: HashMap<i64, TicketPeople>,
        loads: HashMap<String, (i64, i64)>,
        asked: Vec<String>,
        /// Every dedupe read fails (the database is busy).
        broken: bool,
    }

    impl InboundFacts for Facts {
        fn keyed(&mut self, _: &str, key: &str) -> Result<Option<KeyedMessage>, StoreError> {
            self.asked.push(format!("keyed {key}"));
            if self.broken {
                return Err(StoreError::Busy);
            }
            Ok(self.keyed.get(key).cloned())
        }
        fn outbound(&mut self, _: &str, id: &str) -> Result<Option<OutboundRef>, StoreError> {
            self.asked.push(format!("outbound {id}"));
            Ok(self.outbound.get(id).cloned())
        }
        fn by_message_id(&mut self, _: &str, id: &str) -> Result<Vec<MessageHit>, StoreError> {
            self.asked.push(format!("by_message_id {id}"));
            Ok(self.hits.get(id).cloned().unwrap_or_default())
        }
        fn ticket_people(
            &mut self,
            _: &str,
            t: TicketId,
        ) -> Result<Option<TicketPeople>, StoreError> {
            self.asked.push(format!("ticket_people {t}"));
            Ok(self.people.get(&t.0).cloned())
        }
        fn user_load(&mut self, user: &str) -> Result<UserLoad, StoreError> {
            self.asked.push(format!("user_load {user}"));
            let (open, last_assigned) = self.loads.get(user).copied().unwrap_or_default();
            Ok(UserLoad {
                user: user.into(),
                open,
                last_assigned,
            })
        }
        fn contact_owner(&mut self, email: &str) -> Result<Option<String>, StoreError> {
            self.asked.push(format!("contact_owner {email}"));
            Ok(None)
        }
    }

    /// Ticket 1 of c1@customer.example (secret `secret1`), which our reply
    /// `pd.1.aa@desk` went to.
    fn facts() -> Facts {
        let mut f = Facts::default();
        f.people.insert(
            1,
            TicketPeople {
                contact: "c1@customer.example".into(),
                secret: "secret1".into(),
                participants: Vec::new(),
            },
        );
        let ours = OutboundRef {
            row: 7,
            ticket: TicketId(1),
            message_id: "pd.1.aa@desk".into(),
        };
        f.outbound.insert("pd.1.aa@desk".into(), ours);
        let hit = MessageHit {
            ticket: TicketId(1),
            outbound: true,
        };
        f.hits.insert("pd.1.aa@desk".into(), vec![hit]);
        f.loads.insert("ann".into(), (3, 1));
        f
    }

    /// Message `n` from c`n`@customer.example, balanced between ann and bob.
    fn message(n: usize) -> InboundMessage {
        let balance = RoutingPlan::Balance {
            users: vec!["ann".into(), "bob".into()],
            reason_if_none: "none".into(),
        };
        inbound(SpoolId(1), n, balance).messages.remove(0)
    }

    /// A copy of a stored message is decided by dedupe alone: nothing else
    /// is read.
    #[test]
    fn a_copy_stops_at_dedupe() {
        let mut f = facts();
        let stored = KeyedMessage {
            ticket: TicketId(1),
            from: Some("c2@customer.example".into()),
            contact: "c1@customer.example".into(),
        };
        f.keyed.insert("mid:m2@customer.example".into(), stored);
        let mut m = message(2);
        m.in_reply_to = Some("pd.1.aa@desk".into());
        let d = decide(&m, 0, &mut f).expect("decided");
        assert_eq!(d, Decision::Duplicate(TicketId(1)));
        assert_eq!(f.asked, ["keyed mid:m2@customer.example"]);
    }

    /// A bounce naming our reply joins that reply's ticket before threading
    /// is asked, and fails the reply only when the report says delivery
    /// failed; one naming nothing of ours is threaded like any mail.
    #[test]
    fn a_bounce_of_our_reply_is_linked_before_threading() {
        for failed in [true, false] {
            let mut f = facts();
            let mut m = message(9);
            m.bounce = Some(BounceLink {
                candidates: vec!["someone@else".into(), "pd.1.aa@desk".into()],
                failed,
                detail: "bounced: 5.1.1".into(),
            });
            let d = decide(&m, 0, &mut f).expect("decided");
            let want = Decision::Bounce {
                key: None,
                outbound: f.outbound["pd.1.aa@desk"].clone(),
                fail: failed.then(|| "bounced: 5.1.1".to_string()),
            };
            assert_eq!(d, want, "failed: {failed}");
            assert!(!f.asked.iter().any(|a| a.starts_with("by_message_id")));
        }
        let mut f = facts();
        let mut m = message(9);
        m.bounce = Some(BounceLink {
            candidates: vec!["someone@else".into()],
            failed: true,
            detail: "x".into(),
        });
        assert!(matches!(
            decide(&m, 0, &mut f).expect("decided"),
            Decision::Open { .. }
        ));
    }

    /// Whoever holds our reply's Message-ID joins its ticket; a stranger
    /// with the bare tag opens a ticket of their own, noting the mention,
    /// owned by the less loaded user (ann has 3 open, bob none).
    #[test]
    fn threading_then_routing() {
        let mut f = facts();
        let mut m = message(5);
        m.in_reply_to = Some("pd.1.aa@desk".into());
        let d = decide(&m, 0, &mut f).expect("decided");
        assert_eq!(
            d,
            Decision::Join {
                key: None,
                ticket: TicketId(1)
            }
        );
        assert!(!f.asked.iter().any(|a| a.starts_with("user_load")));

        let mut f = facts();
        let mut m = message(6);
        m.thread_token = tag(1, None);
        let d = decide(&m, 0, &mut f).expect("decided");
        let Decision::Open {
            key: None,
            owner,
            thread_note: Some(note),
        } = d
        else {
            panic!("not opened apart: {d:?}");
        };
        assert!(note.contains("mentions #1"), "{note}");
        assert_eq!(
            owner,
            OwnerChoice {
                owner: Some("bob".into()),
                unassigned_reason: None,
                record_assignment: true
            }
        );
    }

    /// A store error stops the sequence and is the caller's.
    #[test]
    fn a_read_error_is_returned() {
        let mut f = Facts {
            broken: true,
            ..facts()
        };
        let r = decide(&message(1), 0, &mut f);
        assert!(matches!(r, Err(StoreError::Busy)), "{r:?}");
        assert_eq!(f.asked.len(), 1, "{:?}", f.asked);
    }

    /// `q` answered from `f`, as an asynchronous backend would.
    fn answer(f: &mut Facts, q: FactQuery) -> Result<FactAnswer, StoreError> {
        Ok(match q {
            FactQuery::Keyed { channel, key } => FactAnswer::Keyed(f.keyed(&channel, &key)?),
            FactQuery::Outbound {
                channel,
                message_id,
            } => FactAnswer::Outbound(f.outbound(&channel, &message_id)?),
            FactQuery::ByMessageId {
                channel,
                message_id,
            } => FactAnswer::ByMessageId(f.by_message_id(&channel, &message_id)?),
            FactQuery::TicketPeople { channel, ticket } => {
                FactAnswer::TicketPeople(f.ticket_people(&channel, ticket)?)
            }
            FactQuery::UserLoad { user } => FactAnswer::UserLoad(f.user_load(&user)?),
            FactQuery::ContactOwner { email } => FactAnswer::ContactOwner(f.contact_owner(&email)?),
        })
    }

    /// An asynchronous backend (`decide_async`, loading each fact when
    /// `decide` first asks for it) decides every case exactly as a
    /// synchronous one, reading the facts in the order it first reads them,
    /// each once (a synchronous backend reads a ticket named twice twice).
    #[test]
    fn the_async_adapter_decides_alike_with_the_same_reads() {
        let copy = || {
            let mut f = facts();
            let stored = KeyedMessage {
                ticket: TicketId(1),
                from: Some("c2@customer.example".into()),
                contact: "c2@customer.example".into(),
            };
            f.keyed.insert("mid:m2@customer.example".into(), stored);
            f
        };
        let mut reply = message(5);
        reply.references = vec!["pd.1.aa@desk".into(), "unknown@x".into()];
        let mut stranger = message(6);
        stranger.thread_token = tag(1, None);
        stranger.plus_token = Some(TicketId(1));
        let mut bounce = message(9);
        bounce.bounce = Some(BounceLink {
            candidates: vec!["someone@else".into(), "pd.1.aa@desk".into()],
            failed: true,
            detail: "bounced".into(),
        });
        let broken = || Facts {
            broken: true,
            ..facts()
        };
        let cases: Vec<(&str, InboundMessage, &dyn Fn() -> Facts)> = vec![
            ("copy", message(2), &copy),
            ("join by a reference", reply, &facts),
            ("stranger opens apart", stranger, &facts),
            ("bounce", bounce, &facts),
            ("read error", message(1), &broken),
        ];
        for (what, m, make) in cases {
            let mut sync = make();
            let want = format!("{:?}", decide(&m, 7, &mut sync));
            let mut later = make();
            let got = decide_async(decide, &m, 7, Vec::new(), |q| {
                let a = answer(&mut later, q);
                async move { a }
            });
            let got = futures_util::FutureExt::now_or_never(got).expect("no real waiting");
            assert_eq!(format!("{got:?}"), want, "{what}");
            let mut first_reads = sync.asked.clone();
            let mut seen = std::collections::HashSet::new();
            first_reads.retain(|r| seen.insert(r.clone()));
            assert_eq!(later.asked, first_reads, "{what}: reads");
            // A fact read ahead (as PostgreSQL reads the dedupe key's
            // message with the lock) is not read again; the rest are.
            let mut ahead = make();
            let q = FactQuery::Keyed {
                channel: m.channel.clone(),
                key: m.dedupe_key.clone(),
            };
            let Ok(read) = answer(&mut ahead, q.clone()) else {
                continue;
            };
            assert_eq!(first_reads[0], format!("keyed {}", m.dedupe_key), "{what}");
            let known = vec![(q, read)];
            ahead.asked.clear();
            let got = decide_async(decide, &m, 7, known, |q| {
                let a = answer(&mut ahead, q);
                async move { a }
            });
            let got = futures_util::FutureExt::now_or_never(got).expect("no real waiting");
            assert_eq!(format!("{got:?}"), want, "{what}: read ahead");
            assert_eq!(
                ahead.asked,
                first_reads[1..],
                "{what}: reads after the one ahead"
            );
        }
    }
}
