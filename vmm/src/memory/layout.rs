//! Guest-physical layout: where RAM lives (below the 3-4 GiB hole and above
//! it), how a GPA maps to an offset in the host mapping, and the checks a
//! memory size must pass.

use abi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use abi::PAGE_4K;
use thiserror::Error;

/// Smallest guest the firmware can boot in.
pub const MIN_MEM_BYTES: u64 = 64 << 20;
/// Largest guest this VMM builds page tables for.
pub const MAX_MEM_BYTES: u64 = 64 << 40;

/// Why a memory size was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("memory size {0} is below the minimum of {MIN_MEM_BYTES} bytes (64M)")]
    TooSmall(u64),
    #[error("memory size {0} is not a multiple of 4 KiB")]
    Unaligned(u64),
    #[error("memory size {size} puts RAM up to {top:#x}, past the {gpaw}-bit address width (shared bit at {shared:#x})")]
    BeyondAddressWidth {
        size: u64,
        top: u64,
        gpaw: u32,
        shared: u64,
    },
    #[error("memory size {0} exceeds this VMM's limit of {MAX_MEM_BYTES} bytes (64T)")]
    TooLarge(u64),
    #[error("guest-physical address width {0} is not 48 or 52")]
    BadGpaw(u32),
}

/// A contiguous range of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// First GPA.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset of `gpa` in the host mapping.
    pub offset: u64,
}

impl RamRegion {
    /// One past the last GPA.
    pub fn end(&self) -> u64 {
        self.gpa + self.size
    }
}

/// Where the guest's RAM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    mem_bytes: u64,
    low: RamRegion,
    high: Option<RamRegion>,
    gpaw: u32,
    /// The same layout as the accept model reads it, built once.
    model: abi::layout::RamLayout,
}

impl RamLayout {
    /// Lays out `mem_bytes` of RAM for a TD with guest-physical address width
    /// `gpaw` (48 or 52): low RAM from 0 up to the hole, the rest from 4 GiB.
    pub fn new(mem_bytes: u64, gpaw: u32) -> Result<Self, LayoutError> {
        use abi::tdcall::vp_info::{GPAW_48, GPAW_52};
        if gpaw != GPAW_48 && gpaw != GPAW_52 {
            return Err(LayoutError::BadGpaw(gpaw));
        }
        if mem_bytes < MIN_MEM_BYTES {
            return Err(LayoutError::TooSmall(mem_bytes));
        }
        if !mem_bytes.is_multiple_of(PAGE_4K) {
            return Err(LayoutError::Unaligned(mem_bytes));
        }
        if mem_bytes > MAX_MEM_BYTES {
            return Err(LayoutError::TooLarge(mem_bytes));
        }
        let low_size = mem_bytes.min(MMIO_HOLE_START);
        let low = RamRegion {
            gpa: 0,
            size: low_size,
            offset: 0,
        };
        let high = (mem_bytes > low_size).then(|| RamRegion {
            gpa: MMIO_HOLE_END,
            size: mem_bytes - low_size,
            offset: low_size,
        });
        let model = abi::layout::RamLayout {
            low_end: low.end(),
            high_end: high.map_or(0, |h| h.end()),
            gpaw,
        };
        let layout = RamLayout {
            mem_bytes,
            low,
            high,
            gpaw,
            model,
        };
        let shared = layout.shared_bit();
        if layout.ram_top() > shared {
            return Err(LayoutError::BeyondAddressWidth {
                size: mem_bytes,
                top: layout.ram_top(),
                gpaw,
                shared,
            });
        }
        Ok(layout)
    }

    /// Total RAM in bytes.
    pub fn mem_bytes(&self) -> u64 {
        self.mem_bytes
    }

    /// Guest-physical address width.
    pub fn gpaw(&self) -> u32 {
        self.gpaw
    }

    /// The same layout as the accept model sees it.
    pub fn model(&self) -> &abi::layout::RamLayout {
        &self.model
    }

    /// The shared bit (GPAW - 1) as a mask.
    pub fn shared_bit(&self) -> u64 {
        1u64 << (self.gpaw - 1)
    }

    /// One past the highest RAM GPA.
    pub fn ram_top(&self) -> u64 {
        self.high.map_or(self.low.end(), |h| h.end())
    }

    /// The RAM regions in ascending GPA order (one or two).
    pub fn regions(&self) -> impl Iterator<Item = RamRegion> + '_ {
        std::iter::once(self.low).chain(self.high)
    }

    /// RAM below the hole.
    pub fn low(&self) -> RamRegion {
        self.low
    }

    /// RAM above 4 GiB, if any.
    pub fn high(&self) -> Option<RamRegion> {
        self.high
    }

    /// The region holding `gpa`, if it is RAM.
    pub fn region_of(&self, gpa: u64) -> Option<RamRegion> {
        self.regions().find(|r| gpa >= r.gpa && gpa < r.end())
    }

    /// Host-mapping offset of `[gpa, gpa + len)` when the whole range is RAM
    /// inside one region; `None` otherwise (hole, beyond RAM, wrap-around).
    pub fn ram_offset(&self, gpa: u64, len: u64) -> Option<u64> {
        let region = self.region_of(gpa)?;
        let end = gpa.checked_add(len)?;
        (end <= region.end()).then(|| region.offset + (gpa - region.gpa))
    }

    /// GPA of a host-mapping offset (`offset < mem_bytes`).
    pub fn gpa_of_offset(&self, offset: u64) -> u64 {
        if offset < self.low.size {
            offset
        } else {
            MMIO_HOLE_END + (offset - self.low.size)
        }
    }

    /// True when `gpa` lies in the MMIO hole below 4 GiB.
    pub fn in_hole(&self, gpa: u64) -> bool {
        (MMIO_HOLE_START..MMIO_HOLE_END).contains(&gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::GIB;

    #[test]
    fn small_guest_has_only_low_ram() {
        let l = RamLayout::new(512 << 20, 48).unwrap();
        assert_eq!(l.regions().count(), 1);
        assert_eq!(l.ram_top(), 512 << 20);
        assert_eq!(l.ram_offset(0x1000, 0x1000), Some(0x1000));
        assert_eq!(l.ram_offset((512 << 20) - 4096, 8192), None);
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let l = RamLayout::new(8 * GIB, 48).unwrap();
        assert_eq!(l.low().size, 3 * GIB);
        assert_eq!(l.high().unwrap().gpa, 4 * GIB);
        assert_eq!(l.high().unwrap().size, 5 * GIB);
        assert_eq!(l.ram_top(), 9 * GIB);
        assert_eq!(l.ram_offset(4 * GIB, 4096), Some(3 * GIB));
        assert_eq!(l.ram_offset(3 * GIB, 4096), None);
        assert!(l.in_hole(3 * GIB + 5));
        assert_eq!(l.gpa_of_offset(3 * GIB), 4 * GIB);
        // A range that crosses from low RAM into the hole is not RAM.
        assert_eq!(l.ram_offset(3 * GIB - 4096, 8192), None);
    }

    #[test]
    fn size_checks() {
        assert_eq!(RamLayout::new(0, 48), Err(LayoutError::TooSmall(0)));
        assert_eq!(
            RamLayout::new((1 << 30) + 1, 48),
            Err(LayoutError::Unaligned((1 << 30) + 1))
        );
        assert!(matches!(
            RamLayout::new(MAX_MEM_BYTES + 4096, 48),
            Err(LayoutError::TooLarge(_))
        ));
        // The largest guest still fits below the GPAW-48 shared bit.
        assert!(RamLayout::new(MAX_MEM_BYTES, 48).is_ok());
        assert!(RamLayout::new(1 << 40, 48).is_ok());
        assert_eq!(RamLayout::new(1 << 30, 0), Err(LayoutError::BadGpaw(0)));
        assert!(RamLayout::new(!4095, 48).is_err());
    }
}
