//! `config/postdesk.example.toml` against the declarations: it shows every
//! key of every table — set, or on a commented-out `# key = value` line under
//! its table — and no key postdesk does not read; and the key lists it is
//! held to (`read::TABLES`) are the keys the readers ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::read::{self, TABLES};

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/postdesk.example.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

/// The example with its commented-out keys and tables restored: a comment
/// line whose text without its `#`s is TOML on its own (`key = value`,
/// `[table]`, `[[array]]`, with or without a trailing comment) becomes that
/// text; other comment lines (prose) become empty, so line numbers stay.
fn uncommented(example: &str) -> String {
    let mut out = String::with_capacity(example.len());
    for line in example.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            let text = trimmed.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
            if !text.is_empty() && text.parse::<toml::Table>().is_ok() {
                out.push_str(text);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        format!("[{path}]")
    }
}

/// The keys `table` (at `path`) shows, added to `out` by table path; every
/// entry of an array of tables under the same path.
fn shown(path: &str, table: &toml::Table, out: &mut BTreeMap<String, BTreeSet<String>>) {
    out.entry(path.to_owned())
        .or_default()
        .extend(table.keys().cloned());
    for (key, value) in table {
        let sub = join(path, key);
        if !TABLES.iter().any(|t| t.path == sub) {
            continue;
        }
        match value {
            toml::Value::Table(t) => shown(&sub, t, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        shown(&sub, t, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What is out of date in `example`: each key or table it does not show,
/// each key it shows that is not read.
fn problems(example: &str) -> Vec<String> {
    let doc: toml::Table = match uncommented(example).parse() {
        Ok(doc) => doc,
        Err(e) => return vec![format!("with its commented keys restored, not TOML: {e}")],
    };
    let mut by_table = BTreeMap::new();
    shown("", &doc, &mut by_table);
    let mut problems = Vec::new();
    for table in TABLES {
        let Some(keys) = by_table.get(table.path) else {
            problems.push(format!("{} is not shown", describe(table.path)));
            continue;
        };
        for key in table.keys {
            if !keys.contains(*key) {
                problems.push(format!("`{key}` of {} is not shown", describe(table.path)));
            }
        }
        if !table.custom {
            for key in keys {
                if !table.keys.contains(&key.as_str()) {
                    problems.push(format!(
                        "`{key}` in {} is not a key postdesk reads",
                        describe(table.path)
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn the_example_shows_every_key_and_no_other() {
    let problems = problems(&example());
    assert!(
        problems.is_empty(),
        "config/postdesk.example.toml is out of date (show a key set, or as `# key = value` under its table):\n{}",
        problems.join("\n")
    );
}

/// The check above finds a key the example lost, a table it lost, and a
/// key it shows that is not read.
#[test]
fn an_out_of_date_example_is_found() {
    let example = example();
    let edit = |from: &str, to: &str| {
        assert!(example.contains(from), "the example has no `{from}`");
        problems(&example.replacen(from, to, 1))
    };
    assert_eq!(
        edit("\nbusy_timeout_ms = 5000\n", "\n"),
        ["`busy_timeout_ms` of [store] is not shown"]
    );
    assert_eq!(
        edit("\n# ca_file = \"/etc/postdesk/postgres-ca.pem\"\n", "\n"),
        ["`ca_file` of [store] is not shown"]
    );
    let without_dkim = edit("\n# [outbound.dkim]\n", "\n");
    assert!(
        without_dkim.contains(&"[outbound.dkim] is not shown".to_owned()),
        "{without_dkim:?}"
    );
    assert_eq!(
        edit(
            "\nlevel = \"info\"\n",
            "\nlevel = \"info\"\ncolour = true\n"
        ),
        ["`colour` in [log] is not a key postdesk reads"]
    );
    assert_eq!(
        edit(
            "\nlevel = \"info\"\n",
            "\nlevel = \"info\"\n# colour = true\n"
        ),
        ["`colour` in [log] is not a key postdesk reads"]
    );
}

/// `read::TABLES` lists, for every table the readers read, exactly the
/// keys they ask for (so neither a `KEYS` whose field a `read` function
/// reads under another name nor the top level's list can drift, and no
/// table is missing), and the example with its commented keys restored has
/// no unknown key.
#[test]
fn the_key_lists_are_what_the_readers_ask_for() {
    let (diagnostics, tables) = read::read_tables(&uncommented(&example()));
    let unknown: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.message.contains("unknown key") || d.message.contains("syntax"))
        .map(ToString::to_string)
        .collect();
    assert!(unknown.is_empty(), "{unknown:#?}");
    for (path, asked) in &tables {
        let Some(table) = TABLES.iter().find(|t| t.path == path) else {
            panic!("{} is read but not in read::TABLES", describe(path));
        };
        let asked: BTreeSet<&str> = asked.iter().copied().collect();
        let listed: BTreeSet<&str> = table.keys.iter().copied().collect();
        assert_eq!(asked, listed, "{}: asked for vs listed", describe(path));
        assert_eq!(
            listed.len(),
            table.keys.len(),
            "{}: listed twice",
            describe(path)
        );
    }
    for table in TABLES {
        assert!(
            tables.iter().any(|(path, _)| path == table.path),
            "{} is in read::TABLES but was not read",
            describe(table.path)
        );
    }
}
