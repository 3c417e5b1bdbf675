//! One declaration per configuration key: [`config_section!`] declares a
//! table's struct, each field with its documentation, type and default, and
//! generates from it the `Default` impl and the reader (`Self::read`), which
//! asks the table for each key in declaration order, so that `read.rs` knows
//! it (unknown keys, with suggestions, are those never asked for) and reports
//! a bad value at its `FILE:LINE:COL` before falling back to the default.
//! For the tests it also lists the table's keys (`KEYS`), which
//! `config/postdesk.example.toml` must show, no more and no fewer.
//!
//! It must not check anything beyond one value's type and range: what spans
//! keys or tables is `validate.rs`'s.

/// Declare a configuration table once:
///
/// ```text
/// config_section! {
///     /// `[log]`.
///     #[derive(Debug, Clone, PartialEq, Eq)]
///     pub struct LogConfig {
///         /// Output format.
///         pub format: LogFormat = LogFormat::Human,
///         pub level: String = "info".to_owned() => map trim_level,
///         pub id: String = String::new() => required,
///         pub kind: Kind = Kind::Text => key "type",
///         pub sub: Sub = Sub::default() => section Sub::read,
///         pub other: Option<Other> = None => read read_other,
///         pub custom: Map = Map::new() => rest read_rest,
///     }
/// }
/// ```
///
/// The key is the field's name. A plain field reads its key (absent or
/// invalid: the default); `=> required` reports it missing at the table;
/// `=> key "k"` reads key `k` instead; `=> map f` passes the value read (or
/// the default) through `f`; `=> section f` and `=> optional_section f`
/// read the sub-table with `f` (absent: the default, or `None`); `=> read f`
/// leaves the key to `f(reader, table, key)`, which must ask for it itself;
/// `=> rest f` is not a key: `f(reader, table)` reads the keys of the table
/// not asked for before it (custom keys), so it comes last.
///
/// `KEYS` (tests only) lists the table's keys in declaration order, every
/// field's but a `rest` one; `CUSTOM_KEYS` says whether there is one.
macro_rules! config_section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident : $ty:ty = $default:expr $(=> $how:ident $($with:expr)?)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                }
            }
        }

        impl $name {
            /// The keys of this table, in declaration order.
            #[cfg(test)]
            pub(in $crate::config) const KEYS: &'static [&'static str] =
                $crate::config::section::config_section!(
                    @keys [] $($field $($how $($with)?)?;)*
                );

            /// Whether the table takes keys besides `KEYS` (a `rest` field).
            #[cfg(test)]
            pub(in $crate::config) const CUSTOM_KEYS: bool =
                false $($(|| $crate::config::section::config_section!(@rest $how))?)*;

            /// Read this table's keys from `t` (fields in declaration order).
            pub(in $crate::config) fn read(
                r: &mut $crate::config::read::Reader<'_>,
                t: &mut $crate::config::read::Table<'_, '_>,
            ) -> Self {
                Self {
                    $($field: $crate::config::section::config_section!(
                        @key r, t, $field, $default $(, $how $($with)?)?
                    ),)*
                }
            }
        }
    };
    (@keys [$($k:expr),*]) => {
        &[$($k),*]
    };
    (@keys [$($k:expr),*] $field:ident rest $($with:expr)?; $($tail:tt)*) => {
        $crate::config::section::config_section!(@keys [$($k),*] $($tail)*)
    };
    (@keys [$($k:expr),*] $field:ident key $key:expr; $($tail:tt)*) => {
        $crate::config::section::config_section!(@keys [$($k,)* $key] $($tail)*)
    };
    (@keys [$($k:expr),*] $field:ident $($how:ident $($with:expr)?)?; $($tail:tt)*) => {
        $crate::config::section::config_section!(@keys [$($k,)* stringify!($field)] $($tail)*)
    };
    (@rest rest) => {
        true
    };
    (@rest $how:ident) => {
        false
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr) => {
        $r.key($t, stringify!($field)).unwrap_or_else(|| $default)
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, required) => {
        $r.required($t, stringify!($field)).unwrap_or_else(|| $default)
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, key $key:expr) => {
        $r.key($t, $key).unwrap_or_else(|| $default)
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, map $map:expr) => {
        ($map)($r.key($t, stringify!($field)).unwrap_or_else(|| $default))
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, read $read:expr) => {
        ($read)($r, $t, stringify!($field))
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, section $read:expr) => {
        $r.section($t, stringify!($field), $read)
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, optional_section $read:expr) => {
        $r.optional_section($t, stringify!($field), $read)
    };
    (@key $r:ident, $t:ident, $field:ident, $default:expr, rest $read:expr) => {
        ($read)($r, $t)
    };
}

pub(super) use config_section;
