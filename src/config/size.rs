//! Sizes in configuration: `"10GiB"`, `"500MB"`, `"64 KiB"`, `"4096"` or a bare integer of bytes.
//! Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, decimal ones (`kB`/`KB`, `MB`,
//! `GB`, `TB`) powers of 1000; `B` or no unit is bytes.

use serde::Deserialize;

/// A size as written in TOML or an environment variable: text with a unit, or an integer of bytes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    /// The size in bytes, or why it is not one (the caller names the key).
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(n) => Ok(*n),
            RawSize::Text(t) => parse(t),
        }
    }
}

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses `"<integer> <unit>"` (space optional, unit case-insensitive).
pub fn parse(text: &str) -> Result<u64, String> {
    let shown = format!("{:?}", crate::secret::excerpt(text, 64));
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim().to_ascii_lowercase();
    let number: u64 = number.parse().map_err(|_| {
        format!("{shown} is not a size: write a whole number and a unit, e.g. \"10GiB\" or \"500MB\"")
    })?;
    let (_, factor) = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .ok_or_else(|| format!("{shown} has an unknown unit: use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"))?;
    number
        .checked_mul(*factor)
        .ok_or_else(|| format!("{shown} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse("10GiB"), Ok(10 << 30));
        assert_eq!(parse("500MB"), Ok(500_000_000));
        assert_eq!(parse(" 64 kib "), Ok(64 << 10));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("7B"), Ok(7));
        assert_eq!(RawSize::Bytes(12).bytes(), Ok(12));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(parse("lots").unwrap_err().contains("not a size"));
        assert!(parse("-1GiB").unwrap_err().contains("not a size"));
        assert!(parse("1.5GiB").unwrap_err().contains("unknown unit"));
        assert!(parse("3 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999TiB").unwrap_err().contains("too large"));
    }
}
