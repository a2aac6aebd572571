//! Page-table entry bits (x86-64, 4-level paging) as the VMM's identity map,
//! the guests' own mappings and the walks of both use them.

/// Present.
pub const PRESENT: u64 = 1;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User (U/S): set at every level of our maps, as the pvm-native profile
/// requires.
pub const USER: u64 = 1 << 2;
/// Page size: below the PML4, a leaf above 4 KiB (2 MiB in a PD, 1 GiB in a
/// PDPT).
pub const HUGE: u64 = 1 << 7;
/// The physical-address field (bits 12..51).
pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// The flags of a table entry in our maps: present, writable, user.
pub const TABLE: u64 = PRESENT | WRITABLE | USER;
