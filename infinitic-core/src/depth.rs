//! Enforcing the depth limit on received bytes without recursing: an iterative scanner of
//! MessagePack. Its counterpart on the sending side is [`crate::bounded`]; the tests below check
//! the two together (what the encoder accepts, the scanner accepts).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{EncodeError, LimitError, Limits};
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
