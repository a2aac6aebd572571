//! Guest-physical layout and CPU-state facts both sides rely on: the MMIO
//! hole, where a TD's RAM is (`RamLayout`: its regions, and where each GPA
//! of RAM lies in the host's one mapping of it), the firmware's place, the
//! GDT selectors.

use crate::GIB;

/// Low RAM ends (at the latest) where the MMIO hole starts.
pub const MMIO_HOLE_START: u64 = 3 * GIB;
/// RAM resumes above the hole.
pub const MMIO_HOLE_END: u64 = 4 * GIB;
/// The firmware below this address is TDVF's job ("accept all below 4 GiB").
pub const FOUR_GIB: u64 = 4 * GIB;

/// A contiguous range of guest RAM and where it starts in the host's
/// mapping of all RAM (low RAM first, then the RAM above 4 GiB).
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
    pub const fn end(&self) -> u64 {
        self.gpa + self.size
    }
}

/// Where the TD's RAM is: `[0, low_end)` and, with more than 3 GiB,
/// `[4 GiB, high_end)`; and its guest-physical address width. The host
/// maps all RAM as one range, low RAM first: `ram_offset` and
/// `gpa_of_offset` convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    pub low_end: u64,
    /// 0 when there is no RAM above the hole.
    pub high_end: u64,
    pub gpaw: u32,
}

impl RamLayout {
    /// The layout of a TD with `mem_bytes` of RAM.
    pub const fn for_mem(mem_bytes: u64, gpaw: u32) -> Self {
        if mem_bytes <= MMIO_HOLE_START {
            RamLayout {
                low_end: mem_bytes,
                high_end: 0,
                gpaw,
            }
        } else {
            RamLayout {
                low_end: MMIO_HOLE_START,
                high_end: MMIO_HOLE_END + (mem_bytes - MMIO_HOLE_START),
                gpaw,
            }
        }
    }

    /// One past the highest RAM address.
    pub const fn ram_top(&self) -> u64 {
        if self.high_end == 0 {
            self.low_end
        } else {
            self.high_end
        }
    }

    /// True when `[gpa, gpa + len)` lies inside one RAM region.
    pub const fn is_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        end <= self.low_end || (gpa >= MMIO_HOLE_END && end <= self.high_end)
    }

    /// The shared bit (GPAW - 1).
    pub const fn shared_bit(&self) -> u64 {
        1u64 << (self.gpaw - 1)
    }

    /// Total RAM in bytes.
    pub const fn mem_bytes(&self) -> u64 {
        match self.high() {
            Some(h) => self.low_end + h.size,
            None => self.low_end,
        }
    }

    /// RAM below the hole.
    pub const fn low(&self) -> RamRegion {
        RamRegion {
            gpa: 0,
            size: self.low_end,
            offset: 0,
        }
    }

    /// RAM above 4 GiB, if any.
    pub const fn high(&self) -> Option<RamRegion> {
        if self.high_end == 0 {
            None
        } else {
            Some(RamRegion {
                gpa: MMIO_HOLE_END,
                size: self.high_end - MMIO_HOLE_END,
                offset: self.low_end,
            })
        }
    }

    /// The RAM regions in ascending GPA order (one or two).
    pub fn regions(&self) -> impl Iterator<Item = RamRegion> {
        core::iter::once(self.low()).chain(self.high())
    }

    /// The region holding `gpa`, if it is RAM.
    pub fn region_of(&self, gpa: u64) -> Option<RamRegion> {
        self.regions().find(|r| gpa >= r.gpa && gpa < r.end())
    }

    /// Host-mapping offset of `[gpa, gpa + len)` when the whole range is
    /// RAM inside one region; `None` otherwise (hole, beyond RAM,
    /// wrap-around).
    pub fn ram_offset(&self, gpa: u64, len: u64) -> Option<u64> {
        let region = self.region_of(gpa)?;
        let end = gpa.checked_add(len)?;
        (end <= region.end()).then(|| region.offset + (gpa - region.gpa))
    }

    /// GPA of a host-mapping offset (`offset < mem_bytes()`).
    pub const fn gpa_of_offset(&self, offset: u64) -> u64 {
        if offset < self.low_end {
            offset
        } else {
            MMIO_HOLE_END + (offset - self.low_end)
        }
    }

    /// True when `gpa` lies in the MMIO hole below 4 GiB.
    pub const fn in_hole(&self, gpa: u64) -> bool {
        gpa >= MMIO_HOLE_START && gpa < MMIO_HOLE_END
    }
}

/// The firmware ELF must be linked (and is loaded) inside
/// `[FIRMWARE_BASE, FIRMWARE_BASE + FIRMWARE_MAX_SIZE)`.
pub const FIRMWARE_BASE: u64 = 0x10_0000;
/// Largest firmware image (memory size of all its segments).
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;

/// GDT selectors the VMM installs. The standard (ring-0) profile runs on
/// `CODE64_RING0`/`DATA_RING0`; the pvm-native profile on the DPL-3 pair,
/// which equal the host kernel's user selectors.
pub mod selector {
    pub const CODE64_RING0: u16 = 0x08;
    pub const DATA_RING0: u16 = 0x10;
    pub const DATA_RING3: u16 = 0x2b;
    pub const CODE64_RING3: u16 = 0x33;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PAGE_2M, PAGE_4K};

    fn layout() -> RamLayout {
        RamLayout::for_mem(8 * GIB, 48)
    }

    #[test]
    fn layout_splits_around_the_hole() {
        let l = layout();
        assert_eq!(l.low_end, 3 * GIB);
        assert_eq!(l.high_end, 9 * GIB);
        assert!(l.is_ram(0, PAGE_4K));
        assert!(!l.is_ram(3 * GIB - PAGE_4K, 2 * PAGE_4K));
        assert!(!l.is_ram(3 * GIB, PAGE_4K));
        assert!(l.is_ram(4 * GIB, PAGE_2M));
        assert!(!l.is_ram(9 * GIB, PAGE_4K));
        assert!(!l.is_ram(u64::MAX - 10, PAGE_4K));
        let small = RamLayout::for_mem(GIB, 48);
        assert_eq!(
            (small.low_end, small.high_end, small.ram_top()),
            (GIB, 0, GIB)
        );
    }

    #[test]
    fn offsets_follow_the_one_host_mapping() {
        let l = layout();
        assert_eq!(l.mem_bytes(), 8 * GIB);
        assert_eq!(l.regions().count(), 2);
        assert_eq!(l.low().size, 3 * GIB);
        assert_eq!(
            l.high().map(|h| (h.gpa, h.size, h.offset)),
            Some((4 * GIB, 5 * GIB, 3 * GIB))
        );
        assert_eq!(l.ram_offset(4 * GIB, PAGE_4K), Some(3 * GIB));
        assert_eq!(l.ram_offset(3 * GIB, PAGE_4K), None);
        // A range that crosses from low RAM into the hole is not RAM.
        assert_eq!(l.ram_offset(3 * GIB - PAGE_4K, 2 * PAGE_4K), None);
        assert_eq!(l.ram_offset(u64::MAX - 10, PAGE_4K), None);
        assert!(l.in_hole(3 * GIB + 5) && !l.in_hole(4 * GIB));
        for offset in [0, 3 * GIB - PAGE_4K, 3 * GIB, 8 * GIB - PAGE_4K] {
            let gpa = l.gpa_of_offset(offset);
            assert_eq!(l.ram_offset(gpa, PAGE_4K), Some(offset));
        }
        let small = RamLayout::for_mem(512 << 20, 48);
        assert_eq!((small.mem_bytes(), small.regions().count()), (512 << 20, 1));
        assert_eq!(small.ram_offset((512 << 20) - PAGE_4K, 2 * PAGE_4K), None);
    }
}
