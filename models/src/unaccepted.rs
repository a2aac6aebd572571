//! Linux's algorithms over the unaccepted-memory table (whose layout,
//! `abi::unaccepted::Header`, is the contract): the bitmap arithmetic, shared
//! by the kernel (which fills and consumes the table) and the VMM (which
//! cross-checks it against its page states), and the host tests.
//!
//! A set bit means the `unit_size` bytes at `phys_base + bit * unit_size`
//! are unaccepted. The algorithms follow Linux: `allocate_unaccepted_bitmap`
//! (bounds), `process_unaccepted_memory` (what to accept at once and what
//! to record) and `accept_memory` (the guard unit, clearing bits only after
//! a successful accept).

use abi::unaccepted::{Header, UNIT_SIZE};
use abi::PAGE_4K;

/// `allocate_unaccepted_bitmap`'s bounds for the unaccepted descriptors
/// `[start, end)`: `(phys_base, bitmap bytes)`, or `None` when there are
/// none. As in Linux (libstub/unaccepted_memory.c), every type-15
/// descriptor counts, a zero-page one too: its address still moves the
/// table's bounds, however empty it is.
pub fn bounds(ranges: impl Iterator<Item = (u64, u64)>) -> Option<(u64, u64)> {
    let mut any = false;
    let (lo, hi) = ranges.fold((u64::MAX, 0), |(lo, hi), (s, e)| {
        any = true;
        (lo.min(s), hi.max(e))
    });
    if !any {
        return None;
    }
    let base = lo / UNIT_SIZE * UNIT_SIZE;
    let end = hi.div_ceil(UNIT_SIZE).wrapping_mul(UNIT_SIZE);
    Some((base, end.wrapping_sub(base).div_ceil(UNIT_SIZE * 8)))
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

    /// From byte-aligned `bit`, the first bit where the whole bytes below
    /// `to` stop being `value`: eight bytes at a time in the middle (a
    /// 64 TiB table is 4 MiB, and a guest whose every instruction is
    /// emulated pays for each one).
    fn skip_whole_bytes(&self, bit: u64, to: u64, value: u8) -> u64 {
        let (mut i, end) = ((bit / 8) as usize, (to / 8) as usize);
        let word = u64::from_ne_bytes([value; 8]);
        while i < end && !i.is_multiple_of(8) && self.bytes[i] == value {
            i += 1;
        }
        while i + 8 <= end {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.bytes[i..i + 8]);
            if u64::from_ne_bytes(w) != word {
                break;
            }
            i += 8;
        }
        while i < end && self.bytes[i] == value {
            i += 1;
        }
        i as u64 * 8
    }

    /// The first run of set bits inside `[from, to)`, as `[start, end)`,
    /// skipping whole zero bytes before it and whole 0xff bytes inside it.
    pub fn next_set_run(&self, from: u64, to: u64) -> Option<(u64, u64)> {
        let to = to.min(self.bits());
        let mut bit = from;
        while bit < to {
            if bit.is_multiple_of(8) {
                let past = self.skip_whole_bytes(bit, to, 0);
                if past > bit {
                    bit = past;
                    continue;
                }
            }
            if self.test(bit) {
                let start = bit;
                while bit < to {
                    let past = if bit.is_multiple_of(8) {
                        self.skip_whole_bytes(bit, to, 0xff)
                    } else {
                        bit
                    };
                    if past > bit {
                        bit = past;
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

/// The range a `process_range` could not record: it lies wholly above a
/// table it did not build (Linux would write past the bitmap's end there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideTable {
    pub start: u64,
    pub end: u64,
}

/// Linux's `process_unaccepted_memory(start, end)`
/// (drivers/firmware/efi/libstub/unaccepted_memory.c): what of an
/// unaccepted descriptor `[start, end)` is accepted at once (`accept(s,
/// e)`, in Linux's order, empty calls included) and which whole units are
/// recorded. The one departure: where a table the stub did not build does
/// not reach the range at all, Linux's `bitmap_set` would run past the
/// bitmap; here the range is accepted up to the table's end as Linux does
/// and then refused (`OutsideTable`) instead of corrupting memory.
pub fn process_range(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    start: u64,
    end: u64,
    mut accept: impl FnMut(u64, u64),
) -> Result<(), OutsideTable> {
    let unit_size = header.unit_size as u64;
    let unit_mask = unit_size - 1;
    let (mut start, mut end) = (start, end);
    if end.wrapping_sub(start) < 2 * unit_size {
        accept(start, end);
        return Ok(());
    }
    if start & unit_mask != 0 {
        accept(start, round_up(start, unit_size));
        start = round_up(start, unit_size);
    }
    if end & unit_mask != 0 {
        accept(end & !unit_mask, end);
        end &= !unit_mask;
    }
    if start < header.phys_base {
        accept(start, header.phys_base.min(end));
        start = header.phys_base;
    }
    if end < header.phys_base {
        return Ok(());
    }
    start -= header.phys_base;
    end -= header.phys_base;
    let capacity = header.coverage();
    if end > capacity {
        accept(capacity + header.phys_base, end + header.phys_base);
        end = capacity;
    }
    if end < start {
        return Err(OutsideTable {
            start: start + header.phys_base,
            end: end + header.phys_base,
        });
    }
    bitmap.set_range(start / unit_size, end / unit_size);
    Ok(())
}

fn round_up(v: u64, align: u64) -> u64 {
    v.wrapping_add(align - 1) & !(align - 1)
}

/// Page alignment of Linux's `accept_memory` and
/// `range_contains_unaccepted_memory` since commit 948a013a54c4 ("efi:
/// Align unaccepted memory range to page boundary", v7.0-rc1, the v2
/// form that landed): `end = PAGE_ALIGN(start + size); start =
/// PAGE_ALIGN_DOWN(start)`, with u64 wrap-around as in C.
fn page_aligned(start: u64, size: u64) -> (u64, u64) {
    (
        start & !(PAGE_4K - 1),
        round_up(start.wrapping_add(size), PAGE_4K),
    )
}

/// The bitmap offsets `[start, end)` Linux's kernel-proper
/// `accept_memory` and `range_contains_unaccepted_memory` work on: page
/// aligned, clamped below at `phys_base` (returning `None` only when the
/// end lies strictly below it: an end exactly at `phys_base` still
/// reaches the guard unit), extended by the guard unit when the end is
/// unit aligned, clamped to the bitmap.
fn kernel_offsets(header: &Header, start: u64, size: u64) -> Option<(u64, u64)> {
    let unit_size = header.unit_size as u64;
    let (mut start, mut end) = page_aligned(start, size);
    if start < header.phys_base {
        start = header.phys_base;
    }
    if end < header.phys_base {
        return None;
    }
    start -= header.phys_base;
    end -= header.phys_base;
    // load_unaligned_zeropad() may read across the end: one guard unit.
    if end % unit_size == 0 {
        end = end.wrapping_add(unit_size);
    }
    let capacity = header.coverage();
    if end > capacity {
        end = capacity;
    }
    Some((start, end))
}

/// The units `[first, last)` Linux's kernel-proper `accept_memory(start,
/// size)` works on (page aligned, guard unit included, clamped to the
/// bitmap): what it puts on `accepting_list`. None when the range lies
/// below the table.
pub fn kernel_units(header: &Header, start: u64, size: u64) -> Option<(u64, u64)> {
    let (start, end) = kernel_offsets(header, start, size)?;
    let unit = header.unit_size as u64;
    Some((start / unit, end.div_ceil(unit)))
}

/// Accepts every set run of bits in `[first, last)` (whole units, one
/// `accept` call per run, bits cleared only after it returns `Ok`);
/// returns the units accepted.
fn accept_runs<E>(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    first: u64,
    last: u64,
    mut accept: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let unit = header.unit_size as u64;
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

/// Linux's kernel-proper `accept_memory(start, size)`
/// (drivers/firmware/efi/unaccepted_memory.c, mainline with 948a013a54c4):
/// accepts every unaccepted unit of the page-aligned range, plus one guard
/// unit when it ends on a unit boundary, one call per run of set bits,
/// clearing each run's bits only after `accept` returns `Ok`. A size of 0
/// still accepts the unit at `start`. Returns the units accepted, or the
/// first error. (`accepting_list`, which serialises CPUs, has no effect on
/// one CPU.)
pub fn accept_range<E>(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    start: u64,
    size: u64,
    accept: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let Some((start, end)) = kernel_offsets(header, start, size) else {
        return Ok(0);
    };
    let unit = header.unit_size as u64;
    accept_runs(header, bitmap, start / unit, end.div_ceil(unit), accept)
}

/// Linux's `range_contains_unaccepted_memory(start, size)` (same file):
/// the offsets of `accept_range`, then a walk from the (possibly
/// unaligned) start in `unit_size` strides while below the end. Upstream's
/// walk can step over the range's last unit when the start is not unit
/// aligned (base 0, only unit 4 unaccepted: `(0x7bf000, 0x68000)` is
/// false although the range reaches into unit 4); this is reproduced, not
/// fixed.
pub fn contains_range(header: &Header, bitmap: &Bitmap<'_>, start: u64, size: u64) -> bool {
    let Some((mut start, end)) = kernel_offsets(header, start, size) else {
        return false;
    };
    let unit = header.unit_size as u64;
    while start < end {
        if bitmap.test(start / unit) {
            return true;
        }
        start += unit;
    }
    false
}

/// The EFI stub's `accept_memory(start, size)`
/// (drivers/firmware/efi/libstub/unaccepted_memory.c), which the
/// decompressor uses for the kernel image: no page alignment and no guard
/// unit; an end at or below `phys_base` accepts nothing.
pub fn accept_range_stub<E>(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    start: u64,
    size: u64,
    accept: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let unit = header.unit_size as u64;
    let mut end = start.wrapping_add(size);
    let mut start = start;
    if start < header.phys_base {
        start = header.phys_base;
    }
    if end < header.phys_base {
        return Ok(0);
    }
    start -= header.phys_base;
    end -= header.phys_base;
    let capacity = header.coverage();
    if end > capacity {
        end = capacity;
    }
    accept_runs(header, bitmap, start / unit, end.div_ceil(unit), accept)
}

/// The `EFI_UNACCEPTED_MEMORY` case of the stub's `setup_e820`
/// (libstub/x86-stub.c): `process_unaccepted_memory` over every type-15
/// descriptor of the final map, in map order, into whatever table is
/// installed (one the stub built, or one found already installed).
pub fn fill_from_map(
    header: &Header,
    bitmap: &mut Bitmap<'_>,
    unaccepted: impl Iterator<Item = (u64, u64)>,
    mut accept: impl FnMut(u64, u64),
) -> Result<(), OutsideTable> {
    for (start, end) in unaccepted {
        process_range(header, bitmap, start, end, &mut accept)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use abi::unaccepted::VERSION;
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
        // A zero-page descriptor still moves the bounds (Linux counts it).
        assert_eq!(
            bounds([(0x23d000, 0x23d000 + 13 * 4096), (0x7e4b000, 0x7e4b000)].into_iter()),
            Some((2 * MIB, 8))
        );
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
        })
        .unwrap();
        assert_eq!(accepted, vec![(4096, 3 * MIB)]);
        assert!(bits.iter().all(|b| *b == 0));
        // Unaligned head and tail at once; the aligned middle recorded.
        accepted.clear();
        process_range(&h, &mut Bitmap::new(&mut bits), MIB, 9 * MIB, |s, e| {
            accepted.push((s, e))
        })
        .unwrap();
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

    proptest! {
        /// Bit operations (byte-at-a-time in the middle) against a vector
        /// of booleans: ranges set and cleared, and every run found.
        #[test]
        fn bitmap_ops_match_a_bool_model(
            ops in proptest::collection::vec((any::<bool>(), 0u64..1000, 0u64..1000), 0..40),
            query in (0u64..1010, 0u64..1010),
        ) {
            let mut bytes = vec![0u8; 125];
            let mut bm = Bitmap::new(&mut bytes);
            let mut model = [false; 1000];
            for (set, a, b) in ops {
                let (a, b) = (a.min(b), a.max(b));
                if set { bm.set_range(a, b) } else { bm.clear_range(a, b) }
                for m in &mut model[a as usize..b as usize] { *m = set; }
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(bm.test(i as u64), *m, "bit {}", i);
            }
            let (from, to) = (query.0.min(query.1), query.0.max(query.1));
            let to_m = to.min(1000);
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
                process_range(&h, &mut Bitmap::new(&mut bits), *s, *e, |a, b| accept(a, b, &mut accepted_count)).unwrap();
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
