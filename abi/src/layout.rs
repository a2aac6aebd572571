//! Guest-physical layout and CPU-state facts both sides rely on.

use crate::GIB;

/// Low RAM ends (at the latest) where the MMIO hole starts.
pub const MMIO_HOLE_START: u64 = 3 * GIB;
/// RAM resumes above the hole.
pub const MMIO_HOLE_END: u64 = 4 * GIB;
/// The firmware below this address is TDVF's job ("accept all below 4 GiB").
pub const FOUR_GIB: u64 = 4 * GIB;

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
