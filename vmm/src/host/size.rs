//! Parsing of user-given byte sizes (`512M`, `4G`, `1T`, `4096`).

use thiserror::Error;

/// Why a size string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("size is empty")]
    Empty,
    #[error("size `{0}` is not a number with an optional K/M/G/T suffix")]
    Malformed(String),
    #[error("size `{0}` does not fit in 64 bits")]
    Overflow(String),
    #[error("size `{0}` is negative: sizes are positive byte counts (e.g. 512M, 4G)")]
    Negative(String),
}

/// Parses a size: decimal digits, optionally followed by one of `K M G T`
/// (binary multiples, case-insensitive, an optional trailing `B` or `iB`).
/// The grammar is the guests' (`abi::cmdline`); this adds host error texts.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    use abi::cmdline::SizeError as E;
    if text.trim_start().starts_with('-') {
        return Err(SizeError::Negative(text.to_string()));
    }
    abi::cmdline::parse_size(text).map_err(|e| match e {
        E::Empty => SizeError::Empty,
        E::Malformed => SizeError::Malformed(text.to_string()),
        E::Overflow => SizeError::Overflow(text.to_string()),
    })
}

/// Formats a byte count with the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (unit, shift) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{}", bytes >> shift, unit);
        }
    }
    format!("{bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("-1G"), Err(SizeError::Negative("-1G".into())));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size(" 8k "), Ok(8192));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("G"), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("4X"), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("-4G"), Err(SizeError::Negative(_))));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::Malformed(_))));
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn format_round_trips(v in 1u64..(1 << 50)) {
            prop_assert_eq!(parse_size(&format_size(v)), Ok(v));
        }
    }
}
