//! Linux's unaccepted-memory table (`struct efi_unaccepted_memory`) and the
//! bitmap arithmetic around it, shared by the kernel (which fills and
//! consumes it) and the VMM (which cross-checks it against its page states).
//!
//! A set bit means the `unit_size` bytes at `phys_base + bit * unit_size`
//! are unaccepted. The algorithms follow Linux: `allocate_unaccepted_bitmap`
//! (bounds), `process_unaccepted_memory` (what to accept at once and what
//! to record) and `accept_memory` (the guard unit, clearing bits only after
//! a successful accept).

use crate::pod::Pod;

/// Table version Linux accepts.
pub const VERSION: u32 = 1;
/// x86's `EFI_UNACCEPTED_UNIT_SIZE` (PMD_SIZE).
pub const UNIT_SIZE: u64 = 2 << 20;

/// The table's 24-byte header; the bitmap follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub unit_size: u32,
    pub phys_base: u64,
    /// Bitmap length in bytes.
    pub size: u64,
}

// SAFETY: repr(C), u32/u32/u64/u64 without padding; any bits are valid.
unsafe impl Pod for Header {}
const _: () = assert!(core::mem::size_of::<Header>() == 24);

/// Why a table header is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    Version(u32),
    UnitSize(u32),
    Unaligned(u64),
    TooLarge(u64),
    /// `phys_base` plus what the bitmap covers passes 2^64.
    Wraps(u64),
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::Version(v) => write!(f, "unaccepted table version {v} is not {VERSION}"),
            TableError::UnitSize(u) => write!(f, "unaccepted table unit size {u:#x} is not 2 MiB"),
            TableError::Unaligned(b) => {
                write!(f, "unaccepted table base {b:#x} is not unit aligned")
            }
            TableError::Wraps(b) => {
                write!(
                    f,
                    "unaccepted table base {b:#x} plus its coverage passes 2^64"
                )
            }
            TableError::TooLarge(s) => write!(
                f,
                "unaccepted table bitmap of {s} bytes is implausibly large"
            ),
        }
    }
}

/// Largest bitmap accepted (covers 4 PiB at 2 MiB units).
pub const MAX_BITMAP_BYTES: u64 = 256 << 20;

impl Header {
    /// Checks what a kexec'd kernel (or the VMM) must check before trusting
    /// a table it did not build.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.version != VERSION {
            return Err(TableError::Version(self.version));
        }
        if self.unit_size as u64 != UNIT_SIZE {
            return Err(TableError::UnitSize(self.unit_size));
        }
        if !self.phys_base.is_multiple_of(UNIT_SIZE) {
            return Err(TableError::Unaligned(self.phys_base));
        }
        if self.size > MAX_BITMAP_BYTES {
            return Err(TableError::TooLarge(self.size));
        }
        if self.phys_base.checked_add(self.coverage()).is_none() {
            return Err(TableError::Wraps(self.phys_base));
        }
        Ok(())
    }

    /// Bytes of physical memory the bitmap can describe.
    pub fn coverage(&self) -> u64 {
        self.size * 8 * self.unit_size as u64
    }
}

/// `allocate_unaccepted_bitmap`'s bounds for unaccepted ranges `[start,
/// end)`: `(phys_base, bitmap bytes)`, or `None` when there are none.
pub fn bounds(ranges: impl Iterator<Item = (u64, u64)>) -> Option<(u64, u64)> {
    let (lo, hi) = ranges
        .filter(|(s, e)| e > s)
        .fold((u64::MAX, 0), |(lo, hi), (s, e)| (lo.min(s), hi.max(e)));
    if lo >= hi {
        return None;
    }
    let base = lo / UNIT_SIZE * UNIT_SIZE;
    let end = hi.div_ceil(UNIT_SIZE) * UNIT_SIZE;
    Some((base, (end - base).div_ceil(UNIT_SIZE * 8)))
}

/// The bitmap of a table: little-endian bit order (byte i/8, bit i%8).
pub struct Bitmap<'a> {
    bytes: &'a mut [u8],
}

impl<'a> Bitmap<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Bitmap { bytes }
    }

    /// Number of bits.
    pub fn bits(&self) -> u64 {
        self.bytes.len() as u64 * 8
    }

    pub fn test(&self, bit: u64) -> bool {
        self.bytes[(bit / 8) as usize] & (1 << (bit % 8)) != 0
    }

    /// Sets (`value`) or clears bits `[from, to)`, whole bytes at a time
    /// in the middle (a terabyte is half a million bits).
    fn fill_range(&mut self, from: u64, to: u64, value: bool) {
        let mut bit = from;
        while bit < to {
            let byte = (bit / 8) as usize;
            if bit.is_multiple_of(8) && to - bit >= 8 {
                let whole = ((to - bit) / 8) as usize;
                self.bytes[byte..byte + whole].fill(if value { 0xff } else { 0 });
                bit += whole as u64 * 8;
                continue;
            }
            if value {
                self.bytes[byte] |= 1 << (bit % 8);
            } else {
                self.bytes[byte] &= !(1 << (bit % 8));
            }
            bit += 1;
        }
    }

    /// Sets bits `[from, to)`.
    pub fn set_range(&mut self, from: u64, to: u64) {
        self.fill_range(from, to, true)
    }

    /// Clears bits `[from, to)`.
    pub fn clear_range(&mut self, from: u64, to: u64) {
        self.fill_range(from, to, false)
    }

    /// The first run of set bits inside `[from, to)`, as `[start, end)`,
    /// skipping whole zero bytes before it and whole 0xff bytes inside it.
    pub fn next_set_run(&self, from: u64, to: u64) -> Option<(u64, u64)> {
        let to = to.min(self.bits());
        let mut bit = from;
        while bit < to {
            if bit.is_multiple_of(8) && self.bytes[(bit / 8) as usize] == 0 {
                bit += 8;
                continue;
            }
            if self.test(bit) {
                let start = bit;
                while bit < to {
                    if bit.is_multiple_of(8)
                        && to - bit >= 8
                        && self.bytes[(bit / 8) as usize] == 0xff
                    {
                        bit += 8;
                    } else if self.test(bit) {
                        bit += 1;
                    } else {
                        break;
                    }
                }
                return Some((start, bit));
            }
            bit += 1;
        }
        None
    }
}

/// Linux's `process_unaccepted_memory(start, end)`: which parts of an
/// unaccepted range `[start, end)` are accepted at once (`accept(s, e)`)
/// and which units are recorded in the bitmap.
pub fn process_range(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    start: u64,
    end: u64,
    mut accept: impl FnMut(u64, u64),
) {
    let unit = header.unit_size as u64;
    let (mut start, mut end) = (start, end);
    if end <= start {
        return;
    }
    if end - start < 2 * unit {
        accept(start, end);
        return;
    }
    if start % unit != 0 {
        let up = start.div_ceil(unit) * unit;
        accept(start, up);
        start = up;
    }
    if end % unit != 0 {
        let down = end / unit * unit;
        accept(down, end);
        end = down;
    }
    if start < header.phys_base {
        accept(start, header.phys_base.min(end));
        start = header.phys_base;
    }
    if end <= header.phys_base || end <= start {
        return;
    }
    let (mut s, mut e) = (start - header.phys_base, end - header.phys_base);
    let covered = header.coverage().min(bitmap.bits() * unit);
    if e > covered {
        accept(header.phys_base + covered.max(s), end);
        e = covered;
    }
    if s >= e {
        return;
    }
    s /= unit;
    e /= unit;
    bitmap.set_range(s, e);
}

/// Linux's `accept_memory(start, size)`: accepts every unaccepted unit the
/// range touches (plus one guard unit when the range ends on a unit
/// boundary), clearing each run's bits only after `accept` returns `Ok`.
/// Returns the number of units accepted, or the first error.
pub fn accept_range<E>(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    start: u64,
    size: u64,
    mut accept: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let unit = header.unit_size as u64;
    let end = start.saturating_add(size);
    let start = start.max(header.phys_base);
    if end <= header.phys_base || end <= start {
        return Ok(0);
    }
    let (s, mut e) = (start - header.phys_base, end - header.phys_base);
    if e % unit == 0 {
        e += unit;
    }
    let covered = header.coverage().min(bitmap.bits() * unit);
    e = e.min(covered);
    let (first, last) = (s / unit, e.div_ceil(unit));
    let mut units = 0;
    let mut from = first;
    while let Some((a, b)) = bitmap.next_set_run(from, last) {
        accept(header.phys_base + a * unit, header.phys_base + b * unit)?;
        bitmap.clear_range(a, b);
        units += b - a;
        from = b;
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    #[test]
    fn bounds_round_out_to_units() {
        let (base, size) =
            bounds([(3 * MIB, 10 * MIB), (20 * MIB, 70 * MIB + 4096)].into_iter()).unwrap();
        assert_eq!(base, 2 * MIB);
        // 2 MiB .. 72 MiB = 35 units -> 5 bytes.
        assert_eq!(size, 5);
        assert_eq!(bounds([].into_iter()), None);
        // 4 KiB of bitmap cover 64 GiB.
        assert_eq!(bounds([(0, 64 << 30)].into_iter()), Some((0, 4096)));
    }

    fn header(base: u64, bytes: u64) -> Header {
        Header {
            version: VERSION,
            unit_size: UNIT_SIZE as u32,
            phys_base: base,
            size: bytes,
        }
    }

    #[test]
    fn small_and_unaligned_pieces_are_accepted_at_once() {
        let h = header(0, 4);
        let mut bits = vec![0u8; 4];
        let mut accepted = Vec::new();
        // Shorter than two units: all of it, now.
        process_range(&h, &mut Bitmap::new(&mut bits), 4096, 3 * MIB, |s, e| {
            accepted.push((s, e))
        });
        assert_eq!(accepted, vec![(4096, 3 * MIB)]);
        assert!(bits.iter().all(|b| *b == 0));
        // Unaligned head and tail at once; the aligned middle recorded.
        accepted.clear();
        process_range(&h, &mut Bitmap::new(&mut bits), MIB, 9 * MIB, |s, e| {
            accepted.push((s, e))
        });
        assert_eq!(accepted, vec![(MIB, 2 * MIB), (8 * MIB, 9 * MIB)]);
        assert_eq!(bits[0], 0b0000_1110);
    }

    #[test]
    fn accept_clears_only_after_success_and_adds_a_guard_unit() {
        let h = header(0, 1);
        let mut bits = vec![0xffu8];
        let mut calls = Vec::new();
        // [2M, 4M) ends on a unit boundary: the unit after it is accepted too.
        let n = accept_range::<()>(&h, &mut Bitmap::new(&mut bits), 2 * MIB, 2 * MIB, |s, e| {
            calls.push((s, e));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(calls, vec![(2 * MIB, 6 * MIB)]);
        assert_eq!(bits[0], 0b1111_1001);
        // A failing accept leaves the bits set.
        let r = accept_range(&h, &mut Bitmap::new(&mut bits), 0, 4096, |_, _| Err("busy"));
        assert_eq!(r, Err("busy"));
        assert_eq!(bits[0], 0b1111_1001);
        // Already-accepted units are not accepted again.
        calls.clear();
        accept_range::<()>(&h, &mut Bitmap::new(&mut bits), 2 * MIB, 4096, |s, e| {
            calls.push((s, e));
            Ok(())
        })
        .unwrap();
        assert!(calls.is_empty());
    }

    #[test]
    fn validation() {
        assert!(header(0, 8).validate().is_ok());
        assert_eq!(
            Header {
                version: 2,
                ..header(0, 8)
            }
            .validate(),
            Err(TableError::Version(2))
        );
        assert_eq!(header(4096, 8).validate(), Err(TableError::Unaligned(4096)));
        assert_eq!(
            Header {
                unit_size: 4096,
                ..header(0, 8)
            }
            .validate(),
            Err(TableError::UnitSize(4096))
        );
    }

    #[test]
    fn headers_that_wrap_or_lie_are_refused() {
        let ok = Header {
            version: 1,
            unit_size: 2 << 20,
            phys_base: 4 << 30,
            size: 64,
        };
        assert_eq!(ok.validate(), Ok(()));
        for (bad, want) in [
            (Header { version: 2, ..ok }, TableError::Version(2)),
            (
                Header {
                    unit_size: 4096,
                    ..ok
                },
                TableError::UnitSize(4096),
            ),
            (
                Header {
                    phys_base: 4096,
                    ..ok
                },
                TableError::Unaligned(4096),
            ),
            (
                Header {
                    size: MAX_BITMAP_BYTES + 1,
                    ..ok
                },
                TableError::TooLarge(MAX_BITMAP_BYTES + 1),
            ),
            (
                Header {
                    phys_base: u64::MAX - (2 << 20) + 1,
                    size: 1,
                    ..ok
                },
                TableError::Wraps(u64::MAX - (2 << 20) + 1),
            ),
        ] {
            assert_eq!(bad.validate(), Err(want));
        }
    }

    proptest! {
        /// Bit operations (byte-at-a-time in the middle) against a vector
        /// of booleans: ranges set and cleared, and every run found.
        #[test]
        fn bitmap_ops_match_a_bool_model(
            ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..200), 0..40),
            query in (0u64..210, 0u64..210),
        ) {
            let mut bytes = vec![0u8; 25];
            let mut bm = Bitmap::new(&mut bytes);
            let mut model = [false; 200];
            for (set, a, b) in ops {
                let (a, b) = (a.min(b), a.max(b));
                if set { bm.set_range(a, b) } else { bm.clear_range(a, b) }
                for m in &mut model[a as usize..b as usize] { *m = set; }
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(bm.test(i as u64), *m, "bit {}", i);
            }
            let (from, to) = (query.0.min(query.1), query.0.max(query.1));
            let to_m = to.min(200);
            let want = (from..to_m).find(|&i| model[i as usize]).map(|a| {
                let b = (a..to_m).find(|&i| !model[i as usize]).unwrap_or(to_m);
                (a, b)
            });
            prop_assert_eq!(bm.next_set_run(from, to), want);
        }

        /// Model: pages of a small physical space are unaccepted (true) or
        /// accepted. After processing unaccepted ranges and then accepting
        /// arbitrary ranges, every page is accepted exactly once, and a
        /// page is accepted by the time any range covering it was accepted.
        #[test]
        fn every_page_is_accepted_exactly_once(
            cuts in proptest::collection::btree_set(1u64..(64 * 512), 2..12),
            requests in proptest::collection::vec((0u64..(64 * 512), 1u64..(8 * 512)), 0..20),
        ) {
            let pages = 64 * 512; // 64 MiB of 4 KiB pages
            let cuts: Vec<u64> = cuts.into_iter().collect();
            // Alternate ranges between cuts are unaccepted.
            let ranges: Vec<(u64, u64)> = cuts.chunks(2).filter(|c| c.len() == 2)
                .map(|c| (c[0] * 4096, c[1] * 4096)).collect();
            let mut accepted_count = vec![0u32; pages as usize];
            let mut unaccepted = vec![false; pages as usize];
            for (s, e) in &ranges {
                for p in s / 4096..e / 4096 { unaccepted[p as usize] = true; }
            }
            let Some((base, bytes)) = bounds(ranges.iter().copied()) else { return Ok(()); };
            let h = header(base, bytes);
            let mut bits = vec![0u8; bytes as usize];
            let accept = |s: u64, e: u64, count: &mut Vec<u32>| {
                for p in s / 4096..e.div_ceil(4096) { count[p as usize] += 1; }
            };
            for (s, e) in &ranges {
                process_range(&h, &mut Bitmap::new(&mut bits), *s, *e, |a, b| accept(a, b, &mut accepted_count));
            }
            // Recorded units lie inside unaccepted ranges (never over accepted memory).
            for bit in 0..bytes * 8 {
                if Bitmap::new(&mut bits).test(bit) {
                    let first = (base + bit * UNIT_SIZE) / 4096;
                    for p in first..first + 512 { prop_assert!(unaccepted[p as usize] && accepted_count[p as usize] == 0); }
                }
            }
            for (start, len) in requests {
                let (s, e) = (start * 4096, (start + len).min(pages) * 4096);
                accept_range::<()>(&h, &mut Bitmap::new(&mut bits), s, e.saturating_sub(s), |a, b| {
                    accept(a, b, &mut accepted_count);
                    Ok(())
                }).unwrap();
                for p in s / 4096..e / 4096 {
                    if unaccepted[p as usize] {
                        prop_assert_eq!(accepted_count[p as usize], 1, "page {} after request {:#x}..{:#x}", p, s, e);
                    }
                }
            }
            // Accept everything: each unaccepted page exactly once, no accepted page touched.
            accept_range::<()>(&h, &mut Bitmap::new(&mut bits), 0, pages * 4096, |a, b| {
                accept(a, b, &mut accepted_count);
                Ok(())
            }).unwrap();
            for p in 0..pages as usize {
                prop_assert_eq!(accepted_count[p], u32::from(unaccepted[p]), "page {}", p);
            }
            prop_assert!(bits.iter().all(|b| *b == 0));
        }
    }
}
