//! Shared memory: the alias `gpa | shared bit` of RAM the guest converted
//! with MapGPA. The page-state table tracks private memory only; this is
//! the small set of shared ranges beside it, with its own invariants
//! (checked in `invariants.rs`):
//! - a GPA is never both accepted-private and shared: a range is released
//!   (its private pages pending, their host memory freed) before it
//!   becomes shared, and stays pending when it becomes private again until
//!   the guest accepts it;
//! - every shared range, and nothing else above the shared bit, is in a
//!   memslot, at the host address of its RAM offset in the shared mirror.
//!
//! The shared mirror is host memory laid out as RAM (offset for offset),
//! reserved without backing one 1 GiB block at a time, when a conversion
//! first needs the block: a TD that shares a 2 MiB bounce pool costs 1 GiB
//! of address space, not its RAM size again (a 64 TiB TD could not have
//! that twice). Shared pages get host memory when touched, and give it back
//! when they become private again; a block goes when nothing in it is
//! shared. Fresh pages read zero; the contract does not promise it.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::{MemoryError, PrivateMemory};
use std::collections::BTreeMap;

/// The mirror's reservation unit (and the most address space the first
/// conversion to shared needs).
pub const SHARED_BLOCK_BYTES: u64 = 1 << 30;

/// One block of the mirror: an anonymous, unbacked mapping.
#[derive(Debug)]
struct Block {
    addr: u64,
    len: u64,
}

impl Block {
    fn new(len: u64) -> Result<Self, MemoryError> {
        let size = abi::to_usize(len);
        // SAFETY: a fresh anonymous private mapping at an address the
        // kernel picks touches no existing mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemoryError::SharedReserve {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Block {
            addr: p as u64,
            len,
        })
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the memslots
        // over it are gone first (see `PrivateMemory`'s field order).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, abi::to_usize(self.len)) };
    }
}

/// The shared ranges (GPAs without the shared bit) and the host mapping
/// behind them.
#[derive(Debug, Default)]
pub struct SharedAlias {
    /// Disjoint, non-adjacent ranges: start -> end.
    ranges: BTreeMap<u64, u64>,
    /// The mirror of RAM holding shared memory: its blocks by RAM offset
    /// / `SHARED_BLOCK_BYTES`, reserved when first needed.
    blocks: BTreeMap<u64, Block>,
    /// Bytes converted to shared and back over the run.
    to_shared: u64,
    to_private: u64,
    /// Console bytes read from shared memory.
    pub console_bytes: u64,
}

impl SharedAlias {
    /// The shared ranges, start and end, without the shared bit.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// Shared bytes now.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Bytes converted to shared, and back to private, over the run.
    pub fn converted(&self) -> (u64, u64) {
        (self.to_shared, self.to_private)
    }

    /// The shared ranges, at most `max` of them, and how many more.
    pub fn listed(&self, max: usize) -> (Vec<[u64; 2]>, u64) {
        let list = self.ranges().take(max).map(|(s, e)| [s, e]).collect();
        (list, self.ranges.len().saturating_sub(max) as u64)
    }

    /// True when all of `[gpa, gpa + len)` is shared.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        let end = gpa.saturating_add(len.max(1));
        self.ranges
            .range(..=gpa)
            .next_back()
            .is_some_and(|(_, e)| *e >= end)
    }

    /// The parts of `[gpa, end)` that are shared.
    fn shared_parts(&self, gpa: u64, end: u64) -> Vec<(u64, u64)> {
        let first = self
            .ranges
            .range(..=gpa)
            .next_back()
            .filter(|(_, e)| **e > gpa)
            .map_or(gpa, |(s, _)| *s);
        self.ranges
            .range(first..end)
            .map(|(s, e)| ((*s).max(gpa), (*e).min(end)))
            .collect()
    }

    /// The parts of `[gpa, end)` that are not shared.
    fn private_parts(&self, gpa: u64, end: u64) -> Vec<(u64, u64)> {
        let mut parts = Vec::new();
        let mut at = gpa;
        for (s, e) in self.shared_parts(gpa, end) {
            if s > at {
                parts.push((at, s));
            }
            at = e;
        }
        if at < end {
            parts.push((at, end));
        }
        parts
    }

    fn insert(&mut self, gpa: u64, end: u64) {
        let (mut lo, mut hi) = (gpa, end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= gpa)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            (lo, hi) = (lo.min(s), hi.max(e));
        }
        self.ranges.insert(lo, hi);
    }

    fn remove(&mut self, gpa: u64, end: u64) {
        for (s, e) in self.shared_parts(gpa, end) {
            let (whole_s, whole_e) = self
                .ranges
                .range(..=s)
                .next_back()
                .map(|(a, b)| (*a, *b))
                .unwrap_or((s, e));
            self.ranges.remove(&whole_s);
            if whole_s < s {
                self.ranges.insert(whole_s, s);
            }
            if e < whole_e {
                self.ranges.insert(e, whole_e);
            }
        }
    }

    /// The mirror's host address of RAM offset `offset`, if its block is
    /// reserved.
    pub fn host_addr(&self, offset: u64) -> Option<u64> {
        let b = self.blocks.get(&(offset / SHARED_BLOCK_BYTES))?;
        Some(b.addr + offset % SHARED_BLOCK_BYTES)
    }

    /// Host blocks of the mirror reserved now.
    #[cfg_attr(not(test), allow(dead_code))] // tests read it
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// `[offset, offset + len)` cut at mirror block boundaries.
fn by_block(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let next = ((at / SHARED_BLOCK_BYTES + 1) * SHARED_BLOCK_BYTES).min(end);
            let piece = (at, next - at);
            at = next;
            piece
        })
    })
}

impl<B: SlotBackend> PrivateMemory<B> {
    /// The shared ranges.
    pub fn shared(&self) -> &SharedAlias {
        &self.shared
    }

    /// Counts console bytes the host read from shared memory.
    pub fn count_console_shared(&mut self, bytes: u64) {
        self.shared.console_bytes += bytes;
    }

    /// Makes the RAM range `[gpa, gpa + len)` (4 KiB aligned, without the
    /// shared bit) shared: its accepted private pages go back to pending
    /// (host memory freed), and the parts not yet shared get a memslot at
    /// `gpa | shared bit` over the shared mirror. Returns the private pages
    /// released.
    pub fn convert_to_shared(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        // The blocks first: a host that cannot reserve one refuses the
        // conversion with nothing changed.
        let ram_bytes = self.layout().mem_bytes();
        for (o, _) in by_block(offset, len) {
            let index = o / SHARED_BLOCK_BYTES;
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.shared.blocks.entry(index)
            {
                let block_len = SHARED_BLOCK_BYTES.min(ram_bytes - index * SHARED_BLOCK_BYTES);
                slot.insert(Block::new(block_len)?);
            }
        }
        let released = self.release(gpa, len)?;
        let shared_bit = self.layout().shared_bit();
        for (s, e) in self.shared.private_parts(gpa, gpa + len) {
            for (o, n) in by_block(offset + (s - gpa), e - s) {
                let g = s + (o - (offset + (s - gpa)));
                let host = self
                    .shared
                    .host_addr(o)
                    .ok_or(MemoryError::NotRam { gpa: g, len: n })?;
                self.slots.map(g | shared_bit, n, host)?;
            }
            self.shared.insert(s, e);
            self.shared.to_shared += e - s;
        }
        self.slots
            .merge_range((gpa | shared_bit) - 1, ((gpa + len) | shared_bit) + 1)?;
        Ok(released)
    }

    /// Makes the RAM range `[gpa, gpa + len)` private again: the shared
    /// alias of its shared parts leaves its memslots and their host memory
    /// is freed. The private pages stay pending until the guest accepts
    /// them. Returns the shared bytes converted.
    pub fn convert_to_private(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let shared_bit = self.layout().shared_bit();
        let mut bytes = 0;
        for (s, e) in self.shared.shared_parts(gpa, gpa + len) {
            self.slots.unmap(s | shared_bit, e - s)?;
            for (o, n) in by_block(offset + (s - gpa), e - s) {
                if let Some(host) = self.shared.host_addr(o) {
                    crate::memory::pending_mechanism::dontneed(host, n)?;
                }
            }
            self.shared.remove(s, e);
            self.shared.to_private += e - s;
            bytes += e - s;
        }
        // Blocks with nothing shared left go.
        let layout = *self.layout();
        let shared = &self.shared.ranges;
        self.shared.blocks.retain(|index, b| {
            let start = layout.gpa_of_offset(index * SHARED_BLOCK_BYTES);
            let end = start + b.len;
            shared
                .range(..end)
                .next_back()
                .is_some_and(|(_, e)| *e > start)
                || shared.range(start..end).next().is_some()
        });
        Ok(bytes)
    }

    /// The host pieces `(address, bytes)` of `len` bytes of shared memory
    /// at `gpa` (with or without the shared bit), if all of it is shared.
    fn shared_pieces(&self, gpa: u64, len: u64) -> Option<Vec<(u64, usize)>> {
        let gpa = gpa & !self.layout().shared_bit();
        let offset = self.shared_offset(gpa, len)?;
        by_block(offset, len)
            .map(|(o, n)| Some((self.shared.host_addr(o)?, abi::to_usize(n))))
            .collect()
    }

    /// Reads shared memory at `gpa` (with or without the shared bit) if
    /// the whole range is shared.
    pub fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(pieces) = self.shared_pieces(gpa, buf.len() as u64) else {
            return false;
        };
        let mut done = 0;
        for (host, n) in pieces {
            // SAFETY: `host..host + n` lies inside a reserved block of the
            // mirror (`by_block` cuts at block ends), readable and never a
            // Rust object; `buf[done..done + n]` is in bounds.
            unsafe {
                std::ptr::copy_nonoverlapping(host as *const u8, buf[done..].as_mut_ptr(), n)
            };
            done += n;
        }
        true
    }

    /// Writes shared memory at `gpa` (with or without the shared bit) if
    /// the whole range is shared.
    #[cfg_attr(not(test), allow(dead_code))] // the VMM writes no shared memory; tests do
    pub fn write_shared(&self, gpa: u64, bytes: &[u8]) -> bool {
        let Some(pieces) = self.shared_pieces(gpa, bytes.len() as u64) else {
            return false;
        };
        let mut done = 0;
        for (host, n) in pieces {
            // SAFETY: as in `read_shared`, and the block is writable.
            unsafe { std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), host as *mut u8, n) };
            done += n;
        }
        true
    }

    fn shared_offset(&self, gpa: u64, len: u64) -> Option<u64> {
        self.shared
            .contains(gpa, len)
            .then(|| self.layout().ram_offset(gpa, len))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::SharedAlias;

    #[test]
    fn the_range_set_merges_and_splits() {
        let mut s = SharedAlias::default();
        s.insert(0x1000, 0x3000);
        s.insert(0x5000, 0x6000);
        s.insert(0x3000, 0x5000);
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(0x1000, 0x6000)]);
        assert!(s.contains(0x2000, 0x4000));
        assert!(!s.contains(0x2000, 0x5000));
        s.remove(0x2000, 0x3000);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [(0x1000, 0x2000), (0x3000, 0x6000)]
        );
        assert_eq!(
            s.private_parts(0, 0x7000),
            [(0, 0x1000), (0x2000, 0x3000), (0x6000, 0x7000)]
        );
        s.remove(0, 0x10000);
        assert_eq!(s.ranges().count(), 0);
    }

    #[test]
    fn the_mirror_reserves_a_block_per_gib_in_use_and_frees_it() {
        use crate::memory::guest_ram::Backing;
        use crate::memory::memslots::NoKvm;
        use crate::memory::private::PrivateMemory;
        const GIB: u64 = 1 << 30;
        let layout = crate::memory::layout::checked(6 * GIB, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        assert_eq!(m.shared().blocks(), 0);
        // 8 KiB across the 5 GiB boundary (RAM offsets 4 GiB - 4 KiB ..):
        // two blocks, and bytes written across the seam read back.
        let at = 5 * GIB - 0x1000;
        m.convert_to_shared(at, 0x2000).unwrap();
        assert_eq!(m.shared().blocks(), 2);
        let bytes: Vec<u8> = (0..0x2000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
        assert!(m.write_shared(at, &bytes));
        let mut back = vec![0u8; 0x2000];
        assert!(m.read_shared(at | layout.shared_bit(), &mut back));
        assert_eq!(back, bytes);
        // Half back: its block goes, the other stays with its bytes.
        m.convert_to_private(at, 0x1000).unwrap();
        assert_eq!(m.shared().blocks(), 1);
        let mut half = vec![0u8; 0x1000];
        assert!(m.read_shared(5 * GIB, &mut half));
        assert_eq!(half, bytes[0x1000..]);
        assert!(!m.read_shared(at, &mut half));
        m.convert_to_private(5 * GIB, 0x1000).unwrap();
        assert_eq!(m.shared().blocks(), 0);
        assert_eq!(m.shared().converted(), (0x2000, 0x2000));
    }

    #[test]
    fn an_accept_never_touches_shared_pages_it_does_not_convert() {
        use crate::memory::guest_ram::Backing;
        use crate::memory::memslots::NoKvm;
        use crate::memory::private::PrivateMemory;
        use crate::tdx::accept::{accept_alone, AcceptRequest, AcceptResult};
        use abi::tdcall::{accept::encode, PageLevel};
        const GIB: u64 = 1 << 30;
        let layout = crate::memory::layout::checked(6 * GIB, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        let p = 4 * GIB + (8 << 20);
        let accept = |m: &mut PrivateMemory<NoKvm>, gpa, level| {
            accept_alone(m, &AcceptRequest::decode(&layout, encode(gpa, level))).unwrap()
        };
        assert!(matches!(
            accept(&mut m, p, PageLevel::L2M),
            AcceptResult::Accepted { .. }
        ));
        m.convert_to_shared(p, 0x2000).unwrap();
        assert!(m.write_shared(p + 0x1000, &[0xa5; 0x1000]));
        // The neighbour in the same 2 MiB, accepted again (converted back
        // implicitly); a 2 MiB accept over the split chunk (size mismatch);
        // another chunk's 2 MiB accept: the shared page keeps its bytes.
        assert!(matches!(
            accept(&mut m, p, PageLevel::L4K),
            AcceptResult::Accepted { .. }
        ));
        assert!(matches!(
            accept(&mut m, p, PageLevel::L2M),
            AcceptResult::SizeMismatch { .. }
        ));
        assert!(matches!(
            accept(&mut m, p + (2 << 20), PageLevel::L2M),
            AcceptResult::Accepted { .. }
        ));
        let mut back = [0u8; 0x1000];
        assert!(m.read_shared(p + 0x1000, &mut back));
        assert_eq!(back, [0xa5; 0x1000]);
        assert!(!m.shared().contains(p, 0x1000));
        crate::memory::invariants::check_range(&m, p, 4 << 20).unwrap();
    }
}
