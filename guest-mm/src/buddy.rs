//! Buddy allocator over guest-physical memory, orders 0 (4 KiB) to 10
//! (4 MiB), with Linux-style lazy acceptance of parked 4 MiB blocks.
//!
//! Metadata: a directory word per 4 MiB block (absent, parked, free whole,
//! used whole, or the address of the block's 256-byte free-bit map when it
//! is split), and the free lists, linked through the free blocks themselves.
//! Bit maps come from a slot pool that grows a page at a time from the
//! allocator (the first page of a 4 MiB block hosts that block's own map),
//! so nothing is sized per 4 KiB page and nothing is written to parked
//! (unaccepted) memory.

/// Bytes in a page.
pub const PAGE: u64 = 4096;
/// Highest order: 2^10 pages = 4 MiB.
pub const MAX_ORDER: u32 = 10;
/// Bytes in a top-order block.
pub const BLOCK: u64 = PAGE << MAX_ORDER;

const ORDERS: usize = MAX_ORDER as usize + 1;
const NIL: u64 = u64::MAX;
const ABSENT: u64 = 0;
const PARKED: u64 = 1;
const FREE_WHOLE: u64 = 2;
const USED_WHOLE: u64 = 3;
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
}

/// The allocator. `dir` has one word per 4 MiB block from address 0.
pub struct Buddy<'a> {
    dir: &'a mut [u64],
    heads: [u64; ORDERS],
    free_meta: u64,
    parked_cursor: usize,
    /// Accept a parked block when free pages would drop below this.
    pub watermark_pages: u64,
    pub stats: Stats,
}

impl<'a> Buddy<'a> {
    /// An empty allocator; `bootstrap` is memory for `bootstrap_len` bytes
    /// of free-bit maps used before the allocator has pages of its own.
    pub fn new(
        dir: &'a mut [u64],
        mem: &mut impl Phys,
        bootstrap: u64,
        bootstrap_len: u64,
    ) -> Self {
        dir.fill(ABSENT);
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
        self.dir.len()
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
        self.dir[(block / BLOCK) as usize] = block;
        // Everything but the first page goes back as pieces of order 0..9.
        for k in 0..MAX_ORDER {
            self.insert(mem, block + (PAGE << k), k);
        }
        self.stats.free_pages += (1 << MAX_ORDER) - 1;
        true
    }

    fn meta_of(&self, addr: u64) -> u64 {
        let m = self.dir[(addr / BLOCK) as usize];
        debug_assert!(m > USED_WHOLE, "block {addr:#x} is not split");
        m
    }

    fn bit(order: u32, addr: u64) -> u64 {
        BIT_BASE[order as usize] + ((addr % BLOCK) >> (12 + order))
    }

    fn test(&self, mem: &impl Phys, addr: u64, order: u32) -> bool {
        let b = Self::bit(order, addr);
        mem.read(self.meta_of(addr) + b / 64 * 8) & (1 << (b % 64)) != 0
    }

    fn flip(&self, mem: &mut impl Phys, addr: u64, order: u32, on: bool) {
        let b = Self::bit(order, addr);
        let word = self.meta_of(addr) + b / 64 * 8;
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
            let meta = self.dir[block];
            if meta > USED_WHOLE {
                self.push_meta(mem, meta);
            }
            self.dir[block] = FREE_WHOLE;
        }
        self.insert(mem, addr, order);
    }

    /// Adds accepted, usable `[start, end)` (page aligned) as free memory.
    pub fn add_free_range(&mut self, mem: &mut impl Phys, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            let block = at / BLOCK;
            let block_end = ((block + 1) * BLOCK).min(end);
            if at.is_multiple_of(BLOCK) && block_end - at == BLOCK {
                self.dir[block as usize] = USED_WHOLE;
                self.free(mem, at, MAX_ORDER);
                at = block_end;
                continue;
            }
            if self.dir[block as usize] <= USED_WHOLE {
                let Some(meta) = self.take_meta(mem) else {
                    return false;
                };
                self.dir[block as usize] = meta;
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
        true
    }

    /// Parks the 4 MiB block at `addr`: it holds unaccepted memory and is
    /// accepted only when needed. Nothing inside it is touched.
    pub fn park(&mut self, addr: u64) {
        self.park_blocks(addr, 1);
    }

    /// Parks the `n` whole blocks from `addr` in one step (a boot parks
    /// every block of a terabyte of unaccepted memory: one store each).
    pub fn park_blocks(&mut self, addr: u64, n: u64) {
        let first = (addr / BLOCK) as usize;
        self.dir[first..first + abi::to_usize(n)].fill(PARKED);
        self.stats.parked_blocks += n;
        self.stats.blocks_parked += n;
    }

    /// Takes the highest parked block out of the allocator without
    /// accepting it (kexec picks destinations top-down in RAM the running
    /// kernel does not use). None when nothing is parked.
    pub fn take_parked_top(&mut self) -> Option<u64> {
        self.take_parked_below(u64::MAX)
    }

    /// The same, among blocks that end at or below `limit` (kexec
    /// destinations must end below `KEXEC_DESTINATION_MEMORY_LIMIT`).
    pub fn take_parked_below(&mut self, limit: u64) -> Option<u64> {
        let blocks = (limit / BLOCK).min(self.dir.len() as u64) as usize;
        let i = (0..blocks).rev().find(|i| self.dir[*i] == PARKED)?;
        self.dir[i] = USED_WHOLE;
        self.stats.parked_blocks -= 1;
        Some(i as u64 * BLOCK)
    }

    /// Linux's `try_to_accept_memory_one`: accepts the lowest parked block
    /// through `accept(start, len)` and frees it. False when none is left.
    pub fn accept_one(&mut self, mem: &mut impl Phys, accept: &mut impl FnMut(u64, u64)) -> bool {
        let Some(addr) = self.take_parked_next() else {
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
    pub fn take_parked_next(&mut self) -> Option<u64> {
        if self.stats.parked_blocks == 0 {
            return None;
        }
        while self.dir[self.parked_cursor] != PARKED {
            self.parked_cursor += 1;
        }
        self.stats.parked_blocks -= 1;
        self.dir[self.parked_cursor] = USED_WHOLE;
        Some(self.parked_cursor as u64 * BLOCK)
    }

    /// Frees a block taken with `take_parked_next` once it is accepted.
    pub fn return_accepted(&mut self, mem: &mut impl Phys, addr: u64) {
        self.stats.blocks_accepted_lazily += 1;
        self.free(mem, addr, MAX_ORDER);
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
                self.dir[block] = USED_WHOLE;
            } else {
                let meta = self.take_meta(mem)?;
                self.dir[block] = meta;
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

    fn setup<'a>(dir: &'a mut [u64], mem: &mut Mem) -> Buddy<'a> {
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
            b.park(blk * BLOCK);
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
            b.take_parked_below(15 * BLOCK + BLOCK - 1),
            Some(14 * BLOCK)
        );
        b.park(14 * BLOCK);
        assert_eq!(b.take_parked_top(), Some(15 * BLOCK));
        assert_eq!(b.stats.parked_blocks, 13);
        assert_eq!(b.stats.blocks_accepted_lazily, 1);
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
            for p in &parked { b.park(p * BLOCK); mem.unaccepted.insert(*p); }
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
            prop_assert_eq!(b.stats.free_pages + b.stats.meta_pages, usable_pages);
        }
    }
}
