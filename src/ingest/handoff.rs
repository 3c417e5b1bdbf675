//! The in-memory handoff from the SMTP listener to ingest.
//!
//! A message committed to the spool is also handed to ingest here, so ingest
//! does not read back from the database what it was just given. The spool
//! stays the source of truth: the handoff is bounded (entries and bytes), and
//! when it overflows it drops what it holds and tells ingest to scan the
//! spool instead. Ingest also scans at start (anything left by a crash),
//! when woken with nothing handed over (mail pulled from mailboxes), and at
//! least once a second under load. An entry seen twice — once here, once by
//! a scan — is applied once: the store skips spool entries that are no
//! longer pending.
//!
//! Order: entries are handed over in the order their sessions saw the commit
//! finish, and each batch is sorted by spool id. Two messages of the same
//! group commit can still land in different batches out of spool order; a
//! reply could then be ingested before the message it answers if both
//! arrived within one commit — practically unreachable, since a reply needs
//! the original delivered first.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::SpoolEntry;

/// Most entries held before the handoff overflows.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Most message bytes held before the handoff overflows.
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct State {
    entries: VecDeque<SpoolEntry>,
    bytes: usize,
    overflowed: bool,
}

/// What ingest should process next.
pub enum Next {
    /// Entries handed over in memory, in spool order.
    Entries(Vec<SpoolEntry>),
    /// Nothing handed over since the last take.
    Empty,
    /// Entries were dropped: read pending entries from the spool.
    Scan,
}

#[derive(Default)]
pub struct Handoff {
    state: Mutex<State>,
}

impl Handoff {
    /// Hand over an entry already durably committed to the spool.
    pub fn push(&self, entry: SpoolEntry) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.overflowed {
            return;
        }
        if s.entries.len() >= MAX_ENTRIES || s.bytes + entry.raw.len() > MAX_BYTES {
            s.entries.clear();
            s.bytes = 0;
            s.overflowed = true;
            metrics::counter!("postdesk_ingest_handoff_overflows_total").increment(1);
            return;
        }
        s.bytes += entry.raw.len();
        s.entries.push_back(entry);
    }

    /// Up to `max` entries in spool order, `Empty`, or `Scan` after an overflow.
    pub fn take(&self, max: usize) -> Next {
        let Ok(mut s) = self.state.lock() else {
            return Next::Scan;
        };
        if s.overflowed {
            s.overflowed = false;
            return Next::Scan;
        }
        if s.entries.is_empty() {
            return Next::Empty;
        }
        let n = max.min(s.entries.len());
        let mut out: Vec<SpoolEntry> = s.entries.drain(..n).collect();
        s.bytes -= out.iter().map(|e| e.raw.len()).sum::<usize>();
        // Sessions finishing the same group commit push in any order.
        out.sort_by_key(|e| e.id);
        Next::Entries(out)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.entries.is_empty() && !s.overflowed)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SpoolId, SpoolSource};

    fn entry(id: i64, size: usize) -> SpoolEntry {
        SpoolEntry {
            id: SpoolId(id),
            received_at: 0,
            source: SpoolSource::Smtp,
            mail_from: String::new(),
            rcpt_to: vec![],
            client_ip: None,
            helo: None,
            channel: None,
            raw: vec![b'x'; size],
            content_hash: String::new(),
        }
    }

    fn ids(n: Next) -> Option<Vec<i64>> {
        match n {
            Next::Entries(v) => Some(v.iter().map(|e| e.id.0).collect()),
            Next::Empty => Some(vec![]),
            Next::Scan => None,
        }
    }

    #[test]
    fn hands_over_in_spool_order_then_asks_for_a_scan() {
        let h = Handoff::default();
        assert_eq!(ids(h.take(10)), Some(vec![]), "nothing handed over");
        for id in [3, 1, 2] {
            h.push(entry(id, 10));
        }
        assert_eq!(ids(h.take(2)), Some(vec![1, 3]));
        assert_eq!(ids(h.take(2)), Some(vec![2]));
        assert_eq!(ids(h.take(2)), Some(vec![]));
        assert!(h.is_empty());
        h.push(entry(4, 10));
        assert!(!h.is_empty());
    }

    #[test]
    fn overflow_drops_everything_and_asks_for_one_scan() {
        let h = Handoff::default();
        h.push(entry(1, MAX_BYTES - 10));
        h.push(entry(2, 20));
        h.push(entry(3, 1));
        assert_eq!(ids(h.take(10)), None, "overflowed: scan");
        h.push(entry(4, 1));
        assert_eq!(
            ids(h.take(10)),
            Some(vec![4]),
            "back to the handoff after the scan"
        );
    }
}
