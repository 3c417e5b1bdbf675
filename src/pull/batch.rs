//! Batch helpers: how new UIDs are cut into fetches, how long a fetch may
//! take, and how UID sets are written.
//!
//! Limits: a batch is at most `batch_size` messages and `batch_bytes` bytes
//! by the sizes the server reports (RFC822.SIZE, asked before the bodies; a
//! larger message, or one of no reported size, is fetched alone). One batch
//! is committed while the next is fetched, so about two are in memory.
//!
//! Must not: do I/O, read a clock or keep state — pure functions of the
//! UIDs, the reported sizes and the limits, tested by tables.

use std::time::Duration;

use super::mailbox::FETCH_TIMEOUT;

/// The slowest link a fetch is given time for, in bytes per second: a
/// batch's bound grows by its reported bytes at this rate, so one large
/// message on a slow link is not cut off at every try (and the mailbox
/// stalled behind it).
const SLOW_LINK_BYTES_PER_SEC: u64 = 64 * 1024;

/// The bound on fetching `bytes` (by the reported sizes).
pub(super) fn fetch_timeout(bytes: u64) -> Duration {
    FETCH_TIMEOUT.saturating_add(Duration::from_secs(bytes / SLOW_LINK_BYTES_PER_SEC))
}

/// The bytes the server reported for `chunk` (a run of `uids`, whose sizes
/// are `sizes`); a size not reported counts as `unknown`.
fn reported_bytes(uids: &[u32], sizes: &[Option<u32>], chunk: &[u32], unknown: u64) -> u64 {
    chunk
        .iter()
        .map(|u| {
            uids.binary_search(u)
                .ok()
                .and_then(|i| sizes.get(i).copied().flatten())
                .map_or(unknown, u64::from)
        })
        .fold(0, u64::saturating_add)
}

/// The bytes each chunk's fetch bound grows by ([`fetch_timeout`]): the sizes
/// the server reported. A size not reported adds nothing — a lone new
/// message is never asked its size ([`Puller::fetch_sizes`]), and counting
/// it as the whole byte budget made the commonest fetch, new mail while
/// idle, wait ≈ 812 s instead of 300 s before a hung server was noticed.
///
/// [`Puller::fetch_sizes`]: super::mailbox::Puller::fetch_sizes
pub(super) fn bound_bytes(uids: &[u32], sizes: &[Option<u32>], chunks: &[&[u32]]) -> Vec<u64> {
    chunks
        .iter()
        .map(|c| reported_bytes(uids, sizes, c, 0))
        .collect()
}

/// Batches whose sizes one `UID FETCH … RFC822.SIZE` asks for.
pub(super) const SIZE_WINDOW_BATCHES: usize = 20;

/// How much one fetch may carry (`[channels.imap]` `batch_size`, `batch_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchLimits {
    /// Most messages; at least 1.
    pub(super) count: usize,
    /// Most bytes, by the sizes the server reports; at least 1.
    pub(super) bytes: u64,
}

/// Cut `uids` (sorted) into runs to fetch one after the other, each of at
/// most `limits.count` messages whose sizes (`sizes[i]` for `uids[i]`, as
/// the server reported them) add up to at most `limits.bytes` — but never
/// empty: a message larger than the budget goes alone. So does a message of
/// no reported size, which counts as the whole budget; every message counts
/// at least one byte, so that sizes of 0 cannot keep it company. The server
/// can still understate sizes; then the count is the bound.
pub(super) fn chunks_by_size<'a>(
    uids: &'a [u32],
    sizes: &[Option<u32>],
    limits: BatchLimits,
) -> Vec<&'a [u32]> {
    let mut chunks = Vec::new();
    // Where the current chunk starts, and its bytes so far.
    let (mut start, mut bytes) = (0, 0u64);
    for i in 0..uids.len() {
        let size = match sizes.get(i).copied().flatten() {
            Some(b) => u64::from(b).max(1),
            None => limits.bytes,
        };
        if i > start && (i - start >= limits.count || bytes.saturating_add(size) > limits.bytes) {
            chunks.push(&uids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < uids.len() {
        chunks.push(&uids[start..]);
    }
    chunks
}

/// `first:last` of sorted `uids`, for logs and commands covering them all.
pub(super) fn uid_range(uids: &[u32]) -> String {
    match (uids.first(), uids.last()) {
        (Some(first), Some(last)) => format!("{first}:{last}"),
        _ => String::new(),
    }
}

/// The UID set `first:last` without the UIDs in `except`, as IMAP writes it
/// (`1:4,6,8:9`); `None` when nothing is left.
pub(super) fn uid_set(first: u32, last: u32, except: &[u32]) -> Option<String> {
    let mut skip: Vec<u32> = except
        .iter()
        .copied()
        .filter(|u| (first..=last).contains(u))
        .collect();
    skip.sort_unstable();
    skip.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    // Where the current run starts; `None` past `u32::MAX`.
    let mut from = Some(first);
    for u in skip {
        if let Some(f) = from
            && f < u
        {
            runs.push((f, u - 1));
        }
        from = u.checked_add(1);
    }
    if let Some(f) = from
        && f <= last
    {
        runs.push((f, last));
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_set_table() {
        let table: &[(u32, u32, &[u32], Option<&str>)] = &[
            (1, 2, &[], Some("1:2")),
            (5, 5, &[], Some("5")),
            (1, 3, &[2], Some("1,3")),
            (1, 9, &[5, 2, 99, 2], Some("1,3:4,6:9")),
            (1, 3, &[1, 3], Some("2")),
            (1, 2, &[1, 2], None),
            (u32::MAX - 1, u32::MAX, &[u32::MAX], Some("4294967294")),
        ];
        for (first, last, except, want) in table {
            assert_eq!(
                uid_set(*first, *last, except).as_deref(),
                *want,
                "{first}:{last} without {except:?}"
            );
        }
    }

    /// A batch's fetch bound grows with its reported bytes at the slowest
    /// link rate (64 KiB/s): 300 s for small mail, ≈ 11 min more for 40 MiB
    /// — before, 300 s whatever the size, so a 40 MB message on a link under
    /// ≈ 130 KB/s timed out at every try and stalled its mailbox. A size
    /// not reported counts as the budget.
    #[test]
    fn fetch_bound_grows_with_the_reported_bytes() {
        assert_eq!(fetch_timeout(0), FETCH_TIMEOUT);
        assert_eq!(fetch_timeout(64 * 1024 - 1), FETCH_TIMEOUT);
        assert_eq!(
            fetch_timeout(40 << 20),
            FETCH_TIMEOUT + Duration::from_secs(640)
        );
        assert!(fetch_timeout(u64::MAX) > FETCH_TIMEOUT);
        let uids = [3, 5, 9];
        let sizes = [Some(100), None, Some(u32::MAX)];
        assert_eq!(reported_bytes(&uids, &sizes, &uids[..1], 7), 100);
        assert_eq!(reported_bytes(&uids, &sizes, &uids[..2], 7), 107);
        assert_eq!(
            reported_bytes(&uids, &sizes, &uids, u64::MAX),
            u64::MAX,
            "saturates"
        );
        // A lone new message (its size not asked): the plain bound, as
        // before the bound grew with sizes.
        let lone = bound_bytes(&[7], &[None], &[&[7]]);
        assert_eq!(lone, [0]);
        assert_eq!(fetch_timeout(lone[0]), FETCH_TIMEOUT);
        assert_eq!(bound_bytes(&uids, &sizes, &[&uids[..2]]), [100]);
    }

    /// (sizes of UIDs 1.., batch_size, batch_bytes, the chunks). Before,
    /// batches were cut by count only.
    #[test]
    fn chunks_by_size_table() {
        type Case = (
            &'static [Option<u32>],
            usize,
            u64,
            &'static [&'static [u32]],
        );
        let table: &[Case] = &[
            // The count limit.
            (&[Some(1); 5], 2, 100, &[&[1, 2], &[3, 4], &[5]]),
            (&[Some(10); 7], 3, 100, &[&[1, 2, 3], &[4, 5, 6], &[7]]),
            // The byte limit: at most the budget, exactly the budget is fine.
            (&[Some(40); 4], 100, 100, &[&[1, 2], &[3, 4]]),
            (&[Some(50); 3], 100, 100, &[&[1, 2], &[3]]),
            (&[Some(30), Some(80), Some(20)], 100, 100, &[&[1], &[2, 3]]),
            // A message over the budget goes alone, first or not.
            (
                &[Some(10), Some(500), Some(10), Some(10)],
                100,
                100,
                &[&[1], &[2], &[3, 4]],
            ),
            (&[Some(500), Some(10)], 100, 100, &[&[1], &[2]]),
            (&[Some(500); 3], 100, 100, &[&[1], &[2], &[3]]),
            // A missing size counts as the budget: alone, even among 0s.
            (
                &[Some(10), None, Some(10), Some(10)],
                100,
                100,
                &[&[1], &[2], &[3, 4]],
            ),
            (&[None; 3], 100, 100, &[&[1], &[2], &[3]]),
            (&[Some(0), None, Some(0)], 100, 100, &[&[1], &[2], &[3]]),
            // Large sizes do not overflow.
            (&[Some(u32::MAX); 3], 100, u64::MAX, &[&[1, 2, 3]]),
            (&[], 100, 100, &[]),
        ];
        for (sizes, count, bytes, want) in table {
            let uids: Vec<u32> = (1..=sizes.len() as u32).collect();
            let limits = BatchLimits {
                count: *count,
                bytes: *bytes,
            };
            assert_eq!(
                chunks_by_size(&uids, sizes, limits),
                *want,
                "sizes {sizes:?}, {count} messages, {bytes} bytes"
            );
        }
    }
}
