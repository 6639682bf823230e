//! Signal filters as data: which signals a receive takes (an enum variant, fields compared
//! with plain values), recorded with the receive in history and shown in the status. They are
//! evaluated on a value's named MessagePack form, where struct fields and enum variants have
//! their names.

use crate::Limits;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A condition on a signal's value, as data: recorded with the receive in history, shown in
/// the instance's status, and evaluated on the value's named form (struct fields and enum
/// variants by name).
///
/// ```
/// use infinitic_core::workflow::Filter;
/// let big_approvals = Filter::variant("Approved").and(Filter::field("Approved.amount").ge(1_000));
/// assert_eq!(
///     big_approvals.to_string(),
///     "(is Approved and Approved.amount >= 1000)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// The value is this variant of an enum.
    Variant(String),
    /// The field at `path` (field names joined by dots, `"order.total"`) compares with
    /// `value` by `op`.
    Field {
        /// Field names joined by dots; an enum variant's name is one step of the path.
        path: String,
        /// How the field compares with `value`.
        op: Compare,
        /// What it is compared with.
        value: Scalar,
    },
    /// Every one of these holds.
    All(Vec<Filter>),
    /// At least one of these holds.
    Any(Vec<Filter>),
    /// This does not hold.
    Not(Box<Filter>),
}

/// A comparison in a [`Filter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A plain value a field is compared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A string (also an enum's unit variant).
    Str(String),
}

macro_rules! scalar_from {
    ($($t:ty => $variant:ident as $as:ty),*) => {$(
        impl From<$t> for Scalar {
            fn from(value: $t) -> Self {
                Scalar::$variant(value as $as)
            }
        }
    )*};
}
scalar_from!(i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
    u8 => UInt as u64, u16 => UInt as u64, u32 => UInt as u64, u64 => UInt as u64);

impl From<bool> for Scalar {
    fn from(value: bool) -> Self {
        Scalar::Bool(value)
    }
}

impl From<&str> for Scalar {
    fn from(value: &str) -> Self {
        Scalar::Str(value.to_string())
    }
}

impl From<String> for Scalar {
    fn from(value: String) -> Self {
        Scalar::Str(value)
    }
}

/// A field of the value, to compare ([`Filter::field`]).
#[derive(Clone, Debug)]
pub struct FieldFilter(String);

macro_rules! comparisons {
    ($($name:ident => $op:ident, $doc:literal;)*) => {$(
        #[doc = $doc]
        pub fn $name(self, value: impl Into<Scalar>) -> Filter {
            Filter::Field { path: self.0, op: Compare::$op, value: value.into() }
        }
    )*};
}

impl FieldFilter {
    comparisons! {
        eq => Eq, "The field equals `value`.";
        ne => Ne, "The field differs from `value` (or is missing).";
        lt => Lt, "The field is less than `value`.";
        le => Le, "The field is at most `value`.";
        gt => Gt, "The field is greater than `value`.";
        ge => Ge, "The field is at least `value`.";
    }
}

impl Filter {
    /// The value is the enum variant `name`.
    pub fn variant(name: impl Into<String>) -> Self {
        Filter::Variant(name.into())
    }

    /// A field of the value, by path (`"order.total"`); compare it with [`FieldFilter::eq`]
    /// and the like.
    pub fn field(path: impl Into<String>) -> FieldFilter {
        FieldFilter(path.into())
    }

    /// This and `other` both hold.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::All(mut all) => {
                all.push(other);
                Filter::All(all)
            }
            one => Filter::All(vec![one, other]),
        }
    }

    /// This or `other` holds.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Any(mut any) => {
                any.push(other);
                Filter::Any(any)
            }
            one => Filter::Any(vec![one, other]),
        }
    }

    /// Whether `value` (a value's named form) passes.
    fn accepts(&self, value: &rmpv::Value) -> bool {
        match self {
            Filter::Variant(name) => variant_of(value) == Some(name.as_str()),
            Filter::Field {
                path,
                op,
                value: expected,
            } => {
                // An empty path is the value itself (a channel of plain strings, say).
                let found = match path.as_str() {
                    "" => Some(value),
                    path => path.split('.').try_fold(value, field_of),
                };
                match found {
                    Some(found) => compare(found, *op, expected),
                    None => *op == Compare::Ne,
                }
            }
            Filter::All(all) => all.iter().all(|f| f.accepts(value)),
            Filter::Any(any) => any.iter().any(|f| f.accepts(value)),
            Filter::Not(filter) => !filter.accepts(value),
        }
    }

    /// Whether the encoded value `bytes` decodes as `T` and passes.
    pub(crate) fn accepts_encoded<T: Serialize + DeserializeOwned>(
        filter: Option<&Filter>,
        bytes: &[u8],
    ) -> bool {
        let Ok(value) = Limits::current().decode::<T>(bytes) else {
            return false;
        };
        let Some(filter) = filter else {
            return true;
        };
        let Ok(named) = rmp_serde::to_vec_named(&value) else {
            return false;
        };
        rmpv::decode::read_value(&mut named.as_slice()).is_ok_and(|v| filter.accepts(&v))
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, all: &[Filter], word: &str| {
            f.write_str("(")?;
            for (i, filter) in all.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                write!(f, "{filter}")?;
            }
            f.write_str(")")
        };
        match self {
            Filter::Variant(name) => write!(f, "is {name}"),
            Filter::Field { path, op, value } => {
                let op = match op {
                    Compare::Eq => "==",
                    Compare::Ne => "!=",
                    Compare::Lt => "<",
                    Compare::Le => "<=",
                    Compare::Gt => ">",
                    Compare::Ge => ">=",
                };
                match value {
                    Scalar::Bool(b) => write!(f, "{path} {op} {b}"),
                    Scalar::Int(n) => write!(f, "{path} {op} {n}"),
                    Scalar::UInt(n) => write!(f, "{path} {op} {n}"),
                    Scalar::Str(s) => write!(f, "{path} {op} {s:?}"),
                }
            }
            Filter::All(all) => join(f, all, "and"),
            Filter::Any(any) => join(f, any, "or"),
            Filter::Not(filter) => write!(f, "not {filter}"),
        }
    }
}

/// The variant an enum value is, in its named form: a unit variant is its name, a variant
/// with data a one-entry map from its name.
fn variant_of(value: &rmpv::Value) -> Option<&str> {
    match value {
        rmpv::Value::String(name) => name.as_str(),
        rmpv::Value::Map(entries) if entries.len() == 1 => entries[0].0.as_str(),
        _ => None,
    }
}

fn field_of<'v>(value: &'v rmpv::Value, name: &str) -> Option<&'v rmpv::Value> {
    match value {
        rmpv::Value::Map(entries) => entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn compare(found: &rmpv::Value, op: Compare, expected: &Scalar) -> bool {
    use std::cmp::Ordering;
    let ordering = match (found, expected) {
        (rmpv::Value::Boolean(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        (rmpv::Value::Integer(a), Scalar::Int(b)) => integer(a).map(|a| a.cmp(&i128::from(*b))),
        (rmpv::Value::Integer(a), Scalar::UInt(b)) => integer(a).map(|a| a.cmp(&i128::from(*b))),
        (rmpv::Value::String(a), Scalar::Str(b)) => a.as_str().map(|a| a.cmp(b.as_str())),
        // A unit variant compared by name.
        (rmpv::Value::Map(_), Scalar::Str(b)) => variant_of(found).map(|a| a.cmp(b.as_str())),
        _ => None,
    };
    match ordering {
        Some(ordering) => match op {
            Compare::Eq => ordering == Ordering::Equal,
            Compare::Ne => ordering != Ordering::Equal,
            Compare::Lt => ordering == Ordering::Less,
            Compare::Le => ordering != Ordering::Greater,
            Compare::Gt => ordering == Ordering::Greater,
            Compare::Ge => ordering != Ordering::Less,
        },
        // Values of different kinds are only different.
        None => op == Compare::Ne,
    }
}

fn integer(value: &rmpv::Integer) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}
