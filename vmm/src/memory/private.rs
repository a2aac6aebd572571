//! The TD's private memory as the TDX module sees it: the host mapping, the
//! page-state table and the memslots that expose accepted pages to the
//! guest, kept in step. The accept leaf itself lives in `accept.rs`.

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::layout::RamLayout;
use crate::memory::memslots::{KvmSlots, MemslotError, MemslotManager, DEFAULT_SOFT_CAP};
use crate::memory::page_state::{PageState, PageStateTable};
use abi::PAGE_4K;
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
pub struct PrivateMemory {
    pub(crate) slots: MemslotManager<KvmSlots>,
    pub(crate) ram: GuestRam,
    pub(crate) pages: PageStateTable,
    pub(crate) backing: Backing,
    pub(crate) handle_hist: crate::tdx::accept::HandleHistogram,
    /// Install memslots at the first touch of accepted memory instead of
    /// at accept time.
    pub(crate) map_on_touch: bool,
}

impl PrivateMemory {
    /// All RAM pending, no memslot.
    pub fn new(
        vm: kvm_ioctls::VmFd,
        layout: RamLayout,
        backing: Backing,
        slot_limit: usize,
    ) -> Result<Self, MemoryError> {
        let ram = GuestRam::new(layout, backing)?;
        let pages = PageStateTable::try_new(layout.mem_bytes() / PAGE_4K)?;
        Ok(PrivateMemory {
            slots: MemslotManager::new(KvmSlots { vm }, slot_limit, DEFAULT_SOFT_CAP),
            ram,
            pages,
            backing,
            handle_hist: Default::default(),
            map_on_touch: false,
        })
    }

    /// The VM file descriptor.
    pub fn vm(&self) -> &kvm_ioctls::VmFd {
        &self.slots.backend().vm
    }

    /// The RAM layout.
    pub fn layout(&self) -> &RamLayout {
        self.ram.layout()
    }

    /// Host mapping.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Page states.
    pub fn pages(&self) -> &PageStateTable {
        &self.pages
    }

    /// Memslots.
    pub fn slots(&self) -> &MemslotManager<KvmSlots> {
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

    /// Maps the accepted run around `gpa` (inside its 1 GiB block, up to
    /// the neighbouring slots) after a guest touched it (`map_on_touch`).
    pub fn map_touched(&mut self, gpa: u64) -> Result<(), MemoryError> {
        use crate::memory::page_state::{PAGES_PER_CHUNK, PAGES_PER_GIB};
        let offset = self
            .layout()
            .ram_offset(gpa, 1)
            .ok_or(MemoryError::NotRam { gpa, len: 1 })?;
        let page = offset / PAGE_4K;
        if self.pages.state(page) != PageState::Accepted {
            return Err(MemoryError::NotRam { gpa, len: 1 });
        }
        // Bounds: the 1 GiB block, then the neighbouring slots (so the scan
        // below stops early for a guest accepting and touching page by page).
        let gib_lo = page / PAGES_PER_GIB * PAGES_PER_GIB;
        let gib_hi = (gib_lo + PAGES_PER_GIB).min(self.pages.pages());
        let block_gpa = self.layout().gpa_of_offset(gib_lo * PAGE_4K);
        let block_end = block_gpa + (gib_hi - gib_lo) * PAGE_4K;
        let Some((span_lo, span_hi)) = self.slots.free_span(gpa, block_gpa, block_end) else {
            return Ok(());
        };
        let lo = gib_lo + (span_lo - block_gpa) / PAGE_4K;
        let hi = gib_lo + (span_hi - block_gpa) / PAGE_4K;
        let (s, e) = self.pages.accepted_run_around(page, lo, hi);
        let a = block_gpa + (s - gib_lo) * PAGE_4K;
        let host = self.ram.host_addr(s * PAGE_4K);
        self.slots.map(a, (e - s) * PAGE_4K, host)?;
        let chunk = page / PAGES_PER_CHUNK;
        if self.pages.chunk_full(chunk) {
            let c = gpa & !(abi::PAGE_2M - 1);
            self.slots.merge_range(c, c + abi::PAGE_2M)?;
        }
        if self.pages.gib_full(page / PAGES_PER_GIB) {
            self.slots.merge_range(block_gpa, block_gpa + abi::GIB)?;
        }
        Ok(())
    }

    /// Writes `bytes` at `gpa` for a guest access the VMM completes itself;
    /// the range must be accepted RAM.
    pub fn write_accepted(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        let len = bytes.len() as u64;
        let Some(offset) = self.layout().ram_offset(gpa, len) else {
            return false;
        };
        let last = (offset + len.max(1) - 1) / PAGE_4K;
        if (offset / PAGE_4K..=last).any(|p| self.pages.state(p) != PageState::Accepted) {
            return false;
        }
        self.ram.write(offset, bytes);
        true
    }

    /// Reads guest bytes at `gpa` if the whole range is accepted RAM.
    pub fn read_accepted(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let len = buf.len() as u64;
        let Some(offset) = self.layout().ram_offset(gpa, len) else {
            return false;
        };
        let first = offset / PAGE_4K;
        let last = (offset + len.max(1) - 1) / PAGE_4K;
        if (first..=last).any(|p| self.pages.state(p) != PageState::Accepted) {
            return false;
        }
        self.ram.read(offset, buf);
        true
    }
}
