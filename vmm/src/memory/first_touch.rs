//! First-touch mapping (`--map on-touch`, the default): an accept only
//! updates the page states; the guest's first access to accepted memory
//! exits like MMIO, and the VMM maps the whole accepted run around the
//! touched page (inside its 1 GiB block, up to the neighbouring slots) so
//! the next accesses in it run at native speed.

use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::{PageState, PAGES_PER_GIB};
use crate::memory::private::{MemoryError, PrivateMemory};
use abi::PAGE_4K;

impl<B: SlotBackend> PrivateMemory<B> {
    /// Maps the accepted run around `gpa` after a guest touched it. Returns
    /// false when a slot already covers `gpa` (another vCPU touched the run
    /// first and mapped it): nothing to do.
    pub fn map_touched(&mut self, gpa: u64) -> Result<bool, MemoryError> {
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
            return Ok(false);
        };
        let lo = gib_lo + (span_lo - block_gpa) / PAGE_4K;
        let hi = gib_lo + (span_hi - block_gpa) / PAGE_4K;
        let (s, e) = self.pages.accepted_run_around(page, lo, hi);
        let a = block_gpa + (s - gib_lo) * PAGE_4K;
        let host = self.ram.host_addr(s * PAGE_4K);
        self.slots.map(a, (e - s) * PAGE_4K, host)?;
        self.merge_completed(gpa, true)?;
        Ok(true)
    }
}
