//! Unpredictable bytes for secrets, tags and Message-IDs.

/// `N` (at most 32) bytes nobody outside can predict: the OS's randomness,
/// or — where it fails, never seen on Linux — a hash of the clock, process and
/// a counter, still unknown to a stranger who never saw our mail.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        use sha2::Digest as _;
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h = sha2::Sha256::digest(format!("{nanos}:{n}:{}", std::process::id()));
        for (b, h) in bytes.iter_mut().zip(h.iter()) {
            *b = *h;
        }
    }
    bytes
}
