//! The module layering of `src/`: no import cycles, no upward imports.
//!
//! Every top-level module sits in one layer of [`LAYERS`]; a module's code
//! may name (`crate::x`) only modules of lower layers. Test code is exempt
//! (a store test may drive ingest). The graph is read from the source text:
//! each `crate::module` outside comments and outside `#[cfg(test)]` modules
//! and files. docs/architecture.md shows the same table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import from the layers before its own only.
const LAYERS: &[&[&str]] = &[
    // Shared vocabulary: addresses, Message-IDs, subjects, HTML to text;
    // TLS and DKIM key loading.
    &["mail", "keys"],
    // Storage: knows nothing of the configuration file or the pipeline.
    &["store"],
    // The configuration file: reading, validating (uses the store's URL parser).
    &["config"],
    // Runtime state shared by the running daemon (channel switches, availability).
    &["live"],
    // OAuth token sources for IMAP and SMTP.
    &["oauth"],
    // Composing replies and notices, the relay queue.
    &["outbound"],
    // The ways mail comes in and is turned into tickets.
    &["ingest", "pull", "smtp"],
    // The HTTP API and the actions it shares with the web inbox and CLI.
    &["api"],
    // The agents' web inbox.
    &["web"],
    // Starting, supervising and stopping all of the above.
    &["daemon"],
    // The command line.
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Files that are test code only: `tests.rs`, anything under a `tests/`
/// directory, and modules declared as `#[cfg(test)] mod name;`.
fn test_only_files(src: &Path, files: &[(PathBuf, String)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (file, text) in files {
        let rel = file.strip_prefix(src).expect("under src");
        if rel.file_name().is_some_and(|n| n == "tests.rs")
            || rel.components().any(|c| c.as_os_str() == "tests")
        {
            out.insert(file.clone());
        }
        let dir = module_dir(file);
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            let Some(next) = lines.next() else { break };
            let decl = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// Where a file's child modules live: `a/mod.rs` → `a/`, `a/b.rs` → `a/b/`.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().expect("file has a parent");
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod") | Some("lib") | Some("main") => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
        None => parent.to_path_buf(),
    }
}

/// Which top-level modules `text` names, and on which line first. An item
/// under `#[cfg(test)]` (an inline test module, a test helper) is skipped to
/// its closing brace.
fn imports(text: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            let mut depth = 0i64;
            for (_, item) in lines.by_ref() {
                let code = item.split("//").next().unwrap_or("");
                depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
                if depth <= 0 && (code.contains('}') || code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.entry(name).or_insert(i + 1);
            }
        }
    }
    found
}

/// The graph: (from module, to module) → first place it is seen.
fn graph() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            (p, text)
        })
        .collect();
    let tests = test_only_files(&src, &files);
    let mut edges = BTreeMap::new();
    for (file, text) in &files {
        if tests.contains(file) {
            continue;
        }
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        for (to, line) in imports(text) {
            if to != module && layer_of(&to).is_some() {
                edges
                    .entry((module.clone(), to))
                    .or_insert_with(|| format!("{}:{line}", rel.display()));
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert!(
        declared.len() >= 10,
        "lib.rs declares its modules: {declared:?}"
    );
    for module in &declared {
        assert!(
            layer_of(module).is_some(),
            "`{module}` is not in tests/layers.rs's LAYERS (nor in docs/architecture.md)"
        );
    }
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            declared.contains(module),
            "LAYERS names `{module}`, which lib.rs does not declare"
        );
    }
}

#[test]
fn no_module_imports_from_its_own_or_a_higher_layer() {
    let edges = graph();
    // The reader sees something: the pipeline's known edges are found.
    assert!(
        edges.contains_key(&("ingest".into(), "store".into())),
        "{edges:?}"
    );
    assert!(
        edges.contains_key(&("cli".into(), "api".into())),
        "{edges:?}"
    );
    let wrong: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| layer_of(to) >= layer_of(from))
        .map(|((from, to), at)| format!("{from} -> {to} ({at})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the layering (a module may use only lower layers):\n{}",
        wrong.join("\n")
    );
}

/// The checker itself: a comment or a test module does not count, code does.
#[test]
fn the_reader_counts_code_only() {
    let text = "use crate::store::Store;\n// crate::web is only mentioned\n#[cfg(test)]\nmod fake;\nfn f() { crate::mail::short(); } // crate::api\n#[cfg(test)]\nmod tests {\n    use crate::cli;\n    fn g() { crate::daemon::run(); }\n}\nfn h() { crate::keys::x(); }\n";
    let found: Vec<String> = imports(text).into_keys().collect();
    assert_eq!(found, ["keys", "mail", "store"]);
}
