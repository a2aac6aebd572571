//! The reference model of `TDG.MEM.PAGE.ACCEPT`: the status any RCX operand
//! gets and the state it leaves behind, for a window of private memory whose
//! pages all start pending. The chaos guests predict every status with it;
//! the VMM's property tests hold its accept path to it. No allocation: the
//! window's state lives in fixed arrays (`MAX_WINDOW` bytes at most).
//!
//! The rules (the VMM's `accept.rs` implements them): an operand is first
//! checked by the contract's own reader, `abi::tdcall::accept::decode`
//! (reserved bits 11:3; level 4 KiB or 2 MiB, 1 GiB being rejected as TDX
//! module 1.5 does; the GPA aligned to the level; below the shared bit; the
//! whole page in RAM), every invalid case answering
//! `TDX_OPERAND_INVALID | RCX`. A valid request then succeeds on a pending page, answers
//! `TDX_PAGE_ALREADY_ACCEPTED | level of the existing mapping` on an
//! accepted one, and `TDX_PAGE_SIZE_MISMATCH | 2M` for a 2 MiB request over
//! a range already split into 4 KiB pages.
//!
//! Several vCPUs: the module takes the Secure-EPT entry of the request
//! (the 2 MiB entry; 4 KiB requests take their 2 MiB entry too) with a
//! try-lock. A request that finds it held answers `TDX_OPERAND_BUSY | RCX`
//! with nothing changed; the others run one after another. So two accepts
//! that overlapped in time on one entry are explained by some order of the
//! two, the second of which may have found the entry held
//! (`Model::accept_concurrent`).

use abi::layout::RamLayout;
use abi::tdcall::accept::decode;
use abi::tdcall::{status, AcceptLevel, PageLevel, SeptLevel};
use abi::{PAGE_2M, PAGE_4K};

/// Largest window the model tracks (the guests keep the model on their
/// stacks: three bits per page of it).
pub const MAX_WINDOW: u64 = 64 << 20;
/// 2 MiB entries in the largest window.
pub const MAX_CHUNKS: usize = (MAX_WINDOW / PAGE_2M) as usize;
const WORDS_PER_CHUNK: usize = 8;

/// The status for an invalid operand.
pub const INVALID: u64 = status::OPERAND_INVALID | status::OPERAND_RCX;

/// The status for a request whose Secure-EPT entry another vCPU holds.
pub const BUSY: u64 = status::OPERAND_BUSY | status::OPERAND_RCX;

/// What the model expects of one accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This exact status (and the model has applied the change).
    Status(u64),
    /// A valid request on RAM outside the window: the model cannot say.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Pending,
    Mapped2M,
    Split,
}

/// The state of a window of RAM that started all pending.
#[derive(Clone)]
pub struct Model {
    layout: RamLayout,
    base: u64,
    chunks: usize,
    state: [Chunk; MAX_CHUNKS],
    bits: [[u64; WORDS_PER_CHUNK]; MAX_CHUNKS],
    accepted_pages: u64,
    /// Pages converted to shared (MapGPA) and not back.
    shared: [[u64; WORDS_PER_CHUNK]; MAX_CHUNKS],
    /// Pages the host removed and the guest has not accepted since.
    removed: [[u64; WORDS_PER_CHUNK]; MAX_CHUNKS],
    /// The state a chunk goes back to when all of it is released.
    released: Chunk,
    /// Removed pages accepted again.
    reaccepted_pages: u64,
}

impl Model {
    /// A window `[base, base + len)` of pending RAM. `base` and `len` must be
    /// 2 MiB multiples, `len <= MAX_WINDOW`, and the window must be RAM;
    /// otherwise `None`.
    pub fn new(layout: RamLayout, base: u64, len: u64) -> Option<Self> {
        Self::with_sept_level(layout, base, len, SeptLevel::L2M)
    }

    /// The same with the host's Secure-EPT leaf size: with 4 KiB leaves
    /// every 2 MiB range starts split (pending, but mapped in 4 KiB pages).
    pub fn with_sept_level(
        layout: RamLayout,
        base: u64,
        len: u64,
        sept: SeptLevel,
    ) -> Option<Self> {
        if !base.is_multiple_of(PAGE_2M)
            || !len.is_multiple_of(PAGE_2M)
            || len == 0
            || len > MAX_WINDOW
            || !layout.is_ram(base, len)
        {
            return None;
        }
        Some(Model {
            layout,
            base,
            chunks: (len / PAGE_2M) as usize,
            state: [match sept {
                SeptLevel::L2M => Chunk::Pending,
                SeptLevel::L4K => Chunk::Split,
            }; MAX_CHUNKS],
            bits: [[0; WORDS_PER_CHUNK]; MAX_CHUNKS],
            accepted_pages: 0,
            shared: [[0; WORDS_PER_CHUNK]; MAX_CHUNKS],
            removed: [[0; WORDS_PER_CHUNK]; MAX_CHUNKS],
            released: match sept {
                SeptLevel::L2M => Chunk::Pending,
                SeptLevel::L4K => Chunk::Split,
            },
            reaccepted_pages: 0,
        })
    }

    /// The window.
    pub fn range(&self) -> (u64, u64) {
        (self.base, self.base + self.chunks as u64 * PAGE_2M)
    }

    /// The layout the model decodes against.
    pub fn layout(&self) -> &RamLayout {
        &self.layout
    }

    /// Pages accepted in the window so far.
    pub fn accepted_pages(&self) -> u64 {
        self.accepted_pages
    }

    fn locate(&self, gpa: u64) -> Option<(usize, usize)> {
        let (lo, hi) = self.range();
        (gpa >= lo && gpa < hi).then(|| {
            let off = gpa - lo;
            (
                (off / PAGE_2M) as usize,
                ((off % PAGE_2M) / PAGE_4K) as usize,
            )
        })
    }

    /// Removed pages the guest has accepted again (zeros where its data
    /// was).
    pub fn reaccepted_pages(&self) -> u64 {
        self.reaccepted_pages
    }

    /// True when the 4 KiB page at `gpa` (inside the window) is shared.
    pub fn is_shared(&self, gpa: u64) -> bool {
        self.locate(gpa)
            .is_some_and(|(c, p)| self.shared[c][p / 64] & (1 << (p % 64)) != 0)
    }

    /// True when the 4 KiB page at `gpa` was removed by the host and not
    /// accepted since.
    pub fn is_removed(&self, gpa: u64) -> bool {
        self.locate(gpa)
            .is_some_and(|(c, p)| self.removed[c][p / 64] & (1 << (p % 64)) != 0)
    }

    /// `[gpa, gpa + len)` (4 KiB aligned, inside the window) goes back to
    /// pending, as the VMM's `release` does for MapGPA to shared and a
    /// host's TDH.MEM.PAGE.REMOVE: a whole 2 MiB entry becomes pending
    /// (a 2 MiB accept works there again); part of one leaves it split
    /// into 4 KiB pages, the released ones pending.
    pub fn release(&mut self, gpa: u64, len: u64) {
        let mut at = gpa;
        let end = gpa + len;
        while at < end {
            let Some((c, p)) = self.locate(at) else {
                return;
            };
            let chunk_start = at - p as u64 * PAGE_4K;
            let chunk_end = (chunk_start + PAGE_2M).min(end);
            if p == 0 && chunk_end == chunk_start + PAGE_2M {
                self.accepted_pages -= self.chunk_accepted(c);
                self.state[c] = self.released;
                self.bits[c] = [0; WORDS_PER_CHUNK];
            } else {
                for q in p..p + ((chunk_end - at) / PAGE_4K) as usize {
                    match self.state[c] {
                        Chunk::Pending => {}
                        Chunk::Mapped2M => {
                            self.state[c] = Chunk::Split;
                            self.bits[c] = [u64::MAX; WORDS_PER_CHUNK];
                            self.bits[c][q / 64] &= !(1 << (q % 64));
                            self.accepted_pages -= 1;
                        }
                        Chunk::Split => {
                            if self.bits[c][q / 64] & (1 << (q % 64)) != 0 {
                                self.bits[c][q / 64] &= !(1 << (q % 64));
                                self.accepted_pages -= 1;
                            }
                        }
                    }
                }
            }
            at = chunk_end;
        }
    }

    fn chunk_accepted(&self, c: usize) -> u64 {
        match self.state[c] {
            Chunk::Pending => 0,
            Chunk::Mapped2M => 512,
            Chunk::Split => self.bits[c].iter().map(|w| u64::from(w.count_ones())).sum(),
        }
    }

    /// Sets or clears `[gpa, gpa + len)` in a per-page bit set.
    fn mark(
        set: &mut [[u64; WORDS_PER_CHUNK]; MAX_CHUNKS],
        model: &Model,
        gpa: u64,
        len: u64,
        on: bool,
    ) {
        let mut at = gpa;
        while at < gpa + len {
            if let Some((c, p)) = model.locate(at) {
                if on {
                    set[c][p / 64] |= 1 << (p % 64);
                } else {
                    set[c][p / 64] &= !(1 << (p % 64));
                }
            }
            at += PAGE_4K;
        }
    }

    /// MapGPA to shared of `[gpa, gpa + len)`: released, then shared.
    pub fn to_shared(&mut self, gpa: u64, len: u64) {
        self.release(gpa, len);
        let mut shared = self.shared;
        Self::mark(&mut shared, self, gpa, len, true);
        self.shared = shared;
    }

    /// MapGPA to private of `[gpa, gpa + len)`: the shared pages are
    /// private again, still pending (the guest accepts them); accepted
    /// private pages in the range stay accepted.
    pub fn to_private(&mut self, gpa: u64, len: u64) {
        let mut shared = self.shared;
        Self::mark(&mut shared, self, gpa, len, false);
        self.shared = shared;
    }

    /// The host removed the accepted 4 KiB page at `gpa`
    /// (TDH.MEM.PAGE.REMOVE): pending again, and remembered as removed
    /// until accepted.
    pub fn remove(&mut self, gpa: u64) {
        let page = gpa & !(PAGE_4K - 1);
        if !self.is_accepted(page) {
            return;
        }
        self.release(page, PAGE_4K);
        let mut removed = self.removed;
        Self::mark(&mut removed, self, page, PAGE_4K, true);
        self.removed = removed;
    }

    /// True when the 4 KiB page at `gpa` (inside the window) is accepted.
    pub fn is_accepted(&self, gpa: u64) -> bool {
        match self.locate(gpa) {
            Some((c, p)) => match self.state[c] {
                Chunk::Pending => false,
                Chunk::Mapped2M => true,
                Chunk::Split => self.bits[c][p / 64] & (1 << (p % 64)) != 0,
            },
            None => false,
        }
    }

    /// The status an accept with operand `rcx` gets now, and the change it
    /// makes (none for failures).
    fn decide(&self, rcx: u64) -> (Expect, Option<(usize, Option<usize>)>) {
        let (gpa, level) = match decode(&self.layout, rcx) {
            Ok(v) => v,
            Err(_) => return (Expect::Status(INVALID), None),
        };
        let Some((c, p)) = self.locate(gpa) else {
            return (Expect::Unknown, None);
        };
        let already = |level: PageLevel| status::PAGE_ALREADY_ACCEPTED | level as u64;
        match (level, self.state[c]) {
            (AcceptLevel::L2M, Chunk::Pending) => {
                (Expect::Status(status::SUCCESS), Some((c, None)))
            }
            (_, Chunk::Mapped2M) => (Expect::Status(already(PageLevel::L2M)), None),
            (AcceptLevel::L2M, Chunk::Split) => (
                Expect::Status(status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64),
                None,
            ),
            _ => {
                if self.state[c] == Chunk::Split && self.bits[c][p / 64] & (1 << (p % 64)) != 0 {
                    (Expect::Status(already(PageLevel::L4K)), None)
                } else {
                    (Expect::Status(status::SUCCESS), Some((c, Some(p))))
                }
            }
        }
    }

    /// The status an accept with operand `rcx` would get, without applying it.
    pub fn expect(&self, rcx: u64) -> Expect {
        self.decide(rcx).0
    }

    /// Predicts the status of an accept with operand `rcx` and applies its
    /// effect to the model.
    pub fn accept(&mut self, rcx: u64) -> Expect {
        let (expect, change) = self.decide(rcx);
        self.apply(change);
        expect
    }

    fn apply(&mut self, change: Option<(usize, Option<usize>)>) {
        // An accepted page is private (the VMM converts a shared one back
        // first, as QEMU does on KVM's private fault) and no longer removed.
        let (c, pages) = match change {
            Some((c, None)) => {
                self.state[c] = Chunk::Mapped2M;
                self.accepted_pages += 512;
                (c, 0..512)
            }
            Some((c, Some(p))) => {
                self.state[c] = Chunk::Split;
                self.bits[c][p / 64] |= 1 << (p % 64);
                self.accepted_pages += 1;
                (c, p..p + 1)
            }
            None => return,
        };
        for p in pages {
            let bit = 1u64 << (p % 64);
            self.shared[c][p / 64] &= !bit;
            if self.removed[c][p / 64] & bit != 0 {
                self.removed[c][p / 64] &= !bit;
                self.reaccepted_pages += 1;
            }
        }
    }

    /// Applies `rcx` if the model gives it status `got` now.
    fn explains(&mut self, rcx: u64, got: u64) -> bool {
        match self.decide(rcx) {
            (Expect::Status(s), change) if s == got => {
                self.apply(change);
                true
            }
            _ => false,
        }
    }

    /// Two accepts `(rcx, status)` that overlapped in time on one
    /// Secure-EPT entry (each vCPU issued its own): true, with their
    /// effects applied, when some order explains both statuses, the second
    /// one allowed to have found the entry held (`BUSY`, no change); false,
    /// with the model unchanged, when no order does.
    pub fn accept_concurrent(&mut self, a: (u64, u64), b: (u64, u64)) -> bool {
        for (first, second) in [(a, b), (b, a)] {
            let saved = self.save([first.0, second.0]);
            // Only a request that reaches the entry lock (a valid operand)
            // can find it held: invalid operands are answered before it.
            let busy_possible = decode(&self.layout, second.0).is_ok();
            if self.explains(first.0, first.1)
                && ((second.1 == BUSY && busy_possible) || self.explains(second.0, second.1))
            {
                return true;
            }
            self.restore(&saved);
        }
        false
    }

    /// The state of the chunks `rcxs` name (to undo a trial order).
    fn save(&self, rcxs: [u64; 2]) -> Saved {
        let chunk = |rcx| {
            let (gpa, _) = decode(&self.layout, rcx).ok()?;
            let (c, _) = self.locate(gpa)?;
            Some((c, self.state[c], self.bits[c]))
        };
        Saved {
            accepted_pages: self.accepted_pages,
            reaccepted_pages: self.reaccepted_pages,
            chunks: [chunk(rcxs[0]), chunk(rcxs[1])],
            shared: [
                chunk_bits(self, &self.shared, rcxs[0]),
                chunk_bits(self, &self.shared, rcxs[1]),
            ],
            removed: [
                chunk_bits(self, &self.removed, rcxs[0]),
                chunk_bits(self, &self.removed, rcxs[1]),
            ],
        }
    }

    fn restore(&mut self, saved: &Saved) {
        self.accepted_pages = saved.accepted_pages;
        self.reaccepted_pages = saved.reaccepted_pages;
        for &(c, bits) in saved.shared.iter().rev().flatten() {
            self.shared[c] = bits;
        }
        for &(c, bits) in saved.removed.iter().rev().flatten() {
            self.removed[c] = bits;
        }
        // In reverse, so a chunk saved twice ends as first saved.
        for &(c, state, bits) in saved.chunks.iter().rev().flatten() {
            self.state[c] = state;
            self.bits[c] = bits;
        }
    }
}

/// What `Model::save` keeps.
struct Saved {
    accepted_pages: u64,
    reaccepted_pages: u64,
    chunks: [Option<(usize, Chunk, [u64; WORDS_PER_CHUNK])>; 2],
    shared: [Option<(usize, [u64; WORDS_PER_CHUNK])>; 2],
    removed: [Option<(usize, [u64; WORDS_PER_CHUNK])>; 2],
}

/// The chunk `rcx` names and its bits in `set`.
fn chunk_bits(
    m: &Model,
    set: &[[u64; WORDS_PER_CHUNK]; MAX_CHUNKS],
    rcx: u64,
) -> Option<(usize, [u64; WORDS_PER_CHUNK])> {
    let (gpa, _) = decode(&m.layout, rcx).ok()?;
    let (c, _) = m.locate(gpa)?;
    Some((c, set[c]))
}

/// A small, fast, seedable generator (SplitMix64) for reproducible chaos.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`; the bias is below 2^-32 for our sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    use super::*;
    use abi::tdcall::accept;
    use abi::GIB;

    fn layout() -> RamLayout {
        RamLayout::for_mem(8 * GIB, 48)
    }

    #[test]
    fn statuses_follow_the_rules() {
        let base = 4 * GIB;
        let mut m = Model::new(layout(), base, 4 * PAGE_2M).unwrap();
        let a4 = |g| accept::encode(g, PageLevel::L4K);
        let a2 = |g| accept::encode(g, PageLevel::L2M);
        assert_eq!(m.expect(a4(base)), Expect::Status(status::SUCCESS));
        assert_eq!(m.accepted_pages(), 0, "expect does not apply");
        assert_eq!(m.accept(a4(base)), Expect::Status(status::SUCCESS));
        assert_eq!(
            m.accept(a4(base)),
            Expect::Status(status::PAGE_ALREADY_ACCEPTED)
        );
        assert_eq!(
            m.accept(a2(base)),
            Expect::Status(status::PAGE_SIZE_MISMATCH | 1)
        );
        assert_eq!(m.accept(a2(base + PAGE_2M)), Expect::Status(0));
        assert_eq!(
            m.accept(a4(base + PAGE_2M + PAGE_4K)),
            Expect::Status(status::PAGE_ALREADY_ACCEPTED | 1)
        );
        assert_eq!(m.accepted_pages(), 513);
        assert!(m.is_accepted(base) && !m.is_accepted(base + PAGE_4K));
        for bad in [
            a4(base) | 0x8,
            base | 2,
            base | 7,
            a2(base + PAGE_4K),
            a4(3 * GIB),
            a4(9 * GIB),
            a4(base | 1 << 47),
            a4(1 << 50),
        ] {
            assert_eq!(m.accept(bad), Expect::Status(INVALID), "{bad:#x}");
        }
        assert_eq!(m.accept(a4(0)), Expect::Unknown);
        assert_eq!(m.accepted_pages(), 513);
    }

    #[test]
    fn windows_must_be_chunk_aligned_ram() {
        let l = layout();
        assert!(Model::new(l, 4 * GIB + PAGE_4K, PAGE_2M).is_none());
        assert!(Model::new(l, 4 * GIB, MAX_WINDOW + PAGE_2M).is_none());
        assert!(Model::new(l, 3 * GIB - PAGE_2M, 2 * PAGE_2M).is_none());
        assert!(Model::new(l, 9 * GIB - PAGE_2M, PAGE_2M).is_some());
    }

    #[test]
    fn rng_is_deterministic_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            let v = a.below(4);
            assert_eq!(v, b.below(4));
            hits[v as usize] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
    }

    /// Outcomes two overlapping accepts can really get: either order run
    /// one after the other, or the later one finding the entry held.
    fn real_outcomes(m: &Model, a: u64, b: u64) -> [((u64, u64), Model); 4] {
        let st = |e: Expect| match e {
            Expect::Status(s) => s,
            Expect::Unknown => panic!("outside the window"),
        };
        let (mut ab, mut ba, mut a_busy, mut b_busy) = (m.clone(), m.clone(), m.clone(), m.clone());
        let ab_s = (st(ab.accept(a)), st(ab.accept(b)));
        let ba_s = {
            let sb = st(ba.accept(b));
            (st(ba.accept(a)), sb)
        };
        let first_b = st(a_busy.accept(b));
        let first_a = st(b_busy.accept(a));
        // A BUSY answer needs a valid operand (the entry lock is taken
        // after the operand checks); otherwise that outcome is the serial
        // one again.
        let valid = |rcx| decode(&m.layout, rcx).is_ok();
        let a_busy = if valid(a) {
            ((BUSY, first_b), a_busy)
        } else {
            (ba_s, ba.clone())
        };
        let b_busy = if valid(b) {
            ((first_a, BUSY), b_busy)
        } else {
            (ab_s, ab.clone())
        };
        [(ab_s, ab), (ba_s, ba), a_busy, b_busy]
    }

    fn same_state(x: &Model, y: &Model) -> bool {
        let (lo, hi) = x.range();
        x.accepted_pages() == y.accepted_pages()
            && (lo..hi)
                .step_by(PAGE_4K as usize)
                .all(|g| x.is_accepted(g) == y.is_accepted(g))
    }

    #[test]
    fn concurrent_accepts_of_one_page() {
        let base = 6 * GIB;
        let p = accept::encode(base + 5 * PAGE_4K, PageLevel::L4K);
        let aa = status::PAGE_ALREADY_ACCEPTED | PageLevel::L4K as u64;
        let m = Model::new(layout(), base, 4 * PAGE_2M).unwrap();
        for (pair, ok) in [
            (((p, 0), (p, aa)), true),
            (((p, aa), (p, 0)), true),
            (((p, BUSY), (p, 0)), true),
            (((p, 0), (p, BUSY)), true),
            (((p, 0), (p, 0)), false),
            (((p, aa), (p, aa)), false),
            (((p, BUSY), (p, BUSY)), false),
            (((p, BUSY), (p, aa)), false),
        ] {
            let mut t = m.clone();
            assert_eq!(t.accept_concurrent(pair.0, pair.1), ok, "{pair:x?}");
            assert_eq!(t.accepted_pages(), u64::from(ok), "{pair:x?}");
        }
    }

    #[test]
    fn concurrent_4k_and_2m_on_one_entry() {
        let base = 6 * GIB;
        let small = accept::encode(base + PAGE_4K, PageLevel::L4K);
        let large = accept::encode(base, PageLevel::L2M);
        let mismatch = status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64;
        let aa2m = status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64;
        let m = Model::new(layout(), base, 4 * PAGE_2M).unwrap();
        let mut t = m.clone();
        // 4 KiB first splits the entry: the 2 MiB request then mismatches.
        assert!(t.accept_concurrent((large, mismatch), (small, 0)));
        assert_eq!(t.accepted_pages(), 1);
        let mut t = m.clone();
        // 2 MiB first: the 4 KiB request finds the page accepted as 2 MiB.
        assert!(t.accept_concurrent((large, 0), (small, aa2m)));
        assert_eq!(t.accepted_pages(), 512);
        let mut t = m.clone();
        // Both succeeding is impossible, and leaves the model unchanged.
        assert!(!t.accept_concurrent((large, 0), (small, 0)));
        assert_eq!(t.accepted_pages(), 0);
    }

    #[test]
    fn every_real_interleaving_is_explained_and_nothing_else() {
        let base = 6 * GIB;
        let mut rng = Rng::new(42);
        let statuses = [
            0,
            BUSY,
            INVALID,
            status::PAGE_ALREADY_ACCEPTED | PageLevel::L4K as u64,
            status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64,
            status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64,
        ];
        for _ in 0..3000 {
            // A random history on two entries, then two racing requests
            // (4 KiB or 2 MiB, aligned or not) on the first entry.
            let mut m = Model::new(layout(), base, 2 * PAGE_2M).unwrap();
            for _ in 0..rng.below(40) {
                let g = base + rng.below(1024) * PAGE_4K;
                let level = if rng.percent(10) {
                    PageLevel::L2M
                } else {
                    PageLevel::L4K
                };
                let page = if level == PageLevel::L2M {
                    g & !(PAGE_2M - 1)
                } else {
                    g
                };
                let _ = m.accept(accept::encode(page, level));
            }
            let pick = |rng: &mut Rng| {
                let g = base + rng.below(8) * PAGE_4K;
                match rng.below(4) {
                    0 => accept::encode(base, PageLevel::L2M),
                    1 => accept::encode(g | PAGE_4K, PageLevel::L2M),
                    _ => accept::encode(g, PageLevel::L4K),
                }
            };
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            let real = real_outcomes(&m, a, b);
            for ((sa, sb), after) in &real {
                let mut t = m.clone();
                assert!(
                    t.accept_concurrent((a, *sa), (b, *sb)),
                    "{a:#x}={sa:#x} {b:#x}={sb:#x}"
                );
                assert!(same_state(&t, after), "{a:#x}={sa:#x} {b:#x}={sb:#x}");
            }
            // Any other pair of statuses is refused and changes nothing.
            for &sa in &statuses {
                for &sb in &statuses {
                    if real.iter().any(|((x, y), _)| (*x, *y) == (sa, sb)) {
                        continue;
                    }
                    let mut t = m.clone();
                    assert!(
                        !t.accept_concurrent((a, sa), (b, sb)),
                        "{a:#x}={sa:#x} {b:#x}={sb:#x}"
                    );
                    assert!(same_state(&t, &m));
                }
            }
        }
    }

    #[test]
    fn with_4k_leaves_only_4k_accepts_succeed() {
        let base = 6 * GIB;
        let mut m = Model::with_sept_level(layout(), base, 2 * PAGE_2M, SeptLevel::L4K).unwrap();
        let mismatch = status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64;
        let large = accept::encode(base, PageLevel::L2M);
        assert_eq!(m.accept(large), Expect::Status(mismatch));
        assert_eq!(m.accepted_pages(), 0);
        assert!(!m.is_accepted(base));
        let small = accept::encode(base + PAGE_4K, PageLevel::L4K);
        assert_eq!(m.accept(small), Expect::Status(status::SUCCESS));
        assert_eq!(
            m.accept(small),
            Expect::Status(status::PAGE_ALREADY_ACCEPTED | PageLevel::L4K as u64)
        );
        assert_eq!(m.accept(large), Expect::Status(mismatch));
        assert_eq!(m.accepted_pages(), 1);
    }
}
