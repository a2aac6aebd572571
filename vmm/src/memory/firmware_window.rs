//! The firmware window: where a TDVF image's sections above RAM live (its
//! BFV, CFV and temporary memory, up to 4 GiB, inside what is otherwise the
//! MMIO hole). On TDX these are initial private pages the VMM added
//! (TDH.MEM.PAGE.ADD): accepted from the start, writable, and never in the
//! page-state table, which covers RAM. Here they are one host mapping in
//! one memslot of their own, installed before the TD starts and kept for
//! its life (`memory::private` owns it, as private memory); a guest access
//! there never exits, and the TDX module reads and writes it as accepted
//! memory.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::MmapRegion;

/// Why the window could not be set up.
#[derive(Debug, Error)]
pub enum WindowError {
    /// The range is empty, not page aligned, or does not lie in the MMIO
    /// hole below 4 GiB.
    #[error("firmware window {gpa:#x} (+{len:#x}) must be page aligned and inside [{start:#x}, {end:#x})")]
    Range {
        /// First GPA.
        gpa: u64,
        /// Length.
        len: u64,
        /// Where the hole starts.
        start: u64,
        /// Where it ends (4 GiB).
        end: u64,
    },
    /// Bytes written beyond the window.
    #[error(
        "{what} at {gpa:#x} (+{len:#x}) does not fit the firmware window {start:#x}..{end:#x}"
    )]
    Outside {
        /// What was written.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// How much.
        len: usize,
        /// The window.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// The host mapping failed.
    #[error("cannot map the {len:#x}-byte firmware window: {source}")]
    Map {
        /// Its size.
        len: u64,
        /// The error.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// KVM refused the memslot.
    #[error("KVM_SET_USER_MEMORY_REGION for the firmware window (slot {slot}) failed: {source}")]
    Slot {
        /// The slot id.
        slot: u32,
        /// The error.
        source: kvm_ioctls::Error,
    },
}

/// The firmware window's host memory, zeroed until written.
#[derive(Debug)]
pub struct FirmwareWindow {
    gpa: u64,
    region: MmapRegion<()>,
}

impl FirmwareWindow {
    /// A zeroed window for `[gpa, gpa + len)`, which must be page aligned
    /// and lie inside the MMIO hole below 4 GiB.
    pub fn new(gpa: u64, len: u64) -> Result<Self, WindowError> {
        use abi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
        let fits = len > 0
            && gpa.is_multiple_of(abi::PAGE_4K)
            && len.is_multiple_of(abi::PAGE_4K)
            && gpa >= MMIO_HOLE_START
            && gpa.checked_add(len).is_some_and(|e| e <= MMIO_HOLE_END);
        if !fits {
            return Err(WindowError::Range {
                gpa,
                len,
                start: MMIO_HOLE_START,
                end: MMIO_HOLE_END,
            });
        }
        let region = MmapRegion::<()>::new(abi::to_usize(len))
            .map_err(|source| WindowError::Map { len, source })?;
        Ok(FirmwareWindow { gpa, region })
    }

    /// First GPA.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.region.size() as u64
    }

    /// True when `gpa` lies in the window.
    #[cfg(test)]
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.len()
    }

    /// The window's bytes (zero where nothing was written).
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the region is a live private mapping of `size()` bytes
        // owned by `self`; the guest writes it only while the TD runs,
        // which needs the memslot `install` made, and nothing reads the
        // window through this slice then.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr(), self.region.size()) }
    }

    /// Copies `bytes` to GPA `gpa` inside the window, before the TD runs.
    pub fn write(&mut self, what: &'static str, gpa: u64, bytes: &[u8]) -> Result<(), WindowError> {
        let end = self.gpa + self.len();
        let offset = gpa
            .checked_sub(self.gpa)
            .filter(|o| {
                o.checked_add(bytes.len() as u64)
                    .is_some_and(|e| e <= self.len())
            })
            .ok_or(WindowError::Outside {
                what,
                gpa,
                len: bytes.len(),
                start: self.gpa,
                end,
            })?;
        // SAFETY: `[offset, offset + len)` lies inside the mapping (checked
        // above), which `self` owns; `&mut self` excludes other host
        // access, and the TD has not started (no memslot exposes it yet,
        // or the caller holds the only reference during setup).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.region.as_ptr().add(abi::to_usize(offset)),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// The window's offset of `[gpa, gpa + len)` when it lies wholly inside.
    fn offset_of(&self, gpa: u64, len: usize) -> Option<usize> {
        let offset = gpa.checked_sub(self.gpa)?;
        let end = offset.checked_add(len as u64)?;
        (end <= self.len()).then(|| abi::to_usize(offset))
    }

    /// True when `[gpa, gpa + len)` lies wholly in the window.
    pub fn covers(&self, gpa: u64, len: usize) -> bool {
        self.offset_of(gpa, len).is_some()
    }

    /// Reads guest bytes at `gpa` (the guest may be writing them: a
    /// volatile copy) if the whole range is in the window.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(offset) = self.offset_of(gpa, buf.len()) else {
            return false;
        };
        // SAFETY: `[offset, offset + len)` lies inside the live mapping
        // `self` owns; the volatile slice only lives for this copy.
        let slice =
            unsafe { vm_memory::VolatileSlice::new(self.region.as_ptr().add(offset), buf.len()) };
        slice.copy_to(buf);
        true
    }

    /// Writes `bytes` at `gpa` for a guest access or a TDCALL output the
    /// VMM completes (volatile, as the guest may access the same bytes),
    /// if the whole range is in the window.
    pub fn write_guest(&self, gpa: u64, bytes: &[u8]) -> bool {
        let Some(offset) = self.offset_of(gpa, bytes.len()) else {
            return false;
        };
        // SAFETY: as in `read`.
        let slice =
            unsafe { vm_memory::VolatileSlice::new(self.region.as_ptr().add(offset), bytes.len()) };
        slice.copy_from(bytes);
        true
    }

    /// Exposes the window to the guest in memslot `slot` (one the memslot
    /// manager never uses), writable, for the TD's life: the window must
    /// outlive `vm`'s use of the slot, which it does as part of the TD.
    pub fn install(&self, vm: &VmFd, slot: u32) -> Result<(), WindowError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: self.gpa,
            memory_size: self.len(),
            userspace_addr: self.region.as_ptr() as u64,
        };
        // SAFETY: the mapping is live and owned by `self`, which the TD
        // keeps for as long as the VM exists; the slot id is reserved for
        // the window, so no other slot is replaced.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|source| WindowError::Slot { slot, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::GIB;

    #[test]
    fn the_window_lives_in_the_hole_and_takes_writes_inside_it() {
        assert!(matches!(
            FirmwareWindow::new(2 * GIB, 0x1000),
            Err(WindowError::Range { .. })
        ));
        assert!(matches!(
            FirmwareWindow::new(4 * GIB - 0x1000, 0x2000),
            Err(WindowError::Range { .. })
        ));
        assert!(FirmwareWindow::new(4 * GIB - 0x1800, 0x1000).is_err());
        let mut w = FirmwareWindow::new(4 * GIB - 0x4000, 0x4000).unwrap();
        assert_eq!((w.gpa(), w.len()), (4 * GIB - 0x4000, 0x4000));
        w.write("test", 4 * GIB - 0x10, &[1, 2, 3]).unwrap();
        assert_eq!(&w.bytes()[0x3ff0..0x3ff4], &[1, 2, 3, 0]);
        assert!(w.contains(4 * GIB - 1) && !w.contains(4 * GIB));
        for (gpa, len) in [(4 * GIB - 2, 3), (4 * GIB - 0x4001, 2), (4 * GIB, 1)] {
            assert!(
                matches!(
                    w.write("test", gpa, &vec![0; len]),
                    Err(WindowError::Outside { .. })
                ),
                "{gpa:#x} + {len}"
            );
        }
    }
}
