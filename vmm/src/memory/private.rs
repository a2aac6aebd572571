//! The TD's private memory as the TDX module sees it: the host mapping, the
//! page-state table and the memslots that expose accepted pages to the
//! guest, kept in step: the facade, its setup, initial memory and checked
//! guest reads and writes. The accept state machine lives in
//! `tdx::accept`; what it does to the host is `accept_host.rs`, releases
//! are `release.rs`, and `first_touch.rs` maps accepted memory at the
//! guest's first touch. Generic over the memslot backend, so all of it
//! runs in tests without KVM.

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::layout::RamLayout;
use crate::memory::memslots::{
    KvmSlots, MemslotError, MemslotManager, SlotBackend, DEFAULT_SOFT_CAP,
};
use crate::memory::page_state::{PageState, PageStateTable};
use crate::memory::pending_mechanism::{PendingMechanism, PoisonedChunks};
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
    #[error("cannot reserve {bytes} bytes of host address space for shared memory: {source}")]
    SharedReserve { bytes: u64, source: std::io::Error },
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
    /// The ranges converted to shared and their host mapping (after
    /// `slots`, so the VM is closed before the mirror is unmapped).
    pub(crate) shared: crate::memory::shared_alias::SharedAlias,
    pub(crate) ram: std::sync::Arc<GuestRam>,
    pub(crate) pages: PageStateTable,
    pub(crate) backing: Backing,
    /// Install memslots at the first touch of accepted memory instead of
    /// at accept time.
    pub(crate) map_on_touch: bool,
    /// With `uffd-poison`: the chunks whose pending pages are poisoned.
    pub(crate) poison: Option<Arc<PoisonedChunks>>,
    /// A TDVF firmware's window below 4 GiB: initial private memory
    /// outside RAM, accepted for the TD's life (after `slots`, so the VM
    /// is closed before the window is unmapped).
    pub(crate) window: Option<crate::memory::firmware_window::FirmwareWindow>,
    /// Pages the host took back (`host_remove`) that are not accepted
    /// again yet.
    pub(crate) removed: crate::memory::host_remove::RemovedPages,
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

    /// Makes `window` part of the TD's private memory: exposed in memslot
    /// `slot` (one the memslot manager never uses) and accepted for the
    /// TD's life.
    pub fn add_window(
        &mut self,
        window: crate::memory::firmware_window::FirmwareWindow,
        slot: u32,
    ) -> Result<(), crate::memory::firmware_window::WindowError> {
        window.install(self.vm(), slot)?;
        self.window = Some(window);
        Ok(())
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
            shared: Default::default(),
            ram,
            pages,
            backing,
            map_on_touch: false,
            poison: None,
            window: None,
            removed: Default::default(),
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

    /// Chooses when accepted memory gets its memslot.
    pub fn set_map_on_touch(&mut self, on: bool) {
        self.map_on_touch = on;
    }

    /// Sets the host's Secure-EPT leaf size (`--sept-level`), before any
    /// accept.
    pub fn set_sept_level(&mut self, sept: abi::tdcall::SeptLevel) {
        self.pages.set_sept_level(sept);
    }

    /// The host's Secure-EPT leaf size.
    pub fn sept_level(&self) -> abi::tdcall::SeptLevel {
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
        if self.window.as_ref().is_some_and(|w| w.covers(gpa, 1)) {
            return GpaKind::Accepted;
        }
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
        if let Some(w) = self.window.as_ref().filter(|w| w.covers(gpa, bytes.len())) {
            return w.write_guest(gpa, bytes);
        }
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
        if let Some(w) = self.window.as_ref().filter(|w| w.covers(gpa, buf.len())) {
            return w.read(gpa, buf);
        }
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
