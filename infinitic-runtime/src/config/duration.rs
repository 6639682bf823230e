//! Durations in a configuration file: an integer and a unit, `"500ms"`, `"60s"`, `"5m"`,
//! `"2h"`, `"7d"`. The unit is required: a bare number is ambiguous (seconds? milliseconds?),
//! and guessing wrong by a factor of 1,000 is the kind of mistake a file should not allow.

use serde::Deserializer;
use std::time::Duration;

/// Parses `"<integer><unit>"` with the unit one of `ms`, `s`, `m`, `h`, `d`.
///
/// ```
/// use infinitic_runtime::config::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 24 * 3600)));
/// assert!(parse_duration("60").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let expected = || {
        format!("`{text}` is not a duration: write a whole number and a unit (ms, s, m, h, d), as \"500ms\" or \"60s\"")
    };
    let number: u64 = number.parse().map_err(|_| expected())?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Serde helper for `Option<Duration>` fields written as strings. A number is refused with
/// the form expected (its unit would be a guess).
pub(super) fn option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_any(DurationVisitor).map(Some)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration with a unit, as \"500ms\" or \"60s\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_read() {
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 1d "), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_number_without_unit_or_with_another_unit_is_refused_with_the_form_expected() {
        for bad in ["60", "s", "", "1.5s", "-1s", "10 sec", "10us", "1e3ms"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("\"500ms\""), "{bad}: {error}");
        }
        assert!(parse_duration("99999999999999999d")
            .expect_err("overflow")
            .contains("too long"));
    }
}
