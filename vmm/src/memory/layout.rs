//! The checks a TD's memory size must pass before it has a layout: the
//! layout itself (where RAM lives below the 3-4 GiB hole and above it, how
//! a GPA maps to an offset in the host mapping) is the contract's,
//! `abi::layout::RamLayout`, re-exported here.

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

pub use abi::layout::RamLayout;

/// The layout of `mem_bytes` of RAM for a TD with guest-physical address
/// width `gpaw` (48 or 52): low RAM from 0 up to the hole, the rest from
/// 4 GiB; or why this VMM cannot build that TD.
pub fn checked(mem_bytes: u64, gpaw: u32) -> Result<RamLayout, LayoutError> {
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
    let layout = RamLayout::for_mem(mem_bytes, gpaw);
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

#[cfg(test)]
mod tests {
    use super::*;
    use abi::GIB;

    #[test]
    fn small_guest_has_only_low_ram() {
        let l = checked(512 << 20, 48).unwrap();
        assert_eq!(l.regions().count(), 1);
        assert_eq!(l.ram_top(), 512 << 20);
        assert_eq!(l.ram_offset(0x1000, 0x1000), Some(0x1000));
        assert_eq!(l.ram_offset((512 << 20) - 4096, 8192), None);
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let l = checked(8 * GIB, 48).unwrap();
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
        assert_eq!(checked(0, 48), Err(LayoutError::TooSmall(0)));
        assert_eq!(
            checked((1 << 30) + 1, 48),
            Err(LayoutError::Unaligned((1 << 30) + 1))
        );
        assert!(matches!(
            checked(MAX_MEM_BYTES + 4096, 48),
            Err(LayoutError::TooLarge(_))
        ));
        // The largest guest still fits below the GPAW-48 shared bit.
        assert!(checked(MAX_MEM_BYTES, 48).is_ok());
        assert!(checked(1 << 40, 48).is_ok());
        assert_eq!(checked(1 << 30, 0), Err(LayoutError::BadGpaw(0)));
        assert!(checked(!4095, 48).is_err());
    }
}
