//! Enforcing [`Limits`] without recursing: an iterative scanner of MessagePack bytes (the
//! receiving side) and a serializer adapter that stops a value's recursion at the depth limit
//! and its output at the size limit (the sending side).

use crate::limits::{EncodeError, LimitError, Limits};
use crate::{CodecError, Payload};
use serde::ser::{self, Serialize, Serializer};
use std::cell::Cell;
use std::io;

/// Why [`check_depth`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// Nested deeper than the limit.
    TooDeep,
    /// Not one complete MessagePack value: truncated, or a reserved byte, at this offset.
    Malformed { offset: usize },
}

/// Checks that `bytes` starts with one complete MessagePack value whose containers (arrays,
/// maps, including empty ones) nest at most `max_depth` deep. Bytes after that value are not
/// looked at (the decoder does not read them either).
///
/// Iterative, with memory proportional to the depth reached (at most `max_depth + 1`), and
/// time linear in the bytes: every declared element needs at least one byte, so a header
/// claiming four billion elements fails as soon as the bytes run out.
pub(crate) fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), ScanError> {
    // Values still to read in each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    loop {
        let (header, children) = header(bytes, pos)?;
        pos = pos
            .checked_add(header)
            .filter(|&end| end <= bytes.len())
            .ok_or(ScanError::Malformed {
                offset: bytes.len(),
            })?;
        if let Some(children) = children {
            if open.len() >= max_depth {
                return Err(ScanError::TooDeep);
            }
            if children > 0 {
                open.push(children);
                continue;
            }
        }
        // A value ended: close every container it completes.
        loop {
            match open.last_mut() {
                None => return Ok(()),
                Some(remaining) => {
                    *remaining -= 1;
                    if *remaining > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// The value at `pos`: how many bytes it takes besides its elements, and how many elements it
/// holds if it is a container (a map's keys and values both count).
fn header(bytes: &[u8], pos: usize) -> Result<(usize, Option<u64>), ScanError> {
    let truncated = ScanError::Malformed {
        offset: bytes.len(),
    };
    let marker = *bytes.get(pos).ok_or(truncated.clone())?;
    // A big-endian length of `n` bytes right after the marker.
    let length = |n: usize| -> Result<u64, ScanError> {
        let start = pos + 1;
        let field = bytes.get(start..start + n).ok_or(truncated.clone())?;
        Ok(field.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let sized = |n: usize, extra: usize| -> Result<(usize, Option<u64>), ScanError> {
        let len = usize::try_from(length(n)?).map_err(|_| truncated.clone())?;
        Ok((
            (1 + n + extra).checked_add(len).ok_or(truncated.clone())?,
            None,
        ))
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, None),
        0x80..=0x8f => (1, Some(2 * u64::from(marker & 0x0f))),
        0x90..=0x9f => (1, Some(u64::from(marker & 0x0f))),
        0xa0..=0xbf => (1 + usize::from(marker & 0x1f), None),
        0xc1 => return Err(ScanError::Malformed { offset: pos }),
        0xc4 | 0xd9 => sized(1, 0)?,
        0xc5 | 0xda => sized(2, 0)?,
        0xc6 | 0xdb => sized(4, 0)?,
        0xc7 => sized(1, 1)?,
        0xc8 => sized(2, 1)?,
        0xc9 => sized(4, 1)?,
        0xcc | 0xd0 => (2, None),
        0xcd | 0xd1 => (3, None),
        0xca | 0xce | 0xd2 => (5, None),
        0xcb | 0xcf | 0xd3 => (9, None),
        0xd4 => (3, None),
        0xd5 => (4, None),
        0xd6 => (6, None),
        0xd7 => (10, None),
        0xd8 => (18, None),
        0xdc => (3, Some(length(2)?)),
        0xdd => (5, Some(length(4)?)),
        0xde => (3, Some(2 * length(2)?)),
        0xdf => (5, Some(2 * length(4)?)),
    })
}

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

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&self.guard.wrap(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&self.guard.wrap(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&self.guard.wrap(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&self.guard.wrap(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

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

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<'_, C> {
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

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<'_, C> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Nest {
        Leaf,
        Node(Box<Nest>),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Wrapped {
        Leaf,
        Node { inner: Box<Wrapped>, tag: u8 },
    }

    /// Builds `levels` nodes around a leaf without recursing.
    fn nest(levels: usize) -> Nest {
        (0..levels).fold(Nest::Leaf, |inner, _| Nest::Node(Box::new(inner)))
    }

    /// Takes a deep value apart without recursing (the derived drop would).
    fn drop_nest(mut nest: Nest) {
        while let Nest::Node(inner) = nest {
            nest = *inner;
        }
    }

    /// `levels` nested one-element arrays around a `nil`.
    fn arrays(levels: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; levels];
        bytes.push(0xc0);
        bytes
    }

    fn limits(max_depth: usize) -> Limits {
        Limits {
            max_depth,
            ..Limits::default()
        }
    }

    #[test]
    fn depth_exactly_at_the_limit_passes_one_over_fails() {
        for max in [0, 1, 2, 7, 128] {
            assert_eq!(check_depth(&arrays(max), max), Ok(()), "max {max}");
            assert_eq!(
                check_depth(&arrays(max + 1), max),
                Err(ScanError::TooDeep),
                "max {max}"
            );
        }
    }

    #[test]
    fn a_million_levels_are_refused_without_recursing() {
        let bytes = arrays(1_000_000);
        assert_eq!(check_depth(&bytes, 128), Err(ScanError::TooDeep));
        // Even with no effective limit: the scan is iterative, the bytes just run out.
        assert_eq!(
            check_depth(&bytes[..bytes.len() - 1], usize::MAX),
            Err(ScanError::Malformed {
                offset: bytes.len() - 1
            })
        );
        assert_eq!(check_depth(&bytes, usize::MAX), Ok(()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut map = BTreeMap::new();
        map.insert("key".to_string(), vec![Some(1.5f64), None]);
        let value = (
            u64::MAX,
            -70_000i64,
            "a string longer than thirty-one bytes, for str8",
            vec![0u8; 300],
            map,
            Wrapped::Node {
                inner: Box::new(Wrapped::Leaf),
                tag: 200,
            },
            (true, false, 'x', 1.25f32),
        );
        let bytes = crate::encode(&value).unwrap();
        assert_eq!(check_depth(&bytes, 16), Ok(()));
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    check_depth(&bytes[..len], 16),
                    Err(ScanError::Malformed { .. })
                ),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn every_format_is_measured() {
        // (bytes, depth): fixext, ext8, bin16, str32, array16, map32 of one entry.
        let cases: &[(&[u8], usize)] = &[
            (&[0xd4, 1, 0], 0),
            (&[0xc7, 2, 5, 0, 0], 0),
            (&[0xc5, 0, 1, 9], 0),
            (&[0xdb, 0, 0, 0, 1, b'a'], 0),
            (&[0xdc, 0, 2, 0x90, 0x80], 2),
            (&[0xdf, 0, 0, 0, 1, 1, 0x91, 0xc0], 2),
        ];
        for (bytes, depth) in cases {
            assert_eq!(check_depth(bytes, *depth), Ok(()), "{bytes:02x?}");
            if *depth > 0 {
                assert!(check_depth(bytes, depth - 1).is_err(), "{bytes:02x?}");
            }
        }
        assert_eq!(
            check_depth(&[0xc1], 8),
            Err(ScanError::Malformed { offset: 0 })
        );
        // Four billion elements announced, none there.
        assert!(check_depth(&[0xdd, 0xff, 0xff, 0xff, 0xff], 8).is_err());
    }

    #[test]
    fn enum_variants_nest_in_the_bytes() {
        let value = nest(10);
        let bytes = crate::encode(&value).unwrap();
        assert_eq!(check_depth(&bytes, 10), Ok(()));
        assert!(check_depth(&bytes, 9).is_err());
        drop_nest(value);

        // A struct variant is a map holding an array: two levels each.
        let value = (0..5).fold(Wrapped::Leaf, |inner, tag| Wrapped::Node {
            inner: Box::new(inner),
            tag,
        });
        let bytes = crate::encode(&value).unwrap();
        assert_eq!(check_depth(&bytes, 10), Ok(()));
        assert!(check_depth(&bytes, 9).is_err());
    }

    #[test]
    fn the_encoder_stops_at_the_depth_limit_without_overflowing() {
        // Deep enough to overflow a 2 MiB stack if serialized recursively to the end.
        let value = nest(20_000);
        assert_eq!(
            limits(128).encode(&value),
            Err(EncodeError::Limit(LimitError::TooDeep { limit: 128 }))
        );
        drop_nest(value);
    }

    #[test]
    fn what_the_encoder_accepts_the_scanner_accepts() {
        let value = nest(7);
        let bytes = limits(7).encode(&value).unwrap();
        assert_eq!(bytes, crate::encode(&value).unwrap());
        assert_eq!(check_depth(&bytes, 7), Ok(()));
        assert!(limits(6).encode(&value).is_err());

        let value = Wrapped::Node {
            inner: Box::new(Wrapped::Leaf),
            tag: 1,
        };
        assert_eq!(limits(2).encode(&value), Ok(crate::encode(&value).unwrap()));
        assert!(limits(1).encode(&value).is_err());
        // `Some` and newtypes count when sending, though stored flat.
        assert!(limits(1).encode(&Some(Some(1u8))).is_err());
        assert_eq!(
            check_depth(&crate::encode(&Some(Some(1u8))).unwrap(), 0),
            Ok(())
        );
    }

    #[test]
    fn the_encoder_stops_at_the_size_limit() {
        let limits = Limits {
            max_payload_bytes: 1000,
            ..Limits::default()
        };
        assert_eq!(
            limits.encode(&vec![7u8; 2000]),
            Err(EncodeError::Limit(LimitError::TooLarge {
                size: None,
                limit: 1000
            }))
        );
        let fits = limits.encode(&vec![7u8; 990]).unwrap();
        assert!(fits.len() <= 1000);
        assert_eq!(limits.check(&fits), Ok(()));
        assert_eq!(
            limits.check(&[0u8; 1001]),
            Err(LimitError::TooLarge {
                size: Some(1001),
                limit: 1000
            })
        );
    }
}
