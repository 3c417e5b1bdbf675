//! Which tables `store copy` copies, in which order, with which columns:
//! read from the SQLite store's own schema, so that a table added by a
//! later migration is never left behind unnoticed. Every SQLite table is
//! either copied (it must exist in PostgreSQL with every column) or listed
//! in [`SKIPPED`] with the reason; anything else stops the copy before a
//! row is written.

use rusqlite::Connection;
use tokio_postgres::types::Type;

use super::CopyError;
use super::rows;

/// SQLite tables that are not copied, and why. A virtual table's shadow
/// tables (`NAME_*`) go with it.
pub const SKIPPED: &[(&str, &str)] = &[(
    "message_search",
    "the web inbox's full-text index (FTS5); PostgreSQL's own is filled after the copy",
)];

/// Tables a fresh PostgreSQL database already has rows in (written by its
/// migrations): the SQLite store's rows replace them.
const SEEDED: &[&str] = &["install_secrets", "outbox_tally", "web_activity"];

pub(super) struct Column {
    pub name: String,
    /// The PostgreSQL column's type.
    pub ty: Type,
}

pub(super) struct Table {
    pub name: String,
    /// SQLite's columns, in SQLite's order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub key: Vec<usize>,
    pub seeded: bool,
}

pub(super) struct Plan {
    /// In an order that satisfies foreign keys (a referenced table first).
    pub tables: Vec<Table>,
    /// SQLite tables not copied, with the reason.
    pub skipped: Vec<(String, String)>,
    /// PostgreSQL columns SQLite does not have (left to their defaults).
    pub notes: Vec<String>,
}

/// `name` as a quoted SQL identifier (both backends).
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    pub(super) fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        names.join(", ")
    }

    pub(super) fn key_names(&self) -> Vec<&str> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    /// The key columns for ORDER BY: text in byte order on PostgreSQL, as
    /// SQLite's BINARY collation orders it.
    pub(super) fn order_by(&self, postgres: bool) -> String {
        let keys: Vec<String> = self
            .key
            .iter()
            .map(|&i| {
                let c = &self.columns[i];
                if postgres && rows::is_text(&c.ty) {
                    format!("{} COLLATE \"C\"", ident(&c.name))
                } else {
                    ident(&c.name)
                }
            })
            .collect();
        keys.join(", ")
    }

    /// `SELECT` of every row in key order; on SQLite, after `?1..` (the
    /// key's values) when `after` is set.
    pub(super) fn select(&self, postgres: bool, after: bool) -> String {
        let mut sql = format!("SELECT {} FROM {}", self.column_list(), ident(&self.name));
        if after {
            let keys: Vec<String> = self
                .key
                .iter()
                .map(|&i| ident(&self.columns[i].name))
                .collect();
            let marks: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
            sql.push_str(&format!(
                " WHERE ({}) > ({})",
                keys.join(", "),
                marks.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {}", self.order_by(postgres)));
        sql
    }
}

fn reason_skipped(name: &str) -> Option<String> {
    if name.starts_with("sqlite_") {
        return Some("SQLite's own bookkeeping".into());
    }
    SKIPPED.iter().find_map(|(table, why)| {
        if name == *table {
            Some((*why).to_string())
        } else {
            name.strip_prefix(table)
                .filter(|rest| rest.starts_with('_'))
                .map(|_| format!("part of {table}"))
        }
    })
}

/// Read both schemas and match them.
pub(super) async fn plan(src: &Connection, db: &tokio_postgres::Client) -> Result<Plan, CopyError> {
    let names: Vec<String> = {
        let mut stmt =
            src.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut plan = Plan {
        tables: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    let mut deps: Vec<Vec<String>> = Vec::new();
    for name in names {
        if let Some(why) = reason_skipped(&name) {
            plan.skipped.push((name, why));
            continue;
        }
        let (table, refs) = table(src, db, &name, &mut plan.notes).await?;
        plan.tables.push(table);
        deps.push(refs);
    }
    plan.tables = in_key_order(plan.tables, deps)?;
    Ok(plan)
}

/// One table: SQLite's columns with PostgreSQL's types, its key, and the
/// tables it references.
async fn table(
    src: &Connection,
    db: &tokio_postgres::Client,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<(Table, Vec<String>), CopyError> {
    let unmapped = |what: String| CopyError::Unmapped(what);
    let pg: Vec<(String, u32)> = db
        .query(
            "SELECT a.attname::text, a.atttypid FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&ident(name)],
        )
        .await
        .map_err(crate::store::postgres::pg_err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if pg.is_empty() {
        return Err(unmapped(format!(
            "table {name} of the SQLite store has no table in PostgreSQL"
        )));
    }
    let mut columns = Vec::new();
    let mut key: Vec<(i64, usize)> = Vec::new();
    {
        let mut stmt = src.prepare(&format!("PRAGMA table_info({})", ident(name)))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let col: String = r.get(1)?;
            let pk: i64 = r.get(5)?;
            let Some((_, oid)) = pg.iter().find(|(n, _)| *n == col) else {
                return Err(unmapped(format!(
                    "column {name}.{col} of the SQLite store has no column in PostgreSQL"
                )));
            };
            let ty = Type::from_oid(*oid).filter(rows::supported).ok_or_else(|| {
                unmapped(format!(
                    "column {name}.{col} has a PostgreSQL type (oid {oid}) the copy does not know"
                ))
            })?;
            if pk > 0 {
                if !(rows::is_text(&ty) || [Type::INT2, Type::INT4, Type::INT8].contains(&ty)) {
                    return Err(unmapped(format!(
                        "key column {name}.{col} is {ty}: the copy resumes only by integer or text keys"
                    )));
                }
                key.push((pk, columns.len()));
            }
            columns.push(Column { name: col, ty });
        }
    }
    if key.is_empty() {
        return Err(unmapped(format!(
            "table {name} has no primary key: the copy cannot resume or verify it by key"
        )));
    }
    key.sort();
    for (col, _) in &pg {
        if !columns.iter().any(|c| c.name == *col) {
            notes.push(format!(
                "{name}.{col} exists only in PostgreSQL: left to its default"
            ));
        }
    }
    let refs = {
        let mut stmt = src.prepare(&format!("PRAGMA foreign_key_list({})", ident(name)))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(2))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    Ok((
        Table {
            name: name.to_string(),
            columns,
            key: key.into_iter().map(|(_, i)| i).collect(),
            seeded: SEEDED.contains(&name),
        },
        refs,
    ))
}

/// `tables` ordered so that every table comes after those it references
/// (ties by name). A cycle is refused.
fn in_key_order(tables: Vec<Table>, deps: Vec<Vec<String>>) -> Result<Vec<Table>, CopyError> {
    let mut pending: Vec<(Table, Vec<String>)> = tables.into_iter().zip(deps).collect();
    let mut done: Vec<Table> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|(t, refs)| {
            refs.iter().all(|r| {
                r == &t.name
                    || done.iter().any(|d| &d.name == r)
                    || !pending.iter().any(|(p, _)| &p.name == r)
            })
        });
        let Some(i) = ready else {
            let names: Vec<&str> = pending.iter().map(|(t, _)| t.name.as_str()).collect();
            return Err(CopyError::Unmapped(format!(
                "the foreign keys of {} form a cycle",
                names.join(", ")
            )));
        };
        done.push(pending.remove(i).0);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_search_tables_are_skipped_with_a_reason() {
        assert!(reason_skipped("sqlite_stat1").is_some());
        assert!(reason_skipped("message_search").is_some());
        assert!(
            reason_skipped("message_search_data")
                .is_some_and(|r| r.starts_with("part of message_search"))
        );
        assert!(reason_skipped("messages").is_none());
        assert!(reason_skipped("message_searcher").is_none());
    }
}
