//! The page-state table: the TDX module's ground truth for every 4 KiB page
//! of private memory, pending or accepted, and the Secure-EPT shape that
//! decides accept statuses (a 2 MiB leaf, or a 2 MiB range split into 4 KiB
//! leaves).
//!
//! Indexed by RAM offset (not GPA): page `i` covers host-mapping offset
//! `[i * 4K, (i + 1) * 4K)`. Storage is one `u32` per 2 MiB chunk plus a
//! 64-byte bitmap for each chunk that has been split into 4 KiB state, so the
//! table costs 2 MiB per TiB of guest RAM, plus at most one bit per page.

use abi::tdcall::AcceptLevel;
use abi::tdcall::SeptLevel;

/// Pages in a 2 MiB chunk.
pub const PAGES_PER_CHUNK: u64 = 512;
/// Pages in 1 GiB.
pub const PAGES_PER_GIB: u64 = 512 * 512;

pub(super) const PENDING: u32 = 0;
pub(super) const MAPPED_2M: u32 = 1;
pub(super) const SPLIT_BASE: u32 = 2;

/// The state of one 4 KiB page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Added by the host, never accepted: any access is fatal.
    Pending,
    /// Accepted: mapped, zeroed when it was accepted.
    Accepted,
}

/// What an accept request did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The range went from pending to accepted.
    Accepted,
    /// The range was already accepted; the level of the existing mapping.
    AlreadyAccepted(AcceptLevel),
    /// A 2 MiB request over a range already split into 4 KiB state.
    SizeMismatch,
}

use crate::memory::host_alloc::try_zeroed_u32;
pub use crate::memory::host_alloc::ReserveError;

/// Ground truth of every page of guest RAM.
#[derive(Clone, Debug)]
pub struct PageStateTable {
    pub(super) pages: u64,
    pub(super) chunks: Vec<u32>,
    pub(super) bitmaps: Vec<[u64; 8]>,
    accepted_pages: u64,
    gib_accepted: Vec<u32>,
    /// The host's Secure-EPT leaf size: with 4 KiB leaves a 2 MiB accept
    /// of a pending range is a size mismatch.
    sept: SeptLevel,
}

impl PageStateTable {
    /// A table of `pages` pending pages.
    ///
    /// # Panics
    /// When the host cannot reserve the table; the VMM uses `try_new`.
    pub fn new(pages: u64) -> Self {
        Self::try_new(pages).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A table of `pages` pending pages, or why the host could not reserve
    /// it. Pending is the all-zero state, so the table is allocated zeroed
    /// and its untouched parts cost no host memory.
    pub fn try_new(pages: u64) -> Result<Self, ReserveError> {
        let chunks = pages.div_ceil(PAGES_PER_CHUNK);
        let gibs = pages.div_ceil(PAGES_PER_GIB);
        const _: () = assert!(PENDING == 0);
        Ok(PageStateTable {
            pages,
            chunks: try_zeroed_u32(chunks, "the page-state table")?,
            bitmaps: Vec::new(),
            accepted_pages: 0,
            gib_accepted: try_zeroed_u32(gibs, "the per-GiB accept counts")?,
            sept: SeptLevel::L2M,
        })
    }

    /// Sets the host's Secure-EPT leaf size (before any accept).
    pub fn set_sept_level(&mut self, sept: SeptLevel) {
        self.sept = sept;
    }

    /// The host's Secure-EPT leaf size.
    pub fn sept_level(&self) -> SeptLevel {
        self.sept
    }

    /// Number of pages the table covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Number of accepted pages.
    pub fn accepted_pages(&self) -> u64 {
        self.accepted_pages
    }

    /// Number of pending pages.
    pub fn pending_pages(&self) -> u64 {
        self.pages - self.accepted_pages
    }

    /// Host memory the table itself uses, in bytes.
    pub fn footprint_bytes(&self) -> u64 {
        (self.chunks.capacity() * 4
            + self.bitmaps.capacity() * 64
            + self.gib_accepted.capacity() * 4) as u64
    }

    /// Pages of chunk `chunk` that are RAM (512, fewer for a final partial chunk).
    pub fn chunk_pages(&self, chunk: u64) -> u64 {
        (self.pages - chunk * PAGES_PER_CHUNK).min(PAGES_PER_CHUNK)
    }

    /// Pages of 1 GiB block `gib` that are RAM.
    pub fn gib_pages(&self, gib: u64) -> u64 {
        (self.pages - gib * PAGES_PER_GIB).min(PAGES_PER_GIB)
    }

    /// State of page `page` (`page < pages()`).
    pub fn state(&self, page: u64) -> PageState {
        let accepted = match self.chunks[(page / PAGES_PER_CHUNK) as usize] {
            PENDING => false,
            MAPPED_2M => true,
            split => bit(
                &self.bitmaps[(split - SPLIT_BASE) as usize],
                page % PAGES_PER_CHUNK,
            ),
        };
        if accepted {
            PageState::Accepted
        } else {
            PageState::Pending
        }
    }

    /// What an accept of `page` at `level` answers, without changing
    /// anything: the one decision table of `TDG.MEM.PAGE.ACCEPT` over the
    /// Secure EPT's shape (`accept` applies it; an accept from a vCPU
    /// decides under its Secure-EPT entry lock, zeroes outside the state
    /// lock, then commits).
    ///
    /// The caller has validated the request: `page` is aligned to `level`
    /// and the whole page is RAM.
    pub fn decide(&self, page: u64, level: AcceptLevel) -> AcceptOutcome {
        let state = self.chunks[(page / PAGES_PER_CHUNK) as usize];
        match (level, state) {
            (_, MAPPED_2M) => AcceptOutcome::AlreadyAccepted(AcceptLevel::L2M),
            (AcceptLevel::L2M, PENDING) if self.sept == SeptLevel::L4K => {
                AcceptOutcome::SizeMismatch
            }
            (_, PENDING) => AcceptOutcome::Accepted,
            (AcceptLevel::L2M, _split) => AcceptOutcome::SizeMismatch,
            (AcceptLevel::L4K, split) => {
                if bit(
                    &self.bitmaps[(split - SPLIT_BASE) as usize],
                    page % PAGES_PER_CHUNK,
                ) {
                    AcceptOutcome::AlreadyAccepted(AcceptLevel::L4K)
                } else {
                    AcceptOutcome::Accepted
                }
            }
        }
    }

    /// Applies `TDG.MEM.PAGE.ACCEPT` at `page` and `level`: `decide`, and
    /// when that says `Accepted`, the pending page becomes accepted (a 4 KiB
    /// accept in a pending chunk splits it into 4 KiB state).
    pub fn accept(&mut self, page: u64, level: AcceptLevel) -> AcceptOutcome {
        let outcome = self.decide(page, level);
        if outcome == AcceptOutcome::Accepted {
            self.mark_accepted(page, level);
        }
        outcome
    }

    /// Records pending `page` (at `level`) accepted; `decide` said so.
    fn mark_accepted(&mut self, page: u64, level: AcceptLevel) {
        let chunk = (page / PAGES_PER_CHUNK) as usize;
        let index = page % PAGES_PER_CHUNK;
        match (level, self.chunks[chunk]) {
            (AcceptLevel::L2M, _) => {
                debug_assert_eq!(index, 0);
                debug_assert_eq!(self.chunk_pages(chunk as u64), PAGES_PER_CHUNK);
                self.chunks[chunk] = MAPPED_2M;
                self.count(page, PAGES_PER_CHUNK);
            }
            (AcceptLevel::L4K, PENDING) => {
                let mut map = [0u64; 8];
                set_bit(&mut map, index);
                self.bitmaps.push(map);
                self.chunks[chunk] = split_entry(self.bitmaps.len() - 1);
                self.count(page, 1);
            }
            (AcceptLevel::L4K, split) => {
                set_bit(&mut self.bitmaps[(split - SPLIT_BASE) as usize], index);
                self.count(page, 1);
            }
        }
    }

    /// Makes room, fallibly, for the 4 KiB map that an accept of `page` at
    /// `level` adds when it splits a pending chunk: the guest decides how
    /// many chunks it splits (64 bytes each), so the host's memory for
    /// them may run out, and that must be an error, not an abort. After
    /// it, `accept` of the same page allocates nothing.
    pub fn reserve_for_accept(
        &mut self,
        page: u64,
        level: AcceptLevel,
    ) -> Result<(), ReserveError> {
        let chunk = (page / PAGES_PER_CHUNK) as usize;
        if level != AcceptLevel::L4K || self.chunks.get(chunk) != Some(&PENDING) {
            return Ok(());
        }
        self.bitmaps.try_reserve(1).map_err(|_| ReserveError {
            what: "the 4 KiB page states of a split 2 MiB page",
            bytes: (self.bitmaps.len() as u64 + 1) * 64,
        })
    }

    /// Marks `[first, first + count)` accepted as 4 KiB pages, the way
    /// `TDH.MEM.PAGE.ADD` builds a TD's initial memory.
    pub fn add_initial(&mut self, first: u64, count: u64) {
        for page in first..first + count {
            self.accept(page, AcceptLevel::L4K);
        }
    }

    /// Returns accepted page `page` to pending (the groundwork of
    /// MapGPA-to-shared and of a host removing a page). A 2 MiB leaf
    /// becomes 512 4 KiB entries, as the Secure EPT does when a page of it
    /// is removed; a chunk stays split once all its pages are pending
    /// again, unless it is released whole (`release_chunk`). Returns false
    /// when the page was pending already.
    pub fn release(&mut self, page: u64) -> bool {
        let chunk = (page / PAGES_PER_CHUNK) as usize;
        let index = page % PAGES_PER_CHUNK;
        let slot = match self.chunks[chunk] {
            PENDING => return false,
            MAPPED_2M => {
                let mut map = [u64::MAX; 8];
                clear_bit(&mut map, index);
                self.bitmaps.push(map);
                self.chunks[chunk] = split_entry(self.bitmaps.len() - 1);
                self.uncount(page, 1);
                return true;
            }
            split => (split - SPLIT_BASE) as usize,
        };
        if !bit(&self.bitmaps[slot], index) {
            return false;
        }
        clear_bit(&mut self.bitmaps[slot], index);
        self.uncount(page, 1);
        true
    }

    /// Returns a whole 2 MiB chunk to pending, its Secure-EPT entry
    /// removed (a 2 MiB accept works there again). Returns the pages that
    /// were accepted.
    pub fn release_chunk(&mut self, chunk: u64) -> u64 {
        let accepted = self.chunk_accepted(chunk);
        if accepted > 0 {
            self.uncount(chunk * PAGES_PER_CHUNK, accepted);
        }
        // A split chunk's bitmap stays allocated (unreferenced), like the
        // rest of the table's history: at most 64 bytes per chunk.
        self.chunks[abi::to_usize(chunk)] = PENDING;
        accepted
    }

    fn uncount(&mut self, page: u64, n: u64) {
        self.accepted_pages -= n;
        self.gib_accepted[abi::to_usize(page / PAGES_PER_GIB)] -= gib_count(n);
    }

    fn count(&mut self, page: u64, n: u64) {
        self.accepted_pages += n;
        self.gib_accepted[abi::to_usize(page / PAGES_PER_GIB)] += gib_count(n);
    }

    /// Number of accepted pages in chunk `chunk`.
    pub fn chunk_accepted(&self, chunk: u64) -> u64 {
        match self.chunks[abi::to_usize(chunk)] {
            PENDING => 0,
            MAPPED_2M => PAGES_PER_CHUNK,
            split => self.bitmaps[(split - SPLIT_BASE) as usize]
                .iter()
                .map(|w| w.count_ones() as u64)
                .sum(),
        }
    }

    /// Accepted pages counted for 1 GiB block `gib`.
    pub fn gib_accepted(&self, gib: u64) -> u64 {
        u64::from(self.gib_accepted[abi::to_usize(gib)])
    }

    /// True when every page of chunk `chunk` is accepted.
    pub fn chunk_full(&self, chunk: u64) -> bool {
        self.chunk_accepted(chunk) == self.chunk_pages(chunk)
    }

    /// True when every page of 1 GiB block `gib` is accepted.
    pub fn gib_full(&self, gib: u64) -> bool {
        u64::from(self.gib_accepted[abi::to_usize(gib)]) == self.gib_pages(gib)
    }
}

/// The chunk entry naming bitmap `index`. A table has at most 2^25 chunks
/// (`MAX_MEM_BYTES` / 2 MiB) and a chunk gets a new bitmap only when it is
/// split again after a release; 2^32 bitmaps would be 256 GiB of host
/// memory, so the entry fits in a `u32` on any host that can hold them.
#[allow(clippy::cast_possible_truncation)] // bounded above
fn split_entry(index: usize) -> u32 {
    debug_assert!(index <= (u32::MAX - SPLIT_BASE) as usize);
    SPLIT_BASE + index as u32
}

/// `n` pages of one GiB block as its count's type: at most
/// `PAGES_PER_GIB` (2^18), so it always fits in a `u32`.
#[allow(clippy::cast_possible_truncation)] // bounded above
fn gib_count(n: u64) -> u32 {
    debug_assert!(n <= PAGES_PER_GIB);
    n as u32
}

pub(super) fn bit(map: &[u64; 8], index: u64) -> bool {
    map[(index / 64) as usize] & (1 << (index % 64)) != 0
}

fn set_bit(map: &mut [u64; 8], index: u64) {
    map[(index / 64) as usize] |= 1 << (index % 64);
}

fn clear_bit(map: &mut [u64; 8], index: u64) {
    map[(index / 64) as usize] &= !(1 << (index % 64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive model: per page, pending or accepted at a level.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Model {
        Pending,
        At4K,
        At2M,
        /// Pending again under a 4 KiB leaf (released from a split chunk).
        Released,
    }

    fn chunk_of(model: &mut [Model], page: u64) -> &mut [Model] {
        let chunk = abi::to_usize(page / PAGES_PER_CHUNK) * abi::to_usize(PAGES_PER_CHUNK);
        let chunk_end = (chunk + abi::to_usize(PAGES_PER_CHUNK)).min(model.len());
        &mut model[chunk..chunk_end]
    }

    /// Release of one page: a 2 MiB leaf splits into 4 KiB leaves.
    fn model_release(model: &mut [Model], page: u64) -> bool {
        let index = abi::to_usize(page % PAGES_PER_CHUNK);
        let pages = chunk_of(model, page);
        if pages[index] == Model::At2M {
            pages.fill(Model::At4K);
        }
        let was = pages[index] == Model::At4K;
        if was {
            pages[index] = Model::Released;
        }
        was
    }

    fn model_accept(model: &mut [Model], page: u64, level: AcceptLevel) -> AcceptOutcome {
        let pages = chunk_of(model, page);
        if pages.contains(&Model::At2M) {
            return AcceptOutcome::AlreadyAccepted(AcceptLevel::L2M);
        }
        match level {
            AcceptLevel::L2M
                if pages
                    .iter()
                    .any(|m| matches!(m, Model::At4K | Model::Released)) =>
            {
                AcceptOutcome::SizeMismatch
            }
            AcceptLevel::L2M => {
                pages.fill(Model::At2M);
                AcceptOutcome::Accepted
            }
            _ => {
                let p = &mut model[abi::to_usize(page)];
                if *p == Model::At4K {
                    AcceptOutcome::AlreadyAccepted(AcceptLevel::L4K)
                } else {
                    *p = Model::At4K;
                    AcceptOutcome::Accepted
                }
            }
        }
    }

    #[test]
    fn an_accept_after_its_reservation_allocates_nothing() {
        let mut t = PageStateTable::new(4 * PAGES_PER_CHUNK);
        for chunk in 0..4 {
            let page = chunk * PAGES_PER_CHUNK + 7;
            t.reserve_for_accept(page, AcceptLevel::L4K).unwrap();
            let cap = t.bitmaps.capacity();
            assert!(cap > t.bitmaps.len());
            assert_eq!(t.accept(page, AcceptLevel::L4K), AcceptOutcome::Accepted);
            assert_eq!(t.bitmaps.capacity(), cap, "chunk {chunk}");
            // A split chunk needs no more room.
            t.reserve_for_accept(page + 1, AcceptLevel::L4K).unwrap();
            assert_eq!(t.bitmaps.capacity(), cap);
        }
    }

    #[test]
    fn an_impossible_table_is_an_error_not_an_abort() {
        let e = PageStateTable::try_new(u64::MAX).unwrap_err();
        assert_eq!(e.what, "the page-state table");
        assert!(e.to_string().starts_with("cannot reserve"), "{e}");
    }

    #[test]
    fn statuses_follow_the_secure_ept_shape() {
        let mut t = PageStateTable::new(4 * PAGES_PER_CHUNK);
        assert_eq!(t.accept(0, AcceptLevel::L2M), AcceptOutcome::Accepted);
        assert_eq!(
            t.accept(0, AcceptLevel::L2M),
            AcceptOutcome::AlreadyAccepted(AcceptLevel::L2M)
        );
        assert_eq!(
            t.accept(7, AcceptLevel::L4K),
            AcceptOutcome::AlreadyAccepted(AcceptLevel::L2M)
        );
        assert_eq!(t.accept(512 + 3, AcceptLevel::L4K), AcceptOutcome::Accepted);
        assert_eq!(
            t.accept(512 + 3, AcceptLevel::L4K),
            AcceptOutcome::AlreadyAccepted(AcceptLevel::L4K)
        );
        assert_eq!(t.accept(512, AcceptLevel::L2M), AcceptOutcome::SizeMismatch);
        assert_eq!(t.state(512 + 3), PageState::Accepted);
        assert_eq!(t.state(512 + 4), PageState::Pending);
        assert_eq!(t.accepted_pages(), 513);
        assert!(t.chunk_full(0));
        assert!(!t.chunk_full(1));
    }

    #[test]
    fn a_chunk_filled_by_4k_accepts_is_full_but_stays_split() {
        let mut t = PageStateTable::new(PAGES_PER_CHUNK);
        for p in 0..PAGES_PER_CHUNK {
            assert_eq!(t.accept(p, AcceptLevel::L4K), AcceptOutcome::Accepted);
        }
        assert!(t.chunk_full(0));
        assert!(t.gib_full(0));
        assert_eq!(t.accept(0, AcceptLevel::L2M), AcceptOutcome::SizeMismatch);
    }

    #[test]
    fn partial_last_chunk() {
        let mut t = PageStateTable::new(PAGES_PER_CHUNK + 10);
        assert_eq!(t.chunk_pages(1), 10);
        for p in 512..522 {
            t.accept(p, AcceptLevel::L4K);
        }
        assert!(t.chunk_full(1));
        let mut runs = vec![];
        t.for_each_accepted_run(0, t.pages(), |s, n| runs.push((s, n)));
        assert_eq!(runs, vec![(512, 10)]);
    }

    #[test]
    fn accepted_gpa_ranges_are_split_at_the_hole_and_capped() {
        // 4 GiB of RAM: [0, 3 GiB) and [4 GiB, 5 GiB).
        let layout = abi::layout::RamLayout::for_mem(4 << 30, 48);
        let mut t = PageStateTable::new((4u64 << 30) / 4096);
        let low_end = (3u64 << 30) / 4096;
        // A run across the offset where low RAM ends, a 2 MiB page in
        // high RAM, and one lone 4 KiB page.
        for p in low_end - 2..low_end + 3 {
            t.accept(p, AcceptLevel::L4K);
        }
        t.accept(low_end + 1024, AcceptLevel::L2M);
        t.accept(7, AcceptLevel::L4K);
        let (ranges, left_out) = t.accepted_gpa_ranges(&layout, 16);
        let (g3, g4) = (3u64 << 30, 4u64 << 30);
        assert_eq!(
            ranges,
            vec![
                [0x7000, 0x8000],
                [g3 - 0x2000, g3],
                [g4, g4 + 0x3000],
                [g4 + (4 << 20), g4 + (6 << 20)],
            ]
        );
        assert_eq!(left_out, 0);
        let (ranges, left_out) = t.accepted_gpa_ranges(&layout, 1);
        assert_eq!((ranges, left_out), (vec![[0x7000, 0x8000]], 3));
    }

    #[test]
    fn one_tib_costs_a_few_mib() {
        let t = PageStateTable::new((1u64 << 40) / 4096);
        assert!(t.footprint_bytes() < 3 << 20, "{}", t.footprint_bytes());
    }

    proptest! {
        #[test]
        fn matches_the_model(ops in proptest::collection::vec((0u64..6 * 512, 0u8..8), 1..400)) {
            let pages = 5 * 512 + 100;
            let mut t = PageStateTable::new(pages);
            let mut model = vec![Model::Pending; abi::to_usize(pages)];
            let pending = |m: &Model| matches!(m, Model::Pending | Model::Released);
            for (page, op) in ops {
                let page = page % pages;
                match op {
                    // Releases, one page or a whole chunk, now and then.
                    0 => prop_assert_eq!(t.release(page), model_release(&mut model, page)),
                    1 => {
                        let chunk = chunk_of(&mut model, page);
                        let was = chunk.iter().filter(|m| matches!(m, Model::At4K | Model::At2M)).count() as u64;
                        chunk.fill(Model::Pending);
                        prop_assert_eq!(t.release_chunk(page / PAGES_PER_CHUNK), was);
                    }
                    _ => {
                        let (page, level) = if op >= 5 && page / 512 < 5 {
                            (page & !511, AcceptLevel::L2M)
                        } else {
                            (page, AcceptLevel::L4K)
                        };
                        prop_assert_eq!(t.accept(page, level), model_accept(&mut model, page, level));
                    }
                }
            }
            for g in 0..pages.div_ceil(PAGES_PER_GIB) {
                let lo = abi::to_usize(g * PAGES_PER_GIB);
                let hi = abi::to_usize(((g + 1) * PAGES_PER_GIB).min(pages));
                prop_assert_eq!(t.gib_accepted(g), model[lo..hi].iter().filter(|m| !pending(m)).count() as u64);
            }
            let accepted = model.iter().filter(|m| !pending(m)).count() as u64;
            prop_assert_eq!(t.accepted_pages(), accepted);
            for (i, m) in model.iter().enumerate() {
                let want = if pending(m) { PageState::Pending } else { PageState::Accepted };
                prop_assert_eq!(t.state(i as u64), want);
            }
            let mut covered = vec![false; abi::to_usize(pages)];
            let mut last_end = None;
            let mut runs = Vec::new();
            t.for_each_accepted_run(0, pages, |s, n| {
                assert!(last_end.is_none_or(|e| e < s), "runs must be maximal and ordered");
                last_end = Some(s + n);
                runs.push((s, s + n));
                for p in s..s + n { covered[abi::to_usize(p)] = true; }
            });
            // The outward scan finds the same runs, from any page inside.
            for (s, e) in runs {
                for p in [s, (s + e) / 2, e - 1] {
                    prop_assert_eq!(t.accepted_run_around(p, 0, pages), (s, e));
                }
                prop_assert_eq!(t.accepted_run_around(e - 1, e - 1, e), (e - 1, e));
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(covered[i], !pending(m));
            }
            for c in 0..pages.div_ceil(512) {
                let lo = abi::to_usize(c * 512);
                let hi = abi::to_usize(((c + 1) * 512).min(pages));
                prop_assert_eq!(t.chunk_full(c), model[lo..hi].iter().all(|m| !pending(m)));
            }
        }
    }

    #[test]
    fn with_4k_leaves_a_2m_accept_of_pending_memory_is_a_size_mismatch() {
        let mut t = PageStateTable::new(4 * PAGES_PER_CHUNK);
        t.set_sept_level(SeptLevel::L4K);
        assert_eq!(t.sept_level(), SeptLevel::L4K);
        // Nothing changes on the mismatch; peek agrees with accept.
        assert_eq!(t.decide(0, AcceptLevel::L2M), AcceptOutcome::SizeMismatch);
        assert_eq!(t.accept(0, AcceptLevel::L2M), AcceptOutcome::SizeMismatch);
        assert_eq!(t.accepted_pages(), 0);
        // 4 KiB accepts work, and a 2 MiB accept over them still mismatches.
        for p in 0..PAGES_PER_CHUNK {
            assert_eq!(t.decide(p, AcceptLevel::L4K), AcceptOutcome::Accepted);
            assert_eq!(t.accept(p, AcceptLevel::L4K), AcceptOutcome::Accepted);
        }
        assert_eq!(t.accepted_pages(), PAGES_PER_CHUNK);
        assert_eq!(t.accept(0, AcceptLevel::L2M), AcceptOutcome::SizeMismatch);
        assert_eq!(
            t.accept(7, AcceptLevel::L4K),
            AcceptOutcome::AlreadyAccepted(AcceptLevel::L4K)
        );
        // With 2 MiB leaves (the default) the same request succeeds.
        let mut t = PageStateTable::new(4 * PAGES_PER_CHUNK);
        assert_eq!(t.accept(0, AcceptLevel::L2M), AcceptOutcome::Accepted);
    }
}
