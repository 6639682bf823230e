//! Enforcing [`Limits`] on the sending side: a serializer adapter that stops a value's recursion
//! at the depth limit and its output at the size limit, so a huge or deeply recursive value is
//! refused before it is recorded, without overflowing the stack or memory. The receiving side
//! is [`crate::depth`].

use crate::limits::{EncodeError, LimitError, Limits};
use crate::{CodecError, Payload};
use serde::ser::{self, Serialize, Serializer};
use std::cell::Cell;
use std::io;

/// Encodes `value` as [`crate::encode`] does, within `limits`.
pub(crate) fn encode_within<T: Serialize + ?Sized>(
    value: &T,
    limits: &Limits,
) -> Result<Payload, EncodeError> {
    let mut out = Bounded {
        bytes: Vec::new(),
        limit: limits.max_payload_bytes,
        overflowed: false,
    };
    let too_deep = Cell::new(false);
    let guard = Guard {
        depth: 0,
        max: limits.max_depth,
        too_deep: &too_deep,
    };
    let result = guard
        .wrap(value)
        .serialize(&mut rmp_serde::Serializer::new(&mut out));
    match result {
        Ok(()) => Ok(out.bytes),
        Err(_) if out.overflowed => Err(LimitError::TooLarge {
            size: None,
            limit: limits.max_payload_bytes,
        }
        .into()),
        Err(_) if too_deep.get() => Err(LimitError::TooDeep {
            limit: limits.max_depth,
        }
        .into()),
        Err(e) => Err(CodecError(e.to_string()).into()),
    }
}

/// A writer that fails instead of growing past `limit` bytes.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("payload size limit reached"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The nesting depth reached so far while serializing, shared by the adapters below.
#[derive(Clone, Copy)]
struct Guard<'g> {
    depth: usize,
    max: usize,
    too_deep: &'g Cell<bool>,
}

impl<'g> Guard<'g> {
    /// One more nesting of `levels` levels, or an error once past the limit.
    fn enter<E: ser::Error>(self, levels: usize) -> Result<Guard<'g>, E> {
        let depth = self.depth + levels;
        if depth > self.max {
            self.too_deep.set(true);
            return Err(E::custom("depth limit reached"));
        }
        Ok(Guard { depth, ..self })
    }

    fn wrap<'v, T: ?Sized>(self, value: &'v T) -> Nested<'v, 'g, T> {
        Nested { value, guard: self }
    }
}

/// A value serialized through [`Depth`].
struct Nested<'v, 'g, T: ?Sized> {
    value: &'v T,
    guard: Guard<'g>,
}

impl<T: Serialize + ?Sized> Serialize for Nested<'_, '_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Depth {
            inner: serializer,
            guard: self.guard,
        })
    }
}

/// A serializer that counts nesting and forwards everything to `inner`.
struct Depth<'g, S> {
    inner: S,
    guard: Guard<'g>,
}

/// A compound (sequence, map, struct, ...) being serialized through [`Depth`]: its elements
/// are wrapped one level deeper.
struct Compound<'g, C> {
    inner: C,
    guard: Guard<'g>,
}

macro_rules! forward_scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.inner.$method(v)
        })*
    };
}

impl<'g, S: Serializer> Serializer for Depth<'g, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'g, S::SerializeSeq>;
    type SerializeTuple = Compound<'g, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'g, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'g, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'g, S::SerializeMap>;
    type SerializeStruct = Compound<'g, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'g, S::SerializeStructVariant>;

    forward_scalars!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let guard = self.guard.enter(1)?;
        self.inner.serialize_some(&guard.wrap(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let guard = self.guard.enter(1)?;
        self.inner
            .serialize_newtype_struct(name, &guard.wrap(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let guard = self.guard.enter(1)?;
        self.inner
            .serialize_newtype_variant(name, index, variant, &guard.wrap(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let guard = self.guard.enter(1)?;
        let inner = self.inner.serialize_seq(len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let guard = self.guard.enter(1)?;
        let inner = self.inner.serialize_tuple(len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let guard = self.guard.enter(1)?;
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let guard = self.guard.enter(2)?;
        let inner = self
            .inner
            .serialize_tuple_variant(name, index, variant, len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let guard = self.guard.enter(1)?;
        let inner = self.inner.serialize_map(len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let guard = self.guard.enter(1)?;
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(Compound { inner, guard })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let guard = self.guard.enter(2)?;
        let inner = self
            .inner
            .serialize_struct_variant(name, index, variant, len)?;
        Ok(Compound { inner, guard })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The compounds whose elements come one by one: each is wrapped one level deeper.
macro_rules! forward_elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                self.inner.$method(&self.guard.wrap(value))
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

forward_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// The compounds whose fields come with their names (structs and struct variants).
macro_rules! forward_named_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                self.inner.serialize_field(key, &self.guard.wrap(value))
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

forward_named_fields!(SerializeStruct, SerializeStructVariant);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(&self.guard.wrap(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_value(&self.guard.wrap(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}
