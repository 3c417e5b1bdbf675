//! One value of a copied row, as both backends agree on it: read from
//! SQLite (converted to the PostgreSQL column's type), bound into
//! PostgreSQL, read back from it, and hashed the same way from either side.

use bytes::BytesMut;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A column value in the PostgreSQL column's terms.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Real(f64),
}

/// The PostgreSQL column types the copy knows how to fill and compare.
pub(super) fn supported(ty: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::BOOL,
        Type::TEXT,
        Type::VARCHAR,
        Type::BYTEA,
        Type::FLOAT8,
    ]
    .contains(ty)
}

/// Whether a key column of this type orders as text (`COLLATE "C"`).
pub(super) fn is_text(ty: &Type) -> bool {
    *ty == Type::TEXT || *ty == Type::VARCHAR
}

/// A SQLite value as the PostgreSQL column `ty` holds it, or why it cannot be.
pub(super) fn from_sqlite(v: ValueRef<'_>, ty: &Type) -> Result<Val, String> {
    let int_range = |i: i64| match *ty {
        Type::INT2 => i16::try_from(i).is_ok(),
        Type::INT4 => i32::try_from(i).is_ok(),
        _ => true,
    };
    Ok(match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) if [Type::INT2, Type::INT4, Type::INT8].contains(ty) => {
            if !int_range(i) {
                return Err(format!("{i} does not fit PostgreSQL's {ty}"));
            }
            Val::Int(i)
        }
        ValueRef::Integer(i) if *ty == Type::BOOL => Val::Bool(i != 0),
        ValueRef::Integer(i) if *ty == Type::FLOAT8 => Val::Real(i as f64),
        ValueRef::Real(f) if *ty == Type::FLOAT8 => Val::Real(f),
        ValueRef::Integer(i) if is_text(ty) => Val::Text(i.to_string()),
        ValueRef::Real(f) if is_text(ty) => Val::Text(f.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) if is_text(ty) => {
            let s = std::str::from_utf8(b).map_err(|_| "text that is not UTF-8".to_string())?;
            if s.contains('\0') {
                return Err("text holding a NUL character (PostgreSQL's text cannot)".into());
            }
            Val::Text(s.to_string())
        }
        ValueRef::Blob(b) | ValueRef::Text(b) if *ty == Type::BYTEA => Val::Bytes(b.to_vec()),
        other => {
            return Err(format!(
                "a {:?} value where PostgreSQL has {ty}",
                other.data_type()
            ));
        }
    })
}

/// Column `i` of a PostgreSQL row of type `ty`.
pub(super) fn from_pg(row: &Row, i: usize, ty: &Type) -> Result<Val, tokio_postgres::Error> {
    fn or_null<T>(v: Option<T>, f: impl FnOnce(T) -> Val) -> Val {
        v.map_or(Val::Null, f)
    }
    Ok(match *ty {
        Type::INT2 => or_null(row.try_get::<_, Option<i16>>(i)?, |v| Val::Int(v.into())),
        Type::INT4 => or_null(row.try_get::<_, Option<i32>>(i)?, |v| Val::Int(v.into())),
        Type::INT8 => or_null(row.try_get::<_, Option<i64>>(i)?, Val::Int),
        Type::BOOL => or_null(row.try_get::<_, Option<bool>>(i)?, Val::Bool),
        Type::BYTEA => or_null(row.try_get::<_, Option<Vec<u8>>>(i)?, Val::Bytes),
        Type::FLOAT8 => or_null(row.try_get::<_, Option<f64>>(i)?, Val::Real),
        _ => or_null(row.try_get::<_, Option<String>>(i)?, Val::Text),
    })
}

impl Val {
    /// Bytes it takes in a batch (how batches are bounded).
    pub(super) fn size(&self) -> usize {
        match self {
            Val::Text(s) => s.len(),
            Val::Bytes(b) => b.len(),
            _ => 8,
        }
    }

    /// A key value as the progress marker keeps it (JSON).
    pub(super) fn to_json(&self) -> serde_json::Value {
        match self {
            Val::Int(i) => (*i).into(),
            Val::Text(s) => s.clone().into(),
            Val::Bool(b) => (*b).into(),
            _ => serde_json::Value::Null,
        }
    }

    /// A key value back from the marker.
    pub(super) fn from_json(v: &serde_json::Value) -> Val {
        match v {
            serde_json::Value::Number(n) => n.as_i64().map_or(Val::Null, Val::Int),
            serde_json::Value::String(s) => Val::Text(s.clone()),
            serde_json::Value::Bool(b) => Val::Bool(*b),
            _ => Val::Null,
        }
    }

    /// Feed the value into a table's checksum: a type tag, then the value
    /// (lengths before text and bytes, so no two rows hash alike by accident).
    pub(super) fn digest(&self, h: &mut Sha256) {
        match self {
            Val::Null => h.update([0]),
            Val::Int(i) => {
                h.update([1]);
                h.update(i.to_be_bytes());
            }
            Val::Bool(b) => h.update([2, u8::from(*b)]),
            Val::Text(s) => {
                h.update([3]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            Val::Bytes(b) => {
                h.update([4]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            Val::Real(f) => {
                h.update([5]);
                h.update(f.to_bits().to_be_bytes());
            }
        }
    }
}

/// A key for messages: `id=5` or `channel="support",folder="INBOX"`.
pub(super) fn show_key(names: &[&str], key: &[Val]) -> String {
    names
        .iter()
        .zip(key)
        .map(|(n, v)| match v {
            Val::Int(i) => format!("{n}={i}"),
            Val::Text(s) => format!("{n}={s:?}"),
            other => format!("{n}={other:?}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A value bound as a parameter or a COPY field of the column's own type.
#[derive(Debug)]
pub(super) struct Typed<'a>(pub &'a Val);

impl ToSql for Typed<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Val::Bool(b) => b.to_sql(ty, out),
            Val::Text(s) => s.as_str().to_sql(ty, out),
            Val::Bytes(b) => b.as_slice().to_sql(ty, out),
            Val::Real(f) => f.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's loose values become the PostgreSQL column's type, and what
    /// cannot be stored there is refused with the reason.
    #[test]
    fn sqlite_values_take_the_postgres_column_type() {
        assert_eq!(
            from_sqlite(ValueRef::Integer(1), &Type::BOOL),
            Ok(Val::Bool(true))
        );
        assert_eq!(
            from_sqlite(ValueRef::Text(b"raw"), &Type::BYTEA),
            Ok(Val::Bytes(b"raw".to_vec()))
        );
        assert_eq!(from_sqlite(ValueRef::Null, &Type::INT8), Ok(Val::Null));
        assert!(
            from_sqlite(ValueRef::Integer(1 << 40), &Type::INT4)
                .unwrap_err()
                .contains("does not fit")
        );
        assert!(
            from_sqlite(ValueRef::Text(b"a\0b"), &Type::TEXT)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(from_sqlite(ValueRef::Blob(b"x"), &Type::INT8).is_err());
    }

    /// Equal rows hash alike; a NULL differs from an empty text, and a
    /// value moved across a column boundary changes the hash.
    #[test]
    fn the_checksum_tells_nulls_types_and_boundaries_apart() {
        let hash = |row: &[Val]| {
            let mut h = Sha256::new();
            row.iter().for_each(|v| v.digest(&mut h));
            hex::encode(h.finalize())
        };
        let t = |s: &str| Val::Text(s.into());
        assert_eq!(hash(&[t("ab"), t("c")]), hash(&[t("ab"), t("c")]));
        assert_ne!(hash(&[t("ab"), t("c")]), hash(&[t("a"), t("bc")]));
        assert_ne!(hash(&[Val::Null]), hash(&[t("")]));
        assert_ne!(hash(&[Val::Int(1)]), hash(&[Val::Bool(true)]));
        assert_ne!(hash(&[Val::Bytes(b"x".to_vec())]), hash(&[t("x")]));
    }
}
