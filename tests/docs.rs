//! The repository documents itself: no file points outside it, every
//! relative link in README.md and docs/*.md reaches a file that exists, and
//! README.md opens with the two commands CI and users copy.
//!
//! Std only, no daemon, no network: it reads the files of the working tree
//! (skipping `target/`, `.git` and the example configuration's run-time
//! `config/var/`).

use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the working tree that belongs to the repository.
fn repo_files() -> Vec<PathBuf> {
    let root = root();
    let skip = [
        root.join("target"),
        root.join(".git"),
        root.join("config/var"),
    ];
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.contains(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Phrases that point at documents kept outside the repository. Built at run
/// time so this file does not contain them itself.
fn outside_references() -> Vec<String> {
    let spec = ["spec", ".md"].concat();
    let peers = ["peers", ".md"].concat();
    let shared = ["../", "shared"].concat();
    let section = ["spec", " section"].concat();
    let paragraph = ["spec", " \u{a7}"].concat();
    vec![spec, peers, shared, section, paragraph]
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    let needles = outside_references();
    let mut found = Vec::new();
    for path in repo_files() {
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for (i, line) in text.lines().enumerate() {
            for needle in &needles {
                if line.contains(needle.as_str()) {
                    found.push(format!("{}:{}: {needle:?}", relative(&path), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to documents outside the repository (say the thing itself, or point into docs/):\n{}",
        found.join("\n")
    );
}

/// The targets of `[text](target)` links outside fenced code blocks.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds no .md file");
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_reaches_a_file_in_the_repository() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = fs::read_to_string(&file).expect("readable markdown");
        let base = file.parent().expect("a directory");
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let resolved = base.join(path);
            // Lexically, so a link cannot leave the repository through `..`.
            let mut normal = PathBuf::new();
            for c in resolved.components() {
                match c {
                    Component::ParentDir => {
                        normal.pop();
                    }
                    Component::CurDir => {}
                    c => normal.push(c),
                }
            }
            let inside = normal.starts_with(root());
            if !inside || !normal.exists() {
                broken.push(format!("{}:{line}: {target}", relative(&file)));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing, or to outside the repository:\n{}",
        broken.join("\n")
    );
}

#[test]
fn readme_links_every_page_of_docs() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let targets: Vec<String> = link_targets(&readme).into_iter().map(|(_, t)| t).collect();
    for page in markdown_files().into_iter().skip(1) {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(
            targets
                .iter()
                .any(|t| t.split('#').next() == Some(name.as_str())),
            "README.md does not link {name}"
        );
    }
}

#[test]
fn readme_opens_with_the_two_commands() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut lines = readme.lines();
    assert_eq!(lines.next(), Some("# postdesk"), "README.md's first line");
    let mut block = None;
    let mut collecting: Option<Vec<&str>> = None;
    for line in lines {
        match &mut collecting {
            None if line.starts_with("```") => collecting = Some(Vec::new()),
            None => assert!(
                !line.starts_with('#'),
                "a heading ({line:?}) comes before README.md's command block"
            ),
            Some(_) if line.starts_with("```") => {
                block = collecting.take();
                break;
            }
            Some(v) => v.push(line),
        }
    }
    assert_eq!(
        block.expect("README.md has a fenced block"),
        [
            "cargo run --release -- --config config/postdesk.example.toml run",
            "scripts/test",
        ],
        "README.md's first fenced block must be exactly the two commands"
    );
}
