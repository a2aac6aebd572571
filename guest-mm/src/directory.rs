//! The allocator's sparse directory: one word per 4 MiB block, stored in
//! sections of 512 blocks (2 GiB of RAM, one 4 KiB page of words), as
//! Linux's sparsemem keeps `struct page`s in sections. A section whose
//! blocks are all absent or all parked is one word in the top array and
//! costs no page; a section gets its page when a block in it first becomes
//! anything else (free, in use, split). A 64 TiB guest booted lazily thus
//! keeps a 256 KiB top array and a handful of section pages, instead of
//! 128 MiB of words it must write at boot.
//!
//! Section pages come from a spare list the allocator keeps filled from
//! its free memory (`Buddy` refills it); the directory itself never
//! allocates.

use crate::buddy::Phys;

/// Blocks per section: one 4 KiB page of 8-byte words.
pub const SECTION_BLOCKS: usize = 512;

/// A block (or a whole section) with no usable memory.
pub const ABSENT: u64 = 0;
/// A block (or a whole section) parked: unaccepted, never touched.
pub const PARKED: u64 = 1;

const NIL: u64 = u64::MAX;

/// Top-array words needed for `blocks` blocks.
pub const fn sections_for(blocks: u64) -> u64 {
    blocks.div_ceil(SECTION_BLOCKS as u64)
}

/// The directory over `blocks` blocks from address 0.
pub struct Directory<'a> {
    /// Per section: `ABSENT` or `PARKED` for a uniform section, else the
    /// address of its page of words.
    top: &'a mut [u64],
    blocks: usize,
    /// Pages ready to become sections, linked through their first word.
    spare: u64,
    spare_pages: u64,
    /// Section pages in use.
    pub section_pages: u64,
}

impl<'a> Directory<'a> {
    /// A directory of `blocks` absent blocks; `top` must hold at least
    /// `sections_for(blocks)` words.
    pub fn new(top: &'a mut [u64], blocks: usize) -> Self {
        let n = abi::to_usize(sections_for(blocks as u64));
        let top = &mut top[..n];
        top.fill(ABSENT);
        Directory {
            top,
            blocks,
            spare: NIL,
            spare_pages: 0,
            section_pages: 0,
        }
    }

    /// Blocks covered.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Pages on the spare list.
    pub fn spare_pages(&self) -> u64 {
        self.spare_pages
    }

    /// Bytes the directory holds: the top array, section pages and spares.
    pub fn bytes(&self) -> u64 {
        self.top.len() as u64 * 8 + (self.section_pages + self.spare_pages) * 4096
    }

    /// Gives the directory an accepted, unused 4 KiB page for a future
    /// section.
    pub fn add_spare(&mut self, mem: &mut impl Phys, page: u64) {
        mem.write(page, self.spare);
        self.spare = page;
        self.spare_pages += 1;
    }

    /// The state word of block `i`.
    pub fn get(&self, mem: &impl Phys, i: usize) -> u64 {
        let s = self.top[i / SECTION_BLOCKS];
        if s <= PARKED {
            s
        } else {
            mem.read(s + (i % SECTION_BLOCKS) as u64 * 8)
        }
    }

    /// True when block `i`'s section has a page (any state can be stored).
    pub fn is_materialized(&self, i: usize) -> bool {
        self.top[i / SECTION_BLOCKS] > PARKED
    }

    /// Gives block `i`'s section a page, from the spare list, filled with
    /// the section's uniform state. False when it needs one and no spare
    /// page is left.
    pub fn materialize(&mut self, mem: &mut impl Phys, i: usize) -> bool {
        let sec = i / SECTION_BLOCKS;
        let uniform = self.top[sec];
        if uniform > PARKED {
            return true;
        }
        if self.spare == NIL {
            return false;
        }
        let page = self.spare;
        self.spare = mem.read(page);
        self.spare_pages -= 1;
        for w in 0..SECTION_BLOCKS as u64 {
            mem.write(page + w * 8, uniform);
        }
        self.top[sec] = page;
        self.section_pages += 1;
        true
    }

    /// Sets block `i` to `v`. The section must have a page unless `v` is
    /// the section's uniform state already (checked in debug builds).
    pub fn set(&mut self, mem: &mut impl Phys, i: usize, v: u64) {
        let s = self.top[i / SECTION_BLOCKS];
        if s <= PARKED {
            debug_assert_eq!(s, v, "block {i}: section not materialized");
            return;
        }
        mem.write(s + (i % SECTION_BLOCKS) as u64 * 8, v);
    }

    /// Sets blocks `[first, first + n)` from `ABSENT` to `PARKED`: whole
    /// sections in one top word each, the rest word by word (materializing
    /// their sections). False, with nothing changed from the failing
    /// section on, when a section needs a page and none is spare.
    pub fn park_range(&mut self, mem: &mut impl Phys, first: usize, n: usize) -> bool {
        let end = first + n;
        let mut i = first;
        while i < end {
            let sec = i / SECTION_BLOCKS;
            let sec_start = sec * SECTION_BLOCKS;
            let sec_end = (sec_start + SECTION_BLOCKS).min(self.blocks);
            if i == sec_start && end >= sec_end && self.top[sec] == ABSENT {
                self.top[sec] = PARKED;
                i = sec_end;
                continue;
            }
            if self.top[sec] == PARKED {
                // Parking parked blocks again changes nothing.
                i = sec_end.min(end);
                continue;
            }
            if !self.materialize(mem, i) {
                return false;
            }
            let stop = sec_end.min(end);
            for b in i..stop {
                self.set(mem, b, PARKED);
            }
            i = stop;
        }
        true
    }

    /// The lowest block at or after `from` in state `PARKED`.
    pub fn next_parked(&self, mem: &impl Phys, from: usize) -> Option<usize> {
        let mut i = from;
        while i < self.blocks {
            let sec = i / SECTION_BLOCKS;
            match self.top[sec] {
                PARKED => return Some(i),
                ABSENT => i = (sec + 1) * SECTION_BLOCKS,
                _ => {
                    if self.get(mem, i) == PARKED {
                        return Some(i);
                    }
                    i += 1;
                }
            }
        }
        None
    }

    /// The highest block below `below` in state `PARKED`.
    pub fn prev_parked(&self, mem: &impl Phys, below: usize) -> Option<usize> {
        let mut i = below.min(self.blocks);
        while i > 0 {
            let sec = (i - 1) / SECTION_BLOCKS;
            match self.top[sec] {
                PARKED => return Some(i - 1),
                ABSENT => i = sec * SECTION_BLOCKS,
                _ => {
                    if self.get(mem, i - 1) == PARKED {
                        return Some(i - 1);
                    }
                    i -= 1;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_mem::Mem;
    use proptest::prelude::*;

    #[test]
    fn a_parked_terabyte_costs_no_section_page() {
        let blocks = (64u64 << 40) / (4 << 20);
        let mut top = vec![0; abi::to_usize(sections_for(blocks))];
        let mut mem = Mem::default();
        let mut d = Directory::new(&mut top, abi::to_usize(blocks));
        // 64 TiB less the first 4 GiB parked, as a lazy boot does.
        assert!(d.park_range(&mut mem, 1024, abi::to_usize(blocks) - 1024));
        assert_eq!(d.section_pages, 0);
        assert_eq!(d.bytes(), 32768 * 8);
        assert_eq!(d.next_parked(&mem, 0), Some(1024));
        assert_eq!(
            d.prev_parked(&mem, usize::MAX),
            Some(abi::to_usize(blocks) - 1)
        );
        // A parked range that does not start on a section needs a page.
        let mut top = vec![0; 4];
        let mut d = Directory::new(&mut top, 2048);
        assert!(!d.park_range(&mut mem, 3, 600));
        d.add_spare(&mut mem, 0x9000);
        assert!(!d.park_range(&mut mem, 3, 600), "two sections need pages");
        d.add_spare(&mut mem, 0xa000);
        assert!(d.park_range(&mut mem, 3, 600));
        assert_eq!(d.section_pages, 2);
        assert_eq!(
            (d.get(&mem, 2), d.get(&mem, 3), d.get(&mem, 603)),
            (ABSENT, PARKED, ABSENT)
        );
        assert_eq!(d.next_parked(&mem, 4), Some(4));
        assert_eq!(d.prev_parked(&mem, 3), None);
    }

    proptest! {
        /// Against a flat array: the same states, and the parked searches
        /// find the same blocks.
        #[test]
        fn matches_a_flat_directory(
            blocks in 1usize..3000,
            ops in proptest::collection::vec((0u8..3, 0usize..3000, 0usize..1200, 0usize..4), 1..60),
        ) {
            let mut top = vec![0; abi::to_usize(sections_for(blocks as u64))];
            let mut mem = Mem::default();
            let mut d = Directory::new(&mut top, blocks);
            let mut flat = vec![ABSENT; blocks];
            let mut next_page = 0x10_0000u64;
            for (kind, at, n, v) in ops {
                let at = at % blocks;
                match kind {
                    0 => {
                        let n = n.min(blocks - at);
                        if flat[at..at + n].iter().any(|s| *s != ABSENT) { continue; }
                        while !d.park_range(&mut mem, at, n) {
                            d.add_spare(&mut mem, next_page);
                            next_page += 4096;
                        }
                        flat[at..at + n].fill(PARKED);
                    }
                    1 => {
                        if !d.materialize(&mut mem, at) {
                            d.add_spare(&mut mem, next_page);
                            next_page += 4096;
                            prop_assert!(d.materialize(&mut mem, at));
                        }
                        let v = [ABSENT, PARKED, 2, 3][v];
                        d.set(&mut mem, at, v);
                        flat[at] = v;
                    }
                    _ => {
                        prop_assert_eq!(d.next_parked(&mem, at), (at..blocks).find(|i| flat[*i] == PARKED));
                        prop_assert_eq!(d.prev_parked(&mem, n * 3), (0..(n * 3).min(blocks)).rev().find(|i| flat[*i] == PARKED));
                    }
                }
                for (i, s) in flat.iter().enumerate() {
                    prop_assert_eq!(d.get(&mem, i), *s, "block {}", i);
                }
            }
        }
    }
}
