//! Fuzz corpus and mutations, shared by `tests/fuzz.rs` and the in-crate SMTP
//! harness (`src/smtp/tests/fuzz.rs`, which includes this file by path).
//!
//! Owns: loading the seed corpus from `fixtures/` (read at run time, nothing
//! generated is stored) and the [`Mutation`]s applied to it — byte flips,
//! truncation, splices from another seed, deletions and inserted non-ASCII
//! (valid multi-byte UTF-8 and invalid bytes).
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;

/// Non-ASCII inserted by [`Mutation::Insert`]: multi-byte characters (the
/// `ä` of "Mailbox ä full"), a BOM, full-width colon, invalid UTF-8, NUL,
/// bare CR/LF and the SMTP terminator.
pub const INSERTS: &[&[u8]] = &[
    "ä".as_bytes(),
    "日本語".as_bytes(),
    "😀".as_bytes(),
    "\u{feff}".as_bytes(),
    "：".as_bytes(),
    "\u{307}".as_bytes(),
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x82",
    b"\0",
    b"\r",
    b"\n",
    b"\r\n.\r\n",
    b"=?utf-8?b?w6Q=?=",
    b"=C3=A4",
    b"Message-ID:",
    b"Received:",
    b"--",
];

/// One edit of a seed.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR the byte at a position with a non-zero mask.
    Flip(Index, u8),
    /// Cut the input at a position.
    Truncate(Index),
    /// Remove up to `len` bytes at a position.
    Delete(Index, u8),
    /// Insert one of [`INSERTS`] at a position.
    Insert(Index, Index),
    /// Insert a slice of another seed at a position.
    Splice(Index, Index, Index, u16),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, w)| Mutation::Insert(i, w)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<u16>())
            .prop_map(|(i, s, f, n)| Mutation::Splice(i, s, f, n)),
    ]
}

/// A position in `0..=len` picked by `i`.
fn at(i: &Index, len: usize) -> usize {
    i.index(len + 1)
}

/// `seed` with `edits` applied in order; `corpus` gives splice sources.
pub fn apply(seed: &[u8], edits: &[Mutation], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in edits {
        match m {
            Mutation::Flip(i, mask) => {
                if !b.is_empty() {
                    let p = i.index(b.len());
                    b[p] ^= mask;
                }
            }
            Mutation::Truncate(i) => {
                let p = at(i, b.len());
                b.truncate(p);
            }
            Mutation::Delete(i, n) => {
                let p = at(i, b.len());
                let end = (p + usize::from(*n)).min(b.len());
                b.drain(p..end);
            }
            Mutation::Insert(i, w) => {
                let p = at(i, b.len());
                let what = INSERTS[w.index(INSERTS.len())];
                b.splice(p..p, what.iter().copied());
            }
            Mutation::Splice(i, s, f, n) => {
                if corpus.is_empty() {
                    continue;
                }
                let src = &corpus[s.index(corpus.len())];
                let from = at(f, src.len());
                let end = (from + usize::from(*n)).min(src.len());
                let p = at(i, b.len());
                b.splice(p..p, src[from..end].iter().copied());
            }
        }
    }
    b
}

/// The files under `fixtures/<dir>` whose names end with `ext`, sorted.
pub fn load(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    names.sort();
    names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Every `.eml` fixture (bounces and forwards); never empty.
pub fn mail_corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut all = load("bounces", ".eml");
        all.extend(load("forwards", ".eml"));
        assert!(!all.is_empty(), "no .eml fixtures");
        all
    })
}

/// A fixture message with 0–7 mutations.
pub fn mutated_mail() -> impl Strategy<Value = Vec<u8>> {
    (any::<Index>(), prop::collection::vec(mutation(), 0..8)).prop_map(|(i, edits)| {
        let corpus = mail_corpus();
        apply(&corpus[i.index(corpus.len())], &edits, corpus)
    })
}

/// Case count: `PROPTEST_CASES` when set (`scripts/fuzz`), else `default`
/// (kept small so CI runs every harness in seconds).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A harness's config: [`cases`] cases, failing seeds kept in `regressions`
/// (a path under `proptest-regressions/`, relative to the package root where
/// `cargo test` runs), and no local rejects limit surprises.
pub fn config(default_cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(regressions),
        )),
        ..ProptestConfig::default()
    }
}
