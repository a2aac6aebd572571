//! A host that takes accepted private pages back (TDH.MEM.PAGE.REMOVE):
//! the page's content is gone, its host memory freed, and it is not
//! accepted any more. With SEPT_VE_DISABLE, the guest's next access stops
//! the TD with the exact GPA, named as removed by the host: denial of
//! service, never silent corruption. The removed pages are remembered
//! until the guest accepts them again, to name them in that diagnostic.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::{GpaKind, MemoryError, PrivateMemory};
use abi::PAGE_4K;
use std::collections::BTreeSet;

/// GPAs (4 KiB aligned) of the pages the host removed, how many removals
/// there were in all, and how many removed pages the guest accepted again.
#[derive(Debug, Default)]
pub struct RemovedPages {
    pages: BTreeSet<u64>,
    total: u64,
    reaccepted: u64,
}

impl<B: SlotBackend> PrivateMemory<B> {
    /// Removes the accepted 4 KiB RAM page at `gpa`, as a host's
    /// TDH.MEM.PAGE.REMOVE: returned to pending, content and host memory
    /// gone. Returns false (nothing done) for a page that is not accepted
    /// RAM.
    pub fn remove_by_host(&mut self, gpa: u64) -> Result<bool, MemoryError> {
        let gpa = gpa & !(PAGE_4K - 1);
        if self.classify(gpa) != GpaKind::Accepted
            || self.layout().ram_offset(gpa, PAGE_4K).is_none()
        {
            return Ok(false);
        }
        let released = self.release(gpa, PAGE_4K)?;
        self.removed.pages.insert(gpa);
        self.removed.total += 1;
        log::debug!("host removed the accepted page at GPA {gpa:#x}");
        Ok(released == 1)
    }

    /// True when the page holding `gpa` was removed by the host and not
    /// accepted since.
    pub fn removed_by_host(&self, gpa: u64) -> bool {
        self.removed.pages.contains(&(gpa & !(PAGE_4K - 1)))
    }

    /// The host's removals so far (a page removed, accepted again and
    /// removed again counts twice).
    pub fn pages_removed(&self) -> u64 {
        self.removed.total
    }

    /// Removed pages the guest accepted again: what it had written there
    /// is zeros now, and nothing told it (a #VE that accepts, "access
    /// first"), unless it accepted knowing the page was lost.
    pub fn removed_pages_reaccepted(&self) -> u64 {
        self.removed.reaccepted
    }

    /// `[gpa, gpa + len)` was accepted: its pages are no longer removed.
    pub(crate) fn forget_removed(&mut self, gpa: u64, len: u64) {
        if self.removed.pages.is_empty() {
            return;
        }
        let gone: Vec<u64> = self
            .removed
            .pages
            .range(gpa..gpa.saturating_add(len))
            .copied()
            .collect();
        self.removed.reaccepted += gone.len() as u64;
        for g in gone {
            self.removed.pages.remove(&g);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::guest_ram::Backing;
    use crate::memory::memslots::NoKvm;
    use crate::memory::private::{GpaKind, PrivateMemory};
    use abi::tdcall::AcceptLevel;
    use abi::{GIB, PAGE_4K};

    #[test]
    fn a_removed_page_is_pending_named_and_forgotten_once_accepted_again() {
        let layout = crate::memory::layout::checked(GIB, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        let gpa = 0x20_0000;
        m.pages_mut().accept(gpa / PAGE_4K, AcceptLevel::L2M);
        // Not accepted, not RAM: nothing to remove.
        assert!(!m.remove_by_host(0x40_0000).unwrap());
        assert!(!m.remove_by_host(2 * GIB).unwrap());
        assert!(m.remove_by_host(gpa + 0x3123).unwrap());
        assert_eq!(m.classify(gpa + 0x3000), GpaKind::Pending);
        assert_eq!(m.classify(gpa + 0x2000), GpaKind::Accepted);
        assert!(m.removed_by_host(gpa + 0x3fff));
        assert!(!m.removed_by_host(gpa + 0x4000));
        assert_eq!(m.pages().accepted_pages(), 511);
        // Removing it again does nothing: it is pending.
        assert!(!m.remove_by_host(gpa + 0x3000).unwrap());
        assert_eq!(m.pages_removed(), 1);
        m.pages_mut()
            .accept((gpa + 0x3000) / PAGE_4K, AcceptLevel::L4K);
        assert_eq!(m.removed_pages_reaccepted(), 0);
        m.forget_removed(gpa + 0x3000, PAGE_4K);
        assert!(!m.removed_by_host(gpa + 0x3000));
        assert_eq!(m.pages_removed(), 1);
        assert_eq!(m.removed_pages_reaccepted(), 1);
        // Accepting it again (ALREADY_ACCEPTED, say) counts nothing more.
        m.forget_removed(gpa, abi::PAGE_2M);
        assert_eq!(m.removed_pages_reaccepted(), 1);
    }
}
