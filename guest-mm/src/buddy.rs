//! Buddy allocator over guest-physical memory, orders 0 (4 KiB) to 10
//! (4 MiB), with Linux-style lazy acceptance of parked 4 MiB blocks.
//!
//! Metadata: a directory word per 4 MiB block (absent, parked, free whole,
//! used whole, or the address of the block's 256-byte free-bit map when it
//! is split), kept sparse (`directory`: sections of blocks all absent or all
//! parked cost no page), and the free lists, linked through the free blocks
//! themselves.
//! Bit maps come from a slot pool that grows a page at a time from the
//! allocator (the first page of a 4 MiB block hosts that block's own map),
//! so nothing is sized per 4 KiB page and nothing is written to parked
//! (unaccepted) memory.

use crate::directory::Directory;
/// Bytes in a page.
pub const PAGE: u64 = 4096;
/// Highest order: 2^10 pages = 4 MiB.
pub const MAX_ORDER: u32 = 10;
/// Bytes in a top-order block.
pub const BLOCK: u64 = PAGE << MAX_ORDER;

const ORDERS: usize = MAX_ORDER as usize + 1;
const NIL: u64 = u64::MAX;
const FREE_WHOLE: u64 = 2;
const USED_WHOLE: u64 = 3;
/// Spare directory pages the allocator keeps at hand, so that taking a
/// parked block never needs free memory (it is taken when there is none).
const SPARE_DIR_PAGES: u64 = 4;
/// Bytes of one block's free-bit map (2047 bits, rounded to 32 words).
pub const META_BYTES: u64 = 256;
/// First bit of each order inside a block's map.
const BIT_BASE: [u64; ORDERS] = [
    0, 1024, 1536, 1792, 1920, 1984, 2016, 2032, 2040, 2044, 2046,
];

/// Physical memory as the allocator reads and writes it (identity-mapped
/// memory in the guest, a model in tests). Only accepted memory is touched.
pub trait Phys {
    fn read(&self, addr: u64) -> u64;
    fn write(&mut self, addr: u64, value: u64);
}

/// Counters the kernel reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages on the free lists (parked blocks excluded).
    pub free_pages: u64,
    /// Blocks parked now.
    pub parked_blocks: u64,
    /// Blocks ever parked.
    pub blocks_parked: u64,
    /// Parked blocks accepted because free memory ran low.
    pub blocks_accepted_lazily: u64,
    /// Pages used by free-bit maps.
    pub meta_pages: u64,
    /// Pages the sparse directory took from free memory (section pages and
    /// spares).
    pub dir_pages: u64,
    /// Times a block could not change state because the directory had no
    /// page for its section and no free memory was left to make one.
    pub dir_starved: u64,
}

/// The allocator. `dir` has a state per 4 MiB block from address 0.
pub struct Buddy<'a> {
    dir: Directory<'a>,
    heads: [u64; ORDERS],
    free_meta: u64,
    parked_cursor: usize,
    /// Accept a parked block when free pages would drop below this.
    pub watermark_pages: u64,
    pub stats: Stats,
}

impl<'a> Buddy<'a> {
    /// An empty allocator over `dir`'s blocks; `bootstrap` is memory for
    /// `bootstrap_len` bytes of free-bit maps used before the allocator has
    /// pages of its own (the directory's own first pages are its spares).
    pub fn new(
        dir: Directory<'a>,
        mem: &mut impl Phys,
        bootstrap: u64,
        bootstrap_len: u64,
    ) -> Self {
        let mut b = Buddy {
            dir,
            heads: [NIL; ORDERS],
            free_meta: NIL,
            parked_cursor: 0,
            watermark_pages: 2 * (1 << MAX_ORDER),
            stats: Stats::default(),
        };
        for slot in (0..bootstrap_len / META_BYTES).rev() {
            b.push_meta(mem, bootstrap + slot * META_BYTES);
        }
        b
    }

    /// Number of blocks the directory covers.
    pub fn blocks(&self) -> usize {
        self.dir.blocks()
    }

    /// Bytes of the directory (top array, section pages, spares).
    pub fn dir_bytes(&self) -> u64 {
        self.dir.bytes()
    }

    /// Gives block `block`'s directory section a page if it has none: a
    /// spare, else one page of free memory. False when neither is left.
    fn section(&mut self, mem: &mut impl Phys, block: usize) -> bool {
        if self.dir.is_materialized(block) {
            return true;
        }
        if self.dir.spare_pages() == 0 && !self.spare_from_free(mem) {
            self.stats.dir_starved += 1;
            return false;
        }
        self.dir.materialize(mem, block)
    }

    /// Moves one free page to the directory's spares.
    fn spare_from_free(&mut self, mem: &mut impl Phys) -> bool {
        match self.alloc_free(mem, 0) {
            Some(page) => {
                self.dir.add_spare(mem, page);
                self.stats.dir_pages += 1;
                true
            }
            None => false,
        }
    }

    /// Keeps `SPARE_DIR_PAGES` spares while blocks are parked (taking one
    /// may need a section page when no free memory is left) and free
    /// memory allows.
    fn top_up_spares(&mut self, mem: &mut impl Phys) {
        while self.stats.parked_blocks > 0
            && self.dir.spare_pages() < SPARE_DIR_PAGES
            && self.spare_from_free(mem)
        {}
    }

    fn push_meta(&mut self, mem: &mut impl Phys, slot: u64) {
        mem.write(slot, self.free_meta);
        self.free_meta = slot;
    }

    fn take_meta(&mut self, mem: &mut impl Phys) -> Option<u64> {
        if self.free_meta == NIL && !self.refill_meta(mem) {
            return None;
        }
        let slot = self.free_meta;
        self.free_meta = mem.read(slot);
        for w in 0..META_BYTES / 8 {
            mem.write(slot + w * 8, 0);
        }
        Some(slot)
    }

    /// Finds a page for 16 more bit maps: from a block already split if one
    /// has a free piece, else the first page of a whole free block (whose
    /// own map then lives in that page).
    fn refill_meta(&mut self, mem: &mut impl Phys) -> bool {
        if let Some(k) = (0..MAX_ORDER).find(|k| self.heads[*k as usize] != NIL) {
            let page = self.pop(mem, k);
            self.split_down(mem, page, k, 0);
            self.stats.free_pages -= 1;
            self.stats.meta_pages += 1;
            for slot in (0..PAGE / META_BYTES).rev() {
                self.push_meta(mem, page + slot * META_BYTES);
            }
            return true;
        }
        if self.heads[MAX_ORDER as usize] == NIL {
            return false;
        }
        let block = self.pop(mem, MAX_ORDER);
        self.stats.free_pages -= 1 << MAX_ORDER;
        self.stats.meta_pages += 1;
        for slot in (1..PAGE / META_BYTES).rev() {
            self.push_meta(mem, block + slot * META_BYTES);
        }
        for w in 0..META_BYTES / 8 {
            mem.write(block + w * 8, 0);
        }
        self.dir.set(mem, (block / BLOCK) as usize, block);
        // Everything but the first page goes back as pieces of order 0..9.
        for k in 0..MAX_ORDER {
            self.insert(mem, block + (PAGE << k), k);
        }
        self.stats.free_pages += (1 << MAX_ORDER) - 1;
        true
    }

    fn meta_of(&self, mem: &impl Phys, addr: u64) -> u64 {
        let m = self.dir.get(mem, (addr / BLOCK) as usize);
        debug_assert!(m > USED_WHOLE, "block {addr:#x} is not split");
        m
    }

    fn bit(order: u32, addr: u64) -> u64 {
        BIT_BASE[order as usize] + ((addr % BLOCK) >> (12 + order))
    }

    fn test(&self, mem: &impl Phys, addr: u64, order: u32) -> bool {
        let b = Self::bit(order, addr);
        mem.read(self.meta_of(mem, addr) + b / 64 * 8) & (1 << (b % 64)) != 0
    }

    fn flip(&self, mem: &mut impl Phys, addr: u64, order: u32, on: bool) {
        let b = Self::bit(order, addr);
        let word = self.meta_of(mem, addr) + b / 64 * 8;
        let v = mem.read(word);
        mem.write(
            word,
            if on {
                v | 1 << (b % 64)
            } else {
                v & !(1 << (b % 64))
            },
        );
    }

    /// Links `addr` into the order-`order` list (and marks it free).
    fn insert(&mut self, mem: &mut impl Phys, addr: u64, order: u32) {
        let head = self.heads[order as usize];
        mem.write(addr, head);
        mem.write(addr + 8, NIL);
        if head != NIL {
            mem.write(head + 8, addr);
        }
        self.heads[order as usize] = addr;
        if order < MAX_ORDER {
            self.flip(mem, addr, order, true);
        }
    }

    fn unlink(&mut self, mem: &mut impl Phys, addr: u64, order: u32) {
        let (next, prev) = (mem.read(addr), mem.read(addr + 8));
        if prev == NIL {
            self.heads[order as usize] = next;
        } else {
            mem.write(prev, next);
        }
        if next != NIL {
            mem.write(next + 8, prev);
        }
        if order < MAX_ORDER {
            self.flip(mem, addr, order, false);
        }
    }

    fn pop(&mut self, mem: &mut impl Phys, order: u32) -> u64 {
        let addr = self.heads[order as usize];
        self.unlink(mem, addr, order);
        addr
    }

    /// Splits the block at `addr` from order `from` down to `to`, putting
    /// the upper halves on the free lists. The block's map must exist.
    fn split_down(&mut self, mem: &mut impl Phys, addr: u64, from: u32, to: u32) {
        for k in (to..from).rev() {
            self.insert(mem, addr + (PAGE << k), k);
        }
    }

    /// Frees `[addr, addr + 4 KiB << order)`, merging with free buddies.
    pub fn free(&mut self, mem: &mut impl Phys, addr: u64, order: u32) {
        self.stats.free_pages += 1 << order;
        let (mut addr, mut order) = (addr, order);
        let block = (addr / BLOCK) as usize;
        while order < MAX_ORDER {
            let buddy = addr ^ (PAGE << order);
            if !self.test(mem, buddy, order) {
                break;
            }
            self.unlink(mem, buddy, order);
            addr = addr.min(buddy);
            order += 1;
        }
        if order == MAX_ORDER {
            let meta = self.dir.get(mem, block);
            if meta > USED_WHOLE {
                self.push_meta(mem, meta);
            }
            self.dir.set(mem, block, FREE_WHOLE);
        }
        self.insert(mem, addr, order);
    }

    /// Adds accepted, usable `[start, end)` (page aligned) as free memory.
    /// A block whose directory section has no page yet, with no spare and
    /// no free memory to make one, gives the range's first page to the
    /// directory.
    pub fn add_free_range(&mut self, mem: &mut impl Phys, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            let block = at / BLOCK;
            let block_end = ((block + 1) * BLOCK).min(end);
            if !self.dir.is_materialized(block as usize) {
                if self.dir.spare_pages() == 0 && !self.spare_from_free(mem) {
                    // Neither a spare nor free memory: the range gives its
                    // first page to the directory.
                    self.dir.add_spare(mem, at);
                    self.stats.dir_pages += 1;
                    at += PAGE;
                    continue;
                }
                self.dir.materialize(mem, block as usize);
            }
            if at.is_multiple_of(BLOCK) && block_end - at == BLOCK {
                self.dir.set(mem, block as usize, USED_WHOLE);
                self.free(mem, at, MAX_ORDER);
                at = block_end;
                continue;
            }
            if self.dir.get(mem, block as usize) <= USED_WHOLE {
                let Some(meta) = self.take_meta(mem) else {
                    return false;
                };
                self.dir.set(mem, block as usize, meta);
            }
            while at < block_end {
                let mut k = 0;
                while k + 1 < MAX_ORDER
                    && at.is_multiple_of(PAGE << (k + 1))
                    && at + (PAGE << (k + 1)) <= block_end
                {
                    k += 1;
                }
                self.free(mem, at, k);
                at += PAGE << k;
            }
        }
        self.top_up_spares(mem);
        true
    }

    /// Parks the 4 MiB block at `addr`: it holds unaccepted memory and is
    /// accepted only when needed. Nothing inside it is touched. False when
    /// the directory needed a page and none was left (nothing parked).
    pub fn park(&mut self, mem: &mut impl Phys, addr: u64) -> bool {
        self.park_blocks(mem, addr, 1)
    }

    /// Parks the `n` whole blocks from `addr` in one step (a boot parks
    /// every block of 64 TiB of unaccepted memory: one word per 2 GiB
    /// section). The blocks must not be parked already. False when the
    /// directory needed a page for a section and none was left (blocks
    /// before that section may be parked, uncounted: the caller stops).
    pub fn park_blocks(&mut self, mem: &mut impl Phys, addr: u64, n: u64) -> bool {
        let first = (addr / BLOCK) as usize;
        while !self.dir.park_range(mem, first, abi::to_usize(n)) {
            if !self.spare_from_free(mem) {
                self.stats.dir_starved += 1;
                return false;
            }
        }
        self.stats.parked_blocks += n;
        self.stats.blocks_parked += n;
        self.top_up_spares(mem);
        true
    }

    /// Takes the highest parked block out of the allocator without
    /// accepting it (kexec picks destinations top-down in RAM the running
    /// kernel does not use). None when nothing is parked.
    pub fn take_parked_top(&mut self, mem: &mut impl Phys) -> Option<u64> {
        self.take_parked_below(mem, u64::MAX)
    }

    /// The same, among blocks that end at or below `limit` (kexec
    /// destinations must end below `KEXEC_DESTINATION_MEMORY_LIMIT`).
    pub fn take_parked_below(&mut self, mem: &mut impl Phys, limit: u64) -> Option<u64> {
        let blocks = (limit / BLOCK).min(self.dir.blocks() as u64) as usize;
        let i = self.dir.prev_parked(mem, blocks)?;
        if !self.section(mem, i) {
            return None;
        }
        self.dir.set(mem, i, USED_WHOLE);
        self.stats.parked_blocks -= 1;
        Some(i as u64 * BLOCK)
    }

    /// Linux's `try_to_accept_memory_one`: accepts the lowest parked block
    /// through `accept(start, len)` and frees it. False when none is left.
    pub fn accept_one(&mut self, mem: &mut impl Phys, accept: &mut impl FnMut(u64, u64)) -> bool {
        let Some(addr) = self.take_parked_next(mem) else {
            return false;
        };
        accept(addr, BLOCK);
        self.return_accepted(mem, addr);
        true
    }

    /// Takes the lowest parked block off the parked list, to be accepted
    /// by the caller and given back with `return_accepted`. With several
    /// CPUs this is Linux's `__accept_page` split: the block leaves the
    /// zone's unaccepted list under the zone lock, is accepted with that
    /// lock dropped, and is freed into the zone under it again.
    pub fn take_parked_next(&mut self, mem: &mut impl Phys) -> Option<u64> {
        if self.stats.parked_blocks == 0 {
            return None;
        }
        let i = self.dir.next_parked(mem, self.parked_cursor)?;
        self.parked_cursor = i;
        if !self.section(mem, i) {
            return None;
        }
        self.stats.parked_blocks -= 1;
        self.dir.set(mem, i, USED_WHOLE);
        Some(i as u64 * BLOCK)
    }

    /// Frees a block taken with `take_parked_next` once it is accepted,
    /// and refills the directory's spares from it if they ran low.
    pub fn return_accepted(&mut self, mem: &mut impl Phys, addr: u64) {
        self.stats.blocks_accepted_lazily += 1;
        self.free(mem, addr, MAX_ORDER);
        self.top_up_spares(mem);
    }

    /// True when an allocation of `order` would take free memory below
    /// the watermark while parked blocks remain (`cond_accept_memory`).
    pub fn wants_accept(&self, order: u32) -> bool {
        self.stats.parked_blocks > 0 && self.stats.free_pages < self.watermark_pages + (1 << order)
    }

    /// Allocates 4 KiB << `order`, accepting parked blocks first when free
    /// memory would fall below the watermark (Linux's `cond_accept_memory`).
    pub fn alloc(
        &mut self,
        mem: &mut impl Phys,
        order: u32,
        accept: &mut impl FnMut(u64, u64),
    ) -> Option<u64> {
        if order > MAX_ORDER {
            return None;
        }
        while self.wants_accept(order) && self.accept_one(mem, accept) {}
        loop {
            if let Some(addr) = self.alloc_free(mem, order) {
                return Some(addr);
            }
            if !self.accept_one(mem, accept) {
                return None;
            }
        }
    }

    /// Allocates 4 KiB << `order` from free memory only (no acceptance).
    pub fn alloc_free(&mut self, mem: &mut impl Phys, order: u32) -> Option<u64> {
        if order > MAX_ORDER {
            return None;
        }
        if self.free_meta == NIL && order < MAX_ORDER {
            // A split may need a map: make sure one is at hand first.
            self.refill_meta(mem);
        }
        let k = (order..=MAX_ORDER).find(|k| self.heads[*k as usize] != NIL)?;
        let addr = self.pop(mem, k);
        if k == MAX_ORDER {
            let block = (addr / BLOCK) as usize;
            if order == MAX_ORDER {
                self.dir.set(mem, block, USED_WHOLE);
            } else {
                let meta = self.take_meta(mem)?;
                self.dir.set(mem, block, meta);
            }
        }
        self.split_down(mem, addr, k, order);
        self.stats.free_pages -= 1 << order;
        Some(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    /// Sparse memory that refuses access to parked (unaccepted) blocks.
    #[derive(Default)]
    struct Mem {
        words: HashMap<u64, u64>,
        unaccepted: HashSet<u64>,
    }

    impl Phys for Mem {
        fn read(&self, addr: u64) -> u64 {
            assert!(
                !self.unaccepted.contains(&(addr / BLOCK)),
                "read of unaccepted {addr:#x}"
            );
            self.words.get(&addr).copied().unwrap_or(0)
        }
        fn write(&mut self, addr: u64, value: u64) {
            assert!(
                !self.unaccepted.contains(&(addr / BLOCK)),
                "write to unaccepted {addr:#x}"
            );
            self.words.insert(addr, value);
        }
    }

    const BOOT: u64 = 0x7000_0000;

    /// An allocator over `top.len()` blocks, with one spare directory
    /// page outside them.
    fn setup<'a>(top: &'a mut [u64], mem: &mut Mem) -> Buddy<'a> {
        let blocks = top.len();
        let mut dir = Directory::new(top, blocks);
        dir.add_spare(mem, BOOT + 0x10_0000);
        Buddy::new(dir, mem, BOOT, 2 * META_BYTES)
    }

    #[test]
    fn splits_and_merges_back_to_whole_blocks() {
        let mut dir = vec![0; 8];
        let mut mem = Mem::default();
        let mut b = setup(&mut dir, &mut mem);
        assert!(b.add_free_range(&mut mem, 0, 2 * BLOCK));
        assert_eq!(b.stats.free_pages, 2048);
        let mut no_accept = |_: u64, _: u64| panic!("nothing is parked");
        let a = b.alloc(&mut mem, 0, &mut no_accept).unwrap();
        let c = b.alloc(&mut mem, 3, &mut no_accept).unwrap();
        assert_eq!(c % (PAGE << 3), 0);
        assert_ne!(a, c);
        b.free(&mut mem, a, 0);
        b.free(&mut mem, c, 3);
        assert_eq!(b.stats.free_pages, 2048);
        // Both blocks whole again (bootstrap maps sufficed, no meta pages).
        assert_eq!(b.stats.meta_pages, 0);
        assert!(b.heads[MAX_ORDER as usize] != NIL);
        assert_eq!(
            b.alloc(&mut mem, 10, &mut no_accept).map(|x| x % BLOCK),
            Some(0)
        );
        assert!(b.alloc(&mut mem, 10, &mut no_accept).is_some());
        assert_eq!(b.alloc(&mut mem, 0, &mut no_accept), None);
    }

    #[test]
    fn parked_blocks_are_accepted_one_at_a_time_below_the_watermark() {
        let mut dir = vec![0; 16];
        let mut mem = Mem::default();
        let mut b = setup(&mut dir, &mut mem);
        b.watermark_pages = 512;
        b.add_free_range(&mut mem, 0, BLOCK);
        for blk in 1..16 {
            assert!(b.park(&mut mem, blk * BLOCK));
            mem.unaccepted.insert(blk);
        }
        let mut accepted = Vec::new();
        let mut live = Vec::new();
        for _ in 0..600 {
            let unacc = &mut mem.unaccepted as *mut HashSet<u64>;
            let mut accept = |s: u64, l: u64| {
                assert_eq!(l, BLOCK);
                // SAFETY: (test) the closure runs while `mem` is not borrowed
                // by the allocator's own access of that block.
                unsafe { (*unacc).remove(&(s / BLOCK)) };
                accepted.push(s);
            };
            live.push(b.alloc(&mut mem, 0, &mut accept).unwrap());
        }
        // 600 pages + 512 watermark need two blocks: the first and one more.
        assert_eq!(accepted, vec![BLOCK]);
        assert_eq!(
            b.take_parked_below(&mut mem, 15 * BLOCK + BLOCK - 1),
            Some(14 * BLOCK)
        );
        assert!(b.park(&mut mem, 14 * BLOCK));
        assert_eq!(b.take_parked_top(&mut mem), Some(15 * BLOCK));
        assert_eq!(b.stats.parked_blocks, 13);
        assert_eq!(b.stats.blocks_accepted_lazily, 1);
    }

    #[test]
    fn a_lazy_64_tib_directory_holds_a_few_pages() {
        let blocks = abi::to_usize((64u64 << 40) / BLOCK);
        let mut top = vec![0; abi::to_usize(crate::directory::sections_for(blocks as u64))];
        let mut mem = Mem::default();
        let mut dir = Directory::new(&mut top, blocks);
        dir.add_spare(&mut mem, BOOT + 0x10_0000);
        let mut b = Buddy::new(dir, &mut mem, BOOT, 2 * META_BYTES);
        // 16 MiB free at the bottom, then everything parked.
        assert!(b.add_free_range(&mut mem, PAGE, 4 * BLOCK));
        assert!(b.park_blocks(&mut mem, 4 * BLOCK, blocks as u64 - 4));
        assert_eq!(b.stats.parked_blocks, blocks as u64 - 4);
        // Section 0 (free and parked blocks) and the spares kept at hand.
        assert_eq!(b.stats.dir_pages, SPARE_DIR_PAGES);
        assert_eq!(b.dir_bytes(), 32768 * 8 + (1 + SPARE_DIR_PAGES) * PAGE);
        // Taking the top block gives its section a spare page.
        let top_block = (blocks as u64 - 1) * BLOCK;
        assert_eq!(b.take_parked_top(&mut mem), Some(top_block));
        assert_eq!(b.dir_bytes(), 32768 * 8 + (1 + SPARE_DIR_PAGES) * PAGE);
        assert_eq!(b.take_parked_next(&mut mem), Some(4 * BLOCK));
        assert!(b.park(&mut mem, top_block));
        assert_eq!(b.take_parked_top(&mut mem), Some(top_block));
    }

    #[test]
    fn a_directory_without_pages_refuses_to_take_and_says_so() {
        let mut top = vec![0; 2];
        let mut mem = Mem::default();
        let dir = Directory::new(&mut top, 1024);
        let mut b = Buddy::new(dir, &mut mem, BOOT, 2 * META_BYTES);
        // Parking whole sections needs no page; taking from one does, and
        // there is neither a spare nor free memory.
        assert!(b.park_blocks(&mut mem, 0, 1024));
        assert_eq!(b.take_parked_next(&mut mem), None);
        assert_eq!(b.take_parked_top(&mut mem), None);
        assert_eq!((b.stats.dir_starved, b.stats.parked_blocks), (2, 1024));
    }

    proptest! {
        /// Against a model: allocations are aligned, disjoint, inside usable
        /// memory; parked memory is never touched before acceptance; freeing
        /// everything restores every fully usable block to a whole block.
        #[test]
        fn matches_the_model(
            ranges in proptest::collection::vec((0u64..24, 1u64..3000), 1..5),
            parked in proptest::collection::btree_set(24u64..32, 0..6),
            ops in proptest::collection::vec((0u32..11, any::<bool>(), any::<u16>()), 1..150),
        ) {
            let mut dir = vec![0; 32];
            let mut mem = Mem::default();
            let mut b = setup(&mut dir, &mut mem);
            b.watermark_pages = 256;
            // Usable ranges: disjoint page ranges below block 24.
            let mut usable = BTreeMap::new();
            for (blk, pages) in ranges {
                let start = blk * BLOCK + (pages % 7) * PAGE;
                let end = (start + pages * PAGE).min(24 * BLOCK);
                if usable.range(..end).next_back().is_some_and(|(_, e): (&u64, &u64)| *e > start) || usable.range(start..end).next().is_some() {
                    continue;
                }
                usable.insert(start, end);
            }
            for (s, e) in &usable { prop_assert!(b.add_free_range(&mut mem, *s, *e)); }
            for p in &parked { prop_assert!(b.park(&mut mem, p * BLOCK)); mem.unaccepted.insert(*p); }
            let mut live: Vec<(u64, u32)> = Vec::new();
            let unacc = &mut mem.unaccepted as *mut HashSet<u64>;
            for (order, do_free, pick) in ops {
                if do_free && !live.is_empty() {
                    let (a, o) = live.swap_remove(pick as usize % live.len());
                    b.free(&mut mem, a, o);
                    continue;
                }
                let accept = |s: u64, _l: u64| {
                    // SAFETY: (test) single-threaded; no allocator access of
                    // `mem` is live while the closure runs.
                    unsafe { prop_assert!((*unacc).remove(&(s / BLOCK))); }
                    Ok(())
                };
                let mut acc = |s: u64, l: u64| accept(s, l).unwrap();
                if let Some(a) = b.alloc(&mut mem, order, &mut acc) {
                    let len = PAGE << order;
                    prop_assert_eq!(a % len, 0);
                    // Adjacent usable ranges may together hold one block.
                    let inside_usable = (a..a + len)
                        .step_by(abi::to_usize(PAGE))
                        .all(|pg| usable.range(..=pg).next_back().is_some_and(|(_, e)| pg < *e));
                    let inside_parked = parked.contains(&(a / BLOCK));
                    prop_assert!(inside_usable || inside_parked, "{:#x} order {} outside usable memory", a, order);
                    for (x, xo) in &live {
                        prop_assert!(a + len <= *x || *x + (PAGE << xo) <= a, "overlap");
                    }
                    live.push((a, order));
                }
            }
            for (a, o) in live.drain(..) { b.free(&mut mem, a, o); }
            let usable_pages: u64 = usable.iter().map(|(s, e)| (e - s) / PAGE).sum::<u64>()
                + b.stats.blocks_accepted_lazily * 1024;
            prop_assert_eq!(b.stats.free_pages + b.stats.meta_pages + b.stats.dir_pages, usable_pages);
        }
    }
}
