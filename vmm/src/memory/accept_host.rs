//! What an accept does to the host, in the order the accept path runs it
//! (`tdx::accept`): `prepare_accept` under the state lock (room for the
//! page states; with `uffd-poison`, the chunk registered and poisoned
//! first), `fill_accepted` outside it (zeroes through the poisoned chunk,
//! or zeroed and backed in place), and `map_accepted` in the lock that
//! commits (the memslot, and the merge of a range it completed).

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::{PageState, PAGES_PER_CHUNK, PAGES_PER_GIB};
use crate::memory::pending_mechanism::PoisonedChunks;
use crate::memory::private::{MemoryError, PrivateMemory};
use abi::tdcall::AcceptLevel;
use abi::PAGE_4K;
use std::sync::Arc;

impl<B: SlotBackend> PrivateMemory<B> {
    /// Before an accept of `[offset, offset + level)` that will succeed:
    /// room for its page states is reserved (fallibly); with
    /// `uffd-poison`, a 4 KiB accept (or any accept in a poisoned
    /// chunk) registers and poisons its chunk first and returns the host
    /// side that fills the page; `None` means zero and back it as usual.
    pub fn prepare_accept(
        &mut self,
        offset: u64,
        level: AcceptLevel,
    ) -> Result<Option<Arc<PoisonedChunks>>, MemoryError> {
        let chunk = offset / PAGE_4K / PAGES_PER_CHUNK;
        self.pages.reserve_for_accept(offset / PAGE_4K, level)?;
        match &self.poison {
            Some(p) if level == AcceptLevel::L4K || p.is_registered(chunk) => {
                let p = p.clone();
                self.poison_chunk(chunk, offset / PAGE_4K..(offset + level.size()) / PAGE_4K)?;
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }

    /// Registers chunk `chunk` with userfaultfd, poisons its pending pages
    /// and covers it with one memslot (merged with its neighbours); pages
    /// in `also` count as pending (an accept recorded them already and
    /// fills them next). Does nothing when it is poisoned already or the
    /// mechanism is `memslots`.
    pub(crate) fn poison_chunk(
        &mut self,
        chunk: u64,
        also: std::ops::Range<u64>,
    ) -> Result<(), MemoryError> {
        let Some(p) = self.poison.clone() else {
            return Ok(());
        };
        if p.is_registered(chunk) {
            return Ok(());
        }
        let first = chunk * PAGES_PER_CHUNK;
        let count = self.pages.chunk_pages(chunk);
        let pending = |p: u64| self.pages.state(p) == PageState::Pending || also.contains(&p);
        let mut runs = Vec::new();
        let mut page = first;
        while page < first + count {
            if !pending(page) {
                page += 1;
                continue;
            }
            let start = page;
            while page < first + count && pending(page) {
                page += 1;
            }
            runs.push((
                self.ram.host_addr(start * PAGE_4K),
                (page - start) * PAGE_4K,
            ));
        }
        // Accepted pages of a registered chunk must have host pages (an
        // empty one there would be a missing-page fault nobody handles):
        // with `--backing on-touch` or after a release they may not yet.
        let mut page = first;
        while page < first + count {
            let start = page;
            while page < first + count && !pending(page) {
                page += 1;
            }
            if page > start {
                self.ram.zero_and_back(
                    start * PAGE_4K,
                    (page - start) * PAGE_4K,
                    Backing::Populate,
                )?;
            }
            page += 1;
        }
        let offset = first * PAGE_4K;
        let host = self.ram.host_addr(offset);
        p.register(chunk, host, count * PAGE_4K, &runs)?;
        let gpa = self.layout().gpa_of_offset(offset);
        self.slots.cover(gpa, count * PAGE_4K, host)?;
        Ok(())
    }

    /// Maps an accepted, filled page: unless slots are installed at first
    /// touch, maps `[gpa, gpa + level)` and merges the
    /// slots of a range it completed.
    pub fn map_accepted(
        &mut self,
        gpa: u64,
        offset: u64,
        level: AcceptLevel,
    ) -> Result<(), MemoryError> {
        let size = level.size();
        if self.chunk_poisoned(offset / PAGE_4K / PAGES_PER_CHUNK) {
            // One slot covers the chunk already, unless a poisoned access
            // took this page out of it.
            if !self.slots.covers(gpa) {
                self.slots.map(gpa, size, self.ram.host_addr(offset))?;
            }
            return self.merge_completed(gpa, level == AcceptLevel::L4K);
        }
        if !self.map_on_touch {
            let host = self.ram.host_addr(offset);
            self.slots.map(gpa, size, host)?;
            // A 2 MiB accept is one slot already: only its GiB may merge.
            self.merge_completed(gpa, level == AcceptLevel::L4K)?;
        }
        Ok(())
    }

    /// Merges the slots of the 2 MiB chunk and the 1 GiB block around `gpa`
    /// when every page of them is accepted (one slot each, not hundreds).
    pub(crate) fn merge_completed(&mut self, gpa: u64, chunk: bool) -> Result<(), MemoryError> {
        let Some(offset) = self.layout().ram_offset(gpa, 1) else {
            return Ok(());
        };
        let page = offset / PAGE_4K;
        if chunk && self.pages.chunk_full(page / PAGES_PER_CHUNK) {
            let lo = gpa & !(abi::PAGE_2M - 1);
            self.slots.merge_range(lo, lo + abi::PAGE_2M)?;
        }
        // RAM's GiB blocks are GPA GiB blocks: the hole is one whole GiB.
        if self.pages.gib_full(page / PAGES_PER_GIB) {
            let lo = gpa & !(abi::GIB - 1);
            self.slots.merge_range(lo, lo + abi::GIB)?;
        }
        Ok(())
    }
}

/// Gives an accepted page its zeroes: through its poisoned chunk
/// (`poison`, from `prepare_accept`: UFFDIO_COPY of zeroes), or zeroed
/// and backed in place. Needs no `&mut self`: a vCPU runs it without
/// the TD's state lock, holding only the page's Secure-EPT entry lock.
pub fn fill_accepted(
    ram: &GuestRam,
    backing: Backing,
    poison: Option<&PoisonedChunks>,
    offset: u64,
    level: AcceptLevel,
) -> Result<(), MemoryError> {
    match poison {
        Some(p) => p.fill(ram.host_addr(offset), level.size())?,
        None => ram.zero_and_back(offset, level.size(), backing)?,
    }
    Ok(())
}
