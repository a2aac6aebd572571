//! The ACPI layouts this project publishes and reads: RSDP, SDT header,
//! MADT and its subtables (local APIC, x2APIC, Multiprocessor Wakeup), the
//! wakeup mailbox with its commands and this firmware's use of its
//! firmware area, the signatures and ids written, and the checksum.

use crate::pod::Pod;

/// `"RSD PTR "`.
pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// `"XSDT"`.
pub const XSDT_SIGNATURE: [u8; 4] = *b"XSDT";
/// `"APIC"`: the MADT.
pub const MADT_SIGNATURE: [u8; 4] = *b"APIC";

/// RSDP revision for ACPI 2.0 and later (with XSDT).
pub const RSDP_REVISION: u8 = 2;
/// XSDT revision.
pub const XSDT_REVISION: u8 = 1;
/// MADT revision written (the parser accepts any).
pub const MADT_REVISION: u8 = 5;
/// OEM ID written in every table.
pub const OEM_ID: [u8; 6] = *b"TDXEMU";
/// OEM table ID written in the XSDT and MADT.
pub const OEM_TABLE_ID: [u8; 8] = *b"ACCEPTEM";
/// Creator ID written in the XSDT and MADT.
pub const CREATOR_ID: u32 = u32::from_le_bytes(*b"TAEM");
/// The local APIC address the MADT states (the architectural default).
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;

/// Largest table (XSDT or MADT) the parser reads.
pub const MAX_TABLE_LEN: u32 = 1 << 20;

/// MADT subtable types used here.
pub mod madt_type {
    pub const LOCAL_APIC: u8 = 0;
    pub const LOCAL_X2APIC: u8 = 9;
    pub const MP_WAKEUP: u8 = 0x10;
}

/// Local APIC / x2APIC flags: bit 0 enabled, bit 1 online capable.
pub const APIC_ENABLED: u32 = 1;
pub const APIC_ONLINE_CAPABLE: u32 = 2;

/// Multiprocessor Wakeup structure versions.
pub mod wakeup_version {
    /// 16 bytes: no reset vector.
    pub const V0: u16 = 0;
    /// 24 bytes: with the reset vector.
    pub const V1: u16 = 1;
}

/// Mailbox commands (`Mailbox::command`).
pub mod command {
    pub const NOOP: u16 = 0;
    pub const WAKEUP: u16 = 1;
    pub const TEST: u16 = 2;
    /// Firmware-private (never on the published mailbox): accept the
    /// striped share of the range in the firmware area. td-shim uses 3
    /// too; edk2's private mailbox uses 2, which the ACPI mailbox gives to
    /// TEST.
    pub const ACCEPT_PAGES: u16 = 3;
}

/// `apic_id` value addressing every AP (firmware-private commands only).
pub const APIC_ID_BROADCAST: u32 = 0xffff_fffe;

/// Bytes of a mailbox (it is also 4 KiB aligned).
pub const MAILBOX_SIZE: u64 = 4096;

/// The Multiprocessor Wakeup Mailbox.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub command: u16,
    pub reserved: u16,
    pub apic_id: u32,
    pub wakeup_vector: u64,
    pub os_area: [u8; 2032],
    pub firmware_area: [u8; 2048],
}

/// Byte offsets of the mailbox fields (for assembly and atomics).
pub mod mailbox_offset {
    pub const COMMAND: usize = 0;
    pub const APIC_ID: usize = 4;
    pub const WAKEUP_VECTOR: usize = 8;
    pub const OS_AREA: usize = 0x10;
    pub const FIRMWARE_AREA: usize = 0x800;
}

/// This firmware's use of the firmware area: naturally aligned `u64`
/// words, offsets from the start of the mailbox. On the boot-time mailbox
/// (firmware memory) all of them are used; on the published one only
/// `ARRIVED`.
pub mod firmware_area {
    /// Bumped by the BSP (store-release) after it wrote a firmware command;
    /// an AP acts on each value once.
    pub const SEQUENCE: usize = 0x800;
    /// ACCEPT_PAGES: the range `[start, end)`, 2 MiB aligned at the start.
    pub const ACCEPT_START: usize = 0x808;
    pub const ACCEPT_END: usize = 0x810;
    /// ACCEPT_PAGES: vCPUs taking part (indices `0..cpus`, the BSP's
    /// share included); CPU i accepts the chunks at `start + i * CHUNK`
    /// with a stride of `cpus * CHUNK`.
    pub const ACCEPT_CPUS: usize = 0x818;
    /// ACCEPT_PAGES: flags, see `ACCEPT_4K_ONLY`.
    pub const ACCEPT_FLAGS: usize = 0x820;
    /// APs that finished the current firmware command.
    pub const DONE: usize = 0x828;
    /// APs that reached this mailbox's loop (on the published mailbox:
    /// every entry into the parking loop, reset vector included).
    pub const ARRIVED: usize = 0x830;
    /// `ACCEPT_FLAGS` bit: accept in 4 KiB pages only (`fw.accept_page=4k`).
    pub const ACCEPT_4K_ONLY: u64 = 1;
}

/// RSDP (ACPI 2.0+), 36 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub signature: [u8; 8],
    /// Checksum of the first 20 bytes.
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt_address: u32,
    pub length: u32,
    pub xsdt_address: u64,
    /// Checksum of all `length` bytes.
    pub extended_checksum: u8,
    pub reserved: [u8; 3],
}

/// Bytes covered by `Rsdp::checksum` (the ACPI 1.0 part).
pub const RSDP_V1_LEN: usize = 20;

/// The common header of every system description table, 36 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: u32,
    pub creator_revision: u32,
}

/// The MADT's fixed part, 44 bytes; subtables follow.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtHeader {
    pub header: SdtHeader,
    pub local_apic_address: u32,
    pub flags: u32,
}

/// Processor Local APIC (type 0), 8 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    pub kind: u8,
    pub length: u8,
    pub processor_uid: u8,
    pub apic_id: u8,
    pub flags: u32,
}

/// Processor Local x2APIC (type 9), 16 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalX2Apic {
    pub kind: u8,
    pub length: u8,
    pub reserved: u16,
    pub x2apic_id: u32,
    pub flags: u32,
    pub processor_uid: u32,
}

/// Multiprocessor Wakeup structure (type 0x10), version 1, 24 bytes
/// (version 0 is the first 16).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpWakeup {
    pub kind: u8,
    pub length: u8,
    pub version: u16,
    pub reserved: u32,
    pub mailbox_address: u64,
    pub reset_vector: u64,
}

/// Length of a version-0 wakeup structure.
pub const MP_WAKEUP_V0_LEN: u8 = 16;

// SAFETY: all of these are repr(C) (packed where ACPI packs them) with
// integer and byte-array fields only, so no padding (sizes asserted below)
// and every bit pattern is a valid value.
unsafe impl Pod for Mailbox {}
// SAFETY: as above.
unsafe impl Pod for Rsdp {}
// SAFETY: as above.
unsafe impl Pod for SdtHeader {}
// SAFETY: as above.
unsafe impl Pod for MadtHeader {}
// SAFETY: as above.
unsafe impl Pod for LocalApic {}
// SAFETY: as above.
unsafe impl Pod for LocalX2Apic {}
// SAFETY: as above.
unsafe impl Pod for MpWakeup {}

const _: () = assert!(core::mem::size_of::<Mailbox>() == 4096);
const _: () = assert!(core::mem::offset_of!(Mailbox, apic_id) == mailbox_offset::APIC_ID);
const _: () =
    assert!(core::mem::offset_of!(Mailbox, wakeup_vector) == mailbox_offset::WAKEUP_VECTOR);
const _: () = assert!(core::mem::offset_of!(Mailbox, os_area) == mailbox_offset::OS_AREA);
const _: () =
    assert!(core::mem::offset_of!(Mailbox, firmware_area) == mailbox_offset::FIRMWARE_AREA);
const _: () = assert!(core::mem::size_of::<Rsdp>() == 36);
const _: () = assert!(core::mem::size_of::<SdtHeader>() == 36);
const _: () = assert!(core::mem::size_of::<MadtHeader>() == 44);
const _: () = assert!(core::mem::size_of::<LocalApic>() == 8);
const _: () = assert!(core::mem::size_of::<LocalX2Apic>() == 16);
const _: () = assert!(core::mem::size_of::<MpWakeup>() == 24);

/// Sizes of the layouts above, and the same as the narrower types the
/// tables' length fields use.
pub const RSDP_LEN: usize = core::mem::size_of::<Rsdp>();
pub const SDT_LEN: usize = core::mem::size_of::<SdtHeader>();
pub const MADT_LEN: usize = core::mem::size_of::<MadtHeader>();
pub const X2APIC_LEN: usize = core::mem::size_of::<LocalX2Apic>();
pub const WAKEUP_LEN: usize = core::mem::size_of::<MpWakeup>();
pub const X2APIC_LEN_U8: u8 = 16;
pub const WAKEUP_LEN_U8: u8 = 24;
pub const RSDP_LEN_U32: u32 = 36;
pub const RSDP_V1_LEN_U32: u32 = 20;
pub const MADT_LEN_U32: u32 = 44;
const _: () = assert!(
    X2APIC_LEN_U8 as usize == X2APIC_LEN
        && WAKEUP_LEN_U8 as usize == WAKEUP_LEN
        && RSDP_LEN_U32 as usize == RSDP_LEN
        && RSDP_V1_LEN_U32 as usize == RSDP_V1_LEN
        && MADT_LEN_U32 as usize == MADT_LEN
);

/// The byte that makes `bytes` sum to zero (mod 256) once stored in a
/// checksum field that currently holds 0.
pub fn checksum_fix(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

/// The sum of `bytes` (mod 256): zero for a table with a right checksum.
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}
