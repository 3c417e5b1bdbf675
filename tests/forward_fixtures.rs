//! Table test over `fixtures/forwards/`: every `NNN-client-lang.eml` is run
//! through `resolve` and `classify` and compared with `NNN-client-lang.expected.json`
//! (`owner`, `method`, `forwarder`, `classification`, `negative`).
//!
//! One loader for every case; an empty folder fails; each mail is checked with
//! its own line endings and with the other ones (LF <-> CRLF); a mismatch writes
//! `NNN-client-lang.actual.json` beside the fixture. The context (team, forwarders,
//! toggle, the install's key for signed loop tags, per-fixture overrides) is `context.json`.
//! At the end a per-client table is printed: cases, correct, false positives
//! (mail attributed to someone other than the expected owner by a forward rule),
//! misses (a forward left with its sender) and other mismatches.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use postdesk::ingest::resolve::{
    Authentication, Classification, ResolveContext, classify, resolve,
};
use serde_json::{Value, json};

struct Context {
    team: HashSet<String>,
    forwarders: Vec<String>,
    toggle: bool,
    /// The install's key for signed tags (recognises our replies come back).
    loop_key: String,
    overrides: serde_json::Map<String, Value>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/forwards")
}

fn load_context(dir: &Path) -> Context {
    let raw = fs::read_to_string(dir.join("context.json")).expect("context.json");
    let v: Value = serde_json::from_str(&raw).expect("context.json is JSON");
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .map(|s| s.trim().to_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    };
    Context {
        team: strings("team_addresses").into_iter().collect(),
        forwarders: strings("forwarders"),
        toggle: v["original_sender_of_forwards"].as_bool().unwrap_or(true),
        loop_key: v["loop_key"].as_str().unwrap_or("").to_string(),
        overrides: v["overrides"].as_object().cloned().unwrap_or_default(),
    }
}

fn kind(c: &Classification) -> &'static str {
    match c {
        Classification::Normal => "normal",
        Classification::AutoReply { .. } => "auto_reply",
        Classification::Bulk { .. } => "bulk",
        Classification::Bounce { .. } => "bounce",
        Classification::Loop { .. } => "loop",
    }
}

/// Run one mail; returns the actual JSON (same shape as expected, plus detail).
fn run(raw: &[u8], ctx: &Context, stem: &str) -> Value {
    let toggle = ctx
        .overrides
        .get(stem)
        .and_then(|o| o["original_sender_of_forwards"].as_bool())
        .unwrap_or(ctx.toggle);
    // Judged as `postdesk resolve FILE` does: as if a trusted relay had
    // passed it (team members' forwards count); unauthenticated mail is
    // tested in tests/trust.rs.
    let auth = Authentication::assumed();
    let rc = ResolveContext {
        auth: &auth,
        team_addresses: &ctx.team,
        forwarders: &ctx.forwarders,
        original_sender_of_forwards: toggle,
        loop_key: Some(ctx.loop_key.as_bytes()),
    };
    // The parser ingest uses (it reads Google Groups' X-Original-* as addresses).
    let Some(msg) = postdesk::ingest::parse::parse(raw) else {
        return json!({"error": "unparseable"});
    };
    let r = resolve(&msg, &rc);
    let c = classify(&msg, None, &rc);
    json!({
        "owner": r.contact.email,
        "method": r.method,
        "forwarder": r.forwarder.as_ref().map(|f| f.email.clone()),
        "classification": kind(&c),
        "detail": {"resolution": r, "classification": c},
    })
}

fn other_line_endings(raw: &[u8]) -> Vec<u8> {
    let lf: Vec<u8> = {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(raw[i]);
            i += 1;
        }
        out
    };
    if lf.len() != raw.len() {
        return lf; // was CRLF
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    for &b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn client_of(stem: &str) -> String {
    let rest = stem.split_once('-').map_or(stem, |(_, r)| r);
    let rest = rest.strip_suffix("-pt-BR").unwrap_or(rest);
    rest.rsplit_once('-')
        .map_or(rest, |(c, lang)| if lang.len() <= 3 { c } else { rest })
        .to_string()
}

#[derive(Default)]
struct Row {
    cases: usize,
    correct: usize,
    false_pos: usize,
    misses: usize,
    other: usize,
}

#[test]
fn forward_fixtures() {
    let dir = dir();
    let ctx = load_context(&dir);
    let mut stems: Vec<String> = fs::read_dir(&dir)
        .expect("fixtures/forwards exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".eml"))
                .map(str::to_string)
        })
        .collect();
    stems.sort();
    assert!(!stems.is_empty(), "no fixtures in {}", dir.display());

    let mut table: BTreeMap<String, Row> = BTreeMap::new();
    let mut failures = Vec::new();
    for stem in &stems {
        let raw = fs::read(dir.join(format!("{stem}.eml"))).expect("read eml");
        let exp_raw = fs::read_to_string(dir.join(format!("{stem}.expected.json")))
            .unwrap_or_else(|_| panic!("{stem}.expected.json missing"));
        let expected: Value = serde_json::from_str(&exp_raw).expect("expected is JSON");
        let row = table.entry(client_of(stem)).or_default();
        row.cases += 1;

        let mut verdict = None;
        for (variant, bytes) in [
            ("as-is", raw.clone()),
            ("line-endings", other_line_endings(&raw)),
        ] {
            let actual = run(&bytes, &ctx, stem);
            let same = ["owner", "method", "forwarder", "classification"]
                .iter()
                .all(|k| actual[k] == expected[k]);
            if !same {
                verdict = Some((variant, actual));
                break;
            }
        }
        let actual_path = dir.join(format!("{stem}.actual.json"));
        match verdict {
            None => {
                row.correct += 1;
                let _ = fs::remove_file(&actual_path);
            }
            Some((variant, actual)) => {
                let owner_ok = actual["owner"] == expected["owner"];
                let by_forward_rule =
                    !matches!(actual["method"].as_str(), Some("from" | "forwarder"));
                if !owner_ok && by_forward_rule {
                    row.false_pos += 1;
                } else if !owner_ok {
                    row.misses += 1;
                } else {
                    row.other += 1;
                }
                let pretty = serde_json::to_string_pretty(&actual).unwrap_or_default();
                let _ = fs::write(&actual_path, pretty + "\n");
                failures.push(format!(
                    "{stem} ({variant}): expected {} / {} / {} / {}, got {} / {} / {} / {}",
                    expected["owner"],
                    expected["method"],
                    expected["forwarder"],
                    expected["classification"],
                    actual["owner"],
                    actual["method"],
                    actual["forwarder"],
                    actual["classification"]
                ));
            }
        }
    }

    let mut total = Row::default();
    println!(
        "\n{:<14} {:>6} {:>8} {:>6} {:>7} {:>6}",
        "client", "cases", "correct", "false+", "misses", "other"
    );
    for (client, r) in &table {
        println!(
            "{client:<14} {:>6} {:>8} {:>6} {:>7} {:>6}",
            r.cases, r.correct, r.false_pos, r.misses, r.other
        );
        total.cases += r.cases;
        total.correct += r.correct;
        total.false_pos += r.false_pos;
        total.misses += r.misses;
        total.other += r.other;
    }
    println!(
        "{:<14} {:>6} {:>8} {:>6} {:>7} {:>6}",
        "TOTAL", total.cases, total.correct, total.false_pos, total.misses, total.other
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
