//! The chaos workload's changes to what is private: MapGPA conversions of
//! window ranges to shared and back (Linux's `tdx_map_gpa` rule,
//! `models::shared_memory::map_gpa`), and pages the host removes at the
//! workload's request (`emu::REMOVE_PAGE`, TDH.MEM.PAGE.REMOVE). Each holds
//! its 2 MiB entry exclusively, so no accept or read races it; the model
//! applies the change only when the host's answer is success. Converted
//! and removed pages are pending to the model, so later accepts take them
//! again (fresh, zeroed: `check_fresh`).

use super::*;

impl Run<'_> {
    /// Holds the 2 MiB entry of `gpa` alone, if no other CPU holds it.
    pub(super) fn claim_exclusive(&self, gpa: u64) -> Option<usize> {
        let c = ((gpa - self.range.0) / PAGE_2M) as usize;
        self.with(|s| {
            let e = &mut s.entries[c];
            (!e.held).then(|| {
                e.held = true;
                e.exclusive = true;
                c
            })
        })
    }

    pub(super) fn release_exclusive(&self, c: usize) {
        self.with(|s| {
            s.entries[c] = Entry {
                held: false,
                rogue: Rogue::Idle,
                exclusive: false,
            }
        });
    }

    /// MapGPA of a window range (inside one 2 MiB entry, or all of it) to
    /// shared or to private.
    pub(super) fn convert(&mut self) {
        let gpa = self.window_gpa();
        let Some(c) = self.claim_exclusive(gpa) else {
            return;
        };
        let chunk = gpa & !(PAGE_2M - 1);
        let (start, len) = if self.rng.percent(25) {
            (chunk, PAGE_2M)
        } else {
            let left = (chunk + PAGE_2M - gpa) / PAGE_4K;
            (gpa, (1 + self.rng.below(left.min(64))) * PAGE_4K)
        };
        let shared = self.rng.percent(50);
        let bit = self.layout.shared_bit();
        let ok =
            models::shared_memory::map_gpa(start, start + len, shared.then_some(bit), |g, n| {
                let r = vmcall(GHCI_STANDARD, ghci::MAP_GPA, g, n, 0, 0);
                (r.r10, r.r11)
            });
        if ok {
            self.out.conversions += 1;
            self.with(|s| {
                if shared {
                    s.model.to_shared(start, len);
                } else {
                    s.model.to_private(start, len);
                }
            });
        } else {
            self.disagree(format_args!(
                "MapGPA of {start:#x} (+{len:#x}) to {} failed",
                if shared { "shared" } else { "private" }
            ));
        }
        self.release_exclusive(c);
    }

    /// The host removes an accepted window page now, at the workload's
    /// request; the page is pending (and removed) to the model.
    pub(super) fn remove_page(&mut self) {
        let gpa = self.window_gpa();
        let Some(c) = self.claim_exclusive(gpa) else {
            return;
        };
        let accepted = self.with(|s| s.model.is_accepted(gpa));
        let r10 = vmcall(VENDOR_EMU, abi::vmcall::emu::REMOVE_PAGE, gpa, 0, 0, 0).r10;
        match (accepted, r10) {
            (true, vmcall_status::SUCCESS) => {
                self.out.removals += 1;
                self.with(|s| s.model.remove(gpa));
            }
            (false, vmcall_status::OPERAND_INVALID) => {}
            (want, got) => self.disagree(format_args!(
                "REMOVE_PAGE {gpa:#x}: status {got:#x}, but the model says the page is {}accepted",
                if want { "" } else { "not " }
            )),
        }
        self.release_exclusive(c);
    }
}
