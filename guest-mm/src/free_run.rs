//! Handing a run of usable memory to the allocator at boot, as Linux's
//! `__free_pages_core` does for each chunk (mm/page_alloc.c): a chunk for
//! which `range_contains_unaccepted_memory` is true is parked when it is a
//! whole top-order block and acceptance is lazy (`__free_unaccepted`), and
//! otherwise accepted with `accept_memory` (guard unit included) before it
//! is freed. Every chunk is thus accepted, parked, or free of unaccepted
//! memory. Runs of whole blocks that hold nothing but unaccepted memory
//! are parked in one step (the same result as chunk by chunk, faster).

use crate::buddy::{Buddy, Phys, BLOCK};

/// What the allocator needs of the unaccepted-memory table.
pub trait Acceptance {
    /// Linux's `range_contains_unaccepted_memory(start, size)`.
    fn contains(&mut self, start: u64, size: u64) -> bool;
    /// Linux's `accept_memory(start, size)`.
    fn accept(&mut self, start: u64, size: u64);
    /// The end of the longest prefix of `[start, end)` whose units are all
    /// unaccepted (`start` when there is none).
    fn unaccepted_prefix(&mut self, start: u64, end: u64) -> u64;
    /// Makes `[start, end)` reachable before it goes to the free lists
    /// (the kernel maps it; pages for that may come from `buddy`). False
    /// when it cannot be.
    fn reachable(
        &mut self,
        _buddy: &mut Buddy<'_>,
        _mem: &mut impl Phys,
        _start: u64,
        _end: u64,
    ) -> bool {
        true
    }
}

/// Why a run could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMetadata {
    pub start: u64,
    pub end: u64,
}

/// Adds the usable, page-aligned run `[start, end)` to `buddy`.
pub fn add_run(
    buddy: &mut Buddy<'_>,
    mem: &mut impl Phys,
    acceptance: &mut impl Acceptance,
    start: u64,
    end: u64,
    lazy: bool,
) -> Result<(), OutOfMetadata> {
    let mut at = start;
    while at < end {
        if lazy && at.is_multiple_of(BLOCK) {
            let blocks = (acceptance.unaccepted_prefix(at, end) - at) / BLOCK;
            if blocks > 0 {
                if !buddy.park_blocks(mem, at, blocks) {
                    return Err(OutOfMetadata {
                        start: at,
                        end: at + blocks * BLOCK,
                    });
                }
                at += blocks * BLOCK;
                continue;
            }
        }
        let block_end = ((at / BLOCK) + 1) * BLOCK;
        let piece_end = block_end.min(end);
        let whole = at.is_multiple_of(BLOCK) && piece_end == block_end;
        if acceptance.contains(at, piece_end - at) {
            if whole && lazy {
                if !buddy.park(mem, at) {
                    return Err(OutOfMetadata {
                        start: at,
                        end: piece_end,
                    });
                }
                at = piece_end;
                continue;
            }
            acceptance.accept(at, piece_end - at);
        }
        if !acceptance.reachable(buddy, mem, at, piece_end)
            || !buddy.add_free_range(mem, at, piece_end)
        {
            return Err(OutOfMetadata {
                start: at,
                end: piece_end,
            });
        }
        at = piece_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::META_BYTES;
    use crate::test_mem::Mem;
    use abi::unaccepted::{Header, UNIT_SIZE};
    use models::unaccepted::{accept_range, contains_range, Bitmap};

    const MIB: u64 = 1 << 20;

    /// A table over the first 64 MiB, and memory that refuses any touch
    /// of an unaccepted unit.
    struct Table {
        header: Header,
        bits: Vec<u8>,
        accepted: Vec<(u64, u64)>,
    }

    impl Table {
        fn new(unaccepted_units: &[u64]) -> Self {
            let mut bits = vec![0u8; 4];
            for u in unaccepted_units {
                bits[(*u / 8) as usize] |= 1 << (u % 8);
            }
            Table {
                header: Header {
                    version: 1,
                    unit_size: u32::try_from(UNIT_SIZE).unwrap(),
                    phys_base: 0,
                    size: 4,
                },
                bits,
                accepted: Vec::new(),
            }
        }

        fn unaccepted(&self, addr: u64) -> bool {
            let u = addr / UNIT_SIZE;
            u < 32 && self.bits[(u / 8) as usize] & (1 << (u % 8)) != 0
        }
    }

    impl Acceptance for Table {
        fn contains(&mut self, start: u64, size: u64) -> bool {
            contains_range(&self.header, &Bitmap::new(&mut self.bits), start, size)
        }
        fn accept(&mut self, start: u64, size: u64) {
            let header = self.header;
            let accepted = &mut self.accepted;
            accept_range::<()>(
                &header,
                &mut Bitmap::new(&mut self.bits),
                start,
                size,
                |s, e| {
                    accepted.push((s, e));
                    Ok(())
                },
            )
            .unwrap();
        }
        fn unaccepted_prefix(&mut self, start: u64, end: u64) -> u64 {
            let mut at = start;
            while at < end && self.unaccepted(at) {
                at += UNIT_SIZE;
            }
            at.min(end)
        }
    }

    fn run(table: &mut Table, start: u64, end: u64, lazy: bool) -> Buddy<'static> {
        let top = Box::leak(vec![0u64; 1].into_boxed_slice());
        let mut mem = Mem::default();
        let mut dir = crate::directory::Directory::new(top, 16);
        dir.add_spare(&mut mem, 0x7010_0000);
        let mut b = Buddy::new(dir, &mut mem, 0x7000_0000, 8 * META_BYTES);
        add_run(&mut b, &mut mem, table, start, end, lazy).unwrap();
        b
    }

    #[test]
    fn a_run_ending_before_an_unaccepted_unit_accepts_the_guard_unit() {
        // The review's layout: a free run [0, 2 MiB) of accepted memory
        // ends on a unit boundary just before unaccepted unit 1. Linux's
        // range_contains_unaccepted_memory is true for it (guard unit), so
        // __free_pages_core accepts it: accept_memory accepts unit 1.
        let mut t = Table::new(&[1]);
        run(&mut t, 0, 2 * MIB, true);
        assert_eq!(t.accepted, vec![(2 * MIB, 4 * MIB)]);
        assert!(!t.unaccepted(2 * MIB));
    }

    #[test]
    fn every_chunk_is_accepted_parked_or_clean() {
        // Units 2..6 and 9 unaccepted; the run [1 MiB, 22 MiB) spans
        // partial and whole 4 MiB blocks.
        for lazy in [true, false] {
            let mut t = Table::new(&[2, 3, 4, 5, 9]);
            let b = run(&mut t, MIB, 22 * MIB, lazy);
            if lazy {
                // The whole blocks [4, 8), [8, 12) and [16, 20) MiB hold
                // unaccepted units: parked. The partial piece [1, 4) MiB
                // ends on a unit boundary before unit 2: accepting it
                // accepts that guard unit, inside the next (parked) block.
                assert_eq!(b.stats.parked_blocks, 3, "{:?}", t.accepted);
                assert!(t.accepted.contains(&(4 * MIB, 6 * MIB)), "{:?}", t.accepted);
            } else {
                assert_eq!(b.stats.parked_blocks, 0);
                assert!(t.bits.iter().all(|b| *b == 0), "eager accepts everything");
            }
            // Nothing the allocator handed out as free is unaccepted.
            for (s, e) in [(MIB, 4 * MIB), (12 * MIB, 16 * MIB), (20 * MIB, 22 * MIB)] {
                for a in (s..e).step_by(abi::to_usize(UNIT_SIZE / 2)) {
                    assert!(!t.unaccepted(a), "{a:#x} free but unaccepted (lazy {lazy})");
                }
            }
        }
    }
}
