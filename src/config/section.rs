//! One declaration per configuration key: [`config_section!`] declares a
//! table's struct, each field with its documentation, type and default, and
//! generates from it the `Default` impl and the reader (`Self::read`), which
//! asks the table for each key in declaration order, so that `read.rs` knows
//! it (unknown keys, with suggestions, are those never asked for) and reports
//! a bad value at its `FILE:LINE:COL` before falling back to the default.
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
///     }
/// }
/// ```
///
/// The key is the field's name. A plain field reads its key (absent or
/// invalid: the default); `=> required` reports it missing at the table;
/// `=> key "k"` reads key `k` instead; `=> map f` passes the value read (or
/// the default) through `f`; `=> section f` and `=> optional_section f`
/// read the sub-table with `f` (absent: the default, or `None`); `=> read f`
/// leaves the key to `f(reader, table, key)`, which must ask for it itself.
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
}

pub(super) use config_section;
