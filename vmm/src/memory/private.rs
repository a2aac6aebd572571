//! The TD's private memory as the TDX module sees it: the host mapping, the
//! page-state table and the memslots that expose accepted pages to the
//! guest, kept in step. The accept state machine lives in `tdx::accept`;
//! this file applies what it decided (`commit_accept`), and
//! `first_touch.rs` maps accepted memory at the guest's first touch. Generic
//! over the memslot backend, so all of it runs in tests without KVM.

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::layout::RamLayout;
use crate::memory::memslots::{
    KvmSlots, MemslotError, MemslotManager, SlotBackend, DEFAULT_SOFT_CAP,
};
use crate::memory::page_state::{PageState, PageStateTable};
use crate::memory::page_state::{PAGES_PER_CHUNK, PAGES_PER_GIB};
use crate::memory::pending_mechanism::{PendingMechanism, PoisonedChunks};
use abi::tdcall::PageLevel;
use abi::PAGE_4K;
use std::sync::Arc;
use thiserror::Error;

/// Why private memory could not be set up or changed (VMM-side failures).
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error(transparent)]
    Ram(#[from] crate::memory::guest_ram::GuestRamError),
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    #[error(transparent)]
    Reserve(#[from] crate::memory::page_state::ReserveError),
    #[error(transparent)]
    Pending(#[from] crate::memory::pending_mechanism::PendingError),
    #[error("range gpa {gpa:#x} (+{len:#x}) is not RAM")]
    NotRam { gpa: u64, len: u64 },
    #[error("refusing to write {what} into pending memory at gpa {gpa:#x}")]
    NotAccepted { what: &'static str, gpa: u64 },
    #[error("cannot write {what} at gpa {gpa:#x}: {source}")]
    Write {
        what: &'static str,
        gpa: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// What a guest access to a GPA without a memslot hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpaKind {
    /// RAM that was never accepted.
    Pending,
    /// Accepted RAM (an access here should not have exited).
    Accepted,
    /// Neither RAM nor a device: the hole, or beyond RAM.
    NotRam,
}

/// Ground truth and mappings of the TD's private memory.
pub struct PrivateMemory<B: SlotBackend = KvmSlots> {
    pub(crate) slots: MemslotManager<B>,
    pub(crate) ram: std::sync::Arc<GuestRam>,
    pub(crate) pages: PageStateTable,
    pub(crate) backing: Backing,
    /// Install memslots at the first touch of accepted memory instead of
    /// at accept time.
    pub(crate) map_on_touch: bool,
    /// With `uffd-poison`: the chunks whose pending pages are poisoned.
    pub(crate) poison: Option<Arc<PoisonedChunks>>,
}

impl PrivateMemory<KvmSlots> {
    /// All RAM pending, no memslot, slots installed on `vm`.
    pub fn new(
        vm: kvm_ioctls::VmFd,
        layout: RamLayout,
        backing: Backing,
        slot_limit: usize,
        board: Option<std::sync::Arc<dyn crate::memory::memslots::GuestPause>>,
    ) -> Result<Self, MemoryError> {
        Self::with_backend(KvmSlots { vm, board }, layout, backing, slot_limit)
    }

    /// The VM file descriptor.
    pub fn vm(&self) -> &kvm_ioctls::VmFd {
        &self.slots.backend().vm
    }
}

impl<B: SlotBackend> PrivateMemory<B> {
    /// All RAM pending, no memslot, slots installed through `backend`.
    pub fn with_backend(
        backend: B,
        layout: RamLayout,
        backing: Backing,
        slot_limit: usize,
    ) -> Result<Self, MemoryError> {
        let ram = std::sync::Arc::new(GuestRam::new(layout, backing)?);
        let pages = PageStateTable::try_new(layout.mem_bytes() / PAGE_4K)?;
        Ok(PrivateMemory {
            slots: MemslotManager::new(backend, slot_limit, DEFAULT_SOFT_CAP),
            ram,
            pages,
            backing,
            map_on_touch: false,
            poison: None,
        })
    }

    /// Switches to `uffd-poison` (before any accept): chunks accepted in
    /// 4 KiB pages will hold poisoned pending pages inside one memslot.
    pub fn use_poison(&mut self, poison: PoisonedChunks) {
        self.poison = Some(Arc::new(poison));
    }

    /// The mechanism that keeps pending memory out of the guest's reach.
    pub fn pending_mechanism(&self) -> PendingMechanism {
        match self.poison {
            Some(_) => PendingMechanism::UffdPoison,
            None => PendingMechanism::Memslots,
        }
    }

    /// The `uffd-poison` host side, if that mechanism runs.
    pub fn poisoned_chunks(&self) -> Option<&PoisonedChunks> {
        self.poison.as_deref()
    }

    /// True when chunk `chunk`'s pending pages are poisoned (a slot may
    /// cover them).
    pub fn chunk_poisoned(&self, chunk: u64) -> bool {
        self.poison.as_ref().is_some_and(|p| p.is_registered(chunk))
    }

    /// Before an accept of `[offset, offset + level)` that will succeed:
    /// room for its page states is reserved (fallibly); with
    /// `uffd-poison`, a 4 KiB accept (or any accept in a poisoned
    /// chunk) registers and poisons its chunk first and returns the host
    /// side that fills the page; `None` means zero and back it as usual.
    pub fn prepare_accept(
        &mut self,
        offset: u64,
        level: PageLevel,
    ) -> Result<Option<Arc<PoisonedChunks>>, MemoryError> {
        let chunk = offset / PAGE_4K / PAGES_PER_CHUNK;
        self.pages.reserve_for_accept(offset / PAGE_4K, level)?;
        match &self.poison {
            Some(p) if level == PageLevel::L4K || p.is_registered(chunk) => {
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

    /// Takes the 4 KiB page at `gpa` out of the memslot that covers it
    /// (a poisoned pending page a vCPU hit: its access then runs again
    /// without a slot and exits with its exact GPA). Returns false when no
    /// slot covered it.
    pub fn take_out_of_slot(&mut self, gpa: u64) -> Result<bool, MemoryError> {
        Ok(self.slots.unmap(gpa & !(PAGE_4K - 1), PAGE_4K)?)
    }

    /// Returns the accepted pages of `[gpa, gpa + len)` (4 KiB aligned RAM)
    /// to pending: their host memory is freed and the guest's next access
    /// stops the TD, as for memory never accepted. In a poisoned chunk
    /// (`uffd-poison`) the pages are poisoned again; elsewhere they leave
    /// their slots. Returns the pages released. The groundwork of MapGPA;
    /// the caller keeps vCPUs out of the range.
    #[cfg_attr(not(test), allow(dead_code))] // tested; no guest call releases memory yet
    pub fn release(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .filter(|_| gpa.is_multiple_of(PAGE_4K) && len.is_multiple_of(PAGE_4K))
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let (first, end) = (offset / PAGE_4K, (offset + len) / PAGE_4K);
        let mut released = 0;
        let mut page = first;
        while page < end {
            let chunk = page / PAGES_PER_CHUNK;
            let chunk_end = (chunk * PAGES_PER_CHUNK + self.pages.chunk_pages(chunk)).min(end);
            let whole = page == chunk * PAGES_PER_CHUNK
                && chunk_end == chunk * PAGES_PER_CHUNK + PAGES_PER_CHUNK;
            let mut runs: Vec<(u64, u64)> = Vec::new();
            if whole {
                released += self.pages.release_chunk(chunk);
                runs.push((page, chunk_end));
            } else {
                for p in page..chunk_end {
                    if self.pages.release(p) {
                        released += 1;
                        match runs.last_mut() {
                            Some(r) if r.1 == p => r.1 = p + 1,
                            _ => runs.push((p, p + 1)),
                        }
                    }
                }
            }
            match self.poison.clone() {
                Some(p) if p.is_registered(chunk) => {
                    for (s, e) in runs {
                        p.poison(self.ram.host_addr(s * PAGE_4K), (e - s) * PAGE_4K)?;
                    }
                }
                // A chunk that is not poisoned keeps the memslots way (and
                // its huge pages, when released whole): out of its slots
                // first, so no guest write lands between, then freed.
                _ => {
                    for (s, e) in runs {
                        let at = self.layout().gpa_of_offset(s * PAGE_4K);
                        self.slots.unmap(at, (e - s) * PAGE_4K)?;
                        let host = self.ram.host_addr(s * PAGE_4K);
                        crate::memory::pending_mechanism::dontneed(host, (e - s) * PAGE_4K)?;
                    }
                }
            }
            page = chunk_end;
        }
        Ok(released)
    }

    /// Chooses when accepted memory gets its memslot.
    pub fn set_map_on_touch(&mut self, on: bool) {
        self.map_on_touch = on;
    }

    /// Sets the host's Secure-EPT leaf size (`--sept-level`), before any
    /// accept.
    pub fn set_sept_level(&mut self, sept: abi::accept_model::SeptLevel) {
        self.pages.set_sept_level(sept);
    }

    /// The host's Secure-EPT leaf size.
    pub fn sept_level(&self) -> abi::accept_model::SeptLevel {
        self.pages.sept_level()
    }

    /// True when memslots are installed at first touch.
    pub fn map_on_touch(&self) -> bool {
        self.map_on_touch
    }

    /// The RAM layout.
    pub fn layout(&self) -> &RamLayout {
        self.ram.layout()
    }

    /// Host mapping.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The host mapping, shared (the vCPU threads zero accepted ranges
    /// through it without the TD's state lock).
    pub fn ram_shared(&self) -> std::sync::Arc<GuestRam> {
        self.ram.clone()
    }

    /// How accepted memory gets host pages.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Page states.
    pub fn pages(&self) -> &PageStateTable {
        &self.pages
    }

    /// Page states, for the accept state machine (`tdx::accept`).
    pub fn pages_mut(&mut self) -> &mut PageStateTable {
        &mut self.pages
    }

    /// Memslots.
    pub fn slots(&self) -> &MemslotManager<B> {
        &self.slots
    }

    /// Makes `[gpa, gpa + len)` initial memory: accepted by construction at
    /// 4 KiB granularity (like `TDH.MEM.PAGE.ADD`), populated, and mapped.
    pub fn add_initial(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        self.pages.add_initial(offset / PAGE_4K, len / PAGE_4K);
        self.ram.zero_and_back(offset, len, Backing::Populate)?;
        let host = self.ram.host_addr(offset);
        self.slots.map(gpa, len, host)?;
        Ok(())
    }

    /// Applies an accept the page-state table has already recorded: zeroes
    /// and backs `[gpa, gpa + level)` (at RAM `offset`) and, unless slots
    /// are installed at first touch, maps it and merges the slots of a
    /// range it completed. Returns the nanoseconds spent zeroing.
    pub fn commit_accept(
        &mut self,
        gpa: u64,
        offset: u64,
        level: PageLevel,
    ) -> Result<u64, MemoryError> {
        let size = level.size();
        let zero_start = std::time::Instant::now();
        match self.prepare_accept(offset, level)? {
            Some(p) => p.fill(self.ram.host_addr(offset), size)?,
            None => self.ram.zero_and_back(offset, size, self.backing)?,
        }
        let zero_ns = zero_start.elapsed().as_nanos() as u64;
        self.map_accepted(gpa, offset, level)?;
        Ok(zero_ns)
    }

    /// The part of `commit_accept` after zeroing: unless slots are
    /// installed at first touch, maps `[gpa, gpa + level)` and merges the
    /// slots of a range it completed.
    pub fn map_accepted(
        &mut self,
        gpa: u64,
        offset: u64,
        level: PageLevel,
    ) -> Result<(), MemoryError> {
        let size = level.size();
        if self.chunk_poisoned(offset / PAGE_4K / PAGES_PER_CHUNK) {
            // One slot covers the chunk already, unless a poisoned access
            // took this page out of it.
            if !self.slots.covers(gpa) {
                self.slots.map(gpa, size, self.ram.host_addr(offset))?;
            }
            return self.merge_completed(gpa, level == PageLevel::L4K);
        }
        if !self.map_on_touch {
            let host = self.ram.host_addr(offset);
            self.slots.map(gpa, size, host)?;
            // A 2 MiB accept is one slot already: only its GiB may merge.
            self.merge_completed(gpa, level == PageLevel::L4K)?;
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

    /// Writes `bytes` at `gpa` (initial memory only; used while building the TD).
    pub fn write(&self, what: &'static str, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        use vm_memory::Bytes;
        // Pending memory must never be written: accepting it relies on its
        // host pages still being zero.
        let len = bytes.len() as u64;
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let pages = offset / PAGE_4K..(offset + len).div_ceil(PAGE_4K);
        if let Some(p) = pages
            .into_iter()
            .find(|p| self.pages.state(*p) != PageState::Accepted)
        {
            return Err(MemoryError::NotAccepted {
                what,
                gpa: self.layout().gpa_of_offset(p * PAGE_4K),
            });
        }
        self.ram
            .memory()
            .write_slice(bytes, vm_memory::GuestAddress(gpa))
            .map_err(|source| MemoryError::Write { what, gpa, source })
    }

    /// Classifies a GPA that a guest access reached without a memslot.
    pub fn classify(&self, gpa: u64) -> GpaKind {
        match self.layout().ram_offset(gpa, 1) {
            None => GpaKind::NotRam,
            Some(offset) => match self.pages.state(offset / PAGE_4K) {
                PageState::Pending => GpaKind::Pending,
                PageState::Accepted => GpaKind::Accepted,
            },
        }
    }

    /// True when every page of `[offset, offset + len)` is accepted.
    fn all_accepted(&self, offset: u64, len: u64) -> bool {
        let last = (offset + len.max(1) - 1) / PAGE_4K;
        (offset / PAGE_4K..=last).all(|p| self.pages.state(p) == PageState::Accepted)
    }

    /// Writes `bytes` at `gpa` for a guest access the VMM completes itself;
    /// the range must be accepted RAM.
    pub fn write_accepted(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        let Some(offset) = self.layout().ram_offset(gpa, bytes.len() as u64) else {
            return false;
        };
        if !self.all_accepted(offset, bytes.len() as u64) {
            return false;
        }
        self.ram.write(offset, bytes);
        true
    }

    /// Reads guest bytes at `gpa` if the whole range is accepted RAM.
    pub fn read_accepted(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(offset) = self.layout().ram_offset(gpa, buf.len() as u64) else {
            return false;
        };
        if !self.all_accepted(offset, buf.len() as u64) {
            return false;
        }
        self.ram.read(offset, buf);
        true
    }
}
