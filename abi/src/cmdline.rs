//! Command-line vocabulary shared by the VMM, the firmware and the kernel:
//! `key=value` words separated by spaces, and byte sizes with binary
//! suffixes (`512M`, `4G`, `1T`).

/// Why a size did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    Empty,
    Malformed,
    Overflow,
}

/// Parses decimal digits with an optional `K`/`M`/`G`/`T` suffix (binary,
/// case-insensitive; `B`, `KB`, `KiB`... accepted).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::Malformed);
    }
    let shift = match suffix.as_bytes() {
        [] | [b'b' | b'B'] => 0,
        [u, rest @ ..] => {
            let shift = match u.to_ascii_uppercase() {
                b'K' => 10,
                b'M' => 20,
                b'G' => 30,
                b'T' => 40,
                _ => return Err(SizeError::Malformed),
            };
            match rest {
                [] | [b'b' | b'B'] => shift,
                [b'i' | b'I', b'b' | b'B'] => shift,
                _ => return Err(SizeError::Malformed),
            }
        }
    };
    let mut value: u64 = 0;
    for d in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add((d - b'0') as u64))
            .ok_or(SizeError::Overflow)?;
    }
    value.checked_mul(1u64 << shift).ok_or(SizeError::Overflow)
}

/// The value of the last `key=value` word for `key` (a bare `key` yields "").
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| match word.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if word == key => Some(""),
            _ => None,
        })
        .next_back()
}

/// The command line of the next kernel of a kexec chain, written into
/// `buf`: this one's words, without `kexec_generation=`, then
/// `kexec_generation=GENERATION`. Returns its length, or `None` when it
/// does not fit.
pub fn next_generation(cmdline: &str, generation: u64, buf: &mut [u8]) -> Option<usize> {
    use core::fmt::Write;
    struct Out<'a> {
        buf: &'a mut [u8],
        len: usize,
    }
    impl Write for Out<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut out = Out { buf, len: 0 };
    for word in cmdline
        .split_ascii_whitespace()
        .filter(|w| !w.starts_with("kexec_generation="))
    {
        write!(out, "{word} ").ok()?;
    }
    write!(out, "kexec_generation={generation}").ok()?;
    Some(out.len)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("7"), Ok(7));
        assert_eq!(parse_size("1Tb"), Ok(1 << 40));
        assert_eq!(parse_size("M"), Err(SizeError::Malformed));
        assert_eq!(parse_size("4Q"), Err(SizeError::Malformed));
        assert_eq!(parse_size("4MM"), Err(SizeError::Malformed));
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("20000000000T"), Err(SizeError::Overflow));
    }

    #[test]
    fn words() {
        let c = "fw.accept=none  workload=64M quiet fw.accept=all";
        assert_eq!(get(c, "fw.accept"), Some("all"));
        assert_eq!(get(c, "workload"), Some("64M"));
        assert_eq!(get(c, "quiet"), Some(""));
        assert_eq!(get(c, "missing"), None);
    }

    #[test]
    fn the_next_generation_replaces_its_number() {
        let mut buf = [0u8; 64];
        let n = next_generation("kexec=3  workload=16M kexec_generation=1", 2, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"kexec=3 workload=16M kexec_generation=2");
        assert_eq!(next_generation("x", 1, &mut [0u8; 8]), None, "too long");
    }
}
